"""``openvpp resources ...`` and ``openvpp report targets`` on the mini city, on SQLite and PostgreSQL:
summaries by one or two keys under a grid node with filters, a filtered page, exports with the
list's filters, one resource registered from flags or a JSON file (with the import's rules), a
resource's history, and the targets report with verified beside declared.

Mini city (tests/conftest.py), all active: R1-R3 OP01 Tianhe T001; R4, R5 OP02 Haizhu T001;
R6 OP01 and R7 (no operator) Haizhu T002.
"""

from __future__ import annotations

import json

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from openvpp.cli.main import app
from openvpp.services import access
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema import audit_log, resources

ADMIN = Actor("center", "city_admin")
NEW = {"resource_id": "R9", "name": "Mall B chiller 2", "resource_type": "central_ac", "operator_id": "OP01",
       "owner_id": "OW3", "site_id": "S3", "ta_id": "GZ-HZ-S01-F01-T002", "capacity_kw": 900, "capacity_kva": 950,
       "profile_archetype": "ac_office", "profile_scale_kw": 700, "noise_seed": 9, "latency_s": 60,
       "response_mode": "automatic", "adjustable_up_kw": 0, "adjustable_down_kw": 200,
       "adjustable_duration_h": 2, "control_protocol": "mqtt", "meter_id": "M0009", "commissioned_on": "2024-06-01"}


@pytest.fixture
def cli(loaded, tmp_path):
    """Run ``openvpp`` in-process on the loaded database; returns (exit code, stdout, stderr)."""
    runner = CliRunner()
    env = {"OPENVPP_DATABASE_URL": loaded.database_url, "OPENVPP_HOME": str(tmp_path)}

    def run(*args: str, code: int = 0):
        r = runner.invoke(app, list(args), env=env)
        assert r.exit_code == code, (args, r.stdout, r.stderr, r.exception)
        return r
    return run


def _count(url: str, *where) -> int:
    with db.get_engine(url).connect() as conn:
        return conn.execute(select(func.count()).select_from(resources).where(*where)).scalar_one()


def test_summary_by_level_and_type_under_a_parent_with_filters(cli):
    page = json.loads(cli("resources", "summary", "--by", "transformer_area,resource_type", "--json").stdout)
    assert page["keys"] == ["transformer_area", "type"] and page["total"] == 7
    assert [(r["key"], r["resources"], r["connected_kw"]) for r in page["rows"]] == [
        (["GZ-HZ-S01-F01-T001", "ev_charging"], 1, 120.0), (["GZ-HZ-S01-F01-T001", "v2g_charger"], 1, 60.0),
        (["GZ-HZ-S01-F01-T002", "central_ac"], 1, 1500.0), (["GZ-HZ-S01-F01-T002", "ev_charging"], 1, 60.0),
        (["GZ-TH-S01-F01-T001", "central_ac"], 1, 800.0), (["GZ-TH-S01-F01-T001", "distributed_pv"], 1, 200.0),
        (["GZ-TH-S01-F01-T001", "user_storage"], 1, 500.0)]
    assert page["rows"][0]["label"] == ["T001", "ev_charging"]
    # feeder x type under the Haizhu substation, automatic resources only: R4, R5 and R7 (R6 is semi-automatic)
    page = json.loads(cli("resources", "summary", "--by", "feeder,type", "--parent", "GZ-HZ-S01", "--mode",
                          "automatic", "--json").stdout)
    assert {tuple(r["key"]): (r["resources"], r["adjustable_down_kw"]) for r in page["rows"]} == {
        ("GZ-HZ-S01-F01", "ev_charging"): (2, 180.0), ("GZ-HZ-S01-F01", "v2g_charger"): (1, 60.0)}
    # paging, and the table form names the page
    page = json.loads(cli("resources", "summary", "--by", "district", "--operator", "OP01", "--limit", "1",
                          "--offset", "1", "--json").stdout)
    assert (page["total"], [r["key"] for r in page["rows"]]) == (2, ["GZ-TH"])
    r = cli("resources", "summary", "--by", "district,type", "--limit", "2")
    assert "GZ-HZ" in r.stdout and "groups 1-2 of 6" in r.stderr
    # bad input names the field and the rule
    r = cli("resources", "summary", "--by", "feeder,colour", code=2)
    assert "by" in r.stderr and "must be one of" in r.stderr
    r = cli("resources", "summary", "--by", "feeder", "--parent", "GZ-NOPE", code=2)
    assert "parent" in r.stderr and "grid node does not exist" in r.stderr


def test_list_pages_resources_with_the_api_filters(cli):
    page = json.loads(cli("resources", "list", "--district", "GZ-HZ", "--limit", "2", "--offset", "1",
                          "--json").stdout)
    assert page["total"] == 4 and [i["resource_id"] for i in page["items"]] == ["R5", "R6"]
    page = json.loads(cli("resources", "list", "--mode", "semi_automatic", "--json").stdout)
    assert [i["resource_id"] for i in page["items"]] == ["R1", "R6"]
    page = json.loads(cli("resources", "list", "--q", "Tower", "--owner", "OW1", "--json").stdout)
    assert [i["resource_id"] for i in page["items"]] == ["R1", "R2", "R3"]
    assert "R4" in cli("resources", "list", "--ta", "GZ-HZ-S01-F01-T001").stdout


def test_export_takes_every_filter_of_the_list(cli, loaded, tmp_path):
    with db.get_engine(loaded.database_url).begin() as conn:
        conn.execute(resources.update().where(resources.c.resource_id.in_(["R3", "R4"])).values(
            verified_grade="A", verified_down_kw=100.0))
        access.transition(conn, ADMIN, ["R2"], "retire", reason="decommissioned")
    out = tmp_path / "a.parquet"
    cli("resources", "export", str(out), "--grade", "A")
    assert sorted(pq.read_table(out).column("resource_id").to_pylist()) == ["R3", "R4"]
    cases = [(["--grade", "A", "--substation", "GZ-HZ-S01"], ["R4"]), (["--mode", "semi_automatic"], ["R1", "R6"]),
             (["--feeder", "GZ-TH-S01-F01", "--state", "active"], ["R1", "R3"]),
             (["--ta", "GZ-HZ-S01-F01-T002", "--owner", "OW3"], ["R6", "R7"]), (["--state", "retired"], ["R2"])]
    for flags, ids in cases:
        csv = tmp_path / "x.csv"
        cli("resources", "export", str(csv), *flags)
        assert sorted(pacsv.read_csv(csv).column("resource_id").to_pylist()) == ids, flags
    assert "--format must be csv or parquet" in cli("resources", "export", str(out), "--format", "xml",
                                                      code=2).stderr


def test_register_one_resource_from_a_file_and_flags_with_the_import_rules(cli, loaded, tmp_path):
    url = loaded.database_url
    spec = tmp_path / "r9.json"
    spec.write_text(json.dumps(NEW))
    # flags win over the file; an adjustable capability above the built capacity is refused, nothing written
    r = cli("resources", "register", "--file", str(spec), "--adjustable-down-kw", "1000", code=2)
    assert "adjustable_down_kw" in r.stderr and "must not exceed capacity_kw" in r.stderr
    assert _count(url, resources.c.resource_id == "R9") == 0
    r = cli("resources", "register", "--file", str(spec), "--meter_id", "M0004", code=2)   # R4's meter
    assert "meter_id" in r.stderr and "live resource" in r.stderr
    r = cli("resources", "register", "--file", str(spec), "--ta-id", "GZ-HZ-S01-F01-T009", code=2)
    assert "ta_id" in r.stderr and "transformer area does not exist" in r.stderr
    r = cli("resources", "register", "--file", str(spec), "--colour", "red", code=2)
    assert "colour" in r.stderr and "unknown field" in r.stderr
    assert _count(url, resources.c.resource_id == "R9") == 0
    row = json.loads(cli("resources", "register", "--file", str(spec), "--adjustable-down-kw", "250",
                         "--json").stdout)
    assert (row["resource_id"], row["state"], row["adjustable_down_kw"], row["district_id"]) == \
        ("R9", "active", 250.0, "GZ-HZ")
    # an operator's registration from flags alone awaits approval, and is fenced to its own operator
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**NEW, "resource_id": "R10", "meter_id": "M0010"}.items()]
    r = cli("resources", "register", "--as-operator", "OP02", *flags, code=2)
    assert "operator_id" in r.stderr and "only its own resources" in r.stderr
    cli("resources", "register", "--as-operator", "OP01", *flags)
    assert _count(url, resources.c.resource_id == "R10", resources.c.state == "registered") == 1
    with db.get_engine(url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.action == "resource.register")).scalar_one() == 2


def test_history_shows_closed_operator_links_and_the_audit_trail(cli, loaded):
    with db.get_engine(loaded.database_url).begin() as conn:
        access.transfer(conn, ADMIN, "R6", "OP02", "merger")
    h = json.loads(cli("resources", "history", "R6", "--json").stdout)
    assert (h["operator_id"], h["state"]) == ("OP02", "active")
    assert [(x["operator_id"], x["reason"]) for x in h["closed_links"]] == [("OP01", "merger")]
    assert [e["action"] for e in h["audit"]] == ["resource.transfer"]
    text = cli("resources", "history", "R6").stdout
    assert "OP01" in text and "resource.transfer" in text and "merger" in text
    assert "resource 'R99' does not exist" in cli("resources", "history", "R99", code=2).stderr


def test_report_targets_sets_verified_beside_declared(cli, loaded):
    with db.get_engine(loaded.database_url).begin() as conn:
        conn.execute(resources.update().where(resources.c.resource_id == "R3").values(
            verified_grade="A", verified_down_kw=420.0))
    rep = json.loads(cli("report", "targets", "--json").stdout)
    t2025 = next(t for t in rep["targets"] if t["year"] == 2025)
    # declared down: 160 + 200 + 500 + 120 + 60 + 300 + 60 = 1,400 kW of 800 MW; verified 420 kW
    assert t2025["adjustable_progress"] == pytest.approx(1.4 / 800)
    assert (t2025["verified_mw"], t2025["verified_progress"]) == (pytest.approx(0.42), pytest.approx(0.42 / 800))
    storage = next(r for r in rep["by_type"] if r["resource_type"] == "user_storage")
    p2027 = next(p for p in storage["progress"] if p["year"] == 2027)
    assert p2027["verified_share"] == pytest.approx(0.42 / 1500)
    assert p2027["adjustable_share"] == pytest.approx(0.5 / 1500)
    text = " ".join(cli("report", "targets", "--by", "type", "--year", "2026").stdout.split())
    assert "1.4 MW adjustable declared, 0.4 MW verified (7 resources, 1 verified)" in text
    assert "by type: share of the 2026 targets" in text
    assert "--year must be one of" in cli("report", "targets", "--year", "2030", code=2).stderr
