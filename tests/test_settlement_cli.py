"""CLI: openvpp evaluate EVENT, openvpp settle --year Y (and its subcommands: transition, statement, ledger,
dispute, pay-balances), openvpp report carbon|event|operator|year."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import typer
from typer.testing import CliRunner

from openvpp.core.timeslots import slot_start_utc
from openvpp.services import disputes
from openvpp.services import evaluation as eva
from openvpp.store import db, timeseries
from tests.test_evaluation import UNIT_B, _batch, write_unit_b
from tests.test_settlement import DAY, OP, run_event, setup_city


def _app() -> typer.Typer:
    """The ``openvpp`` application itself: the commands as cli/main.py registers them."""
    from openvpp.cli.main import app

    return app


def test_evaluate_settle_and_report_from_the_command_line(loaded, tmp_path, monkeypatch):
    setup_city(loaded, tmp_path)
    write_unit_b(loaded, gb2_slot58_kw=0.0)
    eid = run_event(loaded, UNIT_B)
    monkeypatch.setenv("OPENVPP_DATABASE_URL", loaded.database_url)
    app, runner = _app(), CliRunner()

    r = runner.invoke(app, ["evaluate", eid, "--history-days", "8", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["totals"]["credited"] == 1000.0
    r = runner.invoke(app, ["evaluate", eid, "--history-days", "8", "--baseline", "high-x-of-y", "--param", "x=3"])
    assert r.exit_code == 0 and "high-3-of-5/2" in r.stdout and "OP02@GZ-HZ-S01" in r.stdout
    r = runner.invoke(app, ["evaluate", "EVT-NOPE"])
    assert r.exit_code == 2 and "does not exist" in r.output

    r = runner.invoke(app, ["settle", "--year", "2025", "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    sid = st["settlement_id"]
    assert st["operators"] == [{**st["operators"][0], "operator_id": "OP02", "claim_active": "3000.00",
                                "payable": "3000.00"}]
    r = runner.invoke(app, ["settle", "--year", "2025"])
    assert r.exit_code == 0 and "3000.00" in r.stdout       # recomputed: the first one is superseded
    sid = runner.invoke(app, ["settle", "--year", "2025", "--json"]).stdout
    sid = json.loads(sid)["settlement_id"]
    for action in ("review", "approve", "pay"):
        assert runner.invoke(app, ["settle", "transition", sid, action]).exit_code == 0
    r = runner.invoke(app, ["settle", "transition", sid, "approve"])
    assert r.exit_code == 2 and "paid" in r.output
    out = tmp_path / "op02.html"
    r = runner.invoke(app, ["settle", "statement", sid, "--operator", "OP02", "--format", "html", "--out", str(out)])
    assert r.exit_code == 0 and "3000.00" in out.read_text()
    r = runner.invoke(app, ["settle", "statement", sid, "--owner", "OW2"])
    assert r.exit_code == 0 and "1500.00" in r.stdout        # owner share 0.5
    r = runner.invoke(app, ["settle", "ledger", sid, "--json"])
    assert [e["account"] for e in json.loads(r.stdout)] == ["claim_active", "owner_share", "payment"]
    r = runner.invoke(app, ["report", "carbon", "--year", "2025", "--csv"])
    assert r.exit_code == 0 and r.stdout.splitlines()[1].split(",")[4:7] == ["OP02", "1000.000", "1000.000"]
    r = runner.invoke(app, ["report", "carbon", "--year", "2025"])
    assert r.exit_code == 0 and "OP02" in r.stdout
    assert "Example:" in runner.invoke(app, ["settle", "--help"]).stdout


def _settled(loaded, tmp_path, monkeypatch, gb2_slot58_kw: float = 0.0) -> tuple[typer.Typer, CliRunner, str, str]:
    """Unit B's event evaluated from the telemetry store and its 2025 settlement approved and paid."""
    setup_city(loaded, tmp_path)
    write_unit_b(loaded, gb2_slot58_kw=gb2_slot58_kw)
    eid = run_event(loaded, UNIT_B)
    monkeypatch.setenv("OPENVPP_DATABASE_URL", loaded.database_url)
    app, runner = _app(), CliRunner()
    assert runner.invoke(app, ["evaluate", eid, "--history-days", "8"]).exit_code == 0
    r = runner.invoke(app, ["settle", "--year", "2025", "--json"])
    sid = json.loads(r.stdout)["settlement_id"]
    for action in ("review", "approve", "pay"):
        assert runner.invoke(app, ["settle", "transition", sid, action]).exit_code == 0
    return app, runner, eid, sid


def test_reports_of_an_event_an_operator_and_a_year_only_read(loaded, tmp_path, monkeypatch):
    """Unit B (OP02) delivers 1000 kWh at 3.0 yuan: 3000.00 yuan, 1 MWh curtailed (0.4042 / 0.5306 tCO2)."""
    app, runner, eid, sid = _settled(loaded, tmp_path, monkeypatch)
    with db.get_engine(loaded.database_url).connect() as conn:
        versions = eva.versions(conn, eid)

    r = runner.invoke(app, ["report", "event", eid, "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["version"] == 1 and rep["totals"]["credited"] == 1000.0 and rep["meter_source"] == "telemetry"
    assert [(x["operator_id"], x["kind"], x["amount"]) for x in rep["settlement"]["lines"]] == [
        ("OP02", "active", "3000.00")]
    assert {x["level"] for x in rep["rows"]} == {"unit"} and len(rep["rows"]) == 4
    r = runner.invoke(app, ["report", "event", eid])
    assert r.exit_code == 0 and "OP02@GZ-HZ-S01" in r.stdout and "3000.00" in r.stdout and "paid" in r.stdout
    out = tmp_path / "evt.csv"
    r = runner.invoke(app, ["report", "event", eid, "--version", "1", "--level", "resource", "--csv", "--out",
                            str(out)])
    assert r.exit_code == 0, r.output
    table = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    gb2 = {int(x["slot"]): x for x in table if x["key_id"] == "GB2"}
    assert sorted(gb2) == [56, 57, 58, 59] and float(gb2[58]["metered_kw"]) == 0.0
    assert float(gb2[58]["baseline_kw"]) == 400.0 and gb2[58]["quantity_unit"] == "kWh"
    assert {x["level"] for x in table} == {"resource"} and {x["operator_id"] for x in table} == {"OP02"}
    r = runner.invoke(app, ["report", "event", eid, "--version", "7"])
    assert r.exit_code == 2 and "no evaluation version 7" in r.output
    assert runner.invoke(app, ["report", "event", eid, "--level", "meter"]).exit_code == 2
    r = runner.invoke(app, ["report", "event", "EVT-NOPE"])
    assert r.exit_code == 2 and "does not exist" in r.output

    r = runner.invoke(app, ["report", "operator", "OP02", "--year", "2025", "--format", "json"])
    assert r.exit_code == 0, r.output
    stmt = json.loads(r.stdout)
    assert stmt["settlement_id"] == sid and stmt["amounts"]["payable"] == "3000.00" and stmt["balance"] == "0.00"
    assert stmt["carbon"]["curtailed_kwh"] == 1000.0 and round(stmt["carbon"]["southern_grid_tco2"], 6) == 0.4042
    r = runner.invoke(app, ["report", "operator", "OP02", "--year", "2025"])
    assert r.exit_code == 0 and "3000.00" in r.stdout and "0.404 tCO2" in r.stdout
    r = runner.invoke(app, ["report", "operator", "OP02", "--year", "2025", "--format", "csv"])
    assert "payable,3000.00" in r.stdout
    r = runner.invoke(app, ["report", "operator", "OP02", "--year", "2024"])
    assert r.exit_code == 2 and "no settlement of 2024" in r.output
    r = runner.invoke(app, ["report", "operator", "OP09", "--year", "2025"])
    assert r.exit_code == 2 and "OP09" in r.output

    r = runner.invoke(app, ["report", "year", "2025", "--json"])
    assert r.exit_code == 0, r.output
    year = json.loads(r.stdout)
    assert year["settlement"]["state"] == "paid" and year["settlement"]["events"] == 1
    assert year["budgets"]["main"]["claims"] == "3000.00" and year["budgets"]["main"]["budget"] == "10000000"
    assert year["budgets"]["main"]["used"] == "0.000300"
    assert year["operators"] == [{**year["operators"][0], "operator_id": "OP02", "net": "3000.00"}]
    assert year["carbon"]["curtailed_kwh"] == 1000.0 and year["disputes"] == {}
    r = runner.invoke(app, ["report", "year", "2025"])
    assert r.exit_code == 0 and "0.03% used" in r.stdout and "OP02" in r.stdout and "1.000 MWh" in r.stdout
    r = runner.invoke(app, ["report", "year", "2024", "--json"])
    assert json.loads(r.stdout) == {"year": 2024, "settlement": None, "budgets": {}, "operators": [],
                                    "disputes": {}, "carbon": None}
    with db.get_engine(loaded.database_url).connect() as conn:
        assert eva.versions(conn, eid) == versions          # reports wrote nothing


def test_dispute_and_pay_balances_from_the_command_line(loaded, tmp_path, monkeypatch):
    """GB2's meter read 400 kW in slot 58 (really 0): OP02 credited 750 kWh, paid 2250.00. Its dispute is
    re-evaluated from the telemetry store, approved (+750.00 to OP02's claim), and the balance paid. A second
    dispute, after a late GB1 reading reached the store, is refused: that reading is not its evidence."""
    app, runner, eid, sid = _settled(loaded, tmp_path, monkeypatch, gb2_slot58_kw=400.0)
    with db.get_engine(loaded.database_url).begin() as conn:
        (line,) = [x for x in json.loads(runner.invoke(app, ["report", "event", eid, "--json"]).stdout)
                   ["settlement"]["lines"]]
        assert line["amount"] == "2250.00"
        d = disputes.raise_dispute(conn, OP["OP02"], sid, line["line_id"], "GB2 read 400 kW in slot 58",
                                   {"meter": {"GB2": [0.0, 0.0, 0.0, 0.0]}})
    did = d["dispute_id"]
    r = runner.invoke(app, ["settle", "dispute", did, "reevaluate"])
    assert r.exit_code == 0, r.output
    diff = json.loads(r.stdout)["difference"]
    assert (diff["credited_before"], diff["credited_after"]) == (750.0, 1000.0)
    assert [(p["party_id"], p["difference"]) for p in diff["parties"]] == [("OP02", "750.00"), ("OW2", "375.00")]
    r = runner.invoke(app, ["settle", "dispute", did, "approve"])
    assert r.exit_code == 2 and "reason" in r.output
    assert runner.invoke(app, ["settle", "dispute", did, "shrug"]).exit_code == 2
    r = runner.invoke(app, ["settle", "dispute", did, "approve", "--reason", "meter fault confirmed"])
    assert r.exit_code == 0 and json.loads(r.stdout)["state"] == "approved"
    ledger = json.loads(runner.invoke(app, ["settle", "ledger", sid, "--operator", "OP02", "--json"]).stdout)
    assert [(e["account"], e["amount"]) for e in ledger if e["ref"] == did] == [("claim_active", "750.00"),
                                                                               ("owner_share", "375.00")]
    r = runner.invoke(app, ["settle", "pay-balances", sid])
    assert r.exit_code == 0 and "1 payment entries" in r.output
    ledger = json.loads(runner.invoke(app, ["settle", "ledger", sid, "--operator", "OP02", "--json"]).stdout)
    assert (ledger[-1]["account"], ledger[-1]["amount"], ledger[-1]["ref"]) == ("payment", "-750.00", "balance-rev1")
    assert "0 payment entries" in runner.invoke(app, ["settle", "pay-balances", sid]).output
    r = runner.invoke(app, ["report", "year", "2025", "--json"])
    assert json.loads(r.stdout)["disputes"] == {"approved": 1}

    # a late reading of GB1 (another resource) in the window reaches the store after the evaluation
    with db.get_engine(loaded.database_url).begin() as conn:
        timeseries.write_points(conn, _batch(["GB1"], [slot_start_utc(DAY, 56) + timedelta(seconds=50)], [900.0]))
        while True:
            done = timeseries.refresh_rollups(conn, None, 5000)
            if not done.minutes and not done.quarters:
                break
        d2 = disputes.raise_dispute(conn, OP["OP02"], sid, line["line_id"], "slot 59 too",
                                    {"meter": {"GB2": {DAY.isoformat(): {"59": 0.0}}}})
    r = runner.invoke(app, ["settle", "dispute", d2["dispute_id"], "reevaluate"])
    assert r.exit_code == 2 and "changed since evaluation v2" in r.output and "nothing else" in r.output
    with db.get_engine(loaded.database_url).connect() as conn:
        assert disputes.get(conn, d2["dispute_id"])["state"] == "open"
