"""The PostgreSQL raw write: binary COPY straight into the day's partition, and the deduplicating
path it falls back to when the primary key refuses the COPY. Against the real PostgreSQL."""

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openvpp.store import db, timeseries

T0_MS = int(datetime(2025, 11, 24, 2, 0, tzinfo=UTC).timestamp() * 1000)
#: 15:59:59.999Z and 16:00:00Z fall on two local (UTC+8) days
DAY_EDGE_MS = int(datetime(2025, 11, 24, 16, 0, tzinfo=UTC).timestamp() * 1000)
RECEIVED = datetime(2025, 11, 24, 2, 30, 0, 123456, tzinfo=UTC)
pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def batch(devices, ts_ms, p, q=None, e=None, eq=None, soc=None, quality=None, source=None) -> timeseries.RawBatch:
    n = len(devices)

    def col(v):
        return np.full(n, np.nan) if v is None else np.asarray(v, np.float64)

    return timeseries.RawBatch(np.asarray(devices, dtype=object), np.asarray(ts_ms, np.int64), col(p), col(q), col(e),
                               col(eq), col(soc), np.asarray(quality if quality is not None else np.zeros(n), np.int16),
                               np.asarray(source if source is not None else ["gw"] * n, dtype=object))


def stored(conn) -> dict:
    rows = conn.exec_driver_sql(
        "SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint, power_kw, reactive_kvar, energy_kwh, "
        "reactive_kvarh, soc, quality, source, received_at FROM telemetry_raw").all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def expected(b: timeseries.RawBatch, received=RECEIVED) -> dict:
    def v(a, i):
        x = float(a[i])
        return None if np.isnan(x) else x

    return {(b.device[i], int(b.ts_ms[i])): (float(b.p_kw[i]), v(b.q_kvar, i), v(b.e_kwh, i), v(b.eq_kvarh, i),
                                             v(b.soc, i), int(b.quality[i]), b.source[i], received)
            for i in range(len(b))}


def write(url, b, received=RECEIVED) -> timeseries.WriteResult:
    with db.get_engine(url).begin() as conn:
        return timeseries.write_points(conn, b, received)


optional = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.just(0.0), st.just(-0.0))
point = st.tuples(st.sampled_from(["R1", "Ré-7", "A-LONGER-DEVICE-ID-0001", "设备42"]),
                  st.integers(-30_000, 90_000_000), st.floats(-1e9, 1e9, allow_nan=False), optional, optional,
                  optional, optional, st.integers(0, 2), st.sampled_from(["gw", "网关-1", "G" * 64]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(point, min_size=1, max_size=40, unique_by=lambda r: (r[0], r[1])))
def test_binary_copy_stores_every_value_as_given(db_url, rows):
    """Every column of every point comes back as written, NULL where a value was absent, whatever
    mix of present values, id lengths and non-ASCII text the batch holds, across two local days."""
    with db.get_engine(db_url).begin() as conn:
        conn.exec_driver_sql("TRUNCATE telemetry_raw")
    cols = list(zip(*rows, strict=True))
    b = batch(cols[0], [DAY_EDGE_MS + t for t in cols[1]], cols[2], *[[np.nan if x is None else x for x in c]
                                                                        for c in cols[3:7]],
              quality=cols[7], source=cols[8])
    assert write(db_url, b) == timeseries.WriteResult(len(rows), 0)
    with db.get_engine(db_url).connect() as conn:
        assert stored(conn) == expected(b)


def test_a_batch_partly_stored_inserts_only_its_new_points_and_keeps_the_first_values(db_url):
    """The second batch repeats three stored points with other values and brings two new ones, one of
    them on the next local day: the COPY is refused, the fallback stores the two new points only."""
    first = batch(["R1", "R1", "R2"], [T0_MS, T0_MS + 1000, T0_MS], [1.0, 2.0, 3.0])
    assert write(db_url, first) == timeseries.WriteResult(3, 0)
    second = batch(["R1", "R2", "R1", "R3", "R3"], [T0_MS, T0_MS, T0_MS + 1000, T0_MS + 2000, DAY_EDGE_MS],
                   [9.0, 9.0, 9.0, 4.0, 5.0], soc=[np.nan, np.nan, np.nan, 0.5, np.nan],
                   source=["late"] * 5)
    later = datetime(2025, 11, 24, 3, 0, tzinfo=UTC)
    assert write(db_url, second, later) == timeseries.WriteResult(2, 3)
    with db.get_engine(db_url).connect() as conn:
        got = stored(conn)
        per_day = {n: conn.exec_driver_sql(f"SELECT count(*) FROM {n}").scalar()
                   for n in ("telemetry_raw_p20251124", "telemetry_raw_p20251125")}
    new = {k: v for k, v in expected(second, later).items() if k[0] == "R3"}
    assert got == {**expected(first), **new}
    assert per_day == {"telemetry_raw_p20251124": 4, "telemetry_raw_p20251125": 1}


def test_a_refused_copy_leaves_no_part_of_the_batch_behind(db_url):
    """The first day's COPY succeeds, the second day's is refused by a stored point: the savepoint
    takes the first day's rows back and the fallback stores every new point exactly once."""
    write(db_url, batch(["R9"], [DAY_EDGE_MS + 5000], [7.0]))
    b = batch(["R1", "R2", "R9", "R4"], [DAY_EDGE_MS - 2000, DAY_EDGE_MS - 1000, DAY_EDGE_MS + 5000, DAY_EDGE_MS],
              [1.0, 2.0, 3.0, 4.0])
    assert write(db_url, b) == timeseries.WriteResult(3, 1)
    with db.get_engine(db_url).connect() as conn:
        got = stored(conn)
        assert conn.exec_driver_sql("SELECT count(*) FROM telemetry_raw").scalar() == 4
    assert got[("R9", DAY_EDGE_MS + 5000)][0] == 7.0
    assert {k for k in got} == {(d, int(t)) for d, t in zip(b.device, b.ts_ms, strict=True)}


def test_points_repeated_within_one_batch_are_stored_once(db_url):
    b = batch(["R1", "R1", "R2", "R1"], [T0_MS, T0_MS, T0_MS, T0_MS + 1], [1.0, 1.0, 2.0, 3.0])
    assert write(db_url, b) == timeseries.WriteResult(3, 1)
    assert write(db_url, b) == timeseries.WriteResult(0, 4)
    with db.get_engine(db_url).connect() as conn:
        assert set(stored(conn)) == {("R1", T0_MS), ("R2", T0_MS), ("R1", T0_MS + 1)}
        dirty = conn.exec_driver_sql("SELECT count(*) FROM telemetry_dirty WHERE step_s = 60").scalar()
    assert dirty == 1
