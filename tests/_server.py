"""Run the real app under uvicorn on a free loopback port in a background thread (for tests)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import uvicorn

RESERVED = {8000, 1883, 4222, 5432, 5672, 6379}


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED:
            return port


@contextmanager
def serve(app, start_timeout_s: float = 30.0):
    """Serve ``app`` on a free loopback port; yields its base URL and stops the server afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, name=f"uvicorn-test-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn stopped before it started; see the log above")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port} within {start_timeout_s:.0f} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
