"""The API's JSON rendering (api/routing.py): one set of rules for every route, status codes kept."""

import math
from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import orjson
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from openvpp.api.routing import JSONRoute, json_bytes


class Item(BaseModel):
    name: str
    price: Decimal


def test_values_are_written_by_the_rules():
    value = {"money": Decimal("3.50"), "when": datetime(2026, 7, 1, 6, 0, tzinfo=UTC), "day": date(2026, 7, 1),
             "kw": np.float64(1.5), "n": np.int64(7), "series": np.array([1.0, 2.5]), "tags": {"a"},
             "missing": math.nan, 3: "int key", "model": Item(name="x", price=Decimal("0.12"))}
    got = orjson.loads(json_bytes(value))
    assert got == {"money": "3.50", "when": "2026-07-01T06:00:00+00:00", "day": "2026-07-01", "kw": 1.5, "n": 7,
                   "series": [1.0, 2.5], "tags": ["a"], "missing": None, "3": "int key",
                   "model": {"name": "x", "price": "0.12"}}


def test_an_unknown_type_is_an_error_naming_it():
    with pytest.raises(TypeError, match="object"):
        json_bytes({"x": object()})


@pytest.fixture
def client():
    router = APIRouter(route_class=JSONRoute)

    @router.get("/sync")
    def sync_route(n: int = 1) -> dict:
        return {"n": n, "money": Decimal("1.10")}

    @router.get("/async")
    async def async_route() -> list:
        return [datetime(2026, 1, 1, tzinfo=UTC)]

    @router.post("/made", status_code=201)
    def made() -> dict:
        return {"id": "X1"}

    @router.delete("/gone", status_code=204)
    def gone() -> None:
        return None

    @router.get("/plain")
    def plain():
        from starlette.responses import PlainTextResponse
        return PlainTextResponse("as is", status_code=202)

    app = FastAPI()
    inner = APIRouter(route_class=JSONRoute)
    inner.include_router(router, prefix="/in")   # a router included twice wraps its endpoints once
    app.include_router(inner, prefix="/api")
    with TestClient(app) as c:
        yield c


def test_routes_answer_json_with_their_status(client):
    r = client.get("/api/in/sync", params={"n": 4})
    assert (r.status_code, r.headers["content-type"], r.json()) == (200, "application/json", {"n": 4, "money": "1.10"})
    assert client.get("/api/in/async").json() == ["2026-01-01T00:00:00+00:00"]
    assert (client.post("/api/in/made").status_code, client.post("/api/in/made").json()) == (201, {"id": "X1"})
    r = client.delete("/api/in/gone")
    assert (r.status_code, r.content) == (204, b"")
    r = client.get("/api/in/plain")
    assert (r.status_code, r.text) == (202, "as is")


def test_request_validation_and_openapi_still_follow_the_signature(client):
    r = client.get("/api/in/sync", params={"n": "many"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "n"]
    schema = client.get("/openapi.json").json()
    assert schema["paths"]["/api/in/sync"]["get"]["parameters"][0]["name"] == "n"
    assert "201" in schema["paths"]["/api/in/made"]["post"]["responses"]


def test_the_started_api_keeps_its_long_lived_objects_out_of_the_collector(loaded):
    """core/memory.py: once the app has started, a full collection walks only what was made since,
    not the ~200,000 objects of the imported libraries (a 90 ms pause of every request otherwise)."""
    import gc

    from openvpp.api.app import create_app

    gc.unfreeze()   # whatever an earlier test froze is put back in view first
    assert len(gc.get_objects()) > 100_000
    with TestClient(create_app(loaded)) as c:
        assert c.get("/api/v1/health").status_code == 200
        assert gc.get_freeze_count() > 100_000 and len(gc.get_objects()) < 50_000


@pytest.mark.parametrize(("name", "value"), [("OPENVPP_TELEMETRY_LIVE_REFRESH_S", "9"),
                                             ("OPENVPP_TELEMETRY_INTERVALS", "ocpp1.6=soon")])
def test_a_live_setting_the_view_cannot_honour_stops_the_app_before_it_serves(monkeypatch, tmp_path, name, value):
    from openvpp.api.app import create_app
    from openvpp.core.errors import InvalidInput
    from openvpp.core.settings import Settings

    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInput) as err:
        create_app(Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path}/x.db", jwt_secret="s" * 40))
    assert err.value.violations[0].field == name
