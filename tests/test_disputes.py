"""Disputes: evidence checked, re-evaluation as a candidate, rejection changes nothing, a dispute decided
before approval needs no ledger adjustment — on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from openvpp.core.errors import Conflict, Forbidden, InvalidInput, TransitionRefused
from openvpp.services import disputes
from openvpp.services import evaluation as eva
from openvpp.services import settlement as stl
from openvpp.services.scope import Scope
from tests.test_settlement import ADMIN, DISP, OP, evaluate, make_golden

D = Decimal


@pytest.fixture
def golden(loaded, tmp_path):
    return make_golden(loaded, tmp_path)


def _computed(g) -> tuple[str, dict]:
    evaluate(g)
    with g.begin() as conn:
        sid = stl.compute(conn, ADMIN, 2025, ruleset=g.ruleset)["settlement_id"]
        line = next(r for r in stl.lines(conn, sid) if r["operator_id"] == "OP02")
    return sid, line


def test_evidence_is_checked_and_one_dispute_per_line(golden):
    sid, line = _computed(golden)
    with golden.begin() as conn:
        for evidence, field in (({}, "evidence.meter"), ({"meter": {"GA1": [0] * 4}}, "evidence.meter.GA1"),
                                ({"meter": {"GB2": [0] * 3}}, "evidence.meter.GB2"),
                                ({"meter": {"GB2": [0, 0, float("nan"), 0]}}, "evidence.meter.GB2")):
            with pytest.raises(InvalidInput) as err:
                disputes.raise_dispute(conn, OP["OP02"], sid, line["line_id"], "meter fault", evidence)
            assert err.value.violations[0].field == field
        with pytest.raises(InvalidInput):
            disputes.raise_dispute(conn, OP["OP02"], sid, line["line_id"], " ", {"meter": {"GB2": [0] * 4}})
        d = disputes.raise_dispute(conn, OP["OP02"], sid, line["line_id"], "meter fault", {"meter": {"GB2": [0] * 4}})
        with pytest.raises(Conflict):
            disputes.raise_dispute(conn, OP["OP02"], sid, line["line_id"], "again", {"meter": {"GB2": [0] * 4}})
        with pytest.raises(TransitionRefused):
            disputes.decide(conn, ADMIN, d["dispute_id"], True, "too early")
        assert [x["dispute_id"] for x in disputes.list_(conn, sid, Scope(operator_id="OP02"))] == [d["dispute_id"]]
        assert disputes.list_(conn, sid, Scope(operator_id="OP01")) == []
        with pytest.raises(Forbidden):
            disputes.get(conn, d["dispute_id"], Scope(operator_id="OP01"))


def test_rejected_dispute_changes_nothing(golden):
    sid, line = _computed(golden)
    with golden.begin() as conn:
        stl.transition(conn, ADMIN, sid, "review")
        stl.transition(conn, ADMIN, sid, "approve")
        ledger_before = stl.ledger(conn, sid)
        d = disputes.raise_dispute(conn, OP["OP02"], sid, line["line_id"], "meter fault",
                                   {"meter": {"GB2": [0.0, 0.0, 0.0, 0.0]}})
        d = disputes.reevaluate(conn, DISP, d["dispute_id"], golden.source)
        with pytest.raises(TransitionRefused):
            disputes.reevaluate(conn, DISP, d["dispute_id"], golden.source)
        with pytest.raises(Forbidden):
            disputes.decide(conn, DISP, d["dispute_id"], False, "dispatchers do not decide")
        out = disputes.decide(conn, ADMIN, d["dispute_id"], approve=False, reason="the DSO confirms the reading")
        assert out["state"] == "rejected" and out["resettle"] is None
        assert eva.get(conn, d["evaluation_after"])["status"] == "rejected"
        assert eva.current(conn, golden.event_id)["evaluation_id"] == d["evaluation_before"]
        assert stl.ledger(conn, sid) == ledger_before and stl.get(conn, sid)["revision"] == 0


def test_dispute_decided_before_approval_is_in_the_posted_amounts(golden):
    sid, line = _computed(golden)
    with golden.begin() as conn:
        d = disputes.raise_dispute(conn, OP["OP02"], sid, line["line_id"], "meter fault",
                                   {"meter": {"GB2": [0.0, 0.0, 0.0, 0.0]}})
        disputes.reevaluate(conn, DISP, d["dispute_id"], golden.source)
        out = disputes.decide(conn, ADMIN, d["dispute_id"], approve=True, reason="confirmed")
        assert out["resettle"]["ledger_entries"] == 0 and stl.ledger(conn, sid) == []
        stl.transition(conn, ADMIN, sid, "review")
        stl.transition(conn, ADMIN, sid, "approve")
        assert stl.balance(conn, sid, "operator", "OP02") == D("2469.14")
        assert stl.balance(conn, sid, "operator", "OP01") == D("3827.16")
        # the statement line keeps its id across revisions
        assert [r["line_id"] for r in stl.lines(conn, sid, "OP02")] == [line["line_id"]]
        assert stl.lines(conn, sid, "OP02")[0]["amount_fen"] == 300000
