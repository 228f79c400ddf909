"""Air temperature for the temperature-regression baseline: where it comes from.

A :class:`WeatherSource` gives, for grid areas (a district, or the city), the temperature of every
15-minute slot of a run of local days, °C, NaN where unknown:

* :class:`StoreWeatherSource` — the ``weather_temperature`` table (one row per area and slot, with
  the station or provider it came from), loaded by :func:`write` from a weather service's
  observations; an area without rows in the window takes the city's (recorded);
* :class:`ArrayWeatherSource` — arrays: tests, notebooks and the simulated city
  (``sim.weather.city_weather``: the very temperatures that drove its loads).

An evaluation records the source's name, the area each district's temperature came from and a
SHA-256 of the arrays it read (:func:`fingerprint`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import NamedTuple, Protocol

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, and_, delete, select

from openvpp.core.errors import InvalidInput, Violation
from openvpp.core.timeslots import SLOTS_PER_DAY, local_midnight_utc
from openvpp.store import timeseries
from openvpp.store.columnar import epoch_s, quarter_index, select_arrow
from openvpp.store.schema_evaluation import weather_temperature


class WeatherData(NamedTuple):
    """temp_c: area → (n_days, 96) °C (NaN = unknown); used: area asked → area whose temperatures these are."""

    temp_c: dict[str, np.ndarray]
    used: dict[str, str]


class WeatherSource(Protocol):
    name: str

    def read(self, area_ids: Sequence[str], first_day: date, n_days: int) -> WeatherData: ...


def _days_by_slots(name: str, temp_c: np.ndarray) -> np.ndarray:
    arr = np.asarray(temp_c, dtype=np.float64)
    if arr.ndim == 1:                               # one value a day: the same in every slot
        arr = np.repeat(arr[:, None], SLOTS_PER_DAY, axis=1)
    if arr.ndim != 2 or arr.shape[1] != SLOTS_PER_DAY:
        raise InvalidInput(Violation(name, "must be (n_days,) daily or (n_days, 96) per slot, °C", arr.shape))
    return arr


class ArrayWeatherSource:
    """Temperatures in arrays from ``first_day``: ``temp_c`` for every area, ``by_area`` for some.

    temp_c / by_area values: (n_days,) daily or (n_days, 96) per slot, °C. Days outside read as NaN.
    """

    def __init__(self, first_day: date, temp_c: np.ndarray | None = None,
                 by_area: Mapping[str, np.ndarray] | None = None, name: str = "arrays"):
        self.first_day, self.name = first_day, name
        self.default = None if temp_c is None else _days_by_slots("temp_c", temp_c)
        self.by_area = {a: _days_by_slots(f"by_area.{a}", t) for a, t in (by_area or {}).items()}

    def read(self, area_ids: Sequence[str], first_day: date, n_days: int) -> WeatherData:
        out, used = {}, {}
        for area in dict.fromkeys(area_ids):
            arr = self.by_area.get(area, self.default)
            block = np.full((n_days, SLOTS_PER_DAY), np.nan)
            if arr is not None:
                off = (first_day - self.first_day).days
                lo, hi = max(0, -off), min(n_days, arr.shape[0] - off)
                if hi > lo:
                    block[lo:hi] = arr[lo + off:hi + off]
            out[area] = block
            used[area] = area if area in self.by_area else "*"
        return WeatherData(out, used)


class StoreWeatherSource:
    """``weather_temperature``: per area and slot; an area with no row in the window takes the city's."""

    def __init__(self, conn: Connection, name: str = "weather_temperature"):
        self.conn, self.name = conn, name

    def _read(self, areas: list[str], first_day: date, n_days: int) -> dict[str, np.ndarray]:
        w = weather_temperature
        start = local_midnight_utc(first_day)
        end = start + timedelta(days=n_days)
        q = select(w.c.area_id, epoch_s(w.c.bucket, self.conn.dialect.name), w.c.temp_c).where(
            w.c.area_id.in_(areas), w.c.bucket >= start, w.c.bucket < end)
        t = select_arrow(self.conn, q, {"area_id": pa.string(), "ts": pa.float64(), "temp_c": pa.float64()})
        k = quarter_index(t.column("ts").to_numpy(), start.timestamp())
        temp = t.column("temp_c").to_numpy()
        area = np.asarray(t.column("area_id").to_pylist(), dtype=object)
        out = {}
        for a in areas:
            block = np.full(n_days * SLOTS_PER_DAY, np.nan)
            mine = area == a
            if mine.any():
                block[k[mine]] = temp[mine]
                out[a] = block.reshape(n_days, SLOTS_PER_DAY)
        return out

    def read(self, area_ids: Sequence[str], first_day: date, n_days: int) -> WeatherData:
        areas = list(dict.fromkeys(area_ids))
        city = timeseries.city_id(self.conn)
        found = self._read(areas + ([city] if city and city not in areas else []), first_day, n_days)
        out, used = {}, {}
        for a in areas:
            src = a if a in found else (city if city in found else None)
            out[a] = found[src] if src else np.full((n_days, SLOTS_PER_DAY), np.nan)
            used[a] = src or "none"
        return WeatherData(out, used)


def write(conn: Connection, area_id: str, first_day: date, temp_c: np.ndarray, source: str) -> int:
    """Store an area's temperatures from ``first_day`` ((n_days,) daily or (n_days, 96), °C), replacing
    what the table held for those days; NaN slots are left out. Returns the rows written."""
    arr = _days_by_slots("temp_c", temp_c)
    if not area_id:
        raise InvalidInput(Violation("area_id", "must name a grid area (district or city)", area_id))
    if not source or len(source) > 200:
        raise InvalidInput(Violation("source", "must name the station or provider (at most 200 characters)", source))
    finite = np.isfinite(arr)
    if np.any(finite & ((arr < -60) | (arr > 60))):
        raise InvalidInput(Violation("temp_c", "must be air temperatures in -60..60 °C", float(np.nanmax(
            np.abs(arr)))))
    start = local_midnight_utc(first_day)
    end = start + timedelta(days=arr.shape[0])
    w = weather_temperature
    conn.execute(delete(w).where(and_(w.c.area_id == area_id, w.c.bucket >= start, w.c.bucket < end)))
    rows = [{"area_id": area_id, "bucket": start + timedelta(minutes=15 * int(k)), "temp_c": float(v),
             "source": source} for k, v in enumerate(arr.ravel()) if np.isfinite(v)]
    for lo in range(0, len(rows), 5000):
        conn.execute(w.insert(), rows[lo:lo + 5000])
    return len(rows)


def fingerprint(data: WeatherData, first_day: date) -> str:
    """SHA-256 of the temperatures read: areas (sorted), first day and the arrays."""
    h = hashlib.sha256(first_day.isoformat().encode())
    for a in sorted(data.temp_c):
        h.update(f"\x1f{a}>{data.used[a]}".encode())
        h.update(np.ascontiguousarray(data.temp_c[a], dtype=np.float64).tobytes())
    return h.hexdigest()
