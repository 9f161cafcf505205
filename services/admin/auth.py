"""Who is calling: admin bearer tokens, console sessions in signed cookies, CSRF.

Two ways in, both ending in an ``Identity`` (the admin token's name, its
role and whether it may export secrets in clear; ``config.AdminAccount``):

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

  ``POST /api/logout`` clears both cookies and records the ended session in
  keyring (``RevokeSession``, by the SHA-256 of its id, until it expires);
  every admin replica asks keyring (``CheckSession``) before it accepts a
  session cookie, so a logout on one replica holds on all of them.

Roles: a ``viewer`` may only read (any other method: 403); an ``operator``
may change; exporting (``GET /api/export``) needs an operator, and secrets
in clear need the ``+export`` permission on top (off by default; on a
viewer it grants nothing: ``Identity.can_export``).

Failed logins (a wrong token at ``/api/login`` or in a bearer header, and a
login body that is malformed, too large or too slow) are counted per client
address and per admin name (when the login names one): ``LoginThrottle``, a
bounded in-memory table per replica. After ``login_max_failures`` within
``login_window_s`` every further failure from that address (or for that
name) gets 429 with Retry-After until the window ends. The right token is
checked first (in constant time) and is never throttled: anyone could
otherwise lock every operator out by failing ten times from the operators'
address (behind an ingress, everyone's). So the throttle does not slow
guessing (a guess is told right or wrong either way); admin tokens of 16+
random characters do that, and the throttle keeps failures cheap and
visible. Kept in memory on purpose: a shared counter would turn every
failure into a store write. Behind a reverse proxy the client address comes
from X-Forwarded-For, trusted only from ``trusted_proxies``.

Failures say only "authentication required" (401): which part was wrong is
not told.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from aiohttp import web

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .config import AdminAccount, Role
from .errors import ApiError, json_response
from .keyring_client import KeyringAdmin

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SESSION_COOKIE: Final = "keyring_session"
CSRF_COOKIE: Final = "keyring_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
_UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Routes reachable without credentials (exact paths) and path prefixes that are public.
PUBLIC_PATHS: Final = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/api/login"})
PUBLIC_PREFIXES: Final = ("/static/",)
# Writes a viewer may still make: ending its own session.
_VIEWER_WRITES: Final = frozenset({"/api/logout"})
KEYRING: Final = web.AppKey("keyring", KeyringAdmin)


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    via: Literal["bearer", "cookie"]
    session_id: str = ""
    expires_at: float = 0.0
    role: Role = "operator"
    export: bool = False

    @property
    def can_change(self) -> bool:
        return self.role == "operator"

    @property
    def can_export(self) -> bool:
        """Export in clear: an operator with the export permission (``viewer+export`` may not)."""
        return self.export and self.can_change

    @property
    def actor(self) -> str:
        """The audit actor keyring records for this caller."""
        return f"admin:{self.name}"


# aiohttp >= 3.13 wants typed request keys (and warns on plain strings); older ones have none.
_IDENTITY: Final[Any] = web.RequestKey("admin_identity", Identity) if hasattr(web, "RequestKey") else "admin_identity"


def unauthenticated() -> ApiError:
    """Which part was wrong is not told."""
    return ApiError(401, "authentication required")


def identity_of(request: web.Request) -> Identity:
    identity = request.get(_IDENTITY)
    if not isinstance(identity, Identity):
        raise unauthenticated()
    return identity


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_hash(session_id: str) -> str:
    """What keyring knows an ended session by: never the id itself."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class LoginThrottle:
    """Failed attempts per subject (``addr:<ip>``, ``name:<name>``) in fixed windows; bounded in size."""

    def __init__(
        self, max_failures: int, window_s: float, max_subjects: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_subjects = max_subjects
        self._clock = clock
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()  # subject -> (window start, count)

    def retry_after(self, subjects: Sequence[str]) -> float:
        """Seconds until every subject may try again; 0 when none is locked."""
        now = self._clock()
        waits = [0.0]
        for subject in subjects:
            start, count = self._failures.get(subject, (0.0, 0))
            if count >= self.max_failures and now < start + self.window_s:
                waits.append(start + self.window_s - now)
        return max(waits)

    def failed(self, subjects: Sequence[str]) -> None:
        now = self._clock()
        for subject in subjects:
            start, count = self._failures.pop(subject, (now, 0))
            if now >= start + self.window_s:
                start, count = now, 0
            self._failures[subject] = (start, count + 1)
            while len(self._failures) > self._max_subjects:
                self._failures.popitem(last=False)  # the least recently failed subject


class Authenticator:
    """Checks bearer tokens and session cookies against the configured admin accounts."""

    def __init__(
        self,
        accounts: dict[str, AdminAccount] | dict[str, str],
        session_ttl_s: float,
        cookie_secure: bool,
        throttle: LoginThrottle | None = None,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        if not accounts:
            raise ValueError("at least one admin token is needed")
        self._accounts = {
            name: account if isinstance(account, AdminAccount) else AdminAccount(account)
            for name, account in accounts.items()
        }
        self._tokens = {name: account.token.encode() for name, account in self._accounts.items()}
        self._keys = {
            name: hmac.new(token, b"keyring-admin/session/v1|" + name.encode(), hashlib.sha256).digest()
            for name, token in self._tokens.items()
        }
        self.session_ttl_s = session_ttl_s
        self.cookie_secure = cookie_secure
        self.throttle = throttle or LoginThrottle(10, 300.0)
        self._trusted_proxies = tuple(trusted_proxies)
        self._revoked: dict[str, float] = {}  # session id -> its expiry (this replica's own logouts)

    def name_for_token(self, presented: str) -> str | None:
        """The admin token's name, comparing against every token in constant time each."""
        candidate = presented.encode()
        found = None
        for name, token in self._tokens.items():
            if hmac.compare_digest(candidate, token):
                found = name
        return found

    def _identity(self, name: str, via: Literal["bearer", "cookie"], session_id: str = "",
                  expires_at: float = 0.0) -> Identity:
        account = self._accounts[name]
        return Identity(name, via, session_id, expires_at, account.role, account.export)

    # -- throttling -----------------------------------------------------

    def client_address(self, request: web.Request) -> str:
        """The peer, or behind a trusted proxy the last X-Forwarded-For hop that is not a trusted proxy.

        When every hop is in a trusted range (a client on the ingress's own private network), the first hop.
        """
        peer = request.remote or ""
        if not self._trusted(peer):
            return peer
        hops = [hop.strip() for value in request.headers.getall("X-Forwarded-For", []) for hop in value.split(",")]
        hops = [hop for hop in hops if hop]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted_proxies)

    def refuse(self, subjects: Sequence[str], error: ApiError) -> ApiError:
        """Count a failure against ``subjects``: the answer is ``error``, or 429 once they failed too often."""
        wait = self.throttle.retry_after(subjects)
        self.throttle.failed(subjects)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return ApiError(429, f"too many failed logins; try again in {seconds} s",
                            headers={"Retry-After": str(seconds)})
        return error

    # -- sessions -------------------------------------------------------

    def _mac(self, name: str, purpose: bytes, payload: bytes) -> bytes:
        return hmac.new(self._keys[name], purpose + b"|" + payload, hashlib.sha256).digest()

    def csrf_token(self, name: str, session_id: str) -> str:
        return _b64(self._mac(name, b"csrf", session_id.encode()))

    def open_session(self, name: str) -> tuple[str, Identity]:
        """A new signed session cookie value for ``name`` and its identity."""
        expires_at = time.time() + self.session_ttl_s
        identity = self._identity(name, "cookie", secrets.token_urlsafe(18), expires_at)
        payload = orjson.dumps({"n": name, "s": identity.session_id, "e": int(expires_at)})
        return f"{_b64(payload)}.{_b64(self._mac(name, b'session', payload))}", identity

    def check_session(self, cookie: str) -> Identity | None:
        """The cookie's identity if it is signed, unexpired and not ended on this replica (keyring is asked later)."""
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
        return self._identity(name, "cookie", session_id, expires_at)

    def forget_locally(self, identity: Identity) -> None:
        now = time.time()
        self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
        if identity.session_id:
            self._revoked[identity.session_id] = identity.expires_at

    async def revoke(self, identity: Identity, keyring: KeyringAdmin) -> None:
        """End a console session on every admin replica (recorded in keyring until it expires)."""
        if not identity.session_id:
            return
        self.forget_locally(identity)
        message = pb.RevokeSessionRequest(
            session_hash=session_hash(identity.session_id), expires_at_ms=math.ceil(identity.expires_at * 1000)
        )
        await keyring.call("RevokeSession", message, identity.actor)

    # -- requests -------------------------------------------------------

    async def identify(self, request: web.Request) -> Identity | None:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, presented = header.partition(" ")
            name = self.name_for_token(presented.strip()) if scheme.lower() == "bearer" and presented.strip() else None
            if name is None:  # the right token is never throttled: only failures are
                raise self.refuse(["addr:" + self.client_address(request)], unauthenticated())
            return self._identity(name, "bearer")
        cookie = request.cookies.get(SESSION_COOKIE)
        identity = self.check_session(cookie) if cookie else None
        if identity is None:
            return None
        check = pb.CheckSessionRequest(session_hash=session_hash(identity.session_id))
        reply = await request.app[KEYRING].call("CheckSession", check, identity.actor)
        return None if reply.revoked else identity

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
    """Every non-public route needs an identity; cookie callers also need CSRF on writes; viewers only read."""
    if _is_public(request.path):
        return await handler(request)
    auth = request.app[AUTHENTICATOR]
    identity = await auth.identify(request)
    if identity is None:
        raise unauthenticated()
    if identity.via == "cookie" and request.method in _UNSAFE_METHODS and not auth.csrf_ok(request, identity):
        raise ApiError(403, f"missing or wrong {CSRF_HEADER} header")
    if request.method in _UNSAFE_METHODS and not identity.can_change and request.path not in _VIEWER_WRITES:
        raise ApiError(403, f"the {identity.role} role may only read; changes need an operator token")
    request[_IDENTITY] = identity
    return await handler(request)


# -- routes -------------------------------------------------------------


def _set_cookies(response: web.Response, auth: Authenticator, cookie: str, csrf: str) -> None:
    common = {"path": "/", "samesite": "Strict", "secure": auth.cookie_secure, "max_age": int(auth.session_ttl_s)}
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, **common)  # type: ignore[arg-type]
    response.set_cookie(CSRF_COOKIE, csrf, httponly=False, **common)  # type: ignore[arg-type]


async def login(request: web.Request) -> web.Response:
    from .schemas import LoginRequest, parse_body  # schemas imports nothing from here

    auth = request.app[AUTHENTICATOR]
    subjects = ["addr:" + auth.client_address(request)]
    try:  # within bodies.LOGIN: a few KiB, read within the body timeout
        body = await parse_body(request, LoginRequest)
    except ApiError as error:  # malformed, too large or too slow: a failure like a wrong token
        raise auth.refuse(subjects, error) from None
    if body.name is not None:
        subjects.append("name:" + body.name)
    name = auth.name_for_token(body.token)
    if name is None or (body.name is not None and name != body.name):
        raise auth.refuse(subjects, unauthenticated())
    cookie, identity = auth.open_session(name)
    csrf = auth.csrf_token(name, identity.session_id)
    response = json_response({"name": name, "csrf_token": csrf, "expires_at": _iso(identity.expires_at),
                              "role": identity.role, "can_export": identity.can_export})
    _set_cookies(response, auth, cookie, csrf)
    return response


async def logout(request: web.Request) -> web.Response:
    identity = identity_of(request)
    auth = request.app[AUTHENTICATOR]
    await auth.revoke(identity, request.app[KEYRING])
    response = json_response({"logged_out": True})
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.del_cookie(name, path="/", samesite="Strict", secure=auth.cookie_secure)
    return response


async def session(request: web.Request) -> web.Response:
    identity = identity_of(request)
    auth = request.app[AUTHENTICATOR]
    body: dict[str, object] = {"name": identity.name, "via": identity.via, "expires_at": None, "csrf_token": None,
                               "role": identity.role, "can_export": identity.can_export}
    if identity.via == "cookie":
        body["expires_at"] = _iso(identity.expires_at)
        body["csrf_token"] = auth.csrf_token(identity.name, identity.session_id)
    return json_response(body)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
