"""Resource pools per scenario (peak shaving, valley filling, emergency, reactive, reserve,
local congestion), defined as rules over the registry and evaluated, never hand-listed."""

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from sqlalchemy import Connection

from openvpp.api.deps import current_actor, read_conn, write_conn
from openvpp.api.routing import JSONRoute
from openvpp.core.errors import InvalidInput, Violation
from openvpp.model.roles import Perm
from openvpp.services import ev_charging, pools, v2g
from openvpp.services.scope import require
from openvpp.store.audit import Actor

router = APIRouter(prefix="/pools", tags=["pools"], route_class=JSONRoute)


def _engine(request: Request, conn: Connection, pool_ids: list[str]) -> pools.PoolEngine:
    """The process's shared pool engine (``app.state.pool_engine``), current with the database."""
    cache = getattr(request.app.state, "pool_engine", None)
    if cache is None:
        cache = request.app.state.pool_engine = pools.PoolCache()
    return cache.get(conn, pool_ids)


@router.get("/presets")
def presets(actor: Actor = Depends(current_actor)) -> dict:
    """The scenario presets (data in model/pool_presets.toml): the floor every pool of a scenario keeps."""
    return {"items": pools.list_presets()}


@router.get("")
def list_pools(request: Request, scenario: str | None = None, node_id: str | None = None, evaluate: bool = False,
               actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """Pools you may see; with ``evaluate=true`` each with its totals (up/down kW, energy, count)."""
    rows = pools.list_pools(conn, actor, scenario, node_id)
    if evaluate and rows:
        ids = [r["pool_id"] for r in rows]
        totals = {t["pool_id"]: t for t in pools.evaluate(_engine(request, conn, ids), ids)}
        rows = [{**r, "totals": totals.get(r["pool_id"])} for r in rows]
    return {"items": rows}


@router.post("", status_code=201)
def create(body: dict[str, Any] = Body(..., examples=[{"scenario": "local_congestion", "name": "Haizhu T001",
                                                      "rules": {"node_id": "GZ-HZ-S01-F01-T001"}}]),
           actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Define a pool: a scenario and rules (types, response modes, max latency, min duration, grid node,
    minimum verified grade, operators, direction)."""
    return pools.create_pool(conn, actor, body)


@router.post("/defaults", status_code=201)
def defaults(actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Create the preset pools at city level and per district (idempotent)."""
    require(actor, Perm.APPROVE_RESOURCES)
    return {"items": pools.default_pools(conn, actor)}


@router.get("/{pool_id}")
def get(request: Request, pool_id: str, members_limit: int = Query(0, ge=0, le=1000),
        members_offset: int = Query(0, ge=0),
        actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """A pool with its current totals and, on request, a page of its members."""
    row = pools.get_pool(conn, pool_id, actor)
    total = pools.evaluate(_engine(request, conn, [pool_id]), [pool_id], members_limit=members_limit,
                           members_offset=members_offset)[0]
    return {**row, "totals": total}


@router.patch("/{pool_id}")
def update(pool_id: str, body: dict[str, Any] = Body(...), reason: str | None = None,
           actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    return pools.update_pool(conn, actor, pool_id, body, reason)


@router.delete("/{pool_id}", status_code=204)
def delete(pool_id: str, reason: str | None = None, actor: Actor = Depends(current_actor),
           conn: Connection = Depends(write_conn, scope="function")) -> None:
    pools.delete_pool(conn, actor, pool_id, reason)


@router.get("/{pool_id}/v2g")
def v2g_view(request: Request, pool_id: str, start: datetime | None = None,
             start_slot: int = Query(0, ge=0, le=95), end_slot: int = Query(4, ge=1, le=96),
             actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """The pool's totals with its V2G chargers counted from the envelope of the vehicles plugged in now
    (open OCPP sessions, day-ahead V2G schedule from ``start``, default the current 15-minute slot) over
    slots ``[start_slot, end_slot)`` of that day-long horizon, instead of the chargers' nameplate."""
    pools.get_pool(conn, pool_id, actor)             # visible to the caller, or 404/403
    if start is None:
        start = ev_charging.slot_start(datetime.now(UTC))
    elif start.tzinfo is None:
        raise InvalidInput(Violation("start", "must carry a time zone", start.isoformat()))
    engine = _engine(request, conn, [pool_id])
    return v2g.pool_envelope_view(conn.engine, engine, pool_id, start, start_slot, end_slot)
