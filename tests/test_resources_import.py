"""Bulk import: every row checked, line/field/rule named, nothing written unless all rows are valid."""

import csv

import pyarrow as pa
import pytest
from sqlalchemy import func, select

from openvpp.core.errors import InvalidInput
from openvpp.services import registry
from openvpp.store import audit, db
from openvpp.store.schema import resources
from tests.conftest import RES_HEADER, write_csv

GOOD = ["R10", "New AC", "central_ac", "OP01", "OW1", "S1", "GZ-TH-S01-F01-T001", 300, 300, "ac_office", 200, 11,
        60, "semi_automatic", 0, 60, 2, "mqtt", "M0010", "2024-01-01"]


def _row(**changes):
    row = dict(zip(RES_HEADER, GOOD, strict=True))
    row.update(changes)
    return [row[h] for h in RES_HEADER]


def _import(settings, tmp_path, rows, name="batch.csv"):
    path = tmp_path / name
    write_csv(path, RES_HEADER, rows)
    with db.get_engine(settings.database_url).begin() as conn:
        return registry.import_resources(conn, registry.read_table(path, ()), audit.SYSTEM)


def _count(settings):
    with db.get_engine(settings.database_url).connect() as conn:
        return conn.execute(select(func.count()).select_from(resources)).scalar()


def test_valid_batch_is_imported_and_audited(loaded, tmp_path):
    n = _import(loaded, tmp_path, [_row(), _row(resource_id="R11", meter_id="M0011")])
    assert n == 2
    assert _count(loaded) == 9


@pytest.mark.parametrize(("changes", "field", "rule"), [
    ({"capacity_kw": "-5"}, "capacity_kw", "must be > 0"),
    ({"capacity_kw": "abc"}, "capacity_kw", "must be a number"),
    ({"adjustable_down_kw": 400}, "adjustable_down_kw", "must not exceed capacity_kw"),
    ({"resource_type": "nuclear"}, "resource_type", "must be one of"),
    ({"ta_id": "GZ-XX-NOPE"}, "ta_id", "transformer area does not exist"),
    ({"ta_id": "GZ-HZ-S01-F01-T001"}, "ta_id", "must be the transformer area of its site"),
    ({"operator_id": "OP99"}, "operator_id", "operator does not exist"),
    ({"meter_id": "M0001"}, "meter_id", "meter already belongs to a live resource"),
    ({"resource_id": "R1", "meter_id": "M0099"}, "resource_id", "already exists"),
    ({"commissioned_on": "2024-02-30"}, "commissioned_on", "must be a date"),
    ({"latency_s": ""}, "latency_s", "is required"),
    ({"noise_seed": "1.5"}, "noise_seed", "whole number"),
    ({"name": "冷" * 201}, "name", "must be at most 200 characters"),
])
def test_bad_row_names_line_field_rule_and_writes_nothing(loaded, tmp_path, changes, field, rule):
    rows = [_row(resource_id="R20", meter_id="M0020"), _row(**changes)]
    with pytest.raises(InvalidInput) as err:
        _import(loaded, tmp_path, rows)
    v = err.value.violations[0]
    assert (v.line, v.field) == (3, field), str(err.value)
    assert rule in v.rule
    assert _count(loaded) == 7  # the good first row was not written either


def test_duplicate_meter_within_file_is_refused(loaded, tmp_path):
    with pytest.raises(InvalidInput) as err:
        _import(loaded, tmp_path, [_row(), _row(resource_id="R11")])
    assert [(v.line, v.field) for v in err.value.violations] == [(3, "meter_id")]
    assert _count(loaded) == 7


def test_all_errors_are_counted_not_only_the_first(loaded, tmp_path):
    rows = [_row(resource_id=f"R{100 + i}", meter_id=f"M{100 + i}", latency_s=-1) for i in range(1500)]
    with pytest.raises(InvalidInput) as err:
        _import(loaded, tmp_path, rows)
    assert err.value.total == 1500
    assert len(err.value.violations) == 1000  # reported in detail, the rest counted


def test_missing_and_unknown_columns_are_named(loaded, tmp_path):
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["resource_id", "colour"])
        w.writerow(["R1", "red"])
    with pytest.raises(InvalidInput) as err, db.get_engine(loaded.database_url).begin() as conn:
        registry.import_resources(conn, registry.read_table(path, ()), audit.SYSTEM)
    fields = {(v.field, v.rule) for v in err.value.violations}
    assert ("colour", "unknown column") in fields
    assert ("capacity_kw", "required column is missing") in fields


def test_parquet_import_uses_the_same_rules(loaded, tmp_path):
    import pyarrow.parquet as pq

    t = pa.table({h: pa.array([str(v)]) for h, v in zip(RES_HEADER, _row(), strict=True)})
    t = t.set_column(RES_HEADER.index("capacity_kw"), "capacity_kw", pa.array([300.0]))
    pq.write_table(t, tmp_path / "r.parquet")
    with db.get_engine(loaded.database_url).begin() as conn:
        assert registry.import_resources(conn, registry.read_table(tmp_path / "r.parquet", ()), audit.SYSTEM) == 1
    assert _count(loaded) == 8


def test_summary_by_district_and_type(loaded):
    with db.get_engine(loaded.database_url).connect() as conn:
        by_d = {r["key"]: r for r in registry.summary(conn, "district")}
        by_t = {r["key"]: r for r in registry.summary(conn, "type")}
    assert by_d["GZ-TH"]["connected_kw"] == 1500.0 and by_d["GZ-TH"]["resources"] == 3
    assert by_d["GZ-HZ"]["connected_kw"] == 120 + 60 + 1500 + 60
    assert by_d["GZ-HZ"]["label_zh"] == "海珠"
    assert by_t["central_ac"]["adjustable_down_kw"] == 160 + 300
    with pytest.raises(InvalidInput, match="by: must be one of"), db.get_engine(loaded.database_url).connect() as c:
        registry.summary(c, "colour")


def test_validation_names_the_columns_it_rewrites(tmp_path):
    # what PostgreSQL's COPY would store differently from the rules: trimmed text, a blank present value
    from openvpp.model.columns import RESOURCE_COLUMNS
    from openvpp.services.validation import validate_table

    path = tmp_path / "r.csv"
    lines = [",".join(RES_HEADER),
             ",".join(str(v) for v in _row(resource_id=" R10", name="Padded ")),
             ",".join(str(v) for v in _row(resource_id="R11", meter_id="M0011", operator_id="", capacity_kva='""')),
             ",".join(str(v) for v in _row(resource_id="R12", meter_id="M0012", name="", latency_s=" 60 "))]
    path.write_text("\n".join(lines) + "\n")
    table = registry.read_table(path, (), copy_nulls=True)
    assert table.column("operator_id")[1].as_py() is None          # unquoted empty: missing, as COPY reads it
    assert table.column("capacity_kva")[1].as_py() == ""           # quoted empty: empty text, as COPY reads it
    checked = validate_table(table, RESOURCE_COLUMNS)
    assert checked.rewritten == ("resource_id", "name", "capacity_kva")   # not the padded number, not the nulls
    assert checked.table.column("resource_id").to_pylist() == ["R10", "R11", "R12"]
    assert checked.table.column("name").to_pylist() == ["Padded", "New AC", None]
    assert checked.table.column("latency_s").to_pylist() == [60.0, 60.0, 60.0]

    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join([lines[0], ",".join(str(v) for v in _row(operator_id=""))]) + "\n")
    assert validate_table(registry.read_table(plain, (), copy_nulls=True), RESOURCE_COLUMNS).rewritten == ()
