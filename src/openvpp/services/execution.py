"""Execution of an event, live: target, cleared, instructed, acknowledged and delivered per slot.

    event targets ──────────────┐
    awards (unit × slot) ───────┤
    operator instructions ──────┼──▶ per unit × slot ──▶ per operator × slot ──▶ per slot
    device instructions / units ┤
    15-minute rollups ──────────┘   delivered = reference − metered (load reduction)

What *delivered* is
-------------------
The response the platform measures itself, from the telemetry store's 15-minute rollups (mean
power of a device over a quarter hour, ``store.timeseries``) of the event's dispatched devices:

* the devices are those that received a device instruction of the event (the operator's system
  split its instruction through ``services.dispatch``); a trading unit whose operator split its
  share in its own system, without device instructions on the platform, counts the unit's
  members at the start of the window (``services.evaluation.members_at``, the set the evaluation
  pays);
* the reference of a device is its **pre-event power**: the mean of its 15-minute rollups over
  the hour before the window (``REFERENCE_SLOTS`` quarters). Not a forecast, because the platform
  stores no device forecast it could be held to (the archetype profiles are simulator inputs),
  and not the GB/T baseline, which needs weeks of history and is what the evaluation computes
  afterwards for payment. The pre-event power is measured, known the moment the window opens,
  and it is the very level the device instructions are computed from (``max_kw = power − share``
  in ``services.dispatch``), so reference − metered is what the instruction asked for. It drifts
  with the load's own daily shape over long windows: the evaluation, not this view, is the
  number that is settled;
* response = reference − metered for load reduction (``direction`` down), metered − reference for
  valley filling (up); reactive products use the reactive rollups (kvar). A device counts in a
  slot only when it has both a reference and a rollup of that slot (``measured``); a slot with no
  measured device has ``delivered_kw`` None. A quarter's rollup exists once the ingest worker has
  closed it, so a slot's figure appears a few seconds after the slot ends.

Tenant fence: the center and the auditor see every unit; an operator sees its own units only, and
its slot totals are the sums of its own rows (the event's target is public). Owners have no
execution view (their resources' results are in the evaluation). Drafts are the center's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Connection, select

from openvpp.core.errors import Forbidden
from openvpp.core.timeslots import SLOT_H, SLOT_MINUTES, slot_start_utc
from openvpp.services import evaluation, events
from openvpp.services.scope import scope_of
from openvpp.store.audit import Actor
from openvpp.store.schema_events import instructions
from openvpp.store.schema_telemetry import telemetry_rollup

#: quarters before the window whose mean power is a device's reference (1 h)
REFERENCE_SLOTS = 4
CHUNK = 2000
CENTER_ROLES = ("city_admin", "dispatcher", "auditor")
DELIVERING_STATES = ("executing", "evaluating", "settled")


def _utc(ts: datetime | str) -> datetime:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def quarter_means(conn: Connection, device_ids: Sequence[str], start: datetime, n_quarters: int,
                  quantity: str = "power_kw") -> np.ndarray:
    """Mean power (kW, or kvar for ``quantity="reactive_kvar"``) of each device in each of the
    ``n_quarters`` quarter hours from ``start`` (UTC, on a quarter), from the 15-minute rollups.

    Returns (len(device_ids), n_quarters) float, NaN where no rollup holds the quarter."""
    out = np.full((len(device_ids), n_quarters), np.nan)
    if not len(device_ids) or n_quarters <= 0:
        return out
    pos = {d: i for i, d in enumerate(device_ids)}
    r = telemetry_rollup
    end = start + timedelta(minutes=SLOT_MINUTES * n_quarters)
    t0 = start.timestamp()
    ids = list(device_ids)
    for lo in range(0, len(ids), CHUNK):
        q = select(r.c.device_id, r.c.bucket, r.c.n, r.c.power_sum_kw, r.c.n_reactive, r.c.reactive_sum_kvar).where(
            r.c.step_s == 900, r.c.device_id.in_(ids[lo:lo + CHUNK]), r.c.bucket >= start, r.c.bucket < end)
        for dev, bucket, n, p_sum, n_q, q_sum in conn.execute(q):
            k = int((_utc(bucket).timestamp() - t0) // (SLOT_MINUTES * 60))
            if quantity == "reactive_kvar":
                if n_q:
                    out[pos[dev], k] = q_sum / n_q
            elif n:
                out[pos[dev], k] = p_sum / n
    return out


def response_kw(reference_kw: np.ndarray, metered_kw: np.ndarray, direction: str) -> np.ndarray:
    """Response of each device in each slot against its reference (positive = delivered).

    reference_kw : (n,) kW, NaN = unknown; metered_kw : (n, s) kW, NaN = not measured.
    Returns (n, s) kW, NaN where either is unknown."""
    ref = np.asarray(reference_kw, dtype=float)[:, None]
    met = np.asarray(metered_kw, dtype=float)
    return ref - met if direction == "down" else met - ref


def _num(x: float) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else x


def _visible_operator(actor: Actor, ev: dict) -> str | None:
    """The operator the caller is fenced to (None = city-wide); refusals as in the event routes."""
    if actor.role == "owner":
        raise Forbidden("owners see their resources' results in the evaluation, not the execution view")
    scope = scope_of(actor)
    if ev["state"] == "draft" and actor.role not in CENTER_ROLES:
        raise Forbidden("drafts are the center's")
    return scope.operator_id


def execution(conn: Connection, actor: Actor, event_id: str, now: datetime | None = None) -> dict:
    """The execution view of an event in the caller's scope (see the module docstring).

    ``slots``: per slot of the window, target_kw (the event's), cleared_kw (awards), instructed_kw
    (operator instructions not cancelled), acknowledged_kw (acknowledged ones), delivered_kw
    (measured response, None while no device is measured), devices, measured. ``operators`` and
    ``units`` hold the same per operator and per trading unit (without the target)."""
    ev = events.get(conn, event_id)
    fence = _visible_operator(actor, ev)
    now = now or datetime.now(UTC)
    start, end = ev["start_slot"], ev["end_slot"]
    s = end - start
    awards = events.awarded(conn, event_id, fence)
    ins_q = select(instructions.c.unit_id, instructions.c.operator_id, instructions.c.slot, instructions.c.kw,
                   instructions.c.state).where(instructions.c.event_id == event_id, instructions.c.level == "operator")
    if fence:
        ins_q = ins_q.where(instructions.c.operator_id == fence)
    ops_ins = conn.execute(ins_q).all()

    units = sorted({a["unit_id"] for a in awards} | {r[0] for r in ops_ins})
    upos = {u: i for i, u in enumerate(units)}
    unit_op = {a["unit_id"]: a["operator_id"] for a in awards} | {r[0]: r[1] for r in ops_ins}
    cleared = np.zeros((len(units), s))
    price = np.full((len(units), s), np.nan)
    for a in awards:
        cleared[upos[a["unit_id"]], a["slot"] - start] += a["cleared_kw"]
        price[upos[a["unit_id"]], a["slot"] - start] = a["price_yuan_per_kwh"]
    instructed = np.zeros((len(units), s))
    acked = np.zeros((len(units), s))
    for unit, _op, slot, kw, state in ops_ins:
        if start <= slot < end and state != "cancelled":
            instructed[upos[unit], slot - start] += kw
            if state == "acked":
                acked[upos[unit], slot - start] += kw

    # devices of each unit: dispatched ones, else the unit's members at the window start
    delivering = ev["state"] in DELIVERING_STATES
    dev_units: list[tuple[str, int]] = []
    source: dict[str, str] = {}
    if delivering and units:
        dq = select(instructions.c.resource_id, instructions.c.unit_id).where(
            instructions.c.event_id == event_id, instructions.c.level == "device").distinct()
        if fence:
            dq = dq.where(instructions.c.operator_id == fence)
        seen: set[tuple[str, str]] = set()
        for rid, unit in conn.execute(dq):
            if unit in upos and (rid, unit) not in seen:
                seen.add((rid, unit))
                dev_units.append((rid, upos[unit]))
                source[unit] = "device_instructions"
        at = slot_start_utc(ev["day"], start)
        for unit in units:
            if unit not in source:
                source[unit] = "unit_members"
                dev_units += [(m["resource_id"], upos[unit]) for m in evaluation.members_at(conn, ev, unit, at)]
    ids = [d for d, _ in dev_units]
    codes = np.array([u for _, u in dev_units], dtype=np.int64)
    quantity = "reactive_kvar" if ev["product"] == "reactive" else "power_kw"
    window_start = slot_start_utc(ev["day"], start)
    ref_start = window_start - timedelta(minutes=SLOT_MINUTES * REFERENCE_SLOTS)
    uniq = list(dict.fromkeys(ids))
    means = quarter_means(conn, uniq, ref_start, REFERENCE_SLOTS + s, quantity)
    upos_dev = {d: i for i, d in enumerate(uniq)}
    rows = np.array([upos_dev[d] for d in ids], dtype=np.int64)
    means = means[rows] if len(rows) else np.zeros((0, REFERENCE_SLOTS + s))
    pre = means[:, :REFERENCE_SLOTS]
    have = np.isfinite(pre).sum(axis=1)
    reference = np.where(have > 0, np.nansum(pre, axis=1) / np.maximum(have, 1), np.nan)
    metered = means[:, REFERENCE_SLOTS:]
    resp = response_kw(reference, metered, ev["direction"])
    ok = np.isfinite(resp)
    delivered = np.zeros((len(units), s))
    measured = np.zeros((len(units), s), dtype=np.int64)
    n_dev = np.bincount(codes, minlength=len(units)) if len(codes) else np.zeros(len(units), np.int64)
    if len(codes):
        np.add.at(delivered, codes, np.where(ok, resp, 0.0))
        np.add.at(measured, codes, ok.astype(np.int64))

    def slot_rows(idx: np.ndarray) -> list[dict]:
        out = []
        for j in range(s):
            m = int(measured[idx, j].sum())
            out.append({"slot": start + j, "cleared_kw": float(cleared[idx, j].sum()),
                        "instructed_kw": float(instructed[idx, j].sum()),
                        "acknowledged_kw": float(acked[idx, j].sum()),
                        "delivered_kw": float(delivered[idx, j].sum()) if m else None,
                        "devices": int(n_dev[idx].sum()), "measured": m})
        return out

    def totals(rows_: list[dict]) -> dict:
        dl = [r["delivered_kw"] for r in rows_ if r["delivered_kw"] is not None]
        return {"cleared_kwh": sum(r["cleared_kw"] for r in rows_) * SLOT_H,
                "instructed_kwh": sum(r["instructed_kw"] for r in rows_) * SLOT_H,
                "acknowledged_kwh": sum(r["acknowledged_kw"] for r in rows_) * SLOT_H,
                "delivered_kwh": sum(dl) * SLOT_H if dl else None, "slots_measured": len(dl)}

    all_idx = np.arange(len(units))
    slots = slot_rows(all_idx)
    targets = ev["targets_kw"]
    for j, row in enumerate(slots):
        t0 = slot_start_utc(ev["day"], start + j)
        row["target_kw"] = float(targets[j])
        row["start"] = t0
        row["final"] = t0 + timedelta(minutes=SLOT_MINUTES) <= now
    unit_rows = []
    for u, unit in enumerate(units):
        rows_u = slot_rows(np.array([u]))
        for j, r in enumerate(rows_u):
            r["price_yuan_per_kwh"] = _num(price[u, j])
        unit_rows.append({"unit_id": unit, "operator_id": unit_op[unit], "devices": int(n_dev[u]),
                          "device_source": source.get(unit), "slots": rows_u, "totals": totals(rows_u)})
    op_rows = []
    for op in sorted(set(unit_op.values())):
        idx = np.array([upos[u] for u in units if unit_op[u] == op], dtype=np.int64)
        rows_o = slot_rows(idx)
        op_rows.append({"operator_id": op, "units": [units[i] for i in idx], "slots": rows_o,
                        "totals": totals(rows_o)})
    return {"event_id": event_id, "state": ev["state"], "product": ev["product"], "direction": ev["direction"],
            "day": ev["day"], "start_slot": start, "end_slot": end,
            "scope": f"operator {fence}" if fence else "city", "as_of": now,
            "quantity_unit": "kvar" if quantity == "reactive_kvar" else "kW",
            "reference": {"method": "pre-event mean", "slots": REFERENCE_SLOTS, "from": ref_start,
                          "to": window_start, "source": "telemetry 15-minute rollups"},
            "slots": slots, "totals": {"target_kwh": float(sum(targets)) * SLOT_H, **totals(slots)},
            "operators": op_rows, "units": unit_rows}
