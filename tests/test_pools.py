"""Resource pools on the mini city, on SQLite and PostgreSQL: definitions, rules, totals, live engine.

Mini city (tests/conftest.py), all active; OP01 and OP02 admitted, R7 has no operator:

    R1 central_ac     OP01 Tianhe T001  down 160 x 2 h  latency 120 s semi
    R2 distributed_pv OP01 Tianhe T001  down 200 x 4 h  latency   5 s auto
    R3 user_storage   OP01 Tianhe T001  up/down 500 x 2 h  latency 1 s auto
    R4 ev_charging    OP02 Haizhu T001  down 120 x 1 h  latency  10 s auto
    R5 v2g_charger    OP02 Haizhu T001  up/down 60 x 2 h  latency 10 s auto
    R6 central_ac     OP01 Haizhu T002  down 300 x 2 h  latency 300 s semi
    R7 ev_charging    —    Haizhu T002  down  60 x 1 h  (no operator: never in a pool)
"""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from openvpp.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from openvpp.model.pools import Pool, PoolRules, load_presets
from openvpp.services import pools, registry_arrays
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema import audit_log, operators, resources
from openvpp.store.schema import pools as pools_table

ADMIN = Actor("center", "city_admin")
DISPATCHER = Actor("disp", "dispatcher")
OP01_ADMIN = Actor("op01", "operator_admin", operator_id="OP01")
OP02_ADMIN = Actor("op02", "operator_admin", operator_id="OP02")
OWNER = Actor("ow1", "owner", owner_id="OW1")


def _begin(settings):
    return db.get_engine(settings.database_url).begin()


def _totals(conn, *pool_ids) -> dict[str, dict]:
    return {r["pool_id"]: r for r in pools.evaluate(conn, list(pool_ids) if pool_ids else None)}


def _verify(conn, rid: str, grade: str, down_kw: float, latency_s: float, flagged: str | None = None) -> None:
    conn.execute(resources.update().where(resources.c.resource_id == rid).values(
        verified_grade=grade, verified_down_kw=down_kw, verified_latency_s=latency_s, flagged=flagged))


def test_presets_are_data_with_their_rules():
    presets = load_presets()
    assert set(presets) == {"peak_shaving", "valley_filling", "emergency_response", "reactive_support",
                            "reserve", "local_congestion"}
    assert presets["peak_shaving"].rules.min_duration_h == 1.0
    assert presets["emergency_response"].mandatory and presets["emergency_response"].rules.max_latency_s == 300
    assert {str(t) for t in presets["reactive_support"].rules.resource_types} == {
        "user_storage", "distributed_pv", "v2g_charger", "shore_power", "data_center"}
    assert presets["reserve"].rules.min_grade == "B" and presets["reserve"].rules.use_verified
    assert [lv.value for lv in presets["local_congestion"].node_levels] == ["feeder", "transformer_area"]
    assert not presets["local_congestion"].default


def test_default_pools_are_created_at_city_level_and_per_district_once(loaded):
    with _begin(loaded) as conn:
        created = pools.default_pools(conn, ADMIN)
        # 5 default scenarios x (city GZ + districts GZ-HZ, GZ-TH); local congestion is per feeder/TA
        assert len(created) == 15
        assert {p["pool_id"] for p in created if p["scenario"] == "peak_shaving"} == {
            "peak_shaving:GZ", "peak_shaving:GZ-HZ", "peak_shaving:GZ-TH"}
        assert pools.default_pools(conn, ADMIN) == []
        n_audit = conn.execute(select(func.count()).select_from(audit_log)
                               .where(audit_log.c.action == "pool.create")).scalar()
        assert n_audit == 15
        with pytest.raises(Forbidden):
            pools.default_pools(conn, OP01_ADMIN)


def test_peak_shaving_totals_per_level_of_the_mini_city(loaded):
    with _begin(loaded) as conn:
        pools.default_pools(conn, ADMIN)
        t = _totals(conn)
    city, hz, th = t["peak_shaving:GZ"], t["peak_shaving:GZ-HZ"], t["peak_shaving:GZ-TH"]
    # R1..R6 (R7 has no operator); energy = down x own duration (all >= the 1 h minimum)
    assert city["down_kw"] == 1340.0 and city["count"] == 6 and city["up_kw"] == 0.0
    assert city["energy_down_kwh"] == 160 * 2 + 200 * 4 + 500 * 2 + 120 * 1 + 60 * 2 + 300 * 2 == 2960
    assert (hz["down_kw"], hz["energy_down_kwh"], hz["count"]) == (480.0, 840.0, 3)
    assert (th["down_kw"], th["energy_down_kwh"], th["count"]) == (860.0, 2120.0, 3)
    assert city["level"] == "city" and hz["level"] == "district"
    # a node's pool is the sum of its children's
    for k in ("down_kw", "energy_down_kwh", "count"):
        assert city[k] == hz[k] + th[k]
    vf = t["valley_filling:GZ"]          # R3 500 x 2 h + R5 60 x 2 h
    assert (vf["up_kw"], vf["down_kw"], vf["energy_up_kwh"], vf["count"]) == (560.0, 0.0, 1120.0, 2)
    em = t["emergency_response:GZ"]      # R6 at exactly 300 s counts; emergency is compulsory
    assert em["count"] == 6 and em["mandatory"] and not city["mandatory"]
    rs = t["reactive_support:GZ"]        # PV R2, storage R3, V2G R5: both sides count
    assert (rs["up_kw"], rs["down_kw"], rs["count"]) == (560.0, 760.0, 3)
    assert t["reserve:GZ"]["count"] == 0  # nothing verified yet


def test_reserve_counts_verified_capability_of_grade_b_or_better_not_flagged(loaded):
    with _begin(loaded) as conn:
        _verify(conn, "R3", "A", 450.0, 2.0)
        _verify(conn, "R2", "B", 150.0, 40.0)
        _verify(conn, "R5", "C", 30.0, 8.0)                        # grade too low
        _verify(conn, "R4", "A", 120.0, 9.0, flagged="failed re-test 2025-08-01")
        _verify(conn, "R1", "A", 160.0, 90.0)                      # verified latency above 60 s
        pools.default_pools(conn, ADMIN)
        t = _totals(conn, "reserve:GZ", "reserve:GZ-TH", "reserve:GZ-HZ", "peak_shaving:GZ")
        members = pools.members(conn, "reserve:GZ")
    assert (t["reserve:GZ"]["down_kw"], t["reserve:GZ"]["count"]) == (600.0, 2)
    assert t["reserve:GZ"]["energy_down_kwh"] == 450 * 2 + 150 * 4
    assert t["reserve:GZ-TH"]["down_kw"] == 600.0 and t["reserve:GZ-HZ"]["count"] == 0
    assert members["items"] == ["R2", "R3"]
    # a pool that does not require verification keeps the flagged R4 and counts declared kW
    assert t["peak_shaving:GZ"]["down_kw"] == 1340.0


def test_local_congestion_pool_needs_a_feeder_or_transformer_area_node(loaded):
    with _begin(loaded) as conn:
        with pytest.raises(InvalidInput) as exc:
            pools.create_pool(conn, DISPATCHER, {"scenario": "local_congestion", "rules": {"node_id": "GZ-HZ"}})
        v = exc.value.violations[0]
        assert v.field == "rules.node_id" and "feeder or transformer_area" in v.rule
        p = pools.create_pool(conn, DISPATCHER, {"pool_id": "LC-HZ-T002", "scenario": "local_congestion",
                                                 "rules": {"node_id": "GZ-HZ-S01-F01-T002"}})
        assert p["level"] == "transformer_area" and p["node_id"] == "GZ-HZ-S01-F01-T002"
        feeder = pools.create_pool(conn, DISPATCHER, {"pool_id": "LC-HZ-F01", "scenario": "local_congestion",
                                                      "rules": {"node_id": "GZ-HZ-S01-F01"}})
        assert feeder["level"] == "feeder"
        t = _totals(conn, "LC-HZ-T002", "LC-HZ-F01")
    assert (t["LC-HZ-T002"]["down_kw"], t["LC-HZ-T002"]["count"]) == (300.0, 1)   # R6; R7 has no operator
    assert (t["LC-HZ-F01"]["down_kw"], t["LC-HZ-F01"]["count"]) == (480.0, 3)


def test_a_pool_may_tighten_its_preset_but_never_relax_it_and_nothing_is_written(loaded):
    with _begin(loaded) as conn:
        before = conn.execute(select(func.count()).select_from(audit_log)).scalar()
        with pytest.raises(InvalidInput) as exc:
            pools.create_pool(conn, ADMIN, {"scenario": "reserve",
                                            "rules": {"max_latency_s": 120, "min_grade": "C", "direction": "up"}})
        fields = {v.field: v.rule for v in exc.value.violations}
        assert fields["rules.max_latency_s"] == "reserve pools need max_latency_s <= 60 (preset reserve)"
        assert "grade B or better" in fields["rules.min_grade"]
        assert "direction 'down'" in fields["rules.direction"]
        assert conn.execute(select(func.count()).select_from(pools_table)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == before
        tight = pools.create_pool(conn, ADMIN, {"pool_id": "PS-2H", "scenario": "peak_shaving",
                                                "rules": {"min_duration_h": 2, "resource_types": ["central_ac"]}})
        assert tight["rules"]["direction"] == "down" and tight["rules"]["min_duration_h"] == 2
        assert _totals(conn, "PS-2H")["PS-2H"]["down_kw"] == 160.0 + 300.0


def test_bad_pool_input_names_the_field_and_the_rule(loaded):
    with _begin(loaded) as conn:
        cases = [
            ({"scenario": "custom", "rules": {"node_id": "GZ-XX"}}, "rules.node_id", "grid node does not exist"),
            ({"scenario": "custom", "rules": {"max_latency_s": -5}}, "rules.max_latency_s", "greater than or equal"),
            ({"scenario": "custom", "rules": {"colour": "red"}}, "rules.colour", "unknown field"),
            ({"scenario": "custom", "rules": {"operator_ids": ["OP99"]}}, "rules.operator_ids", "does not exist"),
            ({"scenario": "custom", "rules": {"resource_types": ["toaster"]}}, "rules.resource_types.0", "Input"),
            ({"scenario": "custom", "rules": {"min_duration_h": float("nan")}}, "rules.min_duration_h", "finite"),
            ({"scenario": "storm_chasing"}, "scenario", "must be one of"),
            ({"scenario": "custom", "pool_id": "has space"}, "pool_id", "pattern"),
            ({"scenario": "custom", "size": 3}, "size", "unknown field"),
        ]
        for fields, field, rule in cases:
            with pytest.raises(InvalidInput) as exc:
                pools.create_pool(conn, ADMIN, fields)
            v = exc.value.violations[0]
            assert v.field == field and rule in v.rule, (fields, exc.value.violations)
        pools.create_pool(conn, ADMIN, {"pool_id": "P1", "scenario": "custom"})
        with pytest.raises(Conflict):
            pools.create_pool(conn, ADMIN, {"pool_id": "P1", "scenario": "custom"})
        with pytest.raises(NotFound):
            pools.get_pool(conn, "P2")
        assert conn.execute(select(func.count()).select_from(pools_table)).scalar() == 1


def test_operator_admin_defines_pools_of_its_own_operator_only(loaded):
    with _begin(loaded) as conn:
        pools.default_pools(conn, ADMIN)
        own = pools.create_pool(conn, OP02_ADMIN, {"pool_id": "OP02-PS", "scenario": "peak_shaving"})
        assert own["rules"]["operator_ids"] == ["OP02"]                 # fenced automatically
        assert _totals(conn, "OP02-PS")["OP02-PS"]["down_kw"] == 120.0 + 60.0
        with pytest.raises(Forbidden):
            pools.create_pool(conn, OP02_ADMIN, {"scenario": "custom", "rules": {"operator_ids": ["OP01"]}})
        with pytest.raises(Forbidden):
            pools.create_pool(conn, OWNER, {"scenario": "custom"})
        with pytest.raises(Forbidden):
            pools.update_pool(conn, OP02_ADMIN, "peak_shaving:GZ", {"name": "mine"})
        with pytest.raises(Forbidden):
            pools.delete_pool(conn, OP01_ADMIN, "OP02-PS", reason="not mine")
        assert [p["pool_id"] for p in pools.list_pools(conn, OP02_ADMIN)] == ["OP02-PS"]
        assert len(pools.list_pools(conn, Actor("aud", "auditor"))) == 16
        with pytest.raises(Forbidden):
            pools.evaluate(conn, ["peak_shaving:GZ"], actor=OP02_ADMIN)
        assert [r["pool_id"] for r in pools.evaluate(conn, actor=OP02_ADMIN)] == ["OP02-PS"]


def test_update_merges_rules_and_delete_is_audited(loaded):
    with _begin(loaded) as conn:
        pools.create_pool(conn, ADMIN, {"pool_id": "EM-TH", "scenario": "emergency_response",
                                        "rules": {"node_id": "GZ-TH"}})
        assert _totals(conn, "EM-TH")["EM-TH"]["count"] == 3
        after = pools.update_pool(conn, DISPATCHER, "EM-TH", {"rules": {"max_latency_s": 60}}, reason="faster")
        assert after["rules"]["max_latency_s"] == 60 and after["rules"]["node_id"] == "GZ-TH"
        assert _totals(conn, "EM-TH")["EM-TH"]["down_kw"] == 200.0 + 500.0     # R1 (120 s) drops out
        with pytest.raises(InvalidInput) as exc:
            pools.update_pool(conn, DISPATCHER, "EM-TH", {"rules": {"max_latency_s": None}})
        assert exc.value.violations[0].field == "rules.max_latency_s"
        with pytest.raises(InvalidInput):
            pools.update_pool(conn, DISPATCHER, "EM-TH", {"scenario": "reserve"})
        pools.delete_pool(conn, ADMIN, "EM-TH", reason="drill over")
        with pytest.raises(NotFound):
            pools.get_pool(conn, "EM-TH")
        log = conn.execute(select(audit_log.c.action, audit_log.c.before, audit_log.c.after, audit_log.c.reason)
                           .where(audit_log.c.entity_id == "EM-TH").order_by(audit_log.c.audit_id)).all()
    assert [r.action for r in log] == ["pool.create", "pool.update", "pool.delete"]
    assert log[1].before["rules"]["max_latency_s"] == 300 and log[1].after["rules"]["max_latency_s"] == 60
    assert log[1].reason == "faster" and log[2].before["pool_id"] == "EM-TH"


def test_members_are_paged_in_id_order(loaded):
    with _begin(loaded) as conn:
        pools.default_pools(conn, ADMIN)
        first = pools.members(conn, "peak_shaving:GZ", limit=4)
        rest = pools.members(conn, "peak_shaving:GZ", limit=4, offset=4)
        with pytest.raises(InvalidInput):
            pools.members(conn, "peak_shaving:GZ", limit=0)
        page = pools.evaluate(conn, ["valley_filling:GZ"], members_limit=10)[0]["members"]
        reg = registry_arrays.load(conn)             # arrays held by the caller are reused, not changed
        again = pools.members(conn, "peak_shaving:GZ", limit=4, offset=4, reg=reg)
        assert pools.evaluate(conn, ["peak_shaving:GZ"], reg=reg)[0]["down_kw"] == 1340.0
    assert first["total"] == 6 and first["items"] == ["R1", "R2", "R3", "R4"] and rest["items"] == ["R5", "R6"]
    assert page["items"] == ["R3", "R5"] and again == rest


def test_a_suspended_operators_resources_leave_every_pool(loaded):
    with _begin(loaded) as conn:
        pools.default_pools(conn, ADMIN)
        conn.execute(operators.update().where(operators.c.operator_id == "OP02").values(state="suspended"))
        t = _totals(conn, "peak_shaving:GZ-HZ")
    assert (t["peak_shaving:GZ-HZ"]["down_kw"], t["peak_shaving:GZ-HZ"]["count"]) == (300.0, 1)


def test_engine_applies_changes_incrementally_like_a_fresh_evaluation(loaded):
    with _begin(loaded) as conn:
        pools.default_pools(conn, ADMIN)
        pools.create_pool(conn, ADMIN, {"pool_id": "LC-TH", "scenario": "local_congestion",
                                        "rules": {"node_id": "GZ-TH-S01-F01-T001"}})
        engine = pools.PoolEngine.from_db(conn)
        by_op = {r["operator"]: r for r in engine.breakdown("peak_shaving:GZ", "operator")}
        assert by_op["OP01"]["down_kw"] == 160 + 200 + 500 + 300 and by_op["OP02"]["down_kw"] == 180.0
        changes = {"state": ["retired", "active", "active", "active"],
                   "adjustable_down_kw": [120.0, 400.0, 60.0, 250.0],
                   "operator_id": ["OP02", "OP01", "OP01", "OP02"],
                   "verified_grade": ["A", None, "A", "B"],
                   "verified_down_kw": [np.nan, np.nan, 55.0, 240.0],
                   "verified_latency_s": [np.nan, np.nan, 5.0, 30.0],
                   "flagged": [False, False, False, False]}
        ids = ["R4", "R1", "R7", "R3"]
        touched = engine.apply(ids, changes)
        assert "peak_shaving:GZ" in touched and "valley_filling:GZ-HZ" not in touched
        # the same change written to the database, evaluated from scratch
        for k, rid in enumerate(ids):
            conn.execute(resources.update().where(resources.c.resource_id == rid).values(
                state=changes["state"][k], adjustable_down_kw=changes["adjustable_down_kw"][k],
                operator_id=changes["operator_id"][k], verified_grade=changes["verified_grade"][k],
                verified_down_kw=None if np.isnan(changes["verified_down_kw"][k]) else changes["verified_down_kw"][k],
                verified_latency_s=None if np.isnan(changes["verified_latency_s"][k])
                else changes["verified_latency_s"][k]))
        fresh = {r["pool_id"]: r for r in pools.evaluate(conn)}
    live = {r["pool_id"]: r for r in pools.evaluate(engine)}
    assert set(live) == set(fresh)
    for pid, row in fresh.items():
        for k in ("up_kw", "down_kw", "energy_up_kwh", "energy_down_kwh", "count"):
            assert live[pid][k] == pytest.approx(row[k]), (pid, k)
    # R1 400 + R2 200 + R3 250 + R5 60 + R6 300 + R7 60; R4 retired
    assert live["peak_shaving:GZ"]["down_kw"] == 1270.0
    assert live["reserve:GZ"]["down_kw"] == 240.0 + 55.0                    # verified values of R3 and R7
    assert live["LC-TH"]["down_kw"] == 400.0 + 200.0 + 250.0
    # the registry arrays the engine holds stay current for aggregations too
    agg = {r["operator"]: r for r in registry_arrays.aggregate(engine.reg, ["operator"])}
    assert agg["OP02"]["resources"] == 2 and agg["OP01"]["adjustable_down_kw"] == 400 + 200 + 300 + 60


def test_engine_moves_a_resource_to_another_transformer_area_and_refuses_bad_changes(loaded):
    with _begin(loaded) as conn:
        pools.default_pools(conn, ADMIN)
        engine = pools.PoolEngine.from_db(conn)
    engine.apply(["R6"], {"ta_id": ["GZ-TH-S01-F01-T001"]})
    t = {r["pool_id"]: r for r in engine.totals()}
    assert t["peak_shaving:GZ-TH"]["down_kw"] == 860.0 + 300.0 and t["peak_shaving:GZ-HZ"]["down_kw"] == 180.0
    assert t["peak_shaving:GZ"]["down_kw"] == 1340.0
    before = engine.sums.copy()
    for ids, changes, field in [
        (["R1"], {"district_id": ["GZ-HZ"]}, "district_id"),
        (["R1"], {"ta_id": ["GZ-NOPE"]}, "ta_id"),
        (["R99"], {"latency_s": [1.0]}, "resource_ids"),
        (["R1", "R1"], {"latency_s": [1.0, 2.0]}, "resource_ids"),
        (["R1"], {"latency_s": [1.0, 2.0]}, "latency_s"),
        (["R1"], {"colour": ["red"]}, "colour"),
    ]:
        with pytest.raises(InvalidInput) as exc:
            engine.apply(ids, changes)
        assert exc.value.violations[0].field == field
    np.testing.assert_array_equal(engine.sums, before)


def test_evaluate_registry_arrays_without_a_database(loaded):
    with db.get_engine(loaded.database_url).connect() as conn:
        reg = registry_arrays.load(conn)
    defs = [Pool(pool_id="hz-1h", name="Haizhu 1 h", scenario="custom",
                 rules=PoolRules(node_id="GZ-HZ-S01-F01", direction="down", duration_h=1.0)),
            Pool(pool_id="auto", name="automatic", scenario="custom", rules=PoolRules(response_modes=["automatic"]))]
    t = {r["pool_id"]: r for r in pools.evaluate(reg, pools=defs)}
    # every operator counts without a database (R7 still has none); energy capped at the pool's 1 h
    assert (t["hz-1h"]["down_kw"], t["hz-1h"]["energy_down_kwh"], t["hz-1h"]["level"]) == (480.0, 480.0, "feeder")
    assert (t["auto"]["up_kw"], t["auto"]["down_kw"], t["auto"]["count"]) == (560.0, 880.0, 4)
    with pytest.raises(InvalidInput):
        pools.evaluate(reg)
