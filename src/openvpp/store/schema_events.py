"""Events, declarations, clearing results, instructions and the notification outbox (issue 6)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from openvpp.store.schema import ID, metadata

events = Table(
    "events",
    metadata,
    Column("event_id", String(ID), primary_key=True),
    Column("product", String(24), nullable=False),      # peak_shaving, valley_filling, reactive, reserve, ...
    Column("direction", String(8), nullable=False),     # down | up
    Column("name", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("day", Date, nullable=False),                # local (Asia/Shanghai) day of the window
    Column("start_slot", Integer, nullable=False),      # first 15-minute slot, 0..95
    Column("end_slot", Integer, nullable=False),        # exclusive
    Column("targets_kw", JSON, nullable=False),         # one target per slot of the window
    Column("scope_node_id", String(ID), ForeignKey("grid_nodes.node_id"), nullable=False),
    Column("pool_id", String(ID), ForeignKey("pools.pool_id")),
    Column("pricing", String(16), nullable=False),      # uniform | pay_as_bid | fixed
    Column("price_cap_yuan_per_kwh", Float, nullable=False),
    Column("declare_deadline", DateTime(timezone=True), nullable=False),
    Column("mandatory", Integer, nullable=False, server_default="0"),
    Column("ruleset", String(64), nullable=False),
    Column("result", JSON),                             # clearing prices, shortfall, execution summary
    Column("created_by", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_events_day", "day"),
)

declarations = Table(
    "declarations",
    metadata,
    Column("declaration_id", String(ID), primary_key=True),
    Column("event_id", String(ID), ForeignKey("events.event_id"), nullable=False),
    Column("operator_id", String(ID), ForeignKey("operators.operator_id"), nullable=False),
    Column("unit_id", String(ID), nullable=False),      # trading unit: OPERATOR@SUBSTATION
    Column("version", Integer, nullable=False),         # amendments add a version; the highest counts
    Column("quantities_kw", JSON, nullable=False),      # one per slot of the window (0 = not offered)
    Column("prices_yuan_per_kwh", JSON, nullable=False),
    Column("capability_kw", Float, nullable=False),     # the bound it was checked against
    Column("submitted_by", String(100), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Index("ix_declarations_event", "event_id", "unit_id", "version", unique=True),
)

awards = Table(
    "awards",
    metadata,
    Column("event_id", String(ID), ForeignKey("events.event_id"), primary_key=True),
    Column("unit_id", String(ID), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("operator_id", String(ID), ForeignKey("operators.operator_id"), nullable=False),
    Column("cleared_kw", Float, nullable=False),
    Column("price_yuan_per_kwh", Float, nullable=False),
)

instructions = Table(
    "instructions",
    metadata,
    Column("instruction_id", String(ID), primary_key=True),
    Column("event_id", String(ID), ForeignKey("events.event_id"), nullable=False),
    Column("level", String(8), nullable=False),          # operator | device
    Column("operator_id", String(ID), ForeignKey("operators.operator_id"), nullable=False),
    Column("unit_id", String(ID)),
    Column("resource_id", String(ID)),                   # device-level only
    Column("parent_id", String(ID)),                     # device instruction → its operator instruction
    Column("slot", Integer, nullable=False),
    Column("kw", Float, nullable=False),                 # requested change, positive = delivered direction
    Column("state", String(12), nullable=False),         # sent, acked, rejected, timeout, cancelled
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("ack_deadline", DateTime(timezone=True), nullable=False),
    Column("acked_at", DateTime(timezone=True)),
    Column("reason", Text),
    Column("payload", JSON),
    Index("ix_instructions_event", "event_id", "level", "state"),
    Index("ix_instructions_resource", "resource_id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("topic", String(200), nullable=False),        # e.g. events/OP01, instructions/OP01
    Column("operator_id", String(ID)),                   # NULL = every operator
    Column("payload", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_outbox_operator", "operator_id", "seq"),
)

# files of an event: the trading units' members as dispatched, taken when the event starts executing
# (one Arrow IPC file, store.event_files; migration 0014)
event_files = Table(
    "event_files",
    metadata,
    Column("event_id", String(ID), ForeignKey("events.event_id"), nullable=False),
    Column("name", String(24), nullable=False),          # members
    Column("path", String(400), nullable=False),         # relative to store.event_files.files_root
    Column("format", String(24), nullable=False),        # arrow-ipc
    Column("sha256", String(64), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("event_id", "name", name="pk_event_files"),
)
