"""Capability verification (能力校核): the center tests what resources really deliver.

schedule → a test instruction for a window, sent to each operator over the operator interface
(feed topic ``verification``) and by the operator's system to its devices → telemetry of the window and the hour before →
baseline (``kernels.baseline.pre_window_mean``, recorded as ``pre-window-mean-60min``: each
resource's mean power over the 60 minutes before the instruction, held flat over the window) →
``kernels.verification.assess`` → the resource's verified capability, latency and grade in the
tested direction (rule set ``verification``: A >= 90 %, B >= 70 % of declared, C below; down tests
write ``verified_down_kw``/``verified_latency_s``/``verified_grade``, up tests the ``verified_up_*``
columns). A resource graded C in either direction is flagged and drops out of pools that need
verification; a later A/B test clears the flag unless the other direction is still C.

Telemetry comes through a ``TelemetrySource``: ``source(resource_ids, start, end, step_s)``
returns an (n, T) kW array — the time-series store in production, a simulator in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Connection, case, func, select

from openvpp.core import rules
from openvpp.core.errors import Forbidden, InvalidInput, NotFound, TransitionRefused, Violation
from openvpp.core.ids import new_id
from openvpp.kernels.baseline import pre_window_mean, pre_window_mean_id
from openvpp.kernels.verification import assess
from openvpp.services import admission, events
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes, operators, resources, verification_tests

TelemetrySource = Callable[[list[str], datetime, datetime, int], np.ndarray]
PRE_WINDOW = timedelta(minutes=60)
BASELINE_METHOD = pre_window_mean_id(PRE_WINDOW.total_seconds() / 60)
#: columns a test of each direction writes: verified kW, latency, grade
COLUMNS = {"down": ("verified_down_kw", "verified_latency_s", "verified_grade"),
           "up": ("verified_up_kw", "verified_up_latency_s", "verified_up_grade")}
RAMP_ALLOWANCE = timedelta(minutes=15)
KINDS = ("resource", "site", "trading_unit")


def members(conn: Connection, target_kind: str, target_id: str) -> list[dict]:
    """Active resources under test: one resource, a site's, or a trading unit ``OPERATOR@SUBSTATION``."""
    cols = [resources.c.resource_id, resources.c.operator_id, resources.c.adjustable_down_kw,
            resources.c.adjustable_up_kw, resources.c.adjustable_duration_h, resources.c.state]
    q = select(*cols).select_from(resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id))
    if target_kind == "resource":
        q = q.where(resources.c.resource_id == target_id)
    elif target_kind == "site":
        q = q.where(resources.c.site_id == target_id, resources.c.state == "active")
    elif target_kind == "trading_unit":
        if "@" not in target_id:
            raise InvalidInput(Violation("target_id", "a trading unit is OPERATOR@SUBSTATION", target_id))
        op, sub = target_id.split("@", 1)
        q = q.where(resources.c.operator_id == op, grid_nodes.c.substation_id == sub, resources.c.state == "active")
    else:
        raise InvalidInput(Violation("target_kind", f"must be one of {', '.join(KINDS)}", target_kind))
    rows = [dict(r) for r in conn.execute(q.order_by(resources.c.resource_id)).mappings()]
    if not rows:
        raise NotFound(target_kind, target_id)
    inactive = [r["resource_id"] for r in rows if r["state"] != "active"]
    if inactive:
        raise InvalidInput(Violation("target_id", "only active resources can be verified", inactive[0]))
    return rows


def schedule(conn: Connection, actor: Actor, target_kind: str, target_id: str, window_start: datetime,
             direction: str = "down", duration_h: float | None = None) -> dict:
    """The center schedules a verification test; the declared capability and duration come from the register."""
    if actor.role != "city_admin":
        raise Forbidden("only the city management center schedules verification tests")
    if direction not in ("down", "up"):
        raise InvalidInput(Violation("direction", "must be down (reduce load) or up (raise load)", direction))
    if window_start.tzinfo is None:
        raise InvalidInput(Violation("window_start", "must carry a time zone", window_start.isoformat()))
    everyone = members(conn, target_kind, target_id)
    key = "adjustable_down_kw" if direction == "down" else "adjustable_up_kw"
    # a member that declares nothing in this direction has nothing to verify in it (and no ratio)
    rows = [r for r in everyone if (r[key] or 0) > 0]
    declared = float(sum(r[key] for r in rows))
    if declared <= 0:
        raise InvalidInput(Violation(key, f"nothing declared to verify in direction {direction}", declared))
    dur = float(duration_h if duration_h is not None else min(r["adjustable_duration_h"] for r in rows))
    if not 0 < dur <= 24:
        raise InvalidInput(Violation("duration_h", "must be in (0, 24]", dur))
    ops = {r["operator_id"] for r in rows}
    row = {"test_id": new_id("VT"), "target_kind": target_kind, "target_id": target_id,
           "operator_id": ops.pop() if len(ops) == 1 else None, "direction": direction, "declared_kw": declared,
           "declared_duration_h": dur, "window_start": window_start,
           "window_end": window_start + timedelta(hours=dur) + RAMP_ALLOWANCE, "state": "scheduled",
           "baseline_method": BASELINE_METHOD,
           "result": {"members": [r["resource_id"] for r in rows],
                      "declared_kw": {r["resource_id"]: r[key] for r in rows},
                      "not_declared": [r["resource_id"] for r in everyone if (r[key] or 0) <= 0]},
           "created_by": actor.name, "created_at": datetime.now(UTC)}
    by_operator: dict[str, list[str]] = {}
    for r in rows:
        by_operator.setdefault(r["operator_id"] or "", []).append(r["resource_id"])
    row["result"]["instructed"] = {op: ids for op, ids in sorted(by_operator.items()) if op}
    row["result"]["no_operator"] = by_operator.get("", [])
    conn.execute(verification_tests.insert().values(**row))
    audit.record(conn, actor, "verification.schedule", "verification_test", row["test_id"], after=row)
    whole = instruction(row)
    for op, ids in row["result"]["instructed"].items():     # down the operator interface, as event instructions
        events.notify(conn, "verification", {**whole, "resources": {i: whole["resources"][i] for i in ids}},
                      operator_id=op)
    return row


def get(conn: Connection, test_id: str) -> dict:
    row = conn.execute(select(verification_tests).where(verification_tests.c.test_id == test_id)).mappings().first()
    if row is None:
        raise NotFound("verification_test", test_id)
    return dict(row)


def list_tests(conn: Connection, operator_id: str | None = None, state: str | None = None,
               target_id: str | None = None, limit: int = 100) -> list[dict]:
    """Tests, newest first (without their per-resource results), optionally of one operator, state
    or target."""
    if not 1 <= limit <= 1000:
        raise InvalidInput(Violation("limit", "must be between 1 and 1000", limit))
    cols = [c for c in verification_tests.c if c.name != "result"]
    q = select(*cols).order_by(verification_tests.c.created_at.desc(), verification_tests.c.test_id.desc())
    for col, value in (("operator_id", operator_id), ("state", state), ("target_id", target_id)):
        if value:
            q = q.where(verification_tests.c[col] == value)
    return [dict(r) for r in conn.execute(q.limit(limit)).mappings()]


def instruction(test: dict) -> dict:
    """The test instruction for the window: each member's declared capability in the test's direction.
    ``schedule`` sends each operator its members' part on the operator feed (topic ``verification``);
    the operator's system sends its devices a limit for the window (``dispatch.verification_rows``)."""
    return {"test_id": test["test_id"], "direction": test["direction"], "start": test["window_start"],
            "end": test["window_end"], "resources": test["result"]["declared_kw"]}


def complete(conn: Connection, actor: Actor, test_id: str, source: TelemetrySource, step_s: int = 60,
             ruleset: str = rules.DEFAULT_RULESET, probe: admission.Probe | None = None) -> dict:
    """Evaluate a scheduled test from telemetry; update the verified capability of each member; run
    the qualification checks of the members' operators again (``admission.recheck``, with ``probe``
    for the TSS round trip: without one the minute-level check cannot pass), so the reserve subsidy
    condition follows what was verified."""
    if actor.role != "city_admin":
        raise Forbidden("only the city management center completes verification tests")
    test = get(conn, test_id)
    if test["state"] != "scheduled":
        raise TransitionRefused("verification_test", test_id, test["state"], "complete",
                                "'complete' needs state scheduled", [])
    ids = test["result"]["members"]
    declared = np.array([test["result"]["declared_kw"][i] for i in ids], dtype=float)
    start, end = _aware(test["window_start"]), _aware(test["window_end"])
    data = np.asarray(source(ids, start - PRE_WINDOW, end, step_s), dtype=float)
    pre = int(PRE_WINDOW.total_seconds() // step_s)
    expected_t = pre + int((end - start).total_seconds() // step_s)
    if data.shape != (len(ids), expected_t):
        raise InvalidInput(Violation("telemetry", f"expected shape {(len(ids), expected_t)}", data.shape))
    base = pre_window_mean(data, pre)
    no_baseline = np.isnan(base)         # no telemetry before the window: no baseline, so no response
    baseline = np.repeat(np.where(no_baseline, 0.0, base)[:, None], data.shape[1], axis=1)
    data = np.where(no_baseline[:, None], baseline, data)
    ver = rules.load(ruleset).section("verification")
    kw = dict(start=pre, step_s=step_s, duration_h=test["declared_duration_h"], direction=test["direction"],
              reach=ver["latency_reach_ratio"], grade_a=ver["grade_a_min_ratio"], grade_b=ver["grade_b_min_ratio"])
    each = assess(baseline, data, declared_kw=declared, **kw)
    whole = assess(baseline.sum(axis=0, keepdims=True), data.sum(axis=0, keepdims=True),
                   declared_kw=np.array([declared.sum()]), **kw)
    now = datetime.now(UTC)
    direction = test["direction"]
    kw_col, latency_col, grade_col = COLUMNS[direction]
    other_grade = COLUMNS["up" if direction == "down" else "down"][2]
    held = {r[0]: (r[1], r[2]) for r in conn.execute(select(
        resources.c.resource_id, resources.c[other_grade], resources.c.flagged).where(resources.c.resource_id.in_(ids)))}
    per_resource = {}
    for i, rid in enumerate(ids):
        grade = str(each["grade"][i])
        latency = None if np.isnan(each["latency_s"][i]) else float(each["latency_s"][i])
        why = "no telemetry before the window (no baseline)" if no_baseline[i] else f"{each['ratio'][i]:.0%} of declared"
        other, flag = held.get(rid, (None, None))
        if grade == "C":
            flagged = f"verification {test_id} ({direction}): grade C, {why}"
        else:               # an A/B clears the flag unless the other direction is still graded C
            flagged = flag if other == "C" else None
        conn.execute(resources.update().where(resources.c.resource_id == rid).values(
            **{kw_col: float(each["verified_kw"][i]), latency_col: latency, grade_col: grade},
            verified_at=now, flagged=flagged))
        per_resource[rid] = {"declared_kw": float(declared[i]), "verified_kw": float(each["verified_kw"][i]),
                             "latency_s": latency, "ratio": float(each["ratio"][i]), "grade": grade,
                             "baseline": not bool(no_baseline[i])}
    latency = None if np.isnan(whole["latency_s"][0]) else float(whole["latency_s"][0])
    rechecked = {}
    owners_ = conn.execute(select(resources.c.operator_id, operators.c.state).select_from(
        resources.join(operators, operators.c.operator_id == resources.c.operator_id)).where(
        resources.c.resource_id.in_(ids)).distinct())
    for op in sorted(op for op, state in owners_ if state in admission.RECHECK_STATES):
        checks = admission.recheck(conn, actor, op, probe, reason=f"verification {test_id}", ruleset=ruleset)["checks"]
        rechecked[op] = {c["check"]: c["passed"] for c in checks}
    result = {**test["result"], "resources": per_resource, "step_s": step_s, "ruleset": ruleset,
              "baseline_kw": float(baseline[~no_baseline, 0].sum()), "without_baseline": int(no_baseline.sum()),
              "rechecked": rechecked}
    values = {"state": "done", "verified_kw": float(whole["verified_kw"][0]), "latency_s": latency,
              "ratio": float(whole["ratio"][0]), "grade": str(whole["grade"][0]), "result": result,
              "completed_at": now}
    conn.execute(verification_tests.update().where(verification_tests.c.test_id == test_id).values(**values))
    audit.record(conn, actor, "verification.complete", "verification_test", test_id,
                 before={"state": "scheduled"}, after={k: v for k, v in values.items() if k != "result"})
    return get(conn, test_id)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def declared_vs_verified(conn: Connection, operator_id: str | None = None) -> list[dict]:
    """Per operator: declared down capability, the verified share, grades, flagged resources."""
    tested = resources.c.verified_grade.is_not(None)
    q = (select(resources.c.operator_id, operators.c.name,
                func.count().label("resources"),
                func.sum(resources.c.adjustable_down_kw).label("declared_down_kw"),
                func.sum(case((tested, resources.c.adjustable_down_kw), else_=0.0)).label("declared_tested_kw"),
                func.sum(func.coalesce(resources.c.verified_down_kw, 0.0)).label("verified_down_kw"),
                func.sum(case((tested, 1), else_=0)).label("tested"),
                func.sum(case((resources.c.verified_grade == "A", 1), else_=0)).label("grade_a"),
                func.sum(case((resources.c.verified_grade == "B", 1), else_=0)).label("grade_b"),
                func.sum(case((resources.c.verified_grade == "C", 1), else_=0)).label("grade_c"),
                func.sum(case((resources.c.flagged.is_not(None), 1), else_=0)).label("flagged"))
         .select_from(resources.join(operators, operators.c.operator_id == resources.c.operator_id))
         .where(resources.c.state == "active").group_by(resources.c.operator_id, operators.c.name)
         .order_by(resources.c.operator_id))
    if operator_id:
        q = q.where(resources.c.operator_id == operator_id)
    out = []
    for r in conn.execute(q).mappings():
        d = {k: (float(v) if k.endswith("_kw") else v) for k, v in r.items()}
        d["verified_ratio"] = d["verified_down_kw"] / d["declared_tested_kw"] if d["declared_tested_kw"] else None
        out.append(d)
    return out


class StoreTelemetry:
    """``TelemetrySource`` over the platform's time-series store: the 1-minute rollups (mean power per
    device and minute) resampled to ``step_s``; a minute without data is NaN (no response)."""

    def __init__(self, engine):
        self.engine = engine

    def __call__(self, ids: list[str], start: datetime, end: datetime, step_s: int) -> np.ndarray:
        from openvpp.store import timeseries

        if step_s % 60:
            raise InvalidInput(Violation("step_s", "the store keeps 1-minute rollups: use a multiple of 60", step_s))
        n_t = int((end - start).total_seconds() // step_s)
        out = np.full((len(ids), n_t), np.nan)
        pos = {rid: i for i, rid in enumerate(ids)}
        with self.engine.connect() as conn:
            rows = timeseries.read_rollup(conn, 60, list(ids), start, end)
        sums = np.zeros_like(out)
        counts = np.zeros_like(out)
        for r in rows:
            k = int((r["bucket"] - start).total_seconds() // step_s)
            if 0 <= k < n_t and r["power_avg_kw"] is not None:
                sums[pos[r["device_id"]], k] += r["power_avg_kw"]
                counts[pos[r["device_id"]], k] += 1
        seen = counts > 0
        out[seen] = sums[seen] / counts[seen]
        return out
