"""Request plumbing: database connections, the caller (JWT bearer or API key), error mapping."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Connection

from openvpp.core.errors import Unauthenticated
from openvpp.core.settings import Settings
from openvpp.services import accounts
from openvpp.store.audit import Actor
from openvpp.store.db import get_engine

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
ALGORITHM = "HS256"


def settings(request: Request) -> Settings:
    return request.app.state.settings


def read_conn(request: Request) -> Iterator[Connection]:
    """A connection for reads (no transaction kept open past the request)."""
    with get_engine(request.app.state.settings.database_url).connect() as conn:
        yield conn


def write_conn(request: Request) -> Iterator[Connection]:
    """A transaction: committed when the endpoint returns, rolled back on any error. Routes take it
    with ``Depends(write_conn, scope="function")``, so the commit happens before the response is
    sent: a client that reads right after its write sees it, and a failed commit is its error."""
    with get_engine(request.app.state.settings.database_url).begin() as conn:
        yield conn


def issue_token(s: Settings, actor: Actor) -> str:
    now = datetime.now(UTC)
    claims = {"sub": actor.name, "role": actor.role, "op": actor.operator_id, "own": actor.owner_id,
              "iat": now, "exp": now + timedelta(minutes=s.token_minutes)}
    return jwt.encode(claims, s.jwt_secret, algorithm=ALGORITHM)


class CallerCache:
    """Callers looked up in the last ``ttl_s`` seconds: one account read per caller and period
    instead of one per request (a dashboard asks several things at once, every few seconds).

    A change made through this process (a user created, a key revoked) clears it at once; another
    API process sees it within ``ttl_s`` (``OPENVPP_ACCOUNT_CACHE_S``, 0 turns the cache off).
    Refusals are not kept. API keys are held by their SHA-256, never in clear."""

    MAX_ENTRIES = 50_000

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._hits: dict[tuple[str, str], tuple[float, Actor]] = {}

    def get(self, kind: str, name: str) -> Actor | None:
        hit = self._hits.get((kind, name))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, kind: str, name: str, actor: Actor) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._hits) >= self.MAX_ENTRIES:
            self._hits.clear()
        self._hits[(kind, name)] = (time.monotonic() + self.ttl_s, actor)

    def clear(self) -> None:
        self._hits.clear()


def _look_up(database_url: str, kind: str, value: str) -> Actor:
    with get_engine(database_url).connect() as conn:
        return accounts.actor_for_key(conn, value) if kind == "key" else accounts.actor_for_user(conn, value)


async def current_actor(request: Request, token: str | None = Depends(oauth2)) -> Actor:
    """The caller: ``Authorization: Bearer <JWT>`` for people, ``X-API-Key`` (or Bearer ``ovk_...``) for machines.

    The account behind a valid token or key is read again at least every ``account_cache_s``
    seconds, so a disabled user or a revoked key loses access within that time."""
    key = request.headers.get("x-api-key")
    if token and token.startswith(f"{accounts.KEY_PREFIX}_"):
        key = token
    if key:
        kind, value, name = "key", key, hashlib.sha256(key.encode()).hexdigest()
    elif not token:
        raise Unauthenticated("not authenticated: send 'Authorization: Bearer <token>' or 'X-API-Key'")
    else:
        try:
            claims = jwt.decode(token, request.app.state.settings.jwt_secret, algorithms=[ALGORITHM])
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired; log in again") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token") from None
        kind = "user"
        value = name = claims["sub"]
    cache: CallerCache = request.app.state.callers
    actor = cache.get(kind, name)
    if actor is None:
        actor = await run_in_threadpool(_look_up, request.app.state.settings.database_url, kind, value)
        cache.put(kind, name, actor)
    return actor
