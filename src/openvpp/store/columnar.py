"""SELECTs into Arrow columns: a COPY on PostgreSQL, a fetch on SQLite (``store.bulk.query_arrow``),
from a SQLAlchemy statement; and an epoch-seconds expression that both databases evaluate."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, func
from sqlalchemy.sql import ColumnElement, Select

from openvpp.store import bulk


def select_arrow(conn: Connection, stmt: Select, types: dict[str, pa.DataType]) -> pa.Table:
    """The rows of ``stmt`` as an Arrow table whose columns are named and typed by ``types`` (in order).

    PostgreSQL streams them with ``COPY (query) TO STDOUT``: the statement is rendered with its
    values inline (SQLAlchemy quotes them), since COPY takes no parameters.
    """
    if conn.dialect.name == "postgresql":
        sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        return bulk.query_arrow(conn, sql, types)
    rows = conn.execute(stmt).all()
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in types]
    return pa.table({n: pa.array(list(c), t) for (n, t), c in zip(types.items(), cols, strict=True)})


def epoch_s(column: ColumnElement, dialect: str) -> ColumnElement:
    """Seconds since 1970-01-01 UTC of a timestamp column (SQLite keeps naive UTC text)."""
    if dialect == "postgresql":
        return func.extract("epoch", column)
    return (func.julianday(column) - 2440587.5) * 86400.0


def quarter_index(seconds: np.ndarray, t0: float) -> np.ndarray:
    """Index of the 15-minute slot from ``t0`` that holds each bucket start (epoch seconds, minute-aligned;
    a millisecond of slack absorbs the float error of SQLite's julianday)."""
    return np.floor((np.asarray(seconds, dtype=np.float64) - t0 + 1e-3) / 900.0).astype(np.int64)
