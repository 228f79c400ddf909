"""Tenant scope: what part of the city a caller may see. Derived from the actor, applied by every query."""

from __future__ import annotations

from dataclasses import dataclass

from openvpp.core.errors import Forbidden
from openvpp.model.enums import Role
from openvpp.model.roles import OPERATOR_ROLES, Perm, allowed
from openvpp.store.audit import Actor


@dataclass(frozen=True)
class Scope:
    """``operator_id``/``owner_id`` set = fenced to that tenant; both None = the whole city."""

    operator_id: str | None = None
    owner_id: str | None = None

    @property
    def city_wide(self) -> bool:
        return self.operator_id is None and self.owner_id is None

    def label(self) -> str:
        if self.operator_id:
            return f"operator {self.operator_id}"
        if self.owner_id:
            return f"owner {self.owner_id}"
        return "city"


def scope_of(actor: Actor) -> Scope:
    role = Role(actor.role)
    if allowed(role, Perm.READ_ALL):
        return Scope()
    if role in OPERATOR_ROLES:
        if not actor.operator_id:
            raise Forbidden(f"user {actor.name} has role {role} but no operator")
        return Scope(operator_id=actor.operator_id)
    if role is Role.OWNER:
        if not actor.owner_id:
            raise Forbidden(f"user {actor.name} has role owner but no owner id")
        return Scope(owner_id=actor.owner_id)
    raise Forbidden(f"role {role} may not read the resource database")


def require(actor: Actor, perm: Perm) -> None:
    if not allowed(Role(actor.role), perm):
        raise Forbidden(f"role {actor.role} lacks permission {perm.value}")
