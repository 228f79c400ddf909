"""Setting up a platform instance: migrate, load a city, create the accounts of each role."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, func, select

from openvpp.core.settings import Settings
from openvpp.model.enums import Role
from openvpp.services import accounts, admission, registry
from openvpp.store import audit, db
from openvpp.store.schema import operators, owners, resources, users

#: demo accounts: role → (username, password). Printed by ``openvpp demo``; never use in production.
DEMO_PASSWORDS = {
    Role.CITY_ADMIN: ("admin", "admin123"),
    Role.DISPATCHER: ("dispatcher", "dispatch123"),
    Role.OPERATOR_ADMIN: ("operator", "operator123"),
    Role.OPERATOR_ENGINEER: ("engineer", "engineer123"),
    Role.OWNER: ("owner", "owner1234"),
    Role.AUDITOR: ("auditor", "auditor123"),
}
SECOND_OPERATOR = ("operator2", "operator123")


@dataclass
class DemoAccounts:
    users: dict[str, tuple[str, str]]
    operator_id: str
    second_operator_id: str
    owner_id: str


def init_database(settings: Settings) -> None:
    db.upgrade(settings.database_url)


def load_city(settings: Settings, city_dir: Path, progress=None) -> registry.LoadResult:
    engine = db.get_engine(settings.database_url)
    with engine.begin() as conn:
        registry.ensure_empty(conn)
        result = registry.load_city(conn, city_dir, audit.SYSTEM, progress or registry._noop)
    registry.finish_bulk(engine)
    with engine.begin() as conn:      # stored checks from the start (no TSS round trip at load)
        admission.recheck_all(conn, audit.SYSTEM, probe=None, reason="city loaded")
    return result


def _two_biggest_operators(conn: Connection) -> list[str]:
    q = (select(resources.c.operator_id, func.count().label("n"))
         .join(operators, operators.c.operator_id == resources.c.operator_id)
         .where(operators.c.state == "admitted").group_by(resources.c.operator_id)
         .order_by(func.count().desc(), resources.c.operator_id).limit(2))
    return [r[0] for r in conn.execute(q)]


def create_demo_accounts(settings: Settings) -> DemoAccounts:
    """One account per role; the operator accounts belong to the two largest admitted operators."""
    with db.get_engine(settings.database_url).begin() as conn:
        ops = _two_biggest_operators(conn)
        if len(ops) < 2:
            raise RuntimeError("the demo needs a city with at least two admitted operators with resources")
        owner_id = conn.execute(
            select(resources.c.owner_id).where(resources.c.operator_id == ops[0])
            .join(owners, owners.c.owner_id == resources.c.owner_id)
            .group_by(resources.c.owner_id).order_by(func.count().desc(), resources.c.owner_id).limit(1)
        ).scalar_one()
        existing = {r[0] for r in conn.execute(select(users.c.username))}
        out: dict[str, tuple[str, str]] = {}
        for role, (name, pw) in DEMO_PASSWORDS.items():
            out[role.value] = (name, pw)
            if name in existing:
                continue
            accounts.create_user(
                conn, audit.SYSTEM, name, pw, role.value,
                operator_id=ops[0] if role in (Role.OPERATOR_ADMIN, Role.OPERATOR_ENGINEER) else None,
                owner_id=owner_id if role is Role.OWNER else None, rounds=settings.bcrypt_rounds)
        name, pw = SECOND_OPERATOR
        out["operator_admin_2"] = (name, pw)
        if name not in existing:
            accounts.create_user(conn, audit.SYSTEM, name, pw, Role.OPERATOR_ADMIN.value, operator_id=ops[1],
                                 rounds=settings.bcrypt_rounds)
    return DemoAccounts(out, ops[0], ops[1], owner_id)
