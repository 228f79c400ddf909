"""The FastAPI application: ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``), dashboard at ``/``."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from openvpp import __version__
from openvpp.api import routes
from openvpp.api.deps import CallerCache
from openvpp.core.errors import OpenVPPError
from openvpp.core.memory import freeze_long_lived, retain_freed_memory
from openvpp.core.settings import Settings
from openvpp.services.live import check_config, reporting_intervals
from openvpp.services.pools import PoolCache
from openvpp.services.telemetry import TelemetryConfig
from openvpp.web import mount_web

#: API requests served at once; the others wait on the event loop, holding neither a worker thread
#: nor a database connection. A request holds a pooled connection (and, when its caller's account
#: is not in api/deps.CallerCache, a second one for that look-up), and its dependencies are opened and closed in worker
#: threads: without a bound, an overload lets every worker thread block on an empty pool while the
#: connections are held by requests waiting for a thread to close them, and the server stops (seen
#: at 200 requests/s in benchmarks/api_load.py). Kept below half of the pools in store/db.py.
API_CONCURRENCY = 12
#: long-lived streams are not counted (they hold no connection while they wait)
UNBOUNDED_PATHS = ("/api/v1/live/stream",)


class ConcurrencyLimit:
    """Pure ASGI middleware: at most ``limit`` ``/api/`` requests in the app at once, first come first served."""

    def __init__(self, app, limit: int = API_CONCURRENCY):
        self.app = app
        self.limit = limit
        self._sem: asyncio.Semaphore | None = None

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/") or path.startswith(UNBOUNDED_PATHS):
            return await self.app(scope, receive, send)
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limit)
        async with self._sem:
            await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = (settings or Settings.from_env()).with_secret()
    # live settings the view cannot honour stop the server here, naming the setting, not at a first request
    check_config(TelemetryConfig.from_env())
    reporting_intervals()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        freeze_long_lived()   # the libraries and routes, imported and built: out of the collector's view
        retain_freed_memory()  # evaluations and settlements reuse what they freed (core/memory.py)
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="openvpp",
        version=__version__,
        description="City virtual power plant platform: resources, grid, events, dispatch, settlement.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.callers = CallerCache(settings.account_cache_s)   # see api/deps.current_actor
    app.state.pool_engine = PoolCache()   # the pools' engine, shared by requests, rebuilt on changes
    app.state.verification_reports = {}   # per operator scope: (the pool engine it was read with, report)

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
    app.add_middleware(ConcurrencyLimit, limit=API_CONCURRENCY)
    return app


def _short(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "..."
