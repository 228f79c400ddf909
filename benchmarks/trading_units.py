"""``GET /operators/{id}/trading-units``: the server's work per request, registry arrays vs SQL GROUP BY.

Target (issue 4 follow-up): the dashboard's trading-units request cost ~49 ms of server CPU at
100,000 resources (a GROUP BY of the operator's active resources per clearing node over the
resource and grid tables, SQLite, the database ``api_load.py`` measures); it should take at most
5 ms. The route now sums the same figures on the registry arrays the API already holds
(``PoolCache.registry``): this script times what the route runs, the cache's freshness check (one
audit-log count) plus ``admission.trading_units(reg=...)``, against the SQL path, for the operator
with the most resources, in the same run on the same city, and checks both give the same units.

    python benchmarks/trading_units.py [--quick] [--size N] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import func, select  # noqa: E402

from _common import city, load_city, result, timed  # noqa: E402
from openvpp.services import admission  # noqa: E402
from openvpp.services.pools import PoolCache  # noqa: E402
from openvpp.store.schema import resources  # noqa: E402

TARGET_S = 0.005


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 resources (under 30 s)")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None, help="runs per path (median); default 50 (quick 20)")
    args = ap.parse_args()
    n = args.size or (20_000 if args.quick else 100_000)
    repeat = args.repeat or (20 if args.quick else 50)
    city_dir = city(n)
    with tempfile.TemporaryDirectory(prefix="openvpp-bench-units-") as tmp:
        url = f"sqlite:///{tmp}/units.db"
        t0 = time.perf_counter()
        engine = load_city(url, city_dir)
        print(f"loaded {n:,} resources into SQLite in {time.perf_counter() - t0:.1f} s")
        cache = PoolCache()
        with engine.connect() as conn:
            op, count = conn.execute(select(resources.c.operator_id, func.count()).where(
                resources.c.operator_id.is_not(None)).group_by(resources.c.operator_id)
                .order_by(func.count().desc()).limit(1)).one()
            build_s, _ = timed(lambda: cache.registry(conn))
            print(f"shared engine built once in {build_s:.2f} s; operator {op}: {count:,} resources")

            def sql():
                return admission.trading_units(conn, op)

            def arrays():
                return admission.trading_units(conn, op, reg=cache.registry(conn))

            sql(), arrays()
            sql_s, by_sql = timed(sql, repeat)
            arr_s, by_arrays = timed(arrays, repeat)
            check_s, _ = timed(lambda: cache.registry(conn), repeat)
        assert [u["clearing_node"] for u in by_sql] == [u["clearing_node"] for u in by_arrays]
        for a, b in zip(by_arrays, by_sql, strict=True):
            assert a["resources"] == b["resources"] and abs(a["declared_kw"] - b["declared_kw"]) < 1e-6 * (
                1 + abs(b["declared_kw"])), (a, b)
        engine.dispose()
    print(f"SQL GROUP BY: {sql_s * 1000:.2f} ms   arrays (route): {arr_s * 1000:.3f} ms, of which the cache's "
          f"freshness check {check_s * 1000:.3f} ms   ({len(by_sql)} clearing nodes; target <= "
          f"{TARGET_S * 1000:.0f} ms)")
    result("trading_units", arr_s, "s", sql_s, n, target_s=TARGET_S, operator=op, operator_resources=int(count),
           units=len(by_sql), freshness_check_s=round(check_s, 6), database="sqlite")


if __name__ == "__main__":
    main()
