"""Disputes (争议处理): an operator contests a statement line with evidence; the center decides.

    open ──reevaluate──▶ reevaluated ──decide(approve)──▶ approved   (evaluation replaced, ledger adjusted)
                                      └─decide(reject)──▶ rejected   (nothing changes)

1. ``raise_dispute``: an operator admin names a line of its statement, a reason and evidence —
   corrected meter data for its own resources of that event, either
   ``{"meter": {resource_id: [kW per slot of the event window]}}`` or, to correct any day of the
   evaluation's history window (baseline days) or any slot of the event day,
   ``{"meter": {resource_id: {"YYYY-MM-DD": {slot: kW}}}}`` (kvar for a reactive event);
2. ``reevaluate`` (center): the event is evaluated again with the corrected values laid over the
   *same* meter data the current evaluation read, same baseline method and history, stored as a
   *candidate* version; the dispute shows the difference per unit and slot and the effect on every
   party of the settlement (with a hard budget, one operator's correction moves the others'
   pro-rata shares);
3. ``decide`` (city admin): approve makes the candidate the event's current evaluation and
   re-settles: the ledger receives the difference of every account as new entries referencing
   the dispute; reject marks the candidate rejected. Both are audited with the reason.

The difference a dispute shows is its evidence's effect and nothing else. Re-evaluation therefore
refuses (``Conflict``) when the meter data under the evidence is no longer the data the current
evaluation read — another source than the recorded ``meter_source``, other members, or readings
that arrived or changed since (SHA-256 against the recorded ``telemetry_sha256``): letting them in
would move every operator's claim on that event in someone else's dispute, and under a hard
budget every operator's pro-rata share. Corrections approved in earlier disputes on the same
event stay laid over the data. Lines of metered V2G sessions (no event) cannot be disputed this way.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, select

from openvpp.core.errors import Conflict, Forbidden, InvalidInput, NotFound, TransitionRefused, Violation
from openvpp.core.ids import new_id
from openvpp.core.timeslots import SLOT_MINUTES, SLOTS_PER_DAY
from openvpp.kernels.baseline import BaselineSpec
from openvpp.services import evaluation as eva
from openvpp.services import events
from openvpp.services import settlement as stl
from openvpp.services.scope import Scope
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema_settlement import disputes, evaluations

#: corrections {resource_id: {day: {slot: value}}}
Corrections = dict[str, dict[date, dict[int, float]]]
RULE = "a dispute's difference must be its evidence's effect and nothing else"


def get(conn: Connection, dispute_id: str, scope: Scope | None = None) -> dict:
    row = conn.execute(select(disputes).where(disputes.c.dispute_id == dispute_id)).mappings().first()
    if row is None:
        raise NotFound("dispute", dispute_id)
    if scope is not None and not scope.city_wide and scope.operator_id != row["operator_id"]:
        raise Forbidden(f"dispute {dispute_id} is outside your scope")
    return dict(row)


def list_(conn: Connection, settlement_id: str | None = None, scope: Scope | None = None) -> list[dict]:
    q = select(disputes).order_by(disputes.c.created_at)
    if settlement_id:
        q = q.where(disputes.c.settlement_id == settlement_id)
    if scope is not None and not scope.city_wide:
        if not scope.operator_id:
            raise Forbidden("disputes are between operators and the center")
        q = q.where(disputes.c.operator_id == scope.operator_id)
    return [dict(r) for r in conn.execute(q).mappings()]


def raise_dispute(conn: Connection, actor: Actor, settlement_id: str, line_id: str, reason: str,
                  evidence: dict) -> dict:
    """An operator disputes one line of its statement, with corrected meter data as evidence."""
    st = stl.get(conn, settlement_id)
    ln = stl.line(conn, settlement_id, line_id)
    if actor.role != "operator_admin" or actor.operator_id != ln["operator_id"]:
        raise Forbidden(f"only an operator admin of {ln['operator_id']} disputes its statement lines")
    if ln["event_id"] == stl.V2G_SESSIONS:
        raise InvalidInput(Violation(
            "line_id", "is a line of the year's metered V2G sessions, priced from the charging sessions' OCPP "
                       "meter values, not from an event's evaluation: a dispute re-evaluates an event with "
                       "corrected meter data and cannot correct it", line_id))
    if st["state"] == "superseded":
        raise Conflict(f"settlement {settlement_id} was superseded; dispute the current one")
    if not (reason and reason.strip()):
        raise InvalidInput(Violation("reason", "is required", reason))
    busy = conn.execute(select(disputes.c.dispute_id).where(
        disputes.c.settlement_id == settlement_id, disputes.c.line_id == line_id,
        disputes.c.state.in_(("open", "reevaluated")))).first()
    if busy is not None:
        raise Conflict(f"line {line_id} already has dispute {busy[0]} under way")
    ev = events.get(conn, ln["event_id"])
    meter = _check_evidence(conn, evidence, ln, ev, eva.get(conn, ln["evaluation_id"]))
    now = datetime.now(UTC)
    row = {"dispute_id": new_id("DSP"), "settlement_id": settlement_id, "line_id": line_id,
           "operator_id": ln["operator_id"], "event_id": ln["event_id"], "state": "open", "reason": reason,
           "evidence": {"meter": meter}, "evaluation_before": ln["evaluation_id"], "evaluation_after": None,
           "difference": None, "decision": None, "decided_by": None, "decided_at": None,
           "created_by": actor.name, "created_at": now}
    conn.execute(disputes.insert().values(**row))
    audit.record(conn, actor, "dispute.raise", "dispute", row["dispute_id"],
                 after={"settlement_id": settlement_id, "line_id": line_id, "resources": sorted(meter),
                        "days": sorted({d for days in meter.values() for d in days})},
                 reason=reason)
    return get(conn, row["dispute_id"])


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _slot(key: Any) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        n = key
    elif isinstance(key, str) and key.strip().isdigit():
        n = int(key)
    else:
        return None
    return n if 0 <= n < SLOTS_PER_DAY else None


def _check_evidence(conn: Connection, evidence: dict, ln: dict, ev: dict, head: dict
                    ) -> dict[str, dict[str, dict[str, float]]]:
    """Checked evidence, as ``{resource_id: {"YYYY-MM-DD": {"slot": value}}}``; every fault is named."""
    meter = evidence.get("meter") if isinstance(evidence, dict) else None
    start, n = ev["start_slot"], ev["end_slot"] - ev["start_slot"]
    first = date.fromisoformat(str(head["inputs"]["first_day"]))
    last = ev["day"]
    if not isinstance(meter, dict) or not meter:
        raise InvalidInput(Violation("evidence.meter", "give corrected meter data {resource_id: [kW per slot of "
                                                       "the window]} or {resource_id: {date: {slot: kW}}}", evidence))
    mine = {r["key_id"] for r in eva.rows(conn, ln["evaluation_id"], "resource", ln["operator_id"])}
    v: list[Violation] = []
    out: dict[str, dict[str, dict[str, float]]] = {}
    for rid, values in meter.items():
        field = f"evidence.meter.{rid}"
        if rid not in mine:
            v.append(Violation(field, "is not your resource in this event", rid))
        elif isinstance(values, list):
            if len(values) != n:
                v.append(Violation(field, f"needs one value per slot of the window ({n})", values))
            elif not all(_finite(x) for x in values):
                v.append(Violation(field, "values must be finite numbers (kW, kvar for a reactive event)", values))
            else:
                out[rid] = {last.isoformat(): {str(start + i): float(x) for i, x in enumerate(values)}}
        elif isinstance(values, dict) and values:
            days: dict[str, dict[str, float]] = {}
            for day_key, slots in values.items():
                f = f"{field}.{day_key}"
                try:
                    day = date.fromisoformat(str(day_key))
                except ValueError:
                    v.append(Violation(f, "must be a date YYYY-MM-DD", day_key))
                    continue
                if not first <= day <= last:
                    v.append(Violation(f, f"must be a day the evaluation read: {first} to {last} (the history "
                                          "window and the event day)", day_key))
                    continue
                if not isinstance(slots, dict) or not slots:
                    v.append(Violation(f, "give {slot: kW} with slots 0-95", slots))
                    continue
                fixed: dict[str, float] = {}
                for key, x in slots.items():
                    s = _slot(key)
                    if s is None:
                        v.append(Violation(f"{f}.{key}", "slot must be an integer 0-95", key))
                    elif not _finite(x):
                        v.append(Violation(f"{f}.{key}", "must be a finite number (kW, kvar for a reactive event)",
                                           x))
                    else:
                        fixed[str(s)] = float(x)
                days[day.isoformat()] = fixed
            out[rid] = days
        else:
            v.append(Violation(field, "give [kW per slot of the window] or {date: {slot: kW}}", values))
    if v:
        raise InvalidInput(v)
    return out


def _corrections(evidence: dict, ev: dict) -> Corrections:
    """A dispute's stored evidence as corrections (also the window-list form of older disputes)."""
    out: Corrections = {}
    for rid, values in (evidence or {}).get("meter", {}).items():
        if isinstance(values, list):
            out[rid] = {ev["day"]: {ev["start_slot"] + i: float(x) for i, x in enumerate(values)}}
        else:
            out[rid] = {date.fromisoformat(d): {int(s): float(x) for s, x in slots.items()}
                        for d, slots in values.items()}
    return out


def _merge(*layers: Corrections) -> Corrections:
    out: Corrections = {}
    for layer in layers:
        for rid, days in layer.items():
            for day, slots in days.items():
                out.setdefault(rid, {}).setdefault(day, {}).update(slots)
    return out


def _apply(data: eva.MeterData, ids: list[str], first_day: date, corrections: Corrections) -> eva.MeterData:
    """A copy of ``data`` with the corrections laid over it (a corrected slot counts as fully measured)."""
    values = data.values.copy()
    minutes = None if data.minutes is None else data.minutes.copy()
    pos = {r: i for i, r in enumerate(ids)}
    for rid, days in corrections.items():
        i = pos.get(rid)
        if i is None:
            continue
        for day, slots in days.items():
            d = (day - first_day).days
            if 0 <= d < values.shape[1]:
                for slot, x in slots.items():
                    values[i, d, slot] = x
                    if minutes is not None:
                        minutes[i, d, slot] = float(SLOT_MINUTES)
    return eva.MeterData(values, minutes)


class _EvidenceSource:
    """The meter data the current evaluation read (already read, checked against its hash) with the
    corrections laid over it. It serves exactly that read: other members or another window is refused."""

    def __init__(self, name: str, key: tuple, data: eva.MeterData, corrections: Corrections, head: dict):
        self.name = f"{name}+corrections"
        self.key, self.data, self.corrections, self.head = key, data, corrections, head

    def read(self, resource_ids, first_day: date, n_days: int, quantity: str = "power_kw",
             minutes: bool = False) -> eva.MeterData:
        if (list(resource_ids), first_day, n_days, quantity, bool(minutes)) != self.key:
            raise Conflict(f"the members or the history window of event {self.head['event_id']} differ from "
                           f"those of evaluation v{self.head['version']} ({self.head['evaluation_id']}), e.g. a "
                           f"pool or an operator's resources changed since: {RULE}")
        return _apply(self.data, self.key[0], first_day, self.corrections)


def _chain(conn: Connection, head: dict) -> list[dict]:
    """Evaluations from the first one evaluated from the meter source to ``head``, through the disputes
    approved in between (each evaluation of a dispute names it)."""
    chain = [head]
    while chain[-1]["dispute_id"]:
        if len(chain) > 1000:
            raise Conflict(f"evaluation {head['evaluation_id']}: dispute chain too long")
        chain.append(eva.get(conn, get(conn, chain[-1]["dispute_id"])["evaluation_before"]))
    return chain[::-1]


def reevaluate(conn: Connection, actor: Actor, dispute_id: str, source: eva.MeterSource) -> dict:
    """The center re-evaluates the event with the evidence over ``source``; shows the difference.

    Refused (``Conflict``) when the settlement priced the line from another evaluation than the event's
    current one, when ``source`` is not the meter source that evaluation chain read, or when the meter
    data (with earlier approved disputes' corrections) no longer hashes to the current evaluation's
    ``telemetry_sha256``: the difference would then hold changes other than the evidence.
    """
    d = get(conn, dispute_id)
    if d["state"] != "open":
        raise TransitionRefused("dispute", dispute_id, d["state"], "reevaluate", "needs state open", ["decide"])
    ev = events.get(conn, d["event_id"])
    ln = stl.line(conn, d["settlement_id"], d["line_id"])
    before = eva.current(conn, d["event_id"])
    if before["evaluation_id"] != ln["evaluation_id"]:
        raise Conflict(f"settlement {d['settlement_id']} priced line {d['line_id']} from evaluation "
                       f"{ln['evaluation_id']}, but event {d['event_id']}'s current evaluation is "
                       f"{before['evaluation_id']} (v{before['version']}): recompute the settlement first")
    chain = _chain(conn, before)
    root = chain[0]
    if source.name != root["meter_source"]:
        raise Conflict(f"evaluation v{root['version']} of event {d['event_id']} read its meter data from "
                       f"'{root['meter_source']}', not '{source.name}': re-evaluate with that source ({RULE})")
    earlier = _merge(*(_corrections(get(conn, e["dispute_id"])["evidence"], ev) for e in chain[1:]))
    mine = _corrections(d["evidence"], ev)
    inputs = before["inputs"]
    ids = eva.member_ids(conn, before)
    first_day = date.fromisoformat(str(inputs["first_day"]))
    n_days = int(inputs["history_days"]) + 1
    kind = eva.kind_of(before["product"])
    key = (ids, first_day, n_days, "reactive_kvar" if kind == "reactive" else "power_kw", kind == "reserve")
    data = source.read(*key)
    now_read = _apply(data, ids, first_day, earlier)
    sha = eva.fingerprint(ids, first_day, now_read.values, now_read.minutes, read=inputs.get("read"))
    if sha != before["telemetry_sha256"]:
        raise Conflict(f"the meter data of event {d['event_id']} ({first_day} to {ev['day']}, "
                       f"{len(ids)} resources, source '{source.name}') changed since evaluation v{before['version']} "
                       f"({before['evaluation_id']}) read it: sha256 {sha[:12]} now, {before['telemetry_sha256'][:12]} "
                       f"recorded. {RULE}: late or changed readings of this event need their own evidence")
    spec = BaselineSpec(before["baseline"]["method"], _params(before["baseline"]["params"]),
                        before["baseline"]["adjustment"])
    after = eva.evaluate(conn, actor, d["event_id"],
                         _EvidenceSource(source.name, key, data, _merge(earlier, mine), before),
                         spec=spec, history_days=int(inputs["history_days"]),
                         reason=f"dispute {dispute_id}", candidate_for=dispute_id)
    diff = difference(conn, d, before["evaluation_id"], after["evaluation_id"])
    diff["evaluation_before"] = before["evaluation_id"]
    diff["telemetry_sha256"] = before["telemetry_sha256"]
    conn.execute(disputes.update().where(disputes.c.dispute_id == dispute_id).values(
        state="reevaluated", evaluation_before=before["evaluation_id"], evaluation_after=after["evaluation_id"],
        difference=audit._plain(diff)))
    audit.record(conn, actor, "dispute.reevaluate", "dispute", dispute_id,
                 before={"state": "open", "evaluation_before": d["evaluation_before"]},
                 after={"state": "reevaluated", "evaluation_before": before["evaluation_id"],
                        "evaluation_after": after["evaluation_id"], "telemetry_sha256": before["telemetry_sha256"],
                        "earlier_disputes": [e["dispute_id"] for e in chain[1:]],
                        "credited_before": diff["credited_before"], "credited_after": diff["credited_after"]})
    return get(conn, dispute_id)


def _params(params: dict) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()}


def difference(conn: Connection, d: dict, before_id: str, after_id: str) -> dict:
    """Per slot of the disputed unit, credited before/after; per settlement party, amounts before/after."""
    ln = stl.line(conn, d["settlement_id"], d["line_id"])
    old = {r["slot"]: r for r in eva.rows(conn, before_id, "unit") if r["key_id"] == ln["unit_id"]}
    new = {r["slot"]: r for r in eva.rows(conn, after_id, "unit") if r["key_id"] == ln["unit_id"]}
    slots = [{"slot": s, "response_before": old[s]["response_kw"], "response_after": new[s]["response_kw"],
              "ratio_before": old[s]["ratio"], "ratio_after": new[s]["ratio"],
              "credited_before": old[s]["credited"], "credited_after": new[s]["credited"]} for s in sorted(old)]
    now = stl.preview(conn, d["settlement_id"], {})
    then = stl.preview(conn, d["settlement_id"], {before_id: after_id})
    keys = sorted(set(now) | set(then))
    parties = []
    for k in keys:
        a, b = now.get(k, {}), then.get(k, {})
        main = "net" if k[0] == "operator" else "owner_share"
        x, y = int(a.get(main, 0)), int(b.get(main, 0))
        if x != y:
            parties.append({"party_kind": k[0], "party_id": k[1], "operator_id": k[2], "contract": k[3],
                            "item": main, "before": str(stl.from_fen(x)), "after": str(stl.from_fen(y)),
                            "difference": str(stl.from_fen(y - x))})
    return {"unit_id": ln["unit_id"], "line_id": ln["line_id"], "slots": slots,
            "credited_before": sum(s["credited_before"] for s in slots),
            "credited_after": sum(s["credited_after"] for s in slots), "parties": parties}


def decide(conn: Connection, actor: Actor, dispute_id: str, approve: bool, reason: str) -> dict:
    """The center approves (evaluation replaced, settlement re-run, ledger adjusted) or rejects."""
    if actor.role != "city_admin":
        raise Forbidden("disputes are decided by the city management center (city_admin)")
    if not (reason and reason.strip()):
        raise InvalidInput(Violation("reason", "is required to decide a dispute", reason))
    d = get(conn, dispute_id)
    if d["state"] != "reevaluated":
        raise TransitionRefused("dispute", dispute_id, d["state"], "decide",
                                "needs state reevaluated (re-evaluate with the evidence first)", ["reevaluate"])
    now = datetime.now(UTC)
    result = None
    if approve:
        cur = eva.current(conn, d["event_id"])["evaluation_id"]
        if cur != d["evaluation_before"]:
            raise Conflict(f"event {d['event_id']}'s current evaluation is now {cur}, not {d['evaluation_before']} "
                           f"that dispute {dispute_id} was re-evaluated against (another dispute was approved): "
                           "its candidate lacks those corrections; reject it and raise it again")
        conn.execute(evaluations.update().where(evaluations.c.event_id == d["event_id"],
                                                evaluations.c.status == "current").values(status="superseded"))
        conn.execute(evaluations.update().where(evaluations.c.evaluation_id == d["evaluation_after"]).values(
            status="current"))
        result = stl.resettle(conn, actor, d["settlement_id"], dispute_id, f"dispute {dispute_id}: {reason}")
    else:
        conn.execute(evaluations.update().where(evaluations.c.evaluation_id == d["evaluation_after"]).values(
            status="rejected"))
    state = "approved" if approve else "rejected"
    conn.execute(disputes.update().where(disputes.c.dispute_id == dispute_id).values(
        state=state, decision=reason, decided_by=actor.name, decided_at=now))
    audit.record(conn, actor, f"dispute.{'approve' if approve else 'reject'}", "dispute", dispute_id,
                 before={"state": d["state"]}, after={"state": state, "resettle": result}, reason=reason)
    return {**get(conn, dispute_id), "resettle": result}
