"""The resource list's two paths give the same pages: the registry arrays (the API's, no text
search) and the SQL query (with a search, or without arrays), for every filter and tenant scope."""

import itertools

import pytest

from openvpp.core.errors import InvalidInput
from openvpp.services import registry_arrays, resources, search
from openvpp.store import db
from openvpp.store.audit import Actor

ACTORS = [Actor("admin", "city_admin"), Actor("op1", "operator_admin", operator_id="OP01"),
          Actor("op2", "operator_engineer", operator_id="OP02"), Actor("own3", "owner", owner_id="OW3")]
FILTERS = [{}, {"resource_type": "central_ac"}, {"operator_id": "OP01"}, {"operator_id": "OP02"},
           {"district_id": "GZ-HZ"}, {"ta_id": "GZ-HZ-S01-F01-T001", "resource_type": "ev_charging"},
           {"substation_id": "GZ-TH-S01"}, {"state": "active"}, {"resource_type": "nuclear"},
           {"owner_id": "OW3", "operator_id": "OP01"}, {"verified_grade": "A"}]


def test_arrays_and_sql_give_the_same_pages(loaded):
    with db.get_engine(loaded.database_url).connect() as conn:
        reg = registry_arrays.load(conn)
        for actor, filters, (limit, offset) in itertools.product(ACTORS, FILTERS, [(50, 0), (2, 1), (3, 5)]):
            sql = resources.list_page(conn, actor, filters, None, limit, offset)
            arr = resources.list_page(conn, actor, filters, None, limit, offset, reg=reg)
            assert arr == sql, (actor, filters, limit, offset)
        # a text search goes to SQL whatever the arrays, unless the text index is given
        assert resources.list_page(conn, ACTORS[0], {}, "Tower", reg=reg)["total"] == 3
        with pytest.raises(InvalidInput) as err:
            resources.list_page(conn, ACTORS[0], {"colour": "red"}, reg=reg)
        assert err.value.violations[0].field == "colour"


@pytest.mark.parametrize("query", ["Tower", "tower a", "M000", "r5", "pile", "Mall B", "nothing", "A B", " pv "])
def test_text_index_gives_the_pages_of_a_case_insensitive_search(loaded, query):
    """The text index answers as a case-insensitive substring of id, name or meter id, within every
    tenant scope and filter (checked against the unsearched SQL list filtered here), and as the SQL
    search wherever that is case-insensitive (SQLite's LIKE)."""
    q = query.strip().lower()
    with db.get_engine(loaded.database_url).connect() as conn:
        reg = registry_arrays.load(conn)
        text = search.TextIndex.load(conn, reg)
        for actor, filters in itertools.product(ACTORS, FILTERS):
            got = resources.list_page(conn, actor, filters, query, 50, 0, reg=reg, text=text)
            everything = resources.list_page(conn, actor, filters, None, 1000, 0)["items"]
            want = [x for x in everything
                    if any(q in (x[k] or "").lower() for k in ("resource_id", "name", "meter_id"))]
            assert (got["items"], got["total"]) == (want, len(want)), (actor, filters)
            if conn.dialect.name == "sqlite":
                assert got == resources.list_page(conn, actor, filters, query, 50, 0)


def test_text_index_finds_each_resource_once_and_refuses_separators():
    idx = search.TextIndex(["R1", "R2", "R3"], ["Pile pile PILE", None, "tab"], ["M-pile", "M2", None])
    assert sorted(idx.matching_ids("pile")) == ["R1"]            # three hits in one line: one resource
    assert idx.matching_ids("a.b").tolist() == [] and sorted(idx.matching_ids("2")) == ["R2"]   # literal
    assert sorted(idx.matching_ids("r")) == ["R1", "R2", "R3"]
    assert list(idx.matching_ids("zzz")) == [] and idx.matching_ids("a\tb") is None
    assert search.TextIndex([], [], []).matching_ids("x").tolist() == []
