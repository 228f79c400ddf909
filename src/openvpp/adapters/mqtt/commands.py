"""Instructions down to devices over MQTT: what the dispatch service drives.

``CommandChannel`` keeps one broker connection, publishes each instruction with QoS 1 on
``{root}/cmd/{operator_id}/{device_id}`` and resolves when the device's acknowledgement arrives
on ``{root}/ack/{operator_id}/{device_id}`` (matched by the instruction's ``id``). Message format:
``docs/telemetry.md`` ("Instructions") and ``openvpp.sim.devices``.

    async with CommandChannel("mqtt://127.0.0.1:1883") as ch:
        ack = await ch.send("OP01", "R0000042", {"kind": "setpoint", "p": -50.0, "duration_s": 900})

A site gateway (the site's EMS, which also batches its devices' telemetry) takes its devices'
instructions in one message on ``{root}/gcmd/{operator_id}/{gateway_id}`` and answers with one
message of acknowledgements on ``{root}/gack/{operator_id}/{gateway_id}``: ``send_gateway``. An
emergency call to 100,000 devices is then ~30,000 messages each way instead of 100,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

import aiomqtt

from openvpp.adapters.mqtt import SOCKET_OPTIONS, parse_url
from openvpp.core.ids import new_id

log = logging.getLogger("openvpp.mqtt.commands")


class CommandChannel:
    def __init__(self, url: str, protocol: int = 5, client_id: str | None = None):
        self.mqtt = parse_url(url)
        self.protocol = protocol
        self.client_id = client_id or f"openvpp-cmd-{uuid.uuid4().hex[:8]}"
        self._client: aiomqtt.Client | None = None
        self._pending: dict[str, asyncio.Future] = {}
        self._listener: asyncio.Task | None = None

    async def __aenter__(self) -> CommandChannel:
        proto = aiomqtt.ProtocolVersion.V5 if self.protocol == 5 else aiomqtt.ProtocolVersion.V311
        self._client = aiomqtt.Client(self.mqtt.host, self.mqtt.port, identifier=self.client_id, protocol=proto,
                                      username=self.mqtt.username, password=self.mqtt.password, timeout=10,
                                      socket_options=SOCKET_OPTIONS)
        await self._client.__aenter__()
        await self._client.subscribe(f"{self.mqtt.root}/ack/+/+", qos=1)
        await self._client.subscribe(f"{self.mqtt.root}/gack/+/+", qos=1)
        self._listener = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._listener
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        await self._client.__aexit__(*exc)

    async def _listen(self) -> None:
        async for m in self._client.messages:
            try:
                ack = json.loads(m.payload)
            except ValueError:
                log.warning("commands: unreadable acknowledgement on %s", m.topic.value)
                continue
            acks = ack.get("items") if isinstance(ack, dict) and "/gack/" in m.topic.value else [ack]
            for a in acks if isinstance(acks, list) else []:
                fut = self._pending.pop(str(a.get("id")), None) if isinstance(a, dict) else None
                if fut is not None and not fut.done():
                    fut.set_result(a)

    async def send(self, operator_id: str, device_id: str, instruction: dict, timeout: float = 10.0) -> dict:
        """Publish one instruction and wait for its acknowledgement (``TimeoutError`` if none comes)."""
        msg = {"id": new_id("INS"), **instruction}
        fut = asyncio.get_running_loop().create_future()
        self._pending[str(msg["id"])] = fut
        await self._client.publish(f"{self.mqtt.root}/cmd/{operator_id}/{device_id}", json.dumps(msg), qos=1)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(str(msg["id"]), None)

    async def send_gateway(self, operator_id: str, gateway_id: str, items: list[tuple[str, dict]],
                           timeout: float = 10.0) -> list[dict | None]:
        """Publish the instructions of one gateway's devices ``[(device_id, instruction), ...]`` in one
        message; return each one's acknowledgement in order (None where none came within ``timeout``)."""
        loop = asyncio.get_running_loop()
        msgs = [{"id": new_id("INS"), "device": device, **instruction} for device, instruction in items]
        futs = [loop.create_future() for _ in msgs]
        for msg, fut in zip(msgs, futs, strict=True):
            self._pending[str(msg["id"])] = fut
        body = json.dumps({"gw": gateway_id, "items": msgs})
        try:
            await self._client.publish(f"{self.mqtt.root}/gcmd/{operator_id}/{gateway_id}", body, qos=1)
            await asyncio.wait(futs, timeout=timeout)
            return [f.result() if f.done() and not f.cancelled() else None for f in futs]
        finally:
            for msg, fut in zip(msgs, futs, strict=True):
                self._pending.pop(str(msg["id"]), None)
                if not fut.done():
                    fut.cancel()
