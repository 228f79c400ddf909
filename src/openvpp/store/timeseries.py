"""Telemetry time series: idempotent raw writes, daily partitions, retention, rollups.

PostgreSQL: a batch is COPY'd in binary straight into its day's partition; when the primary key
refuses it (a point already stored or repeated: a re-sent batch), the COPY is rolled back to a
savepoint and the batch goes through a staging table and ``INSERT ... ON CONFLICT DO NOTHING``,
which stores only the new points. SQLite (the embedded default): ``INSERT OR IGNORE`` from a
staging table.

Writes only mark the minutes they touch as dirty; :func:`refresh_rollups` (run every few seconds
by the ingest worker) recomputes those minutes from the raw points, the quarter-hours above them
from the minutes, and the group rollups (grid node at every level, operator, pool) from the
device rollups, so a late point updates every total it touches, and a minute that receives many
points in many batches is aggregated once, after it closes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import psycopg
from sqlalchemy import (
    Connection,
    Select,
    delete,
    func,
    insert,
    literal,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from openvpp.store.schema import grid_nodes, resources
from openvpp.store.schema_telemetry import (
    telemetry_counters,
    telemetry_gaps,
    telemetry_group_rollup,
    telemetry_raw,
    telemetry_rollup,
)

DAY_MS = 86_400_000
LOCAL_OFFSET_MS = 8 * 3_600_000   # partitions follow Asia/Shanghai days (UTC+8, no DST)
STEPS_S = (60, 900)
GROUP_KINDS = ("city", "district", "substation", "feeder", "transformer_area", "operator")

#: extra group memberships (e.g. pools): functions returning a select of (group_kind, group_id, device_id)
MEMBERSHIP_HOOKS: list[Callable[[], Select]] = []


@dataclass
class RawBatch:
    """Accepted points ready to store (arrays of equal length; NaN = not measured)."""

    device: np.ndarray     # object (str)
    ts_ms: np.ndarray      # int64 epoch ms UTC
    p_kw: np.ndarray
    q_kvar: np.ndarray
    e_kwh: np.ndarray
    eq_kvarh: np.ndarray
    soc: np.ndarray
    quality: np.ndarray    # int16
    source: np.ndarray     # object (str): gateway or API key that reported each point

    def __len__(self) -> int:
        return len(self.device)


@dataclass
class WriteResult:
    inserted: int
    duplicates: int


# ---------------------------------------------------------------- partitions (PostgreSQL)

_known_partitions: dict[str, set[int]] = {}


def local_day_numbers(ts_ms: np.ndarray) -> np.ndarray:
    """Local (Asia/Shanghai) day of each timestamp, as days since 1970-01-01."""
    return np.unique((np.asarray(ts_ms, np.int64) + LOCAL_OFFSET_MS) // DAY_MS)


def partition_name(day_number: int) -> str:
    return f"telemetry_raw_p{(date(1970, 1, 1) + timedelta(days=int(day_number))):%Y%m%d}"


def _day_bounds(day_number: int) -> tuple[datetime, datetime]:
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(day_number) * DAY_MS - LOCAL_OFFSET_MS)
    return start, start + timedelta(days=1)


def ensure_partitions(conn: Connection, day_numbers: Iterable[int], ahead: int = 1) -> list[str]:
    """Create the daily partitions (and ``ahead`` following days) that do not exist yet. PostgreSQL only."""
    if conn.dialect.name != "postgresql":
        return []
    key = str(conn.engine.url)
    known = _known_partitions.setdefault(key, set())
    wanted = {int(d) + k for d in day_numbers for k in range(ahead + 1)} - known
    created = []
    for d in sorted(wanted):
        name = partition_name(d)
        if conn.exec_driver_sql(f"SELECT to_regclass('{name}')").scalar() is None:
            start, end = _day_bounds(d)
            conn.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF telemetry_raw "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
            created.append(name)
        known.add(d)
    return created


def forget_partitions(conn: Connection) -> None:
    _known_partitions.pop(str(conn.engine.url), None)


def partitions(conn: Connection) -> list[str]:
    """Names of the existing daily partitions of ``telemetry_raw``, oldest first."""
    if conn.dialect.name != "postgresql":
        return []
    rows = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'telemetry_raw' ORDER BY 1").all()
    return [r[0] for r in rows]


def apply_retention(conn: Connection, retention_days: int, now: datetime | None = None) -> list[str]:
    """Drop raw points older than ``retention_days`` local days: whole partitions on PostgreSQL."""
    now = now or datetime.now(UTC)
    today = (int(now.timestamp() * 1000) + LOCAL_OFFSET_MS) // DAY_MS
    first_kept = today - retention_days
    if conn.dialect.name != "postgresql":
        cutoff = _day_bounds(first_kept)[0]
        n = conn.execute(delete(telemetry_raw).where(telemetry_raw.c.ts < cutoff)).rowcount
        return [f"{n} rows"] if n else []
    dropped = []
    for name in partitions(conn):
        day = datetime.strptime(name.rsplit("_p", 1)[1], "%Y%m%d").date()
        if (day - date(1970, 1, 1)).days < first_kept:
            conn.exec_driver_sql(f"DROP TABLE {name}")
            dropped.append(name)
    forget_partitions(conn)
    return dropped


# ---------------------------------------------------------------- writes

def write_points(conn: Connection, batch: RawBatch, received_at: datetime | None = None) -> WriteResult:
    """Store accepted points idempotently on the caller's transaction and mark their minutes dirty.

    A point whose (device, ts) is already stored, or repeated within the batch, is counted as a
    duplicate and changes nothing, so re-sending a batch (QoS 1 redelivery) is harmless. The
    rollups of the marked minutes are (re)computed by :func:`refresh_rollups`.
    """
    if not len(batch):
        return WriteResult(0, 0)
    received_at = received_at or datetime.now(UTC)
    if conn.dialect.name == "postgresql":
        ensure_partitions(conn, local_day_numbers(batch.ts_ms))
        inserted = _write_pg(conn, batch, received_at)
    else:
        inserted = _write_sqlite(conn, batch, received_at)
    return WriteResult(inserted, len(batch) - inserted)


def minute_buckets(ts_ms: np.ndarray, quality: np.ndarray | None = None) -> np.ndarray:
    """Distinct 1-minute bucket starts (epoch ms) of the points that count in rollups (quality < 2)."""
    ts = np.asarray(ts_ms, np.int64)
    if quality is not None:
        ts = ts[np.asarray(quality) < 2]
    return np.unique(ts - ts % 60_000)


#: the columns of :func:`copy_binary`'s rows, fixed-size first (the order COPY is told)
COPY_COLUMNS = ("ts", "power_kw", "reactive_kvar", "energy_kwh", "reactive_kvarh", "soc", "quality", "received_at",
                "device_id", "source")
PG_EPOCH_US = 946_684_800_000_000          # 2000-01-01 UTC, PostgreSQL's timestamp origin, in Unix µs
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)     # signature, flags, header extension length
_COPY_TRAILER = b"\xff\xff"


def _utf8(values: np.ndarray) -> np.ndarray:
    """Strings as a NumPy bytes array (UTF-8)."""
    values = np.asarray(values, dtype=object)
    try:
        return values.astype("S")
    except UnicodeEncodeError:
        return np.array([v.encode() for v in values], dtype=object).astype("S")


def copy_binary(batch: RawBatch, received_at: datetime) -> bytes:
    """The batch in PostgreSQL's binary COPY format, one row per point, columns ``COPY_COLUMNS``.

    Binary COPY spares the server parsing text timestamps and floats (about a third of its work on a
    keyed table). A row's size depends on which optional values it has (NaN = NULL, no bytes) and
    on the byte lengths of its two texts, so rows are grouped by that shape: each group is one
    NumPy record array, filled column by column. COPY does not care about row order.
    """
    n = len(batch)
    dev, src = _utf8(batch.device), _utf8(batch.source)
    dev_len, src_len = np.char.str_len(dev).astype(np.int64), np.char.str_len(src).astype(np.int64)
    optional = [np.asarray(a, np.float64) for a in (batch.q_kvar, batch.e_kwh, batch.eq_kvarh, batch.soc)]
    shape = dev_len << 24 | src_len << 8
    for bit, a in enumerate(optional):
        shape |= (~np.isnan(a)).astype(np.int64) << bit
    ts_us = np.asarray(batch.ts_ms, np.int64) * 1000 - PG_EPOCH_US
    received_us = round(received_at.timestamp() * 1_000_000) - PG_EPOCH_US
    p_kw = np.asarray(batch.p_kw, np.float64)
    quality = np.asarray(batch.quality, np.int16)
    kinds, group = np.unique(shape, return_inverse=True)
    parts = [_COPY_HEADER]
    for g, kind in enumerate(kinds.tolist()):
        rows = slice(None) if len(kinds) == 1 else np.flatnonzero(group == g)
        d_len, s_len, present = kind >> 24, (kind >> 8) & 0xFFFF, [kind >> bit & 1 for bit in range(4)]
        fields = [("nf", ">i2"), ("l_ts", ">i4"), ("ts", ">i8"), ("l_p", ">i4"), ("p", ">f8")]
        for k, has in enumerate(present):
            fields += [(f"l_o{k}", ">i4")] + ([(f"o{k}", ">f8")] if has else [])
        fields += [("l_q", ">i4"), ("q", ">i2"), ("l_r", ">i4"), ("r", ">i8"), ("l_d", ">i4")]
        fields += [("d", f"S{d_len}")] if d_len else []
        fields += [("l_s", ">i4")] + ([("s", f"S{s_len}")] if s_len else [])
        rec = np.empty(n if len(kinds) == 1 else len(rows), np.dtype(fields))
        rec["nf"] = len(COPY_COLUMNS)
        rec["l_ts"], rec["ts"] = 8, ts_us[rows]
        rec["l_p"], rec["p"] = 8, p_kw[rows]
        for k, has in enumerate(present):
            rec[f"l_o{k}"] = 8 if has else -1
            if has:
                rec[f"o{k}"] = optional[k][rows]
        rec["l_q"], rec["q"] = 2, quality[rows]
        rec["l_r"], rec["r"] = 8, received_us
        rec["l_d"], rec["l_s"] = d_len, s_len
        if d_len:
            rec["d"] = dev[rows]
        if s_len:
            rec["s"] = src[rows]
        parts.append(rec.tobytes())
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


_PG_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS telemetry_stage_b (ts timestamptz, power_kw float8, "
             "reactive_kvar float8, energy_kwh float8, reactive_kvarh float8, soc float8, quality int2, "
             "received_at timestamptz, device_id text COLLATE \"C\", source text)")
_PG_INSERT = f"""
INSERT INTO telemetry_raw ({", ".join(COPY_COLUMNS)})
SELECT {", ".join(COPY_COLUMNS)} FROM telemetry_stage_b
ON CONFLICT DO NOTHING
"""
# DO UPDATE (not DO NOTHING) locks an existing marker: a refresh that takes it waits for this commit
_PG_DIRTY = """
INSERT INTO telemetry_dirty (step_s, bucket)
SELECT 60, to_timestamp(b / 1000.0) FROM unnest(%(buckets)s::bigint[]) AS b ORDER BY 1, 2
ON CONFLICT (step_s, bucket) DO UPDATE SET step_s = EXCLUDED.step_s
"""


def _copy(cur, sql: str, payload: bytes) -> None:
    with cur.copy(sql) as cp:
        view = memoryview(payload)
        for i in range(0, len(view), 8 << 20):
            cp.write(view[i:i + (8 << 20)])


def _take(batch: RawBatch, rows: np.ndarray) -> RawBatch:
    return RawBatch(*(getattr(batch, f)[rows] for f in RawBatch.__dataclass_fields__))


def _write_pg(conn: Connection, batch: RawBatch, received_at: datetime) -> int:
    """Fast path: binary COPY straight into each day's partition, under a savepoint. The primary key
    refuses the whole COPY if any point is already stored (or repeated in the batch): then the
    savepoint is rolled back and the batch goes through a staging table and
    ``INSERT ... ON CONFLICT DO NOTHING``, which stores only the new points. Either way the key
    decides, so a redelivered batch is never stored twice."""
    raw = conn.connection.driver_connection
    day = (np.asarray(batch.ts_ms, np.int64) + LOCAL_OFFSET_MS) // DAY_MS
    days = np.unique(day)
    with raw.cursor() as cur:
        cur.execute("SAVEPOINT telemetry_copy")
        try:
            for d in days.tolist():
                part = batch if len(days) == 1 else _take(batch, np.flatnonzero(day == d))
                _copy(cur, f"COPY {partition_name(d)} ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT binary)",
                      copy_binary(part, received_at))
            inserted = len(batch)
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT telemetry_copy")
            inserted = _write_pg_dedupe(cur, batch, received_at)
        cur.execute("RELEASE SAVEPOINT telemetry_copy")
        if inserted:
            cur.execute(_PG_DIRTY, {"buckets": minute_buckets(batch.ts_ms, batch.quality).tolist()})
    return int(inserted)


def _write_pg_dedupe(cur, batch: RawBatch, received_at: datetime) -> int:
    """The batch through a session-local staging table: only the points not stored yet are inserted."""
    cur.execute(_PG_STAGE)   # every time: a rolled-back transaction takes a table created in it along
    cur.execute("TRUNCATE telemetry_stage_b")   # a temp table is never vacuumed: empty it, do not DELETE
    _copy(cur, f"COPY telemetry_stage_b ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT binary)",
          copy_binary(batch, received_at))
    cur.execute(_PG_INSERT)
    return cur.rowcount


def ts_text(ts_ms: np.ndarray) -> np.ndarray:
    """Epoch ms → 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC), the text SQLAlchemy stores for DateTime on SQLite."""
    s = np.datetime_as_string(np.asarray(ts_ms, np.int64).astype("datetime64[ms]"), unit="us")
    return np.char.replace(s, "T", " ")


_SQLITE_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS telemetry_stage (device_id TEXT, ts TEXT, "
                 "power_kw REAL, reactive_kvar REAL, energy_kwh REAL, reactive_kvarh REAL, soc REAL, "
                 "quality INTEGER, source TEXT)")


def _write_sqlite(conn: Connection, batch: RawBatch, received_at: datetime) -> int:
    ts_ms = np.asarray(batch.ts_ms, np.int64)
    cols = [batch.device.tolist(), ts_text(ts_ms).tolist()] \
        + [[None if v != v else v for v in np.asarray(a, np.float64).tolist()]
           for a in (batch.p_kw, batch.q_kvar, batch.e_kwh, batch.eq_kvarh, batch.soc)] \
        + [np.asarray(batch.quality, np.int64).tolist(), batch.source.tolist()]
    x = conn.exec_driver_sql
    x(_SQLITE_STAGE)
    x("DELETE FROM telemetry_stage")
    x("INSERT INTO telemetry_stage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", list(zip(*cols, strict=True)))
    received = received_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    inserted = x("INSERT OR IGNORE INTO telemetry_raw (device_id, ts, power_kw, reactive_kvar, energy_kwh, "
                 "reactive_kvarh, soc, quality, source, received_at) SELECT device_id, ts, power_kw, reactive_kvar, "
                 "energy_kwh, reactive_kvarh, soc, quality, source, ? FROM telemetry_stage", (received,)).rowcount
    x("DELETE FROM telemetry_stage")
    if inserted:
        x("INSERT OR IGNORE INTO telemetry_dirty (step_s, bucket) VALUES (60, ?)",
          [(b,) for b in ts_text(minute_buckets(ts_ms, batch.quality)).tolist()])
    return int(inserted)


# ---------------------------------------------------------------- rollups

_ROLLUP_COLS = ("step_s, device_id, bucket, n, power_sum_kw, power_min_kw, power_max_kw, reactive_sum_kvar, "
                "n_reactive, energy_max_kwh, reactive_max_kvarh, soc_sum, n_soc")
_REPLACE = ", ".join(f"{c} = excluded.{c}" for c in _ROLLUP_COLS.split(", ")[3:])
_PG_MINUTES = f"""
INSERT INTO telemetry_rollup ({_ROLLUP_COLS})
SELECT 60, device_id, date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b,
       count(*), sum(power_kw), min(power_kw), max(power_kw), coalesce(sum(reactive_kvar), 0), count(reactive_kvar),
       max(energy_kwh), max(reactive_kvarh), coalesce(sum(soc), 0), count(soc)
FROM telemetry_raw
WHERE ts >= %(lo)s AND ts < %(hi)s AND quality < 2
  AND date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') = ANY(%(buckets)s)
GROUP BY device_id, b
ON CONFLICT (step_s, device_id, bucket) DO UPDATE SET {_REPLACE}
"""
_PG_QUARTERS = f"""
INSERT INTO telemetry_rollup ({_ROLLUP_COLS})
SELECT 900, device_id, date_bin(INTERVAL '15 minutes', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b,
       sum(n), sum(power_sum_kw), min(power_min_kw), max(power_max_kw), sum(reactive_sum_kvar), sum(n_reactive),
       max(energy_max_kwh), max(reactive_max_kvarh), sum(soc_sum), sum(n_soc)
FROM telemetry_rollup
WHERE step_s = 60 AND bucket >= %(lo)s AND bucket < %(hi)s
  AND date_bin(INTERVAL '15 minutes', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') = ANY(%(buckets)s)
GROUP BY device_id, b
ON CONFLICT (step_s, device_id, bucket) DO UPDATE SET {_REPLACE}
"""
_SQLITE_MINUTE = "substr(ts, 1, 17) || '00.000000'"
_SQLITE_QUARTER = "printf('%s%02d:00.000000', substr(bucket, 1, 14), (CAST(substr(bucket, 15, 2) AS INTEGER) / 15) * 15)"


def _in(values: list) -> str:
    return "(" + ", ".join("?" for _ in values) + ")"


def _take_dirty(conn: Connection, step_s: int, closed_before_ms: int | None, max_buckets: int) -> list:
    """Lock, read and delete up to ``max_buckets`` dirty buckets of ``step_s`` that have closed by
    ``closed_before_ms`` (None = all). PostgreSQL returns datetimes, SQLite the stored text."""
    if conn.dialect.name == "postgresql":
        q = "SELECT bucket FROM telemetry_dirty WHERE step_s = %(s)s"
        params: dict = {"k": max_buckets, "s": step_s}
        if closed_before_ms is not None:
            q += " AND bucket + %(step)s * INTERVAL '1 second' <= to_timestamp(%(closed)s / 1000.0)"
            params.update(closed=closed_before_ms, step=step_s)
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(q + " ORDER BY bucket LIMIT %(k)s FOR UPDATE", params)
            buckets = [r[0] for r in cur.fetchall()]
            if buckets:
                cur.execute("DELETE FROM telemetry_dirty WHERE step_s = %(s)s AND bucket = ANY(%(b)s)",
                            {"s": step_s, "b": buckets})
        return buckets
    q = "SELECT bucket FROM telemetry_dirty WHERE step_s = ?"
    args: tuple = (step_s,)
    if closed_before_ms is not None:
        last_start = closed_before_ms - step_s * 1000
        args += (ts_text(np.array([last_start - last_start % (step_s * 1000)]))[0],)
        q += " AND bucket <= ?"
    buckets = [r[0] for r in conn.exec_driver_sql(q + f" ORDER BY bucket LIMIT {int(max_buckets)}", args)]
    if buckets:
        conn.exec_driver_sql(f"DELETE FROM telemetry_dirty WHERE step_s = ? AND bucket IN {_in(buckets)}",
                             (step_s, *buckets))
    return buckets


def _quarter_of(minute):
    if isinstance(minute, str):
        return f"{minute[:14]}{int(minute[14:16]) // 15 * 15:02d}:00.000000"
    return minute - timedelta(minutes=minute.minute % 15, seconds=minute.second, microseconds=minute.microsecond)


def _closed(bucket, step_s: int, closed_before_ms: int | None) -> bool:
    if closed_before_ms is None:
        return True
    start = datetime.strptime(bucket, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC) if isinstance(bucket, str) \
        else _utc(bucket)
    return start.timestamp() * 1000 + step_s * 1000 <= closed_before_ms


@dataclass
class Refreshed:
    """The buckets a rollup refresh recomputed (UTC datetimes); ``len`` = minutes."""

    minutes: list[datetime]
    quarters: list[datetime]

    def __len__(self) -> int:
        return len(self.minutes)

    def buckets(self, step_s: int) -> list[datetime]:
        return self.minutes if step_s == 60 else self.quarters


def _as_dt(b) -> datetime:
    return datetime.strptime(b, "%Y-%m-%d %H:%M:%S.%f") if isinstance(b, str) else b


def refresh_rollups(conn: Connection, closed_before_ms: int | None = None, max_buckets: int = 120) -> Refreshed:
    """(Re)compute the rollups of dirty buckets from the raw points; return the buckets done.

    For each dirty minute that has closed: its per-device 1-minute rollups from ``telemetry_raw``;
    the quarter-hour holding it is recomputed from its minutes once it has closed too (until then
    it stays marked); then the group rollups (every grid level, operator, hooks) of both.
    ``closed_before_ms`` = None treats every bucket as closed (tests, ``openvpp telemetry maintain``).
    """
    minutes = _take_dirty(conn, 60, closed_before_ms, max_buckets)
    touched = {_quarter_of(m) for m in minutes}
    quarters = set(_take_dirty(conn, 900, closed_before_ms, max_buckets))
    later = sorted(q for q in touched if not _closed(q, 900, closed_before_ms))
    quarters = sorted(quarters | {q for q in touched if _closed(q, 900, closed_before_ms)})
    pg = conn.dialect.name == "postgresql"
    if later:
        if pg:
            conn.exec_driver_sql("INSERT INTO telemetry_dirty (step_s, bucket) SELECT 900, b FROM unnest(%(b)s) AS b "
                                 "ORDER BY 2 ON CONFLICT (step_s, bucket) DO UPDATE SET step_s = EXCLUDED.step_s",
                                 {"b": later})
        else:
            conn.exec_driver_sql("INSERT OR IGNORE INTO telemetry_dirty (step_s, bucket) VALUES (900, ?)",
                                 [(q,) for q in later])
    if not minutes and not quarters:
        return Refreshed([], [])
    if pg:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute("SET LOCAL work_mem = '64MB'")
            if minutes:
                # a fresh day's partition has no statistics yet: the planner, expecting a handful of
                # rows, sorts millions on disk to group them; hashing them is 2-3 times faster
                cur.execute("SET LOCAL enable_sort = off")
                cur.execute(_PG_MINUTES, {"lo": min(minutes), "hi": max(minutes) + timedelta(minutes=1),
                                          "buckets": minutes})
                cur.execute("SET LOCAL enable_sort = on")
            if quarters:
                cur.execute(_PG_QUARTERS, {"lo": quarters[0], "hi": quarters[-1] + timedelta(minutes=15),
                                           "buckets": quarters})
        refresh_group_rollups(conn, 60, minutes)
        refresh_group_rollups(conn, 900, quarters)
        return Refreshed(minutes, quarters)
    x = conn.exec_driver_sql
    if minutes:
        x(f"INSERT INTO telemetry_rollup ({_ROLLUP_COLS}) "
          f"SELECT 60, device_id, {_SQLITE_MINUTE} AS b, count(*), sum(power_kw), min(power_kw), max(power_kw), "
          f"coalesce(sum(reactive_kvar), 0), count(reactive_kvar), max(energy_kwh), max(reactive_kvarh), "
          f"coalesce(sum(soc), 0), count(soc) FROM telemetry_raw "
          f"WHERE ts >= ? AND ts < ? AND quality < 2 AND {_SQLITE_MINUTE} IN {_in(minutes)} GROUP BY device_id, b "
          f"ON CONFLICT (step_s, device_id, bucket) DO UPDATE SET {_REPLACE}",
          (min(minutes), max(minutes)[:17] + "99", *minutes))
    if quarters:
        x(f"INSERT INTO telemetry_rollup ({_ROLLUP_COLS}) "
          f"SELECT 900, device_id, {_SQLITE_QUARTER} AS b, sum(n), sum(power_sum_kw), min(power_min_kw), "
          f"max(power_max_kw), sum(reactive_sum_kvar), sum(n_reactive), max(energy_max_kwh), max(reactive_max_kvarh), "
          f"sum(soc_sum), sum(n_soc) FROM telemetry_rollup "
          f"WHERE step_s = 60 AND bucket >= ? AND bucket < ? AND {_SQLITE_QUARTER} IN {_in(quarters)} "
          f"GROUP BY device_id, b ON CONFLICT (step_s, device_id, bucket) DO UPDATE SET {_REPLACE}",
          (quarters[0], quarters[-1][:14] + "99", *quarters))
    done = Refreshed([_as_dt(b) for b in minutes], [_as_dt(b) for b in quarters])
    refresh_group_rollups(conn, 60, done.minutes)
    refresh_group_rollups(conn, 900, done.quarters)
    return done


def device_means(conn: Connection, step_s: int, buckets: list[datetime]) -> tuple[list, np.ndarray, list, np.ndarray,
                                                                                    np.ndarray, np.ndarray]:
    """Per device and bucket: (device ids, bucket index, buckets, mean kW, mean kvar, points) of the
    device rollups of ``buckets`` — what groups computed outside SQL (pools) sum."""
    r = telemetry_rollup
    rows = conn.execute(select(r.c.device_id, r.c.bucket, r.c.power_sum_kw / r.c.n,
                               r.c.reactive_sum_kvar / func.nullif(r.c.n_reactive, 0), r.c.n)
                        .where(r.c.step_s == step_s, r.c.bucket.in_(buckets), r.c.n > 0)).all()
    order = {_utc(b): i for i, b in enumerate(buckets)}
    return ([x[0] for x in rows], np.array([order[_utc(x[1])] for x in rows], np.int64), buckets,
            np.array([x[2] for x in rows], np.float64), np.array([x[3] or 0.0 for x in rows], np.float64),
            np.array([x[4] for x in rows], np.int64))


def insert_group_rows(conn: Connection, rows: list[dict]) -> None:
    if rows:
        conn.execute(insert(telemetry_group_rollup), rows)


def city_id(conn: Connection) -> str | None:
    return conn.execute(select(grid_nodes.c.node_id).where(grid_nodes.c.level == "city")).scalar()


def memberships(conn: Connection) -> Select:
    """(group_kind, group_id, device_id) for every grid level, the operator, and ``MEMBERSHIP_HOOKS``."""
    r, g = resources, grid_nodes
    base = r.join(g, g.c.node_id == r.c.ta_id)
    cols = {"district": g.c.district_id, "substation": g.c.substation_id, "feeder": g.c.feeder_id,
            "transformer_area": r.c.ta_id, "operator": r.c.operator_id}
    parts = [select(literal("city").label("group_kind"), literal(city_id(conn) or "city").label("group_id"),
                    r.c.resource_id.label("device_id"))]
    for kind, col in cols.items():
        parts.append(select(literal(kind).label("group_kind"), col.label("group_id"),
                            r.c.resource_id.label("device_id")).select_from(base).where(col.is_not(None)))
    parts += [hook() for hook in MEMBERSHIP_HOOKS]
    return union_all(*parts).subquery("m")


_PG_GROUPS = """
INSERT INTO telemetry_group_rollup (step_s, group_kind, group_id, bucket, power_kw, reactive_kvar, n_devices,
                                    n_points)
SELECT %(step)s,
       CASE WHEN GROUPING(g.district_id) = 0 THEN 'district' WHEN GROUPING(g.substation_id) = 0 THEN 'substation'
            WHEN GROUPING(g.feeder_id) = 0 THEN 'feeder' WHEN GROUPING(res.ta_id) = 0 THEN 'transformer_area'
            WHEN GROUPING(res.operator_id) = 0 THEN 'operator' ELSE 'city' END,
       coalesce(g.district_id, g.substation_id, g.feeder_id, res.ta_id, res.operator_id, %(city)s),
       r.bucket, sum(r.power_sum_kw / r.n), coalesce(sum(r.reactive_sum_kvar / nullif(r.n_reactive, 0)), 0),
       count(*), sum(r.n)
FROM telemetry_rollup r
JOIN resources res ON res.resource_id = r.device_id
JOIN grid_nodes g ON g.node_id = res.ta_id
WHERE r.step_s = %(step)s AND r.bucket = ANY(%(buckets)s) AND r.n > 0
GROUP BY r.bucket, GROUPING SETS ((), (g.district_id), (g.substation_id), (g.feeder_id), (res.ta_id),
                                  (res.operator_id))
HAVING NOT (GROUPING(res.operator_id) = 0 AND res.operator_id IS NULL)
"""


def refresh_group_rollups(conn: Connection, step_s: int, buckets: list[datetime]) -> None:
    """Recompute the group rollups of ``buckets`` from the device rollups of step ``step_s``.

    PostgreSQL computes every level and the operator in one pass (``GROUPING SETS``); SQLite
    joins the membership union. ``MEMBERSHIP_HOOKS`` groups (pools) are added on both.
    """
    if not buckets:
        return
    r = telemetry_rollup
    conn.execute(delete(telemetry_group_rollup).where(telemetry_group_rollup.c.step_s == step_s,
                                                      telemetry_group_rollup.c.bucket.in_(buckets)))
    if conn.dialect.name == "postgresql":
        with conn.connection.driver_connection.cursor() as cur:
            cur.execute(_PG_GROUPS, {"step": step_s, "buckets": list(buckets), "city": city_id(conn) or "city"})
        if not MEMBERSHIP_HOOKS:
            return
        m = union_all(*[hook() for hook in MEMBERSHIP_HOOKS]).subquery("m")
    else:
        m = memberships(conn)
    q = (select(r.c.step_s, m.c.group_kind, m.c.group_id, r.c.bucket,
                func.sum(r.c.power_sum_kw / r.c.n),
                func.sum(r.c.reactive_sum_kvar / func.nullif(r.c.n_reactive, 0)).label("q"),
                func.count(), func.sum(r.c.n))
         .select_from(r.join(m, m.c.device_id == r.c.device_id))
         .where(r.c.step_s == step_s, r.c.bucket.in_(buckets), r.c.n > 0)
         .group_by(r.c.step_s, m.c.group_kind, m.c.group_id, r.c.bucket))
    rows = [{"step_s": s, "group_kind": k, "group_id": gid, "bucket": b, "power_kw": float(p),
             "reactive_kvar": float(qv or 0.0), "n_devices": int(nd), "n_points": int(npt)}
            for s, k, gid, b, p, qv, nd, npt in conn.execute(q)]
    if rows:
        conn.execute(insert(telemetry_group_rollup), rows)


# ---------------------------------------------------------------- reads

def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def read_raw(conn: Connection, device_ids: list[str], start: datetime, end: datetime) -> list[dict]:
    t = telemetry_raw
    q = (select(t).where(t.c.device_id.in_(device_ids), t.c.ts >= start, t.c.ts < end)
         .order_by(t.c.device_id, t.c.ts))
    out = []
    for row in conn.execute(q).mappings():
        d = dict(row)
        d["ts"], d["received_at"] = _utc(d["ts"]), _utc(d["received_at"])
        out.append(d)
    return out


def read_rollup(conn: Connection, step_s: int, device_ids: list[str], start: datetime, end: datetime
                ) -> list[dict]:
    r = telemetry_rollup
    q = (select(r).where(r.c.step_s == step_s, r.c.device_id.in_(device_ids), r.c.bucket >= start,
                         r.c.bucket < end).order_by(r.c.device_id, r.c.bucket))
    out = []
    for row in conn.execute(q).mappings():
        d = dict(row)
        d["bucket"] = _utc(d["bucket"])
        d["power_avg_kw"] = d["power_sum_kw"] / d["n"] if d["n"] else None
        d["soc_avg"] = d["soc_sum"] / d["n_soc"] if d["n_soc"] else None
        out.append(d)
    return out


def read_group_rollup(conn: Connection, step_s: int, group_kind: str, group_ids: list[str] | None,
                      start: datetime, end: datetime) -> list[dict]:
    g = telemetry_group_rollup
    q = select(g).where(g.c.step_s == step_s, g.c.group_kind == group_kind, g.c.bucket >= start, g.c.bucket < end)
    if group_ids is not None:
        q = q.where(g.c.group_id.in_(group_ids))
    out = []
    for row in conn.execute(q.order_by(g.c.group_id, g.c.bucket)).mappings():
        d = dict(row)
        d["bucket"] = _utc(d["bucket"])
        out.append(d)
    return out


def count_raw(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(telemetry_raw)).scalar())


# ---------------------------------------------------------------- counters and gaps

def _upsert(conn: Connection, table):
    return pg_insert(table) if conn.dialect.name == "postgresql" else sqlite_insert(table)


def add_counters(conn: Connection, day: date, source: str, counts: dict[str, int]) -> None:
    """Add ``counts`` (reason → n; 'accepted', 'duplicate' and rejection rules) to the day's counters."""
    rows = [{"day": day, "source": source, "reason": k, "n": int(v)} for k, v in counts.items() if v]
    if not rows:
        return
    stmt = _upsert(conn, telemetry_counters)
    stmt = stmt.on_conflict_do_update(index_elements=["day", "source", "reason"],
                                      set_={"n": telemetry_counters.c.n + stmt.excluded.n})
    conn.execute(stmt, rows)


def read_counters(conn: Connection, since: date, sources: list[str] | None = None) -> list[dict]:
    c = telemetry_counters
    q = select(c.c.day, c.c.source, c.c.reason, c.c.n).where(c.c.day >= since)
    if sources is not None:
        q = q.where(c.c.source.in_(sources))
    return [dict(r._mapping) for r in conn.execute(q.order_by(c.c.day, c.c.source, c.c.reason))]


def record_gap(conn: Connection, source: str, kind: str, started_at: datetime, ended_at: datetime,
               detail: str | None = None) -> None:
    conn.execute(insert(telemetry_gaps).values(source=source, kind=kind, started_at=started_at,
                                               ended_at=ended_at,
                                               seconds=(ended_at - started_at).total_seconds(),
                                               detail=(detail or "")[:400]))


def read_gaps(conn: Connection, limit: int = 100) -> list[dict]:
    g = telemetry_gaps
    out = []
    for row in conn.execute(select(g).order_by(g.c.gap_id.desc()).limit(limit)).mappings():
        d = dict(row)
        d["started_at"], d["ended_at"] = _utc(d["started_at"]), _utc(d["ended_at"])
        out.append(d)
    return out

