"""Telemetry tables (migration 0003), on the shared ``openvpp.store.schema.metadata``.

``telemetry_raw`` is natively range-partitioned by local day on PostgreSQL (one partition per
Asia/Shanghai day, created on demand by ``store.timeseries``); on SQLite it is a plain table.
The primary key (device, ts) makes a re-sent point a no-op. Rollups keep mergeable sums
(count, sum, min, max), so a bucket that receives a late point is updated exactly.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
)
from sqlalchemy.dialects import postgresql

from openvpp.store.schema import ID, metadata

#: device ids compare bytewise on PostgreSQL (COLLATE "C"): a third cheaper to index than a locale
DEVICE_ID = String(ID).with_variant(postgresql.VARCHAR(ID, collation="C"), "postgresql")

telemetry_raw = Table(
    "telemetry_raw",
    metadata,
    Column("device_id", DEVICE_ID, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("power_kw", Float, nullable=False),
    Column("reactive_kvar", Float),
    Column("energy_kwh", Float),
    Column("reactive_kvarh", Float),
    Column("soc", Float),
    Column("quality", SmallInteger, nullable=False),      # 0 good, 1 estimated, 2 bad (device's flag)
    Column("source", String(ID)),                          # gateway or API key that reported it
    Column("received_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("device_id", "ts", name="pk_telemetry_raw"),
    Index("ix_telemetry_raw_ts", "ts", postgresql_using="brin"),   # minutes to roll up; BRIN: points arrive in time order
    postgresql_partition_by="RANGE (ts)",
)

# per device, step_s = 60 (1 minute) or 900 (15 minutes); bucket = start of the interval (UTC)
telemetry_rollup = Table(
    "telemetry_rollup",
    metadata,
    Column("step_s", Integer, nullable=False),
    Column("device_id", DEVICE_ID, nullable=False),
    Column("bucket", DateTime(timezone=True), nullable=False),
    Column("n", Integer, nullable=False),
    Column("power_sum_kw", Float, nullable=False),
    Column("power_min_kw", Float, nullable=False),
    Column("power_max_kw", Float, nullable=False),
    Column("reactive_sum_kvar", Float, nullable=False),
    Column("n_reactive", Integer, nullable=False),
    Column("energy_max_kwh", Float),
    Column("reactive_max_kvarh", Float),
    Column("soc_sum", Float, nullable=False),
    Column("n_soc", Integer, nullable=False),
    PrimaryKeyConstraint("step_s", "device_id", "bucket", name="pk_telemetry_rollup"),
    Index("ix_telemetry_rollup_bucket", "step_s", "bucket"),
)

# per group: grid node at every level (city, district, substation, feeder, transformer_area), operator, pool
telemetry_group_rollup = Table(
    "telemetry_group_rollup",
    metadata,
    Column("step_s", Integer, nullable=False),
    Column("group_kind", String(24), nullable=False),
    Column("group_id", String(ID), nullable=False),
    Column("bucket", DateTime(timezone=True), nullable=False),
    Column("power_kw", Float, nullable=False),          # sum over devices of their mean power in the bucket
    Column("reactive_kvar", Float, nullable=False),
    Column("n_devices", Integer, nullable=False),
    Column("n_points", Integer, nullable=False),
    PrimaryKeyConstraint("step_s", "group_kind", "group_id", "bucket", name="pk_telemetry_group_rollup"),
)

# buckets whose device rollups changed since the group rollups were last computed
telemetry_dirty = Table(
    "telemetry_dirty",
    metadata,
    Column("step_s", Integer, nullable=False),
    Column("bucket", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("step_s", "bucket", name="pk_telemetry_dirty"),
)

# accepted / duplicate / rejected counts per local day, source and reason (read by the API)
telemetry_counters = Table(
    "telemetry_counters",
    metadata,
    Column("day", Date, nullable=False),
    Column("source", String(ID), nullable=False),
    Column("reason", String(40), nullable=False),
    Column("n", BigInteger, nullable=False),
    PrimaryKeyConstraint("day", "source", "reason", name="pk_telemetry_counters"),
)

# interruptions of an ingest path (broker or database unreachable), reported when it resumes
telemetry_gaps = Table(
    "telemetry_gaps",
    metadata,
    Column("gap_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(ID), nullable=False),
    Column("kind", String(24), nullable=False),           # broker | database
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("detail", String(400)),
)
