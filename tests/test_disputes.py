"""Disputes: evidence checked, re-evaluation as a candidate, rejection changes nothing, a dispute decided
before approval needs no ledger adjustment — on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import update

from openvpp.core.errors import Conflict, Forbidden, InvalidInput, TransitionRefused
from openvpp.services import disputes
from openvpp.services import evaluation as eva
from openvpp.services import settlement as stl
from openvpp.services.scope import Scope
from openvpp.store.schema import resources
from tests.test_settlement import ADMIN, DISP, OP, evaluate, make_golden, meter_source

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


def _approved(g) -> tuple[str, dict[str, dict]]:
    """Evaluated, computed, reviewed and approved (the ledger posted); each operator's line."""
    sid, _ = _computed(g)
    with g.begin() as conn:
        stl.transition(conn, ADMIN, sid, "review")
        stl.transition(conn, ADMIN, sid, "approve")
        return sid, {r["operator_id"]: r for r in stl.lines(conn, sid)}


def _versions(conn, g) -> list[tuple[int, str]]:
    return [(v["version"], v["status"]) for v in eva.versions(conn, g.event_id)]


def test_reevaluation_refuses_data_the_evaluation_did_not_read(golden):
    """The audit's demonstration: a dispute on one OP02 resource, re-evaluated over meter data that changed
    for other operators since the evaluation (late readings, another source, other members), would move
    their claims. It is refused, naming the rule, and writes nothing; over the data the evaluation read,
    only OP02's claim changes (the others move by the pro-rata factor of the hard budget alone)."""
    sid, line = _approved(golden)
    with golden.begin() as conn:
        d = disputes.raise_dispute(conn, OP["OP02"], sid, line["OP02"]["line_id"], "GB2 meter read 400 kW in slot 58",
                                   {"meter": {"GB2": [0.0, 0.0, 0.0, 0.0]}})
    late = meter_source({"GA1": [1500.0] * 4})          # GA1 (OP01) "delivered nothing" per a late reading
    for source, words in ((late, "changed since evaluation v1"),
                          (eva.ArrayMeterSource(list(golden.source.pos), golden.source.first_day,
                                                golden.source.data["power_kw"], name="telemetry"), "'arrays'")):
        with pytest.raises(Conflict) as err, golden.begin() as conn:
            disputes.reevaluate(conn, ADMIN, d["dispute_id"], source)
        assert words in str(err.value) and "evidence's effect and nothing else" in str(err.value)
    with golden.begin() as conn:
        # members are those the event's first evaluation stored: a resource suspended since still counts
        conn.execute(update(resources).where(resources.c.resource_id == "R1").values(state="suspended"))
        got = disputes.reevaluate(conn, ADMIN, d["dispute_id"], golden.source)
        assert "R1" in eva.member_ids(conn, eva.get(conn, got["evaluation_after"]))
        conn.rollback()
    with golden.begin() as conn:
        assert disputes.get(conn, d["dispute_id"])["state"] == "open" and _versions(conn, golden) == [(1, "current")]
        d = disputes.reevaluate(conn, ADMIN, d["dispute_id"], golden.source)
        assert d["difference"]["telemetry_sha256"] == eva.current(conn, golden.event_id)["telemetry_sha256"]
        before = eva.get(conn, d["evaluation_before"])["totals"]["by_operator"]
        after = eva.get(conn, d["evaluation_after"])["totals"]["by_operator"]
        assert after["OP01"] == before["OP01"] and after["OP03"] == before["OP03"]
        assert (before["OP02"]["credited"], after["OP02"]["credited"]) == (750.0, 1000.0)
        disputes.decide(conn, ADMIN, d["dispute_id"], approve=True, reason="meter fault confirmed")
        moved = {(e["party_id"], e["account"]) for e in stl.ledger(conn, sid) if e["ref"] == d["dispute_id"]
                 and e["party_kind"] == "operator"}
        assert moved == {("OP01", "prorata_main"), ("OP02", "claim_active"), ("OP02", "prorata_main"),
                         ("OP03", "prorata_main")}


def test_evidence_corrects_a_baseline_day(golden):
    """GB/T 5/2 on Tuesday 2025-07-15 averages 7-11 July (D-2 is a Sunday). OP02 shows GB2 really drew
    2400 kW in slot 58 of Friday 11 July (read 400): GB2's baseline there is (4 x 400 + 2400) / 5 = 800 kW,
    its response 800 - 400 = 400 kW, the unit's 1000 kW (100 %): credited 750 → 1000 kWh. A correction of
    Monday 14 July (D-1, not a baseline day) changes nothing."""
    sid, line = _approved(golden)
    with golden.begin() as conn:
        d = disputes.raise_dispute(conn, OP["OP02"], sid, line["OP02"]["line_id"], "GB2 read low on 11 July",
                                   {"meter": {"GB2": {"2025-07-11": {"58": 2400}, "2025-07-14": {58: 9999.0}}}})
        assert d["evidence"] == {"meter": {"GB2": {"2025-07-11": {"58": 2400.0}, "2025-07-14": {"58": 9999.0}}}}
        d = disputes.reevaluate(conn, ADMIN, d["dispute_id"], golden.source)
        slot58 = next(s for s in d["difference"]["slots"] if s["slot"] == 58)
        assert (slot58["response_before"], slot58["response_after"]) == (600.0, 1000.0)
        assert (d["difference"]["credited_before"], d["difference"]["credited_after"]) == (750.0, 1000.0)
        gb2 = {r["slot"]: r for r in eva.rows(conn, d["evaluation_after"], "resource", "OP02") if r["key_id"] == "GB2"}
        assert [gb2[s]["baseline_kw"] for s in range(56, 60)] == [400.0, 400.0, 800.0, 400.0]


def test_baseline_day_evidence_is_checked_field_by_field(golden):
    sid, line = _approved(golden)
    bad = {"GB2": {"2025-13-01": {"58": 1.0}, "2025-05-01": {"58": 1.0}, "2025-07-10": {"96": 1.0, "x": 1.0},
                   "2025-07-11": {"58": "1", "59": float("inf")}, "2025-07-09": {}},
           "GB1": "600"}
    with golden.begin() as conn, pytest.raises(InvalidInput) as err:
        disputes.raise_dispute(conn, OP["OP02"], sid, line["OP02"]["line_id"], "meter fault", {"meter": bad})
    fields = {v.field: v.rule for v in err.value.violations}
    assert set(fields) == {"evidence.meter.GB2.2025-13-01", "evidence.meter.GB2.2025-05-01",
                           "evidence.meter.GB2.2025-07-10.96", "evidence.meter.GB2.2025-07-10.x",
                           "evidence.meter.GB2.2025-07-11.58", "evidence.meter.GB2.2025-07-11.59",
                           "evidence.meter.GB2.2025-07-09", "evidence.meter.GB1"}
    assert "2025-06-15 to 2025-07-15" in fields["evidence.meter.GB2.2025-05-01"]
    with golden.begin() as conn:
        assert disputes.list_(conn, sid) == []


def test_a_second_dispute_keeps_the_first_ones_correction(golden):
    """OP02 (GB2 slot 58 → 0 kW) and OP01 (GA1 slot 58 read 600, really 100 kW: the unit responds 1400 + 600 =
    2000 kW, 100 %, +500 kWh) dispute the same event. Both are re-evaluated against v1; once OP02's is
    approved, OP01's candidate lacks it and cannot be approved; raised again, it is re-evaluated over OP02's
    correction, and the event ends with both: OP01 2050, OP02 1000, OP03 1500 kWh."""
    sid, line = _approved(golden)
    with golden.begin() as conn:
        a = disputes.raise_dispute(conn, OP["OP02"], sid, line["OP02"]["line_id"], "GB2 slot 58",
                                   {"meter": {"GB2": [0.0] * 4}})
        b = disputes.raise_dispute(conn, OP["OP01"], sid, line["OP01"]["line_id"], "GA1 slot 58",
                                   {"meter": {"GA1": {"2025-07-15": {"58": 100.0}}}})
        disputes.reevaluate(conn, ADMIN, a["dispute_id"], golden.source)
        disputes.reevaluate(conn, ADMIN, b["dispute_id"], golden.source)
        disputes.decide(conn, ADMIN, a["dispute_id"], approve=True, reason="confirmed")
        with pytest.raises(Conflict, match="lacks those corrections"):
            disputes.decide(conn, ADMIN, b["dispute_id"], approve=True, reason="confirmed")
        disputes.decide(conn, ADMIN, b["dispute_id"], approve=False, reason="stale: raise it again")
        b = disputes.raise_dispute(conn, OP["OP01"], sid, line["OP01"]["line_id"], "GA1 slot 58",
                                   {"meter": {"GA1": {"2025-07-15": {"58": 100.0}}}})
        b = disputes.reevaluate(conn, ADMIN, b["dispute_id"], golden.source)
        assert b["evaluation_before"] == eva.current(conn, golden.event_id)["evaluation_id"]
        assert (b["difference"]["credited_before"], b["difference"]["credited_after"]) == (1550.0, 2050.0)
        disputes.decide(conn, ADMIN, b["dispute_id"], approve=True, reason="confirmed")
        by_op = eva.current(conn, golden.event_id)["totals"]["by_operator"]
        assert {op: v["credited"] for op, v in by_op.items()} == {"OP01": 2050.0, "OP02": 1000.0, "OP03": 1500.0}
        assert stl.lines(conn, sid, "OP02")[0]["amount_fen"] == 300000
        assert stl.lines(conn, sid, "OP01")[0]["amount_fen"] == 615000
