import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.core.calendar import day_kinds
from openvpp.core.errors import InvalidInput
from openvpp.kernels.baseline import (
    METHODS,
    BaselineSpec,
    high_x_of_y,
    pre_event_slots,
    response_kw,
    same_day_adjustment,
    similar_day_mean,
    temperature_regression,
    workday_mean,
)

SLOT = np.arange(96) / 100.0  # a small per-slot signature, so slots are told apart


def days(first: str, n: int) -> np.ndarray:
    return np.arange(np.datetime64(first), np.datetime64(first) + n)


def day_load(values) -> np.ndarray:
    """1 meter; day d is flat at values[d] kW plus the slot signature."""
    return (np.asarray(values, dtype=float)[:, None] + SLOT)[None]


# 2025-05-26 (Mon) .. 2025-06-06 (Fri); Dragon Boat break 31 May - 2 June.
DRAGON = days("2025-05-26", 12)
DRAGON_KINDS = day_kinds(DRAGON)
EVENT = 10  # Thursday 2025-06-05
PREVIOUS_EVENT = np.zeros(12, dtype=bool)
PREVIOUS_EVENT[3] = True  # Thursday 2025-05-29 was an earlier DR event day


def test_calendar_of_the_hand_computed_case():
    assert DRAGON_KINDS.tolist() == [0, 0, 0, 0, 0, 2, 2, 2, 0, 0, 0, 0]


def test_workday_mean_skips_day_before_holidays_and_excluded_day():
    load = day_load(10.0 * (np.arange(12) + 1))  # day d at 10(d+1) kW
    res = workday_mean(load, DRAGON_KINDS, PREVIOUS_EVENT, EVENT)
    # first candidate is day 8 (event - 2); 5-7 holiday, 3 excluded -> days 8, 4, 2, 1, 0
    assert np.flatnonzero(res.selected[0]).tolist() == [0, 1, 2, 4, 8]
    assert res.days_used.tolist() == [5]
    np.testing.assert_allclose(res.power_kw[0], (90 + 50 + 30 + 20 + 10) / 5 + SLOT)


def test_workday_mean_uses_fewer_days_when_history_is_short_and_nan_when_none():
    load = day_load(10.0 * (np.arange(12) + 1))
    res = workday_mean(load, DRAGON_KINDS, PREVIOUS_EVENT, 4)  # candidates 2, 1, 0
    assert res.days_used.tolist() == [3]
    np.testing.assert_allclose(res.power_kw[0], 20 + SLOT)
    none = workday_mean(load, DRAGON_KINDS, None, 1)
    assert none.days_used.tolist() == [0]
    assert np.isnan(none.power_kw).all()


def test_workday_mean_skips_a_missing_slot_on_one_chosen_day():
    load = day_load(10.0 * (np.arange(12) + 1))
    load[0, 8, 40] = np.nan
    res = workday_mean(load, DRAGON_KINDS, PREVIOUS_EVENT, EVENT)
    assert res.power_kw[0, 40] == pytest.approx((50 + 30 + 20 + 10) / 4 + 0.40)
    assert res.power_kw[0, 41] == pytest.approx(40 + 0.41)


def test_similar_day_mean_for_a_holiday_counts_make_up_sunday_as_working():
    # 2025-09-20 (Sat) .. 2025-10-01 (National Day); 2025-09-28 is a make-up Sunday
    kinds = day_kinds(days("2025-09-20", 12))
    assert kinds.tolist() == [1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    load = day_load(np.arange(12) * 3.0)
    res = similar_day_mean(load, kinds, None, 11)
    assert np.flatnonzero(res.selected[0]).tolist() == [0, 1, 7]
    np.testing.assert_allclose(res.power_kw[0], (0 + 3 + 21) / 3 + SLOT)
    excluded = np.zeros(12, dtype=bool)
    excluded[1] = True
    fewer = similar_day_mean(load, kinds, excluded, 11)
    assert fewer.days_used.tolist() == [2]
    np.testing.assert_allclose(fewer.power_kw[0], (0 + 21) / 2 + SLOT)


def test_high_4_of_5_drops_the_day_with_the_lowest_window_load():
    load = day_load(10.0 * (np.arange(12) + 1))
    load[0, 4, 40:48] = 0.0  # day 4 is low over 10:00-12:00
    res = high_x_of_y(load, DRAGON_KINDS, PREVIOUS_EVENT, EVENT, window_slots=slice(40, 48))
    assert np.flatnonzero(res.selected[0]).tolist() == [0, 1, 2, 8]
    np.testing.assert_allclose(res.power_kw[0], (90 + 30 + 20 + 10) / 4 + SLOT)


def test_high_x_of_y_breaks_ties_towards_newer_days():
    load = day_load(np.full(12, 7.0))
    res = high_x_of_y(load, DRAGON_KINDS, None, EVENT, window_slots=slice(40, 48), x=2, y=5)
    assert np.flatnonzero(res.selected[0]).tolist() == [4, 8]


def test_temperature_regression_fits_cooling_degrees_by_least_squares():
    temps = np.array([20.0, 22.0, 23.0, 24.0] + [30.0] * 8)
    load = day_load([99.0, 1.0, 2.0, 4.0] + [50.0] * 8)
    kinds = np.zeros(12, dtype=np.int8)
    # days 1..3 (n_days=3, event 5): feature 0, 1, 2 -> load 1, 2, 4; slope 1.5, intercept 5/6
    res = temperature_regression(load, temps, kinds, None, 5, event_temp_c=26.0, n_days=3)
    assert np.flatnonzero(res.selected[0]).tolist() == [1, 2, 3]
    np.testing.assert_allclose(res.power_kw[0], 5 / 6 + 1.5 * 4 + SLOT)
    linear = temperature_regression(load, temps, kinds, None, 5, event_temp_c=26.0, n_days=3, form="linear")
    np.testing.assert_allclose(linear.power_kw[0], 7 / 3 + 1.5 * (26 - 23) + SLOT)


def test_temperature_regression_is_the_mean_when_every_day_is_below_base():
    temps = np.full(12, 18.0)
    load = day_load(np.arange(12.0))
    res = temperature_regression(load, temps, np.zeros(12, np.int8), None, 11, event_temp_c=35.0, n_days=4)
    np.testing.assert_allclose(res.power_kw[0], (6 + 7 + 8 + 9) / 4 + SLOT)


def test_same_day_adjustment_multiplies_within_cap():
    base = np.full((3, 96), 100.0)
    metered = np.full((3, 96), 100.0)
    metered[0, 52:56] = 110.0
    metered[1, 52:56] = 150.0
    metered[2, 52:56] = np.nan
    adj_slots = pre_event_slots(60)
    assert adj_slots == slice(52, 56)
    res = same_day_adjustment(base, metered, slice(60, 68), adj_slots)
    np.testing.assert_allclose(res.value, [1.1, 1.2, 1.0])
    np.testing.assert_allclose(res.power_kw[:, 60], [110.0, 120.0, 100.0])
    assert (res.power_kw[:, :60] == 100.0).all() and (res.power_kw[:, 68:] == 100.0).all()


def test_same_day_adjustment_adds_within_cap():
    base = np.full((2, 96), 100.0)
    metered = np.full((2, 96), 100.0)
    metered[0, 52:56] = 95.0
    metered[1, 52:56] = 300.0
    res = same_day_adjustment(base, metered, slice(60, 68), slice(52, 56), kind="additive", cap=0.2)
    np.testing.assert_allclose(res.value, [-5.0, 20.0])
    np.testing.assert_allclose(res.power_kw[:, 63], [95.0, 120.0])


def test_response_is_reduction_for_peak_shaving_and_increase_for_valley_filling():
    assert response_kw(np.array([100.0]), np.array([70.0])).tolist() == [30.0]
    assert response_kw(np.array([100.0]), np.array([130.0]), direction="up").tolist() == [30.0]
    with pytest.raises(InvalidInput):
        response_kw(np.array([1.0]), np.array([1.0]), direction="sideways")


def test_spec_ids_and_compute():
    assert BaselineSpec("gbt-workday").id == "gbt-workday-5/2"
    assert BaselineSpec("gbt-similar").id == "gbt-similar-3/2"
    assert BaselineSpec("high-x-of-y", {"x": 4, "y": 5}).id == "high-4-of-5/2"
    assert BaselineSpec("temperature-regression").id == "temp-reg-20/2-cooling22"
    assert BaselineSpec("gbt-workday", {"skip_days": 1}, {"kind": "additive", "cap": 0.1}).id == (
        "gbt-workday-5/1+add-0.1"
    )
    assert set(METHODS) == {"gbt-workday", "gbt-similar", "high-x-of-y", "temperature-regression"}
    load = day_load(10.0 * (np.arange(12) + 1))
    res = BaselineSpec("gbt-workday").compute(
        load=load, day_kinds=DRAGON_KINDS, excluded=PREVIOUS_EVENT, event_day_idx=EVENT
    )
    np.testing.assert_allclose(res.power_kw[0], 40 + SLOT)
    with pytest.raises(InvalidInput) as err:
        BaselineSpec("regression")
    assert err.value.violations[0].field == "method"
    with pytest.raises(InvalidInput) as err:
        BaselineSpec("gbt-workday", {"n": 5})
    assert err.value.violations[0].field == "params"


def test_bad_shapes_name_the_field():
    with pytest.raises(InvalidInput) as err:
        workday_mean(np.zeros((2, 5, 24)), np.zeros(5), None, 4)
    assert err.value.violations[0].field == "load"
    with pytest.raises(InvalidInput) as err:
        workday_mean(np.zeros((2, 5, 96)), np.zeros(5), None, 5)
    assert err.value.violations[0].field == "event_day_idx"
    with pytest.raises(InvalidInput) as err:
        workday_mean(np.zeros((2, 5, 96)), np.zeros(5), np.zeros(4, bool), 4)
    assert err.value.violations[0].field == "excluded"


def test_float32_load_gives_float32_baseline():
    load = day_load(np.arange(12.0)).astype(np.float32)
    assert workday_mean(load, DRAGON_KINDS, None, EVENT).power_kw.dtype == np.float32


def test_batch_with_per_meter_events_and_exclusions_equals_meter_by_meter():
    rng = np.random.default_rng(7)
    load = rng.random((40, 15, 96))
    load[rng.random(load.shape) < 0.02] = np.nan
    kinds = day_kinds(days("2025-09-22", 15))
    excluded = rng.random((40, 15)) < 0.2
    event = rng.integers(3, 15, 40)
    batch = workday_mean(load, kinds, excluded, event)
    hxy = high_x_of_y(load, kinds, excluded, event, slice(56, 72))
    for m in range(40):
        one = workday_mean(load[m : m + 1], kinds, excluded[m], int(event[m]))
        np.testing.assert_array_equal(one.selected[0], batch.selected[m])
        np.testing.assert_allclose(one.power_kw[0], batch.power_kw[m], equal_nan=True)
        one = high_x_of_y(load[m : m + 1], kinds, excluded[m], int(event[m]), slice(56, 72))
        np.testing.assert_allclose(one.power_kw[0], hxy.power_kw[m], equal_nan=True)


# ---------------------------------------------------------------- properties


@st.composite
def cases(draw):
    n_meters = draw(st.integers(1, 4))
    n_days = draw(st.integers(4, 14))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 3, n_days).astype(np.int8)
    shared = draw(st.booleans())
    excluded = rng.random(n_days if shared else (n_meters, n_days)) < 0.25
    event = int(rng.integers(0, n_days)) if shared else rng.integers(0, n_days, n_meters)
    load = rng.normal(50, 20, (n_meters, n_days, 96))
    temps = rng.uniform(15, 38, n_days)
    return load, kinds, excluded, event, temps, rng


def run_all(load, kinds, excluded, event, temps):
    return {
        "workday": workday_mean(load, kinds, excluded, event),
        "similar": similar_day_mean(load, kinds, excluded, event),
        "high": high_x_of_y(load, kinds, excluded, event, slice(40, 60)),
        "temp": temperature_regression(load, temps, kinds, excluded, event, 33.0, n_days=6),
    }


@settings(max_examples=60, deadline=None)
@given(cases(), st.floats(-1e3, 1e3, allow_nan=False))
def test_constant_load_gives_that_constant_for_every_method(case, value):
    load, kinds, excluded, event, temps, _ = case
    for name, res in run_all(np.full_like(load, value), kinds, excluded, event, temps).items():
        have = res.days_used > 0
        assert np.isnan(res.power_kw[~have]).all(), name
        np.testing.assert_allclose(res.power_kw[have], value, rtol=1e-9, atol=1e-9, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_event_day_and_excluded_days_do_not_move_the_baseline(case):
    load, kinds, excluded, event, temps, rng = case
    n_meters, n_days, _ = load.shape
    hidden = np.broadcast_to(excluded, (n_meters, n_days)).copy()
    hidden[np.arange(n_meters), np.broadcast_to(event, (n_meters,))] = True
    changed = load.copy()
    changed[hidden] = rng.choice([np.nan, 1e9, -5.0], size=(hidden.sum(), 1))
    before = run_all(load, kinds, excluded, event, temps)
    after = run_all(changed, kinds, excluded, event, temps)
    for name in ("workday", "similar", "high", "temp"):
        np.testing.assert_array_equal(before[name].power_kw, after[name].power_kw, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(cases(), st.sampled_from([0.25, 0.5, 2.0, 8.0]))
def test_scaling_the_load_scales_the_baseline(case, k):
    load, kinds, excluded, event, temps, _ = case
    base = run_all(load, kinds, excluded, event, temps)
    scaled = run_all(k * load, kinds, excluded, event, temps)
    for name in base:
        np.testing.assert_allclose(scaled[name].power_kw, k * base[name].power_kw, rtol=1e-12, err_msg=name)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.floats(0, 1),
    st.sampled_from(["multiplicative", "additive"]),
    st.integers(8, 95),
)
def test_same_day_adjustment_never_exceeds_its_cap(seed, cap, kind, start):
    rng = np.random.default_rng(seed)
    base = rng.uniform(-20, 200, (5, 96))
    metered = rng.uniform(-20, 400, (5, 96))
    metered[rng.random(metered.shape) < 0.1] = np.nan
    window = slice(start, min(start + 8, 96))
    res = same_day_adjustment(base, metered, window, pre_event_slots(start), kind=kind, cap=cap)
    change = res.power_kw - base
    assert (change[:, :start] == 0).all() and (change[:, window.stop :] == 0).all()
    if kind == "multiplicative":
        assert (np.abs(change) <= cap * np.abs(base) + 1e-9).all()
    else:
        bound = cap * np.abs(base[:, window].mean(axis=1))
        assert (np.abs(res.value) <= bound + 1e-9).all()
        expected = np.broadcast_to(res.value[:, None], change[:, window].shape)
        np.testing.assert_allclose(change[:, window], expected, atol=1e-12)


# ---------------------------------------------------------------- part of the calendar


def _specs(window: slice) -> dict:
    return {
        "workday": (BaselineSpec("gbt-workday"), {}),
        "similar": (BaselineSpec("gbt-similar"), {}),
        "high": (BaselineSpec("high-x-of-y", {"x": 2, "y": 3}), {"window_slots": window}),
        "temp": (BaselineSpec("temperature-regression", {"n_days": 6}), {}),
    }


@settings(max_examples=60, deadline=None)
@given(cases(), st.integers(0, 95), st.integers(1, 30), st.booleans())
def test_a_part_of_the_calendar_gives_the_whole_calendar_baseline_on_its_slots(case, first, width, per_slot):
    """Reading only the days a method may choose (days_needed, plus the event days) and a band of slots
    gives the baseline computed on every day and slot, on those slots; the choice is reported on the
    calendar."""
    load, kinds, excluded, event, temps, rng = case
    n_meters, n_days, _ = load.shape
    lo, hi = first, min(96, first + width)
    window = slice(lo + (hi - lo) // 3, hi)
    temp = rng.uniform(15, 38, (n_days, 96)) if per_slot else temps
    event_temp = temp[np.max(event)] if per_slot else 33.0
    for name, (spec, extra) in _specs(window).items():
        data = {"day_kinds": kinds, "excluded": excluded, "event_day_idx": event, **extra}
        if name == "temp":
            data |= {"temp_c": temp, "event_temp_c": event_temp}
        need = spec.days_needed(kinds, excluded, event, n_meters)
        need[np.broadcast_to(event, (n_meters,))] = True
        held = np.flatnonzero(need)
        whole = spec.compute(load=load, **data)
        part = spec.compute(load=load[:, held][:, :, lo:hi], held_days=held, held_slots=slice(lo, hi), **data)
        np.testing.assert_array_equal(part.selected, whole.selected, err_msg=name)
        np.testing.assert_array_equal(part.days_used, whole.days_used, err_msg=name)
        if name == "temp":   # a gap outside the held slots moves a meter from the general path to the shared one
            np.testing.assert_allclose(part.power_kw, whole.power_kw[:, lo:hi], rtol=1e-9, atol=1e-9, err_msg=name)
        else:
            np.testing.assert_array_equal(part.power_kw, whole.power_kw[:, lo:hi], err_msg=name)


@settings(max_examples=60, deadline=None)
@given(cases(), st.sampled_from(["cooling", "linear"]))
def test_temperature_regression_shared_path_equals_the_per_meter_path(case, form):
    """One temperature for all meters takes the one-pass shared path (meters without gaps); the same
    temperature given per meter takes the general path: the fits agree."""
    load, kinds, excluded, event, temps, rng = case
    n_meters, n_days, _ = load.shape
    load = load.copy()
    load[rng.random(load.shape) < 0.01] = np.nan
    per_slot = rng.uniform(15, 38, (n_days, 96))
    shared = temperature_regression(load, per_slot, kinds, excluded, event, per_slot[-1], n_days=6, form=form)
    each = np.broadcast_to(per_slot, (n_meters, n_days, 96))
    general = temperature_regression(load, each, kinds, excluded, event, per_slot[-1], n_days=6, form=form)
    np.testing.assert_allclose(shared.power_kw, general.power_kw, rtol=1e-9, atol=1e-7)
    f32 = temperature_regression(load.astype(np.float32), per_slot, kinds, excluded, event, per_slot[-1], n_days=6,
                                 form=form)
    assert f32.power_kw.dtype == np.float32
    np.testing.assert_allclose(f32.power_kw, shared.power_kw, rtol=2e-3, atol=2e-2)


def test_a_part_must_hold_every_chosen_day_and_the_window():
    load = day_load(10.0 * (np.arange(12) + 1))
    spec = BaselineSpec("gbt-workday")
    need = spec.days_needed(DRAGON_KINDS, PREVIOUS_EVENT, EVENT)
    assert np.flatnonzero(need).tolist() == [0, 1, 2, 4, 8]     # 5 working days back from 3 June
    held = np.flatnonzero(need)[1:]                               # one chosen day left out
    with pytest.raises(InvalidInput) as err:
        spec.compute(load=load[:, held], day_kinds=DRAGON_KINDS, excluded=PREVIOUS_EVENT, event_day_idx=EVENT,
                     held_days=held)
    assert err.value.violations[0].field == "held_days"
    with pytest.raises(InvalidInput) as err:
        workday_mean(load[:, :, 40:60], DRAGON_KINDS, None, EVENT, held_slots=slice(40, 50))
    assert err.value.violations[0].field == "load"
    with pytest.raises(InvalidInput) as err:
        high_x_of_y(load[:, :, 40:60], DRAGON_KINDS, None, EVENT, slice(56, 64), held_slots=slice(40, 60))
    assert err.value.violations[0].field == "window_slots"
    with pytest.raises(InvalidInput) as err:
        workday_mean(load, DRAGON_KINDS[:11], None, EVENT)
    assert err.value.violations[0].field == "load"
    part = workday_mean(load[:, :, 40:60], DRAGON_KINDS, PREVIOUS_EVENT, EVENT, held_slots=slice(40, 60))
    np.testing.assert_allclose(part.power_kw[0], 40 + SLOT[40:60])
    adj = same_day_adjustment(np.full((1, 20), 100.0), np.full((1, 20), 110.0), slice(52, 56), slice(44, 48),
                              held_slots=slice(40, 60))
    assert adj.value[0] == pytest.approx(1.1) and adj.power_kw[0, 12:16].tolist() == pytest.approx([110.0] * 4)
    assert adj.power_kw[0, :12].tolist() == [100.0] * 12


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 300), st.sampled_from(list(METHODS)))
def test_every_method_gives_the_same_baseline_on_a_slot_major_view(seed, n, method):
    """A rollup-file read hands the kernels a (meter, day, slot) view of a slot-major buffer (meters
    innermost); each method gives exactly what it gives on the same load in C order, NaN gaps too."""
    rng = np.random.default_rng(seed)
    buf = rng.uniform(0.0, 100.0, (12, 96, n)).astype(np.float32)
    buf[rng.random(buf.shape) < 0.02] = np.nan
    view = buf.transpose(2, 0, 1)
    assert view.strides[0] == view.itemsize
    call = {"day_kinds": DRAGON_KINDS, "excluded": PREVIOUS_EVENT, "event_day_idx": EVENT}
    if method == "temperature-regression":
        call["temp_c"] = rng.uniform(15.0, 35.0, (12, 96))
        call["event_temp_c"] = call["temp_c"][EVENT]
    if method == "high-x-of-y":
        call["window_slots"] = slice(56, 64)
    spec = BaselineSpec(method)
    a = spec.compute(load=view, **call)
    b = spec.compute(load=np.ascontiguousarray(view), **call)
    np.testing.assert_array_equal(a.power_kw, b.power_kw)
    np.testing.assert_array_equal(a.days_used, b.days_used)
