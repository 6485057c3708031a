"""An in-memory test PKI with knobs for hostile certificates.

Tests need certificates the development CA (:mod:`keys.pki`) would never
make: expired, not yet valid, without digitalSignature, CAs without critical
basicConstraints, RSA-1024, SHA-1 signed. :class:`TestCA` builds them
directly with cryptography, all relative to one ``now``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from keys.certs import PrivateKey
from keys.dn import DistinguishedName
from keys.pki import key_usage as usage
from keys.trust import TrustStore


def new_key(kind: str = "ec", *, bits: int = 2048) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if kind in {"ec", "ec256"}:
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-small":
        return ec.generate_private_key(ec.SECP192R1())
    raise ValueError(kind)


@dataclass
class Identity:
    """An end-entity certificate, its key, and the intermediates above it."""

    cert: x509.Certificate
    key: PrivateKey
    intermediates: list[x509.Certificate] = field(default_factory=list)

    @property
    def subject(self) -> DistinguishedName:
        return DistinguishedName.from_x509(self.cert.subject)

    @property
    def issuer(self) -> DistinguishedName:
        return DistinguishedName.from_x509(self.cert.issuer)


class TestCA:
    """A CA (root or intermediate) that issues test certificates and CRLs."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        subject: str,
        *,
        now: datetime,
        parent: TestCA | None = None,
        key_kind: str = "ec",
        days: int = 3650,
        critical_basic_constraints: bool = True,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> None:
        self.now = now
        self.name = DistinguishedName.parse_slash(subject)
        self.key = new_key(key_kind)
        self.parent = parent
        self.revoked: dict[int, datetime] = {}
        issuer_key = parent.key if parent else self.key
        issuer_name = parent.cert.subject if parent else self.name.to_x509()
        public = self.key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(self.name.to_x509())
            .issuer_name(issuer_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(days=1))
            .not_valid_after(not_after or now + timedelta(days=days))
            .add_extension(
                x509.BasicConstraints(ca=True, path_length=None),
                critical=critical_basic_constraints,
            )
            .add_extension(usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        if parent is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
                critical=False,
            )
        self.cert: x509.Certificate = builder.sign(issuer_key, hashes.SHA256())

    @property
    def chain(self) -> list[x509.Certificate]:
        """This CA and its non-root ancestors (what a signer ships as intermediates)."""
        if self.parent is None:
            return []
        return [self.cert, *self.parent.chain]

    def intermediate(self, subject: str, **kwargs: object) -> TestCA:
        return TestCA(subject, now=self.now, parent=self, **kwargs)  # type: ignore[arg-type]

    def issue(
        self,
        subject: str,
        *,
        key: PrivateKey | None = None,
        key_kind: str = "ec",
        rsa_bits: int = 2048,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        digital_signature: bool = True,
        key_usage: bool = True,
        is_ca: bool = False,
        hash_algorithm: Any = None,  # SHA-1 for hostile tests, which the types forbid
    ) -> Identity:
        key = key or new_key(key_kind, bits=rsa_bits)
        public = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(DistinguishedName.parse_slash(subject).to_x509())
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or self.now - timedelta(hours=1))
            .not_valid_after(not_after or self.now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if key_usage:
            builder = builder.add_extension(
                usage(digital_signature=digital_signature), critical=True
            )
        cert = builder.sign(self.key, hash_algorithm or hashes.SHA256())
        return Identity(cert=cert, key=key, intermediates=self.chain)

    def issue_host(
        self,
        subject: str,
        *,
        names: Sequence[str] = ("127.0.0.1", "localhost"),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        uses: Sequence[x509.ObjectIdentifier] = (
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
    ) -> Identity:
        """A host certificate as IGTF CAs issue them: keyUsage digitalSignature, extended key
        usage serverAuth and clientAuth (or ``uses``), and ``names`` (IP addresses or DNS
        names) as subjectAltName, so that it serves TLS and is a TLS client certificate."""
        key = new_key("ec")
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(DistinguishedName.parse_slash(subject).to_x509())
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or self.now - timedelta(hours=1))
            .not_valid_after(not_after or self.now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(uses)), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return Identity(cert=cert, key=key, intermediates=self.chain)

    def revoke(self, cert: x509.Certificate) -> None:
        self.revoked[cert.serial_number] = self.now - timedelta(minutes=1)

    def crl(
        self,
        *,
        this_update: datetime | None = None,
        next_update: datetime | None = None,
        signed_by: PrivateKey | None = None,
    ) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(this_update or self.now - timedelta(hours=1))
            .next_update(next_update or self.now + timedelta(days=7))
        )
        for serial, when in self.revoked.items():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(signed_by or self.key, hashes.SHA256())


def store(
    cas: Sequence[TestCA],
    crls: Iterable[x509.CertificateRevocationList] | None = None,
) -> TrustStore:
    """A trust store holding the root(s) among ``cas`` and, by default, a fresh CRL of each CA."""
    roots = [ca.cert for ca in cas if ca.parent is None]
    return TrustStore(roots, [ca.crl() for ca in cas] if crls is None else crls)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write_trust_dir(
    directory: Path,
    cas: Sequence[TestCA],
    crls: Iterable[x509.CertificateRevocationList] | None = None,
) -> Path:
    """A CApath-style folder: ``<n>.0`` certificates and ``<n>.r0`` CRLs."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, ca in enumerate(cas):
        (directory / f"{index:08x}.0").write_bytes(pem(ca.cert))
    for index, crl in enumerate([ca.crl() for ca in cas] if crls is None else crls):
        (directory / f"{index:08x}.r0").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return directory


def write_identity(directory: Path, identity: Identity) -> tuple[Path, Path, Path]:
    """cert.pem, key.pem (0600) and chain.pem (intermediates) for CLI tests."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / "cert.pem"
    key = directory / "key.pem"
    chain = directory / "chain.pem"
    cert.write_bytes(pem(identity.cert))
    key.touch(mode=0o600)
    key.write_bytes(
        identity.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    chain.write_bytes(pem(*identity.intermediates))
    return cert, key, chain


def self_signed_identity(subject: str, *, now: datetime, key_kind: str = "ec") -> Identity:
    """An end-entity certificate signed by its own key: fit for signing, chained to no CA."""
    key = new_key(key_kind)
    name = DistinguishedName.parse_slash(subject).to_x509()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(digital_signature=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Identity(cert=cert, key=key)
