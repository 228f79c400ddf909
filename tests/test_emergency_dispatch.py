"""The bulk paths of an emergency event (benchmarks/emergency_dispatch.py): mandatory offers of every
unit from one aggregate, members of many units in one query, device instructions stored at once,
acknowledgements of many devices in one write — each equal to the one-at-a-time rule, on SQLite and
PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from openvpp.core.errors import Forbidden, InvalidInput, NotFound
from openvpp.core.ids import new_id
from openvpp.services import dispatch, events
from openvpp.store import db
from openvpp.store.audit import Actor
from openvpp.store.schema import resources
from tests.conftest import UNIT_CHILLERS, chiller_rows, import_rows

DISPATCHER = Actor("disp", "dispatcher")
OP1 = Actor("op1", "operator_admin", operator_id="OP01")
OP2 = Actor("op2", "operator_admin", operator_id="OP02")
DAY = "2030-07-15"


@pytest.fixture
def city(loaded, tmp_path):
    """The mini city plus chillers of OP01 and OP02, one too short to count (0.5 h), one of OP03 (not
    admitted), one verified below its declaration and one flagged."""
    import_rows(loaded, tmp_path, chiller_rows(UNIT_CHILLERS + [("OP01", "OW3", "S3", "GZ-HZ-S01-F01-T002", 0.5),
                                                                ("OP03", "OW3", "S3", "GZ-HZ-S01-F01-T002")]))
    with db.get_engine(loaded.database_url).begin() as conn:
        conn.execute(update(resources).where(resources.c.resource_id == "RC1").values(verified_down_kw=250.0))
        conn.execute(update(resources).where(resources.c.resource_id == "RC2").values(flagged="test"))
    return loaded


def _begin(s):
    return db.get_engine(s.database_url).begin()


def _emergency(conn, **over) -> dict:
    ev = events.create(conn, DISPATCHER, {"product": "emergency", "day": DAY, "start_slot": 60, "end_slot": 62,
                                          "targets_kw": 1e6, **over})
    events.transition(conn, DISPATCHER, ev["event_id"], "publish")
    return ev


def _one_unit_at_a_time(conn, ev) -> dict[str, float]:
    """The rule written plainly: every admitted operator's unit, its members one query each."""
    pairs = conn.exec_driver_sql(
        "SELECT DISTINCT r.operator_id, g.substation_id FROM resources r JOIN grid_nodes g ON g.node_id = r.ta_id "
        "JOIN operators o ON o.operator_id = r.operator_id WHERE r.state = 'active' AND o.state = 'admitted'").all()
    out = {}
    for op, sub in pairs:
        cap = events.unit_capability_kw(events.unit_members(conn, ev, f"{op}@{sub}"), ev["direction"], 1.0)
        if cap > 0:
            out[f"{op}@{sub}"] = cap
    return out


@pytest.mark.parametrize("scope", ["GZ", "GZ-HZ-S01", "GZ-HZ-S01-F01-T002"])
def test_mandatory_offers_equal_the_unit_by_unit_rule(city, scope):
    with _begin(city) as conn:
        ev = _emergency(conn, scope_node_id=scope)
        offers = events._mandatory_offers(conn, ev)
        got = {o["unit_id"]: o["quantities_kw"][0] for o in offers}
        assert got == pytest.approx(_one_unit_at_a_time(conn, ev))
        assert [o["unit_id"] for o in offers] == sorted(got)
        assert all(o["prices_yuan_per_kwh"] == [ev["price_cap_yuan_per_kwh"]] * 2 for o in offers)
        assert not any(u.startswith("OP03@") for u in got)          # not admitted
        if scope == "GZ":
            # OP01@GZ-TH-S01: R1 160 + R2 200 + R3 500 + RC0 400 + RC1 verified 250 + RC3 400 (RC2 flagged)
            assert got["OP01@GZ-TH-S01"] == pytest.approx(1910.0)
            # OP01@GZ-HZ-S01: R6 300; RC7 holds 0.5 h only
            assert got["OP01@GZ-HZ-S01"] == pytest.approx(300.0)
        # cleared straight from published, every unit fully awarded (target above capability)
        cleared = events.transition(conn, DISPATCHER, ev["event_id"], "clear")
        assert cleared["state"] == "cleared" and cleared["result"]["awards"] == 2 * len(got)


def test_units_members_equal_unit_members(city):
    with _begin(city) as conn:
        ev = _emergency(conn)
        units = ["OP01@GZ-TH-S01", "OP01@GZ-HZ-S01", "OP02@GZ-HZ-S01", "OP02@GZ-TH-S01"]
        many = events.units_members(conn, ev, units)
        for u in units:
            assert many.get(u, []) == events.unit_members(conn, ev, u)
        assert "OP02@GZ-TH-S01" not in many                        # no members: absent
        assert events.units_members(conn, ev, []) == {}
        with pytest.raises(InvalidInput):
            events.unit_members(conn, ev, "OP01")


def _dispatched(conn) -> tuple[dict, list[dict]]:
    ev = _emergency(conn)
    eid = ev["event_id"]
    events.transition(conn, DISPATCHER, eid, "clear")
    now = datetime.now(UTC)
    events.transition(conn, DISPATCHER, eid, "execute", now=now)
    mine = [i["instruction_id"] for i in events.instructions_of(conn, eid, "operator", "OP02")]
    assert [s["state"] for s in events.acknowledge(conn, OP2, mine, now=now)] == ["acked"] * len(mine)
    status = {rid: {"online": True, "power_kw": 800.0, "down_kw": 400.0, "up_kw": 0.0} for rid in ("RC4", "RC5", "RC6")}
    status.update({"R4": {"online": True, "power_kw": 90.0, "down_kw": 90.0, "up_kw": 0.0},
                   "R5": {"online": True, "power_kw": 40.0, "down_kw": 40.0, "up_kw": 0.0}})
    sent = []
    rows = dispatch.dispatch(conn, OP2, eid, lambda ids: {i: status[i] for i in ids if i in status},
                             lambda op, rid, p: sent.append((op, rid, p)), now=now)
    assert len(rows) == len(sent) == 2 * 5 and {r["state"] for r in rows} == {"sent"}
    stored = events.instructions_of(conn, eid, "device", "OP02")
    assert {r["instruction_id"]: (r["resource_id"], r["kw"], r["payload"]) for r in stored} == {
        r["instruction_id"]: (r["resource_id"], r["kw"], r["payload"]) for r in rows}
    assert all(p["id"] == r["instruction_id"] and p["kind"] == "limit" for r, (_, _, p) in zip(rows, sent, strict=True))
    return ev, rows


def test_bulk_device_acknowledgements(city):
    with _begin(city) as conn:
        ev, rows = _dispatched(conn)
        t0 = rows[0]["sent_at"]

        def ack(k: int, **over) -> dict:
            return {"id": rows[k]["instruction_id"], "device": rows[k]["resource_id"], "status": "accepted",
                    "reason": "", **over}

        acks = [ack(k) for k in range(7)] + [ack(8), ack(9), ack(0),                  # then a repeat
                                             {"id": "DIN-NOPE", "device": "RC4", "status": "accepted"},
                                             ack(7, device="R1"), ack(7, status="maybe")]
        acks[1]["status"] = "rejected"
        received = [t0 + timedelta(seconds=2)] * len(acks)
        sent_at = [t0] * len(acks)
        received[7] = t0 + timedelta(seconds=25)                   # left on time, answered 25 s later: late
        # left 20 s after the dispatch (its transport queued it) and answered 5 s later: in time
        received[8], sent_at[8] = t0 + timedelta(seconds=25), t0 + timedelta(seconds=20)
        res = dispatch.device_acks(conn, acks, "OP02", received, sent_at=sent_at)
        assert [r.get("state", r.get("error")) for r in res] == (
            ["acked", "rejected"] + ["acked"] * 5 + ["timeout", "acked", "acked", "not_found", "forbidden", "invalid"])
        assert res[9] == {"instruction_id": rows[0]["instruction_id"], "state": "acked", "ignored": True}
        stored = {r["instruction_id"]: r for r in events.instructions_of(conn, ev["event_id"], "device", "OP02")}
        late_sent = stored[rows[9]["instruction_id"]]
        assert late_sent["state"] == "acked"
        assert _utc(late_sent["sent_at"]) == t0 + timedelta(seconds=20)
        assert _utc(late_sent["ack_deadline"]) == t0 + timedelta(seconds=40)
        assert _utc(stored[rows[0]["instruction_id"]]["acked_at"]) == t0 + timedelta(seconds=2)
        assert _utc(stored[rows[0]["instruction_id"]]["ack_deadline"]) == t0 + timedelta(seconds=20)
        assert stored[rows[8]["instruction_id"]]["reason"] == "ack after the deadline"
        assert stored[rows[7]["instruction_id"]]["state"] == "sent"       # refused acks change nothing
        # the single form raises what it always raised
        with pytest.raises(NotFound):
            dispatch.device_ack(conn, {"id": "DIN-NOPE", "device": "RC4", "status": "accepted"}, "OP02")
        with pytest.raises(Forbidden):
            dispatch.device_ack(conn, ack(7, device="R1"), "OP02")
        with pytest.raises(Forbidden):
            dispatch.device_ack(conn, ack(7), "OP01")
        with pytest.raises(InvalidInput):
            dispatch.device_ack(conn, ack(7, status="maybe"), "OP02")
        assert dispatch.device_ack(conn, ack(7), "OP02", now=t0 + timedelta(seconds=1)) == {
            "instruction_id": rows[7]["instruction_id"], "state": "acked"}
        assert dispatch.device_ack(conn, ack(7), "OP02")["ignored"] is True
        # what was refused or late is re-dispatched to the others; nothing else
        st = {rid: {"online": True, "power_kw": 500.0, "down_kw": 100.0, "up_kw": 0.0}
              for rid in ("RC4", "RC5", "RC6", "R4", "R5")}
        again = dispatch.redispatch(conn, OP2, ev["event_id"], lambda ids: {i: st[i] for i in ids if i in st},
                                    lambda *a: None, now=t0 + timedelta(seconds=30))
        replaced = {r["instruction_id"] for r in events.instructions_of(conn, ev["event_id"], "device", "OP02",
                                                                         state="replaced")}
        assert replaced == {rows[1]["instruction_id"], rows[8]["instruction_id"]}
        assert {r["slot"] for r in again} == {rows[1]["slot"], rows[8]["slot"]}
        for r in again:                     # the failed device's share goes to the others of its slot
            dead = rows[1] if r["slot"] == rows[1]["slot"] else rows[8]
            assert r["resource_id"] != dead["resource_id"] and r["state"] == "sent"


def test_acknowledge_is_all_or_nothing(city):
    with _begin(city) as conn:
        ev = _emergency(conn)
        events.transition(conn, DISPATCHER, ev["event_id"], "clear")
        events.transition(conn, DISPATCHER, ev["event_id"], "execute")
        ins = events.instructions_of(conn, ev["event_id"], "operator")
        mine = [i["instruction_id"] for i in ins if i["operator_id"] == "OP01"]
        other = [i["instruction_id"] for i in ins if i["operator_id"] == "OP02"]
        with pytest.raises(Forbidden):
            events.acknowledge(conn, OP1, mine + other[:1])
        with pytest.raises(NotFound):
            events.acknowledge(conn, OP1, mine + ["INS-NOPE"])
        assert {i["state"] for i in events.instructions_of(conn, ev["event_id"], "operator")} == {"sent"}
        late = datetime.now(UTC) + timedelta(seconds=31)
        assert {s["state"] for s in events.acknowledge(conn, OP1, mine, now=late)} == {"timeout"}
        assert {s["state"] for s in events.acknowledge(conn, OP2, other, status="rejected")} == {"rejected"}


def test_new_ids_have_new_id_format_unique_and_ordered():
    ids = dispatch.new_ids("DIN", 50_000)
    assert len(set(ids)) == len(ids)
    one = new_id("DIN")
    assert all(len(i) == len(one) and i.startswith("DIN-") for i in ids[:100])
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    assert set("".join(ids[:1000])[4:]) - set(alphabet + "DIN-") == set()
    assert ids[0][:14] == one[:14] or abs(_ms(ids[0]) - _ms(one)) < 5_000    # same clock
    wrapped = [k for k in range(1, len(ids)) if ids[k] < ids[k - 1]]
    assert len(wrapped) <= 1                                            # in order but for a 40-bit wrap


def _ms(i: str) -> int:
    n = 0
    for c in i.split("-", 1)[1]:
        n = n * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(c)
    return n >> 40


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
