"""Disputes (争议处理): an operator contests a statement line with evidence; the center decides.

    open ──reevaluate──▶ reevaluated ──decide(approve)──▶ approved   (evaluation replaced, ledger adjusted)
                                      └─decide(reject)──▶ rejected   (nothing changes)

1. ``raise_dispute``: an operator admin names a line of its statement, a reason and evidence —
   corrected meter data ``{"meter": {resource_id: [kW per slot of the event window]}}`` for its own
   resources of that event;
2. ``reevaluate`` (center): the event is evaluated again with the corrected values laid over the
   meter source, same baseline method and history, stored as a *candidate* version; the dispute
   shows the difference per unit and slot and the effect on every party of the settlement (with
   a hard budget, one operator's correction moves the others' pro-rata shares);
3. ``decide`` (city admin): approve makes the candidate the event's current evaluation and
   re-settles: the ledger receives the difference of every account as new entries referencing
   the dispute; reject marks the candidate rejected. Both are audited with the reason.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from openvpp.core.errors import Conflict, Forbidden, InvalidInput, NotFound, TransitionRefused, Violation
from openvpp.core.ids import new_id
from openvpp.kernels.baseline import BaselineSpec
from openvpp.services import evaluation as eva
from openvpp.services import events
from openvpp.services import settlement as stl
from openvpp.services.scope import Scope
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema_settlement import disputes, evaluations


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
    meter = _check_evidence(conn, evidence, ln, ev)
    now = datetime.now(UTC)
    row = {"dispute_id": new_id("DSP"), "settlement_id": settlement_id, "line_id": line_id,
           "operator_id": ln["operator_id"], "event_id": ln["event_id"], "state": "open", "reason": reason,
           "evidence": {"meter": meter}, "evaluation_before": ln["evaluation_id"], "evaluation_after": None,
           "difference": None, "decision": None, "decided_by": None, "decided_at": None,
           "created_by": actor.name, "created_at": now}
    conn.execute(disputes.insert().values(**row))
    audit.record(conn, actor, "dispute.raise", "dispute", row["dispute_id"],
                 after={"settlement_id": settlement_id, "line_id": line_id, "resources": sorted(meter)},
                 reason=reason)
    return get(conn, row["dispute_id"])


def _check_evidence(conn: Connection, evidence: dict, ln: dict, ev: dict) -> dict[str, list[float]]:
    meter = (evidence or {}).get("meter")
    n = ev["end_slot"] - ev["start_slot"]
    if not isinstance(meter, dict) or not meter:
        raise InvalidInput(Violation("evidence.meter", "give corrected meter data {resource_id: [kW per slot]}",
                                     evidence))
    mine = {r["key_id"] for r in eva.rows(conn, ln["evaluation_id"], "resource", ln["operator_id"])}
    v: list[Violation] = []
    for rid, values in meter.items():
        if rid not in mine:
            v.append(Violation(f"evidence.meter.{rid}", "is not your resource in this event", rid))
        elif not isinstance(values, list) or len(values) != n:
            v.append(Violation(f"evidence.meter.{rid}", f"needs one value per slot of the window ({n})", values))
        elif any(not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x) for x in values):
            v.append(Violation(f"evidence.meter.{rid}", "values must be finite numbers (kW)", values))
    if v:
        raise InvalidInput(v)
    return {rid: [float(x) for x in values] for rid, values in meter.items()}


def reevaluate(conn: Connection, actor: Actor, dispute_id: str, source: eva.MeterSource) -> dict:
    """The center re-evaluates the event with the evidence over ``source``; shows the difference."""
    d = get(conn, dispute_id)
    if d["state"] != "open":
        raise TransitionRefused("dispute", dispute_id, d["state"], "reevaluate", "needs state open", ["decide"])
    before = eva.get(conn, d["evaluation_before"])
    ev = events.get(conn, d["event_id"])
    corrections = {rid: {ev["start_slot"] + i: x for i, x in enumerate(vals)}
                   for rid, vals in d["evidence"]["meter"].items()}
    spec = BaselineSpec(before["baseline"]["method"], _params(before["baseline"]["params"]),
                        before["baseline"]["adjustment"])
    after = eva.evaluate(conn, actor, d["event_id"], eva.CorrectedMeterSource(source, ev["day"], corrections),
                         spec=spec, history_days=before["inputs"]["history_days"],
                         reason=f"dispute {dispute_id}", candidate_for=dispute_id)
    diff = difference(conn, d, before["evaluation_id"], after["evaluation_id"])
    conn.execute(disputes.update().where(disputes.c.dispute_id == dispute_id).values(
        state="reevaluated", evaluation_after=after["evaluation_id"], difference=audit._plain(diff)))
    audit.record(conn, actor, "dispute.reevaluate", "dispute", dispute_id, before={"state": "open"},
                 after={"state": "reevaluated", "evaluation_after": after["evaluation_id"],
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
