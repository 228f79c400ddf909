"""Settings, read from the environment (``OPENVPP_*``) with embedded defaults.

| variable | default | meaning |
| --- | --- | --- |
| OPENVPP_HOME | ``./var`` | data directory: SQLite file, generated cities, secrets |
| OPENVPP_DATABASE_URL | ``sqlite:///$OPENVPP_HOME/openvpp.db`` | SQLAlchemy URL; ``postgresql+psycopg://...`` in production |
| OPENVPP_BUS_URL | ``memory://`` | internal bus: ``memory://`` or ``nats://host:4222`` |
| OPENVPP_MQTT_URL | empty | device broker, e.g. ``mqtt://127.0.0.1:1883`` |
| OPENVPP_JWT_SECRET | generated once into ``$OPENVPP_HOME/jwt.secret`` | HS256 key for access tokens |
| OPENVPP_TOKEN_MINUTES | 480 | access-token lifetime |
| OPENVPP_BCRYPT_ROUNDS | 12 | password hash cost |
| OPENVPP_ACCOUNT_CACHE_S | 2 | an API process re-reads a caller's account (disabled? role?) after this many seconds |
| OPENVPP_RETAIN_MEMORY | 1 | a process that evaluates or settles keeps the memory it frees for reuse (``core.memory.retain_freed_memory``); 0 hands it back to the OS |
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    bus_url: str = "memory://"
    mqtt_url: str = ""
    jwt_secret: str = field(default="", repr=False)
    token_minutes: int = 480
    bcrypt_rounds: int = 12
    account_cache_s: float = 2.0

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        home = Path(_env("OPENVPP_HOME", str(Path.cwd() / "var"))).resolve()
        s = cls(
            home=home,
            database_url=_env("OPENVPP_DATABASE_URL", f"sqlite:///{home / 'openvpp.db'}"),
            bus_url=_env("OPENVPP_BUS_URL", "memory://"),
            mqtt_url=_env("OPENVPP_MQTT_URL", ""),
            jwt_secret=_env("OPENVPP_JWT_SECRET", ""),
            token_minutes=int(_env("OPENVPP_TOKEN_MINUTES", "480")),
            bcrypt_rounds=int(_env("OPENVPP_BCRYPT_ROUNDS", "12")),
            account_cache_s=float(_env("OPENVPP_ACCOUNT_CACHE_S", "2")),
        )
        return replace(s, **overrides) if overrides else s

    def with_secret(self) -> Settings:
        """Fill ``jwt_secret`` from ``$home/jwt.secret``, creating it on first use."""
        if self.jwt_secret:
            return self
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "jwt.secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return replace(self, jwt_secret=path.read_text().strip())

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")
