"""The Events page in a real browser: a dispatcher publishes an event and watches it progress.

Same set-up as ``test_browser_pages.py`` (the real app under uvicorn on a loopback port, a generated
city of 300 resources, seed 1, one demo account per role, Debian's headless Chromium, every request
kept on 127.0.0.1). The demo operators' largest trading units qualify for the market (>= 1 MW for
>= 1 h): OP04@GZ-HZ-S09 (the operator admin "operator") and OP03@GZ-PY-S08 ("operator2").

The event's window opens minutes after the test starts, so declarations are still open; the
devices' telemetry of the hour before and of the window is pushed through ``POST /api/v1/telemetry``
with the timestamps of those quarter hours. The server accepts points up to 3 h ahead of its clock
(``OPENVPP_TELEMETRY_FUTURE_S``, a technical setting) so the test need not wait for the window, and
the test runs the ingest worker's rollup job itself (``refresh_rollups``). Everything else — the
clearing, the instructions, the rollups and the execution view — is the platform's own.

Screenshots of each state go to ``artifacts/screenshots/`` (``events_*``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import text

from openvpp.api.app import create_app
from openvpp.core.settings import Settings
from openvpp.core.timeslots import TZ, slot_start_utc
from openvpp.sim.demo import prepare_demo
from openvpp.store.db import get_engine
from openvpp.web import BUILD_COMMAND, missing_vendor_files
from tests import test_browser_dashboard as dashboard
from tests._server import serve
from tests.test_browser_dashboard import Site, _assert_stayed_local, _new_page, _shot
from tests.test_browser_pages import _arrived, _sign_in

browser = dashboard.browser
browsing = dashboard.browsing

UNIT_1 = "OP04@GZ-HZ-S09"       # declared from the page by the operator admin
UNIT_2 = "OP03@GZ-PY-S08"       # declared over the API by the second operator
TARGET_KW = 2000.0
SLOTS = 4                       # 1 h: the market minimum
FUTURE_S = 3 * 3600


@dataclass
class EventSite:
    base_url: str
    users: dict[str, tuple[str, str]]
    database_url: str
    app: object

    client = Site.client        # an HTTP client signed in as a role's demo user

    def members(self, unit: str) -> list[dict]:
        op, sub = unit.split("@")
        with get_engine(self.database_url).connect() as conn:
            rows = conn.execute(text(
                "SELECT r.resource_id, r.capacity_kw, r.adjustable_down_kw FROM resources r "
                "JOIN grid_nodes g ON g.node_id = r.ta_id WHERE r.operator_id = :op AND g.substation_id = :sub "
                "AND r.state = 'active' ORDER BY r.resource_id"), {"op": op, "sub": sub}).mappings().all()
        return [dict(r) for r in rows]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[EventSite]:
    missing = missing_vendor_files()
    if missing:
        pytest.fail(f"web vendor files are not built ({', '.join(missing)}): run `{BUILD_COMMAND}` first")
    previous = os.environ.get("OPENVPP_TELEMETRY_FUTURE_S")
    os.environ["OPENVPP_TELEMETRY_FUTURE_S"] = str(FUTURE_S)
    work = tmp_path_factory.mktemp("events")
    settings = Settings(home=work, database_url=f"sqlite:///{work / 'openvpp.db'}",
                        jwt_secret="browser-events-secret-" + "x" * 32, bcrypt_rounds=4)
    info = prepare_demo(settings, n_resources=300, seed=1)
    assert (info["operator_id"], info["second_operator_id"]) == ("OP04", "OP03")
    users = {str(role): tuple(pair) for role, pair in info["users"].items()}
    app = create_app(settings)
    try:
        with serve(app) as base:
            yield EventSite(base, users, settings.database_url, app)
    finally:
        if previous is None:
            os.environ.pop("OPENVPP_TELEMETRY_FUTURE_S", None)
        else:
            os.environ["OPENVPP_TELEMETRY_FUTURE_S"] = previous


def _window() -> tuple[str, int]:
    """(local day, start slot) of the first quarter hour starting at least 6 minutes from now."""
    at = math.ceil((time.time() + 360) / 900) * 900        # Beijing is a whole number of hours off UTC
    start = datetime.fromtimestamp(at, TZ)
    slot = start.hour * 4 + start.minute // 15
    if slot + SLOTS > 96:                      # the window may not cross midnight: next day's first hour
        start = (start + timedelta(days=1)).replace(hour=0, minute=0)
        slot = 0
    return start.date().isoformat(), slot


def _push_telemetry(site: EventSite, day: str, start: int) -> dict[int, float]:
    """Every member of both units: 80 % of capacity in the hour before; in the first three slots of the
    window 90 % (unit 1) or 60 % (unit 2) of its adjustable power less. Returns the expected delivered
    kW per slot (reference − metered summed over the devices)."""
    d = datetime.fromisoformat(day).date()
    points, expected = [], {}
    for unit, share in ((UNIT_1, 0.9), (UNIT_2, 0.6)):
        for m in site.members(unit):
            ref = 0.8 * m["capacity_kw"]
            met = max(ref - share * m["adjustable_down_kw"], 0.0)
            for k in range(start - 4, start + SLOTS - 1):
                at = slot_start_utc(d, 0) + timedelta(minutes=15 * k + 7)     # k < 0: the evening before
                points.append({"d": m["resource_id"], "t": int(at.timestamp() * 1000),
                               "p": round(ref if k < start else met, 3)})
                if k >= start:
                    expected[k] = expected.get(k, 0.0) + round(ref, 3) - round(met, 3)
    with site.client("city_admin") as c:
        out = c.post("/api/v1/telemetry", json={"gw": "browser-events", "points": points})
        out.raise_for_status()
        assert out.json()["accepted"] == len(points), out.json()
    # the ingest worker's periodic job: roll the new minutes and quarter hours up
    site.app.state.telemetry.service.refresh_rollups(include_open=True)
    return expected


def _eventually(read, timeout_s: float = 5.0):
    """``read()`` once it returns something truthy (the API commits a write as its answer goes out)."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not value and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


def _fill_form(page: Page, day: str, start: int, end: int, deadline: str) -> None:
    page.select_option("#ev-product", "peak_shaving")
    page.fill("#ev-name", "Browser peak shaving")
    page.fill("#ev-day", day)
    page.select_option("#ev-start", str(start))
    page.select_option("#ev-end", str(end))
    page.fill("#ev-target", str(int(TARGET_KW)))
    page.fill("#ev-scope", "GZ")
    page.fill("#ev-deadline", deadline)


def _action(page: Page, action: str, state: str) -> None:
    page.click(f"#event-actions button[data-action={action}]")
    expect(page.locator("#event-detail")).to_have_attribute("data-state", state)


def _exec_slots(page: Page) -> dict[int, str]:
    return page.locator("#event-execution tbody tr[data-slot]").evaluate_all(
        "rows => Object.fromEntries(rows.map(r => [r.dataset.slot, r.dataset.delivered]))")


@pytest.mark.browser
def test_dispatcher_publishes_an_event_and_watches_declarations_clearing_and_live_execution(
        site: EventSite, browsing) -> None:
    context, traffic = browsing
    day, start = _window()
    end = start + SLOTS
    window_start = slot_start_utc(datetime.fromisoformat(day).date(), start).astimezone(TZ)
    deadline = window_start.strftime("%Y-%m-%dT%H:%M")

    # ---- the dispatcher: the form refuses a bad window with the server's field-named message
    disp = _new_page(context, traffic)
    _sign_in(disp, site, "dispatcher", "#/events")
    _arrived(disp, "events-view", "#/events")
    expect(disp.locator("#events-view h1")).to_have_text("Events")
    disp.click("#event-new")
    _arrived(disp, "events-view", "#/events/new")
    bad = max(start, 1)                        # an empty window (end options run 1..96, so not 0)
    _fill_form(disp, day, bad, bad, deadline)
    disp.click("#ev-create")
    errors = disp.locator("#event-form-errors")
    expect(errors).to_contain_text("start_slot/end_slot")
    expect(errors).to_contain_text("need 0 <= start_slot < end_slot <= 96")
    _shot(disp, "events_01_form_error")

    disp.select_option("#ev-start", str(start))
    disp.select_option("#ev-end", str(end))
    disp.click("#ev-create")
    expect(disp.locator("#event-detail")).to_have_attribute("data-state", "draft")
    event_id = disp.get_attribute("#event-detail", "data-id")
    _arrived(disp, "events-view", f"#/events/{event_id}")
    with site.client("dispatcher") as c:
        ev = c.get(f"/api/v1/events/{event_id}").json()
    assert (ev["day"], ev["start_slot"], ev["end_slot"], ev["targets_kw"]) == (day, start, end, [TARGET_KW] * SLOTS)
    assert datetime.fromisoformat(ev["declare_deadline"]).replace(tzinfo=UTC) == window_start.astimezone(UTC)
    _shot(disp, "events_02_draft")
    _action(disp, "publish", "published")
    _action(disp, "open", "declaring")
    expect(disp.locator("#event-action-result")).to_contain_text("declaring")
    _shot(disp, "events_03_declaring")

    # the list shows it with its state, product, window, target and scope; the filter keeps it
    disp.click("#events-view .back")
    _arrived(disp, "events-view", "#/events")
    disp.select_option("#event-f-state", "declaring")
    disp.click("#event-f-apply")
    _arrived(disp, "events-view", "#/events?state=declaring")
    row = disp.locator(f"#events-list tbody tr[data-id='{event_id}']")
    expect(row).to_have_attribute("data-state", "declaring")
    # the end is named by its slot: an hour ending at midnight reads 24:00, on the same day
    expect(row.locator("td[data-col=window]")).to_have_text(f"{day} {window_start:%H:%M}–"
                                                            f"{end // 4:02d}:{end % 4 * 15:02d}")
    expect(row.locator("td[data-col=scope]")).to_have_text("GZ")
    disp.select_option("#event-f-state", "draft")
    disp.click("#event-f-apply")
    _arrived(disp, "events-view", "#/events?state=draft")
    expect(disp.locator(f"#events-list tbody tr[data-id='{event_id}']")).to_have_count(0)

    # ---- the operator admin declares from the page; a too small offer is refused by name
    op = _new_page(context, traffic)
    _sign_in(op, site, "operator_admin", f"#/events/{event_id}")
    _arrived(op, "events-view", f"#/events/{event_id}")
    expect(op.locator("#decl-unit")).to_have_value(UNIT_1)
    op.fill("#decl-kw", "500")
    op.click("#decl-submit")
    expect(op.locator("#event-declare-result")).to_contain_text("quantities_kw")
    expect(op.locator("#event-declare-result")).to_contain_text("trading unit minimum")
    op.fill("#decl-kw", "1300")
    op.fill("#decl-price", "1.0")
    op.click("#decl-submit")
    expect(op.locator(f"#event-declarations tbody tr[data-id='{UNIT_1}']")).to_have_count(1)
    _shot(op, "events_04_operator_declared")

    # the second operator declares over the API
    with site.client("operator_admin_2") as c:
        r = c.post(f"/api/v1/events/{event_id}/declarations",
                   json={"unit_id": UNIT_2, "quantities_kw": [1200.0] * SLOTS, "prices_yuan_per_kwh": 2.0})
        assert r.status_code == 201, r.text
        # (the API commits as its answer goes out: wait until a read sees the write)
        assert _eventually(lambda: [d["unit_id"] for d in c.get(f"/api/v1/events/{event_id}/declarations")
                                    .json()["items"]]) == [UNIT_2]

    # ---- the dispatcher sees both declarations, clears and starts execution
    disp.goto(f"{site.base_url}/#/events/{event_id}")
    _arrived(disp, "events-view", f"#/events/{event_id}")
    ids = disp.locator("#event-declarations tbody tr[data-id]").evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert sorted(ids) == sorted([UNIT_1, UNIT_2])
    _action(disp, "clear", "cleared")
    clearing = disp.locator("#event-clearing")
    expect(clearing).to_have_attribute("data-total", str(int(TARGET_KW * SLOTS)))
    cleared = disp.locator("#event-clearing-table tbody tr").evaluate_all("rs => rs.map(r => Number(r.dataset.cleared))")
    assert cleared == [TARGET_KW] * SLOTS
    with site.client("dispatcher") as c:
        awards = c.get(f"/api/v1/events/{event_id}").json()["awards"]
    # merit order: the operator admin's 1,300 kW at 1.0 first, the rest of the target from the second
    assert {(a["unit_id"], a["cleared_kw"]) for a in awards} == {(UNIT_1, 1300.0), (UNIT_2, 700.0)}
    _shot(disp, "events_05_cleared")
    _action(disp, "execute", "executing")
    expect(disp.locator("#event-exec-panel")).to_have_attribute("data-live", "on")
    assert all(v == "" for v in _exec_slots(disp).values())      # nothing measured yet

    # the second operator acknowledges its instructions
    with site.client("operator_admin_2") as c:
        mine = c.get(f"/api/v1/events/{event_id}").json()["instructions"]
        assert {i["unit_id"] for i in mine} == {UNIT_2} and len(mine) == SLOTS
        acks = c.post("/api/v1/operator/acks", json={"instruction_ids": [i["instruction_id"] for i in mine]})
        assert acks.status_code == 200 and {a["state"] for a in acks.json()["items"]} == {"acked"}

    # ---- telemetry arrives; the page, polling, shows delivered against target and cleared
    expected = _push_telemetry(site, day, start)
    first = disp.locator(f"#event-execution tbody tr[data-slot='{start}']")
    expect(first).not_to_have_attribute("data-delivered", "", timeout=20_000)
    shown = _exec_slots(disp)
    with site.client("dispatcher") as c:
        api_exec = c.get(f"/api/v1/events/{event_id}/execution").json()
    for s in api_exec["slots"]:
        if s["slot"] < end - 1:
            assert float(shown[str(s["slot"])]) == pytest.approx(s["delivered_kw"])
            assert s["delivered_kw"] == pytest.approx(expected[s["slot"]], abs=1e-6)
            assert s["acknowledged_kw"] == 700.0 and s["instructed_kw"] == TARGET_KW
        else:
            assert shown[str(s["slot"])] == "" and s["delivered_kw"] is None   # not measured yet
    assert expected[start] > 1000.0
    series = disp.evaluate("""() => echarts.getInstanceByDom(document.getElementById('chart-execution'))
        .getOption().series.map(s => ({id: s.id, data: s.data}))""")
    by_id = {s["id"]: s["data"] for s in series}
    assert by_id["target"] == [TARGET_KW] * SLOTS and by_id["cleared"] == [TARGET_KW] * SLOTS
    assert by_id["delivered"][:SLOTS - 1] == pytest.approx([expected[k] for k in range(start, end - 1)])
    assert by_id["delivered"][SLOTS - 1] is None
    ops = disp.locator("#event-exec-operators tbody tr[data-id]").evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert sorted(ops) == ["OP03", "OP04"]
    disp.wait_for_timeout(500)
    _shot(disp, "events_06_executing_live")

    # ---- the operator admin sees only its own declaration and execution rows
    op.reload()
    _arrived(op, "events-view", f"#/events/{event_id}")
    expect(op.locator("#event-exec-panel")).to_have_attribute("data-scope", "operator OP04")
    assert op.locator("#event-declarations tbody tr[data-id]").evaluate_all("rs => rs.map(r => r.dataset.id)") == [UNIT_1]
    assert op.locator("#event-exec-operators tbody tr[data-id]").evaluate_all("rs => rs.map(r => r.dataset.id)") == ["OP04"]
    with site.client("operator_admin") as c:
        own = c.get(f"/api/v1/events/{event_id}/execution").json()
    with site.client("operator_admin_2") as c:
        other = c.get(f"/api/v1/events/{event_id}/execution").json()
    assert [o["operator_id"] for o in own["operators"]] == ["OP04"]
    assert [o["operator_id"] for o in other["operators"]] == ["OP03"]
    op_shown = _exec_slots(op)
    for s_own, s_other, s_all in zip(own["slots"], other["slots"], api_exec["slots"], strict=True):
        value = op_shown[str(s_own["slot"])]
        if s_own["delivered_kw"] is None:
            assert value == ""
            continue
        assert float(value) == pytest.approx(s_own["delivered_kw"])
        # the page shows the operator's own delivery, not the city's nor the other operator's
        assert s_own["delivered_kw"] + s_other["delivered_kw"] == pytest.approx(s_all["delivered_kw"])
        assert float(value) != pytest.approx(s_all["delivered_kw"])
        assert s_own["cleared_kw"] == 1300.0 and s_other["cleared_kw"] == 700.0
    page_text = op.locator("#events-body").inner_text()
    assert "OP03" not in page_text and UNIT_2 not in page_text and "null" not in page_text
    op.wait_for_timeout(500)
    _shot(op, "events_07_operator_execution")

    # ---- the same page in Chinese
    op.click("#lang-toggle")
    expect(op.locator("#events-view h1")).to_have_text("需求响应事件")
    expect(op.locator("#event-exec-panel h2")).to_have_text("执行")
    expect(op.locator("#event-detail .event-state")).to_have_text("执行中")
    _shot(op, "events_08_operator_execution_zh")
    op.click("#lang-toggle")

    _assert_stayed_local(traffic)
