"""Operators (VPP aggregators)."""

from fastapi import APIRouter, Depends
from sqlalchemy import Connection, select

from openvpp.api.deps import current_actor, read_conn
from openvpp.core.errors import Forbidden, NotFound
from openvpp.services.scope import scope_of
from openvpp.store.audit import Actor
from openvpp.store.schema import operators

router = APIRouter(prefix="/operators", tags=["operators"])


@router.get("")
def list_operators(actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """All operators for the center; an operator's users see their own only; owners see theirs."""
    scope = scope_of(actor)
    q = select(operators).order_by(operators.c.operator_id)
    if scope.operator_id:
        q = q.where(operators.c.operator_id == scope.operator_id)
    elif scope.owner_id:
        from openvpp.store.schema import owners
        q = q.where(operators.c.operator_id.in_(
            select(owners.c.operator_id).where(owners.c.owner_id == scope.owner_id)))
    return {"items": [dict(r) for r in conn.execute(q).mappings()]}


@router.get("/{operator_id}")
def get_operator(operator_id: str, actor: Actor = Depends(current_actor),
                 conn: Connection = Depends(read_conn)) -> dict:
    scope = scope_of(actor)
    row = conn.execute(select(operators).where(operators.c.operator_id == operator_id)).mappings().first()
    if row is None:
        raise NotFound("operator", operator_id)
    if scope.operator_id and scope.operator_id != operator_id:
        raise Forbidden(f"operator {operator_id} is outside your scope ({scope.label()})")
    return dict(row)
