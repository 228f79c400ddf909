"""Health and the audit log."""

from fastapi import APIRouter, Depends, Query
from sqlalchemy import Connection, text

from openvpp import __version__
from openvpp.api.deps import current_actor, read_conn
from openvpp.api.routing import JSONRoute
from openvpp.model.roles import Perm
from openvpp.services.scope import require
from openvpp.store import audit
from openvpp.store.audit import Actor

router = APIRouter(tags=["meta"], route_class=JSONRoute)


@router.get("/health")
def health(conn: Connection = Depends(read_conn)) -> dict:
    conn.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__, "database": conn.dialect.name}


@router.get("/audit")
def audit_entries(entity: str | None = None, entity_id: str | None = None,
                  limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                  actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """The append-only audit log (city admin and auditor)."""
    require(actor, Perm.READ_AUDIT)
    return {"items": audit.entries(conn, entity, entity_id, limit, offset)}
