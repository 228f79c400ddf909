"""Live monitoring: current power and flexibility by grid level and operator, and an SSE stream.

Every answer is fenced to the caller's scope (``services.scope.scope_of``): an operator sees the
totals of its own devices only, an owner those of its own resources. Totals come from the live
service's last snapshot (``services.live``): a tenant's are summed in a worker thread, never on the
event loop, and every answer of one tick (its ``tick``) agrees with the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import Connection

from openvpp.api.deps import current_actor, oauth2, read_conn
from openvpp.api.routes.telemetry import runtime
from openvpp.api.routing import JSONRoute
from openvpp.core.errors import InvalidInput, NotFound, Violation
from openvpp.services.live import check_level, group_exists
from openvpp.services.scope import scope_of
from openvpp.store.audit import Actor

router = APIRouter(prefix="/live", tags=["live"], route_class=JSONRoute)
DEFAULT_STREAM_LEVELS = ("city", "district", "operator")
MAX_DEVICES = 1000


async def _live(request: Request):
    return await (await runtime(request)).live_service()


@router.get("/summary")
async def summary(request: Request, actor: Actor = Depends(current_actor)) -> dict:
    """City totals of the caller's scope: power, available up/down flexibility, online/offline devices."""
    scope = scope_of(actor)
    live = await _live(request)
    # city-wide: the totals of the last recompute (every few seconds, as the stream); a scope: its own
    totals = await live.totals(scope, None if scope.city_wide else ("city",))
    return totals.summary() | {"tick": totals.tick}


@router.get("/nodes/{level}")
async def nodes(level: str, request: Request, parent: str | None = None,
                parent_level: str | None = Query(None, description="level of `parent` (default: the level above)"),
                actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """Totals per group of ``level`` (city, district, substation, feeder, transformer_area, operator, pools),
    optionally only the children of ``parent``: an empty list for a parent with no reporting devices,
    422 naming ``parent`` for an id that is no group of ``parent_level``.
    Example: /api/v1/live/nodes/feeder?parent=GZ-HZ-S01"""
    scope = scope_of(actor)
    live = await _live(request)
    snap = live.snapshot   # the groups of the tick answered, even if the registry reloads meanwhile
    check_level(level, snap.state)
    keep = None
    if parent is not None:
        order = ["city", "district", "substation", "feeder", "transformer_area"]
        if parent_level is None:
            if level not in order[1:]:
                raise InvalidInput(Violation("parent_level", "is required for this level", None))
            parent_level = order[order.index(level) - 1]
        check_level(parent_level, snap.state, "parent_level")
        keep = snap.state.children(level, parent_level, parent)
        if keep is None:   # no device under it: an empty node, or no such node at all
            if not await asyncio.to_thread(group_exists, conn, parent_level, parent):
                raise InvalidInput(Violation("parent", f"is not a known {parent_level}", parent))
            return {"at": snap.at.isoformat(), "scope": scope.label(), "tick": snap.tick,
                    "level": level, "parent": parent, "rows": []}
    totals = await live.totals(scope, (level,), snap)
    return {"at": totals.at.isoformat(), "scope": totals.scope, "tick": totals.tick, "level": level,
            "parent": parent, "rows": totals.rows(level, keep)}


@router.get("/devices")
async def devices(request: Request, ids: str = Query(..., description=f"comma-separated device ids, at most "
                                                     f"{MAX_DEVICES}", examples=["R0000001,R0000002"]),
                  actor: Actor = Depends(current_actor)) -> dict:
    """Many devices' last points at once (as ``/devices/{id}``, in the order asked). Ids unknown or
    outside your scope are listed under ``missing`` (the two look the same)."""
    wanted = list(dict.fromkeys(x.strip() for x in ids.split(",")))
    if "" in wanted:
        raise InvalidInput(Violation("ids", "must be comma-separated device ids without empty entries", ids[:200]))
    if len(wanted) > MAX_DEVICES:
        raise InvalidInput(Violation("ids", f"at most {MAX_DEVICES} devices per request", len(wanted)))
    scope = scope_of(actor)
    live = await _live(request)
    state = live.state
    items, missing = state.devices(wanted, int(live.clock() * 1000), state.mask_of(scope))
    return {"items": items, "missing": missing}


@router.get("/devices/{device_id}")
async def device(device_id: str, request: Request, actor: Actor = Depends(current_actor)) -> dict:
    """One device's last point, online flag, available flexibility and expected reporting interval
    (``interval_s``: it is offline after ``OPENVPP_TELEMETRY_OFFLINE_INTERVALS`` of them)."""
    scope = scope_of(actor)
    live = await _live(request)
    state = live.state
    items, missing = state.devices([device_id], int(live.clock() * 1000), state.mask_of(scope))
    if missing:
        raise NotFound("device", device_id)   # outside the scope looks the same as absent
    return items[0]


async def stream_actor(request: Request, access_token: str | None = Query(
                           None, description="the bearer token, for browsers' EventSource, which cannot send headers"),
                       token: str | None = Depends(oauth2)) -> Actor:
    return await current_actor(request, token or access_token)


@router.get("/stream", response_class=EventSourceResponse)
async def stream(request: Request, levels: str = Query(",".join(DEFAULT_STREAM_LEVELS)),
                 max_events: int = Query(0, ge=0, description="stop after this many events (0 = never)"),
                 actor: Actor = Depends(stream_actor)) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: one ``live`` event per recompute (every few seconds) with the totals of
    ``levels`` in the caller's scope. In a browser:
    ``new EventSource('/api/v1/live/stream?access_token=' + token)``."""
    scope = scope_of(actor)
    live = await _live(request)
    wanted = tuple(x for x in levels.split(",") if x)
    for level in wanted:
        check_level(level, live.snapshot.state)
    tick, sent = -1, 0
    while True:
        if tick >= 0:
            await live.wait_tick(tick, 15.0)
            if await request.is_disconnected():
                return
        snap = live.snapshot
        if any(lv not in snap.state.levels for lv in wanted):   # e.g. the last pool was deleted
            return
        totals = await live.totals(scope, wanted, snap)
        tick = totals.tick
        data = {"at": totals.at.isoformat(), "scope": totals.scope, "tick": tick,
                "levels": {lv: totals.rows(lv) for lv in wanted}}
        yield ServerSentEvent(data=data, event="live", id=str(tick))
        sent += 1
        if max_events and sent >= max_events:
            return
        await asyncio.sleep(0)
