"""CLI: ``sim devices`` against Mosquitto, and the embedded default (amqtt + ingest + simulator)
feeding the API's live view with nothing installed."""

import asyncio
import json
import time
import uuid

import aiomqtt
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from openvpp.cli.telemetry import sim_devices_cmd, start_embedded_telemetry, telemetry_app
from openvpp.store import db, timeseries
from tests.test_telemetry_api import make_app


def test_sim_devices_command_publishes_reports(mini_city):
    root = f"openvpp-test-{uuid.uuid4().hex[:10]}/v1"
    r = CliRunner().invoke(sim_devices_cmd, ["--city", str(mini_city), "--mqtt", f"mqtt://127.0.0.1:1883/{root}",
                                             "--speed", "600", "--reports", "3", "--drop", "0"])
    assert r.exit_code == 0, r.output
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    assert counts["reports"] == 3 and counts["points"] == 3 * 7 and counts["messages"] == 3 * 4


def test_sim_devices_help_has_an_example():
    r = CliRunner().invoke(sim_devices_cmd, ["--help"])
    assert r.exit_code == 0 and "Example: openvpp sim devices" in r.output
    assert "Example" in CliRunner().invoke(telemetry_app, ["ingest", "--help"]).output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_embedded_default_needs_no_broker_and_feeds_the_live_view(loaded, mini_city, monkeypatch):
    monkeypatch.setenv("OPENVPP_TELEMETRY_LIVE_REFRESH_S", "0.2")
    with TestClient(make_app(loaded)) as api:
        from openvpp.services import accounts
        from openvpp.store import audit

        with db.get_engine(loaded.database_url).begin() as conn:
            accounts.create_user(conn, audit.SYSTEM, "admin", "correct-horse", "city_admin", rounds=4)
        token = api.post("/api/v1/auth/token", data={"username": "admin", "password": "correct-horse"}).json()
        h = {"Authorization": f"Bearer {token['access_token']}"}
        assert api.get("/api/v1/live/summary", headers=h).json()["city"]["online"] == 0
        emb = start_embedded_telemetry(loaded, mini_city, speed=600.0, drop=0.0)
        try:
            assert not emb.url.endswith(":1883")
            deadline = time.time() + 20
            online = 0
            while time.time() < deadline and online < 7:
                online = api.get("/api/v1/live/summary", headers=h).json()["city"]["online"]
                time.sleep(0.1)
        finally:
            emb.stop()
    assert online == 7
    with db.get_engine(loaded.database_url).connect() as conn:
        assert timeseries.count_raw(conn) >= 7


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_ingest_command_exits_non_zero_when_the_worker_gives_up(loaded, monkeypatch, tmp_path):
    """An unforeseen error that keeps coming (here injected in the pump) makes the worker give up after
    --max-restarts, and the command exits 1 so a supervisor restarts it."""
    from openvpp.adapters.mqtt.ingest import MqttIngest

    async def always_fails(self, client, stop):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(MqttIngest, "_pump", always_fails)
    monkeypatch.setenv("OPENVPP_HOME", str(tmp_path))
    monkeypatch.setenv("OPENVPP_DATABASE_URL", loaded.database_url)
    client_id = f"cli-{uuid.uuid4().hex[:8]}"
    root = f"openvpp-test-{uuid.uuid4().hex[:10]}/v1"
    r = CliRunner().invoke(telemetry_app, ["ingest", "--mqtt", f"mqtt://127.0.0.1:1883/{root}", "--client-id",
                                           client_id, "--max-restarts", "1"])
    assert r.exit_code == 1, r.output
    assert "gave up" in r.output and "injected fault" in r.output

    async def clean():
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=client_id, clean_session=True):
            pass

    asyncio.run(clean())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_maintain_command_rolls_up_what_http_pushes_left(loaded, monkeypatch, tmp_path):
    from openvpp.services.telemetry import Points, TelemetryConfig, TelemetryService

    monkeypatch.setenv("OPENVPP_HOME", str(tmp_path))
    monkeypatch.setenv("OPENVPP_DATABASE_URL", loaded.database_url)
    t = (int(time.time() * 1000) // 60_000 - 3) * 60_000   # two minutes long closed (the grace is 5 s)
    svc = TelemetryService(db.get_engine(loaded.database_url), TelemetryConfig())
    assert svc.ingest(Points.from_columns({"d": ["R1", "R1"], "t": [t, t + 60_000], "p": [1.0, 2.0]}),
                      "http", "k").inserted == 2
    r = CliRunner().invoke(telemetry_app, ["maintain"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["rollup_buckets"] == 2
