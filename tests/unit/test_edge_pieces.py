"""The edge's pure pieces, with no server started: what crosses the edge, which dialect a request gets,
how errors are rendered, when a request fails over, and what keyring is told."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, MultiDictProxy
from yarl import URL

from services.common.answers import AnswerKind, Transport, UpstreamError, parse_error
from services.common.masking import StreamScrubber, scrub
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.edge import wire
from services.edge.app import create_app
from services.edge.config import EdgeSettings
from services.edge.errors import (
    KEYRING_UNAVAILABLE,
    EdgeError,
    InvalidLeaseRequest,
    KeyringUnavailable,
    LeaseRefused,
    ModelNotAllowed,
    NoKeyFree,
    TokenRejected,
    UnknownResource,
    bad_request,
    from_http_exception,
    missing_token,
    render,
    render_upstream,
)
from services.edge.keyring.kept import KeptReleases
from services.edge.keyring.refusals import refusal
from services.edge.routing import GEMINI, OPENAI, dialect_of, fallback
from services.edge.upstream import error_outcome, transport_failure

# -- headers and query going up ------------------------------------------------


def test_forward_headers_drop_credentials_hop_by_hop_and_forwarding_headers() -> None:
    incoming = [
        ("Authorization", "Bearer kr-client-token"),
        ("x-goog-api-key", "kr-client-token"),
        ("Cookie", "session=1"),
        ("Proxy-Authorization", "Basic eA=="),
        ("Host", "edge.example"),
        ("Content-Length", "12"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "x"),
        ("Upgrade", "h2c"),
        ("Expect", "100-continue"),
        ("Forwarded", "for=1.2.3.4"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Forwarded-Host", "edge.example"),
        ("X-Forwarded-Proto", "https"),
        ("X-Real-IP", "1.2.3.4"),
        ("Content-Type", "application/json"),
        ("x-goog-user-project", "my-project"),
        ("User-Agent", "openai-python/1.0"),
    ]
    incoming += [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Goog-User-Project", "other-project"),
        ("Referer", "https://allowed.example/"),
        ("X-Android-Package", "com.example"),
        ("X-Ios-Bundle-Identifier", "com.example"),
        ("X-Goog-Api-Client", "google-genai-sdk/1.2 gl-python/3.11"),
        ("X-Server-Timeout", "60"),
        ("Accept", "application/json"),
        ("X-Stainless-Lang", "python"),
        ("Api-Revision", "2026-05-20"),  # the Interactions API's behaviour depends on it (issue 21)
    ]
    # An allow-list (issue 11): what clients send that means something upstream, nothing else.
    assert wire.forward_headers(incoming) == {
        "content-type": "application/json",
        "user-agent": "openai-python/1.0",
        "x-goog-api-client": "google-genai-sdk/1.2 gl-python/3.11",
        "x-server-timeout": "60",
        "accept": "application/json",
        "api-revision": "2026-05-20",
        "accept-encoding": "identity",  # always explicit: aiohttp would otherwise ask for gzip itself
    }
    allowed = {"content-type", "accept", "user-agent", "x-goog-api-client", "x-server-timeout", "api-revision"}
    assert allowed == wire.FORWARDED_HEADERS


@pytest.mark.parametrize(
    ("accept_encoding", "forwarded"),
    [
        ("gzip, deflate, br, zstd", "gzip,deflate"),
        ("br;q=1.0, gzip;q=0.8", "gzip;q=0.8"),
        ("GZIP", "GZIP"),
        ("identity", "identity"),
        ("br, zstd", "identity"),  # nothing the edge can read back: the answer comes plain
        ("", "identity"),
    ],
)
def test_accept_encoding_is_restricted_to_codings_the_edge_can_read(accept_encoding: str, forwarded: str) -> None:
    assert wire.forward_headers([("Accept-Encoding", accept_encoding)]) == {"accept-encoding": forwarded}


def _decoded(raw_query: str) -> MultiDictProxy[str]:
    return URL.build(path="/", query_string=raw_query, encoded=True).query


@pytest.mark.parametrize(
    ("raw_query", "kept"),
    [
        ("", []),
        ("alt=sse", [("alt", "sse")]),
        ("key=kr-token&alt=sse&pageSize=5&pageToken=o5", [("alt", "sse"), ("pageSize", "5"), ("pageToken", "o5")]),
        ("access_token=garbage&alt=json", [("alt", "json")]),
        ("%6Bey=kr-token&k%65y=x&KEY=y&alt=sse", [("alt", "sse")]),  # a credential however spelt: dropped
        ("alt=media&alt=proto&%24alt=json", []),  # only the values the edge can read back
        ("upload_protocol=raw&uploadType=media&fields=x&prettyPrint=false&callback=f", []),
        ("pageToken=" + "x" * 1025, []),
    ],
)
def test_only_allow_listed_query_parameters_are_forwarded(raw_query: str, kept: list[tuple[str, str]]) -> None:
    assert wire.forward_query(_decoded(raw_query).items()) == kept


@pytest.mark.parametrize(
    ("raw_query", "token"),
    [
        ("key=kr-token", "kr-token"),
        ("%6Bey=kr-token", "kr-token"),  # one rule: the name is decoded for the token as for the allow-list
        ("k%65y=kr-token&alt=sse", "kr-token"),
        ("KEY=kr-token", None),  # names are case-sensitive, as Google's are
        ("keys=kr-token", None),
        ("", None),
    ],
)
def test_the_client_key_is_read_from_the_decoded_query(raw_query: str, token: str | None) -> None:
    assert wire.client_key(_decoded(raw_query)) == token


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1beta/models/../files",
        "/v1beta/models/x/../../files:generateContent",
        "/v1/models/..%2F..%2F..%2Fv1beta%2Ffiles",
        "/v1beta/models/%2e%2e/files",
        "/v1beta/models/gemini-3.5-flash%2F..%2F..%2Ffiles:generateContent",
        "/v1beta/models/..\\..\\files",
        "/v1beta/models/a%5C..%5Cfiles",
        "/v1beta/models/./gemini-3.5-flash",
        "/v1beta/models//gemini-3.5-flash",
        "/v1beta/models/gemini-3.5-flash/",
        "/v1beta/models/",
        "/v1beta/models/gemini%2D3.5-flash",
        "/v1beta/models/Gemini-3.5-Flash",
        "/v1beta/models/-gemini",
        "/v1beta/models/gemini-3.5-flash:generate:Content",
        "/v1beta/models/gemini-3.5-flash:",
        "/v1beta//models/gemini-3.5-flash",
        "/v2/models/gemini-3.5-flash",
        "/v1beta/models/" + "a" * 129,
        "/v1beta/models/gemini 3.5",
        "/v1beta/models/gemini-3.5-flash#x",
    ],
)
def test_off_pattern_paths_are_refused(raw_path: str) -> None:
    with pytest.raises(wire.MalformedPath):
        wire.model_path(raw_path)


@pytest.mark.parametrize(
    ("raw_path", "parts", "upstream"),
    [
        ("/v1beta/models", ("v1beta", "", ""), "/v1beta/models"),
        ("/v1/models?pageSize=2", ("v1", "", ""), "/v1/models"),
        ("/v1beta/models/gemini-3.5-flash-lite", ("v1beta", "gemini-3.5-flash-lite", ""), None),
        (
            "/v1beta/models/models/gemini-3.1-pro-preview:streamGenerateContent?alt=sse",
            ("v1beta", "gemini-3.1-pro-preview", "streamGenerateContent"),
            "/v1beta/models/gemini-3.1-pro-preview:streamGenerateContent",
        ),
        ("/v1/models/text-embedding-004:embedContent", ("v1", "text-embedding-004", "embedContent"), None),
        ("/v1beta/models/gemini-3.5-flash:explode", ("v1beta", "gemini-3.5-flash", "explode"), None),
    ],
)
def test_paths_on_the_pattern_give_their_parts(
    raw_path: str, parts: tuple[str, str, str], upstream: str | None
) -> None:
    path = wire.model_path(raw_path)
    assert (path.version, path.model, path.action) == parts
    url = wire.native_url("https://relay.example/prefix", path, [("alt", "sse")])
    expected = upstream or raw_path.partition("?")[0]
    assert str(url) == f"https://relay.example/prefix{expected}?alt=sse"


def test_model_names_in_bodies() -> None:
    assert wire.valid_model("models/gemini-3.5-flash") == "gemini-3.5-flash"
    assert wire.valid_model("gemini-3.5-flash") == "gemini-3.5-flash"
    for bad in ("../files", "gemini/../x", "", "models/", "GEMINI", "a" * 129, "gemini-3.5-flash\\x"):
        assert wire.valid_model(bad) is None


def test_response_headers_pass_by_allow_list() -> None:
    upstream = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("Retry-After", "7"),
        ("x-gemini-service-tier", "standard"),
        ("X-Goog-Upload-Status", "active"),
        ("X-Goog-Upload-Size-Received", "10"),
        ("x-goog-request-id", "abc"),
        ("X-GUploader-UploadID", "ABgVH-upstream-upload"),  # issue 18: it leaked (deny-list)
        ("X-Goog-Upload-URL", "https://generativelanguage.googleapis.com/upload/v1beta/files?upload_id=x"),
        ("X-Goog-Upload-Control-URL", "https://generativelanguage.googleapis.com/upload/v1beta/files?upload_id=x"),
        ("Server-Timing", "gfet4t7; dur=12"),
        ("Vary", "Origin"),
        ("Content-Length", "10"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("Set-Cookie", "a=b"),
        ("Alt-Svc", 'h3=":443"'),
        ("Server", "ESF"),
        ("Date", "today"),
    ]
    assert wire.response_headers(upstream) == [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("Retry-After", "7"),
        ("x-gemini-service-tier", "standard"),
        ("X-Goog-Upload-Status", "active"),
        ("X-Goog-Upload-Size-Received", "10"),
    ]
    # an upload's start asks for its URL, which its settle rewrites; nobody else gets it
    passed = wire.response_headers(upstream, frozenset({wire.UPLOAD_URL_HEADER}))
    assert [name for name, _ in passed if name.lower().startswith("x-goog-upload-url")] == ["X-Goog-Upload-URL"]


KEY = "AIza" + "Sy0123456789abcdefghijklmnopqrstuv"


@pytest.mark.parametrize(
    "answer",
    [
        b'data: {"text": "the key is ' + KEY.encode() + b' and more"}\r\n\r\n',
        b'[{"text": "' + KEY.encode() + b'"}\r\n,{"text": "AQ.' + b"x" * 40 + b'"}]',
        b"\x00\x01binary" + KEY.encode(),
    ],
)
def test_a_stream_is_scrubbed_wherever_its_chunks_are_cut(answer: bytes) -> None:
    """Issue 18: the leased key (and any key shape) is masked even when a chunk boundary cuts it in two."""
    for cut in range(len(answer) + 1):
        scrubber = StreamScrubber(KEY)
        sent = scrubber.feed(answer[:cut]) + scrubber.feed(answer[cut:]) + scrubber.flush()
        assert KEY.encode() not in sent and b"AQ." + b"x" * 40 not in sent, cut
        assert sent == scrub(answer, KEY)


def test_a_compressed_stream_is_decoded_before_it_is_scrubbed() -> None:
    answer = b'data: {"text": "' + KEY.encode() + b'"}\r\n\r\n' * 50
    for packed in (gzip.compress(answer), zlib.compress(answer)):
        decoded = wire.StreamDecoded(StreamScrubber(KEY))
        sent = b"".join(decoded.feed(packed[i : i + 7]) for i in range(0, len(packed), 7)) + decoded.flush()
        assert sent == scrub(answer, KEY)
    with pytest.raises(zlib.error):  # bytes the encoding does not describe: a broken answer (the attempt cuts)
        wire.StreamDecoded(StreamScrubber(KEY)).feed(b"not gzip at all")


def test_a_stream_scrubber_holds_nothing_back_at_an_event_end() -> None:
    scrubber = StreamScrubber(KEY)
    event = b'data: {"text": "hello"}\r\n\r\n'
    assert scrubber.feed(event) == event  # the hot path: sent at once, unchanged
    assert scrubber.feed(b"data: {") == b"data: {" and scrubber.feed(b'"text') == b'"'  # a word may be a key
    assert scrubber.flush() == b"text"
    odd = StreamScrubber("not a key!")  # a secret of any shape: its beginnings are held too
    assert odd.feed(b"x not a") == b"x " and odd.feed(b" key! y") + odd.flush() == b"**** y"


# -- reading an answer --------------------------------------------------------


def test_decoded_reads_gzip_deflate_and_raw_deflate() -> None:
    body = b'{"usageMetadata": {"promptTokenCount": 3}}'
    assert wire.decoded(body, None) == body
    assert wire.decoded(body, "identity") == body
    assert wire.decoded(gzip.compress(body), "gzip") == body
    assert wire.decoded(zlib.compress(body), "deflate") == body
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert wire.decoded(raw.compress(body) + raw.flush(), "deflate") == body
    assert wire.decoded(b"not gzip", "gzip") == b""  # unreadable: nothing, never an exception
    assert wire.decoded(body, "br") == b""
    assert wire.decoded(b"", "gzip") == b""


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        (b'{"usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 34, "totalTokenCount": 46}}', (12, 34)),
        (b'{"usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}', (5, 7)),
        # A stream: every event repeats the running totals, the last one wins.
        (
            b'data: {"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1}}\n\n'
            b'data: {"usageMetadata": {"promptTokenCount" : 4, "candidatesTokenCount":  9}}\n\n',
            (4, 9),
        ),
        (b'{"embedding": {"values": [0.1]}}', (0, 0)),
        (b"", (0, 0)),
    ],
)
def test_usage_reads_the_tokens_of_either_dialect(body: bytes, tokens: tuple[int, int]) -> None:
    assert wire.usage(body) == tokens


# -- which dialect a request speaks ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "gemini_auth", "dialect"),
    [
        ("GET", "/v1beta/tunedModels", False, GEMINI),
        ("DELETE", "/v1beta/models/gemini-3.5-flash", False, GEMINI),
        ("PUT", "/v1/chat/completions", False, OPENAI),
        ("PUT", "/v1/chat/completions", True, OPENAI),
        ("GET", "/v1/files", False, OPENAI),
        ("POST", "/v1/models", False, GEMINI),  # a POST under /v1/models is a Gemini action
        ("DELETE", "/v1/models/x", False, OPENAI),
        ("DELETE", "/v1/models/x", True, GEMINI),
        ("GET", "/", False, GEMINI),
        ("GET", "/v2/anything", False, GEMINI),
    ],
)
def test_fallback_for_requests_no_route_claims(method: str, path: str, gemini_auth: bool, dialect: str) -> None:
    assert fallback(method, path, gemini_auth) == dialect


@pytest.fixture
def app() -> web.Application:
    return create_app(EdgeSettings())


async def _decided(app: web.Application, method: str, path: str, headers: dict[str, str]) -> str:
    probe = make_mocked_request(method, path, headers=CIMultiDict(headers), app=app)
    match_info = await app.router.resolve(probe)
    return dialect_of(make_mocked_request(method, path, headers=CIMultiDict(headers), app=app, match_info=match_info))


GOOGLE = {"x-goog-api-key": "kr-token"}
BEARER = {"Authorization": "Bearer kr-token"}


@pytest.mark.parametrize(
    ("method", "path", "headers", "dialect"),
    [
        # A route that speaks one dialect speaks it whatever the credentials.
        ("POST", "/v1/chat/completions", BEARER, OPENAI),
        ("POST", "/v1/chat/completions", GOOGLE, OPENAI),
        ("POST", "/v1/embeddings", {}, OPENAI),
        ("POST", "/v1beta/models/gemini-3.5-flash:generateContent", GOOGLE, GEMINI),
        ("POST", "/v1beta/models/gemini-3.5-flash:generateContent", BEARER, GEMINI),
        ("GET", "/v1beta/models", BEARER, GEMINI),
        ("GET", "/v1beta/models/gemini-3.5-flash", {}, GEMINI),
        ("POST", "/v1/models/gemini-3.5-flash:generateContent", BEARER, GEMINI),
        # Claimed by both: the caller's way of authenticating decides.
        ("GET", "/v1/models", BEARER, OPENAI),
        ("GET", "/v1/models", {}, OPENAI),
        ("GET", "/v1/models", GOOGLE, GEMINI),
        ("GET", "/v1/models?key=kr-token", {}, GEMINI),
        ("GET", "/v1/models/gemini-3.5-flash", BEARER, OPENAI),
        ("GET", "/v1/models/gemini-3.5-flash", GOOGLE, GEMINI),
        ("GET", "/v1/models/gemini-3.5-flash?key=kr-token", BEARER, GEMINI),
        # No route: the fallback rule.
        ("PUT", "/v1/chat/completions", BEARER, OPENAI),
        ("GET", "/v1beta/tunedModels", GOOGLE, GEMINI),
        ("GET", "/v1/files", GOOGLE, OPENAI),
    ],
)
async def test_dialect_of_a_request(
    app: web.Application, method: str, path: str, headers: dict[str, str], dialect: str
) -> None:
    assert await _decided(app, method, path, headers) == dialect


# -- error rendering ---------------------------------------------------------


def _payload(response: web.Response) -> Any:
    assert response.content_type == "application/json"
    assert isinstance(response.body, bytes)
    return orjson.loads(response.body)


def test_an_edge_error_in_each_dialect() -> None:
    error = bad_request("the request body must be a JSON object")
    openai = render(error, OPENAI)
    assert openai.status == 400
    assert _payload(openai) == {
        "error": {
            "message": "the request body must be a JSON object",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_request",
        }
    }
    gemini = render(error, GEMINI)
    assert gemini.status == 400
    assert _payload(gemini) == {
        "error": {"code": 400, "message": "the request body must be a JSON object", "status": "INVALID_ARGUMENT"}
    }
    assert "Retry-After" not in openai.headers and "Retry-After" not in gemini.headers


@pytest.mark.parametrize(
    ("error", "status", "openai_type", "openai_code", "google_status", "retry_after"),
    [
        (TokenRejected(), 401, "authentication_error", "invalid_api_key", "UNAUTHENTICATED", None),
        (ModelNotAllowed("model not allowed"), 403, "permission_error", "model_not_allowed", "PERMISSION_DENIED", None),
        (NoKeyFree("all cooling", 37.2), 429, "rate_limit_error", "rate_limit_exceeded", "RESOURCE_EXHAUSTED", "38"),
        (NoKeyFree("all cooling", 0.0), 429, "rate_limit_error", "rate_limit_exceeded", "RESOURCE_EXHAUSTED", None),
        (InvalidLeaseRequest("bad model"), 400, "invalid_request_error", "invalid_request", "INVALID_ARGUMENT", None),
        (KeyringUnavailable(), 503, "server_error", "service_unavailable", "UNAVAILABLE", "1"),
        (missing_token(OPENAI), 401, "authentication_error", "missing_api_key", "UNAUTHENTICATED", None),
    ],
)
def test_refusals_in_each_dialect(
    error: EdgeError, status: int, openai_type: str, openai_code: str, google_status: str, retry_after: str | None
) -> None:
    openai, gemini = render(error, OPENAI), render(error, GEMINI)
    assert openai.status == gemini.status == status
    assert _payload(openai)["error"] == {
        "message": error.message,
        "type": openai_type,
        "param": None,
        "code": openai_code,
    }
    assert _payload(gemini)["error"] == {"code": status, "message": error.message, "status": google_status}
    assert openai.headers.get("Retry-After") == gemini.headers.get("Retry-After") == retry_after


def test_missing_token_says_where_each_dialect_takes_it() -> None:
    assert "Authorization: Bearer" in missing_token(OPENAI).message
    assert "x-goog-api-key" in missing_token(GEMINI).message


def test_keyring_unavailable_tells_the_client_nothing_internal() -> None:
    error = KeyringUnavailable("keyring replica 10.0.0.7:50051 did not answer in time")
    assert error.message == KEYRING_UNAVAILABLE and "10.0.0.7" not in error.message
    assert error.detail.startswith("keyring replica") and error.reason == "UNAVAILABLE"


@pytest.mark.parametrize(
    ("exc", "status", "message", "allow"),
    [
        (web.HTTPNotFound(), 404, "no such route", None),
        (web.HTTPMethodNotAllowed("PUT", ["POST"]), 405, "method not allowed on this path (allowed: POST)", "POST"),
        (web.HTTPRequestEntityTooLarge(max_size=10, actual_size=20), 413, "the request body is too large", None),
    ],
)
def test_aiohttp_refusals_in_our_shape(exc: web.HTTPException, status: int, message: str, allow: str | None) -> None:
    error = from_http_exception(exc)
    assert (error.http_status, error.message) == (status, message)
    response = render(error, OPENAI)
    assert response.headers.get("Allow") == allow
    assert _payload(response)["error"]["code"] == exc.reason.lower().replace(" ", "_")


RATE_LIMIT = {
    "error": {
        "code": 429,
        "message": "You exceeded your current quota.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"model": "gemini-3.5-flash", "location": "global"},
                        "quotaValue": "10",
                    },
                    {"quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier"},
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.4s"},
        ],
    }
}


def test_an_upstream_error_is_reshaped_for_openai_and_passed_on_as_received_for_google() -> None:
    error = parse_error(429, orjson.dumps(RATE_LIMIT))
    openai = render_upstream(error, OPENAI)
    assert openai.status == 429 and openai.headers["Retry-After"] == "37"  # RetryInfo, rounded up
    assert _payload(openai) == {
        "error": {
            "message": "You exceeded your current quota.",
            "type": "rate_limit_error",
            "param": None,
            "code": "RESOURCE_EXHAUSTED",
        }
    }
    gemini = render_upstream(error, GEMINI)
    assert gemini.status == 429 and gemini.headers["Retry-After"] == "37"
    assert _payload(gemini) == RATE_LIMIT  # Google's own error object, details included
    # Keyring's retry time (keys ran out mid-failover) wins over the upstream's.
    assert render_upstream(error, GEMINI, retry_after_s=90).headers["Retry-After"] == "90"


def test_an_upstream_error_without_a_body() -> None:
    error = parse_error(500, b"")
    assert _payload(render_upstream(error, GEMINI)) == {"error": {"code": 500, "message": "", "status": "INTERNAL"}}
    openai = _payload(render_upstream(error, OPENAI))["error"]
    assert openai == {"message": "upstream error 500", "type": "server_error", "param": None, "code": "INTERNAL"}


def test_retry_after_only_for_429_and_503() -> None:
    body = orjson.dumps(
        {
            "error": {
                "code": 400,
                "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "5s"}],
            }
        }
    )
    assert "Retry-After" not in render_upstream(parse_error(400, body), GEMINI).headers
    assert render_upstream(parse_error(503, body), OPENAI).headers["Retry-After"] == "5"


@pytest.mark.parametrize(
    ("error", "status", "google_status", "transport"),
    [
        (TimeoutError(), 504, "DEADLINE_EXCEEDED", Transport.TIMEOUT),
        (aiohttp.ServerTimeoutError("read"), 504, "DEADLINE_EXCEEDED", Transport.TIMEOUT),
        (aiohttp.ClientConnectionError("refused"), 502, "UNAVAILABLE", Transport.CONNECTION),
        (aiohttp.ServerDisconnectedError(), 502, "UNAVAILABLE", Transport.CONNECTION),
        (aiohttp.ClientPayloadError("cut"), 502, "UNAVAILABLE", Transport.CONNECTION),
    ],
)
def test_transport_failures_become_upstream_errors(
    error: BaseException, status: int, google_status: str, transport: Transport
) -> None:
    failure = transport_failure(error)
    assert (failure.http_status, failure.status, failure.transport) == (status, google_status, transport)
    assert type(error).__name__ in failure.message
    assert failure.kind is AnswerKind.TRANSPORT_FAILURE and failure.kind.tries_another_key
    assert _payload(render_upstream(failure, GEMINI))["error"]["status"] == google_status


# -- keyring's refusals --------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "status"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, TokenRejected, 401),
        (grpc.StatusCode.PERMISSION_DENIED, ModelNotAllowed, 403),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, NoKeyFree, 429),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidLeaseRequest, 400),
        (grpc.StatusCode.UNAVAILABLE, KeyringUnavailable, 503),
        (grpc.StatusCode.NOT_FOUND, UnknownResource, 404),
        (grpc.StatusCode.INTERNAL, KeyringUnavailable, 503),
        (grpc.StatusCode.UNKNOWN, KeyringUnavailable, 503),
    ],
)
def test_keyring_refusals_become_edge_exceptions(code: grpc.StatusCode, kind: type[LeaseRefused], status: int) -> None:
    refused = refusal(code, "keyring's message", retry_after_s=12.5)
    assert type(refused) is kind and refused.http_status == status
    assert refused.reason == code.name  # the edge_leases_denied_total label
    if kind is NoKeyFree:
        assert refused.retry_after_s == 12.5 and refused.message == "keyring's message"
    if kind is TokenRejected:
        assert refused.message == "invalid, expired or revoked API token"


# -- failover ----------------------------------------------------------------------


def _quota(quota_id: str, value: str = "") -> bytes:
    violation = {"quotaId": quota_id, "quotaValue": value} if value else {"quotaId": quota_id}
    return orjson.dumps(
        {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}],
            }
        }
    )


def _reason(status: int, reason: str) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "code": status,
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}],
            }
        }
    )


@pytest.mark.parametrize(
    ("status", "body", "cause", "fails_over"),
    [
        (429, orjson.dumps(RATE_LIMIT), "rate_limited", True),
        (429, b"", "rate_limited", True),
        (429, _quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), "daily_quota", True),
        (429, _quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "0"), "model_not_on_tier", True),
        (400, _reason(400, "API_KEY_INVALID"), "key_invalid", True),
        (401, _reason(401, "ACCESS_TOKEN_TYPE_UNSUPPORTED"), "key_invalid", True),
        (401, b"", "request_at_fault", False),  # issue 11: no reason blames the key, no failover
        (403, b'{"error": {"code": 403, "status": "PERMISSION_DENIED"}}', "request_at_fault", False),
        (403, _reason(403, "CONSUMER_SUSPENDED"), "key_forbidden", True),
        (500, b"", "upstream_trouble", True),
        (502, b"", "upstream_trouble", True),
        (504, b"", "upstream_trouble", True),
        (408, b"", "upstream_trouble", True),
        (503, b"", "model_overloaded", True),
        (400, b'{"error": {"code": 400, "message": "bad contents"}}', "request_at_fault", False),
        (404, b"", "request_at_fault", False),
        (413, b"", "request_at_fault", False),
    ],
)
def test_failover_decision_and_cause_label_per_answer_kind(
    status: int, body: bytes, cause: str, fails_over: bool
) -> None:
    error = parse_error(status, body)
    assert error.kind.value == cause  # the edge_failovers_total{cause} label
    assert error.kind.tries_another_key is fails_over


# -- what keyring is told ------------------------------------------------------------


def test_the_outcome_carries_every_quota_violation() -> None:
    outcome = error_outcome(parse_error(429, orjson.dumps(RATE_LIMIT)), latency_ms=120)
    assert outcome.transport == pb.Outcome.TRANSPORT_OK
    assert (outcome.http_status, outcome.error_status, outcome.latency_ms) == (429, "RESOURCE_EXHAUSTED", 120)
    assert outcome.retry_delay_ms == 36_400
    assert outcome.error_message == "You exceeded your current quota."
    first, second = outcome.quota_violations
    assert first.quota_id == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert first.quota_metric == "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    assert dict(first.dimensions) == {"model": "gemini-3.5-flash", "location": "global"}
    assert first.quota_value == "10"
    assert second.quota_id == "GenerateContentInputTokensPerModelPerMinute-FreeTier" and second.quota_value == ""


def test_the_outcome_names_the_first_reason_and_cuts_long_messages() -> None:
    body = orjson.dumps(
        {
            "error": {
                "code": 400,
                "message": "x" * 900,
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"},
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SECOND"},
                ],
            }
        }
    )
    outcome = error_outcome(parse_error(400, body), latency_ms=5)
    assert outcome.error_reason == "API_KEY_INVALID"
    assert len(outcome.error_message) == 500 and outcome.retry_delay_ms == 0 and not outcome.quota_violations


def test_upstream_error_is_the_shared_one() -> None:
    assert isinstance(transport_failure(TimeoutError()), UpstreamError)


def test_a_429_carries_the_estimate_that_blames_an_oversized_request() -> None:
    """The estimate itself: tests/unit/test_input_estimate.py."""
    tpm = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
        {"quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier", "quotaValue": "250"}]}  # fmt: skip
    error = parse_error(429, orjson.dumps({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [tpm]}}))
    import dataclasses

    oversized = dataclasses.replace(error, estimated_input_tokens=1000)
    assert error_outcome(oversized, latency_ms=3).estimated_input_tokens == 1000
    assert not oversized.kind.tries_another_key


def test_a_release_counted_but_not_durable_is_kept_then_owed_without_its_bindings() -> None:
    """Usage epochs (issue 13): kept until the replica says its epoch is written; re-sent, not re-bound, if not."""
    kept = KeptReleases("127.0.0.1:9")  # the bookkeeping alone
    bound = pb.LeaseCall(release=pb.ReleaseRequest(lease_id="a.1.1.1.x", bind=[pb.ResourceBinding(name="files/f")]))
    plain = pb.LeaseCall(release=pb.ReleaseRequest(lease_id="a.1.2.1.y"))
    kept.keep_counted(bound, pb.LeaseResult(release=pb.ReleaseResponse(counted_epoch=3)))
    kept.keep_counted(plain, pb.LeaseResult(release=pb.ReleaseResponse(counted_epoch=4)))
    kept.keep_counted(pb.LeaseCall(release=pb.ReleaseRequest(lease_id="b")), pb.LeaseResult())  # not counted
    kept.forget_durable(3)  # the first one's epoch is written: forgotten
    kept.broke()  # the stream broke before epoch 4 was: owed, with its epoch
    assert kept.owed == 1
    [owed] = kept.take_owed()
    assert (owed.release.lease_id, owed.release.counted_epoch) == ("a.1.2.1.y", 4)
    kept.keep_counted(bound, pb.LeaseResult(release=pb.ReleaseResponse(counted_epoch=5)))
    kept.broke()
    [again] = kept.take_owed()
    assert again.release.counted_epoch == 5 and not again.release.bind  # committed once: never bound again


def test_only_the_keyring_package_imports_grpc_on_the_edge() -> None:
    """Keyring's gRPC stays in ``services/edge/keyring/`` (its refusals translated there, once): issue 19."""
    import ast
    from pathlib import Path

    edge = Path(__file__).resolve().parents[2] / "services" / "edge"
    importers = set()
    for path in edge.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(name == "grpc" or name.startswith("grpc.") for name in names):
                importers.add(path.relative_to(edge).parts[0])
    assert importers == {"keyring"}
