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
        admission.transition(conn, OP10_ADMIN, "OP10", "start_review", reason="file received", probe=probe)
    with _begin(loaded) as conn, pytest.raises(InvalidInput, match="reason: is required to start_review"):
        admission.transition(conn, ADMIN, "OP10", "start_review", probe=probe)
    with _begin(loaded) as conn:
        out = admission.transition(conn, ADMIN, "OP10", "start_review", reason="file received", probe=probe)
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
        out = admission.transition(conn, ADMIN, "OP10", "start_review", reason="file received", probe=probe)
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
        with pytest.raises(InvalidInput, match="reason: is required to approve a resource"):
            access.transition(conn, ADMIN, ["R30"], "approve")
        assert access.transition(conn, ADMIN, ["R30"], "approve", "site visit done")[0]["state"] == "active"
    with _begin(loaded) as conn, pytest.raises(TransitionRefused, match="'approve' needs state registered"):
        access.transition(conn, ADMIN, ["R30"], "approve", "again")
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


def test_exit_without_handover_releases_resources_and_keeps_history(loaded):
    t_before = datetime.now(UTC)
    with _begin(loaded) as conn:
        out = admission.transition(conn, ADMIN, "OP02", "exit", reason="licence returned")
    assert out["state"] == "exited" and out["resources_released"] == 2          # R4, R5
    with db.get_engine(loaded.database_url).connect() as conn:
        rows = dict(conn.execute(select(resources.c.resource_id, resources.c.operator_id).where(
            resources.c.resource_id.in_(("R4", "R5")))).all())
        assert rows == {"R4": None, "R5": None}
        assert access.operator_at(conn, "R4", t_before) == "OP02"             # the past stays with OP02
        assert access.operator_at(conn, "R4", datetime.now(UTC) + timedelta(seconds=1)) is None
        links = conn.execute(select(resource_links.c.operator_id, resource_links.c.reason).where(
            resource_links.c.resource_id == "R4")).all()
        assert [tuple(x) for x in links] == [("OP02", "licence returned")]
        release = conn.execute(select(audit_log.c.after).where(
            audit_log.c.action == "operator.release_resources")).scalar_one()
    assert release == {"count": 2, "handover_to": None}
    # a released resource is still live (its meter held) and can be transferred to an admitted operator
    with _begin(loaded) as conn:
        assert access.transfer(conn, ADMIN, "R4", "OP01", reason="new aggregator")["operator_id"] == "OP01"


def test_resource_reject_frees_the_meter_and_needs_a_reason(loaded, tmp_path):
    row = ["R40", "pile", "ev_charging", "OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001", 60, 60, "ev_public", 40, 1, 10,
           "automatic", 0, 60, 1, "ocpp1.6", "M0040", ""]
    write_csv(tmp_path / "r40.csv", RES_HEADER, [row])
    with _begin(loaded) as conn:
        registry.import_resources(conn, registry.read_table(tmp_path / "r40.csv", ()), ADMIN, state="registered")
    with _begin(loaded) as conn, pytest.raises(InvalidInput, match="reason: is required to reject a resource"):
        access.transition(conn, ADMIN, ["R40"], "reject", " ")
    with _begin(loaded) as conn, pytest.raises(Forbidden, match="reject"):
        access.transition(conn, Actor("op2", "operator_admin", operator_id="OP02"), ["R40"], "reject", "no")
    with _begin(loaded) as conn:
        assert access.transition(conn, ADMIN, ["R40"], "reject", "meter not certified") == [
            {"resource_id": "R40", "state": "rejected"}]
    with _begin(loaded) as conn, pytest.raises(TransitionRefused, match="'approve' needs state registered"):
        access.transition(conn, ADMIN, ["R40"], "approve", "changed my mind")
    with db.get_engine(loaded.database_url).connect() as conn:
        entry = conn.execute(select(audit_log.c.reason, audit_log.c.after).where(
            audit_log.c.action == "resource.reject", audit_log.c.entity_id == "R40")).one()
    assert tuple(entry) == ("meter not certified", {"state": "rejected"})
    # the rejected resource no longer holds meter M0040
    write_csv(tmp_path / "r41.csv", RES_HEADER, [["R41"] + row[1:]])
    with _begin(loaded) as conn:
        assert registry.import_resources(conn, registry.read_table(tmp_path / "r41.csv", ()), ADMIN) == 1


def test_operator_reject_rejects_pending_and_releases_active_resources(loaded, tmp_path):
    with _begin(loaded) as conn:
        _apply(conn, "")
    rows = [["RX0", "chiller", "central_ac", "OP10", "OW1", "S1", "GZ-TH-S01-F01-T001", 900, 900, "ac_office", 600,
             1, 30, "automatic", 0, 300, 2, "mqtt", "MX0", ""],
            ["RX1", "chiller", "central_ac", "OP10", "OW1", "S1", "GZ-TH-S01-F01-T001", 900, 900, "ac_office", 600,
             2, 30, "automatic", 0, 300, 2, "mqtt", "MX1", ""]]
    write_csv(tmp_path / "a.csv", RES_HEADER, rows[:1])
    write_csv(tmp_path / "b.csv", RES_HEADER, rows[1:])
    with _begin(loaded) as conn:
        registry.import_resources(conn, registry.read_table(tmp_path / "a.csv", ()), ADMIN, state="registered")
        registry.import_resources(conn, registry.read_table(tmp_path / "b.csv", ()), ADMIN)      # active
    with _begin(loaded) as conn, pytest.raises(InvalidInput, match="reason"):
        admission.transition(conn, ADMIN, "OP10", "reject")
    with _begin(loaded) as conn:
        out = admission.transition(conn, ADMIN, "OP10", "reject", reason="credit code mismatch")
    assert (out["state"], out["resources_rejected"], out["resources_released"]) == ("rejected", 1, 1)
    with db.get_engine(loaded.database_url).connect() as conn:
        got = {r[0]: tuple(r[1:]) for r in conn.execute(select(
            resources.c.resource_id, resources.c.state, resources.c.operator_id).where(
            resources.c.resource_id.in_(("RX0", "RX1"))))}
        assert got == {"RX0": ("rejected", "OP10"), "RX1": ("active", None)}
        assert conn.execute(select(resource_links.c.operator_id).where(
            resource_links.c.resource_id == "RX1")).scalar_one() == "OP10"
        reasons = {r[0]: r[1] for r in conn.execute(select(audit_log.c.action, audit_log.c.reason).where(
            audit_log.c.action.in_(("operator.reject", "resource.reject"))))}
    assert reasons == {"operator.reject": "credit code mismatch", "resource.reject": "credit code mismatch"}
    with _begin(loaded) as conn, pytest.raises(TransitionRefused, match="'start_review' needs state applied"):
        admission.transition(conn, ADMIN, "OP10", "start_review", reason="again")
    # the same legal entity may apply again under a new id once rejected; the pending meter is free
    with _begin(loaded) as conn:
        admission.apply(conn, ADMIN, {"operator_id": "OP11", "name": "Baiyun Flex", "kind": "load_aggregator",
                                      "credit_code": "91440111TEST0010"})
        write_csv(tmp_path / "c.csv", RES_HEADER, [["RX2"] + rows[0][1:3] + ["OP11"] + rows[0][4:]])
        assert registry.import_resources(conn, registry.read_table(tmp_path / "c.csv", ()), ADMIN,
                                         state="registered") == 1


def test_operator_admin_applies_under_its_own_id_only(loaded):
    with _begin(loaded) as conn, pytest.raises(Forbidden, match="own operator id OP10"):
        admission.apply(conn, OP10_ADMIN, {"operator_id": "OP99", "name": "Someone Else", "kind": "load_aggregator"})
    with _begin(loaded) as conn:
        assert admission.apply(conn, OP10_ADMIN, {"operator_id": "OP10", "name": "Baiyun Flex",
                                                  "kind": "load_aggregator"})["state"] == "applied"
    with db.get_engine(loaded.database_url).connect() as conn:
        assert conn.execute(select(audit_log.c.entity_id).where(
            audit_log.c.action == "operator.apply")).scalars().all() == ["OP10"]
