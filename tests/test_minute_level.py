"""Issue 4: minute-level capability, verified not declared, is the reserve subsidy's condition.

A trading unit verified at >= 1 MW within 60 s makes its operator's re-run checks pass
``minute_level`` (with the TSS round trip over a real loopback server), and the year's settlement
then pays that operator's reserve availability; a slower verification, or no TSS round trip,
does not.
"""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from openvpp.adapters.tss import probe
from openvpp.api.app import create_app
from openvpp.core.errors import Forbidden, TransitionRefused
from openvpp.services import admission
from openvpp.services import evaluation as eva
from openvpp.services import settlement as stl
from openvpp.services import verification as ver
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema import operators
from tests._server import serve
from tests.test_settlement import ADMIN, AFTER, DISP, END, START, meter_source, run_event, setup_city
from tests.test_verification import flat_source

TEST_START = datetime(2025, 7, 1, 6, 0, tzinfo=UTC)
UNIT = "OP01@GZ-TH-S01"      # R1, R2, R3 of the mini city and the golden chillers GA1, GA2 (1,500 kW each)


@pytest.fixture
def tss(loaded):
    with serve(create_app(loaded)) as base:
        yield base


def _checks(conn, operator_id: str) -> dict[str, bool]:
    return {c["check"]: c["passed"] for c in admission.latest_checks(conn, operator_id)}


def _verify(conn, start: datetime, delay_steps: int, probe_fn=probe) -> dict:
    """A trading-unit test in which the two chillers deliver their 1,500 kW ``delay_steps`` minutes
    after the instruction (the mini city's own resources deliver nothing)."""
    t = ver.schedule(conn, ADMIN, "trading_unit", UNIT, start)
    return ver.complete(conn, ADMIN, t["test_id"], flat_source({"GA1": (1500.0, delay_steps),
                                                               "GA2": (1500.0, delay_steps)}), probe=probe_fn)


def test_verified_minute_level_unit_is_paid_reserve_availability(loaded, tss, tmp_path):
    setup_city(loaded, tmp_path)
    engine = db.get_engine(loaded.database_url)
    with engine.begin() as conn:
        conn.execute(update(operators).where(operators.c.operator_id == "OP01").values(tss_endpoint=tss))
        # the city load stored checks for the admitted operators (before the chillers: 860 kW declared)
        assert _checks(conn, "OP01") == {"tss_registered": True, "tss_connectivity": False, "trading_unit": False,
                                         "minute_level": False}
        slow = _verify(conn, TEST_START, delay_steps=2)             # 2 minutes to respond: A, but too slow
        assert slow["result"]["resources"]["GA1"]["grade"] == "A"
        assert slow["result"]["resources"]["GA1"]["latency_s"] == 120.0
        assert slow["result"]["rechecked"] == {"OP01": {"tss_registered": True, "tss_connectivity": True,
                                                        "trading_unit": True, "minute_level": False}}
        unit = next(u for u in admission.trading_units(conn, "OP01") if u["clearing_node"] == "GZ-TH-S01")
        assert unit["verified_minute_kw"] == 0.0
        # without the TSS round trip a fast unit still does not qualify
        fast = _verify(conn, TEST_START + timedelta(days=1), delay_steps=1, probe_fn=None)
        assert fast["result"]["rechecked"]["OP01"]["minute_level"] is False
        # within 60 s and the TSS answering: minute-level
        fast = _verify(conn, TEST_START + timedelta(days=2), delay_steps=1)
        assert fast["result"]["resources"]["GA2"]["latency_s"] == 60.0
        assert fast["result"]["rechecked"]["OP01"]["minute_level"] is True
        unit = next(u for u in admission.trading_units(conn, "OP01") if u["clearing_node"] == "GZ-TH-S01")
        assert (unit["verified_minute_kw"], unit["minute_level"]) == (3000.0, True)
        assert _checks(conn, "OP01")["minute_level"] is True
        assert _checks(conn, "OP02")["minute_level"] is False      # declared only (checks from the load)

    # a reserve event: 2,000 kW of OP01 and 1,000 kW of OP02 held for 1 h at 0.01 yuan/kW·h
    eid = run_event(loaded, {"OP01@GZ-TH-S01": ("OP01", 2000.0), "OP02@GZ-HZ-S01": ("OP02", 1000.0)},
                    price=0.01, product="reserve")
    with engine.begin() as conn:
        out = eva.evaluate(conn, DISP, eid, meter_source(), now=AFTER)
        assert out["totals"]["by_operator"]["OP01"]["credited"] == pytest.approx(2000.0)   # kW x 1 h
        sid = stl.compute(conn, ADMIN, 2025)["settlement_id"]
        got = {r["operator_id"]: (stl.from_fen(r["amount_fen"]), r["note"]) for r in stl.lines(conn, sid)}
    assert (END - START) == 4
    assert str(got["OP01"][0]) == "20.00" and got["OP01"][1] is None
    assert str(got["OP02"][0]) == "0.00" and "not eligible" in got["OP02"][1]


def test_recheck_changes_no_state_is_audited_and_fenced(loaded, tss):
    engine = db.get_engine(loaded.database_url)
    with engine.begin() as conn:
        conn.execute(update(operators).where(operators.c.operator_id == "OP02").values(tss_endpoint=tss))
        out = admission.recheck(conn, ADMIN, "OP02", probe, reason="new TSS endpoint")
        assert out["state"] == "admitted"
        assert {c["check"]: c["passed"] for c in out["checks"]} == {
            "tss_registered": True, "tss_connectivity": True, "trading_unit": False, "minute_level": False}
        with pytest.raises(Forbidden, match="admit_operators"):
            admission.recheck(conn, Actor("op2", "operator_admin", operator_id="OP02"), "OP02", probe)
        admission.transition(conn, ADMIN, "OP02", "exit", reason="closed")
        with pytest.raises(TransitionRefused, match="'recheck' needs state"):
            admission.recheck(conn, ADMIN, "OP02", probe)
        entries = conn.exec_driver_sql(
            "SELECT reason FROM audit_log WHERE action = 'operator.recheck' AND entity_id = 'OP02' "
            "ORDER BY audit_id").scalars().all()
    assert entries == ["city loaded", "new TSS endpoint"]
