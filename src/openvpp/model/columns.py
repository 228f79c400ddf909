"""Column specifications of the city files and of bulk imports.

One spec serves the generator (what it writes), the importer (what it checks,
row by row, vectorised) and the docs (``docs/city-files.md``). A rule is data:
type, required, bounds, vocabulary, cross-field limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from openvpp.model.enums import ControlProtocol, OperatorKind, OwnerKind, ResourceType, ResponseMode

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str                       # "str" | "float" | "int" | "enum" | "date"
    doc: str
    unit: str = ""
    required: bool = True
    min: float | None = None        # inclusive lower bound
    min_exclusive: bool = False
    max: float | None = None        # inclusive upper bound
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    max_of: str | None = None       # value must not exceed this other column (e.g. adjustable <= capacity)
    unique: bool = False
    max_len: int | None = None      # at most this many characters (the store's column width)


def _enum(e: type) -> tuple[str, ...]:
    return tuple(m.value for m in e)


RESOURCE_COLUMNS: tuple[Column, ...] = (
    Column("resource_id", "str", "unique resource id", pattern=ID_PATTERN, unique=True),
    Column("name", "str", "display name", required=False, max_len=200),
    Column("resource_type", "enum", "resource type", choices=_enum(ResourceType)),
    Column("operator_id", "str", "operator (VPP aggregator) it is contracted to; empty = none yet",
           required=False, pattern=ID_PATTERN),
    Column("owner_id", "str", "owner (the user/customer who owns it)", pattern=ID_PATTERN),
    Column("site_id", "str", "site (building, station, park) it stands at", pattern=ID_PATTERN),
    Column("ta_id", "str", "transformer area (台区) it is connected under", pattern=ID_PATTERN),
    Column("capacity_kw", "float", "built (installed) capacity", "kW", min=0, min_exclusive=True, max=1_000_000),
    Column("capacity_kva", "float", "apparent-power rating (0 = same as kW)", "kVA", required=False,
           min=0, max=1_000_000),
    Column("profile_archetype", "str", "id of its archetype profile in profiles.parquet", pattern=ID_PATTERN),
    Column("profile_scale_kw", "float", "kW that one per-unit of its archetype stands for", "kW", min=0,
           max=1_000_000),
    Column("noise_seed", "int", "seed of its deterministic noise over the archetype", min=0, max=2**31 - 1),
    Column("latency_s", "float", "response latency: time to reach 90% of an instruction", "s", min=0,
           max=86_400),
    Column("response_mode", "enum", "how it responds", choices=_enum(ResponseMode)),
    Column("adjustable_up_kw", "float", "declared capability to raise consumption (valley filling)", "kW",
           min=0, max_of="capacity_kw"),
    Column("adjustable_down_kw", "float", "declared capability to cut consumption or inject (peak shaving)",
           "kW", min=0, max_of="capacity_kw"),
    Column("adjustable_duration_h", "float", "how long the declared capability can be held", "h", min=0,
           min_exclusive=True, max=24),
    Column("control_protocol", "enum", "protocol that controls it", choices=_enum(ControlProtocol)),
    Column("meter_id", "str", "revenue meter id; one active resource per meter", pattern=ID_PATTERN,
           unique=True),
    Column("commissioned_on", "date", "date it went into service (YYYY-MM-DD)", required=False),
)

OPERATOR_COLUMNS: tuple[Column, ...] = (
    Column("operator_id", "str", "unique operator id", pattern=ID_PATTERN, unique=True),
    Column("name", "str", "registered name", max_len=200),
    Column("name_zh", "str", "name in Chinese", required=False, max_len=200),
    Column("kind", "enum", "operator kind", choices=_enum(OperatorKind)),
    Column("credit_code", "str", "unified social credit code (统一社会信用代码)", required=False, max_len=40),
    Column("tss_endpoint", "str", "URL of its technical support system (技术支持系统)", required=False, max_len=400),
    Column("state", "enum", "admission state", choices=("applied", "under_review", "admitted",
                                                         "suspended", "exited", "rejected")),
)

OWNER_COLUMNS: tuple[Column, ...] = (
    Column("owner_id", "str", "unique owner id", pattern=ID_PATTERN, unique=True),
    Column("name", "str", "owner name", max_len=200),
    Column("kind", "enum", "owner kind", choices=_enum(OwnerKind)),
    Column("operator_id", "str", "operator the owner has contracted with", required=False,
           pattern=ID_PATTERN),
    Column("revenue_share", "float", "owner's share of the resource revenue (fixed share contract)",
           min=0, max=1),
)

SITE_COLUMNS: tuple[Column, ...] = (
    Column("site_id", "str", "unique site id", pattern=ID_PATTERN, unique=True),
    Column("name", "str", "site name", required=False, max_len=200),
    Column("ta_id", "str", "transformer area the site is supplied from", pattern=ID_PATTERN),
    Column("owner_id", "str", "owner of the site", pattern=ID_PATTERN),
    Column("lat", "float", "latitude", "deg", min=-90, max=90),
    Column("lon", "float", "longitude", "deg", min=-180, max=180),
)

GRID_COLUMNS: tuple[Column, ...] = (
    Column("node_id", "str", "unique grid node id", pattern=ID_PATTERN, unique=True),
    Column("level", "enum", "city, district, substation (220 kV), feeder (10 kV), transformer_area",
           choices=("city", "district", "substation", "feeder", "transformer_area")),
    Column("parent_id", "str", "parent node (empty for the city)", required=False),
    Column("name", "str", "name (English/pinyin)", max_len=200),
    Column("name_zh", "str", "name in Chinese", required=False, max_len=200),
    Column("voltage_kv", "float", "nominal voltage", "kV", required=False, min=0),
    Column("rating_kva", "float", "rating: transformer kVA for a TA, feeder/substation capacity", "kVA",
           required=False, min=0),
    Column("lat", "float", "latitude", "deg", required=False, min=-90, max=90),
    Column("lon", "float", "longitude", "deg", required=False, min=-180, max=180),
)


def names(columns: tuple[Column, ...]) -> list[str]:
    return [c.name for c in columns]
