"""resources: id and key columns compare bytewise on PostgreSQL (COLLATE "C")

The primary key, the live-meter unique index and the operator/owner/transformer-area indexes of
``resources`` are rebuilt by every bulk import; with the database's default (libc) collation each
comparison goes through strcoll, with "C" it is a memcmp and PostgreSQL can sort on abbreviated
keys: the builds take about half the time (benchmarks/README.md). Ids are ASCII
(``model.columns.ID_PATTERN``), so their order does not change. SQLite is untouched.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = ("resource_id", "operator_id", "owner_id", "site_id", "ta_id", "meter_id")


def _retype(collation: str | None) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in COLUMNS:
        op.alter_column("resources", name, type_=postgresql.VARCHAR(64, collation=collation),
                        existing_type=sa.String(64))


def upgrade() -> None:
    _retype("C")


def downgrade() -> None:
    _retype(None)
