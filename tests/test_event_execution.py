"""The execution view of an event (services.execution, GET /events/{id}/execution): target, cleared,
instructed, acknowledged and delivered per slot, operator and unit, where delivered is the pre-event
power minus the metered power of the 15-minute rollups — on SQLite and PostgreSQL."""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient

from openvpp.api.app import create_app
from openvpp.core.timeslots import slot_start_utc
from openvpp.services import accounts, dispatch, events, execution
from openvpp.store import audit, db, timeseries
from openvpp.store.audit import Actor
from tests.conftest import chiller_rows, import_rows

DISPATCHER = Actor("disp", "dispatcher")
OP1 = Actor("op1", "operator_admin", operator_id="OP01")
OP2 = Actor("op2", "operator_admin", operator_id="OP02")
DAY = date(2025, 7, 15)
START, END = 56, 60          # 14:00-15:00 local
N = END - START
BEFORE_DEADLINE = slot_start_utc(DAY, START) - timedelta(hours=3)
PASSWORD = "correct-horse"


@pytest.fixture
def city(loaded, tmp_path):
    """The mini city plus 1 MW units: OP01 under GZ-TH-S01 (RC0-RC3, 4 x 400 kW down) and OP02 under
    GZ-HZ-S01 (RC4-RC6, 3 x 400 kW)."""
    import_rows(loaded, tmp_path, chiller_rows())
    return loaded


def _write(settings, points: list[tuple[str, datetime, float]]) -> None:
    """Store points as a gateway would and roll them up as the ingest worker does."""
    n = len(points)
    nan = np.full(n, np.nan)
    batch = timeseries.RawBatch(
        device=np.array([p[0] for p in points], dtype=object),
        ts_ms=np.array([int(p[1].timestamp() * 1000) for p in points], np.int64),
        p_kw=np.array([p[2] for p in points], float), q_kvar=nan, e_kwh=nan, eq_kvarh=nan, soc=nan,
        quality=np.zeros(n, np.int16), source=np.array(["test"] * n, dtype=object))
    with db.get_engine(settings.database_url).begin() as conn:
        timeseries.write_points(conn, batch)
        while timeseries.refresh_rollups(conn, None, 5000):
            pass


def _quarter(slot: int, day: date = DAY) -> datetime:
    return slot_start_utc(day, slot) + timedelta(minutes=7)


def _cleared_event(settings, start: int = START, end: int = END, day: date = DAY, target: float = 2000.0) -> str:
    """OP02 offers 1,200 kW at 1.5, OP01 1,200 kW at 2.0 against a 2,000 kW target: OP02 wins 1,200, OP01 800."""
    n = end - start
    with db.get_engine(settings.database_url).begin() as conn:
        ev = events.create(conn, DISPATCHER, {"product": "peak_shaving", "day": day.isoformat(), "start_slot": start,
                                              "end_slot": end, "targets_kw": target})
        eid = ev["event_id"]
        events.transition(conn, DISPATCHER, eid, "publish")
        events.transition(conn, DISPATCHER, eid, "open")
        before = slot_start_utc(day, start) - timedelta(hours=3)
        events.declare(conn, OP2, eid, "OP02@GZ-HZ-S01", [1200.0] * n, 1.5, now=before)
        events.declare(conn, OP1, eid, "OP01@GZ-TH-S01", [1200.0] * n, 2.0, now=before)
        cleared = events.transition(conn, DISPATCHER, eid, "clear")
    assert cleared["result"]["cleared_kw"] == [target] * n
    return eid


def _executed_event(settings) -> str:
    """Executed: OP02 acknowledges every slot and splits to RC4-RC6 on the platform; OP01 acknowledges
    the first two slots and splits in its own system (no device instructions)."""
    eid = _cleared_event(settings)
    sent: list[tuple[str, dict]] = []

    def status(ids):
        # the car park's piles R4 and R5 are idle: nothing to shed
        return {i: {"online": True, "power_kw": 600.0 if i.startswith("RC") else 0.0,
                    "down_kw": 400.0 if i.startswith("RC") else 0.0, "up_kw": 0.0} for i in ids}

    with db.get_engine(settings.database_url).begin() as conn:
        events.transition(conn, DISPATCHER, eid, "execute")
        mine = events.instructions_of(conn, eid, "operator", "OP02")
        events.acknowledge(conn, OP2, [i["instruction_id"] for i in mine])
        first_two = [i["instruction_id"] for i in events.instructions_of(conn, eid, "operator", "OP01")
                     if i["slot"] < START + 2]
        events.acknowledge(conn, OP1, first_two)
        devices = dispatch.dispatch(conn, OP2, eid, status, lambda op, dev, payload: sent.append((dev, payload)))
    assert {d["resource_id"] for d in devices} == {"RC4", "RC5", "RC6"} and len(sent) == 3 * N
    # the hour before: RC0-RC3 draw 700 kW, RC4-RC6 600 kW; R1 reports before the window only
    pts = [(f"RC{i}", _quarter(s), 700.0 if i < 4 else 600.0) for i in range(7) for s in range(START - 4, START)]
    pts += [("R1", _quarter(s), 300.0) for s in range(START - 4, START)]
    # in the window: RC0-RC3 at 500 kW in the first two slots, 600 kW in the third, silent in the last;
    # RC4-RC6 at 200 kW throughout (the whole 400 kW each was instructed)
    pts += [(f"RC{i}", _quarter(s), 500.0 if s < START + 2 else 600.0) for i in range(4) for s in range(START, END - 1)]
    pts += [(f"RC{i}", _quarter(s), 200.0) for i in range(4, 7) for s in range(START, END)]
    _write(settings, pts)
    return eid


def test_execution_counts_cleared_instructed_acknowledged_and_delivered_against_the_pre_event_power(city):
    eid = _executed_event(city)
    with db.get_engine(city.database_url).connect() as conn:
        out = execution.execution(conn, DISPATCHER, eid, now=slot_start_utc(DAY, END) + timedelta(minutes=5))
    slots = out["slots"]
    assert [s["slot"] for s in slots] == list(range(START, END))
    assert [s["target_kw"] for s in slots] == [2000.0] * N
    assert [s["cleared_kw"] for s in slots] == [2000.0] * N
    assert [s["instructed_kw"] for s in slots] == [2000.0] * N
    assert [s["acknowledged_kw"] for s in slots] == [2000.0, 2000.0, 1200.0, 1200.0]
    # OP01: 4 x (700 - 500) = 800, then 4 x (700 - 600) = 400, then nothing measured; OP02: 3 x (600 - 200)
    assert [s["delivered_kw"] for s in slots] == pytest.approx([2000.0, 2000.0, 1600.0, 1200.0])
    assert [s["measured"] for s in slots] == [7, 7, 7, 3]
    assert all(s["final"] for s in slots)
    ops = {o["operator_id"]: o for o in out["operators"]}
    assert [s["delivered_kw"] for s in ops["OP01"]["slots"]] == pytest.approx([800.0, 800.0, 400.0, None])
    assert [s["delivered_kw"] for s in ops["OP02"]["slots"]] == pytest.approx([1200.0] * N)
    assert [s["cleared_kw"] for s in ops["OP01"]["slots"]] == [800.0] * N
    assert ops["OP01"]["totals"]["delivered_kwh"] == pytest.approx((800 + 800 + 400) * 0.25)
    assert ops["OP01"]["totals"]["slots_measured"] == 3
    units = {u["unit_id"]: u for u in out["units"]}
    # OP02's dispatched devices; OP01 split in its own system, so its unit's members count (R1-R3 + RC0-RC3),
    # of which R2 and R3 never report and R1 only before the window
    assert units["OP02@GZ-HZ-S01"]["device_source"] == "device_instructions"
    assert units["OP02@GZ-HZ-S01"]["devices"] == 3
    assert units["OP01@GZ-TH-S01"]["device_source"] == "unit_members"
    assert units["OP01@GZ-TH-S01"]["devices"] == 7
    assert [s["price_yuan_per_kwh"] for s in units["OP01@GZ-TH-S01"]["slots"]] == [2.0] * N
    assert out["totals"]["delivered_kwh"] == pytest.approx((2000 + 2000 + 1600 + 1200) * 0.25)
    assert out["scope"] == "city" and out["reference"]["slots"] == 4


def test_before_execution_nothing_is_instructed_or_delivered_and_open_slots_are_not_final(city):
    eid = _cleared_event(city)
    _write(city, [("RC4", _quarter(s), 600.0) for s in range(START - 4, END)])
    with db.get_engine(city.database_url).connect() as conn:
        out = execution.execution(conn, DISPATCHER, eid, now=slot_start_utc(DAY, START + 1))
    assert [s["cleared_kw"] for s in out["slots"]] == [2000.0] * N
    assert [s["instructed_kw"] for s in out["slots"]] == [0.0] * N
    assert [s["delivered_kw"] for s in out["slots"]] == [None] * N
    assert [s["devices"] for s in out["slots"]] == [0] * N
    assert [s["final"] for s in out["slots"]] == [True, False, False, False]


def test_a_window_at_midnight_takes_its_reference_from_the_evening_before(city):
    day = DAY + timedelta(days=1)
    eid = _cleared_event(city, start=0, end=4, day=day)
    with db.get_engine(city.database_url).begin() as conn:
        events.transition(conn, DISPATCHER, eid, "execute")
    pts = [(f"RC{i}", _quarter(s, DAY), 650.0) for i in range(4, 7) for s in range(92, 96)]
    pts += [(f"RC{i}", _quarter(s, day), 250.0) for i in range(4, 7) for s in range(0, 4)]
    _write(city, pts)
    with db.get_engine(city.database_url).connect() as conn:
        out = execution.execution(conn, DISPATCHER, eid)
    ops = {o["operator_id"]: o for o in out["operators"]}
    assert [s["delivered_kw"] for s in ops["OP02"]["slots"]] == pytest.approx([1200.0] * 4)
    assert out["reference"]["from"] == slot_start_utc(DAY, 92)


def test_response_sign_follows_the_direction():
    ref = np.array([100.0, np.nan])
    met = np.array([[60.0, 130.0], [10.0, 20.0]])
    down = execution.response_kw(ref, met, "down")
    up = execution.response_kw(ref, met, "up")
    assert down[0].tolist() == [40.0, -30.0] and up[0].tolist() == [-40.0, 30.0]
    assert np.isnan(down[1]).all() and np.isnan(up[1]).all()


# ------------------------------------------------------------------ the API and its tenant fence


@pytest.fixture
def client(city):
    with db.get_engine(city.database_url).begin() as conn:
        for name, role, op, own in [("disp", "dispatcher", None, None), ("op1", "operator_admin", "OP01", None),
                                    ("eng2", "operator_engineer", "OP02", None), ("own2", "owner", None, "OW2"),
                                    ("aud", "auditor", None, None)]:
            accounts.create_user(conn, audit.SYSTEM, name, PASSWORD, role, op, own, rounds=4)
    with TestClient(create_app(city)) as c:
        yield c


def _login(client, user: str) -> dict:
    r = client.post("/api/v1/auth/token", data={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_api_fences_operators_to_their_own_rows_and_refuses_owners_drafts_and_unknown_events(city, client):
    eid = _executed_event(city)
    url = f"/api/v1/events/{eid}/execution"
    center = client.get(url, headers=_login(client, "disp"))
    assert center.status_code == 200, center.text
    full = center.json()
    assert full["scope"] == "city" and {o["operator_id"] for o in full["operators"]} == {"OP01", "OP02"}
    assert client.get(url, headers=_login(client, "aud")).json()["slots"] == full["slots"]

    op1 = client.get(url, headers=_login(client, "op1")).json()
    assert op1["scope"] == "operator OP01"
    assert [o["operator_id"] for o in op1["operators"]] == ["OP01"]
    assert [u["unit_id"] for u in op1["units"]] == ["OP01@GZ-TH-S01"]
    theirs = next(o for o in full["operators"] if o["operator_id"] == "OP01")
    assert op1["operators"][0]["slots"] == theirs["slots"]
    # an operator's slot totals are its own rows; the target is the event's, public
    for mine, all_ in zip(op1["slots"], full["slots"], strict=True):
        assert mine["target_kw"] == all_["target_kw"] == 2000.0
        assert mine["cleared_kw"] == 800.0 and mine["instructed_kw"] == 800.0
    assert [s["delivered_kw"] for s in op1["slots"]] == pytest.approx([800.0, 800.0, 400.0, None])
    eng2 = client.get(url, headers=_login(client, "eng2")).json()
    assert [o["operator_id"] for o in eng2["operators"]] == ["OP02"]
    assert [s["delivered_kw"] for s in eng2["slots"]] == pytest.approx([1200.0] * N)

    owner = client.get(url, headers=_login(client, "own2"))
    assert owner.status_code == 403 and "owners" in owner.json()["message"]
    missing = client.get("/api/v1/events/EVT-NOPE/execution", headers=_login(client, "disp"))
    assert missing.status_code == 404 and "EVT-NOPE" in missing.json()["message"]
    assert client.get(url).status_code == 401

    with db.get_engine(city.database_url).begin() as conn:
        draft = events.create(conn, DISPATCHER, {"product": "peak_shaving", "day": "2030-07-15", "start_slot": 56,
                                                 "end_slot": 60, "targets_kw": 1000.0})["event_id"]
    assert client.get(f"/api/v1/events/{draft}/execution", headers=_login(client, "op1")).status_code == 403
    seen = client.get(f"/api/v1/events/{draft}/execution", headers=_login(client, "disp"))
    assert seen.status_code == 200 and seen.json()["operators"] == [] and seen.json()["slots"][0]["cleared_kw"] == 0.0


def test_execution_reads_only_the_rollups_of_the_window_and_the_hour_before(city):
    eid = _executed_event(city)
    # points two hours before and just after the window change nothing
    _write(city, [(f"RC{i}", _quarter(s), 1.0) for i in range(7) for s in (START - 8, START - 5, END, END + 1)])
    with db.get_engine(city.database_url).connect() as conn:
        out = execution.execution(conn, DISPATCHER, eid)
    assert [s["delivered_kw"] for s in out["slots"]] == pytest.approx([2000.0, 2000.0, 1600.0, 1200.0])
    assert datetime.now(UTC) > out["reference"]["to"]
