"""event files: the trading units' members taken when an event starts executing

An event's evaluation pays the resources of each trading unit at the start of its window. Finding
them in the registry at a million resources is a 1.5 s query, and done at the first evaluation it
takes states and pools as they are that day, not as they were dispatched. The members are now taken
when the event starts executing (when its instructions go out) and kept as one Arrow IPC file beside
the database (``store.event_files``), recorded here with its SHA-256, size and row count. Events
executed before keep the old way (members found at their first evaluation).

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_files",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=24), nullable=False),
        sa.Column("path", sa.String(length=400), nullable=False),
        sa.Column("format", sa.String(length=24), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.event_id"], name=op.f("fk_event_files_event_id_events")),
        sa.PrimaryKeyConstraint("event_id", "name", name="pk_event_files"),
    )


def downgrade() -> None:
    op.drop_table("event_files")
