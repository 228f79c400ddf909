"""Telemetry over HTTP: batches from operators' technical support systems, counters, gaps, series.

``POST /api/v1/telemetry`` takes the same JSON batch as the MQTT topic (docs/telemetry.md) and
goes through the same service function; the API key (``X-API-Key``) decides which operator's
devices the sender may report.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError

from openvpp.api.deps import current_actor, read_conn
from openvpp.api.routing import JSONRoute
from openvpp.bus import Bus, make_bus
from openvpp.core.errors import Forbidden, InvalidInput, NotFound, Violation
from openvpp.core.timeslots import TZ
from openvpp.services import telemetry
from openvpp.services.scope import Scope, scope_of
from openvpp.store import timeseries
from openvpp.store.audit import Actor
from openvpp.store.db import get_engine
from openvpp.store.schema import resources

router = APIRouter(prefix="/telemetry", tags=["telemetry"], route_class=JSONRoute)
MAX_BODY = 16 << 20


class Runtime:
    """Per-app telemetry objects: the bus, the ingest service, the live service (started lazily),
    and the rollup timer.

    The timer (``telemetry.upkeep`` every ``OPENVPP_TELEMETRY_ROLLUP_REFRESH_S``, 5 s; 0 = off) rolls
    up what HTTP pushes (and any other writer) left dirty, so a deployment without an MQTT worker
    needs no other process for its rollups. It starts with the runtime, at the first telemetry or
    live request. Several API processes may run it: each minute is taken by one refresh.
    """

    def __init__(self, settings):
        self.settings = settings
        self.bus: Bus | None = None
        self.service: telemetry.TelemetryService | None = None
        self.live = None
        self.upkeep: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> Runtime:
        if self.service is not None:
            return self
        async with self._lock:
            if self.service is None:
                self.bus = await make_bus(self.settings.bus_url).start()
                service = telemetry.TelemetryService(get_engine(self.settings.database_url),
                                                     publish=self.bus.publish_threadsafe)
                every = service.config.rollup_refresh_s
                if every > 0:
                    self.upkeep = asyncio.create_task(telemetry.upkeep(service, refresh_every_s=every, who="api"))
                self.service = service
        return self

    async def live_service(self):
        from openvpp.services.live import LiveService

        await self.start()
        if self.live is None:
            async with self._lock:
                if self.live is None:
                    self.live = await LiveService(self.service.engine, self.bus, self.service.config).start()
        return self.live


async def runtime(request: Request) -> Runtime:
    rt = getattr(request.app.state, "telemetry", None)
    if rt is None:
        rt = request.app.state.telemetry = Runtime(request.app.state.settings)
    return await rt.start()


@router.post("")
async def push(request: Request, actor: Actor = Depends(current_actor)) -> dict:
    """Store a batch of points (row or column form). Returns accepted/duplicate/rejected counts.

    Example: ``curl -H 'X-API-Key: ovk_...' -d '{"gw":"S1","points":[{"d":"R1","t":1764000000000,"p":12.5}]}'
    http://127.0.0.1:8000/api/v1/telemetry``
    """
    operator_id = telemetry.sender_operator(actor)
    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidInput(Violation("body", f"must be at most {MAX_BODY} bytes", len(body)))
    rt = await runtime(request)

    def work() -> dict:
        try:
            _gw, points = telemetry.decode(body)
        except InvalidInput as exc:   # refused whole: counted and logged like an MQTT message
            telemetry.log.warning("telemetry http: refused message from %s: %s", actor.name, exc)
            try:
                rt.service.refuse("http")
            except SQLAlchemyError as db_exc:   # the sender still gets its 422
                telemetry.log.warning("telemetry http: the refusal was not counted: %s", db_exc)
            raise
        return rt.service.ingest(points, "http", telemetry.source_label(actor.name, "http"),
                                 operator_id=operator_id).as_dict()

    return await run_in_threadpool(work)


def _require_city_reader(actor: Actor) -> None:
    if not scope_of(actor).city_wide:
        raise Forbidden("city-wide telemetry is for the management center's roles")


@router.get("/stats")
def stats(days: int = Query(1, ge=1, le=400), actor: Actor = Depends(current_actor),
          conn: Connection = Depends(read_conn)) -> dict:
    """Accepted, duplicate and rejected points per local day, ingest path and reason."""
    _require_city_reader(actor)
    since = (datetime.now(UTC).astimezone(TZ) - timedelta(days=days - 1)).date()
    rows = timeseries.read_counters(conn, since)
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["reason"]] = totals.get(r["reason"], 0) + int(r["n"])
    return {"since": since.isoformat(), "totals": totals, "rows": rows, "reasons": list(telemetry.REASONS)}


@router.get("/gaps")
def gaps(limit: int = Query(100, ge=1, le=1000), actor: Actor = Depends(current_actor),
         conn: Connection = Depends(read_conn)) -> list[dict]:
    """Interruptions of the ingest (broker or database unreachable), newest first."""
    _require_city_reader(actor)
    return timeseries.read_gaps(conn, limit)


def _check_device(conn: Connection, scope: Scope, device_id: str) -> None:
    row = conn.execute(select(resources.c.operator_id, resources.c.owner_id)
                       .where(resources.c.resource_id == device_id)).first()
    if row is None or (scope.operator_id and row[0] != scope.operator_id) \
            or (scope.owner_id and row[1] != scope.owner_id):
        raise NotFound("device", device_id)   # outside the scope looks the same as absent


def _window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = end or datetime.now(UTC)
    start = start or end - timedelta(hours=24)
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput(Violation("start", "timestamps need a zone (e.g. 2025-11-24T08:00:00+08:00)", None))
    if end - start > timedelta(days=31):
        raise InvalidInput(Violation("end", "a window is at most 31 days", None))
    return start, end


@router.get("/devices/{device_id}")
def device_series(device_id: str, step: int = Query(0, description="0 = raw points, 60 or 900 = rollup"),
                  start: datetime | None = None, end: datetime | None = None,
                  actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """Raw points or 1-min / 15-min rollups of one device within the caller's scope."""
    _check_device(conn, scope_of(actor), device_id)
    s, e = _window(start, end)
    if step == 0:
        return {"device_id": device_id, "step": 0, "points": timeseries.read_raw(conn, [device_id], s, e)}
    if step not in timeseries.STEPS_S:
        raise InvalidInput(Violation("step", "must be 0, 60 or 900", step))
    return {"device_id": device_id, "step": step, "buckets": timeseries.read_rollup(conn, step, [device_id], s, e)}


@router.get("/groups/{kind}/{group_id}")
def group_series(kind: str, group_id: str, step: int = 900, start: datetime | None = None,
                 end: datetime | None = None, actor: Actor = Depends(current_actor),
                 conn: Connection = Depends(read_conn)) -> dict:
    """Rollups of a grid node (any level), an operator or a pool. Operators see their own totals only."""
    scope = scope_of(actor)
    if not scope.city_wide and not (kind == "operator" and group_id == scope.operator_id):
        raise Forbidden("a tenant sees the totals of its own operator only")
    if not allowed_kind(kind):
        raise InvalidInput(Violation("kind", f"must be one of {', '.join(timeseries.GROUP_KINDS)} or pool", kind))
    if step not in timeseries.STEPS_S:
        raise InvalidInput(Violation("step", "must be 60 or 900", step))
    s, e = _window(start, end)
    return {"kind": kind, "group_id": group_id, "step": step,
            "buckets": timeseries.read_group_rollup(conn, step, kind, [group_id], s, e)}


def allowed_kind(kind: str) -> bool:
    return kind in timeseries.GROUP_KINDS or kind == "pool"

