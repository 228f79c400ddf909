"""Column tables of ``docs/city-files.md``, rendered from ``model/columns.py`` so the docs never drift.

Run ``python -m openvpp.sim.city_docs [docs/city-files.md]`` to refresh the
generated section (between the BEGIN/END markers) after changing a spec or
the catalogue; a test fails while the file is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from openvpp.model.columns import (
    GRID_COLUMNS,
    OPERATOR_COLUMNS,
    OWNER_COLUMNS,
    RESOURCE_COLUMNS,
    SITE_COLUMNS,
    Column,
)
from openvpp.sim.archetypes import ARCHETYPES
from openvpp.sim.catalogue import GROUPS, TYPE_SHARES

BEGIN = "<!-- BEGIN GENERATED: python -m openvpp.sim.city_docs -->"
END = "<!-- END GENERATED -->"

FILE_SPECS = (
    ("grid.csv", GRID_COLUMNS, "One row per grid node: the city, 11 districts, 220 kV substations, "
                               "10 kV feeders, transformer areas (台区)."),
    ("operators.csv", OPERATOR_COLUMNS, "VPP operators (aggregators) of the city."),
    ("owners.csv", OWNER_COLUMNS, "Owners (customers) of sites and resources."),
    ("sites.csv", SITE_COLUMNS, "Sites: buildings, stations, factories, berths, masts."),
    ("resources.csv", RESOURCE_COLUMNS, "Flexible resources, one row each."),
)


def _rule(c: Column) -> str:
    parts = []
    if c.min is not None:
        parts.append(f"{'>' if c.min_exclusive else '>='} {c.min:g}")
    if c.max is not None:
        parts.append(f"<= {c.max:g}")
    if c.max_of:
        parts.append(f"<= `{c.max_of}`")
    if c.choices:
        parts.append("one of " + ", ".join(f"`{x}`" for x in c.choices))
    if c.pattern:
        parts.append(f"matches `{c.pattern}`")
    if c.kind == "date":
        parts.append("YYYY-MM-DD")
    if c.unique:
        parts.append("unique")
    return "; ".join(parts).replace("|", "\\|")


def column_table(columns: tuple[Column, ...]) -> str:
    lines = ["| column | type | unit | required | rule | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for c in columns:
        lines.append(f"| `{c.name}` | {c.kind} | {c.unit} | {'yes' if c.required else 'no'} | {_rule(c)} | {c.doc} |")
    return "\n".join(lines)


def _share(x: float) -> str:
    return f"{100 * x:.3g} %"


def group_table() -> str:
    lines = ["| type | group | share of type | share of all | size (capacity_kw) | site | archetypes | "
             "up / down (x capacity) | duration h | basis |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g in GROUPS:
        s = g.size
        if s.values:
            size = "{" + ", ".join(f"{v:g}" for v in s.values) + "}"
        else:
            size = f"lognormal median {s.median:g}, sigma {s.sigma:g}, {s.lo:g}-{s.hi:g}"
        if s.factor != 1.0:
            size += f" x {s.factor:g}"
        up = "-".join(f"{x:g}" for x in dict.fromkeys(g.up))
        down = "-".join(f"{x:g}" for x in dict.fromkeys(g.down))
        arch = ", ".join(f"{k} {v:g}" for k, v in g.archetypes.items())
        if g.core_archetype:
            arch += f" ({g.core_archetype} in core districts)"
        dur = ", ".join(f"{k:g}" for k in g.duration_h)
        lines.append(f"| {g.rtype.value} | {g.key} | {_share(g.share)} | {_share(g.share * TYPE_SHARES[g.rtype])} "
                     f"| {size} | {g.site} | {arch} | {up} / {down} | {dur} | {g.notes} |")
    return "\n".join(lines)


def archetype_table() -> str:
    lines = ["| archetype_id | resource_type | pattern | description | source |", "| --- | --- | --- | --- | --- |"]
    for a, _ in ARCHETYPES:
        lines.append(f"| `{a.archetype_id}` | {a.resource_type.value} | {a.pattern} | {a.description} | {a.source} |")
    return "\n".join(lines)


def generated_section() -> str:
    out = [BEGIN, ""]
    for name, cols, what in FILE_SPECS:
        out += [f"### `{name}`", "", f"{what} Columns in this order:", "", column_table(cols), ""]
    out += ["### Resource groups (sizes, shares, capability)", "",
            "Generated from `openvpp/sim/catalogue.py`; sizes in kW (shore power: kVA x 0.9; data centers: "
            "IT kW x design PUE 1.5).", "", group_table(), "",
            "### Archetypes", "", "Generated from `openvpp/sim/archetypes.py` (also written as `archetypes.csv`).",
            "", archetype_table(), "", END]
    return "\n".join(out)


def update(path: Path) -> bool:
    """Replace the generated section of ``path``; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = head + generated_section() + tail
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/city-files.md")
    print(f"{target}: {'updated' if update(target) else 'up to date'}")
