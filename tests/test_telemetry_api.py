"""HTTP ingest (X-API-Key), counters, series; the same service as MQTT, on both databases."""

import json
import time
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from openvpp.api.app import create_app
from openvpp.api.routes import live as live_routes
from openvpp.api.routes import telemetry as telemetry_routes
from openvpp.services import accounts
from openvpp.store import audit, db

PASSWORD = "correct-horse"
USERS = {"admin": ("city_admin", None, None), "op1": ("operator_admin", "OP01", None),
         "op2": ("operator_admin", "OP02", None), "own2": ("owner", None, "OW2")}


def make_app(settings):
    app = create_app(settings)
    have = {getattr(r, "path", "") for r in app.routes}
    for module in (telemetry_routes, live_routes):
        if not any(p.startswith("/api/v1" + module.router.prefix) for p in have):
            app.include_router(module.router, prefix="/api/v1")
    return app


@pytest.fixture
def api(loaded, monkeypatch):
    monkeypatch.setenv("OPENVPP_TELEMETRY_LIVE_REFRESH_S", "0.2")
    monkeypatch.setenv("OPENVPP_TELEMETRY_ROLLUP_REFRESH_S", "0.2")
    with db.get_engine(loaded.database_url).begin() as conn:
        for name, (role, op, own) in USERS.items():
            accounts.create_user(conn, audit.SYSTEM, name, PASSWORD, role, op, own, rounds=4)
        keys = {"dev1": accounts.create_api_key(conn, audit.SYSTEM, "gw-op01", "device", operator_id="OP01")["key"],
                "eng2": accounts.create_api_key(conn, audit.SYSTEM, "tss-op02", "operator_engineer",
                                                operator_id="OP02")["key"],
                "dev0": accounts.create_api_key(conn, audit.SYSTEM, "gw-none", "device")["key"]}
    with TestClient(make_app(loaded)) as c:
        c.keys = keys
        yield c


def login(client, user):
    r = client.post("/api/v1/auth/token", data={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def now_ms():
    return int(time.time() * 1000)


def test_http_batch_is_fenced_to_the_key_operator_and_idempotent(api):
    t = now_ms() - 5000
    body = {"gw": "S1", "points": [{"d": "R1", "t": t, "p": 120.0, "q": 5.0}, {"d": "R4", "t": t, "p": 30.0},
                                   {"d": "R2", "t": t, "p": -80.0}]}
    h = {"X-API-Key": api.keys["dev1"]}
    r = api.post("/api/v1/telemetry", content=json.dumps(body), headers=h)
    assert r.status_code == 200, r.text
    assert r.json() | {} == {"received": 3, "accepted": 2, "inserted": 2, "duplicates": 0,
                             "rejected": {"foreign_device": 1}, "rejected_total": 1, "refused_messages": 0}
    again = api.post("/api/v1/telemetry", content=json.dumps(body), headers=h).json()
    assert (again["inserted"], again["duplicates"]) == (0, 2)
    # the engineer key of OP02 may report R4 (its operator's pile), in the column form
    cols = {"gw": "S2", "cols": {"d": ["R4", "R5"], "t": [t, t], "p": [30.0, -20.0], "soc": [None, 0.4]}}
    r = api.post("/api/v1/telemetry", content=json.dumps(cols), headers={"X-API-Key": api.keys["eng2"]}).json()
    assert r["inserted"] == 2 and r["rejected_total"] == 0
    stats = api.get("/api/v1/telemetry/stats", headers=login(api, "admin")).json()
    assert stats["totals"]["inserted"] == 4 and stats["totals"]["duplicate"] == 2
    assert stats["totals"]["foreign_device"] == 2


def test_malformed_batch_is_422_and_readers_may_not_push(api):
    h = {"X-API-Key": api.keys["dev1"]}
    r = api.post("/api/v1/telemetry", content=b"{nope", headers=h)
    assert r.status_code == 422 and r.json()["violations"][0]["field"] == "payload"
    r = api.post("/api/v1/telemetry", content=b'{"gw": "x"}', headers=login(api, "own2"))
    assert r.status_code == 403
    assert api.post("/api/v1/telemetry", content=b"{}").status_code == 401


def test_series_respect_the_tenant_scope(api):
    t = now_ms() - 60_000
    api.post("/api/v1/telemetry", headers={"X-API-Key": api.keys["dev1"]},
             content=json.dumps({"points": [{"d": "R1", "t": t, "p": 100.0}, {"d": "R1", "t": t + 1000, "p": 300.0}]}))
    api.app.state.telemetry.service.refresh_rollups(include_open=True)   # the minute is still open: force it
    op1 = login(api, "op1")
    raw = api.get("/api/v1/telemetry/devices/R1", headers=op1).json()
    assert [p["power_kw"] for p in raw["points"]] == [100.0, 300.0]
    roll = api.get("/api/v1/telemetry/devices/R1?step=900", headers=op1).json()["buckets"]
    assert sum(b["n"] for b in roll) == 2 and sum(b["power_sum_kw"] for b in roll) == 400.0
    assert api.get("/api/v1/telemetry/devices/R1", headers=login(api, "op2")).status_code == 404
    assert api.get("/api/v1/telemetry/stats", headers=op1).status_code == 403
    assert api.get("/api/v1/telemetry/groups/district/GZ-TH", headers=op1).status_code == 403
    assert api.get("/api/v1/telemetry/groups/operator/OP01", headers=op1).status_code == 200


@pytest.mark.parametrize("body, field", [
    (b'{"gw": "S1", "points": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "payload"),
    (b'{"cols": {"d": "R1", "t": [1], "p": [1]}}', "d"),
    (b'{"cols": {"d": ["R1"], "t": [1], "p": [1, 2]}}', "p"),
    (b'{"cols": {"d": ["R1"], "t": 5, "p": [1]}}', "t"),
    (b'\xff\xfe\x00', "payload"),
])
def test_a_body_that_is_no_batch_is_422_naming_the_field_and_counted(api, body, field):
    r = api.post("/api/v1/telemetry", content=body, headers={"X-API-Key": api.keys["dev1"]})
    assert r.status_code == 422, r.text
    assert r.json()["violations"][0]["field"] == field
    stats = api.get("/api/v1/telemetry/stats", headers=login(api, "admin")).json()
    assert stats["totals"]["refused_message"] == 1


def test_values_beyond_any_range_are_rejected_per_point_over_http(api):
    t = now_ms() - 5000
    big = "1" + "0" * 400
    body = (f'{{"points": [{{"d": "R1", "t": {t}, "p": 1}}, {{"d": "R1", "t": {10**20}, "p": 1}},'
            f' {{"d": "R1", "t": {t + 1}, "p": {big}}}, {{"d": ["R1"], "t": {t + 2}, "p": 1}}]}}')
    r = api.post("/api/v1/telemetry", content=body, headers={"X-API-Key": api.keys["dev1"]})
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 1
    assert r.json()["rejected"] == {"bad_timestamp": 1, "non_numeric": 1, "unknown_device": 1}


def test_a_device_key_without_an_operator_reports_only_devices_without_one(api):
    t = now_ms() - 5000
    body = {"points": [{"d": "R1", "t": t, "p": 1.0}, {"d": "R4", "t": t, "p": 1.0}, {"d": "R7", "t": t, "p": 5.0}]}
    r = api.post("/api/v1/telemetry", content=json.dumps(body), headers={"X-API-Key": api.keys["dev0"]}).json()
    assert (r["inserted"], r["rejected"]) == (1, {"foreign_device": 2})    # R7 has no operator


def test_bad_quality_points_are_stored_but_never_become_live_power(api):
    h = login(api, "admin")
    assert api.get("/api/v1/live/summary", headers=h).status_code == 200   # the live view is running
    t = now_ms() - 3000
    body = {"points": [{"d": "R1", "t": t, "p": 100.0}, {"d": "R1", "t": t + 1000, "p": 900.0, "qf": 2},
                       {"d": "R6", "t": t + 1000, "p": 700.0, "qf": 2}]}
    r = api.post("/api/v1/telemetry", content=json.dumps(body), headers={"X-API-Key": api.keys["dev1"]}).json()
    assert r["inserted"] == 3
    deadline = time.time() + 15
    live = {}
    while time.time() < deadline and live.get("power_kw") != 100.0:
        live = api.get("/api/v1/live/devices/R1", headers=h).json()
        time.sleep(0.1)
    assert live["power_kw"] == 100.0 and live["online"]
    city = {}
    while time.time() < deadline and city.get("online") != 1:
        city = api.get("/api/v1/live/summary", headers=h).json()["city"]
        time.sleep(0.1)
    assert (city["online"], city["power_kw"]) == (1, 100.0)   # R1's good point; no bad point counts
    assert api.get("/api/v1/live/devices/R1", headers=h).json()["power_kw"] == 100.0
    assert api.get("/api/v1/live/devices/R6", headers=h).json()["online"] is False   # only a bad point: no sign of life


def test_http_pushes_are_rolled_up_by_the_api_process_without_any_call(api):
    """No MQTT worker and no manual refresh: the API runtime's timer rolls up the closed minute."""
    minute = (now_ms() // 60_000 - 2) * 60_000
    body = {"points": [{"d": "R1", "t": minute + 1000, "p": 100.0}, {"d": "R4", "t": minute + 2000, "p": 40.0}]}
    h = login(api, "admin")
    assert api.post("/api/v1/telemetry", content=json.dumps(body), headers={"X-API-Key": api.keys["dev1"]}).json()[
        "inserted"] == 1   # R4 is OP02's
    body = {"points": [{"d": "R4", "t": minute + 2000, "p": 40.0}]}
    assert api.post("/api/v1/telemetry", content=json.dumps(body), headers={"X-API-Key": api.keys["eng2"]}).json()[
        "inserted"] == 1
    start = datetime.fromtimestamp(minute / 1000, UTC).isoformat()
    deadline = time.time() + 20
    buckets = []
    while time.time() < deadline and not buckets:
        buckets = api.get("/api/v1/telemetry/groups/city/GZ", params={"step": 60, "start": start},
                          headers=h).json()["buckets"]
        time.sleep(0.1)
    assert [(b["power_kw"], b["n_devices"], b["n_points"]) for b in buckets] == [(140.0, 2, 2)]
