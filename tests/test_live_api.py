"""/api/v1/live/*: the recompute runs off the event loop, every answer of a tick agrees, the SSE
stream ticks on the platform clock's grid, and each device type has its own reporting interval."""

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from openvpp.api.routes import telemetry as telemetry_routes
from openvpp.core.clock import SimClock
from openvpp.services import pools
from openvpp.services.live import LiveService, LiveSnapshot
from openvpp.services.telemetry import TelemetryConfig
from openvpp.store import db
from tests.test_telemetry_api import api, login  # noqa: F401  (fixture)

HOLD_S = 30.0   # a held recompute gives up after this long: the test then fails instead of hanging


class Latch:
    """Holds the first call of a wrapped function in its thread until ``release``; records whether
    that thread was running an event loop."""

    def __init__(self, applies=lambda *a: True):
        self.applies = applies
        self.entered, self.released, self.done = threading.Event(), threading.Event(), threading.Event()
        self.gave_up = False
        self.on_event_loop = None

    def wrap(self, fn):
        def held(*args, **kwargs):
            if self.applies(*args, **kwargs) and not self.entered.is_set():
                try:
                    asyncio.get_running_loop()
                    self.on_event_loop = True
                except RuntimeError:
                    self.on_event_loop = False
                self.entered.set()
                self.gave_up = not self.released.wait(HOLD_S)
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.done.set()
            return fn(*args, **kwargs)
        return held


def post_points(client, age_s: float = 2.0):
    t = int(time.time() * 1000 - age_s * 1000)
    for key, points in (("dev1", [{"d": "R1", "t": t, "p": 300.0}, {"d": "R6", "t": t, "p": 1000.0}]),
                        ("eng2", [{"d": "R4", "t": t, "p": 60.0}])):
        r = client.post("/api/v1/telemetry", headers={"X-API-Key": client.keys[key]},
                        content=json.dumps({"points": points}))
        assert r.status_code == 200 and r.json()["inserted"] == len(points), r.text


def wait_for(fetch, done, what: str, limit_s: float = 20.0):
    """Poll ``fetch()`` until ``done(result)``; fail (not assert a duration) after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while True:
        got = fetch()
        if done(got):
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still {got!r}")
        time.sleep(0.05)


def test_requests_are_answered_while_the_periodic_recompute_runs(api, monkeypatch):  # noqa: F811
    post_points(api)
    admin, op1 = login(api, "admin"), login(api, "op1")
    summary = wait_for(lambda: api.get("/api/v1/live/summary", headers=admin).json(),
                       lambda s: s["city"]["power_kw"] == 1360.0, "the live view never took the points")
    latch = Latch()
    monkeypatch.setattr(LiveService, "_take", latch.wrap(LiveService._take))
    assert latch.entered.wait(HOLD_S), "no recompute started"
    try:
        # the next recompute is held in its thread; the API answers meanwhile, from the last snapshot
        held = api.get("/api/v1/live/summary", headers=admin).json()
        mine = api.get("/api/v1/live/summary", headers=op1).json()   # a scope: its own sums, off the loop too
        ops = api.get("/api/v1/live/nodes/operator", headers=admin).json()
        dev = api.get("/api/v1/live/devices/R1", headers=op1)
        assert not latch.released.is_set() and not latch.done.is_set()
    finally:
        latch.released.set()
    assert latch.on_event_loop is False and not latch.gave_up
    assert held["tick"] == mine["tick"] == ops["tick"] >= summary["tick"]
    assert held["city"]["power_kw"] == 1360.0 and dev.status_code == 200 and dev.json()["power_kw"] == 300.0
    # one tick, one answer: the operator's own totals are its row in the city's operator level
    op_row = {r["id"]: r for r in ops["rows"]}["OP01"]
    assert mine["scope"] == "operator OP01" and mine["at"] == held["at"] == ops["at"]
    assert {k: mine["city"][k] for k in ("power_kw", "up_kw", "down_kw", "online", "devices")} == \
           {k: op_row[k] for k in ("power_kw", "up_kw", "down_kw", "online", "devices")}
    # once released, the service goes on ticking
    wait_for(lambda: api.get("/api/v1/live/summary", headers=admin).json()["tick"],
             lambda t: t > held["tick"] + 1, "no tick after the held recompute")


def test_a_tenants_totals_are_summed_off_the_event_loop(api, monkeypatch):  # noqa: F811
    post_points(api)
    admin, op2 = login(api, "admin"), login(api, "op2")
    wait_for(lambda: api.get("/api/v1/live/summary", headers=admin).json()["city"]["online"],
             lambda n: n == 3, "the live view never took the points")
    latch = Latch(lambda *a, **k: len(a) > 1 and not a[1].city_wide)   # (snapshot, scope, levels)
    monkeypatch.setattr(LiveSnapshot, "totals", latch.wrap(LiveSnapshot.totals))
    answer = {}
    tenant = threading.Thread(target=lambda: answer.update(r=api.get("/api/v1/live/summary", headers=op2)))
    tenant.start()
    assert latch.entered.wait(HOLD_S), "the tenant's totals were never computed"
    try:
        city = api.get("/api/v1/live/summary", headers=admin)
        nodes = api.get("/api/v1/live/nodes/district", headers=admin)
        assert not latch.released.is_set() and "r" not in answer   # the tenant's answer is still held
    finally:
        latch.released.set()
        tenant.join(HOLD_S)
    assert latch.on_event_loop is False and not latch.gave_up
    assert city.status_code == 200 and nodes.status_code == 200
    assert answer["r"].status_code == 200 and answer["r"].json()["city"]["power_kw"] == 60.0


def test_sse_events_follow_the_platform_clock_one_refresh_apart(api):  # noqa: F811
    """A simulated clock at twice the wall's speed and a 1 s refresh: every event's ``at`` is a whole
    second of the simulated day, one second after the event before."""
    start = datetime(2025, 7, 15, 5, 45, tzinfo=UTC)
    clock = SimClock.at(start, speed=2.0)
    app = api.app

    async def inject():
        rt = app.state.telemetry = telemetry_routes.Runtime(app.state.settings)
        await rt.start()
        rt.live = await LiveService(rt.service.engine, rt.bus, TelemetryConfig(live_refresh_s=1.0),
                                    clock=clock).start()
        return rt.live

    live = api.portal.call(inject)
    try:
        with api.stream("GET", "/api/v1/live/stream?max_events=5&levels=city",
                        headers=login(api, "admin")) as r:
            events = [json.loads(x[5:]) for x in r.iter_lines() if x.startswith("data:")]
    finally:
        api.portal.call(live.stop)
    ats = [datetime.fromisoformat(e["at"]) for e in events]
    assert len(ats) == 5 and all(start <= a < start + timedelta(minutes=5) for a in ats)
    assert all(a.microsecond == 0 for a in ats)
    assert [(b - a).total_seconds() for a, b in zip(ats, ats[1:], strict=False)] == [1.0] * 4
    assert [e["tick"] for e in events] == list(range(events[0]["tick"], events[0]["tick"] + 5))


def test_a_slow_reporter_stays_online_over_the_api(api):  # noqa: F811
    """Points 200 s old: the MQTT chiller (60 s) is offline, the OCPP pile and the OpenADR building
    (300 s by default) are online and count in the totals."""
    post_points(api, age_s=200)
    admin = login(api, "admin")
    got = wait_for(lambda: api.get("/api/v1/live/devices?ids=R1,R4,R6", headers=admin).json()["items"],
                   lambda items: all(i["last_ts"] for i in items), "the live view never took the points")
    assert [(i["device_id"], i["online"], i["interval_s"]) for i in got] == \
           [("R1", False, 60.0), ("R4", True, 300.0), ("R6", True, 300.0)]
    city = wait_for(lambda: api.get("/api/v1/live/summary", headers=admin).json()["city"],
                    lambda c: c["online"] == 2, "the totals never counted the two slow reporters")
    assert city["power_kw"] == 1060.0


def test_pools_have_live_totals_over_the_api(api, loaded):  # noqa: F811
    with db.get_engine(loaded.database_url).begin() as conn:
        assert pools.default_pools(conn)
    post_points(api)
    admin, op1 = login(api, "admin"), login(api, "op1")
    rows = wait_for(lambda: api.get("/api/v1/live/nodes/pool", headers=admin).json().get("rows", []),
                    lambda rows: any(r["power_kw"] for r in rows), "no pool totals")
    with db.get_engine(loaded.database_url).connect() as conn:
        engine = pools.PoolEngine.from_db(conn)
    power = {"R1": 300.0, "R6": 1000.0, "R4": 60.0}
    for row in rows:
        members = engine.members(row["id"], 1000)["items"]
        assert row["devices"] == len(members)
        assert row["power_kw"] == sum(power.get(m, 0.0) for m in members)
    mine = api.get("/api/v1/live/nodes/pool", headers=op1).json()
    assert mine["scope"] == "operator OP01"
    assert all(r["power_kw"] <= 1300.0 for r in mine["rows"]) and mine["rows"]
