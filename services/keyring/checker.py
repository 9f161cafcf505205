"""The check path: one cheap real upstream call that tells whether a key works.

Listing one model costs no quota worth mentioning and answers exactly like a
generation would for a bad, revoked or suspended key. Redirects are never
followed: the key travels in a header that a redirect would carry to
whatever host the answer names; a 3xx is reported as it came (it blames no
key).
"""

from __future__ import annotations

import time

import aiohttp

from services.common.answers import parse_error
from services.common.masking import scrub

from .domain.models import Outcome, Transport

GOOGLE_API = "https://generativelanguage.googleapis.com"


class UpstreamChecker:
    def __init__(self, base_url: str = GOOGLE_API, proxy: str = "", timeout_s: float = 10.0) -> None:
        self._url = base_url.rstrip("/") + "/v1beta/models"
        self._proxy = proxy or None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def check(self, secret: str) -> Outcome:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        started = time.monotonic()
        try:
            async with self._session.get(
                self._url,
                params={"pageSize": "1"},
                headers={"x-goog-api-key": secret},
                proxy=self._proxy,
                allow_redirects=False,
            ) as answer:
                body = await answer.read()
                status = answer.status
        except TimeoutError:
            return Outcome(0, Transport.TIMEOUT, latency_s=time.monotonic() - started)
        except aiohttp.ClientError:
            return Outcome(0, Transport.CONNECTION, latency_s=time.monotonic() - started)
        return _outcome(status, scrub(body, secret), time.monotonic() - started)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _outcome(status: int, body: bytes, latency_s: float) -> Outcome:
    """The check's answer in the shared classifier's terms (RetryInfo and QuotaFailure included)."""
    if 200 <= status < 300:
        return Outcome(status, latency_s=latency_s)
    error = parse_error(status, body)
    return Outcome(
        status,
        error_status=error.status,
        error_reason=error.reason,
        retry_delay_s=error.retry_delay_s,
        violations=error.violations,
        error_message=error.message[:300],
        latency_s=latency_s,
    )
