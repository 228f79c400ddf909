"""The operator's side of an event: split each acknowledged instruction to devices, collect the
devices' acknowledgements, and re-dispatch the shortfall of devices that fail.

This is the same codebase acting as an operator's technical support system. A device instruction
uses the device protocol of ``docs/telemetry.md`` (``{"id", "kind": "limit", "max_kw"|"min_kw",
"duration_s"}`` on ``openvpp/v1/cmd/{operator}/{device}``); the transport is a ``Sender`` so the
same service runs over MQTT, OCPP or in-process in tests. Device status (online, power, available
flexibility) comes from the live state through a ``Status`` function.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, bindparam, select

from openvpp.core.errors import Forbidden, InvalidInput, NotFound, Violation
from openvpp.core.timeslots import slot_start_utc
from openvpp.kernels.split import redispatch as redispatch_kernel
from openvpp.kernels.split import split
from openvpp.services import events
from openvpp.store import audit, bulk
from openvpp.store.audit import Actor
from openvpp.store.schema import audit_log
from openvpp.store.schema_events import instructions

#: resource ids → {"online": bool, "power_kw": float, "down_kw": float, "up_kw": float}
Status = Callable[[list[str]], dict[str, dict]]
#: (operator_id, resource_id, payload) → None; publishes one device instruction
Sender = Callable[[str, str, dict], None]
DEVICE_ACK_TIMEOUT = timedelta(seconds=20)
FAILED = ("timeout", "rejected")
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ALPHABET_BYTES = np.frombuffer(_ALPHABET.encode(), np.uint8)
_CHUNK = 2000          # ids per IN (...) list


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


def _device_payload(ev: dict, iid: str, power_kw: float, x_kw: float, start: datetime, end: datetime,
                    now: datetime) -> dict:
    """A limit for the slot ``[start, end)`` (from ``now`` when the slot has begun: a re-dispatch),
    relative to the device's power when it was split. Each slot's instruction carries its own start,
    so a device holds the next slot's limit in its schedule until that slot begins."""
    begin = max(start, now)
    duration = max(int((end - begin).total_seconds()), 1)
    when = {"start": int(begin.timestamp() * 1000), "duration_s": duration}
    if ev["direction"] == "down":
        return {"id": iid, "kind": "limit", "max_kw": round(power_kw - x_kw, 3), "min_kw": None, **when}
    return {"id": iid, "kind": "limit", "min_kw": round(power_kw + x_kw, 3), "max_kw": None, **when}


def new_ids(prefix: str, n: int) -> list[str]:
    """``n`` ids in the format of ``core.ids.new_id`` (``PREFIX-`` + 18 base32 digits of millisecond time
    << 40 | 40 bits) at once: the 40 bits count up from a random start, so the batch is unique and in
    order (``new_id`` one by one costs ~5-10 us each, a second per 100,000 device instructions)."""
    ms = int(time.time() * 1000)
    head = f"{prefix}-" + "".join(_ALPHABET[(ms >> (5 * k)) & 31] for k in range(9, -1, -1))
    low = (np.uint64(secrets.randbits(40)) + np.arange(n, dtype=np.uint64)) & np.uint64((1 << 40) - 1)
    shifts = np.arange(7, -1, -1, dtype=np.uint64) * np.uint64(5)
    digits = _ALPHABET_BYTES[((low[:, None] >> shifts) & np.uint64(31)).astype(np.intp)]
    return [head + t for t in np.ascontiguousarray(digits).view("S8").ravel().astype(str).tolist()]


def _device_rows(ev: dict, parent: dict, members: list[dict], x: np.ndarray, status: dict[str, dict],
                 now: datetime) -> list[dict]:
    """The device instructions of one operator instruction: one per device with a share > 0."""
    start = slot_start_utc(ev["day"], parent["slot"])
    end = start + timedelta(minutes=15)
    take = np.flatnonzero(x > 1e-6)
    deadline = now + DEVICE_ACK_TIMEOUT
    rows = []
    for i, iid in zip(take.tolist(), new_ids("DIN", len(take)), strict=True):
        rid = members[i]["resource_id"]
        payload = _device_payload(ev, iid, float(status[rid].get("power_kw") or 0.0), float(x[i]), start, end, now)
        rows.append({"instruction_id": iid, "event_id": ev["event_id"], "level": "device",
                     "operator_id": parent["operator_id"], "unit_id": parent["unit_id"], "resource_id": rid,
                     "parent_id": parent["instruction_id"], "slot": parent["slot"], "kw": float(x[i]),
                     "state": "sent", "sent_at": now, "ack_deadline": deadline, "acked_at": None,
                     "reason": None, "payload": payload})
    return rows


def _store_device_rows(conn: Connection, rows: list[dict]) -> None:
    """Insert device instructions: one COPY on PostgreSQL, one executemany elsewhere."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(instructions.insert(), rows)
        return
    ts = pa.timestamp("us", "UTC")
    strings = ("instruction_id", "event_id", "level", "operator_id", "unit_id", "resource_id", "parent_id", "state")
    cols = {c: pa.array([r[c] for r in rows], pa.string()) for c in strings}
    cols["slot"] = pa.array([r["slot"] for r in rows], pa.int32())
    cols["kw"] = pa.array([r["kw"] for r in rows], pa.float64())
    cols["sent_at"] = pa.array([r["sent_at"] for r in rows], ts)
    cols["ack_deadline"] = pa.array([r["ack_deadline"] for r in rows], ts)
    cols["payload"] = pa.array([json.dumps(r["payload"]) for r in rows], pa.string())
    bulk.insert_arrow(conn, instructions, pa.table(cols))


def _audit_many(conn: Connection, actor: Actor, action: str, entries: list[tuple[str, dict]]) -> None:
    """``audit.record`` for many instructions in one statement: (instruction id, after) each."""
    if entries:
        at = datetime.now(UTC)
        conn.execute(audit_log.insert(), [
            {"at": at, "actor": actor.name, "actor_role": actor.role, "action": action, "entity": "instruction",
             "entity_id": str(eid), "before": None, "after": audit._plain(after), "reason": None}
            for eid, after in entries])


def _member_status(members_by_unit: dict[str, list[dict]], units: list[str], status: Status) -> dict[str, dict]:
    """One status call for the devices of every unit concerned."""
    ids = sorted({m["resource_id"] for u in units for m in members_by_unit.get(u, [])})
    return status(ids) if ids else {}


def dispatch(conn: Connection, actor: Actor, event_id: str, status: Status, send: Sender,
             now: datetime | None = None) -> list[dict]:
    """Split every acknowledged, not yet dispatched operator instruction of the caller's operator over
    its trading unit's online devices (``kernels.split``), and send the device instructions.

    One query for the members of every unit, one status call, one bulk insert of the device
    instructions and one of their audit entries, then the sends (after the rows exist, so an early
    acknowledgement finds its instruction)."""
    if actor.role not in ("operator_admin", "operator_engineer") or not actor.operator_id:
        raise Forbidden("dispatch to devices is the operator's work")
    now = now or datetime.now(UTC)
    ev = events.get(conn, event_id)
    parents = events.instructions_of(conn, event_id, "operator", actor.operator_id, state="acked")
    done = {r[0] for r in conn.execute(select(instructions.c.parent_id).where(
        instructions.c.event_id == event_id, instructions.c.level == "device",
        instructions.c.operator_id == actor.operator_id).distinct())}
    parents = [p for p in parents if p["instruction_id"] not in done]
    if not parents:
        return []
    units = sorted({p["unit_id"] for p in parents})
    members_by_unit = events.units_members(conn, ev, units)
    st = _member_status(members_by_unit, units, status)
    out: list[dict] = []
    notes: list[tuple[str, dict]] = []
    for parent in parents:
        members = members_by_unit.get(parent["unit_id"], [])
        caps = _caps(ev, members, st, set())
        res = split(parent["kw"], caps)
        x, shortfall = res.power_kw, float(res.shortfall_kw)
        rows = _device_rows(ev, parent, members, x, st, now)
        notes.append((parent["instruction_id"], {"devices": len(rows), "kw": parent["kw"],
                                                 "shortfall_kw": float(shortfall)}))
        out += rows
    _store_device_rows(conn, out)
    _audit_many(conn, actor, "instruction.dispatch", notes)
    for r in out:
        send(r["operator_id"], r["resource_id"], r["payload"])
    return out


def device_acks(conn: Connection, acks: list[dict], operator_id: str,
                received_at: list[datetime] | None = None, sent_at: list[datetime] | None = None) -> list[dict]:
    """Many device acknowledgements ``{"id", "device", "status": "accepted"|"rejected", "reason"}`` at
    once (``received_at``: when each arrived; default now): one read and one write per batch.

    ``sent_at``, when the transport knows it, is when each instruction actually left for its device:
    the row's ``sent_at`` and ``ack_deadline`` are set from it, so the device's acknowledgement
    timeout runs from its own transmission, not from the dispatch of the whole batch (with 100,000
    devices the last instructions leave tens of seconds after the first).

    Each answer is ``{"instruction_id", "state"}``, with ``"ignored": True`` when the instruction was
    no longer waiting, or ``"error"`` (``not_found``, ``forbidden``, ``invalid``) and ``"detail"`` when
    the acknowledgement is refused: one device's bad message does not hold up the others'."""
    now = datetime.now(UTC)
    at = received_at if received_at is not None else [now] * len(acks)
    ids = list(dict.fromkeys(str(a.get("id")) for a in acks if isinstance(a, dict)))
    cols = (instructions.c.instruction_id, instructions.c.operator_id, instructions.c.resource_id,
            instructions.c.state, instructions.c.ack_deadline)
    found: dict[str, tuple] = {}
    for k in range(0, len(ids), _CHUNK):
        for r in conn.execute(select(*cols).where(instructions.c.instruction_id.in_(ids[k:k + _CHUNK]))):
            found[r[0]] = tuple(r)
    out: list[dict] = []
    updates: dict[str, tuple] = {}
    sent = sent_at if sent_at is not None else [None] * len(acks)
    for ack, t, t_sent in zip(acks, at, sent, strict=True):
        ack = ack if isinstance(ack, dict) else {}
        iid = ack.get("id")
        row = found.get(str(iid)) if iid is not None else None
        if row is None:
            out.append({"instruction_id": iid, "error": "not_found", "detail": ("instruction", iid)})
            continue
        if row[1] != operator_id or row[2] != ack.get("device"):
            out.append({"instruction_id": iid, "error": "forbidden",
                        "detail": f"acknowledgement of {iid} from the wrong operator or device"})
            continue
        if ack.get("status") not in ("accepted", "rejected"):
            out.append({"instruction_id": iid, "error": "invalid",
                        "detail": Violation("status", "must be accepted or rejected", ack.get("status"))})
            continue
        if row[3] != "sent" or iid in updates:
            state = updates[iid][0] if iid in updates else row[3]
            out.append({"instruction_id": iid, "state": state, "ignored": True})
            continue
        deadline = _aware(row[4]) if t_sent is None else t_sent + DEVICE_ACK_TIMEOUT
        late = t > deadline
        state = "timeout" if late else ("acked" if ack["status"] == "accepted" else "rejected")
        updates[iid] = (state, t, "ack after the deadline" if late else ack.get("reason"), t_sent,
                        None if t_sent is None else deadline)
        out.append({"instruction_id": iid, "state": state})
    _write_acks(conn, updates)
    return out


def _write_acks(conn: Connection, updates: dict[str, tuple]) -> None:
    """(state, acked_at, reason, sent_at or None, ack_deadline or None) per instruction id."""
    if not updates:
        return
    ids = list(updates)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "UPDATE instructions AS i SET state = v.state, acked_at = v.acked_at, reason = v.reason, "
            "sent_at = coalesce(v.sent_at, i.sent_at), ack_deadline = coalesce(v.deadline, i.ack_deadline) "
            "FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::timestamptz[], "
            "%s::timestamptz[]) AS v(id, state, acked_at, reason, sent_at, deadline) WHERE i.instruction_id = v.id",
            tuple([ids] + [[updates[i][k] for i in ids] for k in range(5)]))
        return
    plain = instructions.update().where(instructions.c.instruction_id == bindparam("b_id")).values(
        state=bindparam("b_state"), acked_at=bindparam("b_at"), reason=bindparam("b_reason"))
    timed = plain.values(sent_at=bindparam("b_sent"), ack_deadline=bindparam("b_deadline"))
    for stmt, keep in ((plain, lambda u: u[3] is None), (timed, lambda u: u[3] is not None)):
        params = [{"b_id": i, "b_state": u[0], "b_at": u[1], "b_reason": u[2], "b_sent": u[3], "b_deadline": u[4]}
                  for i, u in updates.items() if keep(u)]
        if params:
            conn.execute(stmt, params)


def device_ack(conn: Connection, ack: dict, operator_id: str, now: datetime | None = None) -> dict:
    """A device's acknowledgement ``{"id", "device", "status": "accepted"|"rejected", "reason"}``."""
    res = device_acks(conn, [ack], operator_id, [now or datetime.now(UTC)])[0]
    err = res.pop("error", None)
    if err == "not_found":
        raise NotFound(*res["detail"])
    if err == "forbidden":
        raise Forbidden(res["detail"])
    if err == "invalid":
        raise InvalidInput(res["detail"])
    return res


def redispatch(conn: Connection, actor: Actor, event_id: str, status: Status, send: Sender,
               now: datetime | None = None) -> list[dict]:
    """Re-dispatch the shortfall of failed device instructions (no ack in time, rejected, or the device
    went offline) to the other online devices of the same trading unit, within their residual room."""
    if not actor.operator_id:
        raise Forbidden("re-dispatch is the operator's work")
    now = now or datetime.now(UTC)
    ev = events.get(conn, event_id)
    cols = (instructions.c.instruction_id, instructions.c.resource_id, instructions.c.parent_id,
            instructions.c.state, instructions.c.ack_deadline, instructions.c.kw, instructions.c.reason)
    rows = [dict(r) for r in conn.execute(select(*cols).where(
        instructions.c.event_id == event_id, instructions.c.level == "device",
        instructions.c.operator_id == actor.operator_id).order_by(instructions.c.slot,
                                                                  instructions.c.instruction_id)).mappings()]
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
    by_reason: dict[str, list[str]] = {}
    for r, why in failed:
        by_reason.setdefault(why, []).append(r["instruction_id"])
    for why, ids in by_reason.items():
        for k in range(0, len(ids), _CHUNK):
            conn.execute(instructions.update().where(instructions.c.instruction_id.in_(ids[k:k + _CHUNK])).values(
                state="replaced", reason=why))
    parents = {p["instruction_id"]: p for p in events.instructions_of(conn, event_id, "operator", actor.operator_id)}
    pids = sorted({r["parent_id"] for r, _ in failed})
    units = sorted({parents[pid]["unit_id"] for pid in pids})
    members_by_unit = events.units_members(conn, ev, units)
    st = _member_status(members_by_unit, units, status)
    rows_of: dict[str, list[dict]] = {}
    for r in rows:
        rows_of.setdefault(r["parent_id"], []).append(r)
    key = "down" if ev["direction"] == "down" else "up"
    out: list[dict] = []
    notes: list[tuple[str, dict]] = []
    for pid in pids:
        parent = parents[pid]
        members = members_by_unit.get(parent["unit_id"], [])
        ids = [m["resource_id"] for m in members]
        pos = {rid: i for i, rid in enumerate(ids)}
        lost = {r["resource_id"] for r, _ in failed if r["parent_id"] == pid}
        power = np.zeros(len(members))          # what each device holds of this instruction
        dead = np.array([rid in lost for rid in ids], dtype=bool)
        for r in rows_of.get(pid, []):
            i = pos.get(r["resource_id"])
            if i is not None and (r["state"] in ("sent", "acked") or r["resource_id"] in lost):
                power[i] += r["kw"]
        # room left on a device: its capability less what it already gives, and no more than live telemetry
        # says it can still give now
        declared = np.array([float(m[f"verified_{key}_kw"] if m[f"verified_{key}_kw"] is not None
                                   else m[f"adjustable_{key}_kw"]) for m in members])
        live_room = _caps(ev, members, st, lost)
        room = np.minimum(np.maximum(declared - power, 0.0), live_room)
        res = redispatch_kernel(power, power + room, dead)
        extra = np.where(dead, 0.0, res.power_kw - power)
        left = float(res.shortfall_kw)
        shortfall = float(power[dead].sum())
        new_rows = _device_rows(ev, parent, members, extra, st, now)
        notes.append((pid, {"replaced": sorted(lost), "shortfall_kw": shortfall, "new": len(new_rows),
                            "uncovered_kw": left}))
        out += new_rows
    _store_device_rows(conn, out)
    _audit_many(conn, actor, "instruction.redispatch", notes)
    for r in out:
        send(r["operator_id"], r["resource_id"], r["payload"])
    return out


# ---------------------------------------------------------------- verification tests (能力校核)

def verification_rows(operator_id: str, instruction: dict, status: dict[str, dict], now: datetime) -> list[dict]:
    """The device instructions of a capability-verification test (the city's feed topic
    ``verification``, ``services.verification.instruction``): each member device a ``limit`` over
    the test window, its declared capability below (``down``) or above (``up``) its power now, in
    the device protocol of event instructions, marked ``"purpose": "verification"`` with the test
    id. A device the live state has offline is not instructed (the test will grade what it did).

    Returns ``[{"operator_id", "resource_id", "payload"}]`` and, for the skipped devices,
    ``{"resource_id", "skipped": reason}`` rows."""
    start, end = (_aware(datetime.fromisoformat(instruction[k]) if isinstance(instruction[k], str)
                         else instruction[k]) for k in ("start", "end"))
    begin = max(start, now)
    duration = int((end - begin).total_seconds())
    ids = sorted(instruction["resources"])
    out: list[dict] = []
    for rid, iid in zip(ids, new_ids("DVT", len(ids)), strict=True):
        s = status.get(rid) or {}
        if duration <= 0:
            out.append({"resource_id": rid, "skipped": "the test window is over"})
            continue
        if not s.get("online"):
            out.append({"resource_id": rid, "skipped": "device offline"})
            continue
        power, kw = float(s.get("power_kw") or 0.0), float(instruction["resources"][rid])
        bound = {"max_kw": round(power - kw, 3), "min_kw": None} if instruction["direction"] == "down" else {
            "min_kw": round(power + kw, 3), "max_kw": None}
        out.append({"operator_id": operator_id, "resource_id": rid, "payload": {
            "id": iid, "kind": "limit", **bound, "start": int(begin.timestamp() * 1000), "duration_s": duration,
            "purpose": "verification", "test_id": instruction["test_id"]}})
    return out


def record_verification(conn: Connection, actor: Actor, test_id: str, rows: list[dict],
                        acks: dict[str, dict | None]) -> dict:
    """The operator's record of a verification test's delivery (audited ``verification.dispatch``):
    devices instructed, accepted, rejected (with the device's reason), unanswered and skipped."""
    if actor.role not in ("operator_admin", "operator_engineer") or not actor.operator_id:
        raise Forbidden("instructing devices for a verification test is the operator's work")
    sent = [r for r in rows if "payload" in r]
    summary = {"test_id": test_id, "devices": len(sent),
               "accepted": sorted(r["resource_id"] for r in sent
                                  if (acks.get(r["resource_id"]) or {}).get("status") == "accepted"),
               "rejected": {r["resource_id"]: (acks[r["resource_id"]] or {}).get("reason") for r in sent
                            if (acks.get(r["resource_id"]) or {}).get("status") == "rejected"},
               "no_ack": sorted(r["resource_id"] for r in sent if acks.get(r["resource_id"]) is None),
               "skipped": {r["resource_id"]: r["skipped"] for r in rows if "skipped" in r}}
    audit.record(conn, actor, "verification.dispatch", "instruction", test_id, after=summary)
    return summary
