"""A development certificate authority, for demos, tests and small federations.

Real endorsers bring certificates from their grid CA; this CA exists so that a
federation can be tried out, tested and run among friends. A CA folder holds::

    ca.pem           the CA certificate
    ca.crl.pem       its CRL (every revocation re-signs it)
    chain.pem        for an intermediate CA only: itself and the CAs between it and the root
    private/ca.key   the CA key (folder 0700, file 0600)

Because the trust store ignores ``private/``, a CA folder can double as a
trust directory for a quick test (``--trust CA_DIR``). Issued certificates
carry keyUsage digitalSignature and extendedKeyUsage emailProtection, the
profile a grid CA gives a personal certificate.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from keys.certs import (
    PrivateKey,
    is_self_issued,
    load_certificate,
    load_certificates,
    load_private_key,
)
from keys.dn import DistinguishedName
from keys.errors import ConfigError
from keys.fileio import read_file, write_atomic

CA_CERT = "ca.pem"
CA_CRL = "ca.crl.pem"
CA_CHAIN = "chain.pem"
CA_KEY = Path("private") / "ca.key"
KEY_TYPES = ("rsa", "ec")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_BACKDATE = timedelta(minutes=5)  # tolerate small clock differences between machines


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateAuthority:
    """A CA folder loaded into memory."""

    directory: Path
    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]  # this CA and its non-root ancestors; empty for a root

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        if not (directory / CA_CERT).is_file():
            raise ConfigError(
                f"{directory} is not a CA folder (no {CA_CERT})",
                hint="create one with `vmic keys ca --subject DN --out DIR`",
            )
        chain_path = directory / CA_CHAIN
        chain = tuple(load_certificates(chain_path)) if chain_path.exists() else ()
        return cls(
            directory=directory,
            cert=load_certificate(directory / CA_CERT),
            key=load_private_key(directory / CA_KEY),
            chain=chain,
        )


def generate_key(key_type: str = "rsa", *, rsa_bits: int = 3072) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ConfigError(f"unknown key type {key_type!r} (choose {' or '.join(KEY_TYPES)})")


def key_usage(*, digital_signature: bool = False, ca: bool = False) -> x509.KeyUsage:
    """keyUsage for a CA (keyCertSign, cRLSign) or a signer (digitalSignature)."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ConfigError("the CA key must be RSA or EC")
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(key)


def _builder(
    subject: DistinguishedName,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    *,
    now: datetime,
    days: int,
) -> x509.CertificateBuilder:
    if days < 1:
        raise ConfigError(f"--days must be at least 1, not {days}")
    return (
        x509.CertificateBuilder()
        .subject_name(subject.to_x509())
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def create_ca(
    subject: DistinguishedName,
    out: Path,
    *,
    now: datetime,
    days: int = 3650,
    key_type: str = "rsa",
    parent: CertificateAuthority | None = None,
    crl_days: int = 30,
) -> CertificateAuthority:
    """Create a root CA (or an intermediate under ``parent``) in a new folder."""
    if (out / CA_CERT).exists() or (out / CA_KEY).exists():
        raise ConfigError(f"{out} already holds a CA; refusing to overwrite it")
    key = generate_key(key_type)
    public_key = key.public_key()
    issuer_name = parent.cert.subject if parent else subject.to_x509()
    builder = _builder(subject, issuer_name, public_key, now=now, days=days)
    builder = builder.add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True
    ).add_extension(key_usage(ca=True), critical=True)
    if parent is not None:
        builder = builder.add_extension(
            _authority_key_id(parent.cert),
            critical=False,
        )
        if now + timedelta(days=days) > parent.cert.not_valid_after_utc:
            raise ConfigError("the intermediate CA would outlive its parent; lower --days")
    cert = builder.sign(parent.key if parent else key, hashes.SHA256())
    chain = (cert, *parent.chain) if parent else ()
    out.mkdir(parents=True, exist_ok=True)
    (out / "private").mkdir(mode=0o700, exist_ok=True)
    write_private_key(out / CA_KEY, key)
    write_pem(out / CA_CERT, [cert])
    if chain:
        write_pem(out / CA_CHAIN, list(chain))
    ca = CertificateAuthority(directory=out, cert=cert, key=key, chain=chain)
    write_crl(ca, revoked=[], now=now, days=crl_days)
    return ca


def _uses(hosts: Sequence[str]) -> list[x509.ObjectIdentifier]:
    uses = [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    if hosts:
        uses += [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return uses


def _host_name(host: str) -> x509.GeneralName:
    """A host for subjectAltName: an IP address, else a DNS name (ConfigError if neither)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _DNS_NAME.fullmatch(host):
        raise ConfigError(f"--host {host!r} is neither a DNS name nor an IP address")
    return x509.DNSName(host.lower())


def issue(
    ca: CertificateAuthority,
    subject: DistinguishedName,
    out: Path,
    *,
    now: datetime,
    email: str | None = None,
    days: int = 365,
    key_type: str = "rsa",
    hosts: Sequence[str] = (),
) -> x509.Certificate:
    """Issue an endorser or site certificate; writes cert.pem, key.pem, chain.pem.

    With ``hosts`` (DNS names or IP addresses) it is a host certificate as IGTF CAs issue
    them: extended key usage serverAuth and clientAuth besides emailProtection, the hosts
    as subjectAltName, so that it also serves TLS and is a TLS client certificate (a site
    whose `vmic serve` serves peers only)."""
    if (out / "cert.pem").exists() or (out / "key.pem").exists():
        raise ConfigError(f"{out} already holds a certificate; refusing to overwrite it")
    if now + timedelta(days=days) > ca.cert.not_valid_after_utc:
        raise ConfigError("the certificate would outlive its CA; lower --days")
    key = generate_key(key_type, rsa_bits=2048 if key_type == "rsa" else 0)
    public_key = key.public_key()
    builder = (
        _builder(subject, ca.cert.subject, public_key, now=now, days=days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(_uses(hosts)), critical=False)
        .add_extension(
            _authority_key_id(ca.cert),
            critical=False,
        )
    )
    names = [*(_host_name(h) for h in hosts), *([x509.RFC822Name(email)] if email else [])]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    out.mkdir(parents=True, exist_ok=True)
    write_private_key(out / "key.pem", key)
    write_pem(out / "cert.pem", [cert])
    write_pem(out / "chain.pem", [cert, *ca.chain])
    return cert


def revoke(ca: CertificateAuthority, cert_path: Path, *, now: datetime, crl_days: int = 30) -> int:
    """Add a certificate issued by ``ca`` to its CRL; returns the revoked serial."""
    cert = load_certificate(cert_path)
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigError(f"{cert_path} was not issued by the CA in {ca.directory}") from exc
    if is_self_issued(cert):
        raise ConfigError("a CA cannot revoke its own certificate")
    revoked = _current_revocations(ca)
    if cert.serial_number not in revoked:
        revoked[cert.serial_number] = now
    write_crl(ca, revoked=sorted(revoked.items()), now=now, days=crl_days)
    return cert.serial_number


def refresh_crl(ca: CertificateAuthority, *, now: datetime, days: int = 30) -> None:
    """Re-sign the CRL with the same revocations and a new validity window."""
    write_crl(ca, revoked=sorted(_current_revocations(ca).items()), now=now, days=days)


def _current_revocations(ca: CertificateAuthority) -> dict[int, datetime]:
    crl_path = ca.directory / CA_CRL
    if not crl_path.exists():
        return {}
    crl = x509.load_pem_x509_crl(read_file(crl_path, what="CRL"))
    return {r.serial_number: r.revocation_date_utc for r in crl}


def write_crl(
    ca: CertificateAuthority,
    *,
    revoked: list[tuple[int, datetime]],
    now: datetime,
    days: int,
) -> None:
    number = 1
    crl_path = ca.directory / CA_CRL
    if crl_path.exists():
        old = x509.load_pem_x509_crl(read_file(crl_path, what="CRL"))
        with contextlib.suppress(x509.ExtensionNotFound):
            number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - _BACKDATE)
        .next_update(now + timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            _authority_key_id(ca.cert),
            critical=False,
        )
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    write_atomic(crl_path, crl.public_bytes(serialization.Encoding.PEM))


def write_pem(path: Path, certs: list[x509.Certificate]) -> None:
    write_atomic(path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def write_private_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(path, pem, mode=0o600)
