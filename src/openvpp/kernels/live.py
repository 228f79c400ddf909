"""Live-state kernels: each device's available flexibility now, its expected reporting interval, and
totals over overlapping groups (pools) from a membership index.

Pure functions on arrays; ``services.live`` holds the state and calls them every few seconds.
"""

from __future__ import annotations

import numpy as np

from openvpp.kernels.aggregate import group_sum

#: "never reported" in ``last_ts_ms`` (``services.telemetry`` uses it too, for a missing or unparsable time)
NO_TS = np.iinfo(np.int64).min
SOC_EMPTY, SOC_FULL = 0.05, 0.95


def live_flex(p_kw: np.ndarray, soc: np.ndarray, last_ts_ms: np.ndarray, now_ms: int,
              offline_after_ms: int | np.ndarray, capacity_kw: np.ndarray, adjustable_up_kw: np.ndarray,
              adjustable_down_kw: np.ndarray, bidirectional: np.ndarray, generator: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Online flag, power and available flexibility of every device.

    Parameters
    ----------
    p_kw : (n,) float — last reported active power, load positive [kW].
    soc : (n,) float — last state of charge [0..1], NaN = not reported.
    last_ts_ms : (n,) int64 — time of the last point, epoch ms; ``NO_TS`` = never reported.
    now_ms : int — evaluation time, epoch ms.
    offline_after_ms : int or (n,) int64 — a device silent for longer is offline [ms]; one value
        for all, or each device's own (``device_intervals`` × the number of intervals).
    capacity_kw, adjustable_up_kw, adjustable_down_kw : (n,) float — registry values [kW].
    bidirectional : (n,) bool — storage / V2G: may swing both ways within its declared range.
    generator : (n,) bool, optional — PV: net load ≤ 0; "up" is curtailment, at most what it injects.

    Returns
    -------
    online (n,) bool; power_kw, up_kw, down_kw (n,) float64, zero where offline.
    Sign convention of docs/city-files.md: net load at the meter, ``down`` lowers it, ``up`` raises
    it. ``down`` of a one-way device is bounded by its present load, ``up`` by its headroom to
    capacity (a generator's by its present injection: it can curtail no more than it makes); a
    bidirectional device keeps its declared range unless its battery is empty (no down) or full (no up).
    """
    online = (last_ts_ms != NO_TS) & (now_ms - last_ts_ms <= offline_after_ms)
    with np.errstate(invalid="ignore"):
        one_way_down = np.minimum(adjustable_down_kw, np.maximum(p_kw, 0.0))
        headroom = np.maximum(capacity_kw - p_kw, 0.0)
        if generator is not None:
            headroom = np.where(generator, np.maximum(-p_kw, 0.0), headroom)
        one_way_up = np.minimum(adjustable_up_kw, headroom)
        two_way_down = np.where(soc <= SOC_EMPTY, 0.0, adjustable_down_kw)
        two_way_up = np.where(soc >= SOC_FULL, 0.0, adjustable_up_kw)
    down = np.where(bidirectional, two_way_down, one_way_down)
    up = np.where(bidirectional, two_way_up, one_way_up)
    zero = 0.0
    return (online, np.where(online, p_kw, zero), np.where(online, up, zero), np.where(online, down, zero))


def device_intervals(default_s: float, *lookups: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Expected reporting interval of every device [s]: the longest of the intervals that apply to
    it (one per categorical attribute, e.g. its control protocol and its resource type), or
    ``default_s`` where none applies.

    Parameters
    ----------
    default_s : float — interval of a device no table names [s], > 0.
    *lookups : (codes (n,) int, table (k,) float) — the device's category code in that attribute
        (-1 = none) and the interval of each category [s], NaN = not set.

    Returns
    -------
    (n,) float64 [s].
    """
    if not lookups:
        raise ValueError("at least one (codes, table) lookup is needed to know how many devices there are")
    n = len(lookups[0][0])
    best = np.full(n, np.nan)
    for codes, table in lookups:
        codes = np.asarray(codes)
        table = np.append(np.asarray(table, np.float64), np.nan)   # code -1 → the trailing NaN
        got = table[np.where(codes >= 0, codes, len(table) - 1)]
        best = np.fmax(best, got)                                     # NaN loses to any number
    return np.where(np.isnan(best), float(default_s), best)


def membership_patterns(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index overlapping groups by membership pattern: devices that belong to exactly the same
    groups share one pattern code.

    Parameters
    ----------
    masks : (P, n) bool — ``masks[g, i]``: device i belongs to group g.

    Returns
    -------
    codes (n,) int32 — each device's pattern, -1 for a device in no group;
    incidence (K, P) bool — which groups each pattern belongs to.

    A city's pools are a few scenarios × a few grid nodes, so K stays in the hundreds for a
    million devices, and a total per pool becomes one group sum over ``codes`` plus a (K, P)
    product (``overlapping_sums``) instead of P masked sums over n.
    """
    masks = np.asarray(masks, bool)
    p, n = masks.shape
    if p == 0 or n == 0:
        return np.full(n, -1, np.int32), np.zeros((0, p), bool)
    keys = np.zeros((-(-p // 64), n), np.uint64)                     # the memberships as bits, 64 groups a word
    for g in range(p):
        keys[g // 64] |= masks[g].astype(np.uint64) << np.uint64(g % 64)
    order = np.lexsort(keys[::-1])
    ordered = keys[:, order]
    first = np.ones(n, bool)
    first[1:] = (ordered[:, 1:] != ordered[:, :-1]).any(axis=0)
    inverse = np.empty(n, np.int64)
    inverse[order] = np.cumsum(first) - 1
    distinct = ordered[:, first]                                     # (W, K)
    g = np.arange(p)
    incidence = ((distinct[g // 64] >> (g % 64).astype(np.uint64)[:, None]) & np.uint64(1)).T.astype(bool)
    member = incidence.any(axis=1)
    if member.all():
        return inverse.astype(np.int32), incidence
    renumber = np.cumsum(member) - 1                                  # drop the "in no group" pattern
    return np.where(member[inverse], renumber[inverse], -1).astype(np.int32), incidence[member]


def overlapping_sums(codes: np.ndarray, incidence: np.ndarray, *values: np.ndarray,
                     mask: np.ndarray | None = None) -> np.ndarray:
    """Sum each value array per overlapping group, from ``membership_patterns``.

    Parameters
    ----------
    codes : (n,) int — pattern of each device, -1 = in no group.
    incidence : (K, P) bool — groups of each pattern.
    *values : (n,) float — quantities to sum [kW, counts...].
    mask : (n,) bool, optional — only devices where True count (a tenant's scope).

    Returns
    -------
    (len(values) + 1, P) float64: one row per value array, the last row the member count.
    """
    per_pattern = group_sum(codes, len(incidence), *values, mask=mask)   # (V + 1, K)
    return per_pattern @ incidence.astype(np.float64)
