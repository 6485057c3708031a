"""Deciding whether an image list may be trusted: the one place that makes a VerifiedList.

:func:`verify_list` is pure: it does no I/O and reads no clock (``now`` is
given). It applies, in this order, and stops at the first failure:

1. the byte cap, then the hardened parse (no DTD, no entities, bounded depth);
2. the signature profile (one enveloped signature on ``atom:feed``, ``URI=""``,
   exclusive C14N, RSA/ECDSA-SHA256, SHA-256/512 digest, X.509 KeyInfo);
3. the signer's chain at ``now`` against the trust store, CRLs per policy,
   key sizes;
4. the signature itself (signxml), after which only the signed tree is read;
5. the pins: the signer's full subject and issuer DN must equal a pinned pair;
6. the list's content (the reader), and the DNs it names must be the signer's;
7. the expected list: ``atom:id`` and the self link (when a subscription says);
8. freshness: ``updated`` not beyond ``now`` + skew, ``expires`` after ``now``;
9. versions against the last accepted list of this id (when known): not lower;
   equal only with the same bytes; not more than ``max_version_step`` higher;
   ``updated`` not earlier than before.

Rollback state is per list id (the caller keeps it), never per source, so a
list fetched from a peer or a mirror is judged exactly as from its endorser.

A HEPiX list (JSON signed as S/MIME, told apart by its first bytes) goes
through the same steps with its own first half: the S/MIME signature
(keys/smime.py), then the JSON (feeds/hepix.py), then the signer against the
``hv:dn``/``hv:ca`` the list names, then the chain, then the pins; steps 7-9
are shared, except the fast-forward bound (AppDB versions are timestamps).
So a HEPiX list that was altered is reported as altered, and one signed by
someone else than it names as such, before any question of trust.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from feeds.atom import FEED_TAG
from feeds.hepix import read_hepix
from feeds.model import ImageList, ListId
from feeds.reader import read_list
from keys.certs import fingerprint
from keys.dn import DistinguishedName
from keys.errors import (
    FreshnessError,
    ListFormatError,
    RollbackError,
    UntrustedSignerError,
    WrongListError,
    outside_bytes,
)
from keys.limits import DEFAULT_LIMITS, Limits
from keys.smime import SignedContent, looks_like_smime, verify_smime
from keys.trust import CrlPolicy, TrustStore, ValidatedChain
from keys.xmlsig import SignerPin, check_pins, verify_enveloped


class ListFormat(StrEnum):
    """How a list is written and signed."""

    ATOM = "atom"
    """Atom with an enveloped XML signature (vmic's own format)."""
    HEPIX = "hepix"
    """HEPiX JSON signed as S/MIME (vmcaster, the EGI AppDB, vmcatcher)."""

    @property
    def suffix(self) -> str:
        return ".atom" if self is ListFormat.ATOM else ".smime"

    @property
    def media_type(self) -> str:
        # A stored HEPiX list is a MIME message, or DER, or PEM: bytes to pass on unchanged.
        return "application/atom+xml" if self is ListFormat.ATOM else "application/octet-stream"


def detect_format(raw: bytes) -> ListFormat:
    """Atom or HEPiX, from the first bytes; HTML, unsigned JSON and anything else is refused."""
    if looks_like_html(raw):
        raise ListFormatError(
            "got an HTML page (a web page), not a signed image list",
            hint="give the address of the list itself, not of a web page about it "
            "(a vmic site's export is at /export.atom; `vmic peer add` finds it from the "
            "site's address)",
        )
    head = raw.lstrip()[:64]
    if head.startswith(b"<"):
        return ListFormat.ATOM
    if head.startswith((b"{", b"[")):
        raise ListFormatError(
            "an unsigned HEPiX list (JSON without an S/MIME signature)",
            hint="vmic takes signed lists only; the endorser must sign it "
            "(vmcaster, or vmic endorse sign --format hepix)",
        )
    if looks_like_smime(raw):
        return ListFormat.HEPIX
    raise ListFormatError(
        "neither a signed Atom list (XML) nor a signed HEPiX list (S/MIME)",
        hint="check the URL: it may point at an HTML page or an error document",
    )


_HTML_SNIFF_BYTES = 4096  # an HTML page says so before this, after any prolog
# Whitespace, the XML declaration and other processing instructions, comments.
_PROLOG = re.compile(rb"\A(?:\s+|<\?.*?\?>|<!--.*?-->)*", re.DOTALL)
_HTML_START = re.compile(rb"<!doctype\s+html[\s>]|<html[\s>/]", re.IGNORECASE)


def looks_like_html(raw: bytes) -> bool:
    """True when ``raw`` is an HTML page: after a BOM, whitespace, an XML declaration and
    comments it starts with ``<!DOCTYPE html`` or ``<html`` (any case)."""
    head = raw[:_HTML_SNIFF_BYTES].removeprefix(b"\xef\xbb\xbf")
    prolog = _PROLOG.match(head)
    start = prolog.end() if prolog else 0
    return _HTML_START.match(head, start) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expectation:
    """What a subscription expects: this list id and this self link."""

    list_id: ListId | None = None
    self_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PreviousState:
    """What the site last accepted for this list id (the rollback state)."""

    version: int
    sha256: str
    updated: datetime
    content_sha256: str | None = None
    """SHA-256 of what the signature covered; the same version may come again with other
    unsigned bytes (an S/MIME message's headers or base64 wrapping) but not other content."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Signer:
    subject: DistinguishedName
    issuer: DistinguishedName
    fingerprint: str
    not_after: datetime
    signature_method: str
    digest_method: str


class VerifiedList:
    """A list that passed every check; only :func:`verify_list` makes one.

    Deliberately not a dataclass: it has no public constructor, and
    ``dataclasses.replace`` cannot make a copy with other content.
    """

    __slots__ = (
        "content_sha256",
        "image_list",
        "list_format",
        "raw",
        "sha256",
        "signer",
        "verified_at",
    )

    image_list: ImageList
    raw: bytes
    sha256: str
    content_sha256: str
    signer: Signer
    verified_at: datetime
    list_format: ListFormat

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        raise TypeError("VerifiedList is made by feeds.verify.verify_list only")

    @classmethod
    def _issue(
        cls,
        *,
        image_list: ImageList,
        raw: bytes,
        sha256: str,
        content_sha256: str,
        signer: Signer,
        verified_at: datetime,
        list_format: ListFormat,
    ) -> VerifiedList:
        made = object.__new__(cls)
        for name, value in (
            ("image_list", image_list),
            ("raw", raw),
            ("sha256", sha256),
            ("content_sha256", content_sha256),
            ("signer", signer),
            ("verified_at", verified_at),
            ("list_format", list_format),
        ):
            object.__setattr__(made, name, value)
        return made

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"VerifiedList is read-only (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"VerifiedList is read-only (cannot delete {name})")

    def __repr__(self) -> str:
        lst = self.image_list
        return f"VerifiedList(id={lst.id}, version={lst.version}, sha256={self.sha256[:12]}...)"


def verify_list(
    raw: bytes,
    *,
    trust: TrustStore,
    pins: Sequence[SignerPin] | None,
    now: datetime,
    crl: CrlPolicy = CrlPolicy.REQUIRE,
    expect: Expectation | None = None,
    previous: PreviousState | None = None,
    limits: Limits = DEFAULT_LIMITS,
    list_format: ListFormat | None = None,
) -> VerifiedList:
    """Verify a signed image list; ``pins=None`` accepts any signer the trust store accepts.

    ``list_format=None`` tells Atom from HEPiX by the first bytes. Raises a
    :class:`~keys.errors.VmicError` and nothing else, whatever ``raw`` holds.
    """
    with outside_bytes("the list cannot be checked", ListFormatError):
        return _verify_list(
            raw,
            trust=trust,
            pins=pins,
            now=now,
            crl=crl,
            expect=expect,
            previous=previous,
            limits=limits,
            list_format=list_format,
        )


def _verify_list(
    raw: bytes,
    *,
    trust: TrustStore,
    pins: Sequence[SignerPin] | None,
    now: datetime,
    crl: CrlPolicy,
    expect: Expectation | None,
    previous: PreviousState | None,
    limits: Limits,
    list_format: ListFormat | None,
) -> VerifiedList:
    kind = detect_format(raw) if list_format is None else list_format
    digest = hashlib.sha256(raw).hexdigest()
    if kind is ListFormat.HEPIX:
        image_list, chain, signed = _verify_hepix(
            raw, trust=trust, pins=pins, now=now, crl=crl, limits=limits
        )
        signature_method, digest_method = f"{signed.signature} (S/MIME)", signed.digest
        content_digest = hashlib.sha256(signed.content).hexdigest()
    else:
        verified = verify_enveloped(
            raw, trust=trust, pins=pins, at=now, root_tag=FEED_TAG, crl=crl, limits=limits
        )
        image_list = read_list(verified.root, limits=limits)
        _check_named_signer(image_list, verified.signer_subject, verified.signer_issuer)
        chain = verified.chain
        signature_method, digest_method = verified.signature_method, verified.digest_method
        content_digest = verified.content_sha256
    if expect is not None:
        _check_expected(image_list, expect)
    _check_fresh(image_list, now, limits)
    if previous is not None:
        step = limits.max_version_step if kind is ListFormat.ATOM else None
        _check_versions(image_list, (digest, content_digest), previous, step)
    leaf = chain.leaf
    return VerifiedList._issue(
        image_list=image_list,
        raw=raw,
        sha256=digest,
        content_sha256=content_digest,
        signer=Signer(
            subject=DistinguishedName.from_x509(leaf.subject),
            issuer=DistinguishedName.from_x509(leaf.issuer),
            fingerprint=fingerprint(leaf),
            not_after=leaf.not_valid_after_utc,
            signature_method=signature_method,
            digest_method=digest_method,
        ),
        verified_at=now,
        list_format=kind,
    )


def _verify_hepix(
    raw: bytes,
    *,
    trust: TrustStore,
    pins: Sequence[SignerPin] | None,
    now: datetime,
    crl: CrlPolicy,
    limits: Limits,
) -> tuple[ImageList, ValidatedChain, SignedContent]:
    """Signature, content, named signer, chain, pins: the first half for a HEPiX list."""
    signed = verify_smime(raw, limits=limits)
    image_list = read_hepix(signed.content, limits=limits)
    _check_named_signer(
        image_list,
        DistinguishedName.from_x509(signed.signer.subject),
        DistinguishedName.from_x509(signed.signer.issuer),
    )
    chain = trust.validate(signed.signer, signed.others, at=now, crl=crl)
    check_pins(chain.leaf, pins)
    return image_list, chain, signed


def _check_named_signer(
    image_list: ImageList, subject: DistinguishedName, issuer: DistinguishedName
) -> None:
    if image_list.endorser_dn != subject:
        raise UntrustedSignerError(
            f"the list names endorser {image_list.endorser_dn} but was signed by {subject}",
            hint=_NAMED_SIGNER_HINT,
        )
    if image_list.issuer_dn != issuer:
        raise UntrustedSignerError(
            f"the list names issuer {image_list.issuer_dn} "
            f"but the signer's certificate was issued by {issuer}",
            hint=_NAMED_SIGNER_HINT,
        )


_NAMED_SIGNER_HINT = (
    "the DNs written in the list must be those of the certificate that signed it; "
    "someone other than the endorser it names signed it, or the endorser wrote the wrong DNs"
)


def _check_expected(image_list: ImageList, expect: Expectation) -> None:
    if expect.list_id is not None and image_list.id != expect.list_id:
        raise WrongListError(f"expected list {expect.list_id}, got list {image_list.id}")
    if expect.self_url is not None and image_list.self_url != expect.self_url:
        raise WrongListError(
            f"the list's self link is {image_list.self_url}, expected {expect.self_url}"
        )


def _check_fresh(image_list: ImageList, now: datetime, limits: Limits) -> None:
    if image_list.updated > now + limits.clock_skew:
        raise FreshnessError(
            f"the list was updated in the future ({image_list.updated:%Y-%m-%d %H:%M:%S}Z, "
            f"now {now:%Y-%m-%d %H:%M:%S}Z)",
            hint="check this machine's clock and the endorser's",
        )
    if image_list.expires <= image_list.updated:
        raise FreshnessError("the list expires before it was updated")
    if now >= image_list.expires:
        raise FreshnessError(
            f"the list expired on {image_list.expires:%Y-%m-%d %H:%M:%S}Z",
            hint="the endorser must publish a fresh list (vmic endorse sign)",
        )


def _check_versions(
    image_list: ImageList,
    digests: tuple[str, str],
    previous: PreviousState,
    max_step: int | None,
) -> None:
    """``digests``: of the bytes, and of what the signature covers."""
    digest, content_digest = digests
    version = image_list.version
    if version < previous.version:
        raise RollbackError(
            f"version {version} is older than version {previous.version} already accepted"
        )
    if version == previous.version:
        same = digest == previous.sha256 or content_digest == previous.content_sha256
        if not same:
            raise RollbackError(
                f"version {version} was already accepted with different content",
                hint="an endorser must raise the version for every new signing; report this",
            )
        return
    if max_step is not None and version - previous.version > max_step:
        raise RollbackError(
            f"version jumps from {previous.version} to {version}, more than the "
            f"allowed step of {max_step}",
            hint="a fast-forward attack or an endorser mistake; ask the endorser",
        )
    if image_list.updated < previous.updated:
        raise RollbackError(
            f"version {version} claims an earlier update time than version {previous.version}"
        )
