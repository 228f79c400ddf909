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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, select

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

    def _note(self, line: str) -> None:
        self.log_lines.append(line)
        log.info("%s: %s", self.actor.operator_id, line)

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
        async def one(r: dict) -> None:
            try:
                ack = await self.send(r["operator_id"], r["resource_id"], r["payload"])
            except TimeoutError:
                return          # no ack: re-dispatch finds it overdue
            with self.engine.begin() as conn:
                dispatch.device_ack(conn, ack, r["operator_id"])

        await asyncio.gather(*(one(r) for r in rows))

    async def step(self, now: datetime | None = None) -> dict:
        now = now or datetime.now(UTC)
        touched = self._take_feed(now)
        sent: list[dict] = []
        redone: list[dict] = []
        active = touched | self._executing_events()
        for event_id in sorted(active):
            with self.engine.begin() as conn:
                rows = dispatch.dispatch(conn, self.actor, event_id, self.status, lambda *a: None, now=now)
            if rows:
                self._note(f"{event_id}: {len(rows)} device instructions")
                await self._deliver(rows)
                sent += rows
            with self.engine.begin() as conn:
                again = dispatch.redispatch(conn, self.actor, event_id, self.status, lambda *a: None,
                                            now=datetime.now(UTC))
            if again:
                self._note(f"{event_id}: re-dispatched {len(again)} device instructions")
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
