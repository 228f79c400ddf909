"""The telemetry path of a test city over the real Mosquitto, for the end-to-end tests: the
in-process bus, the telemetry service, the live view, the MQTT ingest and the simulated devices,
running until the block ends (then stopped, and the last minutes rolled up)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from openvpp.adapters.mqtt.ingest import MqttIngest
from openvpp.bus import connect
from openvpp.services.live import LiveService
from openvpp.services.telemetry import TelemetryService
from openvpp.sim.devices import run_devices

MOSQUITTO = "127.0.0.1:1883"


@dataclass
class Running:
    url: str                          # the MQTT root the devices and the platform share
    stop: asyncio.Event               # set it to end the devices and the ingest (the block does)
    live: LiveService
    service: TelemetryService
    status: Callable[[list[str]], dict]   # device id -> its live status now (online, power...)


@asynccontextmanager
async def reporting_fleet(engine, config, clock, fleet, prefix: str, online: list[str]) -> AsyncIterator[Running]:
    """Devices of ``fleet`` reporting through Mosquitto into ``engine``; entered once every device
    of ``online`` shows online in the live view (at most 20 s of waiting each)."""
    url = f"mqtt://{MOSQUITTO}/openvpp-{prefix}-{uuid.uuid4().hex[:10]}/v1"
    stop = asyncio.Event()
    bus = await connect("memory://")
    svc = TelemetryService(engine, config, publish=bus.publish_threadsafe, clock=clock)
    live = await LiveService(engine, bus, config, clock=clock).start()
    ingest = asyncio.create_task(MqttIngest(svc, url, client_id=f"{prefix}-{uuid.uuid4().hex[:6]}",
                                            max_wait_s=0.05).run(stop))
    reporting = asyncio.Event()
    sim = asyncio.create_task(run_devices(fleet, url, stop, on_report=lambda k, t: reporting.set()))

    def status(ids: list[str]) -> dict:
        now_ms = int(clock() * 1000)
        return {i: live.state.device(i, now_ms) for i in ids}

    try:
        await asyncio.wait_for(reporting.wait(), 20)
        t0 = time.monotonic()
        while not all(s["online"] for s in status(online).values()):
            assert time.monotonic() - t0 < 20, "devices never came online in the live view"
            await asyncio.sleep(0.1)
        yield Running(url, stop, live, svc, status)
    finally:
        stop.set()
        await asyncio.gather(sim, ingest, return_exceptions=True)
        await live.stop()
        svc.refresh_rollups(include_open=True)
