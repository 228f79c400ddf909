"""Local congestion (Guangzhou's 2025 pilots in Baiyun and Haizhu: transformer-area overload).

Forecast the load under every transformer area or feeder for a day from the registered resources'
profiles, find the nodes that will exceed their rating, propose a congestion event scoped to the
node (target = the relief needed per slot), and after clearing show the relief achieved.
"""

from __future__ import annotations

from datetime import date

import numpy as np
from sqlalchemy import Connection, select

from openvpp.core.errors import InvalidInput, NotFound, Violation
from openvpp.core.timeslots import SLOTS_PER_DAY, local_midnight_utc
from openvpp.kernels.congestion import loading, overloads, relief_kw
from openvpp.kernels.profiles import materialise
from openvpp.services import events
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes, profile_archetypes, resources
from openvpp.store.schema_events import awards

LEVELS = {"transformer_area": grid_nodes.c.node_id, "feeder": grid_nodes.c.feeder_id}
CHUNK = 200_000


def forecast_node_load(conn: Connection, day: date, level: str = "transformer_area",
                       node_id: str | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Net active power per node and slot of ``day`` (n_nodes, 96) kW from the active resources'
    profiles, with each node's rating (kVA)."""
    if level not in LEVELS:
        raise InvalidInput(Violation("level", f"must be one of {', '.join(LEVELS)}", level))
    arch = conn.execute(select(profile_archetypes.c.archetype_id, profile_archetypes.c.values_f32,
                               profile_archetypes.c.year).order_by(profile_archetypes.c.archetype_id)).all()
    if not arch:
        raise NotFound("profile archetypes", "any")
    year = int(arch[0][2])
    matrix = np.stack([np.frombuffer(a[1], dtype="<f4") for a in arch])
    index = {a[0]: i for i, a in enumerate(arch)}
    start = int((local_midnight_utc(day) - local_midnight_utc(date(year, 1, 1))).total_seconds() // 900)
    if not 0 <= start <= matrix.shape[1] - SLOTS_PER_DAY:
        raise InvalidInput(Violation("day", f"profiles cover the year {year} only", day.isoformat()))
    key = LEVELS[level]
    q = (select(key.label("node"), resources.c.profile_archetype, resources.c.profile_scale_kw,
                resources.c.noise_seed)
         .select_from(resources.join(grid_nodes, grid_nodes.c.node_id == resources.c.ta_id))
         .where(resources.c.state == "active"))
    if node_id:
        q = q.where(key == node_id)
    rows = conn.execute(q).all()
    nodes = sorted({r[0] for r in rows})
    pos = {n: i for i, n in enumerate(nodes)}
    total = np.zeros((len(nodes), SLOTS_PER_DAY))
    for c in range(0, len(rows), CHUNK):
        part = rows[c:c + CHUNK]
        power = materialise(matrix, np.array([index[r[1]] for r in part]), np.array([r[2] for r in part]),
                            np.array([r[3] for r in part]), start, start + SLOTS_PER_DAY)
        np.add.at(total, np.array([pos[r[0]] for r in part]), power)
    ratings = dict(conn.execute(select(grid_nodes.c.node_id, grid_nodes.c.rating_kva).where(
        grid_nodes.c.node_id.in_(nodes))).all()) if nodes else {}
    rating = np.array([float(ratings.get(n) or np.nan) for n in nodes])
    return nodes, total, rating


def scan(conn: Connection, day: date, level: str = "transformer_area", threshold: float = 1.0,
         power_factor: float = 0.95) -> list[dict]:
    """Nodes forecast to exceed ``threshold`` × rating on ``day``, worst first."""
    nodes, p, rating = forecast_node_load(conn, day, level)
    ok = np.isfinite(rating) & (rating > 0)
    ratio = np.zeros_like(p)
    ratio[ok] = loading(p[ok], rating[ok], power_factor=power_factor)
    o = overloads(ratio, threshold)
    relief = np.zeros_like(p)
    relief[ok] = relief_kw(p[ok], rating[ok], threshold, power_factor=power_factor)
    out = [{"node_id": nodes[i], "level": level, "rating_kva": float(rating[i]), "peak_loading": float(o["peak"][i]),
            "first_slot": int(o["first_slot"][i]), "slots_over": int(o["slots"][i]),
            "max_relief_kw": float(relief[i].max())} for i in np.flatnonzero(o["overloaded"] & ok)]
    return sorted(out, key=lambda r: -r["peak_loading"])


def propose(conn: Connection, actor: Actor, node_id: str, day: date, threshold: float = 1.0,
            margin: float = 0.05, power_factor: float = 0.95, pricing: str = "uniform") -> dict:
    """A draft congestion event scoped to ``node_id``: the window spans the overloaded slots, the
    target per slot is the relief that brings loading under ``threshold × (1 − margin)``."""
    node = conn.execute(select(grid_nodes).where(grid_nodes.c.node_id == node_id)).mappings().first()
    if node is None:
        raise NotFound("grid node", node_id)
    if node["level"] not in LEVELS:
        raise InvalidInput(Violation("node_id", "congestion events sit on a feeder or a transformer area", node_id))
    nodes, p, rating = forecast_node_load(conn, day, node["level"], node_id)
    if not nodes:
        raise InvalidInput(Violation("node_id", "no active resources under this node", node_id))
    relief = relief_kw(p, rating, threshold, margin, power_factor)[0]
    slots = np.flatnonzero(relief > 0)
    if slots.size == 0:
        raise InvalidInput(Violation("node_id", f"no overload forecast on {day.isoformat()}", node_id))
    start, end = int(slots.min()), int(slots.max()) + 1
    return events.create(conn, actor, {
        "product": "congestion", "name": f"congestion {node_id} {day.isoformat()}", "day": day.isoformat(),
        "start_slot": start, "end_slot": end, "targets_kw": [round(float(x), 3) for x in relief[start:end]],
        "scope_node_id": node_id, "pricing": pricing})


def relief_report(conn: Connection, event_id: str, power_factor: float = 0.95) -> dict:
    """Loading of the event's node per slot before and after the cleared reductions (forecast basis)."""
    ev = events.get(conn, event_id)
    node = conn.execute(select(grid_nodes).where(grid_nodes.c.node_id == ev["scope_node_id"])).mappings().one()
    if node["level"] not in LEVELS:
        raise InvalidInput(Violation("event_id", "not a local congestion event", event_id))
    _, p, rating = forecast_node_load(conn, ev["day"], node["level"], node["node_id"])
    window = slice(ev["start_slot"], ev["end_slot"])
    cleared = np.zeros(SLOTS_PER_DAY)
    for slot, kw in conn.execute(select(awards.c.slot, awards.c.cleared_kw).where(awards.c.event_id == event_id)):
        cleared[slot] += kw
    before = loading(p, rating, power_factor=power_factor)[0]
    after = loading(p - cleared[None, :], rating, power_factor=power_factor)[0]
    return {"event_id": event_id, "node_id": node["node_id"], "rating_kva": float(rating[0]),
            "slots": list(range(ev["start_slot"], ev["end_slot"])), "before": before[window].tolist(),
            "after": after[window].tolist(), "cleared_kw": cleared[window].tolist(),
            "peak_before": float(before[window].max()), "peak_after": float(after[window].max())}
