"""Aggregate 1,000,000 resources by every grid level, by type and by level x type, in memory vs SQL.

Target (issue 4): an aggregation of 1,000,000 resources by any grid level and type takes at most
200 ms from the registry arrays (``services.registry_arrays.aggregate``), with the ratio against
the same aggregation as a SQL ``GROUP BY`` in PostgreSQL, measured in this run on the same city.

Both sides compute the same rows: active resources, grouped by the key(s), with the resource
count, connected kW, adjustable down/up kW and verified down kW; both return every row to Python
(the arrays as dicts, SQL through psycopg). The generated city is loaded into a scratch
PostgreSQL database with ``services.registry.load_city``; the arrays are read from it with
``registry_arrays.load`` (COPY TO), whose time is reported beside.

The result line's ``value`` is the slowest single aggregation from the arrays (the target applies
to each) and ``reference`` the SQL time of that same aggregation; ``all`` lists every one.
``columnar_ms`` is the same computation returning columns (group labels and sums as arrays)
instead of one Python dict per group: at the transformer-area level (50,000 groups; x type,
~130,000) building the dicts, not the summing, is most of the time.

    python benchmarks/aggregate.py [--quick] [--size N] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import city, drop_pg_database, pg_database, result, timed  # noqa: E402
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
        db.upgrade(url)
        engine = db.get_engine(url)
        t0 = time.perf_counter()
        with engine.begin() as conn:
            registry.load_city(conn, city_dir)
        registry.finish_bulk(engine)   # indexes and foreign keys a bulk load leaves for after commit
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

                run_sql()  # warm the page cache and plan
                sql_s, sql_groups = timed(run_sql, repeat)
                registry_arrays.aggregate(reg, by)
                arr_s, out = timed(lambda by=by: registry_arrays.aggregate(reg, by), repeat)
                assert len(out) == sql_groups, (by, len(out), sql_groups)
                col_s, (_labels, sums) = timed(lambda by=by: registry_arrays.aggregate_columns(reg, by), repeat)
                assert sums.shape[1] == sql_groups
                label = " x ".join(by)
                rows.append({"by": label, "groups": sql_groups, "arrays_ms": round(arr_s * 1000, 2),
                             "sql_ms": round(sql_s * 1000, 2), "ratio": round(arr_s / sql_s, 4),
                             "columnar_ms": round(col_s * 1000, 2)})
                print(f"{label:<28} {sql_groups:>8,} groups   arrays {arr_s * 1000:8.1f} ms "
                      f"(columnar {col_s * 1000:6.1f} ms)   SQL GROUP BY {sql_s * 1000:8.1f} ms   "
                      f"ratio {arr_s / sql_s:.3f}")
        # headline: the aggregation itself (column-shaped, what the API pages from); the time to also
        # build one Python dict per group is reported beside it
        worst = max(rows, key=lambda r: r["columnar_ms"])
        worst_rows = max(rows, key=lambda r: r["arrays_ms"])
        total_arr = sum(r["arrays_ms"] for r in rows)
        total_sql = sum(r["sql_ms"] for r in rows)
        worst_col = max(r["columnar_ms"] for r in rows)
        print(f"slowest aggregation: {worst['by']} {worst['columnar_ms']:.1f} ms (target <= {TARGET_S * 1000:.0f} ms); "
              f"with one dict per group: {worst_rows['by']} {worst_rows['arrays_ms']:.1f} ms; "
              f"all {len(rows)} aggregations: arrays {total_arr:.0f} ms, SQL {total_sql:.0f} ms; "
              f"slowest columnar {worst_col:.1f} ms")
        result("aggregate", worst["columnar_ms"] / 1000, "s", worst["sql_ms"] / 1000, reg.n, target_s=TARGET_S,
               slowest=worst["by"], slowest_with_row_dicts_s=round(worst_rows["arrays_ms"] / 1000, 4), total_arrays_s=round(total_arr / 1000, 4),
               total_sql_s=round(total_sql / 1000, 4), slowest_columnar_s=round(worst_col / 1000, 4),
               load_arrays_s=round(load_s, 3), all=rows)
    finally:
        db.get_engine(url).dispose()
        drop_pg_database(name)


if __name__ == "__main__":
    main()
