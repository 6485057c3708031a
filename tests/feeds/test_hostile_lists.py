"""Signed lists from outside may hold anything (THREATS 3-6, 33, 36; issue 9, class 1).

Generated inputs, not hand-picked ones, in three layers:

- the bytes of a genuinely signed Atom list or HEPiX message, mutated (bytes
  flipped, inserted, deleted, cut, a slice repeated) or spliced with hostile
  fragments (a DTD, entities, processing instructions, a second signature,
  deep nesting, a huge attribute, bytes that are not UTF-8, BOMs);
- the tree of an Atom list, mutated (elements changed, removed, repeated,
  moved, renamed; odd text, attributes, unknown and foreign elements,
  tombstones) and then signed by the real endorser key, so that the mutation
  reaches the reader and every check after the signature;
- the JSON of a HEPiX list, mutated the same way (odd values and keys,
  duplicate keys written by hand, huge numbers, ``NaN``, lone surrogates,
  deep nesting) and signed in every S/MIME form vmic accepts.

The only outcomes allowed are a verified list and a vmic error; the rollback
state given to the verifier never changes. Mutated bytes that still verify
must mean exactly what was signed; a list that verifies holds a sane model
that vmic can write again (as a site's export does); a well-formed signed
list is refused by one of vmic's own checks, which names the field, never
by the net that catches what no check expected (keys.errors.outside_bytes).
`make test` runs a few fixed examples, `make fuzz` many random ones.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import currently_in_test_context, event, given
from hypothesis import strategies as st
from lxml import etree

from feeds.atom import TOMBSTONES, VMIC, atom, render_list, to_bytes, tomb, vmic
from feeds.hepix import render_hepix
from feeds.model import ImageList, Tombstone, image_id
from feeds.reader import read_list
from feeds.verify import Expectation, PreviousState, VerifiedList, verify_list
from keys.errors import ListFormatError, VmicError
from keys.smime import sign_smime
from keys.trust import TrustStore
from keys.xmlsafe import hardened_parser
from keys.xmlsig import SignerPin
from tests.support import hepix, lists
from tests.support.ca import Identity, TestCA, store

pytestmark = pytest.mark.fuzz

ROOT = "/DC=org/DC=vmic-test/CN=Hostile Lists Root CA"
SIGNER = "/DC=org/DC=vmic-test/OU=Users/CN=Hostile Lists Endorser"
FOREIGN = "urn:example:foreign"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHA512 = re.compile(r"[0-9a-f]{128}")


# -- the genuine documents ------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(now: datetime) -> TestCA:
    return TestCA(ROOT, now=now)


@pytest.fixture(scope="module")
def signer(ca: TestCA) -> Identity:
    return ca.issue(SIGNER)


@pytest.fixture(scope="module")
def trust(ca: TestCA) -> TrustStore:
    return store([ca])


@pytest.fixture(scope="module")
def original(signer: Identity, now: datetime) -> ImageList:
    """Two images and one tombstone, version 2."""
    gone = Tombstone(id=image_id(lists.image_uuid(9)), when=now - timedelta(hours=1), reason="bad")
    return lists.image_list(signer, now=now, version=2, tombstones=(gone,))


@pytest.fixture(scope="module")
def hepix_original(original: ImageList) -> ImageList:
    """The same list as HEPiX carries it (no tombstones, tags or production dates)."""
    entries = tuple(dataclasses.replace(e, tags=(), produced=None) for e in original.entries)
    return dataclasses.replace(original, entries=entries, tombstones=())


@pytest.fixture(scope="module")
def atom_signed(original: ImageList, signer: Identity) -> bytes:
    return lists.sign(original, signer)


def sign_form(content: bytes, signer: Identity, form: str) -> bytes:
    """``content`` signed in one of the S/MIME forms vmic accepts."""
    if form == "vmic":  # as `vmic endorse sign --format hepix` does
        return sign_smime(content, key=signer.key, cert=signer.cert, chain=signer.intermediates)
    return hepix.sign_bytes(
        content,
        signer,
        digest="sha512" if form == "sha512" else "sha256",
        text=form == "text",
        opaque=form == "opaque",
        der=form == "der",
    )


FORMS = ("vmic", "detached", "text", "sha512", "opaque", "der")


@pytest.fixture(scope="module")
def hepix_signed(hepix_original: ImageList, signer: Identity) -> dict[str, bytes]:
    content = render_hepix(hepix_original)
    return {form: sign_form(content, signer, form) for form in FORMS}


@dataclasses.dataclass(frozen=True)
class Checker:
    """Verifies like a subscription does and enforces the allowed outcomes."""

    trust: TrustStore
    signer: Identity
    now: datetime

    def verify(
        self, raw: bytes, previous: PreviousState, *, strict: bool = True, deliberate: bool = False
    ) -> VerifiedList | None:
        """A VerifiedList, or None for a vmic error; anything else fails the test.

        ``deliberate``: the refusal must come from one of vmic's checks, naming what it
        refused, not from the net that catches what a check did not expect."""
        pins = [SignerPin(subject=self.signer.subject, issuer=self.signer.issuer)]
        expect = Expectation(list_id=lists.LIST_ID, self_url=lists.SELF_URL)
        snapshot = copy.deepcopy(previous)
        refused: VmicError | None = None
        try:
            verified = verify_list(
                raw,
                trust=self.trust,
                pins=pins if strict else None,
                now=self.now,
                expect=expect if strict else None,
                previous=previous,
            )
        except VmicError as error:  # anything else fails the test
            refused = error
        assert previous == snapshot  # the rollback state given is never touched
        assert dataclasses.asdict(previous) == dataclasses.asdict(snapshot)
        if refused is None:
            _outcome("verified")
            return verified
        _outcome(type(refused).__name__)
        caught_by_the_net = refused.message.startswith(_SAFETY_NETS)
        if caught_by_the_net:
            _outcome(f"safety net: {refused.message[:80]}")
        assert not (deliberate and caught_by_the_net), refused.message
        return None

    def older(self) -> PreviousState:
        return PreviousState(version=1, sha256="ab" * 32, updated=self.now - timedelta(days=7))


_SAFETY_NETS = (
    "the list cannot be checked:",
    "the list cannot be read:",
    "the HEPiX list cannot be read:",
)
"""How keys.errors.outside_bytes words what no check of vmic expected (THREATS 33)."""


def _outcome(what: str) -> None:
    """Count outcomes in `--hypothesis-show-statistics` (how deep the examples reach)."""
    if currently_in_test_context():
        event(what)


@pytest.fixture(scope="module")
def checker(trust: TrustStore, signer: Identity, now: datetime) -> Checker:
    return Checker(trust=trust, signer=signer, now=now)


def state_of(verified: VerifiedList) -> PreviousState:
    """The rollback state a site keeps after accepting ``verified``."""
    return PreviousState(
        version=verified.image_list.version,
        sha256=verified.sha256,
        updated=verified.image_list.updated,
        content_sha256=verified.content_sha256,
    )


@pytest.fixture(scope="module")
def atom_verified(checker: Checker, atom_signed: bytes) -> VerifiedList:
    verified = checker.verify(atom_signed, checker.older())
    assert verified is not None
    return verified


@pytest.fixture(scope="module")
def hepix_verified(checker: Checker, hepix_signed: dict[str, bytes]) -> dict[str, VerifiedList]:
    out = {}
    for form, raw in hepix_signed.items():
        verified = checker.verify(raw, checker.older())
        assert verified is not None, form
        out[form] = verified
    return out


# -- checks on what verified ----------------------------------------------------------


def _http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def assert_sane(lst: ImageList, *, self_link_required: bool = True) -> None:
    """The model a verified list gives is what the rest of vmic assumes."""
    assert _UUID.fullmatch(lst.id)
    assert 1 <= lst.version <= 2**53 - 1
    assert lst.expires > lst.updated
    assert _http(lst.self_url) or (not self_link_required and lst.self_url == "")
    ids = [e.id for e in lst.entries]
    assert len(set(ids)) == len(ids)
    for entry in lst.entries:
        assert _UUID.fullmatch(entry.id)
        assert _SHA512.fullmatch(entry.sha512), entry.sha512
        assert 0 <= entry.size <= 2**63 - 1
        assert _http(entry.url), entry.url
        assert entry.title.strip()
        for url in (entry.info_url, entry.source_url):
            assert url is None or _http(url)
    for tombstone in lst.tombstones:
        assert _UUID.fullmatch(tombstone.id)
        assert tombstone.id not in ids


def assert_rewritable(lst: ImageList, template: ImageList) -> None:
    """The images of a verified list read back the same once vmic writes them into an Atom
    list, as a site's export does (under its own feed fields: ``template``'s)."""
    entries = tuple(dataclasses.replace(e, extra=()) for e in lst.entries)  # not in Atom
    export = dataclasses.replace(template, entries=entries, tombstones=lst.tombstones)
    root = etree.fromstring(to_bytes(render_list(export)), parser=hardened_parser())
    assert read_list(root).entries == entries


# -- mutated bytes ----------------------------------------------------------------------

_position = st.integers(min_value=0, max_value=2**20)
_ANCHORS = (b">", b"<", b"\n", b'"', b"=", b":", b"--")


def _signature_element(raw: bytes) -> bytes:
    start = raw.find(b"<ds:Signature")
    end = raw.find(b"</ds:Signature>")
    return raw[start : end + len(b"</ds:Signature>")] if 0 <= start < end else b"<ds:Signature/>"


def _fragments() -> st.SearchStrategy[bytes]:
    hostile = [
        b'<!DOCTYPE x [<!ENTITY e "boom">]>',
        b'<!DOCTYPE feed SYSTEM "file:///etc/passwd">',
        b'<!ENTITY e SYSTEM "http://127.0.0.1:9/">',
        b"&e;",
        b"&amp;",
        b"&#0;",
        b"&#x1F;",
        b"&#xD800;",
        b"&#13;",
        b"<?pi?>",
        b'<?xml-stylesheet href="x"?>',
        b'<?xml version="1.0" encoding="UTF-16"?>',
        b'<?xml version="1.1"?>',
        b"<!-- -->",
        b"<!--x-->",
        b"<![CDATA[x]]>",
        b"<![CDATA[<entry/>]]>",
        b"<a>" * 40 + b"</a>" * 40,
        b'<x a="' + b"A" * 70_000 + b'"/>',
        b' huge="' + b"B" * 70_000 + b'"',
        b' xmlns="urn:other"',
        b' xmlns:ds="urn:other"',
        b' xmlns:vmic="urn:other"',
        b"\xff",
        b"\xc3\x28",
        b"\x80",
        b"\xf4\x90\x80\x80",
        b"\x00",
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf\xed\xa0\x80",
        b"\xef\xbb\xbf",
        b"\xff\xfe",
        b"\xfe\xff",
        b"\x00\x00\xfe\xff",
        b" ",
        b"\r\n",
        b"\t",
        b"\r",
        b"<entry/>",
        b"</feed>",
        b"<feed>",
        b"\n--",
        b"\nContent-Type: text/plain\n",
        b"Content-Transfer-Encoding: binary\n",
        b"=\n",
        b"====",
        b"\x30\x80",
        b"-----BEGIN PKCS7-----\n",
    ]
    return st.sampled_from(hostile)


# One step: (kind, position, length, payload). Positions are taken modulo the length, or
# as the n-th occurrence of a structural byte, so steps land everywhere and on structure.
_step = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat", "splice"]),
    st.one_of(_position, st.tuples(st.sampled_from(_ANCHORS), _position)),
    st.integers(min_value=0, max_value=300),
    st.one_of(st.binary(min_size=1, max_size=16), _fragments()),
)
Step = tuple[str, int | tuple[bytes, int], int, bytes]
byte_steps = st.lists(_step, min_size=1, max_size=4)


def _offset(data: bytearray, where: int | tuple[bytes, int]) -> int:
    if isinstance(where, int):
        return where % (len(data) + 1)
    anchor, nth = where
    found = [m.start() for m in re.finditer(re.escape(anchor), bytes(data))]
    return found[nth % len(found)] + 1 if found else nth % (len(data) + 1)


def mutate_bytes(raw: bytes, steps: list[Step]) -> bytes:
    data = bytearray(raw)
    for kind, where, length, payload in steps:
        at = _offset(data, where)
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << (length % 8)
        elif kind == "set" and at < len(data):
            data[at] = payload[0]
        elif kind in {"insert", "splice"}:
            data[at:at] = payload
        elif kind == "delete":
            del data[at : at + 1 + length]
        elif kind == "truncate":
            del data[at:]
        elif kind == "repeat":
            data[at:at] = data[at : at + 1 + length]
    return bytes(data)


def _rollback_state(checker: Checker, verified: VerifiedList, seen: bool) -> PreviousState:
    """Either an older version, or the very list mutated (THREATS 36: same content only)."""
    return state_of(verified) if seen else checker.older()


@given(steps=byte_steps, seen=st.booleans(), strict=st.booleans())
def test_mutated_bytes_of_a_signed_atom_list_verify_as_signed_or_are_refused(
    steps: list[Step],
    seen: bool,
    strict: bool,
    checker: Checker,
    atom_signed: bytes,
    atom_verified: VerifiedList,
) -> None:
    raw = mutate_bytes(atom_signed, steps)
    previous = _rollback_state(checker, atom_verified, seen)
    verified = checker.verify(raw, previous, strict=strict)
    if verified is not None:  # only unsigned bytes changed: the list means what was signed
        assert verified.image_list == atom_verified.image_list
        assert verified.content_sha256 == atom_verified.content_sha256


@given(position=st.tuples(st.sampled_from(_ANCHORS), _position), twice=st.booleans())
def test_a_second_signature_anywhere_in_an_atom_list_is_refused(
    position: tuple[bytes, int], twice: bool, checker: Checker, atom_signed: bytes
) -> None:
    """THREATS 4: a copy of the genuine signature spliced in (wrapping, moved signature)."""
    signature = _signature_element(atom_signed)
    raw = mutate_bytes(atom_signed, [("splice", position, 0, signature)])
    if twice:
        raw = mutate_bytes(raw, [("splice", position, 0, signature)])
    assert checker.verify(raw, checker.older()) is None


@given(steps=byte_steps, form=st.sampled_from(FORMS), seen=st.booleans())
def test_mutated_bytes_of_a_signed_hepix_message_verify_as_signed_or_are_refused(
    steps: list[Step],
    form: str,
    seen: bool,
    checker: Checker,
    hepix_signed: dict[str, bytes],
    hepix_verified: dict[str, VerifiedList],
) -> None:
    """Headers, boundaries, base64 and DER of every S/MIME form."""
    genuine = hepix_verified[form]
    raw = mutate_bytes(hepix_signed[form], steps)
    verified = checker.verify(raw, _rollback_state(checker, genuine, seen))
    if verified is not None:
        assert verified.image_list == genuine.image_list
        assert verified.content_sha256 == genuine.content_sha256


# -- re-signed tree mutations (Atom) ---------------------------------------------------

ODD_NUMBERS = [
    "",
    " ",
    "007",
    "-1",
    "+1",
    "1e3",
    "0x10",
    "1_000",
    "0",
    "1",
    "1.0",
    "9007199254740991",
    "9007199254740992",
    "4294967298",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999999",
    "\uff11\uff12",  # fullwidth digits
    "\u0663",  # an Arabic-Indic digit
    "NaN",
    "Infinity",
    "true",
    "null",
]
ODD_TIMES = [
    "2026-13-45T25:61:61Z",
    "2026-02-30T00:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-12-31T23:59:60Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-23:59",
    "1970-01-01T00:00:00Z",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "2026-01-01T00:00:00+99:99",
    "2026-01-01T00:00:00.1234567891Z",
    "2026-01-01T00:00:00.123456789Z",
    "2026-01-01t00:00:00z",
    "2026-01-01 00:00:00Z",
    "\u0662\u0660\u0662\u0666-01-01T00:00:00Z",
]
ODD_URLS = [
    "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
    "javascript:alert(1)",
    "data:text/plain,x",
    "ftp://example.org/x",
    "http://a b/",
    "http://a\nb/",
    "https://example.org/\n",
    " https://example.org/",
    "https://user:pw@example.org/",
    "https://user@example.org/",
    "http://[::1/",
    "http://example.org:99999/",
    "http://example.org:-1/",
    "//example.org/",
    "https://",
    "https:///path",
    "HTTPS://EXAMPLE.ORG/X",
    "https://example.org/../../etc/passwd",
    "https://example.org/%2e%2e/%00",
    "https://ex\u00e4mple.org/\u202e",
    lists.SELF_URL,
]
ODD_IDS = [
    "urn:uuid:",
    "urn:uuid:" + lists.image_uuid(1),
    "urn:uuid:" + lists.image_uuid(2),
    "urn:uuid:" + lists.image_uuid(9),
    "urn:uuid:" + lists.LIST_ID,
    "urn:uuid:" + lists.image_uuid(1).upper(),
    "URN:UUID:" + lists.image_uuid(3),
    "urn:uuid:" + lists.image_uuid(3) + "\n",
    "urn:uuid:00000000-0000-4000-8000-00000000000g",
    "urn:uuid:{00000000-0000-4000-8000-000000000003}",
    "urn:uuid:000000000000400080000000000000003",
    lists.image_uuid(4),
]
ODD_OTHER = [
    "a" * 128,
    "A" * 128,
    "0" * 127,
    "0" * 129,
    "/DC=org/DC=vmic-test/OU=Users/CN=Hostile Lists Endorser",
    "/DC=org/DC=vmic-test/CN=Hostile Lists Root CA",
    "/DC=org/DC=vmic-test/OU=Users/CN=Hostile Lists Endorser/CN=x",
    "/CN=",
    "CN=x,O=y",
    "/DC=org/CN=a/CN=b",
    "qcow2",
    "../../x",
    "a b",
    "\u202e",
    "\ufeff",
    "\x85",
    "\u2028",
    "\x7f\x9f",
    "\t\r\n",
    "\r",
    "\n",
]
ODD_TEXT = ODD_NUMBERS + ODD_TIMES + ODD_URLS + ODD_IDS + ODD_OTHER


def _xml_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Unicode that XML can carry, control characters it allows (tab, CR, LF, C1) included."""
    chars = st.one_of(
        st.sampled_from("\t\n\r"),
        st.characters(min_codepoint=0x20, max_codepoint=0xD7FF),
        st.characters(min_codepoint=0xE000, max_codepoint=0xFFFD),
        st.characters(min_codepoint=0x10000),
    )
    return st.text(chars, max_size=max_size)


def _long_text() -> st.SearchStrategy[str]:
    return st.sampled_from([65_535, 65_536, 65_537, 200_000]).map(lambda n: "x" * n)


BLANKS = [" ", "\n", "\t", "\r\n", "\u00a0", "\x85", "\u2028", "\u3000", "\ufeff"]
blank_text = st.lists(st.sampled_from(BLANKS), min_size=1, max_size=3).map("".join)
"""Only white space (and a BOM, which is not)."""
odd_text = st.one_of(
    *(st.sampled_from(odd) for odd in (ODD_NUMBERS, ODD_TIMES, ODD_URLS, ODD_IDS, ODD_OTHER)),
    _xml_text(),
    _long_text(),
)
"""Each kind of odd value about as likely as any other."""

TAGS = [
    atom("id"),
    atom("title"),
    atom("summary"),
    atom("updated"),
    atom("published"),
    atom("link"),
    atom("entry"),
    atom("author"),
    atom("name"),
    atom("email"),
    atom("category"),
    atom("content"),
    atom("feed"),
    vmic("sha512"),
    vmic("size"),
    vmic("version"),
    vmic("expires"),
    vmic("format"),
    vmic("source-list"),
    vmic("source-version"),
    vmic("endorser-dn"),
    vmic("issuer-dn"),
    vmic("produced"),
    vmic("policy-override"),
    vmic("blocks"),
    vmic("unknown"),
    tomb("deleted-entry"),
    tomb("comment"),
    f"{{{FOREIGN}}}thing",
    "no-namespace",
]
ATTRIBUTES = [
    "href",
    "rel",
    "length",
    "type",
    "ref",
    "when",
    "scheme",
    "term",
    "sha512",
    f"{{{FOREIGN}}}attr",
    f"{{{VMIC}}}attr",
]
ATTRIBUTE_VALUES = [
    "self",
    "enclosure",
    "alternate",
    "via",
    "related",
    "html",
    "xhtml",
    "text",
    VMIC + "#vo",
    VMIC + "#tag",
    TOMBSTONES,
]


def _elements(root: etree._Element) -> list[etree._Element]:
    return [e for e in root.iter() if isinstance(e.tag, str)]


def mutate_tree(root: etree._Element, data: st.DataObject) -> None:
    """One mutation of the feed's tree, drawn from ``data``."""
    nodes = _elements(root)
    # A tag first, then one of its elements: every field is as likely as every other.
    tags = sorted({str(n.tag) for n in nodes})
    tag = tags[data.draw(st.integers(0, len(tags) - 1), label="tag")]
    nodes = [n for n in nodes if n.tag == tag]
    node = nodes[data.draw(st.integers(0, len(nodes) - 1), label="node")]
    parent = node.getparent()
    kind = data.draw(
        st.sampled_from(
            [
                "text",
                "blank",
                "pad",
                "tail",
                "remove",
                "repeat",
                "move",
                "rename",
                "attribute",
                "drop-attribute",
                "unknown-vmic",
                "foreign",
                "tombstone",
                "comment",
            ]
        ),
        label="kind",
    )
    if kind == "text":
        node.text = data.draw(odd_text, label="text")
    elif kind == "blank":
        node.text = data.draw(blank_text, label="blank")
    elif kind == "pad":
        pad = data.draw(blank_text, label="pad")
        node.text = data.draw(st.sampled_from([pad + (node.text or ""), (node.text or "") + pad]))
    elif kind == "tail" and parent is not None:
        node.tail = data.draw(odd_text, label="tail")
    elif kind == "remove" and parent is not None:
        parent.remove(node)
    elif kind == "repeat" and parent is not None:
        twin = copy.deepcopy(node)
        if data.draw(st.booleans(), label="change the twin's text"):
            twin.text = data.draw(odd_text, label="text")
        parent.insert(parent.index(node) + 1, twin)
    elif kind == "move" and parent is not None:
        targets = [n for n in _elements(root) if n is not node and node not in n.iterancestors()]
        targets = [n for n in targets if n not in node.iter()]
        if targets:
            target = targets[data.draw(st.integers(0, len(targets) - 1), label="target")]
            target.append(node)
    elif kind == "rename":
        node.tag = data.draw(st.sampled_from(TAGS), label="tag")
    elif kind == "attribute":
        name = data.draw(st.sampled_from(ATTRIBUTES), label="attribute")
        value = data.draw(st.one_of(st.sampled_from(ATTRIBUTE_VALUES), odd_text), label="value")
        node.set(name, value)
    elif kind == "drop-attribute" and len(node.attrib):
        names = sorted(str(k) for k in node.attrib)
        del node.attrib[data.draw(st.sampled_from(names), label="drop")]
    elif kind == "unknown-vmic":
        name = data.draw(st.sampled_from(["unknown", "sha256", "signature", "version", "size"]))
        etree.SubElement(node, vmic(name)).text = data.draw(odd_text, label="text")
    elif kind == "foreign":
        child = etree.SubElement(node, f"{{{FOREIGN}}}x", nsmap={"f": FOREIGN})
        child.text = data.draw(odd_text, label="text")
        child.set("a", data.draw(odd_text, label="attribute"))
        if data.draw(st.booleans(), label="nested"):
            etree.SubElement(child, data.draw(st.sampled_from(TAGS), label="tag"))
    elif kind == "tombstone":
        gone = etree.SubElement(root, tomb("deleted-entry"))
        gone.set("ref", data.draw(st.one_of(st.sampled_from(ODD_IDS), odd_text), label="ref"))
        gone.set("when", data.draw(st.one_of(st.sampled_from(ODD_TIMES), odd_text), label="when"))
        if data.draw(st.booleans(), label="comment"):
            etree.SubElement(gone, tomb("comment")).text = data.draw(odd_text, label="comment")
    elif kind == "comment":
        text = data.draw(_xml_text(), label="comment").replace("-", "_")
        node.insert(data.draw(st.integers(0, len(node)), label="at"), etree.Comment(text))


@given(data=st.data(), strict=st.booleans())
def test_a_resigned_mutated_atom_list_is_verified_and_sane_or_refused(
    data: st.DataObject,
    strict: bool,
    checker: Checker,
    original: ImageList,
    signer: Identity,
) -> None:
    root = render_list(original)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        mutate_tree(root, data)
    signed = lists.sign_root(root, signer)  # the real endorser signs the mutation
    verified = checker.verify(signed, checker.older(), strict=strict, deliberate=True)
    if verified is not None:
        assert_sane(verified.image_list)
        assert verified.image_list.endorser_dn == signer.subject
        assert_rewritable(verified.image_list, original)


def test_the_unmutated_documents_verify_so_the_generated_tests_reach_the_checks(
    checker: Checker,
    original: ImageList,
    signer: Identity,
    atom_verified: VerifiedList,
    hepix_verified: dict[str, VerifiedList],
) -> None:
    resigned = checker.verify(lists.sign_root(render_list(original), signer), checker.older())
    assert resigned is not None
    assert resigned.image_list == atom_verified.image_list == original
    assert_sane(original)
    assert_rewritable(original, original)
    assert set(hepix_verified) == set(FORMS)
    for verified in hepix_verified.values():
        assert_sane(verified.image_list)
        assert_rewritable(verified.image_list, original)


# -- re-signed JSON mutations (HEPiX) --------------------------------------------------

_SENTINEL = "\ue000vmic-raw-literal\ue000"
RAW_LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1" * 5000,
    "-" + "9" * 4300,
    "1" * 4300,
    "1e999999",
    "-0",
    "0.1e-999",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    '"\\u001f"',
    '"\\ufffe"',
    '"' + "\\u0041" * 10 + '"',
    "[" * 3000 + "]" * 3000,
    "[" * 100_000,
    '{"a":' * 2000 + "1" + "}" * 2000,
    "true",
    "null",
    "[]",
    "{}",
]
HEPIX_KEYS = [
    "dc:identifier",
    "dc:title",
    "dc:description",
    "dc:date:created",
    "dc:date:expires",
    "hv:version",
    "hv:uri",
    "hv:endorser",
    "hv:x509",
    "hv:dn",
    "hv:ca",
    "hv:images",
    "hv:image",
    "hv:size",
    "sl:checksum:sha512",
    "hv:format",
    "ad:vo",
    "sl:comments",
    "hv:imagelist",
    "HV:VERSION",
    "hv:version ",
    "",
]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([-1, 0, 2**53, 2**63, 2**64, 10**100]),
    st.floats(),
    st.text(max_size=20),
    odd_text,
)
json_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.one_of(st.sampled_from(HEPIX_KEYS), st.text(max_size=8)), children)
    ),
    max_leaves=8,
)


def _paths(value: object, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document that holds a value."""
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*path, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*path, index)))
    return found


def _at(document: object, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]  # type: ignore[index]
    return document


JSON_MUTATIONS = (
    "value",
    "odd",
    "blank",
    "as-string",
    "raw",
    "remove",
    "add",
    "rename",
    "wrap",
    "spread",
)


def mutate_json(document: dict[str, Any], data: st.DataObject) -> None:
    paths = [p for p in _paths(document) if p]
    if not paths:
        return  # mutated down to {}
    # A key first, then one of its places: every field is as likely as every other.
    names = sorted({repr(p[-1]) for p in paths})
    name = names[data.draw(st.integers(0, len(names) - 1), label="key")]
    places = [p for p in paths if repr(p[-1]) == name]
    path = places[data.draw(st.integers(0, len(places) - 1), label="place")]
    parent, key = _at(document, path[:-1]), path[-1]
    kind = data.draw(st.sampled_from(JSON_MUTATIONS), label="kind")
    if kind == "value":
        parent[key] = data.draw(json_values, label="value")
    elif kind == "odd":
        parent[key] = data.draw(odd_text, label="text")
    elif kind == "blank":
        parent[key] = data.draw(blank_text, label="blank")
    elif kind == "as-string":  # numbers as strings and strings as numbers
        value = parent[key]
        parent[key] = str(value) if not isinstance(value, str) else _number(value)
    elif kind == "raw":
        parent[key] = _SENTINEL + str(data.draw(st.integers(0, len(RAW_LITERALS) - 1)))
    elif kind == "remove":
        del parent[key]
    elif kind == "add" and isinstance(parent, dict):
        name = data.draw(st.one_of(st.sampled_from(HEPIX_KEYS), st.text(max_size=8)))
        parent[name] = data.draw(json_values, label="value")
    elif kind == "rename" and isinstance(parent, dict):
        name = data.draw(st.one_of(st.sampled_from(HEPIX_KEYS), st.text(max_size=8)))
        parent[name] = parent.pop(key)
    elif kind == "wrap":
        parent[key] = data.draw(st.sampled_from([[parent[key]], {"hv:image": parent[key]}]))
    elif kind == "spread" and isinstance(parent, list):  # thousands of copies of one item
        parent.extend([parent[key]] * data.draw(st.sampled_from([2, 100, 3000])))


def _number(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        return text


def _render_json(document: object, data: st.DataObject) -> bytes:
    text = json.dumps(
        document,
        indent=data.draw(st.sampled_from([None, 4])),
        ensure_ascii=data.draw(st.booleans(), label="ascii"),
    )
    for index, literal in enumerate(RAW_LITERALS):
        text = text.replace(json.dumps(_SENTINEL + str(index)), literal)
        text = text.replace(json.dumps(_SENTINEL + str(index), ensure_ascii=False), literal)
    for _ in range(data.draw(st.integers(0, 2), label="duplicate keys")):
        # a key twice in one object, written by hand: json.dumps never does it
        opening = [m.end() for m in re.finditer(r"\{", text)]
        if opening:
            at = opening[data.draw(st.integers(0, len(opening) - 1), label="object")]
            name = data.draw(st.sampled_from(HEPIX_KEYS), label="key")
            value = json.dumps(data.draw(st.sampled_from(ODD_TEXT), label="duplicate"))
            text = f"{text[:at]}{json.dumps(name)}: {value}, {text[at:]}"
    encoding = data.draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16"]))
    return text.encode(encoding, "surrogatepass")


@given(data=st.data(), form=st.sampled_from(FORMS), strict=st.booleans())
def test_a_resigned_mutated_hepix_list_is_verified_and_sane_or_refused(
    data: st.DataObject,
    form: str,
    strict: bool,
    checker: Checker,
    hepix_original: ImageList,
    signer: Identity,
) -> None:
    document = json.loads(render_hepix(hepix_original))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        mutate_json(document, data)
    content = _render_json(document, data)
    signed = sign_form(content, signer, form)
    verified = checker.verify(signed, checker.older(), strict=strict, deliberate=True)
    if verified is not None:
        assert_sane(verified.image_list, self_link_required=False)
        assert verified.image_list.endorser_dn == signer.subject
        assert_rewritable(verified.image_list, hepix_original)


# -- regressions found by the generated tests ------------------------------------------


@pytest.mark.parametrize("blank", [" ", "\n\t", "\u3000"])
def test_a_hepix_image_with_a_blank_title_is_named_by_its_id_and_can_be_re_shared(
    blank: str, checker: Checker, hepix_original: ImageList, signer: Identity
) -> None:
    """A blank ``dc:title`` used to become the image's title; the site's export then wrote
    it as an empty ``atom:title``, and every peer refused the whole export."""
    document = json.loads(render_hepix(hepix_original))
    document["hv:imagelist"]["hv:images"][0]["hv:image"]["dc:title"] = blank
    verified = checker.verify(
        sign_form(json.dumps(document).encode(), signer, "vmic"), checker.older()
    )
    assert verified is not None
    first = verified.image_list.entries[0]
    assert first.title == first.id
    assert_sane(verified.image_list)
    assert_rewritable(verified.image_list, hepix_original)


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01"])
def test_a_time_beyond_the_calendar_is_refused_naming_the_field(
    when: str, checker: Checker, original: ImageList, signer: Identity
) -> None:
    """An offset that moves a time past year 9999 (or before year 1) in UTC used to leave
    the reader as an OverflowError, caught only by the net that names no field."""
    root = render_list(original)
    updated = root.find(f"{atom('entry')}/{atom('updated')}")
    assert updated is not None
    updated.text = when
    with pytest.raises(ListFormatError, match=r"^entry 1 .*atom:updated: .* not a valid date-time"):
        verify_list(lists.sign_root(root, signer), trust=checker.trust, pins=None, now=checker.now)
