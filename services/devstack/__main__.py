"""python -m services.devstack [--demo] [--keys FILE]: the whole stack on one machine, for a newcomer.

Starts a local etcd, one keyring replica, the edge and (when present) the
admin service; with ``--demo`` also the Gemini simulator as the upstream and
a seeded pool of simulated keys, so a first curl works offline. With
``--keys FILE`` (``services/cli/key_file.py``: one key per line,
optionally with its project) a pool (``--pool``, default ``main``) gets those
keys: the file is checked before anything starts, and a bad line stops
everything with a message per line, having created nothing. Prints the URLs
and a client token per pool, then runs until Ctrl-C, when it stops exactly
the processes it started. State lives in ``var/`` (etcd data, the local
key-encryption key, logs), so a restart keeps pools, keys and cooldowns.

Everything talks mutual TLS as in production: a local CA and one certificate
per service are made once in ``var/tls`` (``services/devstack/certs.py``):
``keyring`` (keyring's server certificate), ``keyring-edge`` (the edge's lease
identity), ``keyring-internal`` (an internal service's lease identity, for the
lease client package: docs/internal-services.md) and ``keyring-admin`` (the
admin identity). etcd has a CA of
its own in ``var/tls/etcd-ca``: etcd's certificate and keyring's etcd client
certificate, so neither the edge's nor admin's certificate is an etcd client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.cli.key_file import KeyFileError, KeyLine, read_key_file
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.devstack.certs import ETCD_CA_NAME, HTTPS_CA_NAME, Certificate, LocalCA
from services.devstack.etcd_server import EtcdServer
from services.devstack.fake_keys import fake_gemini_key
from services.devstack.health import open_channel, wait_until_serving
from services.keyring.sealing import generate_kek

DEMO_POOL = "demo"
DEMO_KEYS = 10


@dataclass
class Stack:
    root: Path
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def spawn(self, name: str, module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.root / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            [sys.executable, "-m", module], env={**os.environ, **env}, stdout=log, stderr=log, cwd=self.root.parent
        )
        self.processes.append((name, process))
        return process

    def stop(self) -> None:
        for _name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _name, process in reversed(self.processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()

    def check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode}; see {self.root / 'logs' / (name + '.log')}")


def wait_http(url: str, stack: Stack, deadline_s: float = 30.0) -> None:
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        stack.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {deadline_s} s")


IDENTITIES = ("keyring", "keyring-edge", "keyring-admin", "keyring-internal")
LEASE_IDENTITY = "keyring-edge"  # the edge's identity
INTERNAL_IDENTITY = "keyring-internal"  # an internal service's (clients/python, docs/internal-services.md)
# The only identities keyring lets lease (KEYRING_LEASE_IDENTITIES).
LEASE_IDENTITIES = (LEASE_IDENTITY, INTERNAL_IDENTITY)
# etcd's own CA (var/tls/etcd-ca): dictionary key -> the certificate's name there.
ETCD_IDENTITIES = {"etcd": "etcd", "keyring-etcd": "keyring"}


def local_certificates(var: Path) -> dict[str, Certificate]:
    """The services' CA and etcd's CA in var/tls, a certificate per identity (made once, keys mode 0600); the
    edge's https certificate (``edge-https``: localhost, 127.0.0.1, ::1) from a third CA, var/tls/https-ca, the one
    clients trust (no certificate it signs is an identity keyring or etcd accept)."""
    ca = LocalCA(var / "tls")
    etcd_ca = LocalCA(var / "tls" / "etcd-ca", name=ETCD_CA_NAME)
    https_ca = LocalCA(var / "tls" / "https-ca", name=HTTPS_CA_NAME)
    certs = {name: ca.issue(name) for name in IDENTITIES}
    certs["edge-https"] = https_ca.issue("edge-https")
    return certs | {key: etcd_ca.issue(name) for key, name in ETCD_IDENTITIES.items()}


def keyring_env(
    var: Path, etcd: EtcdServer, address: str, upstream: str, certs: dict[str, Certificate]
) -> dict[str, str]:
    """keyring's settings: etcd with its own client certificate, leases for the edge's and the internal
    service's identities only."""
    host, _, port = address.rpartition(":")
    return {
        "KEYRING_KEK_FILE": local_kek(var),
        "KEYRING_ETCD_ENDPOINT": etcd.endpoint,
        "KEYRING_HOST": host,
        "KEYRING_PORT": port,
        "KEYRING_METRICS_HOST": host,
        "KEYRING_UPSTREAM_BASE_URL": upstream,
        "KEYRING_LEASE_IDENTITIES": ",".join(LEASE_IDENTITIES),
        **certs["keyring"].env("KEYRING_TLS"),
        **certs["keyring-etcd"].env("KEYRING_ETCD_TLS"),
    }


async def seed_demo(address: str, identity: Certificate) -> str:
    """Create the demo pool and keys if missing; always a fresh client token (tokens are shown once)."""
    async with open_channel(address, identity.files) as channel:
        admin = pb_grpc.AdminServiceStub(channel)
        pools = await admin.ListPools(pb.ListPoolsRequest())
        if DEMO_POOL not in {pool.name for pool in pools.pools}:
            await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name=DEMO_POOL, description="simulated keys")))
        keys = [
            pb.KeyInput(secret=fake_gemini_key(f"demo-{i}"), project=f"demo-project-{i % 3}") for i in range(DEMO_KEYS)
        ]
        await admin.AddKeys(pb.AddKeysRequest(pool=DEMO_POOL, keys=keys))
        created: pb.CreateTokenResponse = await admin.CreateToken(
            pb.CreateTokenRequest(pool=DEMO_POOL, name=f"demo-{int(time.time())}")
        )
        return created.token


class KeysRefused(Exception):
    """keyring refused keys the file check let through (a KEYRING_KEY_PATTERN stricter than ours)."""


async def seed_keys(address: str, identity: Certificate, pool: str, keys: list[KeyLine]) -> tuple[str, str]:
    """Put ``keys`` in ``pool`` (created if missing) and make a client token: (token, summary).

    All or nothing: if keyring refuses any key, the keys added by this call
    (and the pool, if this call created it) are removed again and
    ``KeysRefused`` says which lines.
    """
    async with open_channel(address, identity.files) as channel:
        admin = pb_grpc.AdminServiceStub(channel)
        pools = await admin.ListPools(pb.ListPoolsRequest())
        created_pool = pool not in {existing.name for existing in pools.pools}
        if created_pool:
            description = "keys from scripts/start.sh --keys"
            await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name=pool, description=description)))
        inputs = [
            pb.KeyInput(secret=key.secret, project=key.project, billing_account=key.billing_account) for key in keys
        ]
        reply: pb.AddKeysResponse = await admin.AddKeys(pb.AddKeysRequest(pool=pool, keys=inputs))
        refused = [
            f"line {keys[result.index].line}: {result.message}"
            for result in reply.results
            if result.status == pb.AddKeyResult.MALFORMED
        ]
        if refused:
            for result in reply.results:
                if result.status == pb.AddKeyResult.ADDED:
                    await admin.DeleteKey(pb.DeleteKeyRequest(key_id=result.key_id))
            if created_pool:
                await admin.DeletePool(pb.DeletePoolRequest(name=pool, force=True))
            raise KeysRefused("\n".join(refused))
        elsewhere = [
            f"line {keys[result.index].line}: {result.mask} {result.message}"
            for result in reply.results
            if result.status == pb.AddKeyResult.DUPLICATE and not result.message.endswith(repr(pool))
        ]
        created: pb.CreateTokenResponse = await admin.CreateToken(
            pb.CreateTokenRequest(pool=pool, name=f"start-{int(time.time())}")
        )
    kept = len(keys) - reply.added - len(elsewhere)
    summary = f"{reply.added} keys added to pool {pool!r}" + (f", {kept} already there" if kept else "")
    for line in elsewhere:
        summary += f"\n  not added, {line}"
    return created.token, summary


def local_admin_token(var: Path) -> tuple[str, str]:
    """An admin token for this machine only, kept in var/admin-tokens (mode 0600): (file, token).

    It may change everything and export secrets in clear (``operator+export``): this machine's developer.
    """
    path = var / "admin-tokens"
    if not path.exists():
        path.write_text(f"operator:operator+export:{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    token = path.read_text().strip().splitlines()[0].rsplit(":", 1)[1]
    return str(path), token


def local_kek(var: Path) -> str:
    """A key-encryption key for this machine only, kept in var/kek (mode 0600)."""
    path = var / "kek"
    if not path.exists():
        path.write_text(generate_kek())
        path.chmod(0o600)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="also start the Gemini simulator and seed a demo pool")
    parser.add_argument("--var", default="var", help="where etcd data, the local KEK and logs live")
    parser.add_argument("--etcd-port", type=int, default=2379)
    parser.add_argument("--keyring-port", type=int, default=50051)
    parser.add_argument("--edge-port", type=int, default=8080)
    parser.add_argument("--edge-https-port", type=int, default=8443, help="the edge's https listener (local CA)")
    parser.add_argument("--admin-port", type=int, default=8081)
    parser.add_argument("--simulator-port", type=int, default=8090)
    parser.add_argument(
        "--upstream",
        default="https://generativelanguage.googleapis.com",
        help="the Gemini API base URL the edge and keyring call (--demo: the simulator)",
    )
    parser.add_argument(
        "--keys",
        metavar="FILE",
        help="add these upstream keys to --pool and print a client token: one key per line (auth AQ.... or "
        "standard AIza...), optionally followed by its project after whitespace or a comma; # comments",
    )
    parser.add_argument("--pool", default="main", help="the pool --keys fills (created if missing; default main)")
    options = parser.parse_args()
    keys: list[KeyLine] = []
    if options.keys:
        try:
            keys = read_key_file(options.keys)
        except KeyFileError as error:
            print(f"nothing started: {options.keys} has {len(error.problems)} bad line(s)", file=sys.stderr)
            for problem in error.problems:
                print(f"  {problem}", file=sys.stderr)
            raise SystemExit(2) from None
    options.key_lines = keys

    # Ctrl-C and SIGTERM both stop the stack (a shell may have started us with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    var = Path(options.var).resolve()
    (var / "logs").mkdir(parents=True, exist_ok=True)
    stack = Stack(var)
    certs = local_certificates(var)
    etcd = EtcdServer(data_dir=var / "etcd", port=options.etcd_port, keep_data=True, tls=certs["etcd"].files)
    etcd.start()
    try:
        run(options, stack, etcd, var, certs)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping...", flush=True)
        stack.stop()
        etcd.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(
    options: argparse.Namespace, stack: Stack, etcd: EtcdServer, var: Path, certs: dict[str, Certificate]
) -> None:
    keyring_address = f"127.0.0.1:{options.keyring_port}"
    upstream = options.upstream
    # Started side by side where nothing waits for the other: the simulator and keyring (keyring calls the upstream
    # only to check keys, none yet), then the edge and admin (each needs keyring only).
    if options.demo:
        simulator_env = {"SIMULATOR_HOST": "127.0.0.1", "SIMULATOR_PORT": str(options.simulator_port)}
        stack.spawn("simulator", "services.simulator", simulator_env)
        upstream = f"http://127.0.0.1:{options.simulator_port}"
    stack.spawn("keyring", "services.keyring", keyring_env(var, etcd, keyring_address, upstream, certs))
    if options.demo:
        wait_http(f"{upstream}/_sim/counts", stack)
    asyncio.run(wait_until_serving(keyring_address, still_alive=stack.check_alive, tls=certs["keyring-edge"].files))
    stack.spawn(
        "edge",
        "services.edge",
        {
            "EDGE_HOST": "127.0.0.1",
            "EDGE_PORT": str(options.edge_port),
            # where upload URLs point (required while uploads are on; http is accepted for a loopback host)
            "EDGE_PUBLIC_BASE_URL": f"http://127.0.0.1:{options.edge_port}",
            "EDGE_KEYRING_ADDRESSES": keyring_address,
            "EDGE_UPSTREAM_BASE_URL": upstream,
            **certs["keyring-edge"].env("EDGE_KEYRING_TLS"),
            # https next to http, from the local https CA (clients trust var/tls/https-ca/ca.crt)
            "EDGE_HTTPS_CERT_FILE": certs["edge-https"].cert_file,
            "EDGE_HTTPS_KEY_FILE": certs["edge-https"].key_file,
            "EDGE_HTTPS_PORT": str(options.edge_https_port),
        },
    )
    edge_url = f"http://127.0.0.1:{options.edge_port}"
    https_url = f"https://localhost:{options.edge_https_port}"
    tokens_file, admin_token = local_admin_token(var)
    stack.spawn(
        "admin",
        "services.admin",
        {
            "ADMIN_HOST": "127.0.0.1",
            "ADMIN_PORT": str(options.admin_port),
            "ADMIN_KEYRING_ADDRESSES": keyring_address,
            "ADMIN_ADMIN_TOKENS_FILE": tokens_file,
            **certs["keyring-admin"].env("ADMIN_KEYRING_TLS"),
        },
    )
    admin_url = f"http://127.0.0.1:{options.admin_port}"
    wait_http(f"{edge_url}/healthz", stack)
    wait_http(f"{admin_url}/healthz", stack)
    token = asyncio.run(seed_demo(keyring_address, certs["keyring-admin"])) if options.demo else ""
    keys_token, keys_summary = "", ""
    if options.key_lines:
        try:
            keys_token, keys_summary = asyncio.run(
                seed_keys(keyring_address, certs["keyring-admin"], options.pool, options.key_lines)
            )
        except KeysRefused as error:
            print(f"keyring refused keys of {options.keys}; nothing was added:\n{error}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    print(f"etcd      {etcd.client_url}  (keyring's client certificate required; data in {var / 'etcd'})")
    print(f"keyring   {keyring_address}  (gRPC, mutual TLS; CA and certificates in {var / 'tls'})")
    print(f"edge      {edge_url}  (OpenAI: {edge_url}/v1   Gemini: {edge_url}/v1beta)")
    ca_file = certs["edge-https"].ca_file
    print(f"          {https_url}  (https; clients trust {ca_file}: SSL_CERT_FILE, REQUESTS_CA_BUNDLE, "
          "NODE_EXTRA_CA_CERTS; docs/configuration.md \"https on the edge\")")
    print(f"admin     {admin_url}  (console; admin token in {tokens_file}: {admin_token})")
    internal = certs[INTERNAL_IDENTITY]
    print(f"internal  lease identity {INTERNAL_IDENTITY!r} for the lease client (docs/internal-services.md): "
          f"{internal.cert_file}, {internal.key_file}, CA {internal.ca_file}")
    if options.demo:
        print(f"simulator {upstream}  (fake Gemini upstream)")
        print(f"client token (pool {DEMO_POOL!r}, shown once): {token}")
        print(f"try: curl -s {edge_url}/v1/chat/completions -H 'Authorization: Bearer {token}' "
              "-H 'Content-Type: application/json' "
              "-d '{\"model\": \"gemini-3.5-flash\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'")
    if options.key_lines:
        print(f"keys      {keys_summary} (from {options.keys}; upstream {upstream})")
        print(f"client token (pool {options.pool!r}, shown once): {keys_token}")
        print(f"try: curl -s {edge_url}/v1beta/models/gemini-3.5-flash:generateContent "
              f"-H 'x-goog-api-key: {keys_token}' -H 'Content-Type: application/json' "
              "-d '{\"contents\": [{\"parts\": [{\"text\": \"Hello\"}]}]}'")
    print(f"logs in {var / 'logs'}; Ctrl-C stops everything", flush=True)
    while True:
        stack.check_alive()
        time.sleep(1)


if __name__ == "__main__":
    main()
