"""Guangdong TOU tariff from the rule set: periods, critical peak, prices, bills, V2G discharge price."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.kernels import tariff
from openvpp.kernels.tariff import CRITICAL, FLAT, PEAK, VALLEY, TouRules

RULES = TouRules.from_ruleset()


def test_periods_follow_the_rule_set_hours():
    p = tariff.slot_periods(RULES)
    hour = np.arange(96) // 4
    assert (p[hour < 8] == VALLEY).all()
    assert (p[(hour >= 10) & (hour < 12)] == PEAK).all() and (p[(hour >= 14) & (hour < 19)] == PEAK).all()
    assert (p[(hour >= 8) & (hour < 10)] == FLAT).all() and (p[hour == 12] == FLAT).all()
    assert (p[hour >= 19] == FLAT).all() and (p[hour == 13] == FLAT).all()
    # 8 h valley, 7 h peak, 9 h flat
    assert np.bincount(p, minlength=4).tolist() == [32, 36, 28, 0]


def test_critical_peak_in_summer_months_and_on_hot_days():
    # 2025-07-15: July -> critical 11-12 and 15-17; 2025-05-20 only when 35 degC is reached
    july = tariff.period_codes("2025-07-15", 1, RULES)
    assert (july[44:48] == CRITICAL).all() and (july[60:68] == CRITICAL).all()
    assert (july[40:44] == PEAK).all() and (july[68:76] == PEAK).all()
    may = tariff.period_codes("2025-05-20", 2, RULES, tmax_c=np.array([34.9, 35.0]))
    assert (may[:96] != CRITICAL).all()
    assert (may[96 + 44:96 + 48] == CRITICAL).all()


def test_coefficients_are_the_rule_set_ratios():
    assert RULES.coefficients == pytest.approx([0.38, 1.0, 1.7, 1.7 * 1.25])


def test_v2g_discharge_price_is_base_times_coefficient():
    codes = np.array([VALLEY, FLAT, PEAK, CRITICAL])
    assert tariff.v2g_discharge_price(codes, RULES) == pytest.approx([0.453 * 0.38, 0.453, 0.453 * 1.7,
                                                                       0.453 * 2.125])


def test_bill_of_hand_computed_curves():
    load = np.zeros((2, 96))
    load[0, 0:8] = 10.0        # 2 h of 10 kW in the valley: 20 kWh x 0.38
    load[1, 40:44] = 4.0       # 1 h of 4 kW at 10:00 peak: 4 kWh x 1.7
    load[1, 80:84] = -8.0      # 1 h discharge of 8 kW at 20:00 flat: 8 kWh x 0.453
    b = tariff.bill(load, "2025-03-03", RULES, flat_yuan_per_kwh=0.6)
    assert b.charge_yuan == pytest.approx([20 * 0.38 * 0.6, 4 * 1.7 * 0.6])
    assert b.discharge_credit_yuan == pytest.approx([0.0, 8 * 0.453])
    assert b.energy_kwh[0].tolist() == [20.0, 0, 0, 0]
    assert b.valley_share[0] == 1.0 and b.valley_share[1] == 0.0
    assert b.ruleset_id == "guangzhou-2025.1"


def test_bill_refuses_partial_days():
    with pytest.raises(ValueError, match="96 x days"):
        tariff.bill(np.zeros((1, 95)), "2025-01-01", RULES, 0.6)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 3), st.integers(0, 365))
def test_bill_is_linear_and_matches_slot_prices(n, days, offset):
    rng = np.random.default_rng(n * 1000 + days)
    load = rng.uniform(0, 50, (n, 96 * days))
    start = np.datetime64("2025-01-01") + offset
    b = tariff.bill(load, start, RULES, 0.7)
    price = tariff.price_curve(tariff.period_codes(start, days, RULES), RULES, 0.7)
    assert b.charge_yuan == pytest.approx(load @ price * 0.25)
    assert tariff.bill(2 * load, start, RULES, 0.7).charge_yuan == pytest.approx(2 * b.charge_yuan)
    assert b.energy_kwh.sum(axis=1) == pytest.approx(load.sum(axis=1) * 0.25)
