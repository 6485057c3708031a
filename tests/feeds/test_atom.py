"""The Atom writer and the reader together: round trips, determinism, feedparser as yardstick."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import feedparser
import pytest
from lxml import etree

from feeds.atom import ATOM, TOMBSTONES, VMIC, VO_SCHEME, atom, render_list, to_bytes
from feeds.model import ImageEntry, ImageList, Tombstone, image_id, sha512_hex
from feeds.reader import read_list
from keys.errors import ListFormatError
from tests.support import lists
from tests.support.ca import Identity

PLUS_TWO = timezone(timedelta(hours=2))


def _entry_all_fields(n: int, now: datetime) -> ImageEntry:
    """An entry with every optional field set, times in a non-UTC zone."""
    return lists.entry(
        n,
        now=now,
        title=f"  Fully described image {n} <&> \u00fcml\u00e4ut \u2713  ",
        summary="Line one\nline two, with <markup> & an ampersand",
        url=f"https://images.example.org:8443/path/img-{n}.qcow2?sig=a%20b&x=1",
        hypervisor="KVM",
        arch="x86_64",
        os="Linux",
        osname="AlmaLinux",
        osversion="9.4",
        version="2024.05-1",
        produced=(now - timedelta(days=3)).astimezone(PLUS_TWO),
        expires=(now + timedelta(days=90)).astimezone(PLUS_TWO),
        vo="atlas.cern.ch",
        tags=("gpu", "cvmfs", "base+tools"),
        info_url=f"https://wiki.example.org/images/{n}",
        policy_override="site-approved",
    )


def _entry_no_optional_fields(n: int, now: datetime) -> ImageEntry:
    payload = f"bare image {n}".encode()
    return ImageEntry(
        id=image_id(lists.image_uuid(n)),
        title=f"Bare image {n}",
        summary="",
        url=f"http://mirror.example.org/bare-{n}.img",
        size=len(payload),
        sha512=sha512_hex(hashlib.sha512(payload).hexdigest()),
        format="raw",
        updated=now - timedelta(hours=3),
        endorsed=now - timedelta(hours=4),
    )


def _list_of(
    endorser: Identity, now: datetime, entries: tuple[ImageEntry, ...], **changes: Any
) -> ImageList:
    """A test list holding exactly ``entries``."""
    return replace(lists.image_list(endorser, now=now, entries=0, **changes), entries=entries)


def _full_list(endorser: Identity, now: datetime) -> ImageList:
    return _list_of(
        endorser,
        now,
        (_entry_all_fields(1, now), _entry_no_optional_fields(2, now)),
        version=42,
        subtitle="Images for the WLCG sites, signed weekly",
        author_email="jane@example.org",
        author_uri="https://www.example.org/people/jane",
        vo="atlas.cern.ch",
        tombstones=(
            Tombstone(
                id=image_id(lists.image_uuid(7)),
                when=now - timedelta(hours=2),
                reason="CVE-2024-0001 in the kernel",
            ),
            Tombstone(id=image_id(lists.image_uuid(8)), when=now - timedelta(hours=1), reason=""),
        ),
    )


def _minimal_list(endorser: Identity, now: datetime) -> ImageList:
    return _list_of(
        endorser, now, (_entry_no_optional_fields(1, now),), author_email=None, subtitle=None
    )


def _roundtrip(image_list: ImageList) -> ImageList:
    """Write, serialize, parse from bytes and read back."""
    raw = to_bytes(render_list(image_list))
    return read_list(etree.fromstring(raw))


def test_roundtrip_keeps_every_optional_field(endorser: Identity, now: datetime) -> None:
    original = _full_list(endorser, now)
    back = _roundtrip(original)
    assert back == original
    first = back.entries[0]
    assert first.title == original.entries[0].title  # exact text, spaces and markup included
    assert first.tags == ("gpu", "cvmfs", "base+tools")
    assert first.vo == "atlas.cern.ch"
    assert first.info_url == "https://wiki.example.org/images/1"
    assert first.policy_override == "site-approved"
    assert back.tombstones[0].reason == "CVE-2024-0001 in the kernel"
    assert back.vo == "atlas.cern.ch"  # a feed-level category (HEPiX list-level ad:vo)
    assert back.author_uri == "https://www.example.org/people/jane"


def test_roundtrip_keeps_unset_optional_fields_unset(endorser: Identity, now: datetime) -> None:
    original = _minimal_list(endorser, now)
    back = _roundtrip(original)
    assert back == original
    entry = back.entries[0]
    assert entry.summary == ""
    assert entry.vo is None
    assert entry.tags == ()
    assert entry.info_url is None
    for name in ("hypervisor", "arch", "os", "osname", "osversion", "version", "produced"):
        assert getattr(entry, name) is None, name
    assert back.author_email is None
    assert back.author_uri is None
    assert back.vo is None
    assert back.subtitle is None
    assert back.tombstones == ()


def test_roundtrip_of_a_list_with_no_images(endorser: Identity, now: datetime) -> None:
    original = lists.image_list(endorser, now=now, entries=0)
    assert _roundtrip(original) == original


def test_roundtrip_of_a_list_with_only_tombstones(endorser: Identity, now: datetime) -> None:
    original = lists.image_list(
        endorser,
        now=now,
        entries=0,
        tombstones=(Tombstone(id=image_id(lists.image_uuid(3)), when=now, reason="withdrawn"),),
    )
    back = _roundtrip(original)
    assert back == original
    assert back.entry(lists.image_uuid(3)) is None


def test_roundtrip_times_are_utc_with_second_precision(endorser: Identity, now: datetime) -> None:
    original = _full_list(endorser, now)
    raw = to_bytes(render_list(original)).decode()
    produced = original.entries[0].produced
    assert produced is not None
    assert f"<vmic:produced>{produced.astimezone(PLUS_TWO):%Y}" in raw
    assert "+02:00" not in raw
    back = read_list(etree.fromstring(raw.encode()))
    assert back.entries[0].produced == produced


def test_writer_is_deterministic(endorser: Identity, now: datetime) -> None:
    image_list = _full_list(endorser, now)
    first = to_bytes(render_list(image_list))
    second = to_bytes(render_list(image_list))
    assert first == second
    assert to_bytes(render_list(replace(image_list))) == first


def test_writer_uses_the_profile_namespaces(endorser: Identity, now: datetime) -> None:
    root = render_list(_full_list(endorser, now))
    assert root.tag == f"{{{ATOM}}}feed"
    assert root.nsmap == {None: ATOM, "vmic": VMIC, "at": TOMBSTONES}
    assert root.find(f"{{{VMIC}}}version") is not None
    assert len(root.findall(f"{{{TOMBSTONES}}}deleted-entry")) == 2


def _assert_feedparser_reads(raw: bytes, image_list: ImageList) -> None:
    parsed = feedparser.parse(raw)
    assert parsed.version == "atom10"
    assert parsed.bozo == 0
    assert parsed.feed.id == f"urn:uuid:{image_list.id}"
    assert parsed.feed.title == image_list.title
    self_links = [link for link in parsed.feed.links if link.rel == "self"]
    assert [link.href for link in self_links] == [image_list.self_url]
    assert len(parsed.entries) == len(image_list.entries)
    for got, want in zip(parsed.entries, image_list.entries, strict=True):
        assert got.id == f"urn:uuid:{want.id}"
        assert got.title == want.title.strip()  # feedparser trims; vmic keeps the exact text
        assert [(e.href, e.length) for e in got.enclosures] == [(want.url, str(want.size))]


def test_feedparser_reads_a_fully_described_list(endorser: Identity, now: datetime) -> None:
    image_list = _full_list(endorser, now)
    _assert_feedparser_reads(to_bytes(render_list(image_list)), image_list)


def test_feedparser_reads_a_minimal_list(endorser: Identity, now: datetime) -> None:
    image_list = _minimal_list(endorser, now)
    _assert_feedparser_reads(to_bytes(render_list(image_list)), image_list)


def test_feedparser_reads_a_signed_list(endorser: Identity, now: datetime) -> None:
    image_list = _full_list(endorser, now)
    _assert_feedparser_reads(lists.sign(image_list, endorser), image_list)


def test_feedparser_sees_entry_links_and_categories(endorser: Identity, now: datetime) -> None:
    image_list = _full_list(endorser, now)
    parsed = feedparser.parse(to_bytes(render_list(image_list)))
    first = parsed.entries[0]
    alternates = [link.href for link in first.links if link.rel == "alternate"]
    assert alternates == ["https://wiki.example.org/images/1"]
    terms = sorted(tag.term for tag in first.tags)
    assert terms == sorted(["atlas.cern.ch", "gpu", "cvmfs", "base+tools"])


def test_thousand_entry_list_roundtrips_and_parses_in_feedparser(
    endorser: Identity, now: datetime
) -> None:
    entries = tuple(lists.entry(n, now=now) for n in range(1, 1001))
    image_list = _list_of(endorser, now, entries, version=7)
    raw = to_bytes(render_list(image_list))
    assert read_list(etree.fromstring(raw)) == image_list
    _assert_feedparser_reads(raw, image_list)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_feedparser_counts_entries_but_not_tombstones(
    endorser: Identity, now: datetime, count: int
) -> None:
    image_list = lists.image_list(
        endorser,
        now=now,
        entries=count,
        tombstones=(Tombstone(id=image_id(lists.image_uuid(99)), when=now, reason="gone"),),
    )
    parsed = feedparser.parse(to_bytes(render_list(image_list)))
    assert parsed.bozo == 0
    assert parsed.version == "atom10"
    assert len(parsed.entries) == count


def test_roundtrip_keeps_the_source_of_an_exported_entry(endorser: Identity, now: datetime) -> None:
    """A site export names, per image, the endorser's list and where the site serves it."""
    exported = replace(
        _entry_all_fields(1, now),
        source_list=lists.LIST_ID,
        source_version=12,
        source_url="https://site-a.example.org/lists/6f1c1e0e-8a7b-4c55-9d3e-0a1b2c3d4e5f.atom",
    )
    original = _list_of(endorser, now, (exported,))

    back = _roundtrip(original)

    assert back == original
    raw = to_bytes(render_list(original))
    assert b'rel="via"' in raw
    assert b"<vmic:source-version>12</vmic:source-version>" in raw


def test_a_list_names_at_most_one_vo_and_a_usable_author_uri(
    endorser: Identity, now: datetime
) -> None:
    root = render_list(_full_list(endorser, now))
    etree.SubElement(root, atom("category"), scheme=VO_SCHEME, term="cms")
    with pytest.raises(ListFormatError, match="at most one VO for the list"):
        read_list(etree.fromstring(to_bytes(root)))

    root = render_list(_full_list(endorser, now))
    uri = root.find(f"{atom('author')}/{atom('uri')}")
    assert uri is not None
    for bad in ("javascript:alert(1)", "mailto:", "file:///etc/passwd"):
        uri.text = bad
        with pytest.raises(ListFormatError, match="atom:uri"):
            read_list(etree.fromstring(to_bytes(root)))
    uri.text = "mailto:jane@example.org"
    assert read_list(etree.fromstring(to_bytes(root))).author_uri == "mailto:jane@example.org"
