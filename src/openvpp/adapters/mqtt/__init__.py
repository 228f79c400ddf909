"""MQTT adapter: device and gateway telemetry in, instructions out (topics in docs/telemetry.md).

``ingest.MqttIngest`` owns the broker connection of the platform (persistent session, QoS 1,
acknowledgement after the points are committed, reconnect with back-off, gaps reported);
``broker.EmbeddedBroker`` is the amqtt broker the embedded default runs on a free port.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from openvpp.services.telemetry import TOPIC_ROOT


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
