"""V2G: the fleet's flexibility envelope, battery indicators, and the discharge settlement arithmetic.

* :func:`envelope` — how far a plugged-in fleet can move from its planned charging in each slot
  (up = more load, down = less load or discharge, kW) and the band its stored energy can take
  (kWh), with every session still leaving with its guaranteed energy. Pools and declarations
  read it (``services.ev_pilot.fleet_envelope``).
* :func:`battery_indicators` — equivalent full cycles, throughput and a simple state-of-health estimate.
* :func:`settle_discharge` — discharged energy x discharge price (0.453 x TOU coefficient) and the
  V2G subsidy (rate <= the rule set's cap) scaled pro rata when the claims exceed the budget.

Pure array functions: no clock, no database; money is float here and becomes Decimal on a statement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openvpp.core.timeslots import SLOT_H
from openvpp.model.ev import EvAssumptions, Sessions, Stations


@dataclass(frozen=True)
class Envelope:
    """Per-slot flexibility of a fleet, all (T,) arrays.

    baseline_kw : planned net load (charging positive) [kW]
    up_kw : extra load the fleet can take on top of the plan [kW] (>= 0)
    down_kw : load it can shed below the plan, discharge included [kW] (>= 0)
    energy_kwh : stored energy of the plugged vehicles at the end of the slot under the plan [kWh]
    energy_min_kwh, energy_max_kwh : the band that stored energy can take while every departure
        requirement stays reachable [kWh]
    plugged : vehicles plugged in
    """

    baseline_kw: np.ndarray
    up_kw: np.ndarray
    down_kw: np.ndarray
    energy_kwh: np.ndarray
    energy_min_kwh: np.ndarray
    energy_max_kwh: np.ndarray
    plugged: np.ndarray

    def as_dict(self) -> dict[str, list[float]]:
        return {k: np.round(getattr(self, k), 3).tolist() for k in self.__dataclass_fields__}

    def sustained_down_kw(self, duration_slots: int) -> np.ndarray:
        """Load reduction the fleet can hold for ``duration_slots`` from each slot: the lowest down_kw in the window."""
        d = np.asarray(self.down_kw)
        t = len(d)
        return np.array([d[i:min(t, i + duration_slots)].min() if i + duration_slots <= t else 0.0 for i in range(t)])


def envelope(sessions: Sessions, planned_kw: np.ndarray, stations: Stations | None = None,
             assumptions: EvAssumptions = EvAssumptions()) -> Envelope:
    """Flexibility envelope of plugged sessions around a plan.

    Parameters
    ----------
    sessions : the sessions (``battery_kwh``, ``soc_*``, ``max_*_kw``, ``v2g``, arrival/departure slots).
    planned_kw : (n, T) planned net power per session (charging positive, discharge negative) [kW].
    stations : when given, extra load is capped by each station's import headroom and discharge by its export limit.
    assumptions : charge/discharge efficiencies.

    Per session and slot, starting from the planned battery energy ``e`` before the slot:
    up = min(max_charge, room to soc_max) - plan; down = plan - p_min, where p_min is the least
    power that keeps the departure energy reachable at full power afterwards, no lower than
    -max_discharge (V2G) or 0 and no deeper than soc_min.
    """
    p = np.asarray(planned_kw, np.float64)
    n, horizon = p.shape
    need, _flags = sessions.check(horizon)
    avail = sessions.availability(horizon) & ((_flags & 1) == 0)[:, None]
    eta_c, eta_d = assumptions.charge_efficiency, assumptions.discharge_efficiency
    b = np.where(np.isfinite(sessions.battery_kwh), sessions.battery_kwh, 1e6)
    e0 = sessions.soc_arrival * b
    e_min_s = np.minimum(sessions.soc_min * b, e0)
    e_max_s = np.maximum(sessions.soc_max * b, e0)
    e_req = e0 + need
    gain = np.where(p > 0, p * eta_c, p / eta_d) * SLOT_H * avail
    e_end = e0[:, None] + np.cumsum(gain, axis=1)
    e_start = e_end - gain
    pc, pd = sessions.max_charge_kw[:, None], np.where(sessions.v2g, sessions.max_discharge_kw, 0.0)[:, None]
    t = np.arange(horizon)[None, :]
    after = np.maximum(sessions.departure[:, None] - t - 1, 0)                 # slots left after this one
    # highest power: rating, and the room to soc_max
    p_hi = np.minimum(pc, (e_max_s[:, None] - e_start) / (eta_c * SLOT_H))
    # lowest power: departure still reachable, soc_min, discharge rating
    reach_later = pc * eta_c * SLOT_H * after
    need_now = e_req[:, None] - e_start - reach_later                           # kWh this slot must still add
    p_lo_dep = np.where(need_now > 0, need_now / (eta_c * SLOT_H), need_now * eta_d / SLOT_H)
    p_lo_soc = -(e_start - e_min_s[:, None]) * eta_d / SLOT_H
    p_lo = np.maximum(np.maximum(p_lo_dep, p_lo_soc), -pd)
    p_lo = np.minimum(p_lo, p)                                                  # the plan itself is feasible
    p_hi = np.maximum(p_hi, p)
    up = np.where(avail, p_hi - p, 0.0)
    down = np.where(avail, p - p_lo, 0.0)
    base = np.where(avail, p, 0.0)
    if stations is not None:
        st = sessions.station
        has = st >= 0
        m = stations.m
        cap = stations.capacity(horizon)
        load = np.zeros((m, horizon))
        up_st = np.zeros((m, horizon))
        dn_st = np.zeros((m, horizon))
        np.add.at(load, st[has], base[has])
        np.add.at(up_st, st[has], up[has])
        np.add.at(dn_st, st[has], down[has])
        up_tot = np.minimum(up_st, np.maximum(cap - load, 0.0)).sum(axis=0) + up[~has].sum(axis=0)
        dn_tot = np.minimum(dn_st, np.maximum(load + stations.export_kw[:, None], 0.0)).sum(axis=0) \
            + down[~has].sum(axis=0)
    else:
        up_tot, dn_tot = up.sum(axis=0), down.sum(axis=0)
    # energy band: fastest charge and the lowest path that still reaches departure
    k = np.maximum(t - sessions.arrival[:, None] + 1, 0)                      # slots elapsed at the end of t
    e_hi_path = np.minimum(e0[:, None] + pc * eta_c * SLOT_H * k, e_max_s[:, None])
    e_lo_path = np.maximum(e0[:, None] - pd / eta_d * SLOT_H * k, e_min_s[:, None])
    e_lo_path = np.maximum(e_lo_path, e_req[:, None] - pc * eta_c * SLOT_H * after)
    e_lo_path = np.minimum(e_lo_path, e_end)
    e_hi_path = np.maximum(e_hi_path, e_end)
    return Envelope(baseline_kw=base.sum(axis=0), up_kw=np.maximum(up_tot, 0.0), down_kw=np.maximum(dn_tot, 0.0),
                    energy_kwh=np.where(avail, e_end, 0.0).sum(axis=0),
                    energy_min_kwh=np.where(avail, e_lo_path, 0.0).sum(axis=0),
                    energy_max_kwh=np.where(avail, e_hi_path, 0.0).sum(axis=0), plugged=avail.sum(axis=0))


def battery_indicators(charged_kwh: np.ndarray, discharged_kwh: np.ndarray, battery_kwh: np.ndarray,
                       age_years: np.ndarray | float = 0.0,
                       assumptions: EvAssumptions = EvAssumptions()) -> dict[str, np.ndarray]:
    """Battery state of each vehicle (or pack) from its metered energy.

    charged_kwh, discharged_kwh : (n,) energy into / out of the battery over its life so far [kWh]
    battery_kwh : (n,) usable capacity when new [kWh]; age_years : (n,) or scalar.

    Returns (n,) arrays: ``throughput_kwh`` = charged + discharged; ``efc`` equivalent full cycles
    = throughput / (2 x capacity); ``v2g_efc`` = the cycles V2G added (each kWh discharged is
    charged again) = discharged / capacity; ``soh`` = 1 - (1 - eol_soh) x efc / cycle_life -
    calendar fade x age, clipped to [0, 1] (a linear fade model: an estimate, not a measurement).
    """
    c = np.asarray(charged_kwh, float)
    d = np.asarray(discharged_kwh, float)
    cap = np.asarray(battery_kwh, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        efc = np.where(cap > 0, (c + d) / (2 * cap), np.nan)
        v2g_efc = np.where(cap > 0, d / cap, np.nan)
    a = assumptions
    soh = 1.0 - (1.0 - a.eol_soh) * efc / a.cycle_life_efc - a.calendar_fade_per_year * np.asarray(age_years, float)
    return {"throughput_kwh": c + d, "efc": efc, "v2g_efc": v2g_efc, "soh": np.clip(soh, 0.0, 1.0)}


@dataclass(frozen=True)
class DischargeSettlement:
    """Per claim (session), float yuan."""

    energy_kwh: np.ndarray        # (n,) discharged energy
    energy_yuan: np.ndarray       # (n,) discharge x price of its period
    subsidy_claim_yuan: np.ndarray  # (n,) discharge x subsidy rate
    subsidy_yuan: np.ndarray      # (n,) after the budget
    scale: float                  # pro-rata factor applied to the claims (1 = budget not exceeded)


def settle_discharge(discharge_kwh_by_period: np.ndarray, price_yuan_per_kwh_by_period: np.ndarray,
                     subsidy_yuan_per_kwh: float, budget_yuan: float) -> DischargeSettlement:
    """Discharge revenue and V2G subsidy of many sessions.

    discharge_kwh_by_period : (n, P) metered discharge per tariff period [kWh]
    price_yuan_per_kwh_by_period : (P,) discharge price of each period (base x TOU coefficient)
    subsidy_yuan_per_kwh : the subsidy rate (at most the rule set's cap; checked by the caller)
    budget_yuan : what is left of the yearly V2G budget for these claims; claims above it are
        all scaled by the same factor (pro rata).
    """
    e = np.asarray(discharge_kwh_by_period, float)
    energy = e.sum(axis=1)
    value = e @ np.asarray(price_yuan_per_kwh_by_period, float)
    claim = energy * float(subsidy_yuan_per_kwh)
    total = float(claim.sum())
    scale = 1.0 if total <= budget_yuan or total == 0 else max(0.0, budget_yuan) / total
    return DischargeSettlement(energy, value, claim, claim * scale, scale)
