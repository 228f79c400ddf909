"""Result files of an evaluation: its resource × slot results as one Arrow IPC file, with its SHA-256.

A million resources × an 8-slot window is 8 M results: one row each in the database is a bulk-load
job of minutes, one Arrow IPC (Feather v2) file is written in a fraction of a second and read back
without a parse (memory-mapped), by this module, pyarrow, pandas or DuckDB. The file is written
beside the database — ``<directory of the SQLite file>/evaluations`` or, with PostgreSQL,
``$OPENVPP_HOME/evaluations/<database name>`` (a volume every API and worker process mounts) — under a temporary
name, hashed while it is written and renamed into place; ``evaluation_files`` records its path
(relative to that root), SHA-256, size and row count on the caller's transaction. Reading checks
size and SHA-256 (once per file and process while it is unchanged): a file that was altered or
truncated is refused, never read.

If the caller's transaction rolls back, the file stays behind unreferenced (named by the
evaluation id, so it never collides): :func:`orphans` lists such files.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
from sqlalchemy import Connection, select

from openvpp.core.errors import Conflict
from openvpp.core.settings import Settings
from openvpp.store.schema_evaluation import evaluation_files

FORMAT = "arrow-ipc"
_VERIFIED: dict[tuple[str, int, int], str] = {}   # (path, size, mtime_ns) -> sha256 checked in this process


def files_root(conn: Connection) -> Path:
    """Where result files live: beside a SQLite file, else ``$OPENVPP_HOME/evaluations/<database name>``."""
    return root_beside(conn, "evaluations")


def root_beside(conn: Connection, folder: str) -> Path:
    """A folder of hashed files beside the database: ``<directory of the SQLite file>/<folder>`` or, on a
    server database, ``$OPENVPP_HOME/<folder>/<database name>`` (this module's and
    ``store.settlement_files``')."""
    url = conn.engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).resolve().parent / folder
    return Settings.from_env().home / folder / (url.database or "default")


def remember(path: Path, sha256: str) -> None:
    """A file this process just wrote and hashed: its next read skips the re-hash while it is unchanged."""
    st = path.stat()
    _VERIFIED[(str(path), st.st_size, st.st_mtime_ns)] = sha256


def read_checked(path: Path, sha256: str, size: int, what: str) -> pa.Table:
    """The Arrow IPC file at ``path`` (memory-mapped) if it still has the recorded size and SHA-256
    (checked once per process while the file is unchanged); ``Conflict`` naming ``what`` if it is
    missing or altered."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise Conflict(f"{what} is missing (recorded sha256 {sha256[:12]}, {size} bytes)") from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key) != sha256:
        sha = sha256_file(path) if st.st_size == size else None
        if sha != sha256:
            raise Conflict(f"{what} is not the one written ({st.st_size} bytes, sha256 {(sha or '?')[:12]}; "
                           f"recorded {size} bytes, {sha256[:12]}): refused")
        _VERIFIED[key] = sha
    return ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def orphans_below(root: Path, known: set[str]) -> list[Path]:
    """Arrow files under ``root`` whose relative path is not in ``known`` (no row records them)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*.arrow") if p.relative_to(root).as_posix() not in known)


#: hashes what a HashingFile writes, beside the writing thread
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-hash")
#: writes below this are hashed on the writing thread (a hop costs more than hashing them)
_HOP_BYTES = 1 << 20


class HashingFile:
    """A binary file that hashes what is written to it (pyarrow writes through ``pa.PythonFile``).

    Large pieces are hashed on a helper thread while the next piece is written (SHA-256 of 170 MB takes
    ~0.08 s, as long as writing it when the file's pages are warm): one piece at a time, in order. The
    piece's object is held until it is hashed, so its memory stays valid."""

    def __init__(self, path: Path):
        self.f = open(path, "wb")  # noqa: SIM115 - closed by close(), called by pyarrow and by write()
        self.h = hashlib.sha256()
        self.n = 0
        self.closed = False
        self._pending: Future | None = None

    def write(self, data) -> int:
        view = memoryview(data)
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if view.nbytes >= _HOP_BYTES:
            self._pending = _HASHER.submit(self.h.update, view)
        else:
            self.h.update(view)
        self.n += view.nbytes
        return self.f.write(view)

    def hexdigest(self) -> str:
        """SHA-256 of everything written (waits for the piece still being hashed)."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        return self.h.hexdigest()

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        if not self.closed:
            self.f.close()
            self.closed = True


def write_arrow(path: Path, table: pa.Table) -> tuple[str, int]:
    """``table`` as an Arrow IPC file at ``path``, whole or not at all (written beside it, then
    renamed); returns its SHA-256 and size in bytes, hashed while it is written."""
    tmp = path.with_name(path.name + ".tmp")
    sink = HashingFile(tmp)
    try:
        with ipc.new_file(pa.PythonFile(sink, mode="w"), table.schema) as w:
            w.write_table(table)
    finally:
        sink.close()
    os.replace(tmp, path)
    return sink.hexdigest(), sink.n


def write_file(root: Path, evaluation_id: str, event_id: str, name: str, table: pa.Table) -> dict:
    """Write ``table`` as the evaluation's ``name`` file under ``root``, without the database (so it may
    run on another thread while the caller's transaction goes on); returns the record to insert."""
    return {"evaluation_id": evaluation_id, "name": name,
            **written(root, Path(event_id) / f"{evaluation_id}.{name}.arrow", table)}


def written(root: Path, rel: Path, table: pa.Table) -> dict:
    """Write ``table`` at ``root / rel`` (:func:`write_arrow`) and return the file's part of its record
    (path relative to ``root``, format, SHA-256, bytes, rows, time): the evaluation, settlement and
    event files' tables add their keys."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sha, size = write_arrow(path, table)
    remember(path, sha)
    return {"path": rel.as_posix(), "format": FORMAT, "sha256": sha, "bytes": size, "rows": table.num_rows,
            "created_at": datetime.now(UTC)}


def insert_record(conn: Connection, record: dict) -> dict:
    """Record a file :func:`write_file` wrote (on the caller's transaction); returns the record."""
    conn.execute(evaluation_files.insert().values(**record))
    return record


def record(conn: Connection, evaluation_id: str, name: str) -> dict | None:
    row = conn.execute(select(evaluation_files).where(evaluation_files.c.evaluation_id == evaluation_id,
                                                      evaluation_files.c.name == name)).mappings().first()
    return dict(row) if row else None


def read(conn: Connection, evaluation_id: str, name: str, columns: list[str] | None = None) -> pa.Table | None:
    """The evaluation's ``name`` file (memory-mapped), checked against its record; None if it has none."""
    rec = record(conn, evaluation_id, name)
    if rec is None:
        return None
    path = files_root(conn) / rec["path"]
    table = read_checked(path, rec["sha256"], rec["bytes"], f"evaluation {evaluation_id}: its {name} file {path}")
    return table.select(columns) if columns is not None else table


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 16 MB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            h.update(chunk)
    return h.hexdigest()


def orphans(conn: Connection) -> list[Path]:
    """Files under the root that no ``evaluation_files`` row records (a rolled-back evaluation's)."""
    return orphans_below(files_root(conn), {r[0] for r in conn.execute(select(evaluation_files.c.path))})
