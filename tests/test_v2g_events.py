"""V2G in events: declarations bounded by the fleet's flexibility envelope, pool flexibility from the envelope,
and discharge scheduled into an event with battery wear and the guaranteed departure energy."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from openvpp.core.errors import InvalidInput
from openvpp.core.timeslots import SLOT_H, slot_start_utc
from openvpp.kernels import v2g as kv2g
from openvpp.model.ev import EvAssumptions, Sessions
from openvpp.services import events, pools
from openvpp.services import v2g as v2g_svc
from openvpp.store import db
from openvpp.store.audit import Actor

DISP = Actor("disp", "dispatcher")
OP2 = Actor("op2", "operator_admin", operator_id="OP02")
ENV_START = 48           # the envelope's slot 0 is 12:00 local


def _fleet(n_v2g: int = 3, extra_plain: int = 0) -> Sessions:
    """V2G sessions plugged 12:00-20:00: 60 kWh packs at 50 %, 30 % reserve, 10 kWh asked, 20 kW both ways."""
    n = n_v2g + extra_plain
    v2g = np.r_[np.ones(n_v2g, bool), np.zeros(extra_plain, bool)]
    return Sessions(station=np.full(n, -1), arrival=np.zeros(n), departure=np.full(n, 32), energy_kwh=np.full(n, 10.0),
                    max_charge_kw=np.full(n, 20.0), max_discharge_kw=np.where(v2g, 20.0, 0.0),
                    battery_kwh=np.full(n, 60.0), soc_arrival=np.full(n, 0.5), soc_min=np.where(v2g, 0.3, 0.0),
                    v2g=v2g)


def _envelope() -> kv2g.Envelope:
    s = _fleet()
    return kv2g.envelope(s, np.zeros((s.n, 96)), None, EvAssumptions())


def _event(conn) -> dict:
    ev = events.create(conn, DISP, {"product": "congestion", "day": "2025-07-15", "start_slot": 60, "end_slot": 64,
                                    "targets_kw": 50.0, "scope_node_id": "GZ-HZ-S01-F01-T001"})
    events.transition(conn, DISP, ev["event_id"], "publish")
    events.transition(conn, DISP, ev["event_id"], "open")
    return ev


BEFORE = datetime(2025, 7, 14, 20, 0, tzinfo=UTC)


def test_envelope_limits_bind_power_per_slot_and_energy_over_the_window():
    env = _envelope()
    # 3 x 20 kW per slot; energy room 3 x (30 - 18) kWh, x 0.95 on the discharge side = 34.2 kWh
    lim = v2g_svc.envelope_limits(env, "down", 12, 16)
    assert lim == pytest.approx([60.0, 60.0, (34.2 - 30.0) / SLOT_H, 0.0])


def test_declaration_is_proposed_from_the_envelope_and_checked_against_it(loaded):
    env = _envelope()
    with db.get_engine(loaded.database_url).begin() as conn:
        ev = _event(conn)
        prop = v2g_svc.propose_declaration(conn, ev["event_id"], "OP02@GZ-HZ-S01", env, ENV_START)
        assert prop["capability_kw"] == 180.0                      # R4 120 + R5 60 registered
        assert prop["quantities_kw"] == [60.0, 60.0, 16.8, 0.0]
        assert prop["binding"] == ["envelope"] * 4
        row = v2g_svc.declare_from_envelope(conn, OP2, ev["event_id"], "OP02@GZ-HZ-S01", env, 0.8,
                                            env_start_slot=ENV_START, now=BEFORE)
        assert row["quantities_kw"] == [60.0, 60.0, 16.8, 0.0] and row["version"] == 1
        with pytest.raises(InvalidInput) as too_long:
            v2g_svc.declare_from_envelope(conn, OP2, ev["event_id"], "OP02@GZ-HZ-S01", env, 0.8, [60.0] * 4,
                                          env_start_slot=ENV_START, now=BEFORE)
        (v,) = too_long.value.violations
        assert v.field == "quantities_kw[2]" and "departure energy" in v.rule
        with pytest.raises(InvalidInput) as too_big:
            v2g_svc.declare_from_envelope(conn, OP2, ev["event_id"], "OP02@GZ-HZ-S01", env, 0.8,
                                          [61.0, 0.0, 0.0, 0.0], env_start_slot=ENV_START, now=BEFORE)
        assert too_big.value.violations[0].field == "quantities_kw[0]"
        assert "power" in too_big.value.violations[0].rule
        assert len(events.latest_declarations(conn, ev["event_id"])) == 1     # refusals wrote nothing
        with pytest.raises(InvalidInput) as short_env:
            v2g_svc.propose_declaration(conn, ev["event_id"], "OP02@GZ-HZ-S01", env, env_start_slot=70)
        assert short_env.value.violations[0].field == "envelope"


def test_pool_counts_v2g_from_the_envelope_not_nameplate(loaded):
    env = _envelope()
    with db.get_engine(loaded.database_url).begin() as conn:
        pools.default_pools(conn)
        engine = pools.PoolEngine.from_db(conn)
        pid = next(p for p in engine._index if engine.mask(p)[list(engine.reg.resource_id).index("R5")])
        totals = engine.totals_of(pid)
        v2g_row = next(r for r in engine.breakdown(pid, "type") if r["type"] == "v2g_charger")
    view = v2g_svc.pool_view(totals, v2g_row, env, 12, 16)
    assert view["down_kw"] == pytest.approx(totals["down_kw"] - v2g_row["down_kw"] + 60.0)
    # one hour at 60 kW would take 60 kWh; the fleet can only give 36 kWh of stored energy
    assert view["v2g"]["envelope"]["energy_down_kwh"] == pytest.approx(36.0)
    assert view["energy_down_kwh"] == pytest.approx(totals["energy_down_kwh"] - v2g_row["energy_down_kwh"] + 36.0)
    with pytest.raises(InvalidInput):
        v2g_svc.pool_view(totals, v2g_row, env, 16, 16)


@pytest.mark.parametrize("reference", ["v2g", "charging"])
def test_event_discharge_meets_the_target_with_departure_energy_guaranteed(reference):
    s = _fleet(3, extra_plain=1)
    target = np.zeros(32)
    target[2:6] = 30.0                                              # 12:30-13:30, a flat-price hour
    got = v2g_svc.event_discharge(s, None, slot_start_utc(datetime(2025, 7, 15).date(), ENV_START), target,
                                  reference=reference)
    assert got.delivered_kw[2:6] == pytest.approx([30.0] * 4, abs=1e-6)
    assert got.shortfall_kw.sum() == pytest.approx(0.0, abs=1e-6)
    if reference == "charging":
        assert (got.plan >= 0).all()                                # the reference never discharges
    assert got.discharge[3].sum() == 0                              # the plain session never discharges
    # every session still gets its 10 kWh: battery gain = 0.95 charge - discharge / 0.95
    gain = (got.charge * 0.95 - got.discharge / 0.95).sum(axis=1) * SLOT_H
    assert gain == pytest.approx([10.0] * 4, abs=1e-4)
    assert (got.flags == 0).all()
    assert got.wear_yuan == pytest.approx(got.discharge.sum() * SLOT_H * 0.25)


def test_event_discharge_too_deep_reports_shortfall_and_keeps_departure_energy():
    s = _fleet(1)
    target = np.zeros(32)
    target[2:6] = 100.0                                             # one car cannot shed 100 kW
    got = v2g_svc.event_discharge(s, None, slot_start_utc(datetime(2025, 7, 15).date(), ENV_START), target)
    assert got.shortfall_kw[2:6].min() > 0
    gain = (got.charge * 0.95 - got.discharge / 0.95).sum(axis=1) * SLOT_H
    assert gain[0] == pytest.approx(10.0, abs=1e-4)
    assert got.summary()["shortfall_kwh"] > 0
    with pytest.raises(InvalidInput):
        v2g_svc.event_discharge(s, None, slot_start_utc(datetime(2025, 7, 15).date(), ENV_START), -target)


def test_api_pool_v2g_view_from_the_vehicles_plugged_in(loaded):
    """GET /pools/{id}/v2g: the pool's V2G charger counts what the plugged vehicle can give (open OCPP
    session, its departure energy kept), not its 60 kW nameplate; nothing plugged → nothing."""
    from fastapi.testclient import TestClient
    from sqlalchemy import insert

    from openvpp.api.app import create_app
    from openvpp.services import accounts
    from openvpp.store import audit
    from openvpp.store.schema_ev import ev_charge_points, ev_sessions

    start = datetime(2025, 7, 15, 4, 0, tzinfo=UTC)          # 12:00 local, a slot boundary
    engine = db.get_engine(loaded.database_url)
    with engine.begin() as conn:
        pools.default_pools(conn)
        accounts.create_user(conn, audit.SYSTEM, "disp", "pw-correct-horse", "dispatcher", None, None, rounds=4)
        conn.execute(insert(ev_charge_points).values(charge_point_id="R5", ocpp_version="2.0.1", connected=True,
                                                     status={}))
        pe = pools.PoolEngine.from_db(conn)
        pid = next(p for p in pe._index if pe.mask(p)[list(pe.reg.resource_id).index("R5")]
                   and pe.totals_of(p)["scenario"] == "peak_shaving")
    with TestClient(create_app(loaded)) as client:
        tok = client.post("/api/v1/auth/token", data={"username": "disp", "password": "pw-correct-horse"}).json()
        h = {"Authorization": f"Bearer {tok['access_token']}"}
        url = f"/api/v1/pools/{pid}/v2g"
        params = {"start": start.isoformat(), "start_slot": 0, "end_slot": 4}
        empty = client.get(url, params=params, headers=h).json()
        assert empty["v2g"]["sessions"] == 0 and empty["v2g"]["chargers"] == 1
        assert empty["v2g"]["nameplate"]["down_kw"] > 0 and empty["v2g"]["envelope"]["down_kw"] == 0.0
        with engine.begin() as conn:
            conn.execute(insert(ev_sessions).values(
                session_id="S-1", charge_point_id="R5", evse_id=1, transaction_id="T1", ocpp_version="2.0.1",
                state="active", started_at=start, v2g=True, battery_kwh=50.0, soc_last=0.8,
                departure_at=datetime(2025, 7, 15, 10, 0, tzinfo=UTC), energy_requested_kwh=5.0))
        plugged = client.get(url, params=params, headers=h).json()
        bad = client.get(url, params={**params, "start_slot": 4, "end_slot": 4}, headers=h)
        naive = client.get(url, params={**params, "start": "2025-07-15T04:00:00"}, headers=h)
    env = plugged["v2g"]["envelope"]
    assert plugged["v2g"]["sessions"] == 1
    # a 60 kW V2G pile with 40 kWh stored, 5 kWh more wanted by departure: it can shed load this hour
    assert 0 < env["down_kw"] <= 60.0 + 1e-9 and env["energy_down_kwh"] > 0
    base = plugged["down_kw"] - env["down_kw"] + plugged["v2g"]["nameplate"]["down_kw"]
    assert base == pytest.approx(empty["down_kw"] - empty["v2g"]["envelope"]["down_kw"]
                                 + empty["v2g"]["nameplate"]["down_kw"])
    assert bad.status_code == 422 and "start_slot" in bad.text
    assert naive.status_code == 422 and "start" in naive.text
