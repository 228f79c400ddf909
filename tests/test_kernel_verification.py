import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.core.errors import InvalidInput
from openvpp.kernels.baseline import pre_window_mean, pre_window_mean_id
from openvpp.kernels.verification import assess, sustained_response


def test_hand_computed_ramp_and_hold():
    # 1-minute steps; instruction at step 10; ramps 0 → 80 kW over 3 minutes, holds 80 for 60 minutes
    base = np.full((1, 100), 200.0)
    metered = base.copy()
    metered[0, 10:13] = [180, 160, 140]
    metered[0, 13:73] = 120
    out = assess(base, metered, start=10, step_s=60, declared_kw=np.array([100.0]), duration_h=1.0)
    # best 60-minute mean starts at step 13: exactly 80 kW sustained
    assert out["verified_kw"][0] == 80.0
    assert out["window_start"][0] == 13
    assert out["ratio"][0] == 0.8 and out["grade"][0] == "B"
    # 90 % of 80 = 72 kW first reached at step 13 → 3 minutes after the instruction
    assert out["latency_s"][0] == 180.0


def test_valley_filling_counts_increase():
    base = np.full((2, 30), 50.0)
    metered = base.copy()
    metered[:, 5:] += np.array([[100.0], [20.0]])
    out = assess(base, metered, 5, 60, np.array([100.0, 100.0]), 0.25, direction="up")
    assert out["verified_kw"].tolist() == [100.0, 20.0]
    assert out["grade"].tolist() == ["A", "C"]
    assert out["latency_s"].tolist() == [0.0, 0.0]


def test_no_response_has_no_latency():
    base = np.full((1, 20), 10.0)
    out = assess(base, base + 1, 2, 60, np.array([5.0]), 0.1)
    assert out["verified_kw"][0] == 0.0 and np.isnan(out["latency_s"][0]) and out["grade"][0] == "C"


@settings(max_examples=50)
@given(st.integers(1, 40), st.floats(0.1, 500), st.integers(0, 10))
def test_constant_response_is_verified_exactly(d, kw, start):
    base = np.full((3, 60), 1000.0)
    out = sustained_response(base - (base - kw), start, d)
    assert np.allclose(out[0], kw)


@settings(max_examples=50)
@given(st.lists(st.floats(-100, 100), min_size=10, max_size=40), st.integers(1, 10))
def test_sustained_lies_between_the_mean_and_the_peak(values, d):
    r = np.array([values])
    sustained, _ = sustained_response(r, 0, d)
    assert sustained[0] <= r.max() + 1e-9
    window = min(d, r.shape[1])
    assert sustained[0] >= np.convolve(r[0], np.ones(window) / window, "valid").min() - 1e-9
    assert np.isclose(sustained_response(r, 0, 1)[0][0], r.max(), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- the verification baseline (kernels.baseline)

@st.composite
def _telemetry(draw):
    n = draw(st.integers(1, 6))
    t = draw(st.integers(2, 30))
    pre = draw(st.integers(1, t))
    values = draw(st.lists(st.one_of(st.floats(-500, 5000), st.just(float("nan"))), min_size=n * t, max_size=n * t))
    return np.array(values).reshape(n, t), pre


@settings(max_examples=100, deadline=None)
@given(_telemetry(), st.floats(-1000, 1000))
def test_pre_window_mean_is_the_mean_of_the_steps_before_the_instruction(case, shift):
    data, pre = case
    base = pre_window_mean(data, pre)
    for i in range(data.shape[0]):
        before = data[i, :pre][~np.isnan(data[i, :pre])]
        if before.size:
            assert base[i] == pytest.approx(before.mean(), rel=1e-9, abs=1e-9)
            assert before.min() - 1e-9 <= base[i] <= before.max() + 1e-9
        else:
            assert np.isnan(base[i])                   # no data before the window: no baseline
    # what happens after the instruction never moves the baseline; a level shift moves it by the shift
    later = data.copy()
    later[:, pre:] = 12345.0
    assert np.array_equal(pre_window_mean(later, pre), base, equal_nan=True)
    assert np.allclose(pre_window_mean(data + shift, pre), base + shift, equal_nan=True, atol=1e-6)


def test_pre_window_mean_refuses_a_window_it_cannot_see():
    with pytest.raises(InvalidInput, match="pre_steps"):
        pre_window_mean(np.zeros((2, 5)), 6)
    with pytest.raises(InvalidInput, match="pre_steps"):
        pre_window_mean(np.zeros((2, 5)), 0)
    with pytest.raises(InvalidInput, match="power_kw"):
        pre_window_mean(np.zeros(5), 2)
    assert pre_window_mean_id(60.0) == "pre-window-mean-60min"
