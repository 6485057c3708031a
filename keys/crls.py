"""CRLs read as RFC 5280 says: which certificates one speaks for, and when.

:mod:`keys.trust` asks two questions of each CRL whose signature verifies
with the issuer's key: does it list this serial (then the certificate is
revoked, whatever else is true of the CRL: a CA said so), and can it vouch
that this certificate is *not* revoked now (:func:`why_unusable`)? A CRL
can vouch only if, in this order:

1. it carries no critical extension vmic does not process, in the CRL or in
   any entry (RFC 5280 §5.2, §5.3: such a CRL must not be used to decide);
2. it is complete: not a delta CRL (§5.2.4);
3. its scope covers the certificate (§5.2.5, §6.3.3 b): not indirect, not
   limited to some reasons or to attribute certificates; limited to
   end-entity or CA certificates only when the certificate is of that kind;
   and when its issuing distribution point names a partition, the
   certificate's own CRL distribution points name the same one;
4. it is current: ``thisUpdate <= now < nextUpdate``, with a nextUpdate.

Each refusal says which of these it was, so an admin reads "not yet valid
(check the clock)" or "a delta CRL" instead of a blanket "stale".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from keys.certs import is_ca, read_outside, whole_crl

_HANDLED = frozenset(
    {
        ExtensionOID.CRL_NUMBER,
        ExtensionOID.DELTA_CRL_INDICATOR,
        ExtensionOID.ISSUING_DISTRIBUTION_POINT,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.FRESHEST_CRL,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    }
)
"""CRL extensions whose meaning vmic applies, or which change nothing about coverage."""
_HANDLED_ENTRY = frozenset({CRLEntryExtensionOID.CRL_REASON, CRLEntryExtensionOID.INVALIDITY_DATE})
"""Entry extensions that only describe a revocation (reason, date); an entry stays revoked."""

REFRESH_HINT = 'refresh CRLs (fetch-crl), or set crl = "if-present" at your own risk'


@dataclass(frozen=True, slots=True, kw_only=True)
class Unusable:
    """Why a genuine CRL cannot vouch for a certificate, and what an admin can do."""

    reason: str
    hint: str = REFRESH_HINT


def parse_crl(data: bytes) -> tuple[x509.CertificateRevocationList, list[str]]:
    """A CRL in PEM or DER, read whole (every part a check reads), and what the library
    warned about it; ValueError if unusable."""

    def read() -> x509.CertificateRevocationList:
        if b"-----BEGIN" in data:
            return whole_crl(x509.load_pem_x509_crl(data))
        return whole_crl(x509.load_der_x509_crl(data))

    return read_outside(read)


def signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    try:
        return crl.is_signature_valid(key)
    except Exception:  # noqa: BLE001 - an odd signature algorithm or value is simply not valid
        return False


def lists(crl: x509.CertificateRevocationList, serial: int) -> bool:
    return crl.get_revoked_certificate_by_serial_number(serial) is not None


def why_unusable(
    crl: x509.CertificateRevocationList, cert: x509.Certificate, *, at: datetime
) -> Unusable | None:
    """None when this genuine CRL of ``cert``'s issuer vouches for ``cert`` at ``at``."""
    return why_not_current(crl, at=at, scope=lambda: _out_of_scope(crl, cert))


def why_not_current(
    crl: x509.CertificateRevocationList,
    *,
    at: datetime,
    scope: Callable[[], str | None] = lambda: None,
) -> Unusable | None:
    """Rules 1, 2 and 4 (and 3 through ``scope``): None when the CRL is a usable, complete,
    current one; `vmic site check` asks this of every CA's CRLs."""
    unknown = _unrecognised_critical(crl)
    if unknown is not None:
        return Unusable(
            reason=f"has a critical extension vmic does not process ({unknown}), "
            "so it cannot be used to decide",
            hint='ask the CA for a CRL without it, or set crl = "if-present" at your own risk',
        )
    try:
        crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    except x509.ExtensionNotFound:
        pass
    else:
        return Unusable(reason="is only a delta CRL (a complete CRL is needed)")
    outside = scope()
    if outside is not None:
        return Unusable(reason=outside)
    if at < crl.last_update_utc:
        return Unusable(
            reason=f"is not valid before {crl.last_update_utc:%Y-%m-%d %H:%M}Z (its thisUpdate)",
            hint="check this machine's clock; the CA's CRL may also be misdated",
        )
    next_update = crl.next_update_utc
    if next_update is None:
        return Unusable(reason="has no nextUpdate, so it cannot be known to be current")
    if at >= next_update:
        return Unusable(reason=f"is stale (next update was due {next_update:%Y-%m-%d %H:%M}Z)")
    return None


def _unrecognised_critical(crl: x509.CertificateRevocationList) -> str | None:
    for extension in crl.extensions:
        if extension.critical and extension.oid not in _HANDLED:
            return _extension_name(extension)
    for revoked in crl:
        for extension in revoked.extensions:
            if extension.critical and extension.oid not in _HANDLED_ENTRY:
                where = f"the entry of serial {revoked.serial_number:X}"
                return f"{_extension_name(extension)} in {where}"
    return None


def _extension_name(extension: x509.Extension[x509.ExtensionType]) -> str:
    kind = type(extension.value).__name__
    oid = extension.oid.dotted_string
    return oid if isinstance(extension.value, x509.UnrecognizedExtension) else f"{kind} {oid}"


def _out_of_scope(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> str | None:
    """Why the CRL's issuing distribution point leaves ``cert`` out, or None."""
    try:
        idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None
    if idp.indirect_crl:
        return "is an indirect CRL, which vmic does not use"
    if idp.only_some_reasons:
        return "covers only some revocation reasons (a complete CRL is needed)"
    if idp.only_contains_attribute_certs:
        return "covers attribute certificates only"
    ca = is_ca(cert)
    if idp.only_contains_user_certs and ca:
        return "covers end-entity certificates only, and this is a CA certificate"
    if idp.only_contains_ca_certs and not ca:
        return "covers CA certificates only, and this is an end-entity certificate"
    partition = _names(idp.full_name, idp.relative_name, crl.issuer)
    if partition and not partition & _distribution_points(cert):
        shown = ", ".join(sorted(str(_value(n)) for n in partition))
        return (
            f"covers only the certificates of its distribution point ({shown}), "
            "which this certificate does not name"
        )
    return None


def _names(
    full: list[x509.GeneralName] | None,
    relative: x509.RelativeDistinguishedName | None,
    issuer: x509.Name,
) -> set[x509.GeneralName]:
    """A distribution point's names; a relative name is under the CRL issuer's name."""
    names: set[x509.GeneralName] = set(full or ())
    if relative is not None:
        names.add(x509.DirectoryName(x509.Name([*issuer.rdns, relative])))
    return names


def _distribution_points(cert: x509.Certificate) -> set[x509.GeneralName]:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return set()
    names: set[x509.GeneralName] = set()
    for point in points:
        if point.crl_issuer:  # served by another issuer's (indirect) CRL: not this one
            continue
        names |= _names(point.full_name, point.relative_name, cert.issuer)
    return names


def _value(name: x509.GeneralName) -> object:
    return name.value.rfc4514_string() if isinstance(name, x509.DirectoryName) else name.value
