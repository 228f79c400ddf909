"""Closed vocabularies of the domain. Values are stable strings used in files, the API and the DB."""

from __future__ import annotations

from enum import StrEnum


class ResourceType(StrEnum):
    """Flexible resource types named by the Guangzhou plan (RULES.md, 'Resource library')."""

    EV_CHARGING = "ev_charging"            # EV charging station / pile group (充电站)
    EV_SWAPPING = "ev_swapping"            # battery swapping station (换电站)
    V2G_CHARGER = "v2g_charger"            # bidirectional charger (车网互动)
    CENTRAL_AC = "central_ac"              # building central air conditioning (中央空调)
    DISTRICT_COOLING = "district_cooling"  # district cooling station (区域集中供冷)
    USER_STORAGE = "user_storage"          # user-side battery storage (用户侧储能)
    SHORE_POWER = "shore_power"            # port shore power (港口岸电)
    DISTRIBUTED_PV = "distributed_pv"      # distributed photovoltaics (分布式光伏)
    DATA_CENTER = "data_center"            # data center (数据中心)
    BASE_STATION = "base_station"          # telecom base station (通信基站)


class OperatorKind(StrEnum):
    CENTRAL_AC_AGGREGATOR = "central_ac_aggregator"
    V2G_OPERATOR = "v2g_operator"
    CHARGING_OPERATOR = "charging_operator"
    STORAGE_INVESTOR = "storage_investor"
    GRID_BACKSTOP = "grid_backstop"            # grid company as backstop (urban villages, temporary supply)
    BAY_AREA_ENTITY = "bay_area_entity"        # shore power, PV surplus trading
    LOAD_AGGREGATOR = "load_aggregator"        # general commercial/industrial aggregator
    TELECOM_OPERATOR = "telecom_operator"      # base-station fleets
    DATA_CENTER_OPERATOR = "data_center_operator"
    PV_AGGREGATOR = "pv_aggregator"


class OwnerKind(StrEnum):
    RESIDENTIAL = "residential"
    COMMERCIAL = "commercial"
    INDUSTRIAL = "industrial"
    PUBLIC = "public"


class ResponseMode(StrEnum):
    AUTOMATIC = "automatic"
    SEMI_AUTOMATIC = "semi_automatic"
    MANUAL = "manual"


class ControlProtocol(StrEnum):
    MQTT = "mqtt"
    OCPP16 = "ocpp1.6"
    OCPP201 = "ocpp2.0.1"
    OPENADR2B = "openadr2.0b"
    MODBUS_SUNSPEC = "modbus_sunspec"
    IEC104 = "iec104"
    HTTP = "http"


class GridLevel(StrEnum):
    CITY = "city"
    DISTRICT = "district"
    SUBSTATION = "substation"          # 220 kV clearing node
    FEEDER = "feeder"                  # 10 kV feeder
    TRANSFORMER_AREA = "transformer_area"  # 台区

    @property
    def depth(self) -> int:
        return GRID_LEVELS.index(self)


GRID_LEVELS: list[GridLevel] = list(GridLevel)


class OperatorState(StrEnum):
    APPLIED = "applied"
    UNDER_REVIEW = "under_review"
    ADMITTED = "admitted"
    SUSPENDED = "suspended"
    EXITED = "exited"
    REJECTED = "rejected"


class ResourceState(StrEnum):
    REGISTERED = "registered"   # submitted, awaiting approval
    ACTIVE = "active"           # approved, counts in the city database
    REJECTED = "rejected"
    RETIRED = "retired"


class Role(StrEnum):
    CITY_ADMIN = "city_admin"
    DISPATCHER = "dispatcher"
    OPERATOR_ADMIN = "operator_admin"
    OPERATOR_ENGINEER = "operator_engineer"
    OWNER = "owner"
    AUDITOR = "auditor"
    DEVICE = "device"           # machines: gateways, peer platforms (API keys)
