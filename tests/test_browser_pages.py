"""The dashboard's pages in a real browser: grid drill-down, resource database, operators, pools.

Same set-up as ``test_browser_dashboard.py`` (whose helpers these tests reuse): the real app under
uvicorn on a loopback port, a generated city of 300 resources (seed 1) with one demo account per
role, Debian's headless Chromium driven by Playwright, every request kept on 127.0.0.1. Before the
tests the city administrator creates the preset pools, and the operator-interface probe of the
admission checks is a stub (the server never reaches the internet). Live power comes from points
pushed through ``POST /api/v1/telemetry`` just before a test needs them.

Chromium is required: without /usr/bin/chromium these tests fail, never skip. Screenshots of every
page go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import text

from openvpp.api.app import create_app
from openvpp.core.settings import Settings
from openvpp.sim.demo import prepare_demo
from openvpp.store.db import get_engine
from openvpp.web import BUILD_COMMAND, missing_vendor_files
from tests import test_browser_dashboard as dashboard
from tests._server import serve
from tests.test_browser_dashboard import Site, _assert_stayed_local, _login, _new_page, _shot

# the browser and the per-test context (with its request guard) of the dashboard tests
browser = dashboard.browser
browsing = dashboard.browsing

#: loading = |P| / POWER_FACTOR / rating (pages/grid.js, as kernels/congestion.loading)
POWER_FACTOR = 0.95
#: the hot transformer area is driven to this loading (over its rating)
HOT_LOADING = 1.2
ROLES = ("city_admin", "dispatcher", "operator_admin", "owner", "auditor")


@dataclass
class City(Site):
    """The live app plus what the tests need to know about the generated city."""

    operator_id: str = ""
    second_operator_id: str = ""
    owner_id: str = ""
    hot_ta: dict | None = None  # grid node of the transformer area driven over its rating
    hot_resources: list[dict] | None = None

    def push_hot_ta(self) -> float:
        """Report every device of the hot transformer area at a share of its capacity such that the
        area's loading is HOT_LOADING; return the total pushed power (kW)."""
        rating = float(self.hot_ta["rating_kva"])
        capacity = sum(r["capacity_kw"] for r in self.hot_resources)
        share = min(0.95, HOT_LOADING * POWER_FACTOR * rating / capacity)
        now_ms = int(time.time() * 1000)
        points = [{"d": r["resource_id"], "t": now_ms, "p": round(r["capacity_kw"] * share, 3)}
                  for r in self.hot_resources]
        with self.client("city_admin") as c:
            out = c.post("/api/v1/telemetry", json={"gw": "browser-test", "points": points})
            out.raise_for_status()
            assert out.json()["accepted"] == len(points), out.json()
        return sum(p["p"] for p in points)


def _hot_transformer_area(database_url: str) -> str:
    """The transformer area whose devices can load it the most against its rating."""
    with get_engine(database_url).connect() as conn:
        return conn.execute(text(
            "SELECT r.ta_id FROM resources r JOIN grid_nodes g ON g.node_id = r.ta_id "
            "WHERE r.state = 'active' AND g.rating_kva > 0 GROUP BY r.ta_id, g.rating_kva "
            "HAVING COUNT(DISTINCT r.site_id) >= 1 AND COUNT(*) >= 3 "
            "ORDER BY SUM(r.capacity_kw) / g.rating_kva DESC, r.ta_id LIMIT 1")).scalar_one()


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Iterator[City]:
    missing = missing_vendor_files()
    if missing:
        pytest.fail(f"web vendor files are not built ({', '.join(missing)}): run `{BUILD_COMMAND}` first")
    work = tmp_path_factory.mktemp("pages")
    settings = Settings(home=work, database_url=f"sqlite:///{work / 'openvpp.db'}",
                        jwt_secret="browser-pages-secret-" + "x" * 32, bcrypt_rounds=4)
    info = prepare_demo(settings, n_resources=300, seed=1)
    users = {str(role): tuple(pair) for role, pair in info["users"].items()}
    app = create_app(settings)
    app.state.tss_probe = lambda endpoint: {"ok": True, "rtt_ms": 2.0, "url": endpoint, "detail": "stub echo"}

    with serve(app) as base:
        site = City(base, users, app.openapi_url or "", app.title, operator_id=info["operator_id"],
                    second_operator_id=info["second_operator_id"], owner_id=info["owner_id"])
        with site.client("city_admin") as c:
            c.post("/api/v1/pools/defaults").raise_for_status()
            ta_id = _hot_transformer_area(settings.database_url)
            site.hot_ta = c.get(f"/api/v1/grid/nodes/{ta_id}").json()
            site.hot_resources = c.get("/api/v1/resources", params={"ta_id": ta_id, "limit": 1000}).json()["items"]
        yield site


# ------------------------------------------------------------------ page helpers


def _sign_in(page: Page, city: City, role: str, hash_: str = "") -> None:
    page.goto(city.base_url + "/" + hash_)
    username, password = city.users[role]
    _login(page, username, password)
    expect(page.locator("#user-name")).to_have_text(username)


def _open(page: Page, hash_: str, view: str, state: str = "ready") -> None:
    page.evaluate("h => { location.hash = h; }", hash_)
    if state == "ready":
        expect(page.locator(f"#{view}")).to_have_attribute("data-route", page.evaluate("location.hash"))
    expect(page.locator(f"#{view}")).to_have_attribute("data-state", state)


def _arrived(page: Page, view: str, hash_: str) -> None:
    """Wait until `view` has finished rendering `hash_` (the page marks data-route when it is ready),
    so a click's old page, still "ready", is never mistaken for the new one."""
    expect(page.locator(f"#{view}")).to_have_attribute("data-route", hash_)
    expect(page.locator(f"#{view}")).to_have_attribute("data-state", "ready")


def _value(page: Page, selector: str) -> float:
    return float(page.get_attribute(f"{selector} .stat-value", "data-value") or "nan")


def _crumbs(page: Page) -> list[str]:
    return page.locator("#grid-crumbs li").all_inner_texts()


def _row_ids(page: Page, table_id: str) -> list[str]:
    return page.locator(f"#{table_id} tbody tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")


def _total(page: Page) -> int:
    expect(page.locator("#resources-view")).to_have_attribute("data-state", "ready")
    return int(page.get_attribute("#res-total", "data-total") or "-1")


def _expect_total(page: Page, n: int) -> None:
    """Wait until the list shows the total the API gave for the same filters."""
    expect(page.locator("#res-total")).to_have_attribute("data-total", str(n))
    expect(page.locator("#resources-view")).to_have_attribute("data-state", "ready")


# ------------------------------------------------------------------ grid


@pytest.mark.browser
def test_grid_drills_down_from_the_city_to_a_device_and_a_transformer_area_over_its_rating_stands_out(
        city: City, browsing) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    ta = city.hot_ta
    pushed_kw = city.push_hot_ta()
    _sign_in(page, city, "city_admin")
    page.click("#nav [data-page=grid]")
    expect(page.locator("#grid-view")).to_have_attribute("data-state", "ready")
    assert page.evaluate("location.hash") == "#/grid"

    with city.client("city_admin") as c:
        root = c.get("/api/v1/grid/nodes").json()
        by_district = {r["key"]: r for r in c.get("/api/v1/resources/summary?by=district").json()["rows"]}
        ta_total = c.get("/api/v1/resources", params={"ta_id": ta["node_id"], "limit": 1}).json()["total"]
    # city: one crumb, the districts below with their capacity, the live stream connected
    assert _crumbs(page) == [root["node"]["name"]]
    assert sorted(_row_ids(page, "grid-children")) == sorted(d["node_id"] for d in root["children"])
    assert _value(page, "#grid-stat-connected") == pytest.approx(sum(r["connected_kw"] for r in by_district.values()))
    expect(page.locator("#grid-live")).to_have_attribute("data-state", "live")
    expect(page.locator("#chart-grid canvas").first).to_be_visible()
    _shot(page, "10_grid_city")

    # district → substation → feeder → transformer area, by clicking the rows' links
    path = [ta["district_id"], ta["substation_id"], ta["feeder_id"], ta["node_id"]]
    for depth, node_id in enumerate(path, start=2):
        page.click(f"#grid-children tr[data-id='{node_id}'] a")
        _arrived(page, "grid-view", f"#/grid/{node_id}")
        expect(page.locator("#grid-crumbs li")).to_have_count(depth)
        expect(page.locator("#grid-crumbs li [aria-current=page]")).to_have_count(1)
        if node_id == ta["district_id"]:
            row = by_district[node_id]
            assert _value(page, "#grid-stat-connected") == pytest.approx(row["connected_kw"])
            assert _value(page, "#grid-stat-resources") == row["resources"]
        if node_id == ta["feeder_id"]:
            # the hot area stands out among its siblings
            hot_row = page.locator(f"#grid-children tr[data-id='{ta['node_id']}']")
            expect(hot_row).to_have_attribute("data-band", "over")
            expect(hot_row).to_have_class("load-row load-over")
            _shot(page, "11_grid_feeder_with_hot_area")

    # the transformer area: loading = live kW / 0.95 / rating, shown as over its rating
    expect(page.locator("#grid-crumbs [aria-current=page]")).to_have_text(ta["name"])
    loading = page.locator("#grid-stat-loading")
    expect(loading).to_have_attribute("data-band", "over")
    expect(loading).to_contain_text("Over its rating")
    expected = pushed_kw / POWER_FACTOR / ta["rating_kva"]
    assert _value(page, "#grid-stat-loading") == pytest.approx(expected, rel=1e-3)
    assert _value(page, "#grid-stat-live") == pytest.approx(pushed_kw, rel=1e-3)
    expect(page.locator("#grid-view")).to_have_attribute("data-live", "ready")
    expect(page.locator("#grid-devices tbody tr[data-id]")).to_have_count(ta_total)
    online = len(city.hot_resources)
    expect(page.locator("#grid-stat-online .stat-value")).to_have_text(f"{online} / {online}")
    expect(page.locator("#grid-devices .dot-on")).to_have_count(online)
    _shot(page, "12_grid_transformer_area_over_rating")

    # site → device
    device = city.hot_resources[0]
    page.click(f"#grid-sites tr[data-id='{device['site_id']}'] a")
    _arrived(page, "grid-view", f"#/grid/{ta['node_id']}/site/{device['site_id']}")
    expect(page.locator("#grid-crumbs li")).to_have_count(6)
    assert device["resource_id"] in _row_ids(page, "grid-devices")
    page.click(f"#grid-devices tr[data-id='{device['resource_id']}'] a")
    _arrived(page, "grid-view", f"#/grid/{ta['node_id']}/site/{device['site_id']}/device/{device['resource_id']}")
    expect(page.locator("#grid-crumbs li")).to_have_count(7)
    detail = page.locator(f"#grid-device .resource-detail[data-id='{device['resource_id']}']")
    expect(detail).to_be_visible()
    expect(page.locator("#detail-live")).to_have_attribute("data-online", "true")
    _shot(page, "13_grid_device")

    # a crumb goes back up; the page is linkable (a reload lands on the same node) and speaks Chinese
    with city.client("auditor") as c:
        substation = c.get(f"/api/v1/grid/nodes/{ta['substation_id']}").json()
    page.click("#grid-crumbs li[data-level=substation] a")
    _arrived(page, "grid-view", f"#/grid/{ta['substation_id']}")
    page.click("#lang-toggle")
    expect(page.locator("#grid-stat-connected h2")).to_have_text("接入容量")
    expect(page.locator("#grid-crumbs [aria-current=page]")).to_have_text(substation["name_zh"])
    page.reload()
    expect(page.locator("#grid-view")).to_have_attribute("data-state", "ready")
    expect(page.locator("#grid-crumbs li")).to_have_count(3)
    page.click("#lang-toggle")
    _assert_stayed_local(traffic)


# ------------------------------------------------------------------ resource database


@pytest.mark.browser
def test_resource_database_filters_and_pages_on_the_server_exports_and_shows_a_resource_history(
        city: City, browsing) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    _sign_in(page, city, "auditor", "#/resources")
    with city.client("auditor") as c:
        def api_page(**params) -> dict:
            return c.get("/api/v1/resources", params={"limit": 50, **params}).json()

        everything = api_page()
        assert _total(page) == everything["total"] == 300
        assert _row_ids(page, "res-rows") == [r["resource_id"] for r in everything["items"]]
        expect(page.locator("#res-scope")).to_have_attribute("data-scope", "city")
        expect(page.locator("#res-pager-info")).to_have_attribute("data-pages", "6")
        _shot(page, "20_resources")

        # paging is server-side: page 2 is the API's offset 50
        page.click("#res-next")
        expect(page.locator("#res-pager-info")).to_have_attribute("data-page", "2")
        assert _row_ids(page, "res-rows") == [r["resource_id"] for r in api_page(offset=50)["items"]]
        page.select_option("#res-size", "25")
        expect(page.locator("#res-pager-info")).to_have_attribute("data-pages", "12")
        expect(page.locator("#res-rows tbody tr[data-id]")).to_have_count(25)
        page.click("#res-last")
        expect(page.locator("#res-pager-info")).to_have_attribute("data-page", "12")
        assert _row_ids(page, "res-rows") == [r["resource_id"] for r in api_page(offset=275, limit=25)["items"]]

        # filters: type, then the cascading district → substation
        page.select_option("#res-f-type", "ev_charging")
        expect(page.locator("#res-pager-info")).to_have_attribute("data-page", "1")
        ev = api_page(resource_type="ev_charging")
        assert 0 < ev["total"] < 300
        _expect_total(page, ev["total"])
        assert set(page.locator("#res-rows td[data-col=type]").all_inner_texts()) == {"EV charging station"}
        district = ev["items"][0]["district_id"]
        expect(page.locator("#res-f-substation")).to_be_disabled()
        page.select_option("#res-f-district", district)
        expect(page.locator("#res-f-substation")).to_be_enabled()
        in_district = api_page(resource_type="ev_charging", district_id=district)
        _expect_total(page, in_district["total"])
        substations = c.get("/api/v1/grid/nodes", params={"parent": district}).json()["children"]
        options = page.locator("#res-f-substation option").evaluate_all("os => os.map(o => o.value).filter(Boolean)")
        assert options == [s["node_id"] for s in substations]
        full = c.get(f"/api/v1/resources/{in_district['items'][0]['resource_id']}").json()
        page.select_option("#res-f-substation", full["substation_id"])
        narrowed = api_page(resource_type="ev_charging", district_id=district, substation_id=full["substation_id"])
        assert narrowed["total"] >= 1
        _expect_total(page, narrowed["total"])
        assert "type=ev_charging" in page.evaluate("location.hash")
        _shot(page, "21_resources_filtered")

        # export with the same filters: the bearer-token download holds exactly the filtered rows
        with page.expect_download() as dl:
            page.click("#res-export-csv")
        download = dl.value
        assert download.suggested_filename == "resources.csv"
        rows = list(csv.DictReader(io.StringIO(download.path().read_text(encoding="utf-8"))))
        assert len(rows) == narrowed["total"]
        assert {r["resource_type"] for r in rows} == {"ev_charging"}
        assert {r["substation_id"] for r in rows} == {full["substation_id"]}
        expect(page.locator("#res-export-status")).to_have_attribute("data-state", "done")

        # search text, then clear
        page.click("#res-clear")
        _expect_total(page, 300)
        found = api_page(q="R000001")
        assert 0 < found["total"] < 300
        page.fill("#res-f-q", "R000001")
        _expect_total(page, found["total"])
        assert _row_ids(page, "res-rows") == [r["resource_id"] for r in found["items"]]

        # detail drawer with the resource's history; linkable and closable
        rid = page.locator("#res-rows tbody tr[data-id]").first.get_attribute("data-id")
        page.click(f"#res-rows tr[data-id='{rid}'] td[data-col=name]")
        expect(page.locator("#drawer")).to_have_attribute("data-state", "ready")
        expect(page.locator("#drawer")).to_have_attribute("data-id", rid)
        expect(page.locator("#detail-history")).to_be_visible()
        assert f"open={rid}" in page.evaluate("location.hash")
        history = c.get(f"/api/v1/resources/{rid}/history").json()
        expect(page.locator("#detail-history h4").nth(1)).to_contain_text(str(len(history["audit"])))
        _shot(page, "22_resource_drawer")
        page.reload()
        expect(page.locator("#drawer")).to_have_attribute("data-state", "ready")
        page.click("#drawer-close")
        expect(page.locator("#drawer")).to_be_hidden()
        assert "open=" not in page.evaluate("location.hash")

    # in Chinese: headings, filters, column names, types and the pager follow
    page.click("#res-clear")
    _expect_total(page, 300)
    page.click("#lang-toggle")
    expect(page.locator("#resources-view h1")).to_have_text("资源库")
    expect(page.locator("#res-export-csv")).to_have_text("导出 CSV")
    expect(page.locator("#res-rows th[data-col=type]")).to_have_text("类型")
    expect(page.locator("#res-pager-info")).to_contain_text("第 1 / 12 页")  # 25 rows a page, kept by clear
    expect(page.locator("#res-total")).to_have_text("共 300 个资源")
    _shot(page, "23_resources_zh")
    _assert_stayed_local(traffic)


# ------------------------------------------------------------------ tenancy


@pytest.mark.browser
def test_an_operator_sees_only_its_own_data_and_no_admission_controls(city: City, browsing) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    own, other = city.operator_id, city.second_operator_id
    _sign_in(page, city, "operator_admin", "#/resources")
    with city.client("operator_admin") as c:
        mine = c.get("/api/v1/resources", params={"limit": 1}).json()
        refused = c.get(f"/api/v1/operators/{other}")
    assert mine["scope"] == f"operator {own}"
    assert refused.status_code == 403

    assert _total(page) == mine["total"] > 0
    expect(page.locator("#res-scope")).to_have_attribute("data-scope", "operator")
    assert set(page.locator("#res-rows td[data-col=operator]").all_inner_texts()) == {own}
    # filtering by another operator's id returns nothing: the server fences the query
    page.evaluate("h => { location.hash = h; }", f"#/resources?operator={other}")
    _expect_total(page, 0)
    expect(page.locator("#res-rows .empty-row")).to_be_visible()
    _shot(page, "30_operator_resources_other_operator")

    # operators: its own only; another operator's detail shows the server's 403 message
    _open(page, "#/operators", "operators-view")
    assert _row_ids(page, "operators-list") == [own]
    _open(page, f"#/operators/{other}", "operators-view", "error")
    expect(page.locator("#operators-body .page-error-message")).to_have_text(refused.json()["message"])
    _shot(page, "31_operator_other_operator_403")
    _open(page, f"#/operators/{own}", "operators-view")
    expect(page.locator("#op-units table")).to_be_visible()
    expect(page.locator("#op-actions")).to_have_count(0)
    expect(page.locator("#operators-view button[data-action]")).to_have_count(0)

    # the grid totals are its own too
    _open(page, "#/grid", "grid-view")
    assert _value(page, "#grid-stat-resources") == mine["total"]
    _assert_stayed_local(traffic)


@pytest.mark.browser
def test_the_city_admin_moves_an_operator_through_admission_and_sees_the_servers_refusal(
        city: City, browsing) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    with city.client("city_admin") as c:
        applied = [o for o in c.get("/api/v1/operators").json()["items"] if o["state"] == "applied"]
    assert applied, "the demo city has an operator waiting for admission"
    op = applied[0]["operator_id"]

    _sign_in(page, city, "city_admin", "#/operators")
    expect(page.locator("#operators-view")).to_have_attribute("data-state", "ready")
    expect(page.locator(f"#operators-list tr[data-id='{op}']")).to_have_attribute("data-state", "applied")
    expect(page.locator("#chart-operators canvas").first).to_be_visible()
    _shot(page, "32_operators_admin")

    page.click(f"#operators-list tr[data-id='{op}'] a")
    _arrived(page, "operators-view", f"#/operators/{op}")
    buttons = page.locator("#op-actions button[data-action]")
    assert buttons.evaluate_all("bs => bs.map(b => b.dataset.action)") == ["start_review", "reject"]
    expect(page.locator("#op-checks .empty-row")).to_be_visible()

    page.fill("#op-reason", "application file received")
    page.click("#op-actions button[data-action=start_review]")
    result = page.locator("#op-action-result")
    expect(result).to_have_attribute("data-ok", "true")
    expect(page.locator(".detail-badges .pill-opstate")).to_have_attribute("data-opstate", "under_review")
    expect(page.locator("#op-checks tbody tr[data-check]")).to_have_count(4)
    expect(page.locator("#op-checks tr[data-check=tss_connectivity] [data-passed]")).to_have_attribute(
        "data-passed", "true")

    # admission needs every check passed: the server refuses and the page shows its words
    page.fill("#op-reason", "all documents received")
    page.click("#op-actions button[data-action=admit]")
    expect(result).to_have_attribute("data-ok", "false")
    with city.client("city_admin") as c:
        again = c.post(f"/api/v1/operators/{op}/transitions", json={"action": "admit", "reason": "check"})
    assert again.status_code == 409
    expect(result.locator(".result-message")).to_have_text(again.json()["message"])
    expect(result).to_have_attribute("role", "alert")
    expect(page.locator(".detail-badges .pill-opstate")).to_have_attribute("data-opstate", "under_review")
    _shot(page, "33_operator_admission_refused")

    # a dispatcher reads the same operator without any admission control
    page.click("#logout")
    _sign_in(page, city, "dispatcher", f"#/operators/{op}")
    expect(page.locator("#operators-view")).to_have_attribute("data-state", "ready")
    expect(page.locator("#op-checks tbody tr[data-check]")).to_have_count(4)
    expect(page.locator("#op-actions")).to_have_count(0)
    page.click("#lang-toggle")
    expect(page.locator("#op-checks h2")).to_have_text("资质校验（4）")
    expect(page.locator(".detail-badges .pill-opstate")).to_have_text("审核中")
    _shot(page, "34_operator_detail_dispatcher_zh")
    _assert_stayed_local(traffic)


# ------------------------------------------------------------------ pools


@pytest.mark.browser
def test_pools_per_scenario_with_totals_and_a_pool_with_its_members_by_page(city: City, browsing) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    _sign_in(page, city, "dispatcher", "#/pools?scenario=peak_shaving")
    with city.client("dispatcher") as c:
        evaluated = c.get("/api/v1/pools", params={"scenario": "peak_shaving", "evaluate": "true"}).json()["items"]
        presets = c.get("/api/v1/pools/presets").json()["items"]
        city_pool = next(p for p in evaluated if p["level"] == "city")
        members = c.get(f"/api/v1/pools/{city_pool['pool_id']}", params={"members_limit": 50, "members_offset": 50}).json()
    expect(page.locator("#pools-view")).to_have_attribute("data-totals", "ready")
    expect(page.locator("#pool-tabs .tab")).to_have_count(len(presets))
    expect(page.locator("#pool-tabs .tab.active")).to_have_attribute("data-scenario", "peak_shaving")
    assert sorted(_row_ids(page, "pools-list")) == sorted(p["pool_id"] for p in evaluated)
    row = page.locator(f"#pools-list tr[data-id='{city_pool['pool_id']}']")
    expect(row.locator("td[data-col=count]")).to_have_text(str(city_pool["totals"]["count"]))
    assert _value(page, "#pool-stat-count") == city_pool["totals"]["count"]
    _shot(page, "40_pools_peak_shaving")

    page.click("#pool-tabs .tab[data-scenario=valley_filling]")
    expect(page.locator("#pool-tabs .tab.active")).to_have_attribute("data-scenario", "valley_filling")
    expect(page.locator("#pools-view")).to_have_attribute("data-totals", "ready")
    assert all(i.startswith("valley_filling:") for i in _row_ids(page, "pools-list"))

    _open(page, f"#/pools/{quote(city_pool['pool_id'])}", "pools-view")
    expect(page.locator("#pools-view")).to_have_attribute("data-totals", "ready")  # the definition shows first
    total = city_pool["totals"]["count"]
    expect(page.locator("#pool-members li")).to_have_count(min(50, total))
    assert _value(page, "#pool-count") == total
    page.click("#pool-next")
    expect(page.locator("#pool-pager-info")).to_have_attribute("data-page", "2")
    expect(page.locator("#pools-view")).to_have_attribute("data-totals", "ready")
    ids = page.locator("#pool-members a").evaluate_all("as => as.map(a => a.dataset.id)")
    assert ids == members["totals"]["members"]["items"]
    _shot(page, "41_pool_members")
    page.click(f"#pool-members a[data-id='{ids[0]}']")
    expect(page.locator("#drawer")).to_have_attribute("data-state", "ready")
    expect(page.locator("#drawer")).to_have_attribute("data-id", ids[0])
    page.click("#drawer-close")

    # in Chinese the scenario tabs take the presets' Chinese names
    _open(page, "#/pools?scenario=peak_shaving", "pools-view")
    page.click("#lang-toggle")
    peak = next(p for p in presets if p["scenario"] == "peak_shaving")
    expect(page.locator("#pool-tabs .tab[data-scenario=peak_shaving]")).to_contain_text(peak["name_zh"])
    expect(page.locator("#pools-view h1")).to_have_text("资源池")
    expect(page.locator("#pools-view")).to_have_attribute("data-totals", "ready")
    page.wait_for_timeout(300)
    _shot(page, "42_pools_zh")
    _assert_stayed_local(traffic)


# ------------------------------------------------------------------ every role, every page


NAV_PAGES = ("overview", "grid", "resources", "operators", "pools", "events", "settlement", "ev")
READY = {name: f"{name}-view" for name in NAV_PAGES}
#: pages a role is not given (DESIGN.md "Who uses it"): an owner has no pools and no events
NOT_GIVEN = {"owner": {"pools", "events"}}


@pytest.mark.browser
@pytest.mark.parametrize("role", ROLES)
def test_each_role_opens_every_page_it_is_given_and_no_other(city: City, browsing, role: str) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    _sign_in(page, city, role)
    expect(page.locator("#overview-view")).to_have_attribute("data-state", "ready")
    given = [p for p in NAV_PAGES if p not in NOT_GIVEN.get(role, set())]
    visible = page.locator("#nav .nav-item:not([hidden]):not(:disabled)").evaluate_all(
        "items => items.map(i => i.dataset.page)")
    assert visible == given
    expect(page.locator("#nav .nav-item:disabled")).to_have_count(0)

    with city.client(role) as c:
        scoped_total = c.get("/api/v1/resources", params={"limit": 1}).json()["total"]
    for i, name in enumerate(given):
        page.click(f"#nav [data-page={name}]")
        expect(page.locator(f"#{READY[name]}")).to_have_attribute("data-state", "ready")
        expect(page.locator(f"#nav [data-page={name}]")).to_have_attribute("aria-current", "page")
        if name == "resources":
            assert _total(page) == scoped_total
        if name == "pools":
            expect(page.locator("#pools-view")).to_have_attribute("data-totals", "ready")
            expect(page.locator("#pools-defaults")).to_have_count(0)  # pools exist; only the admin could create
        page.wait_for_timeout(300)  # charts finish their first animation for the screenshot
        _shot(page, f"5{ROLES.index(role)}{i}_{role}_{name}")

    if role == "owner":
        # not given: the page says so instead of showing controls the role cannot use
        page.evaluate("() => { location.hash = '#/pools'; }")
        expect(page.locator("#denied-view")).to_be_visible()
        expect(page.locator("#pools-view")).to_be_hidden()
        expect(page.locator("#denied-message")).to_contain_text("Resource owner")
    _assert_stayed_local(traffic)
