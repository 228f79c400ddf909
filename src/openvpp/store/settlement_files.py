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

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
from sqlalchemy import Connection, select

from openvpp.core.errors import Conflict
from openvpp.core.settings import Settings
from openvpp.store.evaluation_files import write_arrow
from openvpp.store.schema_settlement import settlement_files

FORMAT = "arrow-ipc"
_VERIFIED: dict[tuple[str, int, int], str] = {}   # (path, size, mtime_ns) -> sha256 checked in this process


def files_root(conn: Connection) -> Path:
    """Where settlement files live: beside a SQLite file, else ``$OPENVPP_HOME/settlements/<database name>``."""
    url = conn.engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).resolve().parent / "settlements"
    return Settings.from_env().home / "settlements" / (url.database or "default")


def write(conn: Connection, settlement_id: str, revision: int, year: int, name: str, table: pa.Table) -> dict:
    """Write ``table`` as the revision's ``name`` file and record it; returns the record."""
    root = files_root(conn)
    rel = Path(str(int(year))) / f"{settlement_id}.r{int(revision)}.{name}.arrow"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sha, size = write_arrow(path, table)
    record = {"settlement_id": settlement_id, "revision": int(revision), "name": name, "path": rel.as_posix(),
              "format": FORMAT, "sha256": sha, "bytes": size, "rows": table.num_rows,
              "created_at": datetime.now(UTC)}
    st = path.stat()
    _VERIFIED[(str(path), st.st_size, st.st_mtime_ns)] = sha
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
    what = f"settlement {settlement_id} revision {revision}: its {name} file {path}"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise Conflict(f"{what} is missing (recorded sha256 {rec['sha256'][:12]}, {rec['bytes']} bytes)") from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key) != rec["sha256"]:
        sha = _sha256(path) if st.st_size == rec["bytes"] else None
        if sha != rec["sha256"]:
            raise Conflict(f"{what} is not the one written ({st.st_size} bytes, sha256 {(sha or '?')[:12]}; "
                           f"recorded {rec['bytes']} bytes, {rec['sha256'][:12]}): refused")
        _VERIFIED[key] = sha
    return ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            h.update(chunk)
    return h.hexdigest()


def orphans(conn: Connection) -> list[Path]:
    """Files under the root that no ``settlement_files`` row records (a rolled-back computation's)."""
    root = files_root(conn)
    if not root.exists():
        return []
    known = {r[0] for r in conn.execute(select(settlement_files.c.path))}
    return sorted(p for p in root.rglob("*.arrow") if p.relative_to(root).as_posix() not in known)
