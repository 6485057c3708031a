"""``vmic:blocks``, an entry's block index in the signed list (SCHEMA §4, §13): written,
read strictly, covered by the signature, left out of HEPiX lists."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime

import feedparser
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from feeds.atom import FEED_TAG, render_list, to_bytes
from feeds.blocks import BLOCK, index_size
from feeds.hepix import read_hepix, render_hepix
from feeds.model import BlocksRef, ImageEntry, ImageList, Tombstone, image_id, sha512_hex
from feeds.reader import read_list
from feeds.verify import verify_list
from keys.errors import ListFormatError, SignatureError
from keys.trust import TrustStore
from keys.xmlsafe import hardened_parser
from keys.xmlsig import SignerPin
from tests.feeds.test_hostile_lists import ODD_NUMBERS, ODD_OTHER, ODD_URLS, odd_text
from tests.support import lists
from tests.support.ca import Identity
from tests.support.lists import a, t, v

BLOCKS = v("blocks")
INDEX_SHA512 = hashlib.sha512(b"the index").hexdigest()


def with_blocks(entry: ImageEntry, *, url: str | None = None) -> ImageEntry:
    return dataclasses.replace(
        entry,
        blocks=BlocksRef(
            url=url or entry.url + ".blocks",
            size=index_size(entry.size),
            sha512=sha512_hex(hashlib.sha512(entry.sha512.encode()).hexdigest()),
        ),
    )


def blocks_list(endorser: Identity, now: datetime) -> ImageList:
    """Three images: the first and third with a block index, the second without."""
    big = lists.entry(3, now=now, data=bytes(5 * BLOCK + 1))
    entries = (*lists.image_list(endorser, now=now).entries, big)
    return dataclasses.replace(
        lists.image_list(endorser, now=now, entries=0),
        entries=(with_blocks(entries[0]), entries[1], with_blocks(big)),
    )


def reread(root: etree._Element) -> ImageList:
    """Serialize and read back as a verifier would (hardened parser)."""
    return read_list(etree.fromstring(to_bytes(root), parser=hardened_parser()))


def blocks_of(root: etree._Element, entry: int = 1) -> etree._Element:
    node = root.findall(a("entry"))[entry - 1].find(BLOCKS)
    assert node is not None
    return node


# -- writing and reading -------------------------------------------------------------------


def test_a_list_with_block_indexes_round_trips(endorser: Identity, now: datetime) -> None:
    original = blocks_list(endorser, now)
    back = reread(render_list(original))
    assert back == original
    assert back.entries[0].blocks == original.entries[0].blocks
    assert back.entries[1].blocks is None
    third = back.entries[2].blocks
    assert third is not None
    assert third.size == 24 + 16 * 6


def test_the_element_is_one_empty_element_with_three_attributes_in_a_fixed_place(
    endorser: Identity, now: datetime
) -> None:
    image_list = blocks_list(endorser, now)
    raw = to_bytes(render_list(image_list)).decode()
    entry = image_list.entries[0]
    assert entry.blocks is not None
    line = (
        f'<vmic:blocks href="{entry.blocks.url}" length="{entry.blocks.size}" '
        f'sha512="{entry.blocks.sha512}"/>'
    )
    assert raw.count("<vmic:blocks ") == 2
    assert line in raw
    # after the endorser's own fields, before what only a site's export carries
    assert raw.index("<vmic:format>") < raw.index(line)
    full = dataclasses.replace(
        image_list,
        entries=(dataclasses.replace(entry, policy_override="reviewed", expires=now),),
    )
    raw = to_bytes(render_list(full)).decode()
    assert raw.index("</vmic:policy-override>") < raw.index("<vmic:blocks ")
    assert to_bytes(render_list(full)) == to_bytes(render_list(copy.deepcopy(full)))


def test_a_signed_list_with_block_indexes_verifies_and_the_index_is_signed(
    endorser: Identity, now: datetime, trust: TrustStore, pin: SignerPin
) -> None:
    image_list = blocks_list(endorser, now)
    signed = lists.sign(image_list, endorser)
    assert verify_list(signed, trust=trust, pins=[pin], now=now).image_list == image_list
    blocks = image_list.entries[0].blocks
    assert blocks is not None
    for old, new in (
        (blocks.sha512, "0" * 128),
        (f'length="{blocks.size}"', f'length="{blocks.size + 16}"'),
        (blocks.url, blocks.url.replace("img-1", "img-2")),
    ):
        tampered = signed.replace(old.encode(), new.encode(), 1)
        assert tampered != signed
        with pytest.raises(SignatureError):
            verify_list(tampered, trust=trust, pins=[pin], now=now)


def test_feedparser_reads_a_list_with_block_indexes_without_complaint(
    endorser: Identity, now: datetime
) -> None:
    image_list = blocks_list(endorser, now)
    parsed = feedparser.parse(lists.sign(image_list, endorser))
    assert parsed.bozo == 0
    assert parsed.version == "atom10"
    assert len(parsed.entries) == 3
    for got, want in zip(parsed.entries, image_list.entries, strict=True):
        assert [(e.href, e.length) for e in got.enclosures] == [(want.url, str(want.size))]


def test_a_hepix_list_has_no_trace_of_the_block_indexes(endorser: Identity, now: datetime) -> None:
    image_list = blocks_list(endorser, now)
    content = render_hepix(image_list)
    text = content.decode()
    for entry in image_list.entries:
        if entry.blocks is not None:
            assert entry.blocks.sha512 not in text
            assert entry.blocks.url not in text
    assert "blocks" not in text
    assert ".blocks" not in json.dumps(json.loads(content))
    assert all(e.blocks is None for e in read_hepix(content).entries)


# -- refusals --------------------------------------------------------------------------------

Mutation = Callable[[etree._Element], None]


def _set(name: str, value: str) -> Mutation:
    return lambda node: node.set(name, value)


def _drop(name: str) -> Mutation:
    def drop(node: etree._Element) -> None:
        del node.attrib[name]

    return drop


def _twice(node: etree._Element) -> None:
    parent = node.getparent()
    assert parent is not None
    parent.append(copy.deepcopy(node))


def _text(text: str) -> Mutation:
    def put(node: etree._Element) -> None:
        node.text = text

    return put


def _child(node: etree._Element) -> None:
    etree.SubElement(node, v("blocks"))


def _comment(node: etree._Element) -> None:
    node.append(etree.Comment("x"))


SIZE_OF_ENTRY_1 = len(b"image 1")
GOOD_LENGTH = index_size(SIZE_OF_ENTRY_1)

REFUSED: list[tuple[str, Mutation, str]] = [
    ("no-href", _drop("href"), r"vmic:blocks@href: missing"),
    ("no-length", _drop("length"), r"vmic:blocks@length: missing"),
    ("no-sha512", _drop("sha512"), r"vmic:blocks@sha512: missing"),
    ("extra-attribute", _set("type", "x"), r"vmic:blocks: attribute 'type' is not allowed"),
    ("namespaced-attribute", _set(v("rel"), "x"), r"vmic:blocks: attribute .* is not allowed"),
    ("xml-lang", _set("{http://www.w3.org/XML/1998/namespace}lang", "en"), r"not allowed"),
    ("twice", _twice, r"vmic:blocks: appears 2 times, at most once allowed"),
    ("text", _text("x"), r"vmic:blocks: must be empty"),
    ("blank-text", _text(" "), r"vmic:blocks: must be empty"),
    ("child", _child, r"vmic:blocks: must be empty"),
    ("length-one-more", _set("length", str(GOOD_LENGTH + 1)), r"is not the size of the block"),
    ("length-one-digest-more", _set("length", str(GOOD_LENGTH + 16)), r"of an image of 7 bytes"),
    ("length-zero", _set("length", "0"), r"vmic:blocks@length: 0 is not the size"),
    ("length-leading-zero", _set("length", f"0{GOOD_LENGTH}"), r"is not a byte count"),
    ("length-plus", _set("length", f"+{GOOD_LENGTH}"), r"is not a byte count"),
    ("length-negative", _set("length", "-40"), r"is not a byte count"),
    ("length-space", _set("length", f" {GOOD_LENGTH}"), r"is not a byte count"),
    ("length-hex", _set("length", "0x28"), r"is not a byte count"),
    ("length-float", _set("length", f"{GOOD_LENGTH}.0"), r"is not a byte count"),
    ("length-fullwidth", _set("length", "\uff14\uff10"), r"is not a byte count"),
    ("length-empty", _set("length", ""), r"is not a byte count"),
    ("length-huge", _set("length", "9" * 25), r"is not a byte count"),
    ("sha512-upper", _set("sha512", INDEX_SHA512.upper()), r"vmic:blocks@sha512: .*expected 128"),
    ("sha512-short", _set("sha512", INDEX_SHA512[:-1]), r"vmic:blocks@sha512: .*expected 128"),
    ("sha512-long", _set("sha512", INDEX_SHA512 + "0"), r"vmic:blocks@sha512: .*expected 128"),
    ("sha512-not-hex", _set("sha512", "g" * 128), r"vmic:blocks@sha512: .*expected 128"),
    ("sha512-space", _set("sha512", INDEX_SHA512 + " "), r"vmic:blocks@sha512: .*expected 128"),
    ("sha512-empty", _set("sha512", ""), r"vmic:blocks@sha512: .*expected 128"),
    ("href-file", _set("href", "file:///etc/passwd"), r"vmic:blocks@href: .*absolute http"),
    ("href-relative", _set("href", "img-1.blocks"), r"vmic:blocks@href: .*absolute http"),
    ("href-credentials", _set("href", "https://u:p@e.org/x.blocks"), r"must not carry cred"),
    ("href-space", _set("href", "https://e.org/a b.blocks"), r"whitespace or control"),
    ("href-port", _set("href", "https://e.org:99999/x.blocks"), r"vmic:blocks@href: .*not a valid"),
    ("href-empty", _set("href", ""), r"vmic:blocks@href"),
]


@pytest.fixture
def root(endorser: Identity, now: datetime) -> etree._Element:
    image_list = lists.image_list(endorser, now=now, entries=2)
    first, second = image_list.entries
    blocks = BlocksRef(url=first.url + ".blocks", size=GOOD_LENGTH, sha512=sha512_hex(INDEX_SHA512))
    entries = (dataclasses.replace(first, blocks=blocks), second)
    return render_list(dataclasses.replace(image_list, entries=entries))


def test_the_fixture_reads_so_each_refusal_is_its_mutation(root: etree._Element) -> None:
    assert reread(root).entries[0].size == SIZE_OF_ENTRY_1
    assert reread(root).entries[0].blocks is not None


@pytest.mark.parametrize(("name", "mutate", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_malformed_blocks_element_is_refused_naming_the_entry_and_field(
    root: etree._Element, name: str, mutate: Mutation, message: str
) -> None:
    mutate(blocks_of(root))
    with pytest.raises(ListFormatError, match=r"^entry 1 \(urn:uuid:[0-9a-f-]+\): " + ".*"):
        reread(root)
    with pytest.raises(ListFormatError, match=message):
        reread(root)


def test_a_comment_inside_the_element_is_refused_before_signing(root: etree._Element) -> None:
    """Exclusive C14N drops comments, so a signed list never shows one to the reader; the
    reader still refuses one in the tree it is given."""
    _comment(blocks_of(root))
    with pytest.raises(ListFormatError, match="must be empty"):
        read_list(root)


@pytest.mark.parametrize("where", ["feed", "tombstone", "author"])
def test_the_element_anywhere_but_in_an_entry_is_an_unknown_vmic_element(
    endorser: Identity, now: datetime, where: str
) -> None:
    gone = Tombstone(id=image_id(lists.image_uuid(9)), when=now, reason="x")
    root = render_list(lists.image_list(endorser, now=now, tombstones=(gone,)))
    parent = {
        "feed": root,
        "tombstone": root.find(t("deleted-entry")),
        "author": root.find(a("author")),
    }[where]
    assert parent is not None
    etree.SubElement(
        parent, BLOCKS, href="https://e.org/x.blocks", length="40", sha512=INDEX_SHA512
    )
    with pytest.raises(ListFormatError, match="vmic:blocks: unknown element of the vmic"):
        reread(root)


def test_the_length_must_match_the_entry_size_not_only_be_a_number(
    endorser: Identity, now: datetime
) -> None:
    """An index of the wrong size cannot be the image's: the list is not well-formed."""
    entry = lists.entry(1, now=now, data=bytes(BLOCK))
    for size, good in ((BLOCK, True), (BLOCK + 1, False), (BLOCK - 1, True)):
        blocks = BlocksRef(
            url="https://e.org/x.blocks", size=index_size(size), sha512=sha512_hex(INDEX_SHA512)
        )
        image_list = dataclasses.replace(
            lists.image_list(endorser, now=now, entries=0),
            entries=(dataclasses.replace(entry, blocks=blocks),),
        )
        root = render_list(image_list)
        if good:
            assert reread(root).entries[0].blocks == blocks
        else:
            with pytest.raises(ListFormatError, match="of an image of 4096 bytes"):
                reread(root)


def test_an_empty_image_has_an_index_of_just_the_header(endorser: Identity, now: datetime) -> None:
    entry = lists.entry(1, now=now, data=b"")
    blocks = BlocksRef(url="https://e.org/x.blocks", size=24, sha512=sha512_hex(INDEX_SHA512))
    image_list = dataclasses.replace(
        lists.image_list(endorser, now=now, entries=0),
        entries=(dataclasses.replace(entry, blocks=blocks),),
    )
    assert reread(render_list(image_list)) == image_list


# -- generated mutations -------------------------------------------------------------------

ATTRIBUTE_NAMES = ["href", "length", "sha512", "type", "rel", v("href"), "{urn:f}length", "HREF"]
NEAR_VALUES = [
    str(GOOD_LENGTH),
    str(GOOD_LENGTH + 16),
    INDEX_SHA512,
    INDEX_SHA512.upper(),
    "https://images.example.org/img-1.qcow2.blocks",
    "https://images.example.org/img-1.qcow2",
]
_value = st.one_of(
    st.sampled_from(NEAR_VALUES),
    st.sampled_from(ODD_NUMBERS + ODD_URLS + ODD_OTHER),
    odd_text,
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX = re.compile(r"[0-9a-f]{128}")


def _mutate_blocks(root: etree._Element, data: st.DataObject) -> None:
    found = list(root.iter(BLOCKS))
    node = found[data.draw(st.integers(0, len(found) - 1), label="element")] if found else None
    kind = data.draw(
        st.sampled_from(
            ["set", "drop", "twice", "text", "child", "remove", "move", "add", "rename-from"]
        ),
        label="kind",
    )
    entries = root.findall(a("entry"))
    if kind == "add" or node is None:
        parent = entries[data.draw(st.integers(0, len(entries) - 1), label="entry")]
        added = etree.SubElement(parent, BLOCKS)
        for name in data.draw(st.lists(st.sampled_from(ATTRIBUTE_NAMES), max_size=4)):
            added.set(name, data.draw(_value, label="value"))
    elif kind == "set":
        node.set(data.draw(st.sampled_from(ATTRIBUTE_NAMES)), data.draw(_value, label="value"))
    elif kind == "drop" and len(node.attrib):
        del node.attrib[data.draw(st.sampled_from(sorted(str(k) for k in node.attrib)))]
    elif kind == "twice":
        _twice(node)
    elif kind == "text":
        node.text = data.draw(odd_text, label="text")
    elif kind == "child":
        etree.SubElement(node, data.draw(st.sampled_from([BLOCKS, v("size"), a("link")])))
    elif kind == "remove":
        holder = node.getparent()
        assert holder is not None
        holder.remove(node)
    elif kind == "move":
        targets = [root, *entries, *root.iter(a("author"))]
        targets[data.draw(st.integers(0, len(targets) - 1), label="target")].append(node)
    elif kind == "rename-from":  # another element of the entry becomes vmic:blocks
        holder = node.getparent()
        assert holder is not None
        others = [c for c in holder if isinstance(c.tag, str) and c.tag != BLOCKS]
        if others:
            others[data.draw(st.integers(0, len(others) - 1), label="other")].tag = BLOCKS


@pytest.mark.fuzz
@given(data=st.data())
def test_mutated_blocks_elements_give_a_sane_list_or_a_list_format_error(
    data: st.DataObject, endorser: Identity, now: datetime
) -> None:
    root = render_list(blocks_list(endorser, now))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        _mutate_blocks(root, data)
    parsed = etree.fromstring(to_bytes(root), parser=hardened_parser())
    refused: ListFormatError | None = None
    try:
        image_list = read_list(parsed)
    except ListFormatError as error:
        refused = error
    if refused is not None:  # by a check of the reader, not the net that catches the rest
        assert not refused.message.startswith("the list cannot be read:"), refused.message
        return
    assert parsed.tag == FEED_TAG
    for entry, node in zip(image_list.entries, parsed.findall(a("entry")), strict=True):
        found = node.findall(BLOCKS)
        assert len(found) == (0 if entry.blocks is None else 1)
        if entry.blocks is not None:
            assert sorted(found[0].attrib) == ["href", "length", "sha512"]
            assert not len(found[0])
            assert not found[0].text
            assert entry.blocks.size == index_size(entry.size)
            assert entry.blocks.url.startswith(("http://", "https://"))
            assert _HEX.fullmatch(entry.blocks.sha512)
        assert _UUID.fullmatch(entry.id)
    # what was read is written again the same way
    assert reread(render_list(image_list)) == image_list
