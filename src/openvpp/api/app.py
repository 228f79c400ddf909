"""The FastAPI application: ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``), dashboard at ``/``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from openvpp import __version__
from openvpp.api import routes
from openvpp.core.errors import OpenVPPError
from openvpp.core.settings import Settings
from openvpp.services.pools import PoolCache
from openvpp.web import mount_web


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = (settings or Settings.from_env()).with_secret()
    app = FastAPI(
        title="openvpp",
        version=__version__,
        description="City virtual power plant platform: resources, grid, events, dispatch, settlement.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.pool_engine = PoolCache()   # the pools' engine, shared by requests, rebuilt on changes

    @app.exception_handler(OpenVPPError)
    async def _domain_error(_request: Request, exc: OpenVPPError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        violations = []
        for e in exc.errors():
            loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "header", "form")]
            violations.append({"field": ".".join(loc) or "body", "rule": e.get("msg", "invalid"),
                               "value": _short(e.get("input"))})
        msg = "; ".join(f"{v['field']}: {v['rule']}" for v in violations[:5])
        return JSONResponse({"error": "InvalidInput", "message": msg, "violations": violations,
                             "total": len(violations)}, status_code=422)

    routes.include(app)
    mount_web(app)
    return app


def _short(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "..."
