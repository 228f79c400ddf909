"""Metered V2G discharge into the yearly settlement: discharge price by TOU period and the V2G subsidy under
its own budget, in the lines, the operator's and owner's statements and the ledger (SQLite and PostgreSQL).

The mini city's V2G pile R5 belongs to operator OP02 and owner OW2 (residential, default share 0.5).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert

from openvpp.core import rules
from openvpp.core.errors import InvalidInput
from openvpp.services import disputes
from openvpp.services import settlement as stl
from openvpp.services import v2g as v2g_svc
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema_ev import PERIODS, ev_charge_points, ev_sessions

ADMIN = Actor("admin", "city_admin")
D = Decimal
T0 = datetime(2025, 7, 15, 6, 0, tzinfo=UTC)       # 14:00 local


def _session(conn, sid: str, start: datetime, stop: datetime | None, discharge: dict, charge: dict | None = None,
             cp: str = "R5") -> None:
    conn.execute(insert(ev_sessions).values(
        session_id=sid, charge_point_id=cp, evse_id=1, transaction_id=sid, ocpp_version="2.0.1",
        state="completed" if stop else "active", started_at=start, stopped_at=stop, v2g=True,
        **{f"discharge_{p}_kwh": float(discharge.get(p, 0.0)) for p in PERIODS},
        **{f"charge_{p}_kwh": float((charge or {}).get(p, 0.0)) for p in PERIODS}))


@pytest.fixture
def metered(loaded):
    with db.get_engine(loaded.database_url).begin() as conn:
        conn.execute(insert(ev_charge_points).values(charge_point_id="R5", ocpp_version="2.0.1", connected=False,
                                                     status={}))
        _session(conn, "A", T0, T0 + timedelta(hours=3), {"peak": 10.0, "flat": 2.0}, {"valley": 30.0})
        _session(conn, "B", T0 + timedelta(days=1), T0 + timedelta(days=1, hours=2), {"critical": 4.0})
        _session(conn, "C", T0 + timedelta(days=2), None, {"peak": 50.0})             # still plugged: not settled
    return loaded


def test_discharge_prices_are_base_times_tou_coefficient():
    p = dict(zip(PERIODS, v2g_svc.discharge_prices(rules.load()), strict=True))
    assert p == {"valley": D("0.453") * D("0.38"), "flat": D("0.453"), "peak": D("0.453") * D("1.7"),
                 "critical": D("0.453") * D("1.7") * D("1.25")}


def test_metered_v2g_discharge_flows_into_lines_statements_and_ledger(metered):
    with db.get_engine(metered.database_url).begin() as conn:
        st = stl.compute(conn, ADMIN, 2025)
        sid = st["settlement_id"]
        lines = {(r["unit_id"], r["kind"]): r for r in stl.lines(conn, sid)}
        energy, sub = lines[("R5", "v2g_energy")], lines[("R5", "v2g")]
        # A: 10 kWh peak x 0.7701 + 2 kWh flat x 0.453 = 8.607; B: 4 kWh critical x 0.962625 = 3.8505
        assert energy["quantity"] == pytest.approx(16.0) and energy["amount_fen"] == 1246
        assert energy["event_id"] == stl.V2G_SESSIONS and energy["operator_id"] == "OP02"
        assert sub["quantity"] == pytest.approx(16.0) and sub["rate_yuan"] == "5" and sub["amount_fen"] == 8000
        summary = st["summary"]["v2g_sessions"]
        assert summary["sessions"] == 2 and D(summary["discharge_kwh"]) == D("16.000")
        assert D(summary["energy_value"]) == D("12.46") and D(summary["paid_in_events_kwh"]) == 0
        assert D(st["summary"]["v2g"]["claims"]) == D("80.00") and D(st["summary"]["v2g"]["factor"]) == 1
        op = stl.statement_operator(conn, sid, "OP02")
        assert op["amounts"]["claim_v2g"] == "80.00" and op["amounts"]["claim_v2g_energy"] == "12.46"
        assert op["amounts"]["payable"] == "92.46"
        (item,) = stl.statement_owner(conn, sid, "OW2")["items"]
        assert item["revenue"] == "92.46" and item["owner_share"] == "46.23"      # exact 92.4575 x 0.5
        stl.transition(conn, ADMIN, sid, "review")
        stl.transition(conn, ADMIN, sid, "approve")
        entries = {e["account"]: e["amount_fen"] for e in stl.ledger(conn, sid, "operator", "OP02")}
        assert entries == {"claim_v2g": 8000, "claim_v2g_energy": 1246}
        assert stl.balance(conn, sid, "operator", "OP02") == D("92.46")
        assert stl.balance(conn, sid, "owner", "OW2") == D("46.23")
        assert "claim_v2g_energy" in stl.to_csv(stl.statement_operator(conn, sid, "OP02"))


def test_v2g_subsidy_scaled_pro_rata_over_its_own_budget(metered, tmp_path: Path):
    base = (Path(rules.__file__).parent / "rulesets" / f"{rules.DEFAULT_RULESET}.toml").read_text(encoding="utf-8")
    path = tmp_path / "small-v2g.toml"
    path.write_text(base.replace(f'id = "{rules.DEFAULT_RULESET}"', 'id = "small-v2g"').replace(
        'v2g_yearly_budget_yuan = "20000000"', 'v2g_yearly_budget_yuan = "50"'), encoding="utf-8")
    with db.get_engine(metered.database_url).begin() as conn:
        st = stl.compute(conn, ADMIN, 2025, ruleset=str(path))
        a = stl.statement_operator(conn, st["settlement_id"], "OP02")["amounts"]
        assert D(st["summary"]["v2g"]["factor"]) == D(50) / D(80)
        assert (a["claim_v2g"], a["prorata_v2g"], a["claim_v2g_energy"], a["payable"]) == (
            "80.00", "-30.00", "12.46", "62.46")                 # the energy value is not under the budget
        (item,) = stl.statement_owner(conn, st["settlement_id"], "OW2")["items"]
        assert item["revenue"] == "62.46"                         # 80 x 0.625 + 12.4575


def test_sessions_completed_after_the_computation_wait_for_the_next_one(metered):
    with db.get_engine(metered.database_url).begin() as conn:
        st = stl.compute(conn, ADMIN, 2025)
        later = datetime.now(UTC) + timedelta(minutes=5)
        _session(conn, "D", T0 + timedelta(days=3), later, {"peak": 7.0})
        stl.resettle(conn, ADMIN, st["settlement_id"], "rev-test", "no change expected")
        again = {(r["unit_id"], r["kind"]): r["amount_fen"] for r in stl.lines(conn, st["settlement_id"])}
        assert again[("R5", "v2g")] == 8000


def test_a_v2g_sessions_line_cannot_be_disputed_and_says_why(metered):
    """A metered-sessions line has no event to re-evaluate: the dispute is refused naming the line, not
    answered with 'event not found', and nothing is written."""
    op02 = Actor("op02", "operator_admin", operator_id="OP02")
    with db.get_engine(metered.database_url).begin() as conn:
        sid = stl.compute(conn, ADMIN, 2025)["settlement_id"]
        for line in stl.lines(conn, sid, "OP02"):
            assert line["event_id"] == stl.V2G_SESSIONS
            with pytest.raises(InvalidInput) as err:
                disputes.raise_dispute(conn, op02, sid, line["line_id"], "discharge under-counted",
                                       {"meter": {"R5": [0.0]}})
            (v,) = err.value.violations
            assert v.field == "line_id" and "metered V2G sessions" in v.rule and "cannot correct" in v.rule
        assert disputes.list_(conn, sid) == []
