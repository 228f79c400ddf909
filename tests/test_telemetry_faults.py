"""Faults mid-stream: the broker restarts, then the database refuses connections for a while, just
as the ingest's registry snapshot is due for a reload.

A private Mosquitto (persistence on, free port) is started for this test so it can be stopped
and started again; the database is this test's own PostgreSQL database. With QoS 1, PUBACK after
commit and idempotent writes, every point the publisher got acknowledged is stored exactly once,
and the ingest reconnects by itself and reports both gaps.
"""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import uuid

import aiomqtt
import numpy as np
import psycopg
import pytest
from sqlalchemy import func, select

from openvpp.adapters.mqtt.broker import free_port
from openvpp.adapters.mqtt.ingest import MqttIngest
from openvpp.services.telemetry import TelemetryConfig, TelemetryService
from openvpp.store import db, timeseries
from openvpp.store.schema_telemetry import telemetry_rollup
from tests.conftest import PG_ADMIN

N_MESSAGES = 240
DEVICES = ("R1", "R2", "R3")
PER_DEVICE = 16


def start_mosquitto(tmp_path, port):
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = tmp_path / "mosquitto.conf"
    data = tmp_path / "mosq-data"
    data.mkdir(exist_ok=True)
    # as root, mosquitto drops to user 'mosquitto', who cannot write pytest's folder: no persistence
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n{user}persistence true\n"
                    f"persistence_location {data}/\nmax_queued_messages 0\nautosave_interval 1\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"could not start a private mosquitto ({exe}) on port {port}")


def stop(proc):
    proc.terminate()   # SIGTERM: mosquitto saves its persistence file
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def message(root, k, base):
    pts = [{"d": d, "t": base + k * 1000 + j, "p": float(k % 50 + j)} for d in DEVICES for j in range(PER_DEVICE)]
    return f"{root}/tele/OP01/S1", json.dumps({"gw": "S1", "points": pts}).encode()


async def publish_reliably(port, msgs, on_sent):
    """Publish each message until its PUBACK arrives, reconnecting as often as needed."""
    k = 0
    while k < len(msgs):
        try:
            async with aiomqtt.Client("127.0.0.1", port, timeout=3) as c:
                while k < len(msgs):
                    await c.publish(*msgs[k], qos=1, timeout=3)
                    k += 1
                    await on_sent(k)
                    await asyncio.sleep(0.01)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)   # broker away: try again; a re-sent message is harmless


@pytest.mark.parametrize("protocol", [5, 311])
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_broker_restart_and_database_outage_lose_and_double_nothing(loaded, tmp_path, protocol):
    port = free_port()
    dbname = db.get_engine(loaded.database_url).url.database
    root = f"openvpp-fault-{uuid.uuid4().hex[:8]}/v1"
    url = f"mqtt://127.0.0.1:{port}/{root}"
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    base = int(time.time() * 1000) - 3_600_000
    msgs = [message(root, k, base) for k in range(N_MESSAGES)]
    expected = N_MESSAGES * len(DEVICES) * PER_DEVICE
    broker = {"proc": start_mosquitto(tmp_path, port)}
    events = []

    def set_connections(allowed: bool):
        with psycopg.connect(PG_ADMIN, autocommit=True) as a:
            a.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
            if not allowed:
                a.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))

    async def restart_broker():
        events.append("broker down")
        await asyncio.to_thread(stop, broker["proc"])
        await asyncio.sleep(1.0)
        broker["proc"] = await asyncio.to_thread(start_mosquitto, tmp_path, port)
        events.append("broker up")

    async def database_outage():
        events.append("database down")
        await asyncio.to_thread(set_connections, False)
        svc.expire_index()   # the registry snapshot falls due (every 300 s in production) while the database is away
        await asyncio.sleep(1.5)
        await asyncio.to_thread(set_connections, True)
        events.append("database up")

    faults = []

    async def on_sent(k):   # the faults run beside the stream: the publisher keeps going
        if k == N_MESSAGES // 3:
            faults.append(asyncio.create_task(restart_broker()))
        if k == 2 * N_MESSAGES // 3:
            faults.append(asyncio.create_task(database_outage()))

    def stored():
        with db.get_engine(loaded.database_url).connect() as conn:
            return timeseries.count_raw(conn)

    async def main():
        ingest = MqttIngest(svc, url, client_id=f"fault-{uuid.uuid4().hex[:6]}", max_backoff_s=0.5, protocol=protocol,
                            max_wait_s=0.02)
        halt = asyncio.Event()
        task = asyncio.create_task(ingest.run(halt))
        await asyncio.wait_for(ingest.subscribed.wait(), 10)
        await publish_reliably(port, msgs, on_sent)
        await asyncio.gather(*faults)
        t0 = time.monotonic()
        while await asyncio.to_thread(stored) < expected and time.monotonic() - t0 < 60:
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)   # anything late would show up now
        halt.set()
        await task
        return ingest.stats

    try:
        stats = asyncio.run(main())
    finally:
        set_connections(True)
        stop(broker["proc"])
    assert events == ["broker down", "broker up", "database down", "database up"]
    svc.refresh_rollups()   # the minutes the worker had not rolled up yet
    with db.get_engine(loaded.database_url).connect() as conn:
        assert timeseries.count_raw(conn) == expected                      # nothing lost, nothing doubled
        n = conn.execute(select(func.sum(telemetry_rollup.c.n)).where(telemetry_rollup.c.step_s == 60)).scalar()
        assert n == expected                                               # rollups counted each point once
        gaps = timeseries.read_gaps(conn)
    assert stats.connects >= 2
    assert {g["kind"] for g in gaps} == {"broker", "database"}
    assert all(g["seconds"] > 0 for g in gaps)
    assert stats.inserted == expected and stats.rejected == 0
    assert svc.index_failures >= 1                                         # the due reload did fail, and was survived
    assert stats.restarts == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_registry_reload_during_an_outage_keeps_the_snapshot_unless_devices_are_unknown(loaded):
    """A reload that falls due while the database is away keeps the snapshot (the stream goes on);
    a reload asked for because a batch names unknown devices raises, so that batch waits for the
    database instead of being refused by a stale snapshot."""
    from sqlalchemy.exc import OperationalError

    dbname = db.get_engine(loaded.database_url).url.database
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    first = svc.index()

    def allow(ok: bool):
        with psycopg.connect(PG_ADMIN, autocommit=True) as a:
            a.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {"true" if ok else "false"}')
            if not ok:
                a.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))

    allow(False)
    try:
        svc.expire_index()
        assert svc.index() is first and svc.index_failures == 1
        assert svc.index() is first and svc.index_failures == 1     # not retried at once: the next try is 5 s on
        with pytest.raises(OperationalError):
            svc.index(refresh=True)
    finally:
        allow(True)
    svc.expire_index()
    fresh = svc.index()
    assert fresh is not first and fresh.lookup(np.array(["R1", "nope"], dtype=object)).tolist()[1] == -1
