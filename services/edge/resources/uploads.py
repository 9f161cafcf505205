"""Resumable uploads: ``POST /upload/{version}/files``, started on one edge, bytes through any.

google-genai (``_api_client`` ``upload_file``) starts a session with the
client's key (``X-Goog-Upload-Command: start``), then sends the bytes to the
answer's ``X-Goog-Upload-URL`` as it is, with no key at all: the upload URL
is the capability. So the edge, on a successful start:

- takes the upstream's ``upload_id`` out of that URL and seals it, with the
  client's token hash, the declared size, the API version and an expiry,
  under ``EDGE_UPLOAD_SESSION_KEY`` (AES-GCM; every edge replica shares the
  key, so any of them can open it; nobody else can read or forge one);
- answers ``X-Goog-Upload-URL: {EDGE_PUBLIC_BASE_URL}/upload/{version}/files?
  upload_id={sealed}&upload_protocol=resumable``: the edge's public address
  (https, required while uploads are on: ``EdgeSettings``), never the
  request's own Host or scheme (a client chooses those); the upstream's
  upload URL (a capability without a key) never reaches the client, nor its
  ``X-Goog-Upload-Control-URL`` or ``X-GUploader-UploadID``;
- binds ``uploads/{digest of the upstream id}`` to the key in keyring, both
  the sealed session and the binding living ``EDGE_UPLOAD_SESSION_TTL_S``
  (hours, not Google's week: issue 18).

A byte request (``upload_id`` in the query) needs no token: its sealed
session names the token (whose pool Acquire still checks: a revoked token's
upload stops) and the upstream session; the lease is the key bound to the
session (affinity), so it lands on any edge and still uses the key that
opened it. A client that does send a token must send the session's own.
Refused before any lease, with ``X-Goog-Upload-Status: final`` (so clients
stop, not retry): a session that does not open (unknown, forged, expired,
another API version: 404), a command other than upload/finalize/query/cancel
(400), bytes past the declared size (400), a chunk above
``EDGE_MAX_BODY_BYTES`` (413). A start declaring more than
``EDGE_MAX_UPLOAD_BYTES`` (Google's 2 GiB by default) is refused (400)
before any lease. The finalizing answer's file is bound (``files/{id}``,
until its ``expirationTime``) and the session unbound.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Final

from aiohttp import web
from yarl import URL

from services.common.naming import token_hash

from .. import wire
from ..config import EdgeSettings
from ..context import EDGE
from ..dialects import authenticated, check_json_object, read_body
from ..errors import EdgeError, UnknownResource, UpstreamFailed, bad_request, render, render_upstream
from ..forwarding import forward
from ..keyring import Binding
from ..routing import dialect_of
from ..upstream import NOTHING, Call, Settle, Settlement
from . import bindings, kinds
from .common import client_token, path_of
from .sessions import UploadSession, UploadSessions

log = logging.getLogger(__name__)

_UPSTREAM_ID: Final = re.compile(r"[A-Za-z0-9_.~-]{1,1024}")
_COMMANDS: Final = frozenset({"upload", "finalize", "query", "cancel"})
_FINAL: Final = {"X-Goog-Upload-Status": "final"}


async def upload(request: web.Request) -> web.StreamResponse:
    """``POST /upload/{version}/files``: a session's start, or (``upload_id``) its bytes."""
    path = path_of(request, "uploads", item=False)
    if "upload_id" in request.query:
        _served(request)
        return await _bytes(request, path.version)
    url = wire.resource_url(request.app[EDGE].base_url, path, [])
    return await _start(request, path.version, url, "", (), "files.upload")


async def upload_to(request: web.Request) -> web.StreamResponse:
    """``POST /upload/{version}/environments/{id}/files/{path}`` and ``.../fileSearchStores/{id}:uploadTo...``:
    a kind's upload (``kinds.Kind.upload``), started in its parent's project; its bytes like a file's."""
    try:
        target = kinds.parse_upload(request.raw_path)
    except wire.MalformedPath as error:
        raise bad_request(str(error)) from None
    if "upload_id" in request.query:
        _served(request)
        return await _bytes(request, target.version)
    tail = f"upload/{target.version}/{target.tail}"
    url = URL(f"{request.app[EDGE].base_url}/{tail}", encoded=True)
    return await _start(request, target.version, url, tail, (target.owner,), f"{target.kind.route}.upload")


def _served(request: web.Request) -> None:
    if not request.app[EDGE].settings.uploads:
        raise EdgeError(404, "uploads are not served by this edge (EDGE_UPLOADS=false)", openai_code="not_found")


async def _start(
    request: web.Request, version: str, url: URL, target: str, affinity: tuple[str, ...], route: str
) -> web.StreamResponse:
    """A session's start: the declared size checked before any lease, the upload URL sealed by the settle."""
    _served(request)
    hashed = await authenticated(request, client_token(request))
    headers = request.headers
    if headers.get("X-Goog-Upload-Protocol", "").lower() != "resumable":
        raise bad_request("only resumable uploads are served: set X-Goog-Upload-Protocol: resumable")
    if headers.get("X-Goog-Upload-Command", "").lower() != "start":
        raise bad_request("the first request of a resumable upload must have X-Goog-Upload-Command: start")
    edge = request.app[EDGE]
    declared = headers.get("X-Goog-Upload-Header-Content-Length", "")
    if not declared.isdigit() or len(declared) > 15:
        raise bad_request("X-Goog-Upload-Header-Content-Length must give the file's size in bytes")
    size = int(declared)
    if size > edge.settings.max_upload_bytes:
        raise bad_request(f"the file is too large: {size} bytes, at most {edge.settings.max_upload_bytes}")
    body = await read_body(request)
    if body:
        check_json_object(request, body)
    started = _started(edge.uploads, UploadSession(hashed, "", size, version, 0, target), edge.settings)
    call = Call(
        method="POST", url=url, headers=wire.forward_headers(request.headers.items(), wire.UPLOAD_HEADERS),
        body=body, token_hash=hashed, model="", route=route, affinity=affinity, settle=started,
        binds=True,  # a session to bind: refused (429) before the upstream when the bindings are full
        # The upstream's upload URL reaches the settle (which rewrites it), and only on a start.
        passed_back=frozenset({wire.UPLOAD_URL_HEADER}),
    )  # fmt: skip
    return await forward(request, call)


def _started(sessions: UploadSessions, start: UploadSession, settings: EdgeSettings) -> Settle:
    """The start's answer: its upload URL rewritten to the public base with a sealed session, bound to the key.

    ``start``: the session but for the upstream's id and the expiry, which the answer gives.
    """
    public_base, ttl_s = settings.public_base_url, settings.upload_session_ttl_s
    version = start.version

    def settle(body: bytes, response: web.StreamResponse) -> Settlement:
        upstream_url = response.headers.pop(wire.UPLOAD_URL_HEADER, "")
        try:
            upstream_id = URL(upstream_url).query.get("upload_id", "")
        except ValueError:
            upstream_id = ""
        if _UPSTREAM_ID.fullmatch(upstream_id) is None:
            log.warning("the upstream's upload start named no usable upload URL")
            return NOTHING
        session = dataclasses.replace(start, upstream_id=upstream_id, expires_at=int(time.time() + ttl_s))
        url = URL(f"{public_base}/upload/{version}/files").with_query(
            upload_id=sessions.seal(session), upload_protocol="resumable"
        )
        response.headers["X-Goog-Upload-URL"] = str(url)
        return Settlement(bind=(Binding(session.name, ttl_s),))

    return settle


async def _bytes(request: web.Request, version: str) -> web.StreamResponse:
    """Bytes of a session (upload, finalize, query, cancel): every error says the upload is over."""
    try:
        return await _send_bytes(request, version)
    except EdgeError as error:
        if error.headers is None:
            error.headers = {}
        error.headers.update(_FINAL)
        return render(error, dialect_of(request))
    except UpstreamFailed as failed:
        response = render_upstream(failed.error, dialect_of(request), failed.retry_after_s)
        response.headers.update(_FINAL)
        return response


async def _send_bytes(request: web.Request, version: str) -> web.StreamResponse:
    edge = request.app[EDGE]
    session = edge.uploads.open(request.query["upload_id"])
    if session is None or session.version != version:
        raise EdgeError(404, "unknown upload session (or it has expired)", openai_code="not_found")
    token = request.headers.get("x-goog-api-key") or request.query.get("key")
    if token and token_hash(token) != session.token_hash:
        raise EdgeError(404, "unknown upload session (or it has expired)", openai_code="not_found")
    command = {part.strip().lower() for part in request.headers.get("X-Goog-Upload-Command", "").split(",")}
    if not command or not command <= _COMMANDS:
        raise bad_request("X-Goog-Upload-Command must be upload, finalize, query or cancel")
    body = await read_body(request, owner=session.token_hash)  # the session's token: its body-read slots
    offset = request.headers.get("X-Goog-Upload-Offset", "0")
    if not offset.isdigit() or len(offset) > 15:
        raise bad_request("X-Goog-Upload-Offset must be a number of bytes")
    if int(offset) + len(body) > session.size:
        raise bad_request(f"the upload exceeds the size declared at its start ({session.size} bytes)")
    settle: Settle | None = None
    if "finalize" in command:
        settle = _finalized(session)
    elif "cancel" in command:
        settle = bindings.deleted(session.name)
    tail = session.target or f"upload/{version}/files"
    query = {"upload_id": session.upstream_id, "upload_protocol": "resumable"}
    url = URL(f"{edge.base_url}/{tail}", encoded=True).with_query(query)
    call = Call(
        method="POST",
        url=url,
        headers=wire.forward_headers(request.headers.items(), wire.UPLOAD_HEADERS),
        body=body,
        token_hash=session.token_hash,
        model="",
        route="files.upload" if not session.target else "uploads.bytes",
        affinity=(session.name,),
        settle=settle,
    )
    try:
        return await forward(request, call)
    except UnknownResource:
        raise EdgeError(404, "unknown upload session (or it is finished)", openai_code="not_found") from None


def _finalized(session: UploadSession) -> Settle:
    """A finished upload: its file bound (a kind's upload makes a child of what it was started for: nothing
    to bind), the session unbound."""

    def settle(body: bytes, response: web.StreamResponse) -> Settlement:
        created = bindings.created_file(body, response) if not session.target else NOTHING
        return Settlement(bind=created.bind, unbind=(session.name,))

    return settle
