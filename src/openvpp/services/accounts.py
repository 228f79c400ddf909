"""Users (people, password + JWT) and API keys (machines). Passwords and keys are stored hashed."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

import bcrypt
from sqlalchemy import Connection, select

from openvpp.core.errors import Conflict, InvalidInput, NotFound, Unauthenticated, Violation
from openvpp.core.ids import new_id
from openvpp.model.enums import Role
from openvpp.model.roles import OPERATOR_ROLES, Perm
from openvpp.services.scope import require
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema import api_keys, operators, owners, users

KEY_PREFIX = "ovk"


def hash_password(password: str, rounds: int = 12) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def _check_tenant(conn: Connection, role: Role, operator_id: str | None, owner_id: str | None) -> None:
    if role in OPERATOR_ROLES and not operator_id:
        raise InvalidInput(Violation("operator_id", f"is required for role {role.value}", None))
    if role is Role.OWNER and not owner_id:
        raise InvalidInput(Violation("owner_id", "is required for role owner", None))
    if operator_id and not conn.execute(select(operators.c.operator_id).where(
            operators.c.operator_id == operator_id)).first():
        raise InvalidInput(Violation("operator_id", "operator does not exist", operator_id))
    if owner_id and not conn.execute(select(owners.c.owner_id).where(owners.c.owner_id == owner_id)).first():
        raise InvalidInput(Violation("owner_id", "owner does not exist", owner_id))


def create_user(conn: Connection, actor: Actor, username: str, password: str, role: str,
                operator_id: str | None = None, owner_id: str | None = None,
                display_name: str | None = None, rounds: int = 12) -> dict:
    """Create a person's account. Only the city admin manages users."""
    require(actor, Perm.MANAGE_USERS)
    try:
        r = Role(role)
    except ValueError:
        raise InvalidInput(Violation("role", f"must be one of {', '.join(x.value for x in Role)}", role)) from None
    if not username or len(username) > 100:
        raise InvalidInput(Violation("username", "must be 1-100 characters", username))
    if len(password) < 8:
        raise InvalidInput(Violation("password", "must be at least 8 characters", "***"))
    _check_tenant(conn, r, operator_id, owner_id)
    if conn.execute(select(users.c.user_id).where(users.c.username == username)).first():
        raise Conflict(f"username {username!r} is taken")
    row = {"user_id": new_id("USR"), "username": username, "display_name": display_name or username,
           "password_hash": hash_password(password, rounds), "role": r.value, "operator_id": operator_id,
           "owner_id": owner_id, "active": True, "created_at": datetime.now(UTC)}
    conn.execute(users.insert().values(**row))
    public = {k: v for k, v in row.items() if k != "password_hash"}
    audit.record(conn, actor, "user.create", "user", row["user_id"], after=public)
    return public


def authenticate(conn: Connection, username: str, password: str) -> Actor:
    row = conn.execute(select(users).where(users.c.username == username)).mappings().first()
    if row is None or not row["active"] or not bcrypt.checkpw(password.encode(), row["password_hash"].encode()):
        raise Unauthenticated("wrong username or password")
    return Actor(row["username"], row["role"], row["operator_id"], row["owner_id"])


def actor_for_user(conn: Connection, username: str) -> Actor:
    row = conn.execute(select(users).where(users.c.username == username)).mappings().first()
    if row is None or not row["active"]:
        raise Unauthenticated("the account no longer exists or is disabled")
    return Actor(row["username"], row["role"], row["operator_id"], row["owner_id"])


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(conn: Connection, actor: Actor, name: str, role: str = Role.DEVICE.value,
                   operator_id: str | None = None, owner_id: str | None = None) -> dict:
    """Issue a machine key ``ovk_<prefix>_<secret>``; the secret is shown once, stored as SHA-256.

    The city admin issues any key; an operator admin issues keys only for its own operator
    (device or operator-engineer role).
    """
    try:
        r = Role(role)
    except ValueError:
        raise InvalidInput(Violation("role", f"must be one of {', '.join(x.value for x in Role)}", role)) from None
    if actor.role == Role.OPERATOR_ADMIN.value:
        if r not in (Role.DEVICE, Role.OPERATOR_ENGINEER):
            raise InvalidInput(Violation("role", "an operator admin may issue device or engineer keys only", role))
        operator_id = actor.operator_id
    else:
        require(actor, Perm.MANAGE_USERS)
    _check_tenant(conn, r, operator_id, owner_id)   # a device key's operator, if named, must exist too
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(24)
    row = {"key_id": new_id("KEY"), "prefix": prefix, "key_hash": _digest(secret), "name": name, "role": r.value,
           "operator_id": operator_id, "owner_id": owner_id, "created_by": actor.name,
           "created_at": datetime.now(UTC)}
    conn.execute(api_keys.insert().values(**row))
    public = {k: v for k, v in row.items() if k != "key_hash"}
    audit.record(conn, actor, "api_key.create", "api_key", row["key_id"], after=public)
    return {**public, "key": f"{KEY_PREFIX}_{prefix}_{secret}"}


def actor_for_key(conn: Connection, key: str) -> Actor:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        raise Unauthenticated("malformed API key")
    row = conn.execute(select(api_keys).where(api_keys.c.prefix == parts[1])).mappings().first()
    if row is None or row["revoked_at"] is not None or not hmac.compare_digest(row["key_hash"], _digest(parts[2])):
        raise Unauthenticated("unknown or revoked API key")
    return Actor(f"key:{row['name']}", row["role"], row["operator_id"], row["owner_id"])


def revoke_api_key(conn: Connection, actor: Actor, key_id: str) -> None:
    row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
    if row is None:
        raise NotFound("api_key", key_id)
    if actor.role == Role.OPERATOR_ADMIN.value and row["operator_id"] == actor.operator_id:
        pass
    else:
        require(actor, Perm.MANAGE_USERS)
    now = datetime.now(UTC)
    conn.execute(api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=now))
    audit.record(conn, actor, "api_key.revoke", "api_key", key_id, before={"revoked_at": None},
                 after={"revoked_at": now})
