"""Emergency event: from publish to instructions delivered and acknowledged by 100,000 simulated
devices over the real MQTT broker (issue 6: at most 60 s, the plan's "minute level"; aim 10 s).

The whole path is the product's, over PostgreSQL and Mosquitto (127.0.0.1:1883, a unique topic
root per run), no mocks:

* the city's dispatcher publishes an ``emergency`` event for the next 15-minute slot, city-wide,
  with a target above the city's capability (every device that can shed load is called on);
  it is cleared straight from ``published`` (the product is mandatory: every admitted operator's
  trading units offer their capability, ``events._mandatory_offers``) and executed (operator
  instructions, outbox notifications);
* one ``OperatorAgent`` per admitted operator (its technical support system) takes its feed,
  acknowledges the city's instructions, splits each over the unit's online devices
  (``services.dispatch`` with ``kernels.split``, device status from ``services.live``), stores the
  device instructions and sends them through a ``CommandChannel`` (MQTT QoS 1). The agents run in
  one process and share one broker connection (``--channel-per-operator``: one each; every
  CommandChannel subscribes to all acknowledgements under the root, so each ack then reaches
  every agent's connection), with one window of ``WINDOW`` instructions in flight;
* the simulated devices (``sim.devices.run_devices``, in a separate process, as devices are)
  obey and acknowledge on MQTT; each agent records the acknowledgements in the database.

Device status comes from the live view (``LiveService``) fed by ``MqttIngest`` (``--ingest-workers``
in one shared-subscription group) → ``TelemetryService`` from the devices' own telemetry
(``--interval``, default 60 s, the platform's; the first report puts every device online before
the event is published, later reports run during it).

The fleet: the devices of admitted operators that can shed load (a generated city's resources
without the PV plants and the operators not admitted), the first ``size`` of them.

The value is the wall time from the publish call to the commit of the last device
acknowledgement; the reference is the 60 s target itself (the issue gives a bound, not a
comparison), and 10 s is the aim. Each phase is reported by when it started and ended after the
publish; the agents' phases overlap (an agent sends while others still split).

Transport: each site's gateway takes its devices' instructions in one MQTT message and answers
with one message of acknowledgements (``CommandChannel.send_gateway``; ``--per-device`` sends one
message per device instead). Every MQTT connection of the product opens with TCP_NODELAY
(``adapters.mqtt.SOCKET_OPTIONS``) and the simulator publishes its acknowledgements without
waiting for each one's PUBACK. Without them (the first measurement, 397.5 s at 100,000 devices)
Nagle's algorithm and delayed ACKs paced the exchange at ~250 acknowledged instructions/s.

    python benchmarks/emergency_dispatch.py [--quick] [--size N] [--interval S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from _common import CACHE, city, drop_pg_database, load_city, pg_database, result  # noqa: E402
from openvpp.adapters.mqtt.commands import CommandChannel  # noqa: E402
from openvpp.adapters.mqtt.ingest import MqttIngest  # noqa: E402
from openvpp.adapters.operator_agent import OperatorAgent  # noqa: E402
from openvpp.bus import connect  # noqa: E402
from openvpp.core.timeslots import slot_start_utc  # noqa: E402
from openvpp.services import events  # noqa: E402
from openvpp.services.live import LiveService, live_flex  # noqa: E402
from openvpp.services.telemetry import NO_TS, TelemetryConfig, TelemetryService  # noqa: E402
from openvpp.sim.devices import DeviceFleet, run_devices  # noqa: E402
from openvpp.store import db  # noqa: E402
from openvpp.store.audit import Actor  # noqa: E402
from openvpp.store.schema_events import instructions  # noqa: E402

MOSQUITTO = os.environ.get("OPENVPP_BENCH_MQTT", "127.0.0.1:1883")
DB_NAME = "openvpp_bench_emergency"
TARGET_S, AIM_S = 60.0, 10.0
DEVICE_SEND_TIMEOUT_S = 20.0
#: instructions awaiting their ack at once per broker connection: Mosquitto (default
#: max_queued_messages 1000) drops QoS 1 messages queued beyond that for the simulator's one connection
WINDOW = 500      # as long as dispatch.DEVICE_ACK_TIMEOUT: a later ack is a timeout anyway
DISPATCHER = Actor("bench-dispatcher", "dispatcher")
TZ_OFFSET = timedelta(hours=8)    # Asia/Shanghai: the event's day is local


# ---------------------------------------------------------------- the fleet

def fleet_city(size: int) -> Path:
    """A city whose resources are the first ``size`` load-shedding devices of admitted operators of a
    generated city (cached under var/bench)."""
    out = CACHE / f"emergency-{size}"
    if (out / "resources.csv").exists() and json.loads((out / "city.json").read_text()).get("n_resources") == size:
        return out
    src = city(50_000 if size <= 40_000 else 200_000 if size <= 150_000 else 1_000_000)
    ops = pacsv.read_csv(src / "operators.csv")
    admitted = pc.filter(ops.column("operator_id"), pc.equal(ops.column("state"), "admitted"))
    res = pacsv.read_csv(src / "resources.csv", convert_options=pacsv.ConvertOptions(
        column_types={"resource_id": pa.string(), "operator_id": pa.string(), "meter_id": pa.string(),
                      "owner_id": pa.string(), "site_id": pa.string(), "ta_id": pa.string()},
        strings_can_be_null=True))
    keep = pc.and_(pc.is_in(res.column("operator_id"), value_set=admitted),
                   pc.not_equal(res.column("resource_type"), "distributed_pv"))
    res = res.filter(pc.fill_null(keep, False)).slice(0, size)
    if res.num_rows < size:
        raise SystemExit(f"the source city has only {res.num_rows} load-shedding devices of admitted operators")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.name not in ("resources.csv", "city.json"):
            shutil.copy(f, tmp / f.name)
    pacsv.write_csv(res, tmp / "resources.csv", pacsv.WriteOptions(quoting_style="needed"))
    meta = json.loads((src / "city.json").read_text())
    meta.update(n_resources=size, derived_from=str(src), note="load-shedding devices of admitted operators")
    (tmp / "city.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def devices_main(city_dir: str, url: str, interval_s: str) -> None:
    """Child process: the simulated devices, until SIGTERM. Prints one line per telemetry report."""
    fleet = DeviceFleet.from_city(Path(city_dir), speed=1.0, interval_s=float(interval_s))

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        task = asyncio.create_task(run_devices(
            fleet, url, stop, client_id=f"bench-devices-{uuid.uuid4().hex[:6]}",
            on_report=lambda k, t: print(json.dumps({"report": k, "devices": int(fleet.alive.sum())}), flush=True)))
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())


# ---------------------------------------------------------------- the platform side

def live_status(live: LiveService):
    """Device status from the live view, for a list of ids at once (what ``dispatch.Status`` asks)."""
    def status(ids: list[str]) -> dict[str, dict]:
        st = live.state
        rows = st.index.lookup(np.asarray(ids, dtype=object))
        ok = rows >= 0
        r = rows[ok]
        c, v = st.config, st.index.reg.values
        online, _power, up, down = live_flex(
            st.p_kw[r], st.soc[r], st.last_ts_ms[r], int(time.time() * 1000),
            int(c.offline_intervals * c.interval_s * 1000), v["capacity_kw"][r], v["adjustable_up_kw"][r],
            v["adjustable_down_kw"][r], st.bidirectional[r], st.generator[r])
        reported = st.last_ts_ms[r] != NO_TS
        p = st.p_kw[r]
        ids_ok = np.asarray(ids, dtype=object)[ok]
        return {i: {"online": bool(o), "power_kw": float(pk) if rep else None, "up_kw": float(u),
                    "down_kw": float(d)}
                for i, o, pk, rep, u, d in zip(ids_ok.tolist(), online.tolist(), p.tolist(), reported.tolist(),
                                               up.tolist(), down.tolist(), strict=True)}
    return status


def phase_span(agents: list[OperatorAgent], phases: tuple[str, ...], t0: float) -> dict | None:
    """First start and last end (seconds after publish) and summed seconds over the agents of a phase."""
    marks = [(a, b) for ag in agents for (p, a, b) in ag.marks if p in phases]
    if not marks:
        return None
    return {"start": min(a for a, _ in marks) - t0, "end": max(b for _, b in marks) - t0,
            "summed": sum(b - a for a, b in marks)}


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} cores"


async def scenario(engine, city_dir: Path, url: str, n: int, interval_s: float, ingest_workers: int = 10,
                   channel_per_operator: bool = False, per_device: bool = False) -> dict:
    stop = asyncio.Event()
    bus = await connect("memory://")
    config = TelemetryConfig(interval_s=interval_s, offline_intervals=3.0, live_refresh_s=2.0)
    svc = TelemetryService(engine, config, publish=bus.publish_threadsafe)
    await asyncio.to_thread(svc.maintain)     # today's partitions exist before the workers race to create them
    live = await LiveService(engine, bus, config).start()
    # ingest workers as one shared-subscription group: Mosquitto hands each client at most 20 unacknowledged
    # messages (max_inflight_messages) and queues 1,000 more before dropping, and MqttIngest acknowledges
    # after commit, so one worker drains at most 20 gateway batches per commit
    group = f"bench-{uuid.uuid4().hex[:6]}"
    ingests = [MqttIngest(svc, url, client_id=f"{group}-ingest-{k}", session_expiry_s=60, max_wait_s=0.01,
                          share_group=group if ingest_workers > 1 else None) for k in range(ingest_workers)]
    ingest_tasks = [asyncio.create_task(ig.run(stop)) for ig in ingests]
    for ig in ingests:
        await asyncio.wait_for(ig.subscribed.wait(), 20)
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--devices", str(city_dir), url, str(interval_s),
                                                stdout=asyncio.subprocess.PIPE)
    out: dict = {}
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if not line:
            raise RuntimeError("the device simulator exited before reporting")
        t_wait = time.monotonic()
        while True:   # every device online in the live view (its first report ingested)
            seen = int((live.state.last_ts_ms != NO_TS).sum())
            if seen >= n:
                break
            if time.monotonic() - t_wait > max(120.0, 3 * interval_s):
                raise RuntimeError(f"only {seen} of {n} devices reached the live view")
            await asyncio.sleep(0.2)
        print(f"{n:,} devices online in the live view ({time.monotonic() - t_wait:.1f} s after the first report)")

        with engine.connect() as conn:
            ops = [r[0] for r in conn.exec_driver_sql(
                "SELECT DISTINCT r.operator_id FROM resources r JOIN operators o USING (operator_id) "
                "WHERE o.state = 'admitted' ORDER BY 1")]
        status = live_status(live)
        # one broker connection for the agents of this process (a CommandChannel listens to every
        # operator's acknowledgements under the root: one per agent would receive each ack once per agent)
        channels = ([CommandChannel(url, client_id=f"bench-tss-{op}-{uuid.uuid4().hex[:4]}") for op in ops]
                    if channel_per_operator else [CommandChannel(url, client_id=f"bench-tss-{uuid.uuid4().hex[:6]}")])
        for ch in channels:
            await ch.__aenter__()
        windows = [asyncio.Semaphore(WINDOW) for _ in channels]     # one per connection, shared by its agents
        agents = [OperatorAgent(engine, Actor(f"{op}-tss", "operator_admin", operator_id=op),
                                lambda o, d, p, ch=channels[k % len(channels)]: ch.send(
                                    o, d, p, timeout=DEVICE_SEND_TIMEOUT_S), status,
                                device_ack_timeout_s=DEVICE_SEND_TIMEOUT_S, max_in_flight=WINDOW,
                                window=windows[k % len(windows)],
                                send_gateway=None if per_device else (
                                    lambda o, g, items, ch=channels[k % len(channels)]: ch.send_gateway(
                                        o, g, items, timeout=DEVICE_SEND_TIMEOUT_S)))
                  for k, op in enumerate(ops)]
        for ag in agents:   # the feed so far is history: the agents start at its end
            with engine.connect() as conn:
                ag.last_seq = events.feed(conn, ag.actor, 0, limit=1_000_000)["last"]

        # the next 15-minute slot, local day
        now = datetime.now(UTC)
        local = now + TZ_OFFSET
        slot = (local.hour * 60 + local.minute) // 15 + 1
        day = local.date()
        if slot >= 96:
            slot, day = 0, day + timedelta(days=1)
        assert slot_start_utc(day, slot) > now
        with engine.begin() as conn:
            ev = events.create(conn, DISPATCHER, {"product": "emergency", "day": day.isoformat(),
                                                  "start_slot": slot, "end_slot": slot + 1,
                                                  "targets_kw": 1e9, "name": "benchmark emergency"})
        eid = ev["event_id"]
        load_before = load_note()

        # ---- timed: publish → clear → execute → operators acknowledge, split, send → devices acknowledge
        published_at = datetime.now(UTC)
        t0 = time.monotonic()
        with engine.begin() as conn:
            events.transition(conn, DISPATCHER, eid, "publish")
        t_pub = time.monotonic() - t0
        with engine.begin() as conn:
            cleared = events.transition(conn, DISPATCHER, eid, "clear")
        t_clear = time.monotonic() - t0
        with engine.begin() as conn:
            events.transition(conn, DISPATCHER, eid, "execute")
        t_exec = time.monotonic() - t0
        steps = await asyncio.gather(*(ag.step() for ag in agents))
        t_steps = time.monotonic() - t0
        load_after = load_note()

        dev = (instructions.c.event_id == eid) & (instructions.c.level == "device")
        with engine.connect() as conn:
            by_state = dict(conn.execute(select(instructions.c.state, func.count()).where(dev)
                                         .group_by(instructions.c.state)).all())
            answered = conn.execute(select(func.count(func.distinct(instructions.c.resource_id))).where(
                dev, instructions.c.acked_at.is_not(None))).scalar()
            in_time = conn.execute(select(func.count(func.distinct(instructions.c.resource_id))).where(
                dev, instructions.c.state == "acked")).scalar()
            last_ack = conn.execute(select(func.max(instructions.c.acked_at)).where(dev)).scalar()
            op_states = dict(conn.execute(select(instructions.c.state, func.count()).where(
                instructions.c.event_id == eid, instructions.c.level == "operator")
                .group_by(instructions.c.state)).all())
        phases = {"operator_ack": ("operator_ack",), "split_db_insert": ("dispatch",), "mqtt_send_ack": ("deliver",),
                  "redispatch_check": ("redispatch",), "redispatch_send_ack": ("redeliver",)}
        out = {
            "event_id": eid, "t_publish": t_pub, "t_clear": t_clear, "t_execute": t_exec, "t_steps": t_steps,
            "cleared": cleared["result"], "steps": steps, "by_state": by_state, "answered": answered,
            "in_time": in_time, "last_ack_s": (last_ack - published_at).total_seconds() if last_ack else None,
            "operator_instructions": op_states, "agents": len(agents),
            "phases": {k: phase_span(agents, v, t0) for k, v in phases.items()},
            "delivered": phase_span(agents, ("deliver", "redeliver"), t0),
            "load_before": load_before, "load_after": load_after, "channels": len(channels),
            "ingest": {k: sum(getattr(ig.stats, k) for ig in ingests) for k in ("messages", "points", "inserted")},
        }
        for ch in channels:
            await ch.__aexit__(None, None, None)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
        stop.set()
        await asyncio.gather(*ingest_tasks, return_exceptions=True)
        await live.stop()
    return out


def quiet_mqtt_logger() -> None:
    """aiomqtt logs a warning for every publish while more than 10 await their PUBACK (a window of
    1,000 instructions in flight is the point here): keep its errors only."""
    logging.getLogger("mqtt").setLevel(logging.ERROR)


def main() -> None:
    quiet_mqtt_logger()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5,000 devices (under 30 s)")
    ap.add_argument("--size", type=int, default=None, help="devices (default 100,000)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--channel-per-operator", action="store_true",
                    help="one CommandChannel (broker connection) per operator agent instead of one shared")
    ap.add_argument("--per-device", action="store_true",
                    help="one MQTT message per device instruction and acknowledgement instead of one per site gateway")
    ap.add_argument("--ingest-workers", type=int, default=10, help="MqttIngest workers (one share group)")
    ap.add_argument("--interval", type=float, default=60.0,
                    help="device telemetry interval [s] (default 60, the platform's); offline after 3 intervals")
    ap.add_argument("--devices", nargs=3, metavar=("CITY_DIR", "URL", "INTERVAL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.devices:
        devices_main(*args.devices)
        return
    n = args.size or (5_000 if args.quick else 100_000)
    city_dir = fleet_city(n)
    url = pg_database(DB_NAME)
    try:
        t = time.perf_counter()
        engine = load_city(url, city_dir)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        print(f"loaded {n:,} devices into {DB_NAME} in {time.perf_counter() - t:.1f} s (not timed)")
        root = f"openvpp-bench-emergency-{uuid.uuid4().hex[:10]}/v1"
        out = asyncio.run(scenario(engine, city_dir, f"mqtt://{MOSQUITTO}/{root}", n, args.interval,
                                   args.ingest_workers, args.channel_per_operator, args.per_device))
    finally:
        db.get_engine(url).dispose()
        if not args.keep:
            drop_pg_database(DB_NAME)

    ph = out["phases"]
    end_s = out["delivered"]["end"] if out["delivered"] else out["t_steps"]
    sent = sum(s["sent"] for s in out["steps"])
    redone = sum(s["redispatched"] for s in out["steps"])
    print(f"emergency event {out['event_id']}: {out['cleared']['awards']} unit awards, {out['agents']} operators "
          f"({out['channels']} broker connection(s) for their agents), operator instructions "
          f"{out['operator_instructions']}")
    print(f"  publish {out['t_publish']:.3f} s | clear done at {out['t_clear']:.2f} s | execute done at "
          f"{out['t_execute']:.2f} s (times after publish)")
    for p, span in ph.items():
        if span is not None:
            print(f"  {p:<20} {span['start']:6.2f} s -> {span['end']:6.2f} s   ({span['summed']:.2f} s summed over agents)")
    print(f"  device instructions sent {sent:,} (+{redone:,} re-dispatched); by state {out['by_state']}")
    print(f"  devices that acknowledged: {out['answered']:,} of {n:,}; within the 20 s acknowledgement timeout: "
          f"{out['in_time']:,}")
    print(f"  last device acknowledgement committed {end_s:.2f} s after publish (received at {out['last_ack_s']:.2f} s); "
          f"agents' steps returned at {out['t_steps']:.2f} s")
    print(f"  {out['load_before']} before the event, {out['load_after']} after; ingest {out['ingest']}")
    print(f"  target <= {TARGET_S:.0f} s: {'met' if end_s <= TARGET_S else 'NOT met'}; aim <= {AIM_S:.0f} s: "
          f"{'met' if end_s <= AIM_S else 'not met'}")

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    def done(k: str) -> float | None:
        return r(ph[k]["end"]) if ph[k] else None

    def spent(k: str) -> float | None:
        return r(ph[k]["end"] - ph[k]["start"]) if ph[k] else None

    result("emergency_dispatch", end_s, "s", TARGET_S, n,
           reference_is="the issue's 60 s bound (aim 10 s), not a same-run comparison",
           broker_connections=out["channels"], transport="per device" if args.per_device else "per site gateway",
           clear_s=r(out["t_clear"] - out["t_publish"]), execute_s=r(out["t_execute"] - out["t_clear"]),
           operator_ack_s=spent("operator_ack"), operator_ack_done_s=done("operator_ack"),
           split_db_insert_s=spent("split_db_insert"), split_db_insert_done_s=done("split_db_insert"),
           mqtt_send_ack_s=spent("mqtt_send_ack"), mqtt_send_ack_done_s=done("mqtt_send_ack"),
           redispatch_check_done_s=done("redispatch_check"), redispatch_send_ack_s=spent("redispatch_send_ack"),
           steps_done_s=r(out["t_steps"]), device_instructions=sent, redispatched=redone,
           devices_acknowledged=out["answered"], devices_acknowledged_in_time=out["in_time"],
           device_states=out["by_state"], operators=out["agents"], unit_awards=out["cleared"]["awards"],
           load_before=out["load_before"], load_after=out["load_after"])


if __name__ == "__main__":
    main()
