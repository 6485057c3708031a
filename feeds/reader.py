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

Each element's children are visited once (:func:`_gather`): a text field is
taken by its tag, and its type, markup and length are checked as it is met;
the elements the reader wants several of, or whose attributes hold the
values (entries, links, categories, the block index), are collected. The
fields are then checked in a fixed order, so a document with several faults
is always refused for the same one.
"""

from __future__ import annotations

import functools
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
from feeds.blocks import index_size
from feeds.model import (
    URN_UUID,
    BlocksRef,
    HeldList,
    ImageEntry,
    ImageList,
    Tombstone,
    check_author_uri,
    check_token,
    check_url,
    image_id,
    list_id,
    quoted,
    sha256_hex,
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
_FEED_VMIC = ("endorser-dn", "issuer-dn", "version", "expires")
_ENTRY_VMIC = (
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
)

_ID, _TITLE, _SUMMARY = atom("id"), atom("title"), atom("summary")
_UPDATED, _PUBLISHED, _CATEGORY = atom("updated"), atom("published"), atom("category")
_LINK, _ENTRY, _AUTHOR, _SUBTITLE = atom("link"), atom("entry"), atom("author"), atom("subtitle")
_NAME, _EMAIL, _URI = atom("name"), atom("email"), atom("uri")
_TOMBSTONE, _COMMENT = tomb("deleted-entry"), tomb("comment")
_BLOCKS = vmic("blocks")
_BLOCKS_ATTRIBUTES = ("href", "length", "sha512")
_HOLDS = vmic("holds")
_HOLDS_ATTRIBUTES = ("list", "version", "content-sha256", "href")
_V = {name: vmic(name) for name in (*_FEED_VMIC, *_ENTRY_VMIC)}

# The singular text fields of each element, and how errors name every one.
_FEED_TEXT = frozenset({_ID, _TITLE, _SUBTITLE, _UPDATED, *(_V[n] for n in _FEED_VMIC)})
_AUTHOR_TEXT = frozenset({_NAME, _EMAIL, _URI})
_ENTRY_TEXT = frozenset(
    {_ID, _TITLE, _SUMMARY, _UPDATED, _PUBLISHED, *(_V[n] for n in _ENTRY_VMIC)}
)
_TOMBSTONE_TEXT = frozenset({_COMMENT})
_NAMES = {
    **{atom(n): f"atom:{n}" for n in ("id", "title", "subtitle", "summary", "updated")},
    **{atom(n): f"atom:{n}" for n in ("published", "name", "email", "uri")},
    **{tag: f"vmic:{name}" for name, tag in _V.items()},
    _COMMENT: "at:comment",
}


class _Children:
    """The children of one element, gathered by :func:`_gather`, with error messages that
    say where."""

    __slots__ = ("counts", "groups", "plain", "problems", "texts", "unknown_vmic", "where")

    def __init__(
        self,
        *,
        where: object,
        texts: dict[str, str],
        problems: dict[str, str] | None,
        counts: dict[str, int] | None,
        groups: dict[str, list[etree._Element]],
        unknown_vmic: str | None,
    ) -> None:
        self.where = where
        self.texts = texts
        """The text of each text field met, by tag (the first element's)."""
        self.problems = problems
        """Why a text field's (first) element cannot be read, by tag."""
        self.counts = counts
        """How many elements of a text field met more than once there are, by tag."""
        self.groups = groups
        self.unknown_vmic = unknown_vmic
        self.plain = counts is None and problems is None
        """No text field repeated, every one readable: as good as every list is."""

    def fail(self, field: str, problem: str) -> ListFormatError:
        return ListFormatError(f"{self.where}: {field}: {problem}")

    def reject_unknown_vmic(self) -> None:
        tag = self.unknown_vmic
        if tag is not None:
            name = tag[len(_VMIC_PREFIX) :]
            raise self.fail(f"vmic:{name}", "unknown element of the vmic namespace")

    # Each reading has a fast path for a plain element (``self.plain``) whose text passes;
    # anything else takes the full path, which finds the problem and names it.

    def optional_text(self, tag: str) -> str | None:
        """The text of an element that may appear at most once."""
        if self.plain:
            return self.texts.get(tag)
        name = _NAMES[tag]
        if self.counts is not None and tag in self.counts:
            raise self.fail(name, f"appears {self.counts[tag]} times, at most once allowed")
        if self.problems is not None and tag in self.problems:
            raise self.fail(name, self.problems[tag])
        return self.texts.get(tag)

    def text(self, tag: str) -> str:
        """The text of an element that must appear exactly once and not be blank."""
        value = self.texts.get(tag)
        if self.plain and value and not value.isspace():
            return value
        value = self.optional_text(tag)
        if value is None:
            raise self.fail(_NAMES[tag], "missing")
        if not value.strip():
            raise self.fail(_NAMES[tag], "is empty")
        return value

    def optional_exact(self, tag: str) -> str | None:
        """Text that must not carry surrounding whitespace (ids, numbers, times)."""
        value = self.optional_text(tag)
        if value is not None and value != value.strip():
            raise self.fail(_NAMES[tag], "must not have leading or trailing whitespace")
        return value

    def exact(self, tag: str) -> str:
        value = self.texts.get(tag)
        # not blank (as text() requires): not empty, and equal to itself stripped
        if self.plain and value and value == value.strip():
            return value
        value = self.text(tag)
        if value != value.strip():
            raise self.fail(_NAMES[tag], "must not have leading or trailing whitespace")
        return value

    def parsed(self, tag: str, parse: Callable[[str], T]) -> T | None:
        value = self.optional_exact(tag)
        return None if value is None else self.check(_NAMES[tag], value, parse)

    def read(self, tag: str, parse: Callable[[str], T]) -> T:
        """An exact field that must be there, parsed."""
        value = self.texts.get(tag)
        if not (self.plain and value and value == value.strip()):
            value = self.exact(tag)
        try:
            return parse(value)
        except ListFormatError as exc:
            raise self.fail(_NAMES[tag], exc.message) from exc

    def check(self, name: str, value: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(value)
        except ListFormatError as exc:
            raise self.fail(name, exc.message) from exc


def _gather(
    node: etree._Element,
    where: object,
    text_tags: frozenset[str],
    group_tags: tuple[str, ...],
    limits: Limits,
) -> _Children:
    """One pass over the children of ``node``.

    A child whose tag is in ``text_tags`` is a text field: the first one's text
    is kept, or why it cannot be read (a type other than text; elements,
    comments or processing instructions that split the text; over the length
    limit); later ones are only counted. Children with a tag in ``group_tags``
    are collected in document order. Of the other children only the first
    element of the vmic namespace is remembered (it is an error); the rest is
    ignored, as are comments between the children.
    """
    texts: dict[str, str] = {}
    problems: dict[str, str] | None = None
    counts: dict[str, int] | None = None
    groups: dict[str, list[etree._Element]] = {tag: [] for tag in group_tags}
    unknown_vmic: str | None = None
    max_chars = limits.max_text_chars
    for child in node:
        tag = child.tag
        if tag in text_tags:
            if tag in texts or (problems is not None and tag in problems):
                if counts is None:
                    counts = {}
                counts[tag] = counts.get(tag, 1) + 1
                continue
            kind = child.get("type")
            problem = None
            if kind is not None and kind != "text":
                problem = f"type {kind!r} is not allowed, only text"
            elif len(child):  # elements, comments or processing instructions split the text
                problem = "must hold text only, not elements or comments"
            else:
                value = child.text or ""
                if len(value) <= max_chars:
                    texts[tag] = value
                    continue
                problem = f"longer than {max_chars} characters"
            if problems is None:
                problems = {}
            problems[tag] = problem
            continue
        group = groups.get(tag)
        if group is not None:
            group.append(child)
        elif unknown_vmic is None and tag.__class__ is str and tag.startswith(_VMIC_PREFIX):
            unknown_vmic = tag
    return _Children(
        where=where,
        texts=texts,
        problems=problems,
        counts=counts,
        groups=groups,
        unknown_vmic=unknown_vmic,
    )


def read_list(root: etree._Element, *, limits: Limits = DEFAULT_LIMITS) -> ImageList:
    """The list in a verified ``atom:feed`` element, or ListFormatError (and nothing else)."""
    with outside_bytes("the list cannot be read", ListFormatError):
        return _read_list(root, limits)


_FEED_GROUPS = (_ENTRY, _TOMBSTONE, _AUTHOR, _LINK, _CATEGORY, _HOLDS)


def _read_list(root: etree._Element, limits: Limits) -> ImageList:
    if root.tag != FEED_TAG:
        raise ListFormatError(f"the document root is {root.tag}, expected atom:feed")
    feed = _gather(root, "feed", _FEED_TEXT, _FEED_GROUPS, limits)
    feed.reject_unknown_vmic()
    entries, tombstones = feed.groups[_ENTRY], feed.groups[_TOMBSTONE]
    if len(entries) + len(tombstones) > limits.max_entries:
        raise feed.fail("entries", f"more than {limits.max_entries} images")
    if len(feed.groups[_HOLDS]) > limits.max_entries:
        raise feed.fail("vmic:holds", f"more than {limits.max_entries} lists")
    authors = feed.groups[_AUTHOR]
    if len(authors) != 1:
        raise feed.fail("atom:author", f"expected exactly one, found {len(authors)}")
    author = _gather(authors[0], "feed atom:author", _AUTHOR_TEXT, (), limits)
    author.reject_unknown_vmic()
    version_text = feed.exact(_V["version"])
    if not _VERSION.fullmatch(version_text):
        raise feed.fail("vmic:version", f"{version_text!r} is not a positive integer")
    version = int(version_text)
    if version > limits.max_version:
        raise feed.fail("vmic:version", f"{version} is above the limit of {limits.max_version}")
    vos = [c for c in feed.groups[_CATEGORY] if c.get("scheme") == VO_SCHEME]
    if len(vos) > 1:
        raise feed.fail("atom:category (vo)", "at most one VO for the list")
    return ImageList(
        id=feed.read(_ID, _LIST_URN),
        title=feed.text(_TITLE),
        subtitle=feed.optional_text(_SUBTITLE),
        self_url=_self_link(feed),
        updated=feed.read(_UPDATED, _time),
        expires=feed.read(_V["expires"], _time),
        version=version,
        endorser_dn=feed.read(_V["endorser-dn"], _dn),
        issuer_dn=feed.read(_V["issuer-dn"], _dn),
        author_name=author.text(_NAME),
        author_email=author.optional_exact(_EMAIL),
        author_uri=author.parsed(_URI, check_author_uri),
        vo=feed.check("atom:category (vo)", vos[0].get("term", ""), _VO) if vos else None,
        entries=tuple(
            _read_entry(node, index, limits) for index, node in enumerate(entries, start=1)
        ),
        tombstones=tuple(
            _read_tombstone(node, index, limits) for index, node in enumerate(tombstones, start=1)
        ),
        holds=tuple(
            _held(feed, node, index) for index, node in enumerate(feed.groups[_HOLDS], start=1)
        ),
    )


def _urn_uuid(make: Callable[[str], T]) -> Callable[[str], T]:
    def parse(text: str) -> T:
        if not text.startswith(URN_UUID):
            raise ListFormatError(f"{text!r} is not a urn:uuid: identifier")
        return make(text[len(URN_UUID) :])

    return parse


@functools.lru_cache(maxsize=1024)
def _time(text: str) -> datetime:
    """A time field (cached: an entry's times, and many entries' times, are often the
    same text; only a successful parse is cached, and datetimes are immutable)."""
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


def _self_link(feed: _Children) -> str:
    links = [n for n in feed.groups[_LINK] if n.get("rel", "alternate") == "self"]
    if len(links) != 1:
        raise feed.fail("atom:link rel=self", f"expected exactly one, found {len(links)}")
    return feed.check("atom:link rel=self", links[0].get("href", ""), _url)


def _url(text: str) -> str:
    return check_url(text, what="href")


def _token(what: str) -> Callable[[str], str]:
    return lambda text: check_token(text, what=what)


_IMAGE_URN = _urn_uuid(image_id)
_FORMAT, _VO, _TAG = _token("format"), _token("vo"), _token("tag")
_LIST_URN = _urn_uuid(list_id)
_ENTRY_GROUPS = (_LINK, _CATEGORY, _BLOCKS)


def _version(text: str) -> int:
    if not _VERSION.fullmatch(text):
        raise ListFormatError(f"{text!r} is not a positive integer")
    return int(text)


def _read_entry(node: etree._Element, index: int, limits: Limits) -> ImageEntry:
    fields = _gather(node, _EntryLabel(node, index), _ENTRY_TEXT, _ENTRY_GROUPS, limits)
    fields.reject_unknown_vmic()
    enclosures: list[etree._Element] = []
    alternates: list[etree._Element] = []
    vias: list[etree._Element] = []
    by_rel = {"enclosure": enclosures, "alternate": alternates, "via": vias}
    for link in fields.groups[_LINK]:
        same_rel = by_rel.get(link.get("rel", "alternate"))
        if same_rel is not None:
            same_rel.append(link)
    if len(enclosures) != 1:
        raise fields.fail(
            "atom:link rel=enclosure", f"expected exactly one, found {len(enclosures)}"
        )
    enclosure = enclosures[0]
    download = enclosure.get("href", "")
    size = fields.read(_V["size"], _size)
    length = fields.check("atom:link@length", enclosure.get("length", ""), _size)
    if length != size:
        raise fields.fail("atom:link@length", f"{length} differs from vmic:size {size}")
    vos: list[etree._Element] = []
    tags: list[etree._Element] = []
    for category in fields.groups[_CATEGORY]:
        scheme = category.get("scheme")
        if scheme == VO_SCHEME:
            vos.append(category)
        elif scheme == TAG_SCHEME:
            tags.append(category)
    if len(vos) > 1:
        raise fields.fail("atom:category (vo)", "at most one VO")
    # plain: every optional text is there or not, as optional_text() would say
    optional = fields.texts.get if fields.plain else fields.optional_text
    return ImageEntry(
        id=fields.read(_ID, _IMAGE_URN),
        title=fields.text(_TITLE),
        summary=optional(_SUMMARY) or "",
        url=fields.check("atom:link rel=enclosure", download, _url),
        size=size,
        sha512=fields.read(_V["sha512"], sha512_hex),
        format=fields.read(_V["format"], _FORMAT),
        updated=fields.read(_UPDATED, _time),
        endorsed=fields.read(_PUBLISHED, _time),
        hypervisor=optional(_V["hypervisor"]),
        arch=optional(_V["arch"]),
        os=optional(_V["os"]),
        osname=optional(_V["osname"]),
        osversion=optional(_V["osversion"]),
        version=optional(_V["image-version"]),
        produced=fields.parsed(_V["produced"], _time),
        expires=fields.parsed(_V["expires"], _time),
        vo=fields.check("atom:category (vo)", vos[0].get("term", ""), _VO) if vos else None,
        tags=tuple([fields.check("atom:category (tag)", c.get("term", ""), _TAG) for c in tags]),
        info_url=_info_url(fields, alternates, download),
        policy_override=optional(_V["policy-override"]),
        blocks=_blocks(fields, size) if fields.groups[_BLOCKS] else None,
        source_list=fields.parsed(_V["source-list"], _LIST_URN),
        source_version=fields.parsed(_V["source-version"], _version),
        source_url=_via(fields, vias),
    )


class _EntryLabel:
    """How errors name an entry; built only when an error is reported."""

    __slots__ = ("index", "node")

    def __init__(self, node: etree._Element, index: int) -> None:
        self.node, self.index = node, index

    def __str__(self) -> str:
        raw_id = (self.node.findtext(_ID) or "?").strip()
        return f"entry {self.index} ({raw_id[:60]})"


def _info_url(fields: _Children, alternates: list[etree._Element], download: str) -> str | None:
    """The alternate link, unless it only repeats the download URL (the writer's default)."""
    if not alternates:
        return None
    href = alternates[0].get("href", "")
    if href == download:
        return None
    return fields.check("atom:link rel=alternate", href, _url)


def _via(fields: _Children, links: list[etree._Element]) -> str | None:
    if len(links) > 1:
        raise fields.fail("atom:link rel=via", f"at most one, found {len(links)}")
    if not links:
        return None
    return fields.check("atom:link rel=via", links[0].get("href", ""), _url)


def _blocks(fields: _Children, size: int) -> BlocksRef:
    """The entry's block index (SCHEMA §13): one empty element with exactly its three
    attributes, ``length`` the size of the index of an image of ``size`` bytes."""
    found = fields.groups[_BLOCKS]
    if len(found) != 1:
        raise fields.fail("vmic:blocks", f"appears {len(found)} times, at most once allowed")
    node = found[0]
    _only_attributes(fields, node, "vmic:blocks", _BLOCKS_ATTRIBUTES)
    url = fields.check("vmic:blocks@href", node.get("href", ""), _url)
    length = fields.check("vmic:blocks@length", node.get("length", ""), _size)
    expected = index_size(size)
    if length != expected:
        raise fields.fail(
            "vmic:blocks@length",
            f"{length} is not the size of the block index of an image of {size} bytes ({expected})",
        )
    sha512 = fields.check("vmic:blocks@sha512", node.get("sha512", ""), sha512_hex)
    return BlocksRef(url=url, size=length, sha512=sha512)


def _only_attributes(
    fields: _Children, node: etree._Element, name: str, allowed: tuple[str, ...]
) -> None:
    """``node`` is empty and has exactly the attributes ``allowed``."""
    names = [str(attribute) for attribute in node.attrib]
    for attribute in allowed:
        if attribute not in names:
            raise fields.fail(f"{name}@{attribute}", "missing")
    for attribute in names:
        if attribute not in allowed:
            raise fields.fail(name, f"attribute {quoted(attribute)} is not allowed")
    if len(node) or node.text:
        raise fields.fail(name, "must be empty (its attributes say everything)")


def _held(feed: _Children, node: etree._Element, index: int) -> HeldList:
    """One ``vmic:holds`` of a site export (SCHEMA §11)."""
    name = f"vmic:holds {index}"
    _only_attributes(feed, node, name, _HOLDS_ATTRIBUTES)
    return HeldList(
        list_id=feed.check(f"{name}@list", node.get("list", ""), _LIST_URN),
        version=feed.check(f"{name}@version", node.get("version", ""), _version),
        content_sha256=feed.check(
            f"{name}@content-sha256", node.get("content-sha256", ""), sha256_hex
        ),
        url=feed.check(f"{name}@href", node.get("href", ""), _url),
    )


def _read_tombstone(node: etree._Element, index: int, limits: Limits) -> Tombstone:
    ref = node.get("ref", "")
    fields = _gather(node, f"deleted-entry {index} ({ref[:60]})", _TOMBSTONE_TEXT, (), limits)
    fields.reject_unknown_vmic()
    return Tombstone(
        id=fields.check("@ref", ref, _IMAGE_URN),
        when=fields.check("@when", node.get("when", ""), _time),
        reason=fields.optional_text(_COMMENT) or "",
    )
