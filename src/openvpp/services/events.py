"""Events: publish → declare → clear → execute → evaluate → settle (RULES.md, 穗工信函〔2025〕182号).

The center publishes an event (product, window of 15-minute slots, a target per slot, a grid
scope, optionally a pool, a price rule and a deadline). Operators declare per trading unit —
their active resources under one 220 kV clearing node — a quantity and a price per slot,
bounded by the unit's capability and the rule set's minimums (>= 1 MW, >= 1 h) and price cap.
Clearing is merit order per slot (``kernels.clearing``). Each cleared quantity becomes an
operator-level instruction; the operator's side splits it to devices (``services.dispatch``).

Every transition is audited and notified through the outbox: a row per notification, read by
operators over HTTP (``feed``) and relayed to the bus and MQTT, so nothing is lost while a
subscriber is down.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
from sqlalchemy import Connection, case, func, select

from openvpp.core import rules
from openvpp.core.errors import Forbidden, InvalidInput, NotFound, TransitionRefused, Violation
from openvpp.core.ids import new_id
from openvpp.core.timeslots import SLOT_H, SLOTS_PER_DAY, slot_start_utc
from openvpp.model import lifecycle
from openvpp.services import pools as pool_svc
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes, operators, pools, resources
from openvpp.store.schema_events import awards, declarations, events, instructions, outbox

#: product → (direction, subsidy rule-set key, unit of the price)
PRODUCTS: dict[str, tuple[str, str]] = {
    "peak_shaving": ("down", "active_yuan_per_kwh"),
    "valley_filling": ("up", "active_yuan_per_kwh"),
    "reactive": ("down", "reactive_yuan_per_kvarh"),
    "reserve": ("down", "reserve_yuan_per_kw_h"),
    "congestion": ("down", "active_yuan_per_kwh"),
    "emergency": ("down", "active_yuan_per_kwh"),
}
PRICINGS = ("uniform", "pay_as_bid")
#: products not bound by the market's minimum trading-unit size and duration
LOCAL_PRODUCTS = ("congestion", "emergency")
ACK_TIMEOUT = timedelta(seconds=30)


def notify(conn: Connection, topic: str, payload: dict, operator_id: str | None = None) -> None:
    """Append a notification to the outbox (``operator_id`` None = every operator)."""
    conn.execute(outbox.insert().values(topic=topic, operator_id=operator_id, payload=audit._plain(payload),
                                        created_at=datetime.now(UTC)))


def feed(conn: Connection, actor: Actor, after: int = 0, limit: int = 500) -> dict:
    """Notifications for the caller's operator (and broadcasts) after sequence ``after``."""
    q = select(outbox).where(outbox.c.seq > after).order_by(outbox.c.seq).limit(limit)
    if actor.operator_id:
        q = q.where((outbox.c.operator_id.is_(None)) | (outbox.c.operator_id == actor.operator_id))
    elif actor.role not in ("city_admin", "dispatcher", "auditor"):
        raise Forbidden(f"role {actor.role} has no feed")
    items = [dict(r) for r in conn.execute(q).mappings()]
    return {"items": items, "last": items[-1]["seq"] if items else after}


def get(conn: Connection, event_id: str) -> dict:
    row = conn.execute(select(events).where(events.c.event_id == event_id)).mappings().first()
    if row is None:
        raise NotFound("event", event_id)
    return dict(row)


def window_utc(ev: dict) -> tuple[datetime, datetime]:
    return (slot_start_utc(ev["day"], ev["start_slot"]),
            slot_start_utc(ev["day"], 0) + timedelta(minutes=15 * ev["end_slot"]))


def create(conn: Connection, actor: Actor, fields: dict, ruleset: str = rules.DEFAULT_RULESET) -> dict:
    """A draft event. Fields: product, name, day (YYYY-MM-DD local), start_slot, end_slot (exclusive),
    targets_kw (one per slot, or one number for all), scope_node_id, pool_id, pricing,
    price_cap_yuan_per_kwh (default: the rule set's subsidy for the product), declare_deadline."""
    if actor.role not in ("city_admin", "dispatcher"):
        raise Forbidden("only the center's dispatchers publish events")
    v: list[Violation] = []
    product = fields.get("product")
    if product not in PRODUCTS:
        raise InvalidInput(Violation("product", f"must be one of {', '.join(PRODUCTS)}", product))
    direction, cap_key = PRODUCTS[product]
    try:
        day = date.fromisoformat(str(fields.get("day")))
    except ValueError:
        raise InvalidInput(Violation("day", "must be a date YYYY-MM-DD (local)", fields.get("day"))) from None
    start, end = fields.get("start_slot"), fields.get("end_slot")
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= SLOTS_PER_DAY):
        raise InvalidInput(Violation("start_slot/end_slot", "need 0 <= start_slot < end_slot <= 96", (start, end)))
    n = end - start
    targets = fields.get("targets_kw")
    if isinstance(targets, (int, float)):
        targets = [float(targets)] * n
    if not isinstance(targets, list) or len(targets) != n:
        v.append(Violation("targets_kw", f"must hold one target per slot of the window ({n})", targets))
    elif any(not isinstance(t, (int, float)) or not np.isfinite(t) or t < 0 for t in targets):
        v.append(Violation("targets_kw", "every target must be a finite number >= 0 kW", targets))
    scope = fields.get("scope_node_id") or "GZ"
    if conn.execute(select(grid_nodes.c.node_id).where(grid_nodes.c.node_id == scope)).first() is None:
        v.append(Violation("scope_node_id", "grid node does not exist", scope))
    pool_id = fields.get("pool_id")
    if pool_id and conn.execute(select(pools.c.pool_id).where(pools.c.pool_id == pool_id)).first() is None:
        v.append(Violation("pool_id", "pool does not exist", pool_id))
    pricing = fields.get("pricing", "uniform")
    if pricing not in PRICINGS:
        v.append(Violation("pricing", f"must be one of {', '.join(PRICINGS)}", pricing))
    rule_cap = float(rules.load(ruleset).section("subsidy")[cap_key])
    cap = float(fields.get("price_cap_yuan_per_kwh", rule_cap))
    if not 0 < cap <= rule_cap:
        v.append(Violation("price_cap_yuan_per_kwh", f"must be in (0, {rule_cap}] ({cap_key}, rule set {ruleset})",
                           cap))
    window_start = slot_start_utc(day, start)
    mandatory = product == "emergency"
    deadline = fields.get("declare_deadline")
    if deadline is None:
        deadline = window_start - (timedelta(minutes=15) if mandatory else timedelta(hours=2))
    elif isinstance(deadline, str):
        deadline = datetime.fromisoformat(deadline)
    if deadline.tzinfo is None:
        v.append(Violation("declare_deadline", "must carry a time zone", deadline.isoformat()))
    elif deadline > window_start:
        v.append(Violation("declare_deadline", "must be before the window starts", deadline.isoformat()))
    if v:
        raise InvalidInput(v)
    deadline = deadline.astimezone(UTC)     # stored in UTC: SQLite keeps a wall time without its offset
    now = datetime.now(UTC)
    row = {"event_id": new_id("EVT"), "product": product, "direction": direction,
           "name": fields.get("name") or f"{product} {day} {start}-{end}", "state": "draft", "day": day,
           "start_slot": start, "end_slot": end, "targets_kw": [float(t) for t in targets],
           "scope_node_id": scope, "pool_id": pool_id, "pricing": pricing, "price_cap_yuan_per_kwh": cap,
           "declare_deadline": deadline, "mandatory": int(mandatory), "ruleset": ruleset, "result": None,
           "created_by": actor.name, "created_at": now, "updated_at": now}
    conn.execute(events.insert().values(**row))
    audit.record(conn, actor, "event.create", "event", row["event_id"], after=row)
    return get(conn, row["event_id"])


def _set_state(conn: Connection, actor: Actor, ev: dict, action: str, reason: str | None,
               result: dict | None = None) -> dict:
    t = lifecycle.check(lifecycle.EVENT_MACHINE, "event", ev["event_id"], ev["state"], action, actor.role, reason)
    values = {"state": t.target, "updated_at": datetime.now(UTC)}
    if result is not None:
        values["result"] = audit._plain(result)
    conn.execute(events.update().where(events.c.event_id == ev["event_id"]).values(**values))
    audit.record(conn, actor, f"event.{action}", "event", ev["event_id"], before={"state": ev["state"]},
                 after={"state": t.target}, reason=reason)
    after = get(conn, ev["event_id"])
    notify(conn, "event", {"event_id": ev["event_id"], "state": t.target, "product": ev["product"],
                           "day": ev["day"], "start_slot": ev["start_slot"], "end_slot": ev["end_slot"],
                           "targets_kw": ev["targets_kw"], "scope_node_id": ev["scope_node_id"],
                           "declare_deadline": ev["declare_deadline"], "pricing": ev["pricing"],
                           "price_cap_yuan_per_kwh": ev["price_cap_yuan_per_kwh"]})
    return after


def transition(conn: Connection, actor: Actor, event_id: str, action: str, reason: str | None = None,
               now: datetime | None = None) -> dict:
    """Move an event through its life. ``clear`` runs the clearing; ``execute`` sends the instructions."""
    ev = get(conn, event_id)
    if action == "clear":
        return clear(conn, actor, event_id)
    if action == "execute":
        return execute(conn, actor, event_id, now=now)
    if action == "cancel":
        ev2 = _set_state(conn, actor, ev, action, reason)
        conn.execute(instructions.update().where(instructions.c.event_id == event_id,
                                                 instructions.c.state == "sent").values(state="cancelled"))
        return ev2
    return _set_state(conn, actor, ev, action, reason)


# ---------------------------------------------------------------- trading units and declarations

def _unit_parts(unit_id: str) -> tuple[str, str]:
    if not isinstance(unit_id, str) or "@" not in unit_id:
        raise InvalidInput(Violation("unit_id", "a trading unit is OPERATOR@SUBSTATION", unit_id))
    op, sub = unit_id.split("@", 1)
    return op, sub


MEMBER_COLUMNS = (resources.c.resource_id, resources.c.adjustable_down_kw, resources.c.adjustable_up_kw,
                  resources.c.verified_down_kw, resources.c.verified_up_kw, resources.c.adjustable_duration_h,
                  resources.c.latency_s, resources.c.resource_type)


def _members_query(conn: Connection, ev: dict, columns: tuple, unit_ids: list[str] | None, admitted_only: bool):
    """Resources of trading units in the event's scope (active, unflagged): the select of ``columns``
    (plus operator and substation) and the (operator, substation) pairs asked for (None: all)."""
    scope = conn.execute(select(grid_nodes).where(grid_nodes.c.node_id == ev["scope_node_id"])).mappings().one()
    src = resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id)
    q = select(*columns, resources.c.operator_id, grid_nodes.c.substation_id)
    wanted = None
    if unit_ids is not None:
        wanted = {_unit_parts(u) for u in unit_ids}
        ops = sorted({op for op, _ in wanted}) or [""]
        q = q.where(resources.c.operator_id.in_(ops))
        subs = sorted({sub for _, sub in wanted}) or [""]
        q = q.where(grid_nodes.c.substation_id == subs[0] if len(subs) == 1 else grid_nodes.c.substation_id.in_(subs))
    if admitted_only:
        src = src.join(operators, operators.c.operator_id == resources.c.operator_id)
        q = q.where(operators.c.state == "admitted")
    q = q.select_from(src).where(resources.c.state == "active", resources.c.flagged.is_(None))
    level_col = {"district": grid_nodes.c.district_id, "substation": grid_nodes.c.substation_id,
                 "feeder": grid_nodes.c.feeder_id, "transformer_area": grid_nodes.c.node_id}.get(scope["level"])
    if level_col is not None:
        q = q.where(level_col == scope["node_id"])
    return q, wanted


def units_members(conn: Connection, ev: dict, unit_ids: list[str] | None = None,
                  admitted_only: bool = False) -> dict[str, list[dict]]:
    """``unit_members`` of several trading units in one query: unit id → its members (ordered by
    resource id); every unit in scope when ``unit_ids`` is None, only admitted operators' when
    ``admitted_only``. Units without members are absent."""
    q, wanted = _members_query(conn, ev, MEMBER_COLUMNS, unit_ids, admitted_only)
    pool_members = None
    if ev.get("pool_id"):
        engine = pool_svc.PoolEngine.from_db(conn, [ev["pool_id"]])
        pool_members = set(engine.reg.resource_id[engine.mask(ev["pool_id"])].tolist())
    keys = [c.name for c in MEMBER_COLUMNS]
    out: dict[str, list[dict]] = {}
    for row in conn.execute(q.order_by(resources.c.resource_id)):
        op, sub = row[-2], row[-1]
        if wanted is not None and (op, sub) not in wanted:
            continue
        if pool_members is not None and row[0] not in pool_members:
            continue
        out.setdefault(f"{op}@{sub}", []).append(dict(zip(keys, row[:-2], strict=True)))
    return out


def units_capability_kw(conn: Connection, ev: dict, min_duration_h: float,
                        admitted_only: bool = False) -> dict[str, float]:
    """``unit_capability_kw`` of every unit in the event's scope, summed by the database (one GROUP BY,
    not every member to Python); through ``units_members`` when the event has a pool."""
    if ev.get("pool_id"):
        return {u: unit_capability_kw(m, ev["direction"], min_duration_h)
                for u, m in units_members(conn, ev, admitted_only=admitted_only).items()}
    key = "down" if ev["direction"] == "down" else "up"
    cap = func.sum(case((resources.c.adjustable_duration_h >= min_duration_h,
                         func.coalesce(resources.c[f"verified_{key}_kw"], resources.c[f"adjustable_{key}_kw"])),
                        else_=0.0))
    q, _ = _members_query(conn, ev, (cap,), None, admitted_only)
    q = q.group_by(resources.c.operator_id, grid_nodes.c.substation_id)
    return {f"{op}@{sub}": float(total or 0.0) for total, op, sub in conn.execute(q)}


def unit_members(conn: Connection, ev: dict, unit_id: str) -> list[dict]:
    """Active, unflagged resources of a trading unit inside the event's grid scope."""
    _unit_parts(unit_id)
    return units_members(conn, ev, [unit_id]).get(unit_id, [])


def unit_capability_kw(members: list[dict], direction: str, min_duration_h: float) -> float:
    """Verified capability where a test has measured it, declared otherwise, of members that can hold it
    for the minimum duration."""
    key = "down" if direction == "down" else "up"
    total = 0.0
    for m in members:
        if m["adjustable_duration_h"] < min_duration_h:
            continue
        verified = m[f"verified_{key}_kw"]
        total += float(verified if verified is not None else m[f"adjustable_{key}_kw"])
    return total


def declare(conn: Connection, actor: Actor, event_id: str, unit_id: str, quantities_kw: list[float],
            prices_yuan_per_kwh: list[float] | float, now: datetime | None = None) -> dict:
    """An operator's declaration (or amendment) for one trading unit; refusals name the rule."""
    ev = get(conn, event_id)
    now = now or datetime.now(UTC)
    if ev["state"] != "declaring":
        raise TransitionRefused("event", event_id, ev["state"], "declare", "declarations need state declaring",
                                [])
    op = unit_id.split("@", 1)[0]
    if actor.role != "operator_admin" or actor.operator_id != op:
        raise Forbidden(f"only an operator admin of {op} declares for unit {unit_id}")
    state = conn.execute(select(operators.c.state).where(operators.c.operator_id == op)).scalar()
    if state != "admitted":
        raise InvalidInput(Violation("unit_id", f"operator {op} is {state}, not admitted", unit_id))
    deadline = ev["declare_deadline"] if ev["declare_deadline"].tzinfo else ev["declare_deadline"].replace(tzinfo=UTC)
    if now > deadline:
        raise InvalidInput(Violation("submitted_at", f"after the declaration deadline {deadline.isoformat()}",
                                     now.isoformat()))
    n = ev["end_slot"] - ev["start_slot"]
    if isinstance(prices_yuan_per_kwh, (int, float)):
        prices_yuan_per_kwh = [float(prices_yuan_per_kwh)] * n
    adm = rules.load(ev["ruleset"]).section("admission")
    # the market minimums (>= 1 MW for >= 1 h, Guangdong rules) bind market products; a local congestion
    # event under one transformer area or feeder, and a mandatory emergency call, take what is there
    local = ev["product"] in LOCAL_PRODUCTS
    min_kw = 0.0 if local else float(adm["trading_unit_min_mw"]) * 1000
    min_slots = 1 if local else int(round(float(adm["trading_unit_min_duration_h"]) / SLOT_H))
    v: list[Violation] = []
    q = np.asarray(quantities_kw, dtype=float) if len(quantities_kw) == n else None
    p = np.asarray(prices_yuan_per_kwh, dtype=float) if len(prices_yuan_per_kwh) == n else None
    if q is None:
        v.append(Violation("quantities_kw", f"must hold one quantity per slot of the window ({n})", quantities_kw))
    if p is None:
        v.append(Violation("prices_yuan_per_kwh", f"must hold one price per slot ({n}) or one number",
                           prices_yuan_per_kwh))
    if v:
        raise InvalidInput(v)
    if not np.isfinite(q).all() or (q < 0).any():
        v.append(Violation("quantities_kw", "every quantity must be a finite number >= 0", quantities_kw))
    offered = q > 0
    if (offered & (q < min_kw)).any():
        v.append(Violation("quantities_kw", f"an offered slot needs >= {min_kw:g} kW (trading unit minimum)",
                           float(q[offered & (q < min_kw)][0])))
    runs = _runs(offered)
    if offered.any() and min(runs) < min_slots:
        v.append(Violation("quantities_kw", f"offers must last >= {min_slots} consecutive slots "
                                            f"({adm['trading_unit_min_duration_h']} h)", min(runs)))
    if not offered.any():
        v.append(Violation("quantities_kw", "offer at least one slot", quantities_kw))
    cap_price = ev["price_cap_yuan_per_kwh"]
    if not np.isfinite(p).all() or (p[offered] < 0).any() or (p[offered] > cap_price).any():
        v.append(Violation("prices_yuan_per_kwh", f"must be between 0 and the event's cap {cap_price}",
                           prices_yuan_per_kwh))
    members = unit_members(conn, ev, unit_id)
    capability = unit_capability_kw(members, ev["direction"],
                                    SLOT_H if local else float(adm["trading_unit_min_duration_h"]))
    if (q > capability + 1e-9).any():
        v.append(Violation("quantities_kw", f"exceeds the unit's capability {capability:.1f} kW (verified where "
                                            "tested, declared otherwise, inside the event scope)", float(q.max())))
    if v:
        raise InvalidInput(v)
    version = (conn.execute(select(func.max(declarations.c.version)).where(
        declarations.c.event_id == event_id, declarations.c.unit_id == unit_id)).scalar() or 0) + 1
    row = {"declaration_id": new_id("DCL"), "event_id": event_id, "operator_id": op, "unit_id": unit_id,
           "version": version, "quantities_kw": q.tolist(), "prices_yuan_per_kwh": p.tolist(),
           "capability_kw": capability, "submitted_by": actor.name, "submitted_at": now}
    conn.execute(declarations.insert().values(**row))
    audit.record(conn, actor, "declaration.submit" if version == 1 else "declaration.amend", "declaration",
                 row["declaration_id"], after={k: row[k] for k in ("event_id", "unit_id", "version",
                                                                    "quantities_kw", "prices_yuan_per_kwh")})
    return row


def _runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in ``mask``."""
    out, n = [], 0
    for m in mask:
        if m:
            n += 1
        elif n:
            out.append(n)
            n = 0
    if n:
        out.append(n)
    return out or [0]


def latest_declarations(conn: Connection, event_id: str) -> list[dict]:
    latest = select(declarations.c.unit_id, func.max(declarations.c.version).label("v")).where(
        declarations.c.event_id == event_id).group_by(declarations.c.unit_id).subquery()
    q = select(declarations).join(latest, (latest.c.unit_id == declarations.c.unit_id)
                                  & (latest.c.v == declarations.c.version)).where(
        declarations.c.event_id == event_id).order_by(declarations.c.submitted_at, declarations.c.unit_id)
    return [dict(r) for r in conn.execute(q).mappings()]


# ---------------------------------------------------------------- clearing

def clear(conn: Connection, actor: Actor, event_id: str) -> dict:
    """Clear the latest declarations by merit order per slot; publish each operator's awards."""
    from openvpp.kernels.clearing import clear as clear_kernel

    ev = get(conn, event_id)
    lifecycle.check(lifecycle.EVENT_MACHINE, "event", event_id, ev["state"], "clear", actor.role, None)
    n = ev["end_slot"] - ev["start_slot"]
    decls = [] if ev["mandatory"] else latest_declarations(conn, event_id)
    if ev["mandatory"]:
        decls = _mandatory_offers(conn, ev)
    q = np.array([d["quantities_kw"] for d in decls], dtype=float).reshape(len(decls), n)
    p = np.array([d["prices_yuan_per_kwh"] for d in decls], dtype=float).reshape(len(decls), n)
    rows_d, slots = np.nonzero(q > 0)
    submitted = np.array([_order_key(d) for d in decls], dtype=np.int64)
    unit_codes = {u: i for i, u in enumerate(sorted({d["unit_id"] for d in decls}))}
    units = np.array([unit_codes[d["unit_id"]] for d in decls], dtype=np.int64)
    out = clear_kernel(np.asarray(ev["targets_kw"], dtype=float), slots.astype(np.int64), q[rows_d, slots],
                       p[rows_d, slots], submitted[rows_d] if len(rows_d) else np.zeros(0, np.int64),
                       units[rows_d] if len(rows_d) else np.zeros(0, np.int64),
                       pricing=ev["pricing"], price_cap_yuan_per_kwh=ev["price_cap_yuan_per_kwh"])
    accepted = np.asarray(out.accepted_kw)
    paid = np.asarray(out.settlement_price_yuan_per_kwh)
    award_rows = []
    for k in np.flatnonzero(accepted > 1e-9):
        d = decls[rows_d[k]]
        award_rows.append({"event_id": event_id, "unit_id": d["unit_id"], "slot": int(ev["start_slot"] + slots[k]),
                           "operator_id": d["operator_id"], "cleared_kw": float(accepted[k]),
                           "price_yuan_per_kwh": float(paid[k])})
    if award_rows:
        conn.execute(awards.insert(), award_rows)
    cleared = np.zeros(n)
    for a in award_rows:
        cleared[a["slot"] - ev["start_slot"]] += a["cleared_kw"]
    prices = np.asarray(out.clearing_price_yuan_per_kwh, dtype=float).reshape(-1)[:n]
    result = {"clearing_price": [None if np.isnan(x) else float(x) for x in prices],
              "shortfall_kw": np.asarray(out.shortfall_kw).reshape(-1)[:n].tolist(),
              "over_cap": int(np.asarray(out.over_cap).sum()),
              "cleared_kw": cleared.tolist(), "declarations": len(decls), "awards": len(award_rows)}
    after = _set_state(conn, actor, ev, "clear", None, result=result)
    by_op: dict[str, list] = {}
    for a in award_rows:
        by_op.setdefault(a["operator_id"], []).append(a)
    for op, rows in by_op.items():
        notify(conn, "awards", {"event_id": event_id, "awards": rows}, operator_id=op)
    return after


def _order_key(d: dict) -> int:
    """Submission order in microseconds (mandatory offers have none: all equal, unit decides)."""
    ts = d.get("submitted_at")
    return int(ts.timestamp() * 1_000_000) if ts is not None else 0


def _mandatory_offers(conn: Connection, ev: dict) -> list[dict]:
    """Emergency events: every admitted operator's unit in scope offers its whole capability at the cap
    (one aggregate query for every unit, not one query per unit)."""
    n = ev["end_slot"] - ev["start_slot"]
    min_h = float(rules.load(ev["ruleset"]).section("admission")["trading_unit_min_duration_h"])
    offers = []
    caps = units_capability_kw(conn, ev, min_h, admitted_only=True)
    for unit in sorted(caps, key=_unit_parts):
        cap = caps[unit]
        if cap > 0:
            offers.append({"unit_id": unit, "operator_id": _unit_parts(unit)[0], "quantities_kw": [cap] * n,
                           "prices_yuan_per_kwh": [ev["price_cap_yuan_per_kwh"]] * n})
    return offers


def awarded(conn: Connection, event_id: str, operator_id: str | None = None) -> list[dict]:
    q = select(awards).where(awards.c.event_id == event_id).order_by(awards.c.unit_id, awards.c.slot)
    if operator_id:
        q = q.where(awards.c.operator_id == operator_id)
    return [dict(r) for r in conn.execute(q).mappings()]


# ---------------------------------------------------------------- instructions city → operator

def execute(conn: Connection, actor: Actor, event_id: str, now: datetime | None = None) -> dict:
    """Send each operator its cleared quantity per trading unit and slot, to acknowledge within 30 s."""
    ev = get(conn, event_id)
    lifecycle.check(lifecycle.EVENT_MACHINE, "event", event_id, ev["state"], "execute", actor.role, None)
    now = now or datetime.now(UTC)
    rows = []
    for a in awarded(conn, event_id):
        start = slot_start_utc(ev["day"], a["slot"])
        payload = {"event_id": event_id, "unit_id": a["unit_id"], "slot": a["slot"], "start": start,
                   "end": start + timedelta(minutes=15), "direction": ev["direction"], "kw": a["cleared_kw"],
                   "product": ev["product"]}
        rows.append({"instruction_id": new_id("INS"), "event_id": event_id, "level": "operator",
                     "operator_id": a["operator_id"], "unit_id": a["unit_id"], "resource_id": None,
                     "parent_id": None, "slot": a["slot"], "kw": a["cleared_kw"], "state": "sent", "sent_at": now,
                     "ack_deadline": now + ACK_TIMEOUT, "acked_at": None, "reason": None,
                     "payload": audit._plain(payload)})
    if rows:
        conn.execute(instructions.insert(), rows)
    # the units' members as dispatched: the evaluation pays these (imported here: evaluation reads events)
    from openvpp.services.evaluation import snapshot_members
    snapshot_members(conn, ev, [r["unit_id"] for r in rows])
    after = _set_state(conn, actor, ev, "execute", None)
    by_op: dict[str, list] = {}
    for r in rows:
        by_op.setdefault(r["operator_id"], []).append({"instruction_id": r["instruction_id"], **r["payload"]})
    for op, items in by_op.items():
        notify(conn, "instructions", {"event_id": event_id, "instructions": items}, operator_id=op)
    return after


def acknowledge(conn: Connection, actor: Actor, instruction_ids: list[str], status: str = "accepted",
                reason: str | None = None, now: datetime | None = None) -> list[dict]:
    """An operator (or a device key of it) acknowledges instructions; late or foreign ones are refused.
    All or nothing: one refusal changes nothing. One read and one write per resulting state."""
    if status not in ("accepted", "rejected"):
        raise InvalidInput(Violation("status", "must be accepted or rejected", status))
    now = now or datetime.now(UTC)
    found: dict[str, dict] = {}
    cols = (instructions.c.instruction_id, instructions.c.operator_id, instructions.c.state,
            instructions.c.ack_deadline)
    unique = list(dict.fromkeys(instruction_ids))
    for k in range(0, len(unique), 2000):
        q = select(*cols).where(instructions.c.instruction_id.in_(unique[k:k + 2000]))
        found.update({r["instruction_id"]: dict(r) for r in conn.execute(q).mappings()})
    out = []
    seen: set[str] = set()
    for iid in instruction_ids:
        row = found.get(iid)
        if row is None:
            raise NotFound("instruction", iid)
        if actor.operator_id != row["operator_id"] and actor.role not in ("city_admin",):
            raise Forbidden(f"instruction {iid} belongs to another operator")
        if row["state"] != "sent" or iid in seen:
            raise TransitionRefused("instruction", iid, "acked" if iid in seen else row["state"], "acknowledge",
                                    "acks need state sent", [])
        seen.add(iid)
        deadline = row["ack_deadline"] if row["ack_deadline"].tzinfo else row["ack_deadline"].replace(tzinfo=UTC)
        new_state = ("acked" if status == "accepted" else "rejected") if now <= deadline else "timeout"
        out.append({"instruction_id": iid, "state": new_state})
    by_state: dict[str, list[str]] = {}
    for o in out:
        by_state.setdefault(o["state"], []).append(o["instruction_id"])
    for state, ids in by_state.items():
        why = "ack after the deadline" if state == "timeout" else reason
        for k in range(0, len(ids), 2000):
            conn.execute(instructions.update().where(instructions.c.instruction_id.in_(ids[k:k + 2000])).values(
                state=state, acked_at=now, reason=why))
    return out


def expire(conn: Connection, now: datetime | None = None, event_id: str | None = None) -> list[dict]:
    """Mark instructions whose acknowledgement deadline passed as ``timeout``; return them."""
    now = now or datetime.now(UTC)
    q = select(instructions).where(instructions.c.state == "sent", instructions.c.ack_deadline < now)
    if event_id:
        q = q.where(instructions.c.event_id == event_id)
    rows = [dict(r) for r in conn.execute(q).mappings()]
    if rows:
        conn.execute(instructions.update().where(instructions.c.instruction_id.in_(
            [r["instruction_id"] for r in rows])).values(state="timeout", reason="no acknowledgement in time"))
    return rows


def instructions_of(conn: Connection, event_id: str, level: str = "operator", operator_id: str | None = None,
                    state: str | None = None) -> list[dict]:
    q = select(instructions).where(instructions.c.event_id == event_id, instructions.c.level == level)
    if operator_id:
        q = q.where(instructions.c.operator_id == operator_id)
    if state:
        q = q.where(instructions.c.state == state)
    return [dict(r) for r in conn.execute(q.order_by(instructions.c.slot, instructions.c.instruction_id))
            .mappings()]
