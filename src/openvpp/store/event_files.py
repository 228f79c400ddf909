"""Files of an event: its trading units' members as dispatched, as one Arrow IPC file with its SHA-256.

Taken when the event starts executing (``services.evaluation.snapshot_members``): a million
members are one file written in a fraction of a second, not a million rows. The file lives beside
the database as evaluation and settlement files do — ``<directory of the SQLite file>/events`` or
``$OPENVPP_HOME/events/<database name>`` — hashed once written; ``event_files`` records it on the
caller's transaction, and a read checks size and SHA-256 (``store.evaluation_files.read_checked``):
an altered file is refused, never read. A rolled-back transaction leaves the file unreferenced
(:func:`orphans`).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from sqlalchemy import Connection, select

from openvpp.store.evaluation_files import orphans_below, read_checked, root_beside, written
from openvpp.store.schema_events import event_files


def files_root(conn: Connection) -> Path:
    """Where event files live: beside a SQLite file, else ``$OPENVPP_HOME/events/<database name>``."""
    return root_beside(conn, "events")


def write(conn: Connection, event_id: str, name: str, table: pa.Table) -> dict:
    """Write ``table`` as the event's ``name`` file and record it; returns the record."""
    record = {"event_id": event_id, "name": name, **written(files_root(conn), Path(event_id) / f"{name}.arrow", table)}
    conn.execute(event_files.insert().values(**record))
    return record


def record(conn: Connection, event_id: str, name: str) -> dict | None:
    f = event_files
    row = conn.execute(select(f).where(f.c.event_id == event_id, f.c.name == name)).mappings().first()
    return dict(row) if row else None


def read(conn: Connection, event_id: str, name: str) -> tuple[pa.Table, dict] | None:
    """The event's ``name`` file (memory-mapped, checked against its record) and the record; None if none."""
    rec = record(conn, event_id, name)
    if rec is None:
        return None
    path = files_root(conn) / rec["path"]
    return read_checked(path, rec["sha256"], rec["bytes"], f"event {event_id}: its {name} file {path}"), rec


def orphans(conn: Connection) -> list[Path]:
    """Files under the root that no ``event_files`` row records (a rolled-back transaction's)."""
    return orphans_below(files_root(conn), {r[0] for r in conn.execute(select(event_files.c.path))})
