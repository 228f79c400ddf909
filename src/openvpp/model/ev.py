"""EV charging as arrays: sessions, chargers, stations, transformer areas, swap stations.

Struct of arrays (one numpy array per attribute, one row per session/charger/station), as the
kernels take them. Slots are indices into a scheduling horizon of ``T`` 15-minute slots; a session
is plugged in during slots ``arrival <= t < departure``. Power is kW (charging positive), energy kWh.

A session's *need* is the energy it asks for by departure (``energy_kwh``); what the battery can
take bounds it (``(soc_max - soc_arrival) x battery_kwh``). A V2G-capable session may also
discharge down to ``soc_min`` while plugged, and must still leave with its need met (the
guaranteed departure state of charge).

Flags (bit mask, ``uint8``) explain why a session did not get what it asked for; a scheduler
never raises on a bad session, it flags it and schedules what is feasible.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from openvpp.core.errors import InvalidInput, Violation

# ---------------------------------------------------------------- flags

OK = 0
BAD_INPUT = 1          # departure <= arrival, outside the horizon, or a non-finite / negative number: not scheduled
WINDOW_TOO_SHORT = 2   # the need cannot be met even at full power over the whole dwell time
CAPACITY_SHORT = 4     # station / transformer-area limits leave the session short of its need
SOC_CLIPPED = 8        # the need exceeded what the battery can take (soc_max); the need was reduced
FLAG_TEXT = {
    BAD_INPUT: "bad input: departure must follow arrival inside the horizon, numbers finite and >= 0",
    WINDOW_TOO_SHORT: "departure energy cannot be met at full power within the dwell time",
    CAPACITY_SHORT: "station or transformer-area capacity leaves the session short of its departure energy",
    SOC_CLIPPED: "energy asked exceeds what the battery can take up to its maximum state of charge",
}


def describe_flags(flags: int) -> list[str]:
    """Human-readable reasons of a flag mask."""
    return [text for bit, text in FLAG_TEXT.items() if flags & bit]


# ---------------------------------------------------------------- site kinds

HOME, WORKPLACE, PUBLIC, FLEET, SWAP = 0, 1, 2, 3, 4
SITE_KINDS = ("home", "workplace", "public", "fleet", "swap")


# ---------------------------------------------------------------- assumptions (technical, not policy)

@dataclass(frozen=True)
class EvAssumptions:
    """Technical assumptions of the EV models: no public source fixes them; configurable, documented in docs/ev.md.

    ``degradation_yuan_per_kwh``: battery wear per kWh discharged for V2G. Basis: an LFP pack at
    about 0.5-0.7 yuan/Wh (2024 Chinese market) over about 3,000 equivalent full cycles at 80 %
    depth gives 500 / (3000 x 0.8) ~ 0.2-0.3 yuan per kWh of throughput.
    ``cycle_life_efc`` / ``eol_soh``: the pack reaches ``eol_soh`` after that many equivalent full
    cycles (LFP datasheets: 3,000-6,000 at 80 % retention); ``calendar_fade_per_year``: capacity
    lost per year at rest (~1-2 %/yr for LFP at moderate temperature).
    ``charge_efficiency`` / ``discharge_efficiency``: one-way AC-to-battery efficiencies of a
    bidirectional charger (~92-95 % each way).
    """

    degradation_yuan_per_kwh: float = 0.25
    cycle_life_efc: float = 3000.0
    eol_soh: float = 0.8
    calendar_fade_per_year: float = 0.015
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95

    @classmethod
    def from_mapping(cls, data: dict | None) -> EvAssumptions:
        """Override the defaults with a rule set's ``[ev]`` section when it has one."""
        if not data:
            return cls()
        names = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in data.items() if k in names})


# ---------------------------------------------------------------- sessions

_FLOATS = ("energy_kwh", "max_charge_kw", "max_discharge_kw", "battery_kwh", "soc_arrival", "soc_min", "soc_max")


@dataclass
class Sessions:
    """Charging sessions of one horizon, one row each.

    station : (n,) int — row in ``Stations`` (the connection the session shares), -1 = none (no limit).
    arrival, departure : (n,) int — first plugged slot and the slot after the last (departure > arrival).
    energy_kwh : (n,) float — energy asked by departure [kWh].
    max_charge_kw, max_discharge_kw : (n,) float — the lower of vehicle and charger limits [kW];
        discharge counts only where ``v2g``.
    battery_kwh : (n,) float — usable battery capacity [kWh].
    soc_arrival, soc_min, soc_max : (n,) float — state of charge at arrival and its allowed band [0..1].
    v2g : (n,) bool — vehicle and charger can discharge.
    private : (n,) bool — a private pile (the pilot's valley-share target for private piles).
    kind : (n,) int8 — ``SITE_KINDS`` code.
    session_id : (n,) object — ids (default ``S0``, ``S1``...).
    charger : (n,) int — row of the charger (pile), -1 = unknown.
    """

    station: np.ndarray
    arrival: np.ndarray
    departure: np.ndarray
    energy_kwh: np.ndarray
    max_charge_kw: np.ndarray
    max_discharge_kw: np.ndarray = None
    battery_kwh: np.ndarray = None
    soc_arrival: np.ndarray = None
    soc_min: np.ndarray = None
    soc_max: np.ndarray = None
    v2g: np.ndarray = None
    private: np.ndarray = None
    kind: np.ndarray = None
    session_id: np.ndarray = None
    charger: np.ndarray = None

    def __post_init__(self) -> None:
        n = len(np.atleast_1d(self.arrival))
        self.station = np.asarray(self.station, np.int64).reshape(-1)
        self.arrival = np.asarray(self.arrival, np.int64).reshape(-1)
        self.departure = np.asarray(self.departure, np.int64).reshape(-1)
        defaults = {"max_discharge_kw": 0.0, "battery_kwh": np.inf, "soc_arrival": 0.0, "soc_min": 0.0,
                    "soc_max": 1.0}
        for name in _FLOATS:
            value = getattr(self, name)
            value = defaults[name] if value is None else value
            setattr(self, name, np.broadcast_to(np.asarray(value, np.float64), (n,)).copy())
        self.v2g = np.zeros(n, bool) if self.v2g is None else np.broadcast_to(np.asarray(self.v2g, bool), (n,)).copy()
        self.private = (np.zeros(n, bool) if self.private is None
                        else np.broadcast_to(np.asarray(self.private, bool), (n,)).copy())
        self.kind = (np.full(n, PUBLIC, np.int8) if self.kind is None
                     else np.broadcast_to(np.asarray(self.kind, np.int8), (n,)).copy())
        self.session_id = (np.array([f"S{i}" for i in range(n)], dtype=object) if self.session_id is None
                           else np.asarray(self.session_id, dtype=object).reshape(-1))
        self.charger = (np.full(n, -1, np.int64) if self.charger is None
                        else np.broadcast_to(np.asarray(self.charger, np.int64), (n,)).copy())
        bad = [f.name for f in fields(self) if len(getattr(self, f.name)) != n]
        if bad:
            raise InvalidInput([Violation(name, f"must have one value per session ({n})", len(getattr(self, name)))
                                for name in bad])

    @property
    def n(self) -> int:
        return len(self.arrival)

    def take(self, idx: np.ndarray) -> Sessions:
        return Sessions(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Sessions]) -> Sessions:
        return Sessions(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Sessions)})

    def check(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """(need [kWh] each session can be scheduled for, flags) — never raises on a bad row.

        The need is the energy asked, clipped to what the battery can take (``SOC_CLIPPED``) and
        to full power over the dwell time (``WINDOW_TOO_SHORT``); bad rows get need 0 and ``BAD_INPUT``.
        """
        flags = np.zeros(self.n, np.uint8)
        with np.errstate(invalid="ignore"):
            finite = np.ones(self.n, bool)
            for name in ("energy_kwh", "max_charge_kw", "max_discharge_kw", "soc_arrival", "soc_min", "soc_max"):
                v = getattr(self, name)
                finite &= np.isfinite(v) & (v >= 0)
            finite &= ~np.isnan(self.battery_kwh) & (self.battery_kwh > 0)
            bad = ~finite | (self.departure <= self.arrival) | (self.arrival < 0) | (self.departure > horizon)
            bad |= (self.soc_min > self.soc_max) | (self.soc_arrival > 1.0)
        flags[bad] = BAD_INPUT
        room = np.maximum(self.soc_max - self.soc_arrival, 0.0) * self.battery_kwh
        need = np.where(bad, 0.0, self.energy_kwh)
        clipped = need > room + 1e-9
        flags[clipped & ~bad] |= SOC_CLIPPED
        need = np.minimum(need, room)
        dwell = np.where(bad, 0, self.departure - self.arrival)
        reach = self.max_charge_kw * dwell * 0.25
        short = need > reach + 1e-9
        flags[short & ~bad] |= WINDOW_TOO_SHORT
        return np.where(bad, 0.0, np.minimum(need, reach)), flags

    def availability(self, horizon: int) -> np.ndarray:
        """(n, T) bool: plugged in during the slot."""
        t = np.arange(horizon)
        return (t[None, :] >= self.arrival[:, None]) & (t[None, :] < self.departure[:, None])


# ---------------------------------------------------------------- stations, transformer areas, chargers

@dataclass
class Stations:
    """Shared connections: a station (a site's connection or a community's EV feeder) and its transformer area.

    capacity_kw : (m,) or (m, T) float — import limit of the station [kW].
    ta : (m,) int — row in ``TransformerAreas``, -1 = none.
    export_kw : (m,) float — export (discharge) limit [kW]; default = capacity_kw.
    """

    capacity_kw: np.ndarray
    ta: np.ndarray = None
    export_kw: np.ndarray = None
    station_id: np.ndarray = None

    def __post_init__(self) -> None:
        self.capacity_kw = np.asarray(self.capacity_kw, np.float64)
        m = self.capacity_kw.shape[0]
        self.ta = np.full(m, -1, np.int64) if self.ta is None else np.asarray(self.ta, np.int64).reshape(-1)
        cap = self.capacity_kw if self.capacity_kw.ndim == 1 else self.capacity_kw.min(axis=1)
        self.export_kw = cap.copy() if self.export_kw is None else np.asarray(self.export_kw, np.float64).reshape(-1)
        self.station_id = (np.array([f"ST{i}" for i in range(m)], dtype=object) if self.station_id is None
                           else np.asarray(self.station_id, dtype=object))

    @property
    def m(self) -> int:
        return self.capacity_kw.shape[0]

    def capacity(self, horizon: int) -> np.ndarray:
        """(m, T) import limit."""
        c = self.capacity_kw
        return np.broadcast_to(c[:, None], (self.m, horizon)) if c.ndim == 1 else c[:, :horizon]


@dataclass
class TransformerAreas:
    """Low-voltage transformer areas (台区): what is left for EV charging after the other load.

    capacity_kw : (k,) or (k, T) float — headroom for the EV load of the area [kW].
    """

    capacity_kw: np.ndarray
    ta_id: np.ndarray = None

    def __post_init__(self) -> None:
        self.capacity_kw = np.asarray(self.capacity_kw, np.float64)
        k = self.capacity_kw.shape[0]
        self.ta_id = (np.array([f"TA{i}" for i in range(k)], dtype=object) if self.ta_id is None
                      else np.asarray(self.ta_id, dtype=object))

    @property
    def k(self) -> int:
        return self.capacity_kw.shape[0]

    def capacity(self, horizon: int) -> np.ndarray:
        c = self.capacity_kw
        return np.broadcast_to(c[:, None], (self.k, horizon)) if c.ndim == 1 else c[:, :horizon]


@dataclass
class Chargers:
    """Charging piles: one row each (a resource of type ev_charging or v2g_charger).

    max_kw : rated charging power; max_discharge_kw : rated discharge power (0 = unidirectional);
    station : row in ``Stations``; private : a private (home) pile; kind : ``SITE_KINDS`` code.
    """

    charger_id: np.ndarray
    max_kw: np.ndarray
    station: np.ndarray
    max_discharge_kw: np.ndarray = None
    private: np.ndarray = None
    kind: np.ndarray = None
    operator_id: np.ndarray = None
    protocol: np.ndarray = None

    def __post_init__(self) -> None:
        n = len(self.charger_id)
        self.charger_id = np.asarray(self.charger_id, dtype=object)
        self.max_kw = np.asarray(self.max_kw, np.float64)
        self.station = np.asarray(self.station, np.int64)
        self.max_discharge_kw = (np.zeros(n) if self.max_discharge_kw is None
                                 else np.asarray(self.max_discharge_kw, np.float64))
        self.private = np.zeros(n, bool) if self.private is None else np.asarray(self.private, bool)
        self.kind = np.full(n, PUBLIC, np.int8) if self.kind is None else np.asarray(self.kind, np.int8)
        self.operator_id = (np.full(n, "", dtype=object) if self.operator_id is None
                            else np.asarray(self.operator_id, dtype=object))
        self.protocol = (np.full(n, "", dtype=object) if self.protocol is None
                         else np.asarray(self.protocol, dtype=object))

    @property
    def n(self) -> int:
        return len(self.charger_id)

    @property
    def bidirectional(self) -> np.ndarray:
        return self.max_discharge_kw > 0


@dataclass
class SwapStations:
    """Battery swap stations: a stock of packs charged on racks, swapped into arriving cars.

    capacity_kw : (m,) connection limit; n_packs : (m,) packs in the station; pack_kwh : (m,)
    usable pack energy; rack_kw : (m,) charging power of one rack slot; soc_in : (m,) mean state
    of charge of a pack swapped out of a car; soc_full : (m,) state of charge of a pack ready to swap.
    """

    capacity_kw: np.ndarray
    n_packs: np.ndarray
    pack_kwh: np.ndarray
    rack_kw: np.ndarray
    soc_in: np.ndarray
    soc_full: np.ndarray = None
    station_id: np.ndarray = None
    ta: np.ndarray = None

    def __post_init__(self) -> None:
        m = len(np.atleast_1d(self.capacity_kw))
        for name in ("capacity_kw", "pack_kwh", "rack_kw", "soc_in"):
            setattr(self, name, np.broadcast_to(np.asarray(getattr(self, name), np.float64), (m,)).copy())
        self.n_packs = np.broadcast_to(np.asarray(self.n_packs, np.int64), (m,)).copy()
        self.soc_full = (np.full(m, 0.95) if self.soc_full is None
                         else np.broadcast_to(np.asarray(self.soc_full, np.float64), (m,)).copy())
        self.station_id = (np.array([f"SW{i}" for i in range(m)], dtype=object) if self.station_id is None
                           else np.asarray(self.station_id, dtype=object))
        self.ta = np.full(m, -1, np.int64) if self.ta is None else np.asarray(self.ta, np.int64)

    @property
    def m(self) -> int:
        return len(self.capacity_kw)

    def to_sessions(self, swap_counts: np.ndarray, first_station_row: int = 0) -> tuple[Sessions, np.ndarray]:
        """Turn swap demand into charging sessions of the depleted packs.

        swap_counts : (m, T) int — cars swapping in each slot. Every swapped-in pack must be full
        again by the time the stock of full packs would otherwise run out: with ``n_packs`` full at
        the start, the k-th pack swapped in (FIFO) must be ready at the slot of swap ``k + n_packs``
        (the horizon end when there is none). Returns the sessions (station = ``first_station_row``
        + station row) and the number of swaps that found no full pack (a stock-out the schedule
        cannot fix, (m,)).
        """
        counts = np.asarray(swap_counts, np.int64)
        m, horizon = counts.shape
        parts: list[Sessions] = []
        stockout = np.zeros(m, np.int64)
        for i in range(m):
            slots = np.repeat(np.arange(horizon), counts[i])          # arrival slot of each swapped-in pack
            k = len(slots)
            ready_idx = np.arange(k) + self.n_packs[i]
            due = np.where(ready_idx < k, slots[np.minimum(ready_idx, max(k - 1, 0))], horizon)
            # a pack needed in the very slot it arrives in cannot be ready: count it as a stock-out
            stockout[i] = int((due <= slots).sum())
            due = np.maximum(due, slots + 1)
            need = (self.soc_full[i] - self.soc_in[i]) * self.pack_kwh[i]
            parts.append(Sessions(station=np.full(k, first_station_row + i), arrival=slots, departure=due,
                                  energy_kwh=np.full(k, need), max_charge_kw=np.full(k, self.rack_kw[i]),
                                  battery_kwh=np.full(k, self.pack_kwh[i]), soc_arrival=np.full(k, self.soc_in[i]),
                                  soc_max=np.full(k, self.soc_full[i]), kind=np.full(k, SWAP),
                                  session_id=np.array([f"{self.station_id[i]}-P{j}" for j in range(k)], dtype=object)))
        return (Sessions.concat(parts) if parts else Sessions([], [], [], [], [])), stockout


@dataclass
class Schedule:
    """What a scheduler returns: power per session and slot, and what each session got.

    power_kw : (n, T) float — charging positive, discharging negative.
    served_kwh : (n,) — net energy delivered to the battery side by departure (charge - discharge, AC side).
    need_kwh : (n,) — the need the scheduler aimed at (after ``Sessions.check``).
    flags : (n,) uint8 — ``FLAG_TEXT`` bits.
    cost_yuan : float — objective value in yuan (energy cost, minus discharge revenue, plus wear).
    min_served_fraction : float — the lowest served/need over sessions with a need (1.0 = all met).
    """

    power_kw: np.ndarray
    served_kwh: np.ndarray
    need_kwh: np.ndarray
    flags: np.ndarray
    cost_yuan: float
    min_served_fraction: float
    solver: str = ""
    stats: dict = field(default_factory=dict)

    def flagged(self) -> list[dict]:
        """Sessions with a flag, for reports and the API."""
        out = []
        for i in np.flatnonzero(self.flags):
            out.append({"row": int(i), "flags": int(self.flags[i]), "reasons": describe_flags(int(self.flags[i])),
                        "need_kwh": float(self.need_kwh[i]), "served_kwh": float(self.served_kwh[i])})
        return out
