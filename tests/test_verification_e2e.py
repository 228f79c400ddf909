"""Capability verification end to end over the real PostgreSQL and Mosquitto (issue 4, 能力校核).

The city schedules a test of OP01's trading unit under GZ-TH-S01; the test instruction goes to the
operator on its feed (topic ``verification``); the operator's system (``OperatorAgent``) sends each
member device a limit for the test window over MQTT; the simulated devices acknowledge and obey;
their telemetry is ingested, rolled up, and the test is completed from the store
(``StoreTelemetry``) against the pre-window baseline, which re-runs the operator's checks.

Everything runs on one simulated platform clock (``core.clock.SimClock``), slow while messages must
make their way (the instruction and acknowledgements), fast while the devices hold their limits.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from openvpp.adapters.mqtt.commands import CommandChannel
from openvpp.adapters.operator_agent import OperatorAgent
from openvpp.core.clock import SimClock
from openvpp.core.timeslots import TZ
from openvpp.services import events, setup
from openvpp.services import verification as ver
from openvpp.services.telemetry import TelemetryConfig
from openvpp.sim.devices import DeviceFleet
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema import audit_log, resources
from tests._fleet import MOSQUITTO, reporting_fleet
from tests.conftest import append_rows, chiller_rows

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
CITY = Actor("center", "city_admin")
OP1 = Actor("op1", "operator_admin", operator_id="OP01")
WINDOW = datetime(2025, 7, 15, 14, 0, tzinfo=TZ)     # a July afternoon in the fixture's profile year
INTERVAL_S = 30.0                                    # devices report every 30 simulated seconds
SLOW, FAST = 10.0, 200.0
UNIT = "OP01@GZ-TH-S01"
MEMBERS = ["R1", "R2", "R3", "RC0", "RC1", "RC2", "RC3"]


@pytest.fixture
def city_dir(mini_city, tmp_path):
    """The mini city with four 1,000 kW chillers of OP01 under GZ-TH-S01 (400 kW down each) and three of OP02."""
    out = tmp_path / "vt_city"
    shutil.copytree(mini_city, out)
    append_rows(out, chiller_rows(latency_s=5))
    return out


def test_a_trading_unit_test_reaches_the_devices_and_is_graded_from_their_telemetry(settings, city_dir,
                                                                                    monkeypatch):
    monkeypatch.setenv("OPENVPP_TELEMETRY_INTERVAL_S", str(INTERVAL_S))
    monkeypatch.setenv("OPENVPP_TELEMETRY_LIVE_REFRESH_S", "0.2")
    setup.load_city(settings, city_dir)
    engine = db.get_engine(settings.database_url)
    config = TelemetryConfig.from_env()
    clock = SimClock.at(WINDOW - timedelta(minutes=75), speed=SLOW)
    fleet = DeviceFleet.from_city(city_dir, interval_s=INTERVAL_S, clock=clock)

    async def run() -> dict:
        async with reporting_fleet(engine, config, clock, fleet, "vt", online=MEMBERS) as running:
            status = running.status
            # --- the city schedules the test; the operator's system takes it from its feed
            with engine.begin() as conn:
                test = ver.schedule(conn, CITY, "trading_unit", UNIT, WINDOW, duration_h=0.5)
            async with CommandChannel(running.url) as ch:
                agent = OperatorAgent(engine, OP1, lambda o, d, p: ch.send(o, d, p, timeout=5.0), status,
                                      clock=clock)
                step = await agent.step()
            clock.set_speed(FAST)
            await clock.sleep_until(test["window_end"] + timedelta(minutes=2))
        return {"test": test, "step": step, "log": agent.log_lines}

    out = asyncio.run(run())
    test = out["test"]
    assert out["step"]["verification_tests"] == 1 and out["step"]["sent"] == 0      # no event: no event work
    assert sorted(test["result"]["members"]) == MEMBERS
    assert test["result"]["instructed"] == {"OP01": sorted(MEMBERS)}

    with engine.connect() as conn:
        feed = events.feed(conn, OP1)["items"]
        delivered = conn.execute(select(audit_log.c.after).where(
            audit_log.c.action == "verification.dispatch", audit_log.c.entity_id == test["test_id"])).scalar_one()
    item = next(i for i in feed if i["topic"] == "verification")
    assert item["payload"]["test_id"] == test["test_id"] and set(item["payload"]["resources"]) == set(MEMBERS)
    assert delivered["accepted"] == sorted(MEMBERS) and delivered["no_ack"] == [] and delivered["skipped"] == {}
    # the simulated devices hold the limit of the window they were sent
    for rid in MEMBERS:
        i = fleet.pos[rid]
        assert fleet.until_ms[i] == int(test["window_end"].timestamp() * 1000), rid

    # --- the center completes the test from the stored telemetry (1-minute rollups)
    with engine.begin() as conn:
        done = ver.complete(conn, CITY, test["test_id"], ver.StoreTelemetry(engine))
        stored = {r[0]: (r[1], r[2]) for r in conn.execute(select(
            resources.c.resource_id, resources.c.verified_grade, resources.c.verified_latency_s).where(
            resources.c.resource_id.in_(MEMBERS)))}
    res = done["result"]["resources"]
    assert done["result"]["without_baseline"] == 0
    # each device was limited to (its power when instructed - its declared kW): against the hour before,
    # that is its declared capability within the profile's drift (a few %)
    for rid in MEMBERS:
        assert 0.85 <= res[rid]["ratio"] <= 1.15, (rid, res[rid])
        assert res[rid]["grade"] in ("A", "B") and res[rid]["latency_s"] <= 60.0, (rid, res[rid])
        assert stored[rid] == (res[rid]["grade"], res[rid]["latency_s"])
    assert done["verified_kw"] == pytest.approx(test["declared_kw"], rel=0.1)
    assert done["grade"] in ("A", "B") and done["result"]["rechecked"]["OP01"]["trading_unit"] is True
    assert any("accepted the test instruction" in line for line in out["log"])


def test_a_gateway_that_fails_in_transport_leaves_the_test_recorded_without_acks(settings, city_dir):
    """The operator's system sends a verification test to its devices through a gateway whose
    connection is gone (the real MQTT client, closed): the step goes on, and every device of that
    gateway is recorded as not having acknowledged — the test is not lost."""
    setup.load_city(settings, city_dir)
    engine = db.get_engine(settings.database_url)
    with engine.begin() as conn:
        test = ver.schedule(conn, CITY, "trading_unit", UNIT, WINDOW, duration_h=0.5)

    async def run() -> dict:
        async with CommandChannel(f"mqtt://{MOSQUITTO}/openvpp-vt-{uuid.uuid4().hex[:10]}/v1") as ch:
            pass                                            # closed: every publish now fails
        agent = OperatorAgent(engine, OP1, lambda o, d, p: ch.send(o, d, p, timeout=1.0),
                              lambda ids: {rid: {"online": True, "power_kw": 500.0} for rid in ids},
                              send_gateway=lambda o, g, items: ch.send_gateway(o, g, items, timeout=1.0),
                              clock=SimClock.at(WINDOW - timedelta(minutes=30), speed=1.0))
        return await agent.step()

    step = asyncio.run(run())
    assert step["verification_tests"] == 1
    with engine.connect() as conn:
        delivered = conn.execute(select(audit_log.c.after).where(
            audit_log.c.action == "verification.dispatch", audit_log.c.entity_id == test["test_id"])).scalar_one()
    assert delivered["accepted"] == [] and delivered["no_ack"] == sorted(MEMBERS)
