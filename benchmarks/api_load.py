"""API latency under load: the dashboard's read requests at a fixed arrival rate, on loopback.

Target (issue 9): p99 <= 50 ms at 200 requests/s on the read endpoints the dashboard uses, with a
100,000-resource city. The value of the JSON line is the p99 of the dashboard's requests; the
reference is that 50 ms bound (the issue gives only the bound). ``/api/v1/health`` runs beside them
in the same run at ``--health-rate`` requests/s and its p99 is reported too (``health_p99_ms``):
what the server, the event loop and the client cost without any work behind them.

Set-up as ``benchmarks/dashboard_pages.py`` (the same city, server process, preset pools, one live
point per device). The request mix is what the pages really ask: headless Chromium opens every
page of that benchmark's plan once (first view and what the page fills in afterwards) and every
``GET /api/v1/...`` it makes is recorded, except the SSE stream; each arrival picks one of the
recorded requests at random (seeded), so a URL weighs as often as the pages ask it. Every distinct
request is sent once untimed before the run (the server is warm, as after its first users).

The recording is kept under ``var/bench/dashboard/`` for the same city and the same web files.

Open loop: request ``i`` is due at ``t0 + i / rate``, whatever the earlier ones are doing; its
latency runs from that due time (not from when the client got round to sending it) to the end of
the response body, so a slow server cannot hide its queue (no coordinated omission). A request
that fails, answers other than 200, or has not finished ``--timeout`` s after it was due counts
as an error, and in the percentiles with the timeout as its latency. The run is bounded: ``--duration`` s of arrivals plus at most ``--timeout`` s. The
client is a minimal keep-alive HTTP/1.1 client on asyncio streams (about a tenth of httpx's CPU
per request): client and server share the machine's cores.

    python benchmarks/api_load.py [--quick] [--size N] [--rate R] [--duration S] [--workers W --bus nats://...]

With ``--workers 2 --bus nats://127.0.0.1:4222`` the API runs as production scales it out: several
uvicorn processes, each with its own caches, their live views fed by the NATS bus.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import result  # noqa: E402
from dashboard_pages import (  # noqa: E402
    BROWSER_ARGS,
    CHROMIUM,
    pages,
    prepare,
    seed_live,
    sign_in,
    start_server,
    visit,
)

TARGET_P99_MS = 50.0


def record_requests(base: str, session: dict, plan: list) -> dict[str, list[str]]:
    """Open every page once in Chromium; return, per page, the API GETs it made (path + query)."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[str]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            for name, hash_, first, complete in plan:
                seen: list[str] = []
                visit(browser, base, session, hash_, first, complete, requests=seen)
                urls = []
                for entry in seen:
                    method, url = entry.split(" ", 1)
                    parts = urlsplit(url)
                    if method != "GET" or parts.path.endswith("/live/stream"):
                        continue
                    urls.append(parts.path + (f"?{parts.query}" if parts.query else ""))
                out[name] = urls
        finally:
            browser.close()
    return out


def web_digest() -> str:
    """A digest of the dashboard's files: the recorded requests hold while they are unchanged."""
    static = Path(__file__).resolve().parents[1] / "src" / "openvpp" / "web" / "static"
    h = hashlib.sha256()
    for f in sorted(static.rglob("*")):
        if f.is_file() and f.suffix in (".js", ".html") and "vendor" not in f.parts:
            h.update(f.relative_to(static).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def endpoint(url: str) -> str:
    """A request's endpoint for the breakdown: ids in the path and query values dropped."""
    path, _, q = url.partition("?")
    segs = path.split("/")[3:]   # after /api/v1
    keep = []
    for s in segs:
        keep.append(s if s in ("resources", "live", "grid", "nodes", "pools", "operators", "reports", "targets",
                               "summary", "devices", "presets", "health", "history", "trading-units", "report",
                               "verification", "district", "substation", "feeder", "transformer_area")
                    else "{id}")
    params = sorted({p.split("=", 1)[0] for p in q.split("&") if p})
    return "/" + "/".join(keep) + (f"?{','.join(params)}" if params else "")


class Connections:
    """Keep-alive HTTP/1.1 connections to one server, opened as needed: a minimal client (request line,
    three headers, a Content-Length body), so that the client's own CPU time takes little of the
    two cores the server shares with it (httpx costs about 2 ms per request here)."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port = host, port
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0

    #: a connection idle this long is not reused (the server closes idle keep-alive ones after 5 s)
    MAX_IDLE_S = 3.0

    async def get(self, url: str) -> tuple[int, int]:
        """(status, body bytes) of ``GET url``; a reused connection the server closed meanwhile is
        replaced once, as any keep-alive client does."""
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since <= self.MAX_IDLE_S and not reader.at_eof():
                try:
                    return await self._send(reader, writer, url)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                        raise
                    break   # closed under us before any byte of the answer: once more on a new one
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        return await self._send(reader, writer, url)

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str) -> tuple[int, int]:
        try:
            writer.write(f"GET {url} HTTP/1.1\r\n{self.head}".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            length = keep = None
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection":
                    keep = value.strip().lower() != "close"
            if length is None:
                raise ConnectionError(f"{url}: a response without Content-Length")
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if keep is False:
            writer.close()
        else:
            self.idle.append((reader, writer, time.monotonic()))
        return status, length

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


async def run_load(base: str, token: str, mix: list[str], rate: float, health_rate: float, duration: float,
                   timeout: float, seed: int) -> tuple[list[tuple[str, float | None, str]], float, int]:
    """Open-loop arrivals; return (url, latency s or None on error, error text) per request, the
    wall time of the run and the connections opened."""
    rng = random.Random(seed)
    schedule: list[tuple[float, str]] = [(i / rate, rng.choice(mix)) for i in range(int(duration * rate))]
    if health_rate > 0:
        schedule += [((i + 0.5) / health_rate, "/api/v1/health") for i in range(int(duration * health_rate))]
    schedule.sort()
    parts = urlsplit(base)
    conns = Connections(parts.hostname, parts.port, token)
    out: list[tuple[str, float | None, str]] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.5

    async def one(due: float, url: str) -> None:
        try:
            async with asyncio.timeout(max(t0 + due + timeout - loop.time(), 0.001)):
                status, _ = await conns.get(url)
            latency = loop.time() - (t0 + due)
            out.append((url, latency, "") if status == 200 else (url, None, f"HTTP {status}"))
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
            out.append((url, None, type(exc).__name__))

    tasks = []
    try:
        for due, url in schedule:
            delay = t0 + due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, url)))
        await asyncio.gather(*tasks)
    finally:
        conns.close()
    return out, loop.time() - t0, conns.opened


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000 if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5,000 resources, 6 s of arrivals (under 30 s)")
    ap.add_argument("--size", type=int, default=None, help="resources in the city (default 100,000)")
    ap.add_argument("--rate", type=float, default=200.0, help="dashboard requests per second")
    ap.add_argument("--health-rate", type=float, default=10.0, help="/api/v1/health requests per second beside them")
    ap.add_argument("--duration", type=float, default=None, help="seconds of arrivals (default 60, quick 6)")
    ap.add_argument("--timeout", type=float, default=10.0, help="a request not done this long after it was due fails")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--record", action="store_true", help="record the pages' requests again even if cached")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (more than one needs --bus)")
    ap.add_argument("--bus", default="", help="bus URL feeding every worker's live view, e.g. nats://127.0.0.1:4222")
    args = ap.parse_args()
    n = args.size or (5_000 if args.quick else 100_000)
    duration = args.duration or (6.0 if args.quick else 60.0)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    if args.workers > 1 and not args.bus.startswith("nats://"):
        raise SystemExit("--workers above 1 needs --bus nats://...: each worker's live view is fed by the bus")

    t_start = time.perf_counter()
    settings, info = prepare(n, args.seed)
    proc, base = start_server(settings, settings.home / f"server-load-{n}.log", args.workers, args.bus)
    try:
        session = sign_in(base, *info["users"]["city_admin"])
        token = session["access_token"]
        with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {token}"}) as client:
            client.post("/api/v1/pools/defaults").raise_for_status()
            client.get("/api/v1/live/summary").raise_for_status()
            seed_live(client, settings, args.seed)
            plan = pages(client, info["operator_id"])
            t0 = time.perf_counter()
            cache = settings.home / f"requests-{n}-{args.seed}-{web_digest()}.json"
            if cache.exists() and not args.record:
                per_page = json.loads(cache.read_text())
                how = f"read from {cache.name} (same city, same web files; --record to record again)"
            else:
                per_page = record_requests(base, session, plan)
                cache.write_text(json.dumps(per_page, indent=1))
                how = f"recorded in Chromium in {time.perf_counter() - t0:.1f} s"
            mix = [u for urls in per_page.values() for u in urls]
            distinct = sorted(set(mix))
            print(f"{len(mix)} API GETs ({len(distinct)} distinct) of {len(per_page)} pages {how}")
            # warm: every request once per worker, untimed; with several workers, clients at once on
            # their own connections, so that every worker accepts some (an idle one takes them all)
            def warm(_: int) -> None:
                with httpx.Client(base_url=base, timeout=300, headers=client.headers) as fresh:
                    for url in distinct:
                        r = fresh.get(url)
                        if r.status_code != 200:
                            raise SystemExit(f"{url}: HTTP {r.status_code} {r.text[:300]}")
            with ThreadPoolExecutor(max_workers=4 * args.workers) as pool:
                list(pool.map(warm, range(1 if args.workers == 1 else 4 * args.workers)))
        load_before = os.getloadavg()[0]
        print(f"open loop: {args.rate:g}/s dashboard requests + {args.health_rate:g}/s health for {duration:g} s "
              f"(load average before {load_before:.1f} on {os.cpu_count()} cores)")
        out, wall, opened = asyncio.run(run_load(base, token, mix, args.rate, args.health_rate, duration,
                                                 args.timeout, args.seed))
        load_after = os.getloadavg()[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except Exception:   # noqa: BLE001 - a server that will not stop is killed
            proc.kill()

    # a failed request counts with the timeout as its latency (a lower bound), so errors raise the tail
    dash = [args.timeout if lat is None else lat for url, lat, _ in out if url != "/api/v1/health"]
    health = [args.timeout if lat is None else lat for url, lat, _ in out if url == "/api/v1/health"]
    errors = [(url, err) for url, lat, err in out if lat is None]
    by_ep: dict[str, list[float]] = defaultdict(list)
    for url, lat, _ in out:
        if lat is not None:
            by_ep[endpoint(url)].append(lat)
    print(f"\n{'endpoint':<58} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for ep, lats in sorted(by_ep.items(), key=lambda kv: -pct(kv[1], 99)):
        print(f"{ep[:58]:<58} {len(lats):>6} {pct(lats, 50):8.1f} {pct(lats, 95):8.1f} {pct(lats, 99):8.1f} "
              f"{max(lats) * 1000:8.1f}")
    if errors:
        kinds = defaultdict(int)
        for url, err in errors:
            kinds[(endpoint(url), err)] += 1
        print("errors:", dict(kinds))
    sent = len(out)
    p50, p95, p99 = pct(dash, 50), pct(dash, 95), pct(dash, 99)
    h99 = pct(health, 99)
    print(f"\ndashboard requests: {len(dash):,} ({len(errors):,} errors, counted at {args.timeout:g} s) "
          f"of {sent:,} sent in {wall:.1f} s "
          f"(achieved {sent / wall:.0f}/s, {opened} connections); p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms "
          f"(target p99 <= {TARGET_P99_MS:.0f} ms); health p50 {pct(health, 50):.1f} ms, p99 {h99:.1f} ms")
    print(f"run took {time.perf_counter() - t_start:.0f} s; load average {load_before:.1f} before, "
          f"{load_after:.1f} after, on {os.cpu_count()} cores")
    result("api_load_p99", p99, "ms", TARGET_P99_MS, n, rate_per_s=args.rate, duration_s=duration, workers=args.workers,
           requests=len(dash), errors=len(errors),
           p50_ms=round(p50, 2), p95_ms=round(p95, 2), p99_ms=round(p99, 2), health_p50_ms=round(pct(health, 50), 2),
           health_p99_ms=round(h99, 2), mean_ms=round(statistics.fmean(dash) * 1000, 2) if dash else None,
           distinct_requests=len(distinct), load_average=round(max(load_before, load_after), 1))


if __name__ == "__main__":
    main()
