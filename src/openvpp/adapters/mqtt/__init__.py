"""MQTT adapter: device and gateway telemetry in, instructions out (topics in docs/telemetry.md).

``ingest.MqttIngest`` owns the broker connection of the platform (persistent session, QoS 1,
acknowledgement after the points are committed, reconnect with back-off, gaps reported);
``broker.EmbeddedBroker`` is the amqtt broker the embedded default runs on a free port.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlparse

from openvpp.services.telemetry import TOPIC_ROOT

#: socket options of every MQTT connection of ours. Instructions and acknowledgements are small
#: packets each waiting for a PUBACK; with Nagle's algorithm and the peer's delayed ACKs a QoS 1
#: round trip stalls for tens of milliseconds (measured: ~250 acknowledged instructions/s over one
#: connection without the option, ~1,300-2,400/s with it; benchmarks/emergency_dispatch.py).
SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


@dataclass(frozen=True)
class MqttUrl:
    host: str
    port: int
    root: str          # topic root, e.g. openvpp/v1
    username: str | None = None
    password: str | None = None


def parse_url(url: str) -> MqttUrl:
    """``mqtt://[user:pass@]host[:port][/topic/root]`` → parts; the root defaults to ``openvpp/v1``."""
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"MQTT URL must start with mqtt://, got {url!r}")
    root = u.path.strip("/") or TOPIC_ROOT
    return MqttUrl(u.hostname or "127.0.0.1", u.port or 1883, root, u.username, u.password)
