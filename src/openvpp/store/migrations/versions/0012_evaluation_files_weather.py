"""evaluation files (resource × slot results beside the database, with their SHA-256) and weather

An evaluation over a million resources stores its resource × slot results as one Arrow IPC file
(``store.evaluation_files``) instead of a row per resource and slot; ``evaluation_files`` records
the file. Evaluations stored before keep their rows in ``evaluation_rows`` and are read from there.
``weather_temperature`` holds the air temperature per area and 15-minute slot that the
temperature-regression baseline reads (``services.weather``).

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluation_files",
        sa.Column("evaluation_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=24), nullable=False),
        sa.Column("path", sa.String(length=400), nullable=False),
        sa.Column("format", sa.String(length=24), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["evaluation_id"], ["evaluations.evaluation_id"],
                                name=op.f("fk_evaluation_files_evaluation_id_evaluations")),
        sa.PrimaryKeyConstraint("evaluation_id", "name", name="pk_evaluation_files"),
    )
    op.create_table(
        "weather_temperature",
        sa.Column("area_id", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("temp_c", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("area_id", "bucket", name="pk_weather_temperature"),
    )


def downgrade() -> None:
    op.drop_table("weather_temperature")
    op.drop_table("evaluation_files")
