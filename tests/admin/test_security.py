"""Admin's trust boundary (issues 11 and 18): roles and the export permission (viewer+export exports
nothing), failed-login throttling that never locks out the right token (malformed logins count), logouts
shared by every admin replica (kept in keyring), the audit log as JSON log lines, and an import that
validates like every other route. Real admin apps, real keyring replicas, real etcd."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest

from services.admin.app import start_admin
from services.admin.config import AdminSettings
from services.common.logs import JsonFormatter
from services.devstack.fake_keys import fake_gemini_key
from services.keyring.domain.identity import key_id_for, token_id_for

from .conftest import ADMIN_TOKEN, AdminStack, Api, StartReplica

pytestmark = pytest.mark.etcd

OPERATOR_TOKEN = "operator-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789ab"
LEGACY_TOKEN = "legacy-token-0123456789ab"


def settings_like(base: AdminSettings, **changes: Any) -> AdminSettings:
    """The fixture's settings (whatever the keyring connection needs) with ``changes``, validated again."""
    data = base.model_dump()
    data["admin_tokens"] = base.admin_tokens.get_secret_value()
    data.update(changes)
    return AdminSettings(**data)


StartAdmin = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_admin_app(admin: AdminStack) -> AsyncIterator[StartAdmin]:
    """Start more admin apps (port 0) on the fixture's keyring, or on another replica's address."""
    runners = []

    async def start(**changes: Any) -> str:
        runner, base_url = await start_admin(settings_like(admin.settings, **changes), host="127.0.0.1", port=0)
        runners.append(runner)
        return base_url

    yield start
    for runner in runners:
        await runner.cleanup()


@asynccontextmanager
async def client(base_url: str, token: str | None = None) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Api(base_url, session, headers={"Authorization": f"Bearer {token}"} if token else {})


# -- roles ----------------------------------------------------------------------


async def test_viewer_reads_and_every_change_or_export_is_refused(start_admin_app: StartAdmin) -> None:
    base = await start_admin_app(
        admin_tokens=f"ro:viewer:{VIEWER_TOKEN},op:operator:{OPERATOR_TOKEN},rx:viewer+export:{LEGACY_TOKEN}"
    )
    async with client(base, OPERATOR_TOKEN) as operator, client(base, VIEWER_TOKEN) as viewer:
        assert (await operator.post("/api/pools", {"name": "main"})).status == 201
        assert (await viewer.get("/api/pools")).body["pools"][0]["name"] == "main"
        assert (await viewer.get("/api/keys")).status == 200
        session = (await viewer.get("/api/session")).body
        assert session["role"] == "viewer" and session["can_export"] is False
        # Issue 18: the export permission adds to an operator's export, never to a viewer's reads.
        viewer.headers = {"Authorization": f"Bearer {LEGACY_TOKEN}"}
        assert (await viewer.get("/api/session")).body["can_export"] is False
        for path in ("/api/export?include_secrets=true", "/api/export"):
            answer = await viewer.get(path)
            assert answer.status == 403 and "operator" in answer.body["error"]["message"], answer.text
        viewer.headers = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
        refused = [
            ("POST", "/api/pools", {"name": "other"}),
            ("PATCH", "/api/pools/main", {"description": "changed"}),
            ("DELETE", "/api/pools/main", None),
            ("POST", "/api/pools/main/keys", {"text": fake_gemini_key("viewer")}),
            ("POST", "/api/tokens", {"pool": "main"}),
            ("POST", "/api/import", {"format": "keyring-export/v1", "pools": [{"name": "sneaky"}]}),
            ("GET", "/api/export", None),
            ("GET", "/api/export?include_secrets=true", None),
        ]
        for method, path, body in refused:
            answer = await viewer.call(method, path, json=body)
            assert answer.status == 403, (method, path, answer.text)
            assert answer.body["error"]["status"] == "PERMISSION_DENIED"
        pools = (await operator.get("/api/pools")).body["pools"]
        assert [(pool["name"], pool["description"]) for pool in pools] == [("main", "")]
        assert (await operator.get("/api/keys")).body["keys"] == []
        assert (await operator.get("/api/tokens")).body["tokens"] == []


async def test_exporting_secrets_in_clear_needs_the_export_permission(
    start_admin_app: StartAdmin, admin: AdminStack
) -> None:
    base = await start_admin_app(
        admin_tokens=f"ops:operator+export:{ADMIN_TOKEN},op:operator:{OPERATOR_TOKEN},old:{LEGACY_TOKEN}"
    )
    secret = fake_gemini_key("clear-export")
    async with client(base, OPERATOR_TOKEN) as operator, client(base, ADMIN_TOKEN) as exporter:
        await operator.post("/api/pools", {"name": "main"})
        assert (await operator.post("/api/pools/main/keys", {"text": secret})).body["added"] == 1
        # An operator exports sealed secrets only; so does an old-style 'name:token' entry.
        for token in (OPERATOR_TOKEN, LEGACY_TOKEN):
            operator.headers = {"Authorization": f"Bearer {token}"}
            sealed = await operator.get("/api/export")
            assert sealed.status == 200 and secret not in sealed.text
            clear = await operator.get("/api/export?include_secrets=true")
            assert clear.status == 403 and secret not in clear.text
            assert "export permission" in clear.body["error"]["message"]
        assert (await operator.get("/api/session")).body["can_export"] is False
        answer = await exporter.get("/api/export?include_secrets=true")
        assert answer.status == 200 and secret in answer.text
        assert (await exporter.get("/api/session")).body == {
            "name": "ops", "via": "bearer", "expires_at": None, "csrf_token": None,
            "role": "operator", "can_export": True,
        }


def test_role_entries_parse_and_old_entries_mean_operator() -> None:
    settings = AdminSettings(
        admin_tokens=f"a:viewer:{VIEWER_TOKEN},b:operator+export:{OPERATOR_TOKEN},c:{LEGACY_TOKEN},d:x:{'y' * 20}"
    )
    accounts = settings.admin_accounts
    assert (accounts["a"].role, accounts["a"].export, accounts["a"].token) == ("viewer", False, VIEWER_TOKEN)
    assert (accounts["b"].role, accounts["b"].export) == ("operator", True)
    assert (accounts["c"].role, accounts["c"].export, accounts["c"].token) == ("operator", False, LEGACY_TOKEN)
    assert accounts["d"].token == "x:" + "y" * 20  # no known role: the whole rest is the token
    assert VIEWER_TOKEN not in repr(accounts) and VIEWER_TOKEN not in repr(settings)


# -- failed logins -------------------------------------------------------------


async def _login(api: Api, token: str, **extra: str) -> Any:
    return await api.post("/api/login", {"token": token, **extra}, headers=api.headers)


async def test_failed_logins_are_throttled_per_address_then_allowed_after_the_window(
    start_admin_app: StartAdmin,
) -> None:
    window = 1.0  # the seven calls before the wait take a few milliseconds
    base = await start_admin_app(login_max_failures=3, login_window_s=window)
    async with client(base) as api:
        started = time.monotonic()
        for _ in range(3):
            assert (await _login(api, "wrong-token-0123456789")).status == 401
        # Locked: every further failure gets 429; the right token is never locked out (issue 18).
        locked = await _login(api, "wrong-token-0123456789")
        assert locked.status == 429, locked.text
        assert locked.body["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert 1 <= int(locked.headers["Retry-After"]) <= window + 1
        bearer = await api.get("/api/pools", headers={"Authorization": "Bearer wrong-token-0123456789"})
        assert bearer.status == 429 and "Retry-After" in bearer.headers
        assert (await _login(api, ADMIN_TOKEN)).status == 200
        assert (await api.get("/api/pools", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).status == 200
        await asyncio.sleep(window - (time.monotonic() - started) + 0.2)
        assert (await _login(api, "wrong-token-0123456789")).status == 401


async def test_ten_bad_bearer_tokens_count_as_failures_and_never_lock_out_the_right_token(
    start_admin_app: StartAdmin,
) -> None:
    base = await start_admin_app(login_max_failures=10, login_window_s=60)
    async with client(base, "wrong-token-0123456789") as api:
        for _ in range(10):
            assert (await api.get("/api/pools")).status == 401
        answer = await api.get("/api/pools")
        assert answer.status == 429 and int(answer.headers["Retry-After"]) > 0
        api.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert (await api.get("/api/pools")).status == 200  # issue 18: the right token is never locked out
        assert (await _login(api, ADMIN_TOKEN)).status == 200


async def test_a_malformed_login_counts_as_a_failure(start_admin_app: StartAdmin) -> None:
    base = await start_admin_app(login_max_failures=4, login_window_s=60)
    async with client(base) as api:
        malformed = [
            (b"{", 400),  # not JSON
            (b'{"token": 5}', 400),  # not the schema
            (b"[" + b"{}," * 300 + b"{}]", 413),  # a few KiB, but more JSON elements than a login holds
            (b'{"token": "' + b"x" * 5000 + b'"}', 413),  # more than a login's few KiB
        ]
        for body, status in malformed:
            answer = await api.call("POST", "/api/login", data=body, headers={"Content-Type": "application/json"})
            assert answer.status == status, (body[:20], answer.text)
        answer = await _login(api, "wrong-token-0123456789")
        assert answer.status == 429, answer.text  # the four malformed logins were failures
        assert (await _login(api, ADMIN_TOKEN)).status == 200


async def test_failed_logins_are_throttled_per_name_behind_a_trusted_proxy(start_admin_app: StartAdmin) -> None:
    base = await start_admin_app(login_max_failures=3, login_window_s=60, trusted_proxies="127.0.0.1/32")
    async with client(base) as api:
        for address in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):  # one guess per address, all for "ops"
            api.headers = {"X-Forwarded-For": address}
            assert (await _login(api, "wrong-token-0123456789", name="ops")).status == 401
        api.headers = {"X-Forwarded-For": "203.0.113.4"}
        assert (await _login(api, "wrong-token-0123456789", name="ops")).status == 429  # the name is locked
        assert (await _login(api, "wrong-token-0123456789")).status == 401  # this address is not
        assert (await _login(api, ADMIN_TOKEN, name="ops")).status == 200  # the right token never is
        # Addresses are told apart by X-Forwarded-For from the trusted proxy only.
        for _ in range(3):
            api.headers = {"X-Forwarded-For": "198.51.100.7"}
            assert (await _login(api, "wrong-token-0123456789")).status == 401
        assert (await _login(api, "wrong-token-0123456789")).status == 429
        api.headers = {"X-Forwarded-For": "198.51.100.8"}
        assert (await _login(api, "wrong-token-0123456789")).status == 401


# -- logout on every replica ------------------------------------------------------


async def test_a_logout_on_one_admin_replica_holds_on_the_others(
    start_admin_app: StartAdmin, admin: AdminStack, start_replica: StartReplica
) -> None:
    first = await start_admin_app()
    second = await start_admin_app()
    other_keyring = await start_replica("replica-b")
    address = getattr(other_keyring, "address", None) or f"127.0.0.1:{other_keyring.server.port}"
    third = await start_admin_app(keyring_addresses=address)
    async with client(first) as api:
        login = await _login(api, ADMIN_TOKEN)
        assert login.status == 200
        cookie = next(c.value for c in api.session.cookie_jar if c.key == "keyring_session")
        stolen = {"Cookie": f"keyring_session={cookie}"}
        async with aiohttp.ClientSession() as other:
            for base in (second, third):  # any replica accepts the session...
                async with other.get(base + "/api/pools", headers=stolen) as response:
                    assert response.status == 200
            logout = await api.post("/api/logout", headers={"X-CSRF-Token": login.body["csrf_token"]})
            assert logout.status == 200
            async with other.get(second + "/api/pools", headers=stolen) as response:
                assert response.status == 401  # ...and none after the logout
            deadline = time.monotonic() + 5  # the other keyring replica learns it through etcd's watch
            while True:
                async with other.get(third + "/api/pools", headers=stolen) as response:
                    if response.status == 401 or time.monotonic() > deadline:
                        assert response.status == 401
                        break
                await asyncio.sleep(0.05)
            async with other.get(first + "/api/pools", headers=stolen) as response:
                assert response.status == 401


# -- the audit log reaches the logs --------------------------------------------------


async def test_every_audit_entry_is_also_a_json_log_line(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    secret = fake_gemini_key("audit-log")
    api.secrets.add(secret)
    assert (await api.post("/api/pools", {"name": "logged"})).status == 201
    assert (await api.post("/api/pools/logged/keys", {"text": secret})).body["added"] == 1
    created = await api.post("/api/tokens", {"pool": "logged", "name": "app"})
    formatter = JsonFormatter("keyring")
    lines = [formatter.format(record) for record in caplog.records]
    assert not [line for line in lines if secret in line or created.body["token"] in line]
    entries = [entry["audit"] for entry in map(orjson.loads, lines) if "audit" in entry]
    seen = {(entry["actor"], entry["action"], entry["target"]) for entry in entries}
    assert ("admin:ops", "CreatePool", "logged") in seen
    assert ("admin:ops", "AddKeys", "logged") in seen
    assert ("admin:ops", "CreateToken", created.body["info"]["token_id"]) in seen
    assert all(isinstance(entry["at"], float) and "detail" in entry for entry in entries)


# -- import validates like every other route -------------------------------------------


def _document(**sections: Any) -> dict[str, Any]:
    return {"format": "keyring-export/v1", "secrets": "clear", "pools": [], "tokens": [], "keys": [], **sections}


_GOOD_POOL = {"name": "imported", "allowed_models": ["gemini-3.5-flash"], "strategy": "round_robin", "policy": {}}


def _key(**fields: Any) -> dict[str, Any]:
    return {"key_id": "k-0", "pool": "imported", "secret": fake_gemini_key("import"), "mask": "m", **fields}


@pytest.mark.parametrize(
    ("document", "contains"),
    [
        (_document(pools=[{**_GOOD_POOL, "name": "Bad Name!"}]), "pool name"),
        (_document(pools=[{**_GOOD_POOL, "name": "../../etc"}]), "pool name"),
        (_document(pools=[{**_GOOD_POOL, "allowed_models": ["../../files"]}]), "model name"),
        (_document(pools=[{**_GOOD_POOL, "allowed_models": ["models/x/../../files:generateContent"]}]), "model name"),
        (_document(pools=[{**_GOOD_POOL, "allowed_models": "gemini"}]), "list"),
        (_document(pools=[{**_GOOD_POOL, "policy": {"rate_limit_cooldown_s": -60}}]), ">= 0"),
        (_document(pools=[{**_GOOD_POOL, "policy": {"max_in_flight": -1}}]), ">= 0"),
        (_document(pools=[{**_GOOD_POOL, "policy": {"no_such_field": 1}}]), "unknown policy"),
        (_document(pools=[{**_GOOD_POOL, "strategy": "everyone"}]), "strategy"),
        (_document(pools=[{**_GOOD_POOL, "description": "x" * 600}]), "description"),
        (_document(pools=[_GOOD_POOL], keys=[_key(secret="not-a-gemini-key")]), "not a Gemini API key"),
        (_document(pools=[_GOOD_POOL], keys=[_key(secret="")]), "not a Gemini API key"),
        (_document(pools=[_GOOD_POOL], keys=[_key(tier=1000)]), "tier"),
        (_document(pools=[_GOOD_POOL], keys=[_key(weight=-1)]), "weight"),
        (_document(pools=[_GOOD_POOL], keys=[_key(tags=["ok", ""])]), "tags"),
        (_document(pools=[_GOOD_POOL], keys=[_key(tier="1")]), "tier"),
        (_document(pools=[_GOOD_POOL], keys=[_key(), _key()]), "twice"),
        (_document(pools=[_GOOD_POOL], keys=[_key(pool="nowhere")]), "nowhere"),
    ],
)
async def test_import_runs_the_validators_of_the_normal_routes(
    api: Api, document: dict[str, Any], contains: str
) -> None:
    before = (await api.get("/api/export")).body
    answer = await api.post("/api/import", document)
    assert answer.status == 400, answer.text
    assert contains in answer.body["error"]["message"], answer.body
    after = (await api.get("/api/export")).body
    assert (after["pools"], after["keys"], after["tokens"]) == (before["pools"], before["keys"], before["tokens"])


async def test_import_recomputes_ids_and_refuses_altered_sealed_keys(api: Api) -> None:
    secret = fake_gemini_key("recomputed")
    api.secrets.add(secret)
    forged = _key(key_id="k-chosen-by-author", secret=secret, mask="AIza...nope", consecutive_failures=99,
                  state="invalid", last_error={"http_status": 1, "status": "", "reason": "", "message": "", "at": 0})
    answer = await api.post("/api/import", _document(pools=[_GOOD_POOL], keys=[forged]))
    assert answer.status == 200 and answer.body == {"pools": 1, "keys": 1, "tokens": 0}, answer.text
    keys = (await api.get("/api/keys")).body["keys"]
    assert [key["key_id"] for key in keys] == [key_id_for(secret)]
    assert keys[0]["mask"] != "AIza...nope" and keys[0]["mask"].startswith("AIza")
    assert keys[0]["state"] == "active" and keys[0]["consecutive_failures"] == 0 and keys[0]["last_error"] is None

    # A sealed secret moved under another key id no longer opens: refused, nothing written.
    sealed = (await api.get("/api/export")).body
    other = fake_gemini_key("other")
    moved = {**sealed["keys"][0], "key_id": key_id_for(other)}
    await api.delete("/api/pools/imported?force=true")
    answer = await api.post("/api/import", {**sealed, "keys": [moved]})
    assert answer.status == 400 and "sealed" in answer.body["error"]["message"]
    assert (await api.get("/api/pools")).body["pools"] == []


async def test_import_refuses_client_tokens_unless_asked_to_keep_them(api: Api, admin: AdminStack) -> None:
    chosen = "kr-the-importer-chose-this-token-0123456789"
    hashed = hashlib.sha256(chosen.encode()).hexdigest()
    token = {"token_id": "t-chosen", "token_hash": hashed, "pool": "imported", "name": "planted", "prefix": "kr-the"}
    document = _document(pools=[_GOOD_POOL], tokens=[token])
    refused = await api.post("/api/import", document)
    assert refused.status == 400 and "keep_client_tokens" in refused.body["error"]["message"]
    assert (await api.get("/api/pools")).body["pools"] == [] and (await api.get("/api/tokens")).body["tokens"] == []
    bad = _document(pools=[_GOOD_POOL], tokens=[{**token, "token_hash": "not-a-hash"}])
    assert (await api.post("/api/import?keep_client_tokens=true", bad)).status == 400
    negative = _document(pools=[_GOOD_POOL], tokens=[{**token, "requests_per_minute": -5}])
    assert (await api.post("/api/import?keep_client_tokens=true", negative)).status == 400

    kept = await api.post("/api/import?keep_client_tokens=true", document)
    assert kept.status == 200 and kept.body == {"pools": 1, "keys": 0, "tokens": 1}, kept.text
    tokens = (await api.get("/api/tokens")).body["tokens"]
    assert [t["token_id"] for t in tokens] != ["t-chosen"] and len(tokens) == 1  # recomputed, not the document's
    stored = admin.replica.keyring.cache.view.tokens[tokens[0]["token_id"]]
    assert stored.token_id == token_id_for(stored.token_hash) and stored.token_hash != hashed  # keyed again
