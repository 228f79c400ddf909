"""Evaluation, settlement, ledger and disputes (issue 7, migration 0006), on ``store.schema.metadata``.

``settlement_files`` (migration 0013) records the files a settlement revision wrote beside the
database: its owner parties as one Arrow IPC file (``store.settlement_files``); revisions stored
before keep their owner parties as rows of ``settlement_parties``.

Money is stored as integer fen (``*_fen``): exact on both databases; services turn it into
``Decimal`` yuan. ``ledger_entries`` is append-only: the service never updates or deletes a row
(corrections are new rows) and migration 0006 adds triggers that refuse UPDATE and DELETE.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
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

# one evaluation of an event; a dispute's re-evaluation is a new version (status candidate → current)
evaluations = Table(
    "evaluations",
    metadata,
    Column("evaluation_id", String(ID), primary_key=True),
    Column("event_id", String(ID), ForeignKey("events.event_id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(12), nullable=False),       # current | superseded | candidate | rejected
    Column("product", String(24), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("quantity_unit", String(8), nullable=False),  # kWh | kvarh | kW·h (reserve)
    Column("ruleset", String(64), nullable=False),
    Column("baseline_id", String(120), nullable=False),  # BaselineSpec.id, e.g. gbt-workday-5/2
    Column("baseline", JSON, nullable=False),            # method, resolved params, adjustment
    Column("meter_source", String(120), nullable=False),
    Column("telemetry_sha256", String(64), nullable=False),
    Column("inputs", JSON, nullable=False),              # history days, excluded days, band, members, assumptions
    Column("totals", JSON, nullable=False),
    Column("dispute_id", String(ID)),
    Column("reason", Text),
    Column("created_by", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_evaluations_event", "event_id", "version", unique=True),
)

# per resource (level 'resource') and per trading unit (level 'unit') and slot of the window
evaluation_rows = Table(
    "evaluation_rows",
    metadata,
    Column("evaluation_id", String(ID), ForeignKey("evaluations.evaluation_id"), nullable=False),
    Column("level", String(8), nullable=False),
    Column("key_id", String(ID), nullable=False),        # resource_id or unit_id
    Column("slot", Integer, nullable=False),
    Column("unit_id", String(ID), nullable=False),
    Column("operator_id", String(ID), nullable=False),
    Column("owner_id", String(ID)),                      # resources only
    Column("resource_type", String(32)),
    Column("baseline_kw", Float),                        # kvar for reactive; NULL = not measured
    Column("metered_kw", Float),
    Column("response_kw", Float),
    Column("cleared_kw", Float, nullable=False),
    Column("ratio", Float),
    Column("credited", Float, nullable=False),           # kWh, kvarh or kW·h (evaluations.quantity_unit)
    Column("v2g_kwh", Float, nullable=False),            # part of credited that is V2G discharge
    Column("shortfall", Float, nullable=False),          # below the band floor, same unit as credited
    Column("curtailed_kwh", Float, nullable=False),      # credited less rebound, 0 for load shifters
    Column("price_yuan", Float, nullable=False),         # cleared price per unit of quantity
    PrimaryKeyConstraint("evaluation_id", "level", "key_id", "slot", name="pk_evaluation_rows"),
    Index("ix_evaluation_rows_operator", "evaluation_id", "operator_id"),
)

# the yearly settlement: computed → reviewed → approved → paid (superseded when recomputed)
settlements = Table(
    "settlements",
    metadata,
    Column("settlement_id", String(ID), primary_key=True),
    Column("year", Integer, nullable=False),
    Column("state", String(12), nullable=False),
    Column("revision", Integer, nullable=False),         # raised by every re-settlement after a dispute
    Column("ruleset", String(64), nullable=False),
    Column("summary", JSON, nullable=False),             # budgets, claims, factors, evaluations used
    Column("created_by", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_settlements_year", "year", "state"),
)

# statement lines: per operator, event, trading unit and kind (active, reactive, reserve, v2g, penalty)
settlement_lines = Table(
    "settlement_lines",
    metadata,
    Column("line_id", String(ID), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("settlement_id", String(ID), ForeignKey("settlements.settlement_id"), nullable=False),
    Column("operator_id", String(ID), nullable=False),
    Column("event_id", String(ID), nullable=False),
    Column("evaluation_id", String(ID), nullable=False),
    Column("unit_id", String(ID), nullable=False),
    Column("kind", String(12), nullable=False),
    Column("quantity", Float, nullable=False),
    Column("quantity_unit", String(8), nullable=False),
    Column("rate_yuan", String(24)),                     # the rate when one rate applies to every slot
    Column("amount_fen", BigInteger, nullable=False),    # rounded half-up at the line; penalties negative
    Column("note", Text),
    PrimaryKeyConstraint("line_id", "revision", name="pk_settlement_lines"),
    Index("ix_settlement_lines_settlement", "settlement_id", "revision", "operator_id"),
)

# per operator (gross, pro rata, penalty, net) and per owner and contract (revenue, share) and revision
settlement_parties = Table(
    "settlement_parties",
    metadata,
    Column("settlement_id", String(ID), ForeignKey("settlements.settlement_id"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("party_kind", String(8), nullable=False),     # operator | owner
    Column("party_id", String(ID), nullable=False),
    Column("operator_id", String(ID), nullable=False),
    Column("contract", String(ID), nullable=False),      # contract id, 'default' (owners.revenue_share), '-' for operators
    Column("amounts", JSON, nullable=False),             # name → fen (int), see services.settlement
    PrimaryKeyConstraint("settlement_id", "revision", "party_kind", "party_id", "operator_id", "contract",
                         name="pk_settlement_parties"),
)

# files of a settlement revision beside the database (name 'owners': one row per owner, operator and
# contract), with their SHA-256: read back only if unchanged (store.settlement_files)
settlement_files = Table(
    "settlement_files",
    metadata,
    Column("settlement_id", String(ID), ForeignKey("settlements.settlement_id"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("name", String(24), nullable=False),          # owners
    Column("path", String(400), nullable=False),         # relative to store.settlement_files.files_root
    Column("format", String(24), nullable=False),        # arrow-ipc
    Column("sha256", String(64), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("settlement_id", "revision", "name", name="pk_settlement_files"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("entry_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("settlement_id", String(ID), ForeignKey("settlements.settlement_id"), nullable=False),
    Column("year", Integer, nullable=False),
    Column("party_kind", String(8), nullable=False),     # operator (paid by the grid company) | owner (by its operator)
    Column("party_id", String(ID), nullable=False),
    Column("operator_id", String(ID), nullable=False),
    Column("account", String(24), nullable=False),       # claim_active, prorata_main, penalty, owner_share, payment...
    Column("amount_fen", BigInteger, nullable=False),
    Column("ref", String(ID)),                           # revision, dispute id or payment batch
    Column("memo", Text),
    Column("created_by", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_ledger_party", "settlement_id", "party_kind", "party_id"),
)

disputes = Table(
    "disputes",
    metadata,
    Column("dispute_id", String(ID), primary_key=True),
    Column("settlement_id", String(ID), ForeignKey("settlements.settlement_id"), nullable=False),
    Column("line_id", String(ID), nullable=False),
    Column("operator_id", String(ID), nullable=False),
    Column("event_id", String(ID), nullable=False),
    Column("state", String(12), nullable=False),         # open | reevaluated | approved | rejected
    Column("reason", Text, nullable=False),
    Column("evidence", JSON, nullable=False),            # {"meter": {resource_id: [kW per window slot]}}
    Column("evaluation_before", String(ID), nullable=False),
    Column("evaluation_after", String(ID)),
    Column("difference", JSON),
    Column("decision", Text),
    Column("decided_by", String(100)),
    Column("decided_at", DateTime(timezone=True)),
    Column("created_by", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_disputes_settlement", "settlement_id", "state"),
)
