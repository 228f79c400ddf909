"""The resource database: list, read, register, change, bulk import, summaries."""

import io
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import APIRouter, Body, Depends, Query, Request, Response, UploadFile
from sqlalchemy import Connection

from openvpp.api.deps import current_actor, read_conn, write_conn
from openvpp.api.routing import JSONRoute
from openvpp.core.errors import InvalidInput, Violation
from openvpp.model.columns import RESOURCE_COLUMNS
from openvpp.model.roles import Perm
from openvpp.services import registry, search
from openvpp.services import resources as svc
from openvpp.services.scope import require, scope_of
from openvpp.store.audit import Actor

router = APIRouter(prefix="/resources", tags=["resources"], route_class=JSONRoute)


@router.get("")
def list_resources(
    request: Request, resource_type: str | None = None, operator_id: str | None = None, owner_id: str | None = None,
    district_id: str | None = None, substation_id: str | None = None, feeder_id: str | None = None,
    ta_id: str | None = None, state: str | None = None, verified_grade: str | None = None,
    response_mode: str | None = None, q: str | None = None,
    limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0),
    actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn),
) -> dict:
    """A page of resources within your scope (server-side filters and paging)."""
    filters = {"resource_type": resource_type, "operator_id": operator_id, "owner_id": owner_id,
               "district_id": district_id, "substation_id": substation_id, "feeder_id": feeder_id,
               "ta_id": ta_id, "state": state, "verified_grade": verified_grade, "response_mode": response_mode}
    engine = request.app.state.pool_engine.get(conn)
    text = search.index_for(engine, conn) if q else None
    return svc.list_page(conn, actor, filters, q, limit, offset, reg=engine.reg, text=text)


@router.get("/summary")
def summary(request: Request,
            by: str = Query("district", description="one grouping or two separated by a comma: district, substation, "
                            "feeder, transformer_area, type (or resource_type), operator, response_mode, grade, "
                            "protocol; e.g. by=transformer_area,resource_type"),
            parent: str | None = Query(None, description="a grid node id: only the resources under it, e.g. "
                                       "by=feeder&parent=GZ-HZ-S01 for one substation's feeders"),
            resource_type: str | None = None, operator_id: str | None = None, owner_id: str | None = None,
            district_id: str | None = None, substation_id: str | None = None, feeder_id: str | None = None,
            ta_id: str | None = None, state: str | None = Query(None, description="default: active"),
            verified_grade: str | None = None, response_mode: str | None = None,
            limit: int | None = Query(None, ge=1, description="groups per page; default 1,000 rows "
                                      f"(at most {registry.MAX_SUMMARY_ROWS:,}), or every group with format=columns"),
            offset: int = Query(0, ge=0),
            fmt: str = Query("rows", alias="format", pattern="^(rows|columns)$",
                             description="rows: one object per group with labels; columns: one array per field"),
            actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> dict:
    """Connected, adjustable and verified kW of active resources grouped by one or two keys (a grid level
    and the type, an operator and the grade...), city-wide or under one grid node (``parent``), with the
    list's filters; paged (``total`` counts every group), or column-shaped for fine groupings."""
    scope = scope_of(actor)
    filters = {"resource_type": resource_type, "operator_id": operator_id, "owner_id": owner_id,
               "district_id": district_id, "substation_id": substation_id, "feeder_id": feeder_id,
               "ta_id": ta_id, "state": state, "verified_grade": verified_grade, "response_mode": response_mode}
    columns = fmt == "columns"
    page = registry.summary_page(conn, by, scope, parent, request.app.state.pool_engine.registry(conn), filters,
                                 limit if limit is not None or columns else 1000, offset, columns)
    return {"by": by, "parent": parent, "scope": scope.label(), **page}


@router.get("/export")
def export(fmt: str = Query("csv", alias="format", pattern="^(csv|parquet)$"), resource_type: str | None = None,
           operator_id: str | None = None, owner_id: str | None = None, district_id: str | None = None,
           substation_id: str | None = None, feeder_id: str | None = None, ta_id: str | None = None,
           state: str | None = None, verified_grade: str | None = None, response_mode: str | None = None,
           actor: Actor = Depends(current_actor), conn: Connection = Depends(read_conn)) -> Response:
    """Export the resources in your scope (filters as the list) as CSV or Parquet."""
    filters = {"resource_type": resource_type, "operator_id": operator_id, "owner_id": owner_id,
               "district_id": district_id, "substation_id": substation_id, "feeder_id": feeder_id, "ta_id": ta_id,
               "state": state, "verified_grade": verified_grade, "response_mode": response_mode}
    table = svc.export_table(conn, actor, filters)
    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, buf)
        media = "application/vnd.apache.parquet"
    else:
        pacsv.write_csv(table, buf)
        media = "text/csv; charset=utf-8"
    return Response(buf.getvalue(), media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="resources.{fmt}"'})


@router.get("/{resource_id}")
def get_resource(resource_id: str, actor: Actor = Depends(current_actor),
                 conn: Connection = Depends(read_conn)) -> dict:
    return svc.get(conn, actor, resource_id)


@router.post("", status_code=201)
def register(body: dict[str, Any] = Body(..., examples=[{
        "resource_id": "R9000001", "name": "Tower A chiller", "resource_type": "central_ac",
        "operator_id": "OP01", "owner_id": "OW000001", "site_id": "S000001", "ta_id": "GZ-TH-S01-F01-T001",
        "capacity_kw": 800, "profile_archetype": "central_ac_office", "profile_scale_kw": 600, "noise_seed": 7,
        "latency_s": 120, "response_mode": "semi_automatic", "adjustable_up_kw": 0, "adjustable_down_kw": 160,
        "adjustable_duration_h": 2, "control_protocol": "mqtt", "meter_id": "M900000000001"}]),
        actor: Actor = Depends(current_actor), conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Register one resource. Fields and rules as the columns of resources.csv (docs/city-files.md)."""
    return svc.register(conn, actor, body)


@router.patch("/{resource_id}")
def update(resource_id: str, body: dict[str, Any] = Body(..., examples=[{"adjustable_down_kw": 120}]),
           reason: str | None = None, actor: Actor = Depends(current_actor),
           conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Change declared attributes (capability, latency, response mode, protocol); audited with before/after."""
    return svc.update(conn, actor, resource_id, body, reason)


@router.post("/import", status_code=201)
async def import_file(file: UploadFile, actor: Actor = Depends(current_actor),
                      conn: Connection = Depends(write_conn, scope="function")) -> dict:
    """Bulk import (CSV or Parquet with the columns of resources.csv): all rows or none."""
    require(actor, Perm.REGISTER_RESOURCES)
    data = await file.read()
    name = (file.filename or "").lower()
    try:
        if name.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(data))
        else:
            header = data.split(b"\n", 1)[0].decode("utf-8-sig").strip().split(",")
            table = pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
                column_types={h.strip('"'): "string" for h in header},
                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except Exception as exc:  # noqa: BLE001 - any parser failure is the client's malformed file
        raise InvalidInput(Violation("file", f"is not a well-formed CSV/Parquet file: {exc}", file.filename)) \
            from exc
    state = "active" if actor.role == "city_admin" else "registered"
    n = registry.import_resources(conn, table, actor, state=state, source=file.filename or "upload")
    return {"imported": n, "state": state, "columns": [c.name for c in RESOURCE_COLUMNS]}
