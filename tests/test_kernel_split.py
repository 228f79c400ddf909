from unittest import mock

import highspy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.core.errors import InvalidInput
from openvpp.kernels import split as split_module
from openvpp.kernels.split import device_cap_kw, redispatch, split, split_cost


def test_equal_weights_give_every_device_the_same_fraction_of_its_cap():
    r = split(30.0, np.array([10.0, 20.0, 30.0]))
    assert r.power_kw.tolist() == [5.0, 10.0, 15.0]
    assert r.level == 0.5 and r.shortfall_kw == 0.0


def test_a_lower_weight_gives_more_until_it_saturates():
    cap, w = np.array([10.0, 10.0]), np.array([1.0, 2.0])
    # 10 min(1, L) + 10 min(1, L/2) = 12  ->  15 L = 12, L = 0.8
    r = split(12.0, cap, w)
    np.testing.assert_allclose(r.power_kw, [8.0, 4.0], rtol=1e-12)
    assert r.level == pytest.approx(0.8)
    # 17: the first device saturates, 10 + 5 L = 17, L = 1.4
    r = split(17.0, cap, w)
    np.testing.assert_allclose(r.power_kw, [10.0, 7.0], rtol=1e-12)
    assert r.level == pytest.approx(1.4)


def test_a_target_beyond_the_caps_gives_all_caps_and_the_shortfall():
    r = split(10.0, np.array([3.0, 4.0]), np.array([1.0, 5.0]))
    assert r.power_kw.tolist() == [3.0, 4.0] and r.shortfall_kw == 3.0 and np.isinf(r.level)


def test_zero_target_and_zero_caps():
    assert split(0.0, np.array([3.0, 4.0])).power_kw.tolist() == [0.0, 0.0]
    r = split(5.0, np.array([0.0, 0.0]), np.array([1.0, 2.0]))
    assert r.power_kw.tolist() == [0.0, 0.0] and r.shortfall_kw == 5.0


def test_device_caps_from_telemetry_latency_energy_and_service_limits():
    cap = device_cap_kw(
        power_kw=np.array([100.0, 50.0, np.nan, 80.0, 60.0, 90.0]),
        min_kw=np.array([20.0, 40.0, 0.0, 0.0, 0.0, 0.0]),
        max_kw=np.full(6, 200.0),
        latency_s=np.array([10.0, 400.0, 0.0, 10.0, 10.0, 10.0]),
        time_left_s=300.0,
        ramp_kw_per_s=np.array([np.nan, np.nan, np.nan, np.nan, np.nan, 0.1]),
        energy_kwh=np.array([np.nan, np.nan, np.nan, 10.0, np.nan, np.nan]),
        duration_h=0.5,
        service_max_kw=np.array([np.nan, np.nan, np.nan, np.nan, 25.0, np.nan]),
    )
    # headroom 80; latency 400 s > 300 s left; offline; 10 kWh over 0.5 h; comfort 25; ramp 0.1 x 290 s
    np.testing.assert_allclose(cap, [80.0, 0.0, 0.0, 20.0, 25.0, 29.0])
    up = device_cap_kw(np.array([100.0, 250.0]), 0.0, np.array([200.0, 200.0]), direction="up")
    assert up.tolist() == [100.0, 0.0]
    ramp_only = device_cap_kw(np.array([100.0]), 0.0, 200.0, ramp_kw_per_s=np.array([0.05]), time_left_s=600.0)
    assert ramp_only.tolist() == [30.0]
    with pytest.raises(InvalidInput):
        device_cap_kw(np.array([100.0]), 0.0, np.inf, direction="up")


def test_redispatch_moves_a_failed_devices_share_to_the_others():
    cap = np.array([10.0, 6.0, 4.0])
    first = split(10.0, cap)                               # half of every cap: 5, 3, 2
    assert first.power_kw.tolist() == [5.0, 3.0, 2.0]
    again = redispatch(first.power_kw, cap, np.array([True, False, False]))
    assert again.power_kw.tolist() == [0.0, 6.0, 4.0] and again.shortfall_kw == 0.0
    # at 16 kW (0.8 of every cap) the others have 1.2 + 0.8 left for the 8 lost
    first = split(16.0, cap)
    again = redispatch(first.power_kw, cap, np.array([True, False, False]))
    np.testing.assert_allclose(again.power_kw, [0.0, 6.0, 4.0])
    assert again.shortfall_kw == pytest.approx(6.0)


def test_redispatch_cuts_a_device_whose_refreshed_cap_fell_and_moves_the_difference():
    first = np.array([5.0, 3.0, 2.0])                      # split of 10 over caps 10, 6, 4
    fresh = np.array([10.0, 1.0, 4.0])                     # device 1 can now give only 1 kW
    again = redispatch(first, fresh, np.array([False, False, False]))
    # 2 kW lost, residual caps 5, 0, 2: proportional (equal weights) 2 x 5/7 and 2 x 2/7
    np.testing.assert_allclose(again.power_kw, [5.0 + 10 / 7, 1.0, 2.0 + 4 / 7])
    assert again.shortfall_kw == 0.0


def test_redispatch_of_a_measured_shortfall_over_a_window():
    cap = np.array([[10.0, 10.0], [10.0, 0.0], [20.0, 20.0]])
    first = split(np.array([20.0, 15.0]), cap)
    again = redispatch(first.power_kw, cap, np.array([False, True, False]), shortfall_kw=np.array([5.0, 0.0]))
    assert again.power_kw[1].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(again.power_kw.sum(axis=0), first.power_kw.sum(axis=0) - first.power_kw[1] + [5.0, 0.0])


def test_a_window_splits_each_slot_like_a_single_slot():
    rng = np.random.default_rng(4)
    cap, w = rng.uniform(0, 10, (300, 8)), rng.uniform(0.5, 3, 300)
    target = cap.sum(axis=0) * np.array([0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999, 1.3])
    r = split(target, cap, w)
    for t in range(8):
        one = split(target[t], cap[:, t], w)
        np.testing.assert_allclose(r.power_kw[:, t], one.power_kw, rtol=1e-12, atol=1e-12)
        assert r.level[t] == pytest.approx(float(one.level), rel=1e-12)
    np.testing.assert_allclose(r.shortfall_kw, np.maximum(target - cap.sum(axis=0), 0))


@pytest.mark.parametrize(
    "args, field",
    [
        ((5.0, [-1.0, 2.0]), "cap_kw"),
        ((5.0, [np.nan, 2.0]), "cap_kw"),
        ((-5.0, [1.0, 2.0]), "target_kw"),
        ((5.0, [1.0, 2.0], [1.0, 0.0]), "weight"),
        ((5.0, [1.0, 2.0], [1.0]), "weight"),
        (([5.0], [[1.0, 2.0]]), "target_kw"),
    ],
)
def test_bad_input_names_the_field(args, field):
    with pytest.raises(InvalidInput) as err:
        split(*args)
    assert err.value.violations[0].field == field


# ---------------------------------------------------------------- optimality and properties



def highs_qp(target, cap, w) -> float:
    """The same problem as a convex QP for HiGHS: min sum w x^2 / cap, sum x = target, 0 <= x <= cap."""
    n = cap.size
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", 20.0)                   # HiGHS 1.16's active-set QP can cycle
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, 1
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = np.zeros(n), np.zeros(n), cap
    lp.row_lower_ = lp.row_upper_ = np.array([target])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(n + 1, dtype=np.int32)
    lp.a_matrix_.index_ = np.zeros(n, dtype=np.int32)
    lp.a_matrix_.value_ = np.ones(n)
    hess = highspy.HighsHessian()
    hess.dim_, hess.format_ = n, highspy.HessianFormat.kTriangular
    hess.start_, hess.index_ = np.arange(n + 1, dtype=np.int32), np.arange(n, dtype=np.int32)
    hess.value_ = np.where(cap > 0, 2 * w / np.where(cap > 0, cap, 1.0), 1.0)
    model = highspy.HighsModel()
    model.lp_, model.hessian_ = lp, hess
    h.passModel(model)
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return h.getInfo().objective_function_value


@pytest.mark.parametrize("seed", range(40))
def test_optimal_against_the_highs_qp(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    cap = np.where(rng.random(n) < 0.15, 0.0, rng.uniform(1, 100, n))
    w = rng.choice([1.0, 2.0, 3.0], n) if seed % 2 else rng.uniform(0.1, 10, n)
    target = rng.uniform(0.01, 0.99) * cap.sum()
    r = split(target, cap, w)
    assert float(split_cost(r.power_kw, cap, w)) == pytest.approx(highs_qp(target, cap, w), rel=1e-6, abs=1e-9)


def bisection_optimum(target, cap, w) -> float:
    """Independent of the kernel: bisect the level over the bits of a float64 (to the last bit,
    whatever the weights' range), return the optimal cost."""
    lo, hi = 0, int(np.float64(w.max()).view(np.int64))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        level = np.int64(mid).view(np.float64)
        lo, hi = (mid, hi) if (cap * np.minimum(1.0, level / w)).sum() < target else (lo, mid)
    return float(split_cost(cap * np.minimum(1.0, np.int64(hi).view(np.float64) / w), cap, w))


@st.composite
def instances(draw):
    n = draw(st.integers(1, 60))
    cap = np.array(draw(st.lists(st.one_of(st.just(0.0), st.floats(0.001, 1e4)), min_size=n, max_size=n)))
    weights = st.one_of(st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.floats(0.01, 100),  # classes and spread
                        st.sampled_from([1e-150, 1e150]))  # far apart; shares stay representable
    w = np.array(draw(st.lists(weights, min_size=n, max_size=n)))
    target = draw(st.one_of(st.just(0.0), st.floats(1e-6, 1.3))) * cap.sum()  # no subnormal targets
    return target, cap, w


def _check_kkt(r, target, cap, w):
    x = r.power_kw
    assert (x >= 0).all() and (x <= cap).all()
    assert x.sum() == pytest.approx(min(target, cap.sum()), rel=1e-9, abs=1e-9)
    # optimality certificate of this separable convex problem: no device that could give more has
    # a lower marginal cost (2 w x / cap) than one that could give less
    on = cap > 0
    mc = np.where(on, 2 * w * x / np.where(on, cap, 1.0), 0.0)
    up, down = on & (x < cap * (1 - 1e-12)), on & (x > 1e-12 * cap)
    if up.any() and down.any():
        assert mc[up].min() >= mc[down].max() * (1 - 1e-7)
    if 0 < target < cap.sum():                              # x_i = cap_i min(1, level / w_i)
        np.testing.assert_allclose(x, cap * np.minimum(1.0, r.level / w), rtol=1e-9, atol=1e-9 * cap.max())
        # stationarity: unsaturated devices share one marginal cost 2 w x / cap = 2 level
        free = (x > 0) & (x < cap * (1 - 1e-9))
        np.testing.assert_allclose(2 * w[free] * x[free] / cap[free], 2 * r.level, rtol=1e-7)
        full = (cap > 0) & (x >= cap * (1 - 1e-12))
        assert (w[full] <= r.level * (1 + 1e-9)).all()     # saturated: cheaper than the level


@settings(max_examples=300, deadline=None)
@given(instances(), st.sampled_from([(12, 16_384), (1, 0), (2, 3)]))
def test_sum_bounds_and_kkt_with_forced_bucketing_passes(inst, narrowing):
    target, cap, w = inst
    with mock.patch.object(split_module, "_BUCKET_BITS", narrowing[0]), \
            mock.patch.object(split_module, "_SMALL", narrowing[1]):
        r = split(target, cap, w)
        window = split(np.array([target, target / 2]), np.c_[cap, cap], w)
    _check_kkt(r, target, cap, w)
    if 0 < target < cap.sum():
        assert float(split_cost(r.power_kw, cap, w)) == pytest.approx(bisection_optimum(target, cap, w), rel=1e-9)
    np.testing.assert_allclose(window.power_kw[:, 0], r.power_kw, rtol=1e-9, atol=1e-9 * max(cap.max(), 1))
    _check_kkt(split_module.Split(window.power_kw[:, 1], None, window.level[1]), target / 2, cap, w)


@settings(max_examples=200, deadline=None)
@given(instances(), st.data())
def test_redispatch_never_uses_failed_devices_nor_exceeds_residual_caps(inst, data):
    target, cap, w = inst
    failed = np.array(data.draw(st.lists(st.booleans(), min_size=cap.size, max_size=cap.size)))
    first = split(target, cap, w)
    again = redispatch(first.power_kw, cap, failed, w)
    x = again.power_kw
    assert (x[failed] == 0).all()
    assert (x[~failed] >= first.power_kw[~failed]).all() and (x <= cap).all()
    lost = first.power_kw[failed].sum()
    room = (cap - first.power_kw)[~failed].sum()
    gained = (x - first.power_kw)[~failed].sum()
    assert gained == pytest.approx(min(lost, room), rel=1e-9, abs=1e-9)
    assert again.shortfall_kw == pytest.approx(max(lost - room, 0.0), rel=1e-9, abs=1e-9)


def test_a_million_devices_in_few_weight_classes_match_the_formula():
    rng = np.random.default_rng(11)
    n = 1_000_000
    cap = rng.uniform(0, 20, n)
    for w in (rng.integers(1, 6, n).astype(float), rng.lognormal(0, 2, n)):
        target = 0.37 * cap.sum()
        r = split(target, cap, w)
        _check_kkt(r, target, cap, w)
