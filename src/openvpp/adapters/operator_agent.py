"""An operator's technical support system at work: follow the city's feed, acknowledge each
instruction, split it to devices, send the device instructions over a command channel (MQTT in
production), record the devices' acknowledgements and re-dispatch what a device fails to take.

One ``step()`` is one pass; ``run()`` repeats it. A capability-verification test in the feed
(topic ``verification``) is sent to its devices as limits over the test window, on the same
transport. The business rules live in ``services.events`` and ``services.dispatch``; this adapter
only moves messages between them and the transport.

The city side is reached through a ``CityLink``: ``InProcessCity`` calls the services (the
platform and the operator's system in one deployment), ``HttpCity`` speaks the documented operator
interface (``docs/operator-interface.md``: ``GET /api/v1/operator/feed``, ``POST
/api/v1/operator/acks``) with the operator's API key, as an operator's own system does. The split
to devices and their acknowledgements are the operator's side and stay on its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import Engine, select

from openvpp.core.clock import Clock, now_utc, wall
from openvpp.services import dispatch, events
from openvpp.store.audit import Actor
from openvpp.store.schema import resources
from openvpp.store.schema_events import events as events_table

log = logging.getLogger("openvpp.operator_agent")

#: (operator_id, device_id, instruction) → the device's acknowledgement; raises TimeoutError if none
SendAsync = Callable[[str, str, dict], Awaitable[dict]]
#: (operator_id, gateway_id, [(device_id, instruction)]) → each one's acknowledgement or None
SendGatewayAsync = Callable[[str, str, list[tuple[str, dict]]], Awaitable[list[dict | None]]]


class CityLink(Protocol):
    """What an operator's system asks of the city: its feed, and acknowledging the city's instructions."""

    def feed(self, after: int) -> dict: ...

    def acknowledge(self, instruction_ids: list[str], now: datetime) -> list[dict]: ...


@dataclass
class InProcessCity:
    """The city's services called in process (one deployment runs both sides)."""

    engine: Engine
    actor: Actor

    def feed(self, after: int) -> dict:
        with self.engine.connect() as conn:
            return events.feed(conn, self.actor, after)

    def acknowledge(self, instruction_ids: list[str], now: datetime) -> list[dict]:
        with self.engine.begin() as conn:
            return events.acknowledge(conn, self.actor, instruction_ids, "accepted", now=now)


class HttpCity:
    """The operator interface over HTTP with an API key (``X-API-Key``); the city stamps the time of
    each acknowledgement itself. Errors carry the API's message (field and rule)."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 10.0):
        import httpx

        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/api/v1", timeout=timeout_s,
                                  headers={"X-API-Key": api_key})

    def _check(self, r):
        if r.status_code >= 400:
            try:
                detail = r.json().get("message") or r.text
            except ValueError:
                detail = r.text
            raise RuntimeError(f"city API {r.request.method} {r.request.url.path}: {r.status_code} {detail}")
        return r.json()

    def feed(self, after: int) -> dict:
        return self._check(self._http.get("/operator/feed", params={"after": after}))

    def acknowledge(self, instruction_ids: list[str], now: datetime) -> list[dict]:
        return self._check(self._http.post("/operator/acks", json={"instruction_ids": instruction_ids,
                                                                  "status": "accepted"}))["items"]

    def close(self) -> None:
        self._http.close()


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
    #: how the city is reached (default: its services in process)
    city: CityLink | None = None
    #: when set, device instructions go to each site's gateway in one message (``send`` is then unused)
    send_gateway: SendGatewayAsync | None = None
    _site_of: dict[str, str] = field(default_factory=dict)
    _tests: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.city is None:
            self.city = InProcessCity(self.engine, self.actor)

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
        """Acknowledge every new instruction of the city; return the events they belong to. Test
        instructions of capability verification wait in ``_tests`` for ``step`` to send."""
        touched: set[str] = set()
        page = self.city.feed(self.last_seq)
        ids = []
        for item in page["items"]:
            if item["topic"] == "instructions":
                touched.add(item["payload"]["event_id"])
                ids += [i["instruction_id"] for i in item["payload"]["instructions"]]
            elif item["topic"] == "verification":
                self._tests.append(item["payload"])
        if ids:
            states = self.city.acknowledge(ids, now)
            self._note(f"acknowledged {sum(s['state'] == 'acked' for s in states)} of {len(ids)} instructions")
        self.last_seq = page["last"]
        return touched

    def _sites(self, device_ids: list[str]) -> dict[str, str]:
        """The site (gateway) of each device, from the registry; read again for devices not seen yet."""
        if any(d not in self._site_of for d in device_ids):
            with self.engine.connect() as conn:
                self._site_of.update(dict(conn.execute(select(resources.c.resource_id, resources.c.site_id).where(
                    resources.c.operator_id == self.actor.operator_id)).all()))
        return self._site_of

    async def _deliver(self, rows: list[dict]) -> None:
        """Send every row through the transport, at most ``max_in_flight`` awaiting their ack at once,
        and record the acknowledgements in batches (in a worker thread) while the sending goes on.
        With ``send_gateway`` the rows of one site go in one message (the window counts messages)."""
        if self.send_gateway is not None:
            sites = await asyncio.to_thread(self._sites, [r["resource_id"] for r in rows])
            by_site: dict[tuple[str, str], list[dict]] = {}
            for r in rows:
                by_site.setdefault((r["operator_id"], sites.get(r["resource_id"]) or r["resource_id"]), []).append(r)
            groups = list(by_site.items())

            async def transmit(operator_id: str, gateway: str, group: list[dict]) -> list[dict | None]:
                return await self.send_gateway(operator_id, gateway, [(g["resource_id"], g["payload"]) for g in group])
        else:
            groups = [((r["operator_id"], r["resource_id"]), [r]) for r in rows]

            async def transmit(operator_id: str, device: str, group: list[dict]) -> list[dict | None]:
                try:
                    return [await self.send(operator_id, device, group[0]["payload"])]
                except TimeoutError:
                    return [None]       # no ack: re-dispatch finds it overdue
        todo = iter(groups)
        received: list[tuple[dict, datetime, datetime]] = []
        full = asyncio.Event()
        sending = True
        failures: list[str] = []

        window = self.window or contextlib.nullcontext()

        async def worker() -> None:
            for (operator_id, target), group in todo:
                async with window:
                    sent_at = self._now()
                    try:
                        acks = await transmit(operator_id, target, group)
                    except Exception as exc:  # noqa: BLE001 - a transport error: the same as no ack
                        failures.append(f"{target}: {exc!r}")
                        continue
                at = self._now()
                received.extend((a, at, sent_at) for a in acks if a is not None)
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
            await asyncio.gather(*(worker() for _ in range(max(1, min(self.max_in_flight, len(rows))))))
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

    async def _verification(self, instruction: dict, now: datetime) -> dict:
        """Send a verification test's limits to its devices (``dispatch.verification_rows``) over the
        same transport as event instructions, and record who accepted them."""
        ids = sorted(instruction["resources"])
        status = await asyncio.to_thread(self.status, ids)
        rows = dispatch.verification_rows(self.actor.operator_id, instruction, status, now)
        sent = [r for r in rows if "payload" in r]
        acks: dict[str, dict | None] = {}
        if self.send_gateway is not None:
            sites = await asyncio.to_thread(self._sites, [r["resource_id"] for r in sent])
            groups: dict[str, list[dict]] = {}
            for r in sent:
                groups.setdefault(sites.get(r["resource_id"]) or r["resource_id"], []).append(r)
            for gateway, group in groups.items():
                try:
                    got = await self.send_gateway(self.actor.operator_id, gateway,
                                                  [(g["resource_id"], g["payload"]) for g in group])
                except Exception:  # noqa: BLE001 - a transport error: no ack from that gateway's devices
                    got = [None] * len(group)
                acks.update({g["resource_id"]: a for g, a in zip(group, got, strict=True)})
        else:
            async def one(r: dict) -> None:
                try:
                    acks[r["resource_id"]] = await self.send(self.actor.operator_id, r["resource_id"], r["payload"])
                except Exception:  # noqa: BLE001 - a transport error or no answer: recorded as no ack
                    acks[r["resource_id"]] = None
            await asyncio.gather(*(one(r) for r in sent))

        def record() -> dict:
            with self.engine.begin() as conn:
                return dispatch.record_verification(conn, self.actor, instruction["test_id"], rows, acks)
        summary = await asyncio.to_thread(record)
        self._note(f"verification {instruction['test_id']}: {len(summary['accepted'])} of {len(ids)} devices "
                   "accepted the test instruction")
        return summary

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
        tested = 0
        while self._tests:
            with self._mark("verification"):
                await self._verification(self._tests.pop(0), now)
            tested += 1
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
        return {"sent": len(sent), "redispatched": len(redone), "verification_tests": tested}

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
