"""Local congestion: loading of transformer areas and feeders against their ratings, and the relief
needed to bring an overloaded node back under its limit.

Loading is apparent power over rating, S / S_rated, with S from active and reactive power
(S = sqrt(P² + Q²)); where Q is unknown a power factor stands in (Q = P·tan(acos(pf))). Losses
are neglected — the test cross-checks this against a pandapower power flow.
"""

from __future__ import annotations

import numpy as np


def loading(p_kw: np.ndarray, rating_kva: np.ndarray, q_kvar: np.ndarray | None = None,
            power_factor: float = 0.95) -> np.ndarray:
    """Loading ratio of each node and slot.

    Parameters
    ----------
    p_kw : (n_nodes, T) net active power through the node, kW (load positive; reverse flow counts too)
    rating_kva : (n_nodes,) rating, kVA (> 0)
    q_kvar : (n_nodes, T) reactive power, kvar, or None to derive it from ``power_factor``
    power_factor : used when ``q_kvar`` is None

    Returns
    -------
    (n_nodes, T) float: 1.0 = at rating.
    """
    p = np.asarray(p_kw, dtype=float)
    q = np.abs(p) * np.tan(np.arccos(power_factor)) if q_kvar is None else np.asarray(q_kvar, dtype=float)
    return np.hypot(p, q) / np.asarray(rating_kva, dtype=float)[:, None]


def overloads(load_ratio: np.ndarray, threshold: float = 1.0) -> dict[str, np.ndarray]:
    """Which nodes exceed ``threshold``, when first, how badly and for how many slots.

    Returns dict of (n_nodes,) arrays: ``overloaded`` bool, ``first_slot`` (-1 if none),
    ``peak`` loading, ``slots`` count of slots above the threshold.
    """
    over = load_ratio > threshold
    any_over = over.any(axis=1)
    return {"overloaded": any_over, "first_slot": np.where(any_over, over.argmax(axis=1), -1),
            "peak": load_ratio.max(axis=1), "slots": over.sum(axis=1)}


def relief_kw(p_kw: np.ndarray, rating_kva: np.ndarray, threshold: float = 1.0, margin: float = 0.05,
              power_factor: float = 0.95) -> np.ndarray:
    """Active-power reduction per node and slot that brings loading to ``threshold × (1 − margin)``.

    With Q following P at a fixed power factor, S scales with P, so the allowed P is
    rating × limit × pf; the relief is the excess of P over it (0 where within the limit).
    Reverse flow (negative P, e.g. PV export) is relieved by raising load: the result is then negative.
    """
    p = np.asarray(p_kw, dtype=float)
    allowed = np.asarray(rating_kva, dtype=float)[:, None] * threshold * (1.0 - margin) * power_factor
    return np.where(p > allowed, p - allowed, np.where(p < -allowed, p + allowed, 0.0))
