"""Evaluation reading the telemetry store (StoreMeterSource), members at the event time, and the
array, corrected and store sources agreeing — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from openvpp.core.errors import InvalidInput
from openvpp.core.timeslots import local_midnight_utc, slot_start_utc
from openvpp.kernels.baseline import BaselineSpec
from openvpp.services import access
from openvpp.services import evaluation as eva
from openvpp.store import db, timeseries
from tests.test_settlement import ADMIN, AFTER, DAY, DISP, END, START, run_event, setup_city

UNIT_B = {"OP02@GZ-HZ-S01": ("OP02", 1000.0)}


def _batch(device: list[str], ts: list[datetime], p: list[float], q: list[float] | None = None) -> timeseries.RawBatch:
    n = len(device)
    nan = np.full(n, np.nan)
    return timeseries.RawBatch(
        device=np.array(device, dtype=object), ts_ms=np.array([int(t.timestamp() * 1000) for t in ts], np.int64),
        p_kw=np.array(p, float), q_kvar=np.array(q, float) if q is not None else nan, e_kwh=nan, eq_kvarh=nan,
        soc=nan, quality=np.zeros(n, np.int16), source=np.array(["test"] * n, dtype=object))


def write_unit_b(settings, history_days: int = 8, gb2_slot58_kw: float = 400.0) -> None:
    """GB1 600 kW / GB2 400 kW flat (one point per quarter hour) on the history days; on the event day a point
    every minute of the window: GB1 0 kW, GB2 0 kW except slot 58 (``gb2_slot58_kw``); reactive 50 kvar."""
    dev, ts, p, q = [], [], [], []
    first = DAY - timedelta(days=history_days)
    for d in range(history_days):
        t0 = local_midnight_utc(first + timedelta(days=d))
        for k in range(96):
            for rid, kw in (("GB1", 600.0), ("GB2", 400.0)):
                dev.append(rid)
                ts.append(t0 + timedelta(minutes=15 * k + 7))
                p.append(kw)
                q.append(50.0)
    for slot in range(START, END):
        t0 = slot_start_utc(DAY, slot)
        for m in range(15):
            for rid in ("GB1", "GB2"):
                dev.append(rid)
                ts.append(t0 + timedelta(minutes=m, seconds=30))
                p.append(gb2_slot58_kw if (rid == "GB2" and slot == 58) else 0.0)
                q.append(10.0)
    with db.get_engine(settings.database_url).begin() as conn:
        timeseries.write_points(conn, _batch(dev, ts, p, q))
        while True:
            r = timeseries.refresh_rollups(conn, None, 5000)
            if not r.minutes and not r.quarters:
                break


def test_store_source_reads_rollups_as_slot_means_and_minutes(loaded, tmp_path):
    setup_city(loaded, tmp_path)
    write_unit_b(loaded, history_days=2)
    with db.get_engine(loaded.database_url).connect() as conn:
        src = eva.StoreMeterSource(conn)
        data = src.read(["GB1", "GB2", "NOPE"], DAY - timedelta(days=2), 3, minutes=True)
        assert data.values.shape == (3, 3, 96)
        assert np.all(data.values[0, :2] == 600.0) and np.all(data.values[1, :2] == 400.0)
        assert data.values[1, 2, START:END].tolist() == [0.0, 0.0, 400.0, 0.0]
        assert np.isnan(data.values[2]).all() and np.isnan(data.values[0, 2, :START]).all()
        assert data.minutes[0, 2, START:END].tolist() == [15.0] * 4 and data.minutes[0, 0, 10] == 1.0
        q = src.read(["GB1"], DAY, 1, quantity="reactive_kvar")
        assert q.values[0, 0, START] == 10.0
        with pytest.raises(InvalidInput):
            src.read(["GB1"], DAY, 1, quantity="soc")


def test_event_evaluated_from_the_telemetry_store(loaded, tmp_path):
    setup_city(loaded, tmp_path)
    write_unit_b(loaded)
    eid = run_event(loaded, UNIT_B)
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, eva.StoreMeterSource(conn), history_days=8, now=AFTER)
        assert out["meter_source"] == "telemetry" and out["inputs"]["days_used_min"] == 5
        slots = out["units"][0]["slots"]
        assert [s["response_kw"] for s in slots] == [1000.0, 1000.0, 600.0, 1000.0]
        assert [s["credited"] for s in slots] == [250.0, 250.0, 0.0, 250.0]
        assert out["totals"]["not_measured"] == 8          # R4 and R5 in 4 slots
        # the same data as arrays gives the same numbers (and the same hash only for the same arrays)
        data = eva.StoreMeterSource(conn).read(["GB1", "GB2"], DAY - timedelta(days=8), 9)
        arr = eva.ArrayMeterSource(["GB1", "GB2"], DAY - timedelta(days=8), data.values)
        again = eva.evaluate(conn, DISP, eid, arr, history_days=8, now=AFTER)
        assert again["totals"]["credited"] == out["totals"]["credited"] == 750.0
        fixed = eva.CorrectedMeterSource(eva.StoreMeterSource(conn), DAY, {"GB2": {58: 0.0}})
        third = eva.evaluate(conn, DISP, eid, fixed, history_days=8, now=AFTER)
        assert third["totals"]["credited"] == 1000.0 and third["meter_source"] == "telemetry+corrections"
        assert len({out["telemetry_sha256"], third["telemetry_sha256"]}) == 2


def test_members_follow_transfers_at_the_event_time(loaded, tmp_path):
    """GB2 moves to OP01 after the event: the event still counts it in OP02's unit."""
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, UNIT_B)
    with db.get_engine(loaded.database_url).begin() as conn:
        access.transfer(conn, ADMIN, "GB2", "OP01", "merger", at=datetime(2025, 8, 1, tzinfo=UTC))
        ev = eva.events.get(conn, eid)
        at = slot_start_utc(DAY, START)
        assert [m["resource_id"] for m in eva.members_at(conn, ev, "OP02@GZ-HZ-S01", at)] == [
            "GB1", "GB2", "R4", "R5"]
        later = datetime(2025, 9, 1, tzinfo=UTC)
        assert "GB2" not in [m["resource_id"] for m in eva.members_at(conn, ev, "OP02@GZ-HZ-S01", later)]


def test_temperature_regression_needs_a_weather_source(loaded, tmp_path):
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, UNIT_B)
    with db.get_engine(loaded.database_url).begin() as conn, pytest.raises(InvalidInput):
        eva.evaluate(conn, DISP, eid, eva.ArrayMeterSource([], DAY, np.zeros((0, 1, 96))),
                     spec=BaselineSpec("temperature-regression"), now=AFTER)


def test_same_day_adjustment_is_recorded(loaded, tmp_path):
    """A bounded multiplicative adjustment from 12:00-13:00: GB1 ran 10 % high before the event."""
    from tests.test_settlement import meter_source

    setup_city(loaded, tmp_path)
    eid = run_event(loaded, UNIT_B)
    src = meter_source()
    src.data["power_kw"][list(src.pos).index("GB1"), -1, START - 8:START - 4] = 660.0
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, src, spec=BaselineSpec("gbt-workday", adjustment={"cap": 0.2}),
                           now=AFTER)
    assert out["baseline_id"] == "gbt-workday-5/2+mult-0.2"
    factors = out["inputs"]["adjustment_values"]
    assert factors["GB1"] == pytest.approx(1.1) and factors["GB2"] == 1.0
    assert out["units"][0]["slots"][0]["baseline_kw"] == pytest.approx(660 + 400 + 80 + 40)
