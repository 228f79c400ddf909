"""Routers of ``/api/v1``, one module per area."""

from fastapi import FastAPI

from openvpp.api.routes import access, auth, grid, meta, operators, reports, resources, tss, verification


def include(app: FastAPI) -> None:
    for module in (meta, auth, grid, operators, access, resources, reports, tss, verification):
        app.include_router(module.router, prefix="/api/v1")
