"""Issue 6, done when: a peak-shaving event and a congestion event run from publish to evaluation
over the real PostgreSQL and Mosquitto, with simulated devices, one of which drops out and is
replaced.

Everything runs on one simulated platform clock (``core.clock.SimClock``) shared by the device
simulator, the telemetry service, the live view and the operators' systems, so a July afternoon
passes in well under a minute: slowly (10x) where messages must make their deadlines (instructions,
acknowledgements, the drop-out), fast (200x) while the devices just follow their limits.

1. History: the devices' meters for the 12 days before the event day go through the telemetry
   service (the platform's own validation, store and rollups), with the clock at each day's end.
2. The city publishes both events in the morning, the operators declare, the city clears.
3. In the afternoon the simulator reports over MQTT; the city sends the instructions; each
   operator's system (``OperatorAgent``, running on its own) acknowledges, splits its award to
   devices and sends them their limits over MQTT; the devices acknowledge and obey, slot by slot.
4. One device of the peak-shaving operator stops reporting in the event; the live view marks it
   offline and the operator's system re-dispatches its share to the others.
5. After the windows both events are evaluated from the stored 15-minute rollups against the GB/T
   baseline of the stored history.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import date, datetime, timedelta

import numpy as np
import pytest

from openvpp.adapters.mqtt.commands import CommandChannel
from openvpp.adapters.operator_agent import OperatorAgent
from openvpp.core.clock import SimClock
from openvpp.core.timeslots import TZ, local_midnight_utc
from openvpp.services import evaluation, events, setup
from openvpp.services.telemetry import TelemetryConfig, TelemetryService
from openvpp.sim.devices import DeviceFleet
from openvpp.store import db
from openvpp.store.audit import Actor
from tests._fleet import reporting_fleet
from tests.conftest import UNIT_CHILLERS, append_rows, chiller_rows

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
DAY = date(2025, 7, 15)                 # a Tuesday in the fixture's profile year
HISTORY = 12                            # days of stored meter data before it
PEAK = (56, 60)                         # 14:00-15:00: peak shaving, city-wide
CONGESTION = (58, 60)                   # 14:30-15:00: congestion relief under OP01's transformer area
HOT_TA = "GZ-TH-S01-F01-T001"
INTERVAL_S = 30.0                       # devices report every 30 simulated seconds
OFFLINE_INTERVALS = 6                   # silent for 3 simulated minutes: offline
SLOW, FAST = 10.0, 150.0                # simulated seconds per wall second: at FAST the offline limit
                                        # is 1.2 wall seconds, above the ingest → live view latency (~0.3 s)
CITY = Actor("center", "city_admin")
DISPATCHER = Actor("disp", "dispatcher")
OP1 = Actor("op1", "operator_admin", operator_id="OP01")
OP2 = Actor("op2", "operator_admin", operator_id="OP02")


def local(hh: int, mm: int = 0) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, hh, mm, tzinfo=TZ)


@pytest.fixture
def city_dir(mini_city, tmp_path):
    """The mini city with 1 MW trading units: 4 chillers of OP01 under GZ-TH-S01 (in HOT_TA),
    3 of OP02 under GZ-HZ-S01."""
    out = tmp_path / "day_city"
    shutil.copytree(mini_city, out)
    assert all(place[3] == HOT_TA for place in UNIT_CHILLERS[:4])
    append_rows(out, chiller_rows(latency_s=5))
    return out


def backfill_history(engine, fleet: DeviceFleet, config: TelemetryConfig) -> int:
    """The meters' readings of the days before ``DAY``, every 5 minutes, through the telemetry service
    with the platform clock at each day's end (as the gateways delivered them that day)."""
    now = [0.0]
    svc = TelemetryService(engine, config, clock=lambda: now[0])
    accepted = 0
    for d in range(HISTORY, 0, -1):
        start = local_midnight_utc(DAY - timedelta(days=d))
        msgs = []
        for k in range(24 * 12):
            msgs += fleet.messages(int(start.timestamp() * 1000) + k * 300_000)
        now[0] = start.timestamp() + 86400 + 600
        res = svc.ingest_messages(msgs, path="meter-history")
        assert not res.rejected and res.refused_messages == 0, res.as_dict()
        accepted += res.accepted
    svc.refresh_rollups(include_open=True)
    return accepted


def test_peak_shaving_and_congestion_events_from_publish_to_evaluation(settings, city_dir, monkeypatch):
    monkeypatch.setenv("OPENVPP_TELEMETRY_INTERVAL_S", str(INTERVAL_S))
    monkeypatch.setenv("OPENVPP_TELEMETRY_OFFLINE_INTERVALS", str(OFFLINE_INTERVALS))
    monkeypatch.setenv("OPENVPP_TELEMETRY_LIVE_REFRESH_S", "0.2")
    setup.load_city(settings, city_dir)
    engine = db.get_engine(settings.database_url)
    config = TelemetryConfig.from_env()
    clock = SimClock.at(local(13, 50), speed=SLOW)
    fleet = DeviceFleet.from_city(city_dir, interval_s=INTERVAL_S, clock=clock)
    history_points = backfill_history(engine, fleet, config)
    fleet.last_ms = None

    # --- the morning: publish, declarations, clearing (the services take the simulated time)
    with engine.begin() as conn:
        peak = events.create(conn, DISPATCHER, {"product": "peak_shaving", "day": DAY.isoformat(),
                                                "start_slot": PEAK[0], "end_slot": PEAK[1], "targets_kw": 700.0})
        jam = events.create(conn, DISPATCHER, {"product": "congestion", "day": DAY.isoformat(),
                                               "start_slot": CONGESTION[0], "end_slot": CONGESTION[1],
                                               "targets_kw": 500.0, "scope_node_id": HOT_TA})
        for ev in (peak, jam):
            events.transition(conn, DISPATCHER, ev["event_id"], "publish")
            events.transition(conn, DISPATCHER, ev["event_id"], "open")
        morning = local(10)
        events.declare(conn, OP2, peak["event_id"], "OP02@GZ-HZ-S01", [1000.0] * 4, 1.8, now=morning)
        events.declare(conn, OP1, peak["event_id"], "OP01@GZ-TH-S01", [1000.0] * 4, 2.2, now=morning)
        events.declare(conn, OP1, jam["event_id"], "OP01@GZ-TH-S01", [600.0] * 2, 2.0, now=morning)
        cleared = {ev["event_id"]: events.transition(conn, DISPATCHER, ev["event_id"], "clear")["result"]
                   for ev in (peak, jam)}
    assert cleared[peak["event_id"]]["cleared_kw"] == [700.0] * 4      # OP02 is cheaper: all of it
    assert cleared[jam["event_id"]]["cleared_kw"] == [500.0] * 2

    async def afternoon() -> dict:
        async with reporting_fleet(engine, config, clock, fleet, "day",
                                   online=[f"RC{i}" for i in range(7)]) as running:
            status = running.status
            stop = running.stop
            async with CommandChannel(running.url) as ch:
                agents = [OperatorAgent(engine, op, lambda o, d, p: ch.send(o, d, p, timeout=5.0), status, clock=clock)
                          for op in (OP1, OP2)]
                runs = [asyncio.create_task(a.run(stop, period_s=0.1)) for a in agents]
                # --- the city sends its instructions ahead of the windows
                with engine.begin() as conn:
                    for ev in (peak, jam):
                        events.execute(conn, DISPATCHER, ev["event_id"], now=clock.now())
                t0 = time.monotonic()
                while not _all_acked(engine, [peak["event_id"], jam["event_id"]]):
                    assert time.monotonic() - t0 < 30, "instructions were not acknowledged down to the devices"
                    await asyncio.sleep(0.1)
                clock.set_speed(FAST)
                await clock.sleep_until(local(14, 18))
                # --- one chiller of OP02 stops reporting in the second slot; once the live view has it
                # offline, time slows down for the re-dispatch and its acknowledgements
                fleet.alive[fleet.pos["RC4"]] = False
                dropped_at = clock.now()
                t0 = time.monotonic()
                while status(["RC4"])["RC4"]["online"]:
                    assert time.monotonic() - t0 < 30, "the dropped device never went offline"
                    await asyncio.sleep(0.02)
                clock.set_speed(SLOW)
                t0 = time.monotonic()
                while not _replaced(engine, peak["event_id"]):
                    assert time.monotonic() - t0 < 30, "the operator's system never re-dispatched the share"
                    await asyncio.sleep(0.1)
                clock.set_speed(FAST)
                await clock.sleep_until(local(15, 2))
                stop.set()
                await asyncio.gather(*runs)
        return {"dropped_at": dropped_at, "log": [line for a in agents for line in a.log_lines]}

    out = asyncio.run(afternoon())

    # --- instructions: every operator instruction acknowledged; RC4's share replaced while it ran
    with engine.connect() as conn:
        for ev in (peak, jam):
            assert {i["state"] for i in events.instructions_of(conn, ev["event_id"], "operator")} == {"acked"}
        devs = events.instructions_of(conn, peak["event_id"], "device", "OP02")
        jam_devs = events.instructions_of(conn, jam["event_id"], "device", "OP01")
    replaced = [d for d in devs if d["state"] == "replaced"]
    assert {d["resource_id"] for d in replaced} == {"RC4"}, [(d["resource_id"], d["slot"], d["reason"])
                                                             for d in replaced]
    assert all("offline" in d["reason"] for d in replaced)
    assert {d["slot"] for d in replaced} >= {58, 59}          # the slots still to come when it dropped
    late = [d for d in devs if d["state"] == "acked" and d["sent_at"].replace(tzinfo=None)
            >= out["dropped_at"].replace(tzinfo=None)]
    assert late and "RC4" not in {d["resource_id"] for d in late}     # its share went to the others
    for slot in range(*PEAK):
        in_force = [d for d in devs if d["slot"] == slot and d["state"] == "acked"]
        if slot >= 58:
            assert "RC4" not in {d["resource_id"] for d in in_force}
            assert sum(d["kw"] for d in in_force) == pytest.approx(700.0, rel=1e-6)
    assert jam_devs and {d["state"] for d in jam_devs} == {"acked"}
    assert {d["slot"] for d in jam_devs} == set(range(*CONGESTION))

    # --- evaluation from the stored rollups and history (GB/T working-day baseline)
    after = local(16)
    with engine.begin() as conn:
        source = evaluation.StoreMeterSource(conn)
        results = {ev["event_id"]: evaluation.evaluate(conn, CITY, ev["event_id"], source, history_days=HISTORY,
                                                       now=after) for ev in (peak, jam)}
        states = {ev["event_id"]: events.get(conn, ev["event_id"])["state"] for ev in (peak, jam)}
    assert set(states.values()) == {"evaluating"}
    assert history_points > 0

    peak_eval = results[peak["event_id"]]
    op2 = next(o for o in peak_eval["operators"] if o["operator_id"] == "OP02")
    by_slot = {s["slot"]: s for s in op2["slots"]}
    assert [by_slot[k]["cleared_kw"] for k in range(*PEAK)] == [700.0] * 4
    # the baseline is the chillers' usual afternoon (the history), the meters read below it by the award
    for k in range(*PEAK):
        s = by_slot[k]
        assert s["baseline_kw"] > s["metered_kw"] > 0
    # with RC4 silent its meter reads nothing, so what the others took over must carry the slots after
    # performance within the rule set's valid band (80-120 %) in the slots before and after the drop-out;
    # the slot it dropped in is partly metered (measured in two runs: 0.60 and 1.19; others 0.89-0.98).
    # Limits are set against each device's power when it was split, so a load that eases during the
    # window delivers a little less than the award: the band absorbs it, the figures show it.
    for k in (56, 58, 59):
        assert 0.8 <= by_slot[k]["ratio"] <= 1.2, by_slot[k]
        assert by_slot[k]["credited"] > 0
    assert by_slot[57]["cleared_kw"] == 700.0     # the drop-out's slot: its figure depends on when it fell
    assert op2["credited"] > 0
    jam_eval = results[jam["event_id"]]
    op1 = next(o for o in jam_eval["operators"] if o["operator_id"] == "OP01")
    for s in op1["slots"]:
        assert s["cleared_kw"] == 500.0
        assert 0.8 <= s["ratio"] <= 1.2, s
    assert op1["credited"] > 0
    # the evaluation is reproducible from what is stored: a second run gives the same figures
    with engine.begin() as conn:
        again = evaluation.evaluate(conn, CITY, peak["event_id"], evaluation.StoreMeterSource(conn),
                                    history_days=HISTORY, now=after, reason="reproduce")
    assert again["telemetry_sha256"] == peak_eval["telemetry_sha256"]
    assert np.allclose([s["credited"] for s in next(o for o in again["operators"]
                                                    if o["operator_id"] == "OP02")["slots"]],
                       [s["credited"] for s in op2["slots"]])


def _replaced(engine, event_id: str) -> bool:
    with engine.connect() as conn:
        return any(d["state"] == "replaced" for d in events.instructions_of(conn, event_id, "device", "OP02"))


def _all_acked(engine, event_ids: list[str]) -> bool:
    """Every operator instruction of the events acknowledged and split, every device instruction acknowledged."""
    with engine.connect() as conn:
        for eid in event_ids:
            ops = events.instructions_of(conn, eid, "operator")
            devs = events.instructions_of(conn, eid, "device")
            if not devs or any(i["state"] != "acked" for i in ops + devs):
                return False
            if {d["parent_id"] for d in devs} != {o["instruction_id"] for o in ops}:
                return False
    return True
