"""kernels.evaluation: response, valid band, allocation to resources, reserve, rebound and V2G."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from openvpp.core.errors import InvalidInput
from openvpp.kernels.evaluation import (
    TINY,
    allocate,
    curtailed,
    energy,
    evaluate,
    group_slots,
    performance,
    rebound_kwh,
    reserve_available,
    split_cleared,
    v2g_discharge,
)


def test_band_pays_nothing_below_80_and_caps_at_120_percent():
    cleared = np.array([[1000.0, 1000.0, 1000.0, 1000.0, 1000.0, 0.0]])
    resp = np.array([[799.0, 800.0, 1000.0, 1200.0, 1500.0, 300.0]])
    p = performance(resp, cleared, 0.8, 1.2)
    assert p.credited_kw.tolist() == [[0.0, 800.0, 1000.0, 1200.0, 1200.0, 0.0]]
    assert p.valid.tolist() == [[False, True, True, True, True, False]]
    assert p.ratio[0, :5].tolist() == pytest.approx([0.799, 0.8, 1.0, 1.2, 1.5])
    assert np.isnan(p.ratio[0, 5])
    assert p.shortfall_kw[0].tolist() == pytest.approx([1.0, 0, 0, 0, 0, 0])
    assert energy(p.credited_kw).sum() == 4200 * 0.25


def test_not_measured_is_not_valid_and_the_band_is_checked():
    p = performance(np.array([[np.nan]]), np.array([[100.0]]), 0.8, 1.2)
    assert p.credited_kw[0, 0] == 0 and not p.valid[0, 0] and p.shortfall_kw[0, 0] == 80
    with pytest.raises(InvalidInput):
        performance(np.zeros((1, 1)), np.ones((1, 1)), 0.9, 0.8)


def test_unit_evaluation_shares_credit_by_positive_response():
    # two units; unit 0 has R0, R1; unit 1 has R2; R3 belongs to none
    base = np.array([[1500.0, 1500.0], [1500.0, 1500.0], [600.0, 600.0], [50.0, 50.0]])
    resp = np.array([[1300.0, 900.0], [1300.0, -100.0], [600.0, 600.0], [50.0, 50.0]])
    metered = base - resp
    cleared = np.array([[2000.0, 1000.0], [1000.0, 1000.0]])
    ev = evaluate(base, metered, np.array([0, 0, 1, -1]), cleared, "down", 0.8, 1.2,
                  capability_kw=np.array([1000.0, 1000.0, 800.0, 10.0]))
    assert ev.unit_response_kw.tolist() == [[2600.0, 800.0], [600.0, 600.0]]
    assert ev.unit.credited_kw.tolist() == [[2400.0, 800.0], [0.0, 0.0]]
    # 2400 shared 1300:1300, 800 all to R0 (R1 went the wrong way)
    assert ev.credited_kw.tolist() == [[1200.0, 800.0], [1200.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    assert ev.cleared_kw.tolist() == [[1000.0, 500.0], [1000.0, 500.0], [1000.0, 1000.0], [0.0, 0.0]]
    assert ev.ratio[0].tolist() == [1.3, 1.8]
    assert ev.unit_baseline_kw[0].tolist() == [3000.0, 3000.0]


def test_up_direction_and_missing_meters():
    base = np.array([[100.0], [100.0]])
    metered = np.array([[250.0], [np.nan]])
    ev = evaluate(base, metered, np.array([0, 0]), np.array([[150.0]]), "up", 0.8, 1.2)
    assert ev.unit_response_kw[0, 0] == 150.0      # the unmetered resource delivers nothing
    assert ev.unit_baseline_kw[0, 0] == 100.0 and ev.unit_metered_kw[0, 0] == 250.0
    assert ev.credited_kw[:, 0].tolist() == [150.0, 0.0]


def test_reserve_rebound_curtailment_and_v2g():
    assert reserve_available(np.array([[100.0, 100.0]]), np.array([[15, 12]])).tolist() == [[25.0, 20.0]]
    base = np.full((2, 96), 100.0)
    met = base.copy()
    met[0, 64:66] = 140.0                       # 2 slots of 40 kW rebound after the window
    slots = np.r_[48:56, 64:72]
    assert rebound_kwh(base, met, slots).tolist() == [20.0, 0.0]
    assert rebound_kwh(base, met, slots, "up").tolist() == [0.0, 0.0]
    cur = curtailed(np.array([[50.0, 50.0], [30.0, 30.0]]), np.array([20.0, 0.0]), np.array([False, True]))
    assert cur.tolist() == [[40.0, 40.0], [0.0, 0.0]]
    dis = v2g_discharge(np.array([[20.0, 5.0], [20.0, 5.0]]), np.array([[-40.0, 10.0], [-40.0, 10.0]]),
                        np.array([True, False]))
    assert dis.tolist() == [[10.0, 0.0], [0.0, 0.0]]


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 6)),
                  elements=st.floats(-500, 3000, allow_nan=False)),
       st.data())
def test_credit_never_exceeds_band_and_allocation_adds_up(resp, data):
    n, s = resp.shape
    u = data.draw(st.integers(1, 4))
    codes = np.array(data.draw(st.lists(st.integers(-1, u - 1), min_size=n, max_size=n)))
    cleared = data.draw(hnp.arrays(np.float64, (u, s), elements=st.floats(0, 5000)))
    base = np.full((n, s), 4000.0)
    ev = evaluate(base, base - resp, codes, cleared, "down", 0.8, 1.2)
    unit = ev.unit
    assert (unit.credited_kw <= 1.2 * cleared + 1e-9).all()
    assert (unit.credited_kw >= 0).all()
    assert ((unit.credited_kw == 0) | (unit.credited_kw >= 0.8 * cleared - 1e-9)).all()
    # every credited kW reaches a resource of its unit
    back = group_slots(codes, u, ev.credited_kw)
    assert np.allclose(back, unit.credited_kw, rtol=1e-9, atol=1e-6)
    assert (ev.credited_kw >= 0).all()
    assert (ev.credited_kw[codes < 0] == 0).all()


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(1, 5)), elements=st.floats(0, 1e4)),
       st.data())
def test_allocate_and_split_preserve_unit_totals(weights, data):
    n, s = weights.shape
    codes = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    unit = data.draw(hnp.arrays(np.float64, (3, s), elements=st.floats(0, 1e4)))
    shares = allocate(unit, codes, weights)
    tot_w = group_slots(codes, 3, weights)
    back = group_slots(codes, 3, shares)
    big = tot_w > TINY
    assert np.allclose(back[big], unit[big], rtol=1e-9, atol=1e-6)
    assert (back[~big] == 0).all()
    cap = data.draw(hnp.arrays(np.float64, (n,), elements=st.floats(0.5, 100)))
    sc = split_cleared(unit, codes, cap)
    present = np.isin(np.arange(3), codes)
    assert np.allclose(group_slots(codes, 3, sc)[present], unit[present], rtol=1e-9, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(0, 23), max_size=30))
def test_rebound_sums_load_above_baseline_over_any_slots(seed, slots):
    """rebound_kwh reads runs of consecutive slots as views; it equals the plain formula on any slot list
    (NaN is no rebound), and a part of the day gives what the whole day gives on the same slots."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 100, (7, 24)).astype(np.float32)
    met = rng.uniform(0, 150, (7, 24)).astype(np.float32)
    met[rng.random(met.shape) < 0.1] = np.nan
    idx = np.array(slots, dtype=np.int64)
    expect = (np.nansum(np.maximum(met[:, idx].astype(np.float64) - base[:, idx], 0.0), axis=1) * 0.25
              if idx.size else np.zeros(7))
    np.testing.assert_allclose(rebound_kwh(base, met, idx), expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rebound_kwh(base[:, 4:], met[:, 4:], idx[idx >= 4] - 4),
                               rebound_kwh(base, met, idx[idx >= 4]), rtol=1e-12, atol=1e-12)
    assert (rebound_kwh(base, met, idx, direction="up") == 0).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 8), st.integers(1, 5))
def test_evaluation_does_not_depend_on_the_inputs_memory_layout(seed, n, s, u):
    """Baselines of a slot-major read come in Fortran-like layout: the evaluation (with NaN gaps
    zeroed through a flat view of its scratch buffer) gives what it gives on C-ordered inputs."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.0, 50.0, (n, s))
    meter = base - rng.uniform(-5.0, 30.0, (n, s))
    meter[rng.random((n, s)) < 0.2] = np.nan
    codes = rng.integers(0, u, n)
    cleared = rng.uniform(1.0, 200.0, (u, s))
    cap = rng.uniform(1.0, 10.0, n)
    c = evaluate(base, meter, codes, cleared, "down", 0.8, 1.2, capability_kw=cap)
    f = evaluate(np.asfortranarray(base), np.asfortranarray(meter), codes, cleared, "down", 0.8, 1.2,
                 capability_kw=cap)
    for x, y in zip(c, f, strict=True):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(c.unit.credited_kw, f.unit.credited_kw)
