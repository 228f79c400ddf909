"""The float path of the settlement's owner claims (``kernels.settlement.sum_error_yuan`` and
``fen_half_up`` with an error bound): a float sum of many quantity x rate products rounds to the same fen
as the Decimal sum of the same values (``core.money.yuan``: shortest repr) whenever it is not flagged,
and values at a half fen are flagged."""

from decimal import Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.core.money import FEN, round_statement, yuan
from openvpp.kernels.settlement import fen_half_up, group_sum_split, sum_error_yuan

# quantities: any float, or a multiple of a half fen (sums land on a half fen: the hard case)
quantity = st.one_of(st.floats(-1e5, 1e5, allow_nan=False, allow_infinity=False),
                     st.integers(-10**7, 10**7).map(lambda k: k / 200))
rate = st.one_of(st.floats(0, 5, allow_nan=False), st.sampled_from([1.0, 0.5, 3.5, 0.12, 0.453]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(quantity, rate), min_size=1, max_size=300), st.sampled_from([1.0, 0.3, 10000 / 11400]),
       st.sampled_from(["running", "fsum"]))
def test_float_sum_outside_its_bound_rounds_like_the_decimal_sum(terms, factor, how):
    """A running sum (the owners' groups before group_sum_split) or math.fsum (a unit line's slot terms)."""
    import math

    q = np.array([t[0] for t in terms])
    r = np.array([t[1] for t in terms])
    prod = q * r
    total = (float(np.bincount(np.zeros(len(terms), dtype=np.int64), weights=prod)[0]) if how == "running"
             else math.fsum(prod.tolist()))
    f = total * factor
    err = sum_error_yuan(np.array([np.abs(prod).sum()]), np.array([2.0 * len(terms)]))
    got, unsure = fen_half_up(np.array([f]), err)
    exact = sum((yuan(float(a)) * yuan(float(b)) for a, b in terms), Decimal(0)) * Decimal(factor)
    if not unsure[0]:
        assert got[0] == int(round_statement(exact) / FEN), (f, exact)


def test_half_fen_sums_and_non_finite_values_are_flagged():
    prod = np.array([0.1, 0.2, 0.005])           # 0.305 yuan exactly in Decimal, 0.30500000000000005 in float
    err = sum_error_yuan(np.array([np.abs(prod).sum()]), np.array([3.0]))
    _, unsure = fen_half_up(np.array([prod.sum()]), err)
    assert unsure.tolist() == [True]
    fen, unsure = fen_half_up(np.array([0.3049, 12.344, np.nan, np.inf]), np.array([1e-9] * 4))
    assert unsure.tolist() == [False, False, True, True] and fen[:2].tolist() == [30, 1234]


def test_the_bound_is_tight_enough_that_ordinary_sums_are_not_flagged():
    """The bound must not be so wide that everything goes to the slow exact path: 300 products of about
    1,000 yuan whose sum is 0.4 fen from a half fen are settled on the float path."""
    prod = np.full(300, 1000.0)
    prod[0] += 0.0009                              # the sum: 300,000.0009 yuan = 30,000,000.09 fen
    err = sum_error_yuan(np.array([np.abs(prod).sum()]), np.array([2.0 * prod.size]))
    fen, unsure = fen_half_up(np.array([float(np.bincount(np.zeros(300, dtype=np.int64), weights=prod)[0])]), err)
    assert unsure.tolist() == [False] and fen.tolist() == [30_000_000]


# ---------------------------------------------------------------- group sums in two parts

values = st.one_of(st.floats(-1e7, 1e7, allow_nan=False, allow_infinity=False),
                   st.floats(-1e-6, 1e-6, allow_nan=False), st.integers(-10**9, 10**9).map(lambda k: k / 200))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(values, st.integers(0, 4)), min_size=1, max_size=400))
def test_group_sum_split_is_within_its_bound_of_the_exact_sum(rows):
    """Every group's sum is within the returned bound of the exact (rational) sum of its floats."""
    from fractions import Fraction

    v = np.array([r[0] for r in rows])
    g = np.array([r[1] for r in rows], dtype=np.int64)
    sums, err = group_sum_split(g, 5, v)
    for k in range(5):
        exact = sum((Fraction(float(x)) for x, gg in rows if gg == k), Fraction(0))
        assert abs(Fraction(float(sums[k])) - exact) <= Fraction(float(err[k])), (k, sums[k], exact, err[k])


def test_group_sum_split_bound_does_not_grow_with_the_group():
    """120,000 claims of a big owner (the 1M benchmark's largest groups), each a few yuan with 17 digits:
    the running sum's bound is 0.05 fen, so a total within that of a half fen (one in ten) must be redone
    in Decimal; the two-part sum's bound is a millionth of a fen, and it agrees with math.fsum."""
    import math

    rng = np.random.default_rng(3)
    v = rng.uniform(0.0, 10.0, 120_000)
    g = np.zeros(v.size, dtype=np.int64)
    sums, err = group_sum_split(g, 1, v)
    running = sum_error_yuan(np.array([np.abs(v).sum()]), np.array([2.0 * 8 * v.size]))
    assert running[0] > 5e-4                               # 0.05 fen: a ~10 % chance to redo
    assert err[0] < 1e-8                                   # a millionth of a fen
    assert abs(sums[0] - math.fsum(v.tolist())) <= err[0]


def test_group_sum_split_non_finite_and_empty():
    sums, err = group_sum_split(np.array([0, 1]), 2, np.array([np.inf, 1.0]))
    assert np.isinf(err).all()
    sums, err = group_sum_split(np.zeros(0, dtype=np.int64), 3, np.zeros(0))
    assert sums.tolist() == [0.0] * 3 and err.tolist() == [0.0] * 3
    sums, err = group_sum_split(np.array([0, 0, 2]), 3, np.array([0.0, 0.0, 0.0]))
    assert sums.tolist() == [0.0] * 3
