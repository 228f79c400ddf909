"""Orderly charging at scale: a vectorised heuristic, checked against the exact LP (``ev_lp``).

1. **Cheapest-slot fill.** The price order of the slots is the same for every session, so each
   session's optimal schedule on its own (full power in its cheapest plugged slots until its
   need is met) is one cumulative sum over the slots in price order, for all sessions at once.
2. **Capacity pass.** Stations and transformer areas whose limits that fill breaks are
   re-scheduled in *rounds*: the sessions of a conflict group (a transformer area, or a station
   without one) are ordered by laxity (spare plugged time, least first) and round ``r`` schedules
   the ``r``-th session of every group at once, each into its cheapest slots with the capacity
   the earlier rounds left (ties in price go to the slots with the most room, which levels the load).
3. **Fairness.** Where a group cannot meet every need, its rounds run again as progressive
   filling: every session up to 10 % of its need, then 20 %, ... 100 %, each level in the
   cheapest slots left; so a shortage is spread over users (max-min served fraction to within
   one level) instead of starving whoever comes last.

A bad or infeasible session never raises: it gets what is feasible and a flag (``model.ev``).
"""

from __future__ import annotations

import numpy as np

from openvpp.core.timeslots import SLOT_H
from openvpp.model.ev import CAPACITY_SHORT, Schedule, Sessions, Stations, TransformerAreas

TOL_KWH = 1e-6
FAIR_LEVELS = np.linspace(0.1, 1.0, 10)


def fill_cheapest(caps_kw: np.ndarray, order: np.ndarray, need_kwh: np.ndarray) -> np.ndarray:
    """Fill each row's slots in ``order`` up to ``caps_kw`` until ``need_kwh`` is reached.

    caps_kw : (m, T) kW the row may draw per slot; order : (T,) or (m, T) slot order (cheapest first);
    need_kwh : (m,). Returns (m, T) kW.
    """
    if order.ndim == 1:
        cs = caps_kw[:, order]
    else:
        cs = np.take_along_axis(caps_kw, order, axis=1)
    xs = _fill_sorted(cs, need_kwh)
    out = np.empty_like(xs)
    if order.ndim == 1:
        out[:, order] = xs
    else:
        np.put_along_axis(out, order, xs, axis=1)
    return out


def _fill_sorted(cs: np.ndarray, need_kwh: np.ndarray) -> np.ndarray:
    """Fill (in place of ``cs``, kW caps in fill order) until ``need_kwh``; returns kW in fill order."""
    cum = np.cumsum(cs, axis=1)
    cum *= SLOT_H
    # energy still wanted when the slot starts = need - (cum - cap*h); what the slot gives = clip(that, 0, cap*h)
    np.subtract(need_kwh[:, None], cum, out=cum)      # need - cum
    cum /= SLOT_H
    cum += cs                                         # (need - before) / h
    np.clip(cum, 0.0, cs, out=cum)
    return cum


def _group_sums(values: np.ndarray, keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Sum the rows of ``values`` (n, T) by ``keys`` (n,) into (n_keys, T); rows with key < 0 are skipped."""
    out = np.zeros((n_keys, values.shape[1]))
    ok = keys >= 0
    if not ok.any():
        return out
    order = np.argsort(keys[ok], kind="stable")
    k = keys[ok][order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    out[k[starts]] = np.add.reduceat(values[ok][order], starts, axis=0)
    return out


def _rounds(rows: np.ndarray, group: np.ndarray, laxity: np.ndarray) -> list[np.ndarray]:
    """Split ``rows`` into rounds: round r holds the r-th least-lax row of every group."""
    order = np.lexsort((laxity[rows], group[rows]))
    rows, g = rows[order], group[rows][order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    by_rank = np.argsort(rank, kind="stable")
    cuts = np.flatnonzero(np.diff(rank[by_rank])) + 1
    return np.split(rows[by_rank], cuts)


def _capacity_rounds(rows: list[np.ndarray], target: np.ndarray, cap_kw: np.ndarray, avail: np.ndarray,
                     station: np.ndarray, ta_of: np.ndarray, st_rem: np.ndarray, ta_rem: np.ndarray,
                     price_rank: np.ndarray, x: np.ndarray) -> None:
    """Schedule ``target`` more kWh for each row, round by round, within the remaining capacity (in place)."""
    big = float(max(cap_kw.max(initial=0.0), 1.0)) * 4.0 + 1.0
    for r in rows:
        st = station[r]
        ta = ta_of[st]
        room = st_rem[st]
        if len(ta_rem):
            room = np.minimum(room, np.where(ta[:, None] >= 0, ta_rem[np.maximum(ta, 0)], np.inf))
        room = np.maximum(room, 0.0)
        caps = np.where(avail[r], np.minimum(cap_kw[r, None] - x[r], room), 0.0)
        caps = np.maximum(caps, 0.0)
        key = price_rank[None, :] * big - np.minimum(room, big / 2)
        order = np.argsort(key, axis=1, kind="stable")
        add = fill_cheapest(caps, order, target[r])
        x[r] += add
        st_rem[st] -= add
        has_ta = ta >= 0
        if has_ta.any():
            ta_rem[ta[has_ta]] -= add[has_ta]


def schedule(sessions: Sessions, stations: Stations | None, price_yuan_per_kwh: np.ndarray,
             areas: TransformerAreas | None = None) -> Schedule:
    """Day-ahead charging schedule of every session at (near) least cost within station and area limits.

    Parameters
    ----------
    sessions : the sessions (``model.ev.Sessions``); ``station`` rows index ``stations``.
    stations : import limits (``capacity_kw`` (m,) or (m, T)) and transformer area of each station; None = no limit.
    price_yuan_per_kwh : (T,) energy price per slot [yuan/kWh] (``kernels.tariff.price_curve``).
    areas : transformer-area headroom for EV load (k,) or (k, T) [kW]; None = no area limit.

    Returns
    -------
    ``Schedule`` with power (n, T) kW, served and need kWh, flags, cost [yuan] and the minimum served fraction.
    """
    price = np.asarray(price_yuan_per_kwh, np.float64)
    horizon = len(price)
    need, flags = sessions.check(horizon)
    cap_kw = np.where(need > 0, sessions.max_charge_kw, 0.0)
    _, price_rank = np.unique(price, return_inverse=True)
    order = np.argsort(price_rank, kind="stable")

    # 1. every session alone in its cheapest slots (built directly in price order)
    a, d = sessions.arrival[:, None], sessions.departure[:, None]
    cs = ((order[None, :] >= a) & (order[None, :] < d)) * cap_kw[:, None]
    xs = _fill_sorted(cs, need)
    x = np.empty_like(xs)
    x[:, order] = xs
    del cs, xs

    # 2. conflicts with station and transformer-area limits
    n = sessions.n
    station = sessions.station
    if stations is not None and n:
        m = stations.m
        st_cap = np.asarray(stations.capacity(horizon), np.float64)
        ta_of = np.r_[stations.ta, -1]                      # station -1 -> row m, no area
        st = np.where(station >= 0, station, m)
        st_cap = np.vstack([st_cap, np.full((1, horizon), np.inf)])
        k = areas.k if areas is not None else 0
        ta_cap = np.asarray(areas.capacity(horizon), np.float64) if areas is not None else np.zeros((0, horizon))
        if areas is None:
            ta_of = np.full(m + 1, -1)
        load_st = _group_sums(x, st, m + 1)
        over_st = (load_st > st_cap + 1e-9).any(axis=1)
        ta_sess = ta_of[st]
        over_ta = (_group_sums(load_st[:m], ta_of[:m], k) > ta_cap + 1e-9).any(axis=1) if k else np.zeros(0, bool)
        group = np.where(ta_sess >= 0, ta_sess, k + st)
        bad_group = np.zeros(k + m + 1, bool)
        bad_group[:k] = over_ta
        bad_group[k:] = over_st
        ta_over_st = ta_of[:m][over_st[:m]]
        bad_group[ta_over_st[ta_over_st >= 0]] = True                  # a station in an area: re-run the area
        bad_group[k + m] = False                                       # sessions without a station: no limit
        redo = np.flatnonzero(bad_group[group] & (need > 0))
        if len(redo):
            # whole groups are re-run: their stations and areas start from their full capacity
            x[redo] = 0.0
            st_rem, ta_rem = st_cap.copy(), ta_cap.copy()
            avail = np.zeros((n, horizon), bool)
            avail[redo] = sessions.take(redo).availability(horizon)
            dwell_kwh = (avail[redo].sum(axis=1) * cap_kw[redo]) * SLOT_H
            laxity = np.zeros(n)
            laxity[redo] = np.where(cap_kw[redo] > 0, (dwell_kwh - need[redo]) / np.maximum(cap_kw[redo], 1e-9), 0.0)
            rounds = _rounds(redo, group, laxity)
            # first pass: the whole need; if a group falls short, redo it fairly
            _capacity_rounds(rounds, need, cap_kw, avail, st, ta_of, st_rem, ta_rem, price_rank, x)
            served = x.sum(axis=1) * SLOT_H
            short_group = np.zeros(k + m + 1)
            np.add.at(short_group, group[redo], need[redo] - served[redo])
            fair_groups = short_group > TOL_KWH * 10
            if fair_groups.any():
                again = redo[fair_groups[group[redo]]]
                x[again] = 0.0
                st_rem[np.unique(st[again])] = st_cap[np.unique(st[again])]
                tas = np.unique(ta_sess[again])
                tas = tas[tas >= 0]
                ta_rem[tas] = ta_cap[tas]
                r_again = _rounds(again, group, laxity)
                for level in FAIR_LEVELS:        # progressive filling: everyone to 10 %, then 20 %, ...
                    served = x.sum(axis=1) * SLOT_H
                    _capacity_rounds(r_again, np.maximum(level * need - served, 0.0), cap_kw, avail, st, ta_of,
                                     st_rem, ta_rem, price_rank, x)
    served = x.sum(axis=1) * SLOT_H
    short = served < need - 1e-6 * np.maximum(1.0, need)
    flags = flags | np.where(short, CAPACITY_SHORT, 0).astype(np.uint8)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(need > 0, served / np.where(need > 0, need, 1.0), np.inf)
    cost = float((x @ price).sum() * SLOT_H)
    return Schedule(power_kw=x, served_kwh=served, need_kwh=need, flags=flags, cost_yuan=cost,
                    min_served_fraction=float(min(1.0, frac.min(initial=np.inf))), solver="heuristic")
