"""Device simulator: a generated city's resources publishing telemetry over MQTT, obeying instructions.

``DeviceFleet`` is the pure part (arrays in, arrays out, no socket): the power of every device
at a time from its archetype profile (``kernels.profiles.materialise``), optional relative noise,
state of charge and energy counter, and the instructions in force. Every report carries, per
device, active power ``p``, reactive power ``q`` (from the type's power factor: ``POWER_FACTOR``,
inverters at unity), the active import energy counter ``e`` (kWh, integrated from ``p``), the
state of charge ``soc`` of storage and V2G, and the quality flag ``qf`` (0; 2 with ``p`` = 0 for
the share ``bad`` of readings that failed). ``run_devices`` connects it
to a broker: one telemetry batch per gateway (site) and report, instructions in on
``{root}/cmd/{operator_id}/{device_id}``, acknowledgements out on ``{root}/ack/{operator_id}/{device_id}``;
a gateway's batch of instructions on ``{root}/gcmd/{operator_id}/{gateway_id}`` (``{"gw", "items":
[{"device", ...instruction}]}``) is answered with one ``{"gw", "items": [ack, ...]}`` on
``{root}/gack/{operator_id}/{gateway_id}``.

Time: ``clock`` is the platform's clock (``core.clock``: the wall clock, or a ``SimClock`` in
accelerated time shared with the platform's services); every point is stamped with it, because the
platform refuses points from its future. On the wall clock the profiles may still run ``speed``
times faster (a day in 24 minutes at speed 60); with a ``SimClock`` keep ``speed`` = 1, the clock
itself runs fast and the profile follows its simulated time. A device reports every ``interval_s``
seconds of profile time.

Instruction message (JSON; durations in wall-clock seconds, the platform's clock)::

    {"id": "INS-1", "kind": "setpoint", "p": -50.0, "duration_s": 900}     # hold p = -50 kW
    {"id": "INS-2", "kind": "limit", "max_kw": 20.0, "min_kw": null, "duration_s": 600}
    {"id": "INS-3", "kind": "release"}                                       # back to the profile

optionally with ``"start"`` (epoch ms of the platform clock; default: on receipt). An instruction
that starts later waits in the device's schedule and takes over from the one in force when its
start comes (one instruction per event slot, sent ahead). The device answers
``{"id", "device", "status": "accepted" | "rejected", "reason", "t"}``. A setpoint beyond
±capacity is clipped to capacity and accepted (the ack says so in ``reason``).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from openvpp.core.clock import Clock, speed_of, wall
from openvpp.core.timeslots import SLOT_MINUTES
from openvpp.kernels.profiles import materialise
from openvpp.services.telemetry import BIDIRECTIONAL_TYPES, TOPIC_ROOT, encode_columns
from openvpp.sim.profiles import load_profiles, load_resource_profiles

log = logging.getLogger("openvpp.sim.devices")
#: acknowledgements in flight at once (published, PUBACK not yet back) per simulator connection
ACK_WINDOW = 1000
SLOT_MS = SLOT_MINUTES * 60_000
NONE, SETPOINT, LIMIT = 0, 1, 2
#: power factor of each resource type's load (lagging: q > 0 when consuming); inverter-coupled
#: devices (PV, storage, V2G) run at unity. An assumption of the simulator, not a policy number.
POWER_FACTOR = {"central_ac": 0.85, "district_cooling": 0.85, "ev_charging": 0.98, "ev_swapping": 0.98,
                "data_center": 0.95, "base_station": 0.95, "shore_power": 0.9, "distributed_pv": 1.0,
                "user_storage": 1.0, "v2g_charger": 1.0}
DEFAULT_POWER_FACTOR = 0.95


@dataclass
class Gateway:
    gateway_id: str        # the site id
    operator_id: str
    rows: np.ndarray       # device rows reporting through this gateway


@dataclass
class DeviceFleet:
    """The devices of a city as arrays (resources.csv order)."""

    resource_id: np.ndarray
    operator_id: np.ndarray
    site_id: np.ndarray
    capacity_kw: np.ndarray
    bidirectional: np.ndarray
    archetypes: np.ndarray          # (n_archetypes, n_slots) per unit
    archetype_idx: np.ndarray
    scale_kw: np.ndarray
    noise_seed: np.ndarray
    year_start_ms: int              # UTC ms of the first profile slot
    speed: float = 1.0
    noise: float = 0.0              # extra relative noise on top of the profile's own [-]
    drop: float = 0.0               # share of devices that never report [-]
    bad: float = 0.0                # share of readings that fail: published with qf = 2 and p = 0 [-]
    power_factor: np.ndarray = field(default=None)   # (n,) cos phi of each device's load [-]
    interval_s: float = 60.0        # reporting interval in simulated seconds
    seed: int = 0
    sim_start_ms: int = 0           # profile time at wall_start
    wall_start_ms: int = 0
    mode: np.ndarray = field(default=None)
    value_kw: np.ndarray = field(default=None)
    min_kw: np.ndarray = field(default=None)
    max_kw: np.ndarray = field(default=None)
    from_ms: np.ndarray = field(default=None)
    until_ms: np.ndarray = field(default=None)
    soc: np.ndarray = field(default=None)
    energy_kwh: np.ndarray = field(default=None)
    alive: np.ndarray = field(default=None)
    last_ms: int | None = None
    clock: Clock = wall             # the platform's clock (core.clock); stamps and instruction times

    def __post_init__(self) -> None:
        n = len(self.resource_id)
        self.pos = {rid: i for i, rid in enumerate(self.resource_id.tolist())}
        self.mode = np.zeros(n, np.int8)
        self.value_kw = np.zeros(n)
        self.min_kw = np.full(n, -np.inf)
        self.max_kw = np.full(n, np.inf)
        self.from_ms = np.zeros(n, np.int64)
        self.until_ms = np.zeros(n, np.int64)
        self.soc = np.where(self.bidirectional, 0.5, np.nan)
        self.energy_kwh = np.zeros(n)
        if self.power_factor is None:
            self.power_factor = np.full(n, DEFAULT_POWER_FACTOR)
        self.rng = np.random.default_rng(self.seed)
        #: instructions that start later: (start_ms, seq, row, mode, value, min, max, until_ms)
        self.scheduled: list[tuple] = []
        self._seq = 0
        self.alive = self.rng.random(n) >= self.drop
        # one gateway per site and operator (a site may host several operators' devices)
        key = np.char.add(np.char.add(self.site_id.astype(str), "|"), self.operator_id.astype(str))
        order = np.argsort(key, kind="stable")
        _, starts = np.unique(key[order], return_index=True)
        bounds = list(starts) + [n]
        self.gateways = [Gateway(str(self.site_id[order[bounds[k]]]), str(self.operator_id[order[bounds[k]]]),
                                 order[bounds[k]:bounds[k + 1]]) for k in range(len(starts))]
        now = int(self.clock() * 1000)
        self.wall_start_ms = self.wall_start_ms or now
        if not self.sim_start_ms:
            # today's local time of day in the profile year
            n_slots = self.archetypes.shape[1]
            self.sim_start_ms = self.year_start_ms + (now - self.year_start_ms) % (n_slots * SLOT_MS)

    @classmethod
    def from_city(cls, city_dir: Path, **kw) -> DeviceFleet:
        city_dir = Path(city_dir)
        archetype_ids, matrix, ts = load_profiles(city_dir)
        prof = load_resource_profiles(city_dir, archetype_ids)
        t = pacsv.read_csv(city_dir / "resources.csv", convert_options=pacsv.ConvertOptions(
            include_columns=["resource_id", "operator_id", "site_id", "capacity_kw", "resource_type"],
            column_types={"resource_id": pa.string(), "operator_id": pa.string(), "site_id": pa.string(),
                          "capacity_kw": pa.float64(), "resource_type": pa.string()},
            strings_can_be_null=False))
        ops = np.asarray(t.column("operator_id").to_pylist(), dtype=object)
        ops = np.where(ops == "", "-", ops)   # devices without an operator report under "-"
        types = np.asarray(t.column("resource_type").to_pylist(), dtype=object)
        pf = np.array([POWER_FACTOR.get(x, DEFAULT_POWER_FACTOR) for x in types.tolist()], np.float64)
        return cls(resource_id=np.asarray(t.column("resource_id").to_pylist(), dtype=object),
                   operator_id=ops, site_id=np.asarray(t.column("site_id").to_pylist(), dtype=object),
                   capacity_kw=t.column("capacity_kw").to_numpy(), bidirectional=np.isin(types, BIDIRECTIONAL_TYPES),
                   power_factor=pf,
                   archetypes=matrix, archetype_idx=prof.archetype_idx, scale_kw=prof.scale_kw,
                   noise_seed=prof.noise_seed, year_start_ms=int(ts[0].astype(np.int64)), **kw)

    @property
    def n(self) -> int:
        return len(self.resource_id)

    def profile_ms(self, wall_ms: int) -> int:
        """Profile time shown at wall time ``wall_ms`` (wraps around the profile year)."""
        n_slots = self.archetypes.shape[1]
        t = self.sim_start_ms + int((wall_ms - self.wall_start_ms) * self.speed)
        return self.year_start_ms + (t - self.year_start_ms) % (n_slots * SLOT_MS)

    def _activate(self, wall_ms: int) -> None:
        """Scheduled instructions whose start has come take over from the one in force."""
        while self.scheduled and self.scheduled[0][0] <= wall_ms:
            start, _, i, mode, value, lo, hi, until = heapq.heappop(self.scheduled)
            self.mode[i], self.value_kw[i], self.min_kw[i], self.max_kw[i] = mode, value, lo, hi
            self.from_ms[i], self.until_ms[i] = start, until

    def power(self, wall_ms: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Active power [kW] of ``rows`` (default all) at platform time ``wall_ms``, instructions applied."""
        self._activate(wall_ms)
        rows = np.arange(self.n) if rows is None else rows
        slot = (self.profile_ms(wall_ms) - self.year_start_ms) // SLOT_MS
        p = materialise(self.archetypes, self.archetype_idx[rows], self.scale_kw[rows], self.noise_seed[rows],
                        int(slot), int(slot) + 1)[:, 0].astype(np.float64)
        if self.noise > 0:
            p *= 1.0 + self.noise * self.rng.standard_normal(len(rows))
        cap = self.capacity_kw[rows]
        p = np.clip(p, -cap, cap)
        active = (self.from_ms[rows] <= wall_ms) & (wall_ms < self.until_ms[rows])
        sp = active & (self.mode[rows] == SETPOINT)
        p = np.where(sp, self.value_kw[rows], p)
        lim = active & (self.mode[rows] == LIMIT)
        p = np.where(lim, np.clip(p, self.min_kw[rows], self.max_kw[rows]), p)
        return p

    def step(self, wall_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Advance the state (soc, energy counter) to ``wall_ms``; return (power, soc) of every device."""
        p = self.power(wall_ms)
        if self.last_ms is not None:
            dt_h = max(wall_ms - self.last_ms, 0) * self.speed / 3_600_000
            self.energy_kwh += np.maximum(p, 0.0) * dt_h
            energy_cap = np.maximum(self.capacity_kw * 2.0, 1e-9)     # 2 h storage / battery
            self.soc = np.where(self.bidirectional, np.clip(self.soc + p * dt_h / energy_cap, 0.0, 1.0), np.nan)
        self.last_ms = wall_ms
        return p, self.soc

    def reactive(self, p_kw: np.ndarray) -> np.ndarray:
        """Reactive power [kvar] of loads at their power factor (lagging, > 0); 0 at unity."""
        pf = np.clip(self.power_factor, 1e-3, 1.0)
        return np.abs(p_kw) * np.sqrt(1.0 - pf * pf) / pf

    def readings(self, wall_ms: int) -> dict[str, np.ndarray]:
        """Advance to ``wall_ms`` and read every device: ``p``, ``q``, ``e``, ``soc``, ``qf`` arrays."""
        p, soc = self.step(wall_ms)
        qf = np.zeros(self.n, np.int16)
        if self.bad > 0:
            qf[self.rng.random(self.n) < self.bad] = 2
        failed = qf == 2
        return {"p": np.where(failed, 0.0, p), "q": np.where(failed, 0.0, self.reactive(p)), "e": self.energy_kwh.copy(),
                "soc": soc, "qf": qf}

    def messages(self, wall_ms: int, root: str = TOPIC_ROOT) -> list[tuple[str, bytes]]:
        """One telemetry batch per gateway (site) for the devices that are not dropped."""
        r = self.readings(wall_ms)
        out = []
        for gw in self.gateways:
            rows = gw.rows[self.alive[gw.rows]]
            if not len(rows):
                continue
            s = r["soc"][rows]
            payload = encode_columns(gw.gateway_id, self.resource_id[rows].tolist(), np.full(len(rows), wall_ms),
                                     r["p"][rows], soc=s if not np.isnan(s).all() else None, q_kvar=r["q"][rows],
                                     qf=r["qf"][rows], e_kwh=r["e"][rows])
            out.append((f"{root}/tele/{gw.operator_id}/{gw.gateway_id}", payload))
        return out

    def apply(self, device_id: str, msg: dict, now_ms: int) -> dict:
        """Apply one instruction to one device; return the acknowledgement."""
        ack = {"id": msg.get("id"), "device": device_id, "t": now_ms, "status": "accepted", "reason": ""}
        i = self.pos.get(device_id)
        if i is None:
            return ack | {"status": "rejected", "reason": "unknown device"}
        kind = msg.get("kind")
        start = int(msg.get("start") or now_ms)
        duration = msg.get("duration_s", 900)
        if kind == "release":
            self.mode[i] = NONE
            self.scheduled = [e for e in self.scheduled if e[2] != i]
            heapq.heapify(self.scheduled)
            return ack
        if not isinstance(duration, (int, float)) or not math.isfinite(duration) or duration <= 0:
            return ack | {"status": "rejected", "reason": "duration_s must be a positive number"}
        cap = float(self.capacity_kw[i])
        value, lo_kw, hi_kw = 0.0, -np.inf, np.inf
        if kind == "setpoint":
            value = msg.get("p")
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return ack | {"status": "rejected", "reason": "p must be a number (kW)"}
            clipped = min(max(float(value), -cap), cap)
            mode, value = SETPOINT, clipped
            if clipped != msg["p"]:
                ack["reason"] = f"clipped to capacity {cap} kW"
        elif kind == "limit":
            lo, hi = msg.get("min_kw"), msg.get("max_kw")
            if lo is None and hi is None:
                return ack | {"status": "rejected", "reason": "a limit needs min_kw or max_kw"}
            mode = LIMIT
            lo_kw = -np.inf if lo is None else float(lo)
            hi_kw = np.inf if hi is None else float(hi)
        else:
            return ack | {"status": "rejected", "reason": f"unknown kind {kind!r}"}
        until = start + int(duration * 1000)
        if start > now_ms:
            self._seq += 1
            heapq.heappush(self.scheduled, (start, self._seq, i, mode, value, lo_kw, hi_kw, until))
        else:
            self.mode[i], self.value_kw[i], self.min_kw[i], self.max_kw[i] = mode, value, lo_kw, hi_kw
            self.from_ms[i], self.until_ms[i] = start, until
        return ack


# ---------------------------------------------------------------- over MQTT

def _broker(url: str) -> tuple[str, int, str]:
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    return u.hostname or "127.0.0.1", u.port or 1883, u.path.strip("/") or TOPIC_ROOT


async def run_devices(fleet: DeviceFleet, url: str, stop: asyncio.Event | None = None, reports: int | None = None,
                      protocol: int = 5, client_id: str | None = None,
                      on_report: Callable[[int, int], None] | None = None) -> dict:
    """Publish telemetry every ``interval_s`` of profile time and obey instructions, until ``stop``
    is set or ``reports`` reports were sent. Returns counts. Reconnects on broker loss.

    Acknowledgements are published as the instructions arrive, without waiting for each one's
    PUBACK before taking the next instruction (at most ``ACK_WINDOW`` awaiting theirs)."""
    import aiomqtt

    from openvpp.adapters.mqtt import SOCKET_OPTIONS

    host, port, root = _broker(url)
    stop = stop or asyncio.Event()
    clock = fleet.clock
    counts = {"reports": 0, "messages": 0, "points": 0, "instructions": 0, "reconnects": 0}
    proto = aiomqtt.ProtocolVersion.V5 if protocol == 5 else aiomqtt.ProtocolVersion.V311
    window = asyncio.Semaphore(ACK_WINDOW)
    acking: set[asyncio.Task] = set()
    while not stop.is_set():
        try:
            async with aiomqtt.Client(host, port, protocol=proto, identifier=client_id, timeout=30,
                                      socket_options=SOCKET_OPTIONS) as client:
                await client.subscribe(f"{root}/cmd/+/+", qos=1)
                await client.subscribe(f"{root}/gcmd/+/+", qos=1)

                async def publish_ack(topic: str, body: str) -> None:
                    try:
                        await client.publish(topic, body, qos=1)
                    except aiomqtt.MqttError as exc:
                        log.warning("sim devices: acknowledgement on %s not sent (%s)", topic, exc)
                    finally:
                        window.release()

                def gateway_acks(gateway: str, payload: bytes) -> dict:
                    """A gateway's batch: each item is one device's instruction (``device`` names it)."""
                    try:
                        msg = json.loads(payload)
                    except ValueError:
                        return {"gw": gateway, "items": [], "error": "not JSON"}
                    items = msg.get("items") if isinstance(msg, dict) else None
                    if not isinstance(items, list):
                        return {"gw": gateway, "items": [], "error": "items must be a list"}
                    now_ms = int(clock() * 1000)
                    acks = []
                    for item in items:
                        if isinstance(item, dict):
                            acks.append(fleet.apply(str(item.get("device")), item, now_ms))
                        else:
                            acks.append({"id": None, "device": None, "status": "rejected",
                                         "reason": "an item must be an object"})
                    counts["instructions"] += len(acks)
                    return {"gw": gateway, "items": acks}

                async def listen() -> None:
                    async for m in client.messages:
                        levels = m.topic.value.split("/")
                        device, operator = levels[-1], levels[-2]
                        if levels[-3] == "gcmd":
                            body = gateway_acks(device, m.payload)
                            topic = f"{root}/gack/{operator}/{device}"
                        else:
                            try:
                                msg = json.loads(m.payload)
                                body = fleet.apply(device, msg if isinstance(msg, dict) else {}, int(clock() * 1000))
                            except ValueError:
                                body = {"id": None, "device": device, "status": "rejected", "reason": "not JSON"}
                            counts["instructions"] += 1
                            topic = f"{root}/ack/{operator}/{device}"
                        await window.acquire()
                        task = asyncio.create_task(publish_ack(topic, json.dumps(body)))
                        acking.add(task)
                        task.add_done_callback(acking.discard)

                listener = asyncio.create_task(listen())
                try:
                    period_ms = fleet.interval_s * 1000 / fleet.speed      # in the platform clock's ms
                    next_ms = clock() * 1000
                    while not stop.is_set() and (reports is None or counts["reports"] < reports):
                        now_ms = int(clock() * 1000)
                        msgs = await asyncio.to_thread(fleet.messages, now_ms, root)
                        for topic, payload in msgs:
                            await client.publish(topic, payload, qos=1)
                        counts["reports"] += 1
                        counts["messages"] += len(msgs)
                        counts["points"] += int(fleet.alive.sum())
                        if on_report:
                            on_report(counts["reports"], now_ms)
                        # the next report is due at a time of the platform clock; wait for it in short
                        # steps, so a simulated clock that speeds up is followed at once
                        next_ms = max(next_ms + period_ms, now_ms - period_ms)   # no burst after a stall
                        while not stop.is_set():
                            wait_s = (next_ms - clock() * 1000) / 1000 / speed_of(clock)
                            if wait_s <= 0:
                                break
                            await asyncio.sleep(min(wait_s, 0.05))
                    if reports is not None and counts["reports"] >= reports:
                        return counts
                finally:
                    listener.cancel()
        except aiomqtt.MqttError as exc:
            counts["reconnects"] += 1
            log.warning("sim devices: broker connection lost (%s); reconnecting", exc)
            await asyncio.sleep(1.0)
    return counts
