"""Who is calling: admin bearer tokens, console sessions in signed cookies, CSRF.

Two ways in, both ending in an ``Identity`` (the admin token's name):

- ``Authorization: Bearer <admin token>`` (scripts, CI): compared with
  ``hmac.compare_digest`` against every configured token. No CSRF check:
  a browser never adds that header by itself.
- The console: ``POST /api/login {"token"}`` sets two cookies:

  * ``keyring_session`` (HttpOnly, SameSite=Strict, Secure behind TLS): the
    token's name, a random session id and an expiry, signed with HMAC-SHA256
    under a key derived from that admin token. Any admin replica accepts it
    (no session table), and changing or removing the admin token ends every
    session it opened.
  * ``keyring_csrf`` (readable by the console's script): an HMAC of the
    session id. A cookie-authenticated request that changes state (POST,
    PUT, PATCH, DELETE) must repeat it in ``X-CSRF-Token``; the header must
    match both the cookie and the session (double submit bound to the
    session), otherwise 403.

  ``POST /api/logout`` clears both cookies and puts the session id on this
  replica's deny list until it expires.

Failures say only "authentication required" (401): which part was wrong is
not told.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from aiohttp import web

from .errors import ApiError, json_response

SESSION_COOKIE: Final = "keyring_session"
CSRF_COOKIE: Final = "keyring_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
_UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Routes reachable without credentials (exact paths) and path prefixes that are public.
PUBLIC_PATHS: Final = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/api/login"})
PUBLIC_PREFIXES: Final = ("/static/",)


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    via: Literal["bearer", "cookie"]
    session_id: str = ""
    expires_at: float = 0.0

    @property
    def actor(self) -> str:
        """The audit actor keyring records for this caller."""
        return f"admin:{self.name}"


# aiohttp >= 3.13 wants typed request keys (and warns on plain strings); older ones have none.
_IDENTITY: Final[Any] = web.RequestKey("admin_identity", Identity) if hasattr(web, "RequestKey") else "admin_identity"


def identity_of(request: web.Request) -> Identity:
    identity = request.get(_IDENTITY)
    if not isinstance(identity, Identity):
        raise ApiError(401, "authentication required")
    return identity


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    """Checks bearer tokens and session cookies against the configured admin tokens."""

    def __init__(self, tokens: dict[str, str], session_ttl_s: float, cookie_secure: bool) -> None:
        if not tokens:
            raise ValueError("at least one admin token is needed")
        self._tokens = {name: token.encode() for name, token in tokens.items()}
        self._keys = {
            name: hmac.new(token, b"keyring-admin/session/v1|" + name.encode(), hashlib.sha256).digest()
            for name, token in self._tokens.items()
        }
        self.session_ttl_s = session_ttl_s
        self.cookie_secure = cookie_secure
        self._revoked: dict[str, float] = {}  # session id -> its expiry

    def name_for_token(self, presented: str) -> str | None:
        """The admin token's name, comparing against every token in constant time each."""
        candidate = presented.encode()
        found = None
        for name, token in self._tokens.items():
            if hmac.compare_digest(candidate, token):
                found = name
        return found

    # -- sessions -------------------------------------------------------

    def _mac(self, name: str, purpose: bytes, payload: bytes) -> bytes:
        return hmac.new(self._keys[name], purpose + b"|" + payload, hashlib.sha256).digest()

    def csrf_token(self, name: str, session_id: str) -> str:
        return _b64(self._mac(name, b"csrf", session_id.encode()))

    def open_session(self, name: str) -> tuple[str, Identity]:
        """A new signed session cookie value for ``name`` and its identity."""
        expires_at = time.time() + self.session_ttl_s
        identity = Identity(name, "cookie", secrets.token_urlsafe(18), expires_at)
        payload = orjson.dumps({"n": name, "s": identity.session_id, "e": int(expires_at)})
        return f"{_b64(payload)}.{_b64(self._mac(name, b'session', payload))}", identity

    def check_session(self, cookie: str) -> Identity | None:
        try:
            encoded, _, signature = cookie.partition(".")
            payload = _unb64(encoded)
            fields = orjson.loads(payload)
            name, session_id, expires_at = str(fields["n"]), str(fields["s"]), float(fields["e"])
            presented = _unb64(signature)
        except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
            return None
        if name not in self._keys or not hmac.compare_digest(presented, self._mac(name, b"session", payload)):
            return None
        if expires_at <= time.time() or session_id in self._revoked:
            return None
        return Identity(name, "cookie", session_id, expires_at)

    def revoke(self, identity: Identity) -> None:
        now = time.time()
        self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
        if identity.session_id:
            self._revoked[identity.session_id] = identity.expires_at

    # -- requests -------------------------------------------------------

    def identify(self, request: web.Request) -> Identity | None:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not presented.strip():
                return None
            name = self.name_for_token(presented.strip())
            return Identity(name, "bearer") if name else None
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.check_session(cookie) if cookie else None

    def csrf_ok(self, request: web.Request, identity: Identity) -> bool:
        header = request.headers.get(CSRF_HEADER, "")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        expected = self.csrf_token(identity.name, identity.session_id)
        return bool(header) and hmac.compare_digest(header, cookie) and hmac.compare_digest(header, expected)


AUTHENTICATOR: Final = web.AppKey("authenticator", Authenticator)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


@web.middleware
async def authenticate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every non-public route needs an identity; cookie callers also need CSRF on writes."""
    if _is_public(request.path):
        return await handler(request)
    auth = request.app[AUTHENTICATOR]
    identity = auth.identify(request)
    if identity is None:
        raise ApiError(401, "authentication required")
    if identity.via == "cookie" and request.method in _UNSAFE_METHODS and not auth.csrf_ok(request, identity):
        raise ApiError(403, f"missing or wrong {CSRF_HEADER} header")
    request[_IDENTITY] = identity
    return await handler(request)


# -- routes -------------------------------------------------------------


def _set_cookies(response: web.Response, auth: Authenticator, cookie: str, csrf: str) -> None:
    common = {"path": "/", "samesite": "Strict", "secure": auth.cookie_secure, "max_age": int(auth.session_ttl_s)}
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, **common)  # type: ignore[arg-type]
    response.set_cookie(CSRF_COOKIE, csrf, httponly=False, **common)  # type: ignore[arg-type]


async def login(request: web.Request) -> web.Response:
    from .schemas import LoginRequest, parse_body  # schemas imports nothing from here

    body = await parse_body(request, LoginRequest)
    auth = request.app[AUTHENTICATOR]
    name = auth.name_for_token(body.token)
    if name is None:
        raise ApiError(401, "authentication required")
    cookie, identity = auth.open_session(name)
    csrf = auth.csrf_token(name, identity.session_id)
    response = json_response({"name": name, "csrf_token": csrf, "expires_at": _iso(identity.expires_at)})
    _set_cookies(response, auth, cookie, csrf)
    return response


async def logout(request: web.Request) -> web.Response:
    identity = identity_of(request)
    auth = request.app[AUTHENTICATOR]
    auth.revoke(identity)
    response = json_response({"logged_out": True})
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.del_cookie(name, path="/", samesite="Strict", secure=auth.cookie_secure)
    return response


async def session(request: web.Request) -> web.Response:
    identity = identity_of(request)
    auth = request.app[AUTHENTICATOR]
    body: dict[str, object] = {"name": identity.name, "via": identity.via, "expires_at": None, "csrf_token": None}
    if identity.via == "cookie":
        body["expires_at"] = _iso(identity.expires_at)
        body["csrf_token"] = auth.csrf_token(identity.name, identity.session_id)
    return json_response(body)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
