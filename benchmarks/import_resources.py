"""Import 1,000,000 generated resources into PostgreSQL, against a plain COPY of the same rows.

Target (issue 3): ``openvpp resources import`` of 1,000,000 rows takes at most 2x the time of a
plain ``COPY`` of the same CSV file into an equivalent bare table (same columns, no keys, no
indexes, no checks), both measured in this run on the same server.

The import path is the product's: read the CSV (all text), validate every row against the
column rules, check references (transformer areas, sites, owners, operators), then COPY into
the real table with its primary key, foreign keys, indexes and the live-meter unique index,
in one transaction, plus the audit entry.

    python benchmarks/import_resources.py [--quick] [--size N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import city, drop_pg_database, pg_database, result, timed  # noqa: E402
from openvpp.model.columns import RESOURCE_COLUMNS  # noqa: E402
from openvpp.services import registry  # noqa: E402
from openvpp.store import audit, db  # noqa: E402
from openvpp.store.bulk import copy_csv  # noqa: E402

BARE = "resources_bare"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 resources (under 30 s)")
    ap.add_argument("--size", type=int, default=None)
    args = ap.parse_args()
    n = args.size or (50_000 if args.quick else 1_000_000)
    city_dir = city(n)
    name = "openvpp_bench_import"
    url = pg_database(name)
    try:
        db.upgrade(url)
        engine = db.get_engine(url)
        with engine.begin() as conn:
            registry.load_city(conn, city_dir, with_resources=False)
        csv_path = city_dir / "resources.csv"
        payload = csv_path.read_bytes()
        header, body = payload.split(b"\n", 1)
        cols = [c.strip('"') for c in header.decode().split(",")]

        def bare_copy() -> None:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {BARE}")
                types = {"float": "double precision", "int": "bigint", "date": "date"}
                ddl = ", ".join(f"{c.name} {types.get(c.kind, 'text')}" for c in RESOURCE_COLUMNS)
                conn.exec_driver_sql(f"CREATE TABLE {BARE} ({ddl})")
            with engine.begin() as conn:
                copy_csv(conn, BARE, cols, body)

        def product_import() -> int:
            with engine.begin() as conn:
                return registry.import_resources_file(conn, csv_path, audit.Actor("bench", "city_admin"))

        def empty_resources() -> None:  # untimed: each import starts from an empty table, as a city load does
            with engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE resources CASCADE")
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE resources")

        ref_runs, imp_runs, full_runs = [], [], []
        for _ in range(1 if n >= 500_000 else 3):   # alternate, so both see the same machine state
            ref_runs.append(timed(bare_copy)[0])
            empty_resources()
            t, count = timed(product_import)
            imp_runs.append(t)
            finish_s, steps = timed(lambda: registry.finish_bulk(engine))
            full_runs.append(t + finish_s)
        ref, imp_s = statistics.median(ref_runs), statistics.median(imp_runs)
        full_s = statistics.median(full_runs)
        print("after commit:", ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
        assert count == n, (count, n)
        print(f"plain COPY into bare table: {ref:.2f} s; openvpp import committed (every row validated, "
              f"references checked, primary key and unique meter enforced): {imp_s:.2f} s, ratio {imp_s / ref:.2f} "
              f"(target <= 2); with performance indexes built and foreign keys validated after commit: "
              f"{full_s:.2f} s, ratio {full_s / ref:.2f}")
        result("import_resources", imp_s, "s", ref, n, target_ratio=2.0, fully_indexed_s=round(full_s, 3),
               fully_indexed_ratio=round(full_s / ref, 3))
    finally:
        db.get_engine(url).dispose()
        drop_pg_database(name)


if __name__ == "__main__":
    main()
