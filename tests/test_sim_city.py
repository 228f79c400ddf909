"""The synthetic Guangzhou city: reproducibility, structure, column rules, profiles, docs."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from openvpp.core.errors import InvalidInput
from openvpp.core.timeslots import local_midnight_utc
from openvpp.model.columns import (
    GRID_COLUMNS,
    OPERATOR_COLUMNS,
    OWNER_COLUMNS,
    RESOURCE_COLUMNS,
    SITE_COLUMNS,
    Column,
    names,
)
from openvpp.model.enums import OperatorKind, ResourceType
from openvpp.sim import city_docs
from openvpp.sim.city import FILES, generate_city
from openvpp.sim.profiles import city_series, load_profiles, load_resource_profiles

N, SEED, YEAR = 2000, 7, 2025
DISTRICT_IDS = {"GZ-YX", "GZ-HZ", "GZ-LW", "GZ-TH", "GZ-BY", "GZ-HP", "GZ-PY", "GZ-HD", "GZ-NS", "GZ-CH", "GZ-ZC"}
SPECS = {"grid.csv": GRID_COLUMNS, "operators.csv": OPERATOR_COLUMNS, "owners.csv": OWNER_COLUMNS,
         "sites.csv": SITE_COLUMNS, "resources.csv": RESOURCE_COLUMNS}


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("city_a")
    stages = []
    summary = generate_city(out, N, SEED, YEAR, progress=lambda s, f: stages.append((s, f)))
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert summary.rows["resources.csv"] == N
    return out


@pytest.fixture(scope="module")
def profiles(city):
    return load_profiles(city)


def read(city: Path, name: str) -> pa.Table:
    """All columns as strings (empty = null), so the checks see exactly what a file reader sees."""
    header = (city / name).open(encoding="utf-8").readline().strip().replace('"', "").split(",")
    return pacsv.read_csv(city / name, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in header}, strings_can_be_null=True, quoted_strings_can_be_null=True))


def spec_violations(table: pa.Table, spec: tuple[Column, ...]) -> list[str]:
    """Every rule of the column specs (required, kind, bounds, choices, pattern, unique, max_of), from the specs."""
    bad = []
    if table.column_names != names(spec):
        return [f"columns {table.column_names} != {names(spec)}"]
    for c in spec:
        col = table.column(c.name)
        present = pc.drop_null(col)
        if c.required and col.null_count:
            bad.append(f"{c.name}: {col.null_count} empty")
        if c.kind in ("float", "int"):
            values = pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False)
            if c.kind == "int" and not np.all(values == np.round(values)):
                bad.append(f"{c.name}: not integers")
            if c.min is not None and not np.all(values > c.min if c.min_exclusive else values >= c.min):
                bad.append(f"{c.name}: below {c.min} (min {values.min()})")
            if c.max is not None and not np.all(values <= c.max):
                bad.append(f"{c.name}: above {c.max} (max {values.max()})")
            if c.max_of:
                other = pc.cast(table.column(c.max_of), pa.float64()).to_numpy(zero_copy_only=False)
                mine = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
                if not np.all(np.isnan(mine) | (mine <= other)):
                    bad.append(f"{c.name}: exceeds {c.max_of}")
        if c.choices and not pc.all(pc.is_in(present, pa.array(c.choices))).as_py():
            bad.append(f"{c.name}: outside {c.choices}: {set(present.to_pylist()) - set(c.choices)}")
        if c.pattern and len(present) and not pc.all(pc.match_substring_regex(present, c.pattern)).as_py():
            bad.append(f"{c.name}: does not match {c.pattern}")
        if c.kind == "date" and len(present):
            for v in set(present.to_pylist()):
                date.fromisoformat(v)
        if c.unique and pc.count_distinct(present).as_py() != len(present):
            bad.append(f"{c.name}: not unique")
    return bad


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_gives_byte_identical_files_and_another_seed_other_resources(city, tmp_path):
    again = tmp_path / "again"
    generate_city(again, N, SEED, YEAR)
    assert file_hashes(again) == file_hashes(city)
    assert sorted(file_hashes(city)) == sorted(FILES)
    other = tmp_path / "other"
    generate_city(other, N, SEED + 1, YEAR)
    assert file_hashes(other)["resources.csv"] != file_hashes(city)["resources.csv"]


@pytest.mark.parametrize("n", [10, 11, 37])
def test_tiny_cities_still_have_every_resource_type(tmp_path, n):
    summary = generate_city(tmp_path / "tiny", n, SEED, YEAR)
    assert {k: v["count"] >= 1 for k, v in summary.per_type.items()} == {t.value: True for t in ResourceType}
    assert sum(v["count"] for v in summary.per_type.values()) == n
    assert spec_violations(read(tmp_path / "tiny", "resources.csv"), RESOURCE_COLUMNS) == []


def test_invalid_arguments_are_refused_and_write_nothing(tmp_path):
    out = tmp_path / "nothing"
    with pytest.raises(InvalidInput) as err:
        generate_city(out, 5, -1, YEAR)
    fields = {v.field for v in err.value.violations}
    assert fields == {"n_resources", "seed"}
    assert not out.exists()


# --------------------------------------------------------------------------- structure


def test_every_file_passes_the_rules_of_its_column_specs(city):
    for name, spec in SPECS.items():
        assert spec_violations(read(city, name), spec) == [], name


def test_grid_has_the_eleven_districts_and_a_tree_of_readable_ids(city):
    grid = read(city, "grid.csv").to_pandas()
    by_level = grid.groupby("level")["node_id"].apply(set)
    assert by_level["city"] == {"GZ"}
    assert by_level["district"] == DISTRICT_IDS
    ids = set(grid.node_id)
    children = grid[grid.level != "city"]
    assert children.parent_id.isin(ids).all()
    depth = {"district": 1, "substation": 2, "feeder": 3, "transformer_area": 4}
    for level, d in depth.items():
        rows = grid[grid.level == level]
        assert rows.node_id.str.count("-").eq(d).all(), level
        assert (rows.node_id.str.rsplit("-", n=1).str[0] == rows.parent_id).all(), level
    subs = grid[grid.level == "substation"].groupby("parent_id").size()
    assert subs.between(5, 15).all() and len(subs) == 11
    assert re.fullmatch(r"GZ-[A-Z]{2}-S\d{2}-F\d{2,}-T\d{3,}", grid[grid.level == "transformer_area"].node_id.iloc[0])
    tas = grid[grid.level == "transformer_area"]
    assert len(tas) >= 300
    assert (grid.lat.astype(float).between(22.4, 23.95) & grid.lon.astype(float).between(112.9, 114.1)).all()
    public = tas[tas.name.str.contains("transformer area")]
    assert set(public.rating_kva.astype(float)) <= {200, 315, 400, 500, 630, 800, 1000, 1250, 1600}


def test_resources_sit_in_transformer_areas_of_their_sites(city):
    grid = read(city, "grid.csv").to_pandas()
    sites = read(city, "sites.csv").to_pandas().set_index("site_id")
    res = read(city, "resources.csv").to_pandas()
    tas = set(grid.node_id[grid.level == "transformer_area"])
    assert res.ta_id.isin(tas).all()
    assert sites.ta_id.isin(tas).all()
    assert res.site_id.isin(sites.index).all()
    assert (sites.ta_id.loc[res.site_id].to_numpy() == res.ta_id.to_numpy()).all()
    owners = set(read(city, "owners.csv").column("owner_id").to_pylist())
    assert res.owner_id.isin(owners).all() and sites.owner_id.isin(owners).all()


def test_resource_mix_covers_every_type_with_shared_sites(city):
    res = read(city, "resources.csv").to_pandas()
    assert set(res.resource_type) == {t.value for t in ResourceType}
    assert res.resource_id.is_unique and res.meter_id.is_unique
    cap = res.capacity_kw.astype(float)
    assert (res.adjustable_up_kw.astype(float) <= cap).all()
    assert (res.adjustable_down_kw.astype(float) <= cap).all()
    per_site = res.groupby("site_id").size()
    assert per_site.max() >= 10                       # charging stations / communities with many piles
    mixed = res.groupby("site_id").resource_type.nunique()
    assert (mixed >= 2).sum() >= 5                    # buildings with AC + PV + storage ...
    by_type = res.groupby("resource_type")
    storage = res[res.resource_type == "user_storage"]
    assert (storage.adjustable_up_kw == storage.capacity_kw).all()
    pv = res[res.resource_type == "distributed_pv"]
    assert (pv.adjustable_down_kw.astype(float) == 0).all() and (pv.adjustable_up_kw.astype(float) > 0).all()
    assert by_type.size()["ev_charging"] > by_type.size()["central_ac"] > by_type.size()["data_center"]
    assert set(res[res.resource_type == "ev_charging"].control_protocol) <= {"ocpp1.6", "ocpp2.0.1", "mqtt", "http"}
    assert (res[res.resource_type == "v2g_charger"].response_mode == "automatic").all()


def test_operators_cover_every_kind_and_resources_go_to_matching_operators(city):
    ops = read(city, "operators.csv").to_pandas()
    assert len(ops) >= 10 and ops.operator_id.is_unique
    assert set(ops.kind) == {k.value for k in OperatorKind}
    states = ops.state.value_counts()
    assert states["applied"] == 1 and states["under_review"] == 1 and states["admitted"] >= 10
    kind = dict(zip(ops.operator_id, ops.kind, strict=True))
    res = read(city, "resources.csv").to_pandas()
    assert 0.02 < res.operator_id.isna().mean() < 0.12
    allowed = {
        "central_ac": {"central_ac_aggregator", "load_aggregator", "grid_backstop"},
        "shore_power": {"bay_area_entity"},
        "base_station": {"telecom_operator"},
        "ev_charging": {"charging_operator", "v2g_operator", "grid_backstop", "load_aggregator"},
        "data_center": {"data_center_operator", "load_aggregator"},
    }
    for rtype, kinds in allowed.items():
        used = {kind[o] for o in res.operator_id[(res.resource_type == rtype) & res.operator_id.notna()]}
        assert used <= kinds, rtype
    meta = json.loads((city / "city.json").read_text())
    assert meta["n_resources"] == N and meta["seed"] == SEED and meta["year"] == YEAR
    assert sum(v["count"] for v in meta["per_type"].values()) == N
    assert meta["rows"]["sites.csv"] == read(city, "sites.csv").num_rows


# --------------------------------------------------------------------------- profiles


def _day(ts: np.ndarray, values: np.ndarray, day: date) -> np.ndarray:
    start = np.datetime64(local_midnight_utc(day).replace(tzinfo=None), "ms")
    i = int(np.searchsorted(ts, start))
    return values[i:i + 96]


def test_profiles_cover_the_local_year_in_15_minute_slots(city, profiles):
    ids, matrix, ts = profiles
    assert matrix.shape == (len(ids), 35040) and matrix.dtype == np.float32
    assert ts[0] == np.datetime64("2024-12-31T16:00", "ms")
    assert np.all(np.diff(ts) == np.timedelta64(15, "m"))
    archetypes = read(city, "archetypes.csv").to_pandas()
    assert list(archetypes.archetype_id) == ids
    per_type = archetypes.groupby("resource_type").size()
    assert set(per_type.index) == {t.value for t in ResourceType} and per_type.between(2, 4).all()
    assert np.isfinite(matrix).all() and np.abs(matrix).max() <= 1.0 + 1e-6


def test_office_profiles_follow_the_chinese_calendar(profiles):
    ids, m, ts = profiles
    office = m[ids.index("ac_office")]
    workday = _day(ts, office, date(2025, 7, 2))      # Wednesday
    sunday = _day(ts, office, date(2025, 7, 6))
    assert workday[36:72].mean() > 3 * sunday[36:72].mean()
    ev = m[ids.index("ev_workplace")]
    makeup = _day(ts, ev, date(2025, 1, 26))          # a Sunday worked to bridge the Spring Festival
    ordinary_sunday = _day(ts, ev, date(2025, 1, 19))
    national_day = _day(ts, ev, date(2025, 10, 2))    # a Thursday inside the National Day holiday
    assert makeup[32:44].mean() > 3 * ordinary_sunday[32:44].mean()
    assert national_day[32:44].mean() < 0.3 * _day(ts, ev, date(2025, 10, 15))[32:44].mean()


def test_pv_is_zero_at_midnight_and_most_negative_near_noon(profiles):
    ids, m, _ = profiles
    for pv in ("pv_south", "pv_east_west", "pv_flat"):
        days = m[ids.index(pv)].reshape(-1, 96)
        assert days.max() <= 1e-6
        assert np.all(days[:, 0] >= -1e-6) and np.all(days[:, :20] >= -1e-6)   # 00:00-05:00 local
        mean_day = days.mean(axis=0)
        assert 44 <= int(np.argmin(mean_day)) <= 56                             # 11:00-14:00 local
        assert 900 < -days.sum() * 0.25 < 1300                                  # kWh per kW and year


def test_cooling_loads_are_higher_in_july_than_january(profiles):
    ids, m, ts = profiles
    month = ts.astype("datetime64[M]")
    jan = (month == np.datetime64("2025-01")) | (month == np.datetime64("2024-12"))
    jul = month == np.datetime64("2025-07")
    for a in ("ac_office", "ac_mall", "ac_hotel", "dcool_storage", "dcool_direct"):
        row = m[ids.index(a)]
        assert row[jul].mean() > 2 * row[jan].mean(), a
    for a in ("dc_colocation", "dc_enterprise", "bs_urban", "bs_suburban"):   # cooling is only a share
        row = m[ids.index(a)]
        assert row[jul].mean() > 1.04 * row[jan].mean(), a
    assert m[ids.index("ac_office")][jul].mean() > 3 * m[ids.index("ac_office")][jan].mean()


def test_storage_charges_in_the_valley_and_discharges_in_the_peaks(profiles):
    ids, m, _ = profiles
    for a in ("storage_two_cycle", "storage_one_cycle"):
        day = m[ids.index(a)].reshape(-1, 96).mean(axis=0)
        assert day[0:32].mean() > 0 and day[0:32].min() >= 0          # 00-08 valley: charge
        assert day[64:72].mean() < -0.3                                # 16-18 peak: discharge
    assert m[ids.index("storage_two_cycle")].reshape(-1, 96)[:, 40:48].mean() < -0.5   # 10-12


def test_loader_and_kernel_materialise_the_city(city, profiles):
    ids, matrix, ts = profiles
    res = load_resource_profiles(city, ids)
    assert len(res.resource_id) == N and res.archetype_idx.max() < len(ids)
    rid, window_ts, kw = city_series(city, 96 * 180, 96 * 181, rows=slice(0, 200))
    assert kw.shape == (200, 96) and len(window_ts) == 96 and list(rid) == list(res.resource_id[:200])
    cap = read(city, "resources.csv").column("capacity_kw").to_numpy(zero_copy_only=False)[:200].astype(float)
    assert np.all(np.abs(kw) <= 1.25 * cap[:, None])


def test_docs_column_tables_are_generated_from_the_specs():
    doc = Path(__file__).resolve().parents[1] / "docs" / "city-files.md"
    assert city_docs.generated_section() in doc.read_text(encoding="utf-8"), \
        "docs/city-files.md is stale: run python -m openvpp.sim.city_docs"
