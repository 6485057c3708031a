"""Writing an image list as an Atom 1.0 document (RFC 4287) of the vmic profile.

The writer is deterministic: the same :class:`~feeds.model.ImageList` gives
the same bytes. Times are written in UTC with second precision
(``2026-11-26T12:00:00Z``). The element names and their order are specified in
``feeds/SCHEMA.md``; :mod:`feeds.reader` reads exactly what this writes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import cast

from lxml import etree

from feeds.model import URN_UUID, HeldList, ImageEntry, ImageList, Tombstone
from keys.errors import ListFormatError

ATOM = "http://www.w3.org/2005/Atom"
VMIC = "urn:vmic:imagelist:1"
TOMBSTONES = "http://purl.org/atompub/tombstones/1.0"
# lxml takes None as the key of the default namespace; its stubs do not say so.
NSMAP = cast(dict[str, str], {None: ATOM, "vmic": VMIC, "at": TOMBSTONES})
VO_SCHEME = VMIC + "#vo"
TAG_SCHEME = VMIC + "#tag"
ENCLOSURE_TYPE = "application/octet-stream"
FEED_TAG = f"{{{ATOM}}}feed"

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$")


def atom(tag: str) -> str:
    return f"{{{ATOM}}}{tag}"


def vmic(tag: str) -> str:
    return f"{{{VMIC}}}{tag}"


def tomb(tag: str) -> str:
    return f"{{{TOMBSTONES}}}{tag}"


def format_time(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("naive datetime")  # a programming error, not bad input
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, *, what: str) -> datetime:
    """An RFC 3339 date-time with a zone, as an aware UTC datetime."""
    if not _RFC3339.fullmatch(text):
        raise ListFormatError(f"{what}: {text!r} is not an RFC 3339 date-time with a time zone")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # 9999-12-31T23:59:59-01:00 is past year 9999
        raise ListFormatError(f"{what}: {text!r} is not a valid date-time ({exc})") from exc


def _text(parent: etree._Element, tag: str, value: str | None) -> None:
    if value is not None:
        etree.SubElement(parent, tag).text = value


def render_list(image_list: ImageList) -> etree._Element:
    """The unsigned ``atom:feed`` element for ``image_list``."""
    feed = etree.Element(FEED_TAG, nsmap=NSMAP)
    _text(feed, atom("id"), URN_UUID + image_list.id)
    _text(feed, atom("title"), image_list.title)
    _text(feed, atom("subtitle"), image_list.subtitle)
    _text(feed, atom("updated"), format_time(image_list.updated))
    author = etree.SubElement(feed, atom("author"))
    _text(author, atom("name"), image_list.author_name)
    _text(author, atom("uri"), image_list.author_uri)
    _text(author, atom("email"), image_list.author_email)
    etree.SubElement(feed, atom("link"), rel="self", href=image_list.self_url)
    if image_list.vo is not None:
        etree.SubElement(feed, atom("category"), scheme=VO_SCHEME, term=image_list.vo)
    _text(feed, vmic("endorser-dn"), image_list.endorser_dn.slash())
    _text(feed, vmic("issuer-dn"), image_list.issuer_dn.slash())
    _text(feed, vmic("version"), str(image_list.version))
    _text(feed, vmic("expires"), format_time(image_list.expires))
    for held in image_list.holds:
        feed.append(_render_held(held))
    for entry in image_list.entries:
        feed.append(_render_entry(entry))
    for tombstone in image_list.tombstones:
        feed.append(_render_tombstone(tombstone))
    etree.indent(feed, space="  ")
    return feed


def _render_held(held: HeldList) -> etree._Element:
    node = etree.Element(vmic("holds"))
    node.set("list", URN_UUID + held.list_id)
    node.set("version", str(held.version))
    node.set("content-sha256", held.content_sha256)
    node.set("href", held.url)
    return node


def _render_entry(entry: ImageEntry) -> etree._Element:
    node = etree.Element(atom("entry"))
    _text(node, atom("id"), URN_UUID + entry.id)
    _text(node, atom("title"), entry.title)
    _text(node, atom("summary"), entry.summary or None)
    _text(node, atom("updated"), format_time(entry.updated))
    _text(node, atom("published"), format_time(entry.endorsed))
    etree.SubElement(
        node,
        atom("link"),
        rel="enclosure",
        href=entry.url,
        length=str(entry.size),
        type=ENCLOSURE_TYPE,
    )
    etree.SubElement(node, atom("link"), rel="alternate", href=entry.info_url or entry.url)
    if entry.source_url is not None:
        etree.SubElement(node, atom("link"), rel="via", href=entry.source_url)
    if entry.vo is not None:
        etree.SubElement(node, atom("category"), scheme=VO_SCHEME, term=entry.vo)
    for tag in entry.tags:
        etree.SubElement(node, atom("category"), scheme=TAG_SCHEME, term=tag)
    _text(node, vmic("sha512"), entry.sha512)
    _text(node, vmic("size"), str(entry.size))
    _text(node, vmic("format"), entry.format)
    _text(node, vmic("hypervisor"), entry.hypervisor)
    _text(node, vmic("arch"), entry.arch)
    _text(node, vmic("os"), entry.os)
    _text(node, vmic("osname"), entry.osname)
    _text(node, vmic("osversion"), entry.osversion)
    _text(node, vmic("image-version"), entry.version)
    _text(node, vmic("produced"), format_time(entry.produced) if entry.produced else None)
    _text(node, vmic("expires"), format_time(entry.expires) if entry.expires else None)
    _text(node, vmic("policy-override"), entry.policy_override)
    if entry.blocks is not None:
        etree.SubElement(
            node,
            vmic("blocks"),
            href=entry.blocks.url,
            length=str(entry.blocks.size),
            sha512=entry.blocks.sha512,
        )
    _text(node, vmic("source-list"), URN_UUID + entry.source_list if entry.source_list else None)
    _text(node, vmic("source-version"), _optional_int(entry.source_version))
    return node


def _optional_int(value: int | None) -> str | None:
    return None if value is None else str(value)


def _render_tombstone(tombstone: Tombstone) -> etree._Element:
    node = etree.Element(
        tomb("deleted-entry"), ref=URN_UUID + tombstone.id, when=format_time(tombstone.when)
    )
    _text(node, tomb("comment"), tombstone.reason)
    return node


def to_bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
