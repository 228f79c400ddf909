"""Files of a settlement revision: its owner parties as one Arrow IPC file, with its SHA-256.

A yearly settlement over a million resources has about 600,000 owner parties (owner × operator ×
contract, each with its revenue and share in fen and its contract). As rows of a keyed table they
were seconds of COPY and index building; as one Arrow IPC (Feather v2) file they are written in a
tenth of a second and read back without a parse (memory-mapped), by this module, pyarrow, pandas or
DuckDB. The file lives beside the database, as the evaluations' result files do
(``store.evaluation_files``): ``<directory of the SQLite file>/settlements`` or, with PostgreSQL,
``$OPENVPP_HOME/settlements/<database name>``, written under a temporary name, hashed while it is
written and renamed into place; ``settlement_files`` records its path (relative to that root),
SHA-256, size and row count on the caller's transaction. Reading checks size and SHA-256 (once per
file and process while it is unchanged): an altered or truncated file is refused, never read.

A file is named by its settlement and revision. If the caller's transaction rolls back, the file
stays behind unreferenced: :func:`orphans` lists such files (a later revision of the same number
replaces it).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from sqlalchemy import Connection, select

from openvpp.store.evaluation_files import orphans_below, read_checked, root_beside, written
from openvpp.store.schema_settlement import settlement_files


def files_root(conn: Connection) -> Path:
    """Where settlement files live: beside a SQLite file, else ``$OPENVPP_HOME/settlements/<database name>``."""
    return root_beside(conn, "settlements")


def write(conn: Connection, settlement_id: str, revision: int, year: int, name: str, table: pa.Table) -> dict:
    """Write ``table`` as the revision's ``name`` file and record it; returns the record."""
    rel = Path(str(int(year))) / f"{settlement_id}.r{int(revision)}.{name}.arrow"
    record = {"settlement_id": settlement_id, "revision": int(revision), "name": name,
              **written(files_root(conn), rel, table)}
    conn.execute(settlement_files.insert().values(**record))
    return record


def record(conn: Connection, settlement_id: str, revision: int, name: str) -> dict | None:
    f = settlement_files
    row = conn.execute(select(f).where(f.c.settlement_id == settlement_id, f.c.revision == int(revision),
                                       f.c.name == name)).mappings().first()
    return dict(row) if row else None


def read(conn: Connection, settlement_id: str, revision: int, name: str) -> pa.Table | None:
    """The revision's ``name`` file (memory-mapped), checked against its record; None if it has none."""
    rec = record(conn, settlement_id, revision, name)
    if rec is None:
        return None
    path = files_root(conn) / rec["path"]
    return read_checked(path, rec["sha256"], rec["bytes"],
                        f"settlement {settlement_id} revision {revision}: its {name} file {path}")


def orphans(conn: Connection) -> list[Path]:
    """Files under the root that no ``settlement_files`` row records (a rolled-back computation's)."""
    return orphans_below(files_root(conn), {r[0] for r in conn.execute(select(settlement_files.c.path))})
