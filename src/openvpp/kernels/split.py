"""Target split: share an operator's instruction over its devices, fairly and within their limits.

An operator receives a cleared quantity per slot (a reduction, kW) and must turn it into one
set-point per device. Each device ``i`` can give at most ``cap_i`` kW this slot
(:func:`device_cap_kw`: headroom from live telemetry, latency and ramp against the time left,
energy over the duration, comfort/service limits). The split solves

    minimise   sum_i w_i * x_i**2 / cap_i
    subject to sum_i x_i = target,   0 <= x_i <= cap_i

(``w_i`` > 0: a cost or priority weight, larger = spared). Its KKT conditions give the
water-filling solution

    x_i = cap_i * min(1, level / w_i)

for the single ``level`` (half the multiplier of the sum constraint) where the shares add up to
the target: with equal weights every device gives the same fraction of its capability; a
device with a lower weight gives a larger fraction, and saturates first. When the target is
at least ``sum(cap)`` every device gives its cap and the rest is the shortfall.

The same allocation is the unique optimum of the linear programme
``minimise z s.t. w_i * x_i <= z * cap_i, sum x = target, 0 <= x <= cap`` (weighted max-min
fairness), whose optimal ``z`` is ``level``: any feasible ``x`` has ``x_i <= cap_i * min(1, z/w_i)``,
those bounds add up to the target exactly at ``z = level``, so they are all attained. The
benchmark solves that LP with HiGHS to check the kernel.

The level is found exactly (no iteration tolerance): ``F(level) = sum_i cap_i min(1, level/w_i)``
is piecewise linear with breakpoints at the weights. The weights are bucketed by the bits of
their float64 value (monotone for positive numbers: log-like buckets with exact edges, up to
4,096 per pass), the bucket sums of ``cap`` and ``cap/w`` give ``F`` at the bucket edges, and
only the devices of the bucket where ``F`` crosses the target go on (another pass, or a sort
once fewer than ~16,000 are left). O(n) plus a small sort; many slots are solved at once (one
group per slot), without a loop over slots.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from openvpp.core.errors import InvalidInput, Violation

_BUCKET_BITS = 12  # at most 4,096 buckets per group and pass
_SMALL = 16_384  # candidates left for the exact sort; below this, bucketing again costs more
_INF_BITS = np.float64(np.inf).view(np.int64)


class Split(NamedTuple):
    """Result of :func:`split` and :func:`redispatch`.

    power_kw : float array, kW, the shape of ``cap_kw`` — each device's share (>= 0, <= cap).
    shortfall_kw : float array, kW, shape () or (T,) — the part of the target no device can give.
    level : float array, shape () or (T,) — the water level: ``x = cap * min(1, level / w)``;
        ``inf`` when every device is at its cap, 0 when the target is 0.
    """

    power_kw: np.ndarray
    shortfall_kw: np.ndarray
    level: np.ndarray


def device_cap_kw(power_kw, min_kw, max_kw, direction: str = "down", *, latency_s=None,
                  time_left_s=None, ramp_kw_per_s=None, energy_kwh=None, duration_h=None,
                  service_max_kw=None) -> np.ndarray:
    """What each device can give this slot, kW (>= 0).

    Parameters
    ----------
    power_kw : float array (n,) or (n, T), kW — live power (load positive); NaN = no telemetry
        (offline), which gives 0.
    min_kw, max_kw : float arrays, kW — the device's power range.
    direction : "down" (reduce load: ``power - min``) or "up" (raise load: ``max - power``).
    latency_s : float array, s, optional — response latency; a device whose latency exceeds
        ``time_left_s`` gives 0.
    time_left_s : float, s — time left until the end of the slot (or window) being split.
    ramp_kw_per_s : float array, kW/s, optional — ramp rate; caps the change at
        ``ramp * (time_left - latency)``.
    energy_kwh : float array, kWh, optional — energy the device can give over the duration
        (storage/EV: state of charge above the reserve, or energy that can be deferred before
        departure); NaN = not energy-limited. Caps at ``energy_kwh / duration_h``.
    duration_h : float or array, h — how long the response must be held (needed with energy_kwh).
    service_max_kw : float array, kW, optional — comfort or service limit (AC temperature band,
        EV departure energy, data-centre SLA) expressed as a maximum; NaN = none.

    Returns
    -------
    float64 array, the broadcast shape of the inputs, kW, finite, >= 0.
    """
    if direction not in ("down", "up"):
        raise InvalidInput(Violation("direction", 'must be "down" or "up"', direction))
    p = np.asarray(power_kw, dtype=np.float64)
    if direction == "down":
        cap = p - np.asarray(min_kw, dtype=np.float64)
    else:
        cap = np.asarray(max_kw, dtype=np.float64) - p
    cap = np.where(np.isnan(cap), 0.0, cap)                 # no telemetry: offline, gives nothing
    if latency_s is not None or ramp_kw_per_s is not None:
        if time_left_s is None:
            raise InvalidInput(Violation("time_left_s", "is required with latency_s or ramp_kw_per_s", None))
        lat = 0.0 if latency_s is None else np.asarray(latency_s, dtype=np.float64)
        cap = np.where(lat > time_left_s, 0.0, cap)
        if ramp_kw_per_s is not None:
            cap = np.fmin(cap, np.asarray(ramp_kw_per_s, dtype=np.float64) * (time_left_s - lat))
    if energy_kwh is not None:
        if duration_h is None or np.any(np.asarray(duration_h) <= 0):
            raise InvalidInput(Violation("duration_h", "must be > 0 with energy_kwh", duration_h))
        e = np.asarray(energy_kwh, dtype=np.float64) / np.asarray(duration_h, dtype=np.float64)
        cap = np.fmin(cap, e)                               # fmin: a NaN limit is no limit
    if service_max_kw is not None:
        cap = np.fmin(cap, np.asarray(service_max_kw, dtype=np.float64))
    cap = np.maximum(cap, 0.0)
    if np.isinf(cap).any():
        raise InvalidInput(Violation("max_kw", "an unbounded device needs a finite limit (max_kw, energy or service)",
                                     int(np.isinf(cap).sum())))
    return cap


def split(target_kw, cap_kw, weight=None) -> Split:
    """Share a target over devices: ``x = cap * min(1, level / w)`` with ``sum x = target``.

    Parameters
    ----------
    target_kw : float (one slot) or float array (T,) (one target per slot of a window), kW, >= 0.
    cap_kw : float array (n,) for one slot or (n, T) for a window, kW, >= 0 — from
        :func:`device_cap_kw`.
    weight : float array (n,) or (n, T), > 0, optional — cost/priority weight (larger = spared);
        None = all equal, which gives every device the same fraction of its cap.

    Returns
    -------
    :class:`Split`. ``sum(power_kw) == min(target, sum(cap))`` per slot, up to rounding.
    """
    cap, target = _inputs(cap_kw, target_kw)
    if cap.ndim == 1:
        x, short, level = _split_slot(float(target), cap, _weight(weight, cap.shape))
        return Split(x, np.asarray(short), np.asarray(level))
    w = _weight(weight, cap.shape)
    n, t = cap.shape
    if w is None or w.min() == w.max():                    # proportional to the caps, per slot
        total = cap.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(target >= total, 1.0, target / total)
        level = np.where(target >= total, np.inf, frac * (1.0 if w is None else float(w.flat[0])))
        return Split(cap * frac, np.maximum(target - total, 0.0), level)
    c_rows = np.ascontiguousarray(cap.T).ravel()           # slot-major: one group per slot
    w_rows = np.ascontiguousarray(np.broadcast_to(w, cap.shape).T).ravel()
    group = np.repeat(np.arange(t), n)
    a_rows = c_rows / w_rows
    level, short = _levels(target, c_rows, w_rows, a_rows, group, t)
    with np.errstate(invalid="ignore"):                     # inf * 0 for a device with cap 0: fmin drops it
        x = np.fmin(a_rows * level[group], c_rows)
    return Split(x.reshape(t, n).T.copy(), short, level)


def redispatch(power_kw, cap_kw, failed, weight=None, shortfall_kw=None) -> Split:
    """Give what failed devices were asked for to the others, within what they have left.

    Parameters
    ----------
    power_kw : float array (n,) or (n, T), kW — the current split (:func:`split`).
    cap_kw : float array, same shape, kW — the caps it was made with, or refreshed from live
        telemetry: a device whose cap fell below its share is cut to the cap.
    failed : bool array (n,) — devices that did not acknowledge or went offline; they get 0.
    weight : as in :func:`split`.
    shortfall_kw : float or (T,), kW, optional — what to redistribute; default: the failed
        devices' shares plus what the cuts to refreshed caps took away (pass a measured
        shortfall to cover under-delivery instead).

    Returns
    -------
    :class:`Split` — the new split (failed devices at 0, others ``power + extra``), the part
    still not covered, and the level of the extra split (on the residual caps).
    """
    p = np.asarray(power_kw, dtype=np.float64)
    cap, _ = _inputs(cap_kw, 0.0)
    bad = np.asarray(failed, dtype=bool)
    if p.shape != cap.shape or bad.shape != cap.shape[:1]:
        raise InvalidInput(Violation("failed", f"must have shape ({cap.shape[0]},), with power_kw shaped like cap_kw", bad.shape))
    dead = bad if p.ndim == 1 else bad[:, None]
    kept = np.where(dead, 0.0, np.minimum(p, cap))
    lost = (p - kept).sum(axis=0) if shortfall_kw is None else np.asarray(shortfall_kw, dtype=np.float64)
    extra = split(lost, np.where(dead, 0.0, cap - kept), weight)
    x = np.minimum(kept + extra.power_kw, cap)              # kept + (cap - kept) may round above cap
    return Split(np.where(dead, 0.0, x), extra.shortfall_kw, extra.level)


def split_cost(power_kw, cap_kw, weight=None) -> np.ndarray:
    """The split's objective ``sum w * x**2 / cap`` (kW; devices with cap 0 count 0), per slot."""
    x = np.asarray(power_kw, dtype=np.float64)
    cap = np.asarray(cap_kw, dtype=np.float64)
    w = 1.0 if weight is None else np.asarray(weight, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(cap > 0, w * x * x / cap, 0.0).sum(axis=0)


# ---------------------------------------------------------------- one slot (the hot path)


def _split_slot(target: float, c: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, float, float]:
    total = float(c.sum())
    if target >= total:
        return c.copy(), target - total, np.inf
    if target <= 0.0:
        return np.zeros_like(c), 0.0, 0.0
    if w is None or w.min() == w.max():                    # proportional to the caps
        level = target / total * (1.0 if w is None else float(w[0]))
        return c * (target / total), 0.0, level
    a = c / w                                               # kW per unit of level below the cap
    level = float(_levels(np.array([target]), c, w, a, None, 1)[0][0])
    x = np.multiply(a, level)
    np.minimum(x, c, out=x)                                 # cap * min(1, level / w)
    return x, 0.0, level


# ---------------------------------------------------------------- the level, per group


def _levels(target: np.ndarray, c: np.ndarray, w: np.ndarray, a: np.ndarray,
            group: np.ndarray | None, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact water level and shortfall per group (slot); ``group=None`` = one group.

    ``F(level) = base_c + level * base_a + (the candidates' part)``: devices found below the
    level's bucket are saturated (their caps go to ``base_c``), those above are not (their
    ``cap/w`` go to ``base_a``); each narrowing keeps one bucket of candidates per group.
    """
    total = np.array([c.sum()]) if group is None else np.bincount(group, c, n_groups)
    level = np.where(target >= total, np.inf, 0.0)
    active = (target < total) & (target > 0)
    base_c, base_a = np.zeros(n_groups), np.zeros(n_groups)
    bits = w.view(np.int64)                                 # order-preserving for w > 0: exact buckets
    rows = None if group is None else np.flatnonzero(active[group])
    while (c.size if rows is None else rows.size) > _SMALL:
        kept = _narrow(target, c, a, bits, group, rows, n_groups, base_c, base_a)
        if kept is None:
            break
        rows = kept
    if active.any():
        rows = np.arange(c.size) if rows is None else rows
        g = np.zeros(rows.size, dtype=np.intp) if group is None else group[rows]
        cand = _merge_equal(c[rows], w[rows], a[rows], g, n_groups)
        level[active] = _solve_exact(target, *cand, n_groups, base_c, base_a)[active]
    return level, np.maximum(target - total, 0.0)


def _narrow(target, c, a, bits, group, rows, n_groups, base_c, base_a) -> np.ndarray | None:
    """Bucket the candidates by the bits of their weight (log-like spacing, exact edges) and keep,
    per group, the bucket where F crosses the target; updates ``base_c``/``base_a`` in place."""
    br = bits if rows is None else bits[rows]
    g = None if group is None else group[rows]
    lo, hi = _group_min_max(br, g, n_groups)
    span = int((hi - lo).max())
    if span == 0:                                           # every group down to one weight
        return None
    nbits = min(_BUCKET_BITS, max(1, (4 * br.size // n_groups).bit_length()))  # <= ~4-8 cells a row
    shift = max(span.bit_length() - nbits, 0)
    nb = (span >> shift) + 1
    b = np.subtract(br, lo[0] if g is None else lo[g])
    b >>= shift
    key = b if g is None else g * nb + b
    hc = np.bincount(key, c if rows is None else c[rows], n_groups * nb).reshape(n_groups, nb)
    ha = np.bincount(key, a if rows is None else a[rows], n_groups * nb).reshape(n_groups, nb)
    cc = np.cumsum(hc, axis=1)                               # caps of buckets up to k
    after = np.zeros_like(ha)                               # slopes of buckets after k, summed from
    after[:, :-1] = np.cumsum(ha[:, :0:-1], axis=1)[:, ::-1]  # the right: tiny ones are not lost
    step = np.arange(1, nb + 1, dtype=np.uint64) << np.uint64(shift)  # uint64: lo + step never wraps
    edge = np.minimum(lo.astype(np.uint64)[:, None] + step, np.uint64(_INF_BITS))
    with np.errstate(invalid="ignore"):                     # inf * 0 past the largest weight
        f_edge = base_c[:, None] + cc + edge.view(np.float64) * (base_a[:, None] + after)
        k = np.minimum((f_edge < target[:, None]).sum(axis=1), nb - 1)  # F is nondecreasing
    keep = b == (k[0] if g is None else k[g])
    if keep.all():
        return None
    at = np.arange(n_groups)
    base_c += np.where(k > 0, cc[at, np.maximum(k - 1, 0)], 0.0)
    base_a += after[at, k]
    kept = np.flatnonzero(keep)
    return kept if rows is None else rows[kept]


def _solve_exact(target, c, w, a, g, n_groups, base_c, base_a) -> np.ndarray:
    """Level per group from the remaining candidates, sorted by weight: F is linear between them."""
    same = g[1:] == g[:-1]
    if not np.all((g[1:] > g[:-1]) | (same & (w[1:] >= w[:-1]))):  # often sorted already (equal weights)
        order = np.lexsort((w, g))
        c, w, a, g = c[order], w[order], a[order], g[order]
    cum_c, _ = _group_sums(c, g, n_groups)                 # caps up to here, inclusive
    _, suf_a = _group_sums(a, g, n_groups)                  # slopes from here on, inclusive
    tot_c = np.bincount(g, c, n_groups)
    f_at = base_c[g] + cum_c + w * (base_a[g] + suf_a - a)  # F at each candidate's weight
    hit = f_at >= target[g]
    new_group = np.r_[True, g[1:] != g[:-1]]
    first = np.flatnonzero(hit & (new_group | ~np.r_[True, hit[:-1]]))  # hits are a suffix of each group
    first = first[np.r_[True, g[first][1:] != g[first][:-1]]] if first.size else first
    gj = g[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        # groups with no hit: every candidate saturated, the level lies above them all
        level = np.where(base_a > 0, (target - base_c - tot_c) / base_a, np.inf)
        before = np.where(new_group[first], 0.0, cum_c[np.maximum(first - 1, 0)])
        level[gj] = (target[gj] - base_c[gj] - before) / (base_a[gj] + suf_a[first])
    below = np.where(new_group[first], 0.0, w[np.maximum(first - 1, 0)])
    level[gj] = np.clip(level[gj], below, w[first])
    return level


def _merge_equal(c, w, a, g, n_groups):
    """Many candidates left means groups whose candidates share one weight (priority classes):
    each such group becomes one row (sums of cap and cap/w), so nothing large is sorted."""
    if c.size <= _SMALL:
        return c, w, a, g
    lo, hi = _group_min_max(w, g, n_groups)
    if n_groups == 1 and lo[0] == hi[0]:
        return np.array([c.sum()]), lo, np.array([a.sum()]), np.zeros(1, dtype=np.intp)
    flat = (lo == hi)[g]
    one = np.flatnonzero(np.bincount(g[flat], minlength=n_groups))
    rest = ~flat
    return (np.r_[c[rest], np.bincount(g[flat], c[flat], n_groups)[one]], np.r_[w[rest], lo[one]],
            np.r_[a[rest], np.bincount(g[flat], a[flat], n_groups)[one]], np.r_[g[rest], one])


def _group_sums(v: np.ndarray, g: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive running sums of ``v`` within each group (``g`` sorted), from the left and from
    the right; each group is summed on its own (a row of a padded array), so a group of tiny
    values next to one of huge values keeps its precision."""
    if v.size == 0:                                         # the level fell in an empty bucket
        return v, v
    count = np.bincount(g, minlength=n_groups)
    pos = np.arange(v.size) - (np.cumsum(count) - count)[g]
    pad = np.zeros((n_groups, int(count.max())))
    pad[g, pos] = v
    left = np.cumsum(pad, axis=1)[g, pos]
    right = np.cumsum(pad[:, ::-1], axis=1)[:, ::-1][g, pos]
    return left, right


def _group_min_max(v: np.ndarray, g: np.ndarray | None, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    if g is None or n_groups == 1:
        return np.array([v.min()]), np.array([v.max()])
    big = np.iinfo(v.dtype).max if v.dtype.kind == "i" else np.inf
    lo, hi = np.full(n_groups, big, dtype=v.dtype), np.zeros(n_groups, dtype=v.dtype)
    np.minimum.at(lo, g, v)
    np.maximum.at(hi, g, v)
    return np.minimum(lo, hi), hi                           # a group without rows: (0, 0)


# ---------------------------------------------------------------- input checks


def _inputs(cap_kw, target_kw) -> tuple[np.ndarray, np.ndarray]:
    cap = np.asarray(cap_kw, dtype=np.float64)
    if cap.ndim not in (1, 2):
        raise InvalidInput(Violation("cap_kw", "must have shape (n,) or (n, T)", cap.shape))
    if cap.size and not (cap.min() >= 0 and np.isfinite(cap.sum())):  # a NaN fails min() >= 0
        raise InvalidInput(Violation("cap_kw", "must be finite and >= 0 (see device_cap_kw)", None))
    target = np.asarray(target_kw, dtype=np.float64)
    want = () if cap.ndim == 1 else (cap.shape[1],)
    if target.shape != want and not (cap.ndim == 2 and target.ndim == 0):
        raise InvalidInput(Violation("target_kw", f"must have shape {want}", target.shape))
    target = np.broadcast_to(target, want).copy() if want else target
    if not np.isfinite(target).all() or (target < 0).any():
        raise InvalidInput(Violation("target_kw", "must be finite and >= 0", target.tolist()))
    return cap, target


def _weight(weight, shape: tuple[int, ...]) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.ascontiguousarray(weight, dtype=np.float64)
    if w.shape not in (shape, shape[:1]):
        raise InvalidInput(Violation("weight", f"must have shape {shape[:1]} or {shape}", w.shape))
    if w.size and not (w.min() > 0 and np.isfinite(w.max())):
        raise InvalidInput(Violation("weight", "must be finite and > 0", None))
    return w if len(shape) == 1 or w.ndim == 2 else w[:, None]
