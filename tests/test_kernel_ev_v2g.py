"""V2G: discharge in peaks with battery wear and a guaranteed departure energy; envelope; battery; settlement."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openvpp.kernels import ev_heuristic, ev_lp, tariff, v2g
from openvpp.model.ev import CAPACITY_SHORT, EvAssumptions, Sessions, Stations

RULES = tariff.TouRules.from_ruleset()
# a March window 12:00 -> 12:00: slots 8-28 peak (14-19 h), 48-80 valley (00-08 h)
CODES = np.r_[tariff.slot_periods(RULES), tariff.slot_periods(RULES)][48:144]
CHARGE = tariff.price_curve(CODES, RULES, 0.453)
DISCHARGE = tariff.v2g_discharge_price(CODES, RULES)
A = EvAssumptions()


def _one(**kw):
    base = dict(station=[0], arrival=[16], departure=[80], energy_kwh=[12.0], max_charge_kw=[7.0],
                max_discharge_kw=[7.0], battery_kwh=[60.0], soc_arrival=[0.6], soc_min=[0.3], soc_max=[1.0],
                v2g=[True])
    base.update(kw)
    return Sessions(**base)


def test_v2g_discharges_in_the_peak_down_to_the_reserve_and_leaves_with_its_energy():
    s = _one()
    out = ev_lp.schedule_v2g(s, Stations([50.0]), CHARGE, DISCHARGE, A.degradation_yuan_per_kwh)
    dis = out.stats["discharge_kw"][0]
    ch = out.stats["charge_kw"][0]
    e = out.stats["energy_kwh"][0]
    assert dis[16:28].sum() * 0.25 == pytest.approx(18.0 * 0.95, rel=1e-6)   # 36 -> 18 kWh battery, AC side
    assert (dis[28:] == 0).all() and (dis[:16] == 0).all()
    assert np.nanmin(e) >= 18.0 - 1e-6                                         # the 30 % reserve
    assert e[79] >= 48.0 - 1e-6                                                # 36 + 12 guaranteed
    assert (ch[CODES == tariff.PEAK] < 1e-9).all()
    assert out.flags[0] == 0 and out.served_kwh[0] == pytest.approx(12.0)
    assert out.cost_yuan < 0                                                   # the arbitrage pays


@pytest.mark.parametrize("n", [0, 1])
def test_no_session_in_the_horizon_gives_an_idle_schedule(n):
    """A small city may have no V2G session plugged in when an event comes (seen in ``openvpp demo -n 60``)."""
    s = Sessions(**{k: v[:0] for k, v in _one().__dict__.items()}) if n == 0 else _one(arrival=[200], departure=[210])
    bound = np.full(96, np.nan)
    bound[16:20] = -30.0   # the event asks the fleet to export 30 kW
    out = ev_lp.schedule_v2g(s, Stations([50.0]), CHARGE, DISCHARGE, A.degradation_yuan_per_kwh, fleet_max_kw=bound)
    assert out.power_kw.shape == (n, 96) and not out.power_kw.any() and out.cost_yuan == 0.0
    assert out.stats["fleet_short_kw"][16:20].tolist() == [30.0] * 4 and not out.stats["fleet_short_kw"][:16].any()


def test_expensive_battery_wear_stops_discharge():
    out = ev_lp.schedule_v2g(_one(), Stations([50.0]), CHARGE, DISCHARGE, degradation_yuan_per_kwh=5.0)
    assert out.stats["discharge_kw"].max() < 1e-9


def test_unidirectional_sessions_never_discharge_and_match_the_charging_lp():
    s = _one(v2g=[False])
    out = ev_lp.schedule_v2g(s, Stations([50.0]), CHARGE, DISCHARGE, 0.25, charge_efficiency=1.0)
    plain = ev_lp.schedule(s, Stations([50.0]), CHARGE)
    assert out.stats["discharge_kw"].max() == 0
    assert out.cost_yuan == pytest.approx(plain.cost_yuan)


def test_event_premium_pulls_discharge_into_the_event():
    event = np.zeros(96)
    event[36:40] = 3.0          # 21:00-22:00 event, 3 yuan/kWh on top
    out = ev_lp.schedule_v2g(_one(), Stations([50.0]), CHARGE, DISCHARGE, 0.25, event_yuan_per_kwh=event)
    assert out.stats["discharge_kw"][0, 36:40] == pytest.approx([7.0] * 4)


def test_unreachable_departure_energy_is_flagged_not_raised():
    s = _one(arrival=[70], departure=[72], energy_kwh=[30.0])
    out = ev_lp.schedule_v2g(s, Stations([50.0]), CHARGE, DISCHARGE, 0.25)
    assert out.flags[0] != 0
    # a station too small to carry it: the shortfall is flagged, the rest scheduled
    s2 = _one(energy_kwh=[20.0], arrival=[60], departure=[64])
    out2 = ev_lp.schedule_v2g(s2, Stations([2.0]), CHARGE, DISCHARGE, 0.25)
    assert out2.flags[0] & CAPACITY_SHORT
    assert out2.served_kwh[0] == pytest.approx(2.0 * 0.95, rel=1e-5)


def test_envelope_of_one_v2g_session_by_hand():
    s = _one()
    plan = ev_heuristic.schedule(s, Stations([50.0]), CHARGE).power_kw     # 12 kWh in the valley
    env = v2g.envelope(s, plan, assumptions=EvAssumptions(charge_efficiency=1.0, discharge_efficiency=1.0))
    # at 16:00 the car sits at 36 kWh; it may charge 7 kW more or discharge 7 kW
    assert env.baseline_kw[16] == 0.0 and env.up_kw[16] == 7.0 and env.down_kw[16] == 7.0
    assert env.plugged[15] == 0 and env.plugged[16] == 1
    assert env.energy_kwh[16] == pytest.approx(36.0)
    assert env.energy_max_kwh[16] == pytest.approx(36.0 + 7 * 0.25)
    assert env.energy_min_kwh[16] == pytest.approx(36.0 - 7 * 0.25)
    # the last slot: the plan must finish; nothing may be shed below what reaching 48 kWh needs
    last = 79
    assert env.energy_min_kwh[last] == pytest.approx(48.0)
    assert env.down_kw[last] == pytest.approx(plan[0, last] - max(0.0, plan[0, last]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**31 - 1), st.integers(1, 20))
def test_envelope_brackets_the_plan(seed, n):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 80, n)
    s = Sessions(station=np.zeros(n, int), arrival=arr, departure=np.minimum(arr + rng.integers(2, 60, n), 96),
                 energy_kwh=rng.uniform(0, 20, n), max_charge_kw=7.0, max_discharge_kw=7.0,
                 battery_kwh=60.0, soc_arrival=rng.uniform(0.1, 0.8, n), soc_min=0.2, v2g=rng.random(n) < 0.5)
    plan = ev_heuristic.schedule(s, Stations([1000.0]), CHARGE).power_kw
    env = v2g.envelope(s, plan)
    assert (env.up_kw >= 0).all() and (env.down_kw >= 0).all()
    assert (env.energy_min_kwh <= env.energy_kwh + 1e-6).all() and (env.energy_kwh <= env.energy_max_kwh + 1e-6).all()
    assert (env.up_kw <= 7.0 * env.plugged + 1e-9).all()
    assert (env.down_kw <= 14.0 * env.plugged + 1e-9).all()


def test_battery_indicators_by_hand():
    out = v2g.battery_indicators(np.array([6000.0]), np.array([3000.0]), np.array([60.0]), age_years=2.0,
                                 assumptions=EvAssumptions(cycle_life_efc=3000, eol_soh=0.8, calendar_fade_per_year=0.01))
    assert out["throughput_kwh"][0] == 9000.0
    assert out["efc"][0] == pytest.approx(75.0)
    assert out["v2g_efc"][0] == pytest.approx(50.0)
    assert out["soh"][0] == pytest.approx(1 - 0.2 * 75 / 3000 - 0.02)


def test_budget_cap_scales_all_v2g_claims_pro_rata():
    price = RULES.v2g_base_yuan_per_kwh * RULES.coefficients
    e = np.array([[0, 0, 1000.0, 0], [0, 500.0, 0, 500.0]])
    out = v2g.settle_discharge(e, price, subsidy_yuan_per_kwh=5.0, budget_yuan=5000.0)
    assert out.energy_yuan == pytest.approx([1000 * 0.453 * 1.7, 500 * 0.453 + 500 * 0.453 * 2.125])
    assert out.subsidy_claim_yuan.tolist() == [5000.0, 5000.0]
    assert out.scale == 0.5 and out.subsidy_yuan.tolist() == [2500.0, 2500.0]
    assert v2g.settle_discharge(e, price, 5.0, 1e9).scale == 1.0
