"""The API's route class: answers are written to JSON by orjson in the endpoint's own call.

FastAPI turns a returned ``dict`` into JSON through pydantic (validation, then serialisation of
``Any`` values, about 50 ms for a page of 400 resources) or, without a return annotation, through
``jsonable_encoder`` (about 25 ms), and each step is one more hop through the thread pool. Our
endpoints return plain data built by the services, so :class:`JSONRoute` wraps each endpoint to
render its value with orjson (about 1 ms for the same page) and hand FastAPI a finished
:class:`~starlette.responses.Response`. The return annotation still feeds the OpenAPI schema.

The rendering rules (one for every route): ``Decimal`` as a string (money keeps its digits),
``datetime``/``date`` in ISO 8601, numpy scalars and arrays as numbers and lists, sets as lists,
NaN as ``null``, non-string dict keys as strings, pydantic models by their JSON dump.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.responses import Response

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_bytes(value: Any) -> bytes:
    """``value`` as the API writes it (the rules in this module's docstring)."""
    return orjson.dumps(value, default=_default, option=OPTIONS)


def render(value: Any, status_code: int = 200) -> Response:
    """A finished response: ``value`` itself when it is one, else its JSON (no body for 204/304)."""
    if isinstance(value, Response):
        return value
    if status_code in (204, 304) or status_code < 200:
        return Response(status_code=status_code)
    return Response(json_bytes(value), status_code=status_code, media_type="application/json")


def _wrap(endpoint: Callable[..., Any], status_code: int) -> Callable[..., Any]:
    if getattr(endpoint, "_renders_json", False) or inspect.isasyncgenfunction(endpoint) \
            or inspect.isgeneratorfunction(endpoint):
        return endpoint   # already wrapped (a router included in another), or streamed by FastAPI
    if inspect.iscoroutinefunction(endpoint):
        @functools.wraps(endpoint)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return render(await endpoint(*args, **kwargs), status_code)
        run_async._renders_json = True
        return run_async

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        return render(endpoint(*args, **kwargs), status_code)
    run._renders_json = True
    return run


class JSONRoute(APIRoute):
    """An :class:`APIRoute` whose endpoint returns a finished JSON response (see the module)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        status = kwargs.get("status_code")
        super().__init__(path, _wrap(endpoint, int(status) if status else 200), **kwargs)
