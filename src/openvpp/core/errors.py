"""Errors every layer raises; the API maps them to HTTP codes.

An error names the field and the rule it broke, so a user can fix the input
without reading code (DESIGN.md, "Bad input").
"""

from __future__ import annotations

from dataclasses import dataclass, field


class OpenVPPError(Exception):
    """Base of all openvpp errors."""

    http_status = 400

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": str(self)}


@dataclass
class Violation:
    """One broken rule: which field, which rule, on which line (1-based, file rows) if any."""

    field: str
    rule: str
    value: object = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.field}: {self.rule} (got {self.value!r})"

    def to_dict(self) -> dict:
        d = {"field": self.field, "rule": self.rule, "value": _jsonable(self.value)}
        if self.line is not None:
            d["line"] = self.line
        return d


def _jsonable(v: object) -> object:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


class InvalidInput(OpenVPPError):
    """Input broke one or more rules; nothing was written."""

    http_status = 422

    def __init__(self, violations: list[Violation] | Violation, total: int | None = None):
        if isinstance(violations, Violation):
            violations = [violations]
        self.violations = violations
        self.total = total if total is not None else len(violations)
        head = "; ".join(str(v) for v in violations[:5])
        more = f" (and {self.total - 5} more)" if self.total > 5 else ""
        super().__init__(f"{self.total} invalid value(s): {head}{more}")

    def to_dict(self) -> dict:
        return {
            "error": "InvalidInput",
            "message": str(self),
            "violations": [v.to_dict() for v in self.violations[:1000]],
            "total": self.total,
        }


class NotFound(OpenVPPError):
    http_status = 404

    def __init__(self, entity: str, entity_id: object):
        self.entity, self.entity_id = entity, entity_id
        super().__init__(f"{entity} {entity_id!r} does not exist")


class Conflict(OpenVPPError):
    """The request contradicts stored state (duplicate id, meter already active...)."""

    http_status = 409


@dataclass
class TransitionRefused(OpenVPPError):
    """A state-machine transition that is not allowed from the current state."""

    entity: str
    entity_id: str
    state: str
    action: str
    rule: str = ""
    allowed: list[str] = field(default_factory=list)

    http_status = 409

    def __post_init__(self) -> None:
        Exception.__init__(self, str(self))

    def __str__(self) -> str:
        allowed = ", ".join(self.allowed) or "none"
        extra = f"; {self.rule}" if self.rule else ""
        return (
            f"{self.entity} {self.entity_id} is '{self.state}': '{self.action}' is not allowed"
            f" (allowed from this state: {allowed}){extra}"
        )


class Unauthenticated(OpenVPPError):
    http_status = 401


class Forbidden(OpenVPPError):
    http_status = 403
