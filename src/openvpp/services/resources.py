"""One resource at a time: read within the caller's scope, register, change declared capability."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, func, select

from openvpp.core.errors import Forbidden, InvalidInput, NotFound, Violation
from openvpp.model.columns import RESOURCE_COLUMNS
from openvpp.model.enums import Role
from openvpp.model.roles import Perm
from openvpp.services import registry
from openvpp.services.scope import Scope, require, scope_of
from openvpp.services.validation import validate_table
from openvpp.store import audit, bulk
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes, resource_links, resources

#: fields an operator or the center may change on a registered resource
EDITABLE = ("name", "latency_s", "response_mode", "adjustable_up_kw", "adjustable_down_kw",
            "adjustable_duration_h", "control_protocol", "capacity_kva")
#: the filters of the list and the export (``registry.FILTERS``)
FILTERS = registry.FILTERS


def _in_scope(row: dict, scope: Scope) -> bool:
    if scope.operator_id and row["operator_id"] != scope.operator_id:
        return False
    return not (scope.owner_id and row["owner_id"] != scope.owner_id)


def get(conn: Connection, actor: Actor, resource_id: str) -> dict:
    scope = scope_of(actor)
    q = select(resources, grid_nodes.c.district_id, grid_nodes.c.substation_id, grid_nodes.c.feeder_id) \
        .select_from(resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id)) \
        .where(resources.c.resource_id == resource_id)
    row = conn.execute(q).mappings().first()
    if row is None:
        raise NotFound("resource", resource_id)
    row = dict(row)
    if not _in_scope(row, scope):
        raise Forbidden(f"resource {resource_id} is outside your scope ({scope.label()})")
    return row


def list_page(conn: Connection, actor: Actor, filters: dict[str, str] | None = None, search: str | None = None,
              limit: int = 50, offset: int = 0, reg=None, text=None) -> dict:
    """A page of resources in the caller's scope, filtered; ``total`` counts all matches.

    ``reg`` (``registry_arrays.RegistryArrays`` of every resource, current with the database, e.g.
    the API's shared pool engine's): without a text search, the matches are counted and the page's
    ids picked on its arrays (every filter is one of its columns), and only the page's rows are
    read; a COUNT over the filtered join costs ~0.1 s at 100,000 resources on every page. A text
    search is answered there too when ``text`` (``services.search.TextIndex`` loaded with ``reg``)
    is given: a case-insensitive substring of the id, name or meter id."""
    scope = scope_of(actor)
    if not 1 <= limit <= 1000:
        raise InvalidInput(Violation("limit", "must be between 1 and 1000", limit))
    if offset < 0:
        raise InvalidInput(Violation("offset", "must be >= 0", offset))
    conditions = registry.check_filters(filters)
    search = (search or "").strip() or None   # surrounding spaces are no part of what is looked for
    found = text.matching_positions(search) if search and text is not None else None
    if reg is not None and (not search or found is not None):
        # the tenant fence is one more condition on the same columns (a filter outside it matches nothing)
        mask = reg.matching(**conditions) & reg.matching(operator_id=scope.operator_id, owner_id=scope.owner_id)
        if found is not None:
            hit = np.zeros(reg.n, bool)
            hit[found] = True
            mask &= hit
        idx = np.flatnonzero(mask)
        page = [str(r) for r in reg.resource_id[idx[offset:offset + limit]]]
        q = select(resources, grid_nodes.c.district_id).select_from(
            resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id)).where(
            resources.c.resource_id.in_(page)).order_by(resources.c.resource_id)
        items = [dict(r) for r in conn.execute(q).mappings()] if page else []
        return {"total": int(len(idx)), "limit": limit, "offset": offset, "scope": scope.label(), "items": items}
    base = select(resources.c.resource_id).select_from(
        resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id))
    for name, value in conditions.items():
        base = base.where(FILTERS[name] == value)
    if search:
        like = f"%{search}%"
        base = base.where(resources.c.resource_id.like(like) | resources.c.name.like(like)
                          | resources.c.meter_id.like(like))
    base = registry.apply_scope(base, scope)
    total = conn.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    ids = base.order_by(resources.c.resource_id).limit(limit).offset(offset).subquery()
    q = select(resources, grid_nodes.c.district_id).select_from(
        resources.join(ids, ids.c.resource_id == resources.c.resource_id)
        .join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id)).order_by(resources.c.resource_id)
    items = [dict(r) for r in conn.execute(q).mappings()]
    return {"total": total, "limit": limit, "offset": offset, "scope": scope.label(), "items": items}


def register(conn: Connection, actor: Actor, fields: dict) -> dict:
    """Register one resource (same rules as a bulk import). An operator's registration awaits approval."""
    require(actor, Perm.REGISTER_RESOURCES)
    unknown = [k for k in fields if k not in {c.name for c in RESOURCE_COLUMNS}]
    if unknown:
        raise InvalidInput([Violation(k, "unknown field", fields[k]) for k in unknown])
    table = pa.table({c.name: pa.array([_text(fields.get(c.name))], pa.string()) for c in RESOURCE_COLUMNS})
    state = "active" if actor.role == Role.CITY_ADMIN.value else "registered"
    registry.import_resources(conn, table, actor, state=state, first_line=1, source="api")
    # the batch audit entry above names the id; add a per-resource entry with the full record
    row = get(conn, actor, fields["resource_id"])
    audit.record(conn, actor, "resource.register", "resource", row["resource_id"], after=row)
    return row


def _text(v) -> str | None:
    return None if v is None else str(v)


def update(conn: Connection, actor: Actor, resource_id: str, patch: dict, reason: str | None = None) -> dict:
    """Change declared attributes; refused fields and broken rules name the field; audit keeps before/after."""
    if actor.role not in (Role.CITY_ADMIN.value, Role.OPERATOR_ADMIN.value):
        raise Forbidden(f"role {actor.role} may not change resources")
    before = get(conn, actor, resource_id)
    bad = [k for k in patch if k not in EDITABLE]
    if bad:
        raise InvalidInput([Violation(k, f"cannot be changed here; editable: {', '.join(EDITABLE)}", patch[k])
                            for k in bad])
    merged = {c.name: before.get(c.name) for c in RESOURCE_COLUMNS}
    merged.update(patch)
    merged["commissioned_on"] = before["commissioned_on"].isoformat() if before["commissioned_on"] else None
    table = pa.table({c.name: pa.array([_text(merged.get(c.name))], pa.string()) for c in RESOURCE_COLUMNS})
    # the row itself is in the table already: uniqueness is checked in-file only, so this is safe
    checked = validate_table(table, RESOURCE_COLUMNS, first_line=1)
    values = {k: checked.table.column(k)[0].as_py() for k in patch}
    conn.execute(resources.update().where(resources.c.resource_id == resource_id).values(**values))
    after = get(conn, actor, resource_id)
    audit.record(conn, actor, "resource.update", "resource", resource_id,
                 before={k: before[k] for k in patch}, after={k: after[k] for k in patch}, reason=reason)
    return after


EXPORT_COLUMNS = [c.name for c in RESOURCE_COLUMNS] + [
    "state", "operator_since", "verified_up_kw", "verified_down_kw", "verified_latency_s", "verified_grade",
    "flagged", "district_id", "substation_id", "feeder_id"]


def export_table(conn: Connection, actor: Actor, filters: dict[str, str] | None = None) -> pa.Table:
    """Every resource in the caller's scope matching ``filters``, as an Arrow table (for CSV/Parquet).

    The columns of resources.csv come first (so an export re-imports), then state, verification and
    the grid ancestors. PostgreSQL streams the rows with COPY TO.
    """
    scope = scope_of(actor)
    cols = [resources.c[n] for n in EXPORT_COLUMNS[:-3]] + [grid_nodes.c.district_id, grid_nodes.c.substation_id,
                                                              grid_nodes.c.feeder_id]
    q = select(*cols).select_from(resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id))
    for name, value in registry.check_filters(filters).items():
        q = q.where(FILTERS[name] == value)
    q = registry.apply_scope(q, scope).order_by(resources.c.resource_id)
    sql = str(q.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    kinds = {c.name: c.kind for c in RESOURCE_COLUMNS}
    arrow = {"float": pa.float64(), "int": pa.int64(), "date": pa.date32()}
    types = {n: arrow.get(kinds.get(n, ""), pa.string()) for n in EXPORT_COLUMNS}
    for n in ("verified_up_kw", "verified_down_kw", "verified_latency_s"):
        types[n] = pa.float64()
    types["operator_since"] = pa.timestamp("us", "UTC")
    return bulk.query_arrow(conn, sql, types)


def history(conn: Connection, actor: Actor, resource_id: str, limit: int = 200) -> dict:
    """A resource's operator links (the current one and the closed ones, with their dates) and its
    audit trail (newest first, at most ``limit`` entries), within the caller's scope."""
    current = get(conn, actor, resource_id)
    links = [dict(r) for r in conn.execute(select(resource_links).where(
        resource_links.c.resource_id == resource_id).order_by(resource_links.c.valid_to)).mappings()]
    return {"resource_id": resource_id, "state": current["state"], "operator_id": current["operator_id"],
            "operator_since": current["operator_since"], "closed_links": links,
            "audit": audit.entries(conn, "resource", resource_id, limit=limit)}
