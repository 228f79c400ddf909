"""Shared fixtures: a database per test on SQLite and on the real PostgreSQL, a small hand-made city.

PostgreSQL is required: when it cannot be reached the tests that need it fail (never skip).
Set OPENVPP_TEST_PG (default postgresql://postgres@127.0.0.1:5432/postgres) to point elsewhere.
"""

from __future__ import annotations

import csv
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openvpp.core.settings import Settings
from openvpp.core.timeslots import year_slots_utc
from openvpp.store import db

PG_ADMIN = os.environ.get("OPENVPP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TEMPLATE = f"openvpp_tmpl_{os.getpid()}"
BACKENDS = ["sqlite", "postgresql"]


def _pg_admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # fail loudly: CI must have PostgreSQL
        pytest.fail(f"PostgreSQL is required for these tests and is not reachable at {PG_ADMIN}: {exc}")


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_template() -> str:
    """A migrated template database; each test clones it (CREATE DATABASE ... TEMPLATE)."""
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    url = _pg_url(TEMPLATE)
    db.upgrade(url)
    db.get_engine(db.normalise_url(url)).dispose()
    yield TEMPLATE
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')


def fresh_pg_database(template: str | None) -> str:
    name = f"openvpp_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return name


def drop_pg_database(name: str) -> None:
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    """A migrated, empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'openvpp.db'}"
        db.upgrade(url)
        yield url
        db.get_engine(url).dispose()
    else:
        template = request.getfixturevalue("pg_template")
        name = fresh_pg_database(template)
        url = db.normalise_url(_pg_url(name))
        yield url
        db.get_engine(url).dispose()
        drop_pg_database(name)


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    return Settings(home=tmp_path, database_url=db_url, jwt_secret="test-secret-" + "x" * 32, bcrypt_rounds=4)


# ------------------------------------------------------------------ a small hand-made city

MINI_GRID = [
    ("GZ", "city", "", "Guangzhou", "广州", 500, "", 23.13, 113.26),
    ("GZ-HZ", "district", "GZ", "Haizhu", "海珠", "", "", 23.09, 113.32),
    ("GZ-TH", "district", "GZ", "Tianhe", "天河", "", "", 23.12, 113.36),
    ("GZ-HZ-S01", "substation", "GZ-HZ", "Haizhu S01", "", 220, 480000, "", ""),
    ("GZ-TH-S01", "substation", "GZ-TH", "Tianhe S01", "", 220, 480000, "", ""),
    ("GZ-HZ-S01-F01", "feeder", "GZ-HZ-S01", "F01", "", 10, 8000, "", ""),
    ("GZ-TH-S01-F01", "feeder", "GZ-TH-S01", "F01", "", 10, 8000, "", ""),
    ("GZ-HZ-S01-F01-T001", "transformer_area", "GZ-HZ-S01-F01", "T001", "", 0.4, 630, "", ""),
    ("GZ-HZ-S01-F01-T002", "transformer_area", "GZ-HZ-S01-F01", "T002", "", 0.4, 400, "", ""),
    ("GZ-TH-S01-F01-T001", "transformer_area", "GZ-TH-S01-F01", "T001", "", 0.4, 1000, "", ""),
]
MINI_OPERATORS = [
    ("OP01", "Pearl AC Aggregation", "珠江空调聚合", "central_ac_aggregator", "91440101MA5CX0001A", "https://op01.example/tss", "admitted"),
    ("OP02", "Canton Charging", "羊城充电", "charging_operator", "91440101MA5CX0002B", "", "admitted"),
    ("OP03", "Nansha Bay Power", "南沙湾区", "bay_area_entity", "", "", "applied"),
]
MINI_OWNERS = [
    ("OW1", "Tower A Property", "commercial", "OP01", 0.7),
    ("OW2", "Haizhu Residents", "residential", "OP02", 0.5),
    ("OW3", "Mall B", "commercial", "OP01", 0.6),
]
MINI_SITES = [
    ("S1", "Tower A", "GZ-TH-S01-F01-T001", "OW1", 23.12, 113.33),
    ("S2", "Community car park", "GZ-HZ-S01-F01-T001", "OW2", 23.09, 113.31),
    ("S3", "Mall B", "GZ-HZ-S01-F01-T002", "OW3", 23.10, 113.30),
]
RES_HEADER = ["resource_id", "name", "resource_type", "operator_id", "owner_id", "site_id", "ta_id",
              "capacity_kw", "capacity_kva", "profile_archetype", "profile_scale_kw", "noise_seed", "latency_s",
              "response_mode", "adjustable_up_kw", "adjustable_down_kw", "adjustable_duration_h",
              "control_protocol", "meter_id", "commissioned_on"]
MINI_RESOURCES = [
    ("R1", "Tower A chiller", "central_ac", "OP01", "OW1", "S1", "GZ-TH-S01-F01-T001", 800, 900, "ac_office", 600, 1, 120, "semi_automatic", 0, 160, 2, "mqtt", "M0001", "2021-05-01"),
    ("R2", "Tower A roof PV", "distributed_pv", "OP01", "OW1", "S1", "GZ-TH-S01-F01-T001", 200, 220, "pv_south", 200, 2, 5, "automatic", 0, 200, 4, "modbus_sunspec", "M0002", "2022-03-15"),
    ("R3", "Tower A battery", "user_storage", "OP01", "OW1", "S1", "GZ-TH-S01-F01-T001", 500, 550, "storage_tou", 500, 3, 1, "automatic", 500, 500, 2, "modbus_sunspec", "M0003", "2023-01-10"),
    ("R4", "Car park pile 1", "ev_charging", "OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001", 120, 120, "ev_public", 90, 4, 10, "automatic", 0, 120, 1, "ocpp2.0.1", "M0004", ""),
    ("R5", "Car park pile 2", "v2g_charger", "OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001", 60, 60, "ev_public", 45, 5, 10, "automatic", 60, 60, 2, "ocpp2.0.1", "M0005", ""),
    ("R6", "Mall B AC", "central_ac", "OP01", "OW3", "S3", "GZ-HZ-S01-F01-T002", 1500, 1600, "ac_office", 1100, 6, 300, "semi_automatic", 0, 300, 2, "openadr2.0b", "M0006", "2019-07-01"),
    ("R7", "Mall B pile", "ev_charging", "", "OW3", "S3", "GZ-HZ-S01-F01-T002", 60, 60, "ev_public", 40, 7, 10, "automatic", 0, 60, 1, "ocpp1.6", "M0007", ""),
]


#: test chillers forming 1 MW trading units: four of OP01 under GZ-TH-S01, three of OP02 under GZ-HZ-S01
UNIT_CHILLERS = ([("OP01", "OW1", "S1", "GZ-TH-S01-F01-T001")] * 4
                 + [("OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001")] * 3)


def chiller_rows(places=UNIT_CHILLERS, latency_s: float = 60) -> list[list]:
    """Resource rows (RES_HEADER) of 1,000 kW office chillers RC0, RC1, ... giving 400 kW down for 2 h
    (or the hours a place names), meters MC0, MC1, ...; ``places``: ``(operator, owner, site, ta[, hours])``."""
    rows = []
    for i, (op, owner, site, ta, *hours) in enumerate(places):
        rows.append([f"RC{i}", "chiller", "central_ac", op, owner, site, ta, 1000, 1000, "ac_office", 800, i,
                     latency_s, "automatic", 0, 400, hours[0] if hours else 2, "mqtt", f"MC{i}", "2024-01-01"])
    return rows


def import_rows(settings, tmp_path: Path, rows: list[list]) -> None:
    """Register resource rows in ``settings``' database through the importer, as the city admin."""
    from openvpp.services import registry
    from openvpp.store import db
    from openvpp.store.audit import Actor

    write_csv(tmp_path / "extra_resources.csv", RES_HEADER, rows)
    with db.get_engine(settings.database_url).begin() as conn:
        registry.import_resources(conn, registry.read_table(tmp_path / "extra_resources.csv", ()),
                                  Actor("c", "city_admin"))


def append_rows(city_dir: Path, rows: list[list]) -> None:
    """Add resource rows to a generated city's resources.csv (before it is loaded)."""
    with open(city_dir / "resources.csv", "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def write_mini_city(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "grid.csv", ["node_id", "level", "parent_id", "name", "name_zh", "voltage_kv", "rating_kva",
                                 "lat", "lon"], MINI_GRID)
    write_csv(out / "operators.csv", ["operator_id", "name", "name_zh", "kind", "credit_code", "tss_endpoint",
                                      "state"], MINI_OPERATORS)
    write_csv(out / "owners.csv", ["owner_id", "name", "kind", "operator_id", "revenue_share"], MINI_OWNERS)
    write_csv(out / "sites.csv", ["site_id", "name", "ta_id", "owner_id", "lat", "lon"], MINI_SITES)
    write_csv(out / "resources.csv", RES_HEADER, MINI_RESOURCES)
    archetypes = [("ac_office", "central_ac", "office"), ("pv_south", "distributed_pv", "south"),
                  ("storage_tou", "user_storage", "tou"), ("ev_public", "ev_charging", "public")]
    write_csv(out / "archetypes.csv", ["archetype_id", "resource_type", "pattern", "description", "source"],
              [(a, t, p, f"{t} {p}", "test fixture") for a, t, p in archetypes])
    ts = year_slots_utc(2025)
    n = len(ts)
    ids, tss, vals = [], [], []
    for k, (a, _t, _p) in enumerate(archetypes):
        ids += [a] * n
        tss.append(ts)
        vals.append((0.6 + 0.05 * np.sin(np.arange(n) * 2 * np.pi / 96 + k)).astype("float32"))
    pq.write_table(pa.table({
        "archetype_id": pa.array(ids),
        "ts": pa.array(np.concatenate(tss).astype("datetime64[us]"), pa.timestamp("us", "UTC")),
        "value": pa.array(np.concatenate(vals)),
    }), out / "profiles.parquet")
    (out / "city.json").write_text('{"city_id": "mini", "seed": 0}')
    return out


@pytest.fixture
def mini_city(tmp_path) -> Path:
    return write_mini_city(tmp_path / "mini_city")


@pytest.fixture
def loaded(settings, mini_city) -> Settings:
    """``settings`` whose database holds the mini city."""
    from openvpp.services import setup

    setup.load_city(settings, mini_city)
    return settings


def utcnow() -> datetime:
    return datetime.now(UTC)
