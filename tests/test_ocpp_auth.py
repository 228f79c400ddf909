"""OCPP central system: ID tag authorization, meter values committed before the CALLRESULT, 2.0.1
NotifyEVChargingNeeds into the scheduler, security profile 1 (basic auth) — against ``ocpp`` library peers.

The mini city's piles: R7 (ev_charging, 60 kW, 1.6), R4 (ev_charging, 120 kW), R5 (v2g_charger, 60 kW).
"""

import asyncio
import base64
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import websockets
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from sqlalchemy import select

from openvpp.adapters.ocpp.csms import CSMS16, CSMS201
from openvpp.core.errors import InvalidInput
from openvpp.services.ev_charging import ChargingService, day_ahead, slot_start
from openvpp.sim.chargers import EV, ChargerState, Peer16, Peer201
from openvpp.store import db
from openvpp.store.schema_ev import ev_sessions
from openvpp.store.schema_telemetry import telemetry_raw
from tests.test_ocpp import _peer, _run


def _register(settings):
    svc = ChargingService(db.get_engine(settings.database_url))
    svc.register_tag("GOOD", "Accepted", "OP02")
    svc.register_tag("BAD", "Blocked")
    svc.register_tag("OLD", "Accepted", expires_at=datetime.now(UTC) - timedelta(days=1))
    return svc


def test_shared_handlers_are_defined_once_for_both_versions():
    assert CSMS16.on_heartbeat is CSMS201.on_heartbeat and CSMS16.after_boot is CSMS201.after_boot
    assert "on_heartbeat" not in vars(CSMS16) and "on_heartbeat" not in vars(CSMS201)


def test_tag_registration_refuses_bad_input(loaded):
    svc = ChargingService(db.get_engine(loaded.database_url))
    with pytest.raises(InvalidInput) as exc:
        svc.register_tag("X" * 65, "Maybe")
    assert {v.field for v in exc.value.violations} == {"id_tag", "status"}
    assert svc.authorize("X" * 65) == "Invalid"


def test_ocpp16_authorize_and_start_transaction_use_the_registered_tags(loaded):
    _register(loaded)
    state = ChargerState("R7", "1.6", 60.0)

    async def body(csms, url):
        ws, peer, task = await _peer(url, Peer16, state)
        assert await peer.boot()
        got = {t: (await peer.call(call16.Authorize(id_tag=t))).id_tag_info["status"]
               for t in ("GOOD", "BAD", "OLD", "NOPE")}
        start = await peer.call(call16.StartTransaction(connector_id=1, id_tag="BAD", meter_start=0,
                                                        timestamp=datetime.now(UTC).isoformat()))
        stop = await peer.call(call16.StopTransaction(meter_stop=0, timestamp=datetime.now(UTC).isoformat(),
                                                      transaction_id=start.transaction_id, reason="DeAuthorized"))
        await ws.close()
        task.cancel()
        return got, start, stop

    got, start, stop = _run(loaded, body)
    assert got == {"GOOD": "Accepted", "BAD": "Blocked", "OLD": "Expired", "NOPE": "Invalid"}
    assert start.id_tag_info["status"] == "Blocked" and isinstance(start.transaction_id, int)
    assert stop is not None


def test_ocpp201_authorize_and_transaction_event_use_the_registered_tags(loaded):
    _register(loaded)
    state = ChargerState("R4", "2.0.1", 120.0)

    async def body(csms, url):
        ws, peer, task = await _peer(url, Peer201, state)
        assert await peer.boot()
        got = {t: (await peer.call(call201.Authorize(id_token={"id_token": t, "type": "ISO14443"})))
               .id_token_info["status"] for t in ("GOOD", "BAD", "OLD", "NOPE")}
        hb = await peer.call(call201.Heartbeat())
        now = datetime.now(UTC).isoformat()
        started = await peer.call(call201.TransactionEvent(
            event_type="Started", timestamp=now, trigger_reason="Authorized", seq_no=0,
            transaction_info={"transaction_id": "TX-GOOD"}, evse={"id": 1, "connector_id": 1},
            id_token={"id_token": "GOOD", "type": "ISO14443"}))
        await ws.close()
        task.cancel()
        return got, hb, started

    got, hb, started = _run(loaded, body)
    assert got == {"GOOD": "Accepted", "BAD": "Blocked", "OLD": "Expired", "NOPE": "Invalid"}
    assert hb.current_time and started.id_token_info == {"status": "Accepted"}


def _points(settings, device):
    with db.get_engine(settings.database_url).connect() as conn:
        return conn.execute(select(telemetry_raw.c.power_kw).where(telemetry_raw.c.device_id == device)).all()


@pytest.mark.parametrize("version,cp,cls", [("1.6", "R7", Peer16), ("2.0.1", "R5", Peer201)])
def test_meter_values_are_committed_before_the_callresult(loaded, version, cp, cls):
    state = ChargerState(cp, version, 60.0, ev=EV(60.0, 0.3, 0.9, 0.3, 60.0))

    async def body(csms, url):
        ws, peer, task = await _peer(url, cls, state)
        assert await peer.boot()
        now = datetime.now(UTC) - timedelta(minutes=3)
        await peer.plug_in(now)
        seen = []
        for i in range(1, 4):
            t = now + timedelta(minutes=i)
            state.step(t, 60.0)
            await peer.meter(t)
            # the answer is back: the point must already be in the database (the periodic flush is 30 s away)
            seen.append(len(await asyncio.to_thread(_points, loaded, cp)))
        await ws.close()
        task.cancel()
        return seen, csms.stats

    seen, stats = _run(loaded, body, flush_s=30.0)
    first = 1 if version == "2.0.1" else 0              # 2.0.1's Started event carries a reading too
    assert seen == [first + 1, first + 2, first + 3]
    assert stats["callerrors"] == 0


def test_a_failed_commit_answers_callerror_not_callresult(loaded):
    state = ChargerState("R7", "1.6", 60.0, ev=EV(60.0, 0.3, 0.9, 0.3, 60.0))

    async def body(csms, url):
        ws, peer, task = await _peer(url, Peer16, state)
        assert await peer.boot()
        now = datetime.now(UTC)
        await peer.plug_in(now)

        def broken():
            raise RuntimeError("disk full")
        real, csms.service.flush = csms.service.flush, broken
        state.step(now + timedelta(minutes=1), 60.0)
        res = await peer.call(call16.MeterValues(connector_id=1, meter_value=[{
            "timestamp": (now + timedelta(minutes=1)).isoformat(), "sampled_value": [
                {"value": "1000", "measurand": "Power.Active.Import", "unit": "W"}]}]))
        csms.service.flush = real
        await ws.close()
        task.cancel()
        return res, csms.stats

    res, stats = _run(loaded, body, flush_s=30.0)
    assert res is None                                   # the library peer got a CALLERROR (suppressed)
    assert stats["callerrors"] >= 1 and stats["flush_errors"] >= 1


def test_ocpp201_charging_needs_reach_the_scheduler(loaded):
    state = ChargerState("R5", "2.0.1", 60.0, 60.0, ev=EV(60.0, 0.5, 0.9, 0.3, 60.0))
    start = slot_start(datetime.now(UTC))

    async def body(csms, url):
        ws, peer, task = await _peer(url, Peer201, state)
        assert await peer.boot()
        await peer.plug_in(datetime.now(UTC))
        needs = {"requested_energy_transfer": "DC", "departure_time": (start + timedelta(hours=2)).isoformat(),
                 "dc_charging_parameters": {"ev_max_current": 150, "ev_max_voltage": 400, "energy_amount": 20000,
                                            "ev_energy_capacity": 60000, "state_of_charge": 50}}
        ok = await peer.call(call201.NotifyEVChargingNeeds(evse_id=1, charging_needs=needs))
        other = await peer.call(call201.NotifyEVChargingNeeds(evse_id=2, charging_needs=needs))
        sessions, ids = await asyncio.to_thread(csms.service.open_sessions, start, 96)
        await ws.close()
        task.cancel()
        return ok.status, other.status, sessions, ids

    ok, other, sessions, ids = _run(loaded, body)
    assert (ok, other) == ("Accepted", "Rejected")
    (row,) = [i for i, sid in enumerate(ids) if sid.startswith("R5:")]
    assert sessions.arrival[row] == 0 and sessions.departure[row] == 8          # 2 h = 8 slots
    assert sessions.energy_kwh[row] == pytest.approx(20.0) and sessions.battery_kwh[row] == 60.0
    assert sessions.soc_arrival[row] == pytest.approx(0.5) and sessions.v2g[row]
    plan = day_ahead(sessions, None, None, start, horizon=96)
    assert plan.schedule.served_kwh[row] == pytest.approx(20.0)
    assert np.all(plan.schedule.power_kw[row, 8:] == 0)                          # nothing after departure
    with db.get_engine(loaded.database_url).connect() as conn:
        s = conn.execute(select(ev_sessions).where(ev_sessions.c.session_id == ids[row])).mappings().one()
    assert s["energy_requested_kwh"] == 20.0 and s["departure_at"] is not None


def _basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_security_profile_1_basic_auth_per_charge_point(loaded):
    svc = ChargingService(db.get_engine(loaded.database_url))
    svc.set_password("R4", "correct-horse-battery-1")
    with pytest.raises(InvalidInput):
        svc.set_password("R4", "short")
    state = ChargerState("R4", "2.0.1", 120.0)

    async def body(csms, url):
        codes = []
        for headers in (None, _basic("R4", "wrong-password-000000"), _basic("R5", "correct-horse-battery-1")):
            with pytest.raises(websockets.InvalidStatus) as exc:
                async with websockets.connect(f"{url}/R4", subprotocols=["ocpp2.0.1"], additional_headers=headers):
                    pass
            codes.append(exc.value.response.status_code)
        ws, peer, task = await _peer(url, Peer201, state, headers=_basic("R4", "correct-horse-battery-1"))
        booted = await peer.boot()
        await ws.close()
        task.cancel()
        return codes, booted, csms.stats["auth_failures"]

    codes, booted, failures = _run(loaded, body, security_profile=1)
    assert codes == [401, 401, 401] and booted and failures == 3
