"""Group sums over struct-of-arrays: the core of every "by district / by type / by pool" total."""

from __future__ import annotations

import numpy as np


def group_sum(codes: np.ndarray, n_groups: int, *values: np.ndarray, mask: np.ndarray | None = None
              ) -> np.ndarray:
    """Sum each value array per group.

    Parameters
    ----------
    codes : int array, shape (n,)
        Group index of every element, in ``0..n_groups-1``; negative = no group (ignored).
    n_groups : int
        Number of groups.
    *values : float arrays, shape (n,)
        Quantities to sum (kW, kWh, counts...).
    mask : bool array, shape (n,), optional
        Only elements where True count.

    Returns
    -------
    float64 array, shape (len(values) + 1, n_groups): one row per value array, the last row
    the element count of each group.
    """
    keep = codes >= 0 if mask is None else (codes >= 0) & mask
    c = codes[keep]
    out = np.empty((len(values) + 1, n_groups), dtype=np.float64)
    for i, v in enumerate(values):
        out[i] = np.bincount(c, weights=v[keep], minlength=n_groups)
    out[-1] = np.bincount(c, minlength=n_groups)
    return out


def group_sum_2d(codes_a: np.ndarray, n_a: int, codes_b: np.ndarray, n_b: int, *values: np.ndarray,
                 mask: np.ndarray | None = None) -> np.ndarray:
    """Sums over the cross product of two groupings (e.g. district × type).

    Returns float64 array of shape (len(values) + 1, n_a, n_b); last slice is the count.
    """
    joint = np.where((codes_a >= 0) & (codes_b >= 0), codes_a * n_b + codes_b, -1)
    flat = group_sum(joint, n_a * n_b, *values, mask=mask)
    return flat.reshape(len(values) + 1, n_a, n_b)
