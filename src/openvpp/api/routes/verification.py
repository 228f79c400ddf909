"""Capability verification (能力校核): schedule tests, complete them from telemetry, report."""

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection

from openvpp.adapters.tss import probe
from openvpp.api.deps import current_actor, read_conn, write_conn
from openvpp.api.routing import JSONRoute
from openvpp.core.errors import Forbidden
from openvpp.services import verification as ver
from openvpp.services.scope import scope_of
from openvpp.store.audit import Actor

router = APIRouter(prefix="/verification", tags=["verification"], route_class=JSONRoute)


class TestIn(BaseModel):
    target_kind: str = Field(description="resource, site or trading_unit (OPERATOR@SUBSTATION)")
    target_id: str
    window_start: datetime
    direction: str = "down"
    duration_h: float | None = None


@router.post("/tests", status_code=201)
def schedule(body: TestIn, actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Schedule a verification test; the response carries the test instruction for the window."""
    t = ver.schedule(conn, actor, **body.model_dump())
    return {**t, "instruction": ver.instruction(t)}


@router.get("/tests")
def list_tests(state: str | None = None, operator_id: str | None = None, target_id: str | None = None,
               limit: int = Query(100, ge=1, le=1000), actor: Actor = Depends(current_actor),
               conn: Connection = Depends(read_conn)) -> dict:
    """Verification tests, newest first (an operator's users see their own operator's)."""
    scope = scope_of(actor)
    if scope.owner_id:
        raise Forbidden("verification tests are for the center and operators")
    if scope.operator_id and operator_id not in (None, scope.operator_id):
        raise Forbidden(f"tests of operator {operator_id} are outside your scope")
    return {"items": ver.list_tests(conn, scope.operator_id or operator_id, state, target_id, limit)}


@router.get("/tests/{test_id}")
def get_test(test_id: str, actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    t = ver.get(conn, test_id)
    scope = scope_of(actor)
    if scope.operator_id and t["operator_id"] != scope.operator_id:
        raise Forbidden(f"test {test_id} is outside your scope")
    return t


@router.post("/tests/{test_id}/complete")
def complete(test_id: str, request: Request, actor: Actor = Depends(current_actor),
             conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Evaluate a test from the telemetry of its window (the platform's configured telemetry source);
    the members' operators' qualification checks run again (TSS round trip included)."""
    source = getattr(request.app.state, "telemetry_source", None) or ver.StoreTelemetry(conn.engine)
    return ver.complete(conn, actor, test_id, source, probe=getattr(request.app.state, "tss_probe", probe))


@router.get("/report")
def report(request: Request, actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """Declared versus verified capability per operator (within your scope).

    The report reads what moves only with resources, operators and verification tests, the same
    changes that rebuild the process's shared pool engine (``services.pools.PoolCache``): it is kept
    per scope for as long as that engine holds (a GROUP BY over every resource otherwise, ~0.1-0.2 s
    at 100,000 resources, on a page the operators open first)."""
    scope = scope_of(actor)
    if scope.owner_id:
        raise Forbidden("the verification report is for the center and operators")
    engine = request.app.state.pool_engine.get(conn)
    kept = request.app.state.verification_reports
    hit = kept.get(scope.operator_id)
    if hit is not None and hit[0] is engine:
        return hit[1]
    out = {"items": ver.declared_vs_verified(conn, scope.operator_id)}
    kept[scope.operator_id] = (engine, out)
    return out
