"""Relational schema (SQLAlchemy Core). Alembic migrations in ``store/migrations`` create it.

Conventions: ids are readable strings; timestamps are UTC; units are in the
column names. Grid nodes carry their ancestors (district/substation/feeder) so
that aggregation by any level is one GROUP BY, without recursive queries.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import postgresql

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

ID = 64  # max id length (model.columns.ID_PATTERN)
#: resource key columns compare bytewise on PostgreSQL (migration 0010): their indexes, rebuilt by
#: every bulk import, build in about half the time of the default collation's
C_ID = String(ID).with_variant(postgresql.VARCHAR(ID, collation="C"), "postgresql")

grid_nodes = Table(
    "grid_nodes",
    metadata,
    Column("node_id", String(ID), primary_key=True),
    Column("level", String(24), nullable=False),
    Column("parent_id", String(ID), ForeignKey("grid_nodes.node_id"), nullable=True),
    Column("name", String(200), nullable=False),
    Column("name_zh", String(200)),
    Column("voltage_kv", Float),
    Column("rating_kva", Float),
    Column("lat", Float),
    Column("lon", Float),
    # ancestors, filled on load: aggregation by any level is a GROUP BY on one column
    Column("district_id", String(ID)),
    Column("substation_id", String(ID)),
    Column("feeder_id", String(ID)),
    Index("ix_grid_nodes_parent", "parent_id"),
    Index("ix_grid_nodes_level", "level"),
    Index("ix_grid_nodes_district", "district_id"),
    Index("ix_grid_nodes_substation", "substation_id"),
    Index("ix_grid_nodes_feeder", "feeder_id"),
)

operators = Table(
    "operators",
    metadata,
    Column("operator_id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("name_zh", String(200)),
    Column("kind", String(40), nullable=False),
    Column("credit_code", String(40)),
    Column("tss_endpoint", String(400)),
    Column("state", String(24), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

owners = Table(
    "owners",
    metadata,
    Column("owner_id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("operator_id", String(ID), ForeignKey("operators.operator_id")),
    Column("revenue_share", Float, nullable=False),
)

sites = Table(
    "sites",
    metadata,
    Column("site_id", String(ID), primary_key=True),
    Column("name", String(200)),
    Column("ta_id", String(ID), ForeignKey("grid_nodes.node_id"), nullable=False),
    Column("owner_id", String(ID), ForeignKey("owners.owner_id"), nullable=False),
    Column("lat", Float),
    Column("lon", Float),
    Index("ix_sites_ta", "ta_id"),
)

resources = Table(
    "resources",
    metadata,
    Column("resource_id", C_ID, primary_key=True),
    Column("name", String(200)),
    Column("resource_type", String(32), nullable=False),
    Column("operator_id", C_ID, ForeignKey("operators.operator_id")),
    Column("owner_id", C_ID, ForeignKey("owners.owner_id"), nullable=False),
    Column("site_id", C_ID, ForeignKey("sites.site_id"), nullable=False),
    Column("ta_id", C_ID, ForeignKey("grid_nodes.node_id"), nullable=False),
    Column("capacity_kw", Float, nullable=False),
    Column("capacity_kva", Float),
    Column("profile_archetype", String(ID), nullable=False),
    Column("profile_scale_kw", Float, nullable=False),
    Column("noise_seed", BigInteger, nullable=False),
    Column("latency_s", Float, nullable=False),
    Column("response_mode", String(24), nullable=False),
    Column("adjustable_up_kw", Float, nullable=False),
    Column("adjustable_down_kw", Float, nullable=False),
    Column("adjustable_duration_h", Float, nullable=False),
    Column("control_protocol", String(24), nullable=False),
    Column("meter_id", C_ID, nullable=False),
    Column("commissioned_on", Date),
    Column("state", String(16), nullable=False, server_default="active"),
    Column("operator_since", DateTime(timezone=True)),  # NULL = since registration; history in resource_links
    Column("flagged", String(200)),                     # why it is excluded (e.g. failed verification)
    # verified capability (capability verification, 能力校核); NULL until tested. Grade and latency
    # are per direction: verified_grade / verified_latency_s of the down (load reduction) tests, which
    # pools and the minute-level check read; verified_up_* of the up (load increase) tests (0011)
    Column("verified_up_kw", Float),
    Column("verified_down_kw", Float),
    Column("verified_latency_s", Float),
    Column("verified_grade", String(2)),
    Column("verified_at", DateTime(timezone=True)),
    Column("verified_up_latency_s", Float),
    Column("verified_up_grade", String(2)),
    Index("ix_resources_operator", "operator_id"),
    Index("ix_resources_owner", "owner_id"),
    Index("ix_resources_ta", "ta_id"),
    # one meter, one live resource: retired/rejected rows keep their meter id for history
    Index(
        "uq_resources_live_meter",
        "meter_id",
        unique=True,
        sqlite_where=text("state IN ('registered', 'active')"),
        postgresql_where=text("state IN ('registered', 'active')"),
    ),
)

profile_archetypes = Table(
    "profile_archetypes",
    metadata,
    Column("archetype_id", String(ID), primary_key=True),
    Column("resource_type", String(32), nullable=False),
    Column("pattern", String(64), nullable=False),
    Column("description", Text),
    Column("source", Text),
    Column("year", Integer, nullable=False),
    Column("step_min", Integer, nullable=False),
    Column("values_f32", LargeBinary, nullable=False),  # little-endian float32, per-unit, local year
)

users = Table(
    "users",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("display_name", String(200)),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(32), nullable=False),
    Column("operator_id", String(ID), ForeignKey("operators.operator_id")),
    Column("owner_id", String(ID), ForeignKey("owners.owner_id")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(ID), primary_key=True),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(128), nullable=False),
    Column("name", String(200), nullable=False),
    Column("role", String(32), nullable=False),
    Column("operator_id", String(ID), ForeignKey("operators.operator_id")),
    Column("owner_id", String(ID), ForeignKey("owners.owner_id")),
    Column("created_by", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("audit_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("actor_role", String(32), nullable=False),
    Column("action", String(64), nullable=False),
    Column("entity", String(32), nullable=False),
    Column("entity_id", String(ID), nullable=False),
    Column("before", JSON),
    Column("after", JSON),
    Column("reason", Text),
    Index("ix_audit_entity", "entity", "entity_id"),
    Index("ix_audit_at", "at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(ID), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # queued, running, done, failed
    Column("progress", Float, nullable=False, server_default="0"),
    Column("message", Text),
    Column("result", JSON),
    Column("created_by", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# ---------------------------------------------------------------- admission, access, verification, pools (0002)

operator_checks = Table(
    "operator_checks",
    metadata,
    Column("check_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("operator_id", String(ID), ForeignKey("operators.operator_id"), nullable=False),
    Column("check", String(40), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("detail", JSON),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("checked_by", String(100), nullable=False),
    Index("ix_operator_checks_operator", "operator_id", "checked_at"),
)

# closed operator links of a resource; the open one is resources.operator_id since resources.operator_since
resource_links = Table(
    "resource_links",
    metadata,
    Column("link_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("resource_id", String(ID), ForeignKey("resources.resource_id"), nullable=False),
    Column("operator_id", String(ID), ForeignKey("operators.operator_id"), nullable=False),
    Column("valid_from", DateTime(timezone=True)),   # NULL = since registration
    Column("valid_to", DateTime(timezone=True), nullable=False),
    Column("reason", Text),
    Index("ix_resource_links_resource", "resource_id"),
)

contracts = Table(
    "contracts",
    metadata,
    Column("contract_id", String(ID), primary_key=True),
    Column("owner_id", String(ID), ForeignKey("owners.owner_id"), nullable=False),
    Column("operator_id", String(ID), ForeignKey("operators.operator_id"), nullable=False),
    Column("resource_id", String(ID), ForeignKey("resources.resource_id")),  # NULL = all the owner's resources
    Column("scheme", String(16), nullable=False),   # fixed | tiered
    Column("owner_share", Float),                    # fixed: owner's share of revenue, 0..1
    Column("tiers", JSON),                           # tiered: [{"up_to_yuan": x|null, "owner_share": s}, ...]
    Column("valid_from", Date, nullable=False),
    Column("valid_to", Date),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_contracts_owner", "owner_id", "operator_id"),
)

verification_tests = Table(
    "verification_tests",
    metadata,
    Column("test_id", String(ID), primary_key=True),
    Column("target_kind", String(16), nullable=False),   # resource | site | trading_unit
    Column("target_id", String(ID), nullable=False),
    Column("operator_id", String(ID), ForeignKey("operators.operator_id")),
    Column("direction", String(8), nullable=False),      # down (reduce load) | up (raise load)
    Column("declared_kw", Float, nullable=False),
    Column("declared_duration_h", Float, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),         # scheduled | done | cancelled
    Column("baseline_method", String(64)),
    Column("verified_kw", Float),
    Column("latency_s", Float),
    Column("ratio", Float),
    Column("grade", String(2)),
    Column("result", JSON),
    Column("created_by", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
)

pools = Table(
    "pools",
    metadata,
    Column("pool_id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scenario", String(32), nullable=False),
    Column("node_id", String(ID), ForeignKey("grid_nodes.node_id"), nullable=False),
    Column("rules", JSON, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
