"""The image list as values: the list, its images, its tombstones.

These are plain frozen dataclasses with checked identifier types. They say
nothing about trust: an :class:`ImageList` may come from a manifest being
edited or from a document being read. Only :func:`feeds.verify.verify_list`
makes a :class:`feeds.verify.VerifiedList`, which is what the rest of vmic
trusts.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import NewType
from urllib.parse import urlsplit

from keys.dn import DistinguishedName
from keys.errors import ListFormatError

ImageId = NewType("ImageId", str)
"""A canonical lower-case UUID (no ``urn:uuid:`` prefix)."""
ListId = NewType("ListId", str)
"""A canonical lower-case UUID naming a list for its whole life."""
Sha512Hex = NewType("Sha512Hex", str)
"""128 lower-case hex digits."""

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SHA512 = re.compile(r"^[0-9a-f]{128}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
URN_UUID = "urn:uuid:"
_QUOTED_CHARS = 60  # of a value quoted in an error message

# Image formats vmic knows by name; others are accepted if they are simple tokens.
KNOWN_FORMATS = (
    "raw",
    "qcow2",
    "vmdk",
    "vdi",
    "vhd",
    "vhdx",
    "ova",
    "iso",
    "tar",
    "tar.gz",
    "tar.xz",
    "tar.bz2",
)
# Characters XML 1.0 cannot carry (C0 controls but tab/LF/CR, surrogates, U+FFFE/U+FFFF).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
# The usual URL: http(s), a host name of letters, digits, dots and hyphens, a port of up
# to four digits, then printable ASCII. Every check of check_url passes it (no credentials,
# no brackets, no whitespace, a port in range), so it needs no urlsplit: a list names
# thousands of them.
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,4})?(?:[/?#][!-~]*)?")
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def new_uuid() -> str:
    return str(uuid.uuid4())


def check_uuid(text: str, *, what: str, any_case: bool = False) -> str:
    """A canonical UUID string, or ListFormatError.

    Strict by default (vmic's own lists write UUIDs lower-case only); ``any_case``
    also takes upper-case hex digits, as HEPiX lists and people write them, and
    returns the canonical lower-case form. The error quotes ``text`` as given.
    """
    canonical = text.lower() if any_case else text
    if not _UUID.fullmatch(canonical):
        form = "any case" if any_case else "lower-case"
        raise ListFormatError(
            f"{what}: {quoted(text)} is not a UUID "
            f"(expected 32 hex digits, {form}, grouped 8-4-4-4-12 by hyphens)"
        )
    return canonical


def image_id(text: str, *, any_case: bool = False) -> ImageId:
    return ImageId(check_uuid(text, what="image id", any_case=any_case))


def list_id(text: str, *, any_case: bool = False) -> ListId:
    return ListId(check_uuid(text, what="list id", any_case=any_case))


def quoted(text: str, *, limit: int = _QUOTED_CHARS) -> str:
    """``text`` in an error message: ``repr`` (so control characters are escaped),
    cut to ``limit`` characters with the full length said."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def sha512_hex(text: str, *, what: str = "sha512", any_case: bool = False) -> Sha512Hex:
    """128 lower-case hex digits, or ListFormatError; ``any_case`` as for :func:`check_uuid`."""
    canonical = text.lower() if any_case else text
    if not _SHA512.fullmatch(canonical):
        form = "any case" if any_case else "lower-case"
        raise ListFormatError(f"{what}: expected 128 hex digits, {form}")
    return Sha512Hex(canonical)


def sha256_hex(text: str, *, what: str = "sha256") -> str:
    """64 lower-case hex digits, or ListFormatError."""
    if not _SHA256.fullmatch(text):
        raise ListFormatError(f"{what}: expected 64 lower-case hex digits")
    return text


def check_token(text: str, *, what: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise ListFormatError(
            f"{what}: {text!r} must be 1-64 letters, digits, '.', '_', '+' or '-'"
        )
    return text


def check_text(text: str, *, what: str) -> str:
    """Text that an XML document can carry, or ListFormatError."""
    bad = _NOT_XML.search(text)
    if bad:
        raise ListFormatError(f"{what}: character U+{ord(bad.group()):04X} cannot appear in XML")
    return text


def check_url(text: str, *, what: str) -> str:
    """An absolute http(s) URL without credentials, whitespace or control characters."""
    if _PLAIN_URL.fullmatch(text):
        return text
    if _URL_FORBIDDEN.search(text):
        raise ListFormatError(f"{what}: URL contains whitespace or control characters")
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise ListFormatError(f"{what}: {text!r} is not a valid URL ({exc})") from exc
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ListFormatError(f"{what}: {text!r} must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ListFormatError(f"{what}: URL must not carry credentials")
    return text


def check_author_uri(text: str) -> str:
    """An endorser's address: an absolute http(s) URL, or ``mailto:`` and an address."""
    if text.startswith("mailto:"):
        address = text.removeprefix("mailto:")
        if not address or any(c.isspace() or ord(c) < 0x20 for c in address) or "@" not in address:
            raise ListFormatError(f"author URI {text!r} is not a mailto: address")
        return text
    return check_url(text, what="author URI")


@dataclass(frozen=True, slots=True, kw_only=True)
class BlocksRef:
    """Where an image's block index is (SCHEMA §13), with its size and SHA-512: signed with
    the entry, so a site can check the index before it uses it."""

    url: str
    size: int
    sha512: Sha512Hex


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldList:
    """In a site export (SCHEMA §11): a version of an endorser's list the site holds, the
    SHA-256 of the content its signature covers, and where the site serves its bytes. Peers
    compare these claims with what they hold themselves (split views, THREATS 41)."""

    list_id: ListId
    version: int
    content_sha256: str
    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageEntry:
    """One endorsed image, as one ``atom:entry``."""

    id: ImageId
    title: str
    summary: str
    url: str
    size: int
    sha512: Sha512Hex
    format: str
    updated: datetime
    endorsed: datetime
    hypervisor: str | None = None
    arch: str | None = None
    os: str | None = None
    osname: str | None = None
    osversion: str | None = None
    version: str | None = None
    produced: datetime | None = None
    expires: datetime | None = None
    vo: str | None = None
    tags: tuple[str, ...] = ()
    info_url: str | None = None
    """The web page of the image (HEPiX ``ad:mpuri``, the marketplace URI)."""
    policy_override: str | None = None
    blocks: BlocksRef | None = None
    """The image's block index (``vmic:blocks``), in an endorser's list only."""
    appliance_id: str | None = None
    """The EGI AppDB appliance the image belongs to (HEPiX ``ad:appid``), read only."""
    base_marketplace_url: str | None = None
    """The AppDB page of the base image (HEPiX ``ad:base_mpuri``), read only."""
    # In a site's export only: the endorser's list the image comes from, its
    # version, and where the site re-serves that list's original bytes.
    source_list: ListId | None = None
    source_version: int | None = None
    source_url: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    """Keys of a HEPiX list that vmic does not read (``ad:mpuri``, ...), kept for hooks."""

    def expired_at(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True, slots=True, kw_only=True)
class Tombstone:
    """An image taken back by its endorser (RFC 6721 ``at:deleted-entry``)."""

    id: ImageId
    when: datetime
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageList:
    """A whole image list: feed-level fields, images and tombstones."""

    id: ListId
    title: str
    self_url: str
    updated: datetime
    expires: datetime
    version: int
    endorser_dn: DistinguishedName
    issuer_dn: DistinguishedName
    author_name: str
    author_email: str | None = None
    author_uri: str | None = None
    """The endorser's web page or address (``atom:uri``; HEPiX ``ad:user:uri``)."""
    subtitle: str | None = None
    vo: str | None = None
    """The virtual organisation the list is for (HEPiX list-level ``ad:vo``)."""
    entries: tuple[ImageEntry, ...] = ()
    tombstones: tuple[Tombstone, ...] = ()
    holds: tuple[HeldList, ...] = ()
    """In a site export only: the endorsers' lists the site holds (``vmic:holds``)."""
    extra: tuple[tuple[str, str], ...] = ()
    """List-level keys of a HEPiX list that vmic does not read (``ad:vo``, ...)."""
    _by_id: dict[str, ImageEntry] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        ids = [e.id for e in self.entries]
        dead = {t.id for t in self.tombstones}
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ListFormatError(f"image {dup} appears twice in the list")
        if len(dead) != len(self.tombstones):
            raise ListFormatError("an image is revoked twice in the list")
        both = dead.intersection(ids)
        if both:
            raise ListFormatError(f"image {sorted(both)[0]} is both listed and revoked")
        held = {h.list_id for h in self.holds}
        if len(held) != len(self.holds):
            raise ListFormatError("vmic:holds names a list twice")
        self._by_id.update({e.id: e for e in self.entries})

    def entry(self, image: str) -> ImageEntry | None:
        return self._by_id.get(image)
