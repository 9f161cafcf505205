"""keyringctl against a real admin, keyring (the simulator as its upstream) and etcd: every routine task.

The CLI is synchronous (urllib), so ``ctl`` runs ``services.cli.__main__.run``
in a thread while the admin serves on this test's loop; one test runs the
installed console script as a subprocess, as an operator would.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.admin.app import start_admin
from services.cli.__main__ import build_parser, run
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.serving import add_tls_site
from services.devstack.fake_keys import fake_gemini_key
from services.simulator import start_simulator
from tests.integration.test_keyring_service import eventually
from tests.pki import session_pki

from .conftest import ADMIN_TOKEN, AdminStack, Replica, StartReplica

pytestmark = pytest.mark.etcd

MODEL = "gemini-3.5-flash"


@pytest.fixture
async def replica(start_replica: StartReplica) -> AsyncIterator[Replica]:
    """Keyring with the simulator upstream, so that ``keys verify`` gets a real answer (overrides conftest's)."""
    runner, base_url, _ = await start_simulator()
    try:
        yield await start_replica(upstream_base_url=base_url, recheck_interval_s=0)
    finally:
        await runner.cleanup()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@dataclass
class Ctl:
    admin: AdminStack
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {"HOME": str(self.home), "KEYRINGCTL_URL": self.admin.base_url, "KEYRINGCTL_TOKEN": ADMIN_TOKEN,
                **extra}

    async def __call__(self, *argv: str, env: dict[str, str] | None = None, stdin: str = "") -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(run, argv, out, err, self.env() if env is None else env, io.StringIO(stdin))
        return Result(code, out.getvalue(), err.getvalue())

    async def ok(self, *argv: str, stdin: str = "") -> Result:
        result = await self(*argv, stdin=stdin)
        assert result.code == 0 and result.err == "", (argv, result)
        return result


@pytest.fixture
def ctl(admin: AdminStack, tmp_path: Path) -> Ctl:
    return Ctl(admin, tmp_path)


def one_line(result: Result, code: int) -> str:
    """A failure: the expected exit code, nothing on stdout, one line on stderr naming the tool, no traceback."""
    assert result.code == code, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("keyringctl: ") and "Traceback" not in result.err, result
    return lines[0]


def rows(table: str, first: str) -> list[list[str]]:
    """The rows of an aligned table whose first column is ``first``, split on runs of two spaces or more."""
    lines = table.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(first))
    found = []
    for line in lines[start + 1:]:
        if not line.strip() or line.endswith(":"):
            break
        found.append(re.split(r"\s{2,}", line.strip()))
    return found


async def call_once(replica: Replica, client_token: str, exclude: str, outcome: pb.Outcome) -> str:
    """One leased call with this outcome, on a key of a project other than ``exclude``: the key's id."""
    token_hash = hashlib.sha256(client_token.encode()).hexdigest()
    request = pb.AcquireRequest(token_hash=token_hash, model=MODEL, exclude_projects=[exclude])
    lease = (await replica.lease.Acquire(request)).lease
    await replica.lease.Release(pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, model=MODEL,
                                                  outcome=outcome))
    return str(lease.key_id)



async def test_every_routine_task(ctl: Ctl, admin: AdminStack, tmp_path: Path) -> None:
    secrets = [fake_gemini_key(f"ctl-{index}") for index in range(3)]
    # pools
    await ctl.ok("pools", "create", "main", "--models", MODEL, "--policy", "quota_requests_per_minute=100")
    updated = (await ctl.ok("pools", "update", "main", "--policy", "rate_limit_cooldown_s=90", "-o", "json")).json()
    assert updated["policy"]["rate_limit_cooldown_s"] == 90  # type: ignore[index]
    assert [row[:2] for row in rows((await ctl.ok("pools", "list")).out, "NAME")] == [["main", "round_robin"]]
    assert re.search(r"\n  rate_limit_cooldown_s: +90\n", (await ctl.ok("pools", "show", "main")).out)

    # keys: from a file in start.sh's format, checked whole first; adding again is harmless
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# ours\n{secrets[0]}  proj-a\n{secrets[1]}, proj-a\n\n{secrets[2]}\n")
    added = await ctl.ok("keys", "add", "main", str(key_file))
    assert "3 added, 0 already there, 0 refused" in added.out and not any(s in added.out for s in secrets)
    again = await ctl.ok("keys", "add", "main", "-", "--json", stdin=key_file.read_text())
    assert again.json()["duplicate"] == 3  # type: ignore[index]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{fake_gemini_key('ctl-new')}\nnot-a-key-{secrets[0]}\n")
    line = one_line(await ctl("keys", "add", "main", str(bad)), 2)
    assert "line 2" in line and "nothing added" in line and secrets[0] not in line
    keys = (await ctl.ok("keys", "list", "--pool", "main", "--json")).json()["keys"]  # type: ignore[index]
    assert len(keys) == 3 and {key["project"] for key in keys} == {"proj-a", ""}

    # tokens: created (shown once), and a key cooling with its reason and time left
    created = (await ctl.ok("tokens", "create", "main", "--name", "app", "-o", "json")).json()
    client_token, token_id = created["token"], created["info"]["token_id"]  # type: ignore[index]
    assert client_token.startswith("kr-")
    # A 429 on the key without a project (its cooldown is its own: a project's rate limit outlives a key's
    # revive), a 2xx on a key of proj-a (the model served: its quota counted).
    too_many = pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED", retry_delay_ms=60_000)
    cooled = await call_once(admin.replica, client_token, "proj-a", too_many)
    await call_once(admin.replica, client_token, f"key:{cooled}", pb.Outcome(http_status=200))
    counted_in = time.time() // 60  # keyring counts a project's requests per epoch minute: this one's
    listing = (await ctl.ok("keys", "list", "--cooling", MODEL)).out
    [[key_id, _mask, pool, project, state, cooling, last_error]] = rows(listing, "KEY")
    assert (key_id, project) == (cooled, "-")
    assert (pool, state) == ("main", "active") and last_error.startswith("429")
    assert cooling.startswith(f"{MODEL}: ") and cooling.endswith("s left)"), cooling
    [shown] = (await ctl.ok("keys", "list", "--cooling", MODEL, "--json")).json()["keys"]  # type: ignore[index]
    assert shown["key_id"] == cooled and shown["cooldowns"][0]["reason"] in cooling

    # revive (cooldowns cleared), verify (the simulator answers), disable, enable
    revived = (await ctl.ok("keys", "revive", cooled, "--json")).json()["keys"][0]  # type: ignore[index]
    assert revived["state"] == "active" and revived["cooldowns"] == []
    verified = (await ctl.ok("keys", "verify", cooled, "--json")).json()["results"]  # type: ignore[index]
    assert verified[0]["ok"] is True and verified[0]["key_id"] == cooled
    assert rows((await ctl.ok("keys", "disable", cooled)).out, "KEY")[0][2] == "disabled"
    disabled = (await ctl.ok("keys", "list", "--state", "disabled", "--json")).json()["keys"]  # type: ignore[index]
    assert [key["key_id"] for key in disabled] == [cooled]
    assert "enable it instead" in one_line(await ctl("keys", "revive", cooled), 5)
    assert rows((await ctl.ok("keys", "enable", cooled)).out, "KEY")[0][2] == "active"

    # tokens: budgets, rotate, revoke
    budgets = (await ctl.ok("tokens", "budgets", token_id, "--budget", f"model={MODEL},rpm=60",
                            "--budget", "tpd=1000000", "--json")).json()["budgets"]  # type: ignore[index]
    assert [(b["model"], b["requests_per_minute"], b["tokens_per_day"]) for b in budgets] == [
        (MODEL, 60, 0), ("", 0, 1_000_000)]
    assert f"{MODEL}: rpm=60; *: tpd=1000000" in (await ctl.ok("tokens", "list", "--pool", "main")).out
    rotated = dict(line.split(":", 1) for line in (await ctl.ok("tokens", "rotate", token_id)).out.splitlines()[:-1])
    new_token, new_id = rotated["token"].strip(), rotated["token id"].strip()  # the id is the new secret's
    assert new_token.startswith("kr-") and new_token != client_token and new_id != token_id
    assert "does not exist" in one_line(await ctl("tokens", "revoke", token_id), 4)
    assert (await ctl.ok("tokens", "revoke", new_id, "-o", "json")).json()["revoked"] is True  # type: ignore[index]

    # usage and quotas, as tables and as JSON
    usage = await ctl.ok("usage", "--pool", "main")
    assert rows(usage.out, "POOL")[0][:3] == ["main", "2", "1"], usage.out  # two calls, one error
    assert (await ctl.ok("usage", "--json")).json()["window"] == "hour"  # type: ignore[index]

    def used_now(minutes: tuple[float, float]) -> set[int]:
        """The 2xx's count as shown in the minutes a read spanned: 1 in its own minute, 0 once one began after."""
        return {1 if minute == counted_in else 0 for minute in minutes}

    async def counted() -> bool:
        before = time.time() // 60
        quotas = (await ctl.ok("quotas", "--project", "proj-a", "--json")).json()["quotas"]  # type: ignore[index]
        used = used_now((before, time.time() // 60))
        return any(q["limit"] == 100 and q["metric"] == "requests_per_minute" and q["used"] in used for q in quotas)

    await eventually(counted, within_s=5)
    before = time.time() // 60
    [quota] = rows((await ctl.ok("quotas", "--pool", "main")).out, "POOL")
    assert quota[:6] == ["main", "proj-a", MODEL, "requests_per_minute", "100", "operator"], quota
    assert int(quota[6]) in used_now((before, time.time() // 60)), quota

    # export (a 0600 file), then import it back into an emptied pool
    backup = tmp_path / "backup.json"
    assert "3 keys" in (await ctl.ok("export", "-f", str(backup))).out
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600 and not any(s in backup.read_text() for s in secrets)
    one_line(await ctl("export", "-f", str(backup)), 2)  # never overwritten
    await ctl.ok("pools", "delete", "main", "--force")
    assert "(no keys)" in (await ctl.ok("keys", "list")).out
    imported = await ctl.ok("import", str(backup), "--keep-client-tokens")
    assert imported.out.strip() == "imported 1 pools, 3 keys, 1 tokens"
    assert len((await ctl.ok("keys", "list", "--json")).json()["keys"]) == 3  # type: ignore[index]

    # audit: who did all this
    audit = await ctl.ok("audit", "--limit", "50")
    assert any(row[1] == "admin:ops" and row[2] == "CreatePool" for row in rows(audit.out, "AT")), audit.out
    entries = (await ctl.ok("audit", "-o", "json")).json()["entries"]  # type: ignore[index]
    assert {"ImportConfig", "RotateToken", "SetKeyState"} <= {entry["action"] for entry in entries}


async def test_failures_are_one_line_with_the_documented_exit_codes(ctl: Ctl, tmp_path: Path) -> None:
    # A wrong admin token: the auth code, and the token in no output.
    wrong = "wrong-admin-token-0123456789"
    refused = await ctl("pools", "list", env=ctl.env(KEYRINGCTL_TOKEN=wrong))
    assert wrong not in one_line(refused, 3) and "401" in refused.err
    # No token anywhere: the auth code, saying where to put one.
    assert "KEYRINGCTL_TOKEN" in one_line(await ctl("pools", "list", env={"HOME": str(tmp_path)}), 3)
    # A token as an argument: there is no such option, and the value is never echoed.
    for argv in (("pools", "list", "--token", ADMIN_TOKEN), ("--token=" + ADMIN_TOKEN, "pools", "list"),
                 ("pools", "list", "--tok", ADMIN_TOKEN), (ADMIN_TOKEN, "pools")):
        result = await ctl(*argv)
        assert ADMIN_TOKEN not in one_line(result, 2), argv
    # not found, conflict, invalid input (admin's 400), unavailable
    assert "404" in one_line(await ctl("keys", "show", "k-none"), 4)
    await ctl.ok("pools", "create", "p1")
    assert "409" in one_line(await ctl("pools", "create", "p1"), 5)
    assert "400" in one_line(await ctl("pools", "create", "Not A Name"), 2)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = await ctl("pools", "list", env=ctl.env(KEYRINGCTL_URL=f"http://127.0.0.1:{port}"))
    assert "cannot reach admin" in one_line(unreachable, 6)
    # The token goes in clear only to this machine.
    assert "https" in one_line(await ctl("pools", "list", env=ctl.env(KEYRINGCTL_URL="http://admin.example")), 2)


async def test_config_file_must_be_private(ctl: Ctl, admin: AdminStack, tmp_path: Path) -> None:
    config = tmp_path / ".config" / "keyringctl" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{admin.base_url}"\ntoken = "{ADMIN_TOKEN}"\n')
    config.chmod(0o644)
    line = one_line(await ctl("pools", "list", env={"HOME": str(tmp_path)}), 2)
    assert "chmod 600" in line and ADMIN_TOKEN not in line
    config.chmod(0o600)
    assert (await ctl("pools", "list", "--json", env={"HOME": str(tmp_path)})).json() == {"pools": []}
    other = tmp_path / "other.toml"
    other.write_text('token = "x"\npassword = "y"\n')
    other.chmod(0o600)
    assert "unknown fields password" in one_line(await ctl("pools", "list", env={"KEYRINGCTL_CONFIG": str(other)}), 2)


async def test_https_admin_is_trusted_through_its_ca_file(ctl: Ctl, admin: AdminStack) -> None:
    """Admin over https (as behind admin-tls): a certificate no known CA signs is refused until its CA is given."""
    certificate = session_pki().https
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    runner, _ = await start_admin(admin.settings, host="127.0.0.1", port=0)
    try:
        url = await add_tls_site(runner, "127.0.0.1", 0, context)
        untrusted = await ctl("pools", "list", env=ctl.env(KEYRINGCTL_URL=url))
        assert "--ca-file" in one_line(untrusted, 2)
        trusted = await ctl("pools", "list", "--json", env=ctl.env(KEYRINGCTL_URL=url,
                                                                   KEYRINGCTL_CA_FILE=certificate.ca_file))
        assert (trusted.code, trusted.json()) == (0, {"pools": []}), trusted
    finally:
        await runner.cleanup()


def test_help_reads_like_a_cli() -> None:
    """Every command has a description and examples; the top help documents credentials and exit codes."""
    out, err = io.StringIO(), io.StringIO()
    assert run(["--help"], out, err, {}) == 0 and err.getvalue() == ""
    top = out.getvalue()
    for needed in ("KEYRINGCTL_TOKEN", "config.toml", "exit codes:", "6  unavailable", "examples:"):
        assert needed in top
    from services.cli.completion import tree

    commands = [path for path in tree(build_parser()) if path and path not in ("pools", "keys", "tokens")]
    assert len(commands) >= 20
    for path in commands:
        out = io.StringIO()
        assert run([*path.split(), "--help"], out, io.StringIO(), {}) == 0
        assert re.search(rf"\nexamples:\n  .*keyringctl {path}\b", out.getvalue()), path
    scripts = {}
    for shell in ("zsh", "fish"):  # offline: no admin, no token needed
        out = io.StringIO()
        assert run(["completion", shell], out, io.StringIO(), {}) == 0
        scripts[shell] = out.getvalue()
    assert "bashcompinit" in scripts["zsh"] and '"keys list") echo "' in scripts["zsh"]
    keys_list = "__fish_seen_subcommand_from keys; and __fish_seen_subcommand_from list"
    assert f'complete -c keyringctl -n "{keys_list}" -l pool' in scripts["fish"]


async def test_installed_console_script_and_completion(admin: AdminStack) -> None:
    """The console script pyproject installs, run as an operator runs it; bash completes its commands."""
    script = shutil.which("keyringctl", path=str(Path(sys.executable).parent))
    assert script, "keyringctl is not installed next to this Python (pip install -e .)"
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "KEYRINGCTL_URL": admin.base_url,
           "KEYRINGCTL_TOKEN": ADMIN_TOKEN}
    process = await asyncio.create_subprocess_exec(script, "pools", "list", "--json", env=env,
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0 and json.loads(stdout) == {"pools": []}, stderr
    probe = (f'source <("{script}" completion bash); '
             'COMP_WORDS=(keyringctl keys li); COMP_CWORD=2; _keyringctl; echo "${COMPREPLY[*]}"; '
             'COMP_WORDS=(keyringctl tokens create main --b); COMP_CWORD=4; _keyringctl; echo "${COMPREPLY[*]}"')
    started = time.monotonic()
    completed = await asyncio.to_thread(subprocess.run, ["bash", "-c", probe], capture_output=True, text=True,
                                        env=env, timeout=30)
    assert completed.stdout.splitlines() == ["list", "--budget"], (completed, time.monotonic() - started)
