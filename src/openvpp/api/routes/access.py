"""Resource access: approval, rejection, retirement, transfers, contracts with owners."""

from datetime import date, datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select

from openvpp.api.deps import current_actor, read_conn, write_conn
from openvpp.api.routing import JSONRoute
from openvpp.core.errors import Forbidden
from openvpp.services import access
from openvpp.services import resources as svc
from openvpp.services.scope import scope_of
from openvpp.store.audit import Actor
from openvpp.store.schema import contracts

router = APIRouter(tags=["resource access"], route_class=JSONRoute)


class ResourceTransition(BaseModel):
    resource_ids: list[str] = Field(min_length=1, max_length=100_000)
    action: str = Field(description="approve, reject, retire")
    reason: str | None = None


@router.post("/resources/transitions")
def transition(body: ResourceTransition, actor: Actor = Depends(current_actor),
               conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Approve, reject or retire resources, all or none."""
    return {"items": access.transition(conn, actor, body.resource_ids, body.action, body.reason)}


class TransferIn(BaseModel):
    to_operator: str
    reason: str
    at: datetime | None = None


@router.post("/resources/{resource_id}/transfer")
def transfer(resource_id: str, body: TransferIn, actor: Actor = Depends(current_actor),
             conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Move a resource to another admitted operator; the old link is closed with its dates."""
    return access.transfer(conn, actor, resource_id, body.to_operator, body.reason, body.at)


@router.get("/resources/{resource_id}/history")
def history(resource_id: str, actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """Operator links (closed ones, with dates), state and the audit trail of a resource."""
    return svc.history(conn, actor, resource_id)


class ContractIn(BaseModel):
    owner_id: str
    operator_id: str
    scheme: str = Field(description="fixed or tiered")
    valid_from: date
    valid_to: date | None = None
    owner_share: float | None = None
    tiers: list[dict] | None = None
    resource_id: str | None = None


@router.post("/contracts", status_code=201)
def register_contract(body: ContractIn, actor: Actor = Depends(current_actor),
                      conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """An owner's revenue-share contract with its operator (fixed share or tiers)."""
    return access.register_contract(conn, actor, **body.model_dump())


@router.get("/contracts")
def list_contracts(owner_id: str | None = None, operator_id: str | None = None,
                   actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    scope = scope_of(actor)
    if scope.operator_id and operator_id not in (None, scope.operator_id):
        raise Forbidden("contracts of another operator are outside your scope")
    if scope.owner_id and owner_id not in (None, scope.owner_id):
        raise Forbidden("contracts of another owner are outside your scope")
    q = select(contracts).order_by(contracts.c.valid_from)
    for col, value in (("owner_id", scope.owner_id or owner_id), ("operator_id", scope.operator_id or operator_id)):
        if value:
            q = q.where(contracts.c[col] == value)
    return {"items": [dict(r) for r in conn.execute(q).mappings()]}
