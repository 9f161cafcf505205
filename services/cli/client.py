"""The admin REST API over urllib: one request, its JSON answer, every failure mapped here once.

Admin answers errors as ``{"error": {"code", "status", "message"}}``
(``services/admin/errors.py``); the message is admin's own, safe to show,
and is passed through ``redact`` anyway. Transport failures (refused,
timeout, TLS) are ``UNAVAILABLE``, except a certificate admin's CA does not
sign, which is a setup mistake (``USAGE``).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, urlencode

from services.common.masking import redact

from .errors import UNAVAILABLE, USAGE, CliError, exit_code_for
from .settings import Settings

USER_AGENT: Final = "keyringctl/1"


class AdminClient:
    """Calls under ``{url}/api``, the admin token in an ``Authorization: Bearer`` header."""

    def __init__(self, settings: Settings, timeout_s: float = 60.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        context = ssl.create_default_context(cafile=settings.ca_file or None)
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    def get(self, path: str, query: Mapping[str, object] | None = None) -> Any:
        return self.call("GET", path, query=query)

    def post(self, path: str, body: object = None, query: Mapping[str, object] | None = None) -> Any:
        return self.call("POST", path, body, query)

    def patch(self, path: str, body: object) -> Any:
        return self.call("PATCH", path, body)

    def call(self, method: str, path: str, body: object = None, query: Mapping[str, object] | None = None) -> Any:
        """The JSON answer (or raw bytes for a non-JSON one); an error answer is a ``CliError``."""
        raw = self._send(method, path, None if body is None else json.dumps(body).encode(), query)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise CliError(UNAVAILABLE, f"admin answered {method} {path} with something that is not JSON") from None

    def call_raw(self, method: str, path: str, body: bytes | None = None,
                 query: Mapping[str, object] | None = None) -> bytes:
        return self._send(method, path, body, query)

    def _send(self, method: str, path: str, body: bytes | None, query: Mapping[str, object] | None) -> bytes:
        url = self._settings.url + "/api" + path
        shown = {name: value for name, value in (query or {}).items() if value not in (None, "", False)}
        if shown:
            url += "?" + urlencode({name: _query_text(value) for name, value in shown.items()})
        headers = {"Authorization": f"Bearer {self._settings.token}", "Accept": "application/json",
                   "User-Agent": USER_AGENT}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self._timeout_s) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as error:
            raise _answer_error(error) from None
        except urllib.error.URLError as error:
            raise _transport_error(self._settings.url, error.reason) from None
        except (TimeoutError, ConnectionError, ssl.SSLError) as error:
            raise _transport_error(self._settings.url, error) from None


def segment(value: str) -> str:
    """A path segment (a pool name, a key or token id) quoted, so that it stays one segment."""
    return quote(value, safe="")


def _query_text(value: object) -> str:
    return "true" if value is True else str(value)


def _answer_error(error: urllib.error.HTTPError) -> CliError:
    try:
        detail = json.loads(error.read() or b"{}").get("error") or {}
        message = str(detail.get("message") or "") if isinstance(detail, dict) else ""
    except (ValueError, AttributeError, OSError):
        message = ""
    message = " ".join(redact(message or error.reason or "").split())
    return CliError(exit_code_for(error.code), f"admin answered {error.code}: {message or 'no detail'}")


def _transport_error(url: str, reason: object) -> CliError:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return CliError(USAGE, f"cannot trust admin's certificate at {url} ({reason.verify_message}): "
                               "give its CA with --ca-file or KEYRINGCTL_CA_FILE")
    if isinstance(reason, TimeoutError):
        return CliError(UNAVAILABLE, f"admin at {url} did not answer in time")
    text = getattr(reason, "strerror", None) or str(reason)
    return CliError(UNAVAILABLE, f"cannot reach admin at {url}: {text}")
