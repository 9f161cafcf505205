"""https on the edge, next to plain http: a client trusting the CA gets the normal answer, and a renewed
certificate is presented from the next handshake on, without a restart (services/common/server_tls.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from tests.e2e.conftest import MakeStack
from tests.pki import Pki, https_ca


async def presented_certificate(https_url: str, trust: ssl.SSLContext) -> bytes:
    """The certificate a new TLS connection to ``https_url`` is shown (DER), verified against ``trust``."""
    url = urlsplit(https_url)
    _, writer = await asyncio.open_connection(url.hostname, url.port, ssl=trust)  # an IP: no SNI sent
    try:
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return der
    finally:
        writer.close()


def der_of(cert_file: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(cert_file).read_text())


def install(source_cert: str, source_key: str, cert: Path, key: Path) -> None:
    """Renew the files as cert-manager or certbot do: written aside, then renamed into place."""
    for source, target in ((source_key, key), (source_cert, cert)):
        shutil.copyfile(source, f"{target}.new")
        os.replace(f"{target}.new", target)


async def test_https_answers_and_a_renewed_certificate_is_served(
    make_stack: MakeStack, pki: Pki, tmp_path: Path
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    install(pki.https.cert_file, pki.https.key_file, cert, key)
    stack = await make_stack(keys=1, https_cert_file=str(cert), https_key_file=str(key))
    assert stack.https_url is not None and stack.http is not None
    trust = ssl.create_default_context(cafile=pki.https.ca_file)

    async with stack.http.post(
        f"{stack.https_url}/v1beta/models/gemini-3.5-flash:generateContent",
        json={"contents": [{"parts": [{"text": "Hello"}]}]},
        headers=stack.gemini_headers(),
        ssl=trust,
    ) as answer:
        assert answer.status == 200, await answer.text()
        body = await answer.json()
    assert body["candidates"][0]["content"]["parts"][0]["text"] == "Simulated answer to: Hello"
    async with stack.http.get(f"{stack.edge_url}/healthz") as plain:  # plain http still served
        assert plain.status == 200
    assert await presented_certificate(stack.https_url, trust) == der_of(pki.https.cert_file)

    renewed = https_ca(pki.directory).issue("edge-https-renewed", reuse=False)
    install(renewed.cert_file, renewed.key_file, cert, key)
    assert await presented_certificate(stack.https_url, trust) == der_of(renewed.cert_file)

    key.write_text("not a key\n")  # a broken renewal: the previous certificate is kept
    assert await presented_certificate(stack.https_url, trust) == der_of(renewed.cert_file)
