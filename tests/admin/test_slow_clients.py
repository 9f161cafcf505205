"""Slow clients: a client trickling its request head no longer holds an admin connection (issue 11; the edge's
twin is in tests/e2e/test_trust_boundary.py); a body has its own timeout, not the head's (issue 18)."""

from __future__ import annotations

import asyncio
import time

from yarl import URL

from services.admin.app import start_admin
from tests.e2e.test_trust_boundary import trickled_head_lasts

from .conftest import ADMIN_TOKEN, AdminStack


async def test_a_slow_request_head_is_cut_after_the_head_timeout(admin: AdminStack) -> None:
    settings = admin.settings.model_copy(update={"head_timeout_s": 1.0})
    runner, base_url = await start_admin(settings, host="127.0.0.1", port=0)
    try:
        lasted = await trickled_head_lasts(base_url, limit_s=5.0)
    finally:
        await runner.cleanup()
    assert 0.9 <= lasted < 2.5, f"the connection lasted {lasted:.1f} s"


def _login_head(base_url: str, length: int) -> bytes:
    url = URL(base_url)
    return (
        f"POST /api/login HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_a_login_whose_body_never_comes_gets_408_and_is_closed_after_the_body_timeout(
    admin: AdminStack,
) -> None:
    settings = admin.settings.model_copy(update={"head_timeout_s": 5.0, "body_timeout_s": 1.0})
    runner, base_url = await start_admin(settings, host="127.0.0.1", port=0)
    url = URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        started = time.monotonic()
        writer.write(_login_head(base_url, 100) + b'{"tok')  # the head promises 100 bytes; 5 ever come
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 4.0)  # everything until the server closes
        lasted = time.monotonic() - started
    finally:
        writer.close()
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"REQUEST_TIMEOUT"' in answer
    assert 0.9 <= lasted < 2.5, f"the connection lasted {lasted:.1f} s"


async def test_a_body_slower_than_the_head_timeout_is_served_within_the_body_timeout(admin: AdminStack) -> None:
    settings = admin.settings.model_copy(update={"head_timeout_s": 0.5, "body_timeout_s": 5.0})
    runner, base_url = await start_admin(settings, host="127.0.0.1", port=0)
    url = URL(base_url)
    body = b'{"token": "' + ADMIN_TOKEN.encode() + b'"}'
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(_login_head(base_url, len(body)))
        for part in (body[:10], body[10:20], body[20:]):  # the client's pace is the scenario: 0.4 s apart
            await asyncio.sleep(0.4)
            writer.write(part)
            await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 4.0)
    finally:
        writer.close()
        await runner.cleanup()
    assert status.startswith(b"HTTP/1.1 200"), status
