"""Charging: what the OCPP central system asks of the platform, and the day-ahead schedule service.

The OCPP adapter (``adapters/ocpp``) translates messages into these calls and holds no rule:

* :meth:`ChargingService.boot` admits a charge point only if it is a registered pile (a resource of
  type ev_charging / v2g_charger in state registered/active) and says what it may do;
* transactions open and close ``ev_sessions`` rows;
* meter values are buffered and, on :meth:`ChargingService.flush` (the adapter calls it every
  second), go as one batch into the telemetry service (``TelemetryService.ingest``, path ``ocpp``:
  the same validation, storage and live view as every other device) and into the sessions'
  energy split by TOU period (charged and discharged), which the pilot KPIs and the V2G
  settlement read;
* charging profiles are recorded in ``ev_charging_profiles`` with their fate (sent, accepted,
  rejected, fallback when the charger disconnects and reverts to its default profile).

Thread-safe: the adapter calls it from worker threads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Connection, Engine, insert, select, update

from openvpp.core import rules as rulesets
from openvpp.core.errors import Forbidden, InvalidInput, NotFound, Violation
from openvpp.core.timeslots import SLOT_MINUTES, slot_of
from openvpp.kernels import ev_heuristic, ev_lp, tariff
from openvpp.model.ev import EvAssumptions, Schedule, Sessions, Stations, TransformerAreas
from openvpp.services.telemetry import Points, TelemetryService
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema import resources
from openvpp.store.schema_ev import (
    ID_TAG_STATUSES,
    PERIODS,
    ev_charge_points,
    ev_charging_profiles,
    ev_credentials,
    ev_id_tags,
    ev_sessions,
)

log = logging.getLogger("openvpp.ev")
EV_TYPES = ("ev_charging", "v2g_charger")
TELEMETRY_PATH = "ocpp"


# ---------------------------------------------------------------- value objects the adapter uses

@dataclass(frozen=True)
class BootDecision:
    accepted: bool
    interval_s: int
    reason: str = ""
    max_kw: float = 0.0
    max_discharge_kw: float = 0.0      # > 0: a V2G charger
    operator_id: str | None = None


@dataclass(frozen=True)
class Sample:
    """One sampled meter value of an EVSE, already in platform units (the adapter converts)."""

    ts: datetime
    power_kw: float | None = None          # net: import positive, export negative
    import_kwh: float | None = None        # Energy.Active.Import.Register
    export_kwh: float | None = None        # Energy.Active.Export.Register
    soc: float | None = None               # 0..1


@dataclass(frozen=True)
class ProfilePlan:
    """A charging profile in platform terms; the adapter writes it as OCPP 1.6 or 2.0.1.

    periods: (start offset [s], limit [kW]) — a negative limit allows discharge up to its magnitude.
    """

    purpose: str                 # "default" | "tx"
    stack_level: int
    profile_id: int
    evse_id: int
    start: datetime
    periods: tuple[tuple[int, float], ...]
    duration_s: int | None = None
    transaction_id: str | None = None


@dataclass
class _Open:
    """Running state of an open transaction (in memory between flushes)."""

    session_id: str
    last_import_kwh: float | None
    last_export_kwh: float | None
    last_ts: datetime | None
    charge: np.ndarray = field(default_factory=lambda: np.zeros(4))
    discharge: np.ndarray = field(default_factory=lambda: np.zeros(4))
    soc: float | None = None
    dirty: bool = False


def _open_from_row(row) -> _Open:
    last = row["meter_last_wh"]
    return _Open(row["session_id"], None if last is None else last / 1000.0, None, row["meter_last_at"],
                 np.array([row[f"charge_{p}_kwh"] for p in PERIODS], float),
                 np.array([row[f"discharge_{p}_kwh"] for p in PERIODS], float), row["soc_last"])


def register_tag(conn: Connection, actor: Actor, id_tag: str, status: str = "Accepted",
                 operator_id: str | None = None, expires_at: datetime | None = None, note: str | None = None,
                 now: datetime | None = None) -> dict:
    """Register (or change) an ID tag: Accepted, Blocked or Expired; ``expires_at`` ends an Accepted tag.
    The city admin registers any tag; an operator admin only its own operator's. Audited."""
    if actor.role == "operator_admin":
        if operator_id not in (None, actor.operator_id):
            raise InvalidInput(Violation("operator_id", "an operator admin registers its own operator's tags",
                                         operator_id))
        operator_id = actor.operator_id
    elif actor.role != "city_admin":
        raise Forbidden("ID tags are registered by the city admin or an operator admin")
    v = []
    if not isinstance(id_tag, str) or not 1 <= len(id_tag) <= 64:
        v.append(Violation("id_tag", "must be 1-64 characters", id_tag))
    if status not in ID_TAG_STATUSES:
        v.append(Violation("status", f"must be one of {', '.join(ID_TAG_STATUSES)}", status))
    if expires_at is not None and expires_at.tzinfo is None:
        v.append(Violation("expires_at", "must carry a time zone", expires_at.isoformat()))
    if v:
        raise InvalidInput(v)
    before = conn.execute(select(ev_id_tags).where(ev_id_tags.c.id_tag == id_tag)).mappings().first()
    if before is not None and actor.role == "operator_admin" and before["operator_id"] not in (None, operator_id):
        raise InvalidInput(Violation("id_tag", "is registered by another operator", id_tag))
    row = {"status": status, "operator_id": operator_id,
           "expires_at": None if expires_at is None else expires_at.astimezone(UTC), "note": note,
           "updated_at": now or datetime.now(UTC)}
    if before is None:
        conn.execute(insert(ev_id_tags).values(id_tag=id_tag, **row))
    else:
        conn.execute(update(ev_id_tags).where(ev_id_tags.c.id_tag == id_tag).values(**row))
    audit.record(conn, actor, "ev.id_tag", "ev_id_tag", id_tag, before=dict(before) if before else None, after=row)
    return {"id_tag": id_tag, **row}


class ChargingService:
    """Charge points, sessions, meter values and profiles of the OCPP central system."""

    def __init__(self, engine: Engine, telemetry: TelemetryService | None = None,
                 ruleset: str = rulesets.DEFAULT_RULESET, heartbeat_s: int = 300,
                 clock: Callable[[], float] = time.time):
        self.engine = engine
        self.telemetry = telemetry
        self.tou = tariff.TouRules.from_ruleset(ruleset)
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self._lock = threading.Lock()
        self._points: list[tuple[str, int, float, float, float]] = []   # device, ts_ms, p_kw, e_kwh, soc
        self._open: dict[tuple[str, str], _Open] = {}
        self._seen: dict[str, datetime] = {}
        self._codes: dict[object, np.ndarray] = {}
        self.counters = {"meter_samples": 0, "points_flushed": 0, "flushes": 0, "rejected_points": 0}
        self.last_flush_s = 0.0

    # -- authorization (ID tags / tokens) and charge point passwords (security profile 1)
    def register_tag(self, id_tag: str, status: str = "Accepted", operator_id: str | None = None,
                     expires_at: datetime | None = None, note: str | None = None) -> None:
        """Register (or change) an ID tag as the system (see :func:`register_tag`)."""
        with self.engine.begin() as conn:
            register_tag(conn, audit.SYSTEM, id_tag, status, operator_id,
                         expires_at if expires_at is None or expires_at.tzinfo else expires_at.replace(tzinfo=UTC),
                         note, now=self._now())

    def authorize(self, id_tag: str | None) -> str:
        """OCPP authorization status of an ID tag: Accepted, Blocked, Expired, or Invalid (not registered)."""
        if not id_tag:
            return "Invalid"
        with self.engine.connect() as conn:
            row = conn.execute(select(ev_id_tags.c.status, ev_id_tags.c.expires_at).where(
                ev_id_tags.c.id_tag == id_tag)).first()
        if row is None:
            return "Invalid"
        status, expires = row
        if status == "Accepted" and expires is not None:
            exp = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
            if exp <= self._now():
                return "Expired"
        return status

    @staticmethod
    def _hash(password: str, salt: bytes) -> str:
        return base64.b64encode(salt + hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 20_000)).decode()

    def set_password(self, cp_id: str, password: str) -> None:
        """Security profile 1: the charge point's basic-auth password (OCPP: 16-40 characters), stored hashed."""
        if not isinstance(password, str) or not 16 <= len(password) <= 40:
            raise InvalidInput(Violation("password", "must be 16-40 characters (OCPP security profile 1)",
                                         "***" if password else password))
        with self.engine.begin() as conn:
            if conn.execute(select(resources.c.resource_type).where(resources.c.resource_id == cp_id)).scalar() \
                    not in EV_TYPES:
                raise NotFound("charge point", cp_id)
            row = {"password_hash": self._hash(password, secrets.token_bytes(16)), "updated_at": self._now()}
            if not conn.execute(update(ev_credentials).where(ev_credentials.c.charge_point_id == cp_id)
                                .values(**row)).rowcount:
                conn.execute(insert(ev_credentials).values(charge_point_id=cp_id, **row))

    def check_password(self, cp_id: str, password: str) -> bool:
        with self.engine.connect() as conn:
            stored = conn.execute(select(ev_credentials.c.password_hash).where(
                ev_credentials.c.charge_point_id == cp_id)).scalar()
        if stored is None:
            return False
        raw = base64.b64decode(stored)
        return hmac.compare_digest(stored, self._hash(password, raw[:16]))

    # -- charge points
    def boot(self, cp_id: str, ocpp_version: str, vendor: str = "", model: str = "", serial: str = "",
             firmware: str = "") -> BootDecision:
        with self.engine.begin() as conn:
            row = conn.execute(select(resources.c.resource_type, resources.c.state, resources.c.capacity_kw,
                                      resources.c.operator_id)
                               .where(resources.c.resource_id == cp_id)).mappings().first()
            if row is None:
                return BootDecision(False, self.heartbeat_s, f"{cp_id} is not a registered resource")
            if row["resource_type"] not in EV_TYPES:
                return BootDecision(False, self.heartbeat_s, f"{cp_id} is a {row['resource_type']}, not a charger")
            if row["state"] not in ("registered", "active"):
                return BootDecision(False, self.heartbeat_s, f"{cp_id} is {row['state']}")
            now = self._now()
            values = dict(ocpp_version=ocpp_version, vendor=vendor[:50], model=model[:50], serial=(serial or "")[:50],
                          firmware=(firmware or "")[:50], boot_at=now, last_seen_at=now, connected=True)
            done = conn.execute(update(ev_charge_points).where(ev_charge_points.c.charge_point_id == cp_id)
                                .values(**values)).rowcount
            if not done:
                conn.execute(insert(ev_charge_points).values(charge_point_id=cp_id, status={}, **values))
        v2g = row["resource_type"] == "v2g_charger"
        cap = float(row["capacity_kw"])
        return BootDecision(True, self.heartbeat_s, "", cap, cap if v2g else 0.0, row["operator_id"])

    def seen(self, cp_id: str) -> None:
        """A heartbeat or any message: remembered in memory, written on the next flush."""
        with self._lock:
            self._seen[cp_id] = self._now()

    def status(self, cp_id: str, evse_id: int, connector_id: int, status: str) -> None:
        with self.engine.begin() as conn:
            cur = conn.execute(select(ev_charge_points.c.status).where(
                ev_charge_points.c.charge_point_id == cp_id)).scalar()
            if cur is None and not self._known(conn, cp_id):
                return
            st = dict(cur or {})
            st[f"{evse_id}/{connector_id}"] = status
            conn.execute(update(ev_charge_points).where(ev_charge_points.c.charge_point_id == cp_id)
                         .values(status=st, last_seen_at=self._now()))

    def disconnected(self, cp_id: str) -> int:
        """The connection dropped: the charger falls back to its default profile. Returns profiles marked."""
        with self.engine.begin() as conn:
            conn.execute(update(ev_charge_points).where(ev_charge_points.c.charge_point_id == cp_id)
                         .values(connected=False, last_seen_at=self._now()))
            n = conn.execute(update(ev_charging_profiles).where(
                ev_charging_profiles.c.charge_point_id == cp_id, ev_charging_profiles.c.purpose == "tx",
                ev_charging_profiles.c.state.in_(("sent", "accepted"))).values(
                state="fallback", reason="charger disconnected: follows its default profile",
                updated_at=self._now())).rowcount
        return int(n)

    # -- transactions
    def start_transaction(self, cp_id: str, evse_id: int, transaction_id: str, ts: datetime, ocpp_version: str,
                          id_token: str | None = None, meter_start_wh: float | None = None) -> str:
        """Open a session (idempotent for a repeated start of the same transaction). Returns its id."""
        sid = f"{cp_id}:{transaction_id}"[:64]
        with self.engine.begin() as conn:
            v2g = conn.execute(select(resources.c.resource_type).where(
                resources.c.resource_id == cp_id)).scalar() == "v2g_charger"
            exists = conn.execute(select(ev_sessions.c.session_id).where(ev_sessions.c.session_id == sid)).scalar()
            if not exists:
                conn.execute(insert(ev_sessions).values(
                    session_id=sid, charge_point_id=cp_id, evse_id=evse_id, transaction_id=str(transaction_id),
                    id_token=(id_token or "")[:64] or None, ocpp_version=ocpp_version, state="active",
                    started_at=ts, meter_start_wh=meter_start_wh, meter_last_wh=meter_start_wh, v2g=v2g))
        with self._lock:
            self._open.setdefault((cp_id, str(transaction_id)), _Open(
                sid, None if meter_start_wh is None else meter_start_wh / 1000.0, None, ts))
        return sid

    def has_transaction(self, cp_id: str, transaction_id: str) -> bool:
        """True for an open transaction; one opened before a restart is taken back into memory."""
        key = (cp_id, str(transaction_id))
        with self._lock:
            if key in self._open:
                return True
        with self.engine.connect() as conn:
            row = conn.execute(select(ev_sessions).where(
                ev_sessions.c.charge_point_id == cp_id, ev_sessions.c.transaction_id == str(transaction_id),
                ev_sessions.c.state == "active")).mappings().first()
        if row is None:
            return False
        with self._lock:
            self._open.setdefault(key, _open_from_row(row))
        return True

    def stop_transaction(self, cp_id: str, transaction_id: str, ts: datetime, meter_stop_wh: float | None = None,
                         reason: str | None = None) -> bool:
        """Close a session; the final meter reading is counted. False if no such open transaction."""
        if meter_stop_wh is not None:
            self.meter_values(cp_id, 0, transaction_id, [Sample(ts, None, meter_stop_wh / 1000.0)], telemetry=False)
        self.flush()
        with self._lock:
            self._open.pop((cp_id, str(transaction_id)), None)
        with self.engine.begin() as conn:
            n = conn.execute(update(ev_sessions).where(
                ev_sessions.c.charge_point_id == cp_id, ev_sessions.c.transaction_id == str(transaction_id),
                ev_sessions.c.state == "active").values(state="completed", stopped_at=ts,
                                                         stop_reason=(reason or "")[:40] or None)).rowcount
        return bool(n)

    def charging_needs(self, cp_id: str, transaction_id: str, departure_at: datetime | None,
                       energy_kwh: float | None, battery_kwh: float | None = None, soc: float | None = None) -> bool:
        """OCPP 2.0.1 NotifyEVChargingNeeds: the EV's departure time and the energy it asks for, kept on its
        session for the scheduler (:meth:`open_sessions`). False if the transaction is not open."""
        values: dict = {}
        if departure_at is not None:
            values["departure_at"] = departure_at
        if energy_kwh is not None and math.isfinite(energy_kwh) and energy_kwh >= 0:
            values["energy_requested_kwh"] = float(energy_kwh)
        if battery_kwh is not None and math.isfinite(battery_kwh) and battery_kwh > 0:
            values["battery_kwh"] = float(battery_kwh)
        if soc is not None:
            values["soc_last"] = float(soc)
        with self.engine.begin() as conn:
            n = conn.execute(update(ev_sessions).where(
                ev_sessions.c.charge_point_id == cp_id, ev_sessions.c.transaction_id == str(transaction_id),
                ev_sessions.c.state == "active").values(**values)).rowcount if values else 1
        return bool(n)

    def open_sessions(self, start: datetime, horizon: int = 96, charge_point_ids: list[str] | None = None
                      ) -> tuple[Sessions, list[str]]:
        """Open sessions as scheduler input over ``horizon`` slots from ``start``: plugged from now (slot 0 or
        their start), leaving at their reported departure (the horizon's end when none was reported),
        asking for the energy reported less what they charged since (0 when none was reported).
        Returns the sessions and their ids (rows in the same order); ``charge_point_ids`` keeps those
        chargers' sessions only."""
        s, r = ev_sessions, resources
        cols = [s.c.session_id, s.c.started_at, s.c.departure_at, s.c.energy_requested_kwh, s.c.battery_kwh,
                s.c.soc_last, s.c.v2g, r.c.capacity_kw, *[s.c[f"charge_{p}_kwh"] for p in PERIODS],
                *[s.c[f"discharge_{p}_kwh"] for p in PERIODS]]
        q = (select(*cols).select_from(s.join(r, r.c.resource_id == s.c.charge_point_id))
             .where(s.c.state == "active").order_by(s.c.session_id))
        rows = []
        with self.engine.connect() as conn:
            if charge_point_ids is None:
                rows = conn.execute(q).all()
            else:
                for k in range(0, len(charge_point_ids), 2000):
                    rows += conn.execute(q.where(s.c.charge_point_id.in_(charge_point_ids[k:k + 2000]))).all()
                rows.sort(key=lambda row: row[0])
        start = start.astimezone(UTC)

        def slots(ts: datetime | None) -> float:
            ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
            return (ts - start).total_seconds() / (SLOT_MINUTES * 60)

        k = len(PERIODS)
        arrival = [max(0, min(horizon - 1, math.floor(slots(row[1]) + 1e-9))) for row in rows]
        departure = [max(a + 1, min(horizon, horizon if row[2] is None else math.ceil(slots(row[2]) - 1e-9)))
                     for a, row in zip(arrival, rows, strict=True)]
        charged = [sum(row[8:8 + k]) - sum(row[8 + k:8 + 2 * k]) for row in rows]
        need = [max(0.0, (row[3] or 0.0) - c) for row, c in zip(rows, charged, strict=True)]
        battery = [row[4] if row[4] else np.inf for row in rows]
        soc = [row[5] if row[5] is not None and np.isfinite(b) else 0.0 for row, b in zip(rows, battery, strict=True)]
        sess = Sessions(station=np.full(len(rows), -1), arrival=arrival, departure=departure, energy_kwh=need,
                        max_charge_kw=[float(row[7]) for row in rows],
                        max_discharge_kw=[float(row[7]) if row[6] else 0.0 for row in rows], battery_kwh=battery,
                        soc_arrival=soc, v2g=[bool(row[6]) for row in rows],
                        session_id=np.array([row[0] for row in rows], dtype=object))
        return sess, [row[0] for row in rows]

    # -- meter values
    def _period(self, ts: datetime) -> int:
        day, slot = slot_of(ts)
        codes = self._codes.get(day)
        if codes is None:
            codes = self._codes[day] = tariff.period_codes(np.datetime64(day), 1, self.tou)
        return int(codes[slot])

    def meter_values(self, cp_id: str, evse_id: int, transaction_id: str | None, samples: list[Sample],
                     telemetry: bool = True) -> int:
        """Buffer samples: a telemetry point each (when power is known or derivable) and, inside a
        transaction, the energy delta of each register by TOU period. Returns points buffered."""
        n = 0
        with self._lock:
            tx = self._open.get((cp_id, str(transaction_id))) if transaction_id is not None else None
            for s in sorted(samples, key=lambda s: s.ts):
                p = s.power_kw
                if tx is not None:
                    per = None
                    if s.import_kwh is not None:
                        if tx.last_import_kwh is not None and s.import_kwh >= tx.last_import_kwh:
                            per = self._period(s.ts)
                            delta = s.import_kwh - tx.last_import_kwh
                            tx.charge[per] += delta
                            if p is None and tx.last_ts is not None and s.ts > tx.last_ts:
                                p = delta / ((s.ts - tx.last_ts).total_seconds() / 3600.0)
                        tx.last_import_kwh = s.import_kwh
                    if s.export_kwh is not None:
                        if tx.last_export_kwh is not None and s.export_kwh >= tx.last_export_kwh:
                            per = self._period(s.ts) if per is None else per
                            tx.discharge[per] += s.export_kwh - tx.last_export_kwh
                        tx.last_export_kwh = s.export_kwh
                    if s.soc is not None:
                        tx.soc = s.soc
                    tx.last_ts = s.ts
                    tx.dirty = True
                if telemetry and p is not None:
                    self._points.append((cp_id, int(s.ts.timestamp() * 1000), float(p),
                                         np.nan if s.import_kwh is None else float(s.import_kwh),
                                         np.nan if s.soc is None else float(s.soc)))
                    n += 1
            self.counters["meter_samples"] += len(samples)
            self._seen[cp_id] = self._now()
        return n

    def flush(self) -> dict:
        """Write buffered telemetry (one ingest batch) and session energy; called every second by the adapter."""
        t0 = time.perf_counter()
        with self._lock:
            points, self._points = self._points, []
            dirty = [(k, o) for k, o in self._open.items() if o.dirty]
            for _k, o in dirty:
                o.dirty = False
            snap = [(o.session_id, o.charge.copy(), o.discharge.copy(), o.last_import_kwh, o.last_ts, o.soc)
                    for _k, o in dirty]
            seen, self._seen = self._seen, {}
        out = {"points": len(points), "sessions": len(snap)}
        if points and self.telemetry is not None:
            cols = list(zip(*points, strict=True))
            pts = Points.from_columns({"d": list(cols[0]), "t": list(cols[1]), "p": list(cols[2]),
                                       "e": [None if np.isnan(v) else v for v in cols[3]],
                                       "soc": [None if np.isnan(v) else v for v in cols[4]]})
            res = self.telemetry.ingest(pts, TELEMETRY_PATH, "ocpp-csms")
            out["telemetry"] = res.as_dict()
            self.counters["rejected_points"] += sum(res.rejected.values())
        if snap or seen:
            with self.engine.begin() as conn:
                for sid, ch, dis, e_kwh, ts, soc in snap:
                    values = {f"charge_{p}_kwh": float(ch[i]) for i, p in enumerate(PERIODS)}
                    values.update({f"discharge_{p}_kwh": float(dis[i]) for i, p in enumerate(PERIODS)})
                    values.update(meter_last_wh=None if e_kwh is None else e_kwh * 1000.0, meter_last_at=ts,
                                  soc_last=soc)
                    conn.execute(update(ev_sessions).where(ev_sessions.c.session_id == sid).values(**values))
                for cp_id, at in seen.items():
                    conn.execute(update(ev_charge_points).where(ev_charge_points.c.charge_point_id == cp_id)
                                 .values(last_seen_at=at))
        with self._lock:
            self.counters["points_flushed"] += len(points)
            self.counters["flushes"] += 1
        self.last_flush_s = time.perf_counter() - t0
        return out

    # -- profiles
    def default_profile(self, decision: BootDecision, evse_id: int = 0, profile_id: int = 1) -> ProfilePlan:
        """The profile a charger follows when nobody steers it: its rated charging power, never discharge."""
        return ProfilePlan("default", 0, profile_id, evse_id, self._now(), ((0, round(decision.max_kw, 1)),))

    def profile_from_schedule(self, power_kw: np.ndarray, start: datetime, evse_id: int, profile_id: int,
                              transaction_id: str | None = None, max_discharge_kw: float = 0.0) -> ProfilePlan:
        """A TxProfile from a slot schedule (kW per 15 minutes, charge positive): one period per change of
        value; discharge (negative) only as far as the charger allows."""
        p = np.maximum(np.round(np.asarray(power_kw, float), 1), -abs(max_discharge_kw))
        change = np.r_[True, p[1:] != p[:-1]]
        periods = tuple((int(i * SLOT_MINUTES * 60), float(p[i])) for i in np.flatnonzero(change))
        return ProfilePlan("tx", 1, profile_id, evse_id, start, periods, len(p) * SLOT_MINUTES * 60, transaction_id)

    def record_profile(self, cp_id: str, plan: ProfilePlan, state: str = "sent", reason: str = "") -> int:
        now = self._now()
        with self.engine.begin() as conn:
            res = conn.execute(insert(ev_charging_profiles).values(
                charge_point_id=cp_id, evse_id=plan.evse_id, profile_id=plan.profile_id, purpose=plan.purpose,
                stack_level=plan.stack_level, transaction_id=plan.transaction_id,
                schedule={"start": plan.start.isoformat(), "unit": "kW", "periods": [list(x) for x in plan.periods],
                          "duration_s": plan.duration_s}, state=state, reason=reason or None, created_at=now,
                updated_at=now))
            return int(res.inserted_primary_key[0])

    def profile_result(self, row_id: int, state: str, reason: str = "") -> None:
        with self.engine.begin() as conn:
            if state in ("accepted",):   # a new profile of a purpose supersedes the older ones on that EVSE
                row = conn.execute(select(ev_charging_profiles).where(
                    ev_charging_profiles.c.row_id == row_id)).mappings().one()
                conn.execute(update(ev_charging_profiles).where(
                    ev_charging_profiles.c.charge_point_id == row["charge_point_id"],
                    ev_charging_profiles.c.evse_id == row["evse_id"],
                    ev_charging_profiles.c.purpose == row["purpose"], ev_charging_profiles.c.row_id != row_id,
                    ev_charging_profiles.c.state.in_(("sent", "accepted"))).values(
                    state="cleared", reason="superseded", updated_at=self._now()))
            conn.execute(update(ev_charging_profiles).where(ev_charging_profiles.c.row_id == row_id).values(
                state=state, reason=reason or None, updated_at=self._now()))

    # -- helpers
    def _known(self, conn, cp_id: str) -> bool:
        return conn.execute(select(ev_charge_points.c.charge_point_id).where(
            ev_charge_points.c.charge_point_id == cp_id)).scalar() is not None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


# ---------------------------------------------------------------- the day-ahead schedule

@dataclass
class DayAhead:
    schedule: Schedule
    price_yuan_per_kwh: np.ndarray
    start: datetime
    ruleset_id: str
    seconds: float

    def summary(self, sessions: Sessions) -> dict:
        s = self.schedule
        return {"solver": s.solver, "sessions": int(sessions.n), "cost_yuan": round(s.cost_yuan, 2),
                "energy_kwh": round(float(s.served_kwh.sum()), 3), "need_kwh": round(float(s.need_kwh.sum()), 3),
                "min_served_fraction": round(s.min_served_fraction, 4), "seconds": round(self.seconds, 3),
                "ruleset": self.ruleset_id, "start": self.start.isoformat(),
                "flagged": [{**f, "session_id": str(sessions.session_id[f["row"]])} for f in s.flagged()[:1000]],
                "flagged_total": int((s.flags != 0).sum())}


def flat_price(tou: tariff.TouRules) -> float:
    """The absolute flat energy price: the rule set's ``[tou] flat_yuan_per_kwh``, or, when it names none,
    the V2G benchmark price (0.453): an assumption that makes charging cost and discharge revenue comparable."""
    return tou.flat_yuan_per_kwh if tou.flat_yuan_per_kwh is not None else tou.v2g_base_yuan_per_kwh


def day_ahead(sessions: Sessions, stations: Stations | None, areas: TransformerAreas | None, start: datetime,
              horizon: int = 96, solver: str = "heuristic", ruleset: str = rulesets.DEFAULT_RULESET,
              tmax_c: np.ndarray | None = None, v2g: bool = False,
              assumptions: EvAssumptions | None = None) -> DayAhead:
    """Schedule sessions over ``horizon`` slots from ``start`` (a slot boundary) under the rule set's TOU.

    solver: "heuristic" (scale), "lp" (exact) or, with ``v2g=True``, the V2G LP (discharge in peaks
    against battery wear, guaranteed departure energy).
    """
    tou = tariff.TouRules.from_ruleset(ruleset)
    day, slot = slot_of(start)
    n_days = (slot + horizon + 95) // 96
    codes = tariff.period_codes(np.datetime64(day), n_days, tou, tmax_c)[slot:slot + horizon]
    price = tariff.price_curve(codes, tou, flat_price(tou))
    t0 = time.perf_counter()
    if v2g:
        a = assumptions or EvAssumptions.from_mapping(rulesets.load(ruleset).data.get("ev"))
        sched = ev_lp.schedule_v2g(sessions, stations, price, tariff.v2g_discharge_price(codes, tou),
                                   a.degradation_yuan_per_kwh, areas, charge_efficiency=a.charge_efficiency,
                                   discharge_efficiency=a.discharge_efficiency)
    elif solver == "lp":
        sched = ev_lp.schedule(sessions, stations, price, areas)
    else:
        sched = ev_heuristic.schedule(sessions, stations, price, areas)
    return DayAhead(sched, price, start, tou.ruleset_id, time.perf_counter() - t0)


def slot_start(ts: datetime) -> datetime:
    """The start of the 15-minute slot holding ``ts``."""
    ts = ts.astimezone(UTC)
    return ts - timedelta(minutes=ts.minute % SLOT_MINUTES, seconds=ts.second, microseconds=ts.microsecond)
