"""Events and the operator interface: publish, declare, clear, instructions, acknowledgements, feed."""

from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select

from openvpp.api.deps import current_actor, read_conn, write_conn
from openvpp.api.routing import JSONRoute
from openvpp.core.errors import Forbidden
from openvpp.services import events as svc
from openvpp.services import execution as execution_svc
from openvpp.store.audit import Actor
from openvpp.store.schema_events import events

router = APIRouter(tags=["events"], route_class=JSONRoute)


class EventIn(BaseModel):
    product: str = Field(description="peak_shaving, valley_filling, reactive, reserve, congestion, emergency")
    name: str | None = None
    day: date
    start_slot: int = Field(ge=0, le=95)
    end_slot: int = Field(ge=1, le=96)
    targets_kw: list[float] | float
    scope_node_id: str = "GZ"
    pool_id: str | None = None
    pricing: str = "uniform"
    price_cap_yuan_per_kwh: float | None = None
    declare_deadline: datetime | None = None


@router.post("/events", status_code=201)
def create(body: EventIn, actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """A draft event (dispatcher or city admin); publish it with a transition."""
    fields: dict[str, Any] = body.model_dump(exclude_none=True)
    fields["day"] = body.day.isoformat()
    return svc.create(conn, actor, fields)


@router.get("/events")
def list_events(state: str | None = None, day: date | None = None, actor: Actor = Depends(current_actor),
                conn: Connection = Depends(read_conn)) -> dict:
    """Events (every signed-in role sees published events; drafts are the center's)."""
    q = select(events).order_by(events.c.day.desc(), events.c.start_slot)
    if state:
        q = q.where(events.c.state == state)
    if day:
        q = q.where(events.c.day == day)
    if actor.role not in ("city_admin", "dispatcher", "auditor"):
        q = q.where(events.c.state != "draft")
    return {"items": [dict(r) for r in conn.execute(q).mappings()]}


@router.get("/events/{event_id}")
def get_event(event_id: str, actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    ev = svc.get(conn, event_id)
    if ev["state"] == "draft" and actor.role not in ("city_admin", "dispatcher", "auditor"):
        raise Forbidden("drafts are the center's")
    op = actor.operator_id
    return {**ev, "awards": svc.awarded(conn, event_id, op),
            "instructions": svc.instructions_of(conn, event_id, "operator", op)}


class TransitionIn(BaseModel):
    action: str = Field(description="publish, open, clear, execute, evaluate, settle, cancel")
    reason: str | None = None


@router.post("/events/{event_id}/transitions")
def transition(event_id: str, body: TransitionIn, actor: Actor = Depends(current_actor),
               conn: Connection = Depends(write_conn, scope="function")) -> dict:
    return svc.transition(conn, actor, event_id, body.action, body.reason)


@router.get("/events/{event_id}/execution")
def execution(event_id: str, actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """Target, cleared, instructed, acknowledged and delivered (pre-event reference minus metered, from the
    15-minute rollups) per slot, operator and trading unit; operators see their own rows only."""
    return execution_svc.execution(conn, actor, event_id)


class DeclarationIn(BaseModel):
    unit_id: str = Field(description="trading unit OPERATOR@SUBSTATION")
    quantities_kw: list[float]
    prices_yuan_per_kwh: list[float] | float


@router.post("/events/{event_id}/declarations", status_code=201)
def declare(event_id: str, body: DeclarationIn, actor: Actor = Depends(current_actor),
            conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Declare (or amend, before the deadline) a unit's quantity and price per slot."""
    return svc.declare(conn, actor, event_id, body.unit_id, body.quantities_kw, body.prices_yuan_per_kwh)


@router.get("/events/{event_id}/declarations")
def list_declarations(event_id: str, actor: Actor = Depends(current_actor),
                      conn: Connection = Depends(read_conn)) -> dict:
    rows = svc.latest_declarations(conn, event_id)
    if actor.role not in ("city_admin", "dispatcher", "auditor"):
        rows = [r for r in rows if r["operator_id"] == actor.operator_id]
    return {"items": rows}


@router.get("/operator/feed")
def feed(after: int = Query(0, ge=0), limit: int = Query(500, ge=1, le=5000), actor: Actor = Depends(current_actor),
         conn: Connection = Depends(read_conn)) -> dict:
    """The operator interface's durable feed: events, awards and instructions after sequence ``after``."""
    return svc.feed(conn, actor, after, limit)


class AckIn(BaseModel):
    instruction_ids: list[str] = Field(min_length=1)
    status: str = "accepted"
    reason: str | None = None


@router.post("/operator/acks")
def acknowledge(body: AckIn, actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Acknowledge instructions of the city (within 30 s of sending)."""
    return {"items": svc.acknowledge(conn, actor, body.instruction_ids, body.status, body.reason)}
