"""HTTP API of evaluation, settlement, statements, disputes and carbon, in each role's scope."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from openvpp.api.app import create_app
from openvpp.api.routes import settlement as settlement_routes
from openvpp.services import accounts
from openvpp.store import audit, db
from tests.test_settlement import make_golden

PASSWORD = "correct-horse"
USERS = (("admin", "city_admin", None, None), ("disp", "dispatcher", None, None), ("aud", "auditor", None, None),
         ("op1", "operator_admin", "OP01", None), ("op2", "operator_admin", "OP02", None),
         ("own3", "owner", None, "OW3"))


@pytest.fixture
def api(loaded, tmp_path):
    g = make_golden(loaded, tmp_path)
    with db.get_engine(loaded.database_url).begin() as conn:
        for name, role, op, own in USERS:
            accounts.create_user(conn, audit.SYSTEM, name, PASSWORD, role, op, own, rounds=4)
    app = create_app(loaded)
    if not any(getattr(r, "path", "") == "/api/v1/reports/carbon" for r in app.routes):
        app.include_router(settlement_routes.router, prefix="/api/v1")     # until routes/__init__ registers it
    app.state.meter_source = g.source
    with TestClient(app) as c:
        c.golden = g
        c.h = {u[0]: _login(c, u[0]) for u in USERS}
        yield c


def _login(client, user):
    r = client.post("/api/v1/auth/token", data={"username": user, "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_settlement_over_http_in_every_scope(api, monkeypatch):
    g, h = api.golden, api.h
    # the event's window is in the past: evaluating it now is allowed
    r = api.post(f"/api/v1/evaluations/{g.event_id}", json={"reason": "first"}, headers=h["op1"])
    assert r.status_code == 403
    r = api.post(f"/api/v1/evaluations/{g.event_id}", json={"baseline": {"method": "magic"}}, headers=h["disp"])
    assert r.status_code == 422 and r.json()["violations"][0]["field"] == "method"
    r = api.post(f"/api/v1/evaluations/{g.event_id}", json={"reason": "first"}, headers=h["disp"])
    assert r.status_code == 201, r.text
    assert r.json()["totals"]["credited"] == pytest.approx(3800.0)
    mine = api.get(f"/api/v1/evaluations/{g.event_id}", headers=h["op2"]).json()
    assert [u["unit_id"] for u in mine["units"]] == ["OP02@GZ-HZ-S01"] and mine["totals"]["credited"] == 750.0
    own = api.get(f"/api/v1/evaluations/{g.event_id}?level=resource", headers=h["own3"]).json()
    assert {x["key_id"] for x in own["resources"]} == {"GA2"} and own["units"] == []
    assert api.get(f"/api/v1/evaluations/{g.event_id}/versions", headers=h["op1"]).status_code == 403
    assert len(api.get(f"/api/v1/evaluations/{g.event_id}/versions", headers=h["aud"]).json()["items"]) == 1

    # the endpoint takes packaged rule sets only; the golden budget comes from a test file
    r = api.post("/api/v1/settlements", json={"year": 2025, "ruleset": g.ruleset}, headers=h["admin"])
    assert r.status_code == 422 and r.json()["violations"][0]["field"] == "ruleset"
    packaged = settlement_routes.rules.available()
    monkeypatch.setattr(settlement_routes.rules, "available", lambda: [*packaged, g.ruleset])
    assert api.post("/api/v1/settlements", json={"year": 2025}, headers=h["aud"]).status_code == 403
    r = api.post("/api/v1/settlements", json={"year": 2025, "ruleset": g.ruleset}, headers=h["admin"])
    assert r.status_code == 201, r.text
    sid = r.json()["settlement_id"]
    assert "reserve_eligible" not in api.get(f"/api/v1/settlements/{sid}", headers=h["op1"]).json()["summary"]
    for action in ("review", "approve"):
        r = api.post(f"/api/v1/settlements/{sid}/transitions", json={"action": action}, headers=h["admin"])
        assert r.status_code == 200 and r.json()["state"] == {"review": "reviewed", "approve": "approved"}[action]
    r = api.post(f"/api/v1/settlements/{sid}/transitions", json={"action": "approve"}, headers=h["admin"])
    assert r.status_code == 409

    r = api.get(f"/api/v1/statements/{sid}/operators/OP01", headers=h["op1"])
    assert r.status_code == 200 and r.json()["amounts"]["payable"] == "4078.95"
    assert api.get(f"/api/v1/statements/{sid}/operators/OP01", headers=h["op2"]).status_code == 403
    r = api.get(f"/api/v1/statements/{sid}/operators/OP01?format=csv", headers=h["aud"])
    assert r.headers["content-type"].startswith("text/csv") and "payable,4078.95" in r.text
    r = api.get(f"/api/v1/statements/{sid}/owners/OW3?format=html", headers=h["own3"])
    assert r.status_code == 200 and "1021.05" in r.text and r.text.startswith("<!doctype html>")
    assert api.get(f"/api/v1/statements/{sid}/owners/OW2", headers=h["own3"]).status_code == 403
    led = api.get(f"/api/v1/settlements/{sid}/ledger", headers=h["op2"]).json()["items"]
    assert {e["operator_id"] for e in led} == {"OP02"} and len(led) == 3
    assert [e["amount"] for e in api.get(f"/api/v1/settlements/{sid}/ledger", headers=h["own3"]).json()["items"]] \
        == ["1021.05"]

    line = api.get(f"/api/v1/statements/{sid}/operators/OP02", headers=h["op2"]).json()["lines"][0]
    body = {"settlement_id": sid, "line_id": line["line_id"], "reason": "GB2 meter fault",
            "evidence": {"meter": {"GB2": [0, 0, 0, 0]}}}
    assert api.post("/api/v1/disputes", json=body, headers=h["op1"]).status_code == 403
    r = api.post("/api/v1/disputes", json=body, headers=h["op2"])
    assert r.status_code == 201, r.text
    did = r.json()["dispute_id"]
    assert api.get(f"/api/v1/disputes/{did}", headers=h["op1"]).status_code == 403
    assert api.post(f"/api/v1/disputes/{did}/reevaluate", headers=h["op2"]).status_code == 403
    r = api.post(f"/api/v1/disputes/{did}/reevaluate", headers=h["disp"])
    assert r.status_code == 200 and r.json()["difference"]["credited_after"] == 1000.0
    r = api.post(f"/api/v1/disputes/{did}/decision", json={"approve": True, "reason": "confirmed"}, headers=h["admin"])
    assert r.status_code == 200 and r.json()["state"] == "approved"
    st = api.get(f"/api/v1/statements/{sid}/operators/OP02", headers=h["op2"]).json()
    assert st["balance"] == "2469.14" and st["amounts"]["payable"] == "2469.14"
    assert [d["dispute_id"] for d in api.get("/api/v1/disputes", headers=h["op2"]).json()["items"]] == [did]
    assert api.get("/api/v1/disputes", headers=h["op1"]).json()["items"] == []

    rep = api.get("/api/v1/reports/carbon?year=2025", headers=h["aud"]).json()
    assert rep["by_year"][0]["curtailed_kwh"] == pytest.approx(4050.0)
    mine = api.get("/api/v1/reports/carbon?year=2025&operator_id=OP03", headers=h["op1"]).json()
    assert {r["operator_id"] for r in mine["rows"]} == {"OP01"}
    r = api.get("/api/v1/reports/carbon?format=csv", headers=h["own3"])
    assert r.status_code == 200 and r.text.splitlines()[0].startswith("year,event_id")
