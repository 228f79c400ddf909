"""The platform's MQTT ingest: gateway batches → ``TelemetryService.ingest_messages``.

Delivery guarantee: the session is persistent (MQTT 5 clean start off with a session expiry,
or MQTT 3.1.1 ``clean_session=False``) and subscribed with QoS 1, and a message is acknowledged
(PUBACK) only **after** the points it carries are committed. If the broker, the database or
this process goes away, unacknowledged messages are delivered again, and the store's primary
key makes the replay harmless: no accepted point is lost or doubled.

Connection life cycle (one place, as Home Assistant's coordinators do): connect, subscribe,
pump; on a broker error wait with exponential back-off (0.2 s doubling to ``max_backoff_s``) and
reconnect; while the database is unreachable keep the batch, back off and retry it (validation
too, when it needs the registry). Each interruption is logged and recorded in ``telemetry_gaps``
when the path resumes.

One bad message never stops the stream: a message that cannot be read is refused (counted,
logged, acknowledged); a batch that fails for any other reason than an unreachable database is
stored again message by message, and a message that still fails is refused alone. An unforeseen
error restarts the loop (unacknowledged messages come again); after ``max_restarts`` in a row
without a batch stored in between, :meth:`MqttIngest.run` gives up and raises, so a supervisor
sees it (``openvpp telemetry ingest`` exits non-zero).

Rollups are not in this loop: :func:`openvpp.services.telemetry.upkeep` runs beside it on a
timer (``refresh_every_s``), so they go on when no message arrives and never hold the ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import exc as sa_exc

from openvpp.adapters.mqtt import SOCKET_OPTIONS, parse_url
from openvpp.services.telemetry import IngestResult, TelemetryService, upkeep

log = logging.getLogger("openvpp.mqtt.ingest")


@dataclass
class IngestStats:
    messages: int = 0
    batches: int = 0
    points: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    refused_messages: int = 0
    connects: int = 0
    restarts: int = 0        # unforeseen errors that restarted the loop
    isolated: int = 0        # batches stored again message by message after a failure
    gaps: list[dict] = field(default_factory=list)

    def add(self, n_messages: int, r: IngestResult) -> None:
        self.messages += n_messages
        self.batches += 1
        self.points += r.received
        self.inserted += r.inserted
        self.duplicates += r.duplicates
        self.rejected += sum(r.rejected.values())
        self.refused_messages += r.refused_messages


class MqttIngest:
    """Subscribe to ``{root}/tele/+/+`` and store every batch. Run with ``await ingest.run(stop)``.

    Parameters
    ----------
    service : the telemetry service every path shares.
    url : ``mqtt://host:port[/topic/root]``.
    client_id : the persistent session's identity; one per ingest worker.
    protocol : 5 (default; Mosquitto) or 311 (the embedded amqtt broker).
    max_batch_bytes, max_wait_s : a database batch closes at this many payload bytes, or this long
        after its first message.
    refresh_every_s, maintain_every_s : how often closed minutes are rolled up, and partitions
        created ahead / the retention applied (a timer beside the ingest loop; 0 = not by this worker).
    max_restarts : unforeseen errors in a row (no batch stored between them) after which ``run`` raises.
    share_group : run several workers (each its own ``client_id``) as one group that the broker
        balances messages over; adding a worker adds capacity. Mosquitto keeps dealing a share
        to a member that is down but has a persistent session, and delivers it when the member
        returns: nothing is lost, that share waits (retire a worker by reconnecting its id
        with a clean start).
    """

    def __init__(self, service: TelemetryService, url: str, client_id: str = "openvpp-ingest",
                 protocol: int = 5, max_batch_bytes: int = 8 << 20, max_wait_s: float = 0.05,
                 max_backoff_s: float = 5.0, session_expiry_s: int = 7 * 86400, refresh_every_s: float = 5.0,
                 maintain_every_s: float = 3600.0, share_group: str | None = None, max_restarts: int = 10):
        self.service = service
        self.mqtt = parse_url(url)
        self.client_id = client_id
        self.protocol = protocol
        self.max_batch_bytes = max_batch_bytes
        self.max_wait_s = max_wait_s
        self.max_backoff_s = max_backoff_s
        self.session_expiry_s = session_expiry_s
        self.refresh_every_s = refresh_every_s
        self.maintain_every_s = maintain_every_s
        self.share_group = share_group
        self.max_restarts = max_restarts
        self.stats = IngestStats()
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()

    @property
    def topic(self) -> str:
        """``{root}/tele/+/+``; with a share group ``$share/{group}/...``: the broker splits the
        messages among the workers of the group (MQTT 5 shared subscription, also in Mosquitto 2 for 3.1.1)."""
        topic = f"{self.mqtt.root}/tele/+/+"
        return f"$share/{self.share_group}/{topic}" if self.share_group else topic

    def _client(self) -> aiomqtt.Client:
        kw: dict = {"identifier": self.client_id, "keepalive": 10, "timeout": 10,
                    "username": self.mqtt.username, "password": self.mqtt.password,
                    "socket_options": SOCKET_OPTIONS}
        if self.protocol == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            kw.update(protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props)
        else:
            kw.update(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
        client = aiomqtt.Client(self.mqtt.host, self.mqtt.port, **kw)
        # acknowledge after commit, not on receipt (paho's manual ack; set before any message arrives)
        client._client.manual_ack_set(True)
        return client

    async def run(self, stop: asyncio.Event | None = None) -> IngestStats:
        """Ingest until ``stop`` is set; the rollup timer runs beside. Raises only when it gives up
        (``max_restarts`` unforeseen errors in a row)."""
        stop = stop or asyncio.Event()
        timer = None
        if self.refresh_every_s > 0:
            timer = asyncio.create_task(upkeep(self.service, stop, self.refresh_every_s, self.maintain_every_s,
                                               who=f"mqtt:{self.client_id}"))
        try:
            await self._loop(stop)
        finally:
            self.connected.clear()
            if timer is not None:
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer
        return self.stats

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        down_since: datetime | None = None
        down_kind, reason = "broker", ""
        in_a_row = 0
        while not stop.is_set():
            stored_before = self.stats.batches
            try:
                async with self._client() as client:
                    self.stats.connects += 1
                    if down_since is not None:
                        self._gap(down_kind, down_since, reason)
                        down_since = None
                    backoff = 0.2
                    await client.subscribe(self.topic, qos=1)
                    self.connected.set()
                    self.subscribed.set()
                    log.info("mqtt ingest %s subscribed to %s on %s:%s", self.client_id, self.topic,
                             self.mqtt.host, self.mqtt.port)
                    await self._pump(client, stop)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                if down_since is None:
                    down_since, down_kind, reason = datetime.now(UTC), "broker", str(exc)
                    log.warning("mqtt ingest: broker connection lost (%s); reconnecting with back-off", exc)
            except Exception as exc:   # unforeseen: restart the loop; what was not acknowledged comes again
                self.connected.clear()
                self.stats.restarts += 1
                in_a_row = 1 if self.stats.batches > stored_before else in_a_row + 1
                log.exception("mqtt ingest %s: unexpected error, restarting the loop (%d in a row)", self.client_id,
                              in_a_row)
                if in_a_row > self.max_restarts:
                    log.error("mqtt ingest %s: giving up after %d restarts in a row", self.client_id, in_a_row)
                    raise
                if down_since is None:
                    down_since, down_kind, reason = datetime.now(UTC), "worker", f"{type(exc).__name__}: {exc}"
            await _sleep_or_stop(stop, backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    def _gap(self, kind: str, since: datetime, detail: str) -> None:
        until = datetime.now(UTC)
        gap = {"kind": kind, "started_at": since.isoformat(), "ended_at": until.isoformat(),
               "seconds": (until - since).total_seconds(), "detail": detail[:200]}
        self.stats.gaps.append(gap)
        try:
            self.service.record_gap(f"mqtt:{self.client_id}", kind, since, until, detail)
        except sa_exc.SQLAlchemyError as exc:   # the gap is in the log and the stats anyway
            log.warning("mqtt ingest: could not record the %s gap: %s", kind, exc)

    async def _pump(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Receive → decode/validate → commit → PUBACK, pipelined: while batch N is being written,
        batch N+1 is received and validated; acknowledgements go out in order, after each commit."""
        messages = client.messages
        it = aiter(messages)
        stopper = asyncio.ensure_future(stop.wait())
        storing: asyncio.Task | None = None
        try:
            while not stop.is_set():
                nxt = asyncio.ensure_future(anext(it))
                done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    return
                batch = [nxt.result()]
                size = len(batch[0].payload)
                deadline = time.monotonic() + self.max_wait_s
                while size < self.max_batch_bytes:
                    if len(messages) == 0:
                        left = deadline - time.monotonic()
                        if left <= 0 or (storing is not None and storing.done()):
                            break
                        await asyncio.sleep(min(left, 0.005))
                        continue
                    m = await anext(it)
                    batch.append(m)
                    size += len(m.payload)
                msgs = [(m.topic.value, bytes(m.payload)) for m in batch]
                try:
                    ok, prepared = await self._while_database_away(
                        partial(self.service.prepare_messages, msgs, "mqtt"), stop, len(batch))
                except Exception:   # not the database away: _store takes the messages one by one
                    log.exception("mqtt ingest: a batch of %d messages could not be validated", len(batch))
                    ok, prepared = True, None
                if storing is not None:
                    await storing          # in order: batch N is committed and acknowledged first
                    storing = None
                if not ok:
                    return                 # stopping: not acknowledged, the broker delivers it again
                storing = asyncio.create_task(self._store(client, batch, prepared, stop))
        finally:
            stopper.cancel()
            if storing is not None:
                await storing

    async def _while_database_away(self, fn: Callable, stop: asyncio.Event, n_messages: int) -> tuple[bool, object]:
        """Run ``fn`` in a thread; while the database is unreachable, retry it with back-off and record
        the gap when it answers. ``(False, None)`` when ``stop`` is set meanwhile. Other errors raise."""
        backoff = 0.2
        down_since: datetime | None = None
        reason = ""
        while True:
            try:
                out = await asyncio.to_thread(fn)
            except Exception as exc:
                if not database_away(exc):
                    raise
                if down_since is None:
                    down_since, reason = datetime.now(UTC), str(exc).splitlines()[0]
                    log.warning("mqtt ingest: database unavailable (%s); keeping %d messages and retrying",
                                reason, n_messages)
                if stop.is_set():
                    return False, None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if down_since is not None:
                await asyncio.to_thread(self._gap, "database", down_since, reason)
            return True, out

    async def _store(self, client: aiomqtt.Client, batch: list, prepared, stop: asyncio.Event) -> None:
        """Commit a validated batch and acknowledge its messages. If the batch fails for another reason
        than the database being away (or could not be validated: ``prepared`` None), its messages are
        stored one by one, and one that still fails is refused alone."""
        if prepared is not None:
            try:
                ok, result = await self._while_database_away(partial(self.service.commit, prepared), stop, len(batch))
            except Exception:
                log.exception("mqtt ingest: a batch of %d messages could not be stored", len(batch))
            else:
                if not ok:
                    return   # not acknowledged: the broker delivers them again to the next session
                self.stats.add(len(batch), result)
                self._ack(client, batch)
                return
        self.stats.isolated += 1
        log.warning("mqtt ingest: storing the %d messages of the batch one by one", len(batch))
        for m in batch:
            msgs = [(m.topic.value, bytes(m.payload))]
            try:
                ok, result = await self._while_database_away(
                    partial(self.service.ingest_messages, msgs, "mqtt"), stop, 1)
            except Exception as exc:
                log.error("mqtt ingest: refused message on %s: it cannot be stored (%s: %s)", m.topic.value[:200],
                          type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
                ok, result = await self._while_database_away(partial(self.service.refuse, "mqtt", 1), stop, 1)
            if not ok:
                return
            self.stats.add(1, result)
            self._ack(client, [m])

    @staticmethod
    def _ack(client: aiomqtt.Client, batch: list) -> None:
        for m in batch:
            if m.qos > 0:
                client._client.ack(m.mid, m.qos)


def database_away(exc: BaseException) -> bool:
    """The database cannot be reached (refused or lost connection, pool timeout, SQLite busy): worth
    retrying as it is. Any other error is about what was sent, and retrying it would never end."""
    return (isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
                             sa_exc.DisconnectionError))
            or bool(getattr(exc, "connection_invalidated", False)))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
