"""Congestion kernel: hand numbers, properties, and a cross-check against a pandapower power flow."""

import numpy as np
import pandapower as pp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openvpp.kernels.congestion import loading, overloads, relief_kw


def test_hand_computed_loading_and_relief():
    p = np.array([[380.0, 560.0, 600.0]])          # kW through a 630 kVA transformer area
    ratio = loading(p, np.array([630.0]), power_factor=0.95)
    assert ratio[0].tolist() == pytest.approx([380 / 0.95 / 630, 560 / 0.95 / 630, 600 / 0.95 / 630])
    o = overloads(ratio)
    assert o["overloaded"][0] and o["first_slot"][0] == 2 and o["slots"][0] == 1
    relief = relief_kw(p, np.array([630.0]), margin=0.05)
    allowed = 630 * 0.95 * 0.95
    assert relief[0].tolist() == pytest.approx([0.0, 0.0, 600 - allowed])


@given(st.floats(10, 5000), st.floats(100, 2000), st.floats(0.8, 0.99))
def test_after_relief_the_node_is_within_its_limit(p, rating, pf):
    arr = np.array([[p]])
    r = relief_kw(arr, np.array([rating]), margin=0.05, power_factor=pf)
    after = loading(arr - r, np.array([rating]), power_factor=pf)
    assert after[0, 0] <= 0.95 + 1e-9
    assert r[0, 0] >= 0


def test_loading_matches_a_pandapower_power_flow_on_a_reference_feeder():
    """A 10 kV feeder → 630 kVA 10/0.4 kV transformer → 4 LV loads (the shape of a Guangzhou 台区).
    Our loading (no losses) must agree with pandapower's transformer loading within 3 %."""
    net = pp.create_empty_network()
    mv = pp.create_bus(net, vn_kv=10.0)
    lv = pp.create_bus(net, vn_kv=0.4)
    pp.create_ext_grid(net, mv)
    pp.create_transformer(net, mv, lv, std_type="0.63 MVA 10/0.4 kV")
    loads_kw = [150.0, 120.0, 90.0, 160.0]
    pf = 0.95
    for p in loads_kw:
        bus = pp.create_bus(net, vn_kv=0.4)
        pp.create_line_from_parameters(net, lv, bus, length_km=0.05, r_ohm_per_km=0.1, x_ohm_per_km=0.08,
                                       c_nf_per_km=0, max_i_ka=0.6)
        pp.create_load(net, bus, p_mw=p / 1000, q_mvar=p / 1000 * np.tan(np.arccos(pf)))
    pp.runpp(net)
    theirs = net.res_trafo.loading_percent.iloc[0] / 100
    ours = loading(np.array([[sum(loads_kw)]]), np.array([630.0]), power_factor=pf)[0, 0]
    assert ours == pytest.approx(theirs, rel=0.03)
    assert overloads(np.array([[ours]]))["overloaded"][0] == (theirs > 1.0)
