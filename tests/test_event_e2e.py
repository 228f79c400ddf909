"""A peak-shaving event end to end over the real PostgreSQL and Mosquitto: the city publishes,
operators declare, the city clears and instructs, each operator's system acknowledges, splits its
share to simulated devices over MQTT (they obey and acknowledge), one device drops out, its share
is re-dispatched to the others, and the devices' telemetry shows the reduction."""

import asyncio
import shutil
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from openvpp.adapters.mqtt.commands import CommandChannel
from openvpp.adapters.mqtt.ingest import MqttIngest
from openvpp.adapters.operator_agent import OperatorAgent
from openvpp.bus import connect
from openvpp.services import events, setup
from openvpp.services.live import LiveService
from openvpp.services.telemetry import TelemetryConfig, TelemetryService
from openvpp.sim.devices import DeviceFleet, run_devices
from openvpp.store import db
from openvpp.store.audit import Actor
from tests.conftest import append_rows, chiller_rows

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
MOSQUITTO = "127.0.0.1:1883"
DISPATCHER = Actor("disp", "dispatcher")
OP1 = Actor("op1", "operator_admin", operator_id="OP01")
OP2 = Actor("op2", "operator_admin", operator_id="OP02")


@pytest.fixture
def city_dir(mini_city, tmp_path):
    """The mini city with 1 MW trading units: 4 chillers of OP01 under GZ-TH-S01, 3 of OP02 under GZ-HZ-S01."""
    out = tmp_path / "e2e_city"
    shutil.copytree(mini_city, out)
    append_rows(out, chiller_rows(latency_s=5))
    return out


def test_peak_shaving_event_over_mosquitto_with_a_device_dropping_out(settings, city_dir, monkeypatch):
    monkeypatch.setenv("OPENVPP_TELEMETRY_INTERVAL_S", "1")
    monkeypatch.setenv("OPENVPP_TELEMETRY_OFFLINE_INTERVALS", "3")
    monkeypatch.setenv("OPENVPP_TELEMETRY_LIVE_REFRESH_S", "0.5")
    setup.load_city(settings, city_dir)
    engine = db.get_engine(settings.database_url)
    root = f"openvpp-e2e-{uuid.uuid4().hex[:10]}/v1"
    url = f"mqtt://{MOSQUITTO}/{root}"
    fleet = DeviceFleet.from_city(city_dir, speed=1.0, interval_s=1.0)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).astimezone().date()

    async def scenario() -> dict:
        stop = asyncio.Event()
        bus = await connect("memory://")
        config = TelemetryConfig.from_env()
        svc = TelemetryService(engine, config, publish=bus.publish_threadsafe)
        live = await LiveService(engine, bus, config).start()
        ingest = asyncio.create_task(MqttIngest(svc, url, client_id=f"e2e-{uuid.uuid4().hex[:6]}",
                                                max_wait_s=0.05).run(stop))
        reporting = asyncio.Event()
        sim = asyncio.create_task(run_devices(fleet, url, stop, on_report=lambda k, t: reporting.set()))
        await asyncio.wait_for(reporting.wait(), 20)

        def status(ids):
            now_ms = int(time.time() * 1000)
            return {i: live.state.device(i, now_ms) for i in ids}

        t0 = time.monotonic()
        while not all(s["online"] for s in status(["RC4", "RC5", "RC6"]).values()):
            assert time.monotonic() - t0 < 20, "devices never came online in the live view"
            await asyncio.sleep(0.2)

        # --- the city: publish, declarations, clearing, instructions
        with engine.begin() as conn:
            ev = events.create(conn, DISPATCHER, {"product": "peak_shaving", "day": tomorrow.isoformat(),
                                                  "start_slot": 60, "end_slot": 64, "targets_kw": 1000.0})
            eid = ev["event_id"]
            events.transition(conn, DISPATCHER, eid, "publish")
            events.transition(conn, DISPATCHER, eid, "open")
            events.declare(conn, OP2, eid, "OP02@GZ-HZ-S01", [1000.0] * 4, 1.8)
            events.declare(conn, OP1, eid, "OP01@GZ-TH-S01", [1000.0] * 4, 2.2)
            cleared = events.transition(conn, DISPATCHER, eid, "clear")
            events.transition(conn, DISPATCHER, eid, "execute")

        # --- OP02's technical support system: acknowledge, split to devices over MQTT
        async with CommandChannel(url) as ch:
            agent = OperatorAgent(engine, OP2, lambda op, d, p: ch.send(op, d, p, timeout=5.0), status)
            first = await agent.step()
            # one device drops out: it stops reporting, so the live view marks it offline
            victim = "RC4"
            fleet.alive[fleet.pos[victim]] = False
            t0 = time.monotonic()
            while status([victim])[victim]["online"]:
                assert time.monotonic() - t0 < 20, "the dropped device never went offline"
                await asyncio.sleep(0.2)
            second = await agent.step()
        await asyncio.sleep(2.5)          # a couple of reports with the limits in force
        stop.set()
        await asyncio.gather(sim, ingest, return_exceptions=True)
        await live.stop() if hasattr(live, "stop") else None
        return {"event": eid, "cleared": cleared, "first": first, "second": second,
                "log": agent.log_lines, "status": status(["RC5", "RC6"])}

    out = asyncio.run(scenario())
    eid = out["event"]
    assert out["cleared"]["result"]["cleared_kw"] == [1000.0] * 4      # OP02 (cheaper) takes the whole target
    with engine.connect() as conn:
        ops = events.instructions_of(conn, eid, "operator", "OP02")
        devs = events.instructions_of(conn, eid, "device", "OP02")
    assert {i["state"] for i in ops} == {"acked"}
    assert out["first"]["sent"] > 0 and out["second"]["redispatched"] > 0
    replaced = [d for d in devs if d["state"] == "replaced"]
    assert replaced and {d["resource_id"] for d in replaced} == {"RC4"}
    assert all("offline" in d["reason"] for d in replaced)
    for slot in range(60, 64):
        live_share = [d for d in devs if d["slot"] == slot and d["state"] == "acked"]
        assert all(d["resource_id"] != "RC4" for d in live_share if d["sent_at"] > replaced[0]["sent_at"])
        # what is still assigned (acked) covers the award up to the others' room
        assert sum(d["kw"] for d in live_share) == pytest.approx(1000.0, rel=0.15)
    # the simulated chillers obey their limits: power at or below the instructed maximum
    for rid in ("RC5", "RC6"):
        i = fleet.pos[rid]
        assert fleet.max_kw[i] is not None and out["status"][rid]["power_kw"] <= fleet.max_kw[i] + 1e-6
    assert date.today() <= date.fromisoformat(str(out["cleared"]["day"]))
