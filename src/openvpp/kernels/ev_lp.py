"""Orderly charging and V2G as exact linear programs (HiGHS).

**Charging** (:func:`schedule`). Variables ``x[s, t]`` kW for the slots each session is plugged in,
``0 <= x <= max_charge_kw``. Per session ``sum_t x * 0.25 + u_s = need_s`` with the shortfall
``u_s >= 0`` (so energy never exceeds the need); per station and slot ``sum_s x <= capacity``; per
transformer area and slot likewise. Objective, lexicographic:

1. serve everyone: minimise ``cost + P * sum(u)`` with ``P`` above any price (one LP); if no session
   is short, this is the answer;
2. otherwise fairness first: maximise ``z`` with ``served_s >= z * need_s`` for all s (max-min
   served fraction), then
3. at that fairness, serve as much as possible at least cost: step 1 with ``u_s <= (1 - z*) need_s``.

**V2G** (:func:`schedule_v2g`). Per plugged slot a charge ``c`` and, for V2G sessions, a discharge
``d`` (kW, AC side) and the battery energy ``e`` at the end of the slot:
``e_t = e_{t-1} + 0.25 (eta_c c_t - d_t / eta_d)``, ``soc_min B <= e_t <= soc_max B``, and at
departure ``e >= e_arrival + need`` (the guaranteed state of charge; a soft bound with a large
penalty so that an infeasible one is flagged, not raised). Stations and areas bound the net flow
``sum(c - d)`` both ways. Objective: energy cost of charging - discharge revenue (price + event
premium) + battery wear per kWh discharged.

Matrices are built column-wise with numpy (each variable touches at most 3 rows) and passed to
HiGHS in one call.
"""

from __future__ import annotations

import ctypes
import os
import sys

import highspy
import numpy as np

from openvpp.core.timeslots import SLOT_H
from openvpp.model.ev import CAPACITY_SHORT, Schedule, Sessions, Stations, TransformerAreas

INF = highspy.kHighsInf


_BANNER = [True]


def _new_highs() -> highspy.Highs:
    """A HiGHS instance; the first one of a process prints a copyright banner on the C-level stdout,
    which would break machine-readable output (``openvpp demo --json``): sent to /dev/null instead."""
    if not _BANNER[0]:
        return highspy.Highs()
    _BANNER[0] = False
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        h = highspy.Highs()
        libc.fflush(None)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
    return h


def _solve(cost, col_lo, col_hi, row_lo, row_hi, start, index, value, solver: str = "choose",
           maximize: bool = False) -> tuple[np.ndarray, float, str]:
    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("solver", solver)
    lp = highspy.HighsLp()
    lp.num_col_ = len(cost)
    lp.num_row_ = len(row_lo)
    lp.col_cost_ = np.asarray(cost, np.float64)
    lp.col_lower_ = np.asarray(col_lo, np.float64)
    lp.col_upper_ = np.asarray(col_hi, np.float64)
    lp.row_lower_ = np.asarray(row_lo, np.float64)
    lp.row_upper_ = np.asarray(row_hi, np.float64)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.asarray(start, np.int32)
    lp.a_matrix_.index_ = np.asarray(index, np.int32)
    lp.a_matrix_.value_ = np.asarray(value, np.float64)
    lp.sense_ = highspy.ObjSense.kMaximize if maximize else highspy.ObjSense.kMinimize
    h.passModel(lp)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"HiGHS: {status}")
    return np.asarray(h.getSolution().col_value), float(h.getInfo().objective_function_value), status


def _columns(rows_per_col: list[np.ndarray], vals_per_col: list[np.ndarray | float], ncol: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSC arrays for columns that each touch up to len(rows_per_col) rows; a row id < 0 = no entry."""
    rows = np.stack(rows_per_col, axis=1)                                    # (ncol, r)
    vals = np.stack([np.broadcast_to(np.asarray(v, np.float64), (ncol,)) for v in vals_per_col], axis=1)
    present = rows >= 0
    start = np.r_[0, np.cumsum(present.sum(axis=1))]
    return start, rows[present], vals[present]


def _coupling_rows(session_of: np.ndarray, slot_of: np.ndarray, station: np.ndarray, stations: Stations | None,
                   areas: TransformerAreas | None, horizon: int, first_row: int):
    """Row ids (per variable) and bounds of the station and area rows the variables touch."""
    nvar = len(session_of)
    st_row = np.full(nvar, -1)
    ta_row = np.full(nvar, -1)
    lo, hi = [], []
    nrow = first_row
    if stations is not None:
        st = station[session_of]
        ok = st >= 0
        key = st[ok] * horizon + slot_of[ok]
        uniq, inv = np.unique(key, return_inverse=True)
        st_row[ok] = nrow + inv
        cap = stations.capacity(horizon)
        s_u, t_u = uniq // horizon, uniq % horizon
        hi.append(cap[s_u, t_u])
        lo.append(-stations.export_kw[s_u])
        nrow += len(uniq)
        if areas is not None:
            ta = np.where(ok, stations.ta[np.maximum(st, 0)], -1)
            ok2 = ta >= 0
            key = ta[ok2] * horizon + slot_of[ok2]
            uniq, inv = np.unique(key, return_inverse=True)
            ta_row[ok2] = nrow + inv
            cap = areas.capacity(horizon)
            a_u, t_u = uniq // horizon, uniq % horizon
            hi.append(cap[a_u, t_u])
            lo.append(-cap[a_u, t_u])
            nrow += len(uniq)
    lo_a = np.concatenate(lo) if lo else np.zeros(0)
    hi_a = np.concatenate(hi) if hi else np.zeros(0)
    return st_row, ta_row, lo_a, hi_a


def schedule(sessions: Sessions, stations: Stations | None, price_yuan_per_kwh: np.ndarray,
             areas: TransformerAreas | None = None, solver: str = "choose") -> Schedule:
    """Least-cost charging schedule, fair when capacity is short (module docstring). Same arguments
    and result as ``kernels.ev_heuristic.schedule``; ``solver`` is HiGHS's ("choose", "simplex", "ipm")."""
    price = np.asarray(price_yuan_per_kwh, np.float64)
    horizon = len(price)
    n = sessions.n
    need, flags = sessions.check(horizon)
    active = np.flatnonzero(need > TOL_NEED)
    avail = sessions.availability(horizon)[active]
    loc_s, slot = np.nonzero(avail)
    sess = active[loc_s]
    nvar, na = len(sess), len(active)
    st_row, ta_row, lo_c, hi_c = _coupling_rows(sess, slot, sessions.station, stations, areas, horizon, na)
    # import side only for charging: lower bound 0 is implied by x >= 0
    lo_c = np.full(len(lo_c), -INF)
    row_lo = np.r_[need[active], lo_c]
    row_hi = np.r_[need[active], hi_c]
    # columns: x (nvar), then u (na)
    s_x, i_x, v_x = _columns([loc_s, st_row, ta_row], [SLOT_H, 1.0, 1.0], nvar)
    start = np.r_[s_x, s_x[-1] + 1 + np.arange(na)]
    index = np.r_[i_x, np.arange(na)]
    value = np.r_[v_x, np.ones(na)]
    penalty = 1000.0 * max(1.0, float(np.abs(price).max(initial=1.0)))
    x_cost = price[slot] * SLOT_H
    col_lo = np.zeros(nvar + na)
    x_hi = sessions.max_charge_kw[sess]
    col_hi = np.r_[x_hi, need[active]]
    stats = {"variables": nvar + na, "rows": len(row_lo), "lps": 1}
    sol, _obj, status = _solve(np.r_[x_cost, np.full(na, penalty)], col_lo, col_hi, row_lo, row_hi, start, index,
                               value, solver)
    u = sol[nvar:]
    z = 1.0
    if na and (u > 1e-6 * np.maximum(need[active], 1.0)).any():
        # 2. max-min served fraction: columns x and z; rows sum(0.25 x) - need z >= 0
        start_z = np.r_[s_x, s_x[-1] + na]
        index_z = np.r_[i_x, np.arange(na)]
        value_z = np.r_[v_x, -need[active]]
        rl = np.r_[np.zeros(na), lo_c]
        rh = np.r_[need[active], hi_c]
        solz, z, _ = _solve(np.r_[np.zeros(nvar), 1.0], np.zeros(nvar + 1), np.r_[x_hi, 1.0], rl, rh, start_z,
                            index_z, value_z, solver, maximize=True)
        z = max(0.0, min(1.0, z - 1e-7))
        # 3. at that fairness, the most energy at least cost
        col_hi = np.r_[x_hi, (1.0 - z) * need[active]]
        sol, _obj, status = _solve(np.r_[x_cost, np.full(na, penalty)], col_lo, col_hi, row_lo, row_hi, start,
                                   index, value, solver)
        stats["lps"] = 3
    power = np.zeros((n, horizon))
    power[sess, slot] = np.clip(sol[:nvar], 0.0, x_hi)
    served = power.sum(axis=1) * SLOT_H
    short = served < need - 1e-5 * np.maximum(1.0, need)
    flags = flags | np.where(short, CAPACITY_SHORT, 0).astype(np.uint8)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(need > 0, served / np.where(need > 0, need, 1.0), np.inf)
    stats["status"] = status
    return Schedule(power_kw=power, served_kwh=served, need_kwh=need, flags=flags,
                    cost_yuan=float((power @ price).sum() * SLOT_H),
                    min_served_fraction=float(min(1.0, frac.min(initial=np.inf))), solver="highs", stats=stats)


TOL_NEED = 1e-9


def _idle_v2g(n: int, horizon: int, need: np.ndarray, flags: np.ndarray, fleet_max: np.ndarray) -> Schedule:
    """The V2G schedule when no session has a slot to act in: every power zero, a need unmet, and
    the fleet short of any bound below zero (which only discharge could have met)."""
    zeros = np.zeros((n, horizon))
    short = np.where(np.isfinite(fleet_max), np.maximum(-fleet_max, 0.0), 0.0)
    flags = flags.copy()
    flags[need > 0] |= CAPACITY_SHORT
    return Schedule(power_kw=zeros, served_kwh=np.zeros(n), need_kwh=need, flags=flags, cost_yuan=0.0,
                    min_served_fraction=0.0 if (need > 0).any() else 1.0, solver="highs-v2g",
                    stats={"discharge_kw": zeros.copy(), "charge_kw": zeros.copy(),
                           "energy_kwh": np.full((n, horizon), np.nan), "status": "no variables",
                           "fleet_short_kw": short, "variables": 0, "rows": 0})


def schedule_v2g(sessions: Sessions, stations: Stations | None, charge_price: np.ndarray,
                 discharge_price: np.ndarray, degradation_yuan_per_kwh: float,
                 areas: TransformerAreas | None = None, event_yuan_per_kwh: np.ndarray | None = None,
                 charge_efficiency: float = 0.95, discharge_efficiency: float = 0.95,
                 solver: str = "choose", fleet_max_kw: np.ndarray | None = None) -> Schedule:
    """Charging and V2G discharge at least net cost with a guaranteed state of charge at departure.

    Parameters
    ----------
    sessions : sessions; only rows with ``v2g`` may discharge (``max_discharge_kw``); ``battery_kwh``,
        ``soc_arrival``, ``soc_min``, ``soc_max`` bound the battery energy.
    stations, areas : import limits; stations also bound export (``export_kw``), areas both ways.
    charge_price : (T,) yuan/kWh paid for charging; discharge_price : (T,) yuan/kWh earned for discharge
        (``kernels.tariff.v2g_discharge_price``); event_yuan_per_kwh : (T,) premium on discharge in event slots.
    degradation_yuan_per_kwh : battery wear per kWh discharged (``model.ev.EvAssumptions``).
    charge_efficiency, discharge_efficiency : AC-to-battery and battery-to-AC efficiencies.
    fleet_max_kw : (T,) upper bound of the fleet's net load ``sum(c - d)`` per slot, NaN = none: an
        event's target (plan - reduction). Soft, with a penalty below the departure penalty: the
        guaranteed departure energy comes first, the shortfall is in ``stats["fleet_short_kw"]``.

    Returns
    -------
    ``Schedule``: ``power_kw`` net (charge - discharge) kW; ``served_kwh`` battery energy gained by
    departure; ``need_kwh`` the guaranteed gain; ``stats["discharge_kw"]`` (n, T) discharge,
    ``stats["energy_kwh"]`` (n, T) battery energy at the end of each slot (NaN when unplugged).
    """
    cp = np.asarray(charge_price, np.float64)
    dp = np.asarray(discharge_price, np.float64)
    horizon = len(cp)
    ev = np.zeros(horizon) if event_yuan_per_kwh is None else np.asarray(event_yuan_per_kwh, np.float64)
    n = sessions.n
    need, flags = sessions.check(horizon)
    eta_c, eta_d = float(charge_efficiency), float(discharge_efficiency)
    ok = (flags & 1) == 0
    # with charging losses the battery gains eta_c per kWh drawn: the reachable need shrinks accordingly
    need = np.minimum(need, sessions.max_charge_kw * (sessions.departure - sessions.arrival) * SLOT_H * eta_c)
    need = np.where(ok, need, 0.0)
    active = np.flatnonzero(ok)
    avail = sessions.availability(horizon)[active]
    loc_s, slot = np.nonzero(avail)
    sess = active[loc_s]
    nv = len(sess)
    fm = np.full(horizon, np.nan) if fleet_max_kw is None else np.asarray(fleet_max_kw, np.float64)
    if nv == 0:   # no session is plugged in within the horizon: nothing to schedule
        return _idle_v2g(n, horizon, need, flags, fm)
    b = np.where(np.isfinite(sessions.battery_kwh), sessions.battery_kwh, 1e6)
    e0 = sessions.soc_arrival * b
    e_req = e0 + need
    # dynamics row per variable slot: e_t - e_{t-1} - 0.25 eta_c c_t + 0.25 d_t / eta_d = (e0 if first slot else 0)
    first = np.r_[True, sess[1:] != sess[:-1]]
    last = np.r_[sess[1:] != sess[:-1], True]
    dyn_row = np.arange(nv)
    st_row, ta_row, lo_c, hi_c = _coupling_rows(sess, slot, sessions.station, stations, areas, horizon, nv)
    # departure rows: e_last + short >= e_req
    dep_row = nv + len(lo_c) + np.arange(len(active))
    # fleet rows (one per slot with a bound): sum(c - d) - slack <= fleet_max
    na = len(active)
    f_slots = np.flatnonzero(np.isfinite(fm))
    nf = len(f_slots)
    row_of_slot = np.full(horizon, -1)
    row_of_slot[f_slots] = nv + len(lo_c) + na + np.arange(nf)
    f_row = row_of_slot[slot]
    # columns: c (nv), d (nv), e (nv), short (na), fleet slack (nf)
    s_c, i_c, v_c = _columns([dyn_row, st_row, ta_row, f_row], [-SLOT_H * eta_c, 1.0, 1.0, 1.0], nv)
    s_d, i_d, v_d = _columns([dyn_row, st_row, ta_row, f_row], [SLOT_H / eta_d, -1.0, -1.0, -1.0], nv)
    nxt = np.where(last, -1, dyn_row + 1)
    dep_of_var = np.full(nv, -1)
    dep_of_var[last] = dep_row
    s_e, i_e, v_e = _columns([dyn_row, nxt, dep_of_var], [1.0, -1.0, 1.0], nv)
    end_short = s_c[-1] + s_d[-1] + s_e[-1] + na
    start = np.r_[s_c[:-1], s_c[-1] + s_d[:-1], s_c[-1] + s_d[-1] + s_e,
                  s_c[-1] + s_d[-1] + s_e[-1] + 1 + np.arange(na), end_short + 1 + np.arange(nf)]
    index = np.r_[i_c, i_d, i_e, dep_row, row_of_slot[f_slots]]
    value = np.r_[v_c, v_d, v_e, np.ones(na), -np.ones(nf)]
    row_lo = np.r_[np.where(first, e0[sess], 0.0), lo_c, e_req[active], np.full(nf, -INF)]
    row_hi = np.r_[np.where(first, e0[sess], 0.0), hi_c, np.full(na, INF), fm[f_slots]]
    d_hi = np.where(sessions.v2g[sess], sessions.max_discharge_kw[sess], 0.0)
    e_lo = np.minimum(sessions.soc_min[sess] * b[sess], e0[sess])
    e_hi = np.maximum(sessions.soc_max[sess] * b[sess], e0[sess])
    penalty = 1000.0 * max(1.0, float(np.abs(np.r_[cp, dp, ev]).max(initial=1.0)) + degradation_yuan_per_kwh)
    cost = np.r_[cp[slot] * SLOT_H, (degradation_yuan_per_kwh - dp[slot] - ev[slot]) * SLOT_H, np.zeros(nv),
                 np.full(na, penalty), np.full(nf, penalty / 50.0 * SLOT_H)]
    col_lo = np.r_[np.zeros(nv), np.zeros(nv), e_lo, np.zeros(na), np.zeros(nf)]
    col_hi = np.r_[sessions.max_charge_kw[sess], d_hi, e_hi, need[active] + 1e-9, np.full(nf, INF)]
    sol, obj, status = _solve(cost, col_lo, col_hi, row_lo, row_hi, start, index, value, solver)
    c, d, e = sol[:nv], sol[nv:2 * nv], sol[2 * nv:3 * nv]
    charge = np.zeros((n, horizon))
    dis = np.zeros((n, horizon))
    energy = np.full((n, horizon), np.nan)
    charge[sess, slot] = np.clip(c, 0, None)
    dis[sess, slot] = np.clip(d, 0, None)
    energy[sess, slot] = e
    short = sol[3 * nv:3 * nv + na]
    fleet_short = np.zeros(horizon)
    fleet_short[f_slots] = np.maximum(sol[3 * nv + na:], 0.0)
    gained = np.zeros(n)
    gained[active] = need[active] - short
    flags = flags.copy()
    flags[active[short > 1e-5 * np.maximum(need[active], 1.0)]] |= CAPACITY_SHORT
    net = charge - dis
    money = float(((charge @ cp) - (dis @ (dp + ev)) + dis.sum(axis=1) * degradation_yuan_per_kwh).sum() * SLOT_H)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(need > 0, gained / np.where(need > 0, need, 1.0), np.inf)
    return Schedule(power_kw=net, served_kwh=gained, need_kwh=need, flags=flags, cost_yuan=money,
                    min_served_fraction=float(min(1.0, frac.min(initial=np.inf))), solver="highs-v2g",
                    stats={"discharge_kw": dis, "charge_kw": charge, "energy_kwh": energy, "status": status,
                           "fleet_short_kw": fleet_short,
                           "variables": len(cost), "rows": len(row_lo)})
