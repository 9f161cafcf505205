"""Issue 11: the key checker never follows a redirect (it would carry the key to whatever host it names)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from services.common.answers import AnswerKind
from services.common.serving import start_app
from services.keyring.checker import UpstreamChecker

SECRET = "AIzaSyThisIsNotARealKeyButLooksLikeOne00"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A 'relay' that redirects every request to a second server, which records what reaches it."""
    reached: list[web.Request] = []

    async def elsewhere(request: web.Request) -> web.Response:
        reached.append(request)
        return web.json_response({"models": []})

    other = web.Application()
    other.router.add_get("/{tail:.*}", elsewhere)
    other_runner, other_url = await start_app(other, "127.0.0.1", 0, shutdown_timeout_s=1)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(other_url + "/steal")

    relay = web.Application()
    relay.router.add_get("/{tail:.*}", redirect)
    relay_runner, relay_url = await start_app(relay, "127.0.0.1", 0, shutdown_timeout_s=1)
    try:
        yield relay_url, reached
    finally:
        await relay_runner.cleanup()
        await other_runner.cleanup()


async def test_the_checker_does_not_follow_redirects(servers: tuple[str, list[web.Request]]) -> None:
    relay_url, reached = servers
    checker = UpstreamChecker(relay_url, timeout_s=5)
    try:
        outcome = await checker.check(SECRET)
    finally:
        await checker.close()
    assert reached == []  # the key never left for the host the redirect named
    assert outcome.http_status == 302
    assert outcome.kind is AnswerKind.REQUEST_AT_FAULT  # a redirect blames no key
