"""Evaluation reading the telemetry store (StoreMeterSource), members at the event time, and the
array, corrected and store sources agreeing — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import update

from openvpp.core.errors import Conflict, InvalidInput
from openvpp.core.timeslots import local_midnight_utc, slot_start_utc
from openvpp.kernels.baseline import BaselineSpec
from openvpp.services import access, meter_files, weather
from openvpp.services import evaluation as eva
from openvpp.sim import weather as sim_weather
from openvpp.store import db, evaluation_files, event_files, timeseries
from openvpp.store.schema import resources
from tests.test_settlement import ADMIN, AFTER, DAY, DISP, END, START, run_event, setup_city

UNIT_B = {"OP02@GZ-HZ-S01": ("OP02", 1000.0)}


def _batch(device: list[str], ts: list[datetime], p: list[float], q: list[float] | None = None) -> timeseries.RawBatch:
    n = len(device)
    nan = np.full(n, np.nan)
    return timeseries.RawBatch(
        device=np.array(device, dtype=object), ts_ms=np.array([int(t.timestamp() * 1000) for t in ts], np.int64),
        p_kw=np.array(p, float), q_kvar=np.array(q, float) if q is not None else nan, e_kwh=nan, eq_kvarh=nan,
        soc=nan, quality=np.zeros(n, np.int16), source=np.array(["test"] * n, dtype=object))


def write_unit_b(settings, history_days: int = 8, gb2_slot58_kw: float = 400.0) -> None:
    """GB1 600 kW / GB2 400 kW flat (one point per quarter hour) on the history days; on the event day a point
    every minute of the window: GB1 0 kW, GB2 0 kW except slot 58 (``gb2_slot58_kw``); reactive 50 kvar."""
    dev, ts, p, q = [], [], [], []
    first = DAY - timedelta(days=history_days)
    for d in range(history_days):
        t0 = local_midnight_utc(first + timedelta(days=d))
        for k in range(96):
            for rid, kw in (("GB1", 600.0), ("GB2", 400.0)):
                dev.append(rid)
                ts.append(t0 + timedelta(minutes=15 * k + 7))
                p.append(kw)
                q.append(50.0)
    for slot in range(START, END):
        t0 = slot_start_utc(DAY, slot)
        for m in range(15):
            for rid in ("GB1", "GB2"):
                dev.append(rid)
                ts.append(t0 + timedelta(minutes=m, seconds=30))
                p.append(gb2_slot58_kw if (rid == "GB2" and slot == 58) else 0.0)
                q.append(10.0)
    with db.get_engine(settings.database_url).begin() as conn:
        timeseries.write_points(conn, _batch(dev, ts, p, q))
        while True:
            r = timeseries.refresh_rollups(conn, None, 5000)
            if not r.minutes and not r.quarters:
                break


def test_store_source_reads_rollups_as_slot_means_and_minutes(loaded, tmp_path):
    setup_city(loaded, tmp_path)
    write_unit_b(loaded, history_days=2)
    with db.get_engine(loaded.database_url).connect() as conn:
        src = eva.StoreMeterSource(conn)
        data = src.read(["GB1", "GB2", "NOPE"], DAY - timedelta(days=2), 3, minutes=True)
        assert data.values.shape == (3, 3, 96)
        assert np.all(data.values[0, :2] == 600.0) and np.all(data.values[1, :2] == 400.0)
        assert data.values[1, 2, START:END].tolist() == [0.0, 0.0, 400.0, 0.0]
        assert np.isnan(data.values[2]).all() and np.isnan(data.values[0, 2, :START]).all()
        assert data.minutes[0, 2, START:END].tolist() == [15.0] * 4 and data.minutes[0, 0, 10] == 1.0
        q = src.read(["GB1"], DAY, 1, quantity="reactive_kvar")
        assert q.values[0, 0, START] == 10.0
        with pytest.raises(InvalidInput):
            src.read(["GB1"], DAY, 1, quantity="soc")


def test_event_evaluated_from_the_telemetry_store(loaded, tmp_path):
    setup_city(loaded, tmp_path)
    write_unit_b(loaded)
    eid = run_event(loaded, UNIT_B)
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, eva.StoreMeterSource(conn), history_days=8, now=AFTER)
        assert out["meter_source"] == "telemetry" and out["inputs"]["days_used_min"] == 5
        slots = out["units"][0]["slots"]
        assert [s["response_kw"] for s in slots] == [1000.0, 1000.0, 600.0, 1000.0]
        assert [s["credited"] for s in slots] == [250.0, 250.0, 0.0, 250.0]
        assert out["totals"]["not_measured"] == 8          # R4 and R5 in 4 slots
        # the same data as arrays gives the same numbers (and the same hash only for the same arrays)
        data = eva.StoreMeterSource(conn).read(["GB1", "GB2"], DAY - timedelta(days=8), 9)
        arr = eva.ArrayMeterSource(["GB1", "GB2"], DAY - timedelta(days=8), data.values)
        again = eva.evaluate(conn, DISP, eid, arr, history_days=8, now=AFTER)
        assert again["totals"]["credited"] == out["totals"]["credited"] == 750.0
        fixed = eva.CorrectedMeterSource(eva.StoreMeterSource(conn), DAY, {"GB2": {58: 0.0}})
        third = eva.evaluate(conn, DISP, eid, fixed, history_days=8, now=AFTER)
        assert third["totals"]["credited"] == 1000.0 and third["meter_source"] == "telemetry+corrections"
        assert len({out["telemetry_sha256"], third["telemetry_sha256"]}) == 2


def test_members_follow_transfers_at_the_event_time(loaded, tmp_path):
    """GB2 moves to OP01 after the event: the event still counts it in OP02's unit."""
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, UNIT_B)
    with db.get_engine(loaded.database_url).begin() as conn:
        access.transfer(conn, ADMIN, "GB2", "OP01", "merger", at=datetime(2025, 8, 1, tzinfo=UTC))
        ev = eva.events.get(conn, eid)
        at = slot_start_utc(DAY, START)
        assert [m["resource_id"] for m in eva.members_at(conn, ev, "OP02@GZ-HZ-S01", at)] == [
            "GB1", "GB2", "R4", "R5"]
        later = datetime(2025, 9, 1, tzinfo=UTC)
        assert "GB2" not in [m["resource_id"] for m in eva.members_at(conn, ev, "OP02@GZ-HZ-S01", later)]




def test_same_day_adjustment_is_recorded(loaded, tmp_path):
    """A bounded multiplicative adjustment from 12:00-13:00: GB1 ran 10 % high before the event."""
    from tests.test_settlement import meter_source

    setup_city(loaded, tmp_path)
    eid = run_event(loaded, UNIT_B)
    src = meter_source()
    src.data["power_kw"][list(src.pos).index("GB1"), -1, START - 8:START - 4] = 660.0
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, src, spec=BaselineSpec("gbt-workday", adjustment={"cap": 0.2}),
                           now=AFTER)
    assert out["baseline_id"] == "gbt-workday-5/2+mult-0.2"
    factors = out["inputs"]["adjustment_values"]
    assert factors["GB1"] == pytest.approx(1.1) and factors["GB2"] == 1.0
    assert out["units"][0]["slots"][0]["baseline_kw"] == pytest.approx(660 + 400 + 80 + 40)


# ---------------------------------------------------------------- the columnar path, weather, calendar, members

B_IDS = ["GB1", "GB2", "R4", "R5"]          # OP02@GZ-HZ-S01 (district GZ-HZ)


def _cooling(t: np.ndarray) -> np.ndarray:
    return np.maximum(t - 22.0, 0.0)


def weather_case(history: int = 30) -> tuple[np.ndarray, eva.ArrayMeterSource]:
    """Day temperatures (history days + the event day) and loads that follow them exactly:
    GB1 = 300 + 40 x cooling degrees, GB2 = 200 + 10 x cooling degrees, every slot; R4, R5 unmetered.
    On the event day GB1 and GB2 run at 0 kW in the window."""
    rng = np.random.default_rng(3)
    temp = rng.uniform(24.0, 34.0, history + 1)
    power = np.full((4, history + 1, 96), np.nan)
    power[0] = (300.0 + 40.0 * _cooling(temp))[:, None]
    power[1] = (200.0 + 10.0 * _cooling(temp))[:, None]
    power[:2, -1, START:END] = 0.0
    return temp, eva.ArrayMeterSource(B_IDS, DAY - timedelta(days=history), power)


def test_temperature_regression_reads_the_district_weather_and_records_it(loaded, tmp_path):
    """The stored temperatures of GZ-HZ drive the baseline: the fit is exact on loads linear in cooling
    degrees, so the unit's baseline is 500 + 50 x the event day's cooling degrees; the source, the area
    used and a SHA-256 of the temperatures are recorded, and change when the temperatures do."""
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, UNIT_B)
    temp, src = weather_case()
    first = DAY - timedelta(days=30)
    spec = BaselineSpec("temperature-regression")
    with db.get_engine(loaded.database_url).begin() as conn:
        with pytest.raises(InvalidInput) as err:             # no temperature stored yet: refused, naming the area
            eva.evaluate(conn, DISP, eid, src, spec=spec, now=AFTER)
        assert err.value.violations[0].field == "weather.GZ-HZ"
        assert weather.write(conn, "GZ-HZ", first, temp, "test station 59287") == 31 * 96
        out = eva.evaluate(conn, DISP, eid, src, spec=spec, now=AFTER)
        expect = 500.0 + 50.0 * _cooling(temp[-1])
        assert [s["baseline_kw"] for s in out["units"][0]["slots"]] == pytest.approx([expect] * (END - START))
        rec = out["inputs"]["weather"]
        assert rec["source"] == "weather_temperature" and rec["areas"] == {"GZ-HZ": "GZ-HZ"}
        assert out["baseline_id"] == "temp-reg-20/2-cooling22" and out["inputs"]["days_used_min"] == 20
        again = eva.evaluate(conn, DISP, eid, src, spec=spec, now=AFTER)
        assert again["inputs"]["weather"]["sha256"] == rec["sha256"]
        weather.write(conn, "GZ-HZ", DAY, temp[-1:] + 1.0, "test station 59287")
        warmer = eva.evaluate(conn, DISP, eid, src, spec=spec, now=AFTER)
        assert warmer["inputs"]["weather"]["sha256"] != rec["sha256"]
        assert warmer["units"][0]["slots"][0]["baseline_kw"] == pytest.approx(500.0 + 50.0 * _cooling(temp[-1] + 1))


def test_a_district_without_temperatures_takes_the_citys_and_arrays_serve_too(loaded, tmp_path):
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, UNIT_B)
    temp, src = weather_case()
    first = DAY - timedelta(days=30)
    with db.get_engine(loaded.database_url).begin() as conn:
        weather.write(conn, "GZ", first, temp, "city station")
        out = eva.evaluate(conn, DISP, eid, src, spec=BaselineSpec("temperature-regression"), now=AFTER)
        assert out["inputs"]["weather"]["areas"] == {"GZ-HZ": "GZ"}
        arrays = weather.ArrayWeatherSource(first, temp, name="sim city")
        same = eva.evaluate(conn, DISP, eid, src, spec=BaselineSpec("temperature-regression"), now=AFTER,
                            weather=arrays)
        assert same["inputs"]["weather"]["source"] == "sim city"
        assert same["totals"]["credited"] == out["totals"]["credited"]
        with pytest.raises(InvalidInput) as err:
            weather.write(conn, "GZ", first, temp + 100.0, "a faulty feed")
        assert err.value.violations[0].field == "temp_c"


def test_days_past_the_holiday_calendar_are_recorded(loaded, tmp_path):
    """An event on Tuesday 5 January 2027, beyond the packaged calendar (2018-2026): its history's 2027
    days are classified Monday-Friday (New Year's Day 2027 as a working day) and listed as such."""
    setup_city(loaded, tmp_path)
    day = date(2027, 1, 5)
    eid = run_event(loaded, UNIT_B, day=day)
    power = np.full((4, 9, 96), 100.0)
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, eva.ArrayMeterSource(B_IDS, day - timedelta(days=8), power),
                           history_days=8, now=slot_start_utc(day, END) + timedelta(hours=1))
    cal = out["inputs"]["calendar"]
    assert cal["covered"] == [2018, 2026]
    assert cal["fallback_days"] == ["2027-01-01", "2027-01-02", "2027-01-03", "2027-01-04", "2027-01-05"]
    assert out["totals"]["calendar_fallback_days"] == 5
    in_2026 = eva.default_spec(date(2026, 12, 30))
    assert in_2026.method == "gbt-workday"


def test_a_later_evaluation_pays_the_members_of_the_first(loaded, tmp_path):
    """Members are those of the event's first evaluation: after R4 is suspended (the registry no longer
    counts it in the unit), a re-evaluation still pays the same four resources, names the evaluation
    it took them from, and reproduces the hash and the numbers."""
    setup_city(loaded, tmp_path)
    write_unit_b(loaded)
    eid = run_event(loaded, UNIT_B)
    with db.get_engine(loaded.database_url).begin() as conn:
        src = eva.StoreMeterSource(conn)
        v1 = eva.evaluate(conn, DISP, eid, src, history_days=8, now=AFTER)
        assert eva.member_ids(conn, v1) == B_IDS and v1["inputs"]["members_from"] is None
        assert v1["inputs"]["member_set"]["count"] == len(B_IDS) and "members" not in v1["inputs"]
        conn.execute(update(resources).where(resources.c.resource_id == "R4").values(state="suspended"))
        ev = eva.events.get(conn, eid)
        now_members = eva.members_of(conn, ev, ["OP02@GZ-HZ-S01"], slot_start_utc(DAY, START))
        assert now_members.column("resource_id").to_pylist() == ["GB1", "GB2", "R5"]
        v2 = eva.evaluate(conn, DISP, eid, src, history_days=8, now=AFTER)
        assert v2["inputs"]["member_set"] == v1["inputs"]["member_set"] and eva.member_ids(conn, v2) == B_IDS
        assert v2["inputs"]["members_from"] == v1["evaluation_id"]
        assert v2["telemetry_sha256"] == v1["telemetry_sha256"] and v2["totals"] == v1["totals"]
        assert [r["key_id"] for r in eva.rows(conn, v2["evaluation_id"], "resource") if r["slot"] == START] == B_IDS


def test_members_are_taken_when_the_event_starts_executing(loaded, tmp_path):
    """Executing the event keeps its units' members (as dispatched) in a hashed file; the first
    evaluation pays those even after the registry moved on (GB1 suspended in between), and names where
    they came from. An event executed before that file was kept takes the registry's members at its
    first evaluation; an altered file is refused."""
    setup_city(loaded, tmp_path)
    write_unit_b(loaded)
    eid = run_event(loaded, UNIT_B)
    engine = db.get_engine(loaded.database_url)
    with engine.begin() as conn:
        rec = event_files.record(conn, eid, eva.MEMBERS_FILE)
        assert rec is not None and rec["rows"] == len(B_IDS) and len(rec["sha256"]) == 64
        kept, _ = event_files.read(conn, eid, eva.MEMBERS_FILE)
        assert kept.column("resource_id").to_pylist() == B_IDS
        assert set(kept.column("unit_id").to_pylist()) == set(UNIT_B)
        conn.execute(update(resources).where(resources.c.resource_id == "GB1").values(state="suspended"))
    with engine.connect() as conn:
        tx = conn.begin()
        out = eva.evaluate(conn, DISP, eid, eva.StoreMeterSource(conn), history_days=8, now=AFTER)
        assert out["inputs"]["members_taken"]["from"] == "execution"
        assert out["inputs"]["members_taken"]["sha256"] == rec["sha256"]
        assert eva.member_ids(conn, out) == B_IDS and out["totals"]["credited"] == 750.0
        tx.rollback()
        # an event executed before the file was kept: the registry at its first evaluation (no GB1 now)
        tx = conn.begin()
        conn.execute(event_files.event_files.delete().where(event_files.event_files.c.event_id == eid))
        out = eva.evaluate(conn, DISP, eid, eva.StoreMeterSource(conn), history_days=8, now=AFTER)
        assert out["inputs"]["members_taken"]["from"] == "registry at the first evaluation"
        assert eva.member_ids(conn, out) == ["GB2", "R4", "R5"]
        tx.rollback()
    with engine.connect() as conn:
        path = event_files.files_root(conn) / rec["path"]
    path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    with engine.begin() as conn, pytest.raises(Conflict) as err:
        eva.evaluate(conn, DISP, eid, eva.StoreMeterSource(conn), history_days=8, now=AFTER)
    assert "members file" in str(err.value) and "refused" in str(err.value)


def test_rollup_files_serve_the_evaluation_as_the_store_does(loaded, tmp_path):
    """Each day of the store's rollups exported to a file: the file source reads the same values and
    minutes (only the days and slots asked), the evaluation from it gives the store's numbers, and the
    manifest's hashes catch a changed file."""
    setup_city(loaded, tmp_path)
    write_unit_b(loaded)
    eid = run_event(loaded, UNIT_B)
    root = tmp_path / "rollups"
    first = DAY - timedelta(days=8)
    with db.get_engine(loaded.database_url).begin() as conn:
        for d in range(9):
            meter_files.export_day(conn, root, first + timedelta(days=d))
        store = eva.StoreMeterSource(conn)
        exported = meter_files.FileMeterSource(root)
        ids = ["GB2", "GB1", "NOPE"]
        for days, slots in (([0, 3, 8], slice(50, 62)), (list(range(9)), slice(0, 96))):
            a = store.read_part(ids, first, days, slots, minutes=True)
            b = exported.read_part(ids, first, days, slots, minutes=True)
            np.testing.assert_array_equal(a.values, b.values)
            np.testing.assert_array_equal(a.minutes, b.minutes)
        np.testing.assert_array_equal(store.read(ids, first, 9).values[:, [0, 3, 8], 50:62],
                                      store.read_part(ids, first, [0, 3, 8], slice(50, 62)).values)
        by_store = eva.evaluate(conn, DISP, eid, store, history_days=8, now=AFTER)
        by_file = eva.evaluate(conn, DISP, eid, exported, history_days=8, now=AFTER)
        assert by_file["totals"]["credited"] == by_store["totals"]["credited"] == 750.0
        assert by_file["units"] == by_store["units"]
        assert by_file["meter_source"] == "rollup-files:rollups"
        # what a dispute checks: the whole window read again hashes, cut to the plan, to what was recorded
        # (the file source reads slot-major and the plan says so: the hash takes the bytes in that order)
        plan, ids_read = by_file["inputs"]["read"], eva.member_ids(conn, by_file)
        assert plan["order"] == "slot-major" and ids_read == ["GB1", "GB2", "R4", "R5"]
        whole = exported.read(ids_read, first, 9)
        assert eva.fingerprint(ids_read, first, whole.values, None, read=plan) == by_file["telemetry_sha256"]
        whole.values[1, plan["days"][0], plan["slots"][0]] += 1.0
        assert eva.fingerprint(ids_read, first, whole.values, None, read=plan) != by_file["telemetry_sha256"]
    assert all(meter_files.verify(root).values())
    (root / f"{DAY.isoformat()}.arrow").write_bytes(b"not the export")
    assert meter_files.verify(root)[DAY.isoformat()] is False


def test_resource_results_are_a_file_checked_against_its_hash(loaded, tmp_path):
    """The resource × slot results are one Arrow file beside the database, recorded with its SHA-256;
    the readers give the stored rows' answers from it, and an altered file is refused."""
    setup_city(loaded, tmp_path)
    write_unit_b(loaded)
    eid = run_event(loaded, UNIT_B)
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, eva.StoreMeterSource(conn), history_days=8, now=AFTER)
        rec = evaluation_files.record(conn, out["evaluation_id"], "resources")
        assert rec["rows"] == 4 and rec["format"] == "arrow-ipc" and len(rec["sha256"]) == 64
        rows = eva.rows(conn, out["evaluation_id"], "resource")
        gb2 = {r["slot"]: r for r in rows if r["key_id"] == "GB2"}
        assert gb2[58]["metered_kw"] == 400.0 and gb2[58]["response_kw"] == 0.0 and gb2[58]["credited"] == 0.0
        # GB2's share of the unit's 1000 kW by capability: 400 of the members' 1180 kW
        assert gb2[56]["baseline_kw"] == 400.0 and gb2[56]["ratio"] == pytest.approx(400.0 / (1000 * 400 / 1180))
        r4 = [r for r in rows if r["key_id"] == "R4"]
        assert len(r4) == 4 and all(r["metered_kw"] is None and r["response_kw"] is None for r in r4)
        assert [r["key_id"] for r in eva.rows(conn, out["evaluation_id"], "resource", owner_id="OW2")] == \
            [r["key_id"] for r in rows]                  # OW2 owns all four
        assert eva.rows(conn, out["evaluation_id"], "resource", owner_id="OW1") == []
        assert sum(r["credited"] for r in rows) == pytest.approx(out["totals"]["credited"])
        assert evaluation_files.orphans(conn) == []
        path = evaluation_files.files_root(conn) / rec["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with db.get_engine(loaded.database_url).connect() as conn, pytest.raises(Conflict, match="not the one written"):
        eva.rows(conn, out["evaluation_id"], "resource")


def test_a_resource_file_of_format_1_reads_and_settles_as_format_2(loaded, tmp_path):
    """Format 2 keeps fewer quantities and derives the response, the curtailed kWh and the V2G kWh on
    reading; a file of format 1 (every quantity a fixed-size list, as evaluations before it stored
    them), holding the same values, gives the same rows and the same settlement."""
    from openvpp.services import settlement as stl
    from openvpp.store.schema_evaluation import evaluation_files as ef_table
    from tests.test_settlement import ADMIN, meter_source

    setup_city(loaded, tmp_path)
    eid = run_event(loaded, {"OP02@GZ-HZ-S01": ("OP02", 1000.0), "OP03@GZ-HZ-S01": ("OP03", 1500.0)})
    src = meter_source({"GB1": [60.0] * 4, "GB2": [40.0] * 4})
    src.data["power_kw"][list(src.pos).index("R5"), -1, START:END] = -60.0      # the V2G charger exports
    src.data["power_kw"][list(src.pos).index("GC1"), -1, END:END + 2] = 2400.0    # rebound after the window
    engine = db.get_engine(loaded.database_url)
    with engine.begin() as conn:
        out = eva.evaluate(conn, DISP, eid, src, now=AFTER)
        v2 = eva.resource_table(conn, out["evaluation_id"])
        assert v2.schema.metadata[b"format"] == b"2"
        rows2 = eva.rows(conn, out["evaluation_id"], "resource")
        assert out["totals"]["v2g_kwh"] > 0 and 0 < out["totals"]["curtailed_kwh"] < out["totals"]["credited"]
        st2 = stl.compute(conn, ADMIN, 2025)
        parties2 = [{k: v for k, v in p.items() if k != "settlement_id"} for p in stl.parties(conn, st2["settlement_id"])]
        rec = evaluation_files.record(conn, out["evaluation_id"], "resources")
        path = evaluation_files.files_root(conn) / rec["path"]
        old = v2.select(["key_id", "unit_id", "operator_id", "resource_type", "district_id", "owner_id",
                         "capability_kw", *eva.FILE_COLUMNS]).replace_schema_metadata(
            {"first_slot": v2.schema.metadata[b"first_slot"], "slots": v2.schema.metadata[b"slots"]})
        old = pa.table({k: old.column(k).combine_chunks() for k in old.column_names}).replace_schema_metadata(
            old.schema.metadata)
        sha, size = evaluation_files.write_arrow(path, old)
        conn.execute(update(ef_table).where(ef_table.c.evaluation_id == out["evaluation_id"]).values(
            sha256=sha, bytes=size))
        v1 = eva.resource_table(conn, out["evaluation_id"])
        assert b"format" not in v1.schema.metadata and v1.column("v2g_kwh").type == v2.column("v2g_kwh").type
        assert eva.rows(conn, out["evaluation_id"], "resource") == rows2
        st1 = stl.compute(conn, ADMIN, 2025)
        assert [{k: v for k, v in p.items() if k != "settlement_id"}
                for p in stl.parties(conn, st1["settlement_id"])] == parties2 and len(parties2) >= 4


def test_the_simulated_citys_weather_serves_the_regression(loaded, tmp_path):
    """sim.weather gives the temperatures the generated city's loads followed (a Guangzhou July: warm,
    with a daily cycle); stored as the city's, they serve every district. Loads linear in each slot's
    cooling degrees are fitted exactly: the unit's baseline is 500 + 50 x the event slot's cooling degrees."""
    first, temp = sim_weather.city_temperatures(2025, 1)
    july = temp[(DAY - first).days - 30:(DAY - first).days + 1]
    assert 26.0 < july.mean() < 34.0 and (july.max(axis=1) - july.min(axis=1)).min() > 2.0
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, UNIT_B)
    power = np.full((4, 31, 96), np.nan)
    power[0], power[1] = 300.0 + 40.0 * _cooling(july), 200.0 + 10.0 * _cooling(july)
    power[:2, -1, START:END] = 0.0
    src = eva.ArrayMeterSource(B_IDS, DAY - timedelta(days=30), power)
    with db.get_engine(loaded.database_url).begin() as conn:
        assert sim_weather.store_city_weather(conn, 2025, 1) == temp.size
        out = eva.evaluate(conn, DISP, eid, src, spec=BaselineSpec("temperature-regression"), now=AFTER)
        arrays = eva.evaluate(conn, DISP, eid, src, spec=BaselineSpec("temperature-regression"), now=AFTER,
                              weather=sim_weather.city_weather(2025, 1))
    expect = 500.0 + 50.0 * _cooling(july[-1, START:END])
    assert [s["baseline_kw"] for s in out["units"][0]["slots"]] == pytest.approx(expect.tolist())
    assert out["inputs"]["weather"]["areas"] == {"GZ-HZ": "GZ"}
    assert arrays["units"][0]["slots"] == out["units"][0]["slots"]
    assert arrays["inputs"]["weather"]["source"] == "sim city weather 2025 seed 1"


def test_a_written_file_hashes_to_its_bytes_whatever_the_pieces(tmp_path):
    """``write_arrow`` hashes large pieces on a helper thread while it writes the next one: the digest is
    still that of the file's bytes, in order, for small and large tables alike."""
    import hashlib

    rng = np.random.default_rng(5)
    for n in (3, 50_000, 700_000):                       # pieces below, around and above the 1 MB hop
        t = pa.table({"a": rng.random(n), "b": pa.array(rng.integers(0, 9, n).astype(str)),
                      "c": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(n * 4).astype(np.float32)), 4)})
        path = tmp_path / f"t{n}.arrow"
        sha, size = evaluation_files.write_arrow(path, t)
        data = path.read_bytes()
        assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert evaluation_files.read_checked(path, sha, size, "test").equals(t)
