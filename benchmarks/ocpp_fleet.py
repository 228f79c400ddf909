"""OCPP: 1,000 simulated chargers connected at once, meter values every 10 s, without falling behind.

The central system (``adapters.ocpp.csms``) runs in this process on a free port with its
telemetry path (``services.ev_charging`` -> ``TelemetryService.ingest``) on a scratch database
(SQLite by default, ``--pg`` for a scratch PostgreSQL database). The fleet (``sim.chargers``,
charge points built with the ``ocpp`` library, 40 % OCPP 2.0.1 and 60 % 1.6J) runs in a separate
process, so the two do not share an interpreter lock: each charger connects, boots, receives its
default charging profile, starts a transaction (its ID tag registered, so authorized) and sends
meter values every ``--interval`` s. Each MeterValues is answered only after its values are
committed (group commit), so the round trip includes the database write.

Reported (one JSON line at the end): the ingest lag — the longest time from a meter value's
timestamp to its commit in telemetry (value) against the reporting interval (reference; a ratio
below 1 means the CSMS keeps up) — the fleet side's round trip of MeterValues calls (p50/p95/max),
how late the chargers' ticks ran, chargers connected at once, messages sent vs points stored,
CALLERRORs, and the longest flush.

    python benchmarks/ocpp_fleet.py [--quick] [--chargers N] [--interval S] [--duration S] [--pg]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import city, drop_pg_database, pg_database, result  # noqa: E402
from openvpp.adapters.ocpp.csms import CentralSystem  # noqa: E402
from openvpp.core.settings import Settings  # noqa: E402
from openvpp.services import setup  # noqa: E402
from openvpp.services.ev_charging import ChargingService  # noqa: E402
from openvpp.services.telemetry import TelemetryService  # noqa: E402
from openvpp.store import db, timeseries  # noqa: E402


def pile_ids(city_dir: Path, n: int) -> list[str]:
    import pyarrow.csv as pacsv

    t = pacsv.read_csv(city_dir / "resources.csv", convert_options=pacsv.ConvertOptions(
        include_columns=["resource_id", "resource_type", "capacity_kw"]))
    ids = [f"{r},{kw}" for r, k, kw in zip(t.column("resource_id").to_pylist(), t.column("resource_type").to_pylist(),
                                            t.column("capacity_kw").to_pylist(), strict=True)
           if k in ("ev_charging", "v2g_charger")]
    if len(ids) < n:
        raise SystemExit(f"the city has {len(ids)} piles, fewer than {n}")
    return ids[:n]


async def run(url_db: str, ids: list[str], interval: float, duration: float, ramp: float) -> dict:
    engine = db.get_engine(url_db)
    service = ChargingService(engine, TelemetryService(engine))
    csms = CentralSystem(service, flush_s=1.0)
    port = await csms.start("127.0.0.1", 0)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(ids))
        ids_file = fh.name
    cmd = [sys.executable, "-m", "openvpp.sim.chargers", "--url", f"ws://127.0.0.1:{port}", "--ids-file", ids_file,
           "--interval", str(interval), "--duration", str(duration), "--ramp", str(ramp)]
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    peak = 0
    while proc.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 1.0)
        peak = max(peak, len(csms.connected))
    out, errs = await proc.communicate()
    wall = time.perf_counter() - t0
    await csms.stop()
    if proc.returncode:
        raise SystemExit(f"fleet failed: {errs.decode()[-2000:]}")
    fleet = json.loads(out.decode().strip().splitlines()[-1])
    with engine.connect() as conn:
        stored = timeseries.count_raw(conn)
    return {"fleet": fleet, "csms": csms.stats, "stored": stored, "peak_connected": peak, "wall_s": wall,
            "service": service.counters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 chargers for 15 s (under 30 s)")
    ap.add_argument("--chargers", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of reporting after the ramp")
    ap.add_argument("--ramp", type=float, default=20.0, help="seconds over which the chargers connect")
    ap.add_argument("--pg", action="store_true", help="a scratch PostgreSQL database instead of SQLite")
    args = ap.parse_args()
    n, duration, ramp = args.chargers, args.duration, args.ramp
    if args.quick:
        n, duration, ramp = min(n, 200), 15.0, 3.0
    city_dir = city(2_000)
    ids = pile_ids(city_dir, n)
    tmp = Path(tempfile.mkdtemp(prefix="ocpp-bench-"))
    name = "openvpp_bench_ocpp"
    url = pg_database(name) if args.pg else f"sqlite:///{tmp / 'openvpp.db'}"
    db.upgrade(url)
    setup.load_city(Settings(home=tmp, database_url=url), city_dir)
    tags = ChargingService(db.get_engine(db.normalise_url(url)))
    for i in ids:                          # the fleet's ID tags (sim.chargers: "TAG" + the id's last 8)
        tags.register_tag("TAG" + i.split(",")[0][-8:], "Accepted")
    try:
        res = asyncio.run(run(db.normalise_url(url), ids, args.interval, duration, ramp))
    finally:
        db.get_engine(db.normalise_url(url)).dispose()
        if args.pg:
            drop_pg_database(name)
    f, c = res["fleet"], res["csms"]
    lag = c["ingest_lag_max_s"]
    print(f"{n} chargers ({res['peak_connected']} connected at once), {f['sent']:,} meter values sent, "
          f"{res['stored']:,} telemetry points stored, {c['callerrors']} CALLERRORs, {f['errors']} connection errors, "
          f"{res['service']['rejected_points']} points rejected by telemetry validation")
    print(f"ingest lag max {lag:.2f} s (interval {args.interval:.0f} s), longest flush {c['flush_max_s']:.3f} s; "
          f"MeterValues round trip p50 {f['rtt_p50_s'] * 1000:.1f} ms p95 {f['rtt_p95_s'] * 1000:.1f} ms "
          f"max {f['rtt_max_s'] * 1000:.0f} ms; ticks late p95 {f['late_p95_s'] * 1000:.1f} ms")
    result("ocpp_fleet_ingest_lag", lag, "s", args.interval, n, peak_connected=res["peak_connected"],
           meter_values_sent=f["sent"], points_stored=res["stored"], callerrors=c["callerrors"],
           connection_errors=f["errors"], rejected_points=res["service"]["rejected_points"], rtt_p95_s=f["rtt_p95_s"], rtt_max_s=f["rtt_max_s"],
           ticks_late_p95_s=f["late_p95_s"], flush_max_s=round(c["flush_max_s"], 4), duration_s=duration,
           database="postgresql" if args.pg else "sqlite")


if __name__ == "__main__":
    main()
