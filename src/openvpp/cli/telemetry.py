"""CLI of telemetry: ``openvpp sim devices`` and ``openvpp telemetry ingest|maintain|stats``.

Registered in ``cli/main.py``::

    sim_app.add_typer(telemetry.sim_devices_cmd, name="devices")
    app.add_typer(telemetry.telemetry_app, name="telemetry")

``start_embedded_telemetry`` runs the embedded default (amqtt broker on a free port, ingest,
simulator) in a background thread, for ``openvpp demo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console

from openvpp.core.settings import Settings

err = Console(stderr=True)

sim_devices_cmd = typer.Typer(help="Device simulator. Example: openvpp sim devices --city var/city "
                                   "--mqtt mqtt://127.0.0.1:1883 --speed 60", no_args_is_help=True)
telemetry_app = typer.Typer(help="Telemetry ingest and upkeep. Example: openvpp telemetry ingest "
                                 "--mqtt mqtt://127.0.0.1:1883", no_args_is_help=True)


@sim_devices_cmd.callback(invoke_without_command=True)
def sim_devices(city: Path = typer.Option(..., "--city", exists=True, file_okay=False, help="a generated city"),
                mqtt: str = typer.Option("", "--mqtt", help="broker URL mqtt://host:port, optionally /topic/root; "
                                         "default OPENVPP_MQTT_URL"),
                speed: float = typer.Option(1.0, "--speed", min=0.001, help="profile time runs X times faster"),
                drop: float = typer.Option(0.0, "--drop", min=0.0, max=1.0, help="share of devices that stay silent"),
                noise: float = typer.Option(0.0, "--noise", min=0.0, help="extra relative noise (sigma)"),
                bad: float = typer.Option(0.0, "--bad", min=0.0, max=1.0,
                                          help="share of readings that fail (sent with qf = 2 and p = 0)"),
                interval: float = typer.Option(60.0, "--interval", help="reporting interval, simulated seconds"),
                reports: int = typer.Option(0, "--reports", help="stop after this many reports (0 = run until Ctrl-C)"),
                seed: int = typer.Option(0, help="seed of the dropped devices and the noise"),
                protocol: int = typer.Option(5, help="MQTT protocol: 5 or 311")) -> None:
    """Publish telemetry for the city's devices from their profiles; obey instructions on the cmd topic.

    Example: openvpp sim devices --city var/city --mqtt mqtt://127.0.0.1:1883 --speed 60 --drop 0.02 --noise 0.05
    """
    from openvpp.sim.devices import DeviceFleet, run_devices

    url = mqtt or Settings.from_env().mqtt_url
    if not url:
        err.print("[red]error:[/red] --mqtt or OPENVPP_MQTT_URL is required")
        raise typer.Exit(2)
    fleet = DeviceFleet.from_city(city, speed=speed, drop=drop, noise=noise, bad=bad, interval_s=interval, seed=seed)
    err.print(f"{fleet.n:,} devices ({int(fleet.alive.sum()):,} reporting) through {len(fleet.gateways):,} gateways "
              f"-> {url}, a report every {interval / speed:.2f} s")

    def progress(k: int, now_ms: int) -> None:
        if k == 1 or k % 10 == 0:
            err.print(f"report {k} at {datetime.fromtimestamp(now_ms / 1000, UTC).isoformat()} "
                      f"(profile {datetime.fromtimestamp(fleet.profile_ms(now_ms) / 1000, UTC).isoformat()})")

    try:
        counts = asyncio.run(run_devices(fleet, url, reports=reports or None, protocol=protocol, on_report=progress))
    except KeyboardInterrupt:
        return
    print(json.dumps(counts))


@telemetry_app.command("ingest")
def ingest(mqtt: str = typer.Option("", "--mqtt", help="broker URL; default OPENVPP_MQTT_URL"),
           client_id: str = typer.Option("openvpp-ingest", help="persistent session id (one per worker)"),
           share: str = typer.Option("", help="shared-subscription group: workers of one group split the load"),
           protocol: int = typer.Option(5, help="MQTT protocol: 5 or 311"),
           max_restarts: int = typer.Option(10, "--max-restarts", min=0,
                                            help="unforeseen errors in a row (nothing stored between them) "
                                                 "before the worker gives up and exits with status 1")) -> None:
    """Run the MQTT ingest worker against the configured database until Ctrl-C.

    Broker and database outages are waited out (reconnect with back-off, gaps recorded); rollups run
    on a timer beside the ingest. Exits with status 1 when the worker gives up, so a supervisor
    (systemd, Kubernetes) restarts it.

    Example: OPENVPP_DATABASE_URL=postgresql://postgres@127.0.0.1/openvpp openvpp telemetry ingest --mqtt mqtt://127.0.0.1:1883
    """
    from openvpp.adapters.mqtt.ingest import MqttIngest
    from openvpp.bus import make_bus
    from openvpp.services.telemetry import TelemetryService
    from openvpp.store import db

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = Settings.from_env()
    url = mqtt or s.mqtt_url
    if not url:
        err.print("[red]error:[/red] --mqtt or OPENVPP_MQTT_URL is required")
        raise typer.Exit(2)
    db.upgrade(s.database_url)

    async def main() -> None:
        bus = await make_bus(s.bus_url).start()
        svc = TelemetryService(db.get_engine(s.database_url), publish=bus.publish_threadsafe)
        await asyncio.to_thread(svc.maintain)
        worker = MqttIngest(svc, url, client_id=client_id, protocol=protocol, share_group=share or None,
                            refresh_every_s=svc.config.rollup_refresh_s, max_restarts=max_restarts)
        task = asyncio.create_task(worker.run())
        last = 0
        while not task.done():
            await asyncio.wait({task}, timeout=10)
            st = worker.stats
            err.print(f"{st.points - last:,} points in 10 s; total inserted {st.inserted:,}, duplicates "
                      f"{st.duplicates:,}, rejected {st.rejected:,}, refused messages {st.refused_messages:,}, "
                      f"gaps {len(st.gaps)}, restarts {st.restarts}")
            last = st.points
        await task   # raises what made the worker give up

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return
    except Exception as exc:
        err.print(f"[red]error:[/red] the ingest worker gave up: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None


@telemetry_app.command("maintain")
def maintain(every: float = typer.Option(0.0, "--every", min=0.0,
                                         help="keep running: roll up closed minutes every this many seconds "
                                              "(partitions and retention hourly) until Ctrl-C")) -> None:
    """Create the coming days' partitions, apply the retention, refresh dirty rollups.

    Once by default; with --every S it keeps doing it, for deployments where neither an ingest
    worker nor an API process runs the rollup timer (OPENVPP_TELEMETRY_ROLLUP_REFRESH_S=0).

    Example: openvpp telemetry maintain --every 5
    """
    from openvpp.services.telemetry import TelemetryService, upkeep
    from openvpp.store import db

    s = Settings.from_env()
    svc = TelemetryService(db.get_engine(s.database_url))
    out = svc.maintain()
    out["rollup_buckets"] = svc.refresh_rollups()
    print(json.dumps(out), flush=True)
    if every > 0:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(upkeep(svc, refresh_every_s=every, who="maintain"))


@telemetry_app.command("stats")
def stats(days: int = typer.Option(1, min=1, help="local days back")) -> None:
    """Accepted, duplicate and rejected points per day, path and reason (JSON).

    Example: openvpp telemetry stats --days 7
    """
    from openvpp.core.timeslots import TZ
    from openvpp.store import db, timeseries

    s = Settings.from_env()
    since = (datetime.now(UTC).astimezone(TZ) - timedelta(days=days - 1)).date()
    with db.get_engine(s.database_url).connect() as conn:
        rows = timeseries.read_counters(conn, since)
        gaps = timeseries.read_gaps(conn, 20)
    print(json.dumps({"since": since.isoformat(), "rows": rows, "gaps": gaps}, default=str))


# ---------------------------------------------------------------- the embedded default

@dataclass
class EmbeddedTelemetry:
    """Broker, ingest and simulator running in a background thread (``stop()`` ends them)."""

    url: str = ""
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop_event: asyncio.Event | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    ingest: object = None

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self.stop_event is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        if self.thread is not None:
            self.thread.join(timeout)


def start_embedded_telemetry(settings: Settings, city_dir: Path, speed: float = 60.0, drop: float = 0.01,
                             noise: float = 0.03) -> EmbeddedTelemetry:
    """Start an amqtt broker on a free port, the MQTT ingest into ``settings``' database and the
    device simulator of ``city_dir``; points reach the API's live view through the in-process bus."""
    from openvpp.adapters.mqtt.broker import EmbeddedBroker
    from openvpp.adapters.mqtt.ingest import MqttIngest
    from openvpp.bus import make_bus
    from openvpp.services.telemetry import TelemetryService
    from openvpp.sim.devices import DeviceFleet, run_devices
    from openvpp.store import db

    handle = EmbeddedTelemetry()

    async def main() -> None:
        handle.loop = asyncio.get_running_loop()
        handle.stop_event = asyncio.Event()
        broker = await EmbeddedBroker().start()
        handle.url = broker.url
        bus = make_bus(settings.bus_url)
        svc = TelemetryService(db.get_engine(settings.database_url), publish=bus.publish_threadsafe)
        worker = MqttIngest(svc, broker.url, client_id=f"demo-ingest-{uuid.uuid4().hex[:6]}", protocol=311)
        handle.ingest = worker
        tasks = [asyncio.create_task(worker.run(handle.stop_event))]
        await asyncio.wait_for(worker.subscribed.wait(), 30)
        fleet = await asyncio.to_thread(DeviceFleet.from_city, city_dir, speed=speed, drop=drop, noise=noise)
        tasks.append(asyncio.create_task(run_devices(fleet, broker.url, handle.stop_event, protocol=311)))
        handle.ready.set()
        await handle.stop_event.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        await broker.stop()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:   # reported to the caller through the handle
            handle.error = exc
            handle.ready.set()

    handle.thread = threading.Thread(target=target, name="openvpp-embedded-telemetry", daemon=True)
    handle.thread.start()
    t0 = time.monotonic()
    while not handle.ready.wait(0.1):
        if time.monotonic() - t0 > 60:
            raise RuntimeError("the embedded telemetry did not start within 60 s")
    if handle.error is not None:
        raise RuntimeError(f"the embedded telemetry failed: {handle.error}") from handle.error
    return handle
