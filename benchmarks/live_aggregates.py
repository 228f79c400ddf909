"""Live aggregates for 1,000,000 devices, pools included: power and up/down flexibility at every grid
level, per operator and per pool, offline devices removed, recomputed from struct-of-arrays
(target: at most 1 s).

The registry is the generated city's files read into ``RegistryArrays`` (no database), with a
seeded synthetic verification of 40 % of the resources (grades A/B/C, a third of the C grades
flagged) so that the reserve pools have members. The pools are the 70 of ``benchmarks/pools.py``:
the five default presets at city level and in each of the 11 districts, plus local congestion at
10 feeders of the Baiyun and Haizhu pilots, evaluated by ``services.pools.PoolEngine`` on the same
arrays and attached to the live state. Every device gets a last
point (5 % of them 30 minutes old: offline whatever their reporting interval).

What is timed is one tick of the live service (``LiveService._take``): ``LiveState.snapshot`` (a
copy of the last points, each device's online flag and flexibility against its own reporting
interval) and its city-wide totals of every level: city, district, substation, feeder, transformer
area, operator and pool (pools through their membership patterns, ``kernels.live``). The
reference, in the same run, computes the same totals the obvious way: a pandas ``groupby`` per
level and a boolean mask per pool; the run checks that both agree. It also times the pool level
alone both ways, and one operator's totals from the snapshot (what a tenant's request costs).

    python benchmarks/live_aggregates.py [--quick] [--size N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

from _common import city, result, timed  # noqa: E402
from openvpp.model.pools import Pool, load_presets, preset_rules  # noqa: E402
from openvpp.services.live import LiveState, live_flex  # noqa: E402
from openvpp.services.pools import PoolEngine  # noqa: E402
from openvpp.services.registry_arrays import RegistryArrays  # noqa: E402
from openvpp.services.scope import Scope  # noqa: E402
from openvpp.services.telemetry import DeviceIndex, TelemetryConfig  # noqa: E402

TARGET_S = 1.0
GRADES = np.array(["A", "B", "C"], dtype=object)


def read_city(city_dir: Path, seed: int) -> tuple[RegistryArrays, np.ndarray, list[str], dict[str, str]]:
    """Registry arrays of the city's resources with synthetic verification; flags; admitted operators;
    the level of every city, district and feeder node."""
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
    down, up = t.column("adjustable_down_kw").to_numpy(), t.column("adjustable_up_kw").to_numpy()
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
    return reg, flagged, admitted, {k: v for k, v in level.items() if v in ("city", "district", "feeder")}


def make_pools(levels: dict[str, str]) -> list[Pool]:
    """The five default presets at city level and in each district; local congestion at 10 pilot feeders."""
    city_id = next(k for k, v in levels.items() if v == "city")
    districts = sorted(k for k, v in levels.items() if v == "district")
    out = []
    for scenario, preset in load_presets().items():
        if not preset.default:
            continue
        for node in [city_id, *districts]:
            out.append(Pool(pool_id=f"{scenario}:{node}", name=f"{preset.name} {node}", scenario=scenario,
                            rules=preset_rules(scenario, {} if node == city_id else {"node_id": node})))
    feeders = sorted(k for k, v in levels.items() if v == "feeder")
    for f in [f for f in feeders if f.startswith("GZ-BY-")][:5] + [f for f in feeders if f.startswith("GZ-HZ-")][:5]:
        out.append(Pool(pool_id=f"local_congestion:{f}", name=f"Local congestion {f}", scenario="local_congestion",
                        rules=preset_rules("local_congestion", {"node_id": f})))
    return out


def masked_pool_sums(state: LiveState, masks: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Pool totals with one boolean mask per pool (what the live state did before): (5, P)."""
    return np.stack([cols[:, m].sum(axis=1) for m in masks], axis=1)


def pandas_reference(state: LiveState, masks: np.ndarray, now_ms: int) -> dict:
    """The same totals the obvious way: a DataFrame and one groupby per level, a mask per pool."""
    v = state.index.reg.values
    online, p, up, down = live_flex(state.p_kw, state.soc, state.last_ts_ms, now_ms, state.offline_after_ms,
                                    v["capacity_kw"], v["adjustable_up_kw"], v["adjustable_down_kw"],
                                    state.bidirectional, state.generator)
    df = pd.DataFrame({"p": p, "up": up, "down": down, "online": online})
    out = {}
    for level, (codes, _labels) in state.groups.items():
        out[level] = df.groupby(codes).agg(power_kw=("p", "sum"), up_kw=("up", "sum"), down_kw=("down", "sum"),
                                           online=("online", "sum"), devices=("p", "size"))
    cols = np.stack([p, up, down, online.astype(np.float64), np.ones(len(p))])
    out["pool"] = masked_pool_sums(state, masks, cols)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (about a minute at 1,000,000 devices)")
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    t0 = time.perf_counter()
    reg, flagged, admitted, levels = read_city(city(args.size), args.seed)
    city_id = next(k for k, lv in levels.items() if lv == "city")
    index = DeviceIndex(reg, {rid: i for i, rid in enumerate(reg.resource_id.tolist())}, city_id)
    print(f"registry arrays of {index.n:,} devices in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    engine = PoolEngine(reg, make_pools(levels), flagged=flagged, admitted_operators=admitted, node_levels=levels)
    engine_s = time.perf_counter() - t0
    cfg = TelemetryConfig(interval_s=60, offline_intervals=3)
    state = LiveState(index, cfg)
    attach_s, _ = timed(lambda: state.set_pools([p.pool_id for p in engine.pools], engine.masks))
    masks = engine.masks
    print(f"{len(engine.pools)} pools evaluated in {engine_s:.2f} s, {int(masks.sum()):,} memberships; "
          f"indexed into {len(state.pool_incidence):,} membership patterns in {attach_s:.2f} s")

    rng = np.random.default_rng(3)
    now = int(time.time() * 1000)
    now -= now % 2000
    age = np.where(rng.random(index.n) < 0.05, 1_800_000, rng.integers(0, 60_000, index.n))
    cap = index.reg.values["capacity_kw"]
    p = cap * rng.uniform(-0.2, 0.9, index.n)
    soc = np.where(state.bidirectional, rng.uniform(0, 1, index.n), np.nan)
    feed_s, updated = timed(lambda: state.update(np.arange(index.n), now - age, p, soc))

    repeat = 3 if args.quick else 7

    def tick():   # one tick of LiveService: the snapshot and its city-wide totals of every level
        snap = state.snapshot(now)
        return snap, snap.totals()

    secs, (snap, totals) = timed(tick, repeat)
    ref_s, ref = timed(lambda: pandas_reference(state, masks, now), repeat)
    op = index.reg.categories["operator_id"][0]
    scoped_s, _ = timed(lambda: snap.totals(Scope(operator_id=op)), repeat)
    cols = np.stack([snap.power_kw, snap.up_kw, snap.down_kw, snap.online.astype(np.float64), np.ones(index.n)])
    pool_s, _ = timed(lambda: snap.totals(levels=("pool",)), repeat)
    pool_ref_s, _ = timed(lambda: masked_pool_sums(state, masks, cols), repeat)

    # the two agree
    for level, g in ref.items():
        d = totals.levels[level]
        if level == "pool":
            for k, name in enumerate(("power_kw", "up_kw", "down_kw", "online", "devices")):
                np.testing.assert_allclose(d[name], g[k], rtol=1e-9, atol=1e-6)
            continue
        idx = g.index.to_numpy()
        keep = idx >= 0
        for name in ("power_kw", "up_kw", "down_kw", "online", "devices"):
            np.testing.assert_allclose(d[name][idx[keep]], g[name].to_numpy()[keep], rtol=1e-9, atol=1e-6)
    city_row = totals.rows("city")[0]
    groups = {lv: len(d["ids"]) for lv, d in totals.levels.items()}
    print(f"feed of {updated:,} points: {feed_s:.3f} s")
    print(f"tick (snapshot + every level {groups}): {secs:.3f} s (median of {repeat}); "
          f"reference (pandas groupby per level + a mask per pool): {ref_s:.3f} s; ratio {secs / ref_s:.3f}")
    print(f"pool level alone: membership patterns {pool_s:.3f} s vs a mask per pool {pool_ref_s:.3f} s; "
          f"one operator's totals from the snapshot: {scoped_s:.3f} s")
    print(f"city: {city_row['power_kw'] / 1000:,.1f} MW, down {city_row['down_kw'] / 1000:,.1f} MW, "
          f"up {city_row['up_kw'] / 1000:,.1f} MW, {city_row['online']:,} online, {city_row['offline']:,} offline")
    result("live_aggregates", secs, "s", ref_s, index.n, target_s=TARGET_S, pools=len(engine.pools),
           patterns=len(state.pool_incidence), groups=sum(groups.values()), pool_s=round(pool_s, 4),
           pool_masked_s=round(pool_ref_s, 4), scoped_s=round(scoped_s, 4), feed_s=round(feed_s, 4),
           attach_s=round(attach_s, 3), median_of=repeat)


if __name__ == "__main__":
    main()
