"""Capability verification end to end: schedule, telemetry, baseline, grade, flag, report."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from openvpp.core.errors import Forbidden, InvalidInput, NotFound, TransitionRefused
from openvpp.services import verification as ver
from openvpp.sim.responses import Behaviour, SimulatedFleet
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema import resources

ADMIN = Actor("center", "city_admin")
START = datetime(2025, 7, 15, 6, 0, tzinfo=UTC)  # 14:00 Beijing time


def flat_source(deliveries: dict[str, tuple[float, int]], base_kw: float = 1000.0, direction: str = "down"):
    """Flat 1000 kW loads; resource r drops (``up``: rises) by kw after `delay` steps from the instruction."""
    sign = -1.0 if direction == "down" else 1.0

    def source(ids, start, end, step_s):
        t = int((end - start).total_seconds() // step_s)
        out = np.full((len(ids), t), base_kw)
        pre = int(ver.PRE_WINDOW.total_seconds() // step_s)
        for k, rid in enumerate(ids):
            kw, delay = deliveries.get(rid, (0.0, 0))
            out[k, pre + delay:] += sign * kw
        return out
    return source


def _verified(conn, rid: str) -> dict:
    cols = ("verified_down_kw", "verified_latency_s", "verified_grade", "verified_up_kw", "verified_up_latency_s",
            "verified_up_grade", "flagged")
    return dict(conn.execute(select(*[resources.c[c] for c in cols]).where(resources.c.resource_id == rid))
                .mappings().one())


def test_resource_test_grades_and_updates_capability(loaded):
    with db.get_engine(loaded.database_url).begin() as conn:
        t = ver.schedule(conn, ADMIN, "resource", "R1", START)
        assert (t["declared_kw"], t["declared_duration_h"], t["state"]) == (160.0, 2.0, "scheduled")
        assert t["window_end"] - t["window_start"] == timedelta(hours=2, minutes=15)
        done = ver.complete(conn, ADMIN, t["test_id"], flat_source({"R1": (120.0, 2)}))
    assert (done["state"], done["grade"]) == ("done", "B")
    assert done["verified_kw"] == pytest.approx(120.0) and done["ratio"] == pytest.approx(0.75)
    assert done["latency_s"] == 120.0            # two 1-minute steps after the instruction
    with db.get_engine(loaded.database_url).connect() as conn:
        rep = {r["operator_id"]: r for r in ver.declared_vs_verified(conn)}
    assert rep["OP01"]["tested"] == 1 and rep["OP01"]["grade_b"] == 1
    assert rep["OP01"]["verified_down_kw"] == pytest.approx(120.0)
    assert rep["OP01"]["verified_ratio"] == pytest.approx(0.75)


def test_trading_unit_failing_member_is_flagged(loaded):
    with db.get_engine(loaded.database_url).begin() as conn:
        t = ver.schedule(conn, ADMIN, "trading_unit", "OP01@GZ-TH-S01", START)
        assert t["declared_kw"] == 160 + 200 + 500
        done = ver.complete(conn, ADMIN, t["test_id"],
                            flat_source({"R1": (160.0, 1), "R2": (200.0, 0), "R3": (100.0, 0)}))
    res = done["result"]["resources"]
    assert [res[r]["grade"] for r in ("R1", "R2", "R3")] == ["A", "A", "C"]
    assert done["verified_kw"] == pytest.approx(460.0) and done["grade"] == "C"   # 460 / 860 = 53 %
    with db.get_engine(loaded.database_url).connect() as conn:
        rep = ver.declared_vs_verified(conn, "OP01")[0]
        r3 = conn.exec_driver_sql("SELECT flagged, verified_grade FROM resources WHERE resource_id='R3'").one()
    assert rep["flagged"] == 1 and rep["grade_c"] == 1
    assert r3[1] == "C" and "grade C" in r3[0]


def test_simulated_fleet_full_and_weak_delivery(loaded):
    with db.get_engine(loaded.database_url).begin() as conn:
        fleet = SimulatedFleet.from_db(conn)
        good = ver.schedule(conn, ADMIN, "resource", "R3", START)
        fleet.instruct("R3", START, good["window_end"], -500.0)
        good = ver.complete(conn, ADMIN, good["test_id"], fleet)
        weak = ver.schedule(conn, ADMIN, "resource", "R6", START)
        fleet.behaviours["R6"] = Behaviour(delivery=0.25, tau_s=120)
        fleet.instruct("R6", START, weak["window_end"], -300.0)
        weak = ver.complete(conn, ADMIN, weak["test_id"], fleet)
    # the mini city's profiles drift over two hours, so the baseline is not exact: bounds, not equality
    assert good["grade"] in ("A", "B") and 0.8 < good["ratio"] < 1.2
    assert weak["grade"] == "C" and weak["ratio"] < 0.5
    assert 0 <= good["latency_s"] <= 180


def test_refusals(loaded):
    with db.get_engine(loaded.database_url).begin() as conn:
        with pytest.raises(Forbidden):
            ver.schedule(conn, Actor("op", "operator_admin", operator_id="OP01"), "resource", "R1", START)
        with pytest.raises(NotFound):
            ver.schedule(conn, ADMIN, "resource", "R404", START)
        with pytest.raises(InvalidInput, match="target_kind"):
            ver.schedule(conn, ADMIN, "feeder", "x", START)
        with pytest.raises(InvalidInput, match="nothing declared"):
            ver.schedule(conn, ADMIN, "resource", "R1", START, direction="up")   # R1 declares 0 kW up
        t = ver.schedule(conn, ADMIN, "resource", "R2", START)
        ver.complete(conn, ADMIN, t["test_id"], flat_source({"R2": (200.0, 0)}))
        with pytest.raises(TransitionRefused, match="done"):
            ver.complete(conn, ADMIN, t["test_id"], flat_source({}))
        t2 = ver.schedule(conn, ADMIN, "resource", "R1", START)
        with pytest.raises(InvalidInput, match="telemetry"):
            ver.complete(conn, ADMIN, t2["test_id"], lambda ids, s, e, st: np.zeros((1, 3)))


def test_grade_and_latency_are_kept_per_direction(loaded):
    """R3 (storage, 500 kW each way): down A at 60 s; up C leaves the down grade alone but flags it;
    up A clears the flag; a later down C flags it again and an up A does not clear that."""
    with db.get_engine(loaded.database_url).begin() as conn:
        t = ver.schedule(conn, ADMIN, "resource", "R3", START)
        assert t["baseline_method"] == "pre-window-mean-60min"
        ver.complete(conn, ADMIN, t["test_id"], flat_source({"R3": (500.0, 1)}))
        assert _verified(conn, "R3") == {"verified_down_kw": 500.0, "verified_latency_s": 60.0, "verified_grade": "A",
                                         "verified_up_kw": None, "verified_up_latency_s": None,
                                         "verified_up_grade": None, "flagged": None}
        t = ver.schedule(conn, ADMIN, "resource", "R3", START + timedelta(days=1), direction="up")
        ver.complete(conn, ADMIN, t["test_id"], flat_source({"R3": (200.0, 3)}, direction="up"))
        got = _verified(conn, "R3")
        assert (got["verified_down_kw"], got["verified_latency_s"], got["verified_grade"]) == (500.0, 60.0, "A")
        assert (got["verified_up_kw"], got["verified_up_latency_s"], got["verified_up_grade"]) == (200.0, 180.0, "C")
        assert got["flagged"] == f"verification {t['test_id']} (up): grade C, 40% of declared"
        t = ver.schedule(conn, ADMIN, "resource", "R3", START + timedelta(days=2), direction="up")
        ver.complete(conn, ADMIN, t["test_id"], flat_source({"R3": (480.0, 0)}, direction="up"))
        got = _verified(conn, "R3")
        assert (got["verified_up_kw"], got["verified_up_latency_s"], got["verified_up_grade"]) == (480.0, 0.0, "A")
        assert got["flagged"] is None and got["verified_grade"] == "A"
        down_c = ver.schedule(conn, ADMIN, "resource", "R3", START + timedelta(days=3))
        ver.complete(conn, ADMIN, down_c["test_id"], flat_source({"R3": (100.0, 0)}))
        t = ver.schedule(conn, ADMIN, "resource", "R3", START + timedelta(days=4), direction="up")
        ver.complete(conn, ADMIN, t["test_id"], flat_source({"R3": (500.0, 0)}, direction="up"))
        got = _verified(conn, "R3")
    assert (got["verified_grade"], got["verified_up_grade"]) == ("C", "A")
    assert got["flagged"] == f"verification {down_c['test_id']} (down): grade C, 20% of declared"


def test_a_member_without_capability_in_the_direction_is_left_out_of_the_test(loaded):
    """Site S3 raises load only through R6 (200 kW up set here); R7 declares 0 kW up: it is not tested
    (no ratio of 0 kW to grade, which PostgreSQL could not store as JSON) and keeps its grade."""
    with db.get_engine(loaded.database_url).begin() as conn:
        conn.execute(resources.update().where(resources.c.resource_id == "R6").values(adjustable_up_kw=200.0))
        t = ver.schedule(conn, ADMIN, "site", "S3", START, direction="up")
        assert (t["result"]["members"], t["result"]["not_declared"], t["declared_kw"]) == (["R6"], ["R7"], 200.0)
        done = ver.complete(conn, ADMIN, t["test_id"], flat_source({"R6": (190.0, 0)}, direction="up"))
        r7 = _verified(conn, "R7")
    assert list(done["result"]["resources"]) == ["R6"] and done["grade"] == "A"
    assert done["ratio"] == pytest.approx(190 / 200)
    assert r7["verified_up_grade"] is None


def test_site_test_covers_every_active_resource_of_the_site(loaded):
    """Site S3 (Mall B): R6 of OP01 (300 kW down, 2 h) and R7 without an operator (60 kW, 1 h). The
    test takes the shorter duration, belongs to no single operator, and re-runs OP01's checks only."""
    with db.get_engine(loaded.database_url).begin() as conn:
        t = ver.schedule(conn, ADMIN, "site", "S3", START)
        assert (t["declared_kw"], t["declared_duration_h"], t["operator_id"]) == (360.0, 1.0, None)
        assert t["result"]["members"] == ["R6", "R7"]
        assert t["window_end"] - t["window_start"] == timedelta(hours=1, minutes=15)
        done = ver.complete(conn, ADMIN, t["test_id"], flat_source({"R6": (300.0, 1)}))
        with pytest.raises(NotFound):
            ver.schedule(conn, ADMIN, "site", "S404", START)
    res = done["result"]["resources"]
    assert (res["R6"]["grade"], res["R6"]["latency_s"], res["R7"]["grade"]) == ("A", 60.0, "C")
    assert done["grade"] == "B" and done["ratio"] == pytest.approx(300 / 360)
    assert set(done["result"]["rechecked"]) == {"OP01"}
