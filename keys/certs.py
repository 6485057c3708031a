"""Certificates and private keys: loading from files, strength rules, summaries.

Everything here is about one certificate or one key at a time; chains and
revocation are in :mod:`keys.trust`. Key strength follows the signature
profile: RSA of at least 2048 bits or EC on a curve of at least 256 bits;
nothing else may sign an image list.

Certificates and CRLs from outside (a list's KeyInfo, a CMS certificate set,
the trust directory, a file given on the command line) are *read whole* when
loaded: cryptography parses names, extensions and keys lazily, and on
malformed-but-parseable input raises whatever it meets (``ValueError``,
``DuplicateExtension``, ``UnsupportedAlgorithm``, ``InvalidVersion``,
``TypeError``) at the first access, deep inside some later check.
:func:`load_der_certificate`, :func:`parse_certificates` and
:func:`check_crl` touch every part once, so a bad one becomes a vmic error
naming its source, at the place it came in; afterwards the object is safe
to use. A certificate that makes the library warn (a non-positive serial, a
name attribute of an illegal length) is malformed too: it is refused where
it came with a list, and kept with a note where it came from the site's own
trust directory (:func:`read_warnings` tells which).
"""

from __future__ import annotations

import stat
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from keys.dn import DistinguishedName
from keys.errors import CertificateError, ConfigError, VmicError, describe
from keys.fileio import read_file

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
T = TypeVar("T")

_WARNINGS = threading.RLock()
"""``warnings.catch_warnings`` swaps process-wide state: one reader at a time."""


def read_outside(read: Callable[[], T]) -> tuple[T, list[str]]:
    """Run ``read`` (a parse of outside bytes): its value and what the library warned about.

    Whatever ``read`` raises becomes a ``ValueError`` with a readable reason;
    only cryptography's kinds of warnings (``UserWarning`` and its
    ``CryptographyDeprecationWarning``) are returned, and nothing is printed.
    The warnings module is process-wide, so a warning another thread raises
    meanwhile is caught too: only those raised from vmic's ``keys`` package or
    from cryptography itself count as said about these bytes.
    """
    with _WARNINGS, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = read()
        except Exception as exc:  # a library may raise anything on such bytes
            raise ValueError(describe(exc)) from exc
    said = [
        str(w.message)
        for w in caught
        if issubclass(w.category, UserWarning) and _from_here(w.filename)
    ]
    return value, list(dict.fromkeys(said))


_SOURCES = (Path(__file__).resolve().parent, Path(x509.__file__).resolve().parents[1])
"""Where a warning about outside bytes comes from: this package, or cryptography."""


def _from_here(filename: str) -> bool:
    where = Path(filename).resolve()
    return any(where.is_relative_to(source) for source in _SOURCES)


def whole(cert: x509.Certificate) -> x509.Certificate:
    """Touch every part a check may read later (names, extensions, key, dates)."""
    DistinguishedName.from_x509(cert.subject)
    DistinguishedName.from_x509(cert.issuer)
    for extension in cert.extensions:
        _ = extension.value
    cert.public_key()
    _ = (cert.serial_number, cert.not_valid_before_utc, cert.not_valid_after_utc)
    _ = (cert.signature_algorithm_oid, cert.signature, cert.tbs_certificate_bytes)
    return cert


def whole_crl(crl: x509.CertificateRevocationList) -> x509.CertificateRevocationList:
    """Touch every part of a CRL a check may read later (issuer, extensions, every entry)."""
    DistinguishedName.from_x509(crl.issuer)
    for extension in crl.extensions:
        _ = extension.value
    _ = (crl.last_update_utc, crl.next_update_utc, crl.signature_algorithm_oid)
    for revoked in crl:
        _ = (revoked.serial_number, revoked.revocation_date_utc)
        for extension in revoked.extensions:
            _ = extension.value
    return crl


def load_der_certificate(
    der: bytes, *, what: str, error: type[VmicError] = CertificateError
) -> x509.Certificate:
    """One certificate that came with a list (DER), read whole; ``error`` if unusable.

    A certificate the library only warns about is refused as well: no
    trustworthy signer needs a malformed certificate.
    """
    try:
        cert, said = read_outside(lambda: whole(x509.load_der_x509_certificate(der)))
    except ValueError as exc:
        raise error(f"{what} is not a well-formed certificate ({exc})") from exc
    if said:
        raise error(f"{what} is not a well-formed certificate ({said[0]})")
    return cert


def parse_certificate_data(data: bytes, *, source: str) -> tuple[list[x509.Certificate], list[str]]:
    """All certificates in PEM data (or one DER certificate), read whole, and the library's
    warnings about them; ConfigError naming ``source`` if any is unusable."""

    def read() -> list[x509.Certificate]:
        if b"-----BEGIN" in data:
            return [whole(c) for c in x509.load_pem_x509_certificates(data)]
        return [whole(x509.load_der_x509_certificate(data))]

    try:
        return read_outside(read)
    except ValueError as exc:
        raise ConfigError(f"{source}: not a usable certificate ({exc})") from exc


def parse_certificates(data: bytes, *, source: str) -> list[x509.Certificate]:
    """All certificates in PEM data (or one DER certificate), read whole."""
    return parse_certificate_data(data, source=source)[0]


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
