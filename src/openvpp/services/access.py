"""Resource access: approve, reject, retire, transfer between operators, contracts with owners.

No double counting: a meter belongs to one live resource (a unique index), a resource to one
operator at a time. A transfer closes the old link (kept in ``resource_links`` with its dates)
and opens a new one, so past settlements stay with the old operator (``operator_at``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Connection, or_, select

from openvpp.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Violation
from openvpp.core.ids import new_id
from openvpp.model import lifecycle
from openvpp.store import audit
from openvpp.store.audit import Actor
from openvpp.store.schema import contracts, operators, owners, resource_links, resources

LIVE = ("registered", "active")


def _resource(conn: Connection, resource_id: str) -> dict:
    row = conn.execute(select(resources).where(resources.c.resource_id == resource_id)).mappings().first()
    if row is None:
        raise NotFound("resource", resource_id)
    return dict(row)


def _admitted(conn: Connection, operator_id: str) -> None:
    state = conn.execute(select(operators.c.state).where(operators.c.operator_id == operator_id)).scalar()
    if state is None:
        raise InvalidInput(Violation("operator_id", "operator does not exist", operator_id))
    if state != "admitted":
        raise InvalidInput(Violation("operator_id", f"operator must be admitted (it is {state})", operator_id))


def transition(conn: Connection, actor: Actor, resource_ids: list[str], action: str,
               reason: str | None = None) -> list[dict]:
    """Approve / reject / retire one or many resources, all or none; each change audited."""
    if not resource_ids:
        raise InvalidInput(Violation("resource_ids", "give at least one resource", resource_ids))
    rows = [_resource(conn, rid) for rid in resource_ids]
    for r in rows:
        t = lifecycle.check(lifecycle.RESOURCE_MACHINE, "resource", r["resource_id"], r["state"], action,
                            actor.role, reason)
        if actor.role == "operator_admin" and r["operator_id"] != actor.operator_id:
            raise Forbidden(f"resource {r['resource_id']} is outside your scope")
    now = datetime.now(UTC)
    out = []
    for r in rows:
        values = {"state": t.target}
        if action == "retire" and r["operator_id"]:
            _close_link(conn, r, now, reason or "retired")
            values.update(operator_since=now)
        conn.execute(resources.update().where(resources.c.resource_id == r["resource_id"]).values(**values))
        audit.record(conn, actor, f"resource.{action}", "resource", r["resource_id"],
                     before={"state": r["state"]}, after={"state": t.target}, reason=reason)
        out.append({"resource_id": r["resource_id"], "state": t.target})
    return out


def _close_link(conn: Connection, r: dict, at: datetime, reason: str) -> None:
    conn.execute(resource_links.insert().values(resource_id=r["resource_id"], operator_id=r["operator_id"],
                                                valid_from=r["operator_since"], valid_to=at, reason=reason))


def transfer(conn: Connection, actor: Actor, resource_id: str, to_operator: str, reason: str | None,
             at: datetime | None = None) -> dict:
    """Move a resource to another admitted operator from ``at`` (default now)."""
    r = _resource(conn, resource_id)
    lifecycle.check(lifecycle.RESOURCE_MACHINE, "resource", resource_id, r["state"], "transfer", actor.role, reason)
    if r["operator_id"] == to_operator:
        raise InvalidInput(Violation("to_operator", "the resource already belongs to this operator", to_operator))
    _admitted(conn, to_operator)
    at = at or datetime.now(UTC)
    since = r["operator_since"]
    if since is not None and _aware(since) >= at:
        raise InvalidInput(Violation("at", "must be after the start of the current link", at.isoformat()))
    if r["operator_id"]:
        _close_link(conn, r, at, reason or "transfer")
    conn.execute(resources.update().where(resources.c.resource_id == resource_id).values(
        operator_id=to_operator, operator_since=at))
    audit.record(conn, actor, "resource.transfer", "resource", resource_id,
                 before={"operator_id": r["operator_id"]}, after={"operator_id": to_operator, "from": at},
                 reason=reason)
    return _resource(conn, resource_id)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def operator_at(conn: Connection, resource_id: str, at: datetime) -> str | None:
    """The operator a resource belonged to at instant ``at`` (for settling past periods)."""
    r = _resource(conn, resource_id)
    if r["operator_since"] is None or _aware(r["operator_since"]) <= at:
        return r["operator_id"]
    q = select(resource_links.c.operator_id, resource_links.c.valid_from, resource_links.c.valid_to).where(
        resource_links.c.resource_id == resource_id).order_by(resource_links.c.valid_to)
    for op, start, end in conn.execute(q):
        if (start is None or _aware(start) <= at) and at < _aware(end):
            return op
    return None


def release_operator(conn: Connection, actor: Actor, operator_id: str, handover_to: str | None,
                     reason: str) -> int:
    """On exit: hand the operator's live resources to another admitted operator, or release them."""
    if handover_to:
        _admitted(conn, handover_to)
    rows = conn.execute(select(resources).where(resources.c.operator_id == operator_id,
                                                resources.c.state.in_(LIVE))).mappings().all()
    now = datetime.now(UTC)
    if rows:
        conn.execute(resource_links.insert(), [
            {"resource_id": r["resource_id"], "operator_id": operator_id, "valid_from": r["operator_since"],
             "valid_to": now, "reason": reason} for r in rows])
        conn.execute(resources.update().where(resources.c.operator_id == operator_id,
                                              resources.c.state.in_(LIVE)).values(operator_id=handover_to,
                                                                                  operator_since=now))
    audit.record(conn, actor, "operator.release_resources", "operator", operator_id,
                 after={"count": len(rows), "handover_to": handover_to}, reason=reason)
    return len(rows)


def release_applicant(conn: Connection, actor: Actor, operator_id: str, reason: str) -> dict[str, int]:
    """On an applicant's rejection: its registered resources are rejected (their meter ids are free for
    a new registration) and any active ones released (no operator, the link closed with its dates)."""
    pending = list(conn.execute(select(resources.c.resource_id).where(
        resources.c.operator_id == operator_id, resources.c.state == "registered").order_by(
        resources.c.resource_id)).scalars())
    if pending:
        transition(conn, actor, pending, "reject", reason)
    released = release_operator(conn, actor, operator_id, None, reason)
    return {"rejected": len(pending), "released": released}


# ---------------------------------------------------------------- contracts

def register_contract(conn: Connection, actor: Actor, owner_id: str, operator_id: str, scheme: str,
                      valid_from: date, valid_to: date | None = None, owner_share: float | None = None,
                      tiers: list[dict] | None = None, resource_id: str | None = None) -> dict:
    """An owner's revenue-share contract with its operator: ``fixed`` share or ``tiered`` shares.

    Tiers: ``[{"up_to_yuan": 10000, "owner_share": 0.6}, {"up_to_yuan": None, "owner_share": 0.5}]``,
    applied like tax brackets to the year's revenue. Validity periods of the same owner, operator and
    resource may not overlap.
    """
    if actor.role not in ("city_admin", "operator_admin"):
        raise Forbidden(f"role {actor.role} may not register contracts")
    if actor.role == "operator_admin" and actor.operator_id != operator_id:
        raise Forbidden("an operator registers contracts for itself only")
    v: list[Violation] = []
    if conn.execute(select(owners.c.owner_id).where(owners.c.owner_id == owner_id)).first() is None:
        v.append(Violation("owner_id", "owner does not exist", owner_id))
    if conn.execute(select(operators.c.operator_id).where(operators.c.operator_id == operator_id)).first() is None:
        v.append(Violation("operator_id", "operator does not exist", operator_id))
    if scheme == "fixed":
        if owner_share is None or not 0 <= owner_share <= 1:
            v.append(Violation("owner_share", "a fixed contract needs a share between 0 and 1", owner_share))
    elif scheme == "tiered":
        v += _check_tiers(tiers)
    else:
        v.append(Violation("scheme", "must be fixed or tiered", scheme))
    if valid_to is not None and valid_to <= valid_from:
        v.append(Violation("valid_to", "must be after valid_from", valid_to.isoformat()))
    if resource_id is not None:
        r = conn.execute(select(resources.c.owner_id).where(resources.c.resource_id == resource_id)).first()
        if r is None or r[0] != owner_id:
            v.append(Violation("resource_id", "must be a resource of this owner", resource_id))
    if v:
        raise InvalidInput(v)
    far = date(9999, 12, 31)
    overlap = conn.execute(select(contracts.c.contract_id).where(
        contracts.c.owner_id == owner_id, contracts.c.operator_id == operator_id,
        contracts.c.resource_id.is_(None) if resource_id is None else contracts.c.resource_id == resource_id,
        contracts.c.valid_from < (valid_to or far),
        or_(contracts.c.valid_to.is_(None), contracts.c.valid_to > valid_from))).first()
    if overlap is not None:
        raise Conflict(f"contract {overlap[0]} already covers part of this period")
    row = {"contract_id": new_id("CTR"), "owner_id": owner_id, "operator_id": operator_id,
           "resource_id": resource_id, "scheme": scheme, "owner_share": owner_share, "tiers": tiers,
           "valid_from": valid_from, "valid_to": valid_to, "created_at": datetime.now(UTC)}
    conn.execute(contracts.insert().values(**row))
    audit.record(conn, actor, "contract.register", "contract", row["contract_id"], after=row)
    return row


def _check_tiers(tiers: list[dict] | None) -> list[Violation]:
    if not tiers:
        return [Violation("tiers", "a tiered contract needs at least one tier", tiers)]
    v = []
    last = 0.0
    for i, t in enumerate(tiers):
        share = t.get("owner_share")
        if share is None or not 0 <= share <= 1:
            v.append(Violation(f"tiers[{i}].owner_share", "must be between 0 and 1", share))
        cap = t.get("up_to_yuan")
        if cap is None and i != len(tiers) - 1:
            v.append(Violation(f"tiers[{i}].up_to_yuan", "only the last tier may be open-ended", cap))
        if cap is not None and cap <= last:
            v.append(Violation(f"tiers[{i}].up_to_yuan", "tiers must rise", cap))
        last = cap if cap is not None else last
    return v


def contract_for(conn: Connection, owner_id: str, operator_id: str, day: date,
                 resource_id: str | None = None) -> dict:
    """The contract in force on ``day``: resource-specific first, then owner-wide, else the owner's
    default fixed share (owners.revenue_share)."""
    base = select(contracts).where(contracts.c.owner_id == owner_id, contracts.c.operator_id == operator_id,
                                   contracts.c.valid_from <= day,
                                   or_(contracts.c.valid_to.is_(None), contracts.c.valid_to > day))
    for cond in ([contracts.c.resource_id == resource_id] if resource_id else []) + [contracts.c.resource_id.is_(None)]:
        row = conn.execute(base.where(cond)).mappings().first()
        if row is not None:
            return dict(row)
    share = conn.execute(select(owners.c.revenue_share).where(owners.c.owner_id == owner_id)).scalar()
    if share is None:
        raise NotFound("owner", owner_id)
    return {"contract_id": None, "scheme": "fixed", "owner_share": float(share), "tiers": None,
            "owner_id": owner_id, "operator_id": operator_id}


def owner_share_of(contract: dict, revenue_yuan: float) -> float:
    """Owner's part of ``revenue_yuan`` under a contract (tiers applied like brackets)."""
    if contract["scheme"] == "fixed":
        return revenue_yuan * float(contract["owner_share"])
    total, lower = 0.0, 0.0
    for t in contract["tiers"]:
        upper = t.get("up_to_yuan")
        part = max(0.0, (revenue_yuan if upper is None else min(revenue_yuan, upper)) - lower)
        total += part * float(t["owner_share"])
        if upper is None or revenue_yuan <= upper:
            break
        lower = upper
    return total


