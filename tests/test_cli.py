"""The `openvpp` command, run as a user runs it (a subprocess with its own environment)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import RES_HEADER, write_csv

EXE = [sys.executable, "-m", "openvpp.cli.main"]


def run(args, home: Path, db_url: str | None = None, check=True):
    env = {**os.environ, "OPENVPP_HOME": str(home), "OPENVPP_BCRYPT_ROUNDS": "4"}
    if db_url:
        env["OPENVPP_DATABASE_URL"] = db_url
    p = subprocess.run(EXE + args, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_help_lists_every_command_with_an_example(tmp_path):
    out = run(["--help"], tmp_path).stdout
    for cmd in ("demo", "serve", "db", "sim", "city", "resources", "report", "users"):
        assert cmd in out
    assert "openvpp demo --headless --json" in out
    for sub in (["resources", "import", "--help"], ["sim", "city", "--help"], ["city", "load", "--help"]):
        assert "Example:" in run(sub, tmp_path).stdout


def test_serve_refuses_several_workers_without_a_shared_bus(tmp_path):
    p = run(["serve", "--workers", "2"], tmp_path, check=False)
    assert p.returncode == 2 and "workers" in p.stderr and "OPENVPP_BUS_URL=nats://" in p.stderr
    assert not (tmp_path / "openvpp.db").exists()   # refused before anything is written


def test_demo_headless_json_is_json_alone_on_stdout(tmp_path):
    p = run(["demo", "--headless", "--json", "--resources", "300", "--seed", "3"], tmp_path)
    summary = json.loads(p.stdout)              # the whole of stdout parses as one JSON document
    assert summary["resources"] == 300
    assert summary["targets"]["city"]["connected_mw"] > 0
    assert {t["year"] for t in summary["targets"]["targets"]} == {2025, 2026, 2027}
    assert len(summary["targets"]["by_district"]) == 11
    assert set(summary["logins"]) >= {"city_admin", "dispatcher", "operator_admin", "owner", "auditor"}
    assert {r["key"] for r in summary["by_type"]} >= {"central_ac", "ev_charging", "distributed_pv"}
    day = summary["day"]                          # the simulated event day ran through the services
    peak = day["peak_shaving"]
    assert peak["units_declared"] >= 1 and max(peak["cleared_kw"]) > 0
    assert len(peak["replaced"]) == 1 and peak["device_instructions"] > 0
    assert peak["evaluation"]["credited_kwh"] > 0
    assert day["settlement"]["state"] == "approved"


def test_city_load_summary_and_failed_import_on_postgres(tmp_path, mini_city, db_url):
    run(["city", "load", str(mini_city)], tmp_path, db_url)
    rows = json.loads(run(["resources", "summary", "--by", "district", "--json"], tmp_path, db_url).stdout)["rows"]
    assert {r["key"]: r["resources"] for r in rows} == {"GZ-HZ": 4, "GZ-TH": 3}
    bad = tmp_path / "bad.csv"
    write_csv(bad, RES_HEADER, [["R9", "x", "central_ac", "OP01", "OW1", "S1", "GZ-TH-S01-F01-T001", 100, 100,
                                 "ac_office", 50, 1, 60, "manual", 0, 500, 1, "mqtt", "M9", ""]])
    p = run(["resources", "import", str(bad)], tmp_path, db_url, check=False)
    assert p.returncode == 2
    assert "line 2: adjustable_down_kw: must not exceed capacity_kw" in p.stderr
    rows = json.loads(run(["resources", "summary", "--by", "type", "--json"], tmp_path, db_url).stdout)["rows"]
    assert sum(r["resources"] for r in rows) == 7      # nothing written
    p = run(["city", "load", str(mini_city)], tmp_path, db_url, check=False)
    assert p.returncode == 2 and "already holds a city" in p.stderr


def test_center_commands_operators_transfer_export_verify(tmp_path, mini_city, db_url):
    run(["city", "load", str(mini_city)], tmp_path, db_url)
    ops = json.loads(run(["operators", "list", "--json", "--state", "admitted"], tmp_path, db_url).stdout)
    assert [o["operator_id"] for o in ops] == ["OP01", "OP02"]
    p = run(["operators", "transition", "OP03", "admit", "--reason", "x"], tmp_path, db_url, check=False)
    assert p.returncode == 2 and "'admit' needs state under_review" in p.stderr
    run(["resources", "transfer", "R7", "--to", "OP02", "--reason", "signed"], tmp_path, db_url)
    run(["resources", "export", str(tmp_path / "hz.csv"), "--district", "GZ-HZ"], tmp_path, db_url)
    lines = (tmp_path / "hz.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith('"resource_id","name","resource_type"')
    units = json.loads(run(["operators", "units", "OP01", "--json"], tmp_path, db_url).stdout)
    assert {u["clearing_node"] for u in units} == {"GZ-HZ-S01", "GZ-TH-S01"}
    out = json.loads(run(["verify", "schedule", "resource", "R1", "--start", "2025-07-15T14:00:00+08:00"],
                         tmp_path, db_url).stdout)
    assert out["resources"] == {"R1": 160.0}
    rep = json.loads(run(["verify", "report", "--json"], tmp_path, db_url).stdout)
    assert {r["operator_id"] for r in rep} == {"OP01", "OP02"}


def test_pools_commands(tmp_path, mini_city, db_url):
    run(["city", "load", str(mini_city)], tmp_path, db_url)
    run(["pools", "defaults"], tmp_path, db_url)
    run(["pools", "create", "local_congestion", "--rules", '{"node_id": "GZ-HZ-S01-F01-T001"}'], tmp_path, db_url)
    rows = json.loads(run(["pools", "list", "--evaluate", "--json", "--scenario", "local_congestion"],
                          tmp_path, db_url).stdout)
    assert [(r["count"], r["down_kw"]) for r in rows] == [(2, 180.0)]
    p = run(["pools", "create", "reserve", "--rules", "{bad"], tmp_path, db_url, check=False)
    assert p.returncode == 2 and "not valid JSON" in p.stderr
