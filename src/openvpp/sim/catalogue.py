"""What the synthetic city is made of: operators, site categories and resource groups.

A *resource group* is one usage class of one resource type (home AC piles,
public DC piles, office central AC, factory rooftop PV...). It fixes the share
of its type, the size distribution and its basis, where it stands (new sites of
a category, or co-located at existing sites), and the distributions of
archetype, operator, protocol, response mode, latency, adjustable capability
and duration. Shares, sizes and fractions are assumptions of the simulator
(documented in ``docs/city-files.md``), not policy numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openvpp.model.enums import OperatorKind as OK
from openvpp.model.enums import OperatorState as OS
from openvpp.model.enums import OwnerKind
from openvpp.model.enums import ResourceType as RT

# --------------------------------------------------------------------------- operators


@dataclass(frozen=True)
class Operator:
    operator_id: str
    name: str
    name_zh: str
    kind: OK
    state: OS
    division: str     # administrative division of its registration (for the credit code)


OPERATORS: tuple[Operator, ...] = (
    Operator("OP01", "Yangcheng Central AC Aggregation Co., Ltd.", "羊城中央空调聚合有限公司",
             OK.CENTRAL_AC_AGGREGATOR, OS.ADMITTED, "440106"),
    Operator("OP02", "Guangzhou V2G Joint Operations Co., Ltd.", "广州车网互动联合运营有限公司",
             OK.V2G_OPERATOR, OS.ADMITTED, "440105"),
    Operator("OP03", "Suiyun Charging Network Co., Ltd.", "穗运充电网络有限公司",
             OK.CHARGING_OPERATOR, OS.ADMITTED, "440111"),
    Operator("OP04", "Pearl River EV Charging Services Co., Ltd.", "珠江电动汽车充电服务有限公司",
             OK.CHARGING_OPERATOR, OS.ADMITTED, "440113"),
    Operator("OP05", "Huacheng Fast Charging Technology Co., Ltd.", "花城快充科技有限公司",
             OK.CHARGING_OPERATOR, OS.APPLIED, "440114"),
    Operator("OP06", "Lingnan Energy Storage Investment Co., Ltd.", "岭南储能投资有限公司",
             OK.STORAGE_INVESTOR, OS.ADMITTED, "440112"),
    Operator("OP07", "Guangzhou Grid Backstop Aggregation Service", "广州电网兜底聚合服务中心",
             OK.GRID_BACKSTOP, OS.ADMITTED, "440104"),
    Operator("OP08", "Nansha Bay Area Energy Co., Ltd.", "南沙湾区能源有限公司",
             OK.BAY_AREA_ENTITY, OS.ADMITTED, "440115"),
    Operator("OP09", "Guangzhou Telecom Energy Services Co., Ltd.", "广州通信能源服务有限公司",
             OK.TELECOM_OPERATOR, OS.ADMITTED, "440106"),
    Operator("OP10", "Huangpu Data Center Energy Co., Ltd.", "黄埔数据中心能源有限公司",
             OK.DATA_CENTER_OPERATOR, OS.ADMITTED, "440112"),
    Operator("OP11", "Sunroof PV Aggregation Co., Ltd.", "阳光屋顶光伏聚合有限公司",
             OK.PV_AGGREGATOR, OS.UNDER_REVIEW, "440118"),
    Operator("OP12", "Canton Load Aggregation Co., Ltd.", "广府负荷聚合有限公司",
             OK.LOAD_AGGREGATOR, OS.ADMITTED, "440106"),
    Operator("OP13", "Baiyun Smart Energy Services Co., Ltd.", "白云智慧能源服务有限公司",
             OK.LOAD_AGGREGATOR, OS.ADMITTED, "440111"),
    Operator("OP14", "Panyu Distributed Energy Co., Ltd.", "番禺分布式能源有限公司",
             OK.PV_AGGREGATOR, OS.ADMITTED, "440113"),
)
OPERATOR_INDEX = {op.operator_id: i for i, op in enumerate(OPERATORS)}

_CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"   # GB 32100-2015 alphabet (no I, O, S, V, Z)


def credit_code(division: str, serial: int) -> str:
    """A well-formed unified social credit code (GB 32100-2015) for a synthetic enterprise.

    '9' (industry & commerce) + '1' (enterprise) + division + 9-character
    organisation code (8 characters and its GB 11714 check) + check character.
    """
    body = f"MA{serial:06d}"
    vals = [int(c, 36) for c in body]
    c9 = 11 - sum(w * v for w, v in zip((3, 7, 9, 10, 5, 8, 4, 2), vals, strict=True)) % 11
    org = body + {10: "X", 11: "0"}.get(c9, str(c9))
    head = "91" + division + org
    total = sum(_CODE_CHARS.index(c) * pow(3, i, 31) for i, c in enumerate(head))
    return head + _CODE_CHARS[(31 - total % 31) % 31]


# --------------------------------------------------------------------------- sites

RING = {"core": 0, "inner": 1, "outer": 2}


@dataclass(frozen=True)
class SiteCategory:
    key: str
    label: str
    label_zh: str
    weights: str | dict[str, float]     # "pop" | "gdp" | "base" or explicit per district code
    ring: tuple[float, float, float]    # multiplier for core / inner / outer districts
    owner_kind: OwnerKind
    owner_label: str
    pool: str = ""                      # owners shared by many sites (named pool)
    pool_size: int = 0                  # fixed pool size; else one owner per pool_per sites
    pool_per: int = 0


SITE_CATEGORIES: tuple[SiteCategory, ...] = (
    SiteCategory("community", "Residential community", "住宅小区", "pop", (1.0, 1.0, 0.8),
                 OwnerKind.RESIDENTIAL, "Owners' committee"),
    SiteCategory("village_house", "Village house", "村屋", "pop", (0.3, 1.2, 1.6),
                 OwnerKind.RESIDENTIAL, "Household"),
    SiteCategory("office", "Office building", "写字楼", "base", (2.0, 1.0, 0.5),
                 OwnerKind.COMMERCIAL, "Office property company"),
    SiteCategory("mall", "Shopping mall", "商场", "base", (1.8, 1.0, 0.6),
                 OwnerKind.COMMERCIAL, "Retail property company"),
    SiteCategory("hotel", "Hotel", "酒店", "base", (1.8, 1.0, 0.7),
                 OwnerKind.COMMERCIAL, "Hotel company"),
    SiteCategory("public_building", "Public building", "公共建筑", "pop", (1.3, 1.0, 0.8),
                 OwnerKind.PUBLIC, "Public institution"),
    SiteCategory("station", "Charging station", "充电站", "base", (1.0, 1.1, 0.9),
                 OwnerKind.COMMERCIAL, "Charging assets company", pool="charging", pool_per=8),
    SiteCategory("swap_station", "Battery swap station", "换电站", "base", (1.0, 1.1, 0.8),
                 OwnerKind.COMMERCIAL, "Battery swap company", pool="swap", pool_per=10),
    SiteCategory("factory", "Factory", "厂房", "gdp", (0.15, 1.3, 1.3),
                 OwnerKind.INDUSTRIAL, "Manufacturer"),
    SiteCategory("cooling_station", "District cooling station", "区域供冷站",
                 {"TH": 0.35, "HZ": 0.15, "NS": 0.15, "HP": 0.15, "PY": 0.15, "BY": 0.05}, (1, 1, 1),
                 OwnerKind.PUBLIC, "District energy company"),
    SiteCategory("dc_campus", "Data center", "数据中心",
                 {"HP": 0.25, "NS": 0.2, "PY": 0.15, "TH": 0.1, "BY": 0.1, "ZC": 0.1, "HD": 0.1}, (1, 1, 1),
                 OwnerKind.COMMERCIAL, "Data center company"),
    SiteCategory("storage_site", "Storage station", "储能站", "pop", (0.8, 1.2, 1.0),
                 OwnerKind.PUBLIC, "Urban village collective"),
    SiteCategory("terminal", "Port terminal", "港口码头", {"NS": 0.6, "HP": 0.3, "PY": 0.05, "HZ": 0.05},
                 (1, 1, 1), OwnerKind.COMMERCIAL, "Port company", pool="port", pool_size=4),
    SiteCategory("pier", "Passenger pier", "客运码头", {"YX": 0.3, "HZ": 0.3, "LW": 0.2, "TH": 0.2},
                 (1, 1, 1), OwnerKind.PUBLIC, "Pearl River shipping company", pool="pier", pool_size=2),
    SiteCategory("mast", "Base-station mast", "通信铁塔", "pop", (1.0, 1.0, 1.3),
                 OwnerKind.COMMERCIAL, "Telecom carrier", pool="telecom", pool_size=4),
)
SITE_INDEX = {c.key: i for i, c in enumerate(SITE_CATEGORIES)}


# --------------------------------------------------------------------------- resource groups


@dataclass(frozen=True)
class Size:
    """Size distribution of capacity_kw: discrete standard sizes or a clipped, rounded lognormal."""

    values: tuple[float, ...] = ()
    probs: tuple[float, ...] = ()
    median: float = 0.0
    sigma: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    step: float = 1.0
    factor: float = 1.0     # capacity_kw = drawn size x factor (e.g. IT load x design PUE)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.values:
            x = rng.choice(np.asarray(self.values, dtype=float), size=n, p=np.asarray(self.probs) / sum(self.probs))
        else:
            x = np.clip(rng.lognormal(np.log(self.median), self.sigma, n), self.lo, self.hi)
            x = np.clip(np.round(x / self.step) * self.step, self.lo, self.hi)
        return np.round(x * self.factor, 3)


@dataclass(frozen=True)
class Group:
    key: str
    rtype: RT
    share: float                       # share of its resource type's count
    label: str                         # resource display name prefix
    size: Size
    site: str                          # new sites of this category, or "host:a+b" = co-located at them
    archetypes: dict[str, float]
    operators: dict[str, float]        # "" = no operator yet
    protocols: dict[str, float]
    modes: dict[str, float]
    latency_s: float                   # median latency when automatic
    up: tuple[float, float]            # adjustable_up_kw / capacity_kw range
    down: tuple[float, float]          # adjustable_down_kw / capacity_kw range
    duration_h: dict[float, float]
    per_site: float = 1.0              # median resources per new site (lognormal spread)
    host_share: float = 1.0            # share of host sites that take this group
    per_site_choice: bool = False      # archetype and operator chosen per site (a station has one operator)
    one_per_host: bool = False         # at most one such resource per host site while hosts last
    kva_factor: float = 0.0            # capacity_kva = capacity_kw x factor (0 = same as kW)
    since: int = 2015                  # first commissioning year
    owner: str = "site"                # "site" | "household" | "pool:<pool>"
    core_archetype: str = ""           # archetype forced in core districts
    notes: str = ""                    # basis of the sizes (docs)


OCPP = {"ocpp1.6": 0.55, "ocpp2.0.1": 0.35, "mqtt": 0.1}
AUTO = {"automatic": 1.0}
AC_PROTO = {"mqtt": 0.5, "openadr2.0b": 0.25, "http": 0.15, "iec104": 0.1}
AC_MODES = {"semi_automatic": 0.85, "automatic": 0.1, "manual": 0.05}
AC_OPS = {"OP01": 0.6, "OP12": 0.15, "OP13": 0.15, "OP07": 0.05, "": 0.05}
AC_DUR = {1.0: 0.4, 1.5: 0.3, 2.0: 0.3}
STORAGE_PROTO = {"modbus_sunspec": 0.75, "mqtt": 0.15, "iec104": 0.1}
STORAGE_SIZE = Size(median=215.0, sigma=1.0, lo=50.0, hi=5000.0, step=5.0)   # kW at 0.5C: 100 kWh-10 MWh
SHORE = dict(protocols={"iec104": 0.6, "mqtt": 0.4}, modes={"manual": 0.6, "semi_automatic": 0.4},
             latency_s=60.0, up=(0.2, 0.5), down=(0.2, 0.5), duration_h={2.0: 0.3, 4.0: 0.4, 6.0: 0.3},
             kva_factor=1 / 0.9, since=2015, operators={"OP08": 0.9, "": 0.1})
PV = dict(modes=AUTO, up=(0.6, 1.0), down=(0.0, 0.0), duration_h={3.0: 0.5, 4.0: 0.5}, kva_factor=1.1, since=2013)
BS = dict(operators={"OP09": 0.9, "": 0.1}, protocols={"mqtt": 0.7, "http": 0.3},
          modes={"automatic": 0.9, "semi_automatic": 0.1}, latency_s=60.0, up=(0.1, 0.3), down=(0.5, 0.9),
          duration_h={1.0: 0.2, 2.0: 0.5, 3.0: 0.3}, since=2019, core_archetype="bs_urban")
V2G = dict(operators={"OP02": 0.8, "OP03": 0.15, "": 0.05}, protocols={"ocpp2.0.1": 0.8, "ocpp1.6": 0.2},
           modes=AUTO, latency_s=5.0, up=(0.8, 1.0), down=(0.8, 1.0), duration_h={1.0: 0.3, 2.0: 0.5, 3.0: 0.2},
           since=2022)

# Share of resources (by count) per type. Small devices dominate the count, large C&I sites the
# capacity: about 58 kW per resource on average, so ~100,000 resources land near the plan's 5 GW
# connected (2027). Base stations take the remainder.
TYPE_SHARES: dict[RT, float] = {
    RT.EV_CHARGING: 0.64, RT.V2G_CHARGER: 0.02, RT.EV_SWAPPING: 0.002, RT.CENTRAL_AC: 0.03,
    RT.DISTRICT_COOLING: 0.00005, RT.USER_STORAGE: 0.015, RT.SHORE_POWER: 0.0003, RT.DISTRIBUTED_PV: 0.12,
    RT.DATA_CENTER: 0.0001,
}
TYPE_SHARES[RT.BASE_STATION] = 1.0 - sum(TYPE_SHARES.values())

GROUPS: tuple[Group, ...] = (
    # ---- EV charging piles (one resource = one pile)
    Group("ev_home", RT.EV_CHARGING, 0.70, "Home AC pile",
          Size(values=(3.5, 7.0, 11.0), probs=(0.05, 0.85, 0.10)), "community",
          {"ev_home": 1.0}, {"OP03": 0.35, "OP04": 0.30, "OP07": 0.20, "OP05": 0.05, "OP02": 0.05, "": 0.05},
          {"ocpp1.6": 0.6, "mqtt": 0.3, "http": 0.1}, AUTO, 15.0, (0.3, 0.8), (0.6, 1.0),
          {2.0: 0.3, 3.0: 0.4, 4.0: 0.3}, per_site=40, owner="household", since=2016,
          notes="7 kW (32 A single-phase) dominates private piles; 3.5 kW (16 A) and 11 kW three-phase"),
    Group("ev_workplace", RT.EV_CHARGING, 0.12, "Workplace AC pile",
          Size(values=(7.0, 11.0, 22.0), probs=(0.6, 0.2, 0.2)), "host:office+mall+hotel+public_building",
          {"ev_workplace": 1.0}, {"OP03": 0.35, "OP04": 0.30, "OP12": 0.15, "OP13": 0.15, "": 0.05},
          {"ocpp1.6": 0.7, "ocpp2.0.1": 0.3}, AUTO, 15.0, (0.3, 0.6), (0.5, 1.0), {2.0: 0.5, 3.0: 0.5},
          host_share=0.35, since=2017, notes="7/11/22 kW AC (GB/T 18487.1 mode 3)"),
    Group("ev_public", RT.EV_CHARGING, 0.18, "Public DC pile",
          Size(values=(60.0, 120.0, 160.0, 240.0, 480.0), probs=(0.15, 0.45, 0.2, 0.15, 0.05)), "station",
          {"ev_public": 0.6, "ev_fleet": 0.4},
          {"OP03": 0.35, "OP04": 0.35, "OP05": 0.1, "OP02": 0.05, "OP07": 0.1, "": 0.05},
          OCPP, AUTO, 15.0, (0.2, 0.5), (0.3, 0.7), {1.0: 0.3, 2.0: 0.5, 3.0: 0.2},
          per_site=12, per_site_choice=True, since=2015,
          notes="GB/T DC piles: 120 kW most common, 60-240 kW, a few 480 kW liquid-cooled superchargers"),
    # ---- V2G bidirectional chargers
    Group("v2g_workplace", RT.V2G_CHARGER, 0.45, "V2G DC charger",
          Size(values=(20.0, 30.0, 40.0, 60.0), probs=(0.3, 0.3, 0.25, 0.15)), "host:office+public_building",
          {"v2g_workplace": 1.0}, host_share=0.1, **V2G, notes="bidirectional DC 20-60 kW"),
    Group("v2g_residential", RT.V2G_CHARGER, 0.25, "Home V2G charger",
          Size(values=(7.0, 11.0), probs=(0.7, 0.3)), "host:community",
          {"v2g_residential": 1.0}, owner="household", host_share=0.3, **V2G,
          notes="bidirectional AC 7/11 kW wallboxes"),
    Group("v2g_public", RT.V2G_CHARGER, 0.30, "Public V2G charger",
          Size(values=(40.0, 60.0), probs=(0.5, 0.5)), "host:station",
          {"v2g_workplace": 1.0}, host_share=0.3, **V2G, notes="bidirectional DC 40/60 kW"),
    # ---- battery swapping stations
    Group("swap", RT.EV_SWAPPING, 1.0, "Battery swap station",
          Size(values=(500.0, 630.0, 1000.0, 1250.0, 2000.0, 2500.0), probs=(0.25, 0.25, 0.2, 0.15, 0.1, 0.05)),
          "swap_station", {"ev_swap_taxi": 0.6, "ev_swap_private": 0.4},
          {"OP04": 0.5, "OP12": 0.3, "OP03": 0.15, "": 0.05}, {"mqtt": 0.6, "http": 0.2, "iec104": 0.2},
          {"automatic": 0.7, "semi_automatic": 0.3}, 60.0, (0.3, 0.5), (0.4, 0.7), {2.0: 1.0}, since=2020,
          notes="car swap stations 500-630 kVA, taxi/truck stations 1-2.5 MVA"),
    # ---- central air conditioning (one resource = one building's chiller plant)
    Group("ac_office", RT.CENTRAL_AC, 0.38, "Central AC",
          Size(median=500.0, sigma=0.6, lo=200.0, hi=3000.0, step=10.0), "office",
          {"ac_office": 1.0}, AC_OPS, AC_PROTO, AC_MODES, 30.0, (0.0, 0.1), (0.1, 0.3), AC_DUR, since=2000,
          notes="chiller plant electric kW: ~25-40 W/m2 over 10,000-60,000 m2"),
    Group("ac_mall", RT.CENTRAL_AC, 0.18, "Central AC",
          Size(median=900.0, sigma=0.5, lo=200.0, hi=3000.0, step=10.0), "mall",
          {"ac_mall": 1.0}, AC_OPS, AC_PROTO, AC_MODES, 30.0, (0.0, 0.1), (0.1, 0.3), AC_DUR, since=2000),
    Group("ac_hotel", RT.CENTRAL_AC, 0.14, "Central AC",
          Size(median=600.0, sigma=0.5, lo=200.0, hi=3000.0, step=10.0), "hotel",
          {"ac_hotel": 1.0}, AC_OPS, AC_PROTO, AC_MODES, 30.0, (0.0, 0.1), (0.1, 0.25), AC_DUR, since=2000),
    Group("ac_public", RT.CENTRAL_AC, 0.20, "Central AC",
          Size(median=500.0, sigma=0.6, lo=200.0, hi=3000.0, step=10.0), "public_building",
          {"ac_office": 0.6, "ac_hotel": 0.4}, {"OP01": 0.5, "OP07": 0.25, "OP13": 0.2, "": 0.05},
          AC_PROTO, AC_MODES, 30.0, (0.0, 0.1), (0.1, 0.3), AC_DUR, since=2000),
    Group("ac_industrial", RT.CENTRAL_AC, 0.10, "Central AC",
          Size(median=400.0, sigma=0.6, lo=200.0, hi=3000.0, step=10.0), "host:factory",
          {"ac_office": 1.0}, AC_OPS, AC_PROTO, {"manual": 0.4, "semi_automatic": 0.6}, 30.0,
          (0.0, 0.1), (0.1, 0.3), AC_DUR, one_per_host=True, since=2005),
    # ---- district cooling stations
    Group("dcool", RT.DISTRICT_COOLING, 1.0, "District cooling plant",
          Size(median=12000.0, sigma=0.4, lo=5000.0, hi=30000.0, step=100.0), "cooling_station",
          {"dcool_storage": 0.6, "dcool_direct": 0.4}, {"OP01": 0.5, "OP12": 0.3, "OP13": 0.15, "": 0.05},
          {"iec104": 0.8, "openadr2.0b": 0.2}, {"semi_automatic": 0.8, "automatic": 0.2}, 60.0,
          (0.2, 0.5), (0.2, 0.5), {2.0: 0.3, 3.0: 0.4, 4.0: 0.3}, kva_factor=1 / 0.9, since=2005,
          notes="5-30 MW electric (Zhujiang New Town plant: ~20 MW electric)"),
    # ---- user-side storage (capacity = PCS power at 0.5C; energy = 2 h x power)
    Group("storage_building", RT.USER_STORAGE, 0.35, "Battery storage", STORAGE_SIZE,
          "host:office+mall+hotel+public_building", {"storage_two_cycle": 1.0},
          {"OP06": 0.5, "OP12": 0.2, "OP13": 0.2, "OP11": 0.05, "": 0.05}, STORAGE_PROTO, AUTO, 2.0,
          (1.0, 1.0), (1.0, 1.0), {1.8: 1.0}, host_share=0.3, one_per_host=True, kva_factor=1.1, since=2019,
          notes="100 kWh-10 MWh (lognormal, median 430 kWh = two 215 kWh cabinets) at 0.5C"),
    Group("storage_factory", RT.USER_STORAGE, 0.40, "Battery storage",
          Size(median=400.0, sigma=1.0, lo=50.0, hi=5000.0, step=5.0), "host:factory",
          {"storage_one_cycle": 0.6, "storage_two_cycle": 0.4},
          {"OP06": 0.5, "OP12": 0.25, "OP13": 0.2, "": 0.05}, STORAGE_PROTO, AUTO, 2.0,
          (1.0, 1.0), (1.0, 1.0), {1.8: 1.0}, host_share=0.5, one_per_host=True, kva_factor=1.1, since=2019),
    Group("storage_station", RT.USER_STORAGE, 0.15, "Battery storage",
          Size(median=200.0, sigma=0.7, lo=50.0, hi=2000.0, step=5.0), "host:station",
          {"storage_two_cycle": 1.0}, {"OP06": 0.4, "OP03": 0.25, "OP04": 0.25, "": 0.1}, STORAGE_PROTO, AUTO,
          2.0, (1.0, 1.0), (1.0, 1.0), {1.8: 1.0}, host_share=0.3, kva_factor=1.1, since=2019),
    Group("storage_dc", RT.USER_STORAGE, 0.05, "Battery storage",
          Size(median=1000.0, sigma=0.7, lo=200.0, hi=5000.0, step=5.0), "host:dc_campus",
          {"storage_two_cycle": 1.0}, {"OP10": 0.7, "OP06": 0.25, "": 0.05}, STORAGE_PROTO, AUTO, 2.0,
          (1.0, 1.0), (1.0, 1.0), {1.8: 1.0}, kva_factor=1.1, since=2019),
    Group("storage_village", RT.USER_STORAGE, 0.05, "Battery storage",
          Size(median=500.0, sigma=0.6, lo=100.0, hi=5000.0, step=5.0), "storage_site",
          {"storage_two_cycle": 1.0}, {"OP07": 0.6, "OP06": 0.35, "": 0.05}, STORAGE_PROTO, AUTO, 2.0,
          (1.0, 1.0), (1.0, 1.0), {1.8: 1.0}, kva_factor=1.1, since=2020),
    # ---- port shore power (capacity_kw = 0.9 x the outlet's kVA)
    Group("shore_container", RT.SHORE_POWER, 0.4, "Container berth shore power",
          Size(values=(2000.0, 2500.0, 4000.0, 5000.0), probs=(0.2, 0.3, 0.3, 0.2), factor=0.9), "terminal",
          {"shore_container_a": 0.5, "shore_container_b": 0.5}, per_site=2, **SHORE,
          notes="high-voltage shore power 2-5 MVA (IEC/IEEE 80005-1)"),
    Group("shore_bulk", RT.SHORE_POWER, 0.3, "Bulk berth shore power",
          Size(values=(630.0, 1000.0, 1600.0), probs=(0.3, 0.4, 0.3), factor=0.9), "terminal",
          {"shore_bulk": 1.0}, per_site=2, **SHORE, notes="low-voltage shore power 630-1600 kVA"),
    Group("shore_craft", RT.SHORE_POWER, 0.3, "Harbour craft shore power",
          Size(values=(300.0, 500.0, 630.0), probs=(0.4, 0.4, 0.2), factor=0.9), "pier",
          {"shore_harbour_craft": 1.0}, per_site=3, **SHORE, notes="300-630 kVA for river cruise boats"),
    # ---- distributed PV (capacity = inverter AC kW; injection is negative load)
    Group("pv_residential", RT.DISTRIBUTED_PV, 0.72, "Rooftop PV",
          Size(median=12.0, sigma=0.6, lo=5.0, hi=50.0, step=0.5), "village_house",
          {"pv_south": 0.7, "pv_east_west": 0.3}, {"OP11": 0.35, "OP14": 0.35, "OP07": 0.1, "OP08": 0.05, "": 0.15},
          {"http": 0.5, "mqtt": 0.3, "modbus_sunspec": 0.2}, latency_s=30.0, **PV,
          notes="village-house rooftops 5-50 kW (median 12 kW)"),
    Group("pv_commercial", RT.DISTRIBUTED_PV, 0.14, "Rooftop PV",
          Size(median=150.0, sigma=0.6, lo=50.0, hi=500.0, step=1.0), "host:office+mall+hotel+public_building",
          {"pv_south": 0.4, "pv_east_west": 0.3, "pv_flat": 0.3},
          {"OP11": 0.3, "OP14": 0.3, "OP12": 0.2, "OP06": 0.1, "": 0.1},
          {"modbus_sunspec": 0.7, "mqtt": 0.2, "http": 0.1}, latency_s=10.0, host_share=0.4, one_per_host=True, **PV,
          notes="commercial rooftops 50-500 kW"),
    Group("pv_industrial", RT.DISTRIBUTED_PV, 0.14, "Rooftop PV",
          Size(median=400.0, sigma=0.7, lo=200.0, hi=2000.0, step=5.0), "factory",
          {"pv_flat": 0.7, "pv_south": 0.3}, {"OP14": 0.35, "OP11": 0.25, "OP08": 0.15, "OP12": 0.2, "": 0.05},
          {"modbus_sunspec": 0.6, "iec104": 0.25, "mqtt": 0.15}, latency_s=10.0, **PV,
          notes="factory metal roofs 200 kW-2 MW (median 400 kW)"),
    # ---- data centers (capacity = IT load x design PUE 1.5)
    Group("dc", RT.DATA_CENTER, 1.0, "Data center",
          Size(median=4000.0, sigma=0.9, lo=1000.0, hi=50000.0, step=100.0, factor=1.5), "dc_campus",
          {"dc_colocation": 0.6, "dc_enterprise": 0.4}, {"OP10": 0.8, "OP12": 0.1, "": 0.1},
          {"iec104": 0.5, "openadr2.0b": 0.4, "http": 0.1}, {"semi_automatic": 0.7, "manual": 0.2, "automatic": 0.1},
          60.0, (0.0, 0.08), (0.05, 0.2), {1.0: 0.3, 2.0: 0.5, 4.0: 0.2}, kva_factor=1 / 0.95, since=2010,
          notes="IT load 1-50 MW (lognormal, median 4 MW) x design PUE 1.5"),
    # ---- telecom base stations (down = run on the backup battery)
    Group("bs_mast", RT.BASE_STATION, 0.6, "Base station",
          Size(median=5.0, sigma=0.45, lo=3.0, hi=15.0, step=0.1), "mast",
          {"bs_urban": 0.4, "bs_suburban": 0.6}, **BS, notes="5G site 3-15 kW (median 5 kW, multi-carrier sites)"),
    Group("bs_rooftop", RT.BASE_STATION, 0.4, "Base station",
          Size(median=4.5, sigma=0.4, lo=3.0, hi=15.0, step=0.1), "host:office+mall+hotel+community",
          {"bs_urban": 0.6, "bs_suburban": 0.4}, host_share=0.3, owner="pool:telecom", **BS),
)

OWNER_KINDS = tuple(OwnerKind)
REVENUE_SHARE = {   # owner's share of revenue (fixed-share contract), uniform choice among these (assumption)
    OwnerKind.RESIDENTIAL: (0.8, 0.85, 0.9),
    OwnerKind.COMMERCIAL: (0.6, 0.65, 0.7, 0.75, 0.8),
    OwnerKind.INDUSTRIAL: (0.6, 0.65, 0.7, 0.75, 0.8),
    OwnerKind.PUBLIC: (0.5, 0.6, 0.7),
}


def check_catalogue() -> None:
    """Shares of each type's groups sum to 1; type shares sum to 1 (a programming error otherwise)."""
    for rt in RT:
        total = sum(g.share for g in GROUPS if g.rtype == rt)
        assert abs(total - 1.0) < 1e-9, (rt, total)
    assert abs(sum(TYPE_SHARES.values()) - 1.0) < 1e-9
    for g in GROUPS:
        for key in g.site.removeprefix("host:").split("+"):
            assert key in SITE_INDEX, (g.key, key)

