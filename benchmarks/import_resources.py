"""Import 1,000,000 generated resources into PostgreSQL, against a plain COPY of the same rows.

Target (issue 3): ``openvpp resources import`` of 1,000,000 rows takes at most 2x the time of a
plain ``COPY`` of the same CSV file into an equivalent bare table (same columns, no keys, no
indexes, no checks), both measured in this run on the same server.

The import path is the product's: read the CSV (all text), validate every row against the
column rules, check references (transformer areas, sites, owners, operators), then COPY into
the real table with its primary key, foreign keys, indexes and the live-meter unique index,
in one transaction, plus the audit entry. Reference and import alternate ``--repeat`` times
(both see the same machine state); the medians are reported, and every run is printed.

``--profile`` then runs the same steps one after the other (no overlap) and prints where the
seconds go: wall time, this process's CPU time and, when the server is on this machine, the
server backend's CPU time.

    python benchmarks/import_resources.py [--quick] [--size N] [--repeat N] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import city, drop_pg_database, pg_database, result, timed  # noqa: E402
from openvpp.model.columns import RESOURCE_COLUMNS  # noqa: E402
from openvpp.services import registry  # noqa: E402
from openvpp.services.validation import validate_table  # noqa: E402
from openvpp.store import audit, bulk, db  # noqa: E402
from openvpp.store.schema import resources  # noqa: E402

BARE = "resources_bare"


def _backend_cpu(conn) -> float | None:
    """CPU seconds (user + system) of this connection's server process, if the server runs here."""
    pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile(engine, csv_path: Path, empty) -> None:
    """The import's steps one after the other (the product overlaps them): where the seconds go."""
    empty()
    rows: list[tuple[str, float, float, float | None]] = []

    def step(label, fn, conn=None):
        b0 = _backend_cpu(conn) if conn is not None else None
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        b1 = _backend_cpu(conn) if conn is not None else None
        rows.append((label, time.perf_counter() - t0, time.process_time() - c0,
                     None if b0 is None or b1 is None else b1 - b0))
        return out

    raw = step("client: parse CSV (pyarrow, one thread, all text)",
               lambda: registry.read_table(csv_path, RESOURCE_COLUMNS, threads=False))
    checked = step("client: validate every row (column rules)", lambda: validate_table(raw, RESOURCE_COLUMNS))
    header = registry._csv_header(csv_path)
    spent: dict[str, float] = {}
    with engine.begin() as conn:
        with bulk.rebuilt_constraints(conn, resources, spent):
            refs = step("server+client: read reference lists", lambda: registry.References.read(conn), conn)
            step("client: check references", lambda: registry.check_resources(refs, checked, audit.SYSTEM))

            def copy() -> None:
                with open(csv_path, "rb") as fh:
                    fh.readline()
                    bulk.copy_csv(conn, resources.name, header, fh)
            step("server: COPY csv into resources (keys dropped)", copy, conn)
            b0 = _backend_cpu(conn)
        b1 = _backend_cpu(conn)
        t0 = time.perf_counter()
    commit_s = time.perf_counter() - t0
    keys_cpu = None if b0 is None or b1 is None else b1 - b0
    finish = registry.finish_bulk(engine)
    print("profile (steps run one after the other; the import overlaps the client and server columns):")
    for label, wall, cpu, backend in rows:
        print(f"  {label:52s} {wall:6.2f} s wall  {cpu:6.2f} s client CPU"
              + (f"  {backend:6.2f} s server CPU" if backend is not None else ""))
    for label, s in spent.items():
        print(f"  server: {label:44s} {s:6.2f} s wall")
    if keys_cpu is not None:
        print(f"  {'server: keys rebuilt (backend CPU, workers not counted)':52s} {keys_cpu:6.2f} s server CPU")
    print(f"  {'commit':52s} {commit_s:6.2f} s")
    for label, s in finish.items():
        print(f"  after commit: {label:38s} {s:6.2f} s wall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200,000 resources (under 30 s)")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None, help="alternating reference/import pairs (3; 1 with --quick)")
    ap.add_argument("--profile", action="store_true", help="then run the steps one by one and print a breakdown")
    args = ap.parse_args()
    n = args.size or (200_000 if args.quick else 1_000_000)
    repeat = args.repeat or (1 if args.quick else 3)
    load_before = os.getloadavg()
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

        def bare_table() -> None:  # untimed: a fresh, empty bare table
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {BARE}")
                types = {"float": "double precision", "int": "bigint", "date": "date"}
                ddl = ", ".join(f"{c.name} {types.get(c.kind, 'text')}" for c in RESOURCE_COLUMNS)
                conn.exec_driver_sql(f"CREATE TABLE {BARE} ({ddl})")

        def bare_copy() -> None:  # the reference: one transaction, COPY of the file's rows, commit
            with engine.begin() as conn:
                bulk.copy_csv(conn, BARE, cols, body)

        def product_import() -> int:
            with engine.begin() as conn:
                return registry.import_resources_file(conn, csv_path, audit.Actor("bench", "city_admin"))

        def empty_resources() -> None:  # untimed: each import starts from an empty table, as a city load does
            with engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE resources CASCADE")
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE resources")

        ref_runs, imp_runs, full_runs = [], [], []
        for i in range(repeat):   # alternate, so both see the same machine state
            bare_table()
            ref_runs.append(timed(bare_copy)[0])
            empty_resources()
            t, count = timed(product_import)
            imp_runs.append(t)
            finish_s, steps = timed(lambda: registry.finish_bulk(engine))
            full_runs.append(t + finish_s)
            print(f"run {i + 1}: plain COPY {ref_runs[-1]:.2f} s; import committed "
                  f"{t:.2f} s (ratio {t / ref_runs[-1]:.2f}); + indexes and key validation after commit "
                  f"{finish_s:.2f} s (ratio {full_runs[-1] / ref_runs[-1]:.2f})")
            assert count == n, (count, n)
        ref, imp_s = statistics.median(ref_runs), statistics.median(imp_runs)
        full_s = statistics.median(full_runs)
        print("after commit (last run):", ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
        load_after = os.getloadavg()
        print(f"plain COPY into bare table: {ref:.2f} s; openvpp import committed (every row validated, "
              f"references checked, primary key and unique meter enforced): {imp_s:.2f} s, ratio {imp_s / ref:.2f} "
              f"(target <= 2); with performance indexes built and foreign keys validated after commit: "
              f"{full_s:.2f} s, ratio {full_s / ref:.2f}  [medians of {repeat}; load average "
              f"{load_before[0]:.1f} before, {load_after[0]:.1f} after]")
        if args.profile:
            profile(engine, csv_path, empty_resources)
        result("import_resources", imp_s, "s", ref, n, target_ratio=2.0, fully_indexed_s=round(full_s, 3),
               fully_indexed_ratio=round(full_s / ref, 3), runs_s=[round(x, 3) for x in imp_runs],
               reference_runs_s=[round(x, 3) for x in ref_runs],
               load_average=[round(load_before[0], 2), round(load_after[0], 2)])
    finally:
        db.get_engine(url).dispose()
        drop_pg_database(name)


if __name__ == "__main__":
    main()
