"""Hostile certificates and where a list carries them (THREATS 33).

A certificate in a list's KeyInfo (or a HEPiX list's CMS certificate set) is
not covered by the signature it serves: anyone on the path can swap it. The
helpers here re-sign mutated ``tbsCertificate`` structures with the test
CA's key, keep the signer's public key, and put the result where a list
carries certificates, so the list's own signature still verifies and the
mutation reaches every check behind it.
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from lxml import etree

from keys.xmlsig import DS
from tests.support import der
from tests.support.ca import Identity, TestCA

BASIC_CONSTRAINTS = bytes.fromhex("0603551d13")  # OID 2.5.29.19, as DER


def certificate_der(identity: Identity) -> bytes:
    return identity.cert.public_bytes(serialization.Encoding.DER)


def resigned(identity: Identity, ca: TestCA, mutate: Callable[[der.Node], None]) -> bytes:
    """The identity's certificate with ``mutate`` applied to its tbsCertificate, re-signed."""
    tbs = der.tbs_of(certificate_der(identity))
    mutate(tbs)
    return der.resign(tbs, ca.key)


def extensions_of(tbs: der.Node) -> der.Node:
    """The SEQUENCE of extensions inside a tbsCertificate's [3] field."""
    assert tbs.children is not None
    (explicit,) = [c for c in tbs.children if c.tag == b"\xa3"]
    assert explicit.children is not None
    return explicit.children[0]


def duplicate_basic_constraints(tbs: der.Node) -> None:
    """The same extension twice: cryptography raises DuplicateExtension on first access."""
    extensions = extensions_of(tbs)
    assert extensions.children is not None
    (basic,) = [e for e in extensions.children if der.encode(e).find(BASIC_CONSTRAINTS) > 0]
    extensions.children.append(der.parse(der.encode(basic)))


def with_keyinfo_certificate(signed: bytes, replacement: bytes, *, index: int = 0) -> bytes:
    """A signed Atom list with KeyInfo certificate ``index`` replaced (the signature still
    verifies: KeyInfo is outside the signed content)."""
    root = etree.fromstring(signed)
    nodes = root.findall(
        f"{{{DS}}}Signature/{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate"
    )
    nodes[index].text = base64.b64encode(replacement).decode("ascii")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def with_cms_certificate(smime: bytes, replacement: bytes, *, index: int = 0) -> bytes:
    """A detached multipart/signed S/MIME message with certificate ``index`` of its CMS set
    replaced by raw DER (the signature over the content still verifies)."""
    message = email.message_from_bytes(smime, policy=email.policy.compat32)
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert len(parts) == 2
    part = parts[1]
    assert isinstance(part, email.message.Message)
    signature = part.get_payload(decode=True)
    assert isinstance(signature, bytes)
    tree = der.parse_many(signature, deep=False)[0]
    assert tree.children is not None
    signed_data = der.at(tree, (1, 0))
    assert signed_data.children is not None
    (certificates,) = [c for c in signed_data.children if c.tag == b"\xa0"]
    assert certificates.children is not None
    certificates.children[index] = der.Node(tag=b"", raw=replacement)
    encoded = base64.b64encode(der.encode(tree))
    start = smime.index(base64.b64encode(signature)[:48])
    end = smime.index(b"\n--", start)
    newline = b"\r\n" if smime[end - 1 : end] == b"\r" else b"\n"
    end -= len(newline) - 1
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return smime[:start] + newline.join(lines) + smime[end:]
