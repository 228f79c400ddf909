"""Congestion service on the mini city: forecast, scan, propose a scoped event, relief achieved."""

from datetime import date

import pytest

from openvpp.core.errors import InvalidInput
from openvpp.services import congestion, events
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema_events import awards

DISPATCHER = Actor("disp", "dispatcher")
DAY = date(2025, 7, 15)


def test_forecast_scan_propose_and_relief(loaded):
    with db.get_engine(loaded.database_url).begin() as conn:
        nodes, p, rating = congestion.forecast_node_load(conn, DAY)
        assert nodes == ["GZ-HZ-S01-F01-T001", "GZ-HZ-S01-F01-T002", "GZ-TH-S01-F01-T001"]
        # the mini profiles are 0.6 ± 0.05 per unit: T002 carries R6 (1100 kW scale) and R7 (40 kW)
        assert p[1].mean() == pytest.approx(0.6 * (1100 + 40), rel=0.05)
        found = congestion.scan(conn, DAY)
        assert [f["node_id"] for f in found] == ["GZ-HZ-S01-F01-T002"]      # 400 kVA under ~684 kW
        assert found[0]["peak_loading"] > 1.5 and found[0]["slots_over"] == 96
        ev = congestion.propose(conn, DISPATCHER, "GZ-HZ-S01-F01-T002", DAY)
        assert (ev["product"], ev["scope_node_id"], ev["state"]) == ("congestion", "GZ-HZ-S01-F01-T002", "draft")
        assert (ev["start_slot"], ev["end_slot"]) == (0, 96)
        allowed = 400 * 0.95 * 0.95
        assert ev["targets_kw"][0] == pytest.approx(p[1][0] - allowed, abs=1e-3)
        with pytest.raises(InvalidInput, match="no overload"):
            congestion.propose(conn, DISPATCHER, "GZ-TH-S01-F01-T001", DAY)
        with pytest.raises(InvalidInput, match="feeder or a transformer area"):
            congestion.propose(conn, DISPATCHER, "GZ-HZ", DAY)
        # relief achieved by a cleared reduction of the full target in slot 60
        conn.execute(awards.insert().values(event_id=ev["event_id"], unit_id="OP01@GZ-HZ-S01", slot=60,
                                            operator_id="OP01", cleared_kw=ev["targets_kw"][60],
                                            price_yuan_per_kwh=2.0))
        rep = congestion.relief_report(conn, ev["event_id"])
        assert rep["before"][60] > 1.5
        assert rep["after"][60] == pytest.approx(0.95, abs=1e-6)
        assert events.get(conn, ev["event_id"])["targets_kw"][60] > 0
