"""settlement files: a settlement revision's owner parties as one hashed Arrow IPC file

A yearly settlement over a million resources has about 600,000 owner parties (owner × operator ×
contract). Written as rows of ``settlement_parties`` (a six-column text key and a JSON column) they
took 4–8 s of COPY and index building on PostgreSQL; as one Arrow IPC file beside the database
(``store.settlement_files``) about 0.1 s. ``settlement_files`` records the file with its SHA-256,
size and row count. Revisions stored before keep their owner parties as rows and are read from there;
operators' parties stay rows.

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settlement_files",
        sa.Column("settlement_id", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=24), nullable=False),
        sa.Column("path", sa.String(length=400), nullable=False),
        sa.Column("format", sa.String(length=24), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["settlement_id"], ["settlements.settlement_id"],
                                name=op.f("fk_settlement_files_settlement_id_settlements")),
        sa.PrimaryKeyConstraint("settlement_id", "revision", "name", name="pk_settlement_files"),
    )


def downgrade() -> None:
    op.drop_table("settlement_files")
