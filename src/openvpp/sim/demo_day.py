"""The demo's event day, in simulated time: what the city's operation center does on a hot July day.

1. A peak-shaving event in the afternoon peak (14:00-16:00): published, declared by every operator
   with a qualifying trading unit, cleared by merit order, instructed to operators, split to devices;
   one device never acknowledges and its share is re-dispatched to the others.
2. A local congestion event on the most overloaded transformer area in Haizhu (the plan's pilot
   district), proposed from the load forecast, declared, cleared and dispatched the same way.
3. V2G in the afternoon peak: the V2G chargers' share of the peak event is not followed as a plain
   set-point; their operator schedules the vehicles plugged in that day (``sim.ev`` sessions) to shed
   it, discharging against battery wear with every vehicle's departure energy guaranteed
   (``services.v2g.event_discharge``); the sessions are metered (energy by TOU period) and a
   charger's metered power is its profile plus the change the event made to its vehicles' schedule.
4. Every device's metered power: its profile, less what it was asked for (simulated devices deliver
   96-100 %; the silent one delivers nothing); both events are evaluated against the GB/T baseline
   and the year is settled (computed → reviewed → approved), the metered V2G sessions included.

The clock is simulated (``now`` is passed to every service), so a whole day runs in seconds; the
business rules are the platform's own services, not a script of their results.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, timedelta

import numpy as np
from sqlalchemy import select

from openvpp.core.settings import Settings
from openvpp.core.timeslots import SLOTS_PER_DAY, local_midnight_utc, slot_start_utc
from openvpp.kernels import v2g as kv2g
from openvpp.kernels.profiles import materialise
from openvpp.model.ev import WORKPLACE, Chargers
from openvpp.services import congestion, dispatch, evaluation, events, settlement
from openvpp.services import v2g as v2g_svc
from openvpp.services.live import live_flex
from openvpp.services.telemetry import BIDIRECTIONAL_TYPES
from openvpp.sim.ev import ARCHETYPE_KIND, generate_sessions
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes, operators, profile_archetypes, resources
from openvpp.store.schema_events import events as events_table
from openvpp.store.schema_settlement import evaluations

DAY = date(2025, 7, 15)            # a hot Tuesday, inside the generated profile year
PEAK = (56, 64)                    # 14:00-16:00 local: the afternoon peak
CENTER = Actor("demo-center", "city_admin")
DISPATCH = Actor("demo-dispatcher", "dispatcher")
HISTORY = evaluation.HISTORY_DAYS


#: the name of the demo day's meter data, recorded with its evaluations (a dispute re-evaluates
#: over the same source, see services/disputes)
METER_SOURCE = "demo-day simulation"


class Fleet:
    """Profile power of every resource for the history days and the event day, and what devices did."""

    def __init__(self, conn, day: date, history_days: int):
        arch = conn.execute(select(profile_archetypes.c.archetype_id, profile_archetypes.c.values_f32,
                                   profile_archetypes.c.year).order_by(profile_archetypes.c.archetype_id)).all()
        self.matrix = np.stack([np.frombuffer(a[1], dtype="<f4") for a in arch])
        self.arch_index = {a[0]: i for i, a in enumerate(arch)}
        year0 = local_midnight_utc(date(int(arch[0][2]), 1, 1))
        self.first_day = day - timedelta(days=history_days)
        self.start = int((local_midnight_utc(self.first_day) - year0).total_seconds() // 900)
        self.days = history_days + 1
        rows = conn.execute(select(resources.c.resource_id, resources.c.profile_archetype,
                                   resources.c.profile_scale_kw, resources.c.noise_seed, resources.c.capacity_kw,
                                   resources.c.adjustable_up_kw, resources.c.adjustable_down_kw,
                                   resources.c.resource_type)
                            .where(resources.c.state == "active").order_by(resources.c.resource_id)).all()
        self.ids = [r[0] for r in rows]
        self.capacity = np.array([r[4] for r in rows], dtype=float)
        self.adj_up = np.array([r[5] for r in rows], dtype=float)
        self.adj_down = np.array([r[6] for r in rows], dtype=float)
        types = np.array([r[7] for r in rows])
        self.bidirectional = np.isin(types, BIDIRECTIONAL_TYPES)
        self.generator = types == "distributed_pv"
        self.v2g = types == "v2g_charger"
        self.pos = {r: i for i, r in enumerate(self.ids)}
        self._rows = rows
        self.power: np.ndarray | None = None
        self.delivery: dict[str, float] = {}

    def materialise(self) -> np.ndarray:
        if self.power is None:
            r = self._rows
            p = materialise(self.matrix, np.array([self.arch_index[x[1]] for x in r]), np.array([x[2] for x in r]),
                            np.array([x[3] for x in r]), self.start, self.start + self.days * SLOTS_PER_DAY)
            self.power = p.reshape(len(r), self.days, SLOTS_PER_DAY).astype(np.float64)
        return self.power

    def flex_at(self, slot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Power, up and down flexibility of every device in an event-day slot, by the live state's rule."""
        p = self.materialise()[:, -1, slot]
        n = len(p)
        _, power, up, down = live_flex(p, np.full(n, 0.5), np.zeros(n, dtype=np.int64), 0, 1, self.capacity,
                                       self.adj_up, self.adj_down, self.bidirectional, self.generator)
        return power, up, down

    def status_at(self, slot: int) -> Callable[[list[str]], dict[str, dict]]:
        power, up, down = self.flex_at(slot)

        def status(ids: list[str]) -> dict[str, dict]:
            return {rid: {"online": True, "power_kw": float(power[i]), "down_kw": float(down[i]),
                          "up_kw": float(up[i])} for rid in ids if (i := self.pos.get(rid)) is not None}
        return status

    def apply(self, rows: list[dict], direction: str) -> None:
        """Devices follow their acknowledged instructions in the event-day slots they cover."""
        p = self.materialise()
        sign = -1.0 if direction == "down" else 1.0
        for r in rows:
            i = self.pos[r["resource_id"]]
            p[i, -1, r["slot"]] += sign * r["kw"] * self.delivery.get(r["resource_id"], 1.0)


def _qualifying_units(conn, ev: dict, fleet: Fleet) -> list[tuple[str, float]]:
    """Every admitted operator's trading units in the event's scope and what they can give in the window:
    their capability, bounded by what the devices' forecast load leaves available (an operator declares
    from its own forecast)."""
    q = (select(resources.c.operator_id, grid_nodes.c.substation_id).distinct()
         .select_from(resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id)
                      .join(operators, operators.c.operator_id == resources.c.operator_id))
         .where(resources.c.state == "active", operators.c.state == "admitted")
         .order_by(resources.c.operator_id, grid_nodes.c.substation_id))
    local = ev["product"] in events.LOCAL_PRODUCTS
    out = []
    for op, sub in conn.execute(q):
        unit = f"{op}@{sub}"
        members = events.unit_members(conn, ev, unit)
        cap = events.unit_capability_kw(members, ev["direction"], 0.25 if local else 1.0)
        idx = [fleet.pos[m["resource_id"]] for m in members if m["resource_id"] in fleet.pos]
        key = 2 if ev["direction"] == "down" else 1
        forecast = min(float(fleet.flex_at(s)[key][idx].sum()) for s in range(ev["start_slot"], ev["end_slot"]))
        cap = min(cap, forecast)
        if cap >= (1.0 if local else 1000.0):
            out.append((unit, cap))
    return out


def _run_event(conn, fleet: Fleet, ev: dict, rng: np.random.Generator, fail_one: bool,
               v2g_hook: Callable | None = None) -> dict:
    """Declare, clear, execute, dispatch (and re-dispatch) one event; return what happened."""
    eid = ev["event_id"]
    n = ev["end_slot"] - ev["start_slot"]
    deadline = ev["declare_deadline"] if ev["declare_deadline"].tzinfo else ev["declare_deadline"].replace(tzinfo=UTC)
    events.transition(conn, DISPATCH, eid, "publish")
    events.transition(conn, DISPATCH, eid, "open")
    units = _qualifying_units(conn, ev, fleet)
    declared = 0
    for unit, cap in units:
        op = unit.split("@", 1)[0]
        floor = 0.0 if ev["product"] in events.LOCAL_PRODUCTS else 1000.0   # the market's trading-unit minimum
        quantity = round(min(cap, max(floor, cap * float(rng.uniform(0.6, 0.95)))), 1)
        price = round(float(rng.uniform(0.3, 0.95)) * ev["price_cap_yuan_per_kwh"], 2)
        events.declare(conn, Actor(f"demo-{op}", "operator_admin", operator_id=op), eid, unit, [quantity] * n, price,
                       now=deadline - timedelta(hours=1))
        declared += 1
    cleared = events.transition(conn, DISPATCH, eid, "clear")
    start = slot_start_utc(ev["day"], ev["start_slot"])
    t0 = start - timedelta(minutes=10)
    events.execute(conn, DISPATCH, eid, now=t0)
    replaced: list[str] = []
    device_rows: list[dict] = []
    ops = sorted({i["operator_id"] for i in events.instructions_of(conn, eid, "operator")})
    status = fleet.status_at(ev["start_slot"])
    split: dict[str, list[dict]] = {}
    for op in ops:
        actor = Actor(f"demo-{op}", "operator_admin", operator_id=op)
        mine = [i["instruction_id"] for i in events.instructions_of(conn, eid, "operator", op)]
        events.acknowledge(conn, actor, mine, now=t0 + timedelta(seconds=3))
        split[op] = dispatch.dispatch(conn, actor, eid, status, lambda *a: None, now=t0 + timedelta(seconds=4))
    # the failing device: a mid-sized one of the operator with the most devices, so others can take over
    silent = None
    if fail_one and any(split.values()):
        rows = max(split.values(), key=len)
        silent = sorted(rows, key=lambda r: r["kw"])[len(rows) // 2]["resource_id"]
        fleet.delivery[silent] = 0.0
    for op, rows in split.items():
        actor = Actor(f"demo-{op}", "operator_admin", operator_id=op)
        for r in rows:
            if r["resource_id"] != silent:
                dispatch.device_ack(conn, {"id": r["instruction_id"], "device": r["resource_id"],
                                           "status": "accepted"}, op, now=t0 + timedelta(seconds=5))
                fleet.delivery.setdefault(r["resource_id"], float(rng.uniform(0.96, 1.0)))
        again = dispatch.redispatch(conn, actor, eid, status, lambda *a: None, now=t0 + timedelta(seconds=30))
        for r in again:
            dispatch.device_ack(conn, {"id": r["instruction_id"], "device": r["resource_id"], "status": "accepted"},
                                op, now=t0 + timedelta(seconds=31))
        device_rows += events.instructions_of(conn, eid, "device", op, state="acked")
    if silent:
        replaced.append(silent)
    v2g_out = None
    if v2g_hook is not None:
        v2g_rows = [r for r in device_rows if fleet.v2g[fleet.pos[r["resource_id"]]]]
        if v2g_rows:
            device_rows = [r for r in device_rows if not fleet.v2g[fleet.pos[r["resource_id"]]]]
            v2g_out = v2g_hook(conn, fleet, ev, v2g_rows)
    fleet.apply(device_rows, ev["direction"])
    return {**({"v2g": v2g_out} if v2g_out else {}), "event_id": eid, "product": ev["product"], "scope": ev["scope_node_id"], "units_declared": declared,
            "cleared_kw": cleared["result"]["cleared_kw"], "clearing_price": cleared["result"]["clearing_price"],
            "device_instructions": len(device_rows), "replaced": replaced}


def _v2g_discharge(conn, fleet: Fleet, ev: dict, rows: list[dict], seed: int, ids: list[str] | None = None) -> dict:
    """The V2G chargers' share of a load-reduction event, delivered by their vehicles (module docstring, 3).

    rows : the chargers' acknowledged device instructions (their kW per slot is the target); without
    any, ``ids`` are V2G chargers outside the cleared units and the target is what their vehicles'
    flexibility envelope can sustain over the event (``services.v2g.envelope_limits``)."""
    ids = sorted({r["resource_id"] for r in rows}) if rows else sorted(ids or [])
    idx = np.array([fleet.pos[r] for r in ids])
    arch = [fleet._rows[i][1] for i in idx]
    kind = np.array([ARCHETYPE_KIND.get(a, (WORKPLACE, True))[0] for a in arch], np.int8)
    chargers = Chargers(charger_id=np.array(ids, dtype=object), max_kw=fleet.capacity[idx], station=np.arange(len(ids)),
                        max_discharge_kw=fleet.capacity[idx], kind=kind)
    day = ev["day"]
    sessions = generate_sessions(chargers, str(day), seed=seed, start_hour=0.0, horizon=SLOTS_PER_DAY)
    target = np.zeros(SLOTS_PER_DAY)
    start = local_midnight_utc(day)
    for r in rows:
        target[r["slot"]] += r["kw"]
    basis = "instructions"
    if not rows:
        plan = v2g_svc.event_discharge(sessions, None, start, target, reference="charging").plan
        env = kv2g.envelope(sessions, plan)
        target[ev["start_slot"]:ev["end_slot"]] = np.floor(
            v2g_svc.envelope_limits(env, "down", ev["start_slot"], ev["end_slot"]) * 0.9)
        basis = "envelope (90 % of what the vehicles can sustain)"
    got = v2g_svc.event_discharge(sessions, None, start, target, reference="charging")
    delta = np.zeros((len(ids), SLOTS_PER_DAY))
    np.add.at(delta, sessions.charger, got.power - got.plan)
    p = fleet.materialise()
    p[idx, -1, :] += delta
    written = v2g_svc.record_sessions(conn, sessions, chargers.charger_id[sessions.charger], start, got.charge,
                                      got.discharge, got.period_codes)
    return {"chargers": len(ids), "target_basis": basis, "sessions_recorded": written, **got.summary()}


def run_day(settings: Settings, progress: Callable[[str, float], None] | None = None, seed: int = 7,
            day: date = DAY) -> dict:
    """Run the demo day on ``settings``' database (a loaded city with admitted operators)."""
    progress = progress or (lambda stage, fraction: None)
    rng = np.random.default_rng(seed)
    engine = db.get_engine(settings.database_url)
    out: dict = {"day": day.isoformat()}
    with engine.begin() as conn:
        progress("day: forecast", 0.0)
        fleet = Fleet(conn, day, HISTORY)
        fleet.materialise()
        peak = events.create(conn, DISPATCH, {
            "product": "peak_shaving", "name": f"afternoon peak {day.isoformat()}", "day": day.isoformat(),
            "start_slot": PEAK[0], "end_slot": PEAK[1], "targets_kw": 1.0, "scope_node_id": "GZ"})
        capacity = sum(c for _, c in _qualifying_units(conn, peak, fleet))
        conn.execute(events.events.update().where(events.events.c.event_id == peak["event_id"]).values(
            targets_kw=[round(0.5 * capacity, 1)] * (PEAK[1] - PEAK[0])))
        progress("day: peak-shaving event", 0.15)
        out["peak_shaving"] = _run_event(conn, fleet, events.get(conn, peak["event_id"]), rng, fail_one=True,
                                         v2g_hook=lambda c, f, e, r: _v2g_discharge(c, f, e, r, seed))

        if "v2g" not in out["peak_shaving"]:
            # the V2G chargers' trading units are below the market's 1 MW minimum: their operators answer
            # the peak with the vehicles' envelope (V2G pilot discharge, metered and settled per session)
            v2g_ids = [r[0] for r in conn.execute(
                select(resources.c.resource_id).join(operators, operators.c.operator_id == resources.c.operator_id)
                .where(resources.c.resource_type == "v2g_charger", resources.c.state == "active",
                       operators.c.state == "admitted"))]
            if v2g_ids:
                progress("day: V2G discharge", 0.35)
                out["peak_shaving"]["v2g"] = _v2g_discharge(conn, fleet, events.get(conn, peak["event_id"]), [],
                                                            seed, v2g_ids)
        progress("day: congestion scan", 0.4)
        haizhu = {r[0] for r in conn.execute(select(grid_nodes.c.node_id).where(
            grid_nodes.c.district_id == "GZ-HZ", grid_nodes.c.level == "transformer_area"))}
        found = [f for f in congestion.scan(conn, day) if f["node_id"] in haizhu]
        for f in found:
            try:
                ev = congestion.propose(conn, DISPATCH, f["node_id"], day)
            except Exception:  # noqa: BLE001 - a node without declarable resources: try the next
                continue
            probe = _qualifying_units(conn, ev, fleet)
            if probe:
                out["congestion"] = {**_run_event(conn, fleet, ev, rng, fail_one=False),
                                     "peak_loading": f["peak_loading"]}
                out["congestion"]["relief"] = {k: v for k, v in congestion.relief_report(conn, ev["event_id"]).items()
                                               if k in ("peak_before", "peak_after", "rating_kva")}
                break
            events.transition(conn, DISPATCH, ev["event_id"], "cancel", reason="no flexible resources under it")
        progress("day: evaluation", 0.65)
        source = evaluation.ArrayMeterSource(fleet.ids, fleet.first_day, fleet.materialise(), name=METER_SOURCE)
        after = local_midnight_utc(day) + timedelta(days=1, hours=1)
        for key in ("peak_shaving", "congestion"):
            if key in out:
                ev_sum = evaluation.evaluate(conn, CENTER, out[key]["event_id"], source, now=after)
                out[key]["evaluation"] = {"evaluation_id": ev_sum["evaluation_id"],
                                          "credited_kwh": sum(o["credited"] for o in ev_sum["operators"]),
                                          "v2g_kwh": round(float(ev_sum["totals"]["v2g_kwh"]), 3),
                                          "operators": len(ev_sum["operators"])}
        progress("day: settlement", 0.85)
        st = settlement.compute(conn, CENTER, day.year)
        st = settlement.transition(conn, CENTER, st["settlement_id"], "review", reason="demo review")
        st = settlement.transition(conn, CENTER, st["settlement_id"], "approve", reason="demo approval")
        out["settlement"] = {"settlement_id": st["settlement_id"], "state": st["state"], "summary": st["summary"]}
        if "v2g" in out["peak_shaving"]:
            out["v2g"] = {**out["peak_shaving"]["v2g"], "event_id": out["peak_shaving"]["event_id"],
                          "settlement": st["summary"].get("v2g_sessions"),
                          "evaluated_v2g_kwh": out["peak_shaving"]["evaluation"].get("v2g_kwh")}
    progress("day: done", 1.0)
    return out


def replay_source(conn, day: date = DAY, history_days: int = HISTORY) -> evaluation.ArrayMeterSource:
    """The demo day's meter data after the fact, for the API's re-evaluations (disputes): the
    profiles the day materialised, with the metered power its current evaluations stored for the
    event windows (what the simulated devices did). Named as the day's own source, so a dispute's
    check of the evaluated data (source and SHA-256) tells whether it really is the same data."""
    fleet = Fleet(conn, day, history_days)
    power = fleet.materialise().copy()
    q = (select(evaluations.c.evaluation_id)
         .select_from(evaluations.join(events_table, events_table.c.event_id == evaluations.c.event_id))
         .where(evaluations.c.status == "current", events_table.c.day == day))
    for (evaluation_id,) in conn.execute(q):
        for r in evaluation.rows(conn, evaluation_id, "resource"):   # the resource file (evaluation_rows before 0012)
            rid, slot, kw = r["key_id"], r["slot"], r["metered_kw"]
            if kw is not None and rid in fleet.pos:
                power[fleet.pos[rid], -1, slot] = kw
    return evaluation.ArrayMeterSource(fleet.ids, fleet.first_day, power, name=METER_SOURCE)
