"""Pool membership and totals on struct-of-arrays, and their incremental update.

A pool is a rule over the registry (``model.pools.PoolRules``). Here the rule arrives encoded
against the registry's category codes (``PoolCodes``: lookup tables and thresholds), and the
resources arrive as columns (``ResourceArrays``). Everything is vectorised; nothing does I/O.

Incremental update: when k resources change, every pool's mask and totals are corrected by
subtracting the old contributions of those k rows and adding the new ones — O(k x pools), equal
to a full re-evaluation up to float rounding (``tests/test_kernel_pools.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from openvpp.core.errors import InvalidInput, Violation

#: columns of a totals row (``evaluate_all``/``update``); ``count`` is the number of members
TOTALS = ("up_kw", "down_kw", "energy_up_kwh", "energy_down_kwh", "count")
#: rows of ``ResourceArrays.nodes``; ``PoolCodes.level`` indexes them (-1 = the whole city)
NODE_LEVELS = ("district", "substation", "feeder", "transformer_area")


@dataclass
class ResourceArrays:
    """Resources as columns, shape (n,) each (``nodes``: (4, n)).

    Code columns index the caller's category lists; -1 = none (no operator, not graded...).
    Float columns are in the unit their name says; verified_* are NaN until verified.
    """

    state: np.ndarray               # int32
    resource_type: np.ndarray       # int32
    response_mode: np.ndarray       # int32
    operator: np.ndarray            # int32
    grade: np.ndarray               # int32, verified grade
    nodes: np.ndarray               # int32 (4, n): district, substation, feeder, transformer area
    flagged: np.ndarray             # bool: excluded after a failed verification
    latency_s: np.ndarray
    duration_h: np.ndarray          # declared adjustable duration
    up_kw: np.ndarray               # declared adjustable up (raise load)
    down_kw: np.ndarray             # declared adjustable down (cut load)
    verified_latency_s: np.ndarray
    verified_up_kw: np.ndarray
    verified_down_kw: np.ndarray

    @property
    def n(self) -> int:
        return len(self.state)

    def take(self, idx: np.ndarray) -> ResourceArrays:
        """The rows ``idx`` (a copy)."""
        return ResourceArrays(**{f.name: (getattr(self, f.name)[:, idx] if f.name == "nodes"
                                          else getattr(self, f.name)[idx]) for f in fields(self)})

    def put(self, idx: np.ndarray, rows: ResourceArrays) -> None:
        """Overwrite the rows ``idx`` with ``rows`` (in place)."""
        for f in fields(self):
            if f.name == "nodes":
                self.nodes[:, idx] = rows.nodes
            else:
                getattr(self, f.name)[idx] = getattr(rows, f.name)


@dataclass(frozen=True)
class PoolCodes:
    """One pool's rules encoded against category codes.

    Lookup tables are bool arrays with one slot per category and a last slot for "none"
    (code -1 indexes it); ``None`` = no condition on that column.
    """

    state_ok: np.ndarray                    # which states count (active)
    operator_ok: np.ndarray                 # admitted operators, within the pool's operator_ids
    type_ok: np.ndarray | None = None
    mode_ok: np.ndarray | None = None
    grade_ok: np.ndarray | None = None      # set = verification required: flagged rows are out too
    level: int = -1                         # row of ResourceArrays.nodes; -1 = whole city
    node_code: int = -1
    max_latency_s: float | None = None
    min_duration_h: float | None = None
    direction: str = "both"                 # "down" | "up" | "both"
    use_verified: bool = False
    duration_h: float | None = None         # pool's event duration for energy; None = each member's own


def _known_or(verified: np.ndarray, declared: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(verified), declared, verified)


def capability(res: ResourceArrays, pc: PoolCodes) -> tuple[np.ndarray, np.ndarray]:
    """Up and down kW each resource brings to the pool: verified where known if ``use_verified``,
    zero on the side the pool's direction does not count. Shapes (n,)."""
    up = _known_or(res.verified_up_kw, res.up_kw) if pc.use_verified else res.up_kw
    down = _known_or(res.verified_down_kw, res.down_kw) if pc.use_verified else res.down_kw
    if pc.direction == "down":
        up = np.zeros_like(up)
    elif pc.direction == "up":
        down = np.zeros_like(down)
    return up, down


def member_mask(res: ResourceArrays, pc: PoolCodes) -> np.ndarray:
    """bool (n,): which resources the pool holds.

    A member is in an allowed state (active), with an allowed (admitted) operator, of an allowed
    type and response mode, in the pool's grid subtree, with latency <= max and duration >= min,
    graded at least the minimum and not flagged when verification is required, and with a
    capability > 0 in the pool's direction.
    """
    m = pc.state_ok[res.state] & pc.operator_ok[res.operator]
    if pc.type_ok is not None:
        m &= pc.type_ok[res.resource_type]
    if pc.mode_ok is not None:
        m &= pc.mode_ok[res.response_mode]
    if pc.grade_ok is not None:
        m &= pc.grade_ok[res.grade] & ~res.flagged
    if pc.level >= 0:
        m &= res.nodes[pc.level] == pc.node_code
    if pc.max_latency_s is not None:
        lat = _known_or(res.verified_latency_s, res.latency_s) if pc.use_verified else res.latency_s
        m &= lat <= pc.max_latency_s
    if pc.min_duration_h is not None:
        m &= res.duration_h >= pc.min_duration_h
    up, down = capability(res, pc)
    m &= (up > 0) | (down > 0)
    return m


def pool_totals(mask: np.ndarray, up_kw: np.ndarray, down_kw: np.ndarray, duration_h: np.ndarray,
                pool_duration_h: float | None = None) -> dict[str, float]:
    """Totals of the members of one pool.

    Energy counts each member's capability for min(its duration, ``pool_duration_h``), or its own
    duration when the pool sets none: kW x h = kWh. Returns ``TOTALS`` as a dict (count as int).
    """
    idx = np.flatnonzero(mask)
    row = _sums(up_kw[idx], down_kw[idx], duration_h[idx], pool_duration_h)
    out = dict(zip(TOTALS, (float(x) for x in row), strict=True))
    out["count"] = int(row[-1])
    return out


def _sums(up: np.ndarray, down: np.ndarray, dur: np.ndarray, pool_duration_h: float | None) -> np.ndarray:
    hours = dur if pool_duration_h is None else np.minimum(dur, pool_duration_h)
    return np.array([up.sum(), down.sum(), up @ hours, down @ hours, float(len(up))])


def contributions(res: ResourceArrays, pc: PoolCodes) -> np.ndarray:
    """float (5, n): what each resource would add to the pool's ``TOTALS`` if it were a member."""
    up, down = capability(res, pc)
    hours = res.duration_h if pc.duration_h is None else np.minimum(res.duration_h, pc.duration_h)
    return np.stack([up, down, up * hours, down * hours, np.ones_like(up)])


def evaluate_all(res: ResourceArrays, pools: list[PoolCodes]) -> tuple[np.ndarray, np.ndarray]:
    """Full evaluation: masks bool (P, n) and totals float (P, 5) in ``TOTALS`` order."""
    masks = np.zeros((len(pools), res.n), dtype=bool)
    totals = np.zeros((len(pools), len(TOTALS)))
    for p, pc in enumerate(pools):
        masks[p] = member_mask(res, pc)
        idx = np.flatnonzero(masks[p])
        sub = res.take(idx)
        up, down = capability(sub, pc)
        totals[p] = _sums(up, down, sub.duration_h, pc.duration_h)
    return masks, totals


def update(masks: np.ndarray, totals: np.ndarray, pools: list[PoolCodes], idx: np.ndarray,
           old: ResourceArrays, new: ResourceArrays) -> np.ndarray:
    """Apply changed resources to the masks and totals of every pool, in place.

    Parameters
    ----------
    masks : bool (P, n), totals : float (P, 5)
        State of the P pools before the change (from ``evaluate_all`` or earlier updates).
    pools : list of P PoolCodes
    idx : int (k,)
        Indices of the changed resources, distinct.
    old, new : ResourceArrays of k rows
        Their attributes before and after the change.

    Returns
    -------
    int array: the pools whose mask or totals changed. Cost O(k x P).
    """
    idx = np.asarray(idx, dtype=np.intp)
    if len(np.unique(idx)) != len(idx):
        raise InvalidInput(Violation("idx", "changed resources must be distinct", len(idx)))
    if old.n != len(idx) or new.n != len(idx):
        raise InvalidInput(Violation("idx", "old and new must have one row per changed resource", len(idx)))
    touched = []
    for p, pc in enumerate(pools):
        was = masks[p, idx]
        now = member_mask(new, pc)
        if not (was.any() or now.any()):
            continue
        delta = contributions(new, pc) @ now - contributions(old, pc) @ was
        if np.any(delta) or np.any(was != now):
            totals[p] += delta
            masks[p, idx] = now
            touched.append(p)
    return np.asarray(touched, dtype=np.intp)
