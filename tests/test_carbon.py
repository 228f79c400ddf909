"""Carbon: only curtailed energy counts (rebound removed, load shifters excluded), per event, operator
and year, CSV — on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date
from pathlib import Path

import pytest

from openvpp.core import rules
from openvpp.services import carbon
from openvpp.services import evaluation as eva
from openvpp.services.scope import Scope
from openvpp.store import db
from tests.test_settlement import (
    AFTER,
    DISP,
    END,
    assert_file_matches_units,
    meter_source,
    run_event,
    setup_city,
)


def test_rebound_is_not_curtailed_and_factors_come_from_the_rule_set(loaded, tmp_path):
    """GC1 (OP03) curtails 1500 kW for 1 h = 1500 kWh, then draws 400 kW above its baseline for the two
    slots after the window: 200 kWh came back, 1300 kWh curtailed → 1.3 MWh × 0.4042 = 0.52546 t
    (Southern grid), × 0.5306 = 0.68978 t (national)."""
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, {"OP03@GZ-HZ-S01": ("OP03", 1500.0)})
    src = meter_source()
    src.data["power_kw"][list(src.pos).index("GC1"), -1, END:END + 2] = 2400.0
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, src, now=AFTER)
        assert out["totals"]["credited"] == pytest.approx(1500.0)
        assert out["totals"]["curtailed_kwh"] == pytest.approx(1300.0)
        assert_file_matches_units(conn, out["evaluation_id"])
        assert out["inputs"]["carbon"]["rebound_window_slots"] == 8
        assert out["inputs"]["carbon"]["from_ruleset"] == ["rebound_window_slots", "shifting_types"]
        rep = carbon.report(conn, year=2025)
        assert rep["factors"]["southern_grid_t_per_mwh"] == 0.4042 and rep["factors"]["ruleset"] == "guangzhou-2025.1"
        (row,) = rep["rows"]
        assert (row["operator_id"], row["event_id"], row["day"]) == ("OP03", eid, date(2025, 7, 15))
        assert row["southern_grid_tco2"] == pytest.approx(0.52546)
        assert row["national_tco2"] == pytest.approx(0.68978)
        assert rep["by_operator"] == [{"operator_id": "OP03", "curtailed_kwh": pytest.approx(1300.0),
                                       "southern_grid_tco2": pytest.approx(0.52546),
                                       "national_tco2": pytest.approx(0.68978)}]
        table = list(csv.reader(io.StringIO(carbon.to_csv(rep))))
        assert table[0] == list(carbon.FIELDS)
        assert table[1][4:] == ["OP03", "1500.000", "1300.000", "0.525460", "0.689780", "guangzhou-2025.1"]
        assert table[3][:2] == ["2025", "total"]
        assert carbon.report(conn, year=2024)["rows"] == []
        assert carbon.report(conn, scope=Scope(operator_id="OP01"))["rows"] == []
        mine = carbon.report(conn, scope=Scope(owner_id="OW4"))
        assert mine["rows"][0]["curtailed_kwh"] == pytest.approx(1300.0)
        assert carbon.report(conn, scope=Scope(owner_id="OW1"))["rows"] == []


def test_valley_filling_curtails_nothing(loaded, tmp_path):
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, {"OP03@GZ-HZ-S01": ("OP03", 1500.0)}, product="valley_filling")
    src = meter_source({"GC1": [3500.0] * 4})                     # 1500 kW above its 2000 kW baseline
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, src, now=AFTER)
        assert out["direction"] == "up" and out["totals"]["credited"] == pytest.approx(1500.0)
        assert_file_matches_units(conn, out["evaluation_id"])
        assert carbon.report(conn, event_id=eid)["rows"][0]["curtailed_kwh"] == 0.0


def test_each_event_uses_the_factors_and_assumptions_of_its_evaluations_rule_set(loaded, tmp_path, monkeypatch):
    """Two events on GC1 (OP03), the same meter data (1500 kWh credited, 200 kWh rebound after the window):
    one under the packaged rule set (1300 kWh curtailed x 0.4042 = 0.52546 t), one under a rule set with the
    2022 factors (0.3869 / 0.5366) and no rebound window (1500 kWh curtailed x 0.3869 = 0.58035 t,
    x 0.5366 = 0.8049 t). The year adds them, each with its own factors."""
    monkeypatch.chdir(tmp_path)          # an event names its rule set file; kept short for the column
    packaged = (Path(rules.__file__).parent / "rulesets" / f"{rules.DEFAULT_RULESET}.toml").read_text(encoding="utf-8")
    name = f"c22-{uuid.uuid4().hex[:8]}.toml"
    (tmp_path / name).write_text(packaged.replace(f'id = "{rules.DEFAULT_RULESET}"', 'id = "carbon-2022"')
                                 .replace("southern_grid_t_per_mwh = 0.4042", "southern_grid_t_per_mwh = 0.3869")
                                 .replace("national_t_per_mwh = 0.5306", "national_t_per_mwh = 0.5366")
                                 .replace("rebound_window_slots = 8", "rebound_window_slots = 0"), encoding="utf-8")
    setup_city(loaded, tmp_path)
    e25 = run_event(loaded, {"OP03@GZ-HZ-S01": ("OP03", 1500.0)})
    e22 = run_event(loaded, {"OP03@GZ-HZ-S01": ("OP03", 1500.0)}, ruleset=name)
    src = meter_source()
    src.data["power_kw"][list(src.pos).index("GC1"), -1, END:END + 2] = 2400.0
    with db.get_engine(loaded.database_url).begin() as conn:
        for eid in (e25, e22):
            eva.evaluate(conn, DISP, eid, src, now=AFTER)
        rep = carbon.report(conn, year=2025)
    rows = {r["event_id"]: r for r in rep["rows"]}
    assert (rows[e25]["ruleset"], rows[e25]["curtailed_kwh"]) == ("guangzhou-2025.1", pytest.approx(1300.0))
    assert rows[e25]["southern_grid_tco2"] == pytest.approx(0.52546)
    assert (rows[e22]["ruleset"], rows[e22]["curtailed_kwh"]) == ("carbon-2022", pytest.approx(1500.0))
    assert rows[e22]["southern_grid_tco2"] == pytest.approx(0.58035)
    assert rows[e22]["national_tco2"] == pytest.approx(0.8049)
    assert rep["by_year"][0]["southern_grid_tco2"] == pytest.approx(0.52546 + 0.58035)
    assert {k: v["southern_grid_t_per_mwh"] for k, v in rep["factors_by_ruleset"].items()} == {
        "guangzhou-2025.1": 0.4042, "carbon-2022": 0.3869}
    assert rep["factors"]["southern_grid_t_per_mwh"] in ("0.4042 | 0.3869", "0.3869 | 0.4042")
    footer = [r for r in csv.reader(io.StringIO(carbon.to_csv(rep))) if r and r[0].startswith("factors")]
    assert sorted(r[-1] for r in footer) == ["carbon-2022", "guangzhou-2025.1"]
