"""The device simulator: profile power, gateway batches, instructions; end to end over Mosquitto."""

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import aiomqtt
import numpy as np
import pytest

from openvpp.adapters.mqtt.ingest import MqttIngest
from openvpp.kernels.profiles import materialise
from openvpp.services.telemetry import TelemetryConfig, TelemetryService, decode
from openvpp.sim.devices import DeviceFleet, run_devices
from openvpp.store import db, timeseries

T = 1_764_000_000_000


@pytest.fixture
def fleet(mini_city):
    return DeviceFleet.from_city(mini_city, wall_start_ms=T, sim_start_ms=0, speed=60.0)


def test_power_follows_the_archetype_profile_at_accelerated_time(fleet):
    # speed 60: ten wall minutes are ten profile hours later, i.e. 40 slots on
    slot0 = (fleet.profile_ms(T) - fleet.year_start_ms) // (15 * 60_000)
    slot = (fleet.profile_ms(T + 600_000) - fleet.year_start_ms) // (15 * 60_000)
    assert slot - slot0 == 40
    expected = materialise(fleet.archetypes, fleet.archetype_idx, fleet.scale_kw, fleet.noise_seed,
                           int(slot), int(slot) + 1)[:, 0]
    np.testing.assert_allclose(fleet.power(T + 600_000), np.clip(expected, -fleet.capacity_kw, fleet.capacity_kw),
                               rtol=1e-6)


def test_one_batch_per_site_and_operator_and_dropped_devices_stay_silent(mini_city):
    f = DeviceFleet.from_city(mini_city, wall_start_ms=T, drop=0.0)
    msgs = f.messages(T, root="r/v1")
    topics = sorted(t for t, _ in msgs)
    assert topics == ["r/v1/tele/-/S3", "r/v1/tele/OP01/S1", "r/v1/tele/OP01/S3", "r/v1/tele/OP02/S2"]
    pts = {t: decode(p)[1] for t, p in msgs}
    assert sorted(pts["r/v1/tele/OP01/S1"].device.tolist()) == ["R1", "R2", "R3"]
    assert (pts["r/v1/tele/OP01/S1"].ts_ms == T).all()
    silent = DeviceFleet.from_city(mini_city, wall_start_ms=T, drop=1.0)
    assert silent.messages(T) == []


def test_instructions_setpoint_limit_release_and_refusals(fleet):
    ack = fleet.apply("R3", {"id": "I1", "kind": "setpoint", "p": -400.0, "duration_s": 60}, T)
    assert ack["status"] == "accepted"
    i = fleet.pos["R3"]
    assert fleet.power(T + 1000)[i] == -400.0
    assert fleet.power(T + 61_000)[i] != -400.0            # expired
    fleet.apply("R1", {"id": "I2", "kind": "limit", "max_kw": 5.0, "duration_s": 600}, T)
    assert fleet.power(T + 1000)[fleet.pos["R1"]] <= 5.0
    fleet.apply("R1", {"id": "I3", "kind": "release"}, T + 2000)
    assert fleet.mode[fleet.pos["R1"]] == 0
    clipped = fleet.apply("R3", {"id": "I4", "kind": "setpoint", "p": 9999, "duration_s": 60}, T)
    assert clipped["status"] == "accepted" and "clipped" in clipped["reason"]
    assert fleet.power(T + 1)[i] == 500.0
    assert fleet.apply("R9", {"kind": "release"}, T)["status"] == "rejected"
    assert fleet.apply("R1", {"kind": "dance"}, T)["status"] == "rejected"
    assert fleet.apply("R1", {"kind": "setpoint", "p": "x"}, T)["status"] == "rejected"
    assert fleet.apply("R1", {"kind": "limit", "duration_s": 5}, T)["status"] == "rejected"


def test_soc_and_energy_counter_integrate_power(fleet):
    i = fleet.pos["R3"]   # 500 kW storage, 1000 kWh
    fleet.apply("R3", {"kind": "setpoint", "p": 500.0, "duration_s": 3600}, T)
    fleet.step(T)
    fleet.step(T + 60_000)   # one wall minute = one profile hour at speed 60
    assert fleet.soc[i] == pytest.approx(1.0) and fleet.energy_kwh[i] == pytest.approx(500.0)


def test_simulator_over_mosquitto_feeds_the_ingest_and_obeys_a_setpoint(loaded, mini_city):
    root = f"openvpp-test-{uuid.uuid4().hex[:10]}/v1"
    url = f"mqtt://127.0.0.1:1883/{root}"
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    fleet = DeviceFleet.from_city(mini_city, speed=600.0, interval_s=60.0)   # a report every 0.1 s

    async def main():
        ingest = MqttIngest(svc, url, client_id=f"ingest-{uuid.uuid4().hex[:8]}", max_wait_s=0.02)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(ingest.run(stop))]
        t0 = time.monotonic()
        while not ingest.subscribed.is_set():
            assert time.monotonic() - t0 < 10, "Mosquitto is required at 127.0.0.1:1883"
            await asyncio.sleep(0.05)
        reporting = asyncio.Event()   # set at the first report: the simulator has subscribed to its commands
        sim = asyncio.create_task(run_devices(fleet, url, stop, on_report=lambda k, t: reporting.set()))
        tasks.append(sim)
        async with aiomqtt.Client("127.0.0.1", 1883) as dispatcher:
            await dispatcher.subscribe(f"{root}/ack/+/+", qos=1)
            await asyncio.wait_for(reporting.wait(), 20)
            await dispatcher.publish(f"{root}/cmd/OP01/R3", json.dumps(
                {"id": "INS-1", "kind": "setpoint", "p": -250.0, "duration_s": 30}), qos=1)
            ack = await asyncio.wait_for(anext(aiter(dispatcher.messages)), 10)
            sent_at = time.time() * 1000

        def r3_after() -> list:
            with db.get_engine(loaded.database_url).connect() as conn:
                rows = timeseries.read_raw(conn, ["R3"], datetime.fromtimestamp(sent_at / 1000 + 0.2, UTC),
                                           datetime(2100, 1, 1, tzinfo=UTC))
            return rows

        t_end = time.monotonic() + 15
        while len(await asyncio.to_thread(r3_after)) < 3 and time.monotonic() < t_end:
            await asyncio.sleep(0.1)
        stop.set()
        counts = (await asyncio.gather(*tasks))[1]
        return json.loads(ack.payload), counts, ingest.stats, sent_at

    ack, counts, stats, sent_at = asyncio.run(main())
    assert ack["status"] == "accepted" and ack["device"] == "R3" and ack["id"] == "INS-1"
    assert counts["reports"] >= 5 and stats.rejected == 0
    with db.get_engine(loaded.database_url).connect() as conn:
        n = timeseries.count_raw(conn)
        r3 = timeseries.read_raw(conn, ["R3"], datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    assert n == stats.inserted and n >= 7 * 3
    late = [r["power_kw"] for r in r3 if r["ts"].timestamp() * 1000 > sent_at + 200]
    assert late and all(p == -250.0 for p in late)


def test_a_gateway_takes_its_devices_instructions_in_one_message_over_mosquitto(mini_city):
    """CommandChannel.send_gateway ↔ the simulator's gateway: one message each way for a site's devices;
    each instruction gets its own acknowledgement, a refusal names its reason, an instruction to a
    device the gateway does not have is refused, and a device that never answers reads as None."""
    from openvpp.adapters.mqtt.commands import CommandChannel

    root = f"openvpp-test-{uuid.uuid4().hex[:10]}/v1"
    url = f"mqtt://127.0.0.1:1883/{root}"
    fleet = DeviceFleet.from_city(mini_city, speed=1.0, interval_s=3600.0)
    start = int(time.time() * 1000) + 60_000

    async def main():
        stop = asyncio.Event()
        reporting = asyncio.Event()
        sim = asyncio.create_task(run_devices(fleet, url, stop, on_report=lambda k, t: reporting.set()))
        await asyncio.wait_for(reporting.wait(), 20)
        seen: list[str] = []
        async with aiomqtt.Client("127.0.0.1", 1883) as spy, CommandChannel(url) as ch:
            await spy.subscribe(f"{root}/gack/+/+", qos=1)
            acks = await ch.send_gateway("OP01", "S1", [
                ("R1", {"kind": "limit", "max_kw": 100.0, "start": start, "duration_s": 900}),
                ("R3", {"kind": "setpoint", "p": "fast"}),
                ("NOPE", {"kind": "release"}),
            ], timeout=5.0)
            seen.append((await asyncio.wait_for(anext(aiter(spy.messages)), 5)).topic.value)
            # a device on a gateway whose simulator is not running: no answer within the timeout
            stop.set()
            await asyncio.gather(sim, return_exceptions=True)
            silent = await ch.send_gateway("OP01", "S1", [("R1", {"kind": "release"})], timeout=0.5)
        return acks, seen, silent

    acks, seen, silent = asyncio.run(main())
    assert seen == [f"{root}/gack/OP01/S1"]                       # one message back for the three
    assert [a["device"] for a in acks] == ["R1", "R3", "NOPE"]
    assert acks[0]["status"] == "accepted"
    assert acks[1]["status"] == "rejected" and "p must be a number" in acks[1]["reason"]
    assert acks[2]["status"] == "rejected" and acks[2]["reason"] == "unknown device"
    assert silent == [None]
    # R1's limit waits in its schedule for its start
    i = fleet.pos["R1"]
    assert any(e[2] == i and e[0] == start for e in fleet.scheduled)


def test_noise_scatters_power_around_the_profile_by_sigma(mini_city):
    clean = DeviceFleet.from_city(mini_city, wall_start_ms=T, sim_start_ms=0, speed=60.0)
    noisy = DeviceFleet.from_city(mini_city, wall_start_ms=T, sim_start_ms=0, speed=60.0, noise=0.1, seed=3)
    times = [T + k * 37_000 for k in range(150)]
    base = np.concatenate([clean.power(t) for t in times])
    scattered = np.concatenate([noisy.power(t) for t in times])
    cap = np.tile(clean.capacity_kw, len(times))
    inside = (np.abs(base) > 1.0) & (np.abs(scattered) < cap)        # not clipped at capacity
    rel = scattered[inside] / base[inside] - 1.0
    assert len(rel) > 900
    assert abs(rel.mean()) < 0.02 and 0.09 < rel.std() < 0.11        # N(0, 0.1): the sample std within ~3 sigma


def test_readings_carry_reactive_power_energy_counter_and_quality(mini_city):
    f = DeviceFleet.from_city(mini_city, wall_start_ms=T, sim_start_ms=0, speed=60.0, bad=0.5, seed=1)
    r0 = f.readings(T)
    r1 = f.readings(T + 60_000)               # one profile hour later
    ok = r1["qf"] == 0
    pf = {"R1": 0.85, "R2": 1.0, "R3": 1.0, "R4": 0.98}
    for rid, cos_phi in pf.items():
        i = f.pos[rid]
        if ok[i]:
            assert r1["q"][i] == pytest.approx(abs(r1["p"][i]) * np.sqrt(1 - cos_phi**2) / cos_phi)
    assert (r1["p"][~ok] == 0).all() and (r1["qf"][~ok] == 2).all() and 0 < (~ok).sum() < f.n
    # the counter integrates the import of the hour, whatever the reading's quality
    assert (r0["e"] == 0).all() and (r1["e"] >= 0).all() and r1["e"][f.pos["R1"]] > 0
    msgs = f.messages(T + 120_000, root="r/v1")
    cols = json.loads(dict(msgs)["r/v1/tele/OP01/S1"])["cols"]
    assert {"d", "t", "p", "q", "e", "soc", "qf"} <= set(cols)


def test_energy_counters_reach_the_rollups_end_to_end_over_mosquitto(loaded, mini_city):
    root = f"openvpp-test-{uuid.uuid4().hex[:10]}/v1"
    url = f"mqtt://127.0.0.1:1883/{root}"
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    fleet = DeviceFleet.from_city(mini_city, speed=600.0, interval_s=60.0, drop=0.0)   # a report every 0.1 s
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"

    async def main():
        ingest = MqttIngest(svc, url, client_id=client_id, max_wait_s=0.02)
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        t0 = time.monotonic()
        while not ingest.subscribed.is_set():
            assert time.monotonic() - t0 < 10, "Mosquitto is required at 127.0.0.1:1883"
            await asyncio.sleep(0.05)
        counts = await run_devices(fleet, url, reports=12)
        t0 = time.monotonic()
        while ingest.stats.points < counts["points"] and time.monotonic() - t0 < 20:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=client_id, clean_session=True):
            pass
        return counts, ingest.stats

    counts, stats = asyncio.run(main())
    assert counts["points"] == 12 * 7 and stats.inserted == 12 * 7 and stats.rejected == 0
    svc.refresh_rollups(include_open=True)
    with db.get_engine(loaded.database_url).connect() as conn:
        raw = timeseries.read_raw(conn, list(fleet.resource_id), datetime(2000, 1, 1, tzinfo=UTC),
                                  datetime(2100, 1, 1, tzinfo=UTC))
        roll = timeseries.read_rollup(conn, 60, list(fleet.resource_id), datetime(2000, 1, 1, tzinfo=UTC),
                                      datetime(2100, 1, 1, tzinfo=UTC))
    for rid in fleet.resource_id:
        e = [r["energy_kwh"] for r in raw if r["device_id"] == rid]
        assert len(e) == 12 and e == sorted(e)                            # a counter never runs back
        assert e[-1] == pytest.approx(round(fleet.energy_kwh[fleet.pos[rid]], 3))
        assert max(r["energy_max_kwh"] for r in roll if r["device_id"] == rid) == pytest.approx(e[-1])
        q = [r["reactive_kvar"] for r in raw if r["device_id"] == rid]
        assert all(v is not None and v >= 0 for v in q)
    assert max(r["energy_max_kwh"] for r in roll if r["device_id"] == "R1") > 0
