"""The center's CLI for issue 4, run as a user runs it (a subprocess with its own environment):
operators show/recheck, verify schedule/complete/show/list, contracts register/list,
pools show/members/update/delete, resource transitions with their reason."""

import json
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from openvpp.api.app import create_app
from openvpp.services.telemetry import TOPIC_ROOT, TelemetryConfig, TelemetryService, encode_columns
from openvpp.store import db
from openvpp.store.schema import operators
from tests._server import serve
from tests.test_cli import run

START = datetime(2025, 7, 15, 6, 0, tzinfo=UTC)        # 14:00 Beijing time


@pytest.fixture
def city(tmp_path, mini_city, db_url, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")          # rich tables unwrapped
    run(["city", "load", str(mini_city)], tmp_path, db_url)
    return tmp_path, db_url


def _json(args, city):
    return json.loads(run(args, *city).stdout)


def test_operators_show_and_recheck(city, settings):
    home, url = city
    shown = _json(["operators", "show", "OP01", "--json"], city)
    assert shown["state"] == "admitted" and shown["tss_endpoint"] == "https://op01.example/tss"
    checks = {c["check"]: (c["passed"], c["checked_by"]) for c in shown["checks"]}
    assert checks["tss_connectivity"] == (False, "system")              # the city load stored them, no probe
    assert checks["trading_unit"][0] is False and checks["minute_level"][0] is False
    p = run(["operators", "show", "OP01"], home, url)
    assert "FAIL" in p.stdout and "no probe available to reach the operator interface" in p.stdout
    with serve(create_app(settings)) as tss:
        with db.get_engine(url).begin() as conn:
            conn.execute(operators.update().where(operators.c.operator_id == "OP01").values(tss_endpoint=tss))
        out = _json(["operators", "recheck", "OP01", "--reason", "TSS moved", "--json"], city)
    assert out == [{"operator_id": "OP01", "state": "admitted", "checks": {
        "tss_registered": True, "tss_connectivity": True, "trading_unit": False, "minute_level": False}}]
    shown = _json(["operators", "show", "OP01", "--json"], city)
    assert {c["check"]: c["passed"] for c in shown["checks"]}["tss_connectivity"] is True
    every = _json(["operators", "recheck", "--all", "--json"], city)
    assert [o["operator_id"] for o in every] == ["OP01", "OP02"]          # admitted ones; OP03 only applied
    assert every[1]["checks"]["tss_registered"] is False                   # OP02 registered no endpoint
    p = run(["operators", "recheck"], home, url, check=False)
    assert p.returncode == 2 and "give one operator id or --all" in p.stderr
    p = run(["operators", "show", "OP404"], home, url, check=False)
    assert p.returncode == 2 and "OP404" in p.stderr
    p = run(["operators", "transition", "OP03", "start_review"], home, url, check=False)
    assert p.returncode == 2 and "reason: is required to start_review" in p.stderr
    p = run(["operators", "transition", "OP03", "start_review", "--reason", "file received"], home, url)
    assert "under_review" in p.stderr and "FAIL tss_registered" in p.stderr


def _telemetry(url, rid: str, gateway: str, operator: str, start: datetime, end: datetime, base_kw: float,
               drop_kw: float) -> None:
    """One point per minute from an hour before ``start`` to ``end``: ``base_kw``, less ``drop_kw`` from ``start``,
    through the platform's telemetry service, then rolled up."""
    t = np.arange(int((start - timedelta(hours=1)).timestamp()), int(end.timestamp()), 60) * 1000
    p = np.where(t >= start.timestamp() * 1000, base_kw - drop_kw, base_kw)
    svc = TelemetryService(db.get_engine(url), TelemetryConfig(), clock=lambda: end.timestamp() + 600)
    res = svc.ingest_messages([(f"{TOPIC_ROOT}/tele/{operator}/{gateway}",
                                encode_columns(gateway, [rid] * len(t), t, p))], path="test")
    assert res.accepted == len(t), res.as_dict()
    svc.refresh_rollups(include_open=True)


def test_verify_schedule_complete_show_list(city):
    home, url = city
    p = run(["verify", "schedule", "resource", "R3", "--start", START.isoformat(), "--duration-h", "1"], home, url)
    instruction = json.loads(p.stdout)
    test_id = instruction["test_id"]
    assert re.search(rf"test {test_id} scheduled", p.stderr) and instruction["resources"] == {"R3": 500.0}
    listed = _json(["verify", "list", "--state", "scheduled", "--json"], city)
    assert [t["test_id"] for t in listed] == [test_id]
    # R3 (storage) drew 300 kW in the hour before and 300 - 450 = -150 kW (discharging) in the window
    end = START + timedelta(hours=1, minutes=15)
    _telemetry(url, "R3", "S1", "OP01", START, end, 300.0, 450.0)
    done = _json(["verify", "complete", test_id, "--json"], city)
    assert (done["state"], done["grade"], done["verified_kw"], done["latency_s"]) == ("done", "A", 450.0, 0.0)
    assert done["ratio"] == pytest.approx(0.9) and done["baseline_method"] == "pre-window-mean-60min"
    assert done["result"]["rechecked"]["OP01"]["minute_level"] is False     # 450 kW < 1 MW
    shown = _json(["verify", "show", test_id, "--json"], city)
    assert shown["result"]["resources"]["R3"]["grade"] == "A"
    p = run(["verify", "show", test_id], home, url)
    assert "R3" in p.stdout and "450.0" in p.stdout
    assert _json(["verify", "list", "--state", "done", "--target", "R3", "--json"], city)[0]["grade"] == "A"
    assert _json(["verify", "list", "--operator", "OP02", "--json"], city) == []
    p = run(["verify", "complete", test_id], home, url, check=False)
    assert p.returncode == 2 and "'complete' needs state scheduled" in p.stderr
    p = run(["verify", "show", "VT-NOPE"], home, url, check=False)
    assert p.returncode == 2 and "VT-NOPE" in p.stderr
    # a test without telemetry before the window grades C with no baseline
    t2 = json.loads(run(["verify", "schedule", "resource", "R2", "--start", START.isoformat()], home, url).stdout)
    done = _json(["verify", "complete", t2["test_id"], "--json"], city)
    assert done["grade"] == "C" and done["result"]["without_baseline"] == 1


def test_contracts_register_and_list(city):
    home, url = city
    p = run(["contracts", "register", "--owner", "OW1", "--operator", "OP01", "--scheme", "tiered",
             "--from", "2025-01-01", "--to", "2026-01-01",
             "--tiers", '[{"up_to_yuan": 10000, "owner_share": 0.7}, {"up_to_yuan": null, "owner_share": 0.5}]'],
            home, url)
    cid = p.stdout.strip()
    assert cid.startswith("CTR-") and f"contract {cid} registered" in p.stderr
    run(["contracts", "register", "--owner", "OW3", "--operator", "OP01", "--scheme", "fixed", "--share", "0.55",
         "--from", "2025-03-01", "--resource", "R6"], home, url)
    rows = _json(["contracts", "list", "--operator", "OP01", "--json"], city)
    assert [(r["owner_id"], r["scheme"], r["valid_from"], r["valid_to"]) for r in rows] == [
        ("OW1", "tiered", "2025-01-01", "2026-01-01"), ("OW3", "fixed", "2025-03-01", None)]
    assert rows[0]["contract_id"] == cid and rows[1]["resource_id"] == "R6" and rows[1]["owner_share"] == 0.55
    assert _json(["contracts", "list", "--owner", "OW2", "--json"], city) == []
    # refusals name the field and the rule, and write nothing
    p = run(["contracts", "register", "--owner", "OW1", "--operator", "OP01", "--scheme", "fixed", "--share", "0.6",
             "--from", "2025-06-01"], home, url, check=False)
    assert p.returncode == 2 and "already covers part of this period" in p.stderr
    p = run(["contracts", "register", "--owner", "OW2", "--operator", "OP02", "--scheme", "fixed", "--share", "1.5",
             "--from", "2025-01-01"], home, url, check=False)
    assert p.returncode == 2 and "owner_share: a fixed contract needs a share between 0 and 1" in p.stderr
    p = run(["contracts", "register", "--owner", "OW2", "--operator", "OP02", "--scheme", "tiered", "--tiers", "[{",
             "--from", "2025-01-01"], home, url, check=False)
    assert p.returncode == 2 and "tiers: not valid JSON" in p.stderr
    assert len(_json(["contracts", "list", "--json"], city)) == 2


def test_pools_show_members_update_delete(city):
    home, url = city
    run(["pools", "defaults"], home, url)
    shown = _json(["pools", "show", "peak_shaving:GZ", "--json"], city)
    # active resources with an operator, >= 1 h down: R1 160 + R2 200 + R3 500 + R4 120 + R5 60 + R6 300
    assert shown["scenario"] == "peak_shaving" and shown["totals"]["count"] == 6
    assert shown["totals"]["down_kw"] == pytest.approx(1340.0)
    assert "rules.min_duration_h" in run(["pools", "show", "peak_shaving:GZ"], home, url).stdout
    page = _json(["pools", "members", "peak_shaving:GZ", "--limit", "4", "--json"], city)
    assert (page["total"], page["items"]) == (6, ["R1", "R2", "R3", "R4"])
    p = run(["pools", "members", "peak_shaving:GZ", "--offset", "4"], home, url)
    assert p.stdout.split() == ["R5", "R6"] and "2 of 6 member(s) from 4" in p.stderr
    run(["pools", "update", "peak_shaving:GZ", "--rules", '{"min_duration_h": 2}', "--name", "Long peak",
         "--reason", "two-hour products"], home, url)
    shown = _json(["pools", "show", "peak_shaving:GZ", "--json"], city)
    assert shown["name"] == "Long peak" and shown["totals"]["count"] == 5        # R4 (1 h) drops out
    assert shown["totals"]["down_kw"] == pytest.approx(1340.0 - 120.0)
    p = run(["pools", "update", "peak_shaving:GZ", "--rules", '{"min_duration_h": 0.5}'], home, url, check=False)
    assert p.returncode == 2 and "min_duration_h" in p.stderr                   # looser than the preset
    p = run(["pools", "update", "peak_shaving:GZ"], home, url, check=False)
    assert p.returncode == 2 and "--rules and/or --name" in p.stderr
    run(["pools", "delete", "peak_shaving:GZ", "--reason", "replaced"], home, url)
    p = run(["pools", "show", "peak_shaving:GZ"], home, url, check=False)
    assert p.returncode == 2 and "peak_shaving:GZ" in p.stderr
    p = run(["pools", "members", "nope"], home, url, check=False)
    assert p.returncode == 2


def test_resource_transitions_need_a_reason(city, tmp_path):
    from tests.conftest import RES_HEADER, write_csv

    home, url = city
    write_csv(tmp_path / "new.csv", RES_HEADER, [
        ["R30", "pile", "ev_charging", "OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001", 60, 60, "ev_public", 40, 1, 10,
         "automatic", 0, 60, 1, "ocpp1.6", "M0030", ""]])
    from openvpp.services import registry
    from openvpp.store.audit import Actor

    with db.get_engine(url).begin() as conn:
        registry.import_resources(conn, registry.read_table(tmp_path / "new.csv", ()), Actor("c", "city_admin"),
                                  state="registered")
    p = run(["resources", "transition", "R30", "--action", "approve"], home, url, check=False)
    assert p.returncode == 2 and "reason: is required to approve a resource" in p.stderr
    p = run(["resources", "transition", "R30", "--action", "approve", "--reason", "site visit passed"], home, url)
    assert "1 resource(s) now active" in p.stderr
