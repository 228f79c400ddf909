"""Archetype profiles of the synthetic city: one year of 15-min per-unit values per usage pattern.

Each archetype is a series of per-unit values of a resource's ``profile_scale_kw``
over the local calendar year (Asia/Shanghai), loads positive, generation
negative. They are built from:

- the real Chinese calendar (``chinese_calendar``: public holidays and make-up
  working days), mapped onto BDEW day types (working day / Saturday / Sunday);
- BDEW standard load profiles from ``demandlib.bdew.ElecSlp`` (G0-G4, H0) as
  occupancy and activity shapes;
- ``pvlib`` solar position, Ineichen clear sky (Linke turbidity climatology)
  and the Erbs decomposition at Guangzhou, times a seeded day-by-day
  sunshine fraction that follows Guangzhou's monthly sunshine hours;
- a seeded synthetic temperature series around Guangzhou's monthly normals,
  driving cooling loads through a cooling-degree relation;
- arrival-time models for EV charging, the Guangdong TOU periods for storage
  and V2G, and berth calls for shore power.

Everything depends only on (seed, year), never on the number of resources.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from openvpp.core.timeslots import SLOTS_PER_DAY, year_slots_utc
from openvpp.model.enums import ResourceType as RT
from openvpp.sim import guangzhou as gz

WORKDAY, REST, SUNDAY = 0, 1, 2      # day types (BDEW: working day, Saturday, Sunday/holiday)
WINTER, TRANSITION, SUMMER = 0, 1, 2  # BDEW seasons
_HOURS = (np.arange(SLOTS_PER_DAY) + 0.5) / 4.0   # slot centres, local hours

BDEW_SOURCE = "BDEW standard load profile {p} via demandlib.bdew.ElecSlp, Chinese calendar day types"


@dataclass(frozen=True)
class Archetype:
    archetype_id: str
    resource_type: RT
    pattern: str
    description: str
    source: str


@dataclass
class Year:
    """Calendar and synthetic weather of one local year; per-day arrays have n_days, per-slot n_slots."""

    year: int
    ts_utc: np.ndarray        # (n_slots,) datetime64[m], slot starts in UTC
    days: np.ndarray          # (n_days,) datetime64[D], local dates
    day_type: np.ndarray      # (n_days,) WORKDAY / REST / SUNDAY
    holiday: np.ndarray       # (n_days,) bool, statutory public holiday
    spring_festival: np.ndarray  # (n_days,) bool, Spring Festival holiday week
    month: np.ndarray         # (n_days,) 1..12
    season: np.ndarray        # (n_days,) BDEW season
    sunshine: np.ndarray      # (n_days,) relative sunshine fraction 0..1
    temp_day_c: np.ndarray    # (n_days,) daily mean temperature, deg C
    temp_c: np.ndarray        # (n_slots,) air temperature at slot centre, deg C
    calendar_source: str

    @property
    def n_days(self) -> int:
        return len(self.days)

    def per_slot(self, daily: np.ndarray) -> np.ndarray:
        """Repeat a per-day array over the 96 slots of each day."""
        return np.repeat(daily, SLOTS_PER_DAY)

    def by_day_type(self, shapes: np.ndarray) -> np.ndarray:
        """(3, 96) day shapes indexed by day type -> (n_slots,) year series."""
        return shapes[self.day_type].ravel()


# --------------------------------------------------------------------------- calendar & weather

def chinese_day_types(days: list[date]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Day type, statutory-holiday and Spring-Festival flags from the Chinese calendar.

    Working days (including make-up Saturdays/Sundays) are WORKDAY, ordinary
    Saturdays REST, Sundays and public holidays SUNDAY. Years the installed
    ``chinese_calendar`` does not know fall back to Monday-Friday working days.
    """
    import chinese_calendar as cc

    n = len(days)
    day_type = np.empty(n, dtype=np.int8)
    holiday = np.zeros(n, dtype=bool)
    spring = np.zeros(n, dtype=bool)
    try:
        for i, d in enumerate(days):
            on_holiday, name = cc.get_holiday_detail(d)
            holiday[i] = bool(on_holiday and name)
            spring[i] = holiday[i] and name == cc.Holiday.spring_festival.value
            if cc.is_workday(d):
                day_type[i] = WORKDAY
            elif holiday[i] or d.weekday() == 6:
                day_type[i] = SUNDAY
            else:
                day_type[i] = REST
        source = f"chinese_calendar {getattr(cc, '__version__', '')}".strip()
    except NotImplementedError:
        wd = np.array([d.weekday() for d in days])
        day_type = np.where(wd < 5, WORKDAY, np.where(wd == 5, REST, SUNDAY)).astype(np.int8)
        holiday[:] = False
        source = "weekday fallback (year not covered by chinese_calendar)"
    return day_type, holiday, spring, source


def bdew_season(months: np.ndarray, mdays: np.ndarray) -> np.ndarray:
    """BDEW seasons by date: summer 15 May-14 Sep, transition 21 Mar-14 May and 15 Sep-31 Oct, else winter."""
    md = months * 100 + mdays
    season = np.full(md.shape, WINTER, dtype=np.int8)
    season[((md >= 321) & (md <= 514)) | ((md >= 915) & (md <= 1031))] = TRANSITION
    season[(md >= 515) & (md <= 914)] = SUMMER
    return season


def _daylight_hours(ts_utc: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Solar position at slot centres and daylight hours per day (sun above the horizon)."""
    import pvlib

    times = pd.DatetimeIndex(ts_utc + np.timedelta64(450, "s"), tz="UTC")
    solpos = pvlib.solarposition.get_solarposition(times, gz.LAT, gz.LON, altitude=gz.ALTITUDE_M)
    up = (solpos["apparent_elevation"].to_numpy() > 0).reshape(-1, SLOTS_PER_DAY)
    return solpos, up.sum(axis=1) * 0.25


def synthetic_weather(rng: np.random.Generator, month: np.ndarray, daylight_h: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded daily sunshine fraction and daily mean temperature.

    Sunshine: Beta-distributed day by day around the monthly fraction
    (monthly sunshine hours / possible daylight hours), with AR(1) persistence
    (rho 0.5) through a Gaussian copula. Temperature: monthly normals
    interpolated to the day, plus an AR(1) anomaly (rho 0.7) whose spread
    follows the month, plus +-1 K for sunny/overcast days.
    """
    from scipy import special, stats

    n = len(month)
    possible = np.bincount(month - 1, weights=daylight_h, minlength=12)
    frac_month = np.clip(np.asarray(gz.MONTHLY_SUNSHINE_H) / possible, 0.05, 0.9)
    z = np.empty(n)
    a = np.empty(n)
    eps = rng.standard_normal((2, n))
    z[0], a[0] = eps[0, 0], eps[1, 0]
    for i in range(1, n):
        z[i] = 0.5 * z[i - 1] + np.sqrt(1 - 0.25) * eps[0, i]
        a[i] = 0.7 * a[i - 1] + np.sqrt(1 - 0.49) * eps[1, i]
    kappa = 4.0
    mean = frac_month[month - 1]
    sunshine = stats.beta.ppf(special.ndtr(z), kappa * mean, kappa * (1 - mean))

    doy = np.arange(n) + 0.5
    mid_month = (np.arange(12) + 0.5) * n / 12.0
    normal = np.interp(doy, mid_month, gz.MONTHLY_TEMP_C, period=n)
    sd = np.interp(doy, mid_month, gz.MONTHLY_TEMP_SD_C, period=n)
    temp_day = normal + sd * a + 2.0 * (sunshine - mean)
    return sunshine, temp_day


def build_year(year: int, seed: int) -> tuple[Year, pd.DataFrame]:
    """Calendar and seeded weather of ``year``; also returns the solar position (for PV)."""
    ts = year_slots_utc(year)
    first = date(year, 1, 1)
    n_days = len(ts) // SLOTS_PER_DAY
    pydays = [first + timedelta(days=i) for i in range(n_days)]
    days = np.array(pydays, dtype="datetime64[D]")
    month = np.array([d.month for d in pydays])
    mday = np.array([d.day for d in pydays])
    day_type, holiday, spring, source = chinese_day_types(pydays)
    solpos, daylight = _daylight_hours(ts)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 101]))
    sunshine, temp_day = synthetic_weather(rng, month, daylight)
    amplitude = gz.DIURNAL_AMPLITUDE_C * (0.6 + 0.8 * sunshine)
    diurnal = np.cos(2 * np.pi * (_HOURS - 14.5) / 24.0)
    temp = (temp_day[:, None] + amplitude[:, None] * diurnal[None, :]).ravel()
    y = Year(year, ts, days, day_type, holiday, spring, month, bdew_season(month, mday), sunshine,
             temp_day, temp, source)
    return y, solpos


# --------------------------------------------------------------------------- BDEW shapes

BDEW_PROFILES = ("g0", "g1", "g2", "g3", "g4", "h0")


def bdew_shapes(year: int) -> dict[str, np.ndarray]:
    """Day shapes (3 seasons, 3 day types, 96 slots) of BDEW profiles, each season scaled to max 1.

    The BDEW year is generated by ``demandlib.bdew.ElecSlp(year)`` without
    holidays (German ones do not apply); its days are grouped by BDEW season and
    by Monday-Friday / Saturday / Sunday, which we later map onto the Chinese
    calendar.
    """
    from demandlib.bdew import ElecSlp

    with warnings.catch_warnings():          # ElecSlp turns warnings into errors globally
        frame = ElecSlp(year).get_profiles(*BDEW_PROFILES)
    idx = frame.index
    values = frame.to_numpy().reshape(-1, SLOTS_PER_DAY, len(BDEW_PROFILES))
    dates = idx[::SLOTS_PER_DAY]
    season = bdew_season(np.asarray(dates.month), np.asarray(dates.day))
    wd = np.asarray(dates.weekday)
    dtype = np.where(wd < 5, WORKDAY, np.where(wd == 5, REST, SUNDAY))
    out = {}
    for k, name in enumerate(BDEW_PROFILES):
        shapes = np.empty((3, 3, SLOTS_PER_DAY))
        for s in (WINTER, TRANSITION, SUMMER):
            for t in (WORKDAY, REST, SUNDAY):
                shapes[s, t] = values[(season == s) & (dtype == t), :, k].mean(axis=0)
            shapes[s] /= shapes[s].max()
        out[name] = shapes
    return out


def bdew_year(y: Year, shapes: np.ndarray) -> np.ndarray:
    """Expand (season, day type, 96) BDEW shapes to the year along the Chinese calendar."""
    return shapes[y.season, y.day_type].ravel()


# --------------------------------------------------------------------------- building blocks

def _mixture(components: list[tuple[float, float, float]]) -> np.ndarray:
    """Arrival density over the 96 slots of a day: wrapped normals (mean_h, sd_h, weight), sums to 1."""
    dens = np.zeros(SLOTS_PER_DAY)
    for mean, sd, w in components:
        for shift in (-24.0, 0.0, 24.0):
            dens += w * np.exp(-0.5 * ((_HOURS - mean + shift) / sd) ** 2) / sd
    return dens / dens.sum()


def _block(ranges: list[tuple[float, float]], value: float = 1.0) -> np.ndarray:
    """96-slot day with ``value`` inside local-hour ranges [start, end)."""
    day = np.zeros(SLOTS_PER_DAY)
    h = np.arange(SLOTS_PER_DAY) / 4.0
    for a, b in ranges:
        day[(h >= a) & (h < b)] = value
    return day


TIMER_START = np.array([0.45, 0.3, 0.15, 0.1])            # home timers: starts over 00:00-01:00
NIGHT_START = np.full(24, 1 / 24)                           # station schedulers: starts over 00:00-06:00


def sessions(y: Year, arrivals: dict[int, list[tuple[float, float, float]]], per_day: tuple[float, float, float],
             median_h: float, sigma: float, power_pu: float, valley_share: float = 0.0,
             valley_start: np.ndarray = TIMER_START) -> np.ndarray:
    """Expected charging power (per unit of rating) of a pile from an arrival-time model.

    Sessions arrive with a day-type dependent time density and daily rate; a
    share ``valley_share`` waits for the 00:00 TOU valley and starts over the
    next night's first slots with weights ``valley_start``. Each session charges
    for a lognormal duration (median, sigma) at ``power_pu``.
    Expected power = power_pu x sum_k arrivals(t - k) x P(duration > k).
    """
    dens = np.stack([_mixture(arrivals[t]) * per_day[t] for t in (WORKDAY, REST, SUNDAY)])
    rate = dens[y.day_type]                                  # (n_days, 96)
    if valley_share:
        delayed = rate.sum(axis=1) * valley_share
        rate = rate * (1 - valley_share)
        rate[:, :len(valley_start)] += np.roll(delayed, 1)[:, None] * valley_start[None, :]
    rate = rate.ravel()
    k = np.arange(4 * 24)
    from scipy import special
    survival = 1 - special.ndtr((np.log((k + 0.5) * 0.25) - np.log(median_h)) / sigma)
    padded = np.concatenate([rate[-len(k):], rate])          # the year wraps (1 Jan follows 31 Dec)
    occupancy = np.convolve(padded, survival)[len(k):len(k) + len(rate)]
    return np.minimum(power_pu * occupancy, 1.0)


def cooling_factor(temp_c: np.ndarray, base_c: float = 20.0, idle: float = 0.06, slope: float = 0.075
                   ) -> np.ndarray:
    """Share of chiller capacity in use at air temperature ``temp_c``: idle + slope x cooling degrees, <= 1."""
    return np.clip(idle + slope * np.maximum(temp_c - base_c, 0.0), 0.0, 1.0)


def _scale_to(values: np.ndarray, peak: float) -> np.ndarray:
    return values * (peak / np.abs(values).max())


# --------------------------------------------------------------------------- archetypes per type

Builder = Callable[[Year, dict[str, np.ndarray], pd.DataFrame, np.random.Generator], np.ndarray]


def _ev(y, arrivals, per_day, median_h, sigma, power_pu, valley=0.0, spring=1.0, valley_start=TIMER_START):
    v = sessions(y, arrivals, per_day, median_h, sigma, power_pu, valley, valley_start)
    return v * y.per_slot(np.where(y.spring_festival, spring, 1.0))


def ev_home(y, b, s, r):
    arr = {WORKDAY: [(18.8, 1.6, 0.8), (12.5, 1.5, 0.2)], REST: [(17.5, 3.0, 1.0)], SUNDAY: [(17.5, 3.0, 1.0)]}
    return _ev(y, arr, (0.45, 0.35, 0.35), 2.0, 0.5, 0.95, valley=0.4, spring=0.6)


def ev_workplace(y, b, s, r):
    arr = {WORKDAY: [(8.7, 0.8, 0.9), (13.5, 1.0, 0.1)], REST: [(10.0, 2.0, 1.0)], SUNDAY: [(10.0, 2.0, 1.0)]}
    return _ev(y, arr, (0.7, 0.12, 0.06), 2.0, 0.5, 0.95)


def ev_public(y, b, s, r):
    mix = [(9.0, 1.5, 0.15), (12.5, 1.5, 0.35), (15.5, 1.5, 0.15), (19.0, 2.0, 0.35)]
    return _ev(y, {WORKDAY: mix, REST: mix, SUNDAY: mix}, (6.0, 6.5, 6.5), 0.5, 0.5, 0.6, spring=0.7)


def ev_fleet(y, b, s, r):
    mix = [(2.0, 1.8, 0.45), (12.8, 0.9, 0.25), (16.5, 1.0, 0.15), (21.5, 1.5, 0.15)]
    return _ev(y, {WORKDAY: mix, REST: mix, SUNDAY: mix}, (8.0, 7.5, 7.0), 0.6, 0.4, 0.7, spring=0.6)


def ev_swap_taxi(y, b, s, r):
    """Swap station recharging its battery stock: taxi shift changes (04:30, 16:30) plus daytime swaps."""
    mix = [(4.5, 1.0, 0.25), (16.5, 1.0, 0.25), (11.0, 3.0, 0.3), (21.0, 2.0, 0.2)]
    v = _ev(y, {WORKDAY: mix, REST: mix, SUNDAY: mix}, (1.0, 0.95, 0.9), 1.0, 0.3, 1.0, valley=0.3, spring=0.6,
            valley_start=NIGHT_START)
    return 0.04 + _scale_to(v, 0.85)


def ev_swap_private(y, b, s, r):
    mix = [(8.0, 1.5, 0.2), (13.0, 2.0, 0.3), (19.5, 2.0, 0.5)]
    wk = [(10.0, 2.0, 0.3), (15.0, 2.5, 0.4), (19.0, 2.0, 0.3)]
    v = _ev(y, {WORKDAY: mix, REST: wk, SUNDAY: wk}, (1.0, 1.3, 1.3), 1.0, 0.3, 1.0, valley=0.2,
            valley_start=NIGHT_START)
    return 0.04 + _scale_to(v, 0.8)


def v2g_workplace(y, b, s, r):
    """Arrive ~08:45 and charge in the flat period; discharge in the afternoon peak (15-17 Jul-Sep, else 16-18)."""
    arr = {WORKDAY: [(8.7, 0.8, 1.0)], REST: [(10.0, 2.0, 1.0)], SUNDAY: [(10.0, 2.0, 1.0)]}
    charge = sessions(y, arr, (0.7, 0.1, 0.05), 1.5, 0.4, 0.9)
    summer = y.per_slot((y.month >= 7) & (y.month <= 9))
    workday = y.per_slot(y.day_type == WORKDAY)
    window = np.where(summer, np.tile(_block([(15, 17)]), y.n_days), np.tile(_block([(16, 18)]), y.n_days))
    return charge - 0.55 * window * workday


def v2g_residential(y, b, s, r):
    """Plug in at home in the evening, discharge in the last peak hour, recharge in the 00-06 valley."""
    day = _block([(0, 6)], 0.35) - _block([(18.25, 19)], 0.35)
    rest = _block([(0, 6)], 0.4) - _block([(14, 19)], 0.2)
    shapes = np.stack([day, rest, rest])
    return y.by_day_type(shapes)


def _ac(y, occupancy: np.ndarray, standby: float = 0.03) -> np.ndarray:
    return np.minimum(standby + occupancy * cooling_factor(y.temp_c), 1.0)


def ac_office(y, b, s, r):
    return _ac(y, bdew_year(y, b["g1"]))


def ac_mall(y, b, s, r):
    """Malls open 10-22 every day: BDEW G2 (evening trade) working-day shape, busier on rest days."""
    shape = b["g2"][:, WORKDAY]                             # (3 seasons, 96)
    occ = shape[y.season].ravel() * y.per_slot(np.where(y.day_type == WORKDAY, 0.9, 1.0))
    occ *= y.per_slot(np.where(y.spring_festival, 0.8, 1.0))
    return _ac(y, occ)


def ac_hotel(y, b, s, r):
    return _ac(y, 0.9 * bdew_year(y, b["g3"]))


def _cooling_demand(y, b) -> np.ndarray:
    """Cooling demand of a CBD served by a district cooling plant, per unit of its yearly peak."""
    occ = bdew_year(y, b["g0"])
    return occ * np.maximum(y.temp_c - 18.0, 0.0)


def district_cooling_storage(y, b, s, r):
    """Ice/chilled-water storage: 35 % of each day's cooling made at night (00-07), COP penalty 1.2."""
    q = _cooling_demand(y, b).reshape(y.n_days, SLOTS_PER_DAY)
    stored = 0.35 * q.sum(axis=1)
    night = _block([(0, 7)])
    elec = 0.65 * q + 1.2 * stored[:, None] * night[None, :] / night.sum()
    return _scale_to(0.05 + elec.ravel(), 0.95)


def district_cooling_direct(y, b, s, r):
    return _scale_to(0.06 + _cooling_demand(y, b), 0.95)


def _storage(y, cycles: dict[int, np.ndarray]) -> np.ndarray:
    shapes = np.stack([cycles[t] for t in (WORKDAY, REST, SUNDAY)])
    v = y.by_day_type(shapes)
    return np.where(v == 0, 0.01, v)                        # auxiliaries (BMS, HVAC) draw ~1 %


def storage_two_cycle(y, b, s, r):
    """Two cycles a day: charge 01-05 (valley) and 12-14 (flat), discharge 10-12 and the afternoon peak."""
    base = _block([(1, 5)], 0.5) + _block([(12, 14)], 1.0) - _block([(10, 12)], 0.9)
    normal = base - _block([(16, 18)], 0.9)
    critical = base - _block([(15, 17)], 0.9)
    v = _storage(y, {WORKDAY: normal, REST: normal, SUNDAY: normal})
    summer = y.per_slot((y.month >= 7) & (y.month <= 9))
    v_crit = _storage(y, {WORKDAY: critical, REST: critical, SUNDAY: critical})
    one = _block([(1, 5)], 0.5) - _block([(16, 18)], 0.9)
    v = np.where(summer, v_crit, v)
    holiday = y.per_slot(y.holiday)
    return np.where(holiday, np.tile(np.where(one == 0, 0.01, one), y.n_days), v)


def storage_one_cycle(y, b, s, r):
    """One cycle: charge 00-04 in the valley, discharge 16-18 in the peak (industrial peak shaving)."""
    one = _block([(0, 4)], 0.5) - _block([(16, 18)], 0.9)
    return _storage(y, {WORKDAY: one, REST: one, SUNDAY: one})


def _berth_calls(n_slots: int, r: np.random.Generator, call_h: tuple[float, float],
                 gap_h: tuple[float, float], load: tuple[float, float]) -> np.ndarray:
    """Shore power of one berth: alternating lognormal calls and gaps; plugged 1 h after arrival."""
    out = np.zeros(n_slots)
    t = int(r.uniform(0, gap_h[0] * 4))
    while t < n_slots:
        call = max(int(4 * r.lognormal(np.log(call_h[0]), call_h[1])), 12)
        level = r.uniform(*load)
        out[t + 4:min(t + call - 4, n_slots)] = level
        t += call + max(int(4 * r.lognormal(np.log(gap_h[0]), gap_h[1])), 4)
    return out


def shore_container_a(y, b, s, r):
    return _berth_calls(len(y.temp_c), r, (22.0, 0.4), (14.0, 0.6), (0.35, 0.7))


def shore_container_b(y, b, s, r):
    return _berth_calls(len(y.temp_c), r, (30.0, 0.4), (20.0, 0.7), (0.35, 0.7))


def shore_bulk(y, b, s, r):
    return _berth_calls(len(y.temp_c), r, (60.0, 0.35), (40.0, 0.6), (0.2, 0.4))


def shore_harbour_craft(y, b, s, r):
    """River cruise / harbour craft: berthed and on shore power 23:00-18:00, sailing in the evening."""
    day = _block([(0, 18), (23, 24)], 0.3)
    return np.tile(day, y.n_days)


def _pv(y, solpos: pd.DataFrame, planes: list[tuple[float, float, float]]) -> np.ndarray:
    """AC output per kW of inverter rating, negative: clear sky x daily sunshine x plane, derated."""
    import pvlib

    times = solpos.index
    loc = pvlib.location.Location(gz.LAT, gz.LON, altitude=gz.ALTITUDE_M)
    cs = loc.get_clearsky(times, model="ineichen", solar_position=solpos)
    clear_index = 1 / 3 + 2 / 3 * y.per_slot(y.sunshine)      # Angstrom-Prescott style, relative to clear sky
    ghi = cs["ghi"].to_numpy() * clear_index
    erbs = pvlib.irradiance.erbs(ghi, solpos["zenith"].to_numpy(), times)
    poa = np.zeros(len(times))
    for tilt, azimuth, share in planes:
        irr = pvlib.irradiance.get_total_irradiance(
            tilt, azimuth, solpos["apparent_zenith"].to_numpy(), solpos["azimuth"].to_numpy(),
            np.nan_to_num(np.asarray(erbs["dni"])), ghi, np.nan_to_num(np.asarray(erbs["dhi"])), albedo=0.2)
        poa += share * np.nan_to_num(np.asarray(irr["poa_global"]))
    poa = np.clip(poa, 0.0, None)
    cell_c = y.temp_c + 0.03 * poa
    power = poa / 1000.0 * 0.86 * (1 - 0.004 * (cell_c - 25.0))
    return -np.clip(power, 0.0, 1.0)


def pv_south(y, b, s, r):
    return _pv(y, s, [(22.0, 180.0, 1.0)])


def pv_east_west(y, b, s, r):
    return _pv(y, s, [(10.0, 90.0, 0.5), (10.0, 270.0, 0.5)])


def pv_flat(y, b, s, r):
    return _pv(y, s, [(5.0, 180.0, 1.0)])


def _data_center(y, it_util: np.ndarray) -> np.ndarray:
    pue = 1.20 + 0.018 * np.maximum(y.temp_c - 12.0, 0.0)    # free cooling in winter, chillers in summer
    return it_util * pue / 1.5                               # capacity = IT rating x design PUE 1.5


def data_center_colocation(y, b, s, r):
    return _data_center(y, 0.72 + 0.05 * bdew_year(y, b["g3"]))


def data_center_enterprise(y, b, s, r):
    return _data_center(y, 0.45 + 0.3 * bdew_year(y, b["g1"]))


def _base_station(y, traffic: np.ndarray, equipment: float, cooling: float) -> np.ndarray:
    shelter = cooling * np.clip((y.temp_c - 24.0) / 8.0, 0.0, 1.0)
    return equipment + (0.95 - equipment - cooling) * traffic + shelter


def base_station_urban(y, b, s, r):
    traffic = 0.5 * bdew_year(y, b["h0"]) + 0.5 * bdew_year(y, b["g0"])
    return _base_station(y, traffic / traffic.max(), 0.6, 0.1)


def base_station_suburban(y, b, s, r):
    return _base_station(y, bdew_year(y, b["h0"]), 0.65, 0.06)


ASSUMED = "synthetic assumption"
CALENDAR = "chinese_calendar day types"
PVLIB = ("pvlib solar position, Ineichen clear sky (Linke turbidity climatology), Erbs; "
         "seeded daily sunshine from Guangzhou monthly sunshine hours")
TEMP = "seeded daily temperature around Guangzhou monthly normals"

ARCHETYPES: tuple[tuple[Archetype, Builder], ...] = (
    (Archetype("ev_home", RT.EV_CHARGING, "home",
               "7 kW home pile: evening arrival ~18:45, 0.45 sessions/day, 40 % timer-delayed to the 00:00 valley",
               f"arrival-time model ({ASSUMED}); NDRC 718号 valley-charging goal; {CALENDAR}"), ev_home),
    (Archetype("ev_workplace", RT.EV_CHARGING, "workplace",
               "workplace AC pile: arrival ~08:45 on working days, few sessions on rest days",
               f"arrival-time model ({ASSUMED}); {CALENDAR}"), ev_workplace),
    (Archetype("ev_public", RT.EV_CHARGING, "public",
               "public DC pile: midday and evening arrivals, ~6 half-hour sessions a day at 60 % of rating",
               f"arrival-time model ({ASSUMED})"), ev_public),
    (Archetype("ev_fleet", RT.EV_CHARGING, "fleet",
               "DC pile used by taxis/ride-hailing: night valley, lunch and shift-change charging",
               f"arrival-time model ({ASSUMED})"), ev_fleet),
    (Archetype("ev_swap_taxi", RT.EV_SWAPPING, "taxi",
               "swap station recharging packs after taxi shift changes (04:30, 16:30), 30 % deferred to 00-06",
               f"arrival-time model ({ASSUMED})"), ev_swap_taxi),
    (Archetype("ev_swap_private", RT.EV_SWAPPING, "private",
               "swap station for private cars: evening and weekend swaps, 20 % of recharging deferred to 00-06",
               f"arrival-time model ({ASSUMED}); {CALENDAR}"), ev_swap_private),
    (Archetype("v2g_workplace", RT.V2G_CHARGER, "workplace",
               "V2G at work: charge after the morning arrival, discharge 16-18 (15-17 in Jul-Sep critical peak)",
               f"Guangdong TOU periods (RULES.md); arrival-time model ({ASSUMED})"), v2g_workplace),
    (Archetype("v2g_residential", RT.V2G_CHARGER, "residential",
               "V2G at home: discharge 18:15-19:00 on working days and 14-19 on rest days, recharge 00-06",
               f"Guangdong TOU periods (RULES.md); {ASSUMED}"), v2g_residential),
    (Archetype("ac_office", RT.CENTRAL_AC, "office",
               "office central AC: BDEW G1 office-hours occupancy x cooling-degree chiller load",
               f"{BDEW_SOURCE.format(p='G1')}; {TEMP}"), ac_office),
    (Archetype("ac_mall", RT.CENTRAL_AC, "mall",
               "shopping mall AC: open 10-22 daily (BDEW G2 working-day shape), busier on rest days",
               f"{BDEW_SOURCE.format(p='G2')}; {TEMP}"), ac_mall),
    (Archetype("ac_hotel", RT.CENTRAL_AC, "hotel",
               "hotel / hospital AC: continuous occupancy (BDEW G3) x cooling-degree chiller load",
               f"{BDEW_SOURCE.format(p='G3')}; {TEMP}"), ac_hotel),
    (Archetype("dcool_storage", RT.DISTRICT_COOLING, "ice_storage",
               "district cooling with ice storage: 35 % of daily cooling made 00-07, CBD demand (BDEW G0)",
               f"{BDEW_SOURCE.format(p='G0')}; {TEMP}"), district_cooling_storage),
    (Archetype("dcool_direct", RT.DISTRICT_COOLING, "direct",
               "district cooling without storage: follows CBD cooling demand (BDEW G0 x cooling degrees)",
               f"{BDEW_SOURCE.format(p='G0')}; {TEMP}"), district_cooling_direct),
    (Archetype("storage_two_cycle", RT.USER_STORAGE, "two_cycle",
               "C&I storage, two cycles: charge 01-05 and 12-14, discharge 10-12 and 16-18 (15-17 Jul-Sep)",
               "Guangdong TOU peak/valley/critical-peak periods (RULES.md)"), storage_two_cycle),
    (Archetype("storage_one_cycle", RT.USER_STORAGE, "one_cycle",
               "industrial storage, one cycle: charge 00-04 in the valley, discharge 16-18 in the peak",
               "Guangdong TOU peak/valley periods (RULES.md)"), storage_one_cycle),
    (Archetype("shore_container_a", RT.SHORE_POWER, "container",
               "container berth A: ~22 h calls, ~14 h gaps, hotel+reefer load 35-70 % of rating",
               f"seeded berth-call model ({ASSUMED})"), shore_container_a),
    (Archetype("shore_container_b", RT.SHORE_POWER, "container",
               "container berth B: ~30 h calls, ~20 h gaps, hotel+reefer load 35-70 % of rating",
               f"seeded berth-call model ({ASSUMED})"), shore_container_b),
    (Archetype("shore_bulk", RT.SHORE_POWER, "bulk",
               "bulk berth: ~60 h calls, ~40 h gaps, hotel load 20-40 % of rating",
               f"seeded berth-call model ({ASSUMED})"), shore_bulk),
    (Archetype("shore_harbour_craft", RT.SHORE_POWER, "harbour_craft",
               "river cruise / harbour craft: on shore power 23:00-18:00, sailing in the evening",
               ASSUMED), shore_harbour_craft),
    (Archetype("pv_south", RT.DISTRIBUTED_PV, "south",
               "rooftop PV, 22 deg tilt facing south; negative = injection", PVLIB), pv_south),
    (Archetype("pv_east_west", RT.DISTRIBUTED_PV, "east_west",
               "rooftop PV, 10 deg east-west split; negative = injection", PVLIB), pv_east_west),
    (Archetype("pv_flat", RT.DISTRIBUTED_PV, "flat",
               "factory metal-roof PV, 5 deg tilt; negative = injection", PVLIB), pv_flat),
    (Archetype("dc_colocation", RT.DATA_CENTER, "colocation",
               "colocation data center: flat IT load (~75 %, BDEW G3 ripple) x temperature-driven PUE",
               f"{BDEW_SOURCE.format(p='G3')}; {TEMP}"), data_center_colocation),
    (Archetype("dc_enterprise", RT.DATA_CENTER, "enterprise",
               "enterprise data center: business-hours IT load (BDEW G1) x temperature-driven PUE",
               f"{BDEW_SOURCE.format(p='G1')}; {TEMP}"), data_center_enterprise),
    (Archetype("bs_urban", RT.BASE_STATION, "urban",
               "urban 5G site: 60 % always-on equipment + traffic (BDEW H0/G0 mix) + shelter cooling",
               f"{BDEW_SOURCE.format(p='H0+G0')}; {TEMP}"), base_station_urban),
    (Archetype("bs_suburban", RT.BASE_STATION, "suburban",
               "suburban macro site: 65 % always-on equipment + residential traffic (BDEW H0)",
               f"{BDEW_SOURCE.format(p='H0')}; {TEMP}"), base_station_suburban),
)


def build_archetypes(year: int, seed: int, progress: Callable[[float], None] | None = None
                     ) -> tuple[list[Archetype], np.ndarray, Year]:
    """All archetypes of ``year`` as an (n_archetypes, n_slots) float32 matrix, in ARCHETYPES order."""
    y, solpos = build_year(year, seed)
    shapes = bdew_shapes(year)
    rows = []
    for i, (_arch, build) in enumerate(ARCHETYPES):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 202, i]))
        rows.append(np.asarray(build(y, shapes, solpos, rng), dtype=np.float64))
        if progress:
            progress((i + 1) / len(ARCHETYPES))
    matrix = np.stack(rows).astype(np.float32)
    return [a for a, _ in ARCHETYPES], matrix, y
