"""Telemetry: decode device batches, validate them on arrays, store them, feed the live state.

The topic and payload scheme is documented in ``docs/telemetry.md``. Every ingest path (MQTT
gateways, the HTTP batch API, the simulator in tests) ends in :meth:`TelemetryService.ingest`:

    bytes ──decode──▶ Points (struct of arrays) ──validate_points──▶ reason per point
          ──accepted──▶ store.timeseries.write_points (idempotent) ──▶ bus "tele.accepted" ──▶ live state

A rejected point is counted under the rule it broke (``REASONS``), logged, and never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import SQLAlchemyError

from openvpp.core.errors import Forbidden, InvalidInput, Violation
from openvpp.core.timeslots import TZ as _TZ
from openvpp.kernels.live import NO_TS  # "never reported" / unparsable time: one sentinel for both
from openvpp.model.enums import Role
from openvpp.services import registry_arrays
from openvpp.store import bulk, timeseries
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes

log = logging.getLogger("openvpp.telemetry")

TOPIC_ROOT = "openvpp/v1"
#: reasons a point is rejected, in the order they are checked (the first broken rule is counted)
REASONS = ("unknown_device", "foreign_device", "bad_timestamp", "future_timestamp", "too_late",
           "non_numeric", "over_capacity", "reactive_over_capacity", "soc_out_of_range", "bad_quality",
           "negative_counter")
CODE = {name: i + 1 for i, name in enumerate(REASONS)}
ANY_OPERATOR = -100       # a city-wide sender: every device
NO_OPERATOR = -1          # devices without an operator (topic segment "-")
NO_SUCH_OPERATOR = -2
INDEX_RETRY_S = 5.0       # a failed reload of the registry snapshot is tried again after this
QUALITY_GOOD, QUALITY_ESTIMATED, QUALITY_BAD = 0, 1, 2
#: payload keys → Points attribute
FLOAT_KEYS = {"p": "p_kw", "q": "q_kvar", "e": "e_kwh", "eq": "eq_kvarh", "soc": "soc"}
BIDIRECTIONAL_TYPES = ("user_storage", "v2g_charger")


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


@dataclass(frozen=True)
class TelemetryConfig:
    """Technical limits of ingest and live state (settings, not policy: ``OPENVPP_TELEMETRY_*``)."""

    future_s: float = 60.0             # a point more than this ahead of the server clock is refused
    lateness_s: float = 48 * 3600.0    # a point older than this is refused (gateways buffer outages)
    capacity_margin: float = 0.2       # |p| may exceed built capacity by this fraction
    interval_s: float = 60.0           # expected reporting interval of a device
    offline_intervals: float = 3.0     # no point for this many intervals → offline
    retention_days: int = 400          # raw points older than this are dropped (whole daily partitions)
    live_refresh_s: float = 2.0        # live aggregates are recomputed this often (≤ 5 s)
    rollup_refresh_s: float = 5.0      # closed dirty minutes are rolled up this often (0 = not by this process)

    @classmethod
    def from_env(cls) -> TelemetryConfig:
        d = cls()
        cfg = cls(
            future_s=_env_float("OPENVPP_TELEMETRY_FUTURE_S", d.future_s),
            lateness_s=_env_float("OPENVPP_TELEMETRY_LATENESS_S", d.lateness_s),
            capacity_margin=_env_float("OPENVPP_TELEMETRY_CAPACITY_MARGIN", d.capacity_margin),
            interval_s=_env_float("OPENVPP_TELEMETRY_INTERVAL_S", d.interval_s),
            offline_intervals=_env_float("OPENVPP_TELEMETRY_OFFLINE_INTERVALS", d.offline_intervals),
            retention_days=int(_env_float("OPENVPP_TELEMETRY_RETENTION_DAYS", d.retention_days)),
            live_refresh_s=_env_float("OPENVPP_TELEMETRY_LIVE_REFRESH_S", d.live_refresh_s),
            rollup_refresh_s=_env_float("OPENVPP_TELEMETRY_ROLLUP_REFRESH_S", d.rollup_refresh_s),
        )
        if cfg.retention_days * 86400 < cfg.lateness_s:
            raise ValueError("OPENVPP_TELEMETRY_RETENTION_DAYS must cover the accepted lateness")
        return cfg


# ---------------------------------------------------------------- points as struct of arrays

@dataclass
class Points:
    """A batch of telemetry points, one array per field (NaN = not measured)."""

    device: np.ndarray      # object (str)
    ts_ms: np.ndarray       # int64 epoch milliseconds UTC; NO_TS when missing or unparsable
    p_kw: np.ndarray        # float64 active power, load positive [kW]
    q_kvar: np.ndarray      # float64 reactive power [kvar]
    e_kwh: np.ndarray       # float64 active energy counter [kWh]
    eq_kvarh: np.ndarray    # float64 reactive energy counter [kvarh]
    soc: np.ndarray         # float64 state of charge [0..1]
    qf: np.ndarray          # int16 quality flag: 0 good, 1 estimated, 2 bad; -1 unreadable
    bad_number: np.ndarray  # bool: a value was present but not a finite number

    def __len__(self) -> int:
        return len(self.device)

    def take(self, idx: np.ndarray) -> Points:
        return Points(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})

    @staticmethod
    def concat(parts: Sequence[Points]) -> Points:
        if len(parts) == 1:
            return parts[0]
        return Points(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in Points.__dataclass_fields__})

    @staticmethod
    def empty() -> Points:
        return Points.from_columns({"d": [], "t": [], "p": []})

    @staticmethod
    def from_columns(cols: dict) -> Points:
        """Columns as in the payload's ``cols`` form: ``{"d": [...], "t": [...], "p": [...], ...}``.

        A column of the wrong shape refuses the message (``InvalidInput`` naming the key); a value
        that is not what its key takes (a device id that is not a string, a number too large for a
        float, a list where a number belongs) refuses only its point, under the rule it breaks."""
        devices = cols.get("d")
        if not isinstance(devices, list):
            raise InvalidInput(Violation("d", "device ids must be a list", type(devices).__name__))
        n = len(devices)
        bad = np.zeros(n, bool)
        arrays = {}
        for key, attr in FLOAT_KEYS.items():
            values = cols.get(key)
            if values is None:
                arrays[attr] = np.full(n, np.nan)
                if key == "p":
                    bad[:] = True   # active power is required
                continue
            if not isinstance(values, list) or len(values) != n:
                raise InvalidInput(Violation(key, f"must be a list of {n} values", type(values).__name__))
            arr, bad_k = _floats(values)
            arrays[attr] = arr
            bad |= bad_k
            if key == "p":
                bad |= np.isnan(arr)   # required: absent counts as non-numeric
        t = cols.get("t")
        if not isinstance(t, list) or len(t) != n:
            raise InvalidInput(Violation("t", f"must be a list of {n} timestamps", type(t).__name__))
        qf = cols.get("qf")
        # one element per id, never unpacked: ["R1"] is an (unknown) id, not "R1"
        device = np.fromiter(devices, dtype=object, count=n)
        return Points(device=device, ts_ms=_timestamps(t), qf=_quality(qf, n), bad_number=bad, **arrays)

    @staticmethod
    def from_rows(rows: list) -> Points:
        """Points as in the payload's ``points`` form: ``[{"d": ..., "t": ..., "p": ...}, ...]``."""
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InvalidInput(Violation("points", "must be a list of objects", None))
        cols = {k: [r.get(k) for r in rows] for k in ("d", "t", "p", "q", "e", "eq", "soc", "qf")}
        for k in ("q", "e", "eq", "soc", "qf"):
            if all(v is None for v in cols[k]):
                cols[k] = None
        return Points.from_columns(cols)


class _NonFinite:
    """What ``NaN``/``Infinity`` in a payload decode to: a value that is present but not a number."""


_NONFINITE = _NonFinite()


#: the largest timestamp magnitude read as epoch ms (year ~33,700): beyond it a number is not a time
MAX_TS_MS = 10**15


def _array(values: list) -> np.ndarray | None:
    """``values`` as a 1-d numeric array when they are all plain numbers (the fast path), else None.

    None for: a bool among them (NumPy would read ``true`` as 1), an integer too large for int64,
    nested lists, strings, ``null``, ``NaN``/``Infinity`` markers; the caller then checks each value."""
    if not values:
        return None
    kinds = set(map(type, values))
    if not kinds <= {int, float}:
        return None
    try:
        arr = np.asarray(values)
    except (ValueError, OverflowError, TypeError):
        return None
    return arr if arr.ndim == 1 and arr.dtype.kind in "fi" else None


def _floats(values: list) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN where absent, bool where present but not a finite number)."""
    arr = _array(values)
    if arr is not None:
        out = arr.astype(np.float64)
        return out, ~np.isfinite(out)
    n = len(values)
    out = np.full(n, np.nan)
    bad = np.zeros(n, bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                f = float(v)            # an int of 400 digits does not fit a float
            except OverflowError:
                f = math.inf
            if math.isfinite(f):
                out[i] = f
                continue
        bad[i] = True
    return out, bad


def _timestamps(values: list) -> np.ndarray:
    """Epoch milliseconds (int or float) or ISO 8601 with a zone → int64 ms; anything else → NO_TS."""
    arr = _array(values)
    if arr is not None:
        if arr.dtype.kind == "i":
            return np.where(np.abs(arr) < MAX_TS_MS, arr, NO_TS).astype(np.int64)
        ok = np.isfinite(arr) & (np.abs(arr) < MAX_TS_MS)
        return np.where(ok, np.round(np.where(ok, arr, 0.0)), NO_TS).astype(np.int64)
    out = np.full(len(values), NO_TS, np.int64)
    for i, v in enumerate(values):
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            if -MAX_TS_MS < v < MAX_TS_MS:
                out[i] = v
        elif isinstance(v, float) and math.isfinite(v) and abs(v) < MAX_TS_MS:
            out[i] = round(v)
        elif isinstance(v, str) and len(v) <= 64:
            try:
                dt = datetime.fromisoformat(v)
                if dt.tzinfo is not None:
                    out[i] = round(dt.timestamp() * 1000)
            except (ValueError, OverflowError):
                continue
    return out


def _quality(values, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n, np.int16)
    if not isinstance(values, list) or len(values) != n:
        raise InvalidInput(Violation("qf", f"must be a list of {n} values", type(values).__name__))
    arr = _array(values)
    if arr is not None and arr.dtype.kind == "i":
        return np.where((arr >= 0) & (arr <= 2), arr, -1).astype(np.int16)
    return np.array([v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2
                     else (0 if v is None else -1) for v in values], np.int16)


def decode(payload: bytes | str) -> tuple[str | None, Points]:
    """Decode one message: ``{"gw": id, "points": [...]}`` or the column form ``{"gw": id, "cols": {...}}``.

    A message that is not such a JSON object raises ``InvalidInput`` naming the field (the whole
    message is refused); nothing else escapes, whatever the bytes. Per-point problems are left to
    :func:`validate_points`.
    """
    try:
        doc = json.loads(payload, parse_constant=lambda _c: _NONFINITE)
    except RecursionError:
        raise InvalidInput(Violation("payload", "nests arrays or objects too deeply", None)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(Violation("payload", f"is not JSON: {str(exc)[:200]}", None)) from None
    try:
        return _decode_doc(doc)
    except InvalidInput:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:   # a shape the checks above missed
        raise InvalidInput(Violation("payload", f"is not a telemetry batch ({type(exc).__name__}: "
                                                f"{str(exc)[:200]})", None)) from None


def _decode_doc(doc) -> tuple[str | None, Points]:
    if not isinstance(doc, dict):
        raise InvalidInput(Violation("payload", "must be a JSON object", type(doc).__name__))
    gw = doc.get("gw")
    if "cols" in doc:
        if not isinstance(doc["cols"], dict):
            raise InvalidInput(Violation("cols", "must be an object of columns", None))
        return gw, Points.from_columns(doc["cols"])
    if "points" in doc:
        return gw, Points.from_rows(doc["points"])
    raise InvalidInput(Violation("payload", "needs 'points' (list of objects) or 'cols' (object of lists)", None))


def source_label(gw, gateway_id: str) -> str:
    """Who reported a message, as stored in ``telemetry_raw.source``: the payload's ``gw`` when it is
    a string, else the topic's gateway; printable characters only (no NUL, control or lone
    surrogate reaches the database), at most 64."""
    label = gw if isinstance(gw, str) and gw else gateway_id
    return "".join(ch for ch in label[:64] if ch.isprintable()) or "?"


def encode_columns(gw: str, device: Sequence[str], ts_ms: np.ndarray, p_kw: np.ndarray,
                   soc: np.ndarray | None = None, q_kvar: np.ndarray | None = None,
                   qf: np.ndarray | None = None, e_kwh: np.ndarray | None = None) -> bytes:
    """The compact column form of a gateway batch (what the simulator publishes)."""
    cols: dict = {"d": list(device), "t": np.asarray(ts_ms, np.int64).tolist(),
                  "p": np.round(np.asarray(p_kw, np.float64), 3).tolist()}
    if q_kvar is not None:
        cols["q"] = np.round(np.asarray(q_kvar, np.float64), 3).tolist()
    if e_kwh is not None:
        cols["e"] = np.round(np.asarray(e_kwh, np.float64), 3).tolist()
    if soc is not None:
        s = np.round(np.asarray(soc, np.float64), 4)
        cols["soc"] = [None if math.isnan(x) else x for x in s.tolist()]
    if qf is not None:
        cols["qf"] = np.asarray(qf, np.int64).tolist()
    return json.dumps({"gw": gw, "cols": cols}, separators=(",", ":")).encode()


def tele_topic(operator_id: str, gateway_id: str, root: str = TOPIC_ROOT) -> str:
    return f"{root}/tele/{operator_id}/{gateway_id}"


def cmd_topic(operator_id: str, device_id: str, root: str = TOPIC_ROOT) -> str:
    return f"{root}/cmd/{operator_id}/{device_id}"


# ---------------------------------------------------------------- validation kernel

def validate_points(dev_idx: np.ndarray, ts_ms: np.ndarray, p_kw: np.ndarray, q_kvar: np.ndarray,
                    e_kwh: np.ndarray, eq_kvarh: np.ndarray, soc: np.ndarray, qf: np.ndarray,
                    bad_number: np.ndarray, capacity_kw: np.ndarray, device_operator: np.ndarray,
                    expected_operator: int | np.ndarray | None, now_ms: int, future_s: float, lateness_s: float,
                    capacity_margin: float, capacity_kva: np.ndarray | None = None) -> np.ndarray:
    """Reason code of every point: 0 = accepted, ``CODE[rule]`` = the first rule it broke.

    Parameters
    ----------
    dev_idx : (n,) int — row of the device in the registry arrays, -1 = unknown device.
    ts_ms : (n,) int64 — epoch ms UTC, ``NO_TS`` = missing or unparsable.
    p_kw, q_kvar : (n,) float — active [kW] and reactive [kvar] power (p required, q NaN = absent).
    e_kwh, eq_kvarh : (n,) float — energy counters [kWh], [kvarh] (NaN = absent).
    soc : (n,) float — state of charge [0..1] (NaN = absent).
    qf : (n,) int — quality flag, 0..2, -1 unreadable.
    bad_number : (n,) bool — a value was present but not a finite number.
    capacity_kw : (m,) float — built capacity of each registry device [kW].
    device_operator : (m,) int — operator code of each registry device (-1 none).
    expected_operator : int, (n,) int or None — the sender's operator code per point; ``ANY_OPERATOR``
        or None = any (a city-wide sender).
    now_ms : int — server clock, epoch ms.
    future_s, lateness_s : float — accepted window ``[now - lateness_s, now + future_s]`` [s].
    capacity_margin : float — ``|p|`` may reach ``capacity_kw * (1 + margin)``, ``|q|`` the apparent
        rating ``capacity_kva * (1 + margin)`` [-].
    capacity_kva : (m,) float or None — apparent-power rating of each registry device [kVA]; NaN, 0
        or None = the same as ``capacity_kw`` (the registry's convention).

    Returns
    -------
    (n,) uint8 reason codes.
    """
    known = dev_idx >= 0
    safe = np.where(known, dev_idx, 0)
    cap_kw = capacity_kw[safe] if len(capacity_kw) else np.zeros(len(dev_idx))
    cap = np.where(known, cap_kw, np.inf) * (1.0 + capacity_margin)
    if capacity_kva is not None and len(capacity_kva):
        kva = capacity_kva[safe]
        with np.errstate(invalid="ignore"):
            cap_q = np.where(known, np.where(kva > 0, kva, cap_kw), np.inf) * (1.0 + capacity_margin)
    else:
        cap_q = cap
    if expected_operator is None or not len(device_operator):
        foreign = np.zeros(len(dev_idx), bool)
    else:
        expected = np.broadcast_to(np.asarray(expected_operator), dev_idx.shape)
        foreign = known & (expected != ANY_OPERATOR) & (device_operator[safe] != expected)
    with np.errstate(invalid="ignore"):
        rules = (
            ("unknown_device", ~known),
            ("foreign_device", foreign),
            ("bad_timestamp", ts_ms == NO_TS),
            ("future_timestamp", ts_ms > now_ms + int(future_s * 1000)),
            ("too_late", (ts_ms != NO_TS) & (ts_ms < now_ms - int(lateness_s * 1000))),
            ("non_numeric", bad_number),
            ("over_capacity", np.abs(p_kw) > cap),
            ("reactive_over_capacity", np.abs(q_kvar) > cap_q),
            ("soc_out_of_range", (soc < 0) | (soc > 1)),
            ("bad_quality", qf < 0),
            ("negative_counter", (e_kwh < 0) | (eq_kvarh < 0)),
        )
    reason = np.zeros(len(dev_idx), np.uint8)
    for name, bad in reversed(rules):
        reason[bad] = CODE[name]
    return reason


def count_reasons(reason: np.ndarray) -> dict[str, int]:
    counts = np.bincount(reason, minlength=len(REASONS) + 1)
    return {name: int(counts[CODE[name]]) for name in REASONS if counts[CODE[name]]}


# ---------------------------------------------------------------- the registry seen by ingest

@dataclass
class DeviceIndex:
    """Registry devices (resources in state registered/active) as arrays, with an id → row map."""

    reg: registry_arrays.RegistryArrays
    pos: dict[str, int]
    city_id: str
    loaded_at: float = field(default_factory=time.monotonic)
    capacity_kva: np.ndarray | None = None   # (n,) apparent rating [kVA], NaN = same as kW

    @classmethod
    def load(cls, conn: Connection) -> DeviceIndex:
        reg = registry_arrays.load(conn)
        states = reg.categories["state"]
        live = np.isin(reg.codes["state"], [states.index(s) for s in ("registered", "active") if s in states])
        pos = {rid: i for i, rid in enumerate(reg.resource_id.tolist()) if live[i]}
        city = conn.execute(select(grid_nodes.c.node_id).where(grid_nodes.c.level == "city")).scalar() or "city"
        rated = bulk.query_arrow(conn, "SELECT resource_id, capacity_kva FROM resources WHERE capacity_kva > 0",
                                 {"resource_id": pa.string(), "capacity_kva": pa.float64()})
        rows = np.fromiter((pos.get(r, -1) for r in rated.column("resource_id").to_pylist()), np.int64,
                           rated.num_rows)
        kva = np.full(reg.n, np.nan)
        kva[rows[rows >= 0]] = rated.column("capacity_kva").to_numpy()[rows >= 0]
        return cls(reg, pos, city, capacity_kva=kva)

    @property
    def n(self) -> int:
        return self.reg.n

    @property
    def capacity_kw(self) -> np.ndarray:
        return self.reg.values["capacity_kw"]

    @property
    def operator(self) -> np.ndarray:
        return self.reg.codes["operator_id"]

    def operator_code(self, operator_id: str | None) -> int:
        if operator_id is None:
            return ANY_OPERATOR
        if operator_id == "-":
            return NO_OPERATOR
        try:
            return self.reg.categories["operator_id"].index(operator_id)
        except ValueError:
            return NO_SUCH_OPERATOR

    def lookup(self, devices: np.ndarray) -> np.ndarray:
        """Row of each device id, -1 when unknown (or not a string)."""
        get = self.pos.get
        try:
            return np.fromiter((get(d, -1) for d in devices), np.int64, len(devices))
        except TypeError:   # an unhashable id (list, object) in the payload
            return np.fromiter((get(d, -1) if isinstance(d, str) else -1 for d in devices), np.int64,
                               len(devices))


# ---------------------------------------------------------------- the service

@dataclass
class IngestResult:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    refused_messages: int = 0

    @property
    def accepted(self) -> int:
        return self.inserted + self.duplicates

    def as_dict(self) -> dict:
        return {"received": self.received, "accepted": self.accepted, "inserted": self.inserted,
                "duplicates": self.duplicates, "rejected": dict(self.rejected),
                "rejected_total": sum(self.rejected.values()), "refused_messages": self.refused_messages}


ACCEPTED_SUBJECT = "tele.accepted"


@dataclass
class Prepared:
    """A validated batch waiting for its database write (``TelemetryService.commit``)."""

    path: str
    now_ms: int
    received: int
    batch: timeseries.RawBatch
    rejected: dict[str, int]
    refused_messages: int


class TelemetryService:
    """Validate and store telemetry; every ingest path calls :meth:`ingest` or :meth:`ingest_messages`.

    Thread-safe: the MQTT adapter calls it from a worker thread, the API from its threadpool.
    ``publish(subject, data)`` (a bus's thread-safe publish) receives the accepted points as a
    column-form batch on ``tele.accepted`` after they are committed.
    """

    def __init__(self, engine: Engine, config: TelemetryConfig | None = None,
                 publish: Callable[[str, bytes], None] | None = None, index_ttl_s: float = 300.0,
                 clock: Callable[[], float] = time.time):
        self.engine = engine
        self.config = config or TelemetryConfig.from_env()
        self.publish = publish
        self.index_ttl_s = index_ttl_s
        self.clock = clock
        self._index: DeviceIndex | None = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._retry_reload_at = 0.0
        self.index_failures = 0   # reloads that failed (the snapshot before them was kept)
        self.totals: dict[str, int] = {}

    # -- registry snapshot
    def index(self, refresh: bool = False) -> DeviceIndex:
        """The registry snapshot, reloaded after ``index_ttl_s``. While one thread reloads a stale
        snapshot the others go on with it (a million devices take seconds to read).

        A reload that fails (the database is away) keeps the snapshot, logs it and is tried again
        after ``INDEX_RETRY_S``: a due reload never stops the ingest. Only a first load, or a
        ``refresh`` asked for because a batch names devices the snapshot does not know, raises the
        error (the caller retries the batch when the database answers: those points wait rather
        than being refused as unknown by a stale snapshot)."""
        idx = self._index
        now = time.monotonic()
        if idx is not None and not refresh and (now - idx.loaded_at <= self.index_ttl_s
                                                or now < self._retry_reload_at):
            return idx
        if idx is not None and not self._load_lock.acquire(blocking=False):
            return idx
        if idx is None:
            self._load_lock.acquire()
        try:
            if self._index is None or refresh or time.monotonic() - self._index.loaded_at > self.index_ttl_s:
                try:
                    with self.engine.connect() as conn:
                        self._index = DeviceIndex.load(conn)
                except SQLAlchemyError as exc:
                    self.index_failures += 1
                    if self._index is None or refresh:
                        raise
                    self._retry_reload_at = time.monotonic() + INDEX_RETRY_S
                    log.warning("telemetry: registry snapshot reload failed (%s); going on with the one of "
                                "%.0f s ago", str(exc).splitlines()[0][:200], time.monotonic() - self._index.loaded_at)
            return self._index
        finally:
            self._load_lock.release()

    def expire_index(self) -> None:
        """Make the registry snapshot due: the next batch reloads it (devices admitted just now)."""
        idx = self._index
        if idx is not None:
            idx.loaded_at = -math.inf
        self._retry_reload_at = 0.0

    # -- validation
    def check(self, points: Points, expected_operator: int | np.ndarray | None, now_ms: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """(registry row per point, reason code per point)."""
        idx = self.index()
        rows = idx.lookup(points.device)
        if (rows < 0).any() and time.monotonic() - idx.loaded_at > 30.0:
            idx = self.index(refresh=True)   # a device registered since the last snapshot
            rows = idx.lookup(points.device)
        c = self.config
        reason = validate_points(rows, points.ts_ms, points.p_kw, points.q_kvar, points.e_kwh, points.eq_kvarh,
                                 points.soc, points.qf, points.bad_number, idx.capacity_kw, idx.operator,
                                 expected_operator, now_ms, c.future_s, c.lateness_s, c.capacity_margin,
                                 idx.capacity_kva)
        return rows, reason

    # -- the ingest
    def prepare(self, points: Points, path: str, source: str | np.ndarray, operator_id: str | None = None,
                expected_operator: np.ndarray | None = None, refused_messages: int = 0) -> Prepared:
        """Validate ``points`` (no database write): the accepted batch and the counted rejections."""
        now_ms = int(self.clock() * 1000)
        if expected_operator is None and operator_id is not None:
            expected_operator = np.int64(self.index().operator_code(operator_id))
        _rows, reason = self.check(points, expected_operator, now_ms)
        ok = np.flatnonzero(reason == 0)
        good = points.take(ok)
        src = np.asarray(source, dtype=object)
        src = np.full(len(ok), source, dtype=object) if src.ndim == 0 else src[ok]
        batch = timeseries.RawBatch(good.device, good.ts_ms, good.p_kw, good.q_kvar, good.e_kwh, good.eq_kvarh,
                                    good.soc, good.qf, src)
        return Prepared(path, now_ms, len(points), batch, count_reasons(reason), refused_messages)

    def commit(self, prep: Prepared) -> IngestResult:
        """Store a prepared batch idempotently with its counters (one transaction); publish it; log rejections.

        Safe to repeat after a failure: points already stored count as duplicates."""
        batch = prep.batch
        with self.engine.begin() as conn:
            written = timeseries.write_points(conn, batch)
            counts = {"accepted": len(batch), "inserted": written.inserted, "duplicate": written.duplicates,
                      "refused_message": prep.refused_messages, **prep.rejected}
            day = datetime.fromtimestamp(prep.now_ms / 1000, UTC).astimezone(_TZ).date()
            timeseries.add_counters(conn, day, prep.path, counts)
        result = IngestResult(prep.received, written.inserted, written.duplicates, prep.rejected,
                              prep.refused_messages)
        with self._lock:
            for k, v in counts.items():
                self.totals[k] = self.totals.get(k, 0) + int(v)
        if prep.rejected or prep.refused_messages:
            log.warning("telemetry %s: rejected %d of %d points %s, refused %d messages", prep.path,
                        sum(prep.rejected.values()), prep.received, prep.rejected, prep.refused_messages)
        self._publish(prep.path, batch)
        return result

    def _publish(self, path: str, batch: timeseries.RawBatch) -> None:
        """Accepted points to the live state, except those flagged bad (``qf = 2``): stored, but their
        value is not the device's power, and they are no sign of life either (as in the rollups and
        in the live state's seed from the database). A bus failure is logged: the points are stored."""
        if self.publish is None or not len(batch):
            return
        live = np.flatnonzero(np.asarray(batch.quality) < QUALITY_BAD)
        if not len(live):
            return
        try:
            self.publish(ACCEPTED_SUBJECT, encode_columns(path, batch.device[live].tolist(), batch.ts_ms[live],
                                                          batch.p_kw[live], soc=batch.soc[live]))
        except Exception:   # the live view misses these points until the next ones; nothing is lost
            log.exception("telemetry %s: could not publish %d accepted points on %s", path, len(live),
                          ACCEPTED_SUBJECT)

    def refuse(self, path: str, n_messages: int = 1) -> IngestResult:
        """Count ``n_messages`` refused whole (a message that could not be read or stored)."""
        empty = Points.empty()
        batch = timeseries.RawBatch(empty.device, empty.ts_ms, empty.p_kw, empty.q_kvar, empty.e_kwh,
                                    empty.eq_kvarh, empty.soc, empty.qf, np.zeros(0, dtype=object))
        return self.commit(Prepared(path, int(self.clock() * 1000), 0, batch, {}, n_messages))

    def ingest(self, points: Points, path: str, source: str | np.ndarray, operator_id: str | None = None,
               expected_operator: np.ndarray | None = None, refused_messages: int = 0) -> IngestResult:
        """Validate ``points``, store the accepted ones idempotently, count and log the rejected ones.

        ``path`` names the ingest path in the counters (``mqtt``, ``http``...); ``source`` the
        gateway or key that reported the points (one string or one per point); ``operator_id``
        fences the batch to one operator's devices (None = a city-wide sender).
        """
        return self.commit(self.prepare(points, path, source, operator_id, expected_operator, refused_messages))

    def ingest_messages(self, messages: Sequence[tuple[str, bytes]], path: str = "mqtt") -> IngestResult:
        """Gateway messages ``(topic, payload)`` on ``.../tele/{operator_id}/{gateway_id}``, validated together."""
        return self.commit(self.prepare_messages(messages, path))

    def prepare_messages(self, messages: Sequence[tuple[str, bytes]], path: str = "mqtt") -> Prepared:
        """Decode and validate gateway messages; a message that cannot be decoded is refused whole
        (counted as ``refused_message`` and logged with its reason); the points of the others are
        checked against the operator named by their topic. Whatever a message holds, it refuses at
        most itself: only the database being away raises."""
        parts: list[Points] = []
        sources: list[np.ndarray] = []
        ops: list[np.ndarray] = []
        refused = 0
        idx = self.index()
        for topic, payload in messages:
            levels = topic.split("/")
            if len(levels) < 2:
                refused += 1
                log.warning("telemetry %s: refused message on %r: the topic names no operator and gateway", path,
                            topic[:200])
                continue
            operator_id, gateway_id = levels[-2], levels[-1]
            try:
                gw, pts = decode(payload)
                source = source_label(gw, gateway_id)
            except InvalidInput as exc:
                refused += 1
                log.warning("telemetry %s: refused message on %s: %s", path, topic[:200], exc)
                continue
            except Exception as exc:   # decode converts what it knows; this is the backstop
                refused += 1
                log.warning("telemetry %s: refused message on %s: unreadable (%s: %s)", path, topic[:200],
                            type(exc).__name__, str(exc)[:200])
                continue
            parts.append(pts)
            sources.append(np.full(len(pts), source, dtype=object))
            ops.append(np.full(len(pts), idx.operator_code(operator_id), np.int64))
        if not parts:
            return self.prepare(Points.empty(), path, "", refused_messages=refused)
        return self.prepare(Points.concat(parts), path, np.concatenate(sources),
                            expected_operator=np.concatenate(ops), refused_messages=refused)

    # -- upkeep
    def refresh_rollups(self, include_open: bool = False, grace_s: float = 5.0, max_buckets: int = 120) -> int:
        """(Re)compute the rollups of every dirty minute that has closed (``grace_s`` ago), or of all
        dirty minutes with ``include_open``; run every few seconds by the ingest worker. Returns
        minutes done. Pools' rollups are summed here through their member masks."""
        closed = None if include_open else int((self.clock() - grace_s) * 1000)
        done = 0
        while True:
            with self.engine.begin() as conn:
                refreshed = timeseries.refresh_rollups(conn, closed, max_buckets)
                if refreshed.minutes or refreshed.quarters:
                    self._pool_rollups(conn, refreshed)
            done += len(refreshed)
            if len(refreshed) < max_buckets:
                return done

    def pool_masks(self, conn: Connection) -> tuple[list[str], np.ndarray]:
        """Pool ids and their (P, n) member masks on the registry arrays (cached like the index)."""
        from openvpp.services import pools

        idx = self.index()
        cached = getattr(self, "_pools", None)
        if cached is None or cached[0] is not idx or time.monotonic() - cached[1] > self.index_ttl_s:
            try:
                with conn.begin_nested():
                    engine = pools.PoolEngine.from_db(conn, reg=idx.reg)
                cached = (idx, time.monotonic(), [p.pool_id for p in engine.pools], engine.masks)
            except Exception:   # rollups must go on when pools cannot be evaluated
                log.exception("telemetry: pools could not be evaluated; rollups without pools")
                cached = (idx, time.monotonic(), [], np.zeros((0, idx.n), bool))
            self._pools = cached
        return cached[2], cached[3]

    def _pool_rollups(self, conn: Connection, refreshed: timeseries.Refreshed) -> None:
        ids, masks = self.pool_masks(conn)
        if not ids:
            return
        idx = self.index()
        for step in timeseries.STEPS_S:
            buckets = refreshed.buckets(step)
            if not buckets:
                continue
            devices, bucket_of, _, p, q, n = timeseries.device_means(conn, step, buckets)
            rows = idx.lookup(np.asarray(devices, dtype=object))
            known = rows >= 0
            out = []
            for b, bucket in enumerate(buckets):
                sel = known & (bucket_of == b)
                r = rows[sel]
                for k, pool_id in enumerate(ids):
                    member = masks[k][r]
                    if member.any():
                        out.append({"step_s": step, "group_kind": "pool", "group_id": pool_id, "bucket": bucket,
                                    "power_kw": float(p[sel][member].sum()),
                                    "reactive_kvar": float(q[sel][member].sum()),
                                    "n_devices": int(member.sum()), "n_points": int(n[sel][member].sum())})
            timeseries.insert_group_rows(conn, out)

    def maintain(self, now: datetime | None = None) -> dict:
        """Create today's and the coming days' partitions, drop those past the retention."""
        now = now or datetime.now(UTC)
        with self.engine.begin() as conn:
            today = (int(now.timestamp() * 1000) + timeseries.LOCAL_OFFSET_MS) // timeseries.DAY_MS
            created = timeseries.ensure_partitions(conn, [today], ahead=2)
            dropped = timeseries.apply_retention(conn, self.config.retention_days, now)
        if dropped:
            log.info("telemetry retention: dropped %s", dropped)
        return {"created": created, "dropped": dropped}

    def record_gap(self, source: str, kind: str, started_at: datetime, ended_at: datetime, detail: str = "") -> None:
        log.warning("telemetry %s: %s gap of %.1f s (%s .. %s) %s", source, kind,
                    (ended_at - started_at).total_seconds(), started_at.isoformat(), ended_at.isoformat(), detail)
        with self.engine.begin() as conn:
            timeseries.record_gap(conn, source, kind, started_at, ended_at, detail)


# ---------------------------------------------------------------- upkeep on a timer

async def upkeep(service: TelemetryService, stop: asyncio.Event | None = None, refresh_every_s: float = 5.0,
                 maintain_every_s: float = 3600.0, who: str = "") -> None:
    """Until ``stop`` is set: every ``refresh_every_s`` roll up the dirty minutes that have closed,
    every ``maintain_every_s`` create the coming days' partitions and apply the retention.

    Driven by a timer, not by messages, and run beside an ingest loop rather than inside it: the
    last minutes of a stream, and the minutes late points reopened, are rolled up whether or not
    anything else arrives, and an ingest never waits for a refresh. A failure (the database away)
    is logged once and tried again at the next tick. Safe in several processes at once: a refresh
    takes its dirty markers under row locks (``store.timeseries.refresh_rollups``)."""
    stop = stop or asyncio.Event()
    last_maintain = time.monotonic()
    failing = False
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), refresh_every_s)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(service.refresh_rollups)
            if time.monotonic() - last_maintain > maintain_every_s:
                last_maintain = time.monotonic()
                await asyncio.to_thread(service.maintain)
            if failing:
                log.info("telemetry upkeep %s: rolling up again", who)
            failing = False
        except SQLAlchemyError as exc:
            if not failing:
                log.warning("telemetry upkeep %s: rollup refresh failed (%s); dirty minutes stay marked, "
                            "tried again every %.0f s", who, str(exc).splitlines()[0][:200], refresh_every_s)
            failing = True
        except Exception:
            log.exception("telemetry upkeep %s: rollup refresh failed; tried again in %.0f s", who, refresh_every_s)


# ---------------------------------------------------------------- who may push

def sender_operator(actor: Actor) -> str | None:
    """The operator a sender is fenced to; None = city-wide. Raises ``Forbidden`` for readers.

    A device key issued without an operator reports only the devices that have none (as the MQTT
    topic segment ``-``): a key is never city-wide unless it is the city admin's."""
    role = Role(actor.role)
    if role in (Role.DEVICE, Role.OPERATOR_ADMIN, Role.OPERATOR_ENGINEER):
        if role is not Role.DEVICE and not actor.operator_id:
            raise Forbidden(f"{actor.name} has role {role} but no operator")
        return actor.operator_id or "-"
    if role is Role.CITY_ADMIN:
        return None
    raise Forbidden(f"role {role} may not push telemetry")
