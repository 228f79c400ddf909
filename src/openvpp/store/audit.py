"""Append-only audit log: who, when, what (before/after), why. Never updated, never deleted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum

from sqlalchemy import Connection, select

from openvpp.store.schema import audit_log


@dataclass(frozen=True)
class Actor:
    """Who acts: a user or a machine key, with the role they act in."""

    name: str
    role: str
    operator_id: str | None = None
    owner_id: str | None = None


SYSTEM = Actor("system", "city_admin")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def record(conn: Connection, actor: Actor, action: str, entity: str, entity_id: str,
           before: dict | None = None, after: dict | None = None, reason: str | None = None) -> None:
    """Append one audit entry on the caller's transaction."""
    conn.execute(audit_log.insert().values(
        at=datetime.now(UTC), actor=actor.name, actor_role=actor.role, action=action, entity=entity,
        entity_id=str(entity_id), before=_plain(before), after=_plain(after), reason=reason,
    ))


def entries(conn: Connection, entity: str | None = None, entity_id: str | None = None,
            limit: int = 100, offset: int = 0) -> list[dict]:
    q = select(audit_log).order_by(audit_log.c.audit_id.desc()).limit(limit).offset(offset)
    if entity:
        q = q.where(audit_log.c.entity == entity)
    if entity_id:
        q = q.where(audit_log.c.entity_id == entity_id)
    return [dict(r._mapping) for r in conn.execute(q)]
