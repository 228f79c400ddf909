"""Evaluation and yearly settlement from an event set up through services.events — the golden case,
on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from openvpp.core import rules
from openvpp.core.errors import Conflict, Forbidden, TransitionRefused
from openvpp.core.timeslots import slot_start_utc
from openvpp.kernels.baseline import BaselineSpec
from openvpp.services import access, disputes, events, registry
from openvpp.services import carbon as carbon_svc
from openvpp.services import evaluation as eva
from openvpp.services import settlement as stl
from openvpp.services.scope import Scope
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema import operators, owners, sites
from openvpp.store.schema_events import awards
from openvpp.store.schema_settlement import evaluation_rows, ledger_entries
from tests.conftest import RES_HEADER, write_csv

ADMIN = Actor("admin", "city_admin")
DISP = Actor("disp", "dispatcher")
OP = {o: Actor(o.lower(), "operator_admin", operator_id=o) for o in ("OP01", "OP02", "OP03")}
DAY = date(2025, 7, 15)          # a Tuesday
START, END = 56, 60              # 14:00-15:00 local, 4 slots
HISTORY = 30
D = Decimal

# baseline kW (flat on every day) and metered kW in the 4 window slots of the event day
GOLDEN_METER = {
    "GA1": (1500.0, [300.0, 200.0, 600.0, 500.0]),     # response 1200 1300 900 1000
    "GA2": (1500.0, [700.0, 200.0, 900.0, 700.0]),     # response  800 1300 600  800
    "GB1": (600.0, [0.0, 0.0, 0.0, 0.0]),              # response  600  600 600  600
    "GB2": (400.0, [0.0, 0.0, 400.0, 0.0]),            # response  400  400   0  400 (meter wrong in slot 58)
    "GC1": (2000.0, [500.0, 500.0, 500.0, 500.0]),     # response 1500 each slot
}
# the mini city's own resources sit in the same trading units: flat, no response
OTHERS = {"R1": 600.0, "R2": 120.0, "R3": 50.0, "R4": 80.0, "R5": 40.0, "R6": 900.0, "R7": 30.0}
CLEARED = {"OP01@GZ-TH-S01": ("OP01", 2000.0), "OP02@GZ-HZ-S01": ("OP02", 1000.0),
           "OP03@GZ-HZ-S01": ("OP03", 1500.0)}


@dataclass
class Golden:
    settings: object
    event_id: str
    source: eva.MeterSource
    ruleset: str

    def begin(self):
        return db.get_engine(self.settings.database_url).begin()


def meter_source(overrides: dict[str, list[float]] | None = None) -> eva.ArrayMeterSource:
    """Flat history for every resource; the golden window on the event day (``overrides`` replace it)."""
    ids = list(GOLDEN_METER) + list(OTHERS)
    n_days = HISTORY + 1
    power = np.zeros((len(ids), n_days, 96))
    for i, rid in enumerate(ids):
        base = GOLDEN_METER[rid][0] if rid in GOLDEN_METER else OTHERS[rid]
        power[i] = base
        if rid in GOLDEN_METER:
            power[i, -1, START:END] = (overrides or {}).get(rid, GOLDEN_METER[rid][1])
    return eva.ArrayMeterSource(ids, DAY - timedelta(days=HISTORY), power)


def golden_ruleset(tmp_path: Path, budget: str = "10000", extra: str = "") -> str:
    """The packaged rule set with a 10,000 yuan yearly budget (so three small operators overrun it)."""
    base = (Path(rules.__file__).parent / "rulesets" / f"{rules.DEFAULT_RULESET}.toml").read_text(encoding="utf-8")
    body = base.replace(f'id = "{rules.DEFAULT_RULESET}"', 'id = "golden-test"').replace(
        'yearly_budget_yuan = "10000000"', f'yearly_budget_yuan = "{budget}"')
    if extra:
        body = body.replace("valid_band_high = 1.2", "valid_band_high = 1.2\n" + extra)
    path = tmp_path / f"golden-{budget}-{abs(hash(extra))}.toml"
    path.write_text(body, encoding="utf-8")
    return str(path)


def setup_city(settings, tmp_path: Path) -> None:
    """Owners, sites and resources of the golden case on top of the mini city; OP03 admitted."""
    with db.get_engine(settings.database_url).begin() as conn:
        conn.execute(update(operators).where(operators.c.operator_id == "OP03").values(state="admitted"))
        conn.execute(owners.insert().values(owner_id="OW4", name="Nansha Cold Store", kind="industrial",
                                            operator_id="OP03", revenue_share=0.4))
        conn.execute(sites.insert(), [
            {"site_id": "S4", "name": "Cold store", "ta_id": "GZ-HZ-S01-F01-T002", "owner_id": "OW4"},
            {"site_id": "S5", "name": "Mall B annex", "ta_id": "GZ-TH-S01-F01-T001", "owner_id": "OW3"}])
        rows = [
            ["GA1", "Tower A chiller 2", "central_ac", "OP01", "OW1", "S1", "GZ-TH-S01-F01-T001", 2000, 2000,
             "ac_office", 1500, 11, 60, "automatic", 0, 1500, 2, "mqtt", "MGA1", "2024-01-01"],
            ["GA2", "Annex chiller", "central_ac", "OP01", "OW3", "S5", "GZ-TH-S01-F01-T001", 2000, 2000,
             "ac_office", 1500, 12, 60, "automatic", 0, 1500, 2, "mqtt", "MGA2", "2024-01-01"],
            ["GB1", "Car park chiller", "central_ac", "OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001", 800, 800,
             "ac_office", 600, 13, 60, "automatic", 0, 600, 2, "mqtt", "MGB1", "2024-01-01"],
            ["GB2", "Car park fans", "central_ac", "OP02", "OW2", "S2", "GZ-HZ-S01-F01-T001", 500, 500,
             "ac_office", 400, 14, 60, "automatic", 0, 400, 2, "mqtt", "MGB2", "2024-01-01"],
            ["GC1", "Cold store compressors", "central_ac", "OP03", "OW4", "S4", "GZ-HZ-S01-F01-T002", 2500, 2500,
             "ac_office", 2000, 15, 60, "automatic", 2000, 2000, 2, "mqtt", "MGC1", "2024-01-01"],
        ]
        write_csv(tmp_path / "golden.csv", RES_HEADER, rows)
        registry.import_resources(conn, registry.read_table(tmp_path / "golden.csv", ()), ADMIN)
        access.register_contract(conn, ADMIN, "OW3", "OP01", "tiered", valid_from=date(2025, 1, 1),
                                 tiers=[{"up_to_yuan": 1000, "owner_share": 0.6},
                                        {"up_to_yuan": None, "owner_share": 0.5}])


def run_event(settings, cleared: dict = CLEARED, price: float = 3.0, product: str = "peak_shaving",
              day: date = DAY, ruleset: str = rules.DEFAULT_RULESET) -> str:
    """create → publish → open → declare → (awards written directly: the clearing kernel is not there
    yet) → clear → execute; returns the event id."""
    with db.get_engine(settings.database_url).begin() as conn:
        ev = events.create(conn, DISP, {"product": product, "day": day.isoformat(), "start_slot": START,
                                        "end_slot": END, "targets_kw": sum(q for _, q in cleared.values()),
                                        "scope_node_id": "GZ", "pricing": "uniform"}, ruleset=ruleset)
        eid = ev["event_id"]
        events.transition(conn, DISP, eid, "publish")
        events.transition(conn, DISP, eid, "open")
        before_deadline = slot_start_utc(day, START) - timedelta(hours=3)   # the deadline is 2 h before
        if product != "reserve":
            for unit, (op, kw) in cleared.items():
                events.declare(conn, OP[op], eid, unit, [kw] * (END - START), price, now=before_deadline)
        conn.execute(awards.insert(), [{"event_id": eid, "unit_id": unit, "slot": s, "operator_id": op,
                                        "cleared_kw": kw, "price_yuan_per_kwh": price}
                                       for unit, (op, kw) in cleared.items() for s in range(START, END)])
        events._set_state(conn, DISP, events.get(conn, eid), "clear", None,
                          result={"cleared_kw": [sum(q for _, q in cleared.values())] * (END - START)})
        events.transition(conn, DISP, eid, "execute", now=slot_start_utc(day, START) - timedelta(minutes=30))
    return eid


def make_golden(settings, tmp_path: Path) -> Golden:
    setup_city(settings, tmp_path)
    return Golden(settings, run_event(settings), meter_source(), golden_ruleset(tmp_path))


@pytest.fixture
def golden(loaded, tmp_path) -> Golden:
    return make_golden(loaded, tmp_path)


AFTER = slot_start_utc(DAY, END) + timedelta(hours=1)


def evaluate(g: Golden, **kw) -> dict:
    with g.begin() as conn:
        return eva.evaluate(conn, DISP, g.event_id, g.source, now=AFTER, **kw)


def assert_file_matches_units(conn, evaluation_id: str) -> None:
    """The resource file, its kept and derived quantities alike (format 2 derives the response, the
    curtailed kWh and the chargers' V2G kWh), summed per unit in the file's order as the evaluation
    summed its arrays in memory, equals the unit rows it stored bit for bit: the derivation gives
    the very values the evaluation computed."""
    from openvpp.kernels import evaluation as kev

    t = eva.resource_table(conn, evaluation_id)
    first = int(t.schema.metadata[b"first_slot"])
    units = eva.rows(conn, evaluation_id, "unit")
    names = sorted({r["key_id"] for r in units})
    codes = np.array([names.index(u) for u in t.column("unit_id").cast("string").to_pylist()], dtype=np.int64)
    for k in ("response_kw", "curtailed_kwh", "v2g_kwh", "credited", "baseline_kw", "metered_kw"):
        got = kev.group_slots(codes, len(names), eva._per_resource(t, k))
        want = np.zeros_like(got)
        for r in units:
            want[names.index(r["key_id"]), r["slot"] - first] = r[k] if r[k] is not None else np.nan
        np.testing.assert_array_equal(got, want, err_msg=k)
    # the resources' cleared kW (kept, or derived from the units' as shared by capability) add up to the unit's
    cleared = np.zeros((len(names), int(t.schema.metadata[b"slots"])))
    for r in units:
        cleared[names.index(r["key_id"]), r["slot"] - first] = r["cleared_kw"]
    np.testing.assert_allclose(kev.group_slots(codes, len(names), eva._per_resource(t, "cleared_kw")), cleared,
                               rtol=1e-12)


def amounts(conn, sid: str, kind: str, party: str) -> dict:
    rows = stl.parties(conn, sid, kind, party)
    out: dict = {}
    for r in rows:
        for k, v in r["amounts"].items():
            if isinstance(v, int):
                out[k] = out.get(k, 0) + v
    return {k: stl.from_fen(v) for k, v in out.items()}


def balances(conn, sid: str) -> dict:
    return {op: stl.balance(conn, sid, "operator", op) for op in ("OP01", "OP02", "OP03")}


# ---------------------------------------------------------------- evaluation


def test_evaluation_per_unit_resource_and_slot_with_its_inputs(golden):
    out = evaluate(golden)
    assert out["status"] == "current" and out["version"] == 1 and out["baseline_id"] == "gbt-workday-5/2"
    assert out["ruleset"] == "guangzhou-2025.1" and out["meter_source"] == "arrays"
    assert len(out["telemetry_sha256"]) == 64 and out["inputs"]["band"] == {"low": 0.8, "high": 1.2}
    units = {u["unit_id"]: u for u in out["units"]}
    a = units["OP01@GZ-TH-S01"]["slots"]
    assert [s["response_kw"] for s in a] == [2000.0, 2600.0, 1500.0, 1800.0]
    assert [s["baseline_kw"] for s in a] == [3000.0 + 600 + 120 + 50] * 4      # GA1 + GA2 + R1 + R2 + R3
    assert [s["ratio"] for s in a] == [1.0, 1.3, 0.75, 0.9]
    assert [s["credited"] for s in a] == [500.0, 600.0, 0.0, 450.0]            # kWh: 2000, 2400 (cap), 0, 1800
    assert [s["credited"] for s in units["OP02@GZ-HZ-S01"]["slots"]] == [250.0, 250.0, 0.0, 250.0]
    assert out["totals"]["credited"] == pytest.approx(1550 + 750 + 1500)
    assert out["totals"]["by_operator"]["OP03"] == {"credited": 1500.0, "cleared_kwh": 1500.0}
    with golden.begin() as conn:
        res = {r["key_id"]: r for r in eva.rows(conn, out["evaluation_id"], "resource") if r["slot"] == 57}
        assert res["GA1"]["credited"] == pytest.approx(300.0) and res["GA2"]["credited"] == pytest.approx(300.0)
        assert res["R1"]["credited"] == 0 and res["R1"]["response_kw"] == 0
        assert events.get(conn, golden.event_id)["state"] == "evaluating"
        # an operator sees its own units only; an owner its own resources only
        mine = eva.summary(conn, out["evaluation_id"], operator_id="OP02")
        assert [u["unit_id"] for u in mine["units"]] == ["OP02@GZ-HZ-S01"] and "members" not in mine["inputs"]
        theirs = eva.summary(conn, out["evaluation_id"], owner_id="OW3")
        assert {r["key_id"] for r in theirs["resources"]} == {"GA2"} and theirs["units"] == []


def test_evaluation_is_reproducible_and_versioned(golden):
    first = evaluate(golden)
    second = evaluate(golden, reason="re-run")
    assert second["version"] == 2 and second["telemetry_sha256"] == first["telemetry_sha256"]
    assert second["totals"] == first["totals"]
    with golden.begin() as conn:
        assert [v["status"] for v in eva.versions(conn, golden.event_id)] == ["superseded", "current"]
        changed = eva.evaluate(conn, DISP, golden.event_id, meter_source({"GB2": [0.0, 0.0, 0.0, 0.0]}),
                               spec=BaselineSpec("high-x-of-y", {"x": 3, "y": 5}), now=AFTER)
    assert changed["telemetry_sha256"] != first["telemetry_sha256"]
    assert changed["baseline_id"] == "high-3-of-5/2" and changed["baseline"]["params"]["x"] == 3
    assert changed["totals"]["credited"] == pytest.approx(4050.0)


def test_evaluation_is_refused_before_the_window_ends_and_to_operators(golden):
    with pytest.raises(TransitionRefused), golden.begin() as conn:
        eva.evaluate(conn, DISP, golden.event_id, golden.source, now=slot_start_utc(DAY, START))
    with pytest.raises(Forbidden), golden.begin() as conn:
        eva.evaluate(conn, OP["OP01"], golden.event_id, golden.source, now=AFTER)


# ---------------------------------------------------------------- the golden case


def test_golden_three_operators_budget_overrun_and_one_dispute(golden):
    """Every yuan of a small case, by hand.

    Event: peak shaving 2025-07-15 14:00-15:00 (4 slots of 0.25 h), uniform price 3.0 yuan/kWh
    (below the 3.5 cap, so the rate is 3.0). Baselines are flat (GB/T 5/2 of flat days = the flat
    value). Band 80-120 % per unit and slot. Budget 10,000 yuan (test rule set).

    Unit OP01@GZ-TH-S01, cleared 2000 kW: responses 2000, 2600, 1500, 1800 kW
      → ratio 100 %, 130 % (cap 2400), 75 % (0), 90 % → credited 2000+2400+0+1800 = 6200 kW
      → 1550 kWh → 4650.00 yuan. Shared by positive response: GA1 1200+1200+0+1000 = 3400 kW = 850 kWh
      (2550 yuan, owner OW1, default share 0.7); GA2 800+1200+0+800 = 2800 kW = 700 kWh (2100 yuan,
      owner OW3, tiers 60 % to 1000 yuan, 50 % above).
    Unit OP02@GZ-HZ-S01, cleared 1000 kW: responses 1000, 1000, 600 (60 %: 0), 1000 → 3000 kW
      → 750 kWh → 2250.00 yuan (owner OW2, share 0.5).
    Unit OP03@GZ-HZ-S01, cleared 1500 kW: 1500 each slot → 1500 kWh → 4500.00 yuan (owner OW4, 0.4).

    Claims 4650 + 2250 + 4500 = 11,400 > 10,000: factor 10000/11400.
      OP01 4650 × f = 4078.947368.. → 4078.95   pro rata -571.05
      OP02 2250 × f = 1973.684210.. → 1973.68   pro rata -276.32
      OP03 4500 × f = 3947.368421.. → 3947.37   pro rata -552.63      total 10,000.00
    Owners (revenue = own claims × f, share by contract, rounded half-up):
      OW1 2550 f = 2236.842105 → 2236.84; × 0.7 = 1565.789473 → 1565.79
      OW3 2100 f = 1842.105263 → 1842.11; 1000 × 0.6 + 842.105263 × 0.5 = 1021.052631 → 1021.05
      OP01 retains 4078.95 - 1565.79 - 1021.05 = 1492.11
      OW2 2250 f = 1973.684210 → × 0.5 = 986.842105 → 986.84; OP02 retains 986.84
      OW4 4500 f = 3947.368421 → × 0.4 = 1578.947368 → 1578.95; OP03 retains 2368.42
    Approve posts claims and pro rata; pay posts -4078.95, -1973.68, -3947.37: balances 0.

    Dispute: OP02 shows GB2's meter was wrong in slot 58 (400 kW read, 0 real). Re-evaluated, slot 58
    responds 1000 kW (100 %): OP02 credited 1000 kWh → 3000.00 yuan. Claims 12,150: f = 10000/12150.
      OP01 4650 f = 3827.160493 → 3827.16 (adjustment -251.79)
      OP02 3000 f = 2469.135802 → 2469.14 (adjustment +495.46 = claim +750.00, pro rata -254.54)
      OP03 4500 f = 3703.703703 → 3703.70 (adjustment -243.67)            total 10,000.00
      OW1 2550 f = 2098.765432 × 0.7 = 1469.135802 → 1469.14 (-96.65)
      OW3 2100 f = 1728.395061 → 600 + 728.395061 × 0.5 = 964.197530 → 964.20 (-56.85)
      OW2 3000 f = 2469.135802 × 0.5 = 1234.567901 → 1234.57 (+247.73)
      OW4 4500 f = 3703.703703 × 0.4 = 1481.481481 → 1481.48 (-97.47)
    The ledger keeps every earlier row; balances after the dispute: OP01 -251.79 (to recover),
    OP02 +495.46 (to pay), OP03 -243.67; paying them brings every balance back to 0.
    Carbon (all chillers, no rebound): 4050 kWh × 0.4042 = 1.637010 t (Southern grid), × 0.5306 = 2.148930 t.
    """
    g = golden
    evaluate(g)
    with g.begin() as conn:
        st = stl.compute(conn, ADMIN, 2025, ruleset=g.ruleset)
        sid = st["settlement_id"]
        assert st["state"] == "computed" and st["ruleset"] == "golden-test"
        assert st["summary"]["main"]["claims"] == "11400.00" and st["summary"]["main"]["paid"] == "10000.00"
        assert D(st["summary"]["main"]["factor"]) == D(10000) / D(11400)
        got = {(r["operator_id"], r["kind"]): (r["quantity"], r["rate_yuan"], stl.from_fen(r["amount_fen"]))
               for r in stl.lines(conn, sid)}
        assert got == {("OP01", "active"): (1550.0, "3.0", D("4650.00")),
                       ("OP02", "active"): (750.0, "3.0", D("2250.00")),
                       ("OP03", "active"): (1500.0, "3.0", D("4500.00"))}
        for op, payable, prorata, owner_shares, retained in (
                ("OP01", "4078.95", "-571.05", "2586.84", "1492.11"), ("OP02", "1973.68", "-276.32", "986.84", "986.84"),
                ("OP03", "3947.37", "-552.63", "1578.95", "2368.42")):
            a = amounts(conn, sid, "operator", op)
            assert (a["payable"], a["prorata_main"], a["owner_shares"], a["retained"], a["penalty"]) == (
                D(payable), D(prorata), D(owner_shares), D(retained), D(0)), op
        for owner, revenue, share in (("OW1", "2236.84", "1565.79"), ("OW3", "1842.11", "1021.05"),
                                      ("OW2", "1973.68", "986.84"), ("OW4", "3947.37", "1578.95")):
            assert (amounts(conn, sid, "owner", owner)["revenue"], amounts(conn, sid, "owner", owner)["owner_share"]
                    ) == (D(revenue), D(share)), owner
        assert stl.ledger(conn, sid) == []                      # nothing is posted before approval
        with pytest.raises(TransitionRefused):
            stl.transition(conn, ADMIN, sid, "approve")         # reviewed first
        stl.transition(conn, ADMIN, sid, "review")
        stl.transition(conn, ADMIN, sid, "approve")
        assert events.get(conn, g.event_id)["state"] == "settled"
        assert balances(conn, sid) == {"OP01": D("4078.95"), "OP02": D("1973.68"), "OP03": D("3947.37")}
        assert stl.balance(conn, sid, "owner", "OW3") == D("1021.05")
        with pytest.raises(Conflict):
            stl.compute(conn, ADMIN, 2025, ruleset=g.ruleset)   # approved: corrections go through disputes
        stl.transition(conn, ADMIN, sid, "pay")
        assert balances(conn, sid) == {"OP01": D(0), "OP02": D(0), "OP03": D(0)}
        paid = [stl.from_fen(e["amount_fen"]) for e in stl.ledger(conn, sid) if e["account"] == "payment"]
        assert paid == [D("-4078.95"), D("-1973.68"), D("-3947.37")]
        n_before = len(stl.ledger(conn, sid))
        line_b = next(r for r in stl.lines(conn, sid) if r["operator_id"] == "OP02")

    with g.begin() as conn:
        with pytest.raises(Forbidden):
            disputes.raise_dispute(conn, OP["OP01"], sid, line_b["line_id"], "not yours", {"meter": {"GB2": [0] * 4}})
        d = disputes.raise_dispute(conn, OP["OP02"], sid, line_b["line_id"], "GB2 meter read 400 kW in slot 58",
                                   {"meter": {"GB2": [0.0, 0.0, 0.0, 0.0]}})
        assert d["state"] == "open"
        d = disputes.reevaluate(conn, ADMIN, d["dispute_id"], g.source)
        diff = d["difference"]
        assert [s["credited_before"] for s in diff["slots"]] == [250.0, 250.0, 0.0, 250.0]
        assert [s["credited_after"] for s in diff["slots"]] == [250.0] * 4
        shown = {(p["party_id"], p["item"]): (p["before"], p["after"]) for p in diff["parties"]}
        assert shown[("OP02", "net")] == ("1973.68", "2469.14") and shown[("OP01", "net")] == ("4078.95", "3827.16")
        assert shown[("OW3", "owner_share")] == ("1021.05", "964.20")
        assert eva.current(conn, g.event_id)["evaluation_id"] == d["evaluation_before"]   # not yet replaced
        assert len(stl.ledger(conn, sid)) == n_before
        out = disputes.decide(conn, ADMIN, d["dispute_id"], approve=True, reason="meter fault confirmed by the DSO")
        assert out["state"] == "approved" and out["resettle"]["revision"] == 1
        assert eva.current(conn, g.event_id)["evaluation_id"] == d["evaluation_after"]
        adj = {(e["party_id"], e["account"]): stl.from_fen(e["amount_fen"])
               for e in stl.ledger(conn, sid) if e["ref"] == d["dispute_id"]}
        assert adj == {("OP01", "prorata_main"): D("-251.79"), ("OP02", "claim_active"): D("750.00"),
                       ("OP02", "prorata_main"): D("-254.54"), ("OP03", "prorata_main"): D("-243.67"),
                       ("OW1", "owner_share"): D("-96.65"), ("OW3", "owner_share"): D("-56.85"),
                       ("OW2", "owner_share"): D("247.73"), ("OW4", "owner_share"): D("-97.47")}
        assert balances(conn, sid) == {"OP01": D("-251.79"), "OP02": D("495.46"), "OP03": D("-243.67")}
        for owner, share in (("OW1", "1469.14"), ("OW3", "964.20"), ("OW2", "1234.57"), ("OW4", "1481.48")):
            assert amounts(conn, sid, "owner", owner)["owner_share"] == D(share)
            assert stl.balance(conn, sid, "owner", owner) == D(share)
        assert sum(amounts(conn, sid, "operator", op)["payable"] for op in OP) == D("10000.00")
        stl.pay_balances(conn, ADMIN, sid)
        assert balances(conn, sid) == {"OP01": D(0), "OP02": D(0), "OP03": D(0)}
        stmt = stl.statement_operator(conn, sid, "OP02", Scope(operator_id="OP02"))
        assert stmt["amounts"]["payable"] == "2469.14" and stmt["lines"][0]["amount"] == "3000.00"
        rep = carbon_svc.report(conn, year=2025)
        assert rep["by_year"][0]["curtailed_kwh"] == pytest.approx(4050.0)
        assert round(rep["by_year"][0]["southern_grid_tco2"], 6) == 1.63701
        assert round(rep["by_year"][0]["national_tco2"], 6) == 2.14893


def test_ledger_is_append_only_in_the_database(golden):
    evaluate(golden)
    with golden.begin() as conn:
        sid = stl.compute(conn, ADMIN, 2025, ruleset=golden.ruleset)["settlement_id"]
        stl.transition(conn, ADMIN, sid, "review")
        stl.transition(conn, ADMIN, sid, "approve")
    for stmt in (update(ledger_entries).values(amount_fen=0), ledger_entries.delete()):
        with pytest.raises(Exception, match="append-only"), golden.begin() as conn:
            conn.execute(stmt)
    with golden.begin() as conn:
        assert len(stl.ledger(conn, sid)) == 10


def test_recompute_supersedes_until_approved_and_statements_render(golden):
    evaluate(golden)
    with golden.begin() as conn:
        first = stl.compute(conn, ADMIN, 2025, ruleset=golden.ruleset)
        stl.transition(conn, ADMIN, first["settlement_id"], "review")
        second = stl.compute(conn, ADMIN, 2025, ruleset=golden.ruleset)
        assert stl.get(conn, first["settlement_id"])["state"] == "superseded"
        assert stl.of_year(conn, 2025)["settlement_id"] == second["settlement_id"]
        sid = second["settlement_id"]
        with pytest.raises(Forbidden):
            stl.compute(conn, OP["OP01"], 2025)
        with pytest.raises(Forbidden):
            stl.statement_operator(conn, sid, "OP01", Scope(operator_id="OP02"))
        op = stl.statement_operator(conn, sid, "OP01")
        csv_text, page = stl.to_csv(op), stl.to_html(op)
        assert "4650.00" in csv_text and "payable,4078.95" in csv_text
        assert "<table>" in page and "4078.95" in page and "@media print" in page
        own = stl.statement_owner(conn, sid, "OW3", Scope(owner_id="OW3"))
        assert own["total_share"] == "1021.05" and "tiered" in stl.to_csv(own)
        with pytest.raises(Forbidden):
            stl.statement_owner(conn, sid, "OW3", Scope(owner_id="OW1"))


def test_penalty_option_and_full_budget(golden, tmp_path):
    """With penalties on (ratio 1): OP01 slot 58 responded 1500 of 2000 kW (floor 1600 kW) → shortfall
    100 kW × 0.25 h = 25 kWh × 3.0 yuan = 75.00 yuan; OP02 slot 58: (800 - 600) × 0.25 = 50 kWh → 150.00.
    With the real 10,000,000 yuan budget nothing is scaled."""
    evaluate(golden)
    path = golden_ruleset(tmp_path, budget="10000000", extra='penalty = "shortfall"\npenalty_ratio = "1"')
    with golden.begin() as conn:
        sid = stl.compute(conn, ADMIN, 2025, ruleset=path)["settlement_id"]
        pen = {r["operator_id"]: stl.from_fen(r["amount_fen"]) for r in stl.lines(conn, sid) if r["kind"] == "penalty"}
        assert pen == {"OP01": D("-75.00"), "OP02": D("-150.00")}
        a = amounts(conn, sid, "operator", "OP01")
        assert (a["payable"], a["penalty"], a["net"]) == (D("4650.00"), D("-75.00"), D("4575.00"))
        # penalties stay with the operator: OW1 gets 0.7 x 2550 of the unscaled revenue
        assert amounts(conn, sid, "owner", "OW1")["owner_share"] == D("1785.00")
        assert a["retained"] == D("4575.00") - D("1785.00") - amounts(conn, sid, "owner", "OW3")["owner_share"]


def test_reserve_pays_availability_only_to_minute_level_operators(loaded, tmp_path):
    """Reserve 2000 kW for OP01 and 1000 kW for OP02 over 1 h at 0.01 yuan/kW·h. OP01's resources reported
    every minute: 2000 kW x 1 h = 2000 kW·h; OP02's unit reported 12 of 15 minutes (80 %): 800 kW·h ≥ 80 %.
    Only OP01 passed the minute-level check: OP01 2000 x 0.01 = 20.00 yuan; OP02's line pays 0."""
    setup_city(loaded, tmp_path)
    cleared = {"OP01@GZ-TH-S01": ("OP01", 2000.0), "OP02@GZ-HZ-S01": ("OP02", 1000.0)}
    eid = run_event(loaded, cleared, price=0.01, product="reserve")
    src = meter_source()
    minutes = np.full_like(src.data["power_kw"], 15.0)
    for rid in ("GB1", "GB2", "R4", "R5"):
        minutes[list(src.pos).index(rid), -1, START:END] = 12.0
    src = eva.ArrayMeterSource(list(src.pos), src.first_day, src.data["power_kw"], minutes=minutes)
    with db.get_engine(loaded.database_url).begin() as conn:
        from openvpp.store.schema import operator_checks
        conn.execute(operator_checks.insert().values(operator_id="OP01", check="minute_level", passed=True,
                                                     detail={}, checked_at=AFTER, checked_by="test"))
        out = eva.evaluate(conn, DISP, eid, src, now=AFTER)
        assert out["quantity_unit"] == "kW·h"
        assert_file_matches_units(conn, out["evaluation_id"])
        assert out["totals"]["by_operator"]["OP01"]["credited"] == pytest.approx(2000.0)
        assert out["totals"]["by_operator"]["OP02"]["credited"] == pytest.approx(800.0)
        sid = stl.compute(conn, ADMIN, 2025)["settlement_id"]
        got = {r["operator_id"]: (stl.from_fen(r["amount_fen"]), r["note"]) for r in stl.lines(conn, sid)}
        assert got["OP01"] == (D("20.00"), None)
        assert got["OP02"][0] == D("0.00") and "not eligible" in got["OP02"][1]


def test_v2g_discharge_is_paid_under_its_own_budget(loaded, tmp_path):
    """R5 (V2G charger, OP02) had a 40 kW charging baseline and discharged 60 kW in the window: response
    100 kW per slot, of which 60 kW exported. Unit OP02 cleared 1000 kW; GB1+GB2 respond 900 kW: 1000 kW, 100 %.
    V2G: 60 kW x 1 h = 60 kWh x 5 yuan = 300.00 yuan (V2G budget); active: (1000 - 60) kWh x 3.0 = 2820.00."""
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, {"OP02@GZ-HZ-S01": ("OP02", 1000.0)})
    src = meter_source({"GB1": [60.0] * 4, "GB2": [40.0] * 4})     # GB1 540 + GB2 360 = 900 kW
    src.data["power_kw"][list(src.pos).index("R5"), -1, START:END] = -60.0
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, src, now=AFTER)
        assert out["totals"]["v2g_kwh"] == pytest.approx(60.0)
        assert_file_matches_units(conn, out["evaluation_id"])
        sid = stl.compute(conn, ADMIN, 2025)["settlement_id"]
        got = {r["kind"]: (r["quantity"], stl.from_fen(r["amount_fen"])) for r in stl.lines(conn, sid)}
        assert got == {"active": (pytest.approx(940.0), D("2820.00")), "v2g": (pytest.approx(60.0), D("300.00"))}
        a = amounts(conn, sid, "operator", "OP02")
        assert (a["claim_v2g"], a["payable"]) == (D("300.00"), D("3120.00"))
        # R5 is a load shifter: its energy earns no carbon credit
        rep = carbon_svc.report(conn, event_id=eid)
        assert rep["rows"][0]["curtailed_kwh"] == pytest.approx(900.0)


def test_reactive_event_is_evaluated_in_kvarh_and_paid_at_the_rule_sets_rate(loaded, tmp_path):
    """Reactive DR: OP03's unit cleared 1000 kvar for 1 h at 0.10 yuan/kvarh. Every resource draws a flat
    1200 kvar; GC1 drops to 200 kvar in the window: 1000 kvar x 1 h = 1000 kvarh → 100.00 yuan (the
    packaged cap is 0.12). Under a rule set capping reactive at 0.08 yuan/kvarh the same line pays 80.00.
    Reactive energy curtails no active energy: no carbon."""
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, {"OP03@GZ-HZ-S01": ("OP03", 1000.0)}, price=0.1, product="reactive")
    src = meter_source()
    kvar = np.full_like(src.data["power_kw"], 1200.0)
    kvar[list(src.pos).index("GC1"), -1, START:END] = 200.0
    src = eva.ArrayMeterSource(list(src.pos), src.first_day, src.data["power_kw"], reactive_kvar=kvar)
    capped = tmp_path / "reactive-0.08.toml"
    capped.write_text(Path(golden_ruleset(tmp_path, budget="10000000")).read_text(encoding="utf-8").replace(
        'reactive_yuan_per_kvarh = "0.12"', 'reactive_yuan_per_kvarh = "0.08"'), encoding="utf-8")
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, src, now=AFTER)
        assert out["quantity_unit"] == "kvarh" and out["totals"]["credited"] == pytest.approx(1000.0)
        (unit,) = out["units"]
        assert [s["response_kw"] for s in unit["slots"]] == [1000.0] * 4     # kvar
        sid = stl.compute(conn, ADMIN, 2025)["settlement_id"]
        (line,) = stl.lines(conn, sid)
        assert (line["kind"], line["quantity_unit"], line["rate_yuan"]) == ("reactive", "kvarh", "0.1")
        assert line["quantity"] == pytest.approx(1000.0) and stl.from_fen(line["amount_fen"]) == D("100.00")
        assert amounts(conn, sid, "operator", "OP03")["claim_reactive"] == D("100.00")
        assert amounts(conn, sid, "owner", "OW4")["owner_share"] == D("40.00")        # default share 0.4
        sid = stl.compute(conn, ADMIN, 2025, ruleset=str(capped))["settlement_id"]
        (line,) = stl.lines(conn, sid)
        assert (line["rate_yuan"], stl.from_fen(line["amount_fen"])) == ("0.08", D("80.00"))
        assert carbon_svc.report(conn, event_id=eid)["rows"][0]["curtailed_kwh"] == 0.0


# ---------------------------------------------------------------- columnar owners' claims


def owner_parties(conn, sid: str) -> dict:
    return {(p["party_id"], p["operator_id"], p["contract"]): p["amounts"] for p in stl.parties(conn, sid, "owner")}


def test_resource_contract_owner_parties_by_hand_and_every_group_recomputed_exactly_agrees(golden, monkeypatch):
    """GB2 has a contract of its own (owner share 0.9); GB1, the same owner's other resource, keeps OW2's
    default share (0.5). OP02's 2250 yuan are shared by positive response over the three valid slots:
    GB1 600 kW x 3 x 0.25 h = 450 kWh (1350 yuan), GB2 400 kW -> 300 kWh (900 yuan); factor 10000/11400:
      GB2 900 f = 789.473684 -> 789.47; x 0.9 = 710.526315 -> 710.53
      GB1 1350 f = 1184.210526 -> 1184.21; x 0.5 = 592.105263 -> 592.11      OP02 retains 1973.68 - 1302.64
    Then the same settlement with a float-error bound so wide that every (owner, operator, contract) group
    is recomputed row by row in Decimal: the same fen everywhere."""
    g = golden
    with g.begin() as conn:
        c = access.register_contract(conn, ADMIN, "OW2", "OP02", "fixed", valid_from=date(2025, 1, 1),
                                     owner_share=0.9, resource_id="GB2")
    evaluate(g)
    with g.begin() as conn:
        sid = stl.compute(conn, ADMIN, 2025, ruleset=g.ruleset)["settlement_id"]
        fast = owner_parties(conn, sid)
        ops = {op: amounts(conn, sid, "operator", op) for op in OP}
    assert {k: (v["revenue"], v["owner_share"], v["scheme"], v["share"]) for k, v in fast.items()
            if k[0] == "OW2"} == {("OW2", "OP02", str(c["contract_id"])): (78947, 71053, "fixed", 0.9),
                                  ("OW2", "OP02", "default"): (118421, 59211, "fixed", 0.5)}
    assert ops["OP02"]["owner_shares"] == D("1302.64") and ops["OP02"]["retained"] == D("671.04")
    assert fast[("OW3", "OP01", next(k[2] for k in fast if k[0] == "OW3"))]["tiers"] == [
        {"up_to_yuan": 1000, "owner_share": 0.6}, {"up_to_yuan": None, "owner_share": 0.5}]

    redone: list[set] = []
    exact = stl._exact_owner_gross

    def spy(conn, want, *a, **kw):
        redone.append(set(want))
        return exact(conn, want, *a, **kw)

    monkeypatch.setattr(stl, "sum_error_yuan", lambda abs_sum, n: np.full(np.shape(abs_sum), 1e6))
    monkeypatch.setattr(stl, "_exact_owner_gross", spy)
    with g.begin() as conn:
        sid2 = stl.compute(conn, ADMIN, 2025, ruleset=g.ruleset)["settlement_id"]
        assert owner_parties(conn, sid2) == fast
        assert {op: amounts(conn, sid2, "operator", op) for op in OP} == ops
    assert redone == [set(fast)]                                      # every group, once


def test_evaluation_stored_as_rows_settles_to_the_same_fen(golden, monkeypatch):
    """An evaluation from before the resource file (its resource rows in ``evaluation_rows``, one per
    resource and slot) settles to the same statement as the file."""
    g = golden
    head = evaluate(g)
    with g.begin() as conn:
        sid = stl.compute(conn, ADMIN, 2025, ruleset=g.ruleset)["settlement_id"]
        from_file = (owner_parties(conn, sid), {op: amounts(conn, sid, "operator", op) for op in OP})
        rows = eva.rows(conn, head["evaluation_id"], "resource")
        assert rows and eva.resource_table(conn, head["evaluation_id"]) is not None
        conn.execute(evaluation_rows.insert(), rows)
    monkeypatch.setattr(eva, "resource_table", lambda *a, **kw: None)
    with g.begin() as conn:
        assert len(eva.rows(conn, head["evaluation_id"], "resource")) == len(rows)
        sid2 = stl.compute(conn, ADMIN, 2025, ruleset=g.ruleset)["settlement_id"]
        assert (owner_parties(conn, sid2), {op: amounts(conn, sid2, "operator", op) for op in OP}) == from_file


def test_two_events_owner_claims_meet_in_one_party_and_agree_with_every_group_exact(golden, monkeypatch):
    """The golden event and a second one a week later, OP01 and OP03 cleared again with the same meter
    readings: each owner's claims of the two evaluations (two resource files, each with its own owner
    codes) meet in one party per operator and contract. Claims 11,400 + 4,650 + 4,500 = 20,550 yuan,
    factor 10000/20550: OW1 (GA1 in both events) 2 x 2550 = 5100 x f = 2481.751824 -> 2481.75,
    x 0.7 = 1737.226277 -> 1737.23; OW2 (GB1, GB2 only in the first) 2250 x f = 1094.890510 -> 1094.89,
    x 0.5 = 547.445255 -> 547.45. Then every group recomputed row by row in Decimal: the same fen."""
    g = golden
    day2 = DAY + timedelta(days=7)
    ids = list(GOLDEN_METER) + list(OTHERS)
    power = np.zeros((len(ids), HISTORY + 8, 96))
    for i, rid in enumerate(ids):
        power[i] = GOLDEN_METER[rid][0] if rid in GOLDEN_METER else OTHERS[rid]
        if rid in GOLDEN_METER:
            power[i, HISTORY, START:END] = GOLDEN_METER[rid][1]          # the first event's day
            power[i, -1, START:END] = GOLDEN_METER[rid][1]               # the second's
    source2 = eva.ArrayMeterSource(ids, DAY - timedelta(days=HISTORY), power)
    evaluate(g)
    eid2 = run_event(g.settings, {"OP01@GZ-TH-S01": ("OP01", 2000.0), "OP03@GZ-HZ-S01": ("OP03", 1500.0)}, day=day2)
    with g.begin() as conn:
        eva.evaluate(conn, DISP, eid2, source2, now=slot_start_utc(day2, END) + timedelta(hours=1))
    with g.begin() as conn:
        st = stl.compute(conn, ADMIN, 2025, ruleset=g.ruleset)
        assert st["summary"]["main"]["claims"] == "20550.00" and len(st["summary"]["evaluations"]) == 2
        sid = st["settlement_id"]
        every = stl.parties(conn, sid, "owner")
        fast = owner_parties(conn, sid)
        ops = {op: amounts(conn, sid, "operator", op) for op in OP}
    assert len(every) == len(fast) == 4                                # one party per owner, operator, contract
    assert (fast[("OW1", "OP01", "default")]["revenue"], fast[("OW1", "OP01", "default")]["owner_share"]) == (
        248175, 173723)
    assert (fast[("OW2", "OP02", "default")]["revenue"], fast[("OW2", "OP02", "default")]["owner_share"]) == (
        109489, 54745)
    assert sum(ops[op]["payable"] for op in OP) == D("10000.00")
    monkeypatch.setattr(stl, "sum_error_yuan", lambda abs_sum, n: np.full(np.shape(abs_sum), 1e6))
    with g.begin() as conn:
        sid2 = stl.compute(conn, ADMIN, 2025, ruleset=g.ruleset)["settlement_id"]
        assert owner_parties(conn, sid2) == fast
        assert {op: amounts(conn, sid2, "operator", op) for op in OP} == ops


def test_a_unit_line_on_a_half_fen_is_priced_in_decimal(loaded, tmp_path):
    """GC1 (OP03's unit, alone in it) drops its 2000 kW baseline to 0 for 1 h against 2000 kW cleared at
    1.0240025 yuan/kWh: 4 slots x 500 kWh x 1.0240025 = 2048.005 yuan exactly, half a fen, so 2048.01 on
    the statement (half up). In float the sum is 2048.00499999999965..., which rounds down to 2048.00:
    the float path's bound sends this line to Decimal (without the bound it would print 2048.00)."""
    setup_city(loaded, tmp_path)
    eid = run_event(loaded, {"OP03@GZ-HZ-S01": ("OP03", 2000.0)}, price=1.0240025)
    with db.get_engine(loaded.database_url).begin() as conn:
        out = eva.evaluate(conn, DISP, eid, meter_source({"GC1": [0.0] * 4}), now=AFTER)
        assert out["totals"]["credited"] == 2000.0
        sid = stl.compute(conn, ADMIN, 2025)["settlement_id"]
        (line,) = stl.lines(conn, sid)
        assert (line["kind"], line["quantity"], line["rate_yuan"]) == ("active", 2000.0, "1.0240025")
        assert line["amount_fen"] == 204801
    import math
    assert math.floor(math.fsum([500.0 * 1.0240025] * 4) * 100 + 0.5) == 204800   # the float alone: a fen short
