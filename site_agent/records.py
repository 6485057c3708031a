"""The rows of the site's store as typed values, and the image states.

Image states (DESIGN §5)::

    new ──approve──> approved ──download──> available
     │                  │                      │
     └──refuse──> refused                      │
    any of the above ──> expired | revoked | withdrawn   (never run again
                                                          until listed anew)

``expired``: the image's or its list's expiry passed; ``revoked``: the
endorser listed it as deleted; ``withdrawn``: removed from the list, by the
admin, or by unsubscribing. ``shareable`` says whether peers may be told
about it (federation).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from feeds.model import BlocksRef, ImageEntry
from keys.dn import DistinguishedName
from keys.xmlsig import SignerPin

NEW, APPROVED, REFUSED, AVAILABLE = "new", "approved", "refused", "available"
EXPIRED, REVOKED, WITHDRAWN = "expired", "revoked", "withdrawn"
STATES = (NEW, APPROVED, REFUSED, AVAILABLE, EXPIRED, REVOKED, WITHDRAWN)
ACTIVE_STATES = (NEW, APPROVED, REFUSED, AVAILABLE)
RUNNABLE_STATES = (APPROVED, AVAILABLE)


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _time(value: str) -> datetime:
    parsed = parse_iso(value)
    if parsed is None:
        raise ValueError("missing time")
    return parsed


def pins_to_json(pins: tuple[SignerPin, ...] | list[SignerPin]) -> str:
    """Pinned signers as stored: a JSON list of [subject, issuer] in slash form."""
    return json.dumps([[p.subject.slash(), p.issuer.slash()] for p in pins])


@lru_cache(maxsize=4096)
def pins_from_json(text: str) -> tuple[SignerPin, ...]:
    """The stored pins (cached: a sync reads every subscription's, and parsing DNs is slow;
    the pins are immutable)."""
    return tuple(
        SignerPin(
            subject=DistinguishedName.parse_slash(subject),
            issuer=DistinguishedName.parse_slash(issuer),
        )
        for subject, issuer in json.loads(text)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    name: str
    url: str
    list_id: str
    self_url: str
    pins: tuple[SignerPin, ...]
    auto_approve: bool
    created: datetime
    etag: str | None = None
    last_modified: str | None = None
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_kind: str | None = None
    endorser_version: int | None = None
    """The newest version the endorser's own URL was seen to serve (a freeze: peers hold a
    newer one, :mod:`site_agent.alarms`)."""

    def pins_json(self) -> str:
        return pins_to_json(self.pins)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Subscription:
        return cls(
            name=row["name"],
            url=row["url"],
            list_id=row["list_id"],
            self_url=row["self_url"],
            pins=pins_from_json(row["pins"]),
            auto_approve=bool(row["auto_approve"]),
            created=_time(row["created"]),
            etag=row["etag"],
            last_modified=row["last_modified"],
            last_attempt=parse_iso(row["last_attempt"]),
            last_success=parse_iso(row["last_success"]),
            last_error=row["last_error"],
            last_error_kind=row["last_error_kind"],
            endorser_version=row.get("endorser_version"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ListVersion:
    """A list version the site accepted; the highest per list id is the rollback state."""

    list_id: str
    version: int
    sha256: str
    updated: datetime
    expires: datetime
    accepted_at: datetime
    path: str
    subscription: str
    signer: str
    expired_reported: bool = False
    content_sha256: str | None = None
    """SHA-256 of what the signature covers (None for versions accepted before schema 3)."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ListVersion:
        return cls(
            list_id=row["list_id"],
            version=row["version"],
            sha256=row["sha256"],
            updated=_time(row["updated"]),
            expires=_time(row["expires"]),
            accepted_at=_time(row["accepted_at"]),
            path=row["path"],
            subscription=row["subscription"],
            signer=row["signer"],
            expired_reported=bool(row["expired_reported"]),
            content_sha256=row.get("content_sha256"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRecord:
    subscription: str
    list_id: str | None
    at: datetime
    outcome: str  # accepted | rejected | expired
    version: int | None = None
    sha256: str | None = None
    reason: str | None = None
    kind: str | None = None
    id: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> HistoryRecord:
        return cls(
            id=row["id"],
            subscription=row["subscription"],
            list_id=row["list_id"],
            at=_time(row["at"]),
            outcome=row["outcome"],
            version=row["version"],
            sha256=row["sha256"],
            reason=row["reason"],
            kind=row["kind"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRecord:
    image_id: str
    list_id: str
    subscription: str
    sha512: str
    size: int
    url: str
    title: str
    state: str
    shareable: bool
    reason: str | None
    first_seen: datetime
    changed_at: datetime
    approved_at: datetime | None
    list_version: int
    entry: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ImageRecord:
        return cls(
            image_id=row["image_id"],
            list_id=row["list_id"],
            subscription=row["subscription"],
            sha512=row["sha512"],
            size=row["size"],
            url=row["url"],
            title=row["title"],
            state=row["state"],
            shareable=bool(row["shareable"]),
            reason=row["reason"],
            first_seen=_time(row["first_seen"]),
            changed_at=_time(row["changed_at"]),
            approved_at=parse_iso(row["approved_at"]),
            list_version=row["list_version"],
            entry=json.loads(row["entry"]),
        )

    @property
    def expires(self) -> datetime | None:
        return parse_iso(self.entry.get("expires"))


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    id: int
    at: datetime
    type: str
    subscription: str | None
    image_id: str | None
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EventRecord:
        return cls(
            id=row["id"],
            at=_time(row["at"]),
            type=row["type"],
            subscription=row["subscription"],
            image_id=row["image_id"],
            data=json.loads(row["data"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    event_id: int
    hook: str
    attempts: int
    delivered_at: datetime | None
    last_error: str | None
    gave_up: bool

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Delivery:
        return cls(
            event_id=row["id"],
            hook=row["hook"],
            attempts=row["attempts"],
            delivered_at=parse_iso(row["delivered_at"]),
            last_error=row["last_error"],
            gave_up=bool(row["gave_up"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One thing that happened to one image, for reports."""

    image_id: str
    title: str
    what: str  # new, approved, changed, restored, revoked, removed, expired, conflict, ...
    detail: str = ""

    @property
    def waits_for_admin(self) -> bool:
        """The image came (new, new bytes, or listed again) and is held for the admin."""
        return self.what in ("new", "changed", "relisted")


def entry_data(entry: ImageEntry) -> dict[str, Any]:
    """An image entry as JSON-friendly data (stored with the image, given to hooks)."""
    data = {f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)}
    for key in ("updated", "endorsed", "produced", "expires"):
        data[key] = iso(data[key])
    data["tags"] = list(entry.tags)
    data["extra"] = dict(entry.extra)
    blocks = entry.blocks
    data["blocks"] = (
        None
        if blocks is None
        else {"url": blocks.url, "size": blocks.size, "sha512": blocks.sha512}
    )
    return data


def entry_from_data(data: dict[str, Any]) -> ImageEntry:
    """The inverse of :func:`entry_data` (for entries the site stored after verifying them)."""
    fields = {f.name for f in dataclasses.fields(ImageEntry)}
    values = {k: v for k, v in data.items() if k in fields}
    for key in ("updated", "endorsed", "produced", "expires"):
        values[key] = parse_iso(values.get(key))
    values["tags"] = tuple(values.get("tags") or ())
    values["extra"] = tuple(sorted((values.get("extra") or {}).items()))
    blocks = values.get("blocks")
    values["blocks"] = (
        None
        if not blocks
        else BlocksRef(url=blocks["url"], size=blocks["size"], sha512=blocks["sha512"])
    )
    return ImageEntry(**values)
