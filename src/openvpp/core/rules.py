"""Versioned rule sets: policy numbers as data files, never literals in code.

A rule set is a TOML file in ``core/rulesets/`` (or any path given); its ``id``
is recorded by every computation that used it (settlement, evaluation, reports).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_RULESET = "guangzhou-2025.1"


@dataclass(frozen=True)
class RuleSet:
    id: str
    data: dict[str, Any]

    def section(self, name: str) -> dict[str, Any]:
        try:
            return self.data[name]
        except KeyError:
            raise KeyError(f"rule set {self.id} has no section [{name}]") from None

    def target_mw(self, kind: str) -> dict[int, float]:
        """Year-end targets: ``kind`` is 'connected' or 'adjustable'; {year: MW}."""
        return {int(y): float(v) for y, v in self.section("targets")[f"{kind}_mw"].items()}


def available() -> list[str]:
    folder = resources.files("openvpp.core") / "rulesets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


@lru_cache(maxsize=16)
def load(name_or_path: str = DEFAULT_RULESET) -> RuleSet:
    """Load a packaged rule set by id, or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text = path.read_text(encoding="utf-8")
    else:
        res = resources.files("openvpp.core") / "rulesets" / f"{name_or_path}.toml"
        if not res.is_file():
            raise KeyError(f"unknown rule set {name_or_path!r}; available: {', '.join(available())}")
        text = res.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return RuleSet(id=data["id"], data=data)
