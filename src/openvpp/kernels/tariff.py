"""Guangdong time-of-use (TOU) tariff: period of every 15-minute slot, prices, bills of load curves.

Everything comes from the rule set's ``[tou]`` section (RULES.md, "Guangdong time-of-use tariff"):

* peak 10:00-12:00 and 14:00-19:00, valley 00:00-08:00, flat the rest;
* peak : flat : valley = 1.7 : 1 : 0.38;
* critical peak 11:00-12:00 and 15:00-17:00 at peak x 1.25, in July-September and on any day whose
  maximum temperature reaches 35 degC;
* V2G discharge price = 0.453 yuan/kWh x the TOU coefficient of the slot.

Periods are codes (``VALLEY``, ``FLAT``, ``PEAK``, ``CRITICAL``); a coefficient is the price of a
period relative to flat. Prices are float arrays; money becomes ``Decimal`` only on a statement
(``core.money``). A load curve is ``(n, T)`` kW, loads positive, ``T = 96 x days`` slots from a local
midnight (Asia/Shanghai).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openvpp.core import rules as rulesets
from openvpp.core.timeslots import SLOT_H, SLOTS_PER_DAY, SLOTS_PER_HOUR

VALLEY, FLAT, PEAK, CRITICAL = 0, 1, 2, 3
PERIODS = ("valley", "flat", "peak", "critical")


@dataclass(frozen=True)
class TouRules:
    """The ``[tou]`` section of a rule set, typed. Hours are ``[start, end)`` local hours."""

    ruleset_id: str
    peak_hours: tuple[tuple[float, float], ...]
    valley_hours: tuple[tuple[float, float], ...]
    ratio_peak: float
    ratio_flat: float
    ratio_valley: float
    critical_months: tuple[int, ...]
    critical_hours: tuple[tuple[float, float], ...]
    critical_factor: float
    critical_temp_c: float
    v2g_base_yuan_per_kwh: float
    flat_yuan_per_kwh: float | None = None   # absolute flat price, when the rule set gives one

    @classmethod
    def from_ruleset(cls, ruleset: rulesets.RuleSet | str = rulesets.DEFAULT_RULESET) -> TouRules:
        rs = rulesets.load(ruleset) if isinstance(ruleset, str) else ruleset
        t = rs.section("tou")

        def spans(key: str) -> tuple[tuple[float, float], ...]:
            return tuple((float(a), float(b)) for a, b in t[key])

        flat = t.get("flat_yuan_per_kwh")
        return cls(rs.id, spans("peak_hours"), spans("valley_hours"), float(t["ratio_peak"]),
                   float(t["ratio_flat"]), float(t["ratio_valley"]), tuple(int(m) for m in t["critical_peak_months"]),
                   spans("critical_peak_hours"), float(t["critical_peak_factor"]), float(t["critical_peak_temp_c"]),
                   float(t["v2g_discharge_base_yuan_per_kwh"]), None if flat is None else float(flat))

    @property
    def coefficients(self) -> np.ndarray:
        """Price relative to flat, indexed by period code: (4,) [valley, flat, peak, critical]."""
        flat = self.ratio_flat
        return np.array([self.ratio_valley, flat, self.ratio_peak, self.ratio_peak * self.critical_factor]) / flat


def _mask(spans: tuple[tuple[float, float], ...]) -> np.ndarray:
    slot_h = np.arange(SLOTS_PER_DAY) / SLOTS_PER_HOUR
    m = np.zeros(SLOTS_PER_DAY, bool)
    for a, b in spans:
        m |= (slot_h >= a) & (slot_h < b)
    return m


def slot_periods(rules: TouRules, critical: bool = False) -> np.ndarray:
    """Period code of each of the 96 slots of a day, (96,) int8; ``critical`` marks a critical-peak day."""
    p = np.full(SLOTS_PER_DAY, FLAT, np.int8)
    p[_mask(rules.valley_hours)] = VALLEY
    p[_mask(rules.peak_hours)] = PEAK
    if critical:
        p[_mask(rules.critical_hours)] = CRITICAL
    return p


def critical_days(days: np.ndarray, rules: TouRules, tmax_c: np.ndarray | None = None) -> np.ndarray:
    """True on critical-peak days: a critical month, or a maximum temperature at or above the threshold.

    days : (d,) datetime64[D] local days; tmax_c : (d,) daily maximum temperature [degC] or None (NaN = unknown).
    """
    d = np.asarray(days, dtype="datetime64[D]")
    month = (d.astype("datetime64[M]").astype(np.int64) % 12) + 1
    hot = np.zeros(d.shape, bool)
    if tmax_c is not None:
        with np.errstate(invalid="ignore"):
            hot = np.asarray(tmax_c, float) >= rules.critical_temp_c
    return np.isin(month, rules.critical_months) | hot


def period_codes(start_day: np.datetime64 | str, n_days: int, rules: TouRules,
                 tmax_c: np.ndarray | None = None) -> np.ndarray:
    """Period code of every slot of ``n_days`` local days from ``start_day``: (96 x n_days,) int8."""
    days = np.datetime64(start_day, "D") + np.arange(n_days)
    crit = critical_days(days, rules, tmax_c)
    normal, hot = slot_periods(rules, False), slot_periods(rules, True)
    return np.where(crit[:, None], hot[None, :], normal[None, :]).reshape(-1)


def coefficient_curve(codes: np.ndarray, rules: TouRules) -> np.ndarray:
    """TOU coefficient (price relative to flat) of every slot, same shape as ``codes``."""
    return rules.coefficients[np.asarray(codes, np.int64)]


def price_curve(codes: np.ndarray, rules: TouRules, flat_yuan_per_kwh: float) -> np.ndarray:
    """Energy price [yuan/kWh] of every slot: the flat price x the slot's coefficient."""
    return flat_yuan_per_kwh * coefficient_curve(codes, rules)


def v2g_discharge_price(codes: np.ndarray, rules: TouRules) -> np.ndarray:
    """V2G discharge price [yuan/kWh] per slot: the rule set's base (0.453) x the TOU coefficient."""
    return rules.v2g_base_yuan_per_kwh * coefficient_curve(codes, rules)


def energy_by_period(load_kw: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Energy [kWh] of each row in each period: ``(n, 4)`` columns valley, flat, peak, critical.

    load_kw : (n, T) or (T,) kW (positive parts only are counted; pass ``-load`` for discharge)
    codes : (T,) period codes.
    """
    load = np.atleast_2d(np.maximum(np.asarray(load_kw, float), 0.0))
    onehot = np.zeros((load.shape[1], len(PERIODS)))
    onehot[np.arange(load.shape[1]), np.asarray(codes, np.int64)] = 1.0
    return load @ onehot * SLOT_H


@dataclass(frozen=True)
class Bill:
    """What a load curve costs: per row, float yuan (rounded only on a statement)."""

    charge_yuan: np.ndarray           # (n,) consumption x TOU price
    discharge_credit_yuan: np.ndarray  # (n,) export (negative load) x V2G discharge price
    energy_kwh: np.ndarray            # (n, 4) consumption per period
    discharge_kwh: np.ndarray         # (n, 4) export per period
    ruleset_id: str

    @property
    def net_yuan(self) -> np.ndarray:
        return self.charge_yuan - self.discharge_credit_yuan

    @property
    def valley_share(self) -> np.ndarray:
        """Share of consumption in the valley, (n,) (NaN where nothing was consumed)."""
        total = self.energy_kwh.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.energy_kwh[:, VALLEY] / total, np.nan)


def bill(load_kw: np.ndarray, start_day: np.datetime64 | str, rules: TouRules, flat_yuan_per_kwh: float,
         tmax_c: np.ndarray | None = None) -> Bill:
    """Price any load curve under TOU.

    Parameters
    ----------
    load_kw : (n, 96 x days) or (96 x days,) kW per 15-minute slot from local midnight of ``start_day``;
        positive = consumption (priced at the TOU tariff), negative = discharge (credited at the V2G price).
    start_day : first local day.
    rules : the TOU rules (``TouRules.from_ruleset``).
    flat_yuan_per_kwh : the absolute flat price the ratios apply to [yuan/kWh].
    tmax_c : (days,) daily maximum temperature [degC] for the >= 35 degC critical-peak days, or None.
    """
    load = np.atleast_2d(np.asarray(load_kw, float))
    t = load.shape[1]
    if t % SLOTS_PER_DAY:
        raise ValueError(f"load_kw must have 96 x days columns, got {t}")
    codes = period_codes(start_day, t // SLOTS_PER_DAY, rules, tmax_c)
    energy = energy_by_period(load, codes)
    export = energy_by_period(-load, codes)
    coef = rules.coefficients
    return Bill(charge_yuan=energy @ (flat_yuan_per_kwh * coef),
                discharge_credit_yuan=export @ (rules.v2g_base_yuan_per_kwh * coef),
                energy_kwh=energy, discharge_kwh=export, ruleset_id=rules.ruleset_id)
