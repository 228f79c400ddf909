"""Operators (VPP aggregators): admission and exit, qualification checks, trading units."""

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select

from openvpp.adapters.tss import probe
from openvpp.api.deps import current_actor, read_conn, write_conn
from openvpp.api.routing import JSONRoute
from openvpp.core.errors import Forbidden, NotFound
from openvpp.services import admission
from openvpp.services.scope import scope_of
from openvpp.store.audit import Actor
from openvpp.store.schema import operators, owners, resources

router = APIRouter(prefix="/operators", tags=["operators"], route_class=JSONRoute)


def _owner_operators(owner_id: str):
    """Operators an owner deals with: those of its resources and the one it contracted with."""
    return select(resources.c.operator_id).where(resources.c.owner_id == owner_id,
                                                 resources.c.operator_id.is_not(None)).union(
        select(owners.c.operator_id).where(owners.c.owner_id == owner_id, owners.c.operator_id.is_not(None)))


def _visible(actor: Actor, operator_id: str, conn: Connection) -> None:
    scope = scope_of(actor)
    if scope.operator_id and scope.operator_id != operator_id:
        raise Forbidden(f"operator {operator_id} is outside your scope ({scope.label()})")
    if scope.owner_id and operator_id not in {r[0] for r in conn.execute(_owner_operators(scope.owner_id))}:
        raise Forbidden(f"operator {operator_id} is outside your scope ({scope.label()})")


@router.get("")
def list_operators(state: str | None = None, actor: Actor = Depends(current_actor),
                   conn: Connection = Depends(read_conn)) -> dict:
    """All operators for the center; an operator's users see their own only; owners see theirs."""
    scope = scope_of(actor)
    q = select(operators).order_by(operators.c.operator_id)
    if state:
        q = q.where(operators.c.state == state)
    if scope.operator_id:
        q = q.where(operators.c.operator_id == scope.operator_id)
    elif scope.owner_id:
        q = q.where(operators.c.operator_id.in_(_owner_operators(scope.owner_id)))
    return {"items": [dict(r) for r in conn.execute(q).mappings()]}


class Application(BaseModel):
    operator_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
    name: str = Field(min_length=1, max_length=200)
    name_zh: str | None = None
    kind: str
    credit_code: str | None = None
    tss_endpoint: str | None = None


@router.post("", status_code=201)
def apply(body: Application, actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Register an operator's application for admission (state ``applied``)."""
    return admission.apply(conn, actor, body.model_dump())


@router.get("/{operator_id}")
def get_operator(operator_id: str, actor: Actor = Depends(current_actor),
                 conn: Connection = Depends(read_conn)) -> dict:
    _visible(actor, operator_id, conn)
    row = conn.execute(select(operators).where(operators.c.operator_id == operator_id)).mappings().first()
    if row is None:
        raise NotFound("operator", operator_id)
    return {**dict(row), "checks": admission.latest_checks(conn, operator_id)}


class TransitionIn(BaseModel):
    action: str = Field(description="start_review, admit, reject, suspend, reinstate, exit")
    reason: str | None = None
    handover_to: str | None = Field(None, description="on exit: the operator that takes over the resources")


@router.post("/{operator_id}/transitions")
def transition(operator_id: str, body: TransitionIn, request: Request, actor: Actor = Depends(current_actor),
               conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Move an operator through admission; checks run at review and admission (TSS round trip included)."""
    tss_probe = getattr(request.app.state, "tss_probe", probe)
    return admission.transition(conn, actor, operator_id, body.action, body.reason, probe=tss_probe,
                                handover_to=body.handover_to)


class RecheckIn(BaseModel):
    reason: str | None = Field(None, max_length=500, description="why the checks run again (audited)")


@router.post("/{operator_id}/checks")
def recheck(operator_id: str, request: Request, body: RecheckIn | None = None,
            actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Run the qualification checks again (TSS round trip, trading units, minute-level capability)
    without a state change; the latest minute-level check decides the reserve subsidy."""
    tss_probe = getattr(request.app.state, "tss_probe", probe)
    return admission.recheck(conn, actor, operator_id, tss_probe, reason=body.reason if body else None)


@router.get("/{operator_id}/trading-units")
def trading_units(operator_id: str, request: Request, actor: Actor = Depends(current_actor),
                  conn: Connection = Depends(read_conn)) -> dict:
    """The operator's capability per 220 kV clearing node, against the >= 1 MW / >= 1 h rule
    (summed on the process's registry arrays, current with the database)."""
    _visible(actor, operator_id, conn)
    reg = request.app.state.pool_engine.registry(conn)
    return {"operator_id": operator_id, "units": admission.trading_units(conn, operator_id, reg=reg)}
