"""telemetry: raw points (daily range partitions on PostgreSQL), rollups, counters, gaps

Revision ID: 0003
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)
DEVICE_ID = sa.String(64).with_variant(postgresql.VARCHAR(64, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "telemetry_raw",
        sa.Column("device_id", DEVICE_ID, nullable=False),
        sa.Column("ts", TZ, nullable=False),
        sa.Column("power_kw", sa.Float(), nullable=False),
        sa.Column("reactive_kvar", sa.Float()),
        sa.Column("energy_kwh", sa.Float()),
        sa.Column("reactive_kvarh", sa.Float()),
        sa.Column("soc", sa.Float()),
        sa.Column("quality", sa.SmallInteger(), nullable=False),
        sa.Column("source", sa.String(64)),
        sa.Column("received_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "ts", name="pk_telemetry_raw"),
        postgresql_partition_by="RANGE (ts)",
    )
    op.create_index("ix_telemetry_raw_ts", "telemetry_raw", ["ts"], postgresql_using="brin")
    op.create_table(
        "telemetry_rollup",
        sa.Column("step_s", sa.Integer(), nullable=False),
        sa.Column("device_id", DEVICE_ID, nullable=False),
        sa.Column("bucket", TZ, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("power_sum_kw", sa.Float(), nullable=False),
        sa.Column("power_min_kw", sa.Float(), nullable=False),
        sa.Column("power_max_kw", sa.Float(), nullable=False),
        sa.Column("reactive_sum_kvar", sa.Float(), nullable=False),
        sa.Column("n_reactive", sa.Integer(), nullable=False),
        sa.Column("energy_max_kwh", sa.Float()),
        sa.Column("reactive_max_kvarh", sa.Float()),
        sa.Column("soc_sum", sa.Float(), nullable=False),
        sa.Column("n_soc", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("step_s", "device_id", "bucket", name="pk_telemetry_rollup"),
    )
    op.create_index("ix_telemetry_rollup_bucket", "telemetry_rollup", ["step_s", "bucket"])
    op.create_table(
        "telemetry_group_rollup",
        sa.Column("step_s", sa.Integer(), nullable=False),
        sa.Column("group_kind", sa.String(24), nullable=False),
        sa.Column("group_id", sa.String(64), nullable=False),
        sa.Column("bucket", TZ, nullable=False),
        sa.Column("power_kw", sa.Float(), nullable=False),
        sa.Column("reactive_kvar", sa.Float(), nullable=False),
        sa.Column("n_devices", sa.Integer(), nullable=False),
        sa.Column("n_points", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("step_s", "group_kind", "group_id", "bucket", name="pk_telemetry_group_rollup"),
    )
    op.create_table(
        "telemetry_dirty",
        sa.Column("step_s", sa.Integer(), nullable=False),
        sa.Column("bucket", TZ, nullable=False),
        sa.PrimaryKeyConstraint("step_s", "bucket", name="pk_telemetry_dirty"),
    )
    op.create_table(
        "telemetry_counters",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "source", "reason", name="pk_telemetry_counters"),
    )
    op.create_table(
        "telemetry_gaps",
        sa.Column("gap_id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("detail", sa.String(400)),
        sa.PrimaryKeyConstraint("gap_id", name="pk_telemetry_gaps"),
    )


def downgrade() -> None:
    for name in ("telemetry_gaps", "telemetry_counters", "telemetry_dirty", "telemetry_group_rollup"):
        op.drop_table(name)
    op.drop_index("ix_telemetry_rollup_bucket", table_name="telemetry_rollup")
    op.drop_table("telemetry_rollup")
    op.drop_index("ix_telemetry_raw_ts", table_name="telemetry_raw")
    op.drop_table("telemetry_raw")   # drops its partitions with it on PostgreSQL
