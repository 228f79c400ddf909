"""Telemetry storage on SQLite and the real PostgreSQL: idempotence, rollups, late points, partitions."""

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from openvpp.services.telemetry import Points, TelemetryConfig, TelemetryService
from openvpp.store import db, timeseries
from openvpp.store.schema_telemetry import telemetry_raw, telemetry_rollup

T0 = datetime(2025, 11, 24, 2, 0, tzinfo=UTC)          # 10:00 in Guangzhou
T0_MS = int(T0.timestamp() * 1000)


def service(url, now=T0 + timedelta(minutes=30), **cfg) -> TelemetryService:
    return TelemetryService(db.get_engine(url), TelemetryConfig(**cfg), clock=lambda: now.timestamp())


def pts(rows) -> Points:
    """rows: (device, ms offset from T0, p_kw[, soc])."""
    return Points.from_columns({"d": [r[0] for r in rows], "t": [T0_MS + r[1] for r in rows],
                                "p": [r[2] for r in rows],
                                "soc": [r[3] if len(r) > 3 else None for r in rows]})


def rollups(conn, step, start=T0, end=T0 + timedelta(hours=2)):
    return {(r["device_id"], r["bucket"]): (r["n"], round(r["power_sum_kw"], 9), r["power_min_kw"],
                                            r["power_max_kw"])
            for r in timeseries.read_rollup(conn, step, ["R1", "R2", "R3", "R4", "R5", "R6", "R7"], start, end)}


def test_reingest_is_idempotent_and_counts_duplicates(loaded):
    svc = service(loaded.database_url)
    batch = pts([("R1", 0, 100.0), ("R1", 30_000, 200.0), ("R4", 0, 50.0), ("R4", 0, 50.0)])
    first = svc.ingest(batch, "test", "gw1")
    assert (first.inserted, first.duplicates) == (3, 1)
    assert svc.refresh_rollups() == 1
    with db.get_engine(loaded.database_url).connect() as conn:
        before = rollups(conn, 60)
    second = svc.ingest(batch, "test", "gw1")
    assert (second.inserted, second.duplicates) == (0, 4)
    assert svc.refresh_rollups() == 0      # nothing new: nothing to recompute
    with db.get_engine(loaded.database_url).connect() as conn:
        assert timeseries.count_raw(conn) == 3
        assert rollups(conn, 60) == before
        assert before[("R1", T0)] == (2, 300.0, 100.0, 200.0)
        raw = timeseries.read_raw(conn, ["R1"], T0, T0 + timedelta(minutes=1))
        assert [(r["ts"], r["power_kw"], r["source"]) for r in raw] == [
            (T0, 100.0, "gw1"), (T0 + timedelta(seconds=30), 200.0, "gw1")]
        counters = {r["reason"]: r["n"] for r in timeseries.read_counters(conn, T0.date())}
    assert counters == {"accepted": 8, "inserted": 3, "duplicate": 5}


def test_rejected_points_are_counted_and_never_stored(loaded):
    svc = service(loaded.database_url)
    res = svc.ingest(pts([("R1", 0, 10.0), ("NOPE", 0, 1.0), ("R4", 0, 1e6), ("R5", 0, 1.0, 1.5),
                          ("R1", 3 * 3600_000, 1.0)]), "http", "key:x")
    assert res.inserted == 1
    assert res.rejected == {"unknown_device": 1, "over_capacity": 1, "soc_out_of_range": 1,
                            "future_timestamp": 1}
    with db.get_engine(loaded.database_url).connect() as conn:
        assert conn.execute(select(telemetry_raw.c.device_id)).scalars().all() == ["R1"]
        c = {r["reason"]: r["n"] for r in timeseries.read_counters(conn, T0.date(), ["http"])}
    assert c["over_capacity"] == 1 and c["accepted"] == 1


def test_operator_fence_refuses_foreign_devices(loaded):
    svc = service(loaded.database_url)
    res = svc.ingest(pts([("R1", 0, 1.0), ("R4", 0, 1.0)]), "http", "k", operator_id="OP02")
    assert res.inserted == 1 and res.rejected == {"foreign_device": 1}


def test_group_rollups_cover_every_level_and_late_points_recompute_them(loaded):
    svc = service(loaded.database_url)
    # minute 0: R1 (Tianhe T001) 100 and 300 → mean 200; R4, R5 (Haizhu T001) 40, 20; R6 (Haizhu T002) 1000
    svc.ingest(pts([("R1", 0, 100.0), ("R1", 20_000, 300.0), ("R4", 0, 40.0), ("R5", 0, 20.0),
                    ("R6", 0, 1000.0)]), "t", "g")
    assert svc.refresh_rollups() == 1   # one minute (and the quarter-hour holding it)
    url = loaded.database_url

    def group(kind, gid, step=60):
        with db.get_engine(url).connect() as conn:
            rows = timeseries.read_group_rollup(conn, step, kind, [gid], T0, T0 + timedelta(hours=1))
        return [(r["bucket"], round(r["power_kw"], 6), r["n_devices"], r["n_points"]) for r in rows]

    assert group("city", "GZ") == [(T0, 1260.0, 4, 5)]
    assert group("district", "GZ-HZ") == [(T0, 1060.0, 3, 3)]
    assert group("district", "GZ-TH") == [(T0, 200.0, 1, 2)]
    assert group("substation", "GZ-HZ-S01") == [(T0, 1060.0, 3, 3)]
    assert group("feeder", "GZ-HZ-S01-F01") == [(T0, 1060.0, 3, 3)]
    assert group("transformer_area", "GZ-HZ-S01-F01-T001") == [(T0, 60.0, 2, 2)]
    assert group("operator", "OP01") == [(T0, 1200.0, 2, 3)]
    assert group("operator", "OP02") == [(T0, 60.0, 2, 2)]
    assert group("city", "GZ", 900) == [(T0, 1260.0, 4, 5)]
    # a late point in the same minute for R1 (500) → R1 mean 300; totals follow after the refresh
    late = service(url, now=T0 + timedelta(hours=5))
    assert late.ingest(pts([("R1", 40_000, 500.0)]), "t", "g").inserted == 1
    assert late.refresh_rollups() == 1
    assert group("city", "GZ") == [(T0, 1360.0, 4, 6)]
    assert group("operator", "OP01") == [(T0, 1300.0, 2, 4)]
    assert group("transformer_area", "GZ-TH-S01-F01-T001") == [(T0, 300.0, 1, 3)]
    # a point older than the lateness is refused and changes nothing
    too_late = service(url, now=T0 + timedelta(days=3))
    assert too_late.ingest(pts([("R1", 50_000, 900.0)]), "t", "g").rejected == {"too_late": 1}
    assert too_late.refresh_rollups() == 0


def test_bad_quality_points_are_stored_but_left_out_of_rollups(loaded):
    svc = service(loaded.database_url)
    p = Points.from_columns({"d": ["R1", "R1"], "t": [T0_MS, T0_MS + 1000], "p": [10.0, 700.0], "qf": [1, 2]})
    assert svc.ingest(p, "t", "g").inserted == 2
    svc.refresh_rollups()
    with db.get_engine(loaded.database_url).connect() as conn:
        assert rollups(conn, 900)[("R1", T0)] == (1, 10.0, 10.0, 10.0)


def test_postgres_partitions_by_local_day_and_retention_drops_them(loaded):
    if not loaded.is_postgres:
        with db.get_engine(loaded.database_url).begin() as conn:
            timeseries.write_points(conn, _raw(["R1"], [T0_MS - 10 * 86_400_000]))
            assert timeseries.apply_retention(conn, 5, T0) == ["1 rows"]
            assert timeseries.count_raw(conn) == 0
        return
    eng = db.get_engine(loaded.database_url)
    # 15:59:59Z and 16:00:00Z fall on two local days
    day_edge = int(datetime(2025, 11, 23, 16, 0, tzinfo=UTC).timestamp() * 1000)
    with eng.begin() as conn:
        timeseries.write_points(conn, _raw(["R1", "R1"], [day_edge - 1000, day_edge]))
    with eng.connect() as conn:
        names = timeseries.partitions(conn)
        assert {"telemetry_raw_p20251123", "telemetry_raw_p20251124", "telemetry_raw_p20251125"} <= set(names)
        counts = {n: conn.exec_driver_sql(f"SELECT count(*) FROM {n}").scalar() for n in names}
        assert counts["telemetry_raw_p20251123"] == 1 and counts["telemetry_raw_p20251124"] == 1
    with eng.begin() as conn:
        dropped = timeseries.apply_retention(conn, 1, datetime(2025, 11, 25, 3, 0, tzinfo=UTC))
    assert dropped == ["telemetry_raw_p20251123"]
    with eng.begin() as conn:
        assert timeseries.count_raw(conn) == 1
        # a new point for the dropped day recreates its partition on demand
        timeseries.write_points(conn, _raw(["R2"], [day_edge - 5000]))
        assert timeseries.count_raw(conn) == 2


def _raw(devices, ts_ms, p=None):
    n = len(devices)
    p = np.asarray(p if p is not None else np.ones(n), np.float64)
    nan = np.full(n, np.nan)
    return timeseries.RawBatch(np.asarray(devices, dtype=object), np.asarray(ts_ms, np.int64), p, nan, nan,
                               nan, nan, np.zeros(n, np.int16), np.full(n, "t", dtype=object))


_window = itertools.count(1)
point = st.tuples(st.sampled_from(["R1", "R2", "R4"]), st.integers(0, 1799), st.integers(-100, 100))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(point, max_size=25), st.lists(point, max_size=25))
def test_rollup_of_a_union_equals_rollups_of_its_parts(loaded, a, b):
    """Writing A then B (duplicates included) gives the rollups of writing A ∪ B once, whether the
    rollups are refreshed between the parts or not."""
    eng = db.get_engine(loaded.database_url)
    w = next(_window)
    base1, base2 = T0_MS + w * 4 * 3600_000, T0_MS + w * 4 * 3600_000 + 2 * 3600_000   # two disjoint windows

    def batch(rows, base):
        return _raw([r[0] for r in rows], [base + r[1] * 1000 for r in rows], [float(r[2]) for r in rows])

    with eng.begin() as conn:
        timeseries.write_points(conn, batch(a, base1))
        timeseries.refresh_rollups(conn)
        timeseries.write_points(conn, batch(b, base1))
        timeseries.write_points(conn, batch(a + b, base2))
        timeseries.write_points(conn, batch(b, base2))   # re-sent: nothing changes
        while timeseries.refresh_rollups(conn):
            pass

    def view(base):
        start = datetime.fromtimestamp(base / 1000, UTC)
        with eng.connect() as conn:
            out = {}
            for step in (60, 900):
                for r in timeseries.read_rollup(conn, step, ["R1", "R2", "R4"], start, start + timedelta(hours=1)):
                    out[(step, r["device_id"], r["bucket"] - start)] = (r["n"], pytest.approx(r["power_sum_kw"]),
                                                                       r["power_min_kw"], r["power_max_kw"])
        return out

    assert view(base1) == view(base2)
    distinct = {(r[0], r[1]) for r in a + b}
    with eng.connect() as conn:
        n = conn.execute(select(func.sum(telemetry_rollup.c.n)).where(
            telemetry_rollup.c.step_s == 900,
            telemetry_rollup.c.bucket >= datetime.fromtimestamp(base1 / 1000, UTC),
            telemetry_rollup.c.bucket < datetime.fromtimestamp(base2 / 1000, UTC))).scalar()
    assert (n or 0) == len(distinct)


def test_minutes_and_quarter_hours_are_rolled_up_once_they_have_closed(loaded):
    inside = service(loaded.database_url, now=T0 + timedelta(seconds=30))
    inside.ingest(pts([("R1", 0, 10.0), ("R1", 20_000, 30.0)]), "t", "g")
    assert inside.refresh_rollups() == 0                 # the minute is still open
    assert service(loaded.database_url, now=T0 + timedelta(seconds=62)).refresh_rollups() == 0   # grace
    assert service(loaded.database_url, now=T0 + timedelta(seconds=66)).refresh_rollups() == 1
    with db.get_engine(loaded.database_url).connect() as conn:
        assert rollups(conn, 60)[("R1", T0)] == (2, 40.0, 10.0, 30.0)
        assert ("R1", T0) not in rollups(conn, 900)      # its quarter-hour is still open
    service(loaded.database_url, now=T0 + timedelta(minutes=15, seconds=6)).refresh_rollups()
    with db.get_engine(loaded.database_url).connect() as conn:
        assert rollups(conn, 900)[("R1", T0)] == (2, 40.0, 10.0, 30.0)


def test_pool_rollups_sum_their_members_device_means(loaded):
    from openvpp.services import pools

    eng = db.get_engine(loaded.database_url)
    with eng.begin() as conn:
        pools.default_pools(conn)
    svc = service(loaded.database_url)
    svc.ingest(pts([("R1", 0, 100.0), ("R1", 20_000, 300.0), ("R3", 0, -100.0), ("R4", 0, 40.0),
                    ("R5", 0, 20.0), ("R6", 0, 1000.0)]), "t", "g")
    svc.refresh_rollups()
    means = {"R1": 200.0, "R3": -100.0, "R4": 40.0, "R5": 20.0, "R6": 1000.0}
    with eng.connect() as conn:
        engine = pools.PoolEngine.from_db(conn)
        rows = timeseries.read_group_rollup(conn, 60, "pool", None, T0, T0 + timedelta(hours=1))
        quarter = timeseries.read_group_rollup(conn, 900, "pool", None, T0, T0 + timedelta(hours=1))
    assert rows and len(rows) == len(quarter)
    for r in rows:
        members = engine.members(r["group_id"], 1000)["items"]
        reporting = [m for m in members if m in means]
        assert r["n_devices"] == len(reporting)
        assert r["power_kw"] == pytest.approx(sum(means[m] for m in reporting))


def test_rejections_and_refused_messages_are_logged_with_their_reason(loaded, caplog):
    import logging

    svc = service(loaded.database_url)
    topic = "openvpp/v1/tele/OP01/S1"
    with caplog.at_level(logging.WARNING, logger="openvpp.telemetry"):
        svc.ingest(pts([("R1", 0, 10.0), ("R4", 0, 1e6), ("NOPE", 0, 1.0)]), "http", "k")
        res = svc.ingest_messages([(topic, b'{"gw": "S1", "points": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
                                   (topic, b'{"cols": {"d": "R1"}}'),
                                   (topic, b'{"points": [{"d": "R1", "t": %d, "p": 5}]}' % (T0_MS + 5000))])
    assert (res.inserted, res.refused_messages) == (1, 2)
    lines = [r.getMessage() for r in caplog.records]
    assert any("rejected 2 of 3 points" in m and "'over_capacity': 1" in m and "'unknown_device': 1" in m
               for m in lines), lines
    assert any(f"refused message on {topic}" in m and "payload: nests arrays or objects too deeply" in m
               for m in lines), lines
    assert any(f"refused message on {topic}" in m and "d: device ids must be a list" in m for m in lines), lines
    with db.get_engine(loaded.database_url).connect() as conn:
        c = {r["reason"]: r["n"] for r in timeseries.read_counters(conn, T0.date())}
    assert c["refused_message"] == 2 and c["over_capacity"] == 1 and c["unknown_device"] == 1


def test_reactive_power_is_checked_against_the_apparent_rating_of_the_registry(loaded):
    """R1: 800 kW, 900 kVA → |q| up to 1,080 kvar; R4: 120 kW and 120 kVA → 144 kvar."""
    svc = service(loaded.database_url)
    p = Points.from_columns({"d": ["R1", "R1", "R4"], "t": [T0_MS, T0_MS + 1000, T0_MS],
                             "p": [10.0, 10.0, 10.0], "q": [1000.0, 1090.0, 150.0]})
    res = svc.ingest(p, "t", "g")
    assert res.inserted == 1 and res.rejected == {"reactive_over_capacity": 2}
