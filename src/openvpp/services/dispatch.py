"""The operator's side of an event: split each acknowledged instruction to devices, collect the
devices' acknowledgements, and re-dispatch the shortfall of devices that fail.

This is the same codebase acting as an operator's technical support system. A device instruction
uses the device protocol of ``docs/telemetry.md`` (``{"id", "kind": "limit", "max_kw"|"min_kw",
"duration_s"}`` on ``openvpp/v1/cmd/{operator}/{device}``); the transport is a ``Sender`` so the
same service runs over MQTT, OCPP or in-process in tests. Device status (online, power, available
flexibility) comes from the live state through a ``Status`` function.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Connection, select

from openvpp.core.errors import Forbidden, InvalidInput, NotFound, Violation
from openvpp.core.ids import new_id
from openvpp.core.timeslots import slot_start_utc
from openvpp.kernels.split import redispatch as redispatch_kernel
from openvpp.kernels.split import split
from openvpp.services import events
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema_events import instructions

#: resource ids → {"online": bool, "power_kw": float, "down_kw": float, "up_kw": float}
Status = Callable[[list[str]], dict[str, dict]]
#: (operator_id, resource_id, payload) → None; publishes one device instruction
Sender = Callable[[str, str, dict], None]
DEVICE_ACK_TIMEOUT = timedelta(seconds=20)
FAILED = ("timeout", "rejected")


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _caps(ev: dict, members: list[dict], status: dict[str, dict], exclude: set[str]) -> np.ndarray:
    key = "down_kw" if ev["direction"] == "down" else "up_kw"
    caps = np.zeros(len(members))
    for i, m in enumerate(members):
        s = status.get(m["resource_id"])
        if s and s.get("online") and m["resource_id"] not in exclude:
            caps[i] = max(float(s.get(key) or 0.0), 0.0)
    return caps


def _device_payload(ev: dict, iid: str, power_kw: float, x_kw: float, end: datetime, now: datetime) -> dict:
    duration = max(int((end - now).total_seconds()), 1)
    if ev["direction"] == "down":
        return {"id": iid, "kind": "limit", "max_kw": round(power_kw - x_kw, 3), "min_kw": None,
                "duration_s": duration}
    return {"id": iid, "kind": "limit", "min_kw": round(power_kw + x_kw, 3), "max_kw": None,
            "duration_s": duration}


def _send_devices(conn: Connection, ev: dict, parent: dict, members: list[dict], x: np.ndarray,
                  status: dict[str, dict], send: Sender, now: datetime) -> list[dict]:
    start = slot_start_utc(ev["day"], parent["slot"])
    end = start + timedelta(minutes=15)
    rows = []
    for i in np.flatnonzero(x > 1e-6):
        rid = members[i]["resource_id"]
        iid = new_id("DIN")
        payload = _device_payload(ev, iid, float(status[rid].get("power_kw") or 0.0), float(x[i]), end, now)
        rows.append({"instruction_id": iid, "event_id": ev["event_id"], "level": "device",
                     "operator_id": parent["operator_id"], "unit_id": parent["unit_id"], "resource_id": rid,
                     "parent_id": parent["instruction_id"], "slot": parent["slot"], "kw": float(x[i]),
                     "state": "sent", "sent_at": now, "ack_deadline": now + DEVICE_ACK_TIMEOUT, "acked_at": None,
                     "reason": None, "payload": payload})
    if rows:
        conn.execute(instructions.insert(), rows)
    for r in rows:
        send(r["operator_id"], r["resource_id"], r["payload"])
    return rows


def dispatch(conn: Connection, actor: Actor, event_id: str, status: Status, send: Sender,
             now: datetime | None = None) -> list[dict]:
    """Split every acknowledged, not yet dispatched operator instruction of the caller's operator over
    its trading unit's online devices (``kernels.split``), and send the device instructions."""
    if actor.role not in ("operator_admin", "operator_engineer") or not actor.operator_id:
        raise Forbidden("dispatch to devices is the operator's work")
    now = now or datetime.now(UTC)
    ev = events.get(conn, event_id)
    parents = events.instructions_of(conn, event_id, "operator", actor.operator_id, state="acked")
    done = {r[0] for r in conn.execute(select(instructions.c.parent_id).where(
        instructions.c.event_id == event_id, instructions.c.level == "device").distinct())}
    out = []
    for parent in parents:
        if parent["instruction_id"] in done:
            continue
        members = events.unit_members(conn, ev, parent["unit_id"])
        st = status([m["resource_id"] for m in members])
        caps = _caps(ev, members, st, set())
        res = split(parent["kw"], caps)
        x, shortfall = res.power_kw, float(res.shortfall_kw)
        rows = _send_devices(conn, ev, parent, members, x, st, send, now)
        audit.record(conn, actor, "instruction.dispatch", "instruction", parent["instruction_id"],
                     after={"devices": len(rows), "kw": parent["kw"], "shortfall_kw": float(shortfall)})
        out += rows
    return out


def device_ack(conn: Connection, ack: dict, operator_id: str, now: datetime | None = None) -> dict:
    """A device's acknowledgement ``{"id", "device", "status": "accepted"|"rejected", "reason"}``."""
    now = now or datetime.now(UTC)
    iid = ack.get("id")
    row = conn.execute(select(instructions).where(instructions.c.instruction_id == iid)).mappings().first()
    if row is None:
        raise NotFound("instruction", iid)
    if row["operator_id"] != operator_id or row["resource_id"] != ack.get("device"):
        raise Forbidden(f"acknowledgement of {iid} from the wrong operator or device")
    if ack.get("status") not in ("accepted", "rejected"):
        raise InvalidInput(Violation("status", "must be accepted or rejected", ack.get("status")))
    if row["state"] != "sent":
        return {"instruction_id": iid, "state": row["state"], "ignored": True}
    late = now > _aware(row["ack_deadline"])
    state = "timeout" if late else ("acked" if ack["status"] == "accepted" else "rejected")
    conn.execute(instructions.update().where(instructions.c.instruction_id == iid).values(
        state=state, acked_at=now, reason="ack after the deadline" if late else ack.get("reason")))
    return {"instruction_id": iid, "state": state}


def redispatch(conn: Connection, actor: Actor, event_id: str, status: Status, send: Sender,
               now: datetime | None = None) -> list[dict]:
    """Re-dispatch the shortfall of failed device instructions (no ack in time, rejected, or the device
    went offline) to the other online devices of the same trading unit, within their residual room."""
    if not actor.operator_id:
        raise Forbidden("re-dispatch is the operator's work")
    now = now or datetime.now(UTC)
    ev = events.get(conn, event_id)
    rows = events.instructions_of(conn, event_id, "device", actor.operator_id)
    live = status(sorted({r["resource_id"] for r in rows}))
    failed = []
    for r in rows:
        overdue = r["state"] == "sent" and now > _aware(r["ack_deadline"])
        offline = r["state"] in ("sent", "acked") and not live.get(r["resource_id"], {}).get("online", False)
        if overdue or offline or r["state"] in FAILED:
            failed.append((r, "no acknowledgement in time" if overdue else "device offline" if offline
                           else r["reason"] or r["state"]))
    if not failed:
        return []
    for r, why in failed:
        conn.execute(instructions.update().where(instructions.c.instruction_id == r["instruction_id"]).values(
            state="replaced", reason=why))
    out = []
    parents = {p["instruction_id"]: p for p in events.instructions_of(conn, event_id, "operator", actor.operator_id)}
    for pid in sorted({r["parent_id"] for r, _ in failed}):
        parent = parents[pid]
        members = events.unit_members(conn, ev, parent["unit_id"])
        ids = [m["resource_id"] for m in members]
        st = status(ids)
        lost = {r["resource_id"] for r, _ in failed if r["parent_id"] == pid}
        power = np.zeros(len(members))          # what each device holds of this instruction
        dead = np.array([rid in lost for rid in ids])
        for r in rows:
            if r["parent_id"] == pid and r["resource_id"] in ids and (
                    r["state"] in ("sent", "acked") or r["resource_id"] in lost):
                power[ids.index(r["resource_id"])] += r["kw"]
        # room left on a device: its capability less what it already gives, and no more than live telemetry
        # says it can still give now
        key = "down" if ev["direction"] == "down" else "up"
        declared = np.array([float(m[f"verified_{key}_kw"] if m[f"verified_{key}_kw"] is not None
                                   else m[f"adjustable_{key}_kw"]) for m in members])
        live_room = _caps(ev, members, st, lost)
        room = np.minimum(np.maximum(declared - power, 0.0), live_room)
        res = redispatch_kernel(power, power + room, dead)
        extra = np.where(dead, 0.0, res.power_kw - power)
        left = float(res.shortfall_kw)
        shortfall = float(power[dead].sum())
        new_rows = _send_devices(conn, ev, parent, members, extra, st, send, now)
        audit.record(conn, actor, "instruction.redispatch", "instruction", pid,
                     after={"replaced": sorted(lost), "shortfall_kw": shortfall, "new": len(new_rows),
                            "uncovered_kw": left})
        out += new_rows
    return out
