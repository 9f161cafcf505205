"""No upstream key, client token or admin token in any log line of a whole-stack run.

The stack runs as the newcomer runs it (``python -m services.devstack --demo
--keys FILE``, one process per service, DEBUG logging): the demo pool of
standard keys, and a pool whose only keys are auth keys (``AQ.``) from the
key file, serving both dialects. Traffic includes failovers, invalid keys,
bad tokens, key imports, verification and exports. Then every log file is
searched for every secret the run used, and every admin answer but the
export asked for in clear for every upstream key.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from services.devstack.__main__ import DEMO_KEYS
from services.devstack.etcd_server import free_port
from services.devstack.fake_keys import fake_auth_key, fake_gemini_key

MODEL = "gemini-3.5-flash"
AUTH_KEYS = [fake_auth_key(f"logged-nowhere-{i}") for i in range(3)]
AUTH_POOL = "auth-only"
BODY = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


@dataclass
class RunningStack:
    var: Path
    edge: str
    admin: str
    simulator: str
    token: str
    admin_token: str
    auth_token: str  # a client token of the pool of auth keys


@pytest.fixture
def devstack(tmp_path: Path) -> Iterator[RunningStack]:
    ports = {name: free_port() for name in ("etcd", "keyring", "edge", "admin", "simulator", "metrics")}
    command = [
        sys.executable, "-m", "services.devstack", "--demo", "--var", str(tmp_path / "var"),
        "--etcd-port", str(ports["etcd"]), "--keyring-port", str(ports["keyring"]), "--edge-port", str(ports["edge"]),
        "--edge-https-port", str(free_port()),
        "--admin-port", str(ports["admin"]), "--simulator-port", str(ports["simulator"]),
        "--keys", str(tmp_path / "keys.txt"), "--pool", AUTH_POOL,
    ]
    lines = [f"{key}, project-{i % 2}" for i, key in enumerate(AUTH_KEYS)]
    (tmp_path / "keys.txt").write_text("# auth keys only\n" + "\n".join(lines) + "\n")
    env = {**os.environ, "LOG_LEVEL": "DEBUG", "KEYRING_METRICS_PORT": str(ports["metrics"])}
    output = tmp_path / "devstack.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 60
            while "Ctrl-C" not in output.read_text():
                assert process.poll() is None, output.read_text()
                assert time.monotonic() < deadline, "the stack did not start within 60 s"
                time.sleep(0.1)
            text = output.read_text()
            yield RunningStack(
                var=tmp_path / "var",
                edge=f"http://127.0.0.1:{ports['edge']}",
                admin=f"http://127.0.0.1:{ports['admin']}",
                simulator=f"http://127.0.0.1:{ports['simulator']}",
                token=re.search(r"pool 'demo', shown once\): (\S+)", text).group(1),  # type: ignore[union-attr]
                auth_token=re.search(rf"pool '{AUTH_POOL}', shown once\): (\S+)", text).group(1),  # type: ignore[union-attr]
                admin_token=re.search(r"admin-tokens: (\S+)\)", text).group(1),  # type: ignore[union-attr]
            )
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


async def test_no_secret_reaches_any_log(devstack: RunningStack) -> None:
    demo_keys = [fake_gemini_key(f"demo-{i}") for i in range(DEMO_KEYS)]
    new_key = fake_gemini_key("logged-nowhere")
    new_auth_key = fake_auth_key("logged-nowhere-pasted")
    upstream_keys = [*demo_keys, new_key, *AUTH_KEYS, new_auth_key]
    admin = {"Authorization": f"Bearer {devstack.admin_token}"}
    admin_answers: list[str] = []

    async with aiohttp.ClientSession() as http:

        async def status(method: str, url: str, **kwargs: object) -> tuple[int, str]:
            async with http.request(method, url, **kwargs) as answer:  # type: ignore[arg-type]
                text = await answer.text()
                if url.startswith(devstack.admin) and kwargs.get("params") != {"include_secrets": "true"}:
                    admin_answers.append(text)
                return answer.status, text

        # The pool of auth keys serves both dialects, plain and streamed.
        generate = f"{devstack.edge}/v1beta/models/{MODEL}:generateContent"
        stream = f"{devstack.edge}/v1beta/models/{MODEL}:streamGenerateContent"
        by_auth = {"x-goog-api-key": devstack.auth_token}
        assert (await status("POST", generate, json=BODY, headers=by_auth))[0] == 200
        code, body = await status("POST", stream, json=BODY, params={"alt": "sse"}, headers=by_auth)
        assert code == 200 and body.startswith("data: ")
        bearer = {"Authorization": f"Bearer {devstack.auth_token}"}
        plain = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        assert (await status("POST", f"{devstack.edge}/v1/chat/completions", json=plain, headers=bearer))[0] == 200
        code, body = await status(
            "POST", f"{devstack.edge}/v1/chat/completions", json={**plain, "stream": True}, headers=bearer
        )
        assert code == 200 and "[DONE]" in body
        code, body = await status("GET", f"{devstack.admin}/api/keys", params={"pool": AUTH_POOL}, headers=admin)
        assert code == 200 and {key["kind"] for key in orjson.loads(body)["keys"]} == {"auth"}
        pasted = {"text": f"{new_auth_key}\nAQ.too-short"}
        code, body = await status("POST", f"{devstack.admin}/api/pools/{AUTH_POOL}/keys", json=pasted, headers=admin)
        assert code == 200 and orjson.loads(body)["malformed"] == 1

        script = {"key": demo_keys[0], "steps": [{"kind": "rate_limit", "retry_delay_s": 600}]}
        assert (await status("POST", f"{devstack.simulator}/_sim/script", json=script))[0] < 300
        sticky = {"key": demo_keys[1], "steps": [], "sticky": {"kind": "invalid_key"}}
        assert (await status("POST", f"{devstack.simulator}/_sim/script", json=sticky))[0] < 300
        for _ in range(12):
            assert (await status("POST", generate, json=BODY, params={"key": devstack.token}))[0] == 200
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        code, body = await status("POST", f"{devstack.edge}/v1/chat/completions", json=chat,
                                  headers={"Authorization": f"Bearer {devstack.token}"})
        assert code == 200 and "[DONE]" in body
        assert (await status("POST", generate, json=BODY, headers={"x-goog-api-key": devstack.token + "x"}))[0] == 401
        keys = {"text": f"{new_key}\nnot-a-key"}
        assert (await status("POST", f"{devstack.admin}/api/pools/demo/keys", json=keys, headers=admin))[0] == 200
        assert (await status("POST", f"{devstack.admin}/api/keys/verify-unhealthy", json={}, headers=admin))[0] == 200
        export = f"{devstack.admin}/api/export"
        assert (await status("GET", export, headers=admin))[0] == 200  # sealed: an admin answer like any other
        assert (await status("GET", export, params={"include_secrets": "true"}, headers=admin))[0] == 200
        wrong = {"Authorization": "Bearer wrong-token"}
        assert (await status("GET", f"{devstack.admin}/api/pools", headers=wrong))[0] == 401

    logs = sorted((devstack.var / "logs").glob("*.log"))
    assert {path.name for path in logs} >= {"keyring.log", "edge.log", "admin.log", "simulator.log"}
    text = "\n".join(path.read_text(errors="replace") for path in logs)
    assert "upstream answered 429" in text  # the run did log its failovers, at DEBUG level and above
    for secret in [*upstream_keys, devstack.token, devstack.auth_token, devstack.admin_token]:
        assert secret not in text
    assert not re.search(r"AIza[0-9A-Za-z_\-]{35}", text)
    assert not re.search(r"AQ\.[0-9A-Za-z_\-]{20,}", text)
    assert not re.search(r"kr-[A-Za-z0-9_\-]{20,}", text)
    # Every admin answer but the export asked for in clear: masks and ids only.
    assert len(admin_answers) >= 5
    for answer in admin_answers:
        for secret in upstream_keys:
            assert secret not in answer
