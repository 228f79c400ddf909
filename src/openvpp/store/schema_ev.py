"""EV charging tables (migration 0005), on the shared ``openvpp.store.schema.metadata``.

* ``ev_charge_points`` — each OCPP charge point (a resource of type ev_charging / v2g_charger,
  id = resource id): protocol version, boot data, connection state, connector status.
* ``ev_sessions`` — one row per charging transaction: meter readings, the energy charged and
  discharged so far split by TOU period (what the pilot KPIs and the V2G settlement read).
* ``ev_charging_profiles`` — every charging profile sent to a charge point and what became of it.
* ``ev_id_tags`` — registered ID tags / tokens (migration 0009): Accepted, Blocked, Expired.
* ``ev_credentials`` — a charge point's password for OCPP security profile 1 (basic auth), hashed.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from openvpp.store.schema import ID, metadata

TZ = DateTime(timezone=True)
PERIODS = ("valley", "flat", "peak", "critical")

ev_charge_points = Table(
    "ev_charge_points",
    metadata,
    Column("charge_point_id", String(ID), ForeignKey("resources.resource_id"), primary_key=True),
    Column("ocpp_version", String(8), nullable=False),
    Column("vendor", String(50)),
    Column("model", String(50)),
    Column("serial", String(50)),
    Column("firmware", String(50)),
    Column("boot_at", TZ),
    Column("last_seen_at", TZ),
    Column("connected", Boolean, nullable=False),
    Column("status", JSON),                 # {"<evse>/<connector>": "Available" | "Charging" | ...}
)

ev_sessions = Table(
    "ev_sessions",
    metadata,
    Column("session_id", String(ID), primary_key=True),
    Column("charge_point_id", String(ID), ForeignKey("ev_charge_points.charge_point_id"), nullable=False),
    Column("evse_id", Integer, nullable=False),
    Column("transaction_id", String(64), nullable=False),
    Column("id_token", String(64)),
    Column("ocpp_version", String(8), nullable=False),
    Column("state", String(16), nullable=False),      # active | completed
    Column("started_at", TZ, nullable=False),
    Column("stopped_at", TZ),
    Column("stop_reason", String(40)),
    Column("meter_start_wh", Float),
    Column("meter_last_wh", Float),
    Column("meter_last_at", TZ),
    Column("soc_last", Float),
    Column("battery_kwh", Float),
    Column("v2g", Boolean, nullable=False),
    *[Column(f"charge_{p}_kwh", Float, nullable=False, server_default="0") for p in PERIODS],
    *[Column(f"discharge_{p}_kwh", Float, nullable=False, server_default="0") for p in PERIODS],
    Index("uq_ev_sessions_transaction", "charge_point_id", "transaction_id", unique=True),
    Index("ix_ev_sessions_started", "started_at"),
    Column("departure_at", TZ),                        # 2.0.1 NotifyEVChargingNeeds departureTime (0009)
    Column("energy_requested_kwh", Float),             # energy the EV asks for by departure (0009)
)

ID_TAG_STATUSES = ("Accepted", "Blocked", "Expired")

ev_id_tags = Table(
    "ev_id_tags",
    metadata,
    Column("id_tag", String(64), primary_key=True),   # 1.6 idTag (20 chars) or 2.0.1 idToken (36 chars)
    Column("status", String(16), nullable=False),      # ID_TAG_STATUSES
    Column("operator_id", String(ID)),
    Column("expires_at", TZ),
    Column("note", Text),
    Column("updated_at", TZ, nullable=False),
)

ev_credentials = Table(
    "ev_credentials",
    metadata,
    Column("charge_point_id", String(ID), ForeignKey("resources.resource_id"), primary_key=True),
    Column("password_hash", String(200), nullable=False),
    Column("updated_at", TZ, nullable=False),
)

ev_charging_profiles = Table(
    "ev_charging_profiles",
    metadata,
    Column("row_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("charge_point_id", String(ID), ForeignKey("ev_charge_points.charge_point_id"), nullable=False),
    Column("evse_id", Integer, nullable=False),
    Column("profile_id", Integer, nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("stack_level", Integer, nullable=False),
    Column("transaction_id", String(64)),
    Column("schedule", JSON, nullable=False),      # {"start": iso, "unit": "W", "periods": [[start_s, limit], ...]}
    Column("state", String(16), nullable=False),   # sent | accepted | rejected | fallback | cleared
    Column("reason", Text),
    Column("created_at", TZ, nullable=False),
    Column("updated_at", TZ, nullable=False),
    Index("ix_ev_charging_profiles_cp", "charge_point_id", "state"),
)
