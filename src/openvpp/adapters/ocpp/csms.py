"""OCPP central system (CSMS) for OCPP 1.6J and 2.0.1 over WebSocket, on the ``ocpp`` library.

Charge points connect to ``ws://HOST:PORT/<charge point id>`` with the subprotocol ``ocpp1.6`` or
``ocpp2.0.1``; the id is the resource id of the pile. This module only translates: every decision
is ``services.ev_charging.ChargingService``'s (which piles may boot, sessions, meter values into
telemetry, profiles).

Handled: BootNotification, Heartbeat, StatusNotification, Authorize, transactions (1.6
Start/StopTransaction, 2.0.1 TransactionEvent), MeterValues, 2.0.1 NotifyEVChargingNeeds (departure
time and energy onto the session, read by the scheduler); sent: SetChargingProfile (a default
profile after boot, transaction profiles from a schedule) and ClearChargingProfile.

Authorization: an ID tag (1.6 ``idTag`` in Authorize and StartTransaction, 2.0.1 ``idToken`` in
Authorize and TransactionEvent) is answered from the registered tags (``ChargingService.authorize``):
Accepted, Blocked, Expired, or Invalid when unknown. A 1.6 StartTransaction always gets a
transaction id (the protocol requires one); with a status other than Accepted the charge point
stops it, and its StopTransaction closes the session.

Durability: meter values (MeterValues, and TransactionEvent samples) are committed to telemetry
and to the session before the CALLRESULT goes back: a handler waits for the next group commit of
the flusher, which starts as soon as something waits (after ``batch_s`` to gather more), so a
crash loses nothing the charge point was told was received; a failed write answers CALLERROR
(InternalError) and the charge point sends again.

Security profile 1 (``security_profile=1``): HTTP basic auth on the WebSocket upgrade, user = the
charge point id, password = its own (``ChargingService.set_password``); a missing or wrong one gets
401 before any OCPP message.

Errors answer with the protocol's CALLERROR and are logged (logger ``openvpp.ocpp``):

* a frame that is not JSON, not an array or has no readable message id: 2.0.1 ``RpcFrameworkError``
  (id "-1" when unreadable), 1.6 ``FormationViolation`` / ``ProtocolError``; an unknown message type
  number: 2.0.1 ``MessageTypeNotSupported``;
* a payload that breaks the action's JSON schema: the ``ocpp`` library's validation (1.6 codes
  spelled as 1.6 has them: ``FormationViolation``, ``OccurenceConstraintViolation``);
* out of order: anything but BootNotification before an accepted boot: ``SecurityError`` (2.0.1
  B02/B03 behaviour, applied to 1.6 too); a transaction message for a transaction the CSMS does
  not know: ``PropertyConstraintViolation`` naming ``transactionId``.

Discharge limits: OCPP 2.0.1 has no discharge field (V2X control arrives with OCPP 2.1's
``dischargeLimit`` / ``operationMode``); the 2.0.1 schema leaves ``ChargingSchedulePeriod.limit``
unbounded and the 2.1 specification names "a negative value to specify a discharging limit" as the
convention of older systems it keeps for backwards compatibility. So to a V2G charger on 2.0.1 a
period with a negative ``limit`` in W means "discharge allowed up to |limit|"; a 1.6 charger never
gets a negative limit (clamped to 0). A charger that disconnects falls back to its default profile
(rated power, no discharge): the CSMS marks its transaction profiles ``fallback`` and sends the
default again on the next boot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus

from ocpp.exceptions import OCPPError, PropertyConstraintViolationError, SecurityError
from ocpp.messages import MessageType, unpack
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from openvpp.services.ev_charging import BootDecision, ChargingService, ProfilePlan, Sample

log = logging.getLogger("openvpp.ocpp")
SUBPROTOCOLS = ("ocpp2.0.1", "ocpp1.6")
_V16_SPELLING = {"FormatViolation": "FormationViolation", "OccurrenceConstraintViolation": "OccurenceConstraintViolation"}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ts(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _frame_id(raw: str | bytes) -> str:
    """The message id of a frame if it can be read, else "-1"."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "-1"
    if isinstance(doc, list) and len(doc) > 1 and isinstance(doc[1], str) and doc[1]:
        return doc[1][:36]
    return "-1"


_MULT = {"Wh": 1e-3, "kWh": 1.0, "W": 1e-3, "kW": 1.0, "Percent": 0.01}


def parse_samples(meter_value: list[dict], v201: bool) -> list[Sample]:
    """Sampled values (camel-to-snake converted by the library) -> ``Sample`` in kW / kWh / 0..1.

    Phase-specific values are skipped (the totals are used). A value that is not a number raises
    ``PropertyConstraintViolationError`` naming the field."""
    out = []
    for mv in meter_value:
        got: dict[str, float] = {}
        for sv in mv.get("sampled_value", []):
            if sv.get("phase"):
                continue
            measurand = sv.get("measurand") or "Energy.Active.Import.Register"
            if v201:
                uom = sv.get("unit_of_measure") or {}
                unit = uom.get("unit") or ("Percent" if measurand == "SoC" else
                                           "W" if measurand.startswith("Power") else "Wh")
                scale = 10.0 ** int(uom.get("multiplier") or 0)
            else:
                unit = sv.get("unit") or ("Percent" if measurand == "SoC" else
                                          "W" if measurand.startswith("Power") else "Wh")
                scale = 1.0
            try:
                value = float(sv["value"]) * scale
            except (KeyError, TypeError, ValueError):
                raise PropertyConstraintViolationError(
                    details={"field": "sampledValue.value", "rule": "must be a number", "got": sv.get("value")}
                ) from None
            got[measurand] = value * _MULT.get(unit, 1.0)
        power = None
        if "Power.Active.Import" in got or "Power.Active.Export" in got:
            power = got.get("Power.Active.Import", 0.0) - got.get("Power.Active.Export", 0.0)
        out.append(Sample(_ts(mv.get("timestamp")), power, got.get("Energy.Active.Import.Register"),
                          got.get("Energy.Active.Export.Register"), got.get("SoC")))
    return out


class _Session:
    """What one connected charge point shares between its handlers and the CSMS."""

    csms: CentralSystem
    booted: bool = False
    decision: BootDecision | None = None
    version: str = ""

    async def route_message(self, raw_msg):
        try:
            msg = unpack(raw_msg)
        except OCPPError as exc:
            await self._frame_error(raw_msg, exc)
            return
        if (msg.message_type_id == MessageType.Call and not self.booted
                and msg.action != "BootNotification"):
            err = SecurityError(description="BootNotification must be accepted first",
                                details={"action": msg.action})
            log.warning("ocpp %s: %s before an accepted boot -> SecurityError", self.id, msg.action)
            await self._send(msg.create_call_error(err).to_json())
            return
        await super().route_message(raw_msg)

    async def _frame_error(self, raw, exc: OCPPError) -> None:
        uid = _frame_id(raw)
        if self.version == "2.0.1":
            code = "MessageTypeNotSupported" if "MessageTypeId" in str(exc.details) else "RpcFrameworkError"
        else:
            code = "FormationViolation" if "JSON" in str(exc.details) else "ProtocolError"
        log.warning("ocpp %s: malformed frame %r -> %s: %s", self.id, str(raw)[:200], code, exc.details)
        await self._send(json.dumps([MessageType.CallError, uid, code, exc.description or "malformed message",
                                     {"cause": str(exc.details.get("cause", "")) if exc.details else ""}]))

    async def _send(self, message):
        if self.version == "1.6" and message.startswith("[4,"):
            doc = json.loads(message)
            doc[2] = _V16_SPELLING.get(doc[2], doc[2])
            message = json.dumps(doc, separators=(",", ":"))
        if message.startswith("[4,"):
            self.csms.stats["callerrors"] += 1
            log.warning("ocpp %s: CALLERROR sent %s", self.id, message[:300])
        await self._connection.send(message)

    # -- shared steps
    async def _boot(self, vendor: str, model: str, serial: str | None, firmware: str | None) -> BootDecision:
        d = await asyncio.to_thread(self.csms.service.boot, self.id, self.version, vendor or "", model or "",
                                    serial or "", firmware or "")
        self.decision = d
        self.booted = d.accepted
        if not d.accepted:
            log.warning("ocpp %s: boot rejected: %s", self.id, d.reason)
        return d

    @after("BootNotification")
    async def after_boot(self, **_kw):
        if self.booted:
            await self.csms.send_default_profile(self)

    @on("Heartbeat")
    def on_heartbeat(self):
        self.csms.service.seen(self.id)
        return self._call_result.Heartbeat(current_time=_now_iso())

    async def _authorize(self, token: str | None) -> str:
        return await asyncio.to_thread(self.csms.service.authorize, token)

    def _known_tx(self, tx: str) -> None:
        if not self.csms.service.has_transaction(self.id, tx):
            raise PropertyConstraintViolationError(
                description=f"transactionId {tx} is not an open transaction of {self.id}",
                details={"field": "transactionId", "rule": "must name a started transaction", "got": tx})

    async def send_profile(self, plan: ProfilePlan) -> str:
        raise NotImplementedError


class CSMS16(_Session, CP16):
    """Handlers of an OCPP 1.6J charge point."""

    version = "1.6"

    @on("BootNotification")
    async def on_boot(self, charge_point_vendor, charge_point_model, **kw):
        d = await self._boot(charge_point_vendor, charge_point_model, kw.get("charge_point_serial_number"),
                             kw.get("firmware_version"))
        return self._call_result.BootNotification(current_time=_now_iso(), interval=d.interval_s,
                                                  status="Accepted" if d.accepted else "Rejected")

    @on("StatusNotification")
    async def on_status(self, connector_id, error_code, status, **_kw):
        await asyncio.to_thread(self.csms.service.status, self.id, 0, connector_id, status)
        return self._call_result.StatusNotification()

    @on("Authorize")
    async def on_authorize(self, id_tag):
        return self._call_result.Authorize(id_tag_info={"status": await self._authorize(id_tag)})

    @on("StartTransaction")
    async def on_start(self, connector_id, id_tag, meter_start, timestamp, **_kw):
        status = await self._authorize(id_tag)
        tx = self.csms.next_transaction_id()
        await asyncio.to_thread(self.csms.service.start_transaction, self.id, connector_id, str(tx), _ts(timestamp),
                                "1.6", id_tag, float(meter_start))
        self.csms.tx_evse[(self.id, str(tx))] = connector_id
        if status != "Accepted":
            log.warning("ocpp %s: StartTransaction with idTag %r: %s", self.id, id_tag, status)
        return self._call_result.StartTransaction(transaction_id=tx, id_tag_info={"status": status})

    @on("StopTransaction")
    async def on_stop(self, meter_stop, timestamp, transaction_id, **kw):
        await asyncio.to_thread(self._known_tx, str(transaction_id))
        await asyncio.to_thread(self.csms.service.stop_transaction, self.id, str(transaction_id), _ts(timestamp),
                                float(meter_stop), kw.get("reason"))
        return self._call_result.StopTransaction()

    @on("MeterValues")
    async def on_meter_values(self, connector_id, meter_value, transaction_id=None, **_kw):
        samples = parse_samples(meter_value, v201=False)
        tx = None if transaction_id is None else str(transaction_id)
        if tx is not None:
            await self.csms.check_tx(self, tx)
        self.csms.service.meter_values(self.id, connector_id, tx, samples)
        await self.csms.durable()
        return self._call_result.MeterValues()

    async def send_profile(self, plan: ProfilePlan) -> str:
        profile = {"charging_profile_id": plan.profile_id, "stack_level": plan.stack_level,
                   "charging_profile_purpose": "TxDefaultProfile" if plan.purpose == "default" else "TxProfile",
                   "charging_profile_kind": "Relative" if plan.purpose == "default" else "Absolute",
                   "charging_schedule": {
                       "charging_rate_unit": "W",
                       "charging_schedule_period": [{"start_period": s, "limit": round(max(kw, 0.0) * 1000, 1)}
                                                    for s, kw in plan.periods]}}
        if plan.purpose != "default":
            profile["charging_schedule"]["start_schedule"] = plan.start.isoformat()
            if plan.duration_s:
                profile["charging_schedule"]["duration"] = plan.duration_s
            if plan.transaction_id is not None:
                profile["transaction_id"] = int(plan.transaction_id)
        res = await self.call(call16.SetChargingProfile(connector_id=plan.evse_id, cs_charging_profiles=profile))
        return "rejected" if res is None or res.status != "Accepted" else "accepted"


class CSMS201(_Session, CP201):
    """Handlers of an OCPP 2.0.1 charging station."""

    version = "2.0.1"

    @on("BootNotification")
    async def on_boot(self, charging_station, reason, **_kw):
        d = await self._boot(charging_station.get("vendor_name", ""), charging_station.get("model", ""),
                             charging_station.get("serial_number"), charging_station.get("firmware_version"))
        return self._call_result.BootNotification(current_time=_now_iso(), interval=d.interval_s,
                                                  status="Accepted" if d.accepted else "Rejected")

    @on("StatusNotification")
    async def on_status(self, timestamp, connector_status, evse_id, connector_id, **_kw):
        await asyncio.to_thread(self.csms.service.status, self.id, evse_id, connector_id, connector_status)
        return self._call_result.StatusNotification()

    @on("Authorize")
    async def on_authorize(self, id_token, **_kw):
        return self._call_result.Authorize(id_token_info={"status": await self._authorize(id_token.get("id_token"))})

    @on("NotifyEVChargingNeeds")
    async def on_charging_needs(self, evse_id, charging_needs, **_kw):
        tx = self.csms.open_tx_of(self.id, evse_id)
        if tx is None:
            log.warning("ocpp %s: NotifyEVChargingNeeds for EVSE %s without a transaction", self.id, evse_id)
            return self._call_result.NotifyEVChargingNeeds(status="Rejected")
        ac = charging_needs.get("ac_charging_parameters") or {}
        dc = charging_needs.get("dc_charging_parameters") or {}
        energy_wh = ac.get("energy_amount", dc.get("energy_amount"))
        capacity_wh = dc.get("ev_energy_capacity")
        soc = dc.get("state_of_charge")
        dep = charging_needs.get("departure_time")
        ok = await asyncio.to_thread(self.csms.service.charging_needs, self.id, tx, _ts(dep) if dep else None,
                                     None if energy_wh is None else energy_wh / 1000.0,
                                     None if capacity_wh is None else capacity_wh / 1000.0,
                                     None if soc is None else soc / 100.0)
        return self._call_result.NotifyEVChargingNeeds(status="Accepted" if ok else "Rejected")

    @on("TransactionEvent")
    async def on_transaction_event(self, event_type, timestamp, trigger_reason, seq_no, transaction_info,
                                   meter_value=None, evse=None, id_token=None, **_kw):
        tx = str(transaction_info["transaction_id"])
        ts = _ts(timestamp)
        samples = parse_samples(meter_value or [], v201=True)
        evse_id = int((evse or {}).get("id", self.csms.tx_evse.get((self.id, tx), 1)))
        info = {"status": await self._authorize(id_token.get("id_token"))} if id_token else None
        if event_type == "Started":
            start_wh = next((s.import_kwh * 1000 for s in samples if s.import_kwh is not None), None)
            await asyncio.to_thread(self.csms.service.start_transaction, self.id, evse_id, tx, ts, "2.0.1",
                                    (id_token or {}).get("id_token"), start_wh)
            self.csms.tx_evse[(self.id, tx)] = evse_id
            self.csms.service.meter_values(self.id, evse_id, tx, samples)
            await self.csms.durable()
            return self._call_result.TransactionEvent(id_token_info=info)
        await self.csms.check_tx(self, tx)
        self.csms.service.meter_values(self.id, evse_id, tx, samples)
        if samples:
            await self.csms.durable()
        if event_type == "Ended":
            await asyncio.to_thread(self.csms.service.stop_transaction, self.id, tx, ts, None,
                                    transaction_info.get("stopped_reason"))
            self.csms.tx_evse.pop((self.id, tx), None)
        return self._call_result.TransactionEvent(id_token_info=info)

    @on("MeterValues")
    async def on_meter_values(self, evse_id, meter_value, **_kw):
        tx = self.csms.open_tx_of(self.id, evse_id)
        self.csms.service.meter_values(self.id, evse_id, tx, parse_samples(meter_value, v201=True))
        await self.csms.durable()
        return self._call_result.MeterValues()

    async def send_profile(self, plan: ProfilePlan) -> str:
        v2g = self.decision is not None and self.decision.max_discharge_kw > 0
        floor = -self.decision.max_discharge_kw if v2g else 0.0
        schedule = {"id": plan.profile_id, "charging_rate_unit": "W",
                    "charging_schedule_period": [{"start_period": s, "limit": round(max(kw, floor) * 1000, 1)}
                                                 for s, kw in plan.periods]}
        profile = {"id": plan.profile_id, "stack_level": plan.stack_level,
                   "charging_profile_purpose": "TxDefaultProfile" if plan.purpose == "default" else "TxProfile",
                   "charging_profile_kind": "Relative" if plan.purpose == "default" else "Absolute",
                   "charging_schedule": [schedule]}
        if plan.purpose != "default":
            schedule["start_schedule"] = plan.start.isoformat()
            if plan.duration_s:
                schedule["duration"] = plan.duration_s
            if plan.transaction_id is not None:
                profile["transaction_id"] = str(plan.transaction_id)
        res = await self.call(call201.SetChargingProfile(evse_id=plan.evse_id, charging_profile=profile))
        return "rejected" if res is None or res.status != "Accepted" else "accepted"


@dataclass
class CentralSystem:
    """The CSMS: accepts connections, keeps the connected charge points, flushes meter values each second."""

    service: ChargingService
    flush_s: float = 1.0
    response_timeout_s: float = 30.0
    batch_s: float = 0.02                 # a waiting handler's commit starts after this (gathers a batch)
    security_profile: int = 0             # 0: none; 1: basic auth with each charge point's password
    connected: dict[str, _Session] = field(default_factory=dict)
    tx_evse: dict[tuple[str, str], int] = field(default_factory=dict)
    stats: dict = field(default_factory=lambda: {"connections": 0, "callerrors": 0, "flush_max_s": 0.0,
                                                 "flushes": 0, "points": 0, "ingest_lag_max_s": 0.0})
    _tx_counter: itertools.count = field(default_factory=lambda: itertools.count(int(time.time()) % 1_000_000_000))
    _server: object = None
    _flusher: asyncio.Task | None = None
    _waiters: list = field(default_factory=list)
    _kick: asyncio.Event | None = None

    async def durable(self) -> None:
        """Wait until everything buffered so far is committed (the next group commit); raises its error."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if self._kick is not None:
            self._kick.set()
            await fut
        else:                                   # not serving: commit now
            await self.flush()
            await fut

    def next_transaction_id(self) -> int:
        return next(self._tx_counter)

    def open_tx_of(self, cp_id: str, evse_id: int) -> str | None:
        for (cp, tx), evse in self.tx_evse.items():
            if cp == cp_id and evse == evse_id:
                return tx
        return None

    async def check_tx(self, cp: _Session, tx: str) -> None:
        if (cp.id, tx) in self.tx_evse:
            return
        await asyncio.to_thread(cp._known_tx, tx)

    # -- connections
    async def _handler(self, ws: ServerConnection) -> None:
        cp_id = ws.request.path.strip("/").split("/")[-1]
        proto = ws.subprotocol
        if not cp_id or proto not in SUBPROTOCOLS:
            log.warning("ocpp: refused connection %r with subprotocol %r", ws.request.path, proto)
            await ws.close(1002, "an OCPP subprotocol (ocpp1.6 or ocpp2.0.1) and a charge point id are required")
            return
        cls = CSMS201 if proto == "ocpp2.0.1" else CSMS16
        cp = cls(cp_id, ws, response_timeout=self.response_timeout_s, logger=logging.getLogger("openvpp.ocpp.wire"))
        cp.csms = self
        old = self.connected.get(cp_id)
        if old is not None:
            with contextlib.suppress(Exception):
                await old._connection.close(1000, "replaced by a new connection")
        self.connected[cp_id] = cp
        self.stats["connections"] += 1
        try:
            await cp.start()
        except Exception as exc:   # websockets.ConnectionClosed and friends
            log.info("ocpp %s: connection closed (%s)", cp_id, type(exc).__name__)
        finally:
            if self.connected.get(cp_id) is cp:
                del self.connected[cp_id]
                if cp.booted:
                    n = await asyncio.to_thread(self.service.disconnected, cp_id)
                    if n:
                        log.warning("ocpp %s: disconnected mid-profile, %d profile(s) fall back to the default", cp_id, n)

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.flush_s)
            if self._kick.is_set():
                await asyncio.sleep(self.batch_s)
            self._kick.clear()
            with contextlib.suppress(Exception):      # logged by flush; the waiters got the error
                await self.flush()

    async def flush(self) -> dict:
        t0 = time.perf_counter()
        now = time.time()
        waiters, self._waiters = self._waiters, []
        with self.service._lock:
            oldest = min((p[1] for p in self.service._points), default=None)
        try:
            out = await asyncio.to_thread(self.service.flush)
        except Exception as exc:
            log.error("ocpp: meter values not committed: %s", exc)
            self.stats["flush_errors"] = self.stats.get("flush_errors", 0) + 1
            for w in waiters:
                if not w.done():
                    w.set_exception(exc)
            raise
        for w in waiters:
            if not w.done():
                w.set_result(None)
        dt = time.perf_counter() - t0
        self.stats["flushes"] += 1
        self.stats["points"] += out.get("points", 0)
        self.stats["flush_max_s"] = max(self.stats["flush_max_s"], dt)
        if oldest is not None:
            self.stats["ingest_lag_max_s"] = max(self.stats["ingest_lag_max_s"], time.time() - oldest / 1000.0)
        self.stats["last_flush"] = {"points": out.get("points", 0), "seconds": round(dt, 4),
                                    "waited_s": round(now - (oldest / 1000.0), 3) if oldest else 0.0}
        return out

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (``port=0`` picks a free one)."""
        if self.security_profile not in (0, 1):
            raise ValueError("security_profile must be 0 (none) or 1 (basic auth); 2 and 3 need TLS")
        self._kick = asyncio.Event()
        self._server = await serve(self._handler, host, port, subprotocols=list(SUBPROTOCOLS), ping_interval=60,
                                   ping_timeout=60, max_queue=64,
                                   process_request=self._basic_auth if self.security_profile == 1 else None)
        self._flusher = asyncio.create_task(self._flush_loop())
        return self._server.sockets[0].getsockname()[1]

    async def _basic_auth(self, connection: ServerConnection, request: Request) -> Response | None:
        """Security profile 1: ``Authorization: Basic base64(<charge point id>:<password>)`` on the upgrade."""
        cp_id = request.path.strip("/").split("/")[-1]
        ok = False
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            ok = user == cp_id and bool(password) and await asyncio.to_thread(
                self.service.check_password, cp_id, password)
        if ok:
            return None
        log.warning("ocpp %s: basic auth failed on the WebSocket upgrade", cp_id)
        self.stats["auth_failures"] = self.stats.get("auth_failures", 0) + 1
        body = b"charge point id and password required (OCPP security profile 1)\n"
        return Response(HTTPStatus.UNAUTHORIZED.value, "Unauthorized",
                        Headers([("WWW-Authenticate", 'Basic realm="openvpp-ocpp"'),
                                 ("Content-Length", str(len(body))), ("Content-Type", "text/plain")]), body)

    async def stop(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.flush()

    # -- profiles
    async def send_default_profile(self, cp: _Session) -> str:
        plan = self.service.default_profile(cp.decision, evse_id=0)
        return await self.send_profile(cp.id, plan)

    async def send_profile(self, cp_id: str, plan: ProfilePlan) -> str:
        """Send a profile to a connected charge point and record its fate: accepted, rejected or
        'offline' (not connected: it keeps its default profile)."""
        cp = self.connected.get(cp_id)
        row = await asyncio.to_thread(self.service.record_profile, cp_id, plan, "sent")
        if cp is None:
            await asyncio.to_thread(self.service.profile_result, row, "fallback", "charge point not connected")
            return "offline"
        try:
            state = await cp.send_profile(plan)
        except (TimeoutError, OCPPError, Exception) as exc:   # the peer vanished or answered an error
            log.warning("ocpp %s: SetChargingProfile failed: %s", cp_id, exc)
            state = "rejected"
        await asyncio.to_thread(self.service.profile_result, row, state)
        return state


def run(service: ChargingService, host: str, port: int, on_ready=None) -> None:
    """Serve until interrupted (``openvpp ocpp serve``)."""

    async def main() -> None:
        csms = CentralSystem(service)
        bound = await csms.start(host, port)
        if on_ready is not None:
            on_ready(bound, csms)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):   # flush buffered meter values before leaving
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await csms.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
