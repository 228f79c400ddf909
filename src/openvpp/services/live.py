"""Live state: current power and available up/down flexibility per device, totals per grid node
(every level), operator and pool, recomputed every few seconds over struct-of-arrays.

The state is fed by the bus (``tele.accepted``, published by every ingest after commit) and
seeded from the database on start. A device with no point for ``offline_intervals`` of its own
expected reporting interval is offline: its power and flexibility leave the totals (it is counted
as offline). A device's interval is the longest of those configured for its control protocol and
its resource type (``OPENVPP_TELEMETRY_INTERVALS``, defaults ``DEFAULT_INTERVALS_S``), else
``OPENVPP_TELEMETRY_INTERVAL_S``.

Nothing heavy runs on the event loop. Every ``live_refresh_s`` (at most 5 s, checked on start) a
worker thread takes a *snapshot*: a copy of the last points under the state's lock (the bus feed
takes the same lock), the flexibility of every device at the tick's instant, and the city-wide
totals of every level; the loop then publishes it as one reference. A tenant's totals are summed
from the same snapshot in a worker thread, once per tick and scope, so every ``/live`` answer of a
tick agrees with the others. Ticks follow the platform clock (``core.clock``): tick instants are
the multiples of ``live_refresh_s`` since the epoch, so successive snapshots are exactly one
interval apart (a service more than one interval behind resumes at the latest instant).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Engine, func, select

from openvpp.bus import Bus
from openvpp.core.clock import Clock, speed_of
from openvpp.core.errors import InvalidInput, NotFound, Violation
from openvpp.core.memory import freeze_long_lived
from openvpp.kernels import live as kl
from openvpp.kernels.aggregate import group_sum
from openvpp.kernels.live import live_flex
from openvpp.model.enums import ControlProtocol, ResourceType
from openvpp.services.scope import Scope
from openvpp.services.telemetry import (
    ACCEPTED_SUBJECT,
    BIDIRECTIONAL_TYPES,
    NO_TS,
    DeviceIndex,
    TelemetryConfig,
    decode,
)
from openvpp.store.schema import grid_nodes, operators
from openvpp.store.schema_telemetry import telemetry_raw

log = logging.getLogger("openvpp.live")

#: live levels → registry column of the group code ("city" is everything)
LEVELS = {"city": None, "district": "district_id", "substation": "substation_id", "feeder": "feeder_id",
          "transformer_area": "ta_id", "operator": "operator_id"}
#: extra groupings (e.g. pools): name → function(DeviceIndex) → (codes int32 (n,), labels)
GROUP_HOOKS: dict[str, Callable[[DeviceIndex], tuple[np.ndarray, list]]] = {}

#: bounds of ``live_refresh_s``: the issue asks for totals refreshed at least every 5 s
MIN_REFRESH_S, MAX_REFRESH_S = 0.05, 5.0
INTERVALS_ENV = "OPENVPP_TELEMETRY_INTERVALS"
#: expected reporting interval [s] of devices by control protocol (or resource type); a device no
#: entry names reports every ``TelemetryConfig.interval_s`` (60 s: MQTT gateways, and Modbus/SunSpec
#: and IEC 104 devices polled by a site gateway that publishes over MQTT). See docs/telemetry.md.
DEFAULT_INTERVALS_S: dict[str, float] = {
    "ocpp1.6": 300.0,       # the CSMS's heartbeat interval; clock-aligned meter values when idle
    "ocpp2.0.1": 300.0,
    "openadr2.0b": 300.0,   # a VEN's telemetry report-back period (assumption)
    "http": 300.0,          # an operator's technical support system posting batches (assumption)
}


def check_config(config: TelemetryConfig) -> None:
    """Refuse live settings the view cannot honour, naming the setting: a refresh period outside
    0.05..5 s, a reporting interval or an interval count that is not a number > 0."""
    bad = []
    r = config.live_refresh_s
    if not (isinstance(r, (int, float)) and MIN_REFRESH_S <= r <= MAX_REFRESH_S):
        bad.append(Violation("OPENVPP_TELEMETRY_LIVE_REFRESH_S",
                             f"must be between {MIN_REFRESH_S:g} and {MAX_REFRESH_S:g} s: live totals are "
                             f"refreshed at least every {MAX_REFRESH_S:g} s", r))
    for name, value in (("OPENVPP_TELEMETRY_INTERVAL_S", config.interval_s),
                        ("OPENVPP_TELEMETRY_OFFLINE_INTERVALS", config.offline_intervals)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            bad.append(Violation(name, "must be a number > 0", value))
    if bad:
        raise InvalidInput(bad)


def reporting_intervals(text: str | None = None) -> dict[str, float]:
    """Expected reporting interval [s] per control protocol or resource type: ``DEFAULT_INTERVALS_S``
    updated by ``text`` (``"ocpp1.6=60,distributed_pv=900"``; None: ``$OPENVPP_TELEMETRY_INTERVALS``).

    Refused naming the setting: an entry that is not NAME=SECONDS, a NAME that is neither a control
    protocol nor a resource type, SECONDS that is not a number > 0."""
    if text is None:
        text = os.environ.get(INTERVALS_ENV, "")
    names = [p.value for p in ControlProtocol] + [t.value for t in ResourceType]
    out = dict(DEFAULT_INTERVALS_S)
    bad = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        key, sep, value = (x.strip() for x in item.partition("="))
        if not sep or key not in names:
            bad.append(Violation(INTERVALS_ENV, "each entry must be NAME=SECONDS, NAME a control protocol or a "
                                 f"resource type ({', '.join(names)})", item))
            continue
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            bad.append(Violation(INTERVALS_ENV, f"the interval of {key} must be a number of seconds > 0", item))
            continue
        out[key] = seconds
    if bad:
        raise InvalidInput(bad)
    return out


# ---------------------------------------------------------------- state

@dataclass
class LiveTotals:
    at: datetime
    scope: str
    seconds: float
    levels: dict[str, dict] = field(default_factory=dict)   # level → {"ids", "power_kw", "up_kw", ...}
    tick: int = 0                                              # the recompute these totals come from

    def rows(self, level: str, keep: np.ndarray | None = None) -> list[dict]:
        """One row per group of ``level`` that has devices (and ``keep[group]`` when given)."""
        d = self.levels[level]
        sel = np.asarray(d["devices"]) > 0
        if keep is not None:
            sel &= keep
        out = []
        ids = d["ids"]
        for i in np.flatnonzero(sel):
            gid = ids[i]
            out.append({"id": gid, "power_kw": round(float(d["power_kw"][i]), 3),
                        "up_kw": round(float(d["up_kw"][i]), 3), "down_kw": round(float(d["down_kw"][i]), 3),
                        "online": int(d["online"][i]), "offline": int(d["devices"][i] - d["online"][i]),
                        "devices": int(d["devices"][i])})
        return out

    def summary(self) -> dict:
        city = self.rows("city")
        return {"at": self.at.isoformat(), "scope": self.scope, "seconds": round(self.seconds, 4),
                "city": city[0] if city else {"id": None, "power_kw": 0.0, "up_kw": 0.0, "down_kw": 0.0,
                                              "online": 0, "offline": 0, "devices": 0}}


class LiveState:
    """Struct-of-arrays state of every registry device (one row per ``DeviceIndex`` row).

    ``update`` (the bus feed) and ``snapshot`` (a worker thread) may run at once: both hold
    ``lock`` while they touch the last-point arrays. Everything else is fixed at construction.
    """

    def __init__(self, index: DeviceIndex, config: TelemetryConfig, intervals_s: Mapping[str, float] | None = None):
        self.index = index
        self.config = config
        self.lock = threading.Lock()
        n = index.n
        self.last_ts_ms = np.full(n, NO_TS, np.int64)
        self.p_kw = np.zeros(n)
        self.soc = np.full(n, np.nan)
        reg = index.reg
        types = reg.categories["resource_type"]
        self.bidirectional = np.isin(reg.codes["resource_type"],
                                     [types.index(t) for t in BIDIRECTIONAL_TYPES if t in types])
        self.generator = reg.codes["resource_type"] == (types.index("distributed_pv")
                                                        if "distributed_pv" in types else -2)
        table = DEFAULT_INTERVALS_S if intervals_s is None else intervals_s
        #: each device's expected reporting interval [s] and the silence after which it is offline [ms]
        self.interval_s = kl.device_intervals(config.interval_s, *(
            (reg.codes[col], np.array([table.get(c, np.nan) for c in reg.categories[col]], np.float64))
            for col in ("control_protocol", "resource_type")))
        self.offline_after_ms = np.rint(config.offline_intervals * self.interval_s * 1000).astype(np.int64)
        self.groups: dict[str, tuple[np.ndarray, list]] = {}
        for level, col in LEVELS.items():
            if col is None:
                self.groups[level] = (np.zeros(n, np.int32), [index.city_id])
            else:
                self.groups[level] = (reg.codes[col], list(reg.categories[col]))
        for name, hook in GROUP_HOOKS.items():
            self.groups[name] = hook(index)
        #: overlapping groups (pools): ids, each device's membership pattern, patterns → pools
        self.pool_ids: list[str] = []
        self.pool_codes = np.full(n, -1, np.int32)
        self.pool_incidence = np.zeros((0, 0), bool)

    def set_pools(self, pool_ids: list[str], masks: np.ndarray) -> None:
        """Pools are overlapping groups (a device may sit in several): ``masks`` (P, n) is indexed
        once by membership pattern (``kernels.live.membership_patterns``)."""
        self.pool_codes, self.pool_incidence = kl.membership_patterns(np.asarray(masks, bool))
        self.pool_ids = list(pool_ids)

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(self.groups) + (("pool",) if self.pool_ids else ())

    def update(self, dev_idx: np.ndarray, ts_ms: np.ndarray, p_kw: np.ndarray, soc: np.ndarray) -> int:
        """Take the newest point of each device when it is newer than what is held; return devices updated."""
        keep = dev_idx >= 0
        dev_idx, ts_ms, p_kw, soc = dev_idx[keep], ts_ms[keep], p_kw[keep], soc[keep]
        if not len(dev_idx):
            return 0
        order = np.lexsort((ts_ms, dev_idx))
        d = dev_idx[order]
        last = np.r_[d[1:] != d[:-1], True]
        sel = order[last]
        dev = dev_idx[sel]
        has_soc = ~np.isnan(soc[sel])
        with self.lock:
            newer = ts_ms[sel] > self.last_ts_ms[dev]
            sel, dev, has_soc = sel[newer], dev[newer], has_soc[newer]
            self.last_ts_ms[dev] = ts_ms[sel]
            self.p_kw[dev] = p_kw[sel]
            self.soc[dev[has_soc]] = soc[sel][has_soc]
        return int(len(dev))

    def carry_over(self, old: LiveState) -> int:
        """Take the last points of the devices ``old`` also knew (after a registry reload), where
        they are newer than what this state holds; return the devices taken."""
        rows = self.index.lookup(old.index.reg.resource_id)
        with old.lock:
            src = np.flatnonzero((rows >= 0) & (old.last_ts_ms != NO_TS))
            ts, p, soc = old.last_ts_ms[src], old.p_kw[src], old.soc[src]
        dst = rows[src]
        with self.lock:
            newer = ts > self.last_ts_ms[dst]
            dst = dst[newer]
            self.last_ts_ms[dst] = ts[newer]
            self.p_kw[dst] = p[newer]
            self.soc[dst] = soc[newer]
        return int(newer.sum())

    def mask_of(self, scope: Scope) -> np.ndarray | None:
        reg = self.index.reg
        if scope.operator_id:
            return reg.codes["operator_id"] == reg.code_of("operator_id", scope.operator_id)
        if scope.owner_id:
            return reg.codes["owner_id"] == reg.code_of("owner_id", scope.owner_id)
        return None

    def snapshot(self, now_ms: int, tick: int = 0) -> LiveSnapshot:
        """Every device's online flag, power and flexibility at ``now_ms``, from a copy of the last
        points taken under ``lock`` (safe while the feed goes on in another thread)."""
        t0 = time.perf_counter()
        with self.lock:
            p_kw, soc, ts = self.p_kw.copy(), self.soc.copy(), self.last_ts_ms.copy()
        v = self.index.reg.values
        online, power, up, down = live_flex(p_kw, soc, ts, now_ms, self.offline_after_ms, v["capacity_kw"],
                                            v["adjustable_up_kw"], v["adjustable_down_kw"], self.bidirectional,
                                            self.generator)
        return LiveSnapshot(self, int(now_ms), tick, online, power, up, down, time.perf_counter() - t0)

    def compute(self, now_ms: int, scope: Scope = Scope(), levels: tuple[str, ...] | None = None) -> LiveTotals:
        """Totals of every level (or ``levels``) for the devices of ``scope``."""
        return self.snapshot(now_ms).totals(scope, levels)

    def children(self, level: str, parent_level: str, parent_id: str) -> np.ndarray | None:
        """Which groups of ``level`` hold devices under group ``parent_id`` of ``parent_level``;
        None when no device sits under ``parent_id`` (an unknown id or a node with no devices)."""
        if parent_level not in self.groups:
            raise InvalidInput(Violation("parent_level", f"must be one of {', '.join(self.groups)}", parent_level))
        pcodes, plabels = self.groups[parent_level]
        codes, labels = self.groups[level]
        try:
            pc = plabels.index(parent_id)
        except ValueError:
            return None
        keep = np.zeros(len(labels), bool)
        sel = codes[(pcodes == pc) & (codes >= 0)]
        keep[np.unique(sel)] = True
        return keep

    def devices(self, device_ids: list[str], now_ms: int, mask: np.ndarray | None = None
                ) -> tuple[list[dict], list[str]]:
        """The live point of many devices at once: (one dict per known device as ``device``, in the
        order asked, and the ids not known, or outside ``mask``, the scope)."""
        pos = self.index.pos
        found = [(d, pos.get(d)) for d in device_ids]
        missing = [d for d, i in found if i is None or (mask is not None and not mask[i])]
        known = [(d, i) for d, i in found if i is not None and (mask is None or mask[i])]
        if not known:
            return [], missing
        idx = np.fromiter((i for _, i in known), np.intp, len(known))
        v = self.index.reg.values
        with self.lock:
            ts, p_kw, soc = self.last_ts_ms[idx], self.p_kw[idx], self.soc[idx]
        online, _power, up, down = live_flex(p_kw, soc, ts, now_ms, self.offline_after_ms[idx], v["capacity_kw"][idx],
                                             v["adjustable_up_kw"][idx], v["adjustable_down_kw"][idx],
                                             self.bidirectional[idx], self.generator[idx])
        items = []
        for k, (d, _i) in enumerate(known):
            never = ts[k] == NO_TS
            items.append({"device_id": d, "online": bool(online[k]),
                          "last_ts": None if never else datetime.fromtimestamp(ts[k] / 1000, UTC).isoformat(),
                          "power_kw": None if never else float(p_kw[k]),
                          "soc": None if np.isnan(soc[k]) else float(soc[k]),
                          "up_kw": float(up[k]), "down_kw": float(down[k]),
                          "interval_s": float(self.interval_s[idx[k]])})
        return items, missing

    def device(self, device_id: str, now_ms: int) -> dict:
        """One device's last point, online flag, available flexibility and expected reporting interval."""
        items, missing = self.devices([device_id], now_ms)
        if missing:
            raise NotFound("device", device_id)
        return items[0]


@dataclass(frozen=True, eq=False)
class LiveSnapshot:
    """The live state at one instant: every device's online flag, power and flexibility, computed
    once per tick; every total of that tick (city-wide or a tenant's) is summed from it."""

    state: LiveState
    now_ms: int
    tick: int
    online: np.ndarray      # (n,) bool
    power_kw: np.ndarray    # (n,) float, 0 where offline
    up_kw: np.ndarray
    down_kw: np.ndarray
    seconds: float = 0.0    # to take it

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms / 1000, UTC)

    def totals(self, scope: Scope = Scope(), levels: tuple[str, ...] | None = None) -> LiveTotals:
        """Totals of every level (or ``levels``) over the devices of ``scope``."""
        t0 = time.perf_counter()
        st = self.state
        mask = st.mask_of(scope)
        cols = (self.power_kw, self.up_kw, self.down_kw, self.online.astype(np.float64))
        out = LiveTotals(self.at, scope.label(), 0.0, tick=self.tick)
        for level in levels or st.levels:
            if level == "pool":
                ids = st.pool_ids
                sums = kl.overlapping_sums(st.pool_codes, st.pool_incidence, *cols, mask=mask)
            else:
                codes, ids = st.groups[level]
                sums = group_sum(codes, len(ids), *cols, mask=mask)
            out.levels[level] = {"ids": ids, "power_kw": sums[0], "up_kw": sums[1], "down_kw": sums[2],
                                 "online": sums[3], "devices": sums[4]}
        out.seconds = self.seconds + time.perf_counter() - t0
        return out


def check_level(level: str, state: LiveState, field: str = "level") -> None:
    if level not in state.levels:
        raise InvalidInput(Violation(field, f"must be one of {', '.join(state.levels)}", level))


def group_exists(conn, level: str, group_id: str) -> bool:
    """Whether ``group_id`` names a group of ``level`` in the database (a grid node of that level, an
    operator), whether or not any device reports under it."""
    if level == "operator":
        q = select(operators.c.operator_id).where(operators.c.operator_id == group_id)
    elif level in LEVELS:
        q = select(grid_nodes.c.node_id).where(grid_nodes.c.node_id == group_id, grid_nodes.c.level == level)
    else:
        return False
    return conn.execute(q).first() is not None


# ---------------------------------------------------------------- the running service

def _attach_pools(conn, state: LiveState) -> None:
    """The pools' member masks, evaluated by ``services.pools`` on the same registry arrays."""
    from openvpp.services import pools

    try:
        engine = pools.PoolEngine.from_db(conn, reg=state.index.reg)
    except Exception:   # the live view must come up even when pools cannot be evaluated
        log.exception("live: pools could not be evaluated; live totals without pools")
        return
    state.set_pools([p.pool_id for p in engine.pools], engine.masks)


class LiveService:
    """Keeps a :class:`LiveState` current from the bus and takes a :class:`LiveSnapshot` every
    ``config.live_refresh_s`` seconds of ``clock`` in a worker thread; SSE streams wait on
    :meth:`wait_tick`, every reader takes :meth:`totals` of the last snapshot.

    ``intervals_s``: expected reporting interval per control protocol or resource type (default:
    :func:`reporting_intervals`, from the environment). Settings out of bounds are refused on
    construction (:func:`check_config`)."""

    def __init__(self, engine: Engine, bus: Bus, config: TelemetryConfig | None = None,
                 clock: Clock = time.time, reload_every_s: float = 300.0,
                 intervals_s: Mapping[str, float] | None = None):
        self.config = config or TelemetryConfig.from_env()
        check_config(self.config)
        self.intervals_s = reporting_intervals() if intervals_s is None else dict(intervals_s)
        self.engine, self.bus = engine, bus
        self.reload_every_s = reload_every_s
        self._loaded_at = time.monotonic()
        self.clock = clock
        self.period_ms = round(self.config.live_refresh_s * 1000)
        self.state: LiveState | None = None
        self.snapshot: LiveSnapshot | None = None
        self.latest: LiveTotals | None = None    # the city-wide totals of ``snapshot``
        self.tick = 0
        self._scoped: dict[tuple, asyncio.Future] = {}
        self._cond: asyncio.Condition | None = None
        self._tasks: list[asyncio.Task] = []
        self._sub = None

    async def start(self) -> LiveService:
        self._cond = asyncio.Condition()
        self._sub = await self.bus.subscribe(ACCEPTED_SUBJECT, maxsize=10_000)
        self.state = await asyncio.to_thread(self._load)
        now = self._now_ms()
        self._publish(*await asyncio.to_thread(self._take, now - now % self.period_ms))
        await asyncio.to_thread(freeze_long_lived)   # the live state lives on (core/memory.py)
        self._tasks = [asyncio.create_task(self._consume()), asyncio.create_task(self._refresh())]
        return self

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _new_state(self, conn) -> LiveState:
        state = LiveState(DeviceIndex.load(conn), self.config, self.intervals_s)
        _attach_pools(conn, state)
        return state

    def _load(self) -> LiveState:
        with self.engine.connect() as conn:
            state = self._new_state(conn)
            index = state.index
            # the widest offline window of any device: older points cannot make anyone online
            window_s = float(state.offline_after_ms.max(initial=0)) / 1000
            since = datetime.fromtimestamp(self.clock() - window_s, UTC)
            t = telemetry_raw
            newest = func.row_number().over(partition_by=t.c.device_id, order_by=t.c.ts.desc()).label("newest")
            recent = (select(t.c.device_id, t.c.ts, t.c.power_kw, t.c.soc, newest)
                      .where(t.c.ts >= since, t.c.quality < 2).subquery())
            rows = conn.execute(select(recent.c.device_id, recent.c.ts, recent.c.power_kw, recent.c.soc)
                                .where(recent.c.newest == 1)).all()   # one row per device
        if rows:
            dev = index.lookup(np.asarray([r[0] for r in rows], dtype=object))
            ts = np.array([int((r[1] if r[1].tzinfo else r[1].replace(tzinfo=UTC)).timestamp() * 1000)
                           for r in rows], np.int64)
            state.update(dev, ts, np.array([r[2] for r in rows], np.float64),
                         np.array([np.nan if r[3] is None else r[3] for r in rows], np.float64))
        return state

    def feed(self, payload: bytes) -> int:
        _gw, pts = decode(payload)
        state = self.state
        return state.update(state.index.lookup(pts.device), pts.ts_ms, pts.p_kw, pts.soc)

    async def _consume(self) -> None:
        async for msg in self._sub:
            try:
                self.feed(msg.data)
            except Exception:   # a bad message must not stop the live view
                log.exception("live: could not apply a message")

    def _take(self, at_ms: int) -> tuple[LiveSnapshot, LiveTotals]:
        """(worker thread) The snapshot of the next tick at ``at_ms`` and its city-wide totals."""
        snap = self.state.snapshot(at_ms, self.tick + 1)
        return snap, snap.totals()

    def _publish(self, snap: LiveSnapshot, totals: LiveTotals) -> None:
        """(event loop) Make a snapshot the current one: readers see the old one or the new one whole."""
        self.snapshot, self.latest, self.tick = snap, totals, snap.tick
        self._scoped = {}

    def recompute(self) -> LiveTotals:
        """Take a snapshot now, in the caller's thread (scripts; the service itself refreshes off the loop)."""
        self._publish(*self._take(self._now_ms()))
        return self.latest

    def _reload(self) -> LiveState:
        with self.engine.connect() as conn:
            state = self._new_state(conn)
        state.carry_over(self.state)
        return state

    async def _sleep_until(self, at_ms: int) -> None:
        """Sleep until ``clock`` reaches ``at_ms`` (a simulated clock may run faster than the wall)."""
        while (left_s := at_ms / 1000 - self.clock()) > 0:
            await asyncio.sleep(left_s / speed_of(self.clock))

    async def _refresh(self) -> None:
        period = self.period_ms
        due = self.snapshot.now_ms + period
        while True:
            await self._sleep_until(due)
            now = self._now_ms()
            if now - due > period:   # more than one interval behind: resume at the latest instant
                log.warning("live: %d refresh(es) skipped, the recompute is behind the clock",
                            (now - due) // period)
                due = now - now % period
            try:
                if time.monotonic() - self._loaded_at > self.reload_every_s:   # resources admitted or retired
                    self._loaded_at = time.monotonic()
                    old = self.state
                    fresh = await asyncio.to_thread(self._reload)
                    self.state = fresh   # the feed writes here from now on
                    await asyncio.to_thread(fresh.carry_over, old)   # and what reached the old one meanwhile
                snap, totals = await asyncio.to_thread(self._take, due)
            except Exception:
                log.exception("live: recompute failed")
                due += period
                continue
            self._publish(snap, totals)
            due += period
            async with self._cond:
                self._cond.notify_all()

    async def wait_tick(self, after: int, timeout: float) -> int:
        """Wait until a recompute newer than ``after`` (or ``timeout`` s); return the current tick."""
        with contextlib.suppress(TimeoutError):
            async with self._cond:
                await asyncio.wait_for(self._cond.wait_for(lambda: self.tick > after), timeout)
        return self.tick

    async def totals(self, scope: Scope, levels: tuple[str, ...] | None = None,
                     snapshot: LiveSnapshot | None = None) -> LiveTotals:
        """Totals for ``scope`` from the last snapshot (or ``snapshot``): the shared city-wide result,
        or the scope's own, summed in a worker thread once per tick (concurrent requests of a tick
        share it)."""
        snap = snapshot or self.snapshot
        if scope.city_wide and snap is self.snapshot:
            return self.latest
        key = (snap.tick, scope, tuple(levels) if levels else None)
        fut = self._scoped.get(key)
        if fut is None:
            fut = self._scoped[key] = asyncio.ensure_future(asyncio.to_thread(snap.totals, scope, levels))
            fut.add_done_callback(lambda f: f.cancelled() or f.exception() is None or self._scoped.pop(key, None))
        return await asyncio.shield(fut)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._sub is not None:
            await self._sub.close()
