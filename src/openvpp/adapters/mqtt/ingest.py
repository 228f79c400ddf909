"""The platform's MQTT ingest: gateway batches → ``TelemetryService.ingest_messages``.

Delivery guarantee: the session is persistent (MQTT 5 clean start off with a session expiry,
or MQTT 3.1.1 ``clean_session=False``) and subscribed with QoS 1, and a message is acknowledged
(PUBACK) only **after** the points it carries are committed. If the broker, the database or
this process goes away, unacknowledged messages are delivered again, and the store's primary
key makes the replay harmless: no accepted point is lost or doubled.

Connection life cycle (one place, as Home Assistant's coordinators do): connect, subscribe,
pump; on a broker error wait with exponential back-off (0.2 s doubling to ``max_backoff_s``) and
reconnect; on a database error keep the batch, back off and retry it. Each interruption is
logged and recorded in ``telemetry_gaps`` when the path resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy.exc import DBAPIError

from openvpp.adapters.mqtt import SOCKET_OPTIONS, parse_url
from openvpp.services.telemetry import IngestResult, TelemetryService

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
        created ahead / the retention applied.
    share_group : run several workers (each its own ``client_id``) as one group that the broker
        balances messages over; adding a worker adds capacity. Mosquitto keeps dealing a share
        to a member that is down but has a persistent session, and delivers it when the member
        returns: nothing is lost, that share waits (retire a worker by reconnecting its id
        with a clean start).
    """

    def __init__(self, service: TelemetryService, url: str, client_id: str = "openvpp-ingest",
                 protocol: int = 5, max_batch_bytes: int = 8 << 20, max_wait_s: float = 0.05,
                 max_backoff_s: float = 5.0, session_expiry_s: int = 7 * 86400, refresh_every_s: float = 5.0,
                 maintain_every_s: float = 3600.0, share_group: str | None = None):
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
        self._last_maintain = time.monotonic()
        self.stats = IngestStats()
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self._last_refresh = time.monotonic()

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
        stop = stop or asyncio.Event()
        backoff = 0.2
        down_since: datetime | None = None
        reason = ""
        while not stop.is_set():
            try:
                async with self._client() as client:
                    self.stats.connects += 1
                    if down_since is not None:
                        self._gap("broker", down_since, reason)
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
                    down_since, reason = datetime.now(UTC), str(exc)
                    log.warning("mqtt ingest: broker connection lost (%s); reconnecting with back-off", exc)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
        self.connected.clear()
        return self.stats

    def _gap(self, kind: str, since: datetime, detail: str) -> None:
        until = datetime.now(UTC)
        gap = {"kind": kind, "started_at": since.isoformat(), "ended_at": until.isoformat(),
               "seconds": (until - since).total_seconds(), "detail": detail[:200]}
        self.stats.gaps.append(gap)
        try:
            self.service.record_gap(f"mqtt:{self.client_id}", kind, since, until, detail)
        except DBAPIError as exc:   # the gap is in the log and the stats anyway
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
                prepared = await asyncio.to_thread(self.service.prepare_messages, msgs, "mqtt")
                if storing is not None:
                    await storing          # in order: batch N is committed and acknowledged first
                storing = asyncio.create_task(self._commit_and_ack(client, batch, prepared, stop))
                if time.monotonic() - self._last_refresh > self.refresh_every_s:
                    self._last_refresh = time.monotonic()
                    await storing
                    await self._refresh_rollups()
        finally:
            stopper.cancel()
            if storing is not None:
                await storing

    async def _commit_and_ack(self, client: aiomqtt.Client, batch: list, prepared, stop: asyncio.Event) -> None:
        backoff = 0.2
        down_since: datetime | None = None
        reason = ""
        while True:
            try:
                result = await asyncio.to_thread(self.service.commit, prepared)
                break
            except DBAPIError as exc:
                if down_since is None:
                    down_since, reason = datetime.now(UTC), str(exc).splitlines()[0]
                    log.warning("mqtt ingest: database unavailable (%s); keeping %d messages and retrying",
                                reason, len(batch))
                if stop.is_set():
                    return   # not acknowledged: the broker delivers them again to the next session
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
        if down_since is not None:
            self._gap("database", down_since, reason)
        self.stats.add(len(batch), result)
        for m in batch:
            if m.qos > 0:
                client._client.ack(m.mid, m.qos)

    async def _refresh_rollups(self) -> None:
        """Roll up the minutes that closed; once an hour, partitions ahead and retention too."""
        try:
            await asyncio.to_thread(self.service.refresh_rollups)
            if time.monotonic() - self._last_maintain > self.maintain_every_s:
                self._last_maintain = time.monotonic()
                await asyncio.to_thread(self.service.maintain)
        except DBAPIError as exc:
            log.warning("mqtt ingest: rollup refresh / upkeep failed (%s); dirty buckets stay marked", exc)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
