"""The trust store: an OpenSSL CApath-style directory, chain validation, CRLs.

A grid site keeps its trust anchors in ``/etc/grid-security/certificates``:
CA certificates as ``<hash>.0`` (or ``*.pem``), CRLs as ``<hash>.r0`` (or
``*.crl.pem``) kept fresh by fetch-crl, and other files (``.info``,
``.namespaces``, ``.signing_policy``, ``.crl_url``) that are ignored here.
Self-signed CA certificates become trust anchors; other CA certificates in the
directory are offered as intermediates, as OpenSSL does.

:meth:`TrustStore.validate` decides, at a given time, whether a signer
certificate chains to an anchor, in this order:

1. every certificate offered, and then every certificate of the chain built
   (the anchor included), is within its validity period, with clear reasons
   for expired and not-yet-valid certificates;
2. cryptography's RFC 5280 path builder finds a chain to an anchor, with the
   CA rules of the Web PKI profile (critical basicConstraints, keyCertSign)
   and, for the signer, keyUsage digitalSignature and no CA flag;
3. every key in the chain is strong enough (RSA >= 2048, EC >= 256);
4. every certificate below the anchor is checked against its issuer's CRLs:
   only CRLs whose signature verifies with the issuer's key count; the serial
   must not be listed in any of them; and one of them must be current
   (``this_update <= now < next_update``) and complete (not a delta CRL, not
   narrowed by an issuing distribution point);
5. every certificate below the anchor is within the namespace its issuer may
   sign, where the directory has the issuer's IGTF ``.namespaces`` or
   ``.signing_policy`` file (:mod:`keys.namespaces`).
   With ``crl="require"`` (the default) a missing or stale CRL rejects the
   chain; with ``crl="if-present"`` only a listed serial does.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification

from keys.certs import cert_label, check_key_strength, fingerprint, is_ca, is_self_issued
from keys.dn import DistinguishedName
from keys.errors import CertificateError, ConfigError, RevokedError
from keys.namespaces import Namespaces
from keys.namespaces import load as load_namespaces

_CERT_NAME = re.compile(r"^[0-9a-f]{8}\.[0-9]$|\.pem$", re.IGNORECASE)
_CRL_NAME = re.compile(r"^[0-9a-f]{8}\.r[0-9]$|\.crl\.pem$", re.IGNORECASE)


class CrlPolicy(StrEnum):
    REQUIRE = "require"
    IF_PRESENT = "if-present"


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatedChain:
    """A chain from the signer (first) to a trust anchor (last), valid at ``at``."""

    certificates: tuple[x509.Certificate, ...]
    at: datetime

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def anchor(self) -> x509.Certificate:
        return self.certificates[-1]


@dataclass(slots=True)
class _CrlSet:
    by_issuer: dict[x509.Name, list[x509.CertificateRevocationList]] = field(default_factory=dict)


class TrustStore:
    """CA certificates and CRLs from a directory (or given directly, for tests)."""

    def __init__(
        self,
        certificates: Iterable[x509.Certificate],
        crls: Iterable[x509.CertificateRevocationList] = (),
        *,
        source: str = "<memory>",
        problems: Sequence[str] = (),
        namespaces: Namespaces | None = None,
    ) -> None:
        seen: set[str] = set()
        self.anchors: list[x509.Certificate] = []
        self.intermediates: list[x509.Certificate] = []
        for cert in certificates:
            fp = fingerprint(cert)
            if fp in seen:
                continue  # <hash>.0 symlinks to *.pem load the same certificate twice
            seen.add(fp)
            (self.anchors if is_self_issued(cert) else self.intermediates).append(cert)
        self._crls = _CrlSet()
        for crl in crls:
            self._crls.by_issuer.setdefault(crl.issuer, []).append(crl)
        self.source = source
        self.namespaces = namespaces or Namespaces()
        self.problems = (*problems, *self.namespaces.problems)
        self._store = verification.Store(self.anchors) if self.anchors else None

    @classmethod
    def from_directory(cls, directory: Path) -> TrustStore:
        """Load every CA certificate and CRL of a CApath-style directory."""
        if not directory.is_dir():
            raise ConfigError(
                f"trust directory {directory} does not exist",
                hint="give --trust DIR, e.g. /etc/grid-security/certificates",
            )
        certs: list[x509.Certificate] = []
        crls: list[x509.CertificateRevocationList] = []
        problems: list[str] = []
        for path in sorted(directory.iterdir()):
            name = path.name
            is_crl = bool(_CRL_NAME.search(name))
            if not is_crl and not _CERT_NAME.search(name):
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                problems.append(f"{name}: unreadable ({exc.strerror})")
                continue
            try:
                if is_crl:
                    crls.append(_parse_crl(data))
                else:
                    certs.extend(
                        c
                        for c in x509.load_pem_x509_certificates(data)
                        if is_ca(c) or is_self_issued(c)
                    )
            except ValueError as exc:
                problems.append(f"{name}: not a valid {'CRL' if is_crl else 'certificate'} ({exc})")
        if not certs:
            raise ConfigError(
                f"trust directory {directory} holds no CA certificates",
                hint="it should contain <hash>.0 or *.pem CA certificates",
            )
        return cls(
            certs,
            crls,
            source=str(directory),
            problems=problems,
            namespaces=load_namespaces(directory),
        )

    def validate(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        *,
        at: datetime,
        crl: CrlPolicy = CrlPolicy.REQUIRE,
    ) -> ValidatedChain:
        for cert in (leaf, *intermediates):
            _check_validity_period(cert, at)
        if self._store is None:
            raise CertificateError(f"no trust anchors in {self.source}")
        builder = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(at)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        )
        try:
            built = builder.build_client_verifier().verify(
                leaf, [*intermediates, *self.intermediates]
            )
        except verification.VerificationError as exc:
            raise CertificateError(
                f"certificate {cert_label(leaf)} does not chain to a CA in {self.source}: {exc}"
            ) from exc
        chain = tuple(built.chain)
        for index, cert in enumerate(chain):
            _check_validity_period(cert, at)  # the anchor too: an expired root trusts nothing
            role = "signer" if index == 0 else "CA"
            check_key_strength(cert.public_key(), owner=f"{role} {cert_label(cert)}")
        for cert, issuer in itertools.pairwise(chain):
            self._check_namespace(cert, issuer)
            self._check_revocation(cert, issuer, at=at, policy=crl)
        return ValidatedChain(certificates=chain, at=at)

    def _check_namespace(self, cert: x509.Certificate, issuer: x509.Certificate) -> None:
        space = self.namespaces.for_issuer(DistinguishedName.from_x509(issuer.subject))
        subject = DistinguishedName.from_x509(cert.subject)
        if space is not None and not space.allows(subject):
            raise CertificateError(
                f"certificate {subject} is outside the namespace its CA "
                f"{cert_label(issuer)} may sign ({space.source})",
                hint="the CA issued a name it is not accredited for; do not trust it",
            )

    def _check_revocation(
        self,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        *,
        at: datetime,
        policy: CrlPolicy,
    ) -> None:
        candidates = self._crls.by_issuer.get(cert.issuer, [])
        genuine = [c for c in candidates if _crl_signed_by(c, issuer)]
        for crl in genuine:
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise RevokedError(
                    f"certificate {cert_label(cert)} (serial {cert.serial_number:X}) is revoked "
                    f"by the CRL of {cert_label(issuer)}"
                )
        if policy is CrlPolicy.IF_PRESENT:
            return
        # Only a complete CRL (not a delta, not partitioned) can vouch for a certificate.
        current = [c for c in genuine if _crl_current(c, at) and _crl_complete(c)]
        if current:
            return
        if genuine:
            latest = max(c.next_update_utc or at for c in genuine)
            raise RevokedError(
                f"the CRL of {cert_label(issuer)} is stale "
                f"(next update was due {latest:%Y-%m-%d %H:%M}Z)",
                hint='refresh CRLs (fetch-crl), or set crl = "if-present" at your own risk',
            )
        forged = f" ({len(candidates)} CRL(s) with a bad signature ignored)" if candidates else ""
        raise RevokedError(
            f"no CRL for {cert_label(issuer)} in {self.source}{forged}",
            hint='install the CA\'s CRL (fetch-crl), or set crl = "if-present" at your own risk',
        )


def _parse_crl(data: bytes) -> x509.CertificateRevocationList:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    try:
        return crl.is_signature_valid(key)
    except (InvalidSignature, ValueError, TypeError):
        return False


def _crl_current(crl: x509.CertificateRevocationList, at: datetime) -> bool:
    next_update = crl.next_update_utc
    return crl.last_update_utc <= at and next_update is not None and at < next_update


def _crl_complete(crl: x509.CertificateRevocationList) -> bool:
    """False for delta CRLs and CRLs whose distribution point narrows their scope."""
    extensions = crl.extensions
    try:
        extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    except x509.ExtensionNotFound:
        pass
    else:
        return False
    try:
        idp = extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return True
    return not (
        idp.only_contains_user_certs
        or idp.only_contains_ca_certs
        or idp.only_contains_attribute_certs
        or idp.only_some_reasons
        or idp.indirect_crl
    )


def _check_validity_period(cert: x509.Certificate, at: datetime) -> None:
    if at < cert.not_valid_before_utc:
        raise CertificateError(
            f"certificate {cert_label(cert)} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z",
            hint="check this machine's clock, or wait until the certificate is valid",
        )
    if at >= cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate {cert_label(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z",
            hint="the endorser must renew the certificate and re-sign",
        )


def _require_digital_signature(
    _policy: verification.Policy, cert: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    if usage is None or not usage.digital_signature:
        raise ValueError(f"signer certificate {cert_label(cert)} lacks keyUsage digitalSignature")


def _forbid_ca_signer(
    _policy: verification.Policy, cert: x509.Certificate, bc: x509.BasicConstraints | None
) -> None:
    if bc is not None and bc.ca:
        raise ValueError(f"signer certificate {cert_label(cert)} is a CA certificate")


_EE_POLICY = (
    verification.ExtensionPolicy.permit_all()
    .require_present(x509.KeyUsage, verification.Criticality.AGNOSTIC, _require_digital_signature)
    .may_be_present(x509.BasicConstraints, verification.Criticality.AGNOSTIC, _forbid_ca_signer)
)
_CA_POLICY = verification.ExtensionPolicy.webpki_defaults_ca()
