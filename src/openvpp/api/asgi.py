"""ASGI entry point for multi-worker servers: ``uvicorn openvpp.api.asgi:app --workers 4``."""

from openvpp.api.app import create_app

app = create_app()
