"""Measurement and verification: what each resource and trading unit delivered against what was cleared.

Arrays, for every function here
-------------------------------
Rows are resources (``n``) or trading units (``u``), columns the ``s`` slots of an event window
(15 minutes each, ``core.timeslots.SLOT_H`` = 0.25 h). Powers are kW (reactive: kvar), energies
kWh (reactive: kvarh); NaN in a resource's baseline or metered value means "not measured".

The chain (``domain/RULES.md``, "Guangzhou operating rules" and "Baselines"):

1. response = baseline - metered for load reduction (``direction="down"``), metered - baseline for
   valley filling (``"up"``) — :func:`openvpp.kernels.baseline.response_kw`;
2. resources are summed to their trading unit (:func:`group_slots`, one bincount per sum):
   the unit is what the market cleared, so the valid band is applied there (:func:`performance`):
   ratio = response / cleared; below ``band_low`` × cleared the slot pays nothing, above
   ``band_high`` × cleared it is capped (default 80 % / 120 %, rule set ``[evaluation]``);
3. a unit's credited power is shared out to its resources in proportion to their positive response
   (:func:`allocate`), so an owner is paid for what its own meter delivered;
4. credited energy = credited power × 0.25 h per slot (:func:`energy`).

Reserve is paid for availability, not energy: the capacity reserved for a resource × the share of
each slot its telemetry was there (:func:`reserve_available`). Carbon credits only curtailed energy:
:func:`curtailed` removes the energy that came back around the window (rebound) and everything
delivered by resources that only shift load.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from openvpp.core.errors import InvalidInput, Violation
from openvpp.core.timeslots import SLOT_H, SLOT_MINUTES
from openvpp.kernels.baseline import response_kw

TINY = 1e-9   # kW: weights summing to less are nothing to share by

__all__ = ["Performance", "EventEvaluation", "response_kw", "group_slots", "performance", "allocate",
           "split_cleared", "energy", "reserve_available", "rebound_kwh", "curtailed", "curtailed_share",
           "v2g_discharge", "evaluate"]


class Performance(NamedTuple):
    """Result of :func:`performance`, every array (rows, s).

    ratio : response / cleared, NaN where nothing was cleared.
    valid : the slot counts (ratio >= band_low).
    credited_kw : min(response, band_high × cleared) where valid, else 0.
    shortfall_kw : band_low × cleared - response where cleared but not valid, else 0 (for penalties).
    """

    ratio: np.ndarray
    valid: np.ndarray
    credited_kw: np.ndarray
    shortfall_kw: np.ndarray


def _band(low: float, high: float) -> None:
    if not 0 <= low <= high:
        raise InvalidInput(Violation("band", "needs 0 <= band_low <= band_high", (low, high)))


def _rows(codes: np.ndarray, n: int, n_groups: int) -> np.ndarray:
    """Group row of each element, with negative codes sent to an extra dump row ``n_groups``."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.shape != (n,):
        raise InvalidInput(Violation("codes", f"must have one group per row ({n})", codes.shape))
    if codes.size and (codes.max() >= n_groups):
        raise InvalidInput(Violation("codes", f"must be < {n_groups} (the number of groups)", int(codes.max())))
    return np.where(codes >= 0, codes, n_groups) if codes.size and codes.min() < 0 else codes


def _joint(rows: np.ndarray, s: int) -> np.ndarray:
    """Flat (group row × slot) index of every element of an (n, s) array."""
    return (rows[:, None] * s + np.arange(s)).ravel()


def _sum_rows(rows: np.ndarray, n_groups: int, values: np.ndarray, joint: np.ndarray | None = None) -> np.ndarray:
    """(n, s) summed per group row (``_rows``): one bincount over group × slot; (n_groups, s)."""
    s = values.shape[1]
    joint = _joint(rows, s) if joint is None else joint
    return np.bincount(joint, weights=values.ravel(), minlength=(n_groups + 1) * s).reshape(-1, s)[:n_groups]


def _zero_nan(a: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(a), 0.0, a)


def group_slots(codes: np.ndarray, n_groups: int, values: np.ndarray) -> np.ndarray:
    """Sum rows of ``values`` (n, s) per group; NaN counts as 0; negative codes belong to no group.

    Returns (n_groups, s) float64. The same sum as ``kernels.aggregate.group_sum`` over the
    flattened (group × slot) codes, in one bincount without a mask or a count (the hot path of
    an evaluation over millions of resources).
    """
    v = np.asarray(values, dtype=np.float64)
    return _sum_rows(_rows(codes, v.shape[0], n_groups), n_groups, _zero_nan(v))


def performance(response: np.ndarray, cleared_kw: np.ndarray, band_low: float, band_high: float) -> Performance:
    """Performance ratio and the valid band.

    Parameters
    ----------
    response : (rows, s) kW (or kvar) delivered, positive = in the cleared direction
    cleared_kw : (rows, s) kW cleared (0 = nothing asked in that slot)
    band_low, band_high : fractions of cleared, e.g. 0.8 and 1.2

    A slot whose response is NaN (not measured) is not valid. Returns :class:`Performance`.
    """
    _band(band_low, band_high)
    resp = np.asarray(response, dtype=np.float64)
    cleared = np.asarray(cleared_kw, dtype=np.float64)
    asked = cleared > 0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ratio = np.where(asked, resp / np.where(asked, cleared, 1.0), np.nan)
    valid = asked & (ratio >= band_low)
    credited = np.where(valid, np.minimum(resp, band_high * cleared), 0.0)
    shortfall = np.where(asked & ~valid, np.maximum(band_low * cleared - np.nan_to_num(resp, nan=0.0), 0.0), 0.0)
    return Performance(ratio, valid, credited, shortfall)


def allocate(unit_values: np.ndarray, codes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Share each unit's value (u, s) out to its resources in proportion to ``weights`` (n, s).

    Negative or NaN weights count as 0; a unit-slot whose weights sum to at most ``TINY`` gives every
    resource 0.
    Returns (n, s); per unit and slot the shares sum to the unit's value (when weights are positive).
    """
    unit = np.asarray(unit_values, dtype=np.float64)
    u, s = unit.shape
    w = np.maximum(_zero_nan(np.asarray(weights, dtype=np.float64)), 0.0)
    rows = _rows(codes, w.shape[0], u)
    out = _per_weight(unit, _sum_rows(rows, u, w))[rows]
    out *= w
    return out


def _per_weight(unit: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Unit value per unit of weight, (u + 1, s) with a zero dump row (resources outside every unit)."""
    big = total > TINY
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        per = np.where(big, unit / np.where(big, total, 1.0), 0.0)
    return np.vstack([per, np.zeros((1, per.shape[1]))])


def split_cleared(unit_cleared_kw: np.ndarray, codes: np.ndarray, capability_kw: np.ndarray) -> np.ndarray:
    """A unit's cleared kW per slot shared to its resources by capability (n,) kW; returns (n, s)."""
    cleared = np.asarray(unit_cleared_kw, dtype=np.float64)
    u = cleared.shape[0]
    cap = np.maximum(_zero_nan(np.asarray(capability_kw, dtype=np.float64)), 0.0)
    rows = _rows(codes, cap.shape[0], u)
    total = np.bincount(rows, weights=cap, minlength=u + 1)[:u]
    out = _per_weight(cleared, np.broadcast_to(total[:, None], cleared.shape))[rows]
    out *= cap[:, None]
    return out


def energy(power: np.ndarray) -> np.ndarray:
    """kWh (kvarh) of a 15-minute slot held at ``power`` kW (kvar)."""
    return np.asarray(power, dtype=np.float64) * SLOT_H


def reserve_available(capacity_kw: np.ndarray, minutes: np.ndarray) -> np.ndarray:
    """Reserve kW·h actually available: reserved capacity (n, s) kW × the slot's hours with telemetry.

    ``minutes`` (n, s) is the count of minutes of each 15-minute slot that telemetry covered
    (0..15; NaN = none). Returns (n, s) kW·h.
    """
    frac = np.clip(np.nan_to_num(np.asarray(minutes, dtype=np.float64), nan=0.0) / SLOT_MINUTES, 0.0, 1.0)
    return np.asarray(capacity_kw, dtype=np.float64) * frac * SLOT_H


def rebound_kwh(baseline_kw: np.ndarray, metered_kw: np.ndarray, slots: np.ndarray, direction: str = "down"
                ) -> np.ndarray:
    """Energy that came back in ``slots`` (the hours around an event window), per resource (n,) kWh.

    Load above baseline after (or before, pre-cooling) a load reduction is the curtailed energy
    shifted rather than saved. ``baseline_kw``/``metered_kw`` are (n, k) slots of the event day (all 96,
    or the part an evaluation read: ``slots`` index that axis); NaN counts as no rebound. For
    ``direction="up"`` nothing is curtailed, so the rebound is 0.
    """
    n = np.shape(baseline_kw)[0]
    idx = np.asarray(slots, dtype=np.int64)
    if direction == "up" or idx.size == 0:
        return np.zeros(n)
    out = np.zeros(n)
    # each run of consecutive slots (before and after the window) as a view, not a gathered copy
    for run in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):
        cut = slice(int(run[0]), int(run[-1]) + 1)
        over = np.subtract(np.asarray(metered_kw)[:, cut], np.asarray(baseline_kw)[:, cut], dtype=np.float64)
        out += np.fmax(over, 0.0, out=over).sum(axis=1)               # fmax: NaN (no data) → 0
    return out * SLOT_H


def curtailed_share(credited_kwh: np.ndarray, rebound: np.ndarray, shifting: np.ndarray) -> np.ndarray:
    """The part of each resource's credited energy that was curtailed (not shifted), (n,) in 0..1.

    Its credited energy less its rebound, as a share of the credited energy (0 when nothing was
    credited), and 0 for resources that only shift load (``shifting`` (n,) bool: storage, EV, ...).
    :func:`curtailed` is the credited energy times this share."""
    e = np.asarray(credited_kwh, dtype=np.float64)
    total = e.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        keep = np.where(total > 0, np.clip(1.0 - np.asarray(rebound, dtype=np.float64) / total, 0.0, 1.0), 0.0)
    keep[np.asarray(shifting, dtype=bool)] = 0.0
    return keep


def curtailed(credited_kwh: np.ndarray, rebound: np.ndarray, shifting: np.ndarray) -> np.ndarray:
    """Curtailed (not shifted) energy per resource and slot, (n, s) kWh.

    The resource's credited energy less its rebound (taken from every slot in proportion), and
    nothing at all for resources that only shift load (``shifting`` (n,) bool: storage, EV, ...):
    the credited energy times :func:`curtailed_share`.
    """
    e = np.asarray(credited_kwh, dtype=np.float64)
    return e * curtailed_share(e, rebound, shifting)[:, None]


def v2g_discharge(credited_kwh: np.ndarray, metered_kw: np.ndarray, is_v2g: np.ndarray) -> np.ndarray:
    """Part of a V2G charger's credited energy that was discharge to the grid, (n, s) kWh.

    A V2G response is partly charging it did not do and partly energy it exported (metered < 0);
    the exported part, up to the credited energy, is the discharge the V2G subsidy pays.
    """
    e = np.asarray(credited_kwh, dtype=np.float64)
    out = np.zeros_like(e)
    rows = np.flatnonzero(np.asarray(is_v2g, dtype=bool))          # only the chargers: a few of a city
    if rows.size:
        exported = np.maximum(-np.nan_to_num(np.asarray(np.asarray(metered_kw)[rows], dtype=np.float64), nan=0.0),
                              0.0) * SLOT_H
        out[rows] = np.minimum(np.maximum(e[rows], 0.0), exported)
    return out


class EventEvaluation(NamedTuple):
    """Result of :func:`evaluate`. Resource arrays are (n, s), unit arrays (u, s); kW (or kvar)."""

    response_kw: np.ndarray
    cleared_kw: np.ndarray
    ratio: np.ndarray
    credited_kw: np.ndarray
    unit_baseline_kw: np.ndarray
    unit_metered_kw: np.ndarray
    unit_response_kw: np.ndarray
    unit_cleared_kw: np.ndarray
    unit: Performance


def evaluate(baseline_kw: np.ndarray, metered_kw: np.ndarray, codes: np.ndarray, unit_cleared_kw: np.ndarray,
             direction: str, band_low: float, band_high: float,
             capability_kw: np.ndarray | None = None, cleared_kw: np.ndarray | None = None) -> EventEvaluation:
    """Evaluate one event over resources × slots.

    Parameters
    ----------
    baseline_kw, metered_kw : (n, s) kW (kvar), NaN = not measured (the resource then delivers 0)
    codes : (n,) int — trading unit of each resource, 0..u-1 (negative = outside every unit)
    unit_cleared_kw : (u, s) kW cleared per unit and slot
    direction : "down" or "up"
    band_low, band_high : valid band as fractions of cleared
    capability_kw : (n,) kW — shares a unit's cleared quantity to its resources (informative ratio)
    cleared_kw : (n, s) kW — the resources' own cleared quantities (device instructions), if known

    The band is applied per unit and slot; resources' credited power is the unit's, shared by
    positive response. Resource ``ratio`` is their response over their cleared share (information).
    """
    base = np.asarray(baseline_kw, dtype=np.float64)
    meter = np.asarray(metered_kw, dtype=np.float64)
    if base.shape != meter.shape or base.ndim != 2:
        raise InvalidInput(Violation("metered_kw", f"must match baseline_kw's shape {base.shape}", meter.shape))
    unit_cleared = np.asarray(unit_cleared_kw, dtype=np.float64)
    u = unit_cleared.shape[0]
    rows = _rows(codes, base.shape[0], u)
    resp = response_kw(base, meter, direction)
    # a resource not measured (or without a baseline) counts nowhere in its unit: sums run on one
    # scratch buffer with those elements zeroed (no NaN-free copy of every input)
    gaps = np.flatnonzero(np.isnan(resp))                 # flat indices in C order
    buf = np.empty(resp.shape, dtype=resp.dtype)          # C order whatever the inputs' layout: a view
    flat = buf.reshape(-1)

    joint = _joint(rows, resp.shape[1])

    def unit_sum(x: np.ndarray) -> np.ndarray:
        np.copyto(buf, x)
        flat[gaps] = 0.0
        return _sum_rows(rows, u, buf, joint)

    unit_base, unit_meter, unit_resp = unit_sum(base), unit_sum(meter), unit_sum(resp)
    unit = performance(unit_resp, unit_cleared, band_low, band_high)
    pos = np.fmax(resp, 0.0, out=buf)            # NaN → 0
    credited = _per_weight(unit.credited_kw, _sum_rows(rows, u, pos, joint))[rows]
    credited *= pos
    if cleared_kw is None:
        cap = np.ones(base.shape[0]) if capability_kw is None else capability_kw
        cleared_kw = split_cleared(unit_cleared, np.where(rows < u, rows, -1), cap)
    cleared = np.asarray(cleared_kw, dtype=np.float64)
    ratio = np.full_like(resp, np.nan)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        np.divide(resp, cleared, out=ratio, where=cleared > 0)
    return EventEvaluation(resp, cleared, ratio, credited, unit_base, unit_meter, unit_resp, unit_cleared, unit)
