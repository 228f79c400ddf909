"""The resource list's two paths give the same pages: the registry arrays (the API's, no text
search) and the SQL query (with a search, or without arrays), for every filter and tenant scope."""

import itertools

import pytest

from openvpp.core.errors import InvalidInput
from openvpp.services import registry_arrays, resources
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
        # a text search goes to SQL whatever the arrays
        assert resources.list_page(conn, ACTORS[0], {}, "Tower", reg=reg)["total"] == 3
        with pytest.raises(InvalidInput) as err:
            resources.list_page(conn, ACTORS[0], {"colour": "red"}, reg=reg)
        assert err.value.violations[0].field == "colour"
