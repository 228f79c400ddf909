"""Effect evaluation of an event (效果评估): baseline, metered, response, cleared, ratio, credited.

    awards (unit × slot: cleared kW, price) ─┐
    members of each unit at the event time ──┼──▶ kernels.baseline ──▶ kernels.evaluation ──▶ stored rows
    meter data (MeterSource) ────────────────┘        (named method)      (band per unit)

An evaluation is reproducible from stored data and records its inputs' versions: the rule set
id, the baseline method with every parameter, the meter source and a SHA-256 of the meter
arrays it read, the history window and the days it excluded. Re-running it on unchanged data
gives the same hash and the same numbers; a new run is a new version, the previous one is
superseded (never overwritten). A dispute's re-evaluation is stored as a *candidate* version that
becomes current only when the center approves the dispute (``services.disputes``).

Meter data comes through a :class:`MeterSource`: the telemetry store's 15-minute rollups in
production (:class:`StoreMeterSource`), arrays in tests and notebooks (:class:`ArrayMeterSource`),
or either with an operator's corrected values laid over it (:class:`CorrectedMeterSource`).

Assumptions (docs/settlement.md): members of a unit are the resources of the operator under the
unit's clearing node at the start of the window (transfers respected, ``services.access``),
within the event's grid scope and pool; a resource with no meter data (or no baseline) delivers
nothing; a V2G charger's exported energy is paid by the V2G subsidy, the rest of its response by
the active one; carbon credits only curtailed energy (``services.carbon``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Connection, and_, exists, func, or_, select

from openvpp.core import rules
from openvpp.core.calendar import day_kinds
from openvpp.core.errors import Forbidden, InvalidInput, NotFound, TransitionRefused, Violation
from openvpp.core.ids import new_id
from openvpp.core.timeslots import SLOT_MINUTES, SLOTS_PER_DAY, local_midnight_utc, slot_start_utc
from openvpp.kernels import evaluation as kev
from openvpp.kernels.baseline import BaselineSpec, pre_event_slots, same_day_adjustment
from openvpp.services import events
from openvpp.services import pools as pool_svc
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes, resource_links, resources
from openvpp.store.schema_events import events as events_t
from openvpp.store.schema_events import instructions
from openvpp.store.schema_settlement import evaluation_rows, evaluations
from openvpp.store.schema_telemetry import telemetry_rollup

HISTORY_DAYS = 30           # calendar days read before the event day: enough for 5 working days after a long holiday
CENTER_ROLES = ("city_admin", "dispatcher")
SUBSIDY_KIND = {"reactive": "reactive", "reserve": "reserve"}   # else active
#: assumptions used when the rule set's [carbon] section does not name them (docs/settlement.md)
ASSUMED_CARBON = {
    "rebound_window_slots": 8,
    "shifting_types": ["user_storage", "v2g_charger", "ev_charging", "ev_swapping", "base_station", "shore_power"],
}


def kind_of(product: str) -> str:
    """Subsidy kind of an event product: active, reactive or reserve."""
    return SUBSIDY_KIND.get(product, "active")


def quantity_unit(product: str) -> str:
    return {"active": "kWh", "reactive": "kvarh", "reserve": "kW·h"}[kind_of(product)]


# ---------------------------------------------------------------- meter sources


@dataclass
class MeterData:
    """Meter arrays of resources × days × 96 slots (local days).

    values : (n, n_days, 96) float — mean kW (or kvar) per slot, NaN = not measured
    minutes : (n, n_days, 96) float or None — minutes of each slot covered by telemetry (0..15)
    """

    values: np.ndarray
    minutes: np.ndarray | None = None


class MeterSource(Protocol):
    """Where metered data comes from. ``quantity`` is ``"power_kw"`` or ``"reactive_kvar"``."""

    name: str

    def read(self, resource_ids: Sequence[str], first_day: date, n_days: int, quantity: str = "power_kw",
             minutes: bool = False) -> MeterData: ...


class ArrayMeterSource:
    """Meter data held in arrays (tests, notebooks, benchmarks).

    power_kw / reactive_kvar / minutes : (n, n_days, 96) for ``resource_ids`` from ``first_day``.
    Unknown resources and days outside the arrays read as NaN (not measured). Without
    ``minutes``, a measured slot counts as fully covered.
    """

    def __init__(self, resource_ids: Sequence[str], first_day: date, power_kw: np.ndarray,
                 reactive_kvar: np.ndarray | None = None, minutes: np.ndarray | None = None,
                 name: str = "arrays"):
        self.pos = {r: i for i, r in enumerate(resource_ids)}
        self.first_day = first_day
        self.data = {"power_kw": np.asarray(power_kw, dtype=np.float64)}
        if reactive_kvar is not None:
            self.data["reactive_kvar"] = np.asarray(reactive_kvar, dtype=np.float64)
        self._minutes = None if minutes is None else np.asarray(minutes, dtype=np.float64)
        self.name = name

    def _take(self, arr: np.ndarray, resource_ids: Sequence[str], first_day: date, n_days: int) -> np.ndarray:
        out = np.full((len(resource_ids), n_days, SLOTS_PER_DAY), np.nan)
        offset = (first_day - self.first_day).days
        lo, hi = max(0, -offset), min(n_days, arr.shape[1] - offset)
        rows = np.array([self.pos.get(r, -1) for r in resource_ids], dtype=np.int64)
        have = rows >= 0
        if hi > lo and have.any():
            out[np.flatnonzero(have), lo:hi] = arr[rows[have], lo + offset:hi + offset]
        return out

    def read(self, resource_ids: Sequence[str], first_day: date, n_days: int, quantity: str = "power_kw",
             minutes: bool = False) -> MeterData:
        if quantity not in self.data:
            raise InvalidInput(Violation("quantity", f"this source holds {', '.join(self.data)}", quantity))
        values = self._take(self.data[quantity], resource_ids, first_day, n_days)
        mins = None
        if minutes:
            mins = (self._take(self._minutes, resource_ids, first_day, n_days) if self._minutes is not None
                    else np.where(np.isnan(values), 0.0, float(SLOT_MINUTES)))
        return MeterData(values, mins)


class StoreMeterSource:
    """The telemetry store: 15-minute rollups (mean power / reactive power per device) and the
    1-minute rollups for coverage. Device ids are resource ids."""

    CHUNK = 2000

    def __init__(self, conn: Connection, name: str = "telemetry"):
        self.conn = conn
        self.name = name

    def _buckets(self, step_s: int, ids: Sequence[str], start: datetime, end: datetime):
        r = telemetry_rollup
        for lo in range(0, len(ids), self.CHUNK):
            q = select(r.c.device_id, r.c.bucket, r.c.n, r.c.power_sum_kw, r.c.reactive_sum_kvar,
                       r.c.n_reactive).where(r.c.step_s == step_s, r.c.device_id.in_(list(ids[lo:lo + self.CHUNK])),
                                             r.c.bucket >= start, r.c.bucket < end)
            yield from self.conn.execute(q)

    def read(self, resource_ids: Sequence[str], first_day: date, n_days: int, quantity: str = "power_kw",
             minutes: bool = False) -> MeterData:
        if quantity not in ("power_kw", "reactive_kvar"):
            raise InvalidInput(Violation("quantity", "must be power_kw or reactive_kvar", quantity))
        ids = list(resource_ids)
        pos = {r: i for i, r in enumerate(ids)}
        start = local_midnight_utc(first_day)
        end = start + timedelta(days=n_days)
        flat = np.full((len(ids), n_days * SLOTS_PER_DAY), np.nan)
        t0 = start.timestamp()
        for dev, bucket, n, p_sum, q_sum, n_q in self._buckets(900, ids, start, end):
            k = int((_utc(bucket).timestamp() - t0) // 900)
            if quantity == "power_kw" and n:
                flat[pos[dev], k] = p_sum / n
            elif quantity == "reactive_kvar" and n_q:
                flat[pos[dev], k] = q_sum / n_q
        mins = None
        if minutes:
            m = np.zeros((len(ids), n_days * SLOTS_PER_DAY))
            for dev, bucket, *_ in self._buckets(60, ids, start, end):
                m[pos[dev], int((_utc(bucket).timestamp() - t0) // 900)] += 1
            mins = m.reshape(len(ids), n_days, SLOTS_PER_DAY)
        return MeterData(flat.reshape(len(ids), n_days, SLOTS_PER_DAY), mins)


class CorrectedMeterSource:
    """Another source with corrected values laid over it: ``{resource_id: {slot: value}}`` on ``day``."""

    def __init__(self, base: MeterSource, day: date, corrections: Mapping[str, Mapping[int, float]]):
        self.base, self.day, self.corrections = base, day, corrections
        self.name = f"{base.name}+corrections"

    def read(self, resource_ids: Sequence[str], first_day: date, n_days: int, quantity: str = "power_kw",
             minutes: bool = False) -> MeterData:
        data = self.base.read(resource_ids, first_day, n_days, quantity, minutes)
        d = (self.day - first_day).days
        if 0 <= d < n_days:
            for i, rid in enumerate(resource_ids):
                for slot, value in self.corrections.get(rid, {}).items():
                    data.values[i, d, int(slot)] = float(value)
                    if data.minutes is not None:
                        data.minutes[i, d, int(slot)] = float(SLOT_MINUTES)
        return data


def _utc(ts: datetime | str) -> datetime:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


# ---------------------------------------------------------------- members of a unit at the event time


def members_at(conn: Connection, ev: dict, unit_id: str, at: datetime) -> list[dict]:
    """Resources of a trading unit ``OPERATOR@SUBSTATION`` at instant ``at``: the operator's then
    (open link or a closed one covering ``at``), under the clearing node, inside the event's scope
    and pool."""
    op, sub = unit_id.split("@", 1)
    open_link = and_(resources.c.state == "active", resources.c.operator_id == op,
                     or_(resources.c.operator_since.is_(None), resources.c.operator_since <= at))
    closed_link = exists(select(resource_links.c.link_id).where(
        resource_links.c.resource_id == resources.c.resource_id, resource_links.c.operator_id == op,
        or_(resource_links.c.valid_from.is_(None), resource_links.c.valid_from <= at),
        resource_links.c.valid_to > at))
    q = (select(resources.c.resource_id, resources.c.owner_id, resources.c.resource_type,
                resources.c.adjustable_down_kw, resources.c.adjustable_up_kw, resources.c.verified_down_kw,
                resources.c.verified_up_kw)
         .select_from(resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id))
         .where(grid_nodes.c.substation_id == sub, or_(open_link, closed_link)))
    scope = conn.execute(select(grid_nodes).where(grid_nodes.c.node_id == ev["scope_node_id"])).mappings().one()
    level_col = {"district": grid_nodes.c.district_id, "substation": grid_nodes.c.substation_id,
                 "feeder": grid_nodes.c.feeder_id, "transformer_area": grid_nodes.c.node_id}.get(scope["level"])
    if level_col is not None:
        q = q.where(level_col == scope["node_id"])
    rows = [dict(r) for r in conn.execute(q.order_by(resources.c.resource_id)).mappings()]
    if ev.get("pool_id"):
        engine = pool_svc.PoolEngine.from_db(conn, [ev["pool_id"]])
        inside = set(engine.reg.resource_id[engine.mask(ev["pool_id"])].tolist())
        rows = [r for r in rows if r["resource_id"] in inside]
    key = "down" if ev["direction"] == "down" else "up"
    for r in rows:
        v = r[f"verified_{key}_kw"]
        r["capability_kw"] = float(v if v is not None else r[f"adjustable_{key}_kw"])
    return rows


# ---------------------------------------------------------------- evaluate


def _excluded_days(conn: Connection, event_id: str, first_day: date, day: date) -> list[date]:
    """Earlier event days (events that reached execution) inside the history window."""
    q = select(events_t.c.day).where(events_t.c.day >= first_day, events_t.c.day < day,
                                     events_t.c.event_id != event_id,
                                     events_t.c.state.in_(("executing", "evaluating", "settled"))).distinct()
    return sorted(r[0] for r in conn.execute(q))


def default_spec(day: date) -> BaselineSpec:
    """GB/T working-day baseline for a working-day event, the similar-day one otherwise."""
    working = int(day_kinds(np.array([np.datetime64(day)]), strict=False)[0]) == 0
    return BaselineSpec("gbt-workday" if working else "gbt-similar")


def fingerprint(ids: Sequence[str], first_day: date, *arrays: np.ndarray | None) -> str:
    """SHA-256 of the meter data an evaluation read: ids, first day and the arrays' bytes."""
    h = hashlib.sha256()
    h.update("\x1f".join(ids).encode())
    h.update(first_day.isoformat().encode())
    for a in arrays:
        if a is not None:
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def _rebound_slots(start: int, end: int, width: int) -> np.ndarray:
    return np.r_[max(0, start - width):start, end:min(SLOTS_PER_DAY, end + width)].astype(np.int64)


def _carbon_rules(rs: rules.RuleSet) -> dict:
    sec = rs.data.get("carbon", {})
    return {k: sec.get(k, v) for k, v in ASSUMED_CARBON.items()} | {
        "from_ruleset": sorted(k for k in ASSUMED_CARBON if k in sec)}


def evaluate(conn: Connection, actor: Actor, event_id: str, source: MeterSource, spec: BaselineSpec | None = None,
             history_days: int = HISTORY_DAYS, reason: str | None = None, now: datetime | None = None,
             candidate_for: str | None = None) -> dict:
    """Evaluate an event from its awards and meter data; store it as the event's new version.

    ``candidate_for`` (a dispute id) stores the result as a candidate that does not replace the
    current evaluation until the dispute is approved. Moves an ``executing`` event whose window
    has ended to ``evaluating``. Returns :func:`summary` of the stored evaluation.
    """
    if actor.role not in CENTER_ROLES:
        raise Forbidden("evaluations are run by the center (city admin or dispatcher)")
    ev = events.get(conn, event_id)
    now = now or datetime.now(UTC)
    _, window_end = events.window_utc(ev)
    if ev["state"] == "executing":
        if now < window_end:
            raise TransitionRefused("event", event_id, ev["state"], "evaluate",
                                    f"the window ends at {window_end.isoformat()}", [])
        ev = events.transition(conn, actor, event_id, "evaluate")
    allowed = ("evaluating", "settled") if candidate_for else ("evaluating",)
    if ev["state"] not in allowed:
        raise TransitionRefused("event", event_id, ev["state"], "evaluate",
                                "needs state executing or evaluating (settled events: through a dispute)",
                                list(allowed))
    if not 1 <= history_days <= 400:
        raise InvalidInput(Violation("history_days", "must be in 1..400", history_days))
    rs = rules.load(ev["ruleset"])
    band = rs.section("evaluation")
    low, high = float(band["valid_band_low"]), float(band["valid_band_high"])
    spec = spec or default_spec(ev["day"])
    if spec.method == "temperature-regression":
        raise InvalidInput(Violation("baseline", "temperature regression needs a weather source, which the "
                                                 "platform does not have yet", spec.method))
    start, end = ev["start_slot"], ev["end_slot"]
    s = end - start
    product, kind = ev["product"], kind_of(ev["product"])

    # awards → units × slots
    awarded = events.awarded(conn, event_id)
    units = sorted({a["unit_id"] for a in awarded})
    upos = {u: i for i, u in enumerate(units)}
    unit_operator = {a["unit_id"]: a["operator_id"] for a in awarded}
    cleared_u = np.zeros((len(units), s))
    price_u = np.zeros((len(units), s))
    for a in awarded:
        cleared_u[upos[a["unit_id"]], a["slot"] - start] = a["cleared_kw"]
        price_u[upos[a["unit_id"]], a["slot"] - start] = a["price_yuan_per_kwh"]

    at = slot_start_utc(ev["day"], start)
    members: list[dict] = []
    for u in units:
        for m in members_at(conn, ev, u, at):
            members.append({**m, "unit": upos[u], "unit_id": u, "operator_id": unit_operator[u]})
    ids = [m["resource_id"] for m in members]
    codes = np.array([m["unit"] for m in members], dtype=np.int64)

    # device instructions (operator's dispatch), when there are any, give resources' own cleared kW
    rpos = {r: i for i, r in enumerate(ids)}
    cleared_r = None
    dev = conn.execute(select(instructions.c.resource_id, instructions.c.slot, instructions.c.kw).where(
        instructions.c.event_id == event_id, instructions.c.level == "device",
        instructions.c.state.in_(("sent", "acked")))).all()
    if dev:
        cleared_r = np.zeros((len(ids), s))
        for rid, slot, kw in dev:
            if rid in rpos and start <= slot < end:
                cleared_r[rpos[rid], slot - start] += kw

    # meter data and baseline
    first_day = ev["day"] - timedelta(days=history_days)
    n_days = history_days + 1
    quantity = "reactive_kvar" if kind == "reactive" else "power_kw"
    data = source.read(ids, first_day, n_days, quantity, minutes=(kind == "reserve"))
    if data.values.shape != (len(ids), n_days, SLOTS_PER_DAY):
        raise InvalidInput(Violation("meter data", f"must be {(len(ids), n_days, SLOTS_PER_DAY)}",
                                     data.values.shape))
    dates = np.arange(np.datetime64(first_day), np.datetime64(first_day) + n_days)
    excluded_days = _excluded_days(conn, event_id, first_day, ev["day"])
    excluded = np.isin(dates, np.array(excluded_days, dtype="datetime64[D]"))
    call: dict[str, Any] = {"load": data.values, "day_kinds": day_kinds(dates, strict=False),
                            "excluded": excluded, "event_day_idx": n_days - 1}
    if spec.method == "high-x-of-y":
        call["window_slots"] = slice(start, end)
    base = spec.compute(**call) if ids else None
    base_day = base.power_kw if base is not None else np.zeros((0, SLOTS_PER_DAY))
    met_day = data.values[:, -1]
    adjust_value = None
    if spec.adjustment is not None and ids:
        adj = {"kind": "multiplicative", "cap": 0.2, **spec.adjustment}
        out = same_day_adjustment(base_day, met_day, slice(start, end), pre_event_slots(start), **adj)
        base_day, adjust_value = out.power_kw, out.value
    base_w, met_w = base_day[:, start:end], met_day[:, start:end]
    types = np.array([m["resource_type"] for m in members], dtype=object)
    capability = np.array([m["capability_kw"] for m in members], dtype=np.float64)

    # evaluation on arrays
    if kind == "reserve":
        share = cleared_r if cleared_r is not None else kev.split_cleared(cleared_u, codes, capability)
        avail_kw = kev.reserve_available(share, data.minutes[:, -1, start:end]) / kev.energy(1.0)
        unit_avail = kev.group_slots(codes, len(units), avail_kw)
        unit_perf = kev.performance(unit_avail, cleared_u, low, high)
        credited_kw = kev.allocate(unit_perf.credited_kw, codes, avail_kw)
        resp, cleared_rs = avail_kw, share
        unit_base = kev.group_slots(codes, len(units), base_w)
        unit_met = kev.group_slots(codes, len(units), met_w)
        unit_resp = unit_avail
    else:
        out = kev.evaluate(base_w, met_w, codes, cleared_u, ev["direction"], low, high, capability_kw=capability,
                           cleared_kw=cleared_r)
        resp, cleared_rs, credited_kw = out.response_kw, out.cleared_kw, out.credited_kw
        unit_perf, unit_base, unit_met, unit_resp = out.unit, out.unit_baseline_kw, out.unit_metered_kw, \
            out.unit_response_kw
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_r = np.where(cleared_rs > 0, resp / np.where(cleared_rs > 0, cleared_rs, 1.0), np.nan)
    credited = kev.energy(credited_kw)
    v2g = np.zeros_like(credited)
    curtailed = np.zeros_like(credited)
    carbon = _carbon_rules(rs)
    if kind == "active" and ev["direction"] == "down":
        v2g = kev.v2g_discharge(credited, met_w, types == "v2g_charger")
        reb = kev.rebound_kwh(base_day, met_day, _rebound_slots(start, end, int(carbon["rebound_window_slots"])))
        curtailed = kev.curtailed(credited, reb, np.isin(types, list(carbon["shifting_types"])))
    price_r = price_u[codes] if len(ids) else np.zeros((0, s))

    # store
    version = (conn.execute(select(func.max(evaluations.c.version)).where(evaluations.c.event_id == event_id))
               .scalar() or 0) + 1
    evaluation_id = new_id("EVA")
    telemetry_hash = fingerprint(ids, first_day, data.values, data.minutes)
    unit_credited = kev.energy(unit_perf.credited_kw)
    totals = {
        "credited": float(credited.sum()), "quantity_unit": quantity_unit(product),
        "cleared_kwh": float(kev.energy(cleared_u).sum()), "v2g_kwh": float(v2g.sum()),
        "curtailed_kwh": float(curtailed.sum()), "shortfall": float(kev.energy(unit_perf.shortfall_kw).sum()),
        "units": len(units), "resources": len(ids),
        "not_measured": int(np.isnan(resp).sum()) if kind != "reserve" else int((data.minutes[:, -1, start:end] == 0)
                                                                                  .sum()),
        "slots_valid": int(unit_perf.valid.sum()), "slots_cleared": int((cleared_u > 0).sum()),
        "by_operator": {},
    }
    for u, uid in enumerate(units):
        op = totals["by_operator"].setdefault(unit_operator[uid], {"credited": 0.0, "cleared_kwh": 0.0})
        op["credited"] += float(unit_credited[u].sum())
        op["cleared_kwh"] += float(kev.energy(cleared_u[u]).sum())
    inputs = {"history_days": history_days, "first_day": first_day, "event_day_idx": n_days - 1,
              "excluded_days": excluded_days, "band": {"low": low, "high": high},
              "days_used_min": int(np.min(base.days_used)) if base is not None and len(ids) else None,
              "adjustment_values": None if adjust_value is None else {r: _num(x) for r, x in zip(ids, adjust_value,
                                                                                           strict=True)},
              "device_instructions": bool(dev), "carbon": carbon,
              "members": {u: [m["resource_id"] for m in members if m["unit_id"] == u] for u in units}}
    status = "candidate" if candidate_for else "current"
    if status == "current":
        conn.execute(evaluations.update().where(evaluations.c.event_id == event_id,
                                                evaluations.c.status == "current").values(status="superseded"))
    header = {"evaluation_id": evaluation_id, "event_id": event_id, "version": version, "status": status,
              "product": product, "direction": ev["direction"], "quantity_unit": quantity_unit(product),
              "ruleset": rs.id, "baseline_id": spec.id,
              "baseline": {"method": spec.method, "params": _jsonable(spec.resolved),
                           "adjustment": dict(spec.adjustment) if spec.adjustment else None},
              "meter_source": source.name, "telemetry_sha256": telemetry_hash, "inputs": audit._plain(inputs),
              "totals": totals, "dispute_id": candidate_for, "reason": reason, "created_by": actor.name,
              "created_at": now}
    conn.execute(evaluations.insert().values(**header))
    rows = []
    for i, m in enumerate(members):
        for j in range(s):
            rows.append(_row(evaluation_id, "resource", m["resource_id"], start + j, m["unit_id"], m["operator_id"],
                             m["owner_id"], m["resource_type"], base_w[i, j], met_w[i, j], resp[i, j],
                             cleared_rs[i, j], ratio_r[i, j], credited[i, j], v2g[i, j], 0.0, curtailed[i, j],
                             price_r[i, j]))
    unit_v2g = kev.group_slots(codes, len(units), v2g)
    unit_curt = kev.group_slots(codes, len(units), curtailed)
    unit_short = kev.energy(unit_perf.shortfall_kw)
    for u, uid in enumerate(units):
        for j in range(s):
            rows.append(_row(evaluation_id, "unit", uid, start + j, uid, unit_operator[uid], None, None,
                             unit_base[u, j], unit_met[u, j], unit_resp[u, j], cleared_u[u, j],
                             unit_perf.ratio[u, j], unit_credited[u, j], unit_v2g[u, j], unit_short[u, j],
                             unit_curt[u, j], price_u[u, j]))
    for lo in range(0, len(rows), 5000):
        conn.execute(evaluation_rows.insert(), rows[lo:lo + 5000])
    audit.record(conn, actor, "evaluation.run", "evaluation", evaluation_id,
                 after={"event_id": event_id, "version": version, "status": status, "baseline": spec.id,
                        "telemetry_sha256": telemetry_hash, "ruleset": rs.id, "credited": totals["credited"]},
                 reason=reason)
    return summary(conn, evaluation_id)


def _num(x: float) -> float | None:
    x = float(x)
    return None if np.isnan(x) or np.isinf(x) else x


def _row(evaluation_id, level, key, slot, unit_id, operator_id, owner_id, rtype, base, met, resp, cleared, ratio,
         credited, v2g, shortfall, curtailed, price) -> dict:
    return {"evaluation_id": evaluation_id, "level": level, "key_id": key, "slot": int(slot), "unit_id": unit_id,
            "operator_id": operator_id, "owner_id": owner_id, "resource_type": rtype, "baseline_kw": _num(base),
            "metered_kw": _num(met), "response_kw": _num(resp), "cleared_kw": float(cleared), "ratio": _num(ratio),
            "credited": float(credited), "v2g_kwh": float(v2g), "shortfall": float(shortfall),
            "curtailed_kwh": float(curtailed), "price_yuan": float(price)}


def _jsonable(params: Mapping[str, Any]) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}


# ---------------------------------------------------------------- reads


def get(conn: Connection, evaluation_id: str) -> dict:
    row = conn.execute(select(evaluations).where(evaluations.c.evaluation_id == evaluation_id)).mappings().first()
    if row is None:
        raise NotFound("evaluation", evaluation_id)
    return dict(row)


def current(conn: Connection, event_id: str) -> dict:
    """The event's current evaluation."""
    row = conn.execute(select(evaluations).where(evaluations.c.event_id == event_id,
                                                 evaluations.c.status == "current")).mappings().first()
    if row is None:
        raise NotFound("evaluation of event", event_id)
    return dict(row)


def versions(conn: Connection, event_id: str) -> list[dict]:
    q = select(evaluations).where(evaluations.c.event_id == event_id).order_by(evaluations.c.version)
    return [dict(r) for r in conn.execute(q).mappings()]


def rows(conn: Connection, evaluation_id: str, level: str = "unit", operator_id: str | None = None,
         owner_id: str | None = None) -> list[dict]:
    """Stored rows of an evaluation at ``level`` (resource or unit), optionally one tenant's."""
    q = select(evaluation_rows).where(evaluation_rows.c.evaluation_id == evaluation_id,
                                      evaluation_rows.c.level == level)
    if operator_id:
        q = q.where(evaluation_rows.c.operator_id == operator_id)
    if owner_id:
        q = q.where(evaluation_rows.c.owner_id == owner_id)
    return [dict(r) for r in conn.execute(q.order_by(evaluation_rows.c.key_id, evaluation_rows.c.slot)).mappings()]


def summary(conn: Connection, evaluation_id: str, operator_id: str | None = None, owner_id: str | None = None,
            resources_too: bool = False) -> dict:
    """An evaluation per unit, operator and slot (and per resource on request), within a tenant's scope."""
    head = get(conn, evaluation_id)
    unit_rows = [] if owner_id else rows(conn, evaluation_id, "unit", operator_id)
    units: dict[str, dict] = {}
    for r in unit_rows:
        u = units.setdefault(r["key_id"], {"unit_id": r["key_id"], "operator_id": r["operator_id"], "slots": []})
        u["slots"].append({k: r[k] for k in ("slot", "baseline_kw", "metered_kw", "response_kw", "cleared_kw",
                                             "ratio", "credited", "v2g_kwh", "shortfall", "curtailed_kwh",
                                             "price_yuan")})
    ops: dict[str, dict] = {}
    for r in unit_rows:
        o = ops.setdefault(r["operator_id"], {"operator_id": r["operator_id"], "slots": {}})
        s = o["slots"].setdefault(r["slot"], {"slot": r["slot"], "baseline_kw": 0.0, "metered_kw": 0.0,
                                              "response_kw": 0.0, "cleared_kw": 0.0, "credited": 0.0})
        for k in ("baseline_kw", "metered_kw", "response_kw", "cleared_kw", "credited"):
            s[k] += r[k] or 0.0
    for o in ops.values():
        o["slots"] = sorted(o["slots"].values(), key=lambda x: x["slot"])
        for s in o["slots"]:
            s["ratio"] = s["response_kw"] / s["cleared_kw"] if s["cleared_kw"] else None
        o["credited"] = sum(s["credited"] for s in o["slots"])
    out = {**head, "units": list(units.values()), "operators": list(ops.values())}
    if resources_too or owner_id:
        out["resources"] = rows(conn, evaluation_id, "resource", operator_id, owner_id)
    if operator_id or owner_id:     # a tenant sees its own totals, not the city's
        mine = out["resources"] if owner_id else unit_rows
        out["totals"] = {"quantity_unit": head["totals"]["quantity_unit"],
                         "credited": sum(r["credited"] for r in mine),
                         "curtailed_kwh": sum(r["curtailed_kwh"] for r in mine),
                         "v2g_kwh": sum(r["v2g_kwh"] for r in mine)}
        out["inputs"] = {k: v for k, v in head["inputs"].items() if k != "members"}
    return out
