"""Re-evaluate every pool of a 1,000,000-resource city after 1,000 resource changes.

Target (issue 4): at most 1 s. The product path is ``services.pools.PoolEngine.apply``: the
1,000 changed rows are written into the in-memory registry arrays and every pool's mask and
totals are corrected by subtracting the old contributions and adding the new ones (O(changes x
pools)), then the totals of every pool are read. The reference, measured in the same run on the
same state, is a full re-evaluation of every pool (``PoolEngine.recompute``: the member mask and
the totals of each pool over all resources); the run also checks that both give the same totals.

City: the generated city (``benchmarks/_common.city``), read from its CSV files into
``RegistryArrays`` (the same struct-of-arrays ``registry_arrays.load`` reads from the database;
the database is not what is measured here). The generated city holds no verification results, so
the benchmark adds a seeded synthetic verification to 40 % of the resources (grade A/B/C with
verified kW and latency; a third of the C grades flagged), so that the reserve pools have members.

Pools: the five default presets (peak shaving, valley filling, emergency response, reactive
support, reserve) at city level and in each of the 11 districts, plus local congestion at 10
feeders of the Baiyun and Haizhu pilots: 70 pools.

A change set: 1,000 distinct resources, each with new declared down/up kW and latency, state
(2 % retired), verification (grade, verified kW and latency), operator (5 % transferred), flag
(3 %) and transformer area (1 % moved); every column is given for every row (the worst case).

    python benchmarks/pools.py [--quick] [--size N] [--changes K] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import city, result  # noqa: E402
from openvpp.model.pools import Pool, load_presets, preset_rules  # noqa: E402
from openvpp.services.pools import PoolEngine  # noqa: E402
from openvpp.services.registry_arrays import RegistryArrays  # noqa: E402

TARGET_S = 1.0
GRADES = np.array(["A", "B", "C"], dtype=object)


def read_city(city_dir: Path, seed: int) -> tuple[RegistryArrays, np.ndarray, list[str], dict[str, str]]:
    """Registry arrays of the city's resources with synthetic verification; flags; admitted operators;
    the level of every district and feeder node."""
    grid = pacsv.read_csv(city_dir / "grid.csv", convert_options=pacsv.ConvertOptions(
        include_columns=["node_id", "level", "parent_id"], column_types={"parent_id": pa.string()}))
    parent = dict(zip(grid.column("node_id").to_pylist(), grid.column("parent_id").to_pylist(), strict=True))
    level = dict(zip(grid.column("node_id").to_pylist(), grid.column("level").to_pylist(), strict=True))
    cols = ["resource_id", "resource_type", "operator_id", "owner_id", "ta_id", "capacity_kw", "latency_s",
            "response_mode", "adjustable_up_kw", "adjustable_down_kw", "adjustable_duration_h", "control_protocol"]
    t = pacsv.read_csv(city_dir / "resources.csv", convert_options=pacsv.ConvertOptions(
        include_columns=cols, strings_can_be_null=True, column_types={"operator_id": pa.string()}))
    t = t.sort_by("resource_id")
    ta = t.column("ta_id").to_pylist()
    feeder = [parent[x] for x in ta]
    substation = [parent[x] for x in feeder]
    district = [parent[x] for x in substation]
    n = t.num_rows
    rng = np.random.default_rng(seed)
    down = t.column("adjustable_down_kw").to_numpy()
    up = t.column("adjustable_up_kw").to_numpy()
    lat = t.column("latency_s").to_numpy()
    verified = rng.random(n) < 0.4
    g = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    ratio = np.choose(g, [rng.uniform(0.9, 1.05, n), rng.uniform(0.7, 0.9, n), rng.uniform(0.3, 0.7, n)])
    nan = np.full(n, np.nan)
    t = (t.append_column("district_id", pa.array(district)).append_column("substation_id", pa.array(substation))
          .append_column("feeder_id", pa.array(feeder))
          .append_column("state", pa.array(np.full(n, "active", dtype=object)))
          .append_column("verified_grade", pa.array(np.where(verified, GRADES[g], None), pa.string()))
          .append_column("verified_up_kw", pa.array(np.where(verified, up * ratio, nan)))
          .append_column("verified_down_kw", pa.array(np.where(verified, down * ratio, nan)))
          .append_column("verified_latency_s", pa.array(np.where(verified, lat * rng.uniform(0.8, 1.5, n), nan))))
    reg = RegistryArrays.from_arrow(t)
    flagged = verified & (g == 2) & (rng.random(n) < 1 / 3)
    ops = pacsv.read_csv(city_dir / "operators.csv")
    admitted = pc.filter(ops.column("operator_id"), pc.equal(ops.column("state"), "admitted")).to_pylist()
    levels = {k: v for k, v in level.items() if v in ("city", "district", "feeder")}
    return reg, flagged, admitted, levels


def make_pools(levels: dict[str, str]) -> list[Pool]:
    presets = load_presets()
    city_id = next(k for k, v in levels.items() if v == "city")
    districts = sorted(k for k, v in levels.items() if v == "district")
    out = []
    for scenario, preset in presets.items():
        if not preset.default:
            continue
        for node in [city_id, *districts]:
            rules = preset_rules(scenario, {} if node == city_id else {"node_id": node})
            out.append(Pool(pool_id=f"{scenario}:{node}", name=f"{preset.name} {node}", scenario=scenario,
                            rules=rules))
    feeders = sorted(k for k, v in levels.items() if v == "feeder")
    pilots = [f for f in feeders if f.startswith("GZ-BY-")][:5] + [f for f in feeders if f.startswith("GZ-HZ-")][:5]
    for f in pilots:
        out.append(Pool(pool_id=f"local_congestion:{f}", name=f"Local congestion {f}", scenario="local_congestion",
                        rules=preset_rules("local_congestion", {"node_id": f})))
    return out


def change_set(reg: RegistryArrays, rng: np.random.Generator, k: int) -> tuple[list[str], dict[str, list]]:
    idx = rng.choice(reg.n, size=k, replace=False)
    v, c, cats = reg.values, reg.codes, reg.categories

    def label(col: str, i: np.ndarray) -> list:
        return [cats[col][x] if x >= 0 else None for x in c[col][i]]

    cap = v["capacity_kw"][idx]
    ops = [o for o in cats["operator_id"] if o]
    tas = cats["ta_id"]
    graded = rng.random(k) < 0.5
    g = rng.choice(3, k)
    ratio = np.choose(g, [rng.uniform(0.9, 1.05, k), rng.uniform(0.7, 0.9, k), rng.uniform(0.3, 0.7, k)])
    down = np.minimum(cap, v["adjustable_down_kw"][idx] * rng.uniform(0.5, 1.5, k))
    up = np.minimum(cap, v["adjustable_up_kw"][idx] * rng.uniform(0.5, 1.5, k))
    lat = v["latency_s"][idx] * rng.uniform(0.5, 1.5, k)
    operator = label("operator_id", idx)
    ta = label("ta_id", idx)
    for j in np.flatnonzero(rng.random(k) < 0.05):
        operator[j] = ops[rng.integers(len(ops))]
    for j in np.flatnonzero(rng.random(k) < 0.01):
        ta[j] = tas[rng.integers(len(tas))]
    changes = {
        "adjustable_down_kw": down, "adjustable_up_kw": up, "latency_s": lat,
        "state": np.where(rng.random(k) < 0.02, "retired", "active").tolist(),
        "verified_grade": [GRADES[x] if ok else None for x, ok in zip(g, graded, strict=True)],
        "verified_down_kw": np.where(graded, down * ratio, np.nan),
        "verified_up_kw": np.where(graded, up * ratio, np.nan),
        "verified_latency_s": np.where(graded, lat * 1.1, np.nan),
        "operator_id": operator, "flagged": rng.random(k) < 0.03, "ta_id": ta,
    }
    return [str(r) for r in reg.resource_id[idx]], changes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 resources (under 30 s)")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5, help="change sets, each timed (median)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    n = args.size or (50_000 if args.quick else 1_000_000)
    city_dir = city(n)
    t0 = time.perf_counter()
    reg, flagged, admitted, levels = read_city(city_dir, args.seed)
    print(f"read {reg.n:,} resources into registry arrays in {time.perf_counter() - t0:.1f} s")
    pools = make_pools(levels)
    t0 = time.perf_counter()
    engine = PoolEngine(reg, pools, flagged=flagged, admitted_operators=admitted, node_levels=levels)
    build_s = time.perf_counter() - t0
    print(f"{len(pools)} pools built and evaluated in {build_s:.2f} s; masks {engine.masks.nbytes / 1e6:.0f} MB")
    rng = np.random.default_rng(args.seed + 1)
    inc, full = [], []
    for _ in range(args.rounds):
        ids, changes = change_set(reg, rng, args.changes)
        t0 = time.perf_counter()
        touched = engine.apply(ids, changes)
        live = engine.totals()
        inc.append(time.perf_counter() - t0)
        incremental_sums = engine.sums.copy()
        t0 = time.perf_counter()
        engine.recompute()
        engine.totals()
        full.append(time.perf_counter() - t0)
        scale = np.maximum(np.abs(engine.sums), 1.0)
        err = float(np.max(np.abs(incremental_sums - engine.sums) / scale))
        assert err < 1e-9, f"incremental totals differ from a full re-evaluation (relative {err:.2e})"
        print(f"{args.changes:,} changes: incremental {inc[-1] * 1000:7.1f} ms ({len(touched)} pools changed)   "
              f"full re-evaluation {full[-1] * 1000:7.1f} ms   max relative difference {err:.1e}")
    city_total = next(r for r in live if r["pool_id"].startswith("peak_shaving:") and r["level"] == "city")
    print(f"city peak-shaving pool: {city_total['down_kw'] / 1000:,.0f} MW down, {city_total['count']:,} resources")
    value, ref = statistics.median(inc), statistics.median(full)
    print(f"median: incremental {value * 1000:.1f} ms vs full {ref * 1000:.1f} ms (target <= {TARGET_S:.0f} s)")
    result("pools_reevaluate", value, "s", ref, reg.n, target_s=TARGET_S, pools=len(pools), changes=args.changes,
           rounds=args.rounds, build_s=round(build_s, 3))


if __name__ == "__main__":
    main()
