"""Aggregate 1,000,000 resources by every grid level, by type and by level x type, as the API does vs SQL.

Target (issue 4): an aggregation of 1,000,000 resources by any grid level and type takes at most
200 ms, with the ratio against the same aggregation as a SQL ``GROUP BY`` in PostgreSQL, measured
in this run on the same city.

The product path is what ``GET /api/v1/resources/summary?by=<level>,type`` runs:
``services.registry.summary_page`` on the registry arrays the API holds (``PoolCache.registry``),
which sums with ``registry_arrays.aggregate_columns`` (active resources, groups sorted by label),
then either builds the first page of rows (1,000 groups, labels looked up in ``grid_nodes``) or
returns every group column-shaped (``format=columns``); both are timed with the route's JSON
rendering (``api.routing.json_bytes``, orjson). The SQL side groups the same active resources by
the same keys with the count, connected kW, adjustable down/up kW and verified down kW, and
fetches every row to Python through psycopg. The generated city is loaded into a scratch
PostgreSQL database with ``services.registry.load_city``; the arrays are read from it with
``registry_arrays.load`` (COPY TO), whose time is reported beside.

The result line's ``value`` is the slowest product-path answer over every grouping and both forms
(the target applies to each), ``reference`` the SQL time of that same grouping; ``all`` lists
every one, with ``kernel_ms`` (``aggregate_columns`` alone, unsorted) and ``all_dicts_ms`` (every
group as a Python dict, ``registry_arrays.aggregate``: what a route without paging would build).
Timings are medians after one warm-up call (which also sorts each grouping's labels once; the
order is kept with the arrays until a new label appears).

    python benchmarks/aggregate.py [--quick] [--size N] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import city, drop_pg_database, load_city, pg_database, result, timed  # noqa: E402
from openvpp.api.routing import json_bytes  # noqa: E402
from openvpp.services import registry, registry_arrays  # noqa: E402
from openvpp.store import db  # noqa: E402

LEVELS = ("district", "substation", "feeder", "transformer_area")
SQL_KEY = {"district": "g.district_id", "substation": "g.substation_id", "feeder": "g.feeder_id",
           "transformer_area": "r.ta_id", "type": "r.resource_type"}
TARGET_S = 0.200


def sql_group_by(by: list[str]) -> str:
    keys = ", ".join(SQL_KEY[b] for b in by)
    return (f"SELECT {keys}, count(*), sum(r.capacity_kw), sum(r.adjustable_down_kw), sum(r.adjustable_up_kw), "
            f"sum(coalesce(r.verified_down_kw, 0)) FROM resources r JOIN grid_nodes g ON g.node_id = r.ta_id "
            f"WHERE r.state = 'active' GROUP BY {keys}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 resources (under 30 s)")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None, help="runs per aggregation (median); default 5 (quick 3)")
    args = ap.parse_args()
    n = args.size or (50_000 if args.quick else 1_000_000)
    repeat = args.repeat or (3 if args.quick else 5)
    city_dir = city(n)
    name = "openvpp_bench_aggregate"
    url = pg_database(name)
    try:
        t0 = time.perf_counter()
        engine = load_city(url, city_dir)
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE resources")
            conn.exec_driver_sql("ANALYZE grid_nodes")
        print(f"loaded {n:,} resources into PostgreSQL in {time.perf_counter() - t0:.1f} s")
        with engine.connect() as conn:
            load_s, reg = timed(lambda: registry_arrays.load(conn))
        print(f"registry_arrays.load (COPY TO -> arrays): {load_s:.2f} s for {reg.n:,} resources")

        groupings = [[lv] for lv in LEVELS] + [["type"]] + [[lv, "type"] for lv in LEVELS]
        rows = []
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            for by in groupings:
                query = sql_group_by(by)

                def run_sql(query=query) -> int:
                    with raw.cursor() as cur:
                        cur.execute(query)
                        return len(cur.fetchall())

                def route(columns: bool, by=by) -> tuple[int, int]:
                    page = registry.summary_page(conn, ",".join(by), reg=reg, limit=None if columns else 1000,
                                                 columns=columns)
                    return page["total"], len(json_bytes({"by": ",".join(by), **page}))

                run_sql()  # warm the page cache and plan
                sql_s, sql_groups = timed(run_sql, repeat)
                route(False), route(True)
                page_s, (total, page_bytes) = timed(lambda: route(False), repeat)
                cols_s, (_, cols_bytes) = timed(lambda: route(True), repeat)
                assert total == sql_groups, (by, total, sql_groups)
                kernel_s, (_labels, sums) = timed(lambda by=by: registry_arrays.aggregate_columns(reg, by), repeat)
                dicts_s, out = timed(lambda by=by: registry_arrays.aggregate(reg, by), repeat)
                assert sums.shape[1] == len(out) == sql_groups
                label = " x ".join(by)
                rows.append({"by": label, "groups": sql_groups, "page_ms": round(page_s * 1000, 2),
                             "columns_ms": round(cols_s * 1000, 2), "sql_ms": round(sql_s * 1000, 2),
                             "kernel_ms": round(kernel_s * 1000, 2), "all_dicts_ms": round(dicts_s * 1000, 2),
                             "columns_mb": round(cols_bytes / 1e6, 2)})
                print(f"{label:<28} {sql_groups:>8,} groups   API page {page_s * 1000:7.1f} ms   "
                      f"API columns {cols_s * 1000:7.1f} ms ({cols_bytes / 1e6:5.1f} MB)   "
                      f"SQL GROUP BY {sql_s * 1000:8.1f} ms   kernel {kernel_s * 1000:6.1f} ms   "
                      f"all as dicts {dicts_s * 1000:7.1f} ms")
        for r in rows:
            r["worst_ms"] = max(r["page_ms"], r["columns_ms"])
            r["ratio"] = round(r["worst_ms"] / r["sql_ms"], 4)
        worst = max(rows, key=lambda r: r["worst_ms"])
        total_sql = sum(r["sql_ms"] for r in rows)
        print(f"slowest API answer: {worst['by']} {worst['worst_ms']:.1f} ms (page {worst['page_ms']:.1f} ms, "
              f"columns {worst['columns_ms']:.1f} ms; target <= {TARGET_S * 1000:.0f} ms) vs SQL "
              f"{worst['sql_ms']:.1f} ms; all {len(rows)} groupings: SQL {total_sql:.0f} ms")
        result("aggregate", worst["worst_ms"] / 1000, "s", worst["sql_ms"] / 1000, reg.n, target_s=TARGET_S,
               slowest=worst["by"], total_sql_s=round(total_sql / 1000, 4), load_arrays_s=round(load_s, 3), all=rows)
    finally:
        db.get_engine(url).dispose()
        drop_pg_database(name)


if __name__ == "__main__":
    main()
