"""Clearing: declarations against a target, by merit order, per grid scope and slot.

Each declaration offers ``quantity_kw`` in one slot of one grid scope (a clearing node, feeder
or transformer area) at ``price_yuan_per_kwh``. Per (scope, slot), in order of price (cheapest
first), declarations are accepted whole until the target is met; the one that meets it (the
marginal one) is accepted in part. Equal prices go by submission (earlier first), then by unit
code. Declarations priced above the cap are not accepted and are flagged. Pricing
(``domain/RULES.md``, a rule-set choice):

* ``"uniform"``: every accepted declaration is paid the marginal (highest accepted) price of its
  scope-slot;
* ``"pay_as_bid"``: every accepted declaration is paid its own price.

Several scopes and all slots clear in one call, without a loop over slots. Rather than sort all
rows, prices are bucketed per scope-slot by the bits of their float64 value (an
order-preserving integer, so the buckets follow merit order exactly); bucket sums give the
bucket where the target is met; rows of cheaper buckets are accepted whole, dearer ones
rejected, and only the crossing bucket's few rows are sorted by (price, submission, unit). The
result is the one a full lexsort over (scope, slot, price, submission, unit) gives.

Rows equal in scope, slot, price, submission and unit keep their input order; give every
declaration a distinct (submission, unit) pair for a result independent of input order. The
same input gives the same bits; a permuted input gives the same accepted declarations at the
same prices, the quantities equal up to the rounding of the sums (about 1e-15 relative).
A scope-slot whose target is at least the sum offered under the cap (as summed in floating
point) accepts every offer whole. A cut (partial acceptance) smaller than 1e-9 × max(1 kW, target) is rounding dust and counts as 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from openvpp.core.errors import InvalidInput, Violation

PRICING_RULES = ("uniform", "pay_as_bid")
_BUCKET_BITS = 12   # at most 4,096 price buckets per scope-slot and pass
_SMALL = 65_536     # candidates left for the exact sort
_DUST = 1e-9        # relative to max(1 kW, target): smaller acceptances are rounding


class Clearing(NamedTuple):
    """Result of :func:`clear`.

    Per declaration, shape (n,):

    accepted_kw : float, kW — 0 <= accepted <= quantity.
    settlement_price_yuan_per_kwh : float — what an accepted declaration is paid; NaN if not accepted.
    over_cap : bool — priced above the cap, hence not accepted.

    Per (scope, slot), shape (n_scopes, n_slots):

    clearing_price_yuan_per_kwh : float — the marginal (highest) accepted price; NaN if nothing
        was accepted. Under pay-as-bid it is reported but pays nobody more than their bid.
    cleared_kw : float, kW — total accepted.
    shortfall_kw : float, kW — target minus what was offered at or under the cap, when positive.
    """

    accepted_kw: np.ndarray
    settlement_price_yuan_per_kwh: np.ndarray
    over_cap: np.ndarray
    clearing_price_yuan_per_kwh: np.ndarray
    cleared_kw: np.ndarray
    shortfall_kw: np.ndarray


def clear(target_kw, slot, quantity_kw, price_yuan_per_kwh, submitted, unit, scope=None, *,
          pricing: str = "uniform", price_cap_yuan_per_kwh=None) -> Clearing:
    """Clear declarations against a target per (scope, slot).

    Parameters
    ----------
    target_kw : float array (n_scopes, n_slots), or (n_slots,) for one scope, kW, >= 0.
    slot : int array (n,) — slot index of each declaration, 0..n_slots-1.
    quantity_kw : float array (n,), kW, >= 0 — quantity offered.
    price_yuan_per_kwh : float array (n,) — price asked (finite; negative allowed).
    submitted : int or datetime64 array (n,) — submission order; earlier wins equal prices.
    unit : int array (n,) — trading unit (or operator) code; lower wins after ``submitted``.
    scope : int array (n,), optional — grid-scope code, 0..n_scopes-1; None = scope 0.
    pricing : "uniform" or "pay_as_bid".
    price_cap_yuan_per_kwh : float, or float array (n_scopes, n_slots), optional — declarations
        priced strictly above it are not accepted (``over_cap``).

    Returns
    -------
    :class:`Clearing`.
    """
    t, g, q, p, over = _inputs(target_kw, slot, quantity_kw, price_yuan_per_kwh, scope, pricing,
                               price_cap_yuan_per_kwh)
    shape, t = t.shape, t.ravel()
    n_groups = t.size
    qv = q if over is None else np.where(over, 0.0, q)    # over the cap: offered nothing
    key = _price_key(p)
    accepted, rows, base, offered = _narrow(t, g, qv, key, n_groups)
    full = t >= offered                                     # everything offered is accepted
    cand = rows[np.lexsort((np.asarray(unit)[rows], np.asarray(submitted)[rows], key[rows], g[rows]))]
    gc, qc, goal = g[cand], qv[cand], t[g[cand]]
    before = base[gc] + _group_cumsum(qc, gc) - qc          # accepted ahead in merit order
    take = np.where(full[gc], qc, np.clip(goal - before, 0.0, qc))
    take[(take < qc) & (take < _DUST * np.maximum(1.0, goal))] = 0.0  # a cut this small is rounding
    accepted[cand] = take
    top = np.full(n_groups, -np.inf)                        # the marginal price: candidates hold it
    np.maximum.at(top, gc[take > 0], p[cand[take > 0]])
    price = np.where(np.isneginf(top), np.nan, top)
    paid = accepted > 0
    settle = np.where(paid, price[g] if pricing == "uniform" else p, np.nan)
    return Clearing(accepted, settle, np.zeros(q.size, dtype=bool) if over is None else over,
                    price.reshape(shape), (base + np.bincount(gc, take, n_groups)).reshape(shape),
                    np.maximum(t - offered, 0.0).reshape(shape))


def _narrow(t, g, qv, key, n_groups):
    """Bucket prices per group until few rows are left where the target is met.

    Returns ``accepted`` (rows of cheaper buckets, whole), the candidate rows (the crossing
    bucket of each group; for a group whose target covers everything, its dearest non-empty
    bucket, which holds the marginal price), ``base`` (quantity of the cheaper buckets per
    group) and ``offered`` (total valid quantity per group).
    """
    base = np.zeros(n_groups)
    rows, offered, accepted = None, None, None
    while True:
        kr, gr, qr = (key, g, qv) if rows is None else (key[rows], g[rows], qv[rows])
        if rows is None:                                    # first pass: one price range for all
            lo, span = (kr.min(), int(kr.max()) - int(kr.min())) if kr.size else (np.uint64(0), 0)
        else:
            lo_g, hi_g = _group_min_max(kr, gr, n_groups)
            lo, span = lo_g[gr], int((hi_g - lo_g).max())
        nbits = min(_BUCKET_BITS, max(1, (kr.size // n_groups).bit_length()))  # at most ~2 cells a row
        shift = max(span.bit_length() - nbits, 0)
        nb = (span >> shift) + 1
        b = np.subtract(kr, lo)                             # uint64: no overflow across signs
        b >>= np.uint64(shift)
        b = b.view(np.int64)                                # < 2**nbits now
        cell = gr * nb
        cell += b
        hist = np.bincount(cell, qr, n_groups * nb).reshape(n_groups, nb)
        del cell
        cum = np.cumsum(hist, axis=1)
        if offered is None:
            offered = cum[:, -1].copy()
        full = t >= offered
        last = nb - 1 - np.argmax(hist[:, ::-1] > 0, axis=1)  # dearest bucket with quantity
        met = t - _DUST * np.maximum(1.0, t)                 # the target, less rounding dust
        cross = np.minimum(((base[:, None] + cum) < met[:, None]).sum(axis=1), nb - 1)
        k = np.where(full, np.where(offered > 0, last, -1), np.where(t > 0, cross, -1))
        at = np.arange(n_groups)
        base += np.where(k >= 0, cum[at, np.maximum(k, 0)] - hist[at, np.maximum(k, 0)], 0.0)
        kg = k[gr]
        if rows is None:
            accepted = np.where(b < kg, qv, 0.0)
            rows = np.flatnonzero(b == kg)
        else:
            below = rows[b < kg]
            accepted[below] = qv[below]
            rows = rows[b == kg]
        if rows.size <= max(_SMALL, 4 * n_groups) or span == 0 or rows.size == kr.size:
            return accepted, rows, base, offered


def _price_key(p: np.ndarray) -> np.ndarray:
    """uint64 with the order of the float64 prices (``-0.0`` already made ``+0.0``): a positive
    number's bits as they are, a negative one's all flipped and below every positive one."""
    bits = p.view(np.uint64)
    if p.size == 0 or p.min() >= 0:
        return bits
    neg = bits >> np.uint64(63)
    return bits ^ (neg * np.uint64(0x7FFF_FFFF_FFFF_FFFF) | np.uint64(1 << 63))


def _group_cumsum(v: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Inclusive running sum of ``v`` restarting at each group (``g`` sorted)."""
    if v.size == 0:
        return v
    cum = np.cumsum(v)
    start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    return cum - np.repeat(cum[start] - v[start], np.diff(np.r_[start, v.size]))


def _group_min_max(v: np.ndarray, g: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full(n_groups, np.iinfo(v.dtype).max, dtype=v.dtype)
    hi = np.zeros(n_groups, dtype=v.dtype)
    np.minimum.at(lo, g, v)
    np.maximum.at(hi, g, v)
    return np.minimum(lo, hi), hi                           # a group without rows: (0, 0)


# ---------------------------------------------------------------- input checks


def _inputs(target_kw, slot, quantity_kw, price, scope, pricing, cap):
    if pricing not in PRICING_RULES:
        raise InvalidInput(Violation("pricing", f"must be one of {PRICING_RULES}", pricing))
    t = np.asarray(target_kw, dtype=np.float64)
    t = t[None, :] if t.ndim == 1 else t
    if t.ndim != 2 or not np.isfinite(t).all() or (t < 0).any():
        raise InvalidInput(Violation("target_kw", "must be (n_scopes, n_slots) or (n_slots,), finite, >= 0", t.shape))
    n_scopes, n_slots = t.shape
    s = np.asarray(slot)
    n = s.shape[0] if s.ndim == 1 else -1
    sc = np.zeros(max(n, 0), dtype=np.int64) if scope is None else np.asarray(scope)
    q = np.asarray(quantity_kw, dtype=np.float64)
    p = np.asarray(price, dtype=np.float64) + 0.0           # -0.0 -> +0.0
    for name, arr in (("slot", s), ("scope", sc), ("quantity_kw", q), ("price_yuan_per_kwh", p)):
        if arr.shape != (n,):
            raise InvalidInput(Violation(name, "must be 1-D, one value per declaration, like slot", arr.shape))
    for name, arr, hi in (("slot", s, n_slots), ("scope", sc, n_scopes)):
        if n and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= hi):
            raise InvalidInput(Violation(name, f"must be integer codes 0..{hi - 1} (target_kw's shape)", None))
    if n and not (q.min() >= 0 and np.isfinite(q.sum())):
        raise InvalidInput(Violation("quantity_kw", "must be finite and >= 0", None))
    if n and not np.isfinite(p.sum()) and not np.isfinite(p).all():
        raise InvalidInput(Violation("price_yuan_per_kwh", "must be finite", None))
    g = s.astype(np.int64) if scope is None else sc.astype(np.int64) * n_slots + s
    if cap is None:
        return t, g, q, p, None
    c = np.asarray(cap, dtype=np.float64)
    if c.ndim and c.shape != t.shape and c.shape != (n_slots,):
        raise InvalidInput(Violation("price_cap_yuan_per_kwh", f"must be a number or shaped like target_kw {t.shape}", c.shape))
    over = p > (c if c.ndim == 0 else np.broadcast_to(c, t.shape).ravel()[g])
    return t, g, q, p, over
