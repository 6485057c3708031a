"""``vmic:holds``, a site export's claim about a list it holds (SCHEMA §11): written, read
strictly (an export is bytes from outside), covered by the export's signature."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from feeds.atom import render_list, to_bytes
from feeds.model import URN_UUID, HeldList, ImageList, list_id
from feeds.reader import read_list
from feeds.verify import verify_list
from keys.errors import ListFormatError, SignatureError
from keys.trust import TrustStore
from keys.xmlsafe import hardened_parser
from tests.feeds.test_hostile_lists import odd_text
from tests.support import lists
from tests.support.ca import Identity
from tests.support.lists import v

HOLDS = v("holds")
OTHER_LIST = list_id("11111111-2222-4333-8444-555555555555")


def held(n: int = 1, **changes: object) -> HeldList:
    base = HeldList(
        list_id=lists.LIST_ID if n == 1 else OTHER_LIST,
        version=n + 6,
        content_sha256=hashlib.sha256(f"content {n}".encode()).hexdigest(),
        url=f"https://site-a.example.org/lists/{lists.LIST_ID}.atom",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def export_list(endorser: Identity, now: datetime) -> ImageList:
    return dataclasses.replace(
        lists.image_list(endorser, now=now, entries=0), holds=(held(1), held(2))
    )


def reread(root: etree._Element) -> ImageList:
    return read_list(etree.fromstring(to_bytes(root), parser=hardened_parser()))


def first_holds(root: etree._Element) -> etree._Element:
    node = root.find(HOLDS)
    assert node is not None
    return node


def test_an_export_with_holds_round_trips_and_a_list_without_has_none(
    endorser: Identity, now: datetime
) -> None:
    original = export_list(endorser, now)
    assert reread(render_list(original)) == original
    plain = lists.image_list(endorser, now=now)
    assert reread(render_list(plain)).holds == ()
    text = to_bytes(render_list(original)).decode()
    assert f'<vmic:holds list="{URN_UUID}{lists.LIST_ID}" version="7"' in text
    assert text.index("</vmic:expires>") < text.index("<vmic:holds")  # feed level, after it


def test_the_claim_is_signed_with_the_export(
    endorser: Identity, now: datetime, trust: TrustStore
) -> None:
    signed = lists.sign(export_list(endorser, now), endorser)
    verified = verify_list(signed, trust=trust, pins=None, now=now)
    assert verified.image_list.holds == (held(1), held(2))
    digest = held(1).content_sha256
    other = hashlib.sha256(b"another view").hexdigest()
    with pytest.raises(SignatureError):
        verify_list(
            signed.replace(digest.encode(), other.encode()), trust=trust, pins=None, now=now
        )


def _set(name: str, value: str) -> Callable[[etree._Element], None]:
    return lambda node: node.set(name, value)


def _drop(name: str) -> Callable[[etree._Element], None]:
    def drop(node: etree._Element) -> None:
        del node.attrib[name]

    return drop


def _text(node: etree._Element) -> None:
    node.text = "x"


def _child(node: etree._Element) -> None:
    etree.SubElement(node, v("size")).text = "1"


MALFORMED = [
    pytest.param(_drop("list"), "vmic:holds 1@list: missing", id="no-list"),
    pytest.param(_drop("version"), "vmic:holds 1@version: missing", id="no-version"),
    pytest.param(_drop("content-sha256"), "@content-sha256: missing", id="no-digest"),
    pytest.param(_drop("href"), "vmic:holds 1@href: missing", id="no-href"),
    pytest.param(_set("extra", "1"), "attribute 'extra' is not allowed", id="extra-attribute"),
    pytest.param(_set("list", lists.LIST_ID), "not a urn:uuid:", id="bare-uuid"),
    pytest.param(_set("list", URN_UUID + lists.LIST_ID.upper()), "not a UUID", id="upper"),
    pytest.param(_set("version", "0"), "not a positive integer", id="version-0"),
    pytest.param(_set("version", " 7"), "not a positive integer", id="version-space"),
    pytest.param(_set("content-sha256", "A" * 64), "64 lower-case hex", id="upper-digest"),
    pytest.param(_set("content-sha256", "a" * 128), "64 lower-case hex", id="sha512-digest"),
    pytest.param(_set("href", "file:///etc/passwd"), "absolute http(s) URL", id="file-url"),
    pytest.param(_set("href", "https://u:p@x.org/"), "credentials", id="credentials"),
    pytest.param(_text, "must be empty", id="text"),
    pytest.param(_child, "must be empty", id="child"),
]


@pytest.mark.parametrize(("spoil", "message"), MALFORMED)
def test_a_malformed_claim_is_refused_naming_it(
    endorser: Identity, now: datetime, spoil: Callable[[etree._Element], None], message: str
) -> None:
    root = render_list(export_list(endorser, now))
    spoil(first_holds(root))
    with pytest.raises(ListFormatError) as caught:
        reread(root)
    assert message in caught.value.message


def test_a_list_claimed_twice_is_refused(endorser: Identity, now: datetime) -> None:
    root = render_list(export_list(endorser, now))
    second = root.findall(HOLDS)[1]
    second.set("list", URN_UUID + lists.LIST_ID)
    with pytest.raises(ListFormatError, match="names a list twice"):
        reread(root)


@given(
    name=st.sampled_from(["list", "version", "content-sha256", "href"]),
    value=odd_text,
)
def test_any_attribute_value_gives_a_claim_or_a_list_format_error(
    endorser: Identity, now: datetime, name: str, value: str
) -> None:
    root = render_list(export_list(endorser, now))
    first_holds(root).set(name, value)
    try:
        back = reread(root)
    except ListFormatError:
        return
    got = back.holds[0]
    assert {
        "list": URN_UUID + got.list_id,
        "version": str(got.version),
        "content-sha256": got.content_sha256,
        "href": got.url,
    }[name] == value
