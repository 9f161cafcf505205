"""Admin authentication: bearer tokens, signed session cookies, CSRF, logout, settings validation."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import ValidationError

from services.admin.config import AdminSettings
from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .conftest import ADMIN_TOKEN, OTHER_TOKEN, AdminStack, Api

pytestmark = pytest.mark.etcd


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {ADMIN_TOKEN}"},
     {"Authorization": "Bearer "}, {"Authorization": ADMIN_TOKEN}],
)
async def test_missing_or_wrong_bearer_is_401_without_detail(api: Api, headers: dict[str, str]) -> None:
    api.headers = headers
    for method, path in (("GET", "/api/pools"), ("POST", "/api/pools"), ("GET", "/api/keys"), ("GET", "/api/export")):
        answer = await api.call(method, path, json={"name": "x"} if method == "POST" else None)
        assert answer.status == 401
        assert answer.body == {
            "error": {"code": 401, "status": "UNAUTHENTICATED", "message": "authentication required"}
        }
    api.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await api.get("/api/pools")).body["pools"] == []


async def test_each_admin_token_is_its_own_audit_actor(api: Api, admin: AdminStack) -> None:
    api.headers = {"Authorization": f"Bearer {OTHER_TOKEN}"}
    assert (await api.post("/api/pools", {"name": "by-ci"})).status == 201
    session = (await api.get("/api/session")).body
    assert session == {"name": "ci", "via": "bearer", "expires_at": None, "csrf_token": None,
                       "role": "operator", "can_export": False}
    entries = (await admin.replica.admin.ListAudit(pb.ListAuditRequest(limit=5))).entries
    assert any(entry.actor == "admin:ci" and entry.target == "by-ci" for entry in entries)


async def _login(session: aiohttp.ClientSession, base_url: str, token: str = ADMIN_TOKEN) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with session.post(base_url + "/api/login", json={"token": token}) as response:
        return response.status, await response.json()


async def test_cookie_login_csrf_and_logout(admin: AdminStack) -> None:
    base = admin.base_url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        status, body = await _login(session, base, "not-the-token")
        assert status == 401 and body["error"]["message"] == "authentication required"
        status, body = await _login(session, base)
        assert status == 200 and body["name"] == "ops"
        cookies = {cookie.key: cookie for cookie in session.cookie_jar}
        session_cookie, csrf_cookie = cookies["keyring_session"], cookies["keyring_csrf"]
        assert session_cookie["httponly"] and session_cookie["samesite"] == "Strict" and session_cookie["path"] == "/"
        assert not csrf_cookie["httponly"] and csrf_cookie.value == body["csrf_token"]
        assert ADMIN_TOKEN not in session_cookie.value

        async with session.get(base + "/api/pools") as response:  # reads need no CSRF header
            assert response.status == 200
        async with session.get(base + "/api/session") as response:
            assert (await response.json())["via"] == "cookie"
        async with session.post(base + "/api/pools", json={"name": "p1"}) as response:
            assert response.status == 403
            assert (await response.json())["error"]["status"] == "PERMISSION_DENIED"
        forged = {"X-CSRF-Token": "forged"}
        async with session.post(base + "/api/pools", json={"name": "p1"}, headers=forged) as response:
            assert response.status == 403
        async with session.get(base + "/api/pools") as response:
            assert (await response.json())["pools"] == []  # nothing was created
        csrf = {"X-CSRF-Token": body["csrf_token"]}
        async with session.post(base + "/api/pools", json={"name": "p1"}, headers=csrf) as response:
            assert response.status == 201
        async with session.delete(base + "/api/pools/p1", headers=csrf) as response:
            assert response.status == 200

        stolen = session_cookie.value
        async with session.post(base + "/api/logout") as response:
            assert response.status == 403  # logout is a write too
        async with session.post(base + "/api/logout", headers=csrf) as response:
            assert response.status == 200
        async with session.get(base + "/api/pools") as response:
            assert response.status == 401
    # A copy of the old cookie no longer works either.
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other,
        other.get(base + "/api/pools", cookies={"keyring_session": stolen}) as response,
    ):
        assert response.status == 401


async def test_tampered_or_foreign_session_cookies_are_refused(admin: AdminStack) -> None:
    base = admin.base_url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        await _login(session, base)
        value = next(cookie.value for cookie in session.cookie_jar if cookie.key == "keyring_session")
    payload, signature = value.split(".")
    import base64

    import orjson

    fields = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(orjson.dumps({**fields, "n": "ci"})).rstrip(b"=").decode()
    for cookie in (f"{forged}.{signature}", value[:-2] + "AA", "garbage", f"{payload}."):
        async with (
            aiohttp.ClientSession() as other,
            other.get(base + "/api/pools", headers={"Cookie": f"keyring_session={cookie}"}) as response,
        ):
            assert response.status == 401


async def test_bearer_calls_need_no_csrf(api: Api) -> None:
    assert (await api.post("/api/pools", {"name": "p"})).status == 201


def test_settings_need_an_admin_token(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("ADMIN_ADMIN_TOKENS", raising=False)
    with pytest.raises(ValidationError, match="ADMIN_ADMIN_TOKENS"):
        AdminSettings()
    with pytest.raises(ValidationError, match="shorter"):
        AdminSettings(admin_tokens="ops:short")
    with pytest.raises(ValidationError, match="twice"):
        AdminSettings(admin_tokens="ops:aaaaaaaaaaaaaaaaaaaa,ops:bbbbbbbbbbbbbbbbbbbb")
    tokens = tmp_path / "tokens"
    tokens.write_text("# operators\nops:aaaaaaaaaaaaaaaaaaaa\n\nci:bbbbbbbbbbbbbbbbbbbb\n")
    monkeypatch.setenv("ADMIN_ADMIN_TOKENS_FILE", str(tokens))
    monkeypatch.setenv("ADMIN_KEYRING_ADDRESSES", "a:1, b:2")
    settings = AdminSettings()
    assert settings.admin_token_map == {"ops": "a" * 20, "ci": "b" * 20}
    assert settings.keyring_address_list == ("a:1", "b:2") and settings.port == 8081
    assert "aaaa" not in repr(settings)
