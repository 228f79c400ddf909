"""The grid tree: city → district → substation → feeder → transformer area."""

from fastapi import APIRouter, Depends
from sqlalchemy import Connection, select

from openvpp.api.deps import current_actor, read_conn
from openvpp.api.routing import JSONRoute
from openvpp.core.errors import NotFound
from openvpp.store.audit import Actor
from openvpp.store.schema import grid_nodes

router = APIRouter(prefix="/grid", tags=["grid"], route_class=JSONRoute)


@router.get("/nodes")
def children(parent: str = "GZ", actor: Actor = Depends(current_actor),
             conn: Connection = Depends(read_conn)) -> dict:
    """A node and its children (the topology is public to every signed-in role)."""
    node = conn.execute(select(grid_nodes).where(grid_nodes.c.node_id == parent)).mappings().first()
    if node is None:
        raise NotFound("grid node", parent)
    kids = conn.execute(select(grid_nodes).where(grid_nodes.c.parent_id == parent)
                        .order_by(grid_nodes.c.node_id)).mappings().all()
    return {"node": dict(node), "children": [dict(k) for k in kids]}


@router.get("/nodes/{node_id}")
def node(node_id: str, actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    row = conn.execute(select(grid_nodes).where(grid_nodes.c.node_id == node_id)).mappings().first()
    if row is None:
        raise NotFound("grid node", node_id)
    return dict(row)
