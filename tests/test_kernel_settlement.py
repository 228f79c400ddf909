"""kernels.settlement: rates, pro-rata budget scaling, contracts' revenue split; Decimal statements."""

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.core.errors import InvalidInput
from openvpp.core.money import round_statement, yuan
from openvpp.kernels.settlement import (
    claims,
    fen_half_up,
    fixed_owner_part,
    owner_part,
    owner_shares_fen,
    penalty,
    prorata,
    prorata_fen,
    rates,
    split_fen,
)

D = Decimal
fen = st.integers(0, 10**9).map(lambda x: D(x) / 100)


def test_rates_are_capped_and_claims_group_per_operator():
    r = rates(np.array([3.0, 4.0, -1.0]), 3.5)
    assert r.tolist() == [3.0, 3.5, 0.0]
    assert claims(np.array([0, 1, 1]), 2, np.array([100.0, 10.0, 5.0]), r).tolist() == [300.0, 35.0]
    assert penalty(np.array([10.0]), np.array([3.0]), 1.5).tolist() == [45.0]
    assert fixed_owner_part(np.array([100.0]), np.array([0.7])).tolist() == pytest.approx([70.0])


def test_budget_cap_scales_all_claims_pro_rata():
    paid, factor = prorata(np.array([4650.0, 3000.0, 4500.0]), 10_000.0)
    assert factor == pytest.approx(10_000 / 12_150)
    assert paid.sum() == pytest.approx(10_000.0)
    within, f1 = prorata(np.array([1.0, 2.0]), 10.0)
    assert f1 == 1.0 and within.tolist() == [1.0, 2.0]
    out = prorata_fen([D("4650"), D("3000"), D("4500")], D("10000"))
    assert out.paid == [D("3827.16"), D("2469.14"), D("3703.70")]
    with pytest.raises(InvalidInput):
        prorata_fen([D("-1")], D("10"))


def test_rounding_surplus_is_taken_back_from_the_most_rounded_up():
    # three equal claims of 100 over a budget of 100.00: 33.333.. each; half-up gives 99.99 (no surplus)
    assert prorata_fen([D(100), D(100), D(100)], D(100)).paid == [D("33.33")] * 3
    # 2 x 0.005 exact shares round up to 0.01 each (0.02 > budget 0.01): one fen is taken back
    out = prorata_fen([D(1), D(1)], D("0.01"))
    assert sum(out.paid) == D("0.01") and sorted(out.paid) == [D("0.00"), D("0.01")]


def test_tiered_contract_applies_like_brackets():
    tiers = [{"up_to_yuan": 1000, "owner_share": 0.6}, {"up_to_yuan": None, "owner_share": 0.5}]
    assert owner_part(D("1842.10"), "tiered", tiers=tiers) == D("600.0") + D("842.10") * D("0.5")
    assert owner_part(D("800"), "tiered", tiers=tiers) == D("480.0")
    assert owner_part(D("100"), "fixed", 0.7) == D("70.0")
    with pytest.raises(InvalidInput):
        owner_part(D("1"), "fixed")


@settings(max_examples=200, deadline=None)
@given(st.lists(fen, min_size=1, max_size=12), fen)
def test_prorata_never_exceeds_the_budget_and_preserves_proportions(cl, budget):
    out = prorata_fen(cl, budget)
    total = sum(cl, D(0))
    assert sum(out.paid, D(0)) <= max(budget, total)
    if total > budget:
        assert sum(out.paid, D(0)) <= budget
        assert budget - sum(out.paid, D(0)) < D("0.01") * len(cl)
    for c, p in zip(cl, out.paid, strict=True):
        exact = c * out.factor
        assert abs(p - exact) < D("0.01")          # within a fen of its exact share
        assert p <= c and p >= 0
    # proportions: a larger claim is never paid less than a smaller one
    order = sorted(range(len(cl)), key=lambda i: cl[i])
    paid_sorted = [out.paid[i] for i in order]
    assert all(b >= a - D("0.01") for a, b in zip(paid_sorted, paid_sorted[1:], strict=False))


@settings(max_examples=200, deadline=None)
@given(fen, st.sampled_from(["fixed", "tiered"]), st.floats(0, 1), st.lists(
    st.tuples(st.integers(1, 10**6), st.floats(0, 1)), min_size=1, max_size=4))
def test_owner_and_operator_shares_sum_to_the_revenue(revenue, scheme, share, raw_tiers):
    caps = sorted({c for c, _ in raw_tiers})
    tiers = [{"up_to_yuan": c, "owner_share": s} for c, (_, s) in zip(caps, raw_tiers, strict=False)]
    tiers.append({"up_to_yuan": None, "owner_share": raw_tiers[-1][1]})
    exact = owner_part(revenue, scheme, share, tiers)
    owner, operator = split_fen(revenue, exact)
    assert owner + operator == revenue
    assert owner == owner.quantize(D("0.01")) and operator == operator.quantize(D("0.01"))
    assert D(0) <= owner <= revenue


def test_array_rounding_matches_decimal_half_up_including_ties():
    fen, amb = fen_half_up(np.array([0.005, 1.005, -0.005, 2.675, 1234.5649999, 0.0]))
    assert amb[:4].all() and not amb[4:].any()
    assert fen[4:].tolist() == [123456, 0]
    rev, own = owner_shares_fen(np.array([1.005, 2550.0, 2100.0]), D(10000) / D(11400), np.array([1.0, 0.7, 0.5]))
    # the Decimal path: 1.005 x f = 0.8815789.. → 0.88; 2550 x f = 2236.842.. → 2236.84, x 0.7 → 1565.79
    assert rev.tolist() == [88, 223684, 184211] and own.tolist() == [88, 156579, 92105]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1e7, allow_nan=False),
                          st.integers(0, 10**9).map(lambda k: k / 100 + 0.005)), min_size=1, max_size=20),
       st.fractions(0, 1).map(lambda f: D(f.numerator) / D(f.denominator)),
       st.lists(st.sampled_from([0.4, 0.5, 0.55, 0.6, 0.7, 1.0]), min_size=20, max_size=20))
def test_owner_shares_on_arrays_equal_the_decimal_statements(claims_yuan, factor, shares):
    share = np.array(shares[:len(claims_yuan)])
    rev, own = owner_shares_fen(np.array(claims_yuan), factor, share)
    for i, c in enumerate(claims_yuan):
        exact = yuan(c) * factor
        assert rev[i] == int(round_statement(exact) * 100)
        assert own[i] == int(round_statement(owner_part(exact, "fixed", float(share[i]))) * 100)
