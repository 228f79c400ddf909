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
