"""Subsidy math: claims on arrays, then Decimal yuan on statements.

The policy (``domain/RULES.md``, Guangzhou plan and V2G pilot; numbers from the rule set's
``[subsidy]`` section, never literals here):

* active demand response: credited kWh × min(cleared price, ``active_yuan_per_kwh``);
* reactive: credited kvarh × min(price, ``reactive_yuan_per_kvarh``);
* reserve: available kW·h × min(price, ``reserve_yuan_per_kw_h``), only for operators with a technical
  support system and minute-level regulation (the caller passes the eligibility);
* the three share ``yearly_budget_yuan``; V2G discharge kWh × ``v2g_discharge_yuan_per_kwh`` has
  its own ``v2g_yearly_budget_yuan``. When claims exceed a budget every claim is scaled by the same
  factor budget / total (*assumption*: the plan gives the cap, not the allocation rule);
* optional penalty for under-delivery: shortfall kWh below the band floor × price × a ratio;
* revenue split between operator and owner by contract: a fixed owner share, or tiers applied
  like tax brackets to the year's revenue.

Array functions return float yuan (for reports and benchmarks over millions of resources). The
functions on ``Decimal`` produce what a statement prints: amounts rounded half-up to the fen
(``core.money.round_statement``) at the statement, and a budget that is never exceeded after
rounding (:func:`prorata_fen`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal
from typing import Any, NamedTuple

import numpy as np

from openvpp.core.errors import InvalidInput, Violation
from openvpp.core.money import FEN, round_statement, yuan
from openvpp.kernels.aggregate import group_sum

ZERO = Decimal(0)


# ---------------------------------------------------------------- arrays (float yuan)


def rates(price_yuan: np.ndarray, cap_yuan: float) -> np.ndarray:
    """Subsidy rate per quantity: the cleared price, at most the rule set's cap (and never below 0)."""
    return np.clip(np.asarray(price_yuan, dtype=np.float64), 0.0, float(cap_yuan))


def claims(codes: np.ndarray, n_groups: int, quantity: np.ndarray, rate_yuan: np.ndarray) -> np.ndarray:
    """Yuan claimed per group (operator, owner...): Σ quantity × rate; (n_groups,) float."""
    q = np.nan_to_num(np.asarray(quantity, dtype=np.float64), nan=0.0)
    return group_sum(np.asarray(codes, dtype=np.int64), n_groups, q * np.asarray(rate_yuan, dtype=np.float64))[0]


def prorata_factor(total_yuan: float, budget_yuan: float) -> float:
    """1 when the claims fit the budget, else budget / total."""
    if budget_yuan < 0:
        raise InvalidInput(Violation("budget_yuan", "must be >= 0", budget_yuan))
    return 1.0 if total_yuan <= budget_yuan else float(budget_yuan) / float(total_yuan)


def prorata(claim_yuan: np.ndarray, budget_yuan: float) -> tuple[np.ndarray, float]:
    """Claims scaled to fit the budget, and the factor used (float yuan)."""
    c = np.asarray(claim_yuan, dtype=np.float64)
    if (c < 0).any():
        raise InvalidInput(Violation("claim_yuan", "claims must be >= 0", float(c.min())))
    f = prorata_factor(float(c.sum()), budget_yuan)
    return c * f, f


def penalty(shortfall: np.ndarray, price_yuan: np.ndarray, ratio: float) -> np.ndarray:
    """Penalty yuan for under-delivery: shortfall (kWh below the band floor) × price × ``ratio``."""
    return np.nan_to_num(np.asarray(shortfall, dtype=np.float64), nan=0.0) * np.asarray(price_yuan) * float(ratio)


def fixed_owner_part(revenue_yuan: np.ndarray, owner_share: np.ndarray) -> np.ndarray:
    """Owners' part of revenue under fixed-share contracts, vectorised (float yuan)."""
    return np.asarray(revenue_yuan, dtype=np.float64) * np.asarray(owner_share, dtype=np.float64)


# ---------------------------------------------------------------- statements (Decimal yuan)


class Prorata(NamedTuple):
    """Amounts paid (Decimal yuan, to the fen) and the exact factor applied (1 = within budget)."""

    paid: list[Decimal]
    factor: Decimal


def prorata_fen(claims_yuan: Sequence[Decimal], budget_yuan: Decimal) -> Prorata:
    """Scale claims pro rata to a budget and round each to the fen without exceeding the budget.

    Within budget every claim is paid, rounded half-up. Over budget each claim gets
    ``claim × budget / total`` rounded half-up; if the rounded amounts together pass the budget,
    the surplus fen are taken back one each from the amounts rounded up the most (ties: the
    earlier claim keeps its fen last, i.e. later claims give first), so the total never exceeds
    the budget and every amount stays within a fen of its exact share.
    """
    c = [yuan(x) for x in claims_yuan]
    budget = yuan(budget_yuan)
    if budget < 0:
        raise InvalidInput(Violation("budget_yuan", "must be >= 0", str(budget)))
    if any(x < 0 for x in c):
        raise InvalidInput(Violation("claims_yuan", "claims must be >= 0", [str(x) for x in c if x < 0][0]))
    total = sum(c, ZERO)
    if total <= budget:
        return Prorata([round_statement(x) for x in c], Decimal(1))
    factor = budget / total
    exact = [x * budget / total for x in c]
    paid = [round_statement(e) for e in exact]
    surplus = int((sum(paid, ZERO) - budget.quantize(FEN, rounding=ROUND_FLOOR)) / FEN)
    if surplus > 0:
        order = sorted(range(len(c)), key=lambda i: (paid[i] - exact[i], i), reverse=True)
        for i in order[:surplus]:
            paid[i] -= FEN
    return Prorata(paid, factor)


def owner_part(revenue_yuan: Decimal, scheme: str, owner_share: float | str | None = None,
               tiers: Sequence[Mapping[str, Any]] | None = None) -> Decimal:
    """Owner's exact (unrounded) part of ``revenue_yuan`` under a contract.

    ``scheme="fixed"``: revenue × owner_share. ``scheme="tiered"``: tiers
    ``[{"up_to_yuan": 10000, "owner_share": 0.6}, {"up_to_yuan": None, "owner_share": 0.5}]``
    applied like tax brackets. Negative revenue (a net penalty) is shared like a positive one
    under ``fixed`` and at the first tier's share under ``tiered``.
    """
    rev = yuan(revenue_yuan)
    if scheme == "fixed":
        if owner_share is None:
            raise InvalidInput(Violation("owner_share", "a fixed contract needs a share", owner_share))
        return rev * yuan(owner_share)
    if scheme != "tiered" or not tiers:
        raise InvalidInput(Violation("scheme", "must be fixed (with owner_share) or tiered (with tiers)", scheme))
    if rev <= 0:
        return rev * yuan(tiers[0]["owner_share"])
    total, lower = ZERO, ZERO
    for t in tiers:
        upper = None if t.get("up_to_yuan") is None else yuan(t["up_to_yuan"])
        top = rev if upper is None else min(rev, upper)
        if top > lower:
            total += (top - lower) * yuan(t["owner_share"])
        if upper is None or rev <= upper:
            break
        lower = upper
    return total


def split_fen(revenue_fen: Decimal, owner_exact: Decimal) -> tuple[Decimal, Decimal]:
    """(owner, operator) amounts printed on statements: the owner's part rounded half-up to the fen,
    the operator the rest, so the two always add up to the (fen) revenue."""
    owner = round_statement(yuan(owner_exact))
    return owner, yuan(revenue_fen) - owner


# ---------------------------------------------------------------- statements of many parties at once


def fen_half_up(yuan_values: np.ndarray, error_yuan: np.ndarray | float | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Float yuan rounded half-up (ties away from zero, as ``Decimal.ROUND_HALF_UP``) to int64 fen,
    and a mask of the values within float error of a half fen, which must be redone in ``Decimal``.

    ``error_yuan`` (scalar or per value, yuan): a bound on how far each float may be from the exact
    value it stands for (e.g. a sum of many products); values closer than that to a half fen, and
    values that are not finite, are in the mask (their fen is then meaningless). Without it the
    bound is a fixed 1e-9 fen plus 1e-13 relative."""
    y = np.asarray(yuan_values, dtype=np.float64) * 100.0
    a = np.abs(y)
    finite = np.isfinite(a)
    a = np.where(finite, a, 0.0)
    whole = np.floor(a)
    fen = np.copysign(np.floor(a + 0.5), np.where(finite, y, 0.0)).astype(np.int64)
    tol = 1e-9 + a * 1e-13
    if error_yuan is not None:
        tol = tol + np.abs(np.asarray(error_yuan, dtype=np.float64)) * 100.0 + a * 4.5e-16
    return fen, (np.abs(a - whole - 0.5) <= tol) | ~finite


def sum_error_yuan(abs_sum_yuan: np.ndarray, n_terms: np.ndarray) -> np.ndarray:
    """A bound on the float error of a sum of ``n_terms`` products (each from float inputs that stand
    for their shortest ``repr``, as ``core.money.yuan`` reads them) against the same sum in
    ``Decimal``: ``(n + 16) × 4.5e-16 × Σ|term|`` — about twice the textbook bound of recursive
    summation (n u Σ|t|, u = 1.1e-16) plus the inputs' own half-ulp and a few later products."""
    return (np.asarray(n_terms, dtype=np.float64) + 16.0) * 4.5e-16 * np.asarray(abs_sum_yuan, dtype=np.float64)


def owner_shares_fen(revenue_yuan: np.ndarray, factor: Decimal, owner_share: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Statement amounts of many fixed-share contracts at once, identical to the ``Decimal`` path.

    For each revenue group (owner × operator): revenue = claim × factor and the owner's share
    ``revenue × owner_share``, each rounded half-up to the fen, as computed by
    ``round_statement(yuan(claim) * factor)`` and ``split_fen`` — on float arrays, with the few
    values that fall within float error of a half fen recomputed in ``Decimal``.
    Returns (revenue_fen, owner_fen) int64; the operator keeps revenue_fen - owner_fen.
    """
    claim = np.asarray(revenue_yuan, dtype=np.float64)
    share = np.asarray(owner_share, dtype=np.float64)
    f = float(factor)
    rev_fen, rev_amb = fen_half_up(claim * f)
    own_fen, own_amb = fen_half_up(claim * f * share)
    for i in np.flatnonzero(rev_amb | own_amb).tolist():
        exact = yuan(float(claim[i])) * factor
        rev_fen[i] = int(round_statement(exact) / FEN)
        own_fen[i] = int(round_statement(exact * yuan(float(share[i]))) / FEN)
    return rev_fen, own_fen


#: unit roundoff of float64 (2**-53), doubled for the few roundings a bound below leaves out
_U2 = 2.0 ** -52


def group_sum_split(groups: np.ndarray, n_groups: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the sum of ``values`` (float) and a bound on its error against the exact sum of those
    floats, a bound that does not grow with the group's size the way a running sum's does.

    Each value is split into a whole multiple of a power of two ``q`` and a remainder of at most ``q``/2
    (both exact). ``q`` is chosen so that the multiples' counts, summed over every value, stay below
    2**53: their sums per group are exact in float64 in any order. Only the small remainders are summed
    with rounding error, at most (m - 1) × u × Σ|remainder| for a group of m values, plus one rounding
    of the final addition. ``groups`` (n,) are codes 0..n_groups-1. Returns (sums, error bounds), each
    (n_groups,). Non-finite values give non-finite sums (and an infinite bound)."""
    g = np.asarray(groups, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.zeros(n_groups), np.zeros(n_groups)
    total = float(np.abs(v).sum())
    if not np.isfinite(total):
        return np.bincount(g, weights=v, minlength=n_groups), np.full(n_groups, np.inf)
    if total == 0.0:
        return np.zeros(n_groups), np.zeros(n_groups)
    # 2**e >= total; the computed total is within n·u of the true Σ|v| (< a factor 2), so with
    # q = 2**(e + 1 - 52) every |v|/q sums to at most 2**52, and the roundings to whole counts add
    # at most n/2 more: all partial sums of counts are integers below 2**53, exact in float64
    q = 2.0 ** max(int(np.ceil(np.log2(total))) + 1 - 52, -1074)     # not below the least float
    whole = np.rint(v / q)                     # v / q: a power-of-two scaling, exact
    rest = v - whole * q                       # |rest| <= q / 2, exact (see the docstring)
    counts = np.bincount(g, minlength=n_groups)
    hi = np.bincount(g, weights=whole, minlength=n_groups)
    lo = np.bincount(g, weights=rest, minlength=n_groups)
    lo_abs = np.bincount(g, weights=np.abs(rest), minlength=n_groups)
    sums = hi * q + lo                          # hi * q exact; one rounding of the addition
    err = np.maximum(counts - 1, 0) * _U2 * lo_abs + _U2 * np.abs(sums)
    return sums, err
