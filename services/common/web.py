"""aiohttp pieces every HTTP service shares: JSON answers and the address a started server is reached at."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"


def json_response(
    payload: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    retry_after_s: float | None = None,
) -> web.Response:
    """``payload`` as JSON (orjson); ``Retry-After`` in whole seconds, rounded up, when given."""
    response = web.Response(status=status, body=orjson.dumps(payload), content_type=JSON)
    if headers:
        response.headers.update(headers)
    if retry_after_s is not None and retry_after_s > 0:
        response.headers["Retry-After"] = str(math.ceil(retry_after_s))
    return response


def base_url(runner: web.AppRunner) -> str:
    """``http://host:port`` of a started runner's first site (0.0.0.0 shown as 127.0.0.1, IPv6 bracketed)."""
    host, port = runner.addresses[0][:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
