"""Pilot KPIs, V2G statement lines (Decimal, pro rata within the budget), the EV API and CLI, on both databases."""

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from typer.testing import CliRunner

from openvpp.api.app import create_app
from openvpp.api.routes import ev as ev_routes
from openvpp.cli.ev import ev_app
from openvpp.core.errors import InvalidInput
from openvpp.model.ev import Sessions
from openvpp.services import accounts, ev_pilot
from openvpp.services.ev_charging import ChargingService
from openvpp.services.scope import Scope
from openvpp.store import audit, db
from openvpp.store.schema import audit_log
from openvpp.store.schema_ev import PERIODS, ev_charge_points, ev_sessions

T0 = datetime(2025, 7, 1, 10, tzinfo=UTC)


def _session(sid, cp, charge=(0, 0, 0, 0), discharge=(0, 0, 0, 0), state="completed", token=None, battery=None):
    row = dict(session_id=sid, charge_point_id=cp, evse_id=1, transaction_id=sid, ocpp_version="2.0.1", state=state,
               started_at=T0, stopped_at=datetime(2025, 7, 2, tzinfo=UTC), v2g=cp == "R5", id_token=token,
               battery_kwh=battery)
    row.update({f"charge_{p}_kwh": float(v) for p, v in zip(PERIODS, charge, strict=True)})
    row.update({f"discharge_{p}_kwh": float(v) for p, v in zip(PERIODS, discharge, strict=True)})
    return row


@pytest.fixture
def metered(loaded):
    """R7 (Mall B, commercial), R4 and R5 (community car park, residential owner OW2 = private piles)."""
    with db.get_engine(loaded.database_url).begin() as conn:
        for cp in ("R4", "R5", "R7"):
            conn.execute(insert(ev_charge_points).values(charge_point_id=cp, ocpp_version="2.0.1", connected=False,
                                                         status={}))
        conn.execute(insert(ev_sessions), [
            _session("s1", "R7", charge=(10, 5, 0, 0)),
            _session("s2", "R4", charge=(9, 0, 1, 0), token="CAR-A", battery=60.0),
            _session("s3", "R5", charge=(20, 0, 0, 0), discharge=(0, 0, 100, 50), token="CAR-B", battery=50.0),
            _session("s4", "R5", charge=(1, 0, 0, 0), discharge=(0, 0, 7, 0), state="active"),
        ])
    return loaded


def test_pilot_kpis_per_city_operator_and_project(metered):
    with db.get_engine(metered.database_url).connect() as conn:
        r = ev_pilot.pilot_report(conn, 2025)
    c = r["city"]
    assert c["charge_kwh"] == 46.0 and c["valley_kwh"] == 40.0
    assert c["valley_share"] == round(40 / 46, 4) and c["valley_share_ok"] is True
    # private piles (residential owner): R4 and R5 -> 30 of 31 kWh in the valley
    assert c["private_valley_share"] == round(30 / 31, 4) and c["private_valley_share_ok"] is True
    assert c["v2g_chargers"] == 1 and c["v2g_discharge_kw"] == 60.0 and c["v2g_discharge_kwh"] == 157.0
    ops = {row["key"]: row for row in r["operator"]}
    assert set(ops) == {"-", "OP02"} and ops["-"]["valley_share"] == round(10 / 15, 4)
    proj = {row["key"]: row for row in r["project"]}
    assert proj["S2"]["v2g_power_ok"] is False and proj["S2"]["v2g_energy_ok"] is False
    assert r["targets"]["v2g_project_min_kw"] == 500.0
    b = r["battery"]
    assert b["vehicles"] == 2
    # CAR-B: (20 + 150) / (2 x 50) = 1.7 cycles, V2G cycles 150 / 50 = 3
    assert b["efc_max"] == pytest.approx(1.7) and b["v2g_efc_mean"] == pytest.approx(1.5)


def test_operator_scope_sees_its_own_piles_only(metered):
    with db.get_engine(metered.database_url).connect() as conn:
        r = ev_pilot.pilot_report(conn, 2025, Scope(operator_id="OP02"))
    assert r["city"]["charge_kwh"] == 31.0 and [o["key"] for o in r["operator"]] == ["OP02"]


def test_an_operator_without_sessions_or_v2g_chargers_gets_an_empty_report(metered):
    """OP01 has neither charging sessions nor V2G chargers: its city row is zeros, not an error."""
    with db.get_engine(metered.database_url).connect() as conn:
        r = ev_pilot.pilot_report(conn, 2025, Scope(operator_id="OP01"))
    assert r["sessions"] == 0 and r["operator"] == [] and r["project"] == []
    assert r["city"]["charge_kwh"] == 0 and r["city"]["v2g_chargers"] == 0


def test_v2g_statement_lines_value_and_subsidy_in_decimal(metered):
    with db.get_engine(metered.database_url).connect() as conn:
        res = ev_pilot.v2g_statement_lines(conn, 2025)
    lines = {ln["line"]: ln for ln in res["lines"]}
    # only the completed V2G session; peak 100 kWh x 0.453 x 1.7 + critical 50 kWh x 0.453 x 2.125
    assert lines["v2g_discharge_energy"]["amount_yuan"] == Decimal("125.14")
    assert lines["v2g_discharge_energy"]["energy_kwh"] == Decimal("150.0")
    assert lines["v2g_subsidy"]["amount_yuan"] == Decimal("750.00")
    assert res["totals"]["scale"] == 1 and lines["v2g_subsidy"]["ruleset"] == "guangzhou-2025.1"
    # 19,999,700 already paid: 300 yuan left of the 20,000,000 budget -> the claim is scaled to 300
    with db.get_engine(metered.database_url).connect() as conn:
        res = ev_pilot.v2g_statement_lines(conn, 2025, already_paid_yuan="19999700")
    sub = [ln for ln in res["lines"] if ln["line"] == "v2g_subsidy"][0]
    assert sub["amount_yuan"] == Decimal("300.00") and res["totals"]["scale"] == Decimal("0.4")


def test_budget_cap_scales_all_claims_pro_rata_without_exceeding_it(metered):
    with db.get_engine(metered.database_url).begin() as conn:
        conn.execute(insert(ev_sessions), [_session(f"x{i}", "R5", discharge=(0, 1, 0, 0)) for i in range(3)])
    with db.get_engine(metered.database_url).connect() as conn:
        # rate 0.01 yuan/kWh: claims 1.50 + 3 x 0.01; 0.025 yuan left -> every claim x 0.025/1.53
        res = ev_pilot.v2g_statement_lines(conn, 2025, subsidy_yuan_per_kwh="0.01", already_paid_yuan="19999999.975")
    subs = [ln["amount_yuan"] for ln in res["lines"] if ln["line"] == "v2g_subsidy"]
    assert sum(subs) <= Decimal("0.02") and res["totals"]["subsidy_yuan"] == sum(subs)
    assert all(ln["scale"] == res["totals"]["scale"] for ln in res["lines"] if ln["line"] == "v2g_subsidy")
    with pytest.raises(InvalidInput, match="subsidy_yuan_per_kwh"), \
            db.get_engine(metered.database_url).connect() as conn:
        ev_pilot.v2g_statement_lines(conn, 2025, subsidy_yuan_per_kwh="5.01")


def test_fleet_envelope_service_reads_the_rule_set(metered):
    s = Sessions(station=[-1], arrival=[0], departure=[8], energy_kwh=[7.0], max_charge_kw=[7.0], battery_kwh=[60.0],
                 soc_arrival=[0.5], soc_min=[0.3], max_discharge_kw=[7.0], v2g=[True])
    env = ev_pilot.fleet_envelope(s, np.r_[np.full(4, 7.0), np.zeros(92)][None, :])
    assert env.up_kw[4] == pytest.approx(7.0) and env.down_kw[0] > 0


@pytest.fixture
def client(metered):
    with db.get_engine(metered.database_url).begin() as conn:
        accounts.create_user(conn, audit.SYSTEM, "admin", "pw-correct-horse", "city_admin", None, None, rounds=4)
        accounts.create_user(conn, audit.SYSTEM, "op2", "pw-correct-horse", "operator_admin", "OP02", None, rounds=4)
    app = create_app(metered)
    app.include_router(ev_routes.router, prefix="/api/v1")
    with TestClient(app) as c:
        yield c


def _login(client, user):
    r = client.post("/api/v1/auth/token", data={"username": user, "password": "pw-correct-horse"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_api_pilot_statement_schedule_and_sessions(client):
    h = _login(client, "admin")
    r = client.get("/api/v1/ev/pilot?year=2025", headers=h)
    assert r.status_code == 200 and r.json()["city"]["v2g_discharge_kwh"] == 157.0
    st = client.get("/api/v1/ev/v2g/statement?year=2025", headers=h).json()
    assert st["totals"]["subsidy_yuan"] == "750.00"
    bad = client.get("/api/v1/ev/v2g/statement?year=2025&rate=6", headers=h)
    assert bad.status_code == 422 and "subsidy_yuan_per_kwh" in bad.text
    body = {"start": "2025-07-15T12:00:00+08:00", "stations": [{"capacity_kw": 10.0}],
            "sessions": [{"station": 0, "arrival": 24, "departure": 76, "energy_kwh": 20, "max_charge_kw": 7},
                         {"station": 0, "arrival": 10, "departure": 11, "energy_kwh": 50, "max_charge_kw": 7,
                          "session_id": "late"}]}
    res = client.post("/api/v1/ev/schedule", json=body, headers=h).json()
    assert res["energy_kwh"] == pytest.approx(20 + 1.75)
    assert res["flagged"][0]["session_id"] == "late" and "dwell time" in res["flagged"][0]["reasons"][0]
    assert client.post("/api/v1/ev/schedule", json={"start": "nope", "sessions": [{}]}, headers=h).status_code == 422
    op = _login(client, "op2")
    mine = client.get("/api/v1/ev/sessions", headers=op).json()["items"]
    assert {s["charge_point_id"] for s in mine} == {"R4", "R5"}
    assert len(client.get("/api/v1/ev/charge-points", headers=op).json()["items"]) == 2


def test_cli_ev_pilot_and_statement(metered, monkeypatch):
    monkeypatch.setenv("OPENVPP_DATABASE_URL", metered.database_url)
    monkeypatch.setenv("OPENVPP_HOME", str(metered.home))
    r = CliRunner().invoke(ev_app, ["pilot", "--year", "2025"])
    assert r.exit_code == 0, r.output
    assert "OP02" in r.output
    r = CliRunner().invoke(ev_app, ["statement", "--year", "2025", "--json"])
    assert r.exit_code == 0 and '"subsidy_yuan": "750.00"' in r.output
    r = CliRunner().invoke(ev_app, ["statement", "--year", "2025", "--rate", "9"])
    assert r.exit_code == 2


def test_api_id_tags_registered_by_tenant_audited_and_authorized(client, metered):
    admin, op2 = _login(client, "admin"), _login(client, "op2")
    r = client.post("/api/v1/ev/id-tags", json={"id_tag": "CARD-1", "status": "Accepted"}, headers=op2)
    assert r.status_code == 201 and r.json()["operator_id"] == "OP02"
    # an operator admin cannot register for another operator, nor take over its tag
    r = client.post("/api/v1/ev/id-tags", json={"id_tag": "CARD-2", "operator_id": "OP01"}, headers=op2)
    assert r.status_code == 422 and "operator_id" in r.text
    assert client.post("/api/v1/ev/id-tags", json={"id_tag": "CARD-9", "operator_id": "OP01"},
                       headers=admin).status_code == 201
    r = client.post("/api/v1/ev/id-tags", json={"id_tag": "CARD-9", "status": "Blocked"}, headers=op2)
    assert r.status_code == 422 and "another operator" in r.text
    r = client.post("/api/v1/ev/id-tags", json={"id_tag": "CARD-3", "status": "Maybe"}, headers=admin)
    assert r.status_code == 422 and "status" in r.text
    # the admin blocks OP02's card; the central system's authorization follows
    assert client.post("/api/v1/ev/id-tags", json={"id_tag": "CARD-1", "status": "Blocked", "operator_id": "OP02"},
                       headers=admin).status_code == 201
    assert [t["id_tag"] for t in client.get("/api/v1/ev/id-tags", headers=op2).json()["items"]] == ["CARD-1"]
    assert {t["id_tag"] for t in client.get("/api/v1/ev/id-tags", headers=admin).json()["items"]} == {"CARD-1",
                                                                                                      "CARD-9"}
    svc = ChargingService(db.get_engine(metered.database_url))
    assert svc.authorize("CARD-1") == "Blocked" and svc.authorize("CARD-9") == "Accepted"
    assert svc.authorize("NOBODY") == "Invalid"
    with db.get_engine(metered.database_url).connect() as conn:
        trail = conn.execute(select(audit_log.c.actor, audit_log.c.after).where(
            audit_log.c.entity == "ev_id_tag", audit_log.c.entity_id == "CARD-1").order_by(audit_log.c.audit_id)).all()
    assert [t[0] for t in trail] == ["op2", "admin"] and trail[-1][1]["status"] == "Blocked"
