"""A local certificate authority and service certificates, for the developer stack and the tests.

Production certificates come from cert-manager (deploy/k8s/components/cert-manager);
this module makes the same shape on one machine: a CA, and per service a
certificate whose common name is the service's identity (``keyring``,
``keyring-edge``, ``keyring-admin``...), with ``localhost`` and ``127.0.0.1``
as subject alternative names so TLS host checks pass on loopback.

etcd has a CA of its own (``ETCD_CA_NAME``): it signs etcd's certificate and
keyring's etcd client certificate only, so no other service's certificate is
an etcd client (SECURITY.md, issue 18 finding 1). ``--ca`` names the CA's
files, so both CAs may share a directory.

    python -m services.devstack.certs var/tls keyring keyring-edge keyring-admin
    python -m services.devstack.certs deploy/compose/secrets keyring=keyring-1,keyring-2 keyring-edge ...
    python -m services.devstack.certs --ca etcd-ca deploy/compose/secrets etcd-server=etcd keyring-etcd
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.tls import TLSFiles

CA_NAME = "keyring-local-ca"
ETCD_CA_NAME = "keyring-local-etcd-ca"
# The CA of the edge's https listener (clients trust it): apart from the services' CA, so a certificate it signs
# is never an identity keyring or etcd accept.
HTTPS_CA_NAME = "keyring-local-https-ca"
VALID_DAYS = 825
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True, slots=True)
class Certificate:
    """One service's files: its certificate, its key and the CA that signs everyone."""

    name: str
    cert_file: str
    key_file: str
    ca_file: str

    @property
    def files(self) -> TLSFiles:
        return TLSFiles(self.cert_file, self.key_file, self.ca_file)

    def env(self, prefix: str) -> dict[str, str]:
        """The variables a service's settings read these files from (``{prefix}_CERT_FILE``, ``_KEY_FILE``...)."""
        return {
            f"{prefix}_CERT_FILE": self.cert_file,
            f"{prefix}_KEY_FILE": self.key_file,
            f"{prefix}_CA_FILE": self.ca_file,
        }


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    encoding, private_format = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, private_format, serialization.NoEncryption())


class LocalCA:
    """A CA kept in ``directory`` (``{stem}.crt``, ``{stem}.key``) that issues certificates into the same directory.

    ``name`` is the CA's common name: two CAs (the services' and etcd's) keep
    different names, so neither's certificates ever chain to the other.
    """

    def __init__(self, directory: str | os.PathLike[str], *, name: str = CA_NAME, stem: str = "ca") -> None:
        self.directory = Path(directory)
        self.ca_file = str(self.directory / f"{stem}.crt")
        ca_key_path = self.directory / f"{stem}.key"
        if Path(self.ca_file).exists() and ca_key_path.exists():
            self._cert = x509.load_pem_x509_certificate(Path(self.ca_file).read_bytes())
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
            assert isinstance(loaded, ec.EllipticCurvePrivateKey)
            self._key = loaded
            return
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(self._key, hashes.SHA256())
        )
        _write_private(ca_key_path, _key_pem(self._key))
        Path(self.ca_file).write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        dns_names: tuple[str, ...] = LOOPBACK_NAMES,
        ips: tuple[str, ...] = LOOPBACK_IPS,
        reuse: bool = True,
    ) -> Certificate:
        """A certificate for ``name`` (its CN and first SAN), good as server and client; kept when it exists."""
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        issued = Certificate(name, str(cert_path), str(key_path), self.ca_file)
        if reuse and cert_path.exists() and key_path.exists():
            return issued
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alternative: list[x509.GeneralName] = [x509.DNSName(name)]
        alternative += [x509.DNSName(dns) for dns in dns_names if dns != name]
        alternative += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return issued


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create a local CA and service certificates.")
    parser.add_argument("directory", help="where ca.crt, ca.key and <name>.crt/.key go (kept between runs)")
    parser.add_argument(
        "--ca", default="ca", help="the CA's file stem; etcd-ca makes etcd's own CA (etcd-ca.crt, etcd-ca.key)"
    )
    parser.add_argument(
        "names", nargs="+", help="one certificate per identity: name, or name=dns1,dns2 for more DNS names"
    )
    args = parser.parse_args(argv)
    ca = LocalCA(args.directory, name=CA_NAME if args.ca == "ca" else f"keyring-local-{args.ca}", stem=args.ca)
    for entry in args.names:
        name, _, extra = entry.partition("=")
        issued = ca.issue(name, dns_names=(*LOOPBACK_NAMES, *filter(None, extra.split(","))))
        print(f"{name}: {issued.cert_file} {issued.key_file} (CA {issued.ca_file})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
