"""Sustained end-to-end telemetry ingest: MQTT (the real Mosquitto) → validation → PostgreSQL.

A publisher process sends gateway batches (QoS 1, 500 points per message: an operator's
concentrator forwarding its devices' 1-second reports) for a generated city; the platform's MQTT ingest
(persistent session, PUBACK after commit) decodes, validates and stores them idempotently in
the daily-partitioned ``telemetry_raw``. The value is the sustained rate: points committed per
second from the first publish to the last commit. The reference is a plain COPY of the same
points into a bare table (no key, no partition, no validation) in the same run.

The publisher keeps at most ``--window`` messages ahead of what the ingest has committed, as a
fleet of real devices does not burst faster than time passes; Mosquitto's default queue for
one client (1,000 messages) is never the limit. Points are stamped as they are published (one
time per report, as live devices do), so minutes close while the stream runs.

Two passes on the same messages, each into emptied tables:

- rollups on (the production worker): the rollup timer (``services.telemetry.upkeep``, every 5 s)
  runs beside the ingest loop and rolls up each minute once it has closed; after the last commit
  the minutes still open are rolled up (the tail). The value is this pass: every point stored
  **and** rolled up, ``points / (stream seconds + tail seconds)``; the stream-only rate is reported too.
- rollups off: the ingest alone (the run is rolled up afterwards, reported for information).

    python benchmarks/ingest.py [--quick] [--devices N] [--points P]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing as mp
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

from _common import city, drop_pg_database, pg_database, result  # noqa: E402
from openvpp.adapters.mqtt.ingest import MqttIngest  # noqa: E402
from openvpp.services import registry  # noqa: E402
from openvpp.services.telemetry import TelemetryConfig, TelemetryService, encode_columns  # noqa: E402
from openvpp.sim.devices import DeviceFleet  # noqa: E402
from openvpp.store import db, timeseries  # noqa: E402

BROKER = os.environ.get("OPENVPP_BENCH_MQTT", "127.0.0.1:1883")
POINTS_PER_MESSAGE = 500
#: the timestamp every point carries in the prepared messages; the publisher writes the real one
STAMP = b"9999999999999"


def build_messages(city_dir: Path, n_points: int) -> tuple[list[tuple[str, bytes, int]], dict]:
    """Concentrator batches of 500 points: each operator's devices, in gateways of 500, one message
    per gateway and report, in report order (gateways interleaved within a report). Each message is
    (topic under ``{root}``, payload with ``STAMP`` for its points' time, report number)."""
    fleet = DeviceFleet.from_city(city_dir, drop=0.0)
    reports = max(1, -(-n_points // fleet.n))
    t0 = int(time.time() * 1000) - (reports + 5) * 1000        # all in the recent past
    gateways = []
    for op in np.unique(fleet.operator_id):
        rows = np.flatnonzero(fleet.operator_id == op)
        for k, start in enumerate(range(0, len(rows), POINTS_PER_MESSAGE)):
            gateways.append((str(op), f"GW-{op}-{k:04d}", rows[start:start + POINTS_PER_MESSAGE]))
    rng = np.random.default_rng(1)
    msgs: list[tuple[str, bytes, int]] = []
    cols: dict[str, list] = {"device": [], "ts": [], "p": []}
    total = 0
    for k in range(reports):
        ts_k = t0 + k * 1000
        p = fleet.power(ts_k)
        for g in rng.permutation(len(gateways)):
            op, gw, rows = gateways[g]
            if total >= n_points:
                break
            dev = fleet.resource_id[rows]
            ts = np.full(len(rows), ts_k)
            payload = encode_columns(gw, dev.tolist(), np.full(len(rows), int(STAMP)), p[rows])
            msgs.append((f"tele/{op}/{gw}", payload, k))
            cols["device"].append(dev)
            cols["ts"].append(ts)
            cols["p"].append(p[rows])
            total += len(rows)
    points = {k: np.concatenate(v) for k, v in cols.items()}
    return msgs, {"points": total, "devices": fleet.n, "reports": reports, "arrays": points}


def publisher(msgs: list[tuple[str, bytes, int]], root: str, host: str, port: int, done: mp.Value, window: int,
              started: mp.Event, finished: mp.Value) -> None:
    """Separate process: publish with QoS 1, at most ``window`` messages ahead of the committed count,
    each report's points stamped with the time its first message leaves (later than the previous
    report's, so a device never repeats a timestamp)."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}",
                    protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.connect(host, port)
    c.loop_start()
    started.set()
    infos = []
    report, stamp_ms = -1, 0
    for i, (topic, payload, k) in enumerate(msgs):
        while i - done.value > window:
            time.sleep(0.001)
        if k != report:
            report, stamp_ms = k, max(int(time.time() * 1000), stamp_ms + 1)
            stamp = str(stamp_ms).encode()
        infos.append(c.publish(f"{root}/{topic}", payload.replace(STAMP, stamp), qos=1))
    for info in infos:
        info.wait_for_publish(60)
    finished.value = time.time()
    c.loop_stop()
    c.disconnect()


def bare_copy(engine, arrays: dict) -> float:
    """Plain COPY of the same points into a table with no key, no partition, no check."""
    t = pa.table({"device_id": pa.array(arrays["device"], pa.string()),
                  "ts": pa.array(arrays["ts"].astype("datetime64[ms]"), pa.timestamp("ms", "UTC")),
                  "power_kw": pa.array(arrays["p"])})
    buf = io.BytesIO()
    pacsv.write_csv(t, buf, pacsv.WriteOptions(include_header=False))
    payload = buf.getvalue()
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS telemetry_bare")
        conn.exec_driver_sql("CREATE TABLE telemetry_bare (device_id text, ts timestamptz, power_kw float8)")
    t0 = time.perf_counter()
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy("COPY telemetry_bare FROM STDIN (FORMAT csv)") as cp:
            view = memoryview(payload)
            for i in range(0, len(view), 8 << 20):
                cp.write(view[i:i + (8 << 20)])
    return time.perf_counter() - t0


def idempotent_write(engine, arrays: dict) -> float:
    """The store's write path alone on the same points, into an emptied telemetry_raw (new points:
    the binary COPY into the partition; the key still checks every one)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE telemetry_raw, telemetry_dirty")
    n = len(arrays["device"])
    nan = np.full(n, np.nan)
    batch = timeseries.RawBatch(arrays["device"], arrays["ts"].astype(np.int64), arrays["p"], nan, nan, nan, nan,
                                np.zeros(n, np.int16), np.full(n, "bench", dtype=object))
    t0 = time.perf_counter()
    for start in range(0, n, 100_000):
        part = timeseries.RawBatch(*(getattr(batch, f)[start:start + 100_000]
                                     for f in timeseries.RawBatch.__dataclass_fields__))
        with engine.begin() as conn:
            timeseries.write_points(conn, part)
    return time.perf_counter() - t0


def stream(svc: TelemetryService, msgs: list, total: int, host: str, port: str, window: int,
           rollups: bool) -> dict:
    """One pass: publish every message, ingest it (the rollup timer on or off), until the last commit."""
    with svc.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE telemetry_raw, telemetry_dirty, telemetry_rollup, telemetry_group_rollup")
    root = f"openvpp-bench-{uuid.uuid4().hex[:8]}/v1"

    async def run() -> tuple[float, float, object]:
        ingest = MqttIngest(svc, f"mqtt://{host}:{port}/{root}", client_id=f"bench-{uuid.uuid4().hex[:6]}",
                            refresh_every_s=5.0 if rollups else 0)
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        await asyncio.wait_for(ingest.subscribed.wait(), 10)
        done, finished, started = mp.Value("q", 0), mp.Value("d", 0.0), mp.Event()
        proc = mp.get_context("fork").Process(
            target=publisher, args=(msgs, root, host, int(port), done, window, started, finished))
        proc.start()
        await asyncio.to_thread(started.wait, 30)
        t0 = time.time()
        while ingest.stats.points < total and proc.is_alive() or ingest.stats.messages < len(msgs):
            done.value = ingest.stats.messages
            await asyncio.sleep(0.002)
            if time.time() - t0 > 600:
                raise RuntimeError(f"only {ingest.stats.points:,} of {total:,} points after 600 s")
        t1 = time.time()
        stop.set()
        await task
        proc.join(30)
        return t0, t1, ingest.stats

    t0, t1, stats = asyncio.run(run())     # returns once a refresh the timer had begun has finished
    seconds = t1 - t0
    with svc.engine.connect() as conn:
        rolled_during = conn.exec_driver_sql("SELECT coalesce(sum(n), 0) FROM telemetry_rollup "
                                             "WHERE step_s = 60").scalar()
    minutes = svc.refresh_rollups(include_open=True)
    tail_s = time.time() - t1                # from the last commit until every point is rolled up
    with svc.engine.connect() as conn:
        stored = timeseries.count_raw(conn)
        rolled = conn.exec_driver_sql("SELECT coalesce(sum(n), 0) FROM telemetry_rollup WHERE step_s = 60").scalar()
    assert stored == total == stats.inserted, (stored, total, stats.inserted)
    assert rolled == total, (rolled, total)     # every point is in exactly one minute rollup
    return {"seconds": seconds, "rate": total / seconds, "tail_s": tail_s, "tail_minutes": minutes,
            "rolled_during": int(rolled_during), "batches": stats.batches, "messages": stats.messages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300,000 points (under 30 s)")
    ap.add_argument("--devices", type=int, default=50_000)
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--window", type=int, default=400, help="messages the publisher may run ahead")
    ap.add_argument("--db", default="openvpp_bench_ingest", help="scratch PostgreSQL database (dropped after)")
    args = ap.parse_args()
    n_points = args.points or (300_000 if args.quick else 3_000_000)
    city_dir = city(args.devices)
    name = args.db
    url = pg_database(name)
    host, port = BROKER.split(":")
    try:
        db.upgrade(url)
        engine = db.get_engine(url)
        with engine.begin() as conn:
            registry.load_city(conn, city_dir)
        msgs, info = build_messages(city_dir, n_points)
        total = info["points"]
        print(f"{total:,} points of {info['devices']:,} devices in {len(msgs):,} gateway messages "
              f"({sum(len(m[1]) for m in msgs) / len(msgs) / 1024:.1f} KiB each)")
        svc = TelemetryService(engine, TelemetryConfig())
        svc.index()
        svc.maintain()
        on = stream(svc, msgs, total, host, port, args.window, rollups=True)
        off = stream(svc, msgs, total, host, port, args.window, rollups=False)
        copy_s = bare_copy(engine, info["arrays"])
        copy_rate = total / copy_s
        write_s = idempotent_write(engine, info["arrays"])
        complete = total / (on["seconds"] + on["tail_s"])
        print(f"rollups on:  {total:,} points in {on['seconds']:.2f} s = {on['rate']:,.0f} points/s while the "
              f"rollup timer ran beside ({on['rolled_during']:,} points rolled up during the stream); the minutes "
              f"still open afterwards ({on['tail_minutes']}) in {on['tail_s']:.2f} s; stored and rolled up: "
              f"{complete:,.0f} points/s")
        print(f"rollups off: {total:,} points in {off['seconds']:.2f} s = {off['rate']:,.0f} points/s "
              f"({off['batches']} database batches, {off['messages'] / off['batches']:.1f} messages each); rolling "
              f"them up afterwards: {off['tail_s']:.2f} s")
        print(f"plain COPY of the same points: {copy_s:.2f} s = {copy_rate:,.0f} points/s; the idempotent write "
              f"alone (binary COPY into the day's partition, keyed; 100,000-point batches, no MQTT): "
              f"{write_s:.2f} s = {total / write_s:,.0f} points/s")
        result("ingest", complete, "points/s", copy_rate, total, target=100_000, rollups="on",
               stream_points_s=round(on["rate"], 1), stream_s=round(on["seconds"], 3),
               rollup_tail_s=round(on["tail_s"], 3), rolled_up_during_stream=on["rolled_during"],
               rollups_off_points_s=round(off["rate"], 1), rollups_off_ratio=round(off["rate"] / copy_rate, 4),
               rollup_afterwards_s=round(off["tail_s"], 3), messages=len(msgs), devices=info["devices"],
               idempotent_write_points_s=round(total / write_s, 1))
    finally:
        db.get_engine(url).dispose()
        drop_pg_database(name)


if __name__ == "__main__":
    main()
