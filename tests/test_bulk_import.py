"""The PostgreSQL bulk path of resource imports (constraints rebuilt once, COPY overlapped with
validation): same result and same all-or-nothing guarantee as the row path."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from openvpp.core.errors import InvalidInput
from openvpp.services import registry
from openvpp.store import audit, db
from openvpp.store.schema import audit_log, resources
from tests.conftest import RES_HEADER, write_csv

# the bulk path exists on PostgreSQL only; SQLite takes the row path (tests/test_resources_import.py)
pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.fixture
def pg_loaded(loaded, monkeypatch):
    monkeypatch.setattr(registry, "BULK_MIN_ROWS", 1)
    monkeypatch.setattr(registry, "BULK_RATIO", 1000.0)
    return loaded


def _rows(n, start=100, **changes):
    out = []
    for i in range(start, start + n):
        row = dict(zip(RES_HEADER, [f"R{i}", "pile", "ev_charging", "OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001",
                                    60, 60, "ev_public", 40, i, 10, "automatic", 0, 60, 1, "ocpp1.6",
                                    f"M{i}", "2024-05-01"], strict=True))
        row.update(changes)
        out.append([row[h] for h in RES_HEADER])
    return out


def _count(engine):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(resources)).scalar()


def test_bulk_path_imports_and_leaves_the_declared_schema(pg_loaded, tmp_path):
    path = tmp_path / "many.csv"
    write_csv(path, RES_HEADER, _rows(50))
    engine = db.get_engine(pg_loaded.database_url)
    with engine.begin() as conn:
        assert registry._bulk_eligible(conn, path, "active")
        assert registry.import_resources_file(conn, path, audit.SYSTEM) == 50
    steps = registry.finish_bulk(engine)
    assert any(k.startswith("index ix_resources_") for k in steps)
    assert registry.finish_bulk(engine) == {}          # idempotent: nothing left to do
    assert _count(engine) == 57
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), db.full_metadata()) == []
        assert conn.exec_driver_sql("SELECT count(*) FROM pg_constraint WHERE NOT convalidated").scalar() == 0
        last = conn.execute(select(audit_log.c.after).order_by(audit_log.c.audit_id.desc()).limit(1)).scalar()
    assert last["write_path"] == "bulk" and last["count"] == 50


@pytest.mark.parametrize(("changes", "field"), [({"ta_id": "GZ-NOPE"}, "ta_id"),
                                                ({"capacity_kw": "-1"}, "capacity_kw")])
def test_bulk_path_writes_nothing_when_a_row_is_bad(pg_loaded, tmp_path, changes, field):
    path = tmp_path / "bad.csv"
    write_csv(path, RES_HEADER, _rows(20) + _rows(1, start=500, **changes))
    engine = db.get_engine(pg_loaded.database_url)
    with pytest.raises(InvalidInput) as err, engine.begin() as conn:
        registry.import_resources_file(conn, path, audit.SYSTEM)
    assert (err.value.violations[0].line, err.value.violations[0].field) == (22, field)
    assert _count(engine) == 7
    with engine.connect() as conn:   # the dropped constraints came back with the rollback
        assert compare_metadata(MigrationContext.configure(conn), db.full_metadata()) == []


def test_bulk_path_names_collisions_with_stored_rows(pg_loaded, tmp_path):
    path = tmp_path / "dup.csv"
    write_csv(path, RES_HEADER, _rows(5) + _rows(1, start=600, meter_id="M0004"))   # R4's live meter
    engine = db.get_engine(pg_loaded.database_url)
    with pytest.raises(InvalidInput) as err, engine.begin() as conn:
        registry.import_resources_file(conn, path, audit.SYSTEM)
    v = err.value.violations[0]
    assert (v.line, v.field, v.rule) == (7, "meter_id", "meter already belongs to a live resource")
    assert _count(engine) == 7
