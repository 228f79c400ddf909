"""The HTTP API: authentication, roles, tenant isolation, audit, errors naming the field."""

import pytest
from fastapi.testclient import TestClient

from openvpp.api.app import create_app
from openvpp.services import accounts
from openvpp.store import audit, db

USERS = {
    "admin": ("city_admin", None, None),
    "disp": ("dispatcher", None, None),
    "op1": ("operator_admin", "OP01", None),
    "op2": ("operator_admin", "OP02", None),
    "eng1": ("operator_engineer", "OP01", None),
    "own2": ("owner", None, "OW2"),
    "aud": ("auditor", None, None),
}
PASSWORD = "correct-horse"


@pytest.fixture
def client(loaded):
    with db.get_engine(loaded.database_url).begin() as conn:
        for name, (role, op, own) in USERS.items():
            accounts.create_user(conn, audit.SYSTEM, name, PASSWORD, role, op, own, rounds=4)
    with TestClient(create_app(loaded)) as c:
        yield c


def login(client, user):
    r = client.post("/api/v1/auth/token", data={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_unauthenticated_is_401_and_wrong_password_is_401(client):
    assert client.get("/api/v1/resources").status_code == 401
    assert client.get("/api/v1/resources", headers={"Authorization": "Bearer junk"}).status_code == 401
    r = client.post("/api/v1/auth/token", data={"username": "admin", "password": "nope"})
    assert r.status_code == 401


def test_token_carries_role_and_tenant(client):
    r = client.post("/api/v1/auth/token", data={"username": "op1", "password": PASSWORD}).json()
    assert (r["role"], r["operator_id"]) == ("operator_admin", "OP01")
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {r['access_token']}"}).json()
    assert me["username"] == "op1"


def test_operator_sees_only_its_resources(client):
    h = login(client, "op1")
    page = client.get("/api/v1/resources", headers=h).json()
    assert page["total"] == 4 and {i["operator_id"] for i in page["items"]} == {"OP01"}
    assert client.get("/api/v1/resources/R1", headers=h).status_code == 200
    assert client.get("/api/v1/resources/R4", headers=h).status_code == 403  # OP02's pile
    # filters cannot widen the scope
    assert client.get("/api/v1/resources?operator_id=OP02", headers=h).json()["total"] == 0
    rows = client.get("/api/v1/resources/summary?by=type", headers=h).json()["rows"]
    assert {r["key"] for r in rows} == {"central_ac", "distributed_pv", "user_storage"}
    assert client.get("/api/v1/operators/OP02", headers=h).status_code == 403
    assert [o["operator_id"] for o in client.get("/api/v1/operators", headers=h).json()["items"]] == ["OP01"]


def test_owner_sees_only_own_resources_and_cannot_change_them(client):
    h = login(client, "own2")
    assert {i["resource_id"] for i in client.get("/api/v1/resources", headers=h).json()["items"]} == {"R4", "R5"}
    assert client.get("/api/v1/resources/R1", headers=h).status_code == 403
    assert client.patch("/api/v1/resources/R4", json={"adjustable_down_kw": 10}, headers=h).status_code == 403
    rep = client.get("/api/v1/reports/targets", headers=h).json()
    assert rep["city"]["connected_mw"] == pytest.approx(0.18)


def test_city_admin_and_auditor_see_everything(client):
    for user in ("admin", "aud", "disp"):
        assert client.get("/api/v1/resources", headers=login(client, user)).json()["total"] == 7
    rep = client.get("/api/v1/reports/targets", headers=login(client, "admin")).json()
    assert rep["city"]["connected_mw"] == pytest.approx(3.24)
    assert [t["year"] for t in rep["targets"]] == [2025, 2026, 2027]
    assert rep["targets"][0]["connected_mw"] == 2000


def test_change_is_audited_with_before_and_after(client):
    h = login(client, "op1")
    r = client.patch("/api/v1/resources/R1?reason=re-commissioned", json={"adjustable_down_kw": 200}, headers=h)
    assert r.status_code == 200 and r.json()["adjustable_down_kw"] == 200
    log = client.get("/api/v1/audit?entity=resource&entity_id=R1", headers=login(client, "aud")).json()["items"]
    e = log[0]
    assert (e["actor"], e["action"], e["reason"]) == ("op1", "resource.update", "re-commissioned")
    assert e["before"] == {"adjustable_down_kw": 160.0} and e["after"] == {"adjustable_down_kw": 200.0}
    # an operator may not read the audit log; an auditor may not change anything
    assert client.get("/api/v1/audit", headers=h).status_code == 403
    assert client.patch("/api/v1/resources/R1", json={"name": "x"}, headers=login(client, "aud")).status_code == 403


def test_invalid_change_is_422_naming_field_and_nothing_changes(client):
    h = login(client, "op1")
    r = client.patch("/api/v1/resources/R1", json={"adjustable_down_kw": 5000}, headers=h)
    assert r.status_code == 422
    v = r.json()["violations"][0]
    assert (v["field"], v["rule"]) == ("adjustable_down_kw", "must not exceed capacity_kw")
    r = client.patch("/api/v1/resources/R1", json={"meter_id": "M9"}, headers=h)
    assert r.status_code == 422 and r.json()["violations"][0]["field"] == "meter_id"
    assert client.get("/api/v1/resources/R1", headers=h).json()["adjustable_down_kw"] == 160
    r = client.get("/api/v1/resources?limit=5000", headers=h)
    assert r.status_code == 422 and r.json()["violations"][0]["field"] == "limit"


def test_operator_registers_own_resource_pending_approval_but_not_for_others(client):
    h = login(client, "op1")
    body = {"resource_id": "R50", "name": "Tower A pile", "resource_type": "ev_charging", "operator_id": "OP01",
            "owner_id": "OW1", "site_id": "S1", "ta_id": "GZ-TH-S01-F01-T001", "capacity_kw": 60,
            "profile_archetype": "ev_public", "profile_scale_kw": 40, "noise_seed": 9, "latency_s": 10,
            "response_mode": "automatic", "adjustable_up_kw": 0, "adjustable_down_kw": 60,
            "adjustable_duration_h": 1, "control_protocol": "ocpp2.0.1", "meter_id": "M0050"}
    r = client.post("/api/v1/resources", json=body, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "registered"
    r = client.post("/api/v1/resources", json={**body, "resource_id": "R51", "meter_id": "M0051",
                                               "operator_id": "OP02"}, headers=h)
    assert r.status_code == 422 and r.json()["violations"][0]["field"] == "operator_id"
    r = client.post("/api/v1/resources", json={**body, "resource_id": "R52", "meter_id": "M0050"}, headers=h)
    assert r.status_code == 422 and r.json()["violations"][0]["rule"] == "meter already belongs to a live resource"
    assert client.post("/api/v1/resources", json=body, headers=login(client, "eng1")).status_code == 403


def test_csv_upload_all_or_nothing(client):
    h = login(client, "admin")
    header = ("resource_id,resource_type,operator_id,owner_id,site_id,ta_id,capacity_kw,profile_archetype,"
              "profile_scale_kw,noise_seed,latency_s,response_mode,adjustable_up_kw,adjustable_down_kw,"
              "adjustable_duration_h,control_protocol,meter_id\n")
    good = "R60,base_station,OP01,OW1,S1,GZ-TH-S01-F01-T001,8,ac_office,5,1,30,automatic,0,3,3,mqtt,M0060\n"
    bad = "R61,base_station,OP01,OW1,S1,GZ-TH-S01-F01-T001,8,ac_office,5,1,30,automatic,0,30,3,mqtt,M0061\n"
    r = client.post("/api/v1/resources/import", files={"file": ("x.csv", header + good + bad)}, headers=h)
    assert r.status_code == 422
    assert r.json()["violations"][0] == {"field": "adjustable_down_kw", "rule": "must not exceed capacity_kw",
                                         "value": 30.0, "line": 3}
    assert client.get("/api/v1/resources/R60", headers=h).status_code == 404
    r = client.post("/api/v1/resources/import", files={"file": ("x.csv", header + good)}, headers=h)
    assert r.status_code == 201 and r.json()["imported"] == 1
    r = client.post("/api/v1/resources/import", files={"file": ("x.csv", b"\x00\x01garbage")}, headers=h)
    assert r.status_code == 422


def test_api_key_for_machines(client):
    h = login(client, "op1")
    key = client.post("/api/v1/auth/api-keys", json={"name": "gateway-1", "role": "device"}, headers=h).json()
    assert key["operator_id"] == "OP01" and key["key"].startswith("ovk_")
    me = client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]}).json()
    assert (me["role"], me["operator_id"]) == ("device", "OP01")
    # a device key cannot read the resource database
    assert client.get("/api/v1/resources", headers={"X-API-Key": key["key"]}).status_code == 403
    assert client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"] + "x"}).status_code == 401
    assert client.delete(f"/api/v1/auth/api-keys/{key['key_id']}", headers=h).status_code == 204
    assert client.get("/api/v1/auth/me", headers={"X-API-Key": key["key"]}).status_code == 401
    # a device key for an operator that does not exist is refused, naming the field
    r = client.post("/api/v1/auth/api-keys", json={"name": "gw", "role": "device", "operator_id": "OP404"},
                    headers=login(client, "admin"))
    assert r.status_code == 422 and r.json()["violations"][0]["field"] == "operator_id"
    # an operator admin cannot mint a city-admin key
    r = client.post("/api/v1/auth/api-keys", json={"name": "x", "role": "city_admin"}, headers=h)
    assert r.status_code == 422


def test_a_disabled_account_loses_access_when_the_cached_lookup_expires(client):
    """The caller's account is read once per ``account_cache_s`` (api/deps.CallerCache): a user
    disabled in the database keeps access until then, and no longer."""
    h = login(client, "eng1")
    assert client.get("/api/v1/auth/me", headers=h).status_code == 200   # looked up and kept
    with db.get_engine(client.app.state.settings.database_url).begin() as conn:
        conn.execute(accounts.users.update().where(accounts.users.c.username == "eng1").values(active=False))
    callers = client.app.state.callers
    assert callers.ttl_s == 2.0 and client.get("/api/v1/auth/me", headers=h).status_code == 200
    callers.clear()   # what the period's end does
    r = client.get("/api/v1/auth/me", headers=h)
    assert r.status_code == 401 and "disabled" in r.json()["message"]
    callers.ttl_s = 0   # OPENVPP_ACCOUNT_CACHE_S=0: every request reads the account
    with db.get_engine(client.app.state.settings.database_url).begin() as conn:
        conn.execute(accounts.users.update().where(accounts.users.c.username == "eng1").values(active=True))
    assert client.get("/api/v1/auth/me", headers=h).status_code == 200
    with db.get_engine(client.app.state.settings.database_url).begin() as conn:
        conn.execute(accounts.users.update().where(accounts.users.c.username == "eng1").values(active=False))
    assert client.get("/api/v1/auth/me", headers=h).status_code == 401


def test_openapi_schema_is_served(client):
    spec = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/resources" in spec["paths"] and "/api/v1/auth/token" in spec["paths"]
