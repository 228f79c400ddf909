"""Live state: current power and available up/down flexibility per device, totals per grid node
(every level), operator and pool, recomputed every few seconds over struct-of-arrays.

The state is fed by the bus (``tele.accepted``, published by every ingest after commit) and
seeded from the database on start. A device with no point for ``offline_intervals`` reporting
intervals is offline: its power and flexibility leave the totals (it is counted as offline).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Engine, select

from openvpp.bus import Bus
from openvpp.core.errors import InvalidInput, NotFound, Violation
from openvpp.kernels.aggregate import group_sum
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
SOC_EMPTY, SOC_FULL = 0.05, 0.95


# ---------------------------------------------------------------- kernel

def live_flex(p_kw: np.ndarray, soc: np.ndarray, last_ts_ms: np.ndarray, now_ms: int, offline_after_ms: int,
              capacity_kw: np.ndarray, adjustable_up_kw: np.ndarray, adjustable_down_kw: np.ndarray,
              bidirectional: np.ndarray, generator: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Online flag, power and available flexibility of every device.

    Parameters
    ----------
    p_kw : (n,) float — last reported active power, load positive [kW].
    soc : (n,) float — last state of charge [0..1], NaN = not reported.
    last_ts_ms : (n,) int64 — time of the last point, epoch ms; ``NO_TS`` = never reported.
    now_ms : int — evaluation time, epoch ms.
    offline_after_ms : int — a device silent for longer is offline [ms].
    capacity_kw, adjustable_up_kw, adjustable_down_kw : (n,) float — registry values [kW].
    bidirectional : (n,) bool — storage / V2G: may swing both ways within its declared range.
    generator : (n,) bool, optional — PV: net load ≤ 0; "up" is curtailment, at most what it injects.

    Returns
    -------
    online (n,) bool; power_kw, up_kw, down_kw (n,) float64, zero where offline.
    Sign convention of docs/city-files.md: net load at the meter, ``down`` lowers it, ``up`` raises
    it. ``down`` of a one-way device is bounded by its present load, ``up`` by its headroom to
    capacity (a generator's by its present injection: it can curtail no more than it makes); a
    bidirectional device keeps its declared range unless its battery is empty (no down) or full (no up).
    """
    online = (last_ts_ms != NO_TS) & (now_ms - last_ts_ms <= offline_after_ms)
    with np.errstate(invalid="ignore"):
        one_way_down = np.minimum(adjustable_down_kw, np.maximum(p_kw, 0.0))
        headroom = np.maximum(capacity_kw - p_kw, 0.0)
        if generator is not None:
            headroom = np.where(generator, np.maximum(-p_kw, 0.0), headroom)
        one_way_up = np.minimum(adjustable_up_kw, headroom)
        two_way_down = np.where(soc <= SOC_EMPTY, 0.0, adjustable_down_kw)
        two_way_up = np.where(soc >= SOC_FULL, 0.0, adjustable_up_kw)
    down = np.where(bidirectional, two_way_down, one_way_down)
    up = np.where(bidirectional, two_way_up, one_way_up)
    zero = 0.0
    return (online, np.where(online, p_kw, zero), np.where(online, up, zero), np.where(online, down, zero))


# ---------------------------------------------------------------- state

@dataclass
class LiveTotals:
    at: datetime
    scope: str
    seconds: float
    levels: dict[str, dict] = field(default_factory=dict)   # level → {"ids", "power_kw", "up_kw", ...}

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
    """Struct-of-arrays state of every registry device (one row per ``DeviceIndex`` row)."""

    def __init__(self, index: DeviceIndex, config: TelemetryConfig):
        self.index = index
        self.config = config
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
        self.groups: dict[str, tuple[np.ndarray, list]] = {}
        for level, col in LEVELS.items():
            if col is None:
                self.groups[level] = (np.zeros(n, np.int32), [index.city_id])
            else:
                self.groups[level] = (reg.codes[col], list(reg.categories[col]))
        for name, hook in GROUP_HOOKS.items():
            self.groups[name] = hook(index)
        #: overlapping groups (pools): ids and a (P, n) membership mask, see ``set_pools``
        self.pool_ids: list[str] = []
        self.pool_masks = np.zeros((0, n), bool)

    def set_pools(self, pool_ids: list[str], masks: np.ndarray) -> None:
        """Pools are overlapping groups (a device may sit in several): totals are masked sums."""
        self.pool_ids, self.pool_masks = list(pool_ids), np.asarray(masks, bool)

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
        newer = ts_ms[sel] > self.last_ts_ms[dev]
        sel, dev = sel[newer], dev[newer]
        self.last_ts_ms[dev] = ts_ms[sel]
        self.p_kw[dev] = p_kw[sel]
        has_soc = ~np.isnan(soc[sel])
        self.soc[dev[has_soc]] = soc[sel][has_soc]
        return int(len(dev))

    def carry_over(self, old: LiveState) -> int:
        """Take the last points of the devices ``old`` also knew (after a registry reload)."""
        rows = self.index.lookup(old.index.reg.resource_id)
        keep = (rows >= 0) & (old.last_ts_ms != NO_TS)
        self.last_ts_ms[rows[keep]] = old.last_ts_ms[keep]
        self.p_kw[rows[keep]] = old.p_kw[keep]
        self.soc[rows[keep]] = old.soc[keep]
        return int(keep.sum())

    def mask_of(self, scope: Scope) -> np.ndarray | None:
        reg = self.index.reg
        if scope.operator_id:
            return reg.codes["operator_id"] == reg.code_of("operator_id", scope.operator_id)
        if scope.owner_id:
            return reg.codes["owner_id"] == reg.code_of("owner_id", scope.owner_id)
        return None

    def compute(self, now_ms: int, scope: Scope = Scope(), levels: tuple[str, ...] | None = None) -> LiveTotals:
        """Totals of every level (or ``levels``) for the devices of ``scope``."""
        t0 = time.perf_counter()
        v = self.index.reg.values
        c = self.config
        online, power, up, down = live_flex(self.p_kw, self.soc, self.last_ts_ms, now_ms,
                                            int(c.offline_intervals * c.interval_s * 1000), v["capacity_kw"],
                                            v["adjustable_up_kw"], v["adjustable_down_kw"], self.bidirectional,
                                            self.generator)
        mask = self.mask_of(scope)
        out = LiveTotals(datetime.fromtimestamp(now_ms / 1000, UTC), scope.label(), 0.0)
        for level in levels or self.levels:
            if level == "pool":
                out.levels[level] = self._pool_totals(power, up, down, online, mask)
                continue
            codes, labels = self.groups[level]
            sums = group_sum(codes, len(labels), power, up, down, online.astype(np.float64), mask=mask)
            out.levels[level] = {"ids": labels, "power_kw": sums[0], "up_kw": sums[1], "down_kw": sums[2],
                                 "online": sums[3], "devices": sums[4]}
        out.seconds = time.perf_counter() - t0
        return out

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

    def _pool_totals(self, power, up, down, online, mask) -> dict:
        cols = np.stack([power, up, down, online.astype(np.float64), np.ones(len(power))])   # (5, n)
        sums = np.zeros((5, len(self.pool_ids)))
        for k, members in enumerate(self.pool_masks):
            sel = members if mask is None else members & mask
            sums[:, k] = cols[:, sel].sum(axis=1)
        return {"ids": self.pool_ids, "power_kw": sums[0], "up_kw": sums[1], "down_kw": sums[2],
                "online": sums[3], "devices": sums[4]}

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
        c = self.config
        online, _power, up, down = live_flex(self.p_kw[idx], self.soc[idx], self.last_ts_ms[idx], now_ms,
                                             int(c.offline_intervals * c.interval_s * 1000), v["capacity_kw"][idx],
                                             v["adjustable_up_kw"][idx], v["adjustable_down_kw"][idx],
                                             self.bidirectional[idx], self.generator[idx])
        ts, p_kw, soc = self.last_ts_ms[idx], self.p_kw[idx], self.soc[idx]
        items = []
        for k, (d, _i) in enumerate(known):
            never = ts[k] == NO_TS
            items.append({"device_id": d, "online": bool(online[k]),
                          "last_ts": None if never else datetime.fromtimestamp(ts[k] / 1000, UTC).isoformat(),
                          "power_kw": None if never else float(p_kw[k]),
                          "soc": None if np.isnan(soc[k]) else float(soc[k]),
                          "up_kw": float(up[k]), "down_kw": float(down[k])})
        return items, missing

    def device(self, device_id: str, now_ms: int) -> dict:
        i = self.index.pos.get(device_id)
        if i is None:
            raise NotFound("device", device_id)
        v = self.index.reg.values
        c = self.config
        sl = slice(i, i + 1)
        online, power, up, down = live_flex(self.p_kw[sl], self.soc[sl], self.last_ts_ms[sl], now_ms,
                                            int(c.offline_intervals * c.interval_s * 1000), v["capacity_kw"][sl],
                                            v["adjustable_up_kw"][sl], v["adjustable_down_kw"][sl],
                                            self.bidirectional[sl], self.generator[sl])
        ts = self.last_ts_ms[i]
        return {"device_id": device_id, "online": bool(online[0]),
                "last_ts": None if ts == NO_TS else datetime.fromtimestamp(ts / 1000, UTC).isoformat(),
                "power_kw": float(self.p_kw[i]) if ts != NO_TS else None,
                "soc": None if np.isnan(self.soc[i]) else float(self.soc[i]),
                "up_kw": float(up[0]), "down_kw": float(down[0])}


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
    """Keeps a :class:`LiveState` current from the bus and recomputes the city totals every
    ``config.live_refresh_s`` seconds; SSE streams wait on :meth:`wait_tick`."""

    def __init__(self, engine: Engine, bus: Bus, config: TelemetryConfig | None = None,
                 clock: Callable[[], float] = time.time, reload_every_s: float = 300.0):
        self.engine, self.bus = engine, bus
        self.reload_every_s = reload_every_s
        self._loaded_at = time.monotonic()
        self.config = config or TelemetryConfig.from_env()
        self.clock = clock
        self.state: LiveState | None = None
        self.latest: LiveTotals | None = None
        self.tick = 0
        self._cond: asyncio.Condition | None = None
        self._tasks: list[asyncio.Task] = []
        self._sub = None

    async def start(self) -> LiveService:
        self._cond = asyncio.Condition()
        self._sub = await self.bus.subscribe(ACCEPTED_SUBJECT, maxsize=10_000)
        self.state = await asyncio.to_thread(self._load)
        self.recompute()
        self._tasks = [asyncio.create_task(self._consume()), asyncio.create_task(self._refresh())]
        return self

    def _load(self) -> LiveState:
        with self.engine.connect() as conn:
            index = DeviceIndex.load(conn)
            state = LiveState(index, self.config)
            _attach_pools(conn, state)
            window_s = self.config.offline_intervals * self.config.interval_s
            since = datetime.fromtimestamp(self.clock() - window_s, UTC)
            t = telemetry_raw
            rows = conn.execute(select(t.c.device_id, t.c.ts, t.c.power_kw, t.c.soc)
                                .where(t.c.ts >= since, t.c.quality < 2)).all()
        if rows:
            dev = index.lookup(np.asarray([r[0] for r in rows], dtype=object))
            ts = np.array([int((r[1] if r[1].tzinfo else r[1].replace(tzinfo=UTC)).timestamp() * 1000)
                           for r in rows], np.int64)
            state.update(dev, ts, np.array([r[2] for r in rows], np.float64),
                         np.array([np.nan if r[3] is None else r[3] for r in rows], np.float64))
        return state

    def feed(self, payload: bytes) -> int:
        _gw, pts = decode(payload)
        return self.state.update(self.state.index.lookup(pts.device), pts.ts_ms, pts.p_kw, pts.soc)

    async def _consume(self) -> None:
        async for msg in self._sub:
            try:
                self.feed(msg.data)
            except Exception:   # a bad message must not stop the live view
                log.exception("live: could not apply a message")

    def recompute(self) -> LiveTotals:
        self.latest = self.state.compute(int(self.clock() * 1000))
        self.tick += 1
        return self.latest

    def _reload(self) -> LiveState:
        with self.engine.connect() as conn:
            state = LiveState(DeviceIndex.load(conn), self.config)
            _attach_pools(conn, state)
        state.carry_over(self.state)
        return state

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.config.live_refresh_s)
            try:
                if time.monotonic() - self._loaded_at > self.reload_every_s:   # resources admitted or retired
                    self._loaded_at = time.monotonic()
                    fresh = await asyncio.to_thread(self._reload)
                    fresh.carry_over(self.state)   # points that arrived while it loaded
                    self.state = fresh
                self.recompute()
            except Exception:
                log.exception("live: recompute failed")
                continue
            async with self._cond:
                self._cond.notify_all()

    async def wait_tick(self, after: int, timeout: float) -> int:
        """Wait until a recompute newer than ``after`` (or ``timeout`` s); return the current tick."""
        with contextlib.suppress(TimeoutError):
            async with self._cond:
                await asyncio.wait_for(self._cond.wait_for(lambda: self.tick > after), timeout)
        return self.tick

    def totals(self, scope: Scope, levels: tuple[str, ...] | None = None) -> LiveTotals:
        """Totals for ``scope``: the shared city-wide result, or a scoped recompute."""
        if scope.city_wide and self.latest is not None and levels is None:
            return self.latest
        return self.state.compute(int(self.clock() * 1000), scope, levels)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._sub is not None:
            await self._sub.close()
