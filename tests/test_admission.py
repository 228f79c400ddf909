"""Operator admission and exit, qualification checks, resource access, transfers and contracts."""

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from openvpp.adapters.tss import probe
from openvpp.api.app import create_app
from openvpp.core.errors import Conflict, Forbidden, InvalidInput, TransitionRefused
from openvpp.services import access, admission, registry
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema import audit_log, resource_links, resources
from tests._server import serve
from tests.conftest import RES_HEADER, write_csv

ADMIN = Actor("center", "city_admin")
OP10_ADMIN = Actor("op10", "operator_admin", operator_id="OP10")


@pytest.fixture
def tss(loaded):
    """A real operator technical support system: this app, served on a loopback port."""
    with serve(create_app(loaded)) as base:
        yield base


def _begin(settings):
    return db.get_engine(settings.database_url).begin()


def _apply(conn, endpoint, **extra):
    return admission.apply(conn, ADMIN, {"operator_id": "OP10", "name": "Baiyun Flex", "kind": "load_aggregator",
                                         "credit_code": "91440111TEST0010", "tss_endpoint": endpoint, **extra})


def _give_op10_a_trading_unit(settings, tmp_path, kw_each=600.0, n=2):
    rows = []
    for i in range(n):
        rows.append([f"RX{i}", "chiller", "central_ac", "OP10", "OW1", "S1", "GZ-TH-S01-F01-T001", 2000, 2000,
                     "ac_office", 1500, i, 30, "automatic", 0, kw_each, 2, "mqtt", f"MX{i}", "2024-01-01"])
    write_csv(tmp_path / "op10.csv", RES_HEADER, rows)
    with _begin(settings) as conn:
        registry.import_resources(conn, registry.read_table(tmp_path / "op10.csv", ()), ADMIN)


def test_admission_runs_checks_and_gates_on_them(loaded, tss, tmp_path):
    with _begin(loaded) as conn:
        op = _apply(conn, tss)
        assert op["state"] == "applied"
    with _begin(loaded) as conn, pytest.raises(Forbidden):
        admission.transition(conn, OP10_ADMIN, "OP10", "start_review", probe=probe)
    with _begin(loaded) as conn:
        out = admission.transition(conn, ADMIN, "OP10", "start_review", probe=probe)
    checks = {c["check"]: c for c in out["checks"]}
    assert out["state"] == "under_review"
    assert checks["tss_registered"]["passed"] and checks["tss_connectivity"]["passed"]
    assert checks["tss_connectivity"]["detail"]["rtt_ms"] > 0
    assert not checks["trading_unit"]["passed"]          # no resources yet
    with _begin(loaded) as conn, pytest.raises(TransitionRefused, match="trading_unit"):
        admission.transition(conn, ADMIN, "OP10", "admit", reason="complete file", probe=probe)
    _give_op10_a_trading_unit(loaded, tmp_path)           # 2 x 600 kW for 2 h under GZ-TH-S01
    with _begin(loaded) as conn:
        out = admission.transition(conn, ADMIN, "OP10", "admit", reason="complete file", probe=probe)
    assert out["state"] == "admitted"
    unit = next(c for c in out["checks"] if c["check"] == "trading_unit")["detail"]["units"][0]
    assert (unit["clearing_node"], unit["declared_kw_min_duration"], unit["qualifies"]) == ("GZ-TH-S01", 1200.0, True)
    minute = next(c for c in out["checks"] if c["check"] == "minute_level")
    assert minute["passed"] is False  # declared, not verified: no reserve subsidy yet
    with db.get_engine(loaded.database_url).connect() as conn:
        assert [c["check"] for c in admission.latest_checks(conn, "OP10")] == [
            "tss_registered", "tss_connectivity", "trading_unit", "minute_level"]


def test_unreachable_tss_fails_connectivity(loaded):
    with _begin(loaded) as conn:
        _apply(conn, "http://127.0.0.1:9")  # discard port: nothing answers
        out = admission.transition(conn, ADMIN, "OP10", "start_review", probe=probe)
    conn_check = next(c for c in out["checks"] if c["check"] == "tss_connectivity")
    assert conn_check["passed"] is False and "Error" in conn_check["detail"]["detail"]


def test_refusals_name_state_and_rule_and_write_nothing(loaded):
    with _begin(loaded) as conn:
        _apply(conn, "")
    with _begin(loaded) as conn, pytest.raises(Conflict, match="second admission"):
        _apply(conn, "")
    with _begin(loaded) as conn, pytest.raises(Conflict, match="credit code"):
        admission.apply(conn, ADMIN, {"operator_id": "OP11", "name": "x", "kind": "load_aggregator",
                                      "credit_code": "91440111TEST0010"})
    with _begin(loaded) as conn, pytest.raises(TransitionRefused) as err:
        admission.transition(conn, ADMIN, "OP10", "suspend", reason="late reports")
    assert err.value.state == "applied" and "needs state admitted" in str(err.value)
    with _begin(loaded) as conn, pytest.raises(InvalidInput, match="reason"):
        admission.transition(conn, ADMIN, "OP01", "suspend", reason="  ")
    with _begin(loaded) as conn, pytest.raises(InvalidInput, match="kind"):
        admission.apply(conn, ADMIN, {"operator_id": "OP12", "name": "x", "kind": "pirate"})
    with db.get_engine(loaded.database_url).connect() as conn:
        assert admission.get(conn, "OP01")["state"] == "admitted"
        actions = [r[0] for r in conn.execute(select(audit_log.c.action))]
    assert actions.count("operator.apply") == 1 and "operator.suspend" not in actions


def test_suspend_reinstate_and_exit_with_handover_keeps_history(loaded):
    t_before = datetime.now(UTC)
    with _begin(loaded) as conn:
        admission.transition(conn, ADMIN, "OP01", "suspend", reason="missed two events")
        admission.transition(conn, ADMIN, "OP01", "reinstate", reason="corrected")
        out = admission.transition(conn, ADMIN, "OP01", "exit", reason="business closed", handover_to="OP02")
    assert out["state"] == "exited" and out["resources_released"] == 4
    with db.get_engine(loaded.database_url).connect() as conn:
        assert conn.execute(select(resources.c.operator_id).where(resources.c.resource_id == "R1")).scalar() == "OP02"
        assert access.operator_at(conn, "R1", t_before) == "OP01"          # the past stays with OP01
        assert access.operator_at(conn, "R1", datetime.now(UTC) + timedelta(seconds=1)) == "OP02"
        assert conn.execute(select(resource_links.c.operator_id).where(
            resource_links.c.resource_id == "R1")).scalar() == "OP01"
    with _begin(loaded) as conn, pytest.raises(TransitionRefused, match="exited"):
        admission.transition(conn, ADMIN, "OP01", "reinstate", reason="oops")


def test_resource_approve_transfer_retire(loaded, tmp_path):
    with _begin(loaded) as conn:
        write_csv(tmp_path / "new.csv", RES_HEADER, [
            ["R30", "pile", "ev_charging", "OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001", 60, 60, "ev_public", 40, 1, 10,
             "automatic", 0, 60, 1, "ocpp1.6", "M0030", ""]])
        registry.import_resources(conn, registry.read_table(tmp_path / "new.csv", ()), ADMIN, state="registered")
        assert access.transition(conn, ADMIN, ["R30"], "approve")[0]["state"] == "active"
    with _begin(loaded) as conn, pytest.raises(TransitionRefused, match="'approve' needs state registered"):
        access.transition(conn, ADMIN, ["R30"], "approve")
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with _begin(loaded) as conn:
        access.transfer(conn, ADMIN, "R30", "OP01", reason="owner changed aggregator", at=t)
        assert access.operator_at(conn, "R30", t - timedelta(days=1)) == "OP02"
        assert access.operator_at(conn, "R30", t + timedelta(days=1)) == "OP01"
    with _begin(loaded) as conn, pytest.raises(InvalidInput, match="must be admitted"):
        access.transfer(conn, ADMIN, "R30", "OP03", reason="x")
    with _begin(loaded) as conn, pytest.raises(Forbidden):
        access.transition(conn, Actor("op2", "operator_admin", operator_id="OP02"), ["R30"], "retire", reason="x")
    with _begin(loaded) as conn:
        access.transition(conn, ADMIN, ["R30"], "retire", reason="decommissioned")
    # the retired meter id may serve a new resource; history keeps the old one
    with _begin(loaded) as conn:
        write_csv(tmp_path / "again.csv", RES_HEADER, [
            ["R31", "pile", "ev_charging", "OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001", 60, 60, "ev_public", 40, 1, 10,
             "automatic", 0, 60, 1, "ocpp1.6", "M0030", ""]])
        assert registry.import_resources(conn, registry.read_table(tmp_path / "again.csv", ()), ADMIN) == 1


def test_contracts_fixed_and_tiered(loaded):
    with _begin(loaded) as conn:
        c = access.register_contract(conn, ADMIN, "OW1", "OP01", "tiered", date(2025, 1, 1), date(2026, 1, 1),
                                     tiers=[{"up_to_yuan": 10000, "owner_share": 0.7},
                                            {"up_to_yuan": None, "owner_share": 0.5}])
        with pytest.raises(Conflict):
            access.register_contract(conn, ADMIN, "OW1", "OP01", "fixed", date(2025, 6, 1), owner_share=0.6)
        with pytest.raises(InvalidInput, match="tiers must rise"):
            access.register_contract(conn, ADMIN, "OW3", "OP01", "tiered", date(2025, 1, 1),
                                     tiers=[{"up_to_yuan": 500, "owner_share": 0.5},
                                            {"up_to_yuan": 100, "owner_share": 0.5}])
        found = access.contract_for(conn, "OW1", "OP01", date(2025, 7, 1))
        assert found["contract_id"] == c["contract_id"]
        assert access.owner_share_of(found, 15000.0) == pytest.approx(10000 * 0.7 + 5000 * 0.5)
        default = access.contract_for(conn, "OW1", "OP01", date(2026, 7, 1))   # after validity: owner default
        assert (default["scheme"], default["owner_share"]) == ("fixed", 0.7)
        assert access.owner_share_of(default, 100.0) == pytest.approx(70.0)
