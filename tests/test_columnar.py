"""store.columnar: SELECTs into Arrow columns on SQLite and PostgreSQL (PostgreSQL: one text value per
column, split by Arrow; a value that would break the split falls back to a COPY)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from sqlalchemy import Column, Float, MetaData, String, Table, select
from sqlalchemy.types import DateTime

from openvpp.store import db
from openvpp.store.columnar import epoch_s, quarter_index, select_arrow

META = MetaData()
SCRATCH = Table("columnar_scratch", META, Column("k", String(40)), Column("x", Float), Column("t", DateTime(True)))
TYPES = {"k": pa.string(), "x": pa.float64(), "t": pa.float64()}


def test_select_arrow_keeps_nulls_numbers_and_text_on_both_databases(db_url):
    rows = [{"k": "A-1", "x": 1.5, "t": datetime(2025, 7, 14, 16, 0, tzinfo=UTC)},
            {"k": None, "x": None, "t": datetime(2025, 7, 14, 16, 15, tzinfo=UTC)},
            {"k": "\\N-like but not", "x": float("nan"), "t": datetime(2025, 7, 14, 16, 44, tzinfo=UTC)},
            {"k": "B", "x": 1e-300, "t": datetime(2025, 7, 14, 16, 45, tzinfo=UTC)}]
    with db.get_engine(db_url).begin() as conn:
        SCRATCH.create(conn)
        conn.execute(SCRATCH.insert(), rows)
        q = select(SCRATCH.c.k, SCRATCH.c.x, epoch_s(SCRATCH.c.t, conn.dialect.name)).order_by(SCRATCH.c.t)
        got = select_arrow(conn, q, TYPES)
        assert got.column("k").to_pylist() == ["A-1", None, "\\N-like but not", "B"]
        x = got.column("x").to_pylist()
        assert x[0] == 1.5 and x[1] is None and x[3] == 1e-300
        assert (x[2] is None) if conn.dialect.name == "sqlite" else np.isnan(x[2])   # SQLite stores NaN as NULL
        t0 = datetime(2025, 7, 14, 16, 0, tzinfo=UTC).timestamp()
        assert quarter_index(got.column("t").to_numpy(), t0).tolist() == [0, 1, 2, 3]
        conn.execute(SCRATCH.insert(), [{"k": "two\nlines", "x": 2.0, "t": datetime(2025, 7, 14, 17, tzinfo=UTC)}])
        again = select_arrow(conn, q, TYPES)            # on PostgreSQL: the split disagrees, COPY instead
        assert again.column("k").to_pylist()[-1] == "two\nlines" and again.num_rows == 5
        assert select_arrow(conn, q.where(SCRATCH.c.k == "nothing"), TYPES).num_rows == 0
        # a text that is the NULL marker itself stays text (on PostgreSQL: the NULL count disagrees, COPY)
        conn.execute(SCRATCH.insert(), [{"k": "\\N", "x": 3.0, "t": datetime(2025, 7, 14, 18, tzinfo=UTC)}])
        marker = select_arrow(conn, q.where(SCRATCH.c.k.is_(None) | (SCRATCH.c.k == "\\N")), TYPES)
        assert marker.column("k").to_pylist() == [None, "\\N"]
        SCRATCH.drop(conn)
