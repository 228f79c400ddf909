"""Evaluation storage at scale and the weather an evaluation reads (issue 7, migration 0012).

``evaluation_files`` records the files an evaluation wrote beside the database (its resource × slot
results, ``store.evaluation_files``): path relative to the files root, format, SHA-256, size and row
count, so a result read later is checked against what was written. ``weather_temperature`` holds air
temperatures per area (a grid node, usually a district) and 15-minute slot, for the
temperature-regression baseline (``services.weather``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
)

from openvpp.store.schema import ID, metadata

evaluation_files = Table(
    "evaluation_files",
    metadata,
    Column("evaluation_id", String(ID), ForeignKey("evaluations.evaluation_id"), nullable=False),
    Column("name", String(24), nullable=False),          # resources
    Column("path", String(400), nullable=False),         # relative to store.evaluation_files.files_root
    Column("format", String(24), nullable=False),        # arrow-ipc
    Column("sha256", String(64), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("evaluation_id", "name", name="pk_evaluation_files"),
)

# air temperature per area and 15-minute slot (bucket = slot start, UTC)
weather_temperature = Table(
    "weather_temperature",
    metadata,
    Column("area_id", String(ID), nullable=False),       # a grid node id: a district, or the city
    Column("bucket", DateTime(timezone=True), nullable=False),
    Column("temp_c", Float, nullable=False),
    Column("source", String(200), nullable=False),       # station or provider, e.g. "CMA 59287 Guangzhou"
    PrimaryKeyConstraint("area_id", "bucket", name="pk_weather_temperature"),
)
