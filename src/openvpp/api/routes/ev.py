"""EV charging and V2G over HTTP: the pilot report, V2G statement lines, day-ahead schedules, charge points.

* ``GET /api/v1/ev/pilot?year=2025`` — valley shares, V2G project power and energy, battery
  indicators, per city, operator and project, against the rule set's ``[ev_pilot]`` targets.
* ``GET /api/v1/ev/v2g/statement?year=2025`` — V2G statement lines (energy value and subsidy),
  money as strings of Decimal yuan.
* ``POST /api/v1/ev/schedule`` — a day-ahead orderly-charging (or V2G) schedule of the sessions given.
* ``GET /api/v1/ev/charge-points`` and ``/ev/sessions`` — what the OCPP central system knows.
* ``POST /api/v1/ev/id-tags`` and ``GET /api/v1/ev/id-tags`` — the ID tags (RFID cards, app tokens)
  the central system authorizes: Accepted, Blocked or Expired; any other tag is Invalid.

Operators and owners see their own piles only (tenant scope).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select

from openvpp.api.deps import current_actor, read_conn, write_conn
from openvpp.api.routing import JSONRoute
from openvpp.core.errors import InvalidInput, Violation
from openvpp.model.ev import Sessions, Stations
from openvpp.services import ev_charging, ev_pilot
from openvpp.services.scope import scope_of
from openvpp.store.audit import Actor
from openvpp.store.schema import resources
from openvpp.store.schema_ev import ev_charge_points, ev_id_tags, ev_sessions

router = APIRouter(prefix="/ev", tags=["ev"], route_class=JSONRoute)
MAX_SESSIONS = 20_000


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@router.get("/pilot")
def pilot(year: int = Query(default_factory=lambda: datetime.now(UTC).year, ge=2000, le=2100),
          actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """The V2G pilot report of a year (NDRC 718号 targets from the rule set)."""
    return ev_pilot.pilot_report(conn, year, scope_of(actor))


@router.get("/v2g/statement")
def v2g_statement(year: int = Query(..., ge=2000, le=2100), rate: str | None = Query(None, description="subsidy yuan/kWh"),
                  already_paid: str = Query("0"), actor: Actor = Depends(current_actor),
                  conn: Connection = Depends(read_conn)) -> dict:
    """V2G statement lines of the completed sessions of a year: discharge value and subsidy (pro rata over budget)."""
    return _plain(ev_pilot.v2g_statement_lines(conn, year, scope_of(actor), subsidy_yuan_per_kwh=rate,
                                               already_paid_yuan=already_paid))


@router.post("/schedule")
def schedule(body: dict[str, Any] = Body(..., examples=[{
        "start": "2025-07-15T12:00:00+08:00", "solver": "heuristic",
        "stations": [{"capacity_kw": 22.0}],
        "sessions": [{"station": 0, "arrival": 24, "departure": 76, "energy_kwh": 20, "max_charge_kw": 7}]}]),
        actor: Actor = Depends(current_actor)) -> dict:
    """Schedule sessions (slots of 15 minutes from ``start``) at least cost under TOU within station limits.

    Sessions: station, arrival, departure (slot indices), energy_kwh, max_charge_kw and optionally
    max_discharge_kw, battery_kwh, soc_arrival, soc_min, soc_max, v2g, session_id. ``solver``:
    heuristic | lp | v2g. Infeasible sessions come back flagged with their reasons.
    """
    rows = body.get("sessions")
    if not isinstance(rows, list) or not rows:
        raise InvalidInput(Violation("sessions", "must be a non-empty list of sessions", type(rows).__name__))
    if len(rows) > MAX_SESSIONS:
        raise InvalidInput(Violation("sessions", f"at most {MAX_SESSIONS} per request", len(rows)))
    try:
        start = datetime.fromisoformat(str(body.get("start")))
        assert start.tzinfo is not None
    except (ValueError, AssertionError):
        raise InvalidInput(Violation("start", "must be an ISO 8601 time with a zone", body.get("start"))) from None
    horizon = int(body.get("horizon", 96))
    solver = str(body.get("solver", "heuristic"))
    if solver not in ("heuristic", "lp", "v2g") or not 1 <= horizon <= 4 * 96:
        raise InvalidInput(Violation("solver/horizon", "solver heuristic|lp|v2g, horizon 1..384 slots",
                                     f"{solver}/{horizon}"))
    fields = ("station", "arrival", "departure", "energy_kwh", "max_charge_kw", "max_discharge_kw", "battery_kwh",
              "soc_arrival", "soc_min", "soc_max", "v2g", "session_id")
    defaults = {"station": -1, "max_discharge_kw": 0.0, "battery_kwh": np.inf, "soc_arrival": 0.0, "soc_min": 0.0,
                "soc_max": 1.0, "v2g": False}
    cols: dict[str, list] = {f: [] for f in fields}
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise InvalidInput(Violation(f"sessions[{i}]", "must be an object", type(r).__name__))
        for f in fields:
            v = r.get(f, defaults.get(f, f"S{i}" if f == "session_id" else None))
            if v is None:
                raise InvalidInput(Violation(f"sessions[{i}].{f}", "is required", None))
            cols[f].append(v)
    try:
        sessions = Sessions(**{f: np.asarray(cols[f], dtype=object if f == "session_id" else float)
                               for f in fields if f != "v2g"}, v2g=np.asarray(cols["v2g"], bool))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(Violation("sessions", f"numbers expected: {exc}", None)) from None
    st = body.get("stations") or []
    stations = Stations([float(s.get("capacity_kw", np.inf)) for s in st]) if st else None
    if stations is None:
        sessions.station[:] = -1
    elif (sessions.station >= stations.m).any():
        raise InvalidInput(Violation("sessions[].station", f"must index stations (0..{stations.m - 1}) or be -1",
                                     int(sessions.station.max())))
    out = ev_charging.day_ahead(sessions, stations, None, start, horizon, "lp" if solver == "lp" else "heuristic",
                                v2g=solver == "v2g")
    return {**out.summary(sessions), "power_kw": np.round(out.schedule.power_kw, 3).tolist(),
            "price_yuan_per_kwh": np.round(out.price_yuan_per_kwh, 5).tolist()}


@router.get("/charge-points")
def charge_points(actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn),
                  limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> dict:
    """OCPP charge points known to the central system, with connection and connector status."""
    scope = scope_of(actor)
    q = select(ev_charge_points).join(resources, resources.c.resource_id == ev_charge_points.c.charge_point_id)
    if scope.operator_id:
        q = q.where(resources.c.operator_id == scope.operator_id)
    if scope.owner_id:
        q = q.where(resources.c.owner_id == scope.owner_id)
    rows = conn.execute(q.order_by(ev_charge_points.c.charge_point_id).limit(limit).offset(offset)).mappings()
    return {"items": [_plain(dict(r)) for r in rows]}


@router.get("/sessions")
def sessions_list(charge_point_id: str | None = None, state: str | None = None,
                  limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                  actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """Charging sessions with their energy charged and discharged per TOU period."""
    scope = scope_of(actor)
    q = select(ev_sessions).join(resources, resources.c.resource_id == ev_sessions.c.charge_point_id)
    if scope.operator_id:
        q = q.where(resources.c.operator_id == scope.operator_id)
    if scope.owner_id:
        q = q.where(resources.c.owner_id == scope.owner_id)
    if charge_point_id:
        q = q.where(ev_sessions.c.charge_point_id == charge_point_id)
    if state:
        q = q.where(ev_sessions.c.state == state)
    rows = conn.execute(q.order_by(ev_sessions.c.started_at.desc()).limit(limit).offset(offset)).mappings()
    return {"items": [_plain(dict(r)) for r in rows]}


class IdTagIn(BaseModel):
    id_tag: str = Field(min_length=1, max_length=64)
    status: str = Field("Accepted", description="Accepted, Blocked or Expired")
    operator_id: str | None = None
    expires_at: datetime | None = None
    note: str | None = None


@router.post("/id-tags", status_code=201)
def register_id_tag(body: IdTagIn, actor: Actor = Depends(current_actor),
                    conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Register or change an ID tag (city admin: any; operator admin: its own operator's)."""
    return _plain(ev_charging.register_tag(conn, actor, body.id_tag, body.status, body.operator_id, body.expires_at,
                                           body.note))


@router.get("/id-tags")
def list_id_tags(actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """The registered ID tags the caller may see (an operator: its own)."""
    q = select(ev_id_tags).order_by(ev_id_tags.c.id_tag)
    if actor.operator_id:
        q = q.where(ev_id_tags.c.operator_id == actor.operator_id)
    elif actor.role not in ("city_admin", "dispatcher", "auditor"):
        return {"items": []}
    return {"items": [_plain(dict(r)) for r in conn.execute(q).mappings()]}
