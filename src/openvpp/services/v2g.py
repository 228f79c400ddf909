"""V2G as a resource of the VPP: metered discharge for settlement, envelope-bounded declarations,
pool flexibility from the envelope, and discharge scheduled into an event.

* :func:`metered_discharge` — the year's completed V2G sessions with their discharged energy by TOU
  period (``ev_sessions``, metered by the OCPP central system or a simulated fleet), charger,
  operator and owner: what ``services.settlement`` prices into the ledger.
* :func:`discharge_prices` — the discharge price of each TOU period (0.453 x coefficient) in Decimal.
* :func:`propose_declaration` / :func:`declare_from_envelope` — a V2G trading unit's offer into an
  event bounded by the fleet's flexibility envelope (``kernels.v2g.envelope``): per slot by the
  power it can shed, and over the window by the stored energy it can give up while every vehicle
  still leaves with its guaranteed energy; the declaration itself goes through ``events.declare``.
* :func:`pool_view` — a pool's totals with its V2G chargers counted from the envelope instead of
  their nameplate (pools call it; ``services.pools`` is not changed).
* :func:`event_discharge` — the sessions' schedule for an event: discharge to deliver a target
  reduction in the event slots at least cost with battery wear, departure energy guaranteed
  (``kernels.ev_lp.schedule_v2g`` with ``fleet_max_kw``), and the metered discharge per session.
* :func:`record_sessions` — write metered sessions (energy by TOU period) where settlement reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
from sqlalchemy import Connection, and_, insert, select

from openvpp.core import rules as rulesets
from openvpp.core.errors import InvalidInput, Violation
from openvpp.core.money import yuan
from openvpp.core.timeslots import SLOT_H, local_midnight_utc, slot_of
from openvpp.kernels import ev_lp, tariff
from openvpp.kernels import v2g as kv2g
from openvpp.model.ev import EvAssumptions, Sessions, Stations
from openvpp.services import ev_charging, events
from openvpp.services.ev_charging import flat_price
from openvpp.store.audit import Actor
from openvpp.store.schema import resources
from openvpp.store.schema_ev import PERIODS, ev_charge_points, ev_sessions

# ---------------------------------------------------------------- settlement inputs


def discharge_prices(rs: rulesets.RuleSet) -> list[Decimal]:
    """Discharge price of each TOU period (``PERIODS`` order), yuan/kWh: the rule set's
    ``[tou] v2g_discharge_base_yuan_per_kwh`` x the period's coefficient (ratio / flat ratio;
    critical = peak x critical factor)."""
    tou = rs.section("tou")
    base = yuan(tou["v2g_discharge_base_yuan_per_kwh"])
    peak, flat = yuan(str(tou["ratio_peak"])), yuan(str(tou["ratio_flat"]))
    coef = [yuan(str(tou["ratio_valley"])), flat, peak, peak * yuan(str(tou["critical_peak_factor"]))]
    return [base * c / flat for c in coef]


def metered_discharge(conn: Connection, year: int, until: datetime | None = None) -> list[dict]:
    """Completed V2G sessions started in the local ``year`` (and stopped by ``until``) that discharged.

    Each: session_id, charge_point_id, operator_id, owner_id, day (local start date) and
    ``by_period_kwh`` (Decimal kWh to the Wh, ``PERIODS`` order)."""
    start, end = local_midnight_utc(date(year, 1, 1)), local_midnight_utc(date(year + 1, 1, 1))
    s, r = ev_sessions, resources
    q = (select(s.c.session_id, s.c.charge_point_id, s.c.started_at, r.c.operator_id, r.c.owner_id,
                *[s.c[f"discharge_{p}_kwh"] for p in PERIODS])
         .select_from(s.join(r, r.c.resource_id == s.c.charge_point_id))
         .where(and_(s.c.started_at >= start, s.c.started_at < end, s.c.state == "completed"))
         .order_by(s.c.session_id))
    if until is not None:
        q = q.where(s.c.stopped_at <= until)
    out = []
    for row in conn.execute(q):
        kwh = [yuan(round(float(x or 0.0), 3)) for x in row[5:]]
        if sum(kwh) <= 0:
            continue
        started = row[2] if row[2].tzinfo else row[2].replace(tzinfo=UTC)
        out.append({"session_id": row[0], "charge_point_id": row[1], "operator_id": row[3] or None,
                    "owner_id": row[4], "day": (started + timedelta(hours=8)).date(), "by_period_kwh": kwh})
    return out


def record_sessions(conn: Connection, sessions: Sessions, charger_ids: np.ndarray, start: datetime,
                    charge_kw: np.ndarray, discharge_kw: np.ndarray, period_codes: np.ndarray,
                    source: str = "sim") -> int:
    """Write completed sessions with their metered energy by TOU period (``ev_sessions``).

    sessions : the sessions (arrival/departure slots from ``start``); charger_ids : (n,) charge point
    (resource) id of each; charge_kw, discharge_kw : (n, T) metered AC power [kW]; period_codes : (T,)
    ``PERIODS`` index of each slot. A charge point without a row gets one (protocol ``source``).
    Returns sessions written."""
    n = sessions.n
    if n == 0:
        return 0
    onehot = np.zeros((len(period_codes), len(PERIODS)))
    onehot[np.arange(len(period_codes)), np.asarray(period_codes, int)] = 1.0
    ch = np.asarray(charge_kw, float) * SLOT_H @ onehot
    dis = np.asarray(discharge_kw, float) * SLOT_H @ onehot
    known = {r[0] for r in conn.execute(select(ev_charge_points.c.charge_point_id).where(
        ev_charge_points.c.charge_point_id.in_(sorted(set(map(str, charger_ids))))))}
    new_cp = sorted(set(map(str, charger_ids)) - known)
    if new_cp:
        conn.execute(insert(ev_charge_points), [{"charge_point_id": c, "ocpp_version": source[:8], "connected": False,
                                                 "status": {}} for c in new_cp])
    rows = []
    for i in range(n):
        t0 = start + timedelta(minutes=15 * int(sessions.arrival[i]))
        t1 = start + timedelta(minutes=15 * int(sessions.departure[i]))
        b = float(sessions.battery_kwh[i])
        rows.append({"session_id": str(sessions.session_id[i])[:64], "charge_point_id": str(charger_ids[i]),
                     "evse_id": 1, "transaction_id": str(sessions.session_id[i])[:64], "ocpp_version": source[:8],
                     "state": "completed", "started_at": t0, "stopped_at": t1, "stop_reason": "EVDeparted",
                     "battery_kwh": b if np.isfinite(b) else None, "v2g": bool(sessions.v2g[i]),
                     "departure_at": t1, "energy_requested_kwh": float(sessions.energy_kwh[i]),
                     **{f"charge_{p}_kwh": float(ch[i, k]) for k, p in enumerate(PERIODS)},
                     **{f"discharge_{p}_kwh": float(dis[i, k]) for k, p in enumerate(PERIODS)}})
    conn.execute(insert(ev_sessions), rows)
    return n


# ---------------------------------------------------------------- declarations and pools from the envelope


def _window(env: kv2g.Envelope, direction: str, start_slot: int, end_slot: int,
            discharge_efficiency: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-slot power bound [kW] and the energy room [kWh] at the end of each window slot."""
    if direction == "down":
        power = np.asarray(env.down_kw[start_slot:end_slot], float)
        room = np.asarray(env.energy_kwh - env.energy_min_kwh, float)[start_slot:end_slot]
        # shedding 1 kW for a slot takes at most 1/eta_d kWh out of the batteries (discharge side)
        return power, np.maximum(room, 0.0) * discharge_efficiency
    power = np.asarray(env.up_kw[start_slot:end_slot], float)
    room = np.asarray(env.energy_max_kwh - env.energy_kwh, float)[start_slot:end_slot]
    return power, np.maximum(room, 0.0) / max(discharge_efficiency, 1e-9)


def envelope_limits(env: kv2g.Envelope, direction: str, start_slot: int, end_slot: int,
                    assumptions: EvAssumptions = EvAssumptions()) -> np.ndarray:
    """The largest offer per slot of the window that the envelope can hold: each slot bounded by its
    power, and the energy shed from the window's start never beyond the energy room at that slot
    (greedy from the first slot). (n,) kW."""
    power, room = _window(env, direction, start_slot, end_slot, assumptions.discharge_efficiency)
    out = np.zeros(len(power))
    used = 0.0
    for j in range(len(power)):
        q = max(0.0, min(power[j], (room[j] - used) / SLOT_H))
        out[j] = q
        used += q * SLOT_H
    return out


def check_against_envelope(quantities_kw, env: kv2g.Envelope, direction: str, start_slot: int, end_slot: int,
                           assumptions: EvAssumptions = EvAssumptions()) -> list[Violation]:
    """Violations of an offer against the envelope: a slot above the power bound, or the energy shed
    so far above the energy room (both name the slot)."""
    q = np.asarray(quantities_kw, float)
    power, room = _window(env, direction, start_slot, end_slot, assumptions.discharge_efficiency)
    v = []
    over = np.flatnonzero(q > power + 1e-6)
    if len(over):
        j = int(over[0])
        v.append(Violation(f"quantities_kw[{j}]", f"exceeds the V2G fleet's {direction} power in slot "
                                                  f"{start_slot + j} ({power[j]:.1f} kW, flexibility envelope)",
                           float(q[j])))
    used = np.cumsum(q) * SLOT_H
    short = np.flatnonzero(used > room + 1e-6)
    if len(short):
        j = int(short[0])
        v.append(Violation(f"quantities_kw[{j}]", f"energy offered up to slot {start_slot + j} ({used[j]:.1f} kWh) "
                                                  f"exceeds what the fleet can give while every vehicle keeps its "
                                                  f"departure energy ({room[j]:.1f} kWh)", float(q[j])))
    return v


def propose_declaration(conn: Connection, event_id: str, unit_id: str, env: kv2g.Envelope, env_start_slot: int = 0,
                        assumptions: EvAssumptions | None = None) -> dict:
    """The offer a V2G trading unit can make into an event: ``envelope_limits`` over the event's slots
    (the envelope's slot 0 is the event day's slot ``env_start_slot``), also bounded by the unit's
    registered capability. Returns quantities_kw, the bounds and what binds."""
    ev = events.get(conn, event_id)
    a = assumptions or EvAssumptions.from_mapping(rulesets.load(ev["ruleset"]).data.get("ev"))
    s0, s1 = ev["start_slot"] - env_start_slot, ev["end_slot"] - env_start_slot
    if s0 < 0 or s1 > len(env.down_kw):
        raise InvalidInput(Violation("envelope", f"must cover the event's slots {ev['start_slot']}-{ev['end_slot']}",
                                     f"{env_start_slot}-{env_start_slot + len(env.down_kw)}"))
    limits = envelope_limits(env, ev["direction"], s0, s1, a)
    members = events.unit_members(conn, ev, unit_id)
    adm = rulesets.load(ev["ruleset"]).section("admission")
    local = ev["product"] in events.LOCAL_PRODUCTS
    cap = events.unit_capability_kw(members, ev["direction"], SLOT_H if local else float(
        adm["trading_unit_min_duration_h"]))
    q = np.floor(np.minimum(limits, cap) * 10 + 1e-6) / 10    # to 0.1 kW, not above a bound (beyond rounding)
    return {"event_id": event_id, "unit_id": unit_id, "quantities_kw": q.tolist(), "envelope_kw": limits.tolist(),
            "capability_kw": cap, "binding": ["envelope" if lim < cap else "capability" for lim in limits]}


def declare_from_envelope(conn: Connection, actor: Actor, event_id: str, unit_id: str, env: kv2g.Envelope,
                          prices_yuan_per_kwh, quantities_kw=None, env_start_slot: int = 0,
                          now: datetime | None = None) -> dict:
    """Declare for a V2G trading unit: the proposal (``quantities_kw`` None) or the given quantities
    after checking them against the envelope; then ``events.declare`` applies its own rules."""
    ev = events.get(conn, event_id)
    a = EvAssumptions.from_mapping(rulesets.load(ev["ruleset"]).data.get("ev"))
    if quantities_kw is None:
        quantities_kw = propose_declaration(conn, event_id, unit_id, env, env_start_slot, a)["quantities_kw"]
    n = ev["end_slot"] - ev["start_slot"]
    if len(quantities_kw) != n:
        raise InvalidInput(Violation("quantities_kw", f"must hold one quantity per slot of the window ({n})",
                                     list(quantities_kw)))
    v = check_against_envelope(quantities_kw, env, ev["direction"], ev["start_slot"] - env_start_slot,
                               ev["end_slot"] - env_start_slot, a)
    if v:
        raise InvalidInput(v)
    return events.declare(conn, actor, event_id, unit_id, [float(x) for x in quantities_kw], prices_yuan_per_kwh,
                          now=now)


def pool_view(totals: dict, v2g_nameplate: dict, env: kv2g.Envelope, start_slot: int, end_slot: int) -> dict:
    """A pool's totals with V2G counted from the envelope rather than nameplate.

    totals : one pool's totals (``pools.evaluate`` / ``PoolEngine.totals_of``: up_kw, down_kw,
    energy_up_kwh, energy_down_kwh); v2g_nameplate : the pool's V2G chargers' part of them
    (``PoolEngine.breakdown(pool_id, "type")`` row of v2g_charger); env : the envelope of those
    chargers' sessions; [start_slot, end_slot) : the slots the pool is asked for. The V2G part
    becomes what the envelope sustains over the slots (its least up/down power) and the energy it can
    shed or take there; the rest of the pool is unchanged."""
    if end_slot <= start_slot:
        raise InvalidInput(Violation("end_slot", "must be after start_slot", end_slot))
    sl = slice(start_slot, end_slot)
    up = float(np.min(env.up_kw[sl]))
    down = float(np.min(env.down_kw[sl]))
    e_down = float(np.min((env.energy_kwh - env.energy_min_kwh)[sl]))
    e_up = float(np.min((env.energy_max_kwh - env.energy_kwh)[sl]))
    dur_h = (end_slot - start_slot) * SLOT_H
    v2g = {"up_kw": up, "down_kw": down, "energy_up_kwh": min(up * dur_h, max(e_up, 0.0)),
           "energy_down_kwh": min(down * dur_h, max(e_down, 0.0))}
    out = dict(totals)
    for k, val in v2g.items():
        out[k] = float(totals[k]) - float(v2g_nameplate.get(k, 0.0)) + val
    out["v2g"] = {"nameplate": {k: float(v2g_nameplate.get(k, 0.0)) for k in v2g}, "envelope": v2g,
                  "slots": [start_slot, end_slot]}
    return out


# ---------------------------------------------------------------- discharge in an event


@dataclass
class EventDischarge:
    """What :func:`event_discharge` returns; (n, T) arrays over the horizon, kW."""

    plan: np.ndarray                  # net power without the event
    power: np.ndarray                 # net power with the event (charge - discharge)
    discharge: np.ndarray             # discharge part
    charge: np.ndarray
    target_kw: np.ndarray             # (T,) reduction asked (0 outside the event)
    delivered_kw: np.ndarray          # (T,) plan - power summed over sessions
    shortfall_kw: np.ndarray          # (T,) target not delivered
    wear_yuan: float
    flags: np.ndarray
    period_codes: np.ndarray

    def summary(self) -> dict:
        ev = self.target_kw > 0
        return {"sessions": int(self.power.shape[0]), "v2g_sessions_discharging": int((self.discharge.sum(1) > 0).sum()),
                "target_kwh": round(float(self.target_kw.sum() * SLOT_H), 3),
                "delivered_kwh": round(float(self.delivered_kw[ev].sum() * SLOT_H), 3),
                "shortfall_kwh": round(float(self.shortfall_kw.sum() * SLOT_H), 3),
                "discharge_kwh": round(float(self.discharge.sum() * SLOT_H), 3),
                "discharge_in_event_kwh": round(float(self.discharge[:, ev].sum() * SLOT_H), 3),
                "wear_yuan": round(self.wear_yuan, 2), "flagged": int((self.flags != 0).sum())}


def event_discharge(sessions: Sessions, stations: Stations | None, start: datetime, target_kw: np.ndarray,
                    ruleset: str = rulesets.DEFAULT_RULESET, tmax_c: np.ndarray | None = None,
                    reference: str = "v2g") -> EventDischarge:
    """Schedule sessions so that, in the slots where ``target_kw`` > 0, the fleet's net load is that
    much below its plan without the event, at least cost: charging cost - discharge revenue + battery
    wear per kWh discharged, every session leaving with its guaranteed energy (flagged, not raised,
    when it cannot). ``start`` is the slot boundary of slot 0; target_kw : (T,) kW.

    reference : the plan without the event — "v2g" (the least-cost V2G plan, which may already
    discharge in peaks) or "charging" (orderly charging only: a fleet that discharges only when called)."""
    rs = rulesets.load(ruleset)
    a = EvAssumptions.from_mapping(rs.data.get("ev"))
    tou = tariff.TouRules.from_ruleset(ruleset)
    target = np.asarray(target_kw, float)
    horizon = len(target)
    if not np.isfinite(target).all() or (target < 0).any():
        raise InvalidInput(Violation("target_kw", "every slot must be a finite number >= 0", target.tolist()))
    day, slot = slot_of(start)
    n_days = (slot + horizon + 95) // 96
    codes = tariff.period_codes(np.datetime64(day), n_days, tou, tmax_c)[slot:slot + horizon]
    price = tariff.price_curve(codes, tou, flat_price(tou))
    dprice = tariff.v2g_discharge_price(codes, tou)
    kw = dict(charge_efficiency=a.charge_efficiency, discharge_efficiency=a.discharge_efficiency)
    if reference not in ("v2g", "charging"):
        raise InvalidInput(Violation("reference", "must be v2g or charging", reference))
    if reference == "v2g":
        plan = ev_lp.schedule_v2g(sessions, stations, price, dprice, a.degradation_yuan_per_kwh, **kw)
    else:   # no discharge allowed: the same LP with a zero discharge rating
        plain = sessions.take(np.arange(sessions.n))
        plain.v2g = np.zeros(sessions.n, bool)
        plan = ev_lp.schedule_v2g(plain, stations, price, dprice, a.degradation_yuan_per_kwh, **kw)
    base = plan.power_kw.sum(axis=0)
    fleet_max = np.where(target > 0, base - target, np.nan)
    got = ev_lp.schedule_v2g(sessions, stations, price, dprice, a.degradation_yuan_per_kwh, fleet_max_kw=fleet_max,
                             **kw)
    delivered = base - got.power_kw.sum(axis=0)
    dis = got.stats["discharge_kw"]
    return EventDischarge(plan.power_kw, got.power_kw, dis, got.stats["charge_kw"], target, delivered,
                          np.where(target > 0, np.maximum(target - delivered, 0.0), 0.0),
                          float(dis.sum() * SLOT_H * a.degradation_yuan_per_kwh), got.flags, codes)


def pool_envelope_view(engine, pool_engine, pool_id: str, start: datetime, start_slot: int, end_slot: int,
                       horizon: int = 96, ruleset: str = rulesets.DEFAULT_RULESET) -> dict:
    """A pool's totals with its V2G chargers counted from the envelope of the vehicles plugged into them
    now (the central system's open sessions around their day-ahead V2G schedule from ``start``, a slot
    boundary) over ``[start_slot, end_slot)`` of that horizon, instead of the chargers' nameplate.

    ``pool_engine`` is a ``services.pools.PoolEngine`` holding the pool. A pool without V2G chargers,
    or whose chargers have no vehicle plugged in, gets the V2G part of its totals from the envelope all
    the same (zero when nothing is plugged)."""
    from openvpp.services import ev_pilot  # ev_pilot imports this module


    if not (isinstance(start_slot, int) and isinstance(end_slot, int) and 0 <= start_slot < end_slot <= horizon):
        raise InvalidInput(Violation("start_slot/end_slot", f"need 0 <= start_slot < end_slot <= {horizon}",
                                     (start_slot, end_slot)))
    totals = pool_engine.totals_of(pool_id)
    nameplate = next((r for r in pool_engine.breakdown(pool_id, "type") if r["type"] == "v2g_charger"), {})
    reg = pool_engine.reg
    cats = list(reg.categories["resource_type"])
    is_v2g = (reg.codes["resource_type"] == cats.index("v2g_charger")) if "v2g_charger" in cats \
        else np.zeros(len(reg.resource_id), bool)
    members = reg.resource_id[pool_engine.mask(pool_id) & is_v2g]
    sessions, ids = ev_charging.ChargingService(engine, ruleset=ruleset).open_sessions(
        start, horizon, charge_point_ids=[str(m) for m in members])
    if ids:
        plan = ev_charging.day_ahead(sessions, None, None, start, horizon, ruleset=ruleset, v2g=True)
        env = ev_pilot.fleet_envelope(sessions, plan.schedule.power_kw, None, ruleset)
    else:
        z = np.zeros(horizon)
        env = kv2g.Envelope(baseline_kw=z, up_kw=z, down_kw=z, energy_kwh=z, energy_min_kwh=z, energy_max_kwh=z,
                            plugged=z)
    out = pool_view(totals, nameplate, env, start_slot, end_slot)
    out["v2g"].update({"chargers": int(len(members)), "sessions": len(ids), "start": start.isoformat()})
    return out
