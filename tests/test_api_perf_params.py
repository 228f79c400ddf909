"""What the dashboard's pages read in one request each (issue 9), on SQLite and PostgreSQL:
summaries under a grid node, many devices' live points at once, live children of an empty node,
and pool totals from the API's shared pool engine, current after every change."""

import json
import time

import pytest

from openvpp.core.errors import InvalidInput
from openvpp.services import accounts, pools
from openvpp.services.scope import Scope
from openvpp.store import audit, db
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes, resources
from tests.test_telemetry_api import api, login  # noqa: F401  (fixture)

ADMIN = Actor("admin", "city_admin")


def _violation(r) -> tuple[str, str]:
    assert r.status_code == 422, r.text
    v = r.json()["violations"][0]
    return v["field"], v["rule"]


def _rows(r) -> dict:
    assert r.status_code == 200, r.text
    return {row["key"]: row for row in r.json()["rows"]}


# ---------------------------------------------------------------- summaries under a parent

def test_summary_under_a_parent_counts_only_the_resources_below_it(api):  # noqa: F811
    admin = login(api, "admin")
    feeders = _rows(api.get("/api/v1/resources/summary?by=feeder&parent=GZ-HZ-S01", headers=admin))
    # R4 120 + R5 60 + R6 1500 + R7 60 kW; down 120 + 60 + 300 + 60; up: R5 60
    assert list(feeders) == ["GZ-HZ-S01-F01"]
    f = feeders["GZ-HZ-S01-F01"]
    assert (f["resources"], f["connected_kw"], f["adjustable_down_kw"], f["adjustable_up_kw"]) == \
        (4, 1740.0, 540.0, 60.0)
    assert f["label"] == "F01"
    types = _rows(api.get("/api/v1/resources/summary?by=type&parent=GZ-HZ-S01-F01-T002", headers=admin))
    assert {k: (v["resources"], v["connected_kw"]) for k, v in types.items()} == \
        {"central_ac": (1, 1500.0), "ev_charging": (1, 60.0)}
    # the city node is everything; each district's children are the city-wide rows of that district
    city = _rows(api.get("/api/v1/resources/summary?by=transformer_area", headers=admin))
    assert _rows(api.get("/api/v1/resources/summary?by=transformer_area&parent=GZ", headers=admin)) == city
    for district in ("GZ-HZ", "GZ-TH"):
        under = _rows(api.get(f"/api/v1/resources/summary?by=transformer_area&parent={district}", headers=admin))
        assert under == {k: v for k, v in city.items() if k.startswith(district + "-")}
        assert under
    # the caller's scope still applies: OP01 has only R6 in Haizhu
    op1 = _rows(api.get("/api/v1/resources/summary?by=district&parent=GZ-HZ", headers=login(api, "op1")))
    assert {k: (v["resources"], v["connected_kw"]) for k, v in op1.items()} == {"GZ-HZ": (1, 1500.0)}


def test_summary_with_an_unknown_parent_is_422_naming_parent(api):  # noqa: F811
    admin = login(api, "admin")
    r = api.get("/api/v1/resources/summary?by=feeder&parent=GZ-XX-S09", headers=admin)
    assert _violation(r) == ("parent", "grid node does not exist")
    assert r.json()["violations"][0]["value"] == "GZ-XX-S09"
    r = api.get("/api/v1/resources/summary?by=street&parent=GZ-HZ", headers=admin)
    assert _violation(r)[0] == "by"


# ---------------------------------------------------------------- live

def _report(api, points, key="dev1"):  # noqa: F811
    r = api.post("/api/v1/telemetry", headers={"X-API-Key": api.keys[key]},
                 content=json.dumps({"points": points}))
    assert r.status_code == 200 and r.json()["accepted"] == len(points), r.text


def _wait_power(api, headers, power_kw):  # noqa: F811
    deadline = time.time() + 10
    while True:
        s = api.get("/api/v1/live/summary", headers=headers).json()
        if s["city"]["power_kw"] == power_kw or time.time() > deadline:
            return s
        time.sleep(0.1)


def test_batch_live_read_equals_the_single_reads_and_is_fenced_to_the_scope(api):  # noqa: F811
    t = int(time.time() * 1000) - 2000
    _report(api, [{"d": "R1", "t": t, "p": 300.0}, {"d": "R6", "t": t, "p": 1000.0}])
    _report(api, [{"d": "R5", "t": t, "p": -20.0, "soc": 0.4}], key="eng2")
    admin = login(api, "admin")
    assert _wait_power(api, admin, 1280.0)["city"]["power_kw"] == 1280.0
    r = api.get("/api/v1/live/devices?ids=R6,R1,NOPE,R5,R7,R1", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["device_id"] for d in body["items"]] == ["R6", "R1", "R5", "R7"]   # asked order, once each
    assert body["missing"] == ["NOPE"]
    by_id = {d["device_id"]: d for d in body["items"]}
    for rid in ("R1", "R5", "R6", "R7"):
        single = api.get(f"/api/v1/live/devices/{rid}", headers=admin).json()
        assert by_id[rid] == single
    assert (by_id["R5"]["power_kw"], by_id["R5"]["soc"], by_id["R5"]["online"]) == (-20.0, 0.4, True)
    assert (by_id["R7"]["online"], by_id["R7"]["power_kw"], by_id["R7"]["last_ts"]) == (False, None, None)
    # OP01 sees its R1 and R6; OP02's R5 looks absent, as on the single read
    op1 = api.get("/api/v1/live/devices?ids=R1,R5,R6", headers=login(api, "op1")).json()
    assert [d["device_id"] for d in op1["items"]] == ["R1", "R6"] and op1["missing"] == ["R5"]


def test_batch_live_read_refuses_bad_id_lists_naming_ids(api):  # noqa: F811
    admin = login(api, "admin")
    assert _violation(api.get("/api/v1/live/devices?ids=R1,,R2", headers=admin))[0] == "ids"
    many = ",".join(f"R{i}" for i in range(1001))
    assert _violation(api.get(f"/api/v1/live/devices?ids={many}", headers=admin)) == \
        ("ids", "at most 1000 devices per request")
    assert _violation(api.get("/api/v1/live/devices", headers=admin))[0] == "ids"


def test_live_children_of_a_node_without_devices_are_empty_and_unknown_parents_422(loaded, monkeypatch):
    # a feeder with no transformer area yet, and a transformer area with no resource
    with db.get_engine(loaded.database_url).begin() as conn:
        conn.execute(grid_nodes.insert(), [
            {"node_id": "GZ-TH-S01-F02", "level": "feeder", "parent_id": "GZ-TH-S01", "name": "F02",
             "district_id": "GZ-TH", "substation_id": "GZ-TH-S01", "feeder_id": "GZ-TH-S01-F02"},
            {"node_id": "GZ-TH-S01-F01-T002", "level": "transformer_area", "parent_id": "GZ-TH-S01-F01",
             "name": "T002", "district_id": "GZ-TH", "substation_id": "GZ-TH-S01", "feeder_id": "GZ-TH-S01-F01"}])
        accounts.create_user(conn, audit.SYSTEM, "admin", "correct-horse", "city_admin", None, None, rounds=4)
    from fastapi.testclient import TestClient

    from tests.test_telemetry_api import make_app

    monkeypatch.setenv("OPENVPP_TELEMETRY_LIVE_REFRESH_S", "0.2")
    with TestClient(make_app(loaded)) as c:
        admin = login(c, "admin")
        r = c.get("/api/v1/live/nodes/transformer_area?parent=GZ-TH-S01-F02", headers=admin)
        assert r.status_code == 200, r.text
        assert (r.json()["rows"], r.json()["parent"]) == ([], "GZ-TH-S01-F02")
        # a feeder with devices still lists its areas that have some
        rows = c.get("/api/v1/live/nodes/transformer_area?parent=GZ-TH-S01-F01", headers=admin).json()["rows"]
        assert [x["id"] for x in rows] == ["GZ-TH-S01-F01-T001"]
        # the empty area itself is no group of the live view either; as a parent it has no children
        r = c.get("/api/v1/live/nodes/transformer_area?parent=GZ-TH-S01-F01-T002&parent_level=transformer_area",
                  headers=admin)
        assert r.status_code == 200 and r.json()["rows"] == []
        r = c.get("/api/v1/live/nodes/feeder?parent=GZ-XX-S01", headers=admin)
        assert _violation(r) == ("parent", "is not a known substation")
        # a district's id given where a substation is expected is no substation
        assert _violation(c.get("/api/v1/live/nodes/feeder?parent=GZ-HZ", headers=admin))[0] == "parent"
        assert _violation(c.get("/api/v1/live/nodes/district?parent=OP09&parent_level=operator",
                                headers=admin)) == ("parent", "is not a known operator")
        assert _violation(c.get("/api/v1/live/nodes/district?parent=x&parent_level=pool",
                                headers=admin))[0] == "parent_level"


# ---------------------------------------------------------------- the shared pool engine

def _pool_totals(client, headers, scenario="peak_shaving") -> dict:
    r = client.get(f"/api/v1/pools?scenario={scenario}&evaluate=true", headers=headers)
    assert r.status_code == 200, r.text
    return {p["pool_id"]: p["totals"] for p in r.json()["items"]}


def _reference(url) -> dict:
    with db.get_engine(url).connect() as conn:
        return {t["pool_id"]: t for t in pools.evaluate(conn)}


def test_pool_totals_come_from_one_engine_rebuilt_only_after_changes(api, loaded):  # noqa: F811
    admin = login(api, "admin")
    assert api.post("/api/v1/pools/defaults", headers=admin).status_code == 201
    cache = api.app.state.pool_engine
    first = _pool_totals(api, admin)
    assert first["peak_shaving:GZ"]["down_kw"] == 1340.0 and first["peak_shaving:GZ-HZ"]["down_kw"] == 480.0
    builds = cache.builds
    assert _pool_totals(api, admin) == first
    detail = api.get("/api/v1/pools/peak_shaving:GZ-HZ?members_limit=10", headers=admin).json()
    assert detail["totals"]["members"]["items"] == ["R4", "R5", "R6"]
    assert cache.builds == builds   # reused: no change since
    # a change outside the pools' concern (a new user) keeps the engine
    with db.get_engine(loaded.database_url).begin() as conn:
        accounts.create_user(conn, audit.SYSTEM, "viewer", "correct-horse", "auditor", None, None, rounds=4)
    _pool_totals(api, admin)
    assert cache.builds == builds
    # a resource change through the API is in the next answer
    r = api.patch("/api/v1/resources/R6", json={"adjustable_down_kw": 100}, headers=admin)
    assert r.status_code == 200, r.text
    after = _pool_totals(api, admin)
    assert after["peak_shaving:GZ-HZ"]["down_kw"] == 280.0 and after["peak_shaving:GZ"]["down_kw"] == 1140.0
    assert cache.builds == builds and cache.updates == 1   # applied incrementally, not reloaded
    ref = _reference(loaded.database_url)
    assert {k: v for k, v in after.items()} == {k: ref[k] for k in after}
    # so is one made by another process straight on the database (an operator suspended: its resources leave)
    with db.get_engine(loaded.database_url).begin() as conn:
        from openvpp.services import admission

        admission.transition(conn, ADMIN, "OP02", "suspend", reason="test")
    after = _pool_totals(api, admin)
    assert after["peak_shaving:GZ-HZ"]["down_kw"] == 100.0 and after["peak_shaving:GZ-HZ"]["count"] == 1
    # a new pool is evaluated at once
    r = api.post("/api/v1/pools", headers=admin, json={"pool_id": "LC-T002", "scenario": "local_congestion",
                                                      "rules": {"node_id": "GZ-HZ-S01-F01-T002"}})
    assert r.status_code == 201, r.text
    lc = api.get("/api/v1/pools/LC-T002?members_limit=5", headers=admin).json()["totals"]
    assert (lc["count"], lc["down_kw"], lc["members"]["items"]) == (1, 100.0, ["R6"])


def test_pool_cache_sees_changes_past_its_window_of_audit_ids(loaded):
    cache = pools.PoolCache(window=2)
    with db.get_engine(loaded.database_url).begin() as conn:
        pools.default_pools(conn, ADMIN)
    engine = db.get_engine(loaded.database_url)
    with engine.connect() as conn:
        assert cache.get(conn).totals_of("peak_shaving:GZ")["down_kw"] == 1340.0
    for i in range(5):   # unrelated entries move the window's base past the build
        with engine.begin() as conn:
            audit.record(conn, ADMIN, "note", "user", f"u{i}")
        with engine.connect() as conn:
            cache.get(conn)
    assert cache.builds == 1
    with engine.begin() as conn:
        from openvpp.services import resources as res

        res.update(conn, ADMIN, "R1", {"adjustable_down_kw": 60})
    with engine.connect() as conn:
        assert cache.get(conn).totals_of("peak_shaving:GZ")["down_kw"] == 1240.0
    assert (cache.builds, cache.updates) == (1, 1)


def test_an_old_pool_engine_is_rebuilt_behind_the_requests(loaded):
    """Past ``max_age_s`` the engine is rebuilt in a thread while requests go on with the current one
    (kept up to date); a change committed meanwhile is in the new engine, read by the rebuild or
    applied after it, whichever came first."""
    now = [0.0]
    cache = pools.PoolCache(max_age_s=60, clock=lambda: now[0])
    with db.get_engine(loaded.database_url).begin() as conn:
        pools.default_pools(conn, ADMIN)
    engine = db.get_engine(loaded.database_url)
    with engine.connect() as conn:
        first = cache.get(conn)
    assert cache.builds == 1 and cache.refreshing is None
    now[0] = 61.0
    with engine.connect() as conn:
        served = cache.get(conn)     # starts the rebuild, answers at once with the current engine
    assert served is first
    from openvpp.services import resources as res

    with engine.begin() as conn:
        res.update(conn, ADMIN, "R1", {"adjustable_down_kw": 60})
    deadline = time.monotonic() + 60   # waits for the thread (the assertion below is on what it did)
    while (cache.builds < 2 or cache.refreshing is not None) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.builds == 2 and cache.last["kind"] == "refresh" and cache.refreshing is None
    with engine.connect() as conn:
        assert cache.get(conn).totals_of("peak_shaving:GZ")["down_kw"] == 1240.0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_pool_cache_sees_a_change_committed_after_later_audit_ids(loaded):
    """PostgreSQL hands out audit ids at insert: a resource change may commit after entries with
    higher ids that the cache has already checked past."""
    cache = pools.PoolCache(window=100)
    engine = db.get_engine(loaded.database_url)
    with engine.begin() as conn:
        pools.default_pools(conn, ADMIN)
    with engine.connect() as conn:
        cache.get(conn)
    from openvpp.services import resources as res

    slow = engine.connect()
    tx = slow.begin()
    res.update(slow, ADMIN, "R6", {"adjustable_down_kw": 100})   # its audit id is taken now
    for i in range(3):
        with engine.begin() as conn:
            audit.record(conn, ADMIN, "note", "user", f"u{i}")
        with engine.connect() as conn:
            assert cache.get(conn).totals_of("peak_shaving:GZ")["down_kw"] == 1340.0
    tx.commit()
    slow.close()
    with engine.connect() as conn:
        assert cache.get(conn).totals_of("peak_shaving:GZ")["down_kw"] == 1140.0


@pytest.mark.parametrize(("scope", "active"), [(Scope(), 6), (Scope(operator_id="OP01"), 4),
                                               (Scope(owner_id="OW2"), 1)], ids=["city", "OP01", "OW2"])
def test_summary_on_the_registry_arrays_equals_the_group_by(loaded, scope, active):
    from openvpp.services import registry, registry_arrays

    with db.get_engine(loaded.database_url).begin() as conn:
        # a verified resource and one not active, so every column and the state filter count
        conn.execute(resources.update().where(resources.c.resource_id == "R3").values(
            verified_down_kw=420.0, verified_grade="A"))
        conn.execute(resources.update().where(resources.c.resource_id == "R4").values(state="suspended"))
    with db.get_engine(loaded.database_url).connect() as conn:
        reg = registry_arrays.load(conn)
        for by in registry.SUMMARY_KEYS:
            for parent in (None, "GZ", "GZ-HZ", "GZ-TH-S01", "GZ-HZ-S01-F01", "GZ-HZ-S01-F01-T001"):
                sql = registry.summary(conn, by, scope, parent=parent)
                arrays = registry.summary(conn, by, scope, parent=parent, reg=reg)
                assert arrays == sql, (by, parent)
        city = registry.summary(conn, "district", scope, reg=reg)
        assert sum(r["resources"] for r in city) == active   # R4 is suspended
        with pytest.raises(InvalidInput) as e:
            registry.summary(conn, "type", scope, parent="GZ-NOPE", reg=reg)
        assert e.value.violations[0].field == "parent"
