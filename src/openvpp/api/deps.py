"""Request plumbing: database connections, the caller (JWT bearer or API key), error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
from fastapi import Depends, Request
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


def current_actor(request: Request, token: str | None = Depends(oauth2),
                  conn: Connection = Depends(read_conn)) -> Actor:
    """The caller: ``Authorization: Bearer <JWT>`` for people, ``X-API-Key`` (or Bearer ``ovk_...``) for machines."""
    key = request.headers.get("x-api-key")
    if token and token.startswith(f"{accounts.KEY_PREFIX}_"):
        key = token
    if key:
        return accounts.actor_for_key(conn, key)
    if not token:
        raise Unauthenticated("not authenticated: send 'Authorization: Bearer <token>' or 'X-API-Key'")
    try:
        claims = jwt.decode(token, request.app.state.settings.jwt_secret, algorithms=[ALGORITHM])
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired; log in again") from None
    except jwt.InvalidTokenError:
        raise Unauthenticated("invalid token") from None
    # the account is looked up on every request, so a disabled user loses access at once
    return accounts.actor_for_user(conn, claims["sub"])
