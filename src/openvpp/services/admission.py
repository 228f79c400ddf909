"""Operator admission and exit (Guangzhou plan task 2; Guangdong market rules for trading units).

applied → under_review → admitted ⇄ suspended → exited; rejected from applied/under review. Every
transition needs a reason (``model.lifecycle``). An operator admin applies under its own operator id
only. Exit hands the operator's resources over or releases them; a rejection rejects the applicant's
registered resources (their meters are free again) and releases any active ones.
Qualification checks run at review and again at admission, and are stored with their results:

1. ``tss_registered``: a technical support system (技术支持系统) endpoint is registered;
2. ``tss_connectivity``: a round trip over the operator interface answered (nonce echoed);
3. ``trading_unit``: at least one trading unit (the operator's active resources under one 220 kV
   clearing node) of >= 1 MW adjustable for >= 1 h (rule set ``admission``);
4. ``minute_level`` (not a gate for admission): verified, not declared, capability with latency
   <= 60 s of >= 1 MW under one clearing node, plus a connected TSS — the condition for the reserve
   capacity subsidy.

The checks run again without a state change (``recheck``): when a verification test of the
operator's resources completes, on the center's request, and once for every operator of a city
when it is loaded (``recheck_all``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Connection, and_, case, func, select

from openvpp.core import rules
from openvpp.core.errors import Conflict, Forbidden, InvalidInput, NotFound, TransitionRefused, Violation
from openvpp.model import lifecycle
from openvpp.model.columns import OPERATOR_COLUMNS
from openvpp.model.enums import OperatorKind, OperatorState
from openvpp.model.roles import Perm
from openvpp.services import access
from openvpp.services.registry_arrays import RegistryArrays
from openvpp.services.scope import require
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes, operator_checks, operators, resources

#: probe(endpoint) -> {"ok": bool, "rtt_ms": float | None, "detail": str}
Probe = Callable[[str], dict]
GATES = ("tss_registered", "tss_connectivity", "trading_unit")


def get(conn: Connection, operator_id: str) -> dict:
    row = conn.execute(select(operators).where(operators.c.operator_id == operator_id)).mappings().first()
    if row is None:
        raise NotFound("operator", operator_id)
    return dict(row)


def apply(conn: Connection, actor: Actor, fields: dict) -> dict:
    """An operator applies for admission (state ``applied``). A second live application is refused."""
    if actor.role != "operator_admin":  # an operator applies for itself; otherwise the center enters it
        require(actor, Perm.ADMIT_OPERATORS)
    elif fields.get("operator_id") != actor.operator_id:
        raise Forbidden(f"an operator admin applies under its own operator id {actor.operator_id} only "
                        f"(operator_id = {fields.get('operator_id')!r})")
    known = {c.name for c in OPERATOR_COLUMNS} - {"state"}
    bad = [Violation(k, "unknown field", v) for k, v in fields.items() if k not in known]
    for name in ("operator_id", "name", "kind"):
        if not fields.get(name):
            bad.append(Violation(name, "is required", fields.get(name)))
    if fields.get("kind") and fields["kind"] not in {k.value for k in OperatorKind}:
        bad.append(Violation("kind", f"must be one of {', '.join(k.value for k in OperatorKind)}", fields["kind"]))
    if bad:
        raise InvalidInput(bad)
    existing = conn.execute(select(operators).where(operators.c.operator_id == fields["operator_id"])).mappings().first()
    if existing is not None:
        raise Conflict(f"operator {fields['operator_id']} already exists (state {existing['state']}): "
                       "a second admission of the same operator is refused")
    code = fields.get("credit_code")
    if code:
        dup = conn.execute(select(operators.c.operator_id, operators.c.state).where(and_(
            operators.c.credit_code == code, operators.c.state.not_in(("exited", "rejected"))))).first()
        if dup is not None:
            raise Conflict(f"credit code {code} already belongs to operator {dup[0]} (state {dup[1]}): "
                           "one legal entity, one live admission")
    now = datetime.now(UTC)
    row = {**{k: fields.get(k) for k in known}, "state": OperatorState.APPLIED.value,
           "created_at": now, "updated_at": now}
    conn.execute(operators.insert().values(**row))
    audit.record(conn, actor, "operator.apply", "operator", row["operator_id"], after=row)
    return get(conn, row["operator_id"])


def trading_units(conn: Connection, operator_id: str, ruleset: str = rules.DEFAULT_RULESET,
                  reg: RegistryArrays | None = None) -> list[dict]:
    """The operator's active resources grouped per clearing node (220 kV substation), with the
    capability that can be held >= the minimum duration, declared and verified (minute-level).

    ``reg``: registry arrays current with the database (the API's shared pool engine's); the same
    figures are then summed on them instead of a GROUP BY over the resource table (~50 ms at
    100,000 resources on SQLite, well under a millisecond on the arrays)."""
    adm = rules.load(ruleset).section("admission")
    if reg is not None:
        return _units_from_arrays(reg, operator_id, adm)
    return _units_by_operator(conn, [operator_id], adm).get(operator_id, [])


def _unit(adm: dict, clearing_node, count: int, declared: float, long_kw: float, minute_kw: float) -> dict:
    min_kw = float(adm["trading_unit_min_mw"]) * 1000
    return {"clearing_node": clearing_node, "resources": int(count), "declared_kw": float(declared),
            "declared_kw_min_duration": float(long_kw), "verified_minute_kw": float(minute_kw),
            "qualifies": float(long_kw) >= min_kw, "minute_level": float(minute_kw) >= min_kw}


def _units_by_operator(conn: Connection, operator_ids: list[str], adm: dict) -> dict[str, list[dict]]:
    """``trading_units`` of several operators in one GROUP BY (operator, clearing node)."""
    min_h = float(adm["trading_unit_min_duration_h"])
    max_lat = float(adm["minute_level_max_latency_s"])
    long_enough = resources.c.adjustable_duration_h >= min_h
    q = (
        select(
            resources.c.operator_id,
            grid_nodes.c.substation_id.label("clearing_node"),
            func.count().label("resources"),
            func.sum(resources.c.adjustable_down_kw).label("declared_kw"),
            func.sum(_when(long_enough, resources.c.adjustable_down_kw)).label("declared_kw_min_duration"),
            func.sum(_when(and_(resources.c.verified_latency_s <= max_lat, long_enough),
                           resources.c.verified_down_kw)).label("verified_minute_kw"),
        )
        .select_from(resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id))
        .where(resources.c.operator_id.in_(operator_ids), resources.c.state == "active")
        .group_by(resources.c.operator_id, grid_nodes.c.substation_id)
        .order_by(resources.c.operator_id, grid_nodes.c.substation_id)
    )
    out: dict[str, list[dict]] = {}
    for r in conn.execute(q):
        out.setdefault(r[0], []).append(_unit(adm, r[1], r[2], r[3] or 0.0, r[4] or 0.0, r[5] or 0.0))
    return out


def _units_from_arrays(reg: RegistryArrays, operator_id: str, adm: dict) -> list[dict]:
    """``trading_units`` on the registry arrays: one bincount per figure over the substation codes of
    the operator's active resources (no sort; a code of -1, no substation, is the group None)."""
    idx = np.flatnonzero(reg.matching(operator_id=operator_id, state="active"))
    down, hours, latency, verified = (reg.values[k].take(idx) for k in (
        "adjustable_down_kw", "adjustable_duration_h", "verified_latency_s", "verified_down_kw"))
    long_enough = hours >= float(adm["trading_unit_min_duration_h"])
    with np.errstate(invalid="ignore"):          # NaN latency: not verified, not minute-level
        minute = long_enough & (latency <= float(adm["minute_level_max_latency_s"]))
    labels = [None] + list(reg.categories["substation_id"])
    group = reg.codes["substation_id"].take(idx) + 1
    k = len(labels)
    count = np.bincount(group, minlength=k)
    declared = np.bincount(group, down, k)
    long_kw = np.bincount(group, np.where(long_enough, down, 0.0), k)
    minute_kw = np.bincount(group, np.where(minute, np.nan_to_num(verified), 0.0), k)
    units = [_unit(adm, labels[g], count[g], declared[g], long_kw[g], minute_kw[g])
             for g in np.flatnonzero(count).tolist()]
    return sorted(units, key=lambda u: (u["clearing_node"] is None, u["clearing_node"] or ""))


def _when(cond, value):
    return case((cond, value), else_=0.0)


def run_checks(conn: Connection, actor: Actor, operator_id: str, probe: Probe | None,
               ruleset: str = rules.DEFAULT_RULESET, units: list[dict] | None = None) -> list[dict]:
    """Run and store every qualification check; return them with their results. ``units``: the
    operator's ``trading_units`` when already computed. Without a ``probe`` the connectivity check
    (and so the minute-level one) fails, saying why."""
    op = get(conn, operator_id)
    now = datetime.now(UTC)
    endpoint = (op.get("tss_endpoint") or "").strip()
    results: list[dict] = [{"check": "tss_registered", "passed": bool(endpoint),
                            "detail": {"endpoint": endpoint or None}}]
    if endpoint and probe is not None:
        r = probe(endpoint)
        results.append({"check": "tss_connectivity", "passed": bool(r.get("ok")), "detail": r})
    else:
        why = "no endpoint registered" if not endpoint else "no probe available to reach the operator interface"
        results.append({"check": "tss_connectivity", "passed": False, "detail": {"detail": why}})
    units = trading_units(conn, operator_id, ruleset) if units is None else units
    adm = rules.load(ruleset).section("admission")
    results.append({"check": "trading_unit", "passed": any(u["qualifies"] for u in units),
                    "detail": {"rule": f">= {adm['trading_unit_min_mw']} MW for >= "
                                       f"{adm['trading_unit_min_duration_h']} h per clearing node",
                               "units": units}})
    results.append({"check": "minute_level", "passed": results[1]["passed"] and any(u["minute_level"] for u in units),
                    "detail": {"rule": f"verified capability with latency <= {adm['minute_level_max_latency_s']} s, "
                                       ">= 1 MW under one clearing node, TSS connected (reserve subsidy condition)",
                               "gate": False}})
    conn.execute(operator_checks.insert(), [
        {"operator_id": operator_id, "check": r["check"], "passed": r["passed"], "detail": audit._plain(r["detail"]),
         "checked_at": now, "checked_by": actor.name} for r in results])
    return results


def latest_checks(conn: Connection, operator_id: str) -> list[dict]:
    latest = select(operator_checks.c.check, func.max(operator_checks.c.check_id).label("id")).where(
        operator_checks.c.operator_id == operator_id).group_by(operator_checks.c.check).subquery()
    q = select(operator_checks).join(latest, latest.c.id == operator_checks.c.check_id).order_by(
        operator_checks.c.check_id)
    return [dict(r) for r in conn.execute(q).mappings()]


#: states in which an operator's checks may be run again (not after it left or was turned down)
RECHECK_STATES = ("applied", "under_review", "admitted", "suspended")


def recheck(conn: Connection, actor: Actor, operator_id: str, probe: Probe | None, reason: str | None = None,
            ruleset: str = rules.DEFAULT_RULESET, units: list[dict] | None = None) -> dict:
    """Run and store the qualification checks again without changing the operator's state (audited
    ``operator.recheck``): after a verification test, a new TSS endpoint, or on the center's request.
    The latest ``minute_level`` check is what the reserve subsidy reads (``services.settlement``)."""
    require(actor, Perm.ADMIT_OPERATORS)
    op = get(conn, operator_id)
    if op["state"] not in RECHECK_STATES:
        raise TransitionRefused("operator", operator_id, op["state"], "recheck",
                                f"'recheck' needs state {' or '.join(RECHECK_STATES)}", [])
    checks = run_checks(conn, actor, operator_id, probe, ruleset, units)
    audit.record(conn, actor, "operator.recheck", "operator", operator_id, before={"state": op["state"]},
                 after={"state": op["state"], "checks": {c["check"]: c["passed"] for c in checks}}, reason=reason)
    return {**op, "checks": checks}


def recheck_all(conn: Connection, actor: Actor, probe: Probe | None, reason: str | None = None,
                states: tuple[str, ...] = ("admitted", "suspended"),
                ruleset: str = rules.DEFAULT_RULESET) -> list[dict]:
    """``recheck`` every operator in ``states`` (trading units of all of them in one query): what a
    loaded city gets once, so the subsidy conditions read stored checks from the start."""
    ids = list(conn.execute(select(operators.c.operator_id).where(operators.c.state.in_(states))
                            .order_by(operators.c.operator_id)).scalars())
    units = _units_by_operator(conn, ids, rules.load(ruleset).section("admission")) if ids else {}
    return [recheck(conn, actor, op, probe, reason, ruleset, units.get(op, [])) for op in ids]


def transition(conn: Connection, actor: Actor, operator_id: str, action: str, reason: str | None = None,
               probe: Probe | None = None, handover_to: str | None = None,
               ruleset: str = rules.DEFAULT_RULESET) -> dict:
    """Move an operator through its life cycle; refusals name the state and the rule."""
    before = get(conn, operator_id)
    if actor.role == "operator_admin" and actor.operator_id != operator_id:
        raise Forbidden(f"operator {operator_id} is outside your scope")
    t = lifecycle.check(lifecycle.OPERATOR_MACHINE, "operator", operator_id, before["state"], action, actor.role,
                        reason)
    checks = None
    if action in ("start_review", "admit"):
        checks = run_checks(conn, actor, operator_id, probe, ruleset)
        failed = [c["check"] for c in checks if c["check"] in GATES and not c["passed"]]
        if action == "admit" and failed:
            raise TransitionRefused("operator", operator_id, before["state"], action,
                                    f"qualification checks failed: {', '.join(failed)}", ["reject"])
    released, rejected = 0, 0
    if action == "exit":
        released = access.release_operator(conn, actor, operator_id, handover_to, reason or "operator exit")
    elif action == "reject":
        freed = access.release_applicant(conn, actor, operator_id, reason or "operator rejected")
        released, rejected = freed["released"], freed["rejected"]
    now = datetime.now(UTC)
    conn.execute(operators.update().where(operators.c.operator_id == operator_id).values(state=t.target,
                                                                                         updated_at=now))
    after = get(conn, operator_id)
    audit.record(conn, actor, f"operator.{action}", "operator", operator_id, before={"state": before["state"]},
                 after={"state": after["state"], "checks": [{c["check"]: c["passed"]} for c in checks or []],
                        "resources_released": released, "resources_rejected": rejected,
                        "handover_to": handover_to}, reason=reason)
    return {**after, "checks": checks, "resources_released": released, "resources_rejected": rejected}
