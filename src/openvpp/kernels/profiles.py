"""Materialise resource power series from shared archetype profiles plus deterministic noise."""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SQRT3 = np.float32(np.sqrt(3.0))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def standard_noise(noise_seed: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Approximately standard-normal noise eps(seed, slot), a pure function of each pair.

    The sum of four 16-bit uniforms taken from one splitmix64 hash of (seed, slot),
    centred and scaled to unit variance (Irwin-Hall, bounded to +-3.46).
    ``noise_seed`` (n,) and ``slots`` (m,) broadcast to an (n, m) float32 array.
    """
    key = noise_seed.astype(np.uint64)[:, None] * _GOLDEN + slots.astype(np.uint64)[None, :]
    h = _splitmix64(key)
    mask = np.uint64(0xFFFF)
    total = np.zeros(h.shape, dtype=np.float32)
    for shift in (0, 16, 32, 48):
        total += ((h >> np.uint64(shift)) & mask).astype(np.float32)
    return (total / np.float32(65536.0) - np.float32(2.0)) * _SQRT3


def materialise(archetypes: np.ndarray, archetype_idx: np.ndarray, scale_kw: np.ndarray,
                noise_seed: np.ndarray, start: int, stop: int, noise_sigma: float = 0.05) -> np.ndarray:
    """Power of each resource over slots [start, stop) of the year.

    ``power = scale_kw * archetype * max(1 + noise_sigma * eps, 0)``, where eps
    depends only on (noise_seed, absolute slot index): any window equals the same
    slots of a full-year materialisation, and the factor never flips a sign.

    Parameters
    ----------
    archetypes : (n_archetypes, n_slots) float array
        Per-unit profiles (loads positive, generation negative), 15-min slots of the year.
    archetype_idx : (n,) int array
        Row of ``archetypes`` each resource follows.
    scale_kw : (n,) float array
        kW that one per-unit stands for [kW].
    noise_seed : (n,) int array
        Non-negative per-resource seed of the noise.
    start, stop : int
        Slot window, ``0 <= start <= stop <= n_slots``.
    noise_sigma : float
        Standard deviation of the relative noise [-].

    Returns
    -------
    (n, stop - start) float32 array of power [kW]. Computing needs a few tens of
    bytes per cell (uint64 hashes): materialise large fleets in resource chunks.
    """
    n_slots = archetypes.shape[1]
    if not 0 <= start <= stop <= n_slots:
        raise ValueError(f"window [{start}, {stop}) must lie within [0, {n_slots}]")
    slots = np.arange(start, stop, dtype=np.int64)
    base = archetypes[np.asarray(archetype_idx), start:stop].astype(np.float32)
    factor = np.maximum(np.float32(1.0) + np.float32(noise_sigma) * standard_noise(np.asarray(noise_seed), slots),
                        np.float32(0.0))
    return np.asarray(scale_kw, dtype=np.float32)[:, None] * base * factor
