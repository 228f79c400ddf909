"""The dashboard and the API docs in a real browser: Debian's headless Chromium driven by Playwright.

The real app runs under uvicorn in a background thread on a free loopback port, against a
temporary SQLite database holding a generated city of 300 resources (seed 1) and one demo
account per role (``openvpp.sim.demo.prepare_demo``). Every request
the browser makes is recorded; anything not addressed to 127.0.0.1 is aborted and fails the
test, so the page and Swagger UI are proven to work with no internet.

Chromium is required: when /usr/bin/chromium is missing these tests fail, never skip
(``apt-get install -y chromium``). The vendor libraries must be built first
(``bash scripts/build_web.sh``). Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, expect, sync_playwright

from openvpp.api.app import create_app
from openvpp.core.settings import Settings
from openvpp.sim.demo import prepare_demo
from openvpp.web import BUILD_COMMAND, missing_vendor_files, mount_web
from tests._server import serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]
#: never bind these: the dev server and the brokers/databases of the project
REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "artifacts" / "screenshots"

#: resource type → the Chinese label the page must show (domain vocabulary of the brief)
TYPE_ZH = {
    "ev_charging": "充电站", "ev_swapping": "换电站", "v2g_charger": "V2G充电桩", "central_ac": "中央空调",
    "district_cooling": "区域供冷", "user_storage": "用户侧储能", "shore_power": "港口岸电",
    "distributed_pv": "分布式光伏", "data_center": "数据中心", "base_station": "通信基站",
}


# ------------------------------------------------------------------ the live app


@dataclass
class Site:
    base_url: str
    users: dict[str, tuple[str, str]]
    openapi_url: str
    title: str

    @contextmanager
    def client(self, role: str) -> Iterator[httpx.Client]:
        """An HTTP client signed in as the demo user of ``role`` (to compare pages with the API)."""
        username, password = self.users[role]
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            tok = client.post("/api/v1/auth/token", data={"username": username, "password": password})
            tok.raise_for_status()
            client.headers["Authorization"] = f"Bearer {tok.json()['access_token']}"
            yield client

    def api(self, role: str, path: str) -> dict:
        """GET an API path as the demo user of ``role`` (to compare the page with the data)."""
        with self.client(role) as client:
            resp = client.get(path)
            resp.raise_for_status()
            return resp.json()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    missing = missing_vendor_files()
    if missing:
        pytest.fail(f"web vendor files are not built ({', '.join(missing)}): run `{BUILD_COMMAND}` first")

    work = tmp_path_factory.mktemp("dashboard")
    settings = Settings(home=work, database_url=f"sqlite:///{work / 'openvpp.db'}",
                        jwt_secret="browser-test-secret-" + "x" * 32, bcrypt_rounds=4)
    users = {str(role): tuple(pair)
             for role, pair in prepare_demo(settings, n_resources=300, seed=1)["users"].items()}
    app = create_app(settings)

    with serve(app) as base:
        yield Site(base, users, app.openapi_url or "", app.title)


# ------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's browser with `apt-get install -y chromium`")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Traffic:
    """Every URL the browser asked for, and those it was stopped from reaching."""

    seen: list[str] = field(default_factory=list)
    off_host: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


def _on_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True  # never leaves the browser
    return parts.hostname == "127.0.0.1"


@pytest.fixture
def browsing(browser: Browser) -> Iterator[tuple[BrowserContext, Traffic]]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-US",
                                  timezone_id="Asia/Shanghai")
    context.set_default_timeout(20_000)
    traffic = Traffic()

    def guard(route: Route, request: Request) -> None:
        traffic.seen.append(request.url)
        if _on_loopback(request.url):
            route.continue_()
        else:
            traffic.off_host.append(request.url)
            route.abort("blockedbyclient")

    context.route("**/*", guard)
    context.on("request", lambda r: traffic.seen.append(r.url))
    try:
        yield context, traffic
    finally:
        context.close()


def _new_page(context: BrowserContext, traffic: Traffic) -> Page:
    page = context.new_page()
    page.on("pageerror", lambda exc: traffic.page_errors.append(str(exc)))
    return page


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _login(page: Page, username: str, password: str) -> None:
    expect(page.locator("#login-view")).to_be_visible()
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-submit")


def _wait_ready(page: Page) -> None:
    expect(page.locator("#overview-view")).to_have_attribute("data-state", "ready")


def _kpi(page: Page, card: str) -> float:
    return float(page.get_attribute(f"#{card} .kpi-value", "data-value") or "nan")


def _chart_axis(page: Page, chart_id: str, axis: str) -> list[str]:
    return page.evaluate(
        "([id, axis]) => echarts.getInstanceByDom(document.getElementById(id)).getOption()[axis][0].data",
        [chart_id, axis],
    )


def _assert_stayed_local(traffic: Traffic) -> None:
    assert traffic.seen, "no request was recorded"
    assert traffic.off_host == [], f"requests left 127.0.0.1: {traffic.off_host}"
    assert all(_on_loopback(u) for u in traffic.seen), [u for u in traffic.seen if not _on_loopback(u)]
    assert traffic.page_errors == [], traffic.page_errors


# ------------------------------------------------------------------ tests


@pytest.mark.browser
def test_overview_shows_city_figures_in_english_and_chinese_and_fences_the_operator(site: Site, browsing) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    page.goto(site.base_url + "/")
    expect(page.locator("#login-form")).to_be_visible()
    _shot(page, "01_login")

    # city admin: whole-city figures
    admin_user, admin_pw = site.users["city_admin"]
    _login(page, admin_user, admin_pw)
    _wait_ready(page)
    expect(page.locator("#user-name")).to_have_text(admin_user)
    expect(page.locator("#user-role")).to_have_text("City administrator")
    expect(page.locator("#scope-label")).to_have_attribute("data-scope", "city")
    expect(page.locator("#kpi-connected h2")).to_have_text("Connected capacity")

    report = site.api("city_admin", "/api/v1/reports/targets")
    admin_connected = _kpi(page, "kpi-connected")
    assert admin_connected > 0
    assert admin_connected == pytest.approx(report["city"]["connected_mw"], rel=1e-9)
    assert _kpi(page, "kpi-adjustable") == pytest.approx(report["city"]["adjustable_mw"], rel=1e-9)
    assert _kpi(page, "kpi-resources") == report["city"]["resources"]
    years = page.locator("#kpi-connected .target-row").evaluate_all("rows => rows.map(r => r.dataset.year)")
    assert years == ["2025", "2026", "2027"]

    expect(page.locator("#chart-district canvas").first).to_be_visible()
    expect(page.locator("#chart-type canvas").first).to_be_visible()
    assert sorted(_chart_axis(page, "chart-district", "xAxis")) == sorted(d["name"] for d in report["by_district"])

    nav = page.locator("#nav .nav-item")
    expect(nav).to_have_count(8)
    expect(page.locator("#nav .nav-item:disabled")).to_have_count(0)
    _shot(page, "02_overview_admin_en")

    # switch to Chinese: labels, role, district names and resource types all follow
    page.click("#lang-toggle")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#kpi-connected h2")).to_have_text("接入容量")
    expect(page.locator("#kpi-adjustable h2")).to_have_text("可调节能力")
    expect(page.locator("#nav [data-page=overview]")).to_have_text("城市总览")
    expect(page.locator("#user-role")).to_have_text("市级管理员")
    expect(page.locator("#scope-label")).to_have_text("数据范围：全市")
    assert sorted(_chart_axis(page, "chart-district", "xAxis")) == sorted(
        d["name_zh"] or d["name"] for d in report["by_district"])
    by_type = site.api("city_admin", "/api/v1/resources/summary?by=type")
    assert sorted(_chart_axis(page, "chart-type", "yAxis")) == sorted(TYPE_ZH[r["key"]] for r in by_type["rows"])
    page.wait_for_timeout(500)  # let the chart animation settle for the screenshot
    _shot(page, "03_overview_admin_zh")

    # the language is remembered and the session survives a reload
    page.reload()
    _wait_ready(page)
    expect(page.locator("#kpi-connected h2")).to_have_text("接入容量")
    expect(page.locator("#user-name")).to_have_text(admin_user)

    # log out: figures are cleared; the operator admin sees only its own tenant
    page.click("#logout")
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#overview-view")).to_be_hidden()
    assert page.get_attribute("#kpi-connected .kpi-value", "data-value") == ""

    op_user, op_pw = site.users["operator_admin"]
    _login(page, op_user, op_pw)
    _wait_ready(page)
    expect(page.locator("#user-role")).to_have_text("运营商管理员")
    scope = page.locator("#scope-label")
    expect(scope).to_have_attribute("data-scope", "operator")
    op_report = site.api("operator_admin", "/api/v1/reports/targets")
    op_id = op_report["scope"].split()[-1]
    expect(scope).to_contain_text(op_id)
    expect(scope).to_contain_text("仅运营商")
    op_connected = _kpi(page, "kpi-connected")
    assert op_connected == pytest.approx(op_report["city"]["connected_mw"], rel=1e-9)
    assert 0 < op_connected < admin_connected
    page.wait_for_timeout(500)
    _shot(page, "04_overview_operator_zh")

    _assert_stayed_local(traffic)


@pytest.mark.browser
def test_bad_password_and_expired_token_return_to_the_login_form_with_the_message(site: Site, browsing) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    page.goto(site.base_url + "/")

    admin_user, _ = site.users["city_admin"]
    _login(page, admin_user, "not-the-password")
    error = page.locator("#login-error")
    expect(error).to_be_visible()
    with httpx.Client(base_url=site.base_url) as client:
        body = client.post("/api/v1/auth/token", data={"username": admin_user, "password": "not-the-password"})
    assert body.status_code == 401
    server_message = body.json().get("message") or body.json().get("detail")
    assert isinstance(server_message, str) and server_message
    expect(error).to_contain_text(server_message)
    expect(page.locator("#overview-view")).to_be_hidden()
    _shot(page, "05_login_error")

    # a token the server no longer accepts: the first API call answers 401 and the page returns to login
    page.evaluate("""() => sessionStorage.setItem('openvpp.session', JSON.stringify(
        {access_token: 'expired.or.forged', role: 'city_admin', username: 'ghost'}))""")
    page.reload()
    expect(page.locator("#login-view")).to_be_visible()
    expect(error).to_have_text("Your session has ended. Please sign in again.")
    assert page.evaluate("() => sessionStorage.getItem('openvpp.session')") is None

    _assert_stayed_local(traffic)


@pytest.mark.browser
def test_swagger_ui_renders_the_api_from_local_assets_only(site: Site, browsing) -> None:
    context, traffic = browsing
    page = _new_page(context, traffic)
    page.goto(site.base_url + "/docs")
    title = page.locator(".swagger-ui .info .title")
    expect(title).to_contain_text(site.title)
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert f"{site.base_url}/static/vendor/swagger-ui/swagger-ui-bundle.js" in traffic.seen
    assert f"{site.base_url}{site.openapi_url}" in traffic.seen
    _shot(page, "06_docs")

    _assert_stayed_local(traffic)


# ------------------------------------------------------------------ without a browser


def test_pages_answer_503_with_the_build_command_when_vendor_files_are_missing(tmp_path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>x</title>")
    app = FastAPI(title="t", docs_url=None, redoc_url=None)
    mount_web(app, static_dir=static)
    client = TestClient(app)

    for path in ("/", "/docs"):
        resp = client.get(path)
        assert resp.status_code == 503, path
        assert BUILD_COMMAND in resp.text
        assert "vendor/" in resp.text

    # once the files are there the same app serves both pages, with no CDN address in /docs
    for name in ("vendor/echarts.min.js", "vendor/swagger-ui/swagger-ui-bundle.js",
                 "vendor/swagger-ui/swagger-ui.css", "vendor/swagger-ui/favicon-32x32.png"):
        (static / name).parent.mkdir(parents=True, exist_ok=True)
        (static / name).write_bytes(b"/* stub */")
    assert client.get("/").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text and "https://" not in docs.text
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert client.get("/static/vendor/echarts.min.js").text == "/* stub */"
