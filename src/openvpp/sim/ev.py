"""Synthetic EV charging sessions for the piles of a generated city (home, workplace, public, fleet, V2G).

What the distributions rest on (facts; the parameters that no public source fixes are marked
*assumption* and live in ``PATTERNS`` below):

* **Home (private piles).** Arrival = end of the last trip of the day, normal with mean 17.6 h and
  standard deviation 3.4 h, and daily distance lognormal with mu = 3.2, sigma = 0.88 (km): the fit
  of the US NHTS 2009 travel survey that Chinese EV load studies use as their standard model
  (e.g. Luo Zhuowei et al., "Load model of EV charging", Automation of Electric Power Systems
  2011; Tian Liting et al. 2012). Departure next morning normal 7.5 h +- 1 h (*assumption*,
  commute start); a car plugs in on a given evening with probability 0.55, i.e. about every
  second day (*assumption*), and asks for the energy driven since it last charged.
* **Workplace.** Arrival normal 8.5 h +- 0.75 h, stay 9 h +- 1 h on working days (office hours
  in Guangzhou); 60 % of workplace piles used on a working day, 10 % on a rest day (*assumption*).
* **Public DC and fleets.** Arrivals spread over the day in the peaks of the public-pile
  archetype (``sim/archetypes.py``: 09:00, 12:30, 15:30, 19:00; fleets 02:00, 12:48, 16:30,
  21:30 after shifts); 15-45 kWh per stop (a top-up of a 50-70 kWh pack), charging at about
  75 % of the pile's rating on average (DC taper), and a little idle time after (lognormal,
  median 30 % of the charging time) (*assumption*). 4-10 sessions per pile per day, i.e. a time
  utilisation of 10-25 %, the range Chinese public DC piles report.
* **Vehicles.** Usable battery 45-80 kWh, the span of China's best-selling BEVs (BYD Dolphin
  44.9, Qin Plus EV 57.6, Tesla Model 3 60, GAC Aion S 68, Tesla Model Y 78, Xpeng P7 80 kWh);
  consumption 0.15 kWh/km (CLTC figures of these models: 12-16 kWh/100 km).
* **V2G.** Every session on a V2G charger is V2G capable; the driver keeps a reserve of 30 %
  state of charge (*assumption*, the usual default of pilot apps) and leaves with at least the
  energy asked.

Sessions are generated for a *window* of ``horizon`` slots starting at ``start_hour`` of ``day``
(by default 12:00 to 12:00 next day: the day-ahead plan for the evening, night and morning); a
session that crosses the window's edge is cut to it and its energy reduced in proportion to the
part of its stay inside (the rest belongs to the neighbouring window's plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from openvpp.core.calendar import is_working
from openvpp.core.timeslots import SLOTS_PER_HOUR
from openvpp.model.ev import (
    FLEET,
    HOME,
    PUBLIC,
    SITE_KINDS,
    WORKPLACE,
    Chargers,
    Sessions,
    Stations,
    TransformerAreas,
)

KWH_PER_KM = 0.15
BATTERY_KWH = (np.array([44.9, 57.6, 60.0, 68.0, 78.0, 80.0]), np.array([0.2, 0.25, 0.2, 0.15, 0.1, 0.1]))


@dataclass(frozen=True)
class Pattern:
    """How one kind of site is used (``docs/ev.md`` gives the basis of every number)."""

    p_working: float                     # probability a pile has a session on a working day (home/workplace)
    p_rest: float                        # ... on a rest day
    arrival: tuple[tuple[float, float, float], ...]   # mixture (mean h, sd h, weight)
    sessions_per_day: float = 1.0        # public/fleet: mean sessions per pile per day (Poisson)
    stay_h: tuple[float, float] = (0.0, 0.0)  # workplace: normal stay (mean, sd) h
    depart_h: tuple[float, float] = (0.0, 0.0)  # home: next-morning departure (mean, sd) h
    energy_kwh: tuple[float, float] = (0.0, 0.0)  # public/fleet: uniform energy range


PATTERNS: dict[int, Pattern] = {
    HOME: Pattern(0.55, 0.55, ((17.6, 3.4, 1.0),), depart_h=(7.5, 1.0)),
    WORKPLACE: Pattern(0.6, 0.1, ((8.5, 0.75, 1.0),), stay_h=(9.0, 1.0)),
    PUBLIC: Pattern(1.0, 1.0, ((9.0, 1.5, 0.15), (12.5, 1.5, 0.35), (15.5, 1.5, 0.15), (19.0, 2.0, 0.35)),
                    sessions_per_day=6.0, energy_kwh=(15.0, 45.0)),
    FLEET: Pattern(1.0, 1.0, ((2.0, 1.8, 0.45), (12.8, 0.9, 0.25), (16.5, 1.0, 0.15), (21.5, 1.5, 0.15)),
                   sessions_per_day=7.0, energy_kwh=(20.0, 45.0)),
}
#: archetype of the generated city -> (site kind, V2G)
ARCHETYPE_KIND = {"ev_home": (HOME, False), "ev_workplace": (WORKPLACE, False), "ev_public": (PUBLIC, False),
                  "ev_fleet": (FLEET, False), "v2g_workplace": (WORKPLACE, True), "v2g_residential": (HOME, True)}
V2G_SOC_RESERVE = 0.3      # assumption: reserve a V2G driver keeps
SOC_TARGET = 0.9           # assumption: charge target of a driver who asks for "full"
#: station connection as a share of the piles' total rating (diversity), per site kind (*assumption*)
STATION_SHARE = {HOME: 0.4, WORKPLACE: 0.5, PUBLIC: 0.7, FLEET: 0.7}


def _mixture(rng: np.random.Generator, mix: tuple[tuple[float, float, float], ...], n: int) -> np.ndarray:
    w = np.array([m[2] for m in mix])
    k = rng.choice(len(mix), n, p=w / w.sum())
    return rng.normal(np.array([m[0] for m in mix])[k], np.array([m[1] for m in mix])[k])


def _battery(rng: np.random.Generator, n: int) -> np.ndarray:
    values, p = BATTERY_KWH
    return values[rng.choice(len(values), n, p=p)]


def _mileage_km(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.lognormal(3.2, 0.88, n)


def _day_sessions(chargers: Chargers, day: np.datetime64, day_offset_h: float, rng: np.random.Generator) -> dict:
    """Raw sessions (hours from the window day's midnight) whose arrival falls on ``day``."""
    working = bool(is_working(np.array([day]), strict=False)[0])
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("charger", "arr", "dep", "energy", "battery", "soc")}

    def add(ch, arr, dep, energy, battery):
        soc = np.clip(SOC_TARGET - energy / battery, 0.05, SOC_TARGET)
        for key, v in zip(("charger", "arr", "dep", "energy", "battery", "soc"),
                          (ch, arr + day_offset_h, dep + day_offset_h, energy, battery, soc), strict=True):
            out[key].append(np.asarray(v))

    kind = chargers.kind
    # home: one evening session with probability p; energy driven since the last charge
    for k in (HOME, WORKPLACE):
        pat = PATTERNS[k]
        rows = np.flatnonzero(kind == k)
        rows = rows[rng.random(len(rows)) < (pat.p_working if working else pat.p_rest)]
        n = len(rows)
        if not n:
            continue
        battery = _battery(rng, n)
        if k == HOME:
            arr = np.clip(_mixture(rng, pat.arrival, n), 12.0, 23.75)
            dep = 24.0 + np.clip(rng.normal(*pat.depart_h, n), 5.0, 10.0)
            days = rng.geometric(pat.p_working, n)
        else:
            arr = np.clip(_mixture(rng, pat.arrival, n), 6.0, 11.0)
            dep = arr + np.clip(rng.normal(*pat.stay_h, n), 4.0, 12.0)
            days = np.ones(n)
        energy = np.clip(_mileage_km(rng, n) * days * KWH_PER_KM, 2.0, (SOC_TARGET - 0.05) * battery)
        add(rows, arr, dep, energy, battery)
    # public and fleet DC: several non-overlapping stops per pile
    for k in (PUBLIC, FLEET):
        pat = PATTERNS[k]
        rows = np.flatnonzero(kind == k)
        if not len(rows):
            continue
        counts = rng.poisson(pat.sessions_per_day, len(rows))
        ch = np.repeat(rows, counts)
        n = len(ch)
        arr = np.mod(_mixture(rng, pat.arrival, n), 24.0)
        order = np.lexsort((arr, ch))
        ch, arr = ch[order], arr[order]
        battery = _battery(rng, n)
        energy = np.minimum(rng.uniform(*pat.energy_kwh, n), (SOC_TARGET - 0.05) * battery)
        charge_h = energy / (0.75 * chargers.max_kw[ch])
        dep = arr + charge_h * (1.0 + rng.lognormal(np.log(0.3), 0.6, n))
        nxt = np.r_[arr[1:], np.inf]
        same = np.r_[ch[1:] == ch[:-1], False]
        dep = np.where(same, np.minimum(dep, nxt), dep)
        keep = dep - arr >= 0.25
        add(ch[keep], arr[keep], dep[keep], energy[keep], battery[keep])
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}


def generate_sessions(chargers: Chargers, day: str | np.datetime64, seed: int = 0, start_hour: float = 12.0,
                      horizon: int = 96) -> Sessions:
    """Sessions of ``chargers`` in the window of ``horizon`` slots from ``start_hour`` of ``day`` (module docstring).

    Same (chargers, day, seed) -> same sessions. ``station`` of a session is its charger's station.
    """
    day = np.datetime64(day, "D")
    parts = []
    for offset in range(-1, int(np.ceil((start_hour + horizon / SLOTS_PER_HOUR) / 24.0)) + 1):
        rng = np.random.default_rng(np.random.SeedSequence([seed, int((day + offset).astype(np.int64)), 808]))
        parts.append(_day_sessions(chargers, day + offset, 24.0 * offset, rng))
    raw = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    w0, w1 = start_hour, start_hour + horizon / SLOTS_PER_HOUR
    arr_h, dep_h = raw["arr"], raw["dep"]
    a = np.maximum(arr_h, w0)
    d = np.minimum(dep_h, w1)
    inside = d - a >= 0.25
    share = np.where(inside, (d - a) / np.maximum(dep_h - arr_h, 1e-9), 0.0)
    arrival = np.floor((a - w0) * SLOTS_PER_HOUR + 1e-9).astype(np.int64)
    departure = np.ceil((d - w0) * SLOTS_PER_HOUR - 1e-9).astype(np.int64)
    ch = raw["charger"].astype(np.int64)
    idx = np.flatnonzero(inside & (departure > arrival))
    ch_i = ch[idx]
    v2g = chargers.max_discharge_kw[ch_i] > 0
    soc = raw["soc"][idx]
    return Sessions(
        station=chargers.station[ch_i], arrival=arrival[idx], departure=departure[idx],
        energy_kwh=np.round(raw["energy"][idx] * share[idx], 3), max_charge_kw=chargers.max_kw[ch_i],
        max_discharge_kw=chargers.max_discharge_kw[ch_i], battery_kwh=raw["battery"][idx], soc_arrival=soc,
        soc_min=np.where(v2g, V2G_SOC_RESERVE, 0.0), soc_max=np.full(len(idx), 1.0), v2g=v2g,
        private=chargers.private[ch_i], kind=chargers.kind[ch_i],
        session_id=np.array([f"{chargers.charger_id[c]}-{day}-{j}" for j, c in enumerate(ch_i)], dtype=object),
        charger=ch_i)


# ---------------------------------------------------------------- the piles of a generated city

def ta_headroom_kw(rating_kva: np.ndarray, horizon: int = 96, start_hour: float = 12.0) -> np.ndarray:
    """Headroom for EV load of transformer areas per slot [kW], (k, T).

    *Assumption*: 0.9 power factor, and the other load of a residential area at 35 % of the rating
    at night rising to 75 % at the 20:00 evening peak (a cosine bump 16:00-24:00).
    """
    hours = (start_hour + np.arange(horizon) / SLOTS_PER_HOUR) % 24.0
    bump = np.where((hours >= 16) & (hours < 24), 0.5 * (1 - np.cos((hours - 16) / 8 * 2 * np.pi)), 0.0)
    base = 0.35 + 0.40 * bump
    return np.asarray(rating_kva, float)[:, None] * (0.9 - base[None, :] * 0.9)


@dataclass
class CityFleet:
    """The charging piles of a generated city with their stations and transformer areas."""

    chargers: Chargers
    stations: Stations
    areas: TransformerAreas
    site_id: np.ndarray       # (m,) station -> site id


def fleet_from_city(city_dir: Path, horizon: int = 96, start_hour: float = 12.0) -> CityFleet:
    """Read the EV and V2G piles of a generated city (``resources.csv``, ``grid.csv``).

    A station is a site; its connection is ``STATION_SHARE`` of its piles' total rating; a
    transformer area's headroom comes from its rating (``ta_headroom_kw``).
    """
    cols = ["resource_id", "resource_type", "site_id", "ta_id", "capacity_kw", "profile_archetype", "owner_id",
            "operator_id", "control_protocol"]
    t = pacsv.read_csv(Path(city_dir) / "resources.csv", convert_options=pacsv.ConvertOptions(
        include_columns=cols, column_types={c: pa.string() for c in cols if c != "capacity_kw"},
        strings_can_be_null=True))
    t = t.filter(pc.is_in(t.column("resource_type"), pa.array(["ev_charging", "v2g_charger"])))
    arch = np.asarray(t.column("profile_archetype").to_pylist(), dtype=object)
    known = np.isin(arch, list(ARCHETYPE_KIND))
    t = t.filter(pa.array(known))
    arch = arch[known]
    kind = np.array([ARCHETYPE_KIND[a][0] for a in arch], np.int8)
    cap = t.column("capacity_kw").to_numpy().astype(float)
    v2g = t.column("resource_type").to_numpy(zero_copy_only=False) == "v2g_charger"
    sites, station = np.unique(np.asarray(t.column("site_id").to_pylist(), dtype=object), return_inverse=True)
    ta_ids = np.asarray(t.column("ta_id").to_pylist(), dtype=object)
    g = pacsv.read_csv(Path(city_dir) / "grid.csv", convert_options=pacsv.ConvertOptions(
        include_columns=["node_id", "rating_kva"], column_types={"node_id": pa.string(), "rating_kva": pa.float64()}))
    rating = dict(zip(g.column("node_id").to_pylist(), g.column("rating_kva").to_pylist(), strict=True))
    site_ta = np.empty(len(sites), dtype=object)
    site_ta[station] = ta_ids
    areas_used, st_ta = np.unique(site_ta.astype(str), return_inverse=True)
    ratings = np.array([rating.get(a) or 630.0 for a in areas_used], float)
    share = np.array([STATION_SHARE[k] for k in kind])
    st_cap = np.bincount(station, weights=cap * share, minlength=len(sites))
    site_kind = np.zeros(len(sites), np.int8)
    site_kind[station] = kind
    # private piles: home piles of households (owner per household)
    chargers = Chargers(charger_id=np.asarray(t.column("resource_id").to_pylist(), dtype=object), max_kw=cap,
                        station=station, max_discharge_kw=np.where(v2g, cap, 0.0), private=kind == HOME, kind=kind,
                        operator_id=np.asarray(t.column("operator_id").to_pylist(), dtype=object),
                        protocol=np.asarray(t.column("control_protocol").to_pylist(), dtype=object))
    return CityFleet(chargers, Stations(np.round(st_cap, 1), ta=st_ta, station_id=sites),
                     TransformerAreas(ta_headroom_kw(ratings, horizon, start_hour), ta_id=areas_used), sites)


def describe(sessions: Sessions) -> dict:
    """Counts and means per site kind, for docs and logs."""
    out = {}
    for k, name in enumerate(SITE_KINDS):
        m = sessions.kind == k
        if m.any():
            out[name] = {"sessions": int(m.sum()), "energy_kwh_mean": round(float(sessions.energy_kwh[m].mean()), 2),
                         "stay_h_mean": round(float((sessions.departure[m] - sessions.arrival[m]).mean() / 4), 2),
                         "v2g": int(sessions.v2g[m].sum())}
    return out
