"""A TLS server certificate read from files and read again when they change, without a restart.

A listening socket keeps the ``SSLContext`` it was created with, so the certificate is swapped per connection
instead: the listening context's ``sni_callback`` (OpenSSL calls it for every ClientHello, with or without a
server name) compares the files' ``stat`` (mtime, size, inode: a renamed-in file counts) with the last load, and
when they differ loads them into a fresh context and hands that to the connection being made (``ssl_object.context``).
Connections already open keep theirs. A pair that does not load (a half-written file, a key that does not match the
certificate) is logged once and the previous certificate kept; that pair is tried again only when the files change
again, so a broken renewal never costs a load per handshake.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass

from .tls import TLSConfigError

log = logging.getLogger(__name__)

_Signature = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class _Loaded:
    signature: _Signature
    context: ssl.SSLContext


def _server_context() -> ssl.SSLContext:
    """Python's server defaults (TLS 1.2+, its cipher choice); clients are not asked for a certificate."""
    return ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)


class ReloadingCertificate:
    """The server side of https from ``cert_file`` (the chain, leaf first) and ``key_file`` (PEM).

    ``context`` is what the listener is given. Raises ``TLSConfigError`` at construction when the files do not
    load: a service refuses to start rather than serve without its certificate.
    """

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        signature = self._signature()
        if signature is None:
            raise TLSConfigError(f"the https certificate {cert_file!r} or key {key_file!r} cannot be read")
        try:
            self._loaded = _Loaded(signature, self._load())
        except (OSError, ssl.SSLError) as error:
            raise TLSConfigError(
                f"the https certificate {cert_file!r} and key {key_file!r} do not load: {error}"
            ) from None
        self._refused: _Signature | None = None
        self.reloads = 0
        self.context = self._loaded.context  # the listener's; a connection gets a fresh one once the files change
        self.context.sni_callback = self._on_hello

    def _signature(self) -> _Signature | None:
        try:
            stats = [os.stat(path) for path in (self.cert_file, self.key_file)]
        except OSError:
            return None
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def _load(self) -> ssl.SSLContext:
        context = _server_context()
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def current(self) -> ssl.SSLContext:
        """The context of the files as they are now (loaded again if they changed and load)."""
        signature = self._signature()
        if signature is None or signature in (self._loaded.signature, self._refused):
            return self._loaded.context
        try:
            self._loaded = _Loaded(signature, self._load())
        except (OSError, ssl.SSLError) as error:
            self._refused = signature
            log.warning("https certificate files changed but do not load (%s); the previous one is kept", error)
            return self._loaded.context
        self.reloads += 1
        log.info("https certificate reloaded from %s", self.cert_file)
        return self._loaded.context

    def _on_hello(self, connection: ssl.SSLObject, server_name: str | None, listening: ssl.SSLContext) -> None:
        connection.context = self.current()
