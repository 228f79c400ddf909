"""Routers of ``/api/v1``, one module per area."""

from fastapi import FastAPI

from openvpp.api.routes import (
    access,
    auth,
    ev,
    events,
    grid,
    live,
    meta,
    operators,
    pools,
    reports,
    resources,
    settlement,
    telemetry,
    tss,
    verification,
)


def include(app: FastAPI) -> None:
    for module in (meta, auth, grid, operators, access, resources, pools, reports, tss, verification, telemetry,
                   live, ev, settlement, events):
        app.include_router(module.router, prefix="/api/v1")
