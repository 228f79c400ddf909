from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.core.errors import InvalidInput
from openvpp.kernels import clearing
from openvpp.kernels.clearing import clear


def _one_slot(target, q, p, submitted=None, unit=None, **kw):
    n = len(q)
    return clear([target], np.zeros(n, dtype=int), np.array(q, float), np.array(p, float),
                 np.arange(n) if submitted is None else np.array(submitted),
                 np.zeros(n, dtype=int) if unit is None else np.array(unit), **kw)


def test_uniform_pays_everyone_the_marginal_price_and_the_marginal_declaration_is_cut():
    # merit order: A 100 @ 1.0, D 50 @ 1.5, B 100 @ 2.0 (marginal: 80 of it), C 100 @ 3.0 (out)
    r = _one_slot(230.0, [100, 100, 100, 50], [1.0, 2.0, 3.0, 1.5])
    assert r.accepted_kw.tolist() == [100.0, 80.0, 0.0, 50.0]
    assert r.clearing_price_yuan_per_kwh.tolist() == [[2.0]]
    assert r.cleared_kw.tolist() == [[230.0]] and r.shortfall_kw.tolist() == [[0.0]]
    assert r.settlement_price_yuan_per_kwh[[0, 1, 3]].tolist() == [2.0, 2.0, 2.0]
    assert np.isnan(r.settlement_price_yuan_per_kwh[2])


def test_pay_as_bid_pays_each_its_own_price():
    r = _one_slot(230.0, [100, 100, 100, 50], [1.0, 2.0, 3.0, 1.5], pricing="pay_as_bid")
    assert r.accepted_kw.tolist() == [100.0, 80.0, 0.0, 50.0]
    assert r.settlement_price_yuan_per_kwh[[0, 1, 3]].tolist() == [1.0, 2.0, 1.5]
    assert r.clearing_price_yuan_per_kwh.tolist() == [[2.0]]


def test_equal_prices_go_to_the_earlier_submission_then_the_lower_unit_code():
    r = _one_slot(150.0, [100, 100, 100], [2.0, 2.0, 2.0], submitted=[5, 2, 2], unit=[3, 9, 4])
    assert r.accepted_kw.tolist() == [0.0, 50.0, 100.0]


def test_target_met_exactly_by_whole_declarations_does_not_touch_the_next():
    r = _one_slot(150.0, [100, 50, 70], [1.0, 1.2, 1.3])
    assert r.accepted_kw.tolist() == [100.0, 50.0, 0.0]
    assert r.clearing_price_yuan_per_kwh.tolist() == [[1.2]]
    assert np.isnan(r.settlement_price_yuan_per_kwh[2])


def test_insufficient_offers_accept_everything_and_report_the_shortfall():
    r = _one_slot(500.0, [100, 200], [1.0, 2.0])
    assert r.accepted_kw.tolist() == [100.0, 200.0]
    assert r.shortfall_kw.tolist() == [[200.0]] and r.clearing_price_yuan_per_kwh.tolist() == [[2.0]]


def test_declarations_above_the_cap_are_flagged_and_not_accepted():
    r = _one_slot(150.0, [100, 100, 30], [1.0, 3.0, 2.5], price_cap_yuan_per_kwh=2.5)
    assert r.accepted_kw.tolist() == [100.0, 0.0, 30.0]
    assert r.over_cap.tolist() == [False, True, False]
    assert r.shortfall_kw.tolist() == [[20.0]] and r.clearing_price_yuan_per_kwh.tolist() == [[2.5]]
    assert np.isnan(r.settlement_price_yuan_per_kwh[1])


def test_zero_target_accepts_nothing():
    r = _one_slot(0.0, [100, 100], [1.0, 2.0])
    assert r.accepted_kw.tolist() == [0.0, 0.0] and np.isnan(r.clearing_price_yuan_per_kwh[0, 0])
    assert r.cleared_kw.tolist() == [[0.0]]


def test_negative_prices_come_first_and_minus_zero_ties_with_zero():
    r = _one_slot(60.0, [40, 40, 40, 40], [0.3, -0.0, 0.0, -0.5], submitted=[0, 2, 1, 3])
    # -0.5 first (40), then the zero-priced ones by submission: row 2 (submitted 1) before row 1
    assert r.accepted_kw.tolist() == [0.0, 0.0, 20.0, 40.0]
    assert r.clearing_price_yuan_per_kwh[0, 0] == 0.0


def test_prices_far_apart_on_both_sides_of_zero_keep_their_order():
    r = _one_slot(100.0, [40, 40, 40, 40], [1e300, -1e300, 25.0, -30.0])
    assert r.accepted_kw.tolist() == [0.0, 40.0, 20.0, 40.0]
    assert r.clearing_price_yuan_per_kwh[0, 0] == 25.0


def test_scopes_and_slots_clear_independently_in_one_call():
    target = np.array([[100.0, 0.0], [50.0, 500.0]])       # 2 scopes x 2 slots
    scope = np.array([0, 0, 0, 1, 1, 1, 1])
    slot = np.array([0, 0, 1, 0, 0, 1, 1])
    q = np.array([80.0, 80.0, 80.0, 30.0, 30.0, 100.0, 100.0])
    p = np.array([1.0, 2.0, 1.0, 3.0, 1.0, 1.0, 2.0])
    r = clear(target, slot, q, p, np.arange(7), np.arange(7), scope, pricing="uniform")
    assert r.accepted_kw.tolist() == [80.0, 20.0, 0.0, 20.0, 30.0, 100.0, 100.0]
    assert r.clearing_price_yuan_per_kwh[0, 0] == 2.0 and np.isnan(r.clearing_price_yuan_per_kwh[0, 1])
    assert r.clearing_price_yuan_per_kwh[1].tolist() == [3.0, 2.0]
    assert r.cleared_kw.tolist() == [[100.0, 0.0], [50.0, 200.0]]
    assert r.shortfall_kw.tolist() == [[0.0, 0.0], [0.0, 300.0]]
    assert r.settlement_price_yuan_per_kwh[[0, 1, 3, 4]].tolist() == [2.0, 2.0, 3.0, 3.0]


def test_price_cap_per_scope_and_slot():
    r = clear(np.array([[100.0, 100.0]]), np.array([0, 1]), np.array([50.0, 50.0]), np.array([2.0, 2.0]),
              np.arange(2), np.arange(2), price_cap_yuan_per_kwh=np.array([[1.5, 2.0]]))
    assert r.over_cap.tolist() == [True, False] and r.accepted_kw.tolist() == [0.0, 50.0]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"quantity_kw": [-1.0]}, "quantity_kw"),
        ({"price_yuan_per_kwh": [np.nan]}, "price_yuan_per_kwh"),
        ({"slot": [3]}, "slot"),
        ({"target_kw": [-5.0]}, "target_kw"),
        ({"pricing": "second_price"}, "pricing"),
        ({"scope": [1]}, "scope"),
    ],
)
def test_bad_input_names_the_field(kwargs, field):
    args = {"target_kw": [10.0], "slot": [0], "quantity_kw": [5.0], "price_yuan_per_kwh": [1.0],
            "submitted": [0], "unit": [0]}
    args.update(kwargs)
    with pytest.raises(InvalidInput) as err:
        clear(**args)
    assert err.value.violations[0].field == field


# ---------------------------------------------------------------- properties


def reference(target, slot, q, p, submitted, unit, scope, cap):
    """Plain per-(scope, slot) loop in merit order: what the kernel must reproduce."""
    n_scopes, n_slots = target.shape
    p = p + 0.0
    over = np.zeros(len(q), bool) if cap is None else p > cap
    accepted = np.zeros(len(q))
    price = np.full(target.shape, np.nan)
    for s in range(n_scopes):
        for t in range(n_slots):
            idx = np.flatnonzero((scope == s) & (slot == t) & ~over & (q > 0))
            left = target[s, t]
            for i in idx[np.lexsort((unit[idx], submitted[idx], p[idx]))]:
                take = min(q[i], left)
                if take < q[i] and take < 1e-9 * max(1.0, target[s, t]):  # the documented rounding dust
                    continue
                accepted[i], left, price[s, t] = take, left - take, p[i]
    return accepted, price, over


@st.composite
def books(draw):
    n_scopes, n_slots = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    n = draw(st.integers(0, 40))
    ints = lambda lo, hi: st.lists(st.integers(lo, hi), min_size=n, max_size=n).map(lambda v: np.array(v, dtype=np.int64))  # noqa: E731
    slot, scope = draw(ints(0, n_slots - 1)), draw(ints(0, n_scopes - 1))
    # no quantity so small that adding it to the others rounds it away (1e-300 + 1 == 1)
    q = draw(st.lists(st.one_of(st.integers(0, 60).map(float), st.floats(1e-6, 60)), min_size=n, max_size=n))
    p = draw(ints(-4, 12)) / 4.0 * draw(st.sampled_from([1.0, 1e3, 1e300]))  # few prices: many ties
    unit = draw(ints(0, 5))
    submitted = np.array(draw(st.permutations(range(n))), dtype=np.int64)
    target = np.array(draw(st.lists(st.integers(0, 200).map(float), min_size=n_scopes * n_slots,
                                     max_size=n_scopes * n_slots))).reshape(n_scopes, n_slots)
    cap = draw(st.one_of(st.none(), st.sampled_from([0.0, 1.0, 1.75])))
    return target, slot, np.array(q, dtype=float), p, submitted, unit, scope, cap


def _run(book, pricing="uniform"):
    target, slot, q, p, submitted, unit, scope, cap = book
    return clear(target, slot, q, p, submitted, unit, scope, pricing=pricing, price_cap_yuan_per_kwh=cap)


@settings(max_examples=200, deadline=None)
@given(books(), st.sampled_from([(12, 65_536), (1, 0), (2, 3)]))
def test_matches_the_plain_merit_order_loop(book, narrowing):
    # narrowing = (bucket bits, rows left for the sort): small values force many bucketing passes
    target, slot, q, p, submitted, unit, scope, cap = book
    with mock.patch.object(clearing, "_BUCKET_BITS", narrowing[0]), mock.patch.object(clearing, "_SMALL", narrowing[1]):
        r = _run(book)
    accepted, price, over = reference(target, slot, q, p, submitted, unit, scope, cap)
    np.testing.assert_allclose(r.accepted_kw, accepted, rtol=1e-9, atol=1e-6)
    np.testing.assert_array_equal(r.clearing_price_yuan_per_kwh, price)
    np.testing.assert_array_equal(r.over_cap, over)


@settings(max_examples=200, deadline=None)
@given(books(), st.sampled_from(["uniform", "pay_as_bid"]))
def test_merit_order_quantities_and_prices(book, pricing):
    target, slot, q, p, submitted, unit, scope, cap = book
    r = _run(book, pricing)
    acc = r.accepted_kw
    assert (acc >= 0).all() and (acc <= q).all()
    assert (acc[r.over_cap] == 0).all()
    valid = ~r.over_cap & (q > 0)
    offered = np.zeros(target.shape)
    np.add.at(offered, (scope[valid], slot[valid]), q[valid])
    np.testing.assert_allclose(r.cleared_kw, np.minimum(target, offered), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(r.shortfall_kw, np.maximum(target - offered, 0), atol=1e-9)
    for s, t in np.ndindex(target.shape):
        here = (scope == s) & (slot == t) & valid
        taken, left = here & (acc > 0), here & (acc < q - 1e-9)
        if taken.any() and left.any():                      # no accepted bid dearer than a rejected one
            assert p[taken].max() <= p[left].min()
        assert (here & (acc > 0) & (acc < q - 1e-9)).sum() <= 1  # at most one marginal, cut declaration
    paid = acc > 0
    assert np.isnan(r.settlement_price_yuan_per_kwh[~paid]).all()
    if pricing == "uniform":
        assert (r.settlement_price_yuan_per_kwh[paid] == r.clearing_price_yuan_per_kwh[scope, slot][paid]).all()
    else:
        assert (r.settlement_price_yuan_per_kwh[paid] == p[paid]).all()
        assert (p[paid] <= r.clearing_price_yuan_per_kwh[scope, slot][paid]).all()


@settings(max_examples=100, deadline=None)
@given(books(), st.randoms(use_true_random=False))
def test_input_order_does_not_change_the_result(book, rnd):
    target, slot, q, p, submitted, unit, scope, cap = book
    perm = np.array(rnd.sample(range(len(q)), len(q)), dtype=int)
    a = _run(book)
    b = clear(target, slot[perm], q[perm], p[perm], submitted[perm], unit[perm], scope[perm],
              price_cap_yuan_per_kwh=cap)
    # the same declarations win at the same prices; quantities agree to the rounding of the sums
    np.testing.assert_array_equal(b.accepted_kw > 0, a.accepted_kw[perm] > 0)
    np.testing.assert_allclose(b.accepted_kw, a.accepted_kw[perm], rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(b.clearing_price_yuan_per_kwh, a.clearing_price_yuan_per_kwh)
    np.testing.assert_array_equal(b.settlement_price_yuan_per_kwh, a.settlement_price_yuan_per_kwh[perm])
    again = _run(book)                                      # and the same input gives the same bits
    np.testing.assert_array_equal(again.accepted_kw, a.accepted_kw)


def test_a_large_book_matches_a_full_lexsort():
    rng = np.random.default_rng(6)
    n_units, n_slots = 3_000, 48                           # 144,000 rows: more than one bucketing pass
    n = n_units * n_slots
    unit = np.repeat(np.arange(n_units), n_slots)
    slot = np.tile(np.arange(n_slots), n_units)
    submitted = np.repeat(rng.permutation(n_units), n_slots)
    q = rng.integers(1, 50, n) * 100.0
    p = np.round(rng.uniform(0.5, 3.5, n), 3)
    target = np.bincount(slot, q) * rng.uniform(0.1, 1.2, n_slots)
    r = clear(target, slot, q, p, submitted, unit, price_cap_yuan_per_kwh=3.4)
    qv = np.where(p > 3.4, 0.0, q)
    order = np.lexsort((unit, submitted, p, slot))
    cum = np.zeros(n)
    cum[order] = np.concatenate([np.cumsum(qv[order][slot[order] == t]) for t in range(n_slots)])
    expected = np.clip(target[slot] - (cum - qv), 0.0, qv)
    np.testing.assert_array_equal(r.accepted_kw, expected)
