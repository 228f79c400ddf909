"""The in-memory registry gives the same totals as SQL on both databases."""

import pytest

from openvpp.services import registry, registry_arrays
from openvpp.store import db


def test_arrays_match_sql_group_by(loaded):
    with db.get_engine(loaded.database_url).connect() as conn:
        reg = registry_arrays.load(conn)
        for by in ("district", "type", "operator", "transformer_area"):
            sql = {r["key"]: r for r in registry.summary(conn, by)}
            arr = {r[by]: r for r in registry_arrays.aggregate(reg, [by])}
            assert set(sql) == set(arr)
            for k, row in sql.items():
                assert arr[k]["connected_kw"] == pytest.approx(row["connected_kw"])
                assert arr[k]["adjustable_down_kw"] == pytest.approx(row["adjustable_down_kw"])
                assert arr[k]["resources"] == row["resources"]
    assert reg.n == 7
    assert reg.index_of(["R3", "nope"]).tolist() == [2, -1]


def test_two_level_grouping(loaded):
    with db.get_engine(loaded.database_url).connect() as conn:
        reg = registry_arrays.load(conn)
    rows = {(r["district"], r["type"]): r for r in registry_arrays.aggregate(reg, ["district", "type"])}
    assert rows[("GZ-HZ", "ev_charging")]["connected_kw"] == 180.0
    assert rows[("GZ-HZ", "ev_charging")]["resources"] == 2
    assert rows[("GZ-TH", "central_ac")]["adjustable_down_kw"] == 160.0


def test_two_key_summaries_on_the_arrays_equal_the_group_by(loaded):
    """Every pair of groupings, under every kind of parent, with filters: the arrays (the API's path)
    give the rows of the SQL GROUP BY (the CLI's), in the same order."""
    import itertools

    from openvpp.core.errors import InvalidInput
    from openvpp.services.scope import Scope
    from openvpp.store.schema import resources

    with db.get_engine(loaded.database_url).begin() as conn:
        conn.execute(resources.update().where(resources.c.resource_id == "R3").values(
            verified_down_kw=420.0, verified_grade="A"))
        conn.execute(resources.update().where(resources.c.resource_id == "R5").values(state="retired"))
    with db.get_engine(loaded.database_url).connect() as conn:
        reg = registry_arrays.load(conn)
        for a, b in itertools.permutations(registry.SUMMARY_KEYS, 2):
            for parent, filters in ((None, None), ("GZ-HZ", None), ("GZ-TH-S01", {"response_mode": "automatic"}),
                                    (None, {"state": "retired"}), ("GZ-HZ-S01-F01-T002", {"operator_id": "OP01"})):
                sql = registry.summary(conn, [a, b], parent=parent, filters=filters)
                arr = registry.summary(conn, f"{a},{b}", parent=parent, filters=filters, reg=reg)
                assert arr == sql, (a, b, parent, filters)
        rows = registry.summary(conn, "district,type", Scope(operator_id="OP02"), reg=reg)
        assert [(r["key"], r["resources"]) for r in rows] == [(["GZ-HZ", "ev_charging"], 1)]   # R5 retired
        assert [r["verified"] for r in registry.summary(conn, "type,grade", reg=reg) if r["grade"] == "A"] == [1]
        page = registry.summary_page(conn, "transformer_area,type", reg=reg, limit=2, offset=4)
        assert page["total"] == 6 and [r["key"] for r in page["rows"]] == [
            ["GZ-TH-S01-F01-T001", "distributed_pv"], ["GZ-TH-S01-F01-T001", "user_storage"]]
        with pytest.raises(InvalidInput) as e:
            registry.summary(conn, "district", filters={"colour": "red"}, reg=reg)
        assert e.value.violations[0].field == "colour"
