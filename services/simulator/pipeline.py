"""The steps every simulated API call shares: auth, recording, the scripted
behaviour, error rendering and chunked streaming.

Routes only build their success payloads; everything that decides *whether*
they answer lives here, once, for both dialects.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from .errors import (
    INVALID_JSON_MESSAGE,
    Dialect,
    DropConnection,
    SimError,
    behaviour_error,
    error_response,
    gone_for_new_users,
    invalid_argument,
    missing_key,
    multiple_credentials,
    not_found,
    quota_exhausted,
    unauthenticated,
    user_project_denied,
)
from .state import Behaviour, RecordedRequest, SimulatorState, normalize_model

SIMULATOR_STATE: Final = web.AppKey("simulator_state", SimulatorState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Call:
    """An admitted request: the key it used and the behaviour it drew from the script."""

    state: SimulatorState
    key: str
    model: str | None
    body: bytes
    behaviour: Behaviour
    project: str
    #: The service tier the call is served at ("" when it asked none): `x-gemini-service-tier`.
    service_tier: str = ""


def json_response(data: Any, status: int = 200) -> web.Response:
    """orjson-encoded JSON answer (the hot path: no aiohttp json_response/stdlib json)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def parse_json(body: bytes) -> Any:
    """Decode a request body or raise Google's 400 INVALID_ARGUMENT."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid_argument(INVALID_JSON_MESSAGE) from None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Like `parse_json` but the payload must be a JSON object."""
    data = parse_json(body)
    if not isinstance(data, dict):
        raise invalid_argument(INVALID_JSON_MESSAGE)
    return data


def native_key(request: web.Request) -> str | None:
    """Native routes: `x-goog-api-key` header, else `key` query parameter."""
    return request.headers.get("x-goog-api-key") or request.query.get("key") or None


def bearer_key(request: web.Request) -> str | None:
    """OpenAI-compatible routes: `Authorization: Bearer <key>`."""
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def credentials(request: web.Request) -> list[str]:
    """Every credential the request carries, wherever it is: `x-goog-api-key`, `?key=`,
    `Authorization` (an API key as Bearer works on both surfaces), `?access_token=`."""
    found = [request.headers.get("x-goog-api-key"), request.query.get("key")]
    if "Authorization" in request.headers:
        found.append(bearer_key(request) or request.headers["Authorization"])
    found.append(request.query.get("access_token"))
    return [c for c in found if c]


def request_key(request: web.Request) -> str | None:
    """The one API key of a request (for recording): the first credential found."""
    found = credentials(request)
    return found[0] if found else None


async def admit(
    request: web.Request,
    dialect: Dialect,
    model: str | None,
    body: bytes,
    *,
    streaming: bool = False,
    tokens: int | None = None,
) -> Call:
    """Record and count the request, check the key, then play the key's next scripted behaviour.

    Raises `SimError` for scripted errors or a missing key and
    `DropConnection` for `drop` (and for `drop_mid_stream` on a non-stream
    call, which has no middle to cut); returns the admitted call otherwise.
    """
    state = request.app[SIMULATOR_STATE]
    found = credentials(request)
    key = found[0] if found else None
    model = normalize_model(model)
    state.record(
        RecordedRequest(
            key=key,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            model=model,
        )
    )
    if key is None:
        raise missing_key()
    if len(found) > 1:
        raise multiple_credentials()
    refused = credential_refusal(request)
    if refused is not None:
        raise refused
    behaviour = state.next_behaviour(key, model)
    delay = state.default_delay_s if behaviour.delay_s is None else behaviour.delay_s
    if delay > 0:
        await asyncio.sleep(delay)
    served = state.served_as.get(model, model) if model else model  # quotas and their errors are its
    error = behaviour_error(behaviour, key, served, state.project_of(key))
    if error is not None:
        raise error
    if behaviour.kind == "drop" or (behaviour.kind == "drop_mid_stream" and not streaming):
        raise DropConnection
    project = state.project_of(key)
    if model is not None and (project, model) in state.quotas.gone:
        raise gone_for_new_users(model)
    tier = state.quotas.served_tier(project, _asked_tier(body)) if tokens is not None else ""
    if tokens is not None:
        refusal = state.quotas.admit(project, served, tokens, tier)  # the class served at: its own limits
        if refusal is not None:
            raise quota_exhausted(refusal, served)
    return Call(state, key, model, body, behaviour, project, tier)


def _asked_tier(body: bytes) -> str:
    """A generation's `serviceTier` (or `service_tier`), lower-case ("" when none or unreadable)."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return ""
    value = data.get("serviceTier", data.get("service_tier")) if isinstance(data, dict) else None
    return value.lower().removeprefix("service_tier_") if isinstance(value, str) else ""


def credential_refusal(request: web.Request) -> SimError | None:
    """What Google says to credentials and billing headers a caller adds next to its key, before any script.

    An ``access_token`` parameter (the only credential: with another one the answer is the 400 for
    several credentials) is tried as an OAuth token and refused with a 401 that names no key; an
    ``X-Goog-User-Project`` the caller may not bill is refused with a 403 USER_PROJECT_DENIED. Neither
    says anything of the key.
    """
    if "access_token" in request.query:
        return unauthenticated()
    project = request.headers.get("x-goog-user-project")
    if project:
        return user_project_denied(project)
    return None


def record(request: web.Request, body: bytes, model: str | None) -> None:
    """Record a request that is answered without `admit` (unknown paths, key-less upload bytes)."""
    request.app[SIMULATOR_STATE].record(
        RecordedRequest(
            key=request_key(request),
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            model=model,
        )
    )


async def unknown_path(request: web.Request) -> web.StreamResponse:
    """Any path the API does not serve: recorded (so tests see what reached the upstream), then 404."""
    record(request, await request.read(), None)
    return error_response(not_found(f"The requested URL {request.path} was not found on this server."), "native")


def endpoint(dialect: Dialect) -> Callable[[Handler], Handler]:
    """Wrap a handler so `SimError` becomes a Google error in the dialect's shape
    and `DropConnection` closes the socket without an answer."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except SimError as error:
                return error_response(error, dialect)
            except DropConnection:
                return drop(request)

        return wrapped

    return decorate


def drop(request: web.Request) -> web.StreamResponse:
    """Close the connection; aiohttp then fails to send the returned dummy and gives up quietly."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=200)


async def stream_frames(
    request: web.Request,
    call: Call,
    frames: Iterable[bytes],
    content_type: str,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Send `frames` as a real chunked stream, one write per frame.

    Sleeps the chunk delay between frames; `drop_mid_stream` closes the
    connection right after the first frame. A client going away ends the
    stream silently.
    """
    behaviour = call.behaviour
    delay = call.state.default_chunk_delay_s if behaviour.chunk_delay_s is None else behaviour.chunk_delay_s
    cut = behaviour.kind == "drop_mid_stream"
    headers = {"Content-Type": content_type, "Cache-Control": "no-cache", **(headers or {})}
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    try:
        for i, frame in enumerate(frames):
            if i and delay > 0:
                await asyncio.sleep(delay)
            await response.write(frame)
            if cut:
                return drop(request)
        await response.write_eof()
    except ConnectionError:
        pass
    return response


def chunk_count(call: Call) -> int:
    """How many content chunks a stream answer is cut into."""
    return max(1, call.state.default_chunks)
