"""openvpp.web layer (see DESIGN.md): the dashboard and the offline API docs.

``mount_web(app)`` serves ``/`` (dashboard), ``/static/...`` and ``/docs``
(Swagger UI) from files shipped in the package; build the vendor files first
with ``bash scripts/build_web.sh``.
"""

from openvpp.web.routes import BUILD_COMMAND, STATIC_DIR, missing_vendor_files, mount_web

__all__ = ["BUILD_COMMAND", "STATIC_DIR", "missing_vendor_files", "mount_web"]
