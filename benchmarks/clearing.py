"""Clear 10,000 declarations x 96 slots (``kernels.clearing``) against a per-slot loop in the same run.

Target (issue 6): clearing 10,000 declarations x 96 slots (960,000 rows) takes at most 100 ms.

The book: 10,000 trading units each declare a quantity (0.2-20 MW) and a price per slot,
prices in yuan/kWh to 0.001 (so equal prices are common and tie-breaking matters), 3 % of
them above the 3.5 yuan/kWh cap; submission order is a random permutation of the units. The
target per slot runs from 20 % to 110 % of what is offered, so some slots are short. Rows are
the struct-of-arrays the kernel takes (slot, quantity, price, submitted, unit), one per
(unit, slot); building them is not timed.

Timed, in the same run, on the same rows:

* ``clear`` (uniform pricing, with the cap): median and p99 of ``--runs`` calls — the value;
* the reference: a straightforward loop over the 96 slots, each a lexsort of its 10,000
  declarations by (price, submission, unit), a cumulative sum and a clip — the reference;
* for information, the same with one lexsort of all rows by (slot, price, submission, unit)
  and a segmented cumulative sum (the vectorised textbook version).

All three must give the same acceptances and clearing prices; the script checks it.

    python benchmarks/clearing.py [--quick] [--units N] [--slots T] [--runs R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import result  # noqa: E402
from openvpp.kernels.clearing import clear  # noqa: E402

TARGET_S = 0.100
CAP = 3.5


def book(n_units: int, n_slots: int, seed: int = 606) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    q = np.round(rng.uniform(200.0, 20_000.0, (n_units, n_slots)), 1)
    base = rng.uniform(0.3, 3.0, (n_units, 1))
    p = np.round(base + rng.normal(0.0, 0.15, (n_units, n_slots)), 3)
    p[rng.random((n_units, n_slots)) < 0.03] = 4.0          # above the cap
    submitted = rng.permutation(n_units).astype(np.int64)
    target = q.sum(axis=0) * rng.uniform(0.2, 1.1, n_slots)
    return q, p, submitted, target


def per_slot_loop(q, p, submitted, target):
    """The reference: one lexsort per slot."""
    n_units, n_slots = q.shape
    units = np.arange(n_units)
    accepted, price = np.zeros_like(q), np.full(n_slots, np.nan)
    for t in range(n_slots):
        qt = np.where(p[:, t] > CAP, 0.0, q[:, t])
        order = np.lexsort((units, submitted, p[:, t]))
        before = np.cumsum(qt[order]) - qt[order]
        take = np.clip(target[t] - before, 0.0, qt[order])
        accepted[order, t] = take
        if (take > 0).any():
            price[t] = p[order, t][take > 0].max()
    return accepted, price


def one_lexsort(slot, q, p, submitted, unit, target):
    """For information: all rows in one lexsort, cumulative sums per slot."""
    qv = np.where(p > CAP, 0.0, q)
    order = np.lexsort((unit, submitted, p, slot))
    qs, gs = qv[order], slot[order]
    cum = np.cumsum(qs)
    start = np.r_[0, np.flatnonzero(gs[1:] != gs[:-1]) + 1]
    cum -= np.repeat(cum[start] - qs[start], np.diff(np.r_[start, qs.size]))
    accepted = np.empty_like(q)
    accepted[order] = np.clip(target[gs] - (cum - qs), 0.0, qs)
    return accepted


def timings(fn, runs: int) -> np.ndarray:
    out = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="same book, 5 timed runs (under 30 s)")
    ap.add_argument("--units", type=int, default=10_000)
    ap.add_argument("--slots", type=int, default=96)
    ap.add_argument("--runs", type=int, default=None, help="timed calls of each (default 30; quick 5)")
    args = ap.parse_args()
    runs = args.runs or (5 if args.quick else 30)
    q, p, submitted, target = book(args.units, args.slots)
    n_units, n_slots = q.shape
    slot = np.tile(np.arange(n_slots), n_units)             # row i = (unit i // T, slot i % T)
    unit = np.repeat(np.arange(n_units), n_slots)
    rows = (slot, q.ravel(), p.ravel(), np.repeat(submitted, n_slots), unit)
    print(f"{n_units:,} declarations x {n_slots} slots = {slot.size:,} rows; {np.mean(p > CAP):.1%} over the cap")

    run = lambda: clear(target, *rows, price_cap_yuan_per_kwh=CAP)  # noqa: E731
    out = run()
    ts = timings(run, runs)
    ref_acc, ref_price = per_slot_loop(q, p, submitted, target)
    rs = timings(lambda: per_slot_loop(q, p, submitted, target), runs)
    lex_acc = one_lexsort(slot, *rows[1:], target)
    ls = timings(lambda: one_lexsort(slot, *rows[1:], target), max(3, runs // 5))
    value, reference = float(np.median(ts)), float(np.median(rs))
    diff = max(np.abs(out.accepted_kw - ref_acc.ravel()).max(), np.abs(out.accepted_kw - lex_acc).max())
    same_price = bool(np.array_equal(out.clearing_price_yuan_per_kwh[0], ref_price, equal_nan=True))
    short = int((out.shortfall_kw > 0).sum())
    print(f"clear: median {value * 1e3:.1f} ms, p99 {np.percentile(ts, 99) * 1e3:.1f} ms over {runs} "
          f"(target {TARGET_S * 1e3:.0f} ms); {short} slots short, {int(out.over_cap.sum()):,} rows over the cap")
    print(f"per-slot loop (reference): median {reference * 1e3:.1f} ms; one lexsort of all rows: "
          f"median {np.median(ls) * 1e3:.1f} ms")
    print(f"max |accepted - reference| {diff:.2e} kW (totals ~{target.mean() / 1e3:,.0f} MW per slot); "
          f"clearing prices identical: {same_price}; ratio {value / reference:.3f}")
    result("clearing", value, "s", reference, slot.size, p99_s=round(float(np.percentile(ts, 99)), 6),
           runs=runs, declarations=n_units, slots=n_slots, target_s=TARGET_S, met=bool(value <= TARGET_S),
           reference_is="per-slot numpy loop (lexsort per slot)", one_lexsort_s=round(float(np.median(ls)), 6),
           max_diff_kw=float(diff), same_prices=same_price)


if __name__ == "__main__":
    main()
