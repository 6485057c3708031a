"""The trust store: an OpenSSL CApath-style directory, chain validation, CRLs.

A grid site keeps its trust anchors in ``/etc/grid-security/certificates``:
CA certificates as ``<hash>.0`` (or ``*.pem``), CRLs as ``<hash>.r0`` (or
``*.crl.pem``) kept fresh by fetch-crl, and other files (``.info``,
``.namespaces``, ``.signing_policy``, ``.crl_url``) that are ignored here.
Self-signed CA certificates become trust anchors; other CA certificates in the
directory are offered as intermediates, as OpenSSL does.

Such a directory is large and kept by package updates: one file that cannot
be used (truncated, malformed, or parsed by the library only with a warning)
must not take the site down. Loading keeps what it can and records each
unusable file once in :attr:`TrustStore.problems` (``"name: reason"``); a
chain that needed that CA fails with a message naming the file, and a CA
whose CRL file cannot be read is treated as having no usable CRL (never
as having none at all, which ``if-present`` would let pass).

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
   must not be listed in any of them; and one of them must vouch for it as
   RFC 5280 says (:mod:`keys.crls`: no unprocessed critical extension,
   complete, covering this certificate, current);
5. every certificate below the anchor is within the namespace its issuer may
   sign, where the directory has the issuer's IGTF ``.namespaces`` or
   ``.signing_policy`` file (:mod:`keys.namespaces`).
   With ``crl="require"`` (the default) a missing or unusable CRL rejects the
   chain; with ``crl="if-present"`` a listed serial does, and so does a CRL
   file of that CA that cannot be read.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509 import verification

from keys import crls as crl_rules
from keys.certs import (
    cert_label,
    check_key_strength,
    fingerprint,
    is_ca,
    is_self_issued,
    parse_certificate_data,
)
from keys.dn import DistinguishedName
from keys.errors import CertificateError, ConfigError, RevokedError, describe, outside_bytes
from keys.fileio import list_directory, read_regular
from keys.namespaces import Namespaces
from keys.namespaces import load as load_namespaces

_CERT_NAME = re.compile(r"^[0-9a-f]{8}\.[0-9]$|\.pem$", re.IGNORECASE)
_CRL_NAME = re.compile(r"^[0-9a-f]{8}\.r[0-9]$|\.crl\.pem$", re.IGNORECASE)
_PEM_BODY = re.compile(rb"-----BEGIN [^-]{1,64}-----(.*?)-----END", re.DOTALL)
_STEM = re.compile(r"(\.r?[0-9]|\.crl\.pem|\.pem)$", re.IGNORECASE)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class UnusableFile:
    """A CA certificate or CRL file of the trust directory that could not be used."""

    file: str
    reason: str
    stem: str
    """The name without ``.0``/``.r0``/``.pem``/``.crl.pem``: a CA and its CRL share it."""
    name_der: bytes | None = None
    """The CA's subject (or the CRL's issuer) as DER, when it could still be read."""

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


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
        unusable: Sequence[UnusableFile] = (),
        notes: Sequence[str] = (),
        stems: dict[str, list[x509.Certificate]] | None = None,
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
        self.unusable = tuple(unusable)
        self.notes = tuple(notes)
        """Files loaded although the library warned about them (``"name: warning"``)."""
        self._stems = stems or {}
        self.namespaces = namespaces or Namespaces()
        self.problems = (*(str(u) for u in self.unusable), *self.namespaces.problems)
        """Every file that could not be used, once, as ``"name: reason"``."""
        self._store = verification.Store(self.anchors) if self.anchors else None

    @classmethod
    def from_directory(cls, directory: Path) -> TrustStore:
        """Load every CA certificate and CRL of a CApath-style directory that can be used."""
        if not directory.is_dir():
            state = "is not a folder" if directory.exists() else "does not exist"
            raise ConfigError(
                f"trust directory {directory} {state}",
                hint="give --trust DIR, e.g. /etc/grid-security/certificates",
            )
        certs: list[x509.Certificate] = []
        crls: list[x509.CertificateRevocationList] = []
        unusable: list[UnusableFile] = []
        notes: list[str] = []
        stems: dict[str, list[x509.Certificate]] = {}
        for path in list_directory(directory, what="the trust directory"):
            name = path.name
            is_crl = bool(_CRL_NAME.search(name))
            if not is_crl and not _CERT_NAME.search(name):
                continue
            stem = _STEM.sub("", name)
            try:
                data = read_regular(path)
            except OSError as exc:
                unusable.append(
                    UnusableFile(file=name, reason=f"unreadable ({exc.strerror})", stem=stem)
                )
                continue
            if is_crl:
                try:
                    revocations, said = crl_rules.parse_crl(data)
                except ValueError as exc:
                    reason = f"not a usable CRL ({exc})"
                    unusable.append(_unusable(name, reason, stem, data, crl=True))
                    continue
                notes.extend(f"{name}: {warning}" for warning in said)
                crls.append(revocations)
                continue
            try:
                found, said = parse_certificate_data(data, source=name)
            except ConfigError as exc:
                reason = exc.message.removeprefix(f"{name}: ")
                unusable.append(_unusable(name, reason, stem, data, crl=False))
                continue
            notes.extend(f"{name}: {warning}" for warning in said)
            kept = [c for c in found if is_ca(c) or is_self_issued(c)]
            stems.setdefault(stem, []).extend(kept)
            certs.extend(kept)
        if not certs:
            raise ConfigError(
                f"trust directory {directory} holds no usable CA certificates"
                + (f" ({len(unusable)} file(s) could not be used)" if unusable else ""),
                hint="it should contain <hash>.0 or *.pem CA certificates",
            )
        return cls(
            certs,
            crls,
            source=str(directory),
            unusable=unusable,
            notes=notes,
            stems=stems,
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
        with outside_bytes(f"certificate {_label(leaf)}", CertificateError):
            return self._validate(leaf, intermediates, at=at, crl=crl)

    def _validate(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        *,
        at: datetime,
        crl: CrlPolicy,
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
        except (verification.VerificationError, ValueError) as exc:
            raise CertificateError(
                f"certificate {cert_label(leaf)} does not chain to a CA in {self.source}: "
                f"{describe(exc)}{self._unusable_ca_note(leaf, intermediates)}"
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

    @property
    def crl_count(self) -> int:
        return sum(len(found) for found in self._crls.by_issuer.values())

    def crl_states(self, *, at: datetime) -> list[tuple[x509.Certificate, str | None]]:
        """Each CA and why none of its CRLs is a usable, complete, current one (None: one is).

        What ``crl = "require"`` needs before any list from that CA can be taken;
        partitioned CRLs are not followed here (they depend on the certificate).
        """
        states: list[tuple[x509.Certificate, str | None]] = []
        for ca in (*self.anchors, *self.intermediates):
            genuine = [
                c for c in self._crls.by_issuer.get(ca.subject, []) if crl_rules.signed_by(c, ca)
            ]
            verdicts = [crl_rules.why_not_current(c, at=at) for c in genuine]
            unreadable = self._unreadable_crls(ca)
            if any(v is None for v in verdicts):
                states.append((ca, None))
            elif unreadable:
                states.append((ca, "its CRL cannot be used: " + "; ".join(map(str, unreadable))))
            elif verdicts:
                states.append(
                    (ca, "its CRL " + "; ".join(dict.fromkeys(v.reason for v in verdicts if v)))
                )
            else:
                states.append((ca, "no CRL"))
        return states

    def _unusable_ca_note(
        self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate]
    ) -> str:
        """Which unusable file of the directory may hold the CA this chain needed."""
        cas = [u for u in self.unusable if not _CRL_NAME.search(u.file)]
        if not cas:
            return ""
        needed = {c.issuer.public_bytes() for c in (leaf, *intermediates)}
        for broken in cas:
            if broken.name_der is not None and broken.name_der in needed:
                return f"; the CA it needs is in {broken}"
        unknown = [u.file for u in cas if u.name_der is None]
        if not unknown:
            return ""
        return (
            f"; {len(unknown)} file(s) of the trust directory could not be read at all "
            f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}): "
            "the CA may be among them"
        )

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
        genuine = [c for c in candidates if crl_rules.signed_by(c, issuer)]
        for revocations in genuine:  # a listed serial counts in any genuine CRL: fail closed
            if crl_rules.lists(revocations, cert.serial_number):
                raise RevokedError(
                    f"certificate {cert_label(cert)} (serial {cert.serial_number:X}) is revoked "
                    f"by the CRL of {cert_label(issuer)}"
                )
        verdicts = [crl_rules.why_unusable(c, cert, at=at) for c in genuine]
        if any(v is None for v in verdicts):
            return
        unreadable = self._unreadable_crls(issuer)
        if unreadable:
            files = "; ".join(str(u) for u in unreadable)
            raise RevokedError(
                f"the CRL of {cert_label(issuer)} cannot be used: {files}",
                hint="repair the file or refresh CRLs (fetch-crl); until then this CA's "
                "certificates are not accepted",
            )
        if policy is CrlPolicy.IF_PRESENT:
            return
        usable = [v for v in verdicts if v is not None]
        if usable:
            reasons = list(dict.fromkeys(v.reason for v in usable))
            label = cert_label(issuer)
            message = (
                f"the CRL of {label} {reasons[0]}"
                if len(reasons) == 1
                else f"no CRL of {label} vouches for {cert_label(cert)}: {'; '.join(reasons)}"
            )
            raise RevokedError(message, hint=usable[0].hint)
        forged = f" ({len(candidates)} CRL(s) with a bad signature ignored)" if candidates else ""
        raise RevokedError(
            f"no CRL for {cert_label(issuer)} in {self.source}{forged}",
            hint='install the CA\'s CRL (fetch-crl), or set crl = "if-present" at your own risk',
        )

    def _unreadable_crls(self, issuer: x509.Certificate) -> list[UnusableFile]:
        """CRL files that could not be read and belong to this CA, by name or by content."""
        subject = issuer.subject.public_bytes()
        stems = {stem for stem, certs in self._stems.items() if issuer in certs}
        return [
            u
            for u in self.unusable
            if _CRL_NAME.search(u.file) and (u.stem in stems or u.name_der == subject)
        ]


def _label(cert: x509.Certificate) -> str:
    try:
        return cert_label(cert)
    except Exception:  # noqa: BLE001 - a label for an error message must not fail itself
        return "(unreadable name)"


def _unusable(name: str, reason: str, stem: str, data: bytes, *, crl: bool) -> UnusableFile:
    return UnusableFile(file=name, reason=reason, stem=stem, name_der=_name_der(data, crl=crl))


def _name_der(data: bytes, *, crl: bool) -> bytes | None:
    """The subject of a certificate (issuer of a CRL) that cryptography refused, if a
    plainer ASN.1 reader still finds it: enough to name the file in an error."""
    der = data
    pem = _PEM_BODY.search(data)
    if pem is not None:
        try:
            der = base64.b64decode(b"".join(pem.group(1).split()), validate=True)
        except (binascii.Error, ValueError):
            return None
    try:
        if crl:
            return bytes(asn1_crl.CertificateList.load(der)["tbs_cert_list"]["issuer"].dump())
        return bytes(asn1_x509.Certificate.load(der)["tbs_certificate"]["subject"].dump())
    except Exception:  # noqa: BLE001 - best effort on bytes already known to be bad
        return None


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
