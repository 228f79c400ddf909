"""State machines of operators and resources, as data: action → (from states, to state, roles).

A refused transition names the current state, the action, the rule and what is allowed
(``core.errors.TransitionRefused``). Every operator and resource transition needs a reason, which
the audit log keeps (issue 4: "each transition by the right role with a reason"); event
transitions other than ``cancel`` are the dispatcher's routine steps and need none.
"""

from __future__ import annotations

from dataclasses import dataclass

from openvpp.core.errors import Forbidden, InvalidInput, TransitionRefused, Violation
from openvpp.model.enums import OperatorState, ResourceState, Role


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[str]
    target: str
    roles: frozenset[Role]
    needs_reason: bool = True


def _t(action: str, sources, target, roles, needs_reason: bool = True) -> Transition:
    return Transition(action, frozenset(s.value for s in sources), target.value, frozenset(roles), needs_reason)


OS = OperatorState
OPERATOR_MACHINE: dict[str, Transition] = {t.action: t for t in (
    _t("start_review", [OS.APPLIED], OS.UNDER_REVIEW, [Role.CITY_ADMIN]),
    _t("admit", [OS.UNDER_REVIEW], OS.ADMITTED, [Role.CITY_ADMIN]),
    _t("reject", [OS.APPLIED, OS.UNDER_REVIEW], OS.REJECTED, [Role.CITY_ADMIN]),
    _t("suspend", [OS.ADMITTED], OS.SUSPENDED, [Role.CITY_ADMIN]),
    _t("reinstate", [OS.SUSPENDED], OS.ADMITTED, [Role.CITY_ADMIN]),
    _t("exit", [OS.ADMITTED, OS.SUSPENDED], OS.EXITED, [Role.CITY_ADMIN, Role.OPERATOR_ADMIN]),
)}

RS = ResourceState
RESOURCE_MACHINE: dict[str, Transition] = {t.action: t for t in (
    _t("approve", [RS.REGISTERED], RS.ACTIVE, [Role.CITY_ADMIN]),
    _t("reject", [RS.REGISTERED], RS.REJECTED, [Role.CITY_ADMIN]),
    _t("retire", [RS.REGISTERED, RS.ACTIVE], RS.RETIRED, [Role.CITY_ADMIN, Role.OPERATOR_ADMIN]),
    _t("transfer", [RS.ACTIVE], RS.ACTIVE, [Role.CITY_ADMIN]),
)}


#: event life: draft → published → declaring → cleared → executing → evaluating → settled, or cancelled
EVENT_STATES = ("draft", "published", "declaring", "cleared", "executing", "evaluating", "settled", "cancelled")
_EV_ROLES = [Role.CITY_ADMIN, Role.DISPATCHER]


def _e(action: str, sources: list[str], target: str, needs_reason: bool = False) -> Transition:
    return Transition(action, frozenset(sources), target, frozenset(_EV_ROLES), needs_reason)


EVENT_MACHINE: dict[str, Transition] = {t.action: t for t in (
    _e("publish", ["draft"], "published"),
    _e("open", ["published"], "declaring"),
    _e("clear", ["declaring", "published"], "cleared"),     # from published: mandatory (emergency) events
    _e("execute", ["cleared"], "executing"),
    _e("evaluate", ["executing"], "evaluating"),
    _e("settle", ["evaluating"], "settled"),
    _e("cancel", ["draft", "published", "declaring", "cleared"], "cancelled", needs_reason=True),
)}


def check(machine: dict[str, Transition], entity: str, entity_id: str, state: str, action: str,
          role: str, reason: str | None) -> Transition:
    """The transition for ``action`` from ``state`` by ``role``, or raise naming the rule."""
    allowed = sorted(a for a, t in machine.items() if state in t.sources)
    t = machine.get(action)
    if t is None:
        raise TransitionRefused(entity, entity_id, state, action, f"unknown action; actions: {', '.join(machine)}",
                                allowed)
    if state not in t.sources:
        rule = f"'{action}' needs state {' or '.join(sorted(t.sources))}"
        raise TransitionRefused(entity, entity_id, state, action, rule, allowed)
    if Role(role) not in t.roles:
        raise Forbidden(f"role {role} may not {action} a {entity}; allowed roles: "
                        f"{', '.join(sorted(r.value for r in t.roles))}")
    if t.needs_reason and not (reason and reason.strip()):
        raise InvalidInput(Violation("reason", f"is required to {action} a {entity}", reason))
    return t
