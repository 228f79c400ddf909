"""Simulated OCPP charge points (1.6J and 2.0.1) built on the ``ocpp`` library: a real peer for the CSMS.

Each charger boots, reports its connector, starts a transaction for a plugged-in EV, and every
``interval_s`` sends its meter values (power, import/export energy registers, state of charge). It
follows the charging profiles it is given: the power in each interval is the limit of the
highest-stack profile valid at that moment (a transaction profile over the default one), bounded by
the charger's rating and the EV's battery; on OCPP 2.0.1 a V2G charger discharges when the limit is
negative (down to the EV's reserve). When its connection drops it forgets its transaction profiles
and falls back to its default profile, then reconnects and boots again.

    python -m openvpp.sim.chargers --url ws://127.0.0.1:9000 --ids R1,R2 --interval 10 --duration 60

prints one JSON line of statistics (messages, round-trip latency, how late the ticks ran).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Profile:
    purpose: str                 # "default" | "tx"
    stack_level: int
    periods: list[tuple[int, float]]   # (start offset s, limit kW)
    start: datetime | None = None      # None: relative to the transaction start
    duration_s: int | None = None

    def limit_at(self, now: datetime, tx_start: datetime) -> float | None:
        origin = self.start or tx_start
        off = (now - origin).total_seconds()
        if off < 0 or (self.duration_s is not None and off >= self.duration_s):
            return None
        lim = None
        for s, v in self.periods:
            if off >= s:
                lim = v
        return lim


@dataclass
class EV:
    battery_kwh: float = 60.0
    soc: float = 0.3
    target_soc: float = 0.9
    reserve_soc: float = 0.3
    max_kw: float = 60.0


@dataclass
class ChargerState:
    """The physics and the profiles of one simulated charger (shared by the 1.6 and 2.0.1 peers)."""

    cp_id: str
    version: str
    max_kw: float
    max_discharge_kw: float = 0.0
    ev: EV = field(default_factory=EV)
    profiles: dict[str, Profile] = field(default_factory=dict)
    import_wh: float = 0.0
    export_wh: float = 0.0
    power_kw: float = 0.0
    tx_start: datetime | None = None
    transaction_id: str | int | None = None
    seq: int = 0

    def limit_kw(self, now: datetime) -> float:
        """Composite limit: the tx profile where valid, else the default profile, else the rating."""
        for purpose in ("tx", "default"):
            p = self.profiles.get(purpose)
            if p is not None:
                lim = p.limit_at(now, self.tx_start or now)
                if lim is not None:
                    return lim
        return self.max_kw

    def step(self, now: datetime, dt_s: float) -> float:
        """Power over the next ``dt_s`` seconds under the profiles; updates registers and SoC."""
        lim = self.limit_kw(now)
        ev = self.ev
        if lim >= 0:
            room = max(ev.target_soc - ev.soc, 0.0) * ev.battery_kwh * 3600.0 / dt_s
            p = min(lim, self.max_kw, ev.max_kw, room)
        else:
            avail = max(ev.soc - ev.reserve_soc, 0.0) * ev.battery_kwh * 3600.0 / dt_s
            p = -min(-lim, self.max_discharge_kw, avail)
        e = p * dt_s / 3600.0
        ev.soc = min(1.0, max(0.0, ev.soc + e / ev.battery_kwh))
        if p >= 0:
            self.import_wh += e * 1000.0
        else:
            self.export_wh += -e * 1000.0
        self.power_kw = p
        return p

    def lost_connection(self) -> None:
        """OCPP: profiles persist in a charger, but this one is told to fall back to its default when cut off."""
        self.profiles.pop("tx", None)

    def set_profile(self, purpose: str, stack_level: int, unit: str, periods: list[dict], start: str | None,
                    duration: int | None) -> bool:
        if unit != "W":
            return False
        parsed = [(int(p["start_period"]), float(p["limit"]) / 1000.0) for p in periods]
        if self.version == "1.6" or self.max_discharge_kw <= 0:
            parsed = [(s, max(v, 0.0)) for s, v in parsed]
        self.profiles[purpose] = Profile(purpose, stack_level, parsed,
                                         datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None,
                                         duration)
        return True


def _profile_status(state: ChargerState, profile: dict, schedule: dict) -> str:
    """Apply a SetChargingProfile (either version's profile and its schedule) to the charger's state."""
    purpose = "default" if profile["charging_profile_purpose"] == "TxDefaultProfile" else "tx"
    ok = state.set_profile(purpose, profile["stack_level"], schedule["charging_rate_unit"],
                           schedule["charging_schedule_period"], schedule.get("start_schedule"),
                           schedule.get("duration"))
    return "Accepted" if ok else "Rejected"


class _ClearsProfiles:
    """ClearChargingProfile, the same in both versions (the ocpp library finds handlers by name, inherited too)."""

    state: ChargerState

    @on("ClearChargingProfile")
    def on_clear(self, **_kw):
        self.state.profiles.pop("tx", None)
        return self._call_result.ClearChargingProfile(status="Accepted")


class Peer16(_ClearsProfiles, CP16):
    state: ChargerState

    @on("SetChargingProfile")
    def on_set_profile(self, connector_id, cs_charging_profiles, **_kw):
        p = cs_charging_profiles
        return self._call_result.SetChargingProfile(status=_profile_status(self.state, p, p["charging_schedule"]))

    async def boot(self) -> bool:
        r = await self.call(call16.BootNotification(charge_point_vendor="openvpp-sim", charge_point_model="AC-7",
                                                    charge_point_serial_number=self.id[:25]))
        return r.status == "Accepted"

    async def plug_in(self, now: datetime) -> None:
        await self.call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
        r = await self.call(call16.StartTransaction(connector_id=1, id_tag="TAG" + self.id[-8:],
                                                    meter_start=int(self.state.import_wh), timestamp=_iso(now)))
        self.state.transaction_id = r.transaction_id
        self.state.tx_start = now

    async def meter(self, now: datetime) -> None:
        s = self.state
        await self.call(call16.MeterValues(connector_id=1, transaction_id=s.transaction_id, meter_value=[{
            "timestamp": _iso(now), "sampled_value": [
                {"value": f"{s.import_wh:.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": f"{max(s.power_kw, 0.0) * 1000:.1f}", "measurand": "Power.Active.Import", "unit": "W"},
                {"value": f"{s.ev.soc * 100:.1f}", "measurand": "SoC", "unit": "Percent"}]}]))

    async def unplug(self, now: datetime) -> None:
        await self.call(call16.StopTransaction(meter_stop=int(self.state.import_wh), timestamp=_iso(now),
                                               transaction_id=int(self.state.transaction_id), reason="EVDisconnected"))


class Peer201(_ClearsProfiles, CP201):
    state: ChargerState

    @on("SetChargingProfile")
    def on_set_profile(self, evse_id, charging_profile, **_kw):
        p = charging_profile
        return self._call_result.SetChargingProfile(status=_profile_status(self.state, p, p["charging_schedule"][0]))

    async def boot(self) -> bool:
        r = await self.call(call201.BootNotification(
            charging_station={"vendor_name": "openvpp-sim", "model": "DC-V2G", "serial_number": self.id[:25]},
            reason="PowerUp"))
        return r.status == "Accepted"

    def _values(self, now: datetime) -> list[dict]:
        s = self.state
        return [{"timestamp": _iso(now), "sampled_value": [
            {"value": round(s.import_wh, 1), "measurand": "Energy.Active.Import.Register"},
            {"value": round(s.export_wh, 1), "measurand": "Energy.Active.Export.Register"},
            {"value": round(max(s.power_kw, 0.0) * 1000, 1), "measurand": "Power.Active.Import"},
            {"value": round(max(-s.power_kw, 0.0) * 1000, 1), "measurand": "Power.Active.Export"},
            {"value": round(s.ev.soc * 100, 1), "measurand": "SoC"}]}]

    async def plug_in(self, now: datetime) -> None:
        s = self.state
        await self.call(call201.StatusNotification(timestamp=_iso(now), connector_status="Occupied", evse_id=1,
                                                   connector_id=1))
        s.transaction_id = f"T{self.id}-{int(now.timestamp())}"
        s.tx_start = now
        s.seq = 0
        await self.call(call201.TransactionEvent(
            event_type="Started", timestamp=_iso(now), trigger_reason="CablePluggedIn", seq_no=s.seq,
            transaction_info={"transaction_id": s.transaction_id}, evse={"id": 1, "connector_id": 1},
            id_token={"id_token": "TAG" + self.id[-8:], "type": "ISO14443"}, meter_value=self._values(now)))

    async def meter(self, now: datetime) -> None:
        s = self.state
        s.seq += 1
        await self.call(call201.TransactionEvent(
            event_type="Updated", timestamp=_iso(now), trigger_reason="MeterValuePeriodic", seq_no=s.seq,
            transaction_info={"transaction_id": s.transaction_id}, meter_value=self._values(now)))

    async def unplug(self, now: datetime) -> None:
        s = self.state
        s.seq += 1
        await self.call(call201.TransactionEvent(
            event_type="Ended", timestamp=_iso(now), trigger_reason="EVDeparted", seq_no=s.seq,
            transaction_info={"transaction_id": s.transaction_id, "stopped_reason": "EVDisconnected"},
            meter_value=self._values(now)))


@dataclass
class Stats:
    sent: int = 0
    errors: int = 0
    rtt_s: list[float] = field(default_factory=list)
    late_s: list[float] = field(default_factory=list)     # how far behind its schedule each tick started
    connected: int = 0
    boots: int = 0

    def summary(self) -> dict:
        def pct(v: list[float], q: float) -> float:
            return round(statistics.quantiles(v, n=100)[int(q) - 1], 4) if len(v) >= 2 else (round(v[0], 4) if v else 0.0)
        return {"sent": self.sent, "errors": self.errors, "boots": self.boots, "max_connected": self.connected,
                "rtt_p50_s": pct(self.rtt_s, 50), "rtt_p95_s": pct(self.rtt_s, 95),
                "rtt_max_s": round(max(self.rtt_s, default=0.0), 4),
                "late_p95_s": pct(self.late_s, 95), "late_max_s": round(max(self.late_s, default=0.0), 4)}


async def run_charger(url: str, state: ChargerState, interval_s: float, until: float, stats: Stats,
                      speed: float = 1.0, start_delay_s: float = 0.0, live: list | None = None) -> None:
    """Connect, boot, plug in, report every ``interval_s`` until the monotonic clock reaches ``until``.

    ``speed`` > 1 runs the EV's simulated time faster than the wall clock (meter timestamps stay wall time).
    """
    await asyncio.sleep(start_delay_s)
    proto = "ocpp2.0.1" if state.version == "2.0.1" else "ocpp1.6"
    cls = Peer201 if state.version == "2.0.1" else Peer16
    while time.monotonic() < until:
        try:
            async with websockets.connect(f"{url.rstrip('/')}/{state.cp_id}", subprotocols=[proto],
                                          open_timeout=60, ping_interval=None) as ws:
                peer = cls(state.cp_id, ws, response_timeout=60)
                peer.state = state
                reader = asyncio.create_task(peer.start())
                try:
                    if not await peer.boot():
                        return
                    stats.boots += 1
                    if live is not None:
                        live[0] += 1
                        stats.connected = max(stats.connected, live[0])
                    now = datetime.now(UTC)
                    if state.transaction_id is None:
                        await peer.plug_in(now)
                    nxt = time.monotonic() + interval_s
                    while time.monotonic() < until:
                        await asyncio.sleep(max(0.0, nxt - time.monotonic()))
                        stats.late_s.append(max(0.0, time.monotonic() - nxt))
                        now = datetime.now(UTC)
                        state.step(now, interval_s * speed)
                        t0 = time.monotonic()
                        await peer.meter(now)
                        stats.rtt_s.append(time.monotonic() - t0)
                        stats.sent += 1
                        nxt += interval_s
                    await peer.unplug(datetime.now(UTC))
                    return
                finally:
                    if live is not None and stats.boots:
                        live[0] -= 1
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
        except (TimeoutError, OSError, websockets.ConnectionClosed):
            stats.errors += 1
            state.lost_connection()
            if time.monotonic() >= until:
                return
            await asyncio.sleep(min(5.0, interval_s) * (0.5 + random.random()))


async def run_fleet(url: str, chargers: list[ChargerState], interval_s: float, duration_s: float,
                    ramp_s: float = 5.0, speed: float = 1.0) -> dict:
    """Run many chargers at once (connections spread over ``ramp_s``); returns ``Stats.summary()``."""
    stats = Stats()
    live = [0]
    until = time.monotonic() + ramp_s + duration_s
    n = max(1, len(chargers))
    await asyncio.gather(*(run_charger(url, c, interval_s, until, stats, speed, ramp_s * i / n, live)
                           for i, c in enumerate(chargers)))
    return stats.summary()


def fleet_states(ids: list[str], v201_share: float = 0.4, max_kw: float = 7.0, seed: int = 0) -> list[ChargerState]:
    """Chargers from ids; an id may carry its rating as ``ID,kW`` (default ``max_kw``)."""
    rng = random.Random(seed)
    out = []
    for item in ids:
        cp, _, kw = item.partition(",")
        rated = float(kw) if kw else max_kw
        v201 = rng.random() < v201_share
        out.append(ChargerState(cp, "2.0.1" if v201 else "1.6", rated, 0.0,
                                EV(60.0, rng.uniform(0.1, 0.5), 0.9, 0.3, rated)))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Simulated OCPP charger fleet (prints one JSON line of statistics)")
    ap.add_argument("--url", required=True, help="CSMS base URL, e.g. ws://127.0.0.1:9000")
    ap.add_argument("--ids", default="", help="comma-separated charge point ids")
    ap.add_argument("--ids-file", default="", help="file with one charge point id per line (optionally 'id,kW')")
    ap.add_argument("--v201-share", type=float, default=0.4)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--ramp", type=float, default=5.0)
    args = ap.parse_args(argv)
    ids = [i for i in args.ids.split(",") if i]
    if args.ids_file:
        with open(args.ids_file, encoding="utf-8") as fh:
            ids += [line.strip() for line in fh if line.strip()]
    states = fleet_states(ids, args.v201_share)
    out = asyncio.run(run_fleet(args.url, states, args.interval, args.duration, args.ramp))
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
