"""Live aggregates for 1,000,000 devices: power and up/down flexibility at every grid level and per
operator, offline devices removed, recomputed from struct-of-arrays (target: at most 1 s).

The registry arrays are built from a generated city's files (no database needed), every device
gets a last point (5 % of them too old: offline), then ``LiveState.compute`` runs the flexibility
kernel and the group sums for city, district, substation, feeder, transformer area and operator.
The reference is the same totals with a pandas ``groupby`` per level on the same arrays, in the
same run.

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
from openvpp.services.live import LiveState, live_flex  # noqa: E402
from openvpp.services.registry_arrays import CATEGORICAL, NUMERIC, RegistryArrays  # noqa: E402
from openvpp.services.scope import Scope  # noqa: E402
from openvpp.services.telemetry import DeviceIndex, TelemetryConfig  # noqa: E402


def registry_from_files(city_dir: Path) -> DeviceIndex:
    """The registry arrays of a generated city, read from resources.csv and grid.csv."""
    strings = {c: pa.string() for c in ("resource_id", "resource_type", "operator_id", "owner_id", "ta_id",
                                        "response_mode", "control_protocol")}
    res = pacsv.read_csv(city_dir / "resources.csv", convert_options=pacsv.ConvertOptions(
        column_types=strings | {c: pa.float64() for c in ("capacity_kw", "adjustable_up_kw", "adjustable_down_kw",
                                                          "adjustable_duration_h", "latency_s")}))
    grid = pacsv.read_csv(city_dir / "grid.csv", convert_options=pacsv.ConvertOptions(
        column_types={"node_id": pa.string(), "level": pa.string(), "parent_id": pa.string()}))
    parent = dict(zip(grid.column("node_id").to_pylist(), grid.column("parent_id").to_pylist(), strict=True))
    tas = pc.unique(res.column("ta_id")).to_pylist()
    feeder = {t: parent[t] for t in tas}
    substation = {t: parent[f] for t, f in feeder.items()}
    district = {t: parent[s] for t, s in substation.items()}
    ta = res.column("ta_id").to_pylist()
    n = res.num_rows
    cols = {"resource_id": res.column("resource_id"),
            "district_id": pa.array([district[t] for t in ta]), "substation_id": pa.array([substation[t] for t in ta]),
            "feeder_id": pa.array([feeder[t] for t in ta]), "ta_id": res.column("ta_id"),
            "verified_grade": pa.nulls(n, pa.string()), "state": pa.array(np.full(n, "active"))}
    for c in CATEGORICAL:
        if c not in cols:
            cols[c] = res.column(c)
    for c in NUMERIC:
        cols[c] = res.column(c) if c in res.column_names else pa.nulls(n, pa.float64())
    reg = RegistryArrays.from_arrow(pa.table(cols))
    pos = {rid: i for i, rid in enumerate(reg.resource_id.tolist())}
    city_id = [r for r, lv in zip(grid.column("node_id").to_pylist(), grid.column("level").to_pylist(),
                                  strict=True) if lv == "city"][0]
    return DeviceIndex(reg, pos, city_id)


def pandas_reference(state: LiveState, now_ms: int) -> dict:
    """The same totals the obvious way: a DataFrame and one groupby per level."""
    c = state.config
    v = state.index.reg.values
    online, p, up, down = live_flex(state.p_kw, state.soc, state.last_ts_ms, now_ms,
                                    int(c.offline_intervals * c.interval_s * 1000), v["capacity_kw"],
                                    v["adjustable_up_kw"], v["adjustable_down_kw"], state.bidirectional, state.generator)
    df = pd.DataFrame({"p": p, "up": up, "down": down, "online": online})
    out = {}
    for level, (codes, _labels) in state.groups.items():
        g = df.groupby(codes).agg(power_kw=("p", "sum"), up_kw=("up", "sum"), down_kw=("down", "sum"),
                                  online=("online", "sum"), devices=("p", "size"))
        out[level] = g
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (under 30 s)")
    ap.add_argument("--size", type=int, default=1_000_000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    index = registry_from_files(city(args.size))
    print(f"registry arrays of {index.n:,} devices in {time.perf_counter() - t0:.1f} s")
    cfg = TelemetryConfig(interval_s=60, offline_intervals=3)
    state = LiveState(index, cfg)
    rng = np.random.default_rng(3)
    now = int(time.time() * 1000)
    age = np.where(rng.random(index.n) < 0.05, 600_000, rng.integers(0, 60_000, index.n))
    cap = index.reg.values["capacity_kw"]
    p = cap * rng.uniform(-0.2, 0.9, index.n)
    soc = np.where(state.bidirectional, rng.uniform(0, 1, index.n), np.nan)
    feed_s, updated = timed(lambda: state.update(np.arange(index.n), now - age, p, soc))
    repeat = 3 if args.quick else 7
    secs, totals = timed(lambda: state.compute(now), repeat)
    ref_s, ref = timed(lambda: pandas_reference(state, now), repeat)
    scoped_s, _ = timed(lambda: state.compute(now, Scope(operator_id=index.reg.categories["operator_id"][0])), repeat)
    # the two agree
    for level, g in ref.items():
        d = totals.levels[level]
        idx = g.index.to_numpy()
        keep = idx >= 0
        np.testing.assert_allclose(d["power_kw"][idx[keep]], g["power_kw"].to_numpy()[keep], rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(d["down_kw"][idx[keep]], g["down_kw"].to_numpy()[keep], rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(d["up_kw"][idx[keep]], g["up_kw"].to_numpy()[keep], rtol=1e-9, atol=1e-6)
    city_row = totals.rows("city")[0]
    groups = {lv: len(lab) for lv, (_, lab) in state.groups.items()}
    print(f"feed of {updated:,} points: {feed_s:.3f} s; recompute of every level {groups}: {secs:.3f} s "
          f"(median of {repeat}); pandas groupby reference: {ref_s:.3f} s; one operator's scope: {scoped_s:.3f} s")
    print(f"city: {city_row['power_kw'] / 1000:,.1f} MW, down {city_row['down_kw'] / 1000:,.1f} MW, "
          f"up {city_row['up_kw'] / 1000:,.1f} MW, {city_row['online']:,} online, {city_row['offline']:,} offline")
    result("live_aggregates", secs, "s", ref_s, index.n, target_s=1.0, feed_s=round(feed_s, 4),
           scoped_s=round(scoped_s, 4), groups=sum(groups.values()), median_of=repeat)


if __name__ == "__main__":
    main()
