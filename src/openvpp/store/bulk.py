"""Bulk writes: PostgreSQL ``COPY ... FROM STDIN (FORMAT csv)``, SQLite batched executemany.

Both run inside the caller's transaction, so a failure leaves nothing written.
"""

from __future__ import annotations

import io

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Table
from sqlalchemy.exc import IntegrityError

CHUNK_ROWS = 100_000


def csv_bytes(data: pa.Table) -> bytes:
    """Headerless CSV as PostgreSQL's COPY reads it (empty unquoted field = NULL)."""
    buf = io.BytesIO()
    pacsv.write_csv(data, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


def copy_csv(conn: Connection, table_name: str, columns: list[str], payload: bytes) -> None:
    """Stream CSV bytes into ``table_name`` with PostgreSQL COPY on the connection's transaction."""
    raw = conn.connection.driver_connection
    sql = f"COPY {table_name} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
    try:
        with raw.cursor() as cur, cur.copy(sql) as cp:
            view = memoryview(payload)
            step = 8 << 20
            for i in range(0, len(view), step):
                cp.write(view[i:i + step])
    except psycopg.IntegrityError as exc:  # same exception type as the SQLite path raises
        raise IntegrityError(sql, None, exc) from exc


def insert_arrow(conn: Connection, table: Table, data: pa.Table) -> int:
    """Insert every row of ``data`` (columns named as in ``table``) into ``table``."""
    if data.num_rows == 0:
        return 0
    if conn.dialect.name == "postgresql":
        for start in range(0, data.num_rows, CHUNK_ROWS * 5):
            part = data.slice(start, CHUNK_ROWS * 5)
            copy_csv(conn, table.name, part.column_names, csv_bytes(part))
    else:
        stmt = table.insert()
        for batch in data.to_batches(max_chunksize=CHUNK_ROWS):
            conn.execute(stmt, batch.to_pylist())
    return data.num_rows
