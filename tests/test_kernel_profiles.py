"""Property tests of kernels.profiles.materialise: windows, determinism, shape, sign, noise mean."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.kernels.profiles import materialise, standard_noise

N_SLOTS = 2 * 96


def _archetypes() -> np.ndarray:
    t = np.arange(N_SLOTS)
    load = 0.5 + 0.4 * np.sin(2 * np.pi * t / 96)              # positive load
    pv = -np.clip(np.sin(2 * np.pi * (t % 96 - 24) / 96), 0, None)   # generation, <= 0, zero at night
    storage = np.where(t % 96 < 32, 0.5, np.where(t % 96 >= 64, -0.9, 0.0))  # charge / idle / discharge
    return np.stack([load, pv, storage]).astype(np.float32)


ARCH = _archetypes()
fleets = st.integers(1, 20).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 2), min_size=n, max_size=n),
    st.lists(st.floats(0.0, 5000.0), min_size=n, max_size=n),
    st.lists(st.integers(0, 2**31 - 1), min_size=n, max_size=n),
))
windows = st.tuples(st.integers(0, N_SLOTS), st.integers(0, N_SLOTS)).map(sorted)


@settings(max_examples=60, deadline=None)
@given(fleets, windows, st.floats(0.0, 0.5))
def test_any_window_equals_the_same_slots_of_the_full_series(fleet, window, sigma):
    idx, scale, seed = (np.asarray(a) for a in fleet)
    a, b = window
    full = materialise(ARCH, idx, scale, seed, 0, N_SLOTS, sigma)
    part = materialise(ARCH, idx, scale, seed, a, b, sigma)
    assert part.shape == (len(idx), b - a)
    assert part.dtype == np.float32
    np.testing.assert_array_equal(part, full[:, a:b])


@settings(max_examples=30, deadline=None)
@given(fleets, windows)
def test_materialise_is_deterministic(fleet, window):
    idx, scale, seed = (np.asarray(a) for a in fleet)
    first = materialise(ARCH, idx, scale, seed, *window)
    again = materialise(ARCH, idx.copy(), scale.copy(), seed.copy(), *window)
    np.testing.assert_array_equal(first, again)


@settings(max_examples=60, deadline=None)
@given(fleets, st.floats(0.0, 3.0))
def test_sign_never_flips_even_with_large_noise(fleet, sigma):
    idx, scale, seed = (np.asarray(a) for a in fleet)
    kw = materialise(ARCH, idx, scale, seed, 0, N_SLOTS, sigma)
    expected_sign = np.sign(ARCH[idx])
    assert np.all((np.sign(kw) == expected_sign) | (kw == 0))


def test_zero_sigma_gives_scale_times_archetype():
    idx = np.array([0, 1, 2, 0])
    scale = np.array([7.0, 120.0, 500.0, 0.0])
    kw = materialise(ARCH, idx, scale, np.arange(4), 10, 50, noise_sigma=0.0)
    np.testing.assert_allclose(kw, scale[:, None] * ARCH[idx, 10:50], rtol=1e-6)


def test_noise_is_centred_with_unit_spread_over_many_slots():
    eps = standard_noise(np.array([0, 1, 12345, 2**31 - 1]), np.arange(35_040))
    assert eps.shape == (4, 35_040)
    assert np.all(np.abs(eps.mean(axis=1)) < 0.02)
    assert np.all(np.abs(eps.std(axis=1) - 1.0) < 0.02)
    assert np.abs(eps).max() <= 2 * np.sqrt(3.0) + 1e-6   # Irwin-Hall bound of four uniforms


def test_relative_noise_of_a_flat_profile_has_the_requested_sigma():
    flat = np.ones((1, 35_040), dtype=np.float32)
    kw = materialise(flat, np.zeros(50, int), np.full(50, 10.0), np.arange(50), 0, 35_040, noise_sigma=0.05)
    assert abs(kw.mean() - 10.0) < 0.01
    assert abs(kw.std() / 10.0 - 0.05) < 0.002


def test_different_seeds_give_different_noise():
    kw = materialise(np.ones((1, 96), np.float32), np.zeros(2, int), np.ones(2), np.array([1, 2]), 0, 96)
    assert not np.array_equal(kw[0], kw[1])


@pytest.mark.parametrize("window", [(-1, 5), (5, 4), (0, N_SLOTS + 1)])
def test_window_outside_the_year_is_refused(window):
    with pytest.raises(ValueError, match="window"):
        materialise(ARCH, np.array([0]), np.array([1.0]), np.array([0]), *window)
