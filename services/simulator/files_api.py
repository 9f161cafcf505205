"""Files API: resumable upload, get, list, delete, download (`/upload/v1beta/files`, `/v1beta/files`).

Upload, as google-genai's `_api_client.upload_file` drives it: `POST /upload/v1beta/files`
with `X-Goog-Upload-Protocol: resumable` and `X-Goog-Upload-Command: start` answers an
empty body and the `X-Goog-Upload-URL` header (`...?upload_id=...`); the bytes go there
with `X-Goog-Upload-Command: upload[, finalize]` and `X-Goog-Upload-Offset`, each answer
carrying `X-Goog-Upload-Status` (`active`, then `final` with `{"file": {...}}`).

The session belongs to the project of the key that started it. A byte request carrying
a key of another project is refused (404, as for an unknown session); one carrying no
key is accepted, the upload id being the capability. A file of another project is 403
"You do not have permission to access the File ... or it may not exist." (Google's
words, the same as for a file that does not exist).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from .errors import SimError, error_response, invalid_argument, not_found
from .pipeline import (
    SIMULATOR_STATE,
    Call,
    admit,
    chunk_count,
    credentials,
    endpoint,
    json_response,
    parse_json_object,
    record,
    stream_frames,
)
from .references import file_denied
from .resources import Resource, ResourceStore, new_id, rfc3339

GOOGLE_FILES: Final = "https://generativelanguage.googleapis.com/v1beta/files/"
MAX_FILE_BYTES: Final = 2 * 1024**3  # Google's limit per file
FILE_TTL_S: Final = 48 * 3600
_FILE_ID: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
DEFAULT_PAGE_SIZE: Final = 10
MAX_PAGE_SIZE: Final = 100


def file_object(rid: str, mime: str, size: int, display: str | None, digest: bytes, source: str) -> dict[str, Any]:
    """A File as the API shows it (camelCase, int64 as string)."""
    now = time.time()
    data: dict[str, Any] = {"name": f"files/{rid}"}
    if display:
        data["displayName"] = display
    data.update(
        {
            "mimeType": mime,
            "sizeBytes": str(size),
            "createTime": rfc3339(now),
            "updateTime": rfc3339(now),
            "expirationTime": rfc3339(now + FILE_TTL_S),
            "sha256Hash": base64.b64encode(digest.hex().encode()).decode(),
            "uri": GOOGLE_FILES + rid,
            "state": "ACTIVE",
            "source": source,
        }
    )
    if source == "GENERATED":
        data["downloadUri"] = f"{GOOGLE_FILES}{rid}:download?alt=media"
    return data


def store_generated(call: Call, content: bytes, mime: str) -> Resource:
    """A generated file (a video of an operation): downloadable by its project's keys."""
    rid = new_id()
    data = file_object(rid, mime, len(content), None, hashlib.sha256(content).digest(), "GENERATED")
    resource = call.state.resources.add("files", call.project, call.key, data, rid)
    resource.content = content
    return resource


def file_id(raw: str) -> str:
    """A valid file id or Google's 400."""
    if not _FILE_ID.fullmatch(raw):
        raise invalid_argument(f"Invalid file name: files/{raw}")
    return raw


def _uploader(response: web.StreamResponse) -> web.StreamResponse:
    """Google's upload and media servers name the serving upload in every answer (``X-GUploader-UploadID``)."""
    response.headers["X-GUploader-UploadID"] = "ABgVH" + new_id(40)
    return response


def _upload_error(error: SimError) -> web.Response:
    """An error on the upload protocol still says the upload is over, so clients stop retrying."""
    response = error_response(error, "native")
    response.headers["X-Goog-Upload-Status"] = "final"
    _uploader(response)
    return response


@endpoint("native")
async def upload(request: web.Request) -> web.StreamResponse:
    """`POST /upload/{version}/files`: `start` a session, or `upload`/`finalize`/`query` its bytes."""
    return await resumable(request)


async def resumable(
    request: web.Request, check: Callable[[Call], None] | None = None, finish: Finish | None = None
) -> web.StreamResponse:
    """The resumable protocol for a file, or (``finish``) for another kind's upload (``kinds_api``), whose
    start is ``check``ed (its parent the caller's project's) and whose last bytes ``finish`` stores."""
    if "upload_id" in request.query:
        return await _upload_bytes(request, finish)
    body = await request.read()
    call = await admit(request, "native", None, body)
    if check is not None:
        check(call)
    if request.headers.get("X-Goog-Upload-Protocol", "").lower() != "resumable":
        raise invalid_argument("Upload protocol must be resumable: set X-Goog-Upload-Protocol: resumable.")
    if request.headers.get("X-Goog-Upload-Command", "").lower() != "start":
        raise invalid_argument("The first request of a resumable upload must have X-Goog-Upload-Command: start.")
    sent = parse_json_object(body) if body else {}
    given = (sent.get("file") if finish is None else sent) or {}  # another kind's start: its request itself
    # proto JSON: camelCase or snake_case field names alike (google-genai sends snake_case here)
    meta = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): v for k, v in given.items()}
    try:
        size = int(request.headers.get("X-Goog-Upload-Header-Content-Length") or meta.get("sizeBytes") or 0)
    except ValueError:
        raise invalid_argument("X-Goog-Upload-Header-Content-Length must be an integer.") from None
    if not 0 <= size <= MAX_FILE_BYTES:
        raise invalid_argument(f"File size {size} exceeds the maximum of {MAX_FILE_BYTES} bytes.")
    store = call.state.resources
    rid = file_id(str(meta["name"]).removeprefix("files/")) if meta.get("name") else new_id()
    if finish is None and store.exists("files", rid):
        raise SimError(409, "ALREADY_EXISTS", f"File files/{rid} already exists.")
    mime = (
        request.headers.get("X-Goog-Upload-Header-Content-Type") or meta.get("mimeType") or "application/octet-stream"
    )
    session = {"file": rid, "size": size, "mimeType": mime, "displayName": meta.get("displayName")}
    if finish is not None:
        session["target"] = request.path
    upload_id = new_id(24)
    store.add("uploads", call.project, call.key, session, upload_id)
    url = f"{request.scheme}://{request.host}{request.path}?upload_id={upload_id}&upload_protocol=resumable"
    headers = {
        "X-Goog-Upload-URL": url,
        "X-Goog-Upload-Control-URL": url,
        "X-Goog-Upload-Status": "active",
        "X-Goog-Upload-Chunk-Granularity": str(8 * 1024 * 1024),
    }
    return _uploader(web.Response(status=200, headers=headers))


async def _upload_bytes(request: web.Request, finish: Finish | None) -> web.StreamResponse:
    body = await request.read()
    upload_id = request.query["upload_id"]
    try:
        session, key = await _session(request, upload_id, body)
    except SimError as error:
        return _upload_error(error)
    command = {c.strip().lower() for c in request.headers.get("X-Goog-Upload-Command", "").split(",")}
    received = len(session.content)
    if "query" in command:
        active = {"X-Goog-Upload-Status": "active", "X-Goog-Upload-Size-Received": str(received)}
        return _uploader(web.Response(headers=active))
    if "cancel" in command:
        session.data["cancelled"] = True
        return _uploader(web.Response(headers={"X-Goog-Upload-Status": "cancelled"}))
    if "upload" not in command and "finalize" not in command:
        return _upload_error(invalid_argument("X-Goog-Upload-Command must be upload, finalize or query."))
    if request.headers.get("X-Goog-Upload-Offset", str(received)) != str(received):
        return _upload_error(invalid_argument(f"Invalid X-Goog-Upload-Offset: {received} bytes received so far."))
    if received + len(body) > session.data["size"]:
        return _upload_error(invalid_argument(f"Upload exceeds the declared size of {session.data['size']} bytes."))
    session.content += body
    if "finalize" not in command:
        active = {"X-Goog-Upload-Status": "active", "X-Goog-Upload-Size-Received": str(received)}
        return _uploader(web.Response(headers=active))
    return _uploader(_finalize(request, session, key, finish))


def _finalize(request: web.Request, session: Resource, key: str, finish: Finish | None) -> web.Response:
    meta = session.data
    if len(session.content) != meta["size"]:
        return _upload_error(
            invalid_argument(f"Upload finalized with {len(session.content)} bytes, {meta['size']} were declared.")
        )
    store = _resources(request)
    if finish is not None or meta.get("target"):
        if finish is None or meta.get("target") != request.path:  # bytes sent to another kind's path
            return _upload_error(not_found(f"Upload session {session.id} not found."))
        answer = finish(store, session)
        store.delete("uploads", session.id, session.project)
        finished = json_response(answer)
        finished.headers["X-Goog-Upload-Status"] = "final"
        return finished
    digest = hashlib.sha256(session.content).digest()
    data = file_object(meta["file"], meta["mimeType"], meta["size"], meta["displayName"], digest, "UPLOADED")
    created = store.add("files", session.project, session.key, data, meta["file"])
    created.content = session.content
    store.delete("uploads", session.id, session.project)
    response = json_response({"file": data})
    response.headers["X-Goog-Upload-Status"] = "final"
    return response


# Stores what a kind's finished upload made (from its session, whose ``content`` holds the bytes): its answer.
Finish = Callable[[ResourceStore, Resource], dict[str, Any]]


def _resources(request: web.Request) -> ResourceStore:
    return request.app[SIMULATOR_STATE].resources


async def _session(request: web.Request, upload_id: str, body: bytes) -> tuple[Resource, str]:
    """The upload session, checked against the caller's key (if any) and recorded like any call."""
    store = _resources(request)
    if credentials(request):
        call = await admit(request, "native", None, body)
        session = store.get("uploads", upload_id, call.project)
        key = call.key
    else:
        record(request, body, None)
        session = next((r for r in store if r.kind == "uploads" and r.id == upload_id), None)
        key = ""
    if session is None or session.data.get("cancelled"):
        raise not_found(f"Upload session {upload_id} not found.")
    return session, key


def _page(request: web.Request, items: list[Any]) -> tuple[list[Any], str | None]:
    raw_size, token = request.query.get("pageSize"), request.query.get("pageToken") or "0"
    try:
        size = min(int(raw_size), MAX_PAGE_SIZE) if raw_size else DEFAULT_PAGE_SIZE
        offset = int(token)
    except ValueError:
        raise invalid_argument("Invalid page token or page size.") from None
    size = size if size > 0 else DEFAULT_PAGE_SIZE
    end = offset + size
    return items[offset:end], (str(end) if end < len(items) else None)


def page(request: web.Request, items: list[Any], field: str) -> web.Response:
    """A list answer, `{field: [...], nextPageToken}`; an empty list is `{}`, as Google answers."""
    chosen, token = _page(request, items)
    out: dict[str, Any] = {field: chosen} if chosen else {}
    if token:
        out["nextPageToken"] = token
    return json_response(out)


@endpoint("native")
async def list_files(request: web.Request) -> web.StreamResponse:
    """`GET /files`: the caller's project's files, oldest first, paged."""
    call = await admit(request, "native", None, b"")
    return page(request, [r.data for r in call.state.resources.list("files", call.project)], "files")


@endpoint("native")
async def file_item(request: web.Request) -> web.StreamResponse:
    """`GET|DELETE /files/{id}` and `GET /files/{id}:download?alt=media`."""
    raw, _, action = request.match_info["file"].partition(":")
    call = await admit(request, "native", None, b"")
    fid = file_id(raw)
    resource = call.state.resources.get("files", fid, call.project)
    if resource is None:
        raise file_denied(fid)
    if action == "download" and request.method == "GET":
        if resource.data["source"] != "GENERATED":
            raise SimError(
                400, "FAILED_PRECONDITION", f"File files/{fid} was uploaded: only generated files can be downloaded."
            )
        return await _media(request, call, resource)
    if action:
        raise not_found(f"Method not found: {request.path}")
    if request.method == "DELETE":
        call.state.resources.delete("files", fid, call.project)
        return json_response({})
    return json_response(resource.data)


async def _media(request: web.Request, call: Call, resource: Resource) -> web.StreamResponse:
    """A file's bytes, chunked as Google's media server sends them (the chunk count and delay of a stream)."""
    content = resource.content
    size = -(-len(content) // chunk_count(call)) or 1
    frames = (content[i : i + size] for i in range(0, len(content), size))
    headers = {"X-GUploader-UploadID": "ABgVH" + new_id(40)}
    return await stream_frames(request, call, frames, resource.data["mimeType"], headers)


@endpoint("native")
async def register(request: web.Request) -> web.StreamResponse:
    """`POST /files:register`: Cloud Storage objects made files of the caller's project (their bytes stay there)."""
    body = await request.read()
    call = await admit(request, "native", None, body)
    uris = parse_json_object(body).get("uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u.startswith("gs://") for u in uris):
        raise invalid_argument("* RegisterFilesRequest.uris: uris must be gs:// URIs")
    files = []
    for uri in uris:
        rid = new_id()
        data = file_object(rid, "application/octet-stream", 0, uri.rpartition("/")[2], b"", "REGISTERED")
        files.append(call.state.resources.add("files", call.project, call.key, data, rid).data)
    return json_response({"files": files})


def add_routes(app: web.Application) -> None:
    """Register the Files API under both versions."""
    for version in ("v1beta", "v1", "v1alpha"):
        app.router.add_post(f"/upload/{version}/files", upload)
        app.router.add_get(f"/{version}/files", list_files)
        app.router.add_post(f"/{version}/files:register", register)
        app.router.add_route("GET", f"/{version}/files/{{file}}", file_item)
        app.router.add_route("DELETE", f"/{version}/files/{{file}}", file_item)
