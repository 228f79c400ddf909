"""Live state: the flexibility kernel, offline devices leaving the totals, scoped API and SSE stream."""

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvpp.core.errors import InvalidInput
from openvpp.kernels.live import device_intervals, membership_patterns, overlapping_sums
from openvpp.services.live import DEFAULT_INTERVALS_S, LiveService, LiveState, live_flex, reporting_intervals
from openvpp.services.scope import Scope
from openvpp.services.telemetry import NO_TS, DeviceIndex, TelemetryConfig
from openvpp.store import db
from tests.test_telemetry_api import api, login  # noqa: F401  (fixture)

NOW = 1_764_000_000_000


def test_flex_of_loads_pv_storage_and_offline_devices():
    online, p, up, down = live_flex(
        p_kw=np.array([100.0, 100.0, -50.0, 20.0, 20.0, 5.0]),
        soc=np.array([np.nan, np.nan, np.nan, 0.5, 0.99, np.nan]),
        last_ts_ms=np.array([NOW, NOW - 200_000, NOW, NOW, NOW, NO_TS]),
        now_ms=NOW, offline_after_ms=180_000,
        capacity_kw=np.array([150.0, 150.0, 100.0, 60.0, 60.0, 10.0]),
        adjustable_up_kw=np.array([80.0, 80.0, 90.0, 60.0, 60.0, 5.0]),
        adjustable_down_kw=np.array([160.0, 160.0, 0.0, 60.0, 60.0, 5.0]),
        bidirectional=np.array([False, False, False, True, True, False]),
        generator=np.array([False, False, True, False, False, False]))
    assert online.tolist() == [True, False, True, True, True, False]
    assert p.tolist() == [100.0, 0.0, -50.0, 20.0, 20.0, 0.0]
    assert down.tolist() == [100.0, 0.0, 0.0, 60.0, 60.0, 0.0]   # a load cannot shed more than it draws
    # headroom to capacity; PV curtails at most its 50 kW injection; a full battery takes no more
    assert up.tolist() == [50.0, 0.0, 50.0, 60.0, 0.0, 0.0]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(0, 1), st.integers(0, 400_000), st.booleans()),
                min_size=1, max_size=40))
def test_flex_is_never_negative_nor_above_the_declared_range(rows):
    p, soc, age, bidir = (np.array(x) for x in zip(*rows, strict=True))
    online, power, up, down = live_flex(p, soc, NOW - age, NOW, 180_000, np.full(len(p), 100.0),
                                        np.full(len(p), 30.0), np.full(len(p), 40.0), bidir)
    assert (up >= 0).all() and (up <= 30).all() and (down >= 0).all() and (down <= 40).all()
    assert (power[~online] == 0).all() and (up[~online] == 0).all()


def test_offline_devices_leave_the_totals_at_every_level(loaded):
    with db.get_engine(loaded.database_url).connect() as conn:
        index = DeviceIndex.load(conn)
    # one expected interval for every device here (per-protocol intervals: the test after)
    state = LiveState(index, TelemetryConfig(interval_s=60, offline_intervals=3), intervals_s={})
    ids = np.array(["R1", "R4", "R5", "R6", "R4"], dtype=object)
    # R4 reports twice: the newer point wins, in whatever order they arrive
    state.update(index.lookup(ids), np.array([NOW, NOW - 1000, NOW, NOW - 200_000, NOW - 500]),
                 np.array([300.0, 40.0, -20.0, 900.0, 50.0]), np.array([np.nan, np.nan, 0.5, np.nan, np.nan]))
    t = state.compute(NOW)
    city = t.rows("city")[0]
    assert city["power_kw"] == 330.0 and city["online"] == 3 and city["devices"] == 7
    hz = {r["id"]: r for r in t.rows("district")}["GZ-HZ"]
    assert hz["power_kw"] == 30.0 and hz["online"] == 2 and hz["offline"] == 2   # R6 silent 200 s, R7 never
    # R1: AC 800 kW, declared down 160 → 160 at 300 kW; R4 pile 50 of 120 → down 50, up 70; R5 V2G 60/60
    assert city["down_kw"] == 160.0 + 50.0 + 60.0
    assert city["up_kw"] == 0.0 + 0.0 + 60.0    # R1 and R4 declare no up
    op2 = state.compute(NOW, Scope(operator_id="OP02")).rows("city")[0]
    assert (op2["power_kw"], op2["devices"]) == (30.0, 2)
    keep = state.children("transformer_area", "district", "GZ-HZ")
    assert {r["id"] for r in t.rows("transformer_area", keep)} == {"GZ-HZ-S01-F01-T001", "GZ-HZ-S01-F01-T002"}
    # the same devices a little later: R1 and R5 go silent too
    later = state.compute(NOW + 181_000).rows("city")[0]
    assert later["online"] == 0 and later["power_kw"] == 0.0 and later["down_kw"] == 0.0


def test_live_api_and_sse_stream_follow_http_ingest_in_scope(api):  # noqa: F811
    t = int(time.time() * 1000) - 2000
    api.post("/api/v1/telemetry", headers={"X-API-Key": api.keys["dev1"]},
             content=json.dumps({"points": [{"d": "R1", "t": t, "p": 300.0}, {"d": "R6", "t": t, "p": 1000.0}]}))
    api.post("/api/v1/telemetry", headers={"X-API-Key": api.keys["eng2"]},
             content=json.dumps({"points": [{"d": "R4", "t": t, "p": 60.0}]}))
    admin = login(api, "admin")
    deadline = time.time() + 10
    while True:
        s = api.get("/api/v1/live/summary", headers=admin).json()
        if s["city"]["power_kw"] == 1360.0 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert s["city"]["power_kw"] == 1360.0 and s["city"]["online"] == 3 and s["scope"] == "city"
    op2 = api.get("/api/v1/live/summary", headers=login(api, "op2")).json()
    assert op2["city"]["power_kw"] == 60.0 and op2["scope"] == "operator OP02"
    feeders = api.get("/api/v1/live/nodes/feeder?parent=GZ-HZ-S01", headers=admin).json()["rows"]
    assert [(r["id"], r["power_kw"]) for r in feeders] == [("GZ-HZ-S01-F01", 1060.0)]
    dev = api.get("/api/v1/live/devices/R4", headers=login(api, "op1"))
    assert dev.status_code == 404   # another operator's device
    assert api.get("/api/v1/live/devices/R1", headers=login(api, "op1")).json()["power_kw"] == 300.0
    events = []
    with api.stream("GET", "/api/v1/live/stream?max_events=2&levels=city,operator",
                    headers=login(api, "op1")) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert len(events) == 2 and events[1]["tick"] > events[0]["tick"]
    assert events[0]["scope"] == "operator OP01"
    assert [(r["id"], r["power_kw"]) for r in events[0]["levels"]["operator"]] == [("OP01", 1300.0)]
    assert api.get("/api/v1/live/nodes/planet", headers=admin).status_code == 422
    # a browser's EventSource cannot send headers: the token may come as a query parameter
    token = admin["Authorization"].split()[1]
    with api.stream("GET", f"/api/v1/live/stream?max_events=1&access_token={token}") as r:
        assert r.status_code == 200
        data = [json.loads(x[5:]) for x in r.iter_lines() if x.startswith("data:")]
    assert data[0]["scope"] == "city"
    assert api.get("/api/v1/live/stream?max_events=1&access_token=junk").status_code == 401


def test_a_registry_reload_keeps_the_last_points_of_known_devices(loaded):
    eng = db.get_engine(loaded.database_url)
    with eng.connect() as conn:
        old = LiveState(DeviceIndex.load(conn), TelemetryConfig())
    ids = np.array(["R1", "R6"], dtype=object)
    old.update(old.index.lookup(ids), np.array([NOW, NOW]), np.array([10.0, 20.0]), np.array([np.nan, np.nan]))
    with eng.begin() as conn:
        conn.exec_driver_sql("UPDATE resources SET state = 'retired' WHERE resource_id = 'R6'")
    with eng.connect() as conn:
        new = LiveState(DeviceIndex.load(conn), TelemetryConfig())
    assert new.carry_over(old) == 1
    assert new.device("R1", NOW)["power_kw"] == 10.0
    assert "R6" not in new.index.pos
    # carried over again after the swap, an older point does not replace the newer one the feed wrote
    new.update(new.index.lookup(np.array(["R1"], dtype=object)), np.array([NOW + 1000]), np.array([99.0]),
               np.array([np.nan]))
    old.update(old.index.lookup(np.array(["R1"], dtype=object)), np.array([NOW + 500]), np.array([50.0]),
               np.array([np.nan]))
    assert new.carry_over(old) == 0 and new.device("R1", NOW + 1000)["power_kw"] == 99.0


def test_pools_get_live_totals_of_their_members(loaded):
    from openvpp.services import pools
    from openvpp.services.live import _attach_pools

    eng = db.get_engine(loaded.database_url)
    with eng.begin() as conn:
        created = pools.default_pools(conn)
    assert created
    with eng.connect() as conn:
        state = LiveState(DeviceIndex.load(conn), TelemetryConfig())
        _attach_pools(conn, state)
        engine = pools.PoolEngine.from_db(conn)
    ids = np.array(["R1", "R3", "R4", "R5", "R6"], dtype=object)
    p = np.array([300.0, -100.0, 40.0, -20.0, 900.0])
    state.update(state.index.lookup(ids), np.full(5, NOW), p, np.array([np.nan, 0.5, np.nan, 0.5, np.nan]))
    t = state.compute(NOW)
    rows = {r["id"]: r for r in t.rows("pool")}
    assert set(rows) <= set(state.pool_ids) and rows
    by_id = dict(zip(ids.tolist(), p.tolist(), strict=True))
    for pool_id, row in rows.items():
        members = engine.members(pool_id, 1000)["items"]
        assert row["devices"] == len(members)
        assert row["power_kw"] == sum(by_id.get(m, 0.0) for m in members)


def test_each_device_is_offline_after_its_own_reporting_interval(loaded):
    """MQTT and Modbus devices report every minute; OCPP chargers and OpenADR VENs every 5 minutes
    by default: a charger silent for 200 s is still online, a chiller on MQTT is not."""
    with db.get_engine(loaded.database_url).connect() as conn:
        index = DeviceIndex.load(conn)
    cfg = TelemetryConfig(interval_s=60, offline_intervals=3)
    ids = np.array(["R1", "R2", "R4", "R6"], dtype=object)   # mqtt, modbus_sunspec, ocpp2.0.1, openadr2.0b

    def online(state, at_ms):
        return {d: state.device(d, at_ms)["online"] for d in ids}

    state = LiveState(index, cfg)
    state.update(index.lookup(ids), np.full(4, NOW - 200_000), np.array([300.0, -50.0, 40.0, 900.0]),
                 np.full(4, np.nan))
    assert online(state, NOW) == {"R1": False, "R2": False, "R4": True, "R6": True}
    assert [state.device(d, NOW)["interval_s"] for d in ids] == [60.0, 60.0, 300.0, 300.0]
    city = state.compute(NOW).rows("city")[0]
    assert (city["online"], city["power_kw"], city["down_kw"]) == (2, 940.0, 40.0 + 300.0)
    # silent for 3 × 300 s: still online; a millisecond more: offline
    assert online(state, NOW + 700_000) == {"R1": False, "R2": False, "R4": True, "R6": True}
    assert online(state, NOW + 700_001) == dict.fromkeys(ids.tolist(), False)

    # configuration: by resource type or protocol; where both name a device the longer one applies
    slow_chillers = LiveState(index, cfg, reporting_intervals("central_ac=120, ocpp2.0.1=60"))
    slow_chillers.update(index.lookup(ids), np.full(4, NOW - 200_000), np.zeros(4), np.full(4, np.nan))
    assert online(slow_chillers, NOW) == {"R1": True, "R2": False, "R4": False, "R6": True}
    both = reporting_intervals("central_ac=120,mqtt=240")
    assert LiveState(index, cfg, both).device("R1", NOW)["interval_s"] == 240.0


def test_reporting_intervals_come_from_the_environment_and_bad_ones_are_refused(monkeypatch):
    assert reporting_intervals("") == DEFAULT_INTERVALS_S
    monkeypatch.setenv("OPENVPP_TELEMETRY_INTERVALS", "http=900,distributed_pv=30")
    got = reporting_intervals()
    assert got["http"] == 900.0 and got["distributed_pv"] == 30.0 and got["ocpp1.6"] == 300.0
    for text, value in (("ocpp9=60", "ocpp9=60"), ("http=0", "http=0"), ("mqtt", "mqtt"),
                        ("http=soon", "http=soon"), ("http=nan", "http=nan"), ("mqtt=15,http=-1", "http=-1")):
        with pytest.raises(InvalidInput) as e:
            reporting_intervals(text)
        (v,) = e.value.violations
        assert (v.field, v.value) == ("OPENVPP_TELEMETRY_INTERVALS", value)
    # the service reads it on construction: a bad setting stops it before it serves anything
    monkeypatch.setenv("OPENVPP_TELEMETRY_INTERVALS", "ev_charging=-5")
    with pytest.raises(InvalidInput, match="OPENVPP_TELEMETRY_INTERVALS"):
        LiveService(None, None, TelemetryConfig())


@pytest.mark.parametrize("refresh_s", [0.05, 2.0, 5.0])
def test_a_refresh_of_at_most_5_s_is_accepted(refresh_s):
    live = LiveService(None, None, TelemetryConfig(live_refresh_s=refresh_s), intervals_s={})
    assert live.period_ms == round(refresh_s * 1000)


@pytest.mark.parametrize("refresh_s", [5.001, 30.0, 0.0, -1.0, float("nan"), 0.01])
def test_a_refresh_slower_than_5_s_or_not_positive_is_refused_naming_the_setting(refresh_s, monkeypatch):
    with pytest.raises(InvalidInput) as e:
        LiveService(None, None, TelemetryConfig(live_refresh_s=refresh_s))
    assert [v.field for v in e.value.violations] == ["OPENVPP_TELEMETRY_LIVE_REFRESH_S"]
    assert "at least every 5 s" in e.value.violations[0].rule
    monkeypatch.setenv("OPENVPP_TELEMETRY_LIVE_REFRESH_S", str(refresh_s))
    with pytest.raises(InvalidInput, match="OPENVPP_TELEMETRY_LIVE_REFRESH_S"):
        LiveService(None, None)   # the settings of the environment, as the API's runtime builds it


def test_interval_settings_must_be_positive():
    with pytest.raises(InvalidInput) as e:
        LiveService(None, None, TelemetryConfig(interval_s=0, offline_intervals=-1))
    assert [v.field for v in e.value.violations] == ["OPENVPP_TELEMETRY_INTERVAL_S",
                                                     "OPENVPP_TELEMETRY_OFFLINE_INTERVALS"]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(0, 300), st.data())
def test_pool_totals_from_membership_patterns_equal_masked_sums(p, n, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    density = data.draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    masks = rng.random((p, n)) < density
    values = rng.normal(0, 100, (2, n))
    scope = rng.random(n) < 0.5
    codes, incidence = membership_patterns(masks)
    assert incidence.shape[1] == p and len(incidence) <= min(n, 2**p)
    assert ((codes >= 0) == masks.any(axis=0)).all()
    assert (incidence[codes[codes >= 0]] == masks.T[codes >= 0]).all()   # a device's pattern is its memberships
    for mask in (None, scope):
        got = overlapping_sums(codes, incidence, *values, mask=mask)
        sel = masks if mask is None else masks & mask
        want = np.array([[v[m].sum() for m in sel] for v in values] + [sel.sum(axis=1)])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@settings(deadline=None)
@given(st.floats(1, 1000), st.lists(st.tuples(st.integers(-1, 2), st.integers(-1, 1)), min_size=1, max_size=30))
def test_a_device_expects_the_longest_interval_that_applies(default_s, rows):
    protocol, rtype = (np.array(x) for x in zip(*rows, strict=True))
    by_protocol, by_type = np.array([10.0, np.nan, 500.0]), np.array([np.nan, 90.0])
    got = device_intervals(default_s, (protocol, by_protocol), (rtype, by_type))
    for k, (pc, tc) in enumerate(rows):
        named = [t[c] for t, c in ((by_protocol, pc), (by_type, tc)) if c >= 0 and not np.isnan(t[c])]
        assert got[k] == (max(named) if named else default_s)


def test_the_service_keeps_the_bus_points_across_registry_reloads(loaded):
    """Reloading the registry every tick (off the loop) keeps the points fed from the bus."""
    import asyncio

    from openvpp.bus import connect
    from openvpp.services.telemetry import ACCEPTED_SUBJECT, encode_columns

    async def main():
        bus = await connect("memory://")
        live = await LiveService(db.get_engine(loaded.database_url), bus, TelemetryConfig(live_refresh_s=0.05),
                                 reload_every_s=0.0, intervals_s={}).start()
        first = live.state
        try:
            now = int(time.time() * 1000)
            await bus.publish(ACCEPTED_SUBJECT, encode_columns("gw", ["R1", "R4"], np.array([now, now]),
                                                              np.array([120.0, 30.0])))
            for _ in range(400):
                if live.state is not first and live.latest.rows("city")[0]["power_kw"] == 150.0:
                    break
                await asyncio.sleep(0.02)
            tick = live.tick
            await live.wait_tick(tick + 2, 10)   # two more reloads and ticks
            return first, live.state, live.latest.rows("city")[0], live.tick - tick
        finally:
            await live.stop()

    first, state, city, ticks = asyncio.run(main())
    assert state is not first and ticks >= 3
    assert (city["power_kw"], city["online"]) == (150.0, 2)
    assert state.device("R4", int(time.time() * 1000))["power_kw"] == 30.0
