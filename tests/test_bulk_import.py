"""The PostgreSQL bulk path of resource imports (constraints rebuilt once, COPY overlapped with
validation): same result and same all-or-nothing guarantee as the row path."""

import subprocess
import sys

import psycopg
import pyarrow as pa
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import String, func, select
from sqlalchemy.dialects import postgresql

from openvpp.core.errors import InvalidInput
from openvpp.services import registry
from openvpp.store import audit, bulk, db
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


def _write_raw(path, lines):
    path.write_text(",".join(RES_HEADER) + "\n" + "".join(line + "\n" for line in lines), encoding="utf-8")


def test_bulk_path_stores_what_the_rules_read_when_text_is_padded_or_quoted_empty(pg_loaded, tmp_path):
    # the file's own bytes would keep '  R100 ', the quoted "" operator and refuse the quoted "" kVA:
    # the validated rows are copied instead, exactly what the row path stores
    good = [",".join(str(v) for v in r) for r in _rows(3)]
    padded = ('"  R100 "," Padded name ",ev_charging,"",OW2,S2,GZ-HZ-S01-F01-T001,60,"",ev_public,40,100,10,'
              'automatic,0,60,1, ocpp1.6 ,M100,2024-05-01')
    path = tmp_path / "padded.csv"
    _write_raw(path, [padded] + good[1:])
    engine = db.get_engine(pg_loaded.database_url)
    with engine.begin() as conn:
        assert registry.import_resources_file(conn, path, audit.SYSTEM) == 3
    registry.finish_bulk(engine)
    with engine.connect() as conn:
        row = conn.execute(select(resources.c.resource_id, resources.c.name, resources.c.operator_id,
                                  resources.c.capacity_kva, resources.c.control_protocol)
                           .where(resources.c.meter_id == "M100")).one()
        last = conn.execute(select(audit_log.c.after).order_by(audit_log.c.audit_id.desc()).limit(1)).scalar()
    assert tuple(row) == ("R100", "Padded name", None, None, "ocpp1.6")
    assert last["write_path"] == "bulk, validated rows"
    assert _count(engine) == 10


def test_bulk_path_copies_the_file_itself_when_nothing_is_rewritten(pg_loaded, tmp_path):
    lines = [",".join(str(v) for v in r) for r in _rows(3)]
    lines[1] = lines[1].replace(",OP02,", ",,", 1)    # unquoted empty: NULL for COPY and for the rules
    path = tmp_path / "plain.csv"
    _write_raw(path, lines)
    engine = db.get_engine(pg_loaded.database_url)
    with engine.begin() as conn:
        assert registry.import_resources_file(conn, path, audit.SYSTEM) == 3
    with engine.connect() as conn:
        op = conn.execute(select(resources.c.operator_id).where(resources.c.resource_id == "R101")).scalar_one()
        last = conn.execute(select(audit_log.c.after).order_by(audit_log.c.audit_id.desc()).limit(1)).scalar()
    assert op is None
    assert last["write_path"] == "bulk"
    registry.finish_bulk(engine)


def test_references_cannot_go_away_during_or_after_a_bulk_import(pg_loaded, tmp_path):
    engine = db.get_engine(pg_loaded.database_url)
    with engine.begin() as conn:   # an owner and a site that only the new rows refer to
        conn.exec_driver_sql("INSERT INTO owners (owner_id, name, kind, operator_id, revenue_share) "
                             "VALUES ('OW9', 'New owner', 'residential', 'OP02', 0.5)")
        conn.exec_driver_sql("INSERT INTO sites (site_id, name, ta_id, owner_id) "
                             "VALUES ('S9', 'New site', 'GZ-HZ-S01-F01-T001', 'OW9')")
    path = tmp_path / "many.csv"
    write_csv(path, RES_HEADER, _rows(5, owner_id="OW9", site_id="S9"))
    other = psycopg.connect(pg_loaded.database_url.replace("postgresql+psycopg://", "postgresql://"),
                            autocommit=True)
    try:
        other.execute("SET lock_timeout = '300ms'")
        with engine.begin() as conn:
            registry.import_resources_file(conn, path, audit.SYSTEM)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("DELETE FROM owners WHERE owner_id = 'OW9'")
        # committed with the foreign keys NOT VALID (finish_bulk not run yet): still enforced
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            other.execute("DELETE FROM sites WHERE site_id = 'S9'")
    finally:
        other.close()
    registry.finish_bulk(engine)


def test_resource_key_columns_compare_bytewise_as_declared(pg_loaded):
    # alembic's compare_metadata does not look at collations: check the migration against the schema here
    declared = {c.name: c.type.dialect_impl(postgresql.dialect()).collation for c in resources.columns
                if isinstance(c.type.dialect_impl(postgresql.dialect()), String)}
    assert {n for n, coll in declared.items() if coll == "C"} == {
        "resource_id", "operator_id", "owner_id", "site_id", "ta_id", "meter_id"}
    with db.get_engine(pg_loaded.database_url).connect() as conn:
        stored = dict(conn.exec_driver_sql(
            "SELECT column_name, collation_name FROM information_schema.columns "
            "WHERE table_name = 'resources' AND data_type IN ('text', 'character varying')").all())
    assert stored == declared


def test_query_ids_matches_query_arrow_and_falls_back_on_newlines_and_nulls(pg_loaded):
    with db.get_engine(pg_loaded.database_url).begin() as conn:
        ids = bulk.query_ids(conn, "SELECT owner_id AS id FROM owners ORDER BY owner_id", ["id"])
        ref = bulk.query_arrow(conn, "SELECT owner_id AS id FROM owners ORDER BY owner_id", {"id": pa.string()})
        assert ids.column("id").to_pylist() == ref.column("id").to_pylist() == ["OW1", "OW2", "OW3"]
        odd = "SELECT * FROM (VALUES ('a', 'x'), (E'b\\nc', 'y'), (NULL, 'z')) AS v(id, other)"
        got = bulk.query_ids(conn, odd, ["id", "other"])
        assert got.column("id").to_pylist() == ["a", "b\nc", None]
        assert got.column("other").to_pylist() == ["x", "y", "z"]
        assert bulk.query_ids(conn, "SELECT owner_id AS id FROM owners WHERE false", ["id"]).num_rows == 0


def test_bulk_path_in_a_process_that_never_imported_the_other_areas_schemas(pg_loaded, tmp_path):
    # as `openvpp resources import` runs: tables of other areas (EV credentials, contracts...) point at
    # resources, and their keys must be dropped and re-added although their modules are not loaded
    path = tmp_path / "many.csv"
    write_csv(path, RES_HEADER, _rows(30))
    code = f"""
import sys
from openvpp.services import registry
from openvpp.store import audit, db
registry.BULK_MIN_ROWS, registry.BULK_RATIO = 1, 1000.0
assert "openvpp.store.schema_ev" not in sys.modules
engine = db.get_engine({pg_loaded.database_url!r})
with engine.begin() as conn:
    print(registry.import_resources_file(conn, {str(path)!r}, audit.SYSTEM))
registry.finish_bulk(engine)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "30"
    engine = db.get_engine(pg_loaded.database_url)
    assert _count(engine) == 37
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), db.full_metadata()) == []
        assert conn.exec_driver_sql("SELECT count(*) FROM pg_constraint WHERE NOT convalidated").scalar() == 0


def test_bulk_path_copies_the_validated_rows_when_the_server_refuses_a_value_the_rules_accept(pg_loaded, tmp_path):
    # 1e-400 reads as 0.0 by the rules (as on the row path); PostgreSQL's COPY calls it out of range
    lines = [",".join(str(v) for v in r) for r in _rows(3)]
    lines[2] = lines[2].replace(",60,60,ev_public,", ",60,1e-400,ev_public,", 1)
    path = tmp_path / "tiny.csv"
    _write_raw(path, lines)
    engine = db.get_engine(pg_loaded.database_url)
    with engine.begin() as conn:
        assert registry.import_resources_file(conn, path, audit.SYSTEM) == 3
    registry.finish_bulk(engine)
    with engine.connect() as conn:
        kva = conn.execute(select(resources.c.capacity_kva).where(resources.c.resource_id == "R102")).scalar_one()
        last = conn.execute(select(audit_log.c.after).order_by(audit_log.c.audit_id.desc()).limit(1)).scalar()
    assert kva == 0.0
    assert last["write_path"] == "bulk, validated rows"
