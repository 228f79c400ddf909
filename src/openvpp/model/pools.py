"""Resource pools: a pool is a rule over the registry, evaluated, never a hand-made list.

Guangzhou VPP plan (2025-07-08), task 3: pools per grid scenario (peak shaving, emergency
response, ...), multi-level (city, district, substation, feeder, transformer area). A pool's rules
say which resources belong (types, response mode, latency, duration, grid subtree, verification
grade, operator, direction); ``kernels.pools`` evaluates them on the registry arrays.

Scenario presets are data (``pool_presets.toml``). A pool of a preset scenario starts from the
preset's rules and may tighten them, never relax them (``check_against_preset``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from openvpp.core.errors import InvalidInput, Violation
from openvpp.model.columns import ID_PATTERN
from openvpp.model.enums import GridLevel, ResourceType, ResponseMode

#: verification grades, best first (issue 4: A >= 90 % of declared, B >= 70 %, C below)
GRADES = ("A", "B", "C")
#: rank of a grade: higher is better; 0 = not verified
GRADE_RANK = {"A": 3, "B": 2, "C": 1}
#: scenario of a pool that follows no preset
CUSTOM = "custom"

NodeId = Annotated[str, Field(pattern=ID_PATTERN)]


class Direction(StrEnum):
    DOWN = "down"    # cut load / inject (peak shaving): counts adjustable_down_kw
    UP = "up"        # raise load (valley filling): counts adjustable_up_kw
    BOTH = "both"    # both sides count


def _unique(values: tuple) -> tuple:
    return tuple(dict.fromkeys(values))


class PoolRules(BaseModel):
    """Which resources a pool holds. Empty lists and ``None`` mean "no condition".

    Only active resources contracted to an admitted operator are ever members, and only those
    with a capability > 0 in the pool's direction.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    resource_types: tuple[ResourceType, ...] = Field(
        (), description="resource types; empty = all types")
    response_modes: tuple[ResponseMode, ...] = Field(
        (), description="response modes; empty = all modes")
    max_latency_s: float | None = Field(
        None, ge=0, le=86_400, description="latency (time to 90 % of an instruction) at most this, s")
    min_duration_h: float | None = Field(
        None, gt=0, le=168, description="declared duration (how long the capability holds) at least this, h")
    duration_h: float | None = Field(
        None, gt=0, le=168, description="event duration the pool is sized for: energy counts each member's "
                                        "capability for min(its duration, this); None = its own duration, h")
    node_id: NodeId | None = Field(
        None, description="grid subtree: a city, district, substation, feeder or transformer-area node; "
                          "None = the whole city")
    min_grade: Literal["A", "B", "C"] | None = Field(
        None, description="verification required, at least this grade (A best); flagged and unverified "
                          "resources are excluded. None = verification not required")
    operator_ids: tuple[NodeId, ...] = Field(
        (), description="operators whose resources count; empty = all admitted operators")
    direction: Direction = Field(
        Direction.BOTH, description="down = peak shaving, up = valley filling, both")
    use_verified: bool = Field(
        False, description="count verified capability and latency instead of the declared ones where known")

    @field_validator("resource_types", "response_modes", "operator_ids")
    @classmethod
    def _no_duplicates(cls, v: tuple) -> tuple:
        return _unique(v)


class Pool(BaseModel):
    """A named pool of one scenario (a preset name or ``custom``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool_id: NodeId
    name: str = Field(min_length=1, max_length=200)
    scenario: str = Field(min_length=1, max_length=32)
    rules: PoolRules = PoolRules()


# ---------------------------------------------------------------- errors that name field and rule

def _violations(exc: ValidationError, prefix: str) -> list[Violation]:
    out = []
    for e in exc.errors(include_url=False):
        where = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        rule = e["msg"]
        if e["type"] == "extra_forbidden":
            rule = f"unknown field; rules are {', '.join(PoolRules.model_fields)}"
        out.append(Violation(where, rule, e.get("input")))
    return out


def parse_rules(data: dict[str, Any] | PoolRules | None, field: str = "rules") -> PoolRules:
    """Validated rules, or ``InvalidInput`` naming each bad field (``rules.max_latency_s``...) and its rule."""
    if isinstance(data, PoolRules):
        return data
    if data is None:
        return PoolRules()
    if not isinstance(data, dict):
        raise InvalidInput(Violation(field, "must be an object of rules", data))
    try:
        return PoolRules.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_violations(exc, field)) from None


def parse_pool(data: dict[str, Any]) -> Pool:
    try:
        return Pool.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_violations(exc, "")) from None


# ---------------------------------------------------------------- scenario presets (data)

@dataclass(frozen=True)
class Preset:
    scenario: str
    name: str
    name_zh: str
    description: str
    source: str
    rules: PoolRules
    node_levels: tuple[GridLevel, ...] = tuple(GridLevel)
    mandatory: bool = False
    default: bool = True

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "name": self.name, "name_zh": self.name_zh,
                "description": self.description, "source": self.source,
                "rules": self.rules.model_dump(mode="json", exclude_defaults=True),
                "node_levels": [lv.value for lv in self.node_levels], "mandatory": self.mandatory,
                "default": self.default}


PRESETS_FILE = "pool_presets.toml"


def load_presets(path: str | Path | None = None) -> dict[str, Preset]:
    """Scenario presets from ``model/pool_presets.toml`` (or a TOML file at ``path``), by scenario."""
    if path is None:
        return _packaged_presets()
    return _parse_presets(Path(path).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _packaged_presets() -> dict[str, Preset]:
    return _parse_presets((resources.files("openvpp.model") / PRESETS_FILE).read_text(encoding="utf-8"))


def _parse_presets(text: str) -> dict[str, Preset]:
    data = tomllib.loads(text)
    out = {}
    for scenario, body in data.items():
        if not isinstance(body, dict):
            continue  # top-level metadata such as version
        if scenario == CUSTOM:
            raise InvalidInput(Violation("scenario", f"'{CUSTOM}' is reserved for pools without a preset", scenario))
        rules = parse_rules(body.get("rules", {}), field=f"{scenario}.rules")
        try:
            levels = tuple(GridLevel(v) for v in body.get("node_levels", [lv.value for lv in GridLevel]))
        except ValueError as exc:
            raise InvalidInput(Violation(f"{scenario}.node_levels", str(exc), body.get("node_levels"))) from None
        out[scenario] = Preset(scenario, body.get("name", scenario), body.get("name_zh", ""),
                               body.get("description", ""), body.get("source", ""), rules, levels,
                               bool(body.get("mandatory", False)), bool(body.get("default", True)))
    return out


def preset_rules(scenario: str, overrides: dict[str, Any] | None = None,
                 presets: dict[str, Preset] | None = None) -> PoolRules:
    """The preset's rules with ``overrides`` applied on top (``custom``: the overrides alone)."""
    presets = presets if presets is not None else load_presets()
    overrides = dict(overrides or {})
    if scenario == CUSTOM:
        return parse_rules(overrides)
    if scenario not in presets:
        raise InvalidInput(Violation("scenario", f"must be one of {', '.join([*presets, CUSTOM])}", scenario))
    base = presets[scenario].rules.model_dump(mode="json")
    return parse_rules({**base, **overrides})


def check_against_preset(preset: Preset, rules: PoolRules, node_level: str | None = None) -> list[Violation]:
    """Where ``rules`` are looser than the preset of their scenario (a pool may only tighten them)."""
    p, out = preset.rules, []
    name = preset.scenario

    def loose(field: str, rule: str, value: object) -> None:
        out.append(Violation(f"rules.{field}", f"{name} pools need {rule} (preset {name})", value))

    for field in ("resource_types", "response_modes", "operator_ids"):
        allowed, given = getattr(p, field), getattr(rules, field)
        if allowed and (not given or not set(given) <= set(allowed)):
            loose(field, f"a non-empty subset of {', '.join(map(str, allowed))}", list(map(str, given)))
    if p.max_latency_s is not None and (rules.max_latency_s is None or rules.max_latency_s > p.max_latency_s):
        loose("max_latency_s", f"max_latency_s <= {p.max_latency_s:g}", rules.max_latency_s)
    if p.min_duration_h is not None and (rules.min_duration_h is None or rules.min_duration_h < p.min_duration_h):
        loose("min_duration_h", f"min_duration_h >= {p.min_duration_h:g}", rules.min_duration_h)
    if p.min_grade is not None and (rules.min_grade is None
                                    or GRADE_RANK[rules.min_grade] < GRADE_RANK[p.min_grade]):
        loose("min_grade", f"verified grade {p.min_grade} or better", rules.min_grade)
    if p.direction is not Direction.BOTH and rules.direction is not p.direction:
        loose("direction", f"direction '{p.direction}'", str(rules.direction))
    if p.use_verified and not rules.use_verified:
        loose("use_verified", "use_verified = true (verified, not declared, capability)", rules.use_verified)
    if node_level is not None and node_level not in preset.node_levels:
        out.append(Violation("rules.node_id", f"{name} pools need a node at level "
                                              f"{' or '.join(lv.value for lv in preset.node_levels)} "
                                              f"(this node is a {node_level})", rules.node_id))
    return out
