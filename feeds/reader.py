"""Reading a verified ``atom:feed`` element into an :class:`~feeds.model.ImageList`.

The reader is given the tree that the signature verifier returned as signed
and nothing else. It is strict where trust depends on it and tolerant where
Atom allows extension:

- every field the profile defines is checked for presence, cardinality and
  form, and errors name the entry (position and id) and the field;
- identifiers, numbers, hashes and times must be exact (no surrounding
  whitespace); text fields keep their signed text exactly;
- unknown elements in the vmic namespace are errors (they could carry a
  meaning this reader would miss); other Atom elements and foreign
  namespaces are ignored, as RFC 4287 asks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from lxml import etree

from feeds.atom import (
    FEED_TAG,
    TAG_SCHEME,
    VMIC,
    VO_SCHEME,
    atom,
    parse_time,
    tomb,
    vmic,
)
from feeds.model import (
    URN_UUID,
    ImageEntry,
    ImageList,
    Tombstone,
    check_author_uri,
    check_token,
    check_url,
    image_id,
    list_id,
    sha512_hex,
)
from keys.dn import DistinguishedName
from keys.errors import ConfigError, ListFormatError, outside_bytes
from keys.limits import DEFAULT_LIMITS, Limits

T = TypeVar("T")

_SIZE = re.compile(r"^(0|[1-9][0-9]{0,18})$")
_VERSION = re.compile(r"^[1-9][0-9]{0,15}$")
_MAX_SIZE = 2**63 - 1

_VMIC_PREFIX = f"{{{VMIC}}}"
_FEED_VMIC = {"endorser-dn", "issuer-dn", "version", "expires"}
_ENTRY_VMIC = {
    "sha512",
    "size",
    "format",
    "hypervisor",
    "arch",
    "os",
    "osname",
    "osversion",
    "image-version",
    "produced",
    "expires",
    "policy-override",
    "source-list",
    "source-version",
}


class _Fields:
    """The children of one element, grouped by tag, with error messages that say where."""

    def __init__(self, node: etree._Element, where: object, limits: Limits) -> None:
        self.where = where
        self.limits = limits
        by_tag: dict[str, list[etree._Element]] = {}
        for child in node:
            tag = child.tag
            if isinstance(tag, str):
                found = by_tag.get(tag)
                if found is None:
                    by_tag[tag] = [child]
                else:
                    found.append(child)
        self.by_tag = by_tag

    def fail(self, field: str, problem: str) -> ListFormatError:
        return ListFormatError(f"{self.where}: {field}: {problem}")

    def nodes(self, tag: str) -> list[etree._Element]:
        return self.by_tag.get(tag, [])

    def optional_text(self, tag: str, name: str) -> str | None:
        """The text of an element that may appear at most once."""
        found = self.by_tag.get(tag)
        if found is None:
            return None
        if len(found) > 1:
            raise self.fail(name, f"appears {len(found)} times, at most once allowed")
        node = found[0]
        if node.get("type", "text") != "text":
            raise self.fail(name, f"type {node.get('type')!r} is not allowed, only text")
        if len(node):  # elements, comments or processing instructions split the text
            raise self.fail(name, "must hold text only, not elements or comments")
        value = node.text or ""
        if len(value) > self.limits.max_text_chars:
            raise self.fail(name, f"longer than {self.limits.max_text_chars} characters")
        return value

    def text(self, tag: str, name: str) -> str:
        """The text of an element that must appear exactly once and not be blank."""
        value = self.optional_text(tag, name)
        if value is None:
            raise self.fail(name, "missing")
        if not value.strip():
            raise self.fail(name, "is empty")
        return value

    def optional_exact(self, tag: str, name: str) -> str | None:
        """Text that must not carry surrounding whitespace (ids, numbers, times)."""
        value = self.optional_text(tag, name)
        if value is not None and value != value.strip():
            raise self.fail(name, "must not have leading or trailing whitespace")
        return value

    def exact(self, tag: str, name: str) -> str:
        value = self.text(tag, name)
        if value != value.strip():
            raise self.fail(name, "must not have leading or trailing whitespace")
        return value

    def parsed(self, tag: str, name: str, parse: Callable[[str], T]) -> T | None:
        value = self.optional_exact(tag, name)
        return None if value is None else self.check(name, value, parse)

    def check(self, name: str, value: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(value)
        except ListFormatError as exc:
            raise self.fail(name, exc.message) from exc

    def reject_unknown_vmic(self, allowed: set[str]) -> None:
        for tag in self.by_tag:
            if tag.startswith(_VMIC_PREFIX) and tag[len(_VMIC_PREFIX) :] not in allowed:
                raise self.fail(
                    f"vmic:{tag[len(_VMIC_PREFIX) :]}", "unknown element of the vmic namespace"
                )


def read_list(root: etree._Element, *, limits: Limits = DEFAULT_LIMITS) -> ImageList:
    """The list in a verified ``atom:feed`` element, or ListFormatError (and nothing else)."""
    with outside_bytes("the list cannot be read", ListFormatError):
        return _read_list(root, limits)


def _read_list(root: etree._Element, limits: Limits) -> ImageList:
    if root.tag != FEED_TAG:
        raise ListFormatError(f"the document root is {root.tag}, expected atom:feed")
    feed = _Fields(root, "feed", limits)
    feed.reject_unknown_vmic(_FEED_VMIC)
    entries = feed.nodes(atom("entry"))
    tombstones = feed.nodes(tomb("deleted-entry"))
    if len(entries) + len(tombstones) > limits.max_entries:
        raise feed.fail("entries", f"more than {limits.max_entries} images")
    authors = feed.nodes(atom("author"))
    if len(authors) != 1:
        raise feed.fail("atom:author", f"expected exactly one, found {len(authors)}")
    author = _Fields(authors[0], "feed atom:author", limits)
    author.reject_unknown_vmic(set())
    version_text = feed.exact(vmic("version"), "vmic:version")
    if not _VERSION.fullmatch(version_text):
        raise feed.fail("vmic:version", f"{version_text!r} is not a positive integer")
    version = int(version_text)
    if version > limits.max_version:
        raise feed.fail("vmic:version", f"{version} is above the limit of {limits.max_version}")
    vos = [c for c in feed.nodes(_CATEGORY) if c.get("scheme") == VO_SCHEME]
    if len(vos) > 1:
        raise feed.fail("atom:category (vo)", "at most one VO for the list")
    return ImageList(
        id=feed.check("atom:id", feed.exact(atom("id"), "atom:id"), _urn_uuid(list_id)),
        title=feed.text(atom("title"), "atom:title"),
        subtitle=feed.optional_text(atom("subtitle"), "atom:subtitle"),
        self_url=_self_link(feed),
        updated=feed.check("atom:updated", feed.exact(atom("updated"), "atom:updated"), _time),
        expires=feed.check("vmic:expires", feed.exact(vmic("expires"), "vmic:expires"), _time),
        version=version,
        endorser_dn=feed.check(
            "vmic:endorser-dn", feed.exact(vmic("endorser-dn"), "vmic:endorser-dn"), _dn
        ),
        issuer_dn=feed.check(
            "vmic:issuer-dn", feed.exact(vmic("issuer-dn"), "vmic:issuer-dn"), _dn
        ),
        author_name=author.text(atom("name"), "atom:name"),
        author_email=author.optional_exact(atom("email"), "atom:email"),
        author_uri=author.parsed(atom("uri"), "atom:uri", check_author_uri),
        vo=feed.check("atom:category (vo)", vos[0].get("term", ""), _VO) if vos else None,
        entries=tuple(
            _read_entry(node, index, limits) for index, node in enumerate(entries, start=1)
        ),
        tombstones=tuple(
            _read_tombstone(node, index, limits) for index, node in enumerate(tombstones, start=1)
        ),
    )


def _urn_uuid(make: Callable[[str], T]) -> Callable[[str], T]:
    def parse(text: str) -> T:
        if not text.startswith(URN_UUID):
            raise ListFormatError(f"{text!r} is not a urn:uuid: identifier")
        return make(text[len(URN_UUID) :])

    return parse


def _time(text: str) -> datetime:
    return parse_time(text, what="time")


def _dn(text: str) -> DistinguishedName:
    try:
        return DistinguishedName.parse_slash(text)
    except ConfigError as exc:
        raise ListFormatError(exc.message) from exc


def _size(text: str) -> int:
    if not _SIZE.fullmatch(text) or int(text) > _MAX_SIZE:
        raise ListFormatError(f"{text!r} is not a byte count")
    return int(text)


def _links(fields: _Fields, rel: str) -> list[etree._Element]:
    return [n for n in fields.nodes(atom("link")) if n.get("rel", "alternate") == rel]


def _self_link(feed: _Fields) -> str:
    links = _links(feed, "self")
    if len(links) != 1:
        raise feed.fail("atom:link rel=self", f"expected exactly one, found {len(links)}")
    return feed.check("atom:link rel=self", links[0].get("href", ""), _url)


def _url(text: str) -> str:
    return check_url(text, what="href")


def _token(what: str) -> Callable[[str], str]:
    return lambda text: check_token(text, what=what)


_ID, _TITLE, _SUMMARY = atom("id"), atom("title"), atom("summary")
_UPDATED, _PUBLISHED, _CATEGORY = atom("updated"), atom("published"), atom("category")
_V = {name: vmic(name) for name in _ENTRY_VMIC}
_IMAGE_URN = _urn_uuid(image_id)
_FORMAT, _VO, _TAG = _token("format"), _token("vo"), _token("tag")
_LIST_URN = _urn_uuid(list_id)


def _version(text: str) -> int:
    if not _VERSION.fullmatch(text):
        raise ListFormatError(f"{text!r} is not a positive integer")
    return int(text)


def _via(fields: _Fields) -> str | None:
    links = _links(fields, "via")
    if len(links) > 1:
        raise fields.fail("atom:link rel=via", f"at most one, found {len(links)}")
    if not links:
        return None
    return fields.check("atom:link rel=via", links[0].get("href", ""), _url)


def _read_entry(node: etree._Element, index: int, limits: Limits) -> ImageEntry:
    fields = _Fields(node, _EntryLabel(node, index), limits)
    fields.reject_unknown_vmic(_ENTRY_VMIC)
    enclosures = _links(fields, "enclosure")
    if len(enclosures) != 1:
        raise fields.fail(
            "atom:link rel=enclosure", f"expected exactly one, found {len(enclosures)}"
        )
    enclosure = enclosures[0]
    download = enclosure.get("href", "")
    size = fields.check("vmic:size", fields.exact(_V["size"], "vmic:size"), _size)
    length = fields.check("atom:link@length", enclosure.get("length", ""), _size)
    if length != size:
        raise fields.fail("atom:link@length", f"{length} differs from vmic:size {size}")
    categories = fields.nodes(_CATEGORY)
    vos = [c for c in categories if c.get("scheme") == VO_SCHEME]
    if len(vos) > 1:
        raise fields.fail("atom:category (vo)", "at most one VO")
    optional = fields.optional_text
    return ImageEntry(
        id=fields.check("atom:id", fields.exact(_ID, "atom:id"), _IMAGE_URN),
        title=fields.text(_TITLE, "atom:title"),
        summary=optional(_SUMMARY, "atom:summary") or "",
        url=fields.check("atom:link rel=enclosure", download, _url),
        size=size,
        sha512=fields.check("vmic:sha512", fields.exact(_V["sha512"], "vmic:sha512"), sha512_hex),
        format=fields.check("vmic:format", fields.exact(_V["format"], "vmic:format"), _FORMAT),
        updated=fields.check("atom:updated", fields.exact(_UPDATED, "atom:updated"), _time),
        endorsed=fields.check("atom:published", fields.exact(_PUBLISHED, "atom:published"), _time),
        hypervisor=optional(_V["hypervisor"], "vmic:hypervisor"),
        arch=optional(_V["arch"], "vmic:arch"),
        os=optional(_V["os"], "vmic:os"),
        osname=optional(_V["osname"], "vmic:osname"),
        osversion=optional(_V["osversion"], "vmic:osversion"),
        version=optional(_V["image-version"], "vmic:image-version"),
        produced=fields.parsed(_V["produced"], "vmic:produced", _time),
        expires=fields.parsed(_V["expires"], "vmic:expires", _time),
        vo=fields.check("atom:category (vo)", vos[0].get("term", ""), _VO) if vos else None,
        tags=tuple(
            fields.check("atom:category (tag)", c.get("term", ""), _TAG)
            for c in categories
            if c.get("scheme") == TAG_SCHEME
        ),
        info_url=_info_url(fields, _links(fields, "alternate"), download),
        policy_override=optional(_V["policy-override"], "vmic:policy-override"),
        source_list=fields.parsed(_V["source-list"], "vmic:source-list", _LIST_URN),
        source_version=fields.parsed(_V["source-version"], "vmic:source-version", _version),
        source_url=_via(fields),
    )


class _EntryLabel:
    """How errors name an entry; built only when an error is reported."""

    __slots__ = ("index", "node")

    def __init__(self, node: etree._Element, index: int) -> None:
        self.node, self.index = node, index

    def __str__(self) -> str:
        raw_id = (self.node.findtext(_ID) or "?").strip()
        return f"entry {self.index} ({raw_id[:60]})"


def _info_url(fields: _Fields, alternates: list[etree._Element], download: str) -> str | None:
    """The alternate link, unless it only repeats the download URL (the writer's default)."""
    if not alternates:
        return None
    href = alternates[0].get("href", "")
    if href == download:
        return None
    return fields.check("atom:link rel=alternate", href, _url)


def _read_tombstone(node: etree._Element, index: int, limits: Limits) -> Tombstone:
    ref = node.get("ref", "")
    fields = _Fields(node, f"deleted-entry {index} ({ref[:60]})", limits)
    fields.reject_unknown_vmic(set())
    return Tombstone(
        id=fields.check("@ref", ref, _urn_uuid(image_id)),
        when=fields.check("@when", node.get("when", ""), _time),
        reason=fields.optional_text(tomb("comment"), "at:comment") or "",
    )
