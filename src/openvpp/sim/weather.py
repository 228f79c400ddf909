"""The simulated city's weather as a weather source: the very air temperatures that drove its loads.

``sim.archetypes.build_year(year, seed)`` draws a seeded temperature series around Guangzhou's
monthly normals with a diurnal cycle (and pvlib's solar position for the day length); the
archetypes' cooling loads follow it. The same (year, seed) as the city's gives the same series, so
a temperature-regression baseline over a generated city sees the weather its meters felt.
"""

from __future__ import annotations

from datetime import date

import numpy as np
from sqlalchemy import Connection

from openvpp.core.errors import InvalidInput, Violation
from openvpp.core.timeslots import SLOTS_PER_DAY
from openvpp.services import weather
from openvpp.sim.archetypes import TEMP, build_year
from openvpp.store import timeseries


def city_temperatures(year: int, seed: int) -> tuple[date, np.ndarray]:
    """(1 January, (n_days, 96) °C per local slot) of the simulated year."""
    y, _ = build_year(year, seed)
    return date(year, 1, 1), np.asarray(y.temp_c, dtype=np.float64).reshape(-1, SLOTS_PER_DAY)


def city_weather(year: int, seed: int) -> weather.ArrayWeatherSource:
    """The simulated year's temperatures, for every area of the city."""
    first, temp = city_temperatures(year, seed)
    return weather.ArrayWeatherSource(first, temp, name=f"sim city weather {year} seed {seed}")


def store_city_weather(conn: Connection, year: int, seed: int) -> int:
    """Write the simulated year's temperatures as the city node's (every district falls back to them)."""
    city = timeseries.city_id(conn)
    if city is None:
        raise InvalidInput(Violation("city", "has no node in the grid: load a city first", None))
    first, temp = city_temperatures(year, seed)
    return weather.write(conn, city, first, temp, f"simulated: {TEMP} (year {year}, seed {seed})"[:200])
