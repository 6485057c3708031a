"""Certificates and private keys: loading from files, strength rules, summaries.

Everything here is about one certificate or one key at a time; chains and
revocation are in :mod:`keys.trust`. Key strength follows the signature
profile: RSA of at least 2048 bits or EC on a curve of at least 256 bits;
nothing else may sign an image list.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from keys.dn import DistinguishedName
from keys.errors import CertificateError, ConfigError
from keys.fileio import read_file

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def parse_certificates(data: bytes, *, source: str) -> list[x509.Certificate]:
    """All certificates in PEM data (or one DER certificate)."""
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise ConfigError(f"{source}: not a PEM or DER certificate ({exc})") from exc
    return certs


def load_certificates(path: Path) -> list[x509.Certificate]:
    return parse_certificates(read_file(path, what="certificate file"), source=str(path))


def load_certificate(path: Path) -> x509.Certificate:
    certs = load_certificates(path)
    if len(certs) != 1:
        raise ConfigError(
            f"{path} holds {len(certs)} certificates, expected one",
            hint="give the signer certificate alone; put intermediates in --chain",
        )
    return certs[0]


def load_private_key(path: Path, *, password: bytes | None = None) -> PrivateKey:
    """Load a PEM private key, refusing files that others can read (as grid tools do)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):o})",
            hint=f"chmod 600 {path}",
        )
    data = read_file(path, what="key file")
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:
        raise ConfigError(
            f"key file {path} is encrypted", hint="give the passphrase (VMIC_KEY_PASSPHRASE)"
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"key file {path}: not a usable PEM private key ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"key file {path}: only RSA and EC keys can sign image lists")
    return key


def check_key_strength(key: object, *, owner: str) -> PublicKey:
    """The key as a usable public key, or CertificateError naming ``owner``."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError(
                f"{owner}: RSA key of {key.key_size} bits, at least {MIN_RSA_BITS} required"
            )
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < MIN_EC_BITS:
            raise CertificateError(
                f"{owner}: EC key on {key.curve.name}, at least {MIN_EC_BITS} bits required"
            )
        return key
    raise CertificateError(f"{owner}: {type(key).__name__} keys are not allowed (RSA or EC only)")


def key_description(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name} ({key.curve.key_size})"
    return type(key).__name__


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated upper-case hex, as openssl prints it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def subject_dn(cert: x509.Certificate) -> DistinguishedName:
    return DistinguishedName.from_x509(cert.subject)


def issuer_dn(cert: x509.Certificate) -> DistinguishedName:
    return DistinguishedName.from_x509(cert.issuer)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


def is_self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def cert_label(cert: x509.Certificate) -> str:
    """How errors name a certificate: its subject in slash form."""
    return subject_dn(cert).slash()


def public_keys_equal(a: object, b: object) -> bool:
    if not isinstance(a, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    if not isinstance(b, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return a.public_bytes(der, fmt) == b.public_bytes(der, fmt)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateSummary:
    """What ``vmic keys show`` prints about one certificate."""

    subject: DistinguishedName
    issuer: DistinguishedName
    serial: int
    not_before: datetime
    not_after: datetime
    key: str
    sha256_fingerprint: str
    is_ca: bool
    key_usage: tuple[str, ...]
    extended_key_usage: tuple[str, ...]
    email: tuple[str, ...]


_EKU_NAMES = {
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}

_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


def summarize(cert: x509.Certificate) -> CertificateSummary:
    usages: list[str] = []
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        usages = [flag for flag in _KEY_USAGE_FLAGS if getattr(ku, flag)]
    except x509.ExtensionNotFound:
        pass
    ekus: list[str] = []
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        ekus = [_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku]
    except x509.ExtensionNotFound:
        pass
    emails: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = list(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        pass
    return CertificateSummary(
        subject=subject_dn(cert),
        issuer=issuer_dn(cert),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key=key_description(cert.public_key()),
        sha256_fingerprint=fingerprint(cert),
        is_ca=is_ca(cert),
        key_usage=tuple(usages),
        extended_key_usage=tuple(ekus),
        email=tuple(emails),
    )
