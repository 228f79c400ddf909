"""ev: registered ID tags (OCPP authorization), charge point passwords (security profile 1), charging
needs on sessions (OCPP 2.0.1 NotifyEVChargingNeeds: departure time and energy asked)

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ev_id_tags",
        sa.Column("id_tag", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("operator_id", sa.String(64)),
        sa.Column("expires_at", TZ),
        sa.Column("note", sa.Text()),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id_tag", name="pk_ev_id_tags"),
    )
    op.create_table(
        "ev_credentials",
        sa.Column("charge_point_id", sa.String(64), sa.ForeignKey(
            "resources.resource_id", name="fk_ev_credentials_charge_point_id_resources"), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("charge_point_id", name="pk_ev_credentials"),
    )
    with op.batch_alter_table("ev_sessions") as batch_op:
        batch_op.add_column(sa.Column("departure_at", TZ))
        batch_op.add_column(sa.Column("energy_requested_kwh", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("ev_sessions") as batch_op:
        batch_op.drop_column("energy_requested_kwh")
        batch_op.drop_column("departure_at")
    op.drop_table("ev_credentials")
    op.drop_table("ev_id_tags")
