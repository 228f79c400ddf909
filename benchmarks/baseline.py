"""Benchmark: GB/T working-day baseline over a city's meters.

    python benchmarks/baseline.py            # 1,000,000 meters x 10 days x 96 slots, float32 (~3.8 GB)
    python benchmarks/baseline.py --quick    # 50,000 meters

Times :func:`openvpp.kernels.baseline.workday_mean` (a first call, then the
median of 3 more: the first pays for fresh output memory) and, in the
same run, a naive reference: candidate days chosen by a plain Python loop,
then ``np.nanmean`` over a fancy-indexed gather, meter block by meter block
(100,000 at a time, so the gather fits in memory). Prints both and ends with
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np

from openvpp.core.calendar import day_kinds
from openvpp.kernels.baseline import workday_mean

DAYS = np.arange(np.datetime64("2025-09-17"), np.datetime64("2025-09-27"))  # Wed 17 .. Fri 26 Sept
EVENT = 9  # Friday 2025-09-26
N_DAYS, SKIP = 5, 2


def naive(load: np.ndarray, kinds: np.ndarray, excluded: np.ndarray, event: int, block: int) -> np.ndarray:
    chosen = []
    for d in range(event - SKIP, -1, -1):
        if kinds[d] == 0 and not excluded[d]:
            chosen.append(d)
        if len(chosen) == N_DAYS:
            break
    out = np.empty((load.shape[0], load.shape[2]), dtype=load.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for lo in range(0, load.shape[0], block):
            out[lo : lo + block] = np.nanmean(load[lo : lo + block][:, chosen, :], axis=1)
    return out


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(first call, median of ``repeat`` further calls, last result).

    The first call pays for touching fresh memory for its output (in a VM that
    can cost more than the computation); the median is the steady state.
    """
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        result = None
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), result


def available_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50,000 meters instead of 1,000,000")
    parser.add_argument("--meters", type=int, default=None, help="override the number of meters")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n_meters = args.meters or (50_000 if args.quick else 1_000_000)
    need_gib = n_meters * len(DAYS) * 96 * 4 * 1.25 / 2**30 + 0.5
    if need_gib > available_gib():
        raise SystemExit(f"needs ~{need_gib:.1f} GiB, only {available_gib():.1f} GiB available; use --meters")

    rng = np.random.default_rng(2025)
    t0 = time.perf_counter()
    load = np.empty((n_meters, len(DAYS), 96), dtype=np.float32)
    rng.random(out=load, dtype=np.float32)
    load *= 100.0
    flat = load.reshape(-1)
    flat[rng.integers(0, flat.size, flat.size // 10_000)] = np.nan  # 0.01 % of readings missing
    print(
        f"data: {n_meters:,} meters x {len(DAYS)} days x 96 slots float32 = {load.nbytes / 2**30:.2f} GiB "
        f"(made in {time.perf_counter() - t0:.1f} s)"
    )

    kinds = day_kinds(DAYS)
    excluded = np.zeros(len(DAYS), dtype=bool)
    excluded[5] = True  # Monday 22 Sept: an earlier event day
    first, value, res = timed(lambda: workday_mean(load, kinds, excluded, EVENT, N_DAYS, SKIP), args.repeat)
    print(
        f"workday_mean (shared calendar + exclusions): first call {first:.3f} s, then median {value:.3f} s; "
        f"days {np.flatnonzero(res.selected[0]).tolist()}"
    )

    per_meter = rng.random((n_meters, len(DAYS))) < 0.1
    _, per_meter_s, _ = timed(lambda: workday_mean(load, kinds, per_meter, EVENT, N_DAYS, SKIP), 1)
    print(f"workday_mean (per-meter exclusions, 10 % of days): {per_meter_s:.3f} s")

    ref_first, reference, ref = timed(lambda: naive(load, kinds, excluded, EVENT, 100_000), args.repeat)
    print(
        "naive reference (loop selection + nanmean over gather): "
        f"first call {ref_first:.3f} s, then median {reference:.3f} s"
    )
    diff = np.nanmax(np.abs(ref.astype(np.float64) - res.power_kw))
    same_nan = bool(np.array_equal(np.isnan(ref), np.isnan(res.power_kw)))
    print(
        f"max |fast - reference| = {diff:.2e} kW, same NaN pattern: {same_nan}; ratio {value / reference:.3f}"
    )
    print(
        json.dumps(
            {
                "name": "baseline_workday",
                "value": round(value, 4),
                "unit": "s",
                "reference": round(reference, 4),
                "ratio": round(value / reference, 4),
                "size": n_meters,
            }
        )
    )


if __name__ == "__main__":
    main()
