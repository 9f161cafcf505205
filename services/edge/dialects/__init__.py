"""The two dialects the edge speaks: OpenAI's and Gemini's own.

Each module reads only what the edge owns (the client's token, the model,
the stream flag), builds an ``upstream.Call`` from validated parts
(``wire``) and hands it to the shared attempt loop (``forwarding.forward``).
Which of them answers a request is decided once, by the route table
(``routing``).

What a request body may cost is bounded here, the same way for both:

- no body is read before the token is authenticated (``authenticated``):
  present and shaped like one, then accepted by keyring
  (``KeyringClient.check_token``, one round trip on a miss of its short-lived
  cache of accepted tokens); a refusal is the 401 keyring's Acquire would
  give, with nothing read. Acquire, after the body (the model the lease is for
  may be in it), stays the authoritative check: a token revoked within the
  cache's TTL passes the pre-check and is refused there;
- a ``Content-Encoding`` other than ``identity`` is refused (415) with
  nothing read: the server never decompresses (``auto_decompress=False``), so
  a small compressed body cannot grow into a large one, and no encoding
  header is ever forwarded;
- a declared ``Content-Length`` above the limit is refused (413) before
  reading, an undeclared one when the limit is crossed;
- a body already received in full when its token is accepted (most: they
  come with their head) is taken as it is, holding nothing and waiting for
  nothing; any other is read within ``body_timeout_s`` (408), waiting for room
  included, on the slots of its token (``body_reads``): at most
  ``max_bodies_per_token`` at once for one token (one more is a 429 at once,
  so a tenant whose bodies never come stalls only itself), all of them within
  a memory budget of ``max_concurrent_bodies`` bodies of the largest size
  (each read reserving its worst case for the length it declares);
- a parsed body nests at most ``json_body.MAX_DEPTH`` deep and gives no field
  the edge decides on twice (``json_body``: a 400 otherwise);
- a body is parsed only when it holds at most ``max_json_elements``
  structural characters (``{``, ``[``, ``,``): parsing builds Python objects,
  up to ~36 bytes of memory per byte of a body made of ``{},{},...``. Above
  that, a Gemini body is checked by its shape only (the upstream validates
  it, and its 400 blames no key); an OpenAI body, whose ``model`` the edge
  must read, is refused (413). docs/configuration.md has the arithmetic.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

import orjson
from aiohttp import web

from services.common.head_timeout import end_after_answer
from services.common.naming import model_id, token_hash

from .. import wire
from ..body_reads import TooManyReads, worst_cost
from ..context import EDGE
from ..errors import EdgeError, LeaseRefused, TokenRejected, bad_request
from ..resources.kinds import GENERATE_REFERENCES
from . import json_body

# What a client token can look like at all (keyring's are "kr-" + 43 URL-safe characters): checked before a body.
_TOKEN: Final = re.compile(r"[\x21-\x7e]{8,512}")
_IDENTITY: Final = frozenset({"", "identity"})
# The hash of the token ``authenticated`` accepted for this request: whose body-read slots ``read_body`` takes.
READER: Final = web.RequestKey("keyring_body_reader", str)


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def shaped(token: str) -> str:
    """The token, if it is shaped like one (printable ASCII, 8 to 512 characters); else keyring's 401 at once."""
    if _TOKEN.fullmatch(token) is None:
        raise TokenRejected()
    return token


async def authenticated(request: web.Request, token: str) -> str:
    """The hash of a (shaped) token keyring accepts: call before ``read_body``; refusals raise, nothing read."""
    hashed = token_hash(token)
    edge = request.app[EDGE]
    if not edge.keyring.accepted(hashed):  # the hot path: a dict lookup, no round trip, no call object
        try:
            await edge.keyring.check_token(hashed)
        except LeaseRefused as refused:
            edge.metrics.child(edge.metrics.denied, refused.reason).inc()
            raise
    request[READER] = hashed  # whose body-read slots read_body takes
    return hashed


async def read_body(request: web.Request, owner: str | None = None) -> bytes:
    """The request body, within the limits above, read on the slots of ``owner`` (a token hash).

    Call only once the token is ``authenticated`` (its hash the owner), or with the owner the request proved
    otherwise (an upload's bytes: the token hash sealed in its session).
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _IDENTITY:
        raise EdgeError(
            415,
            f"compressed request bodies are not accepted (Content-Encoding: {encoding[:40]}): send it uncompressed",
            openai_code="unsupported_media_type",
        )
    edge = request.app[EDGE]
    declared = request.content_length
    if declared is not None and declared > request.client_max_size:
        raise EdgeError(413, "the request body is too large", openai_code="request_entity_too_large")
    owner = owner or request.get(READER)
    if owner is None:
        raise RuntimeError("read_body before the token is authenticated")
    if request.content.is_eof():  # in full already (most bodies come with their head): no wait, no slot held
        return await request.read()
    settings = edge.settings
    cost = worst_cost(request.client_max_size if declared is None else declared, settings.max_json_elements)
    try:
        async with asyncio.timeout(settings.body_timeout_s), edge.body_reads.reading(owner, cost):
            return await request.read()
    except TooManyReads:
        end_after_answer(request)  # the body is not read: no lingering to drain it
        raise EdgeError(
            429,
            f"this token already has {settings.max_bodies_per_token} request bodies being read: retry shortly",
            openai_code="rate_limit_exceeded",
            retry_after_s=1.0,
        ) from None
    except TimeoutError:
        end_after_answer(request)  # the rest is not coming: no lingering for it
        raise EdgeError(408, "the request body did not arrive in time", openai_code="request_timeout") from None


def _elements(body: bytes) -> int:
    """An upper bound of the JSON values a body holds (structural characters, strings' included)."""
    return body.count(b"{") + body.count(b"[") + body.count(b",")


def json_object(request: web.Request, body: bytes) -> dict[str, object]:
    """Parse a JSON object body whose fields the edge must read (the bytes themselves are forwarded)."""
    if _elements(body) > request.app[EDGE].settings.max_json_elements:
        raise EdgeError(
            413, "the request body holds too many JSON elements for this service", openai_code="request_too_large"
        )
    return _parsed_object(body)


def check_json_object(request: web.Request, body: bytes) -> dict[str, object] | None:
    """Check a body the edge only forwards: parsed when cheap to (the object), else by its shape (``{...}``): None."""
    if _elements(body) <= request.app[EDGE].settings.max_json_elements:
        return _parsed_object(body)
    if not (body.lstrip()[:1] == b"{" and body.rstrip()[-1:] == b"}"):
        raise bad_request("the request body must be a JSON object")
    return None


# What a request's service_tier may say, in either dialect's spelling -> the tier keyring is told (issue 21).
_SERVICE_TIERS: Final = {
    "standard": "standard", "default": "", "auto": "", "flex": "flex", "priority": "priority",
    "service_tier_unspecified": "", "service_tier_standard": "standard", "service_tier_flex": "flex",
    "service_tier_priority": "priority",
}  # fmt: skip


def service_tier(data: object) -> str:
    """The body's ``serviceTier`` (native) or ``service_tier`` (OpenAI): "", "standard", "flex" or "priority";
    a value of neither dialect is the client's error (400), so keyring never leases for an unknown tier."""
    value = data.get("serviceTier", data.get("service_tier")) if isinstance(data, dict) else None
    if value is None:
        return ""
    tier = _SERVICE_TIERS.get(value.lower()) if isinstance(value, str) else None
    if tier is None:
        raise bad_request("service_tier must be standard, flex or priority")
    return tier


def named_resources(body: bytes, data: object, refs: wire.References = GENERATE_REFERENCES) -> tuple[str, ...]:
    """The resources a body names (a generate call's files, cache and file search stores, or ``refs``), from its
    parsed JSON (``wire.named_resources``).

    A body over the parse budget (``data`` None) that may name one is refused (413): which project
    the call needs cannot be told, and a key of another project would be handed the name.
    """
    try:
        return wire.named_resources(body, data, refs)
    except wire.UnreadableNames as error:
        raise EdgeError(413, str(error), openai_code="request_too_large") from None


def _parsed_object(body: bytes) -> dict[str, object]:
    try:
        return json_body.parse_object(body)
    except json_body.RefusedBody as refused:
        raise bad_request(str(refused)) from None


def only_allowed(body: bytes, allowed: tuple[str, ...], *, listing: str, name: str) -> bytes:
    """A model list (``body[listing]``, each model named by ``name``) without the models outside the allow-list."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if isinstance(data, dict) and isinstance(data.get(listing), list):
        data[listing] = [m for m in data[listing] if isinstance(m, dict) and model_id(str(m.get(name, ""))) in allowed]
    return orjson.dumps(data)
