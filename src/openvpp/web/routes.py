"""Routes of the dashboard and of the offline API docs.

``mount_web(app)`` adds to a FastAPI app:

| path | what |
| --- | --- |
| ``/`` | the dashboard (``static/index.html``) |
| ``/static/...`` | files under ``static/``, including ``static/vendor/`` made by ``scripts/build_web.sh`` |
| ``/docs`` | Swagger UI, every asset served by the app itself (no CDN) |
| ``/docs/oauth2-redirect`` | Swagger UI's OAuth2 redirect helper |

The vendor libraries (ECharts, Swagger UI) are not in git: they are copied from
npm packages at build time. Until that step has run, ``/`` and ``/docs`` answer
503 with the command to run, instead of a page that silently breaks.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"

BUILD_COMMAND = "bash scripts/build_web.sh"

#: vendor files each page needs, relative to the static folder
DASHBOARD_VENDOR = ("vendor/echarts.min.js",)
DOCS_VENDOR = (
    "vendor/swagger-ui/swagger-ui-bundle.js",
    "vendor/swagger-ui/swagger-ui.css",
    "vendor/swagger-ui/favicon-32x32.png",
)

#: The dashboard loads only what the app serves; charts and the login call the same origin.
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'self'"
)
#: Swagger UI's page starts the bundle from an inline script, so 'unsafe-inline' for scripts.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; style-src 'self' 'unsafe-inline'; font-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
)


def missing_vendor_files(names: tuple[str, ...] = DASHBOARD_VENDOR + DOCS_VENDOR,
                         static_dir: Path = STATIC_DIR) -> list[str]:
    """Vendor files (relative to ``static_dir``) that the build step has not produced yet."""
    return [name for name in names if not (static_dir / name).is_file()]


def _not_built(page: str, missing: list[str]) -> HTMLResponse:
    items = "".join(f"<li><code>static/{html.escape(m)}</code></li>" for m in missing)
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>openvpp: web assets not built</title></head>
<body style="font-family: sans-serif; background:#0b1220; color:#e6edf7; padding:2rem">
<h1>503: the {html.escape(page)} is not built</h1>
<p>The browser libraries it needs are copied from npm at build time and are missing:</p>
<ul>{items}</ul>
<p>From the repository root run:</p>
<pre style="background:#111a2e; padding:1rem">{BUILD_COMMAND}</pre>
<p>It needs Node.js and npm, runs <code>npm ci</code> in <code>web/</code> and copies the files into
<code>src/openvpp/web/static/vendor/</code>. Then reload this page.</p>
</body></html>
"""
    return HTMLResponse(body, status_code=503, headers={"Retry-After": "60", "Cache-Control": "no-store"})


def mount_web(app: FastAPI, *, static_dir: Path | None = None) -> None:
    """Serve the dashboard at ``/``, static files at ``/static`` and Swagger UI at ``/docs``.

    Create the app with ``docs_url=None, redoc_url=None`` so FastAPI's CDN-based
    pages are not registered first. ``static_dir`` is for tests; it defaults to
    the package's ``static/`` folder.
    """
    folder = (static_dir or STATIC_DIR).resolve()
    # check_dir=False: the folder is always in the package; a wrong path fails on first request in tests
    app.mount("/static", StaticFiles(directory=folder, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> Response:
        missing = missing_vendor_files(DASHBOARD_VENDOR, folder)
        if missing:
            return _not_built("dashboard", missing)
        return FileResponse(
            folder / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-cache", "Content-Security-Policy": DASHBOARD_CSP},
        )

    oauth2_redirect_path = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> Response:
        if app.openapi_url is None:
            return HTMLResponse("OpenAPI is disabled for this app.", status_code=404)
        missing = missing_vendor_files(DOCS_VENDOR, folder)
        if missing:
            return _not_built("API documentation (Swagger UI)", missing)
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - API",
            swagger_js_url=f"{root}/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{root}/static/vendor/swagger-ui/favicon-32x32.png",
            oauth2_redirect_url=root + oauth2_redirect_path,
            # the default validator badge would fetch an image from swagger.io
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        page.headers["Cache-Control"] = "no-cache"
        return page

    @app.get(oauth2_redirect_path, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
