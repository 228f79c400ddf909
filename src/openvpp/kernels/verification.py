"""Capability verification (能力校核): what a resource really delivers when tested.

A test instruction asks resources for their declared capability from step ``start``. From
telemetry and a baseline:

* response = baseline − metered (``down``: load reduction) or metered − baseline (``up``);
* verified capability = the highest response *sustained* over the declared duration: the
  maximum over window starts s >= start of the mean response over [s, s + D) — the ramp
  before s does not count against the resource, a short spike does not count for it;
* measured latency = time from the instruction to the first step where the response reaches
  ``reach`` (90 %) of the verified capability;
* ratio = verified / declared; the grade comes from the rule set's thresholds.
"""

from __future__ import annotations

import numpy as np


def sustained_response(response_kw: np.ndarray, start: int, duration_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Best mean response over any window of ``duration_steps`` starting at or after ``start``.

    Parameters
    ----------
    response_kw : float array (n, T), kW, NaN = missing (counted as no response)
    start : int, index of the instruction
    duration_steps : int, declared duration in steps (>= 1)

    Returns
    -------
    (sustained_kw (n,), window_start (n,) int): when fewer than ``duration_steps`` steps follow
    ``start``, the mean over what exists is used and window_start = start.
    """
    r = np.nan_to_num(np.asarray(response_kw, dtype=np.float64)[:, start:], nan=0.0)
    n, t = r.shape
    d = int(max(1, min(duration_steps, t)))
    c = np.concatenate([np.zeros((n, 1)), np.cumsum(r, axis=1)], axis=1)
    means = (c[:, d:] - c[:, :-d]) / d                    # (n, t - d + 1)
    best = np.argmax(means, axis=1)
    return means[np.arange(n), best], best + start


def assess(baseline_kw: np.ndarray, metered_kw: np.ndarray, start: int, step_s: float,
           declared_kw: np.ndarray, duration_h: np.ndarray | float, direction: str = "down",
           reach: float = 0.9, grade_a: float = 0.9, grade_b: float = 0.7) -> dict[str, np.ndarray]:
    """Verify many resources at once.

    Parameters
    ----------
    baseline_kw, metered_kw : float arrays (n, T), kW, one row per resource, ``step_s`` seconds apart
    start : index of the test instruction
    declared_kw : (n,) declared capability, kW (> 0)
    duration_h : (n,) or scalar, declared duration, h
    direction : "down" (reduce load) or "up" (raise load)

    Returns dict of (n,) arrays: ``verified_kw``, ``latency_s`` (NaN if never reached),
    ``ratio``, ``grade`` ('A'/'B'/'C'), ``window_start``.
    """
    sign = 1.0 if direction == "down" else -1.0
    response = sign * (np.asarray(baseline_kw, float) - np.asarray(metered_kw, float))
    n = response.shape[0]
    dur = np.broadcast_to(np.asarray(duration_h, float), (n,))
    steps = np.maximum(1, np.round(dur * 3600.0 / step_s).astype(int))
    verified = np.empty(n)
    wstart = np.empty(n, dtype=int)
    for d in np.unique(steps):                              # few distinct durations: vectorised per group
        rows = steps == d
        verified[rows], wstart[rows] = sustained_response(response[rows], start, int(d))
    verified = np.maximum(verified, 0.0)
    after = np.nan_to_num(response[:, start:], nan=-np.inf)
    hit = after >= (reach * verified)[:, None]
    hit &= (verified > 0)[:, None]
    first = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
    latency = np.where(first >= 0, first * step_s, np.nan)
    ratio = verified / np.asarray(declared_kw, float)
    grade = np.where(ratio >= grade_a, "A", np.where(ratio >= grade_b, "B", "C"))
    return {"verified_kw": verified, "latency_s": latency, "ratio": ratio, "grade": grade, "window_start": wstart}
