"""Certificates for mTLS on every hop: a local CA, one certificate per process, and the
gRPC credentials built from them (server credentials reload when the files change).

Every certificate names its holder with one SPIFFE-style URI SAN,
``spiffe://paxos-commit/<role>/<name>`` (roles: :data:`rm_sdk.identity.ROLES`), which is
what :mod:`paxos_commit.authz` authorizes; DNS and IP SANs are only for the client's
host-name check. Each certificate is good for both ends of a connection (server and
client auth): a coordinator serves applications and is a client of the acceptors.

On disk (``paxos-commit certs DIR``, what ``up`` and the demo make under their data dir)::

    DIR/ca.pem  DIR/ca-key.pem               the local CA (keep the key off the servers)
    DIR/<role>-<name>.pem  ...-key.pem       a process's certificate chain and key

The Helm chart mounts the same three files (``tls.crt``, ``tls.key``, ``ca.crt``) from a
cert-manager ``Certificate`` or an existing Secret.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from rm_sdk.identity import ROLES, Identity, spiffe_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

# cryptography loads in the functions that read or make certificates (about 50 ms): a
# service started without TLS, as every test cluster is, never needs it.

__all__ = [
    "TlsFiles",
    "ensure_ca",
    "ensure_cert",
    "issue",
    "local_certs",
    "make_ca",
    "server_credentials",
]

log = logging.getLogger("paxos_commit.certs")

#: Certificates made here: long enough for a local cluster, short enough to mean rotation.
DEFAULT_DAYS = 365
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """Where one process finds its certificate chain, key, and the CA it trusts."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def in_dir(cls, certs_dir: Path | str, role: str, name: str) -> TlsFiles:
        d = Path(certs_dir)
        return cls(d / f"{role}-{name}.pem", d / f"{role}-{name}-key.pem", d / "ca.pem")

    @classmethod
    def mounted(cls, folder: Path | str) -> TlsFiles:
        """The layout of a Kubernetes TLS Secret (cert-manager's): tls.crt, tls.key, ca.crt."""
        d = Path(folder)
        return cls(d / "tls.crt", d / "tls.key", d / "ca.crt")

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(chain, key, ca) as PEM bytes."""
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()

    def stamp(self) -> tuple[float, ...]:
        """Changes whenever one of the files does (what reloading watches)."""
        out: list[float] = []
        for p in (self.cert, self.key, self.ca):
            try:
                st = p.stat()
                out += [st.st_mtime_ns, st.st_size, st.st_ino]
            except FileNotFoundError:
                out += [-1.0, -1.0, -1.0]
        return tuple(out)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client credentials: trust the CA, present this certificate."""
        chain, key, ca = self.read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)

    def identity(self) -> Identity:
        """The SPIFFE identity the certificate names."""
        from cryptography import x509

        from rm_sdk.identity import identity_from_uris

        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise ValueError(f"{self.cert}: no subject alternative names") from None
        ident = identity_from_uris(san.get_values_for_type(x509.UniformResourceIdentifier))
        if ident is None:
            raise ValueError(f"{self.cert}: no spiffe://paxos-commit/<role>/<name> URI")
        return ident


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate (mTLS), and load
    the files again when they change (certificate rotation without a restart): gRPC asks
    the fetcher at each new handshake, and it reads the files only when their stamp moved.
    A half-written rotation (unreadable or mismatched files) keeps the last good pair."""
    chain, key, ca = files.read()
    initial = grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)
    lock = threading.Lock()
    seen = [files.stamp()]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        stamp = files.stamp()
        with lock:
            if stamp == seen[0]:
                return None  # unchanged: gRPC keeps the current configuration
            try:
                chain, key, ca = files.read()
                _check_pair(chain, key)
                config = grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)
            except Exception as exc:
                log.warning("certificate files changed but cannot be loaded (%s); keeping the old ones", exc)
                return None
            seen[0] = stamp
            log.info("certificates reloaded from %s", files.cert)
            return config

    # gRPC's contract: the fetcher returns None when nothing changed (the stubs say otherwise).
    return grpc.dynamic_ssl_server_credentials(
        initial,
        fetch,  # type: ignore[arg-type]
        require_client_authentication=True,
    )


def _check_pair(chain: bytes, key: bytes) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(chain)
    pkey = serialization.load_pem_private_key(key, password=None)
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != pkey.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise ValueError("certificate and key do not match")


# ---------------------------------------------------------------- making certificates


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(certs_dir: Path | str, days: int = 10 * DEFAULT_DAYS) -> None:
    """A new local CA in ``certs_dir`` (ca.pem, ca-key.pem), replacing any there."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = Path(certs_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paxos-commit local CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(d / "ca-key.pem", _key_pem(key))
    _write_public(d / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))


def ensure_ca(certs_dir: Path | str) -> None:
    d = Path(certs_dir)
    if not (d / "ca.pem").exists() or not (d / "ca-key.pem").exists():
        make_ca(d)


def issue(
    certs_dir: Path | str,
    role: str,
    name: str,
    hosts: Iterable[str] = _LOCAL_HOSTS,
    days: int = DEFAULT_DAYS,
) -> TlsFiles:
    """A certificate for ``role``/``name`` signed by the CA in ``certs_dir``, with the
    URI SAN ``spiffe://paxos-commit/<role>/<name>`` and DNS/IP SANs ``hosts``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    d = Path(certs_dir)
    ca_cert = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((d / "ca-key.pem").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    uri = spiffe_id(Identity(role, name))
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{role}/{name}"[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles.in_dir(d, role, name)
    # Key first, then the certificate: a reloading server never pairs a new chain with an old key
    # for long, and rejects the mismatch meanwhile (server_credentials checks the pair).
    _write_private(files.key, _key_pem(key))
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def ensure_cert(certs_dir: Path | str, role: str, name: str, hosts: Iterable[str] = _LOCAL_HOSTS) -> TlsFiles:
    """The certificate for ``role``/``name`` in ``certs_dir``, issued if missing."""
    files = TlsFiles.in_dir(certs_dir, role, name)
    if not files.cert.exists() or not files.key.exists():
        return issue(certs_dir, role, name, hosts)
    return files


def local_certs(
    certs_dir: Path | str,
    n_acceptors: int,
    coordinators: Sequence[str],
    extra: Sequence[tuple[str, str]] = (),
) -> None:
    """What a local cluster needs: a CA, acceptors 0..n-1, the named coordinators, an
    admin (``admin/local``), and ``extra`` (role, name) pairs, each made only if missing."""
    ensure_ca(certs_dir)
    for i in range(n_acceptors):
        ensure_cert(certs_dir, "acceptor", str(i))
    for name in coordinators:
        ensure_cert(certs_dir, "coordinator", name)
    ensure_cert(certs_dir, "admin", "local")
    for role, name in extra:
        ensure_cert(certs_dir, role, name)
