"""OCPP 1.6J and 2.0.1 central system against charge points built with the ``ocpp`` library, over real WebSockets.

The mini city's piles: R7 (ev_charging, 60 kW), R4 (ev_charging, 120 kW), R5 (v2g_charger, 60 kW).
"""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import websockets
from ocpp.v16 import call as call16
from sqlalchemy import select

from openvpp.adapters.ocpp.csms import CentralSystem
from openvpp.services.ev_charging import ChargingService
from openvpp.services.telemetry import TelemetryService
from openvpp.sim.chargers import EV, ChargerState, Peer16, Peer201
from openvpp.store import db
from openvpp.store.schema_ev import ev_charge_points, ev_charging_profiles, ev_sessions
from openvpp.store.schema_telemetry import telemetry_raw


def _run(settings, body, **csms_kw):
    """Run ``body(csms, url)`` against a central system on a free port (``csms_kw``: its options)."""
    async def main():
        engine = db.get_engine(settings.database_url)
        svc = ChargingService(engine, TelemetryService(engine))
        csms = CentralSystem(svc, **{"flush_s": 0.2, **csms_kw})
        port = await csms.start("127.0.0.1", 0)
        try:
            return await asyncio.wait_for(body(csms, f"ws://127.0.0.1:{port}"), 60)
        finally:
            await csms.stop()
    return asyncio.run(main())


async def _peer(url, cls, state, headers=None):
    proto = "ocpp2.0.1" if state.version == "2.0.1" else "ocpp1.6"
    ws = await websockets.connect(f"{url}/{state.cp_id}", subprotocols=[proto], additional_headers=headers)
    peer = cls(state.cp_id, ws)
    peer.state = state
    task = asyncio.create_task(peer.start())
    return ws, peer, task


async def _until(cond, timeout=5.0):
    t0 = asyncio.get_running_loop().time()
    while not cond():
        if asyncio.get_running_loop().time() - t0 > timeout:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


def _rows(settings, table, **where):
    with db.get_engine(settings.database_url).connect() as conn:
        q = select(table)
        for k, v in where.items():
            q = q.where(table.c[k] == v)
        return [dict(r._mapping) for r in conn.execute(q)]


def test_ocpp16_boot_default_profile_transaction_and_meter_values_into_telemetry(loaded):
    state = ChargerState("R7", "1.6", 60.0, ev=EV(60.0, 0.3, 0.9, 0.3, 60.0))

    async def body(csms, url):
        ws, peer, task = await _peer(url, Peer16, state)
        assert await peer.boot()
        await _until(lambda: "default" in state.profiles)
        assert state.profiles["default"].periods == [(0, 60.0)]
        hb = await peer.call(call16.Heartbeat())
        assert hb.current_time
        now = datetime.now(UTC) - timedelta(minutes=3)
        await peer.plug_in(now)
        for i in range(1, 4):
            t = now + timedelta(minutes=i)
            state.step(t, 60.0)                  # 60 kW for a minute: 1 kWh each
            await peer.meter(t)
        await peer.unplug(now + timedelta(minutes=3))
        await csms.flush()
        await ws.close()
        task.cancel()
        return csms.stats

    stats = _run(loaded, body)
    assert stats["callerrors"] == 0
    (s,) = _rows(loaded, ev_sessions, charge_point_id="R7")
    assert s["state"] == "completed" and s["ocpp_version"] == "1.6" and s["v2g"] is False
    charged = sum(s[f"charge_{p}_kwh"] for p in ("valley", "flat", "peak", "critical"))
    assert charged == pytest.approx(3.0, abs=1e-6)
    pts = _rows(loaded, telemetry_raw, device_id="R7")
    assert len(pts) == 3 and all(p["power_kw"] == pytest.approx(60.0) for p in pts)
    assert pts[-1]["energy_kwh"] == pytest.approx(3.0)
    (cp,) = _rows(loaded, ev_charge_points, charge_point_id="R7")
    assert cp["connected"] is False and cp["status"] == {"0/1": "Charging"}
    (prof,) = _rows(loaded, ev_charging_profiles, charge_point_id="R7")
    assert prof["purpose"] == "default" and prof["state"] == "accepted"


def test_ocpp201_v2g_discharge_profile_is_followed_then_falls_back_on_disconnect(loaded):
    state = ChargerState("R5", "2.0.1", 60.0, 60.0, ev=EV(60.0, 0.8, 0.9, 0.3, 60.0))

    async def body(csms, url):
        ws, peer, task = await _peer(url, Peer201, state)
        assert await peer.boot()
        await _until(lambda: "default" in state.profiles)
        now = datetime.now(UTC) - timedelta(minutes=2)
        await peer.plug_in(now)
        plan = csms.service.profile_from_schedule(np.array([-20.0, -20.0, 10.0, 10.0]), now - timedelta(minutes=1),
                                                  evse_id=1, profile_id=7, transaction_id=state.transaction_id,
                                                  max_discharge_kw=60.0)
        assert plan.periods == ((0, -20.0), (1800, 10.0))
        assert await csms.send_profile("R5", plan) == "accepted"
        assert state.profiles["tx"].periods == [(0, -20.0), (1800, 10.0)]
        t = now + timedelta(minutes=1)
        assert state.step(t, 180.0) == pytest.approx(-20.0)      # follows the negative limit: discharges
        await peer.meter(t)
        await csms.flush()
        await ws.close()                                           # cut off mid-profile
        task.cancel()
        await _until(lambda: "R5" not in csms.connected)
        await asyncio.sleep(0.3)
        return True

    _run(loaded, body)
    (s,) = _rows(loaded, ev_sessions, charge_point_id="R5")
    assert s["v2g"] is True and s["state"] == "active"
    assert sum(s[f"discharge_{p}_kwh"] for p in ("valley", "flat", "peak", "critical")) == pytest.approx(1.0)
    pts = sorted(_rows(loaded, telemetry_raw, device_id="R5"), key=lambda r: r["ts"])
    assert [p["power_kw"] for p in pts][0] == 0.0           # the Started event's reading
    pt = pts[-1]
    assert pt["power_kw"] == pytest.approx(-20.0) and pt["soc"] == pytest.approx(state.ev.soc, abs=1e-3)
    tx = [p for p in _rows(loaded, ev_charging_profiles, charge_point_id="R5") if p["purpose"] == "tx"]
    assert tx[0]["state"] == "fallback" and "default profile" in tx[0]["reason"]
    # the charger side: cut off, it forgets the transaction profile and follows its default (rated, no discharge)
    state.lost_connection()
    assert state.limit_kw(datetime.now(UTC)) == 60.0


def test_ocpp16_charger_never_gets_a_discharge_limit(loaded):
    state = ChargerState("R7", "1.6", 60.0)

    async def body(csms, url):
        ws, peer, task = await _peer(url, Peer16, state)
        assert await peer.boot()
        now = datetime.now(UTC)
        await peer.plug_in(now)
        plan = csms.service.profile_from_schedule(np.array([-30.0, 5.0]), now, 1, 3, str(state.transaction_id), 0.0)
        assert await csms.send_profile("R7", plan) == "accepted"
        await ws.close()
        task.cancel()

    _run(loaded, body)
    assert state.profiles["tx"].periods == [(0, 0.0), (900, 5.0)]


def test_unknown_charge_point_is_rejected_and_cannot_talk_before_boot(loaded):
    async def body(csms, url):
        async with websockets.connect(f"{url}/NOPE", subprotocols=["ocpp2.0.1"]) as ws:
            await ws.send(json.dumps([2, "b1", "BootNotification", {
                "chargingStation": {"vendorName": "x", "model": "y"}, "reason": "PowerUp"}]))
            boot = json.loads(await ws.recv())
            await ws.send(json.dumps([2, "h1", "Heartbeat", {}]))
            hb = json.loads(await ws.recv())
        return boot, hb

    boot, hb = _run(loaded, body)
    assert boot[0] == 3 and boot[2]["status"] == "Rejected"
    assert hb[:3] == [4, "h1", "SecurityError"]


async def _raw_boot(ws, version):
    if version == "1.6":
        await ws.send(json.dumps([2, "boot", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}]))
    else:
        await ws.send(json.dumps([2, "boot", "BootNotification", {"chargingStation": {"vendorName": "v", "model": "m"},
                                                                  "reason": "PowerUp"}]))


async def _reply(ws, uid):
    """The answer to our message ``uid`` (CSMS-initiated calls such as SetChargingProfile are skipped)."""
    while True:
        msg = json.loads(await ws.recv())
        if msg[0] in (3, 4) and msg[1] == uid:
            return msg


@pytest.mark.parametrize("version,cp", [("1.6", "R7"), ("2.0.1", "R4")])
def test_malformed_and_out_of_order_messages_get_callerror(loaded, version, cp, caplog):
    proto = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"

    async def body(csms, url):
        out = {}
        async with websockets.connect(f"{url}/{cp}", subprotocols=[proto]) as ws:
            await ws.send("this is not json")
            out["garbage"] = json.loads(await ws.recv())
            await ws.send(json.dumps([2, "early", "Heartbeat", {}]))
            out["early"] = await _reply(ws, "early")
            await _raw_boot(ws, version)
            out["boot"] = await _reply(ws, "boot")
            await ws.send(json.dumps([2, "bad", "Heartbeat", {"unexpected": 1}]))
            out["schema"] = await _reply(ws, "bad")
            if version == "1.6":
                await ws.send(json.dumps([2, "stop", "StopTransaction", {
                    "meterStop": 10, "timestamp": datetime.now(UTC).isoformat(), "transactionId": 424242}]))
            else:
                await ws.send(json.dumps([2, "stop", "TransactionEvent", {
                    "eventType": "Updated", "timestamp": datetime.now(UTC).isoformat(),
                    "triggerReason": "MeterValuePeriodic", "seqNo": 3,
                    "transactionInfo": {"transactionId": "never-started"}}]))
            out["order"] = await _reply(ws, "stop")
            await ws.send(json.dumps([7, "x", "Heartbeat", {}]))
            out["type"] = await _reply(ws, "x")      # the CSMS's own SetChargingProfile call may come first
        return out

    with caplog.at_level("WARNING", logger="openvpp.ocpp"):
        out = _run(loaded, body)
    if version == "1.6":
        assert out["garbage"][:3] == [4, "-1", "FormationViolation"]
        assert out["schema"][:3] == [4, "bad", "FormationViolation"]
        assert out["type"][:2] == [4, "x"] and out["type"][2] == "ProtocolError"
    else:
        assert out["garbage"][:3] == [4, "-1", "RpcFrameworkError"]
        assert out["schema"][:3] == [4, "bad", "FormatViolation"]
        assert out["type"][:3] == [4, "x", "MessageTypeNotSupported"]
    assert out["early"][:3] == [4, "early", "SecurityError"]
    assert out["boot"][0] == 3 and out["boot"][2]["status"] == "Accepted"
    assert out["order"][:3] == [4, "stop", "PropertyConstraintViolation"]
    assert "transactionId" in json.dumps(out["order"])
    assert any("CALLERROR" in r.message or "malformed" in r.message for r in caplog.records)


def test_connection_without_ocpp_subprotocol_is_refused(loaded):
    async def body(csms, url):
        with pytest.raises(websockets.InvalidStatus) as exc:
            async with websockets.connect(f"{url}/R4"):
                pass
        return exc.value.response.status_code

    assert _run(loaded, body) == 400
