"""CLI: openvpp evaluate EVENT, openvpp settle --year Y (and its subcommands), openvpp report carbon."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from openvpp.cli import settlement as cli
from tests.test_evaluation import UNIT_B, write_unit_b
from tests.test_settlement import run_event, setup_city


def _app() -> typer.Typer:
    """The wiring cli/main.py gets (see the module docstring of openvpp.cli.settlement)."""
    app = typer.Typer()
    report_app = typer.Typer()
    app.add_typer(cli.settle_app, name="settle")
    app.command("evaluate")(cli.evaluate)
    report_app.command("carbon")(cli.report_carbon)
    app.add_typer(report_app, name="report")
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
