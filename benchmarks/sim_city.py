"""Benchmark: generate the synthetic Guangzhou city at 1,000,000 resources (``--quick``: 50,000).

    python benchmarks/sim_city.py [--quick] [--seed N] [--keep DIR]

Prints the time of each stage and ends with one JSON line
``{"name": "sim_city", "value": seconds, "unit": "s", "reference": 60, "ratio": value/60, "size": n}``.
The reference is the 60 s target for one million resources on a 2-core
machine; it is a fixed target, not a competing implementation measured in the
same run, so a ratio below 1 means the target is met.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from openvpp.sim.city import generate_city

REFERENCE_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 resources instead of 1,000,000")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--keep", type=Path, help="write the city here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    n = 50_000 if args.quick else 1_000_000

    stages: list[tuple[str, float]] = []
    t0 = time.perf_counter()

    def progress(stage: str, fraction: float) -> None:
        if not stages or stages[-1][0] != stage:
            stages.append((stage, time.perf_counter() - t0))

    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "city"
        start = time.perf_counter()
        summary = generate_city(out, n, args.seed, progress=progress)
        seconds = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6

    for (stage, at), (_, nxt) in zip(stages, stages[1:] + [("end", seconds)], strict=True):
        print(f"  {stage:<12s} {nxt - at:6.2f} s")
    print(f"sim_city: {n:,} resources, {summary.rows['sites.csv']:,} sites, "
          f"{summary.grid_levels['transformer_area']:,} transformer areas, {size_mb:,.0f} MB in {seconds:.2f} s")
    print(json.dumps({"name": "sim_city", "value": round(seconds, 3), "unit": "s", "reference": REFERENCE_S,
                      "ratio": round(seconds / REFERENCE_S, 4), "size": n}))


if __name__ == "__main__":
    main()
