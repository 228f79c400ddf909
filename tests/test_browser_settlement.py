"""The dashboard's Settlement and EV/V2G pages in a real browser, on a city whose event day has run.

Set-up: a generated city of 1,000 resources (seed 1, ``prepare_demo``) and the demo's event day
(``sim.demo_day.run_day``: a city-wide peak-shaving event and a congestion event in Haizhu, evaluated
and the year 2025 settled up to *approved*). The demo accounts belong to the two largest operators,
which took part in neither event, so the fixture adds an operator admin for two operators that hold
statement lines (A and B) and an owner account for A's largest owner. Re-evaluations of disputes read
the event day's meter data through ``app.state.meter_source``: the profiles the demo day materialised,
with the metered values its evaluations stored in the event windows (checked below to reproduce the
evaluation exactly). The app runs under uvicorn on a loopback port; Debian's headless Chromium drives
the pages; every request stays on 127.0.0.1.

The demo city has no EV charging sessions (nothing has spoken OCPP to it): the EV page is first
checked in that empty state, then with sessions written to ``ev_sessions`` as the OCPP central system
records them. Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import insert, select

from openvpp.api.app import create_app
from openvpp.core.settings import Settings
from openvpp.services import accounts
from openvpp.services import settlement as stl
from openvpp.sim.demo import prepare_demo
from openvpp.sim.demo_day import DAY, replay_source, run_day
from openvpp.store import audit, db
from openvpp.store.schema import resources
from openvpp.store.schema_ev import PERIODS, ev_charge_points, ev_sessions
from openvpp.web import BUILD_COMMAND, missing_vendor_files
from tests import test_browser_dashboard as dashboard
from tests._server import serve
from tests.test_browser_dashboard import _assert_stayed_local, _chart_axis, _new_page, _shot
from tests.test_browser_pages import City, _arrived, _open, _sign_in

browser = dashboard.browser
browsing = dashboard.browsing

YEAR = DAY.year
PASSWORD = "settle-pages-pw"
SETTLE = "settlement-view"
EV = "ev-view"


@dataclass
class SettledCity(City):
    settlement_id: str = ""
    op_a: str = ""
    op_b: str = ""
    owner_a: str = ""
    database_url: str = ""
    fixture_s: float = 0.0


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Iterator[SettledCity]:
    missing = missing_vendor_files()
    if missing:
        pytest.fail(f"web vendor files are not built ({', '.join(missing)}): run `{BUILD_COMMAND}` first")
    t0 = time.perf_counter()
    work = tmp_path_factory.mktemp("settlement")
    settings = Settings(home=work, database_url=f"sqlite:///{work / 'openvpp.db'}",
                        jwt_secret="browser-settlement-secret-" + "x" * 32, bcrypt_rounds=4)
    info = prepare_demo(settings, n_resources=1000, seed=1)
    day = run_day(settings)
    assert day["settlement"]["state"] == "approved", day["settlement"]
    sid = day["settlement"]["settlement_id"]
    users = {str(role): tuple(pair) for role, pair in info["users"].items()}
    with db.get_engine(settings.database_url).begin() as conn:
        paying = sorted(((ln["amount_fen"], ln["operator_id"]) for ln in stl.lines(conn, sid) if ln["amount_fen"] > 0),
                        reverse=True)
        ops = list(dict.fromkeys(op for _, op in paying))
        assert len(ops) >= 2, f"the demo day paid fewer than two operators: {paying}"
        op_a, op_b = ops[0], ops[1]
        owner_a = max(stl.parties(conn, sid, "owner", operator_id=op_a),
                      key=lambda p: p["amounts"]["owner_share"])["party_id"]
        for name, role, op, own in (("settle-op-a", "operator_admin", op_a, None),
                                    ("settle-op-b", "operator_admin", op_b, None),
                                    ("settle-owner-a", "owner", None, owner_a)):
            accounts.create_user(conn, audit.SYSTEM, name, PASSWORD, role, op, own, rounds=4)
            users[name] = (name, PASSWORD)
        source = replay_source(conn)
    app = create_app(settings)
    app.state.meter_source = source
    with serve(app) as base:
        site = SettledCity(base, users, app.openapi_url or "", app.title, operator_id=op_a, second_operator_id=op_b,
                           owner_id=owner_a, settlement_id=sid, op_a=op_a, op_b=op_b, owner_a=owner_a,
                           database_url=settings.database_url, fixture_s=time.perf_counter() - t0)
        print(f"\nsettlement fixture: city of 1,000 resources, event day and settlement in {site.fixture_s:.1f} s")
        yield site


def _ready(page: Page, view: str = SETTLE) -> None:
    expect(page.locator(f"#{view}")).to_have_attribute("data-state", "ready")


def _value(page: Page, selector: str) -> str:
    return page.get_attribute(f"{selector} .stat-value", "data-value") or ""


def _ids(page: Page, table_id: str) -> list[str]:
    return page.locator(f"#{table_id} tbody tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")


def _result(page: Page, ok: bool) -> str:
    box = page.locator(f"#settle-result[data-ok={'true' if ok else 'false'}]")
    expect(box).to_be_visible()
    _ready(page)
    return box.inner_text()


def _statement_operators(city: SettledCity) -> list[str]:
    """Operators the API gives a statement of (the center's view)."""
    out = []
    with city.client("city_admin") as c:
        for op in c.get("/api/v1/operators").json()["items"]:
            r = c.get(f"/api/v1/statements/{city.settlement_id}/operators/{op['operator_id']}")
            if r.status_code == 200:
                out.append(op["operator_id"])
            else:
                assert r.status_code == 404, r.text
    return out


# ------------------------------------------------------------------ settlements, budget, actions


@pytest.mark.browser
def test_admin_sees_the_years_settlement_and_budget_and_pays_it_the_auditor_only_reads(city: SettledCity,
                                                                                       browsing) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    _sign_in(page, city, "city_admin")
    _open(page, f"#/settlement?year={YEAR}", SETTLE)
    with city.client("city_admin") as c:
        listed = c.get("/api/v1/settlements", params={"year": YEAR}).json()["items"]
    assert _ids(page, "settle-list") == [s["settlement_id"] for s in listed] == [city.settlement_id]
    expect(page.locator(f"#settle-list tr[data-id='{city.settlement_id}']")).to_have_attribute("data-state", "approved")

    summary = listed[0]["summary"]
    for block, key in (("settle-budget-main", "main"), ("settle-budget-v2g", "v2g")):
        for field, name in (("cap", "budget"), ("claims", "claims"), ("paid", "paid"), ("factor", "factor")):
            assert _value(page, f"#{block}-{field}") == summary[key][name], (block, field)
    # the caps of the rule set the settlement used: 10 M yuan for active/reactive/reserve, 20 M yuan for V2G
    assert Decimal(summary["main"]["budget"]) == Decimal(summary["rules"]["subsidy"]["yearly_budget_yuan"])
    assert Decimal(summary["v2g"]["budget"]) == Decimal(summary["rules"]["subsidy"]["v2g_yearly_budget_yuan"])
    assert Decimal(summary["main"]["claims"]) > 0
    scaled = Decimal(summary["main"]["claims"]) > Decimal(summary["main"]["budget"])
    expect(page.locator("#settle-budget-main")).to_have_attribute("data-scaled", str(scaled).lower())
    expect(page.locator("#settle-budget-main [data-prorata]")).to_contain_text(
        "scaled" if scaled else "within the budget")
    expect(page.locator("#settle-rules")).to_contain_text(summary["rules"]["subsidy"]["active_yuan_per_kwh"])
    _shot(page, "settle_01_admin_overview")

    # approved -> paid from the page; the API agrees and the ledger holds payment entries
    expect(page.locator("#settle-actions [data-action]")).to_have_count(1)
    page.fill("#settle-reason", "funds received from the MIIT")
    page.click("#settle-actions [data-action=pay]")
    assert "is paid" in _result(page, ok=True)
    expect(page.locator(f"#settle-list tr[data-id='{city.settlement_id}']")).to_have_attribute("data-state", "paid")
    with city.client("city_admin") as c:
        assert c.get(f"/api/v1/settlements/{city.settlement_id}").json()["state"] == "paid"
        ledger = c.get(f"/api/v1/settlements/{city.settlement_id}/ledger").json()["items"]
    assert [e for e in ledger if e["ref"] == "payment"], "no payment entry"
    # from paid, only the balances of later disputes are left to pay
    expect(page.locator("#settle-actions [data-action]")).to_have_count(1)
    expect(page.locator("#settle-actions [data-action=pay_balances]")).to_be_visible()
    _shot(page, "settle_02_admin_paid")

    # a second transition the machine refuses shows the server's words (pay twice through the API)
    with city.client("city_admin") as c:
        again = c.post(f"/api/v1/settlements/{city.settlement_id}/transitions", json={"action": "pay"})
    assert again.status_code == 409, again.text

    # the auditor reads the same figures without any action
    auditor = _new_page(context, traffic)
    _sign_in(auditor, city, "auditor")
    _open(auditor, f"#/settlement?year={YEAR}", SETTLE)
    expect(auditor.locator("#settle-read-only")).to_be_visible()
    expect(auditor.locator("#settle-actions")).to_have_count(0)
    assert _value(auditor, "#settle-budget-main-paid") == summary["main"]["paid"]
    _open(auditor, f"#/settlement/statements?year={YEAR}", SETTLE)
    assert _ids(auditor, "settle-operators") == _statement_operators(city)
    _shot(auditor, "settle_03_auditor_statements")
    _assert_stayed_local(traffic)


# ------------------------------------------------------------------ statements and scope


@pytest.mark.browser
def test_statements_per_operator_and_owner_with_csv_and_printable_html_each_in_its_scope(city: SettledCity,
                                                                                        browsing) -> None:
    context, traffic = browsing
    sid = city.settlement_id
    page = _new_page(context, traffic)
    _sign_in(page, city, "city_admin")
    _open(page, f"#/settlement/statements?year={YEAR}", SETTLE)
    ops = _statement_operators(city)
    assert _ids(page, "settle-operators") == ops and city.op_a in ops and city.op_b in ops
    with city.client("city_admin") as c:
        for op in ops:
            st = c.get(f"/api/v1/statements/{sid}/operators/{op}").json()
            row = page.locator(f"#settle-operators tr[data-id='{op}']")
            assert row.locator("[data-col=payable] .money").get_attribute("data-value") == st["amounts"]["net"]
            assert row.locator("[data-col=balance] .money").get_attribute("data-value") == st["balance"]
    _shot(page, "settle_04_admin_statements")

    # operator A: only its own statement; the lines are the API's; CSV and printable HTML are the API's files
    op_page = _new_page(context, traffic)
    _sign_in(op_page, city, "settle-op-a")
    _open(op_page, f"#/settlement/statements?year={YEAR}", SETTLE)
    assert _ids(op_page, "settle-operators") == [city.op_a]
    with city.client("settle-op-a") as c:
        mine = c.get(f"/api/v1/statements/{sid}/operators/{city.op_a}").json()
        csv_text = c.get(f"/api/v1/statements/{sid}/operators/{city.op_a}", params={"format": "csv"}).text
        refused = c.get(f"/api/v1/statements/{sid}/operators/{city.op_b}")
    with op_page.expect_download() as dl:
        op_page.click(f"#settle-operators tr[data-id='{city.op_a}'] [data-file=csv]")
    assert Path(dl.value.path()).read_bytes().decode("utf-8") == csv_text
    assert dl.value.suggested_filename == f"statement-{YEAR}-{city.op_a}.csv"
    with op_page.expect_popup() as pop:
        op_page.click(f"#settle-operators tr[data-id='{city.op_a}'] [data-file=html]")
    printable = pop.value
    expect(printable.locator("h1")).to_have_text(f"openvpp {YEAR} settlement statement — operator {city.op_a}")
    expect(printable.locator("body")).to_contain_text(f"Balance: {mine['balance']} yuan")
    printable.close()

    op_page.click(f"#settle-operators a[href*='/operator/{city.op_a}']")
    _arrived(op_page, SETTLE, f"#/settlement/operator/{city.op_a}?year={YEAR}")
    assert _ids(op_page, "settle-lines") == [ln["line_id"] for ln in mine["lines"]]
    assert op_page.locator("#settle-balance .money").get_attribute("data-value") == mine["balance"]
    _shot(op_page, "settle_05_operator_statement")

    # operator A asks for B's statement: the API refuses and the page says what the API said
    assert refused.status_code == 403, refused.text
    _open(op_page, f"#/settlement/operator/{city.op_b}?year={YEAR}", SETTLE, state="error")
    expect(op_page.locator("#settlement-body .page-error")).to_contain_text("403")
    expect(op_page.locator("#settlement-body .page-error-message")).to_have_text(refused.json()["message"])
    _shot(op_page, "settle_06_operator_refused")

    # the owner: its own statement only
    own = _new_page(context, traffic)
    _sign_in(own, city, "settle-owner-a")
    _open(own, f"#/settlement/statements?year={YEAR}", SETTLE)
    assert _ids(own, "settle-owners") == [city.owner_a]
    expect(own.locator("#settle-tabs [data-tab=disputes]")).to_have_count(0)
    with city.client("settle-owner-a") as c:
        st = c.get(f"/api/v1/statements/{sid}/owners/{city.owner_a}").json()
        other = c.get(f"/api/v1/statements/{sid}/operators/{city.op_a}")
    own.click(f"#settle-owners a[href*='/owner/{city.owner_a}']")
    _arrived(own, SETTLE, f"#/settlement/owner/{city.owner_a}?year={YEAR}")
    assert own.locator("#settle-total-share .money").get_attribute("data-value") == st["total_share"]
    assert Decimal(st["total_share"]) > 0
    assert _ids(own, "settle-owner-items-table") == [i["operator_id"] for i in st["items"]]
    _shot(own, "settle_07_owner_statement")
    assert other.status_code == 403
    _open(own, f"#/settlement/operator/{city.op_a}?year={YEAR}", SETTLE, state="error")
    expect(own.locator("#settlement-body .page-error-message")).to_have_text(other.json()["message"])
    _assert_stayed_local(traffic)


# ------------------------------------------------------------------ disputes and the ledger


@pytest.mark.browser
def test_operator_disputes_a_line_the_center_reevaluates_and_approves_and_the_ledger_appends(city: SettledCity,
                                                                                          browsing) -> None:
    context, traffic = browsing
    sid = city.settlement_id
    with city.client("city_admin") as c:
        if c.get(f"/api/v1/settlements/{sid}").json()["state"] == "approved":     # run alone: pay as the first test does
            c.post(f"/api/v1/settlements/{sid}/transitions", json={"action": "pay"}).raise_for_status()
        ledger_before = c.get(f"/api/v1/settlements/{sid}/ledger").json()["items"]
    with city.client("settle-op-a") as c:
        line = max(c.get(f"/api/v1/statements/{sid}/operators/{city.op_a}").json()["lines"],
                   key=lambda ln: Decimal(ln["amount"]))

    op_page = _new_page(context, traffic)
    _sign_in(op_page, city, "settle-op-a")
    _open(op_page, f"#/settlement/operator/{city.op_a}?year={YEAR}", SETTLE)
    op_page.click(f"#settle-lines tr[data-id='{line['line_id']}'] [data-action=dispute]")
    inputs = op_page.locator("#settle-dispute-form input.meter-input")
    expect(inputs.first).to_be_visible()
    n = inputs.count()
    assert n > 0
    originals = [float(inputs.nth(i).input_value()) for i in range(n)]
    corrected = [round(v - 25.0, 3) for v in originals]     # the meter over-read by 25 kW in every slot
    for i, v in enumerate(corrected):
        inputs.nth(i).fill(str(v))

    # without a reason the API refuses, names the field, and nothing is written
    op_page.click("#settle-dispute-form [data-action=submit-dispute]")
    assert "reason" in _result(op_page, ok=False)
    with city.client("settle-op-a") as c:
        assert c.get("/api/v1/disputes", params={"settlement_id": sid}).json()["items"] == []
    _shot(op_page, "settle_08_dispute_form_error")

    op_page.fill("#settle-dispute-reason", "meter M-17 over-read by 25 kW, replaced on 2025-07-20 (test report)")
    op_page.click("#settle-dispute-form [data-action=submit-dispute]")
    expect(op_page.locator("#settle-dispute")).to_have_attribute("data-state", "open")
    _ready(op_page)
    dispute_id = op_page.get_attribute("#settle-dispute", "data-id")
    with city.client("settle-op-a") as c:
        d = c.get(f"/api/v1/disputes/{dispute_id}").json()
    assert d["line_id"] == line["line_id"] and d["state"] == "open"
    (rid, days), = d["evidence"]["meter"].items()   # stored as {resource: {day: {slot: kW}}}
    (day, slots), = days.items()
    assert [slots[k] for k in sorted(slots, key=int)] == pytest.approx(corrected, abs=1e-9)
    rows = op_page.locator("#settle-dispute-evidence tbody tr")
    expect(rows).to_have_count(len(corrected))
    assert rows.first.get_attribute("data-day") == day and rows.first.get_attribute("data-id") == rid
    expect(op_page.locator("#settle-dispute-difference")).to_contain_text("Not re-evaluated yet")
    expect(op_page.locator("#settle-dispute-actions")).to_have_count(0)
    _shot(op_page, "settle_09_dispute_raised")

    # operator B never sees A's dispute
    with city.client("settle-op-b") as c:
        assert c.get(f"/api/v1/disputes/{dispute_id}").status_code == 403
        assert [x["dispute_id"] for x in c.get("/api/v1/disputes").json()["items"]] == []

    # the center re-evaluates and sees the difference
    admin = _new_page(context, traffic)
    _sign_in(admin, city, "city_admin")
    _open(admin, f"#/settlement/disputes?year={YEAR}", SETTLE)
    assert _ids(admin, "settle-disputes") == [dispute_id]
    admin.click(f"#settle-disputes a[href*='{dispute_id}']")
    _arrived(admin, SETTLE, f"#/settlement/disputes/{dispute_id}?year={YEAR}")
    admin.click("#settle-dispute-actions [data-action=reevaluate]")
    assert "re-evaluated" in _result(admin, ok=True)
    with city.client("city_admin") as c:
        d = c.get(f"/api/v1/disputes/{dispute_id}").json()
    diff = d["difference"]
    assert d["state"] == "reevaluated" and diff["credited_after"] > diff["credited_before"]
    credited = admin.locator("#settle-dispute-difference .dispute-credited")
    assert float(credited.get_attribute("data-before")) == pytest.approx(diff["credited_before"], rel=1e-12)
    assert float(credited.get_attribute("data-after")) == pytest.approx(diff["credited_after"], rel=1e-12)
    parties = admin.locator("#settle-dispute-parties tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.party, r.dataset.difference])")
    assert parties == [[p["party_id"], p["difference"]] for p in diff["parties"]]
    assert [p["party_id"] for p in diff["parties"] if p["party_kind"] == "operator"] == [city.op_a]
    assert _chart_axis(admin, "chart-settle-dispute", "xAxis") == [
        f"{s['slot'] * 15 // 60:02d}:{s['slot'] * 15 % 60:02d}" for s in diff["slots"]]
    _shot(admin, "settle_10_dispute_reevaluated")

    # approve: without a reason refused (field named), then with one
    admin.click("#settle-dispute-actions [data-action=approve]")
    assert "reason" in _result(admin, ok=False)
    admin.fill("#settle-decision-reason", "evidence accepted: meter test report")
    admin.click("#settle-dispute-actions [data-action=approve]")
    text = _result(admin, ok=True)
    assert "approved" in text and "ledger entries appended" in text
    expect(admin.locator("#settle-dispute")).to_have_attribute("data-state", "approved")
    expect(admin.locator("#settle-dispute-decision")).to_contain_text("evidence accepted")
    _shot(admin, "settle_11_dispute_approved")

    # the ledger: every earlier entry is still there unchanged, the adjustment is appended after them
    with city.client("city_admin") as c:
        ledger_after = c.get(f"/api/v1/settlements/{sid}/ledger").json()["items"]
    assert ledger_after[:len(ledger_before)] == ledger_before
    appended = ledger_after[len(ledger_before):]
    assert appended and {e["ref"] for e in appended} == {dispute_id}
    a_delta = sum(Decimal(e["amount"]) for e in appended if e["party_kind"] == "operator" and e["party_id"] == city.op_a)
    a_diff = next(p for p in diff["parties"] if p["party_kind"] == "operator" and p["party_id"] == city.op_a)
    assert a_delta == Decimal(a_diff["difference"]) > 0
    _open(admin, f"#/settlement/ledger?year={YEAR}", SETTLE)
    assert _ids(admin, "settle-ledger") == [str(e["entry_id"]) for e in ledger_after]
    adjustments = admin.locator("#settle-ledger tr[data-kind=adjustment]").evaluate_all(
        "rows => rows.map(r => [r.dataset.ref, r.dataset.amount])")
    assert adjustments == [[e["ref"], e["amount"]] for e in appended]
    assert _value(admin, "#settle-ledger-adjustments") == str(len(appended))
    _shot(admin, "settle_12_ledger_adjusted")

    # the settlement was paid before the dispute: the balance it left is paid from the page
    with city.client("city_admin") as c:
        assert Decimal(c.get(f"/api/v1/statements/{sid}/operators/{city.op_a}").json()["balance"]) == a_delta
    _open(admin, f"#/settlement?year={YEAR}", SETTLE)
    admin.click("#settle-actions [data-action=pay_balances]")
    assert "Balances paid" in _result(admin, ok=True)
    with city.client("settle-op-a") as c:
        st = c.get(f"/api/v1/statements/{sid}/operators/{city.op_a}").json()
    assert Decimal(st["balance"]) == 0
    assert [e for e in st["ledger"] if e["ref"] == "balance-rev1" and Decimal(e["amount"]) == -a_delta]

    # the operator sees its own ledger entries, adjustment included
    _open(op_page, f"#/settlement/ledger?year={YEAR}", SETTLE)
    with city.client("settle-op-a") as c:
        mine = c.get(f"/api/v1/settlements/{sid}/ledger").json()["items"]
    assert _ids(op_page, "settle-ledger") == [str(e["entry_id"]) for e in mine]
    assert {e["operator_id"] for e in mine} == {city.op_a}
    _shot(op_page, "settle_13_operator_ledger")
    _assert_stayed_local(traffic)


# ------------------------------------------------------------------ carbon


@pytest.mark.browser
def test_carbon_panel_shows_the_reports_figures_per_year_and_operator_in_scope(city: SettledCity, browsing) -> None:
    context, traffic = browsing
    for role, who in (("city_admin", None), ("settle-op-a", city.op_a)):
        page = _new_page(context, traffic)
        _sign_in(page, city, role)
        _open(page, f"#/settlement/carbon?year={YEAR}", SETTLE)
        rep = city.api(role, f"/api/v1/reports/carbon?year={YEAR}")
        (total,) = rep["by_year"]
        if who is None:     # the city curtailed energy (central AC); operator A's storage only shifted it
            assert total["curtailed_kwh"] > 0
        assert float(_value(page, "#settle-carbon-kwh")) == pytest.approx(total["curtailed_kwh"], rel=1e-12)
        assert float(_value(page, "#settle-carbon-southern")) == pytest.approx(total["southern_grid_tco2"], rel=1e-12)
        assert float(_value(page, "#settle-carbon-national")) == pytest.approx(total["national_tco2"], rel=1e-12)
        assert _ids(page, "settle-carbon-by-operator") == [r["operator_id"] for r in rep["by_operator"]]
        assert _chart_axis(page, "chart-settle-carbon", "xAxis") == [r["operator_id"] for r in rep["by_operator"]]
        if who:
            assert [r["operator_id"] for r in rep["by_operator"]] == [who]
        expect(page.locator("#settle-carbon-factors")).to_contain_text(str(rep["factors"]["southern_grid_t_per_mwh"]))
        _shot(page, f"settle_14_carbon_{role}")
    _assert_stayed_local(traffic)


# ------------------------------------------------------------------ EV / V2G


def _kpis_equal(page: Page, rep: dict) -> None:
    c = rep["city"]
    assert int(_value(page, "#evp-sessions")) == rep["sessions"]
    for sel, key in (("#evp-valley", "valley_share"), ("#evp-private", "private_valley_share"),
                     ("#evp-power", "v2g_discharge_kw"), ("#evp-energy", "v2g_discharge_kwh_annualised"),
                     ("#evp-energy-ytd", "v2g_discharge_kwh")):
        shown = _value(page, sel)
        assert (shown == "" if c[key] is None else float(shown) == pytest.approx(c[key], rel=1e-12)), (sel, shown, c[key])
    for table_id, level in (("evp-operators", "operator"), ("evp-projects", "project")):
        rows = page.locator(f"#{table_id} tbody tr[data-id]").evaluate_all(
            "rows => rows.map(r => [r.dataset.id, Number(r.dataset.kw), Number(r.dataset.kwh),"
            " r.dataset.valleyShare === '' ? null : Number(r.dataset.valleyShare)])")
        assert rows == [[r["key"], r["v2g_discharge_kw"], r["v2g_discharge_kwh"], r["valley_share"]]
                        for r in rep[level]]
    v2g_projects = sorted((r for r in rep["project"] if r["v2g_chargers"] > 0), key=lambda r: -r["v2g_discharge_kw"])
    assert _chart_axis(page, "chart-evp-power", "xAxis") == [r["key"] for r in v2g_projects]


def _add_sessions(city: SettledCity) -> list[str]:
    """Sessions as the OCPP central system records them (its tables, its columns), on the city's first V2G
    charger and first two ordinary piles: July 2025, 67 of 100 kWh charged in the valley, 36 kWh discharged."""
    t0 = datetime(2025, 7, 10, 15, tzinfo=UTC)
    with db.get_engine(city.database_url).begin() as conn:
        v2g = conn.execute(select(resources.c.resource_id).where(resources.c.resource_type == "v2g_charger",
                                                                 resources.c.operator_id.is_not(None))
                           .order_by(resources.c.resource_id).limit(1)).scalar_one()
        piles = list(conn.execute(select(resources.c.resource_id).where(resources.c.resource_type == "ev_charging")
                                  .order_by(resources.c.resource_id).limit(2)).scalars())
        known = set(conn.execute(select(ev_charge_points.c.charge_point_id)).scalars())
        for cp in [x for x in (v2g, *piles) if x not in known]:
            conn.execute(insert(ev_charge_points).values(charge_point_id=cp, ocpp_version="2.0.1", connected=True,
                                                         status={"1/1": "Available"}, vendor="SimCharge",
                                                         model="DC60", last_seen_at=t0))

        def row(sid, cp, charge, discharge, token, battery):
            r = dict(session_id=sid, charge_point_id=cp, evse_id=1, transaction_id=sid, ocpp_version="2.0.1",
                     state="completed", started_at=t0, stopped_at=datetime(2025, 7, 11, 1, tzinfo=UTC),
                     v2g=cp == v2g, id_token=token, battery_kwh=battery)
            r.update({f"charge_{p}_kwh": float(v) for p, v in zip(PERIODS, charge, strict=True)})
            r.update({f"discharge_{p}_kwh": float(v) for p, v in zip(PERIODS, discharge, strict=True)})
            return r
        conn.execute(insert(ev_sessions), [
            row("EVS-1", v2g, (40, 5, 0, 0), (0, 0, 30, 6), "CAR-1", 60.0),
            row("EVS-2", piles[0], (22, 8, 4, 0), (0, 0, 0, 0), "CAR-2", 50.0),
            row("EVS-3", piles[1], (5, 10, 6, 0), (0, 0, 0, 0), None, None),
        ])
    return [v2g, *piles]


@pytest.mark.browser
def test_ev_page_shows_the_pilot_kpis_the_api_reports_then_with_more_metered_sessions(city: SettledCity,
                                                                                     browsing) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    _sign_in(page, city, "city_admin")
    _open(page, f"#/ev?year={YEAR}", EV)
    before = city.api("city_admin", f"/api/v1/ev/pilot?year={YEAR}")
    st_before = city.api("city_admin", f"/api/v1/ev/v2g/statement?year={YEAR}")["totals"]
    assert before["city"]["v2g_chargers"] > 0
    _kpis_equal(page, before)
    if before["sessions"] == 0:     # no session metered yet: the empty state, said as such
        expect(page.locator("#evp-empty")).to_be_visible()
        expect(page.locator("#evp-valley [data-ok]")).to_have_attribute("data-ok", "")
        expect(page.locator("#evp-battery-note")).to_have_text(before["battery"]["note"])
        expect(page.locator("#evp-sessions-table .empty-row")).to_be_visible()
    else:
        expect(page.locator("#evp-empty")).to_have_count(0)
    _shot(page, "evp_01_demo_city")

    cps = _add_sessions(city)
    page.click("#ev-view [data-refresh]")
    expect(page.locator("#evp-empty")).to_have_count(0)
    _ready(page, EV)
    rep = city.api("city_admin", f"/api/v1/ev/pilot?year={YEAR}")
    _kpis_equal(page, rep)
    c, c0 = rep["city"], before["city"]
    assert rep["sessions"] == before["sessions"] + 3
    assert c["charge_kwh"] == pytest.approx(c0["charge_kwh"] + 100.0)
    assert c["valley_kwh"] == pytest.approx(c0["valley_kwh"] + 67.0)
    assert c["v2g_discharge_kwh"] == pytest.approx(c0["v2g_discharge_kwh"] + 36.0)
    assert page.locator("#evp-valley [data-ok]").get_attribute("data-ok") == str(c["valley_share_ok"]).lower()
    b = rep["battery"]
    assert b["vehicles"] >= 2
    for sel, key in (("#evp-bat-vehicles", "vehicles"), ("#evp-bat-throughput", "throughput_kwh"),
                     ("#evp-bat-efc-mean", "efc_mean"), ("#evp-bat-soh-min", "soh_min")):
        assert float(_value(page, sel)) == pytest.approx(b[key], rel=1e-12), sel
    st = city.api("city_admin", f"/api/v1/ev/v2g/statement?year={YEAR}")
    assert st["totals"]["sessions"] == st_before["sessions"] + 1
    assert Decimal(st["totals"]["energy_kwh"]) == Decimal(st_before["energy_kwh"]) + 36
    for sel, key in (("#evp-st-energy", "energy_kwh"), ("#evp-st-value", "energy_value_yuan"),
                     ("#evp-st-subsidy", "subsidy_yuan"), ("#evp-st-scale", "scale")):
        assert _value(page, sel) == st["totals"][key], sel
    points = city.api("city_admin", "/api/v1/ev/charge-points?limit=100")["items"]
    assert _ids(page, "evp-points-table") == [p["charge_point_id"] for p in points]
    every = {p["charge_point_id"] for p in city.api("city_admin", "/api/v1/ev/charge-points?limit=1000")["items"]}
    assert set(cps) <= every
    sessions = city.api("city_admin", "/api/v1/ev/sessions?limit=100")["items"]
    assert _ids(page, "evp-sessions-table") == [x["session_id"] for x in sessions]
    _shot(page, "evp_02_sessions")

    # the V2G charger's operator sees its own piles only, as the API gives them
    with db.get_engine(city.database_url).begin() as conn:
        op = conn.execute(select(resources.c.operator_id).where(resources.c.resource_id == cps[0])).scalar_one()
        if "settle-op-ev" not in city.users:
            accounts.create_user(conn, audit.SYSTEM, "settle-op-ev", PASSWORD, "operator_admin", op, None, rounds=4)
            city.users["settle-op-ev"] = ("settle-op-ev", PASSWORD)
    op_page = _new_page(context, traffic)
    _sign_in(op_page, city, "settle-op-ev")
    _open(op_page, f"#/ev?year={YEAR}", EV)
    mine = city.api("settle-op-ev", f"/api/v1/ev/pilot?year={YEAR}")
    assert mine["scope"] == f"operator {op}"
    _kpis_equal(op_page, mine)
    assert [r["key"] for r in mine["operator"]] == [op]
    assert mine["city"]["v2g_discharge_kwh"] >= 36.0
    _shot(op_page, "evp_03_operator")
    _assert_stayed_local(traffic)
