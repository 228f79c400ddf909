"""The operator interface (docs/operator-interface.md) as an operator's own system uses it: the
platform's ``OperatorAgent`` with ``HttpCity`` reads its feed and acknowledges the city's
instructions over HTTP with its API key, against the app served by uvicorn on PostgreSQL, and
instructs its simulated devices over Mosquitto through their site gateway (one message per site)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from openvpp.adapters.mqtt.commands import CommandChannel
from openvpp.adapters.operator_agent import HttpCity, OperatorAgent
from openvpp.api.app import create_app
from openvpp.services import accounts, events, setup
from openvpp.sim.devices import DeviceFleet, run_devices
from openvpp.store import audit, db
from openvpp.store.audit import Actor
from tests._server import serve
from tests.conftest import append_rows, chiller_rows

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
MOSQUITTO = "127.0.0.1:1883"
DISPATCHER = Actor("disp", "dispatcher")


@pytest.fixture
def city_dir(mini_city, tmp_path):
    out = tmp_path / "iface_city"
    shutil.copytree(mini_city, out)
    append_rows(out, chiller_rows([("OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001")] * 3, latency_s=5))
    return out


def test_an_operator_system_declares_and_acknowledges_over_http_and_instructs_its_devices(settings, city_dir):
    setup.load_city(settings, city_dir)
    engine = db.get_engine(settings.database_url)
    with engine.begin() as conn:
        key = accounts.create_api_key(conn, audit.SYSTEM, "op02-tss", "operator_admin", operator_id="OP02")["key"]
        other = accounts.create_api_key(conn, audit.SYSTEM, "op01-tss", "operator_admin", operator_id="OP01")["key"]
        day = (datetime.now(UTC) + timedelta(days=1)).date()
        ev = events.create(conn, DISPATCHER, {"product": "peak_shaving", "day": day.isoformat(),
                                              "start_slot": 60, "end_slot": 64, "targets_kw": 900.0})
        eid = ev["event_id"]
        events.transition(conn, DISPATCHER, eid, "publish")
        events.transition(conn, DISPATCHER, eid, "open")
    fleet = DeviceFleet.from_city(city_dir, interval_s=1.0)
    root = f"openvpp-iface-{uuid.uuid4().hex[:10]}/v1"
    url = f"mqtt://{MOSQUITTO}/{root}"

    with serve(create_app(settings)) as base:
        api = httpx.Client(base_url=base + "/api/v1", headers={"X-API-Key": key}, timeout=10)
        # the feed carries the published event; the TSS declares its unit over HTTP
        feed = api.get("/operator/feed").json()
        assert any(i["topic"] == "event" and i["payload"]["event_id"] == eid and i["payload"]["state"] == "declaring"
                   for i in feed["items"])
        bad = api.post(f"/events/{eid}/declarations", json={"unit_id": "OP02@GZ-HZ-S01",
                                                             "quantities_kw": [500.0] * 4, "prices_yuan_per_kwh": 1.5})
        assert bad.status_code == 422 and "quantities_kw" in bad.text          # below the 1 MW market minimum
        ok = api.post(f"/events/{eid}/declarations", json={"unit_id": "OP02@GZ-HZ-S01",
                                                            "quantities_kw": [1000.0] * 4, "prices_yuan_per_kwh": 1.5})
        assert ok.status_code == 201, ok.text
        foreign = httpx.post(base + f"/api/v1/events/{eid}/declarations", headers={"X-API-Key": other},
                             json={"unit_id": "OP02@GZ-HZ-S01", "quantities_kw": [1000.0] * 4,
                                   "prices_yuan_per_kwh": 1.0})
        assert foreign.status_code == 403                                      # not its unit
        with engine.begin() as conn:
            events.transition(conn, DISPATCHER, eid, "clear")
            events.transition(conn, DISPATCHER, eid, "execute")

        def status(ids):
            return {i: {"online": True, "power_kw": 480.0, "down_kw": 400.0, "up_kw": 0.0} for i in ids}

        async def tss() -> dict:
            stop = asyncio.Event()
            sim = asyncio.create_task(run_devices(fleet, url, stop))
            await asyncio.sleep(0.5)
            city = HttpCity(base, key)
            try:
                async with CommandChannel(url) as ch:
                    # each site's gateway gets its devices' instructions in one message
                    agent = OperatorAgent(engine, Actor("op02-tss", "operator_admin", operator_id="OP02"),
                                          lambda o, d, p: ch.send(o, d, p, timeout=5.0), status, city=city,
                                          send_gateway=lambda o, g, items: ch.send_gateway(o, g, items, timeout=5.0))
                    out = await agent.step()
            finally:
                city.close()
                stop.set()
                await asyncio.gather(sim, return_exceptions=True)
            return out

        out = asyncio.run(tss())
        mine = api.get(f"/events/{eid}").json()
        # acknowledging again over HTTP is refused whole and changes nothing
        again = api.post("/operator/acks", json={"instruction_ids": [i["instruction_id"] for i in mine["instructions"]]})
        assert again.status_code == 409, again.text

    assert out["sent"] > 0
    assert {i["state"] for i in mine["instructions"]} == {"acked"} and len(mine["instructions"]) == 4
    with engine.connect() as conn:
        devs = events.instructions_of(conn, eid, "device", "OP02")
    assert devs and {d["state"] for d in devs} == {"acked"}
    assert {d["resource_id"] for d in devs} <= {"R4", "R5", "RC0", "RC1", "RC2"}
    for slot in range(60, 64):
        assert sum(d["kw"] for d in devs if d["slot"] == slot) == pytest.approx(900.0)
    # each device holds its slots' limits in its schedule, to start at the slot
    assert len(fleet.scheduled) == len(devs)
