"""HTTP API of issue 4: admission, resource access, contracts, verification, exports, targets."""

import io
from datetime import UTC, datetime

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from openvpp.api.app import create_app
from openvpp.services import accounts
from openvpp.store import audit, db
from tests._server import serve
from tests.test_verification import flat_source

PASSWORD = "correct-horse"


@pytest.fixture
def api(loaded):
    with db.get_engine(loaded.database_url).begin() as conn:
        for name, role, op, own in (("admin", "city_admin", None, None), ("op1", "operator_admin", "OP01", None),
                                    ("own2", "owner", None, "OW2"), ("aud", "auditor", None, None)):
            accounts.create_user(conn, audit.SYSTEM, name, PASSWORD, role, op, own, rounds=4)
    app = create_app(loaded)
    with TestClient(app) as c:
        c.app_state = app.state
        yield c


def h(client, user):
    r = client.post("/api/v1/auth/token", data={"username": user, "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_operator_admission_over_http(api, loaded):
    admin = h(api, "admin")
    with serve(create_app(loaded)) as tss:
        r = api.post("/api/v1/operators", json={"operator_id": "OP20", "name": "Tianhe Cooling", "kind":
                                                "central_ac_aggregator", "tss_endpoint": tss}, headers=admin)
        assert r.status_code == 201 and r.json()["state"] == "applied"
        assert api.post("/api/v1/operators", json={"operator_id": "OP20", "name": "again", "kind":
                                                   "central_ac_aggregator"}, headers=admin).status_code == 409
        r = api.post("/api/v1/operators/OP20/transitions", json={"action": "start_review", "reason": "file received"},
                     headers=admin)
        assert r.status_code == 200, r.text
        checks = {c["check"]: c["passed"] for c in r.json()["checks"]}
        assert checks == {"tss_registered": True, "tss_connectivity": True, "trading_unit": False,
                          "minute_level": False}
        r = api.post("/api/v1/operators/OP20/transitions", json={"action": "admit", "reason": "ok"}, headers=admin)
        assert r.status_code == 409 and "trading_unit" in r.json()["message"]
    r = api.post("/api/v1/operators/OP20/transitions", json={"action": "fly", "reason": "x"}, headers=admin)
    assert r.status_code == 409 and "unknown action" in r.json()["message"]
    got = api.get("/api/v1/operators/OP20", headers=admin).json()
    assert got["state"] == "under_review" and len(got["checks"]) == 4
    assert api.get("/api/v1/operators/OP20", headers=h(api, "op1")).status_code == 403
    units = api.get("/api/v1/operators/OP01/trading-units", headers=h(api, "op1")).json()["units"]
    assert {u["clearing_node"]: u["declared_kw_min_duration"] for u in units} == {"GZ-HZ-S01": 300.0,
                                                                                 "GZ-TH-S01": 860.0}


def test_transitions_transfer_history_contracts(api):
    admin = h(api, "admin")
    r = api.post("/api/v1/resources/transitions", json={"resource_ids": ["R1", "R2"], "action": "approve"},
                 headers=admin)
    assert r.status_code == 409 and "'approve' needs state registered" in r.json()["message"]
    r = api.post("/api/v1/resources/R7/transfer", json={"to_operator": "OP01", "reason": "new contract"},
                 headers=admin)
    assert r.status_code == 200 and r.json()["operator_id"] == "OP01"
    r = api.post("/api/v1/resources/R4/transfer", json={"to_operator": "OP01", "reason": "x"}, headers=h(api, "op1"))
    assert r.status_code == 403
    api.post("/api/v1/resources/R4/transfer", json={"to_operator": "OP01", "reason": "merger"}, headers=admin)
    hist = api.get("/api/v1/resources/R4/history", headers=admin).json()
    assert [link["operator_id"] for link in hist["closed_links"]] == ["OP02"]
    assert hist["audit"][0]["action"] == "resource.transfer"
    r = api.post("/api/v1/contracts", json={"owner_id": "OW3", "operator_id": "OP01", "scheme": "fixed",
                                            "valid_from": "2025-01-01", "owner_share": 1.5}, headers=admin)
    assert r.status_code == 422 and r.json()["violations"][0]["field"] == "owner_share"
    r = api.post("/api/v1/contracts", json={"owner_id": "OW3", "operator_id": "OP01", "scheme": "fixed",
                                            "valid_from": "2025-01-01", "owner_share": 0.55}, headers=h(api, "op1"))
    assert r.status_code == 201
    assert len(api.get("/api/v1/contracts?owner_id=OW3", headers=admin).json()["items"]) == 1
    assert api.get("/api/v1/contracts?operator_id=OP02", headers=h(api, "op1")).status_code == 403


def test_verification_over_http(api):
    admin = h(api, "admin")
    # read first: the report the process keeps must follow the tests completed after it
    first = api.get("/api/v1/verification/report", headers=h(api, "op1")).json()["items"]
    assert [(x["operator_id"], x["tested"]) for x in first] == [("OP01", 0)]
    start = datetime(2025, 7, 15, 6, 0, tzinfo=UTC).isoformat()
    r = api.post("/api/v1/verification/tests", json={"target_kind": "resource", "target_id": "R1",
                                                     "window_start": start}, headers=admin)
    assert r.status_code == 201 and r.json()["instruction"]["resources"] == {"R1": 160.0}
    test_id = r.json()["test_id"]
    # without telemetry in the store, every minute is missing: no response, grade C (the flag says why)
    api.app_state.telemetry_source = flat_source({"R1": (150.0, 1)})
    r = api.post(f"/api/v1/verification/tests/{test_id}/complete", headers=admin)
    assert r.status_code == 200 and r.json()["grade"] == "A"
    api.app_state.telemetry_source = None
    t2 = api.post("/api/v1/verification/tests", json={"target_kind": "resource", "target_id": "R2",
                                                      "window_start": start}, headers=admin).json()["test_id"]
    r = api.post(f"/api/v1/verification/tests/{t2}/complete", headers=admin)
    assert r.status_code == 200 and r.json()["grade"] == "C" and r.json()["verified_kw"] == 0.0
    assert r.json()["result"]["resources"]["R2"]["baseline"] is False
    assert "no telemetry before the window" in api.get("/api/v1/resources/R2", headers=admin).json()["flagged"]
    rep = api.get("/api/v1/verification/report", headers=h(api, "op1")).json()["items"]
    assert [(x["operator_id"], x["tested"], x["grade_a"], x["grade_c"]) for x in rep] == [("OP01", 2, 1, 1)]
    assert api.get("/api/v1/verification/report", headers=h(api, "own2")).status_code == 403


def test_exports_reimport_and_respect_scope(api):
    api.post("/api/v1/resources/R6/transfer", json={"to_operator": "OP01", "reason": "x"}, headers=h(api, "admin"))
    r = api.post("/api/v1/resources/R7/transfer", json={"to_operator": "OP01", "reason": "x"},
                 headers=h(api, "admin"))
    assert r.status_code == 200
    r = api.get("/api/v1/resources/export?format=csv", headers=h(api, "op1"))
    assert r.status_code == 200
    table = pacsv.read_csv(io.BytesIO(r.content))
    assert sorted(table.column("resource_id").to_pylist()) == ["R1", "R2", "R3", "R6", "R7"]
    since = dict(zip(table.column("resource_id").to_pylist(), table.column("operator_since").to_pylist(),
                     strict=True))
    assert since["R1"] is None and since["R7"] is not None
    assert table.column_names[:3] == ["resource_id", "name", "resource_type"]
    r = api.get("/api/v1/resources/export?format=parquet&district_id=GZ-HZ", headers=h(api, "admin"))
    t = pq.read_table(io.BytesIO(r.content))
    assert sorted(t.column("resource_id").to_pylist()) == ["R4", "R5", "R6", "R7"]
    assert set(t.column("district_id").to_pylist()) == {"GZ-HZ"}
    assert api.get("/api/v1/resources/export?format=xml", headers=h(api, "admin")).status_code == 422


def test_targets_report_by_district_and_type(api):
    rep = api.get("/api/v1/reports/targets", headers=h(api, "admin")).json()
    by_type = {t["resource_type"]: t for t in rep["by_type"]}
    assert by_type["central_ac"]["connected_mw"] == pytest.approx(2.3)
    assert by_type["central_ac"]["adjustable_mw"] == pytest.approx(0.46)
    assert by_type["central_ac"]["verified_mw"] == 0 and by_type["central_ac"]["verified_resources"] == 0
    assert {d["node_id"] for d in rep["by_district"]} == {"GZ-HZ", "GZ-TH"}


def test_pools_over_http(api):
    admin = h(api, "admin")
    r = api.post("/api/v1/pools", json={"scenario": "local_congestion", "name": "Haizhu T001",
                                        "rules": {"node_id": "GZ-HZ-S01-F01-T001"}}, headers=admin)
    assert r.status_code == 201, r.text
    pool_id = r.json()["pool_id"]
    got = api.get(f"/api/v1/pools/{pool_id}?members_limit=10", headers=admin).json()
    # under T001: R4 (120 kW down) and R5 (60 kW down) of OP02; R7 has no operator, so it is not a member
    assert got["totals"]["count"] == 2 and got["totals"]["down_kw"] == pytest.approx(180.0)
    members = got["totals"]["members"]
    assert members["total"] == 2
    assert sorted(m["resource_id"] if isinstance(m, dict) else m for m in members["items"]) == ["R4", "R5"]
    r = api.post("/api/v1/pools", json={"scenario": "local_congestion", "rules": {"node_id": "GZ-HZ"}},
                 headers=admin)
    assert r.status_code == 422 and "node_id" in r.json()["violations"][0]["field"]
    assert api.post("/api/v1/pools/defaults", headers=h(api, "op1")).status_code == 403
    made = api.post("/api/v1/pools/defaults", headers=admin).json()["items"]
    assert len(made) > 0
    listed = api.get("/api/v1/pools?scenario=peak_shaving&evaluate=true", headers=admin).json()["items"]
    city = next(p for p in listed if p["pool_id"] == "peak_shaving:GZ")
    assert city["totals"]["count"] > 0


def test_owner_sees_only_the_operators_it_deals_with(api):
    own = h(api, "own2")      # OW2's resources R4, R5 are with OP02; its contract operator is OP02
    assert [o["operator_id"] for o in api.get("/api/v1/operators", headers=own).json()["items"]] == ["OP02"]
    assert api.get("/api/v1/operators/OP02", headers=own).status_code == 200
    assert api.get("/api/v1/operators/OP01", headers=own).status_code == 403
    assert api.get("/api/v1/operators/OP01/trading-units", headers=own).status_code == 403


def test_resource_list_filters_by_grade_and_response_mode(api):
    admin = h(api, "admin")
    assert api.get("/api/v1/resources?verified_grade=A", headers=admin).json()["total"] == 0
    semi = api.get("/api/v1/resources?response_mode=semi_automatic", headers=admin).json()
    assert sorted(i["resource_id"] for i in semi["items"]) == ["R1", "R6"]


def test_summary_by_grid_level_and_type_is_paged_or_column_shaped(api):
    admin = h(api, "admin")
    r = api.get("/api/v1/resources/summary?by=transformer_area,resource_type&limit=3&offset=2", headers=admin)
    assert r.status_code == 200, r.text
    page = r.json()
    # 7 groups in key order (transformer area, then type); this page is groups 3-5
    assert (page["keys"], page["total"], page["limit"], page["offset"]) == (["transformer_area", "type"], 7, 3, 2)
    assert [(g["transformer_area"], g["type"], g["connected_kw"], g["adjustable_down_kw"]) for g in page["rows"]] == [
        ("GZ-HZ-S01-F01-T002", "central_ac", 1500.0, 300.0), ("GZ-HZ-S01-F01-T002", "ev_charging", 60.0, 60.0),
        ("GZ-TH-S01-F01-T001", "central_ac", 800.0, 160.0)]
    assert page["rows"][0]["key"] == ["GZ-HZ-S01-F01-T002", "central_ac"]
    assert page["rows"][0]["label"] == ["T002", "central_ac"]
    cols = api.get("/api/v1/resources/summary?by=transformer_area,type&format=columns", headers=admin).json()
    assert cols["total"] == 7 and "rows" not in cols
    c = cols["columns"]
    assert c["transformer_area"][2:5] == [g["transformer_area"] for g in page["rows"]]
    assert c["connected_kw"][2:5] == [g["connected_kw"] for g in page["rows"]]
    assert sum(c["resources"]) == 7 and sum(c["adjustable_down_kw"]) == 1400.0
    # with the list's filters and a parent: OP01's semi-automatic resources by operator x grade under Haizhu
    r = api.get("/api/v1/resources/summary?by=operator,grade&parent=GZ-HZ&response_mode=semi_automatic",
                headers=admin).json()
    assert [(g["key"], g["label"], g["resources"]) for g in r["rows"]] == [
        (["OP01", None], ["Pearl AC Aggregation", None], 1)]
    # an operator's summary stays in its scope; the single-key answer keeps its shape
    own = api.get("/api/v1/resources/summary?by=district", headers=h(api, "op1")).json()
    assert [(g["key"], g["label"], g["resources"]) for g in own["rows"]] == [("GZ-HZ", "Haizhu", 1),
                                                                            ("GZ-TH", "Tianhe", 3)]
    for query, field in (("by=feeder,colour", "by"), ("by=feeder,type,grade", "by"), ("by=type,resource_type", "by"),
                         ("by=type&limit=20000", "limit"), ("by=type&colour=red", None),
                         ("by=type&format=xml", "format")):
        r = api.get(f"/api/v1/resources/summary?{query}", headers=admin)
        if field is None:   # an unknown query parameter is not a filter: ignored, as on every route
            assert r.status_code == 200
            continue
        assert r.status_code == 422, query
        assert field in str(r.json()), query


def test_targets_report_sets_verified_against_each_years_target(api, loaded):
    from openvpp.store.schema import resources

    with db.get_engine(loaded.database_url).begin() as conn:
        conn.execute(resources.update().where(resources.c.resource_id.in_(["R1", "R6"])).values(
            verified_grade="B", verified_down_kw=120.0))
    rep = api.get("/api/v1/reports/targets", headers=h(api, "admin")).json()
    by_year = {t["year"]: t for t in rep["targets"]}
    assert {y: (t["adjustable_mw"], t["verified_mw"]) for y, t in by_year.items()} == \
        {2025: (800, 0.24), 2026: (1200, 0.24), 2027: (1500, 0.24)}
    assert by_year[2026]["verified_progress"] == pytest.approx(0.24 / 1200)
    assert by_year[2026]["adjustable_progress"] == pytest.approx(1.4 / 1200)
    assert rep["city"]["verified_resources"] == 2
    hz = next(d for d in rep["by_district"] if d["node_id"] == "GZ-HZ")
    assert (hz["verified_mw"], hz["verified_resources"]) == (0.12, 1)
    share = {p["year"]: p for p in hz["progress"]}
    assert share[2025]["verified_share"] == pytest.approx(0.12 / 800)
    assert share[2025]["adjustable_share"] == pytest.approx(0.54 / 800)
    assert share[2027]["connected_share"] == pytest.approx(1.74 / 5000)
    ac = next(t for t in rep["by_type"] if t["resource_type"] == "central_ac")
    assert {p["year"]: round(p["verified_share"] * 1e6, 3) for p in ac["progress"]} == \
        {2025: 300.0, 2026: 200.0, 2027: 160.0}
