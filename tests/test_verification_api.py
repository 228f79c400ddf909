"""Issue 4 over HTTP: re-running an operator's checks, trading units on the registry arrays, the
verification test list, and a failed verification taking a resource out of the reserve pool as the
API's shared pool engine (``PoolCache``) reads it."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient

from openvpp.api.app import create_app
from openvpp.services import accounts, admission, pools, registry_arrays, setup
from openvpp.sim.city import generate_city
from openvpp.store import audit, db
from openvpp.store.schema import operators, resources
from tests._server import serve
from tests.test_verification import flat_source

PASSWORD = "correct-horse"
START = datetime(2025, 7, 15, 6, 0, tzinfo=UTC)


def _client(settings):
    with db.get_engine(settings.database_url).begin() as conn:
        for name, role, op in (("admin", "city_admin", None), ("op1", "operator_admin", "OP01"),
                               ("op2", "operator_admin", "OP02")):
            accounts.create_user(conn, audit.SYSTEM, name, PASSWORD, role, op, None, rounds=4)
    app = create_app(settings)
    return app, TestClient(app)


def h(client, user):
    r = client.post("/api/v1/auth/token", data={"username": user, "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _minute_kw(api, headers) -> float:
    units = api.get("/api/v1/operators/OP01/trading-units", headers=headers).json()["units"]
    return next(u["verified_minute_kw"] for u in units if u["clearing_node"] == "GZ-TH-S01")


def _ids(totals: dict) -> list[str]:
    return [m["resource_id"] if isinstance(m, dict) else m for m in totals["members"]["items"]]


@pytest.fixture
def api(loaded):
    app, client = _client(loaded)
    with client as c:
        c.app_state = app.state
        yield c


def test_recheck_over_http(api, loaded):
    admin, op1 = h(api, "admin"), h(api, "op1")
    with serve(create_app(loaded)) as tss:
        with db.get_engine(loaded.database_url).begin() as conn:
            conn.execute(operators.update().where(operators.c.operator_id == "OP01").values(tss_endpoint=tss))
        r = api.post("/api/v1/operators/OP01/checks", json={"reason": "TSS moved"}, headers=admin)
        assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "admitted"
    assert {c["check"]: c["passed"] for c in body["checks"]} == {
        "tss_registered": True, "tss_connectivity": True, "trading_unit": False, "minute_level": False}
    assert body["checks"][1]["detail"]["rtt_ms"] > 0
    got = api.get("/api/v1/operators/OP01", headers=admin).json()["checks"]
    assert [(c["check"], c["passed"]) for c in got][:2] == [("tss_registered", True), ("tss_connectivity", True)]
    assert api.post("/api/v1/operators/OP01/checks", headers=op1).status_code == 403
    r = api.post("/api/v1/operators/OP03/checks", headers=admin)          # applied: allowed, no body needed
    assert r.status_code == 200 and r.json()["state"] == "applied"
    api.post("/api/v1/operators/OP02/transitions", json={"action": "exit", "reason": "closed"}, headers=admin)
    r = api.post("/api/v1/operators/OP02/checks", headers=admin)
    assert r.status_code == 409 and "'recheck' needs state" in r.json()["message"]
    assert api.post("/api/v1/operators/OP404/checks", headers=admin).status_code == 404


def test_failed_verification_leaves_the_reserve_pool_read_through_the_api(api, loaded):
    """R3 (storage, 500 kW, latency 1 s declared) verified A within a minute joins the reserve pool
    (verified capability, latency <= 60 s, grade >= B); a later test graded C flags it and the pool's
    totals, read through the API's shared engine, lose it."""
    admin = h(api, "admin")
    with db.get_engine(loaded.database_url).begin() as conn:
        pools.default_pools(conn, audit.SYSTEM)
    before = api.get("/api/v1/pools/reserve:GZ", headers=admin).json()["totals"]
    assert (before["count"], before["down_kw"]) == (0, 0.0)                 # nothing verified yet

    def run_test(delivered_kw: float, start: datetime) -> dict:
        api.app_state.telemetry_source = flat_source({"R3": (delivered_kw, 0)})
        t = api.post("/api/v1/verification/tests", json={"target_kind": "resource", "target_id": "R3",
                                                          "window_start": start.isoformat()}, headers=admin)
        assert t.status_code == 201, t.text
        assert t.json()["instruction"]["resources"] == {"R3": 500.0}
        r = api.post(f"/api/v1/verification/tests/{t.json()['test_id']}/complete", headers=admin)
        assert r.status_code == 200, r.text
        return r.json()

    good = run_test(480.0, START)
    assert (good["grade"], good["verified_kw"], good["latency_s"]) == ("A", 480.0, 0.0)
    pool = api.get("/api/v1/pools/reserve:GZ?members_limit=10", headers=admin).json()["totals"]
    assert (pool["count"], pool["down_kw"], _ids(pool)) == (1, 480.0, ["R3"])
    assert _minute_kw(api, admin) == 480.0
    bad = run_test(100.0, START + timedelta(days=1))
    assert bad["grade"] == "C"
    assert _minute_kw(api, admin) == 100.0              # the route's arrays follow the completed test
    pool = api.get("/api/v1/pools/reserve:GZ?members_limit=10", headers=admin).json()["totals"]
    assert (pool["count"], pool["down_kw"], _ids(pool)) == (0, 0.0, [])
    r3 = api.get("/api/v1/resources/R3", headers=admin).json()
    assert r3["verified_grade"] == "C" and "grade C" in r3["flagged"]
    # the test list: newest first, an operator sees its own operator's tests only
    listed = api.get("/api/v1/verification/tests", headers=admin).json()["items"]
    assert [t["test_id"] for t in listed] == [bad["test_id"], good["test_id"]]
    assert "result" not in listed[0] and listed[0]["grade"] == "C"
    assert len(api.get("/api/v1/verification/tests?state=done&target_id=R3", headers=admin).json()["items"]) == 2
    assert api.get("/api/v1/verification/tests", headers=h(api, "op2")).json()["items"] == []
    assert len(api.get("/api/v1/verification/tests", headers=h(api, "op1")).json()["items"]) == 2
    assert api.get("/api/v1/verification/tests?operator_id=OP01", headers=h(api, "op2")).status_code == 403


@pytest.fixture
def city600(settings, tmp_path):
    """A generated city of 600 resources, some of them verified (random grades, latencies, kW)."""
    out = tmp_path / "city600"
    generate_city(out, 600, seed=11)
    setup.load_city(settings, out)
    rng = np.random.default_rng(5)
    engine = db.get_engine(settings.database_url)
    with engine.begin() as conn:
        rows = conn.execute(resources.select().with_only_columns(
            resources.c.resource_id, resources.c.adjustable_down_kw)).all()
        for rid, down in rows:
            if rng.random() < 0.5:
                conn.execute(resources.update().where(resources.c.resource_id == rid).values(
                    verified_down_kw=float(down * rng.uniform(0.3, 1.2)),
                    verified_latency_s=float(rng.choice([5.0, 30.0, 60.0, 61.0, 300.0])),
                    verified_grade=str(rng.choice(["A", "B", "C"]))))
            if rng.random() < 0.05:
                conn.execute(resources.update().where(resources.c.resource_id == rid).values(state="retired"))
    return settings


def _close(a: dict, b: dict) -> bool:
    """Same keys and values; sums may differ in the last bits (summation order)."""
    return a.keys() == b.keys() and all(
        a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-6) if isinstance(b[k], float) else a[k] == b[k] for k in b)


def test_trading_units_on_the_arrays_equal_the_group_by(city600):
    engine = db.get_engine(city600.database_url)
    with engine.connect() as conn:
        reg = registry_arrays.load(conn)
        ops = conn.execute(operators.select().with_only_columns(operators.c.operator_id)).scalars().all()
        seen_minute = 0
        for op in ops + ["OP-NONE"]:
            sql = admission.trading_units(conn, op)
            fast = admission.trading_units(conn, op, reg=reg)
            assert [u["clearing_node"] for u in fast] == [u["clearing_node"] for u in sql], op
            for a, b in zip(fast, sql, strict=True):
                assert _close(a, b), (op, a, b)
            seen_minute += sum(u["verified_minute_kw"] > 0 for u in sql)
    assert len(ops) > 5 and seen_minute > 0                 # the comparison covered verified capability
    # over HTTP, the route's answer (arrays of the shared engine) equals the SQL path
    app, client = _client(city600)
    with client as c:
        admin = h(c, "admin")
        with engine.connect() as conn:
            for op in ops[:5]:
                got = c.get(f"/api/v1/operators/{op}/trading-units", headers=admin).json()["units"]
                sql = admission.trading_units(conn, op)
                assert len(got) == len(sql) and all(_close(a, b) for a, b in zip(got, sql, strict=True)), op
