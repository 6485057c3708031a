"""Enveloped XML signatures to the vmic profile: what verifies, what is returned, what is refused.

Every list here is a real Atom list rendered by ``feeds.atom`` and signed with
a key of the in-memory test PKI. Off-profile signatures (SHA-1, HMAC, inclusive
C14N, ``URI="#id"``, a bare KeyValue ...) are built by :func:`forge`, which
writes the ``SignedInfo`` by hand and signs its canonical form with
cryptography. Each such test first checks with a permissive signxml verifier
that the forged signature is mathematically valid, so the rejection is shown
to come from the vmic profile and not from a broken signature.

THREATS 1-7 (lists and signatures).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import SignXMLException
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from feeds.atom import ATOM, FEED_TAG, VMIC, atom, render_list
from feeds.model import ImageList
from keys.dn import DistinguishedName
from keys.errors import (
    CertificateError,
    ConfigError,
    ListFormatError,
    RevokedError,
    SignatureError,
    UntrustedSignerError,
)
from keys.limits import DEFAULT_LIMITS, Limits
from keys.trust import TrustStore
from keys.xmlsafe import hardened_parser
from keys.xmlsig import (
    DS,
    ECDSA_SHA256,
    ENVELOPED,
    EXC_C14N,
    RSA_SHA256,
    SHA256,
    SHA512,
    SignerPin,
    VerifiedXml,
    add_signature_template,
    sign_enveloped,
    verify_enveloped,
)
from tests.support.ca import Identity, TestCA, pem, self_signed_identity, store, write_identity
from tests.support.lists import image_list, sign, sign_root

SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
ECDSA_SHA1 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1"
ECDSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"
HMAC_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_WITH_COMMENTS = C14N + "#WithComments"
EXC_C14N_WITH_COMMENTS = EXC_C14N + "WithComments"
C14N_11 = "http://www.w3.org/2006/12/xml-c14n11"

_DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    SHA1: hashes.SHA1,
    SHA256: hashes.SHA256,
    SHA512: hashes.SHA512,
}
_METHOD_HASH: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    RSA_SHA1: hashes.SHA1,
    ECDSA_SHA1: hashes.SHA1,
    RSA_SHA256: hashes.SHA256,
    ECDSA_SHA256: hashes.SHA256,
    ECDSA_SHA512: hashes.SHA512,
}
HMAC_KEY = b"shared secret known to the attacker"

ENDORSER_OU_ROBOTS = "/DC=org/DC=vmic-test/OU=Robots/CN=Jane Endorser"


def ds(tag: str) -> str:
    return f"{{{DS}}}{tag}"


# -- a verifier bound to the session PKI ------------------------------------------


@dataclass
class Verifier:
    trust: TrustStore
    pins: list[SignerPin] | None
    at: datetime

    def __call__(self, raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> VerifiedXml:
        return verify_enveloped(
            raw, trust=self.trust, pins=self.pins, at=self.at, root_tag=FEED_TAG, limits=limits
        )


def pin_of(identity: Identity) -> SignerPin:
    return SignerPin(subject=identity.subject, issuer=identity.issuer)


@pytest.fixture
def verify(root_ca: TestCA, endorser: Identity, now: datetime) -> Verifier:
    return Verifier(trust=store([root_ca]), pins=[pin_of(endorser)], at=now)


@pytest.fixture
def the_list(endorser: Identity, now: datetime) -> ImageList:
    return image_list(endorser, now=now, entries=2)


@pytest.fixture
def signed(the_list: ImageList, endorser: Identity) -> bytes:
    return sign(the_list, endorser)


@pytest.fixture(scope="module")
def rsa_endorser(root_ca: TestCA) -> Identity:
    return root_ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Rita RSA Endorser", key_kind="rsa")


def c14n(root: etree._Element) -> bytes:
    return etree.tostring(root, method="c14n", exclusive=True, with_comments=False)


def signed_text(the_list: ImageList) -> bytes:
    """What the endorser signed: the canonical form of the rendered list."""
    return c14n(render_list(the_list))


def parse_plain(raw: bytes) -> etree._Element:
    """Parse trusted test bytes for editing (the attacker's view of the document)."""
    return etree.fromstring(raw, parser=etree.XMLParser(resolve_entities=False))


def serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def edit(raw: bytes, change: Callable[[etree._Element], object]) -> bytes:
    root = parse_plain(raw)
    change(root)
    return serialize(root)


def replace_once(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert old in raw, old
    return raw.replace(old, new, 1)


def body(raw: bytes) -> bytes:
    """The document without its XML declaration, for embedding elsewhere."""
    assert raw.startswith(b"<?xml")
    return raw[raw.index(b"?>") + 2 :].lstrip()


def entries(root: etree._Element) -> list[etree._Element]:
    return root.findall(atom("entry"))


# -- forging signatures by hand ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Forge:
    """Every knob of an enveloped signature; the defaults are the vmic profile."""

    c14n: str = EXC_C14N
    method: str | None = None  # from the key type when None
    digest: str = SHA256
    uris: tuple[str, ...] = ("",)
    transforms: tuple[str, ...] = (ENVELOPED, EXC_C14N)
    x509_data: bool = True
    signature_tail: str = ""  # text after </ds:Signature>, which stays signed content


def _reference_input(doc: etree._Element, uri: str, transforms: tuple[str, ...]) -> bytes:
    if uri == "":
        target = doc
    else:
        found = doc.xpath("//*[@Id=$id]", id=uri[1:])
        assert isinstance(found, list)
        assert isinstance(found[0], etree._Element)
        target = found[0]
    algorithms = [t for t in transforms if t != ENVELOPED]
    algorithm = algorithms[0] if algorithms else C14N  # xmldsig's default is inclusive C14N
    return etree.tostring(
        etree.fromstring(etree.tostring(target)),
        method="c14n",
        exclusive=algorithm.startswith(EXC_C14N),
        with_comments=algorithm.endswith("WithComments"),
    )


def _sign_bytes(data: bytes, identity: Identity, method: str) -> bytes:
    if method == HMAC_SHA256:
        return hmac.new(HMAC_KEY, data, hashlib.sha256).digest()
    hash_algorithm = _METHOD_HASH[method]()
    key = identity.key
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hash_algorithm)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_algorithm)))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def forge(root: etree._Element, identity: Identity, spec: Forge = Forge()) -> bytes:
    """Sign ``root`` as ``spec`` says, without signxml's signer and its refusals."""
    doc = copy.deepcopy(root)
    last = doc[-1]
    last.tail = (last.tail or "") + spec.signature_tail  # as the enveloped transform leaves it
    digests = [
        base64.b64encode(
            hashlib.new(
                _DIGESTS[spec.digest]().name, _reference_input(doc, uri, spec.transforms)
            ).digest()
        ).decode()
        for uri in spec.uris
    ]
    last.tail = last.tail[: len(last.tail) - len(spec.signature_tail)]
    method = spec.method or (
        RSA_SHA256 if isinstance(identity.key, rsa.RSAPrivateKey) else ECDSA_SHA256
    )
    sub = etree.SubElement
    signature = sub(doc, ds("Signature"), nsmap={"ds": DS})
    signature.tail = spec.signature_tail or None
    signed_info = sub(signature, ds("SignedInfo"))
    sub(signed_info, ds("CanonicalizationMethod"), Algorithm=spec.c14n)
    sub(signed_info, ds("SignatureMethod"), Algorithm=method)
    for uri, digest in zip(spec.uris, digests, strict=True):
        reference = sub(signed_info, ds("Reference"), URI=uri)
        transforms = sub(reference, ds("Transforms"))
        for algorithm in spec.transforms:
            sub(transforms, ds("Transform"), Algorithm=algorithm)
        sub(reference, ds("DigestMethod"), Algorithm=spec.digest)
        sub(reference, ds("DigestValue")).text = digest
    value = sub(signature, ds("SignatureValue"))
    key_info = sub(signature, ds("KeyInfo"))
    if spec.x509_data:
        x509_data = sub(key_info, ds("X509Data"))
        for cert in (identity.cert, *identity.intermediates):
            der = cert.public_bytes(serialization.Encoding.DER)
            sub(x509_data, ds("X509Certificate")).text = base64.b64encode(der).decode()
    else:
        sub(key_info, ds("KeyName")).text = "attacker"
    # Canonicalize SignedInfo as a verifier does: from a fresh copy of the Signature.
    signed_info_copy = etree.fromstring(etree.tostring(signature)).find(ds("SignedInfo"))
    assert signed_info_copy is not None
    canonical = etree.tostring(
        signed_info_copy,
        method="c14n",
        exclusive=spec.c14n.startswith(EXC_C14N),
        with_comments=spec.c14n.endswith("WithComments"),
    )
    value.text = base64.b64encode(_sign_bytes(canonical, identity, method)).decode()
    return serialize(doc)


def lax_verify(
    raw: bytes,
    identity: Identity | None,
    at: datetime,
    *,
    hmac_key: bytes | None = None,
    location: str = "./",
) -> list[etree._Element]:
    """signxml with every algorithm allowed: proves a forged signature is mathematically valid.

    Returns what each reference covers, as signxml reads it.
    """
    methods = frozenset(
        m for m in SignatureMethod if (hmac_key is not None) == m.name.startswith("HMAC")
    )
    config = SignatureConfiguration(
        require_x509=identity is not None,
        location=location,
        expect_references=True,
        signature_methods=methods,
        digest_algorithms=frozenset(DigestAlgorithm),
        verification_time=at,
    )
    results = XMLVerifier().verify(
        raw,
        x509_cert=identity.cert if identity is not None else None,
        hmac_key=hmac_key,
        expect_config=config,
    )
    assert isinstance(results, list)
    covered = [result.signed_xml for result in results]
    assert all(element is not None for element in covered)
    return [element for element in covered if element is not None]


# -- what verifies ----------------------------------------------------------------


def test_good_list_verifies_and_returns_only_the_signed_content(
    verify: Verifier, signed: bytes, the_list: ImageList, endorser: Identity
) -> None:
    verified = verify(signed)

    assert verified.root.tag == FEED_TAG
    assert verified.root.find(ds("Signature")) is None
    assert not [
        e for e in verified.root.iter() if isinstance(e.tag, str) and e.tag.startswith(f"{{{DS}}}")
    ]
    assert c14n(verified.root) == signed_text(the_list)
    assert verified.signer == endorser.cert
    assert verified.signer_subject == endorser.subject
    assert verified.signer_issuer == endorser.issuer
    assert verified.signature_method == "ECDSA-SHA256"
    assert verified.digest_method == "SHA-256"


def test_nothing_outside_the_root_element_reaches_the_verified_tree(
    verify: Verifier, signed: bytes, the_list: ImageList
) -> None:
    raw = replace_once(signed, b"?>\n", b"?>\n<!-- before the feed -->\n")
    raw += b"<!-- after the feed -->\n"

    verified = verify(raw)

    assert list(verified.root.itersiblings()) == []
    assert list(verified.root.itersiblings(preceding=True)) == []
    assert b"feed -->" not in etree.tostring(verified.root.getroottree())
    assert c14n(verified.root) == signed_text(the_list)


def test_rsa_signer_is_accepted(
    verify: Verifier, rsa_endorser: Identity, the_list: ImageList
) -> None:
    verify.pins = [pin_of(rsa_endorser)]

    verified = verify(sign(the_list, rsa_endorser))

    assert verified.signature_method == "RSA-SHA256"
    assert verified.signer == rsa_endorser.cert


def test_sha512_digest_is_accepted(
    verify: Verifier, the_list: ImageList, endorser: Identity
) -> None:
    verified = verify(sign(the_list, endorser, digest="sha512"))

    assert verified.digest_method == "SHA-512"
    assert c14n(verified.root) == signed_text(the_list)


def test_signer_under_an_intermediate_verifies_with_the_chain_from_keyinfo(
    root_ca: TestCA, now: datetime
) -> None:
    inter = root_ca.intermediate("/DC=org/DC=vmic-test/CN=vmic Test Intermediate CA")
    signer = inter.issue("/DC=org/DC=vmic-test/OU=Users/CN=Ian Intermediate")
    verify = Verifier(trust=store([root_ca, inter]), pins=[pin_of(signer)], at=now)

    verified = verify(sign(image_list(signer, now=now), signer))

    assert verified.chain.certificates == (signer.cert, inter.cert, root_ca.cert)


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name)
def test_ecdsa_signers_on_larger_curves_are_accepted(
    verify: Verifier, root_ca: TestCA, now: datetime, curve: ec.EllipticCurve
) -> None:
    signer = root_ca.issue(ENDORSER_OU_ROBOTS, key=ec.generate_private_key(curve))
    verify.pins = [pin_of(signer)]

    assert verify(sign(image_list(signer, now=now), signer)).signature_method == "ECDSA-SHA256"


def test_signature_followed_by_text_verifies_when_that_text_was_signed(
    verify: Verifier, the_list: ImageList, endorser: Identity, tmp_path: Path
) -> None:
    """A pretty-printing signer leaves a newline after </ds:Signature>; it is signed content."""
    raw = forge(render_list(the_list), endorser, Forge(signature_tail="\n"))
    without_newline = replace_once(raw, b"</ds:Signature>\n", b"</ds:Signature>")

    verified = verify(raw)

    assert c14n(verified.root).endswith(b"</entry>\n\n</feed>")
    with pytest.raises(SignatureError):
        verify(without_newline)
    if XMLSEC1 is not None:
        assert _xmlsec1_verifies(raw, verify.trust, tmp_path)
        assert not _xmlsec1_verifies(without_newline, verify.trust, tmp_path)


def test_pins_none_accepts_any_trusted_signer(
    verify: Verifier, root_ca: TestCA, now: datetime
) -> None:
    anyone = root_ca.issue(ENDORSER_OU_ROBOTS)
    verify.pins = None

    assert verify(sign(image_list(anyone, now=now), anyone)).signer == anyone.cert


def test_second_of_several_pins_matching_is_accepted(
    verify: Verifier, root_ca: TestCA, endorser: Identity, signed: bytes
) -> None:
    other = root_ca.issue(ENDORSER_OU_ROBOTS)
    verify.pins = [pin_of(other), pin_of(endorser)]

    assert verify(signed).signer == endorser.cert


def test_hand_made_profile_signature_verifies(
    verify: Verifier, the_list: ImageList, endorser: Identity, rsa_endorser: Identity
) -> None:
    """The forging helper is right: with profile settings its output is accepted."""
    verify.pins = [pin_of(endorser), pin_of(rsa_endorser)]
    for identity in (endorser, rsa_endorser):
        verified = verify(forge(render_list(the_list), identity))
        assert c14n(verified.root) == signed_text(the_list)
    assert verify(forge(render_list(the_list), endorser, Forge(digest=SHA512))).digest_method == (
        "SHA-512"
    )


# -- THREATS 1: unsigned, self-signed, untrusted CA ------------------------------------


def test_unsigned_document_is_rejected(verify: Verifier, the_list: ImageList) -> None:
    with pytest.raises(SignatureError, match="not signed"):
        verify(serialize(render_list(the_list)))


def test_list_with_its_signature_removed_is_rejected(verify: Verifier, signed: bytes) -> None:
    def strip(root: etree._Element) -> None:
        signature = root.find(ds("Signature"))
        assert signature is not None
        root.remove(signature)

    with pytest.raises(SignatureError, match="not signed"):
        verify(edit(signed, strip))


def test_self_signed_signer_is_rejected(
    verify: Verifier, endorser: Identity, now: datetime
) -> None:
    rogue = self_signed_identity(endorser.subject.slash(), now=now)

    with pytest.raises(CertificateError, match="does not chain"):
        verify(sign(image_list(rogue, now=now), rogue))


def test_signer_under_an_untrusted_ca_is_rejected_even_with_the_ca_in_keyinfo(
    verify: Verifier, now: datetime
) -> None:
    rogue_root = TestCA("/DC=org/DC=vmic-test/CN=vmic Test Root CA", now=now)  # same name
    rogue_inter = rogue_root.intermediate("/DC=org/DC=vmic-test/CN=Rogue Intermediate")
    rogue = rogue_inter.issue("/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser")
    rogue.intermediates = [rogue_inter.cert, rogue_root.cert]

    with pytest.raises(CertificateError, match="does not chain") as info:
        verify(sign(image_list(rogue, now=now), rogue))

    assert not isinstance(info.value, RevokedError)


def test_revoked_signer_is_rejected(now: datetime) -> None:
    ca = TestCA("/DC=org/DC=vmic-test/CN=Revoking CA", now=now)
    signer = ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser")
    raw = sign(image_list(signer, now=now), signer)
    ca.revoke(signer.cert)
    verify = Verifier(trust=store([ca]), pins=[pin_of(signer)], at=now)

    with pytest.raises(RevokedError, match="is revoked"):
        verify(raw)


def test_list_verified_after_the_signer_expired_is_rejected(
    verify: Verifier, signed: bytes, endorser: Identity
) -> None:
    verify.at = endorser.cert.not_valid_after_utc + timedelta(seconds=1)

    with pytest.raises(CertificateError, match="expired"):
        verify(signed)


# -- THREATS 2: trusted CA, wrong endorser -------------------------------------------


def test_signer_with_same_cn_in_another_ou_is_not_the_pinned_endorser(
    verify: Verifier, root_ca: TestCA, now: datetime
) -> None:
    robot = root_ca.issue(ENDORSER_OU_ROBOTS)

    with pytest.raises(UntrustedSignerError, match="OU=Robots/CN=Jane Endorser"):
        verify(sign(image_list(robot, now=now), robot))


def test_same_subject_from_another_trusted_ca_is_not_the_pinned_endorser(
    root_ca: TestCA, endorser: Identity, now: datetime
) -> None:
    other_ca = TestCA("/DC=org/DC=other-grid/CN=Other Trusted CA", now=now)
    twin = other_ca.issue(endorser.subject.slash())
    verify = Verifier(trust=store([root_ca, other_ca]), pins=[pin_of(endorser)], at=now)

    assert twin.subject == endorser.subject
    with pytest.raises(
        UntrustedSignerError,
        match="issued by /DC=org/DC=other-grid/CN=Other Trusted CA, not by the pinned CA",
    ):
        verify(sign(image_list(twin, now=now), twin))


def test_pin_with_the_right_subject_but_another_issuer_does_not_match(
    verify: Verifier, signed: bytes, endorser: Identity
) -> None:
    verify.pins = [
        SignerPin(
            subject=endorser.subject,
            issuer=DistinguishedName.parse_slash("/DC=org/DC=vmic-test/CN=Some Other CA"),
        )
    ]

    with pytest.raises(UntrustedSignerError):
        verify(signed)


def test_list_tampered_and_re_signed_by_another_trusted_signer_is_rejected(
    verify: Verifier, signed: bytes, root_ca: TestCA
) -> None:
    robot = root_ca.issue(ENDORSER_OU_ROBOTS)
    root = parse_plain(signed)
    signature = root.find(ds("Signature"))
    assert signature is not None
    root.remove(signature)
    link = entries(root)[0].find(atom("link"))
    assert link is not None
    link.set("href", "https://evil.example.org/backdoor.qcow2")

    with pytest.raises(UntrustedSignerError):
        verify(sign_root(root, robot))


def test_certificate_in_keyinfo_swapped_for_another_of_the_same_ca_is_rejected(
    verify: Verifier, signed: bytes, root_ca: TestCA, endorser: Identity
) -> None:
    other = root_ca.issue(endorser.subject.slash())  # even the same DN: another key
    other_b64 = base64.b64encode(other.cert.public_bytes(serialization.Encoding.DER)).decode()

    def swap(root: etree._Element) -> None:
        node = root.find(
            f"{ds('Signature')}/{ds('KeyInfo')}/{ds('X509Data')}/{ds('X509Certificate')}"
        )
        assert node is not None
        node.text = other_b64

    with pytest.raises(SignatureError):
        verify(edit(signed, swap))


# -- THREATS 3: any byte of signed content changed ----------------------------------


def _remove_first_entry(root: etree._Element) -> None:
    root.remove(entries(root)[0])


def _add_entry(root: etree._Element) -> None:
    extra = copy.deepcopy(entries(root)[-1])
    id_element = extra.find(atom("id"))
    assert id_element is not None
    id_element.text = "urn:uuid:00000000-0000-4000-8000-0000000000ff"
    entries(root)[-1].addnext(extra)


def _swap_entries(root: etree._Element) -> None:
    first, second = entries(root)[:2]
    second.addnext(copy.deepcopy(first))
    root.remove(first)


def _append_after_signature(root: etree._Element) -> None:
    root.append(copy.deepcopy(entries(root)[0]))


BYTE_EDITS: dict[str, tuple[bytes, bytes]] = {
    "feed-title-letter": (
        b"<title>Test endorser list</title>",
        b"<title>Test endorser lisT</title>",
    ),
    "entry-title": (b"<title>Test image 1</title>", b"<title>Test image 7</title>"),
    "size-attribute": (b'length="7"', b'length="8"'),
    "url-attribute": (
        b'href="https://images.example.org/img-1.qcow2" length',
        b'href="https://images.example.org/img-l.qcow2" length',
    ),
    "attribute-added": (b'<link rel="self"', b'<link title="x" rel="self"'),
    "version": (b"<vmic:version>1</vmic:version>", b"<vmic:version>2</vmic:version>"),
    "digest-value": (b"<ds:DigestValue>", b"<ds:DigestValue>AAAA"),
}


@pytest.mark.parametrize(("old", "new"), BYTE_EDITS.values(), ids=BYTE_EDITS.keys())
def test_any_changed_byte_of_signed_content_is_rejected(
    verify: Verifier, signed: bytes, old: bytes, new: bytes
) -> None:
    with pytest.raises(SignatureError):
        verify(replace_once(signed, old, new))


def test_changed_sha512_of_an_image_is_rejected(verify: Verifier, signed: bytes) -> None:
    start = signed.index(b"<vmic:sha512>") + len(b"<vmic:sha512>")
    flipped = b"0" if signed[start : start + 1] != b"0" else b"1"

    with pytest.raises(SignatureError):
        verify(signed[:start] + flipped + signed[start + 1 :])


def test_changed_namespace_prefix_is_rejected(verify: Verifier, signed: bytes) -> None:
    """Same XML infoset, other bytes: exclusive C14N keeps prefixes, so the digest differs."""
    renamed = (
        replace_once(signed, b"xmlns:vmic=", b"xmlns:v=")
        .replace(b"<vmic:", b"<v:")
        .replace(b"</vmic:", b"</v:")
    )
    assert parse_plain(renamed).find(f"{{{VMIC}}}version") is not None

    with pytest.raises(SignatureError):
        verify(renamed)


@pytest.mark.parametrize(
    "change",
    [_remove_first_entry, _add_entry, _swap_entries, _append_after_signature],
    ids=["entry-removed", "entry-added", "entries-reordered", "entry-after-signature"],
)
def test_entries_added_removed_or_moved_are_rejected(
    verify: Verifier, signed: bytes, change: Callable[[etree._Element], None]
) -> None:
    with pytest.raises(SignatureError):
        verify(edit(signed, change))


def test_signature_value_changed_is_rejected(verify: Verifier, signed: bytes) -> None:
    def flip(root: etree._Element) -> None:
        node = root.find(f"{ds('Signature')}/{ds('SignatureValue')}")
        assert node is not None
        assert node.text is not None
        raw = bytearray(base64.b64decode(node.text))
        raw[5] ^= 0x01
        node.text = base64.b64encode(bytes(raw)).decode()

    with pytest.raises(SignatureError):
        verify(edit(signed, flip))


# -- THREATS 4: signature wrapping --------------------------------------------------


def test_signed_feed_nested_in_a_foreign_root_is_rejected(verify: Verifier, signed: bytes) -> None:
    wrapped = b"<wrapper xmlns='urn:evil'>" + body(signed) + b"</wrapper>"

    with pytest.raises(SignatureError, match="document root"):
        verify(wrapped)


def test_signed_feed_nested_in_an_attackers_feed_is_rejected(
    verify: Verifier, signed: bytes
) -> None:
    wrapped = (
        (
            f"<feed xmlns='{ATOM}'><title>Evil list</title>"
            "<entry><id>urn:uuid:00000000-0000-4000-8000-0000000000ee</id></entry>"
        ).encode()
        + body(signed)
        + b"</feed>"
    )

    with pytest.raises(SignatureError, match="not a direct child of the document root"):
        verify(wrapped)


def test_signature_moved_into_an_entry_is_rejected(
    verify: Verifier, signed: bytes, endorser: Identity
) -> None:
    def move(root: etree._Element) -> None:
        signature = root.find(ds("Signature"))
        assert signature is not None
        entries(root)[0].append(signature)

    raw = edit(signed, move)
    # Still a valid signature over the whole document: the transform removes it wherever it is.
    (covered,) = lax_verify(raw, endorser, verify.at, location=".//")
    assert covered.tag == FEED_TAG

    with pytest.raises(SignatureError, match="not a direct child"):
        verify(raw)


@pytest.mark.parametrize("where", ["root", "entry"])
def test_second_signature_is_rejected(verify: Verifier, signed: bytes, where: str) -> None:
    def duplicate(root: etree._Element) -> None:
        signature = root.find(ds("Signature"))
        assert signature is not None
        (root if where == "root" else entries(root)[1]).append(copy.deepcopy(signature))

    with pytest.raises(SignatureError, match="holds 2 signatures"):
        verify(edit(signed, duplicate))


def test_root_signature_referencing_only_one_entry_is_rejected(
    verify: Verifier, the_list: ImageList, endorser: Identity, now: datetime
) -> None:
    root = render_list(the_list)
    entries(root)[0].set("Id", "e1")
    raw = forge(root, endorser, Forge(uris=("#e1",)))
    (covered,) = lax_verify(raw, endorser, now)
    assert covered.tag == atom("entry")  # a valid signature, over one entry only

    with pytest.raises(SignatureError, match='URI=""'):
        verify(raw)


def test_root_signature_referencing_the_root_by_id_is_rejected(
    verify: Verifier, the_list: ImageList, endorser: Identity, now: datetime
) -> None:
    root = render_list(the_list)
    root.set("Id", "feed")
    raw = forge(root, endorser, Forge(uris=("#feed",)))
    assert [e.tag for e in lax_verify(raw, endorser, now)] == [FEED_TAG]

    with pytest.raises(SignatureError, match='URI=""'):
        verify(raw)


def test_signature_with_two_references_is_rejected(
    verify: Verifier, the_list: ImageList, endorser: Identity, now: datetime
) -> None:
    root = render_list(the_list)
    entries(root)[0].set("Id", "e1")
    raw = forge(root, endorser, Forge(uris=("", "#e1")))
    assert [e.tag for e in lax_verify(raw, endorser, now)] == [FEED_TAG, atom("entry")]

    with pytest.raises(SignatureError, match="SignedInfo"):
        verify(raw)


def test_extra_ds_object_in_the_signature_is_rejected(
    verify: Verifier, signed: bytes, endorser: Identity
) -> None:
    def add_object(root: etree._Element) -> None:
        signature = root.find(ds("Signature"))
        assert signature is not None
        obj = etree.SubElement(signature, ds("Object"), Id="payload")
        obj.append(copy.deepcopy(entries(root)[0]))

    raw = edit(signed, add_object)
    lax_verify(raw, endorser, verify.at)

    with pytest.raises(SignatureError, match="Object"):
        verify(raw)


def test_key_value_next_to_x509_data_is_rejected(
    verify: Verifier, the_list: ImageList, endorser: Identity, now: datetime
) -> None:
    signer = XMLSigner(
        signature_algorithm="ecdsa-sha256", digest_algorithm="sha256", c14n_algorithm=EXC_C14N
    )
    root = signer.sign(
        render_list(the_list), key=endorser.key, cert=[endorser.cert], always_add_key_value=True
    )
    raw = serialize(root)
    assert b"KeyValue" in raw
    lax_verify(raw, endorser, now)

    with pytest.raises(SignatureError, match="KeyValue"):
        verify(raw)


# -- THREATS 5: comments and whitespace in signed text ------------------------------


def test_comment_inside_signed_text_is_not_part_of_the_returned_text(
    verify: Verifier, the_list: ImageList, endorser: Identity
) -> None:
    root = render_list(the_list)
    title = root.find(atom("title"))
    assert title is not None
    title.text = "Test "
    comment = etree.Comment(" x ")
    comment.tail = "endorser list"
    title.append(comment)
    raw = sign_root(root, endorser)
    assert b"<title>Test <!-- x -->endorser list</title>" in raw

    verified = verify(raw)

    returned = verified.root.find(atom("title"))
    assert returned is not None
    assert returned.text == "Test endorser list"
    assert len(returned) == 0
    assert not list(verified.root.iter(etree.Comment))
    assert c14n(verified.root) == signed_text(the_list)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<title>Test endorser list</title>", b"<title>Test endorser<!-- evil --> list</title>"),
        (b"<vmic:osname>AlmaLinux</vmic:osname>", b"<vmic:osname>Alma<!---->Linux</vmic:osname>"),
        (b"<entry>", b"<entry><!-- <link rel='enclosure' href='https://evil/'/> -->"),
        (b"</feed>", b"</feed>\n<!-- after the root -->"),
    ],
    ids=["title", "osname", "between-elements", "after-root"],
)
def test_comments_inserted_after_signing_do_not_change_what_is_returned(
    verify: Verifier, signed: bytes, the_list: ImageList, old: bytes, new: bytes
) -> None:
    tampered = replace_once(signed, old, new)

    verified = verify(tampered)

    assert c14n(verified.root) == signed_text(the_list)
    assert c14n(verified.root) == c14n(verify(signed).root)
    assert not list(verified.root.iter(etree.Comment))
    title = verified.root.find(atom("title"))
    assert title is not None
    assert title.text == "Test endorser list"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<title>Test endorser list</title>", b"<title>Test endorser  list</title>"),
        (b"<title>Test endorser list</title>", b"<title>Test endorser list </title>"),
        (b"<title>Test endorser list</title>", b"<title>\nTest endorser list</title>"),
        (b"<vmic:version>1</vmic:version>", b"<vmic:version> 1</vmic:version>"),
        (b"</title>\n", b"</title>\n\n"),
        (b"<vmic:sha512>", b"<vmic:sha512>\t"),
        (b'length="7"', b'length=" 7"'),
        (b"</ds:Signature>", b"</ds:Signature>\n"),  # the signature's tail is signed text
        (b"</ds:Signature>", b"</ds:Signature>EVIL"),
    ],
    ids=[
        "inner",
        "trailing",
        "leading-newline",
        "version",
        "between-elements",
        "tab",
        "attribute",
        "after-signature",
        "text-after-signature",
    ],
)
def test_whitespace_inserted_after_signing_is_rejected(
    verify: Verifier, signed: bytes, old: bytes, new: bytes
) -> None:
    with pytest.raises(SignatureError):
        verify(replace_once(signed, old, new))


def _move_signature_first(root: etree._Element) -> None:
    signature = root.find(ds("Signature"))
    assert signature is not None
    id_element = root.find(atom("id"))
    assert id_element is not None
    id_element.addprevious(signature)  # it has no tail: the text around it is unchanged


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<vmic:version>1</vmic:version>", b"<vmic:version>1<?pi x?></vmic:version>"),
        (
            b"<?xml version='1.0' encoding='UTF-8'?>\n",
            b"<?xml version='1.0' encoding='UTF-8'?>\n<?pi x?>\n",
        ),
    ],
    ids=["inside", "before-root"],
)
def test_processing_instruction_inserted_after_signing_is_rejected(
    verify: Verifier, signed: bytes, old: bytes, new: bytes
) -> None:
    """Unlike comments, C14N keeps processing instructions; the profile has none."""
    with pytest.raises(ListFormatError, match="processing instruction"):
        verify(replace_once(signed, old, new))


def test_signature_moved_elsewhere_among_the_root_children_still_verifies(
    verify: Verifier, signed: bytes, the_list: ImageList
) -> None:
    """Where the signature sits is not signed content: the enveloped transform removes it."""
    moved = edit(signed, _move_signature_first)
    assert moved.index(b"<ds:Signature") < moved.index(b"<id>")

    assert c14n(verify(moved).root) == signed_text(the_list)


def test_whitespace_inside_markup_is_not_content_and_still_verifies(
    verify: Verifier, signed: bytes, the_list: ImageList
) -> None:
    spaced = replace_once(signed, b'<link rel="self" href', b'<link  rel = "self"\n   href')
    spaced = replace_once(spaced, b"</title>", b"</title   >")

    assert c14n(verify(spaced).root) == signed_text(the_list)


# -- THREATS 6: hostile XML ------------------------------------------------------------

ATOM_OPEN = f'<feed xmlns="{ATOM}">'.encode()

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE feed [\n<!ENTITY lol "lol">\n'
    + b"".join(
        f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">\n'.encode()
        for n in range(1, 10)
    )
    + b"]>\n"
    + ATOM_OPEN
    + b"<title>&lol9;</title></feed>"
)


def _external_entity(secret: Path) -> bytes:
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE feed [<!ENTITY xxe SYSTEM "'
        + secret.as_uri().encode()
        + b'">]>\n'
        + ATOM_OPEN
        + b"<title>&xxe;</title></feed>"
    )


def _external_dtd(secret: Path) -> bytes:
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE feed SYSTEM "'
        + secret.as_uri().encode()
        + b'">\n'
        + ATOM_OPEN
        + b"<title>x</title></feed>"
    )


def _parameter_entity(secret: Path) -> bytes:
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE feed [<!ENTITY % p SYSTEM "'
        + secret.as_uri().encode()
        + b'"> %p;]>\n'
        + ATOM_OPEN
        + b"<title>x</title></feed>"
    )


@dataclass(frozen=True)
class Secret:
    """A local file an attacker would like read; its access time shows whether it was."""

    path: Path
    atime_recorded: bool  # False on file systems mounted noatime: then reads go unseen

    def reset(self) -> None:
        os.utime(self.path, ns=(0, self.path.stat().st_mtime_ns))

    def assert_not_read(self) -> None:
        if self.atime_recorded:
            assert self.path.stat().st_atime_ns == 0, f"{self.path} was read"


@pytest.fixture
def secret(tmp_path: Path) -> Secret:
    probe = tmp_path / "probe"
    probe.write_text("x")
    os.utime(probe, ns=(0, probe.stat().st_mtime_ns))
    probe.read_bytes()
    path = tmp_path / "secret.dtd"
    path.write_text('<!ENTITY leak "TOP-SECRET-CONTENT">')
    found = Secret(path=path, atime_recorded=probe.stat().st_atime_ns != 0)
    found.reset()
    return found


@pytest.mark.parametrize(
    "make",
    [lambda _: BILLION_LAUGHS, _external_entity, _external_dtd, _parameter_entity],
    ids=["billion-laughs", "external-entity", "external-dtd", "parameter-entity"],
)
def test_dtds_and_entities_are_rejected_without_expansion_or_file_access(
    verify: Verifier, secret: Secret, make: Callable[[Path], bytes]
) -> None:
    raw = make(secret.path)

    with pytest.raises(ListFormatError, match="DTD") as info:
        verify(raw)

    secret.assert_not_read()
    assert "TOP-SECRET" not in str(info.value)
    assert "lollol" not in str(info.value)


def test_hardened_parser_itself_never_expands_an_entity_bomb() -> None:
    """Defence in depth, past the byte check: libxml2 either refuses or leaves it unexpanded."""
    parser = hardened_parser()
    root: etree._Element | None
    try:
        root = etree.fromstring(BILLION_LAUGHS, parser=parser)
    except etree.XMLSyntaxError:
        root = None
    if root is None:
        assert "amplification" in str(parser.error_log)
    else:
        assert len(etree.tostring(root)) < 1000


def test_hardened_parser_itself_neither_substitutes_nor_reads_an_external_entity(
    secret: Secret,
) -> None:
    root = etree.fromstring(_external_entity(secret.path), parser=hardened_parser())

    assert b"TOP-SECRET" not in etree.tostring(root)
    assert "TOP-SECRET" not in "".join(str(text) for text in root.itertext())
    secret.assert_not_read()


def _declared_entities(root: etree._Element) -> dict[str, str | None]:
    docinfo = root.getroottree().docinfo
    declared: dict[str, str | None] = {}
    for dtd in (docinfo.internalDTD, docinfo.externalDTD):
        if dtd is not None:
            entities = dtd.iterentities()  # type: ignore[attr-defined]  # missing from lxml-stubs
            declared.update((entity.name, entity.content) for entity in entities)
    return declared


@pytest.mark.parametrize(
    "make", [_external_dtd, _parameter_entity], ids=["external-dtd", "parameter-entity"]
)
def test_hardened_parser_itself_does_not_read_files_named_in_a_dtd(
    secret: Secret, make: Callable[[Path], bytes]
) -> None:
    """The parser "resolves nothing outside the document": no local file is read either.

    (verify_enveloped refuses these documents before parsing, on the bytes
    ``<!DOCTYPE``; this is the second line of defence, and what
    ``hardened_parser`` promises.)
    """
    root = etree.fromstring(make(secret.path), parser=hardened_parser())

    assert "TOP-SECRET-CONTENT" not in _declared_entities(root).values()
    secret.assert_not_read()


def test_dtd_prepended_to_a_validly_signed_list_is_rejected(
    verify: Verifier, signed: bytes
) -> None:
    raw = replace_once(signed, b"?>\n", b"?>\n<!DOCTYPE feed [<!ENTITY e 'x'>]>\n")

    with pytest.raises(ListFormatError, match="DTD"):
        verify(raw)


# A DTD that a byte search for "<!DOCTYPE" does not see.
EBCDIC_WITH_DTD = (
    '<?xml version="1.0" encoding="IBM037"?><!DOCTYPE feed [<!ENTITY a "b">]><feed>&a;</feed>'
).encode("cp037")


@pytest.mark.parametrize(
    "raw",
    [
        '<?xml version="1.0" encoding="UTF-16"?><feed/>'.encode("utf-16"),
        '<?xml version="1.0" encoding="UTF-16"?><feed/>'.encode("utf-16-le"),
        EBCDIC_WITH_DTD,
        b'<?xml version="1.0" encoding="ISO-8859-1"?><feed xmlns="http://www.w3.org/2005/Atom"/>',
    ],
    ids=["utf-16-bom", "utf-16-le", "ebcdic-hiding-a-dtd", "latin-1"],
)
def test_documents_not_in_utf8_are_rejected(verify: Verifier, raw: bytes) -> None:
    with pytest.raises(ListFormatError):
        verify(raw)


def _nest(root: etree._Element, depth: int) -> None:
    node = entries(root)[0]
    for _ in range(depth):
        node = etree.SubElement(node, f"{{{VMIC}}}nested")
    node.text = "deep"


def test_deep_nesting_in_a_validly_signed_list_is_rejected(
    verify: Verifier, the_list: ImageList, endorser: Identity
) -> None:
    root = render_list(the_list)
    _nest(root, 100)
    raw = sign_root(root, endorser)

    with pytest.raises(ListFormatError, match="deeper than the limit of 32"):
        verify(raw)


def test_nesting_beyond_libxml2s_own_limit_is_rejected(verify: Verifier, signed: bytes) -> None:
    raw = replace_once(signed, b"<vmic:os>", b"<a>" * 5000 + b"</a>" * 5000 + b"<vmic:os>")

    with pytest.raises(ListFormatError):
        verify(raw)


def test_depth_limit_is_exact(verify: Verifier, signed: bytes) -> None:
    # feed / ds:Signature / ds:SignedInfo / ds:Reference / ds:Transforms / ds:Transform
    assert verify(signed, limits=Limits(max_xml_depth=6)).root.tag == FEED_TAG
    with pytest.raises(ListFormatError, match="deeper than the limit of 5"):
        verify(signed, limits=Limits(max_xml_depth=5))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<summary>A small", b"<summary>" + b"A" * 20_000_000 + b"A small"),
        (b'<link rel="self"', b'<link title="' + b"A" * 20_000_000 + b'" rel="self"'),
        (b"<summary>A small", b"<summary>" + b"&#65;" * 2_000_000 + b"A" * 9_000_000 + b"A small"),
    ],
    ids=["text-node", "attribute", "character-references"],
)
def test_twenty_megabyte_values_are_rejected_while_parsing(
    verify: Verifier, signed: bytes, old: bytes, new: bytes
) -> None:
    """libxml2's own bound on one value, with a byte cap raised above the document's size."""
    with pytest.raises(ListFormatError, match="not well-formed"):
        verify(replace_once(signed, old, new), limits=Limits(max_list_bytes=64 * 2**20))


def test_document_over_the_byte_cap_is_rejected_before_parsing(
    verify: Verifier, signed: bytes
) -> None:
    assert verify(signed, limits=Limits(max_list_bytes=len(signed))).root.tag == FEED_TAG
    with pytest.raises(ListFormatError, match=f"{len(signed)} bytes, over the limit"):
        verify(signed, limits=Limits(max_list_bytes=len(signed) - 1))


def test_byte_cap_applies_before_any_xml_is_read(verify: Verifier) -> None:
    garbage = b"\x00" * 2048  # would be a syntax error if parsed

    with pytest.raises(ListFormatError, match="over the limit of 1024"):
        verify(garbage, limits=Limits(max_list_bytes=1024))


def test_malformed_xml_is_a_list_format_error(verify: Verifier, signed: bytes) -> None:
    with pytest.raises(ListFormatError, match="not well-formed"):
        verify(signed[: len(signed) // 2])


# -- THREATS 7: weak or odd algorithms ----------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (Forge(digest=SHA1), "digest method"),
        (Forge(method=ECDSA_SHA1), "signature method"),
        (Forge(method=ECDSA_SHA512), "signature method"),  # strong, but not in the profile
        (Forge(c14n=C14N), "canonicalization"),
        (Forge(c14n=C14N_WITH_COMMENTS), "canonicalization"),
        (Forge(c14n=EXC_C14N_WITH_COMMENTS), "canonicalization"),
        (Forge(c14n=C14N_11), "canonicalization"),
        (Forge(transforms=(ENVELOPED, C14N)), "transforms"),
        (Forge(transforms=(ENVELOPED, EXC_C14N_WITH_COMMENTS)), "transforms"),
        (Forge(transforms=(ENVELOPED,)), "Transform"),
    ],
    ids=[
        "sha1-digest",
        "ecdsa-sha1",
        "ecdsa-sha512",
        "inclusive-c14n",
        "inclusive-c14n-with-comments",
        "exclusive-c14n-with-comments",
        "c14n-1.1",
        "inclusive-c14n-transform",
        "with-comments-transform",
        "no-c14n-transform",
    ],
)
def test_valid_signature_with_off_profile_algorithms_is_rejected(
    verify: Verifier, the_list: ImageList, endorser: Identity, spec: Forge, fragment: str
) -> None:
    raw = forge(render_list(the_list), endorser, spec)
    lax_verify(raw, endorser, verify.at)

    with pytest.raises(SignatureError, match=fragment):
        verify(raw)


def test_rsa_sha1_signature_is_rejected(
    verify: Verifier, the_list: ImageList, rsa_endorser: Identity, now: datetime
) -> None:
    verify.pins = [pin_of(rsa_endorser)]
    raw = forge(render_list(the_list), rsa_endorser, Forge(method=RSA_SHA1, digest=SHA1))
    lax_verify(raw, rsa_endorser, now)

    with pytest.raises(SignatureError, match=r"signature method .*rsa-sha1.* is not allowed"):
        verify(raw)


def test_hmac_signature_is_rejected(
    verify: Verifier, the_list: ImageList, endorser: Identity, now: datetime
) -> None:
    raw = forge(render_list(the_list), endorser, Forge(method=HMAC_SHA256, x509_data=False))
    lax_verify(raw, None, now, hmac_key=HMAC_KEY)

    with pytest.raises(SignatureError, match="hmac-sha256"):
        verify(raw)


def test_bare_key_value_without_x509_data_is_rejected(
    verify: Verifier, the_list: ImageList, endorser: Identity, now: datetime
) -> None:
    signer = XMLSigner(
        signature_algorithm="ecdsa-sha256", digest_algorithm="sha256", c14n_algorithm=EXC_C14N
    )
    raw = serialize(signer.sign(render_list(the_list), key=endorser.key))
    assert b"KeyValue" in raw
    assert b"X509Data" not in raw
    lax_verify(raw, None, now)

    with pytest.raises(SignatureError, match="KeyInfo"):
        verify(raw)


def test_key_name_instead_of_a_certificate_is_rejected(
    verify: Verifier, the_list: ImageList, endorser: Identity
) -> None:
    with pytest.raises(SignatureError, match="KeyInfo"):
        verify(forge(render_list(the_list), endorser, Forge(x509_data=False)))


def test_ecdsa_signature_value_in_der_instead_of_r_and_s_is_rejected(
    verify: Verifier, signed: bytes
) -> None:
    """XML DSig wants the raw r||s; the same (valid) values DER-encoded are off-profile."""

    def to_der(root: etree._Element) -> None:
        node = root.find(f"{ds('Signature')}/{ds('SignatureValue')}")
        assert node is not None
        assert node.text is not None
        raw = base64.b64decode(node.text)
        half = len(raw) // 2
        r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        node.text = base64.b64encode(encode_dss_signature(r, s)).decode()

    with pytest.raises(SignatureError):
        verify(edit(signed, to_der))


def test_signature_method_that_does_not_fit_the_key_is_rejected(
    verify: Verifier, the_list: ImageList, rsa_endorser: Identity
) -> None:
    verify.pins = [pin_of(rsa_endorser)]
    # An RSA PKCS#1 v1.5 signature announced as ECDSA-SHA256.
    raw = forge(render_list(the_list), rsa_endorser, Forge(method=ECDSA_SHA256))

    with pytest.raises(SignatureError):
        verify(raw)


def test_valid_signature_by_an_rsa_1024_key_is_rejected(
    root_ca: TestCA, the_list: ImageList, now: datetime
) -> None:
    weak = root_ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Weak Key", key_kind="rsa", rsa_bits=1024)
    raw = forge(render_list(the_list), weak)
    lax_verify(raw, weak, now)
    verify = Verifier(trust=store([root_ca]), pins=[pin_of(weak)], at=now)

    with pytest.raises(CertificateError, match="RSA key of 1024 bits"):
        verify(raw)


def test_keyinfo_with_two_end_entity_certificates_is_rejected(
    verify: Verifier, signed: bytes, root_ca: TestCA
) -> None:
    other = root_ca.issue(ENDORSER_OU_ROBOTS)

    def add_leaf(root: etree._Element) -> None:
        x509_data = root.find(f"{ds('Signature')}/{ds('KeyInfo')}/{ds('X509Data')}")
        assert x509_data is not None
        der = other.cert.public_bytes(serialization.Encoding.DER)
        etree.SubElement(x509_data, ds("X509Certificate")).text = base64.b64encode(der).decode()

    with pytest.raises(SignatureError, match="2 end-entity certificates"):
        verify(edit(signed, add_leaf))


def test_keyinfo_with_more_than_ten_certificates_is_rejected(
    verify: Verifier, signed: bytes, root_ca: TestCA
) -> None:
    ca_der = base64.b64encode(root_ca.cert.public_bytes(serialization.Encoding.DER)).decode()

    def pad(root: etree._Element) -> None:
        x509_data = root.find(f"{ds('Signature')}/{ds('KeyInfo')}/{ds('X509Data')}")
        assert x509_data is not None
        for _ in range(10):
            etree.SubElement(x509_data, ds("X509Certificate")).text = ca_der

    with pytest.raises(SignatureError, match="at most 10"):
        verify(edit(signed, pad))


def test_keyinfo_certificate_that_is_not_der_is_rejected(verify: Verifier, signed: bytes) -> None:
    def garble(root: etree._Element) -> None:
        node = root.find(
            f"{ds('Signature')}/{ds('KeyInfo')}/{ds('X509Data')}/{ds('X509Certificate')}"
        )
        assert node is not None
        node.text = "bm90IGEgY2VydGlmaWNhdGU="

    with pytest.raises(SignatureError, match="not a well-formed certificate"):
        verify(edit(signed, garble))


# -- signing -----------------------------------------------------------------------


def test_sign_refuses_a_key_that_does_not_match_the_certificate(
    the_list: ImageList, endorser: Identity, root_ca: TestCA
) -> None:
    other = root_ca.issue(ENDORSER_OU_ROBOTS)

    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        sign_enveloped(render_list(the_list), key=other.key, cert=endorser.cert)


def test_sign_refuses_digests_outside_the_profile(the_list: ImageList, endorser: Identity) -> None:
    for digest in ("sha1", "md5", "sha384", ""):
        with pytest.raises(ConfigError, match="not allowed"):
            sign_enveloped(
                render_list(the_list), key=endorser.key, cert=endorser.cert, digest=digest
            )


def test_sign_refuses_a_weak_key(root_ca: TestCA, the_list: ImageList) -> None:
    weak = root_ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Weak Key", key_kind="ec-small")

    with pytest.raises(CertificateError, match="secp192r1"):
        sign_enveloped(render_list(the_list), key=weak.key, cert=weak.cert)


def test_signing_is_stable_for_the_signed_content(
    verify: Verifier, the_list: ImageList, endorser: Identity
) -> None:
    first, second = sign(the_list, endorser), sign(the_list, endorser)

    assert c14n(verify(first).root) == c14n(verify(second).root) == signed_text(the_list)


# -- other implementations -------------------------------------------------------------

XMLSEC1 = shutil.which("xmlsec1")


@pytest.mark.skipif(XMLSEC1 is None, reason="xmlsec1 is not installed")
def test_template_signed_by_xmlsec1_verifies(
    verify: Verifier, the_list: ImageList, endorser: Identity, tmp_path: Path
) -> None:
    assert XMLSEC1 is not None
    cert, key, _chain = write_identity(tmp_path / "id", endorser)
    root = render_list(the_list)
    add_signature_template(root, key_type="ec")
    template = tmp_path / "template.xml"
    template.write_bytes(serialize(root))
    out = tmp_path / "signed.xml"

    subprocess.run(
        [XMLSEC1, "--sign", "--privkey-pem", f"{key},{cert}", "--output", str(out), str(template)],
        check=True,
        capture_output=True,
    )
    verified = verify(out.read_bytes())

    assert c14n(verified.root) == signed_text(the_list)
    assert verified.signer == endorser.cert


@pytest.mark.skipif(XMLSEC1 is None, reason="xmlsec1 is not installed")
def test_list_signed_by_vmic_verifies_with_xmlsec1(
    signed: bytes, root_ca: TestCA, tmp_path: Path
) -> None:
    assert XMLSEC1 is not None
    (tmp_path / "root.pem").write_bytes(pem(root_ca.cert))
    (tmp_path / "list.xml").write_bytes(signed)

    result = subprocess.run(
        [
            XMLSEC1,
            "--verify",
            "--trusted-pem",
            str(tmp_path / "root.pem"),
            str(tmp_path / "list.xml"),
        ],
        check=False,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert "OK" in result.stderr


# -- differential: signxml's general verifier and xmlsec1 agree with vmic's -----------

# Other bytes, same canonical form: what the endorser signed is unchanged.
ACCEPTED_VARIANTS: dict[str, Callable[[bytes], bytes]] = {
    "as-signed": lambda raw: raw,
    "comment-in-text": lambda raw: replace_once(
        raw, b"<title>Test endorser list</title>", b"<title>Test <!---->endorser list</title>"
    ),
    "comment-between-elements": lambda raw: replace_once(raw, b"<entry>", b"<entry><!-- x -->"),
    "blanks-in-markup": lambda raw: replace_once(raw, b'<link rel="self"', b'<link  rel = "self"'),
    "cdata-for-text": lambda raw: replace_once(
        raw, b">Test endorser list<", b"><![CDATA[Test endorser]]> list<"
    ),
    "character-reference": lambda raw: replace_once(
        raw, b">Test endorser list<", b">Test&#32;endorser&#x20;list<"
    ),
    "signature-moved-first": lambda raw: edit(raw, _move_signature_first),
    "ds-namespace-declared-on-the-root": lambda raw: replace_once(
        replace_once(raw, f' xmlns:ds="{DS}"'.encode(), b""),
        b"<feed ",
        f'<feed xmlns:ds="{DS}" '.encode(),
    ),
}
# Signed content changed.
REJECTED_VARIANTS: dict[str, Callable[[bytes], bytes]] = {
    "title-changed": lambda raw: replace_once(raw, b"endorser list<", b"endorser lisT<"),
    "blank-in-text": lambda raw: replace_once(raw, b"endorser list<", b"endorser list <"),
    "text-after-signature": lambda raw: replace_once(raw, b"</ds:Signature>", b"</ds:Signature>x"),
    "entry-removed": lambda raw: edit(raw, _remove_first_entry),
    "prefix-renamed": lambda raw: (
        replace_once(raw, b"xmlns:vmic=", b"xmlns:v=")
        .replace(b"<vmic:", b"<v:")
        .replace(b"</vmic:", b"</v:")
    ),
}


def strict_signxml(raw: bytes, identity: Identity, at: datetime) -> bytes:
    """signxml's general verifier, configured to the vmic profile: the signed bytes."""
    config = SignatureConfiguration(
        location="./",
        expect_references=1,
        signature_methods=frozenset({SignatureMethod(RSA_SHA256), SignatureMethod(ECDSA_SHA256)}),
        digest_algorithms=frozenset({DigestAlgorithm(SHA256), DigestAlgorithm(SHA512)}),
        verification_time=at,
    )
    result = XMLVerifier().verify(
        raw,
        x509_cert=identity.cert,
        parser=etree.XMLParser(resolve_entities=False),
        expect_config=config,
    )
    assert not isinstance(result, list)
    signed_data = result.signed_data
    assert isinstance(signed_data, bytes)
    return signed_data


@pytest.mark.parametrize("variant", ACCEPTED_VARIANTS.values(), ids=ACCEPTED_VARIANTS.keys())
def test_signxml_returns_the_same_signed_content(
    verify: Verifier,
    signed: bytes,
    the_list: ImageList,
    endorser: Identity,
    variant: Callable[[bytes], bytes],
) -> None:
    raw = variant(signed)

    content = c14n(verify(raw).root)

    assert content == signed_text(the_list)
    assert content == strict_signxml(raw, endorser, verify.at)


@pytest.mark.parametrize("variant", REJECTED_VARIANTS.values(), ids=REJECTED_VARIANTS.keys())
def test_signxml_rejects_what_vmic_rejects(
    verify: Verifier,
    signed: bytes,
    endorser: Identity,
    now: datetime,
    variant: Callable[[bytes], bytes],
) -> None:
    raw = variant(signed)

    with pytest.raises(SignatureError):
        verify(raw)
    # signxml re-serializes the signature with its tail, which lxml then refuses to parse.
    with pytest.raises((SignXMLException, etree.XMLSyntaxError)):
        strict_signxml(raw, endorser, now)


def _xmlsec1_verifies(raw: bytes, trust: TrustStore, directory: Path) -> bool:
    """xmlsec1 --verify against the anchors of ``trust`` (it checks no CRLs)."""
    assert XMLSEC1 is not None
    (directory / "root.pem").write_bytes(pem(*trust.anchors))
    (directory / "list.xml").write_bytes(raw)
    result = subprocess.run(
        [
            XMLSEC1,
            "--verify",
            "--trusted-pem",
            str(directory / "root.pem"),
            str(directory / "list.xml"),
        ],
        check=False,
        capture_output=True,
    )
    return result.returncode == 0


@pytest.mark.skipif(XMLSEC1 is None, reason="xmlsec1 is not installed")
@pytest.mark.parametrize(
    ("variant", "accepted"),
    [(v, True) for v in ACCEPTED_VARIANTS.values()]
    + [(v, False) for v in REJECTED_VARIANTS.values()],
    ids=[*ACCEPTED_VARIANTS.keys(), *REJECTED_VARIANTS.keys()],
)
def test_xmlsec1_agrees_on_what_verifies(
    verify: Verifier,
    signed: bytes,
    tmp_path: Path,
    variant: Callable[[bytes], bytes],
    accepted: bool,
) -> None:
    raw = variant(signed)

    assert _xmlsec1_verifies(raw, verify.trust, tmp_path) is accepted
    if accepted:
        assert verify(raw).root.tag == FEED_TAG
    else:
        with pytest.raises(SignatureError):
            verify(raw)


def test_a_wrong_endorser_and_a_wrong_ca_pin_are_told_apart(
    root_ca: TestCA, endorser: Identity, now: datetime
) -> None:
    """The message (and its hint) says which half of the pin to look at."""
    signed = sign(image_list(endorser, now=now), endorser)
    wrong_ca = SignerPin(
        subject=endorser.subject, issuer=DistinguishedName.parse("/DC=org/DC=x/CN=Typo CA")
    )
    wrong_endorser = SignerPin(
        subject=DistinguishedName.parse("/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorsr"),
        issuer=endorser.issuer,
    )

    with pytest.raises(UntrustedSignerError) as ca_case:
        Verifier(trust=store([root_ca]), pins=[wrong_ca], at=now)(signed)
    with pytest.raises(UntrustedSignerError) as endorser_case:
        Verifier(trust=store([root_ca]), pins=[wrong_endorser], at=now)(signed)

    assert "not by the pinned CA /DC=org/DC=x/CN=Typo CA" in ca_case.value.message
    assert "--ca-dn" in (ca_case.value.hint or "")
    assert "which is not a pinned endorser" in endorser_case.value.message
    assert "pinned: /DC=org/DC=vmic-test/OU=Users/CN=Jane Endorsr" in endorser_case.value.message
    assert "--endorser-dn" in (endorser_case.value.hint or "")
