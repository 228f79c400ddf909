"""Facts about Guangzhou that shape the synthetic city (districts, climate, standard sizes).

Every number here is a public fact, rounded, or a labelled assumption; the
basis of each is given next to it and summarised in ``docs/city-files.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

LAT, LON, ALTITUDE_M = 23.13, 113.26, 20.0   # city centre (Haizhu Square area)


@dataclass(frozen=True)
class District:
    code: str          # two-letter code used in node ids (GZ-XX)
    name: str
    name_zh: str
    division: str      # administrative division code (GB/T 2260)
    population_10k: float   # resident population, 7th national census (2020), 10^4 persons, rounded
    gdp_100m_yuan: float    # GDP 2023, 10^8 yuan, approximate (rounded to 100), Guangzhou statistics
    area_km2: float         # land area, approximate
    lat: float              # rough centre of the built-up area
    lon: float
    ring: str               # "core" | "inner" | "outer" (urban core, inner suburbs, outer districts)


DISTRICTS: tuple[District, ...] = (
    District("YX", "Yuexiu", "越秀区", "440104", 103.9, 3800, 33.8, 23.129, 113.267, "core"),
    District("HZ", "Haizhu", "海珠区", "440105", 181.9, 2300, 90.4, 23.090, 113.318, "core"),
    District("LW", "Liwan", "荔湾区", "440103", 112.4, 1300, 59.1, 23.110, 113.238, "core"),
    District("TH", "Tianhe", "天河区", "440106", 224.2, 6500, 96.3, 23.135, 113.362, "core"),
    District("BY", "Baiyun", "白云区", "440111", 374.0, 2700, 795.8, 23.270, 113.290, "inner"),
    District("HP", "Huangpu", "黄埔区", "440112", 126.4, 4300, 484.2, 23.170, 113.470, "inner"),
    District("PY", "Panyu", "番禺区", "440113", 265.8, 2900, 529.9, 22.950, 113.380, "inner"),
    District("HD", "Huadu", "花都区", "440114", 164.2, 1800, 970.0, 23.400, 113.220, "outer"),
    District("NS", "Nansha", "南沙区", "440115", 84.7, 2300, 783.9, 22.770, 113.530, "outer"),
    District("CH", "Conghua", "从化区", "440117", 72.0, 450, 1974.5, 23.550, 113.590, "outer"),
    District("ZC", "Zengcheng", "增城区", "440118", 146.6, 1400, 1616.5, 23.260, 113.790, "outer"),
)


def district_weights() -> list[float]:
    """Load weight of each district: 0.6 x population share + 0.4 x GDP share (assumption)."""
    pop = sum(d.population_10k for d in DISTRICTS)
    gdp = sum(d.gdp_100m_yuan for d in DISTRICTS)
    return [0.6 * d.population_10k / pop + 0.4 * d.gdp_100m_yuan / gdp for d in DISTRICTS]


# Monthly mean air temperature, deg C (approximate CMA normals, Jan 13.6 ... Jul 28.9).
MONTHLY_TEMP_C = (13.6, 15.0, 18.2, 22.1, 25.6, 27.6, 28.9, 28.7, 27.5, 24.9, 20.5, 15.4)
# Day-to-day standard deviation of the daily-mean temperature anomaly, deg C (assumption:
# winter cold surges make winter days far more variable than the monsoon summer).
MONTHLY_TEMP_SD_C = (2.6, 2.6, 2.3, 1.8, 1.4, 1.0, 0.9, 0.9, 1.0, 1.3, 1.8, 2.4)
# Mean diurnal half-range (amplitude of the daily cycle), deg C (approximate, ~6-8 K daily range).
DIURNAL_AMPLITUDE_C = 3.5
# Monthly sunshine hours (approximate normals; ~1,600 h a year, wet spring, sunny autumn).
MONTHLY_SUNSHINE_H = (118.0, 72.0, 63.0, 65.0, 104.0, 140.0, 200.0, 177.0, 170.0, 183.0, 172.0, 157.0)

# Standard distribution-transformer ratings (kVA, GB/T 6451 / S11-S13 series) for public
# transformer areas, with the share of each size (assumption: 400-800 kVA dominate in the city).
TA_KVA = (200, 315, 400, 500, 630, 800, 1000, 1250, 1600)
TA_KVA_SHARE = (0.04, 0.10, 0.15, 0.12, 0.24, 0.16, 0.10, 0.05, 0.04)
# Customer (dedicated, 专变) substations: one or more units of these ratings.
DEDICATED_KVA = (1000, 1250, 1600, 2000, 2500)
# 220 kV substations: 2x180, 3x180, 3x240 MVA main transformers (typical Guangdong builds).
SUBSTATION_KVA = (360_000, 540_000, 720_000)
FEEDER_KVA = 8_000   # thermal limit of one 10 kV feeder (approx. 3x300 mm2 XLPE cable)

# Guangdong industrial & commercial TOU periods (RULES.md), local hours [start, end).
TOU_PEAK_H = ((10, 12), (14, 19))
TOU_VALLEY_H = ((0, 8),)
TOU_CRITICAL_H = ((11, 12), (15, 17))   # July-September
