"""``scripts/start.sh --keys FILE``: the stack starts with the operator's own keys in one command.

The devstack (what start.sh execs) runs as a process with ``--keys`` and
``--upstream`` pointing at the simulator, exactly as with Google: it makes a
pool of the file's keys (auth and standard keys, projects after whitespace or
a comma, comments and blank lines ignored) and prints the URLs and a client
token that works at once. A file with bad lines starts nothing and says what
is wrong with each line, never showing a key in full.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from services.common.masking import mask
from services.devstack.etcd_server import free_port
from services.devstack.fake_keys import fake_auth_key, fake_gemini_key
from services.simulator import start_simulator

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.etcd

AUTH = [fake_auth_key(f"start-{i}") for i in range(3)]
STANDARD = fake_gemini_key("start-standard")


def devstack_command(var: Path, keys_file: Path, upstream: str, ports: dict[str, int]) -> list[str]:
    return [
        sys.executable, "-m", "services.devstack", "--var", str(var), "--keys", str(keys_file),
        "--upstream", upstream, "--etcd-port", str(ports["etcd"]), "--keyring-port", str(ports["keyring"]),
        "--edge-port", str(ports["edge"]), "--admin-port", str(ports["admin"]), "--edge-https-port", str(free_port()),
    ]  # fmt: skip


def test_start_sh_passes_its_arguments_to_the_devstack() -> None:
    script = (ROOT / "scripts" / "start.sh").read_text()
    assert 'python -m services.devstack "$@"' in script


def test_bad_lines_start_nothing_and_are_named_one_by_one(tmp_path: Path) -> None:
    almost = AUTH[0][:-1] + "!"  # a real key with a typo: never shown in full
    (tmp_path / "keys.txt").write_text(
        "\n".join(
            [
                "# my keys",
                f"{AUTH[0]} project-a",
                almost,
                f"{AUTH[1]}, project-b, billingAccounts/0, extra",  # a key, a project, a billing account, and more
                "",
                f"{STANDARD} not/a/project",
                f"{AUTH[0]} project-a",
                "sk-openai-0123456789",
            ]
        )
    )
    ports = {name: free_port() for name in ("etcd", "keyring", "edge", "admin")}
    var = tmp_path / "var"
    done = subprocess.run(
        devstack_command(var, tmp_path / "keys.txt", "http://127.0.0.1:9", ports),
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "nothing started" in done.stderr
    for line in (3, 4, 6, 7, 8):
        assert f"keys.txt line {line}:" in done.stderr
    assert "line 2:" not in done.stderr and "line 5:" not in done.stderr
    assert "not a Gemini API key" in done.stderr and "auth key" in done.stderr
    assert "the key of line 2 again" in done.stderr
    for secret in [*AUTH, STANDARD, almost]:
        assert secret not in done.stderr + done.stdout
    assert mask(almost) in done.stderr
    assert not var.exists()  # nothing created: no etcd data, no certificates, no KEK


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("etcd", "keyring", "edge", "admin")}
    done = subprocess.run(
        devstack_command(tmp_path / "var", tmp_path / "nope.txt", "http://127.0.0.1:9", ports),
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "nope.txt: cannot be read" in done.stderr


async def test_a_pool_of_the_file_keys_serves_at_once(tmp_path: Path) -> None:
    sim_runner, sim_url, sim = await start_simulator()
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(
        f"# auth keys from AI Studio\n{AUTH[0]}  project-a\n{AUTH[1]},project-a\n\n{AUTH[2]}, project-b  # b\n"
        f"{STANDARD}\n"
    )
    ports = {name: free_port() for name in ("etcd", "keyring", "edge", "admin")}
    output = tmp_path / "devstack.out"
    env = {**os.environ, "KEYRING_METRICS_PORT": str(free_port())}
    with output.open("wb") as sink:
        process = subprocess.Popen(
            devstack_command(tmp_path / "var", keys_file, sim_url, ports),
            stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "Ctrl-C" not in output.read_text():
                assert process.poll() is None, output.read_text()
                assert time.monotonic() < deadline, "the stack did not start within 60 s"
                await asyncio.sleep(0.1)
            text = output.read_text()
            assert "4 keys added to pool 'main'" in text
            token = re.search(r"client token \(pool 'main', shown once\): (\S+)", text).group(1)  # type: ignore[union-attr]
            edge = f"http://127.0.0.1:{ports['edge']}"
            admin = f"http://127.0.0.1:{ports['admin']}"
            assert f"edge      {edge}" in text and f"admin     {admin}" in text
            admin_token = re.search(r"admin-tokens: (\S+)\)", text).group(1)  # type: ignore[union-attr]
            for secret in [*AUTH, STANDARD]:
                assert secret not in text

            async with aiohttp.ClientSession() as http:
                body = {"contents": [{"parts": [{"text": "Hello"}]}]}
                for _ in range(4):
                    async with http.post(
                        f"{edge}/v1beta/models/gemini-3.5-flash:generateContent",
                        json=body,
                        headers={"x-goog-api-key": token},
                    ) as answer:
                        assert answer.status == 200, await answer.text()
                async with http.get(
                    f"{admin}/api/keys", params={"pool": "main"}, headers={"Authorization": f"Bearer {admin_token}"}
                ) as answer:
                    listed = (await answer.json())["keys"]
            assert {key["mask"]: (key["kind"], key["project"]) for key in listed} == {
                mask(AUTH[0]): ("auth", "project-a"),
                mask(AUTH[1]): ("auth", "project-a"),
                mask(AUTH[2]): ("auth", "project-b"),
                mask(STANDARD): ("standard", ""),
            }
            assert {sent.key for sent in sim.requests} <= {*AUTH, STANDARD} and sim.requests
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            await sim_runner.cleanup()
