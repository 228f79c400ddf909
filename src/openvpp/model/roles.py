"""Who may do what (DESIGN.md, 'Who uses it'). One table, checked by the API and the services."""

from __future__ import annotations

from enum import StrEnum

from openvpp.model.enums import Role


class Perm(StrEnum):
    READ_ALL = "read_all"                  # city-wide read
    READ_OWN_OPERATOR = "read_own_operator"
    READ_OWN_OWNER = "read_own_owner"
    ADMIT_OPERATORS = "admit_operators"
    APPROVE_RESOURCES = "approve_resources"
    SET_RULES = "set_rules"
    MANAGE_USERS = "manage_users"
    PUBLISH_EVENTS = "publish_events"
    REGISTER_RESOURCES = "register_resources"
    DECLARE = "declare"
    CONTROL_DEVICES = "control_devices"
    SIGN_SETTLEMENTS = "sign_settlements"
    READ_AUDIT = "read_audit"
    PUSH_TELEMETRY = "push_telemetry"


GRANTS: dict[Role, frozenset[Perm]] = {
    Role.CITY_ADMIN: frozenset(
        {Perm.READ_ALL, Perm.ADMIT_OPERATORS, Perm.APPROVE_RESOURCES, Perm.SET_RULES,
         Perm.MANAGE_USERS, Perm.SIGN_SETTLEMENTS, Perm.READ_AUDIT, Perm.REGISTER_RESOURCES}
    ),
    Role.DISPATCHER: frozenset({Perm.READ_ALL, Perm.PUBLISH_EVENTS}),
    Role.OPERATOR_ADMIN: frozenset(
        {Perm.READ_OWN_OPERATOR, Perm.REGISTER_RESOURCES, Perm.DECLARE, Perm.CONTROL_DEVICES}
    ),
    Role.OPERATOR_ENGINEER: frozenset({Perm.READ_OWN_OPERATOR, Perm.CONTROL_DEVICES}),
    Role.OWNER: frozenset({Perm.READ_OWN_OWNER}),
    Role.AUDITOR: frozenset({Perm.READ_ALL, Perm.READ_AUDIT}),
    Role.DEVICE: frozenset({Perm.PUSH_TELEMETRY}),
}

#: roles whose data is fenced to one operator / one owner
OPERATOR_ROLES = frozenset({Role.OPERATOR_ADMIN, Role.OPERATOR_ENGINEER})


def allowed(role: Role, perm: Perm) -> bool:
    return perm in GRANTS[role]
