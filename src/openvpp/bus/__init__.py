"""The internal message bus: in-process (``memory://``, the embedded default) or NATS JetStream (``nats://``).

One interface for both::

    bus = await connect(settings.bus_url)
    sub = await bus.subscribe("tele.accepted")          # NATS-style subjects, '*' and '>' wildcards
    await bus.publish("tele.accepted", b"...")
    bus.publish_threadsafe("tele.accepted", b"...")     # from a worker thread (the ingest)
    async for msg in sub: ...                           # msg.subject, msg.data

A subscription keeps at most ``maxsize`` undelivered messages and drops the oldest beyond that:
subscribers are live views (dashboards, live state), and a slow one must never stall the ingest.
Durable work queues are the broker's job (MQTT persistent sessions, JetStream streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

log = logging.getLogger("openvpp.bus")


@dataclass(frozen=True)
class Message:
    subject: str
    data: bytes


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` is one or more tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


class Subscription:
    """An async iterator of messages with a bounded, drop-oldest queue."""

    def __init__(self, pattern: str, maxsize: int = 1000):
        self.pattern = pattern
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize)
        self.dropped = 0
        self._closers: list = []

    def _put(self, msg: Message | None) -> None:   # on the subscriber's loop
        while True:
            try:
                self.queue.put_nowait(msg)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                    self.dropped += 1

    def deliver(self, msg: Message) -> None:
        """Hand ``msg`` over from any thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._put(msg)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._put, msg)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        msg = await self.queue.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    async def close(self) -> None:
        for closer in self._closers:
            await closer()
        self._closers.clear()
        self._put(None)


class Bus:
    """Base class: see the module docstring."""

    url = ""

    async def start(self) -> Bus:
        return self

    async def publish(self, subject: str, data: bytes) -> None:
        raise NotImplementedError

    def publish_threadsafe(self, subject: str, data: bytes) -> None:
        raise NotImplementedError

    async def subscribe(self, pattern: str, maxsize: int = 1000) -> Subscription:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class MemoryBus(Bus):
    """In-process bus: delivers to the subscriptions of this process only.

    ``memory://`` is one bus per process (:meth:`shared`), so the API's live view and an
    embedded ingest running in another thread see the same messages.
    """

    url = "memory://"
    _shared: MemoryBus | None = None

    def __init__(self) -> None:
        self._subs: list[Subscription] = []

    @classmethod
    def shared(cls) -> MemoryBus:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    async def publish(self, subject: str, data: bytes) -> None:
        self.publish_threadsafe(subject, data)

    def publish_threadsafe(self, subject: str, data: bytes) -> None:
        msg = Message(subject, data)
        for sub in list(self._subs):
            if sub.loop.is_closed():   # its event loop ended without closing it
                with contextlib.suppress(ValueError):
                    self._subs.remove(sub)
            elif matches(sub.pattern, subject):
                sub.deliver(msg)

    async def subscribe(self, pattern: str, maxsize: int = 1000) -> Subscription:
        sub = Subscription(pattern, maxsize)
        self._subs.append(sub)

        async def _remove() -> None:
            with contextlib.suppress(ValueError):
                self._subs.remove(sub)

        sub._closers.append(_remove)
        return sub

    async def close(self) -> None:
        if self is MemoryBus._shared:
            return   # shared by the process: its subscriptions close themselves
        for sub in list(self._subs):
            await sub.close()


class NatsBus(Bus):
    """NATS JetStream: messages go to stream ``stream`` (subjects ``{prefix}.>``), kept ``max_age_s``.

    Subscriptions are ephemeral ordered consumers that start at new messages: each process sees
    what is published after it subscribed (live views), while the stream keeps a short history
    for workers that bind durable consumers.
    """

    def __init__(self, url: str, prefix: str = "openvpp", stream: str = "OPENVPP", max_age_s: float = 3600.0):
        self.url, self.prefix, self.stream, self.max_age_s = url, prefix, stream, max_age_s
        self.nc = None
        self.js = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> NatsBus:
        import nats
        from nats.js.errors import BadRequestError

        self.loop = asyncio.get_running_loop()
        self.nc = await nats.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self.js = self.nc.jetstream()
        try:
            await self.js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"], max_age=self.max_age_s)
        except BadRequestError:   # exists with another configuration: keep it
            log.info("bus: JetStream stream %s exists", self.stream)
        return self

    def _subject(self, subject: str) -> str:
        return f"{self.prefix}.{subject}"

    async def publish(self, subject: str, data: bytes) -> None:
        await self.js.publish(self._subject(subject), data)

    def publish_threadsafe(self, subject: str, data: bytes) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.publish(subject, data), self.loop)
        fut.add_done_callback(lambda f: f.exception() and log.warning("bus: publish failed: %s", f.exception()))

    async def subscribe(self, pattern: str, maxsize: int = 1000) -> Subscription:
        from nats.js.api import DeliverPolicy

        sub = Subscription(pattern, maxsize)
        cut = len(self.prefix) + 1

        async def on_msg(m) -> None:
            sub.deliver(Message(m.subject[cut:], m.data))

        js_sub = await self.js.subscribe(self._subject(pattern), cb=on_msg, ordered_consumer=True,
                                         deliver_policy=DeliverPolicy.NEW)
        sub._closers.append(js_sub.unsubscribe)
        return sub

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.drain()
            self.nc = None


def make_bus(url: str | None) -> Bus:
    """``memory://`` (or empty) → :class:`MemoryBus`; ``nats://host:4222[/prefix]`` → :class:`NatsBus`."""
    if not url or url.startswith("memory://"):
        return MemoryBus.shared()
    if url.startswith(("nats://", "tls://")):
        base, _, prefix = url.partition("://")[2].partition("/")
        scheme = url.split("://", 1)[0]
        return NatsBus(f"{scheme}://{base}", prefix=prefix or "openvpp",
                       stream=(prefix or "openvpp").upper().replace(".", "_").replace("-", "_"))
    raise ValueError(f"unknown bus URL {url!r}: use memory:// or nats://host:4222")


async def connect(url: str | None) -> Bus:
    return await make_bus(url).start()
