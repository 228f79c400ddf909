"""Reports: the city's progress against the plan's targets."""

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection

from openvpp.api.deps import current_actor, read_conn
from openvpp.api.routing import JSONRoute
from openvpp.services import registry
from openvpp.services.scope import scope_of
from openvpp.store.audit import Actor

router = APIRouter(prefix="/reports", tags=["reports"], route_class=JSONRoute)


@router.get("/targets")
def targets(request: Request, actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """Connected and adjustable capacity against the 2025-2027 targets, by district (within your scope)."""
    return registry.targets_report(conn, scope_of(actor), reg=request.app.state.pool_engine.registry(conn))
