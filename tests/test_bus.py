"""The bus: the same behaviour in-process and on the real NATS JetStream server."""

import asyncio
import threading
import uuid

import pytest

from openvpp.bus import MemoryBus, connect, make_bus, matches

NATS_URL = "nats://127.0.0.1:4222"


def test_subject_wildcards():
    assert matches("tele.accepted", "tele.accepted")
    assert matches("tele.*", "tele.accepted") and not matches("tele.*", "tele.a.b")
    assert matches("tele.>", "tele.a.b") and not matches("tele.>", "tele")
    assert not matches("cmd.*", "tele.accepted")


@pytest.mark.parametrize("kind", ["memory", "nats"])
def test_publish_subscribe_from_loop_and_from_threads(kind):
    async def main():
        url = "memory://" if kind == "memory" else f"{NATS_URL}/t{uuid.uuid4().hex[:10]}"
        try:
            bus = await asyncio.wait_for(connect(url), 5)
        except Exception as exc:   # fail, never skip: CI must have NATS
            pytest.fail(f"NATS is required at {NATS_URL}: {exc}")
        sub = await bus.subscribe("tele.*")
        other = await bus.subscribe("cmd.>")
        await bus.publish("tele.accepted", b"one")
        t = threading.Thread(target=bus.publish_threadsafe, args=("tele.accepted", b"two"))
        t.start()
        t.join()
        got = [await sub.get(5), await sub.get(5)]
        assert sorted(m.data for m in got) == [b"one", b"two"]
        assert all(m.subject == "tele.accepted" for m in got)
        assert await other.get(0.2) is None
        await sub.close()
        await other.close()
        if kind == "nats":
            await bus.js.delete_stream(bus.stream)
        await bus.close()

    asyncio.run(main())


def test_a_slow_subscriber_drops_the_oldest_and_never_blocks_the_publisher():
    async def main():
        bus = MemoryBus()
        sub = await bus.subscribe("x", maxsize=3)
        for i in range(10):
            bus.publish_threadsafe("x", str(i).encode())
        assert [(await sub.get(1)).data for _ in range(3)] == [b"7", b"8", b"9"]
        assert sub.dropped == 7

    asyncio.run(main())


def test_unknown_bus_url_is_refused():
    with pytest.raises(ValueError, match="memory://"):
        make_bus("kafka://x")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_live_view_follows_an_ingest_in_another_process_over_nats(loaded):
    """An ingest worker and an API process share nothing but NATS: accepted points reach the live view."""
    import time as _time

    from openvpp.services.live import LiveService
    from openvpp.services.telemetry import Points, TelemetryConfig, TelemetryService
    from openvpp.store import db

    async def main():
        url = f"{NATS_URL}/t{uuid.uuid4().hex[:10]}"
        api_bus, worker_bus = await connect(url), await connect(url)   # two connections, as two processes
        cfg = TelemetryConfig(live_refresh_s=0.1)
        live = await LiveService(db.get_engine(loaded.database_url), api_bus, cfg).start()
        svc = TelemetryService(db.get_engine(loaded.database_url), cfg, publish=worker_bus.publish_threadsafe)
        now = int(_time.time() * 1000)
        pts = Points.from_columns({"d": ["R1", "R4"], "t": [now, now], "p": [120.0, 30.0]})
        await asyncio.to_thread(svc.ingest, pts, "mqtt", "gw")
        for _ in range(100):
            if live.latest.rows("city")[0]["online"] == 2:
                break
            await asyncio.sleep(0.05)
        city = live.latest.rows("city")[0]
        await live.stop()
        await api_bus.js.delete_stream(api_bus.stream)
        await api_bus.close()
        await worker_bus.close()
        return city

    city = asyncio.run(main())
    assert city["online"] == 2 and city["power_kw"] == 150.0
