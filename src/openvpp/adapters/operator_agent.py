"""An operator's technical support system at work: follow the city's feed, acknowledge each
instruction, split it to devices, send the device instructions over a command channel (MQTT in
production), record the devices' acknowledgements and re-dispatch what a device fails to take.

One ``step()`` is one pass; ``run()`` repeats it. The business rules live in ``services.events``
and ``services.dispatch``; this adapter only moves messages between them and the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, select

from openvpp.core.clock import Clock, now_utc, wall
from openvpp.services import dispatch, events
from openvpp.store.audit import Actor
from openvpp.store.schema_events import events as events_table

log = logging.getLogger("openvpp.operator_agent")

#: (operator_id, device_id, instruction) → the device's acknowledgement; raises TimeoutError if none
SendAsync = Callable[[str, str, dict], Awaitable[dict]]


@dataclass
class OperatorAgent:
    engine: Engine
    actor: Actor
    send: SendAsync
    status: dispatch.Status
    device_ack_timeout_s: float = 5.0
    last_seq: int = 0
    log_lines: list[str] = field(default_factory=list)
    #: device instructions awaiting their acknowledgement at once (a window over the transport)
    max_in_flight: int = 1000
    #: the window when several agents share one transport connection (its limit is the connection's)
    window: asyncio.Semaphore | None = None
    #: acknowledgements are recorded in batches: at this many, or this long after the last write
    ack_batch: int = 5000
    ack_flush_s: float = 0.1
    #: (phase, started, ended) in ``time.monotonic`` seconds, for benchmarks and logs
    marks: list[tuple[str, float, float]] = field(default_factory=list)
    #: the platform's clock (core.clock): acknowledgement and dispatch times are read from it
    clock: Clock = wall

    def _now(self) -> datetime:
        return now_utc(self.clock)

    def _note(self, line: str) -> None:
        self.log_lines.append(line)
        log.info("%s: %s", self.actor.operator_id, line)

    @contextlib.contextmanager
    def _mark(self, phase: str):
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.marks.append((phase, t0, time.monotonic()))

    def _take_feed(self, now: datetime) -> set[str]:
        """Acknowledge every new instruction of the city; return the events they belong to."""
        touched: set[str] = set()
        with self.engine.begin() as conn:
            page = events.feed(conn, self.actor, self.last_seq)
            ids = []
            for item in page["items"]:
                if item["topic"] == "instructions":
                    touched.add(item["payload"]["event_id"])
                    ids += [i["instruction_id"] for i in item["payload"]["instructions"]]
            if ids:
                states = events.acknowledge(conn, self.actor, ids, "accepted", now=now)
                self._note(f"acknowledged {sum(s['state'] == 'acked' for s in states)} of {len(ids)} instructions")
            self.last_seq = page["last"]
        return touched

    async def _deliver(self, rows: list[dict]) -> None:
        """Send every row through the transport, at most ``max_in_flight`` awaiting their ack at once,
        and record the acknowledgements in batches (in a worker thread) while the sending goes on."""
        todo = iter(rows)
        received: list[tuple[dict, datetime, datetime]] = []
        full = asyncio.Event()
        sending = True
        failures: list[str] = []

        window = self.window or contextlib.nullcontext()

        async def worker() -> None:
            for r in todo:
                async with window:
                    sent_at = self._now()
                    try:
                        ack = await self.send(r["operator_id"], r["resource_id"], r["payload"])
                    except TimeoutError:
                        continue        # no ack: re-dispatch finds it overdue
                    except Exception as exc:  # noqa: BLE001 - a transport error on one device: same as no ack
                        failures.append(f"{r['resource_id']}: {exc!r}")
                        continue
                received.append((ack, self._now(), sent_at))
                if len(received) >= self.ack_batch:
                    full.set()

        async def recorder() -> None:
            nonlocal received
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(full.wait(), self.ack_flush_s)
                full.clear()
                if received:
                    batch, received = received, []
                    await asyncio.to_thread(self._record_acks, batch)
                elif not sending:
                    return

        rec = asyncio.create_task(recorder())
        try:
            await asyncio.gather(*(worker() for _ in range(min(self.max_in_flight, len(rows)))))
        finally:
            sending = False
            full.set()
            await rec
        if failures:
            self._note(f"{len(failures)} device instructions failed in transport, e.g. {failures[0]}")

    def _record_acks(self, batch: list[tuple[dict, datetime, datetime]]) -> None:
        with self.engine.begin() as conn:
            res = dispatch.device_acks(conn, [b[0] for b in batch], self.actor.operator_id, [b[1] for b in batch],
                                       sent_at=[b[2] for b in batch])
        bad = [r for r in res if "error" in r]
        if bad:
            self._note(f"refused {len(bad)} device acknowledgements, e.g. {bad[0]['instruction_id']}: "
                       f"{bad[0]['error']} ({bad[0]['detail']})")

    def _dispatch(self, event_id: str, now: datetime) -> list[dict]:
        with self.engine.begin() as conn:
            return dispatch.dispatch(conn, self.actor, event_id, self.status, lambda *a: None, now=now)

    def _redispatch(self, event_id: str) -> list[dict]:
        with self.engine.begin() as conn:
            return dispatch.redispatch(conn, self.actor, event_id, self.status, lambda *a: None,
                                       now=self._now())

    async def step(self, now: datetime | None = None) -> dict:
        """One pass: the feed, then per event in execution the dispatch, the delivery and the re-dispatch.
        The database work runs in worker threads, so other agents and the transport keep going."""
        now = now or self._now()
        with self._mark("operator_ack"):
            touched = await asyncio.to_thread(self._take_feed, now)
        sent: list[dict] = []
        redone: list[dict] = []
        active = touched | await asyncio.to_thread(self._executing_events)
        for event_id in sorted(active):
            with self._mark("dispatch"):
                rows = await asyncio.to_thread(self._dispatch, event_id, now)
            if rows:
                self._note(f"{event_id}: {len(rows)} device instructions")
                with self._mark("deliver"):
                    await self._deliver(rows)
                sent += rows
            with self._mark("redispatch"):
                again = await asyncio.to_thread(self._redispatch, event_id)
            if again:
                self._note(f"{event_id}: re-dispatched {len(again)} device instructions")
                with self._mark("redeliver"):
                    await self._deliver(again)
                redone += again
        return {"sent": len(sent), "redispatched": len(redone)}

    def _executing_events(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(events_table.c.event_id).where(
                events_table.c.state == "executing"))}

    async def run(self, stop: asyncio.Event, period_s: float = 2.0) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - an agent keeps running; the failure is logged
                log.exception("operator agent step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period_s)
