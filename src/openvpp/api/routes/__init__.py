"""Routers of ``/api/v1``, one module per area."""

from fastapi import FastAPI

from openvpp.api.routes import auth, grid, meta, operators, reports, resources, tss


def include(app: FastAPI) -> None:
    for module in (meta, auth, grid, operators, resources, reports, tss):
        app.include_router(module.router, prefix="/api/v1")
