"""Benchmark: evaluate and settle one event over 1,000,000 resources (target: at most 2 s).

    python benchmarks/evaluate_settle.py                    # kernels on arrays, 1,000,000 resources x 8 slots
    python benchmarks/evaluate_settle.py --quick            # 50,000 resources
    python benchmarks/evaluate_settle.py --service          # the product path, PostgreSQL + rollup files
    python benchmarks/evaluate_settle.py --service --quick  # 50,000 resources

``--service`` times the product path (section "Service path" below); without it, the kernels:

What is timed, from arrays already in memory (baselines, metered kW, awards):

1. evaluation (``kernels.evaluation.evaluate``): response per resource and slot, sums per trading
   unit, the 80-120 % band per unit and slot, the units' credit shared back to resources by
   positive response, penalties' shortfall;
2. settlement on arrays (``kernels.settlement``): capped rates, claims per operator, pro-rata to a
   budget the claims overrun, every resource's yuan and the revenue of each owner-operator pair;
3. statements: the operators' amounts in ``Decimal`` to the fen within the budget (``prorata_fen``)
   and every owner's revenue and contract share to the fen (``owner_shares_fen``: on arrays, equal
   to the ``Decimal`` path, which it re-runs for values within float error of a half fen).

Reference, same run: the same evaluation and settlement with pandas ``groupby``/``transform`` on
the long table (one row per resource and slot), then the same Decimal statements. The two must
agree (operator claims, owner revenues).

Service path (``--service``)
----------------------------
Inputs where production keeps them: the generated city (``_common.city``) loaded into a scratch
PostgreSQL database (``openvpp_bench_evaluate``), one peak-shaving event (Tuesday 2025-07-15,
14:00-16:00) cleared to every trading unit (operator x substation: every resource is a member)
with awards written directly, and the meters' 15-minute means as daily rollup exports
(``services.meter_files``: one Arrow file per day; synthetic loads; the days the GB/T method reads
and the event day are written). Timed, each on its own transaction:

0. not timed in the target, printed: executing the event — the operators' instructions and its
   units' members taken as dispatched (one registry query, kept as the event's members file);
1. ``services.evaluation.evaluate`` — first evaluation (members from the file taken at execution),
   with the seconds of each step (``profile``); the results stored (unit rows in
   ``evaluation_rows``, the resource x slot file with its SHA-256). Run twice: in the fresh process
   (rolled back; reported as the cold figure: on this VM memory a process touches for the first
   time costs up to ~2 s per GB), then again, committed — what a long-lived evaluation worker pays
   (it keeps the memory it frees, ``core.memory.retain_freed_memory``), the figure the product path
   counts. Each run reads through a new ``FileMeterSource``, so each matches the members against the
   files' devices again, as the first evaluation of a new event does;
2. a re-evaluation (members from the first evaluation's file);
3. the year's settlement, ``services.settlement.compute`` (statements' lines and parties), on the
   stored evaluation: owners' claims from the evaluation's resource file as columns, owner parties
   as one hashed Arrow file (``--settle-max`` skips it above a size).

Reference, same run: the same evaluation from the same arrays in memory (baseline and evaluation
kernels only, what the service adds nothing to), checked against what the service stored (credit
per operator).
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import result  # noqa: E402
from openvpp.core import rules  # noqa: E402
from openvpp.core.money import round_statement, yuan  # noqa: E402
from openvpp.kernels import evaluation as kev  # noqa: E402
from openvpp.kernels import settlement as kset  # noqa: E402
from openvpp.kernels.aggregate import group_sum  # noqa: E402

SLOTS = 8
N_OPERATORS = 60


def make(n: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    n_units = max(N_OPERATORS, n // 400 // N_OPERATORS * N_OPERATORS)
    n_owners = max(10, n // 5)
    owner = rng.integers(0, n_owners, n)
    unit_op = np.arange(n_units) % N_OPERATORS
    # each owner contracts with one operator; its resources sit in that operator's units
    unit = owner % N_OPERATORS + N_OPERATORS * rng.integers(0, n_units // N_OPERATORS, n)
    cap = rng.lognormal(2.0, 0.8, n)                                     # kW, median ~7
    base = (cap * rng.uniform(2.0, 4.0, n))[:, None] * rng.uniform(0.95, 1.05, (n, SLOTS))
    resp = (cap * rng.uniform(-0.1, 1.4, n))[:, None] * rng.uniform(0.8, 1.2, (n, SLOTS))
    met = base - resp
    met.ravel()[rng.integers(0, met.size, met.size // 1000)] = np.nan   # 0.1 % not measured
    unit_cap = np.bincount(unit, weights=cap, minlength=n_units)
    cleared = unit_cap[:, None] * rng.uniform(0.6, 1.0, (n_units, SLOTS))
    price = rng.uniform(2.5, 4.0, (n_units, SLOTS))                     # some above the 3.5 cap
    # revenue groups: (owner, operator) pairs
    pair_key = owner.astype(np.int64) * N_OPERATORS + unit_op[unit]
    pairs, pair = np.unique(pair_key, return_inverse=True)
    share = rng.uniform(0.4, 0.8, pairs.size).round(2)
    return {"unit": unit, "cap": cap, "base": base, "met": met, "cleared": cleared, "price": price,
            "unit_op": unit_op, "pair": pair, "n_pairs": pairs.size, "share": share, "n_units": n_units}


def statements(op_claims: np.ndarray, pair_rev: np.ndarray, share: np.ndarray, budget: Decimal) -> tuple:
    """Decimal stage: operators to the fen within the budget; each owner's revenue and contract share
    rounded half-up to the fen (on arrays, identical to the Decimal path: ``kset.owner_shares_fen``)."""
    claims = [round_statement(yuan(float(x))) for x in op_claims]
    pr = kset.prorata_fen(claims, budget)
    _, owner_fen = kset.owner_shares_fen(pair_rev, pr.factor, share)
    return pr, owner_fen


def ours(d: dict, low: float, high: float, cap_yuan: float, budget: Decimal) -> dict:
    t0 = time.perf_counter()
    ev = kev.evaluate(d["base"], d["met"], d["unit"], d["cleared"], "down", low, high, capability_kw=d["cap"])
    rate = kset.rates(d["price"], cap_yuan)                                      # (u, s)
    unit_kwh = kev.energy(ev.unit.credited_kw)
    op_claims = kset.claims(np.repeat(d["unit_op"], SLOTS), N_OPERATORS, unit_kwh.ravel(), rate.ravel())
    _, factor = kset.prorata(op_claims, float(budget))
    res_yuan = np.einsum("ij,ij->i", ev.credited_kw, rate[d["unit"]]) * kev.energy(1.0)
    pair_rev = group_sum(d["pair"], d["n_pairs"], res_yuan)[0]
    shortfall = kev.energy(ev.unit.shortfall_kw)
    t1 = time.perf_counter()
    pr, owners = statements(op_claims, pair_rev, d["share"], budget)
    t2 = time.perf_counter()
    return {"arrays_s": t1 - t0, "decimal_s": t2 - t1, "total_s": t2 - t0, "op_claims": op_claims,
            "pair_rev": pair_rev, "paid": pr.paid, "owners": owners, "factor": factor,
            "shortfall_kwh": float(shortfall.sum())}


def with_pandas(d: dict, low: float, high: float, cap_yuan: float, budget: Decimal) -> dict:
    t0 = time.perf_counter()
    n = d["base"].shape[0]
    df = pd.DataFrame({"unit": np.repeat(d["unit"], SLOTS), "slot": np.tile(np.arange(SLOTS), n),
                       "pair": np.repeat(d["pair"], SLOTS), "base": d["base"].ravel(), "met": d["met"].ravel()})
    df["resp"] = (df["base"] - df["met"]).fillna(0.0)
    df["pos"] = df["resp"].clip(lower=0.0)
    keys = ["unit", "slot"]
    units = df.groupby(keys)[["resp"]].sum()
    idx = units.index
    cleared = d["cleared"][idx.get_level_values(0), idx.get_level_values(1)]
    price = d["price"][idx.get_level_values(0), idx.get_level_values(1)]
    ratio = units["resp"].to_numpy() / cleared
    valid = ratio >= low
    units["credited"] = np.where(valid, np.minimum(units["resp"].to_numpy(), high * cleared), 0.0)
    units["rate"] = np.clip(price, 0.0, cap_yuan)
    units["op"] = d["unit_op"][idx.get_level_values(0)]
    units["yuan"] = units["credited"] * 0.25 * units["rate"]
    op_claims = units.groupby("op")["yuan"].sum().reindex(range(N_OPERATORS), fill_value=0.0).to_numpy()
    factor = min(1.0, float(budget) / op_claims.sum())
    df["pos_tot"] = df.groupby(keys)["pos"].transform("sum")
    df = df.join(units[["credited", "rate"]], on=keys)
    share = np.where(df["pos_tot"] > 0, df["pos"] / df["pos_tot"].where(df["pos_tot"] > 0, 1.0), 0.0)
    df["yuan"] = share * df["credited"] * 0.25 * df["rate"]
    pair_rev = df.groupby("pair")["yuan"].sum().reindex(range(d["n_pairs"]), fill_value=0.0).to_numpy()
    t1 = time.perf_counter()
    pr, owners = statements(op_claims, pair_rev, d["share"], budget)
    t2 = time.perf_counter()
    return {"arrays_s": t1 - t0, "decimal_s": t2 - t1, "total_s": t2 - t0, "op_claims": op_claims,
            "pair_rev": pair_rev, "paid": pr.paid, "owners": owners, "factor": factor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50,000 resources")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--service", action="store_true", help="time the product path (PostgreSQL, rollup files)")
    ap.add_argument("--settle-max", type=int, default=10_000_000,
                    help="--service: run the yearly settlement service only up to this many resources")
    ap.add_argument("--keep", action="store_true", help="--service: keep the database and files")
    args = ap.parse_args()
    n = args.size or (50_000 if args.quick else 1_000_000)
    if args.service:
        from evaluate_service import service
        service(n, args.settle_max, args.keep)
        return
    rs = rules.load()
    low, high = float(rs.section("evaluation")["valid_band_low"]), float(rs.section("evaluation")["valid_band_high"])
    cap_yuan = float(rs.section("subsidy")["active_yuan_per_kwh"])
    t0 = time.perf_counter()
    d = make(n)
    print(f"data: {n:,} resources x {SLOTS} slots, {d['n_units']:,} trading units, {N_OPERATORS} operators, "
          f"{d['n_pairs']:,} owner-operator pairs (made in {time.perf_counter() - t0:.1f} s)")
    # a budget the claims overrun (a fifth of them), so pro rata is exercised
    probe = ours(d, low, high, cap_yuan, Decimal("1e15"))      # the first call also pays for fresh memory
    budget = Decimal(int(probe["op_claims"].sum() / 5))
    runs = [ours(d, low, high, cap_yuan, budget) for _ in range(args.repeat)]
    best = sorted(runs, key=lambda r: r["total_s"])[len(runs) // 2]
    print(f"ours: first call {probe['total_s']:.3f} s, then {best['total_s']:.3f} s (median of {args.repeat}) = "
          f"arrays {best['arrays_s']:.3f} s "
          f"+ Decimal statements {best['decimal_s']:.3f} s; pro-rata factor {best['factor']:.4f}, "
          f"paid {sum(best['paid'])} of budget {budget}")
    ref = with_pandas(d, low, high, cap_yuan, budget)
    print(f"pandas groupby reference: {ref['total_s']:.3f} s = arrays {ref['arrays_s']:.3f} s "
          f"+ Decimal statements {ref['decimal_s']:.3f} s")
    claims_rel = float(np.max(np.abs(ref["op_claims"] - best["op_claims"]) / np.maximum(best["op_claims"], 1)))
    rev_diff = float(np.max(np.abs(ref["pair_rev"] - best["pair_rev"])))
    same_paid = ref["paid"] == best["paid"]
    owners_diff = int((ref["owners"] != best["owners"]).sum())
    print(f"agreement: operator claims max rel diff {claims_rel:.1e}, owner revenue max diff {rev_diff:.1e} yuan, "
          f"operator amounts identical: {same_paid}, owner shares differing by a fen: {owners_diff}")
    assert claims_rel < 1e-9 and rev_diff < 1e-6, "reference and kernels disagree"
    result("evaluate_settle", best["total_s"], "s", ref["total_s"], n, slots=SLOTS, units=d["n_units"],
           operators=N_OPERATORS, owner_pairs=d["n_pairs"], first_call_s=round(probe["total_s"], 4),
           arrays_s=round(best["arrays_s"], 4),
           decimal_s=round(best["decimal_s"], 4), reference_is="pandas groupby of the same evaluation + the same "
           "Decimal statements", target_s=2.0)


if __name__ == "__main__":
    main()
