"""Bulk writes: PostgreSQL ``COPY ... FROM STDIN (FORMAT csv)``, SQLite batched executemany.

Both run inside the caller's transaction, so a failure leaves nothing written.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Table
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

CHUNK_ROWS = 100_000
#: memory of the session that rebuilds keys and indexes: a million-row sort stays in memory
MAINTENANCE_WORK_MEM = "512MB"
#: memory of the foreign-key validations' hash anti-joins (the default 4MB splits them in batches)
FK_CHECK_WORK_MEM = "256MB"


def csv_bytes(data: pa.Table) -> bytes:
    """Headerless CSV as PostgreSQL's COPY reads it (empty unquoted field = NULL)."""
    buf = io.BytesIO()
    pacsv.write_csv(data, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


def copy_csv(conn: Connection, table_name: str, columns: list[str], payload: bytes | BinaryIO) -> None:
    """Stream CSV (bytes, or a binary file positioned after its header) into ``table_name`` with
    PostgreSQL COPY on the connection's transaction; a file is read in 8 MiB pieces as it goes."""
    raw = conn.connection.driver_connection
    sql = f"COPY {table_name} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
    step = 8 << 20
    try:
        with raw.cursor() as cur, cur.copy(sql) as cp:
            if isinstance(payload, (bytes, bytearray, memoryview)):
                view = memoryview(payload)
                for i in range(0, len(view), step):
                    cp.write(view[i:i + step])
            else:
                for piece in iter(lambda: payload.read(step), b""):
                    cp.write(piece)
    except psycopg.IntegrityError as exc:  # same exception type as the SQLite path raises
        raise IntegrityError(sql, None, exc) from exc
    except psycopg.DataError as exc:       # a value the column's type refuses
        raise DataError(sql, None, exc) from exc


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


def query_arrow(conn: Connection, sql: str, types: dict[str, pa.DataType]) -> pa.Table:
    """Run a SELECT and return its columns as Arrow arrays. PostgreSQL streams the rows with
    ``COPY (query) TO STDOUT`` (a million ids in a fraction of a second); SQLite fetches them."""
    names = list(types)
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        buf = io.BytesIO()
        with raw.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as cp:
            for chunk in cp:
                buf.write(chunk)
        if buf.tell() == 0:
            return pa.table({n: pa.array([], t) for n, t in types.items()})
        buf.seek(0)
        return pacsv.read_csv(buf, read_options=pacsv.ReadOptions(column_names=names),
                              parse_options=pacsv.ParseOptions(newlines_in_values=True),
                              convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True))
    rows = conn.exec_driver_sql(sql).fetchall()
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.table({n: _sqlite_array(list(c), t) for (n, t), c in zip(types.items(), cols, strict=True)})


def query_ids(conn: Connection, sql: str, names: list[str]) -> pa.Table:
    """Text columns of a SELECT (non-null ids: no newline, ``model.columns.ID_PATTERN``) as Arrow strings.

    On PostgreSQL each column comes back as one ``string_agg`` value, split in C++ by Arrow: 600,000
    ids in 0.1 s, where ``query_arrow`` spends 0.4 s in Python on COPY's one message per row. If a
    value is NULL or holds a newline the pieces do not add up to the row count, and the rows are
    fetched again with ``query_arrow``: with no NULL in a column (its count is the row count), the
    pieces number the rows plus the newlines inside values.
    """
    types = {n: pa.string() for n in names}
    if conn.dialect.name != "postgresql":
        return query_arrow(conn, sql, types)
    aggs = ", ".join(f"count({n}), string_agg({n}, E'\\n')" for n in names)
    row = conn.exec_driver_sql(f"SELECT count(*), {aggs} FROM ({sql}) AS q").one()
    n_rows = row[0]
    cols = {}
    for i, name in enumerate(names):
        present, text = row[1 + 2 * i], row[2 + 2 * i]
        if not n_rows:
            cols[name] = pa.array([], pa.string())
            continue
        if present != n_rows:
            return query_arrow(conn, sql, types)
        pieces = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))
        if len(pieces) != n_rows:
            return query_arrow(conn, sql, types)
        cols[name] = pieces.cast(pa.string())
    return pa.table(cols)


def _sqlite_array(values: list, t: pa.DataType) -> pa.Array:
    """SQLite hands dates and timestamps back as ISO text: parse those through Arrow's cast."""
    try:
        return pa.array(values, t)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        text = pa.array([None if v is None else str(v) for v in values], pa.string())
        if pa.types.is_timestamp(t):
            try:  # with a zone offset
                return pc.cast(text, pa.timestamp("us", "UTC")).cast(t)
            except pa.ArrowInvalid:  # naive text is UTC in storage
                return pc.assume_timezone(pc.cast(text, pa.timestamp("us")), "UTC").cast(t)
        return pc.cast(text, t)


@contextmanager
def rebuilt_constraints(conn: Connection, table: Table, spent: dict[str, float] | None = None) -> Iterator[None]:
    """PostgreSQL bulk-load mode ("Populating a Database" in the PostgreSQL manual), inside the
    caller's transaction: drop the table's keys, indexes and foreign keys (and the foreign keys of
    other tables that point at it), let the caller COPY, then

    * build the primary key and the unique indexes, each in one sorted pass (a B-tree built at once
      is several times cheaper than a million single inserts): integrity holds at commit;
    * re-add the foreign keys ``NOT VALID``: enforced for every later write at once; the rows just
      copied were checked against the same references by the caller, and ``finish`` validates them
      again after commit (``VALIDATE CONSTRAINT`` does not block readers or writers);
    * leave the plain (performance) indexes to ``finish``, which builds them ``CONCURRENTLY``.

    Readers of the table wait for the transaction (ACCESS EXCLUSIVE) while it runs. ``spent``, if
    given, receives the seconds of each step (a profile; benchmarks/import_resources.py --profile).
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    # every foreign key on the table or pointing at it, as the database has them (a table of another
    # area points at this one whether or not its schema module was imported in this process)
    fks = conn.exec_driver_sql(
        "SELECT r.relname, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "JOIN pg_class r ON r.oid = c.conrelid WHERE c.contype = 'f' "
        "AND (c.conrelid = %(t)s::regclass OR c.confrelid = %(t)s::regclass) ORDER BY 1, 2",
        {"t": table.name}).all()
    indexes = list(table.indexes)
    spent = {} if spent is None else spent
    t0 = time.perf_counter()
    conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
    for rel, name, _ in fks:
        conn.exec_driver_sql(f"ALTER TABLE {_quoted(rel)} DROP CONSTRAINT {_quoted(name)}")
    for ix in indexes:
        conn.execute(DropIndex(ix))
    conn.execute(DropConstraint(table.primary_key))
    spent["drop keys"] = time.perf_counter() - t0
    yield
    t0 = time.perf_counter()
    conn.execute(AddConstraint(table.primary_key))
    spent["primary key"] = time.perf_counter() - t0
    for ix in indexes:
        if ix.unique:
            t0 = time.perf_counter()
            conn.execute(CreateIndex(ix))
            spent[f"unique {ix.name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for rel, name, definition in fks:
        definition = definition.removesuffix(" NOT VALID")
        conn.exec_driver_sql(f"ALTER TABLE {_quoted(rel)} ADD CONSTRAINT {_quoted(name)} {definition} NOT VALID")
    spent["foreign keys NOT VALID"] = time.perf_counter() - t0


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def finish(engine, table: Table) -> dict[str, float]:
    """After a bulk load has committed: build the table's missing indexes ``CONCURRENTLY`` and
    validate its ``NOT VALID`` foreign keys (and those pointing at it). Idempotent; returns the
    seconds spent per step. Safe to run at any time (``openvpp serve`` runs it at start)."""
    if engine.dialect.name != "postgresql":
        return {}
    spent: dict[str, float] = {}
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")  # sorts in memory
        conn.exec_driver_sql(f"SET work_mem = '{FK_CHECK_WORK_MEM}'")   # the validations' anti-joins too
        present = {r[0] for r in conn.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s", (table.name,))}
        for ix in table.indexes:
            if ix.name not in present:
                t0 = time.perf_counter()
                ddl = str(CreateIndex(ix).compile(dialect=conn.dialect))
                conn.exec_driver_sql(ddl.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY", 1)
                                     .replace("CREATE UNIQUE INDEX", "CREATE UNIQUE INDEX CONCURRENTLY", 1))
                spent[f"index {ix.name}"] = time.perf_counter() - t0
        pending = conn.exec_driver_sql(
            "SELECT c.conname, r.relname FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid "
            "WHERE NOT c.convalidated AND (c.conrelid = %s::regclass OR c.confrelid = %s::regclass)",
            (table.name, table.name)).all()
        for name, rel in pending:
            t0 = time.perf_counter()
            conn.exec_driver_sql(f'ALTER TABLE "{rel}" VALIDATE CONSTRAINT "{name}"')
            spent[f"validate {name}"] = time.perf_counter() - t0
    return spent
