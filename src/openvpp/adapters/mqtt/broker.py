"""The embedded MQTT broker (amqtt) for ``openvpp demo``: no Mosquitto needed, never on port 1883."""

from __future__ import annotations

import asyncio
import logging
import socket

log = logging.getLogger("openvpp.mqtt.broker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """An amqtt broker on 127.0.0.1 and a free port (MQTT 3.1.1). ``url`` is what clients connect to."""

    def __init__(self, port: int = 0):
        if port == 1883:
            raise ValueError("the embedded broker never takes 1883: that port belongs to a real broker")
        self.port = port or free_port()
        self.broker = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> EmbeddedBroker:
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self.broker = Broker(config, loop=asyncio.get_running_loop())
        await self.broker.start()
        log.info("embedded MQTT broker on %s", self.url)
        return self

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.shutdown()
            self.broker = None
