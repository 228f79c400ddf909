"""ev: OCPP charge points, charging sessions (energy by TOU period), charging profiles

Revision ID: 0005
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0001"
branch_labels = None
depends_on = None

AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)
PERIODS = ("valley", "flat", "peak", "critical")


def upgrade() -> None:
    op.create_table(
        "ev_charge_points",
        sa.Column("charge_point_id", sa.String(64), sa.ForeignKey(
            "resources.resource_id", name="fk_ev_charge_points_charge_point_id_resources"), nullable=False),
        sa.Column("ocpp_version", sa.String(8), nullable=False),
        sa.Column("vendor", sa.String(50)),
        sa.Column("model", sa.String(50)),
        sa.Column("serial", sa.String(50)),
        sa.Column("firmware", sa.String(50)),
        sa.Column("boot_at", TZ),
        sa.Column("last_seen_at", TZ),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("status", sa.JSON()),
        sa.PrimaryKeyConstraint("charge_point_id", name="pk_ev_charge_points"),
    )
    op.create_table(
        "ev_sessions",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("charge_point_id", sa.String(64), sa.ForeignKey(
            "ev_charge_points.charge_point_id", name="fk_ev_sessions_charge_point_id_ev_charge_points"),
            nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(64), nullable=False),
        sa.Column("id_token", sa.String(64)),
        sa.Column("ocpp_version", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("stopped_at", TZ),
        sa.Column("stop_reason", sa.String(40)),
        sa.Column("meter_start_wh", sa.Float()),
        sa.Column("meter_last_wh", sa.Float()),
        sa.Column("meter_last_at", TZ),
        sa.Column("soc_last", sa.Float()),
        sa.Column("battery_kwh", sa.Float()),
        sa.Column("v2g", sa.Boolean(), nullable=False),
        *[sa.Column(f"charge_{p}_kwh", sa.Float(), nullable=False, server_default="0") for p in PERIODS],
        *[sa.Column(f"discharge_{p}_kwh", sa.Float(), nullable=False, server_default="0") for p in PERIODS],
        sa.PrimaryKeyConstraint("session_id", name="pk_ev_sessions"),
    )
    op.create_index("uq_ev_sessions_transaction", "ev_sessions", ["charge_point_id", "transaction_id"], unique=True)
    op.create_index("ix_ev_sessions_started", "ev_sessions", ["started_at"])
    op.create_table(
        "ev_charging_profiles",
        sa.Column("row_id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("charge_point_id", sa.String(64), sa.ForeignKey(
            "ev_charge_points.charge_point_id", name="fk_ev_charging_profiles_charge_point_id_ev_charge_points"),
            nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("stack_level", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(64)),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("row_id", name="pk_ev_charging_profiles"),
    )
    op.create_index("ix_ev_charging_profiles_cp", "ev_charging_profiles", ["charge_point_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_ev_charging_profiles_cp", table_name="ev_charging_profiles")
    op.drop_table("ev_charging_profiles")
    op.drop_index("ix_ev_sessions_started", table_name="ev_sessions")
    op.drop_index("uq_ev_sessions_transaction", table_name="ev_sessions")
    op.drop_table("ev_sessions")
    op.drop_table("ev_charge_points")
