"""The operator interface over HTTP (an operator's technical support system, 技术支持系统).

The city platform reaches an operator's system at its registered ``tss_endpoint``; the same
codebase serves that interface when it runs as an operator's system (``/api/v1/tss/...``).
"""

from __future__ import annotations

import secrets
import time

import httpx

ECHO_PATH = "/api/v1/tss/echo"


def probe(endpoint: str, timeout_s: float = 5.0) -> dict:
    """Round trip over the operator interface: POST a nonce, expect it echoed. Never raises."""
    nonce = secrets.token_hex(8)
    url = endpoint.rstrip("/") + ECHO_PATH
    t0 = time.perf_counter()
    try:
        r = httpx.post(url, json={"nonce": nonce, "from": "openvpp-city"}, timeout=timeout_s)
        rtt = (time.perf_counter() - t0) * 1000
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    except (httpx.HTTPError, ValueError) as exc:
        return {"ok": False, "rtt_ms": None, "url": url, "detail": f"{type(exc).__name__}: {exc}"}
    ok = r.status_code == 200 and body.get("nonce") == nonce
    detail = "nonce echoed" if ok else f"HTTP {r.status_code}, nonce {'matched' if body.get('nonce') == nonce else 'missing'}"
    return {"ok": ok, "rtt_ms": round(rtt, 2), "url": url, "detail": detail, "system": body.get("system")}
