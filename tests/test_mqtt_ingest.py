"""MQTT ingest against the real Mosquitto (127.0.0.1:1883) and the embedded amqtt broker.

Every test uses its own topic root and client id, so parallel runs never see each other's
messages. A broker that cannot be reached fails the test (never skips).
"""

import asyncio
import json
import time
import uuid

import aiomqtt
import pytest

from openvpp.adapters.mqtt import parse_url
from openvpp.adapters.mqtt.broker import EmbeddedBroker
from openvpp.adapters.mqtt.ingest import MqttIngest
from openvpp.services.telemetry import TelemetryConfig, TelemetryService
from openvpp.store import db, timeseries

MOSQUITTO = "127.0.0.1:1883"


def unique_root() -> str:
    return f"openvpp-test-{uuid.uuid4().hex[:10]}/v1"


def batch(points, gw="S1") -> bytes:
    return json.dumps({"gw": gw, "points": points}).encode()


async def publish_all(url: str, messages, protocol=aiomqtt.ProtocolVersion.V5) -> None:
    u = parse_url(url)
    try:
        async with aiomqtt.Client(u.host, u.port, protocol=protocol, timeout=10) as c:
            for topic, payload in messages:
                await c.publish(topic, payload, qos=1)
    except aiomqtt.MqttError as exc:
        pytest.fail(f"the MQTT broker at {u.host}:{u.port} is required: {exc}")


async def wait_for(pred, timeout=20.0):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            return False
        await asyncio.sleep(0.05)
    return True


def count(url):
    with db.get_engine(url).connect() as conn:
        return timeseries.count_raw(conn)


def test_gateway_batches_over_mosquitto_are_validated_stored_once_and_acknowledged(loaded):
    root = unique_root()
    url = f"mqtt://{MOSQUITTO}/{root}"
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    now = int(time.time() * 1000)

    async def main():
        ingest = MqttIngest(svc, url, client_id=f"ingest-{uuid.uuid4().hex[:8]}", max_wait_s=0.02)
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        if not await wait_for(ingest.subscribed.is_set, 10):
            stop.set()
            await task
            pytest.fail(f"Mosquitto is required at {MOSQUITTO}")
        op1 = f"{root}/tele/OP01/S1"
        msgs = [(op1, batch([{"d": "R1", "t": now - i * 1000, "p": 100.0 + i} for i in range(50)])),
                (op1, batch([{"d": "R1", "t": now - i * 1000, "p": 100.0 + i} for i in range(50)])),   # re-sent
                (op1, batch([{"d": "R4", "t": now, "p": 10.0}, {"d": "R2", "t": now, "p": -50.0}])),  # R4: OP02's
                (op1, b"garbage"),
                (f"{root}/tele/OP02/S2", json.dumps({"gw": "S2", "cols": {"d": ["R4", "R5"], "t": [now, now],
                                                                          "p": [60.0, -30.0]}}).encode())]
        await publish_all(url, msgs)
        assert await wait_for(lambda: ingest.stats.messages >= 5)
        stop.set()
        await task
        return ingest.stats

    stats = asyncio.run(main())
    assert count(loaded.database_url) == 50 + 1 + 2
    assert (stats.inserted, stats.duplicates, stats.rejected, stats.refused_messages) == (53, 50, 1, 1)
    with db.get_engine(loaded.database_url).connect() as conn:
        c = {r["reason"]: r["n"] for r in timeseries.read_counters(conn, __import__("datetime").date(2000, 1, 1))}
        sources = {r[0] for r in conn.exec_driver_sql("SELECT DISTINCT source FROM telemetry_raw")}
    assert c["foreign_device"] == 1 and c["refused_message"] == 1 and c["duplicate"] == 50
    assert sources == {"S1", "S2"}


def test_the_broker_queues_for_a_persistent_session_while_the_ingest_is_down(loaded):
    root = unique_root()
    url = f"mqtt://{MOSQUITTO}/{root}"
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)

    async def run_until(ingest, pred):
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        assert await wait_for(ingest.subscribed.is_set, 10), f"Mosquitto is required at {MOSQUITTO}"
        ok = await wait_for(pred)
        stop.set()
        await task
        return ok

    async def main():
        first = MqttIngest(svc, url, client_id=client_id)
        assert await run_until(first, lambda: True)   # creates the session and its subscription
        # while the ingest is down the broker keeps what arrives for the session
        await publish_all(url, [(f"{root}/tele/OP01/S1", batch([{"d": "R1", "t": now - k * 1000, "p": float(k)}]))
                                for k in range(1, 21)])
        second = MqttIngest(svc, url, client_id=client_id)
        assert await run_until(second, lambda: second.stats.messages >= 20)
        # clean up the session on the broker
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=client_id, clean_session=True):
            pass

    asyncio.run(main())
    assert count(loaded.database_url) == 20


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_embedded_broker_carries_telemetry_without_mosquitto(loaded):
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    now = int(time.time() * 1000)

    async def main():
        broker = await EmbeddedBroker().start()
        assert broker.port != 1883
        root = unique_root()
        url = f"{broker.url}/{root}"
        ingest = MqttIngest(svc, url, client_id="embedded-ingest", protocol=311)
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        assert await wait_for(ingest.subscribed.is_set, 10)
        await publish_all(url, [(f"{root}/tele/OP01/S1", batch([{"d": "R1", "t": now, "p": 5.0}]))],
                          protocol=aiomqtt.ProtocolVersion.V311)
        assert await wait_for(lambda: ingest.stats.inserted >= 1)
        stop.set()
        await task
        await broker.stop()

    asyncio.run(main())
    assert count(loaded.database_url) == 1


def test_command_channel_gets_each_devices_acknowledgement(mini_city):
    from openvpp.adapters.mqtt.commands import CommandChannel
    from openvpp.sim.devices import DeviceFleet, run_devices

    root = unique_root()
    url = f"mqtt://{MOSQUITTO}/{root}"
    fleet = DeviceFleet.from_city(mini_city, speed=60.0)

    async def main():
        stop = asyncio.Event()
        reporting = asyncio.Event()   # set at the first report: the simulator has subscribed to its commands
        sim = asyncio.create_task(run_devices(fleet, url, stop, on_report=lambda k, t: reporting.set()))
        await asyncio.wait_for(reporting.wait(), 20)
        async with CommandChannel(url) as ch:
            acks = await asyncio.gather(
                ch.send("OP01", "R3", {"kind": "setpoint", "p": -100.0, "duration_s": 60}),
                ch.send("OP02", "R5", {"kind": "limit", "max_kw": 10.0, "duration_s": 60}),
                ch.send("OP01", "R1", {"kind": "dance"}))
        stop.set()
        await sim
        return acks

    acks = asyncio.run(main())
    assert [(a["device"], a["status"]) for a in acks] == [("R3", "accepted"), ("R5", "accepted"), ("R1", "rejected")]
    assert fleet.value_kw[fleet.pos["R3"]] == -100.0 and fleet.max_kw[fleet.pos["R5"]] == 10.0


def test_two_workers_of_a_share_group_split_the_stream_and_store_it_once(loaded):
    root = unique_root()
    url = f"mqtt://{MOSQUITTO}/{root}"
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    now = int(time.time() * 1000)
    group = f"g{uuid.uuid4().hex[:6]}"
    msgs = [(f"{root}/tele/OP01/S1", batch([{"d": "R1", "t": now - k * 1000, "p": 1.0},
                                            {"d": "R2", "t": now - k * 1000, "p": -1.0}])) for k in range(60)]

    async def main():
        workers = [MqttIngest(svc, url, client_id=f"{group}-{i}", share_group=group, max_wait_s=0.01)
                   for i in range(2)]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        for w in workers:
            assert await wait_for(w.subscribed.is_set, 10), f"Mosquitto is required at {MOSQUITTO}"
        await publish_all(url, msgs)
        assert await wait_for(lambda: sum(w.stats.messages for w in workers) >= 60)
        stop.set()
        await asyncio.gather(*tasks)
        for i in range(2):   # clean the sessions up on the broker
            async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"{group}-{i}", clean_session=True):
                pass
        return [w.stats.messages for w in workers]

    per_worker = asyncio.run(main())
    assert sum(per_worker) == 60 and min(per_worker) > 0
    assert count(loaded.database_url) == 120


def poison_messages(topic: str, now: int) -> list[tuple[str, bytes]]:
    """Messages that once stopped the worker (exceptions other than InvalidInput, or a value the
    database refuses on every retry), each followed in the stream by good points."""
    big = b"1" + b"0" * 400
    return [
        (topic, batch([{"d": "R1", "t": 10**20, "p": 1.0}])),                                   # t beyond int64
        (topic, b'{"points": [{"d": "R1", "t": %d, "p": %s}]}' % (now - 9000, big)),            # 400 digits
        (topic, b'{"points": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),                       # too deep
        (topic, batch([{"d": ["R1"], "t": now - 8000, "p": 1.0}])),                               # id not a string
        (topic, json.dumps({"cols": {"d": ["R1", "R2"], "t": [now - 7000, [1, 2]], "p": [1, 2]}}).encode()),
        (topic, json.dumps({"gw": "\u0000bad\ud800", "points": [{"d": "R2", "t": now - 6000, "p": -2.0}]}).encode()),
        (topic, b"\xff\xfe not utf-8"),
    ]


def test_the_stream_goes_on_after_poison_messages_and_each_is_acknowledged(loaded):
    root = unique_root()
    url = f"mqtt://{MOSQUITTO}/{root}"
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    topic = f"{root}/tele/OP01/S1"
    poison = poison_messages(topic, now)
    good = [(topic, batch([{"d": "R1", "t": now - k * 100, "p": 10.0 + k}])) for k in range(len(poison))]
    stream = [m for pair in zip(poison, good, strict=True) for m in pair]   # each poison message, then a good one

    async def session(expect, extra=()):
        ingest = MqttIngest(svc, url, client_id=client_id, max_wait_s=0.01)
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        assert await wait_for(ingest.subscribed.is_set, 10), f"Mosquitto is required at {MOSQUITTO}"
        await publish_all(url, extra)
        assert await wait_for(lambda: ingest.stats.messages >= expect)
        await asyncio.sleep(0.3)        # anything redelivered would be counted by now
        alive = not task.done()
        stop.set()
        await task
        return ingest.stats, alive

    async def main():
        first, alive = await session(len(stream), stream)
        # a new session with the same id: nothing comes back, every message was acknowledged
        again, _ = await session(1, [(topic, batch([{"d": "R1", "t": now - 50_000, "p": 1.0}]))])
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=client_id, clean_session=True):
            pass
        return first, alive, again

    first, alive, again = asyncio.run(main())
    assert alive and first.restarts == 0
    assert first.messages == len(stream) == 14
    # refused whole: too deep, not UTF-8; rejected points: t beyond int64, 400 digits, ["R1"], t a list;
    # stored: the 7 good messages, R1 beside the bad timestamp, R2 under its cleaned gateway name
    assert (first.refused_messages, first.rejected, first.inserted) == (2, 4, 7 + 1 + 1)
    assert again.messages == 1 and again.inserted == 1
    with db.get_engine(loaded.database_url).connect() as conn:
        c = {r["reason"]: r["n"] for r in timeseries.read_counters(conn, __import__("datetime").date(2000, 1, 1))}
        r2 = conn.exec_driver_sql("SELECT source FROM telemetry_raw WHERE device_id = 'R2'").scalars().all()
    assert c["refused_message"] == 2 and c["bad_timestamp"] == 2 and c["non_numeric"] == 1
    assert c["unknown_device"] == 1
    assert r2 == ["bad"]          # the NUL and the lone surrogate of its gateway name never reach the database
    assert count(loaded.database_url) == 7 + 1 + 1 + 1


def test_a_message_the_database_refuses_is_refused_alone_and_the_rest_is_stored(loaded, monkeypatch):
    """A batch failing for another reason than the database being away is stored again message by
    message; the message that still fails is counted as refused and acknowledged."""
    from sqlalchemy.exc import DataError

    root = unique_root()
    url = f"mqtt://{MOSQUITTO}/{root}"
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    real_commit = svc.commit

    def commit(prep):   # the database refuses any batch holding R2's point (as it would a value it cannot store)
        if "R2" in prep.batch.device.tolist():
            raise DataError("INSERT INTO telemetry_raw ...", {}, ValueError("value the database refuses"))
        return real_commit(prep)

    monkeypatch.setattr(svc, "commit", commit)
    now = int(time.time() * 1000)
    topic = f"{root}/tele/OP01/S1"
    msgs = [(topic, batch([{"d": "R1", "t": now - k * 1000, "p": float(k)}])) for k in range(6)]
    msgs.insert(3, (topic, batch([{"d": "R2", "t": now, "p": -5.0}])))
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"

    async def main():
        ingest = MqttIngest(svc, url, client_id=client_id, max_wait_s=0.2)   # the 7 messages in one batch
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        assert await wait_for(ingest.subscribed.is_set, 10), f"Mosquitto is required at {MOSQUITTO}"
        await publish_all(url, msgs)
        assert await wait_for(lambda: ingest.stats.messages >= len(msgs))
        alive = not task.done()
        stop.set()
        await task
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=client_id, clean_session=True):
            pass
        return ingest.stats, alive

    stats, alive = asyncio.run(main())
    assert alive and stats.isolated >= 1
    assert (stats.inserted, stats.refused_messages) == (6, 1)
    assert count(loaded.database_url) == 6


def test_an_unforeseen_error_restarts_the_loop_and_too_many_in_a_row_give_up(loaded):
    root = unique_root()
    url = f"mqtt://{MOSQUITTO}/{root}"
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    now = int(time.time() * 1000)
    ids = [f"ingest-{uuid.uuid4().hex[:8]}" for _ in range(2)]

    async def main():
        ingest = MqttIngest(svc, url, client_id=ids[0], max_backoff_s=0.2, max_restarts=2)
        real, calls = ingest._pump, []

        async def fails_once(client, stop):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("injected fault")
            await real(client, stop)

        ingest._pump = fails_once
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        assert await wait_for(ingest.subscribed.is_set, 10), f"Mosquitto is required at {MOSQUITTO}"
        await publish_all(url, [(f"{root}/tele/OP01/S1", batch([{"d": "R1", "t": now - k, "p": 1.0}]))
                                for k in range(3)])
        assert await wait_for(lambda: ingest.stats.inserted >= 3)
        stop.set()
        await task

        dead = MqttIngest(svc, url, client_id=ids[1], max_backoff_s=0.05, max_restarts=2)

        async def always_fails(client, stop):
            raise RuntimeError("injected fault")

        dead._pump = always_fails
        with pytest.raises(RuntimeError, match="injected fault"):
            await asyncio.wait_for(dead.run(asyncio.Event()), 30)
        for cid in ids:
            async with aiomqtt.Client("127.0.0.1", 1883, identifier=cid, clean_session=True):
                pass
        return ingest.stats, dead.stats

    stats, dead = asyncio.run(main())
    assert (stats.restarts, stats.connects, stats.inserted) == (1, 2, 3)
    assert [g["kind"] for g in stats.gaps] == ["worker"] and "injected fault" in stats.gaps[0]["detail"]
    assert dead.restarts == 3 and dead.inserted == 0
    with db.get_engine(loaded.database_url).connect() as conn:
        recorded = [(g["source"], g["kind"]) for g in timeseries.read_gaps(conn)]
    # the first worker's one restart, and the two restarts the second resumed from before it gave up
    assert sorted(recorded) == sorted([(f"mqtt:{ids[0]}", "worker")] + [(f"mqtt:{ids[1]}", "worker")] * 2)


def test_closed_minutes_are_rolled_up_on_a_timer_without_new_messages(loaded):
    root = unique_root()
    url = f"mqtt://{MOSQUITTO}/{root}"
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    minute = (int(time.time() * 1000) // 60_000 - 2) * 60_000      # a minute that has closed
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"

    def city_rollup():
        from datetime import UTC, datetime

        start = datetime.fromtimestamp(minute / 1000, UTC)
        with db.get_engine(loaded.database_url).connect() as conn:
            return timeseries.read_group_rollup(conn, 60, "city", None, start, start.replace(year=2100))

    async def main():
        ingest = MqttIngest(svc, url, client_id=client_id, refresh_every_s=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        assert await wait_for(ingest.subscribed.is_set, 10), f"Mosquitto is required at {MOSQUITTO}"
        await publish_all(url, [(f"{root}/tele/OP01/S1", batch([{"d": "R1", "t": minute + 1000, "p": 100.0},
                                                                 {"d": "R1", "t": minute + 2000, "p": 300.0}]))])
        assert await wait_for(lambda: ingest.stats.inserted == 2)
        rolled = await wait_for(lambda: bool(city_rollup()))
        messages = ingest.stats.messages
        stop.set()
        await task
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=client_id, clean_session=True):
            pass
        return rolled, messages

    rolled, messages = asyncio.run(main())
    assert rolled and messages == 1          # rolled up with no message after the one that wrote the points
    rows = city_rollup()
    assert [(r["power_kw"], r["n_points"]) for r in rows] == [(200.0, 2)]
