"""Re-evaluate every pool of a 1,000,000-resource city after 1,000 resource changes, as the platform does.

Target (issue 4): at most 1 s. The product path is the API's shared pool engine
(``services.pools.PoolCache.get``, behind every pool, resource-list, summary and report route):
it counts the audit entries of pool-moving changes, reads the new ones, reads the current rows of
the changed resources from the database (``registry_arrays.read_rows``), inserts the resources it
does not hold yet, and corrects every pool's mask and totals incrementally (``PoolEngine.apply``,
O(changes x pools)); then the totals of every pool are read. The reference, measured in the same
run on the same database state, is the full rebuild the cache did before (``PoolEngine.from_db``:
COPY of every resource into the registry arrays, flags, admitted operators, the pools, and a full
evaluation). Each round also checks that both give the same totals and the same members.

City: the generated city (``benchmarks/_common.city``) loaded into a scratch PostgreSQL database
(``registry.load_city``). The generated city holds no verification results, so 40 % of the
resources get a synthetic one (grade A/B/C by a hash of the id, verified kW and latency; a third of
the C grades flagged), so that the reserve pools have members.

Pools: the five default presets (peak shaving, valley filling, emergency response, reactive
support, reserve) at city level and in each of the 11 districts (``pools.default_pools``), plus
local congestion at 10 feeders of the Baiyun and Haizhu pilots: 70 pools.

A round's changes, each made through the service the API calls, committed before the timing:
declared capability, latency and response mode edited (``resources.update``), transfers to another
operator (5 %, ``access.transfer``), retirements (2 %, ``access.transition``), verification tests
of whole sites completed from simulated telemetry (about 15 % of the resources, grades A to C, C
flagged: ``verification.schedule`` + ``complete``), and ``--new`` new resources registered
(``resources.register``): ``--changes`` distinct resources in all.

    python benchmarks/pools.py [--quick] [--size N] [--changes K] [--rounds R] [--new M]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import city, drop_pg_database, load_city, pg_database, result  # noqa: E402
from openvpp.core.errors import InvalidInput, NotFound  # noqa: E402
from openvpp.model.columns import RESOURCE_COLUMNS  # noqa: E402
from openvpp.services import access, pools  # noqa: E402
from openvpp.services import resources as res  # noqa: E402
from openvpp.services import verification as ver  # noqa: E402
from openvpp.services.registry_arrays import CATEGORICAL  # noqa: E402
from openvpp.store import db  # noqa: E402
from openvpp.store.audit import Actor  # noqa: E402
from openvpp.store.schema import grid_nodes, operators, resources  # noqa: E402

TARGET_S = 1.0
ADMIN = Actor("bench", "city_admin")
SYNTHETIC_VERIFICATION = """
UPDATE resources SET verified_grade = g.grade, verified_down_kw = adjustable_down_kw * g.ratio,
       verified_up_kw = adjustable_up_kw * g.ratio, verified_latency_s = latency_s * 1.1,
       verified_at = now(), flagged = CASE WHEN g.grade = 'C' AND mod(g.h, 3) = 0 THEN 'synthetic C' END
FROM (SELECT resource_id, h, CASE WHEN mod(h / 10, 10) < 5 THEN 'A' WHEN mod(h / 10, 10) < 8 THEN 'B' ELSE 'C' END AS grade,
             CASE WHEN mod(h / 10, 10) < 5 THEN 0.95 WHEN mod(h / 10, 10) < 8 THEN 0.8 ELSE 0.5 END AS ratio
      FROM (SELECT resource_id, abs(hashtext(resource_id)) AS h FROM resources) x) g
WHERE g.resource_id = resources.resource_id AND mod(g.h, 10) < 4
"""


def make_pools(conn) -> int:
    """The default pools and 10 local-congestion pools at Baiyun and Haizhu feeders."""
    n = len(pools.default_pools(conn, ADMIN))
    feeders = list(conn.execute(select(grid_nodes.c.node_id).where(grid_nodes.c.level == "feeder")
                                .order_by(grid_nodes.c.node_id)).scalars())
    pilots = [f for f in feeders if f.startswith("GZ-BY-")][:5] + [f for f in feeders if f.startswith("GZ-HZ-")][:5]
    for f in pilots:
        pools.create_pool(conn, ADMIN, {"pool_id": f"local_congestion:{f}", "scenario": "local_congestion",
                                        "rules": {"node_id": f}})
    return n + len(pilots)


def telemetry(rng: np.random.Generator):
    """Flat 1,000 kW loads; each resource drops by 100 %, 80 % or 40 % of its declared kW a few steps in."""
    def source(ids, start, end, step_s):
        out = np.full((len(ids), int((end - start).total_seconds() // step_s)), 1000.0)
        pre = int(ver.PRE_WINDOW.total_seconds() // step_s)
        for k, rid in enumerate(ids):
            out[k, pre + int(rng.integers(0, 4)):] -= declared[rid] * rng.choice([1.0, 0.8, 0.4])
        return out
    declared: dict[str, float] = {}
    source.declared = declared
    return source


def change_round(engine, reg, rng: np.random.Generator, k: int, new: int, round_no: int) -> int:
    """Make about ``k`` resource changes through the services; return how many resources changed."""
    active = reg.resource_id[reg.matching(state="active")]
    picked = [str(x) for x in rng.choice(active, size=min(len(active), 3 * k), replace=False)]
    changed: set[str] = set()
    with engine.begin() as conn:
        ops = list(conn.execute(select(operators.c.operator_id).where(operators.c.state == "admitted")
                                .order_by(operators.c.operator_id)).scalars())
        # verification of whole sites, until ~15 % of the changes
        source = telemetry(rng)
        start = datetime(2025, 7, 15, 6, tzinfo=UTC) + timedelta(days=round_no)
        for rid in picked:
            if len(changed) >= 0.15 * k:
                break
            site = conn.execute(select(resources.c.site_id).where(resources.c.resource_id == rid)).scalar_one()
            try:
                with conn.begin_nested():
                    t = ver.schedule(conn, ADMIN, "site", site, start)
                    if len(changed | set(t["result"]["members"])) > k - new:
                        raise ValueError("too many members")
                    if min(t["result"]["declared_kw"].values()) <= 0:
                        # a member declaring nothing in the direction gets ratio NaN, which
                        # verification.complete cannot store on PostgreSQL (JSON has no NaN)
                        raise ValueError("a member declares nothing")
                    source.declared.update(t["result"]["declared_kw"])
                    ver.complete(conn, ADMIN, t["test_id"], source)
            except (ValueError, InvalidInput, NotFound):   # a site with a retired resource, or too large
                continue
            changed.update(t["result"]["members"])
        rest = [r for r in picked if r not in changed]
        for j, rid in enumerate(rest[: k - new - len(changed)]):
            u = rng.random()
            if u < 0.05:
                now = conn.execute(select(resources.c.operator_id).where(resources.c.resource_id == rid)).scalar()
                access.transfer(conn, ADMIN, rid, next(o for o in ops[j % len(ops):] + ops if o != now),
                                "bench transfer", at=datetime.now(UTC) + timedelta(seconds=round_no))
            elif u < 0.07:
                access.transition(conn, ADMIN, [rid], "retire", reason="bench retire")
            else:
                row = res.get(conn, ADMIN, rid)
                res.update(conn, ADMIN, rid, {
                    "adjustable_down_kw": round(row["capacity_kw"] * rng.uniform(0.05, 0.9), 2),
                    "latency_s": float(rng.choice([1, 30, 60, 120, 300, 900])),
                    "response_mode": str(rng.choice(["automatic", "semi_automatic"]))}, reason="bench edit")
            changed.add(rid)
        for i in range(new):
            row = res.get(conn, ADMIN, rest[-1 - i])
            fields = {c.name: row[c.name] for c in RESOURCE_COLUMNS}
            fields.update(resource_id=f"RB{round_no:02d}{i:05d}", meter_id=f"MB{round_no:02d}{i:05d}",
                          commissioned_on=None)
            res.register(conn, ADMIN, fields)
            changed.add(fields["resource_id"])
    return len(changed)


def same(live: pools.PoolEngine, fresh: pools.PoolEngine, registry_too: bool) -> float:
    """Max relative difference of the totals; raises if members (or, optionally, the registry) differ."""
    assert live.reg.resource_id.tolist() == fresh.reg.resource_id.tolist()
    order = [live._index[p.pool_id] for p in fresh.pools]
    assert np.array_equal(live.masks[order], fresh.masks), "members differ from a full rebuild"
    if registry_too:
        for col in CATEGORICAL:
            a = np.array(live.reg.categories[col] + [None], dtype=object)[live.reg.codes[col]]
            b = np.array(fresh.reg.categories[col] + [None], dtype=object)[fresh.reg.codes[col]]
            assert np.array_equal(a, b), f"registry column {col} differs from a full rebuild"
    scale = np.maximum(np.abs(fresh.sums), 1.0)
    return float(np.max(np.abs(live.sums[order] - fresh.sums) / scale))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 resources, 2 rounds")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--new", type=int, default=10, help="new resources registered per round (of --changes)")
    ap.add_argument("--rounds", type=int, default=None, help="change sets, each timed (median); default 5 (quick 2)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    n = args.size or (50_000 if args.quick else 1_000_000)
    rounds = args.rounds or (2 if args.quick else 5)
    city_dir = city(n)
    name = "openvpp_bench_pools"
    url = pg_database(name)
    try:
        t0 = time.perf_counter()
        engine = load_city(url, city_dir)
        with engine.begin() as conn:
            conn.exec_driver_sql(SYNTHETIC_VERIFICATION)
            n_pools = make_pools(conn)
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        print(f"loaded {n:,} resources into PostgreSQL, verified 40 %, defined {n_pools} pools in "
              f"{time.perf_counter() - t0:.1f} s")
        cache = pools.PoolCache(max_age_s=float("inf"))   # no rebuild by age (300 s in the API) between rounds
        with engine.connect() as conn:
            t0 = time.perf_counter()
            live = cache.get(conn)
            first_build = time.perf_counter() - t0
        print(f"first build of the shared engine: {first_build:.2f} s ({live.reg.n:,} resources, "
              f"{len(live.pools)} pools, masks {live.masks.nbytes / 1e6:.0f} MB)")
        rng = np.random.default_rng(args.seed)
        inc, full, max_err = [], [], 0.0
        for r in range(rounds):
            t0 = time.perf_counter()
            k = change_round(engine, live.reg, rng, args.changes, args.new, r)
            made_s = time.perf_counter() - t0
            with engine.connect() as conn:
                t0 = time.perf_counter()
                live = cache.get(conn)
                totals = live.totals()
                inc.append(time.perf_counter() - t0)
                step = dict(cache.last)
                t0 = time.perf_counter()
                fresh = pools.PoolEngine.from_db(conn)
                fresh.totals()
                full.append(time.perf_counter() - t0)
            assert step.get("kind") == "update" and cache.builds == 1, f"the cache rebuilt: {step}"
            err = same(live, fresh, registry_too=r == rounds - 1)
            assert err < 1e-9, f"incremental totals differ from a full rebuild (relative {err:.2e})"
            max_err = max(max_err, err)
            print(f"round {r + 1}: {k:,} resources changed through the services in {made_s:.1f} s "
                  f"({step['inserted']} new); product path {inc[-1] * 1000:7.1f} ms "
                  f"(of it: rows read {step['read_s'] * 1000:.1f} ms, applied {(step['seconds'] - step['read_s']) * 1000:.1f} ms)   full rebuild {full[-1] * 1000:7.1f} ms   "
                  f"max relative difference {err:.1e}")
        city_total = next(t for t in totals if t["pool_id"].startswith("peak_shaving:") and t["level"] == "city")
        print(f"city peak-shaving pool: {city_total['down_kw'] / 1000:,.0f} MW down, {city_total['count']:,} resources")
        value, ref = statistics.median(inc), statistics.median(full)
        print(f"median: product path {value * 1000:.1f} ms vs full rebuild {ref * 1000:.1f} ms "
              f"(target <= {TARGET_S:.0f} s)")
        result("pools_reevaluate", value, "s", ref, live.reg.n, target_s=TARGET_S, pools=len(live.pools),
               changes=args.changes, new=args.new, rounds=rounds, first_build_s=round(first_build, 3),
               max_relative_difference=max_err)
    finally:
        db.get_engine(url).dispose()
        drop_pg_database(name)


if __name__ == "__main__":
    main()
