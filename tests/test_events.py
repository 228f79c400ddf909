"""Events end to end in the service layer: publish, declare, clear, instruct, acknowledge, dispatch to
devices and re-dispatch a failing device's share — on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from openvpp.core.errors import Forbidden, InvalidInput, TransitionRefused
from openvpp.services import dispatch, events
from openvpp.store import db
from openvpp.store.audit import Actor
from tests.conftest import chiller_rows, import_rows

DISPATCHER = Actor("disp", "dispatcher")
OP1 = Actor("op1", "operator_admin", operator_id="OP01")
OP2 = Actor("op2", "operator_admin", operator_id="OP02")
DAY = "2030-07-15"          # in the future, so deadlines are open
WINDOW = (56, 64)           # 14:00-16:00 local, 8 slots


@pytest.fixture
def city(loaded, tmp_path):
    """The mini city plus enough chillers for a 1 MW unit per operator: OP01 under GZ-TH-S01 (4 x 400 kW)
    and OP02 under GZ-HZ-S01 (3 x 400 kW)."""
    import_rows(loaded, tmp_path, chiller_rows())
    return loaded


def _begin(s):
    return db.get_engine(s.database_url).begin()


def _event(conn, **over):
    fields = {"product": "peak_shaving", "day": DAY, "start_slot": WINDOW[0], "end_slot": WINDOW[1],
              "targets_kw": 2000.0, "scope_node_id": "GZ", "pricing": "uniform", **over}
    return events.create(conn, DISPATCHER, fields)


def test_event_creation_refusals_name_the_field(city):
    with _begin(city) as conn:
        for over, field in [({"product": "magic"}, "product"), ({"start_slot": 70, "end_slot": 60}, "start_slot"),
                            ({"targets_kw": [1.0, 2.0]}, "targets_kw"),
                            ({"price_cap_yuan_per_kwh": 9.0}, "price_cap_yuan_per_kwh"),
                            ({"scope_node_id": "GZ-XX"}, "scope_node_id"),
                            ({"declare_deadline": "2030-07-15T15:00:00+08:00"}, "declare_deadline")]:
            with pytest.raises(InvalidInput) as err:
                _event(conn, **over)
            assert err.value.violations[0].field.startswith(field.split("/")[0])
        with pytest.raises(Forbidden):
            events.create(conn, OP1, {"product": "peak_shaving"})


def test_declarations_are_bounded_and_refusals_name_the_rule(city):
    with _begin(city) as conn:
        ev = _event(conn)
        with pytest.raises(TransitionRefused, match="declaring"):
            events.declare(conn, OP1, ev["event_id"], "OP01@GZ-TH-S01", [1200.0] * 8, 2.0)
        events.transition(conn, DISPATCHER, ev["event_id"], "publish")
        events.transition(conn, DISPATCHER, ev["event_id"], "open")
        eid = ev["event_id"]
        cases = [
            ([900.0] * 8, 2.0, "trading unit minimum"),
            ([1200.0] * 3 + [0.0] * 5, 2.0, "consecutive slots"),
            ([2500.0] * 8, 2.0, "capability 2460.0 kW"),      # 160 + 200 + 500 + 4 x 400 (duration >= 1 h)
            ([1200.0] * 8, 4.0, "cap 3.5"),
        ]
        for q, p, rule in cases:
            with pytest.raises(InvalidInput) as err:
                events.declare(conn, OP1, eid, "OP01@GZ-TH-S01", q, p)
            assert rule in str(err.value)
        with pytest.raises(Forbidden):
            events.declare(conn, OP2, eid, "OP01@GZ-TH-S01", [1200.0] * 8, 2.0)
        late = datetime(2030, 7, 15, 5, 0, tzinfo=UTC)   # 13:00 local, after the 12:00 deadline
        with pytest.raises(InvalidInput, match="deadline"):
            events.declare(conn, OP1, eid, "OP01@GZ-TH-S01", [1200.0] * 8, 2.0, now=late)
        events.declare(conn, OP1, eid, "OP01@GZ-TH-S01", [1200.0] * 8, 2.5)
        events.declare(conn, OP1, eid, "OP01@GZ-TH-S01", [1500.0] * 8, 2.0)   # amendment
        latest = events.latest_declarations(conn, eid)
        assert [(d["unit_id"], d["version"], d["quantities_kw"][0]) for d in latest] == [("OP01@GZ-TH-S01", 2, 1500.0)]


def _cleared_event(conn):
    ev = _event(conn)
    eid = ev["event_id"]
    for action in ("publish", "open"):
        events.transition(conn, DISPATCHER, eid, action)
    events.declare(conn, OP1, eid, "OP01@GZ-TH-S01", [1500.0] * 8, 2.0)
    events.declare(conn, OP2, eid, "OP02@GZ-HZ-S01", [1200.0] * 8, 1.5)
    return events.transition(conn, DISPATCHER, eid, "clear")


def test_clearing_merit_order_uniform_price_and_instructions(city):
    with _begin(city) as conn:
        ev = _cleared_event(conn)
        eid = ev["event_id"]
        assert ev["state"] == "cleared"
        assert ev["result"]["cleared_kw"] == [2000.0] * 8
        assert ev["result"]["clearing_price"] == [2.0] * 8
        got = {(a["unit_id"], a["slot"]): (a["cleared_kw"], a["price_yuan_per_kwh"]) for a in events.awarded(conn, eid)}
        assert got[("OP02@GZ-HZ-S01", 56)] == (1200.0, 2.0)     # cheaper offer fully, paid the marginal price
        assert got[("OP01@GZ-TH-S01", 56)] == (800.0, 2.0)      # marginal offer partly
        now = datetime.now(UTC)
        events.transition(conn, DISPATCHER, eid, "execute", now=now)
        ins = events.instructions_of(conn, eid, "operator")
        assert len(ins) == 16 and {i["state"] for i in ins} == {"sent"}
        feed = events.feed(conn, OP2)["items"]
        assert {f["topic"] for f in feed} >= {"event", "awards", "instructions"}
        assert all(f["operator_id"] in (None, "OP02") for f in feed)
        mine = [i["instruction_id"] for i in ins if i["operator_id"] == "OP02"]
        events.acknowledge(conn, OP2, mine, now=now + timedelta(seconds=5))
        with pytest.raises(Forbidden):
            events.acknowledge(conn, OP2, [ins[0]["instruction_id"]] if ins[0]["operator_id"] == "OP01"
                               else [i["instruction_id"] for i in ins if i["operator_id"] == "OP01"][:1])
        timed_out = events.expire(conn, now + timedelta(seconds=31), eid)
        assert {t["operator_id"] for t in timed_out} == {"OP01"} and len(timed_out) == 8


def test_operator_dispatch_to_devices_and_redispatch_of_a_failed_device(city):
    sent: list[tuple[str, str, dict]] = []
    status = {rid: {"online": True, "power_kw": 800.0, "down_kw": 400.0, "up_kw": 0.0}
              for rid in ("RC4", "RC5", "RC6")}
    status.update({"R4": {"online": True, "power_kw": 90.0, "down_kw": 90.0, "up_kw": 0.0},
                   "R5": {"online": True, "power_kw": 40.0, "down_kw": 40.0, "up_kw": 0.0}})

    def status_of(ids):
        return {i: status[i] for i in ids if i in status}

    with _begin(city) as conn:
        ev = _cleared_event(conn)
        eid = ev["event_id"]
        now = datetime.now(UTC)
        events.transition(conn, DISPATCHER, eid, "execute", now=now)
        mine = [i["instruction_id"] for i in events.instructions_of(conn, eid, "operator", "OP02")]
        events.acknowledge(conn, OP2, mine, now=now)
        rows = dispatch.dispatch(conn, OP2, eid, status_of, lambda op, rid, p: sent.append((op, rid, p)), now=now)
        slot56 = [r for r in rows if r["slot"] == 56]
        assert sum(r["kw"] for r in slot56) == pytest.approx(1200.0)
        assert all(r["kw"] <= status[r["resource_id"]]["down_kw"] + 1e-6 for r in slot56)
        first = next(p for op, rid, p in sent if rid == "RC4")
        assert first["kind"] == "limit" and first["max_kw"] < 800.0
        # every device but RC4 acknowledges; RC4 stays silent past its deadline
        for r in rows:
            if r["resource_id"] != "RC4":
                dispatch.device_ack(conn, {"id": r["instruction_id"], "device": r["resource_id"],
                                           "status": "accepted"}, "OP02", now=now + timedelta(seconds=2))
        # the devices that acknowledged now obey: their power drops by their share, and live telemetry says
        # what they could still give (one-way loads: at most their remaining consumption)
        declared = {"RC4": 400.0, "RC5": 400.0, "RC6": 400.0, "R4": 120.0, "R5": 60.0}
        given = {r["resource_id"]: 0.0 for r in slot56}
        for r in slot56:
            given[r["resource_id"]] += r["kw"]
        for rid, x in given.items():
            if rid != "RC4":
                p = status[rid]["power_kw"] - x
                status[rid] = {**status[rid], "power_kw": p, "down_kw": min(declared[rid], p)}
        sent.clear()
        new = dispatch.redispatch(conn, OP2, eid, status_of, lambda op, rid, p: sent.append((op, rid, p)),
                                  now=now + timedelta(seconds=25))
        assert new and all(r["resource_id"] != "RC4" for r in new)
        lost = given["RC4"]
        room = sum(min(declared[r] - given[r], status[r]["down_kw"]) for r in given if r != "RC4")
        assert sum(r["kw"] for r in new if r["slot"] == 56) == pytest.approx(min(lost, room))
        assert all(p["kind"] == "limit" for _, _, p in sent)
        again = dispatch.redispatch(conn, OP2, eid, status_of, lambda *a: None, now=now + timedelta(seconds=26))
        assert again == []      # nothing failed since


def test_a_deadline_with_an_offset_reads_back_as_the_same_instant(loaded):
    """A declaration deadline given in Beijing time is the same instant after a round trip through the
    store (SQLite keeps timestamps without their offset: the service stores UTC)."""
    from datetime import UTC, datetime, timedelta, timezone

    from openvpp.services import events
    from openvpp.store import db
    from openvpp.store.audit import Actor

    beijing = timezone(timedelta(hours=8))
    day = (datetime.now(UTC) + timedelta(days=2)).date()
    deadline = datetime(day.year, day.month, day.day, 9, 45, tzinfo=beijing)
    with db.get_engine(loaded.database_url).begin() as conn:
        ev = events.create(conn, Actor("d", "dispatcher"), {"product": "peak_shaving", "day": day.isoformat(),
                                                           "start_slot": 56, "end_slot": 60, "targets_kw": 100.0,
                                                           "declare_deadline": deadline.isoformat()})
        got = events.get(conn, ev["event_id"])["declare_deadline"]
    got = got if got.tzinfo else got.replace(tzinfo=UTC)
    assert got == deadline
