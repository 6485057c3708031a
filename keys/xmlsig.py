"""Enveloped XML signatures on a document root, to the vmic profile only.

The profile (feeds/SCHEMA.md, "Signature"): exactly one ``ds:Signature``, a
direct child of the document root; exactly one ``Reference`` with
``URI=""``; transforms enveloped-signature then exclusive C14N (and
exclusive C14N for ``SignedInfo``); RSA-SHA256 or ECDSA-SHA256; digest
SHA-256 or SHA-512; ``KeyInfo`` holding one ``X509Data`` with the signer's
certificate and any intermediates, and nothing else.

Verification order: parse with the hardened parser; check the signature's
shape against the profile (cheap, before any cryptography); validate the
signer's chain at ``at`` against the trust store, with CRLs; verify the
signature with signxml, using the validated signer certificate only; check
the signer against the pins. The caller gets :class:`VerifiedXml`, whose
``root`` is the element signxml returns as signed (re-parsed from the
canonical bytes, so unsigned comments and the signature itself are gone):
nothing else of the input is ever read.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureConstructionMethod, SignatureMethod
from signxml.exceptions import InvalidDigest, InvalidInput, InvalidSignature
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from keys.certs import PrivateKey, check_key_strength, is_ca, public_keys_equal
from keys.dn import DistinguishedName
from keys.errors import ConfigError, SignatureError, UntrustedSignerError
from keys.limits import DEFAULT_LIMITS, Limits
from keys.trust import CrlPolicy, TrustStore, ValidatedChain
from keys.xmlsafe import hardened_parser, parse_untrusted

DS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = DS + "enveloped-signature"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"

SIGNATURE_METHODS = {RSA_SHA256: "RSA-SHA256", ECDSA_SHA256: "ECDSA-SHA256"}
DIGEST_METHODS = {SHA256: "SHA-256", SHA512: "SHA-512"}
_DIGEST_BY_NAME = {"sha256": SHA256, "sha512": SHA512}
MAX_KEYINFO_CERTS = 10


def _ds(tag: str) -> str:
    return f"{{{DS}}}{tag}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SignerPin:
    """A signer a subscription trusts: the full subject DN and the issuer DN."""

    subject: DistinguishedName
    issuer: DistinguishedName

    def matches(self, cert: x509.Certificate) -> bool:
        return (
            DistinguishedName.from_x509(cert.subject) == self.subject
            and DistinguishedName.from_x509(cert.issuer) == self.issuer
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedXml:
    """What a valid signature covered, and who signed it."""

    root: etree._Element
    chain: ValidatedChain
    signature_method: str
    digest_method: str

    @property
    def signer(self) -> x509.Certificate:
        return self.chain.leaf

    @property
    def signer_subject(self) -> DistinguishedName:
        return DistinguishedName.from_x509(self.chain.leaf.subject)

    @property
    def signer_issuer(self) -> DistinguishedName:
        return DistinguishedName.from_x509(self.chain.leaf.issuer)


def verify_enveloped(
    raw: bytes,
    *,
    trust: TrustStore,
    pins: Sequence[SignerPin] | None,
    at: datetime,
    root_tag: str,
    crl: CrlPolicy = CrlPolicy.REQUIRE,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifiedXml:
    """Verify ``raw`` to the profile; ``pins=None`` accepts any trusted signer."""
    root = parse_untrusted(raw, limits=limits, what="signed document")
    if root.tag != root_tag:
        raise SignatureError(f"the document root is {root.tag}, expected {root_tag}")
    signature = _profile_signature(root)
    leaf, others = _keyinfo_certificates(signature)
    chain = trust.validate(leaf, others, at=at, crl=crl)
    signed_root = _check_signature(raw, chain.leaf, at=at, root_tag=root_tag)
    if pins is not None and not any(pin.matches(chain.leaf) for pin in pins):
        raise UntrustedSignerError(
            f"signed by {DistinguishedName.from_x509(chain.leaf.subject)} "
            f"(issuer {DistinguishedName.from_x509(chain.leaf.issuer)}), "
            "which is not a pinned endorser"
        )
    signed_info = _only(signature, "SignedInfo")
    return VerifiedXml(
        root=signed_root,
        chain=chain,
        signature_method=SIGNATURE_METHODS[_algorithm(signed_info, "SignatureMethod")],
        digest_method=DIGEST_METHODS[_algorithm(_only(signed_info, "Reference"), "DigestMethod")],
    )


def _check_signature(
    raw: bytes, leaf: x509.Certificate, *, at: datetime, root_tag: str
) -> etree._Element:
    config = SignatureConfiguration(
        require_x509=True,
        location="./",
        expect_references=1,
        signature_methods=frozenset(SignatureMethod(m) for m in SIGNATURE_METHODS),
        digest_algorithms=frozenset(DigestAlgorithm(d) for d in DIGEST_METHODS),
        verification_time=at,
    )
    try:
        result = XMLVerifier().verify(
            raw, x509_cert=leaf, parser=hardened_parser(), expect_config=config
        )
    except InvalidDigest as exc:
        raise SignatureError(
            "the signed content was changed after signing (digest mismatch)"
        ) from exc
    except (InvalidInput, InvalidSignature, etree.LxmlError) as exc:
        raise SignatureError(f"the signature does not verify: {exc}") from exc
    if isinstance(result, list) or result.signed_xml is None:
        raise SignatureError("the signature does not cover one XML element")
    signed: etree._Element = result.signed_xml
    if signed.tag != root_tag or signed.find(_ds("Signature")) is not None:
        raise SignatureError("the signed content is not the whole document")
    return signed


def _elements(node: etree._Element) -> list[etree._Element]:
    """Child elements, skipping comments and processing instructions."""
    return [child for child in node if isinstance(child.tag, str)]


def _only(node: etree._Element, tag: str) -> etree._Element:
    found = [child for child in _elements(node) if child.tag == _ds(tag)]
    if len(found) != 1:
        raise SignatureError(f"ds:{tag}: expected exactly one, found {len(found)}")
    return found[0]


def _algorithm(node: etree._Element, tag: str) -> str:
    return _only(node, tag).get("Algorithm", "")


def _expect_children(node: etree._Element, tags: Sequence[str]) -> list[etree._Element]:
    children = _elements(node)
    got = [etree.QName(c).localname if c.tag.startswith(f"{{{DS}}}") else c.tag for c in children]
    if got != list(tags):
        raise SignatureError(
            f"ds:{etree.QName(node).localname} holds {got}, the profile requires {list(tags)}"
        )
    return children


def _profile_signature(root: etree._Element) -> etree._Element:
    signatures = list(root.iter(_ds("Signature")))
    if not signatures:
        raise SignatureError("the document is not signed", hint="sign it with `vmic endorse sign`")
    if len(signatures) > 1:
        raise SignatureError(
            f"the document holds {len(signatures)} signatures; the profile allows one"
        )
    signature = signatures[0]
    if signature.getparent() is not root:
        raise SignatureError("the signature is not a direct child of the document root")
    signed_info, _value, key_info = _expect_children(
        signature, ["SignedInfo", "SignatureValue", "KeyInfo"]
    )
    c14n, method, reference = _expect_children(
        signed_info, ["CanonicalizationMethod", "SignatureMethod", "Reference"]
    )
    if c14n.get("Algorithm") != EXC_C14N or _elements(c14n):
        raise SignatureError(f"SignedInfo canonicalization must be {EXC_C14N}")
    if method.get("Algorithm") not in SIGNATURE_METHODS or _elements(method):
        raise SignatureError(
            f"signature method {method.get('Algorithm')!r} is not allowed "
            f"(only {', '.join(SIGNATURE_METHODS.values())})"
        )
    if reference.get("URI") != "" or set(reference.attrib) - {"URI", "Id"}:
        raise SignatureError(
            f'the reference must be URI="" (the whole document), not {reference.get("URI")!r}'
        )
    transforms, digest, _digest_value = _expect_children(
        reference, ["Transforms", "DigestMethod", "DigestValue"]
    )
    steps = _expect_children(transforms, ["Transform", "Transform"])
    if [t.get("Algorithm") for t in steps] != [ENVELOPED, EXC_C14N] or any(
        _elements(t) for t in steps
    ):
        raise SignatureError("transforms must be enveloped-signature then exclusive C14N, exactly")
    if digest.get("Algorithm") not in DIGEST_METHODS or _elements(digest):
        raise SignatureError(
            f"digest method {digest.get('Algorithm')!r} is not allowed "
            f"(only {', '.join(DIGEST_METHODS.values())})"
        )
    (x509_data,) = _expect_children(key_info, ["X509Data"])
    certs = _elements(x509_data)
    if not certs or any(c.tag != _ds("X509Certificate") for c in certs):
        raise SignatureError("X509Data must hold X509Certificate elements only")
    if len(certs) > MAX_KEYINFO_CERTS:
        raise SignatureError(
            f"KeyInfo holds {len(certs)} certificates, at most {MAX_KEYINFO_CERTS}"
        )
    return signature


def _keyinfo_certificates(
    signature: etree._Element,
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    certs = []
    for index, node in enumerate(signature.iter(_ds("X509Certificate")), start=1):
        try:
            der = base64.b64decode("".join((node.text or "").split()), validate=True)
            certs.append(x509.load_der_x509_certificate(der))
        except (binascii.Error, ValueError) as exc:
            raise SignatureError(f"KeyInfo certificate #{index} is not a DER certificate") from exc
    leaves = [c for c in certs if not is_ca(c)]
    if len(leaves) != 1:
        raise SignatureError(
            f"KeyInfo holds {len(leaves)} end-entity certificates; the profile needs exactly one"
        )
    return leaves[0], [c for c in certs if c is not leaves[0]]


def sign_enveloped(
    root: etree._Element,
    *,
    key: PrivateKey,
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate] = (),
    digest: str = "sha256",
) -> bytes:
    """Sign ``root`` to the profile; returns the serialized signed document."""
    if not public_keys_equal(key.public_key(), cert.public_key()):
        raise ConfigError("the private key does not belong to the certificate")
    check_key_strength(cert.public_key(), owner="signer certificate")
    if digest not in _DIGEST_BY_NAME:
        raise ConfigError(f"digest {digest!r} is not allowed (sha256 or sha512)")
    signer = XMLSigner(
        method=SignatureConstructionMethod.enveloped,
        signature_algorithm=_signature_method_for(key),
        digest_algorithm=_DIGEST_BY_NAME[digest],
        c14n_algorithm=EXC_C14N,
    )
    chain = [cert, *(c for c in intermediates if c != cert)]
    signed = signer.sign(root, key=key, cert=chain)
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


def _signature_method_for(key: PrivateKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return RSA_SHA256
    return ECDSA_SHA256


def add_signature_template(
    root: etree._Element, *, key_type: str = "rsa", digest: str = "sha256"
) -> None:
    """Append an empty profile signature for external signers (xmlsec1, tokens)."""
    if key_type not in {"rsa", "ec"} or digest not in _DIGEST_BY_NAME:
        raise ConfigError("template key type must be rsa or ec, digest sha256 or sha512")
    sub = etree.SubElement
    signature = sub(root, _ds("Signature"), nsmap={"ds": DS})
    signed_info = sub(signature, _ds("SignedInfo"))
    sub(signed_info, _ds("CanonicalizationMethod"), Algorithm=EXC_C14N)
    sub(
        signed_info,
        _ds("SignatureMethod"),
        Algorithm=RSA_SHA256 if key_type == "rsa" else ECDSA_SHA256,
    )
    reference = sub(signed_info, _ds("Reference"), URI="")
    transforms = sub(reference, _ds("Transforms"))
    sub(transforms, _ds("Transform"), Algorithm=ENVELOPED)
    sub(transforms, _ds("Transform"), Algorithm=EXC_C14N)
    sub(reference, _ds("DigestMethod"), Algorithm=_DIGEST_BY_NAME[digest])
    sub(reference, _ds("DigestValue"))
    sub(signature, _ds("SignatureValue"))
    key_info = sub(signature, _ds("KeyInfo"))
    sub(key_info, _ds("X509Data"))
