"""What an accepted version of a list does to the site's images: the version diff.

:func:`accept_version` records a verified version (its bytes under lists/, its
row, the history) and walks its entries and tombstones against the stored
images: new, changed, relisted, restored, revoked, removed and expired images,
each with its events, in the transaction :class:`site_agent.site.Site` opens for
it; :func:`with_content_digest` completes a version accepted before vmic kept the
digest of its signed content. Each function takes the :class:`~site_agent.site.Site` whose state it
changes; the admin's own changes and the commit group stay there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from feeds.model import ImageEntry
from feeds.verify import ListFormat, VerifiedList
from keys.errors import VmicError
from keys.fileio import write_atomic
from keys.xmlsig import signed_content_sha256
from site_agent.records import (
    ACTIVE_STATES,
    APPROVED,
    EXPIRED,
    NEW,
    REVOKED,
    WITHDRAWN,
    Change,
    HistoryRecord,
    ImageRecord,
    ListVersion,
    Subscription,
    entry_data,
    iso,
)

if TYPE_CHECKING:
    from site_agent.site import Site

# the reason `unsubscribe` gives the images it withdraws; subscribing again decides them anew
UNSUBSCRIBED = "unsubscribed"


def accept_version(
    site: Site,
    sub: Subscription,
    verified: VerifiedList,
    current: ListVersion | None,
    *,
    stored: Path | None,
    then: Callable[[], None] | None,
    retire: bool = True,
) -> tuple[bool, list[Change]]:
    """Record an accepted version and apply its diff in one transaction, which ``then``
    joins (:meth:`Site.accept_list`, :meth:`Site.accept_list_async`); ``stored`` names its
    bytes if already written. Returns whether it was a new version, and the changes."""
    lst = verified.image_list
    if current is not None and current.version == lst.version:
        # The same signed content (the verifier checked): the bytes first accepted stay.
        with site.store.atomic():
            _note_other_copy(site, sub, verified, current)
            relisted = _relist_unsubscribed(site, sub, verified)
            if then is not None:
                then()
        return False, relisted
    path = stored or store_bytes(site, verified)
    changes: list[Change] = []
    with site.store.atomic():
        add_version(site, sub, verified, path)
        listed = {entry.id for entry in lst.entries}
        revoked = {tombstone.id for tombstone in lst.tombstones}
        # One read: the list's images, and the listed or revoked ones of other lists.
        # Each entry and tombstone writes its own image only (their ids are distinct).
        held = site.store.list_images(lst.id, also=[*listed, *revoked])
        for entry in lst.entries:
            change = _take_entry(site, sub, entry, lst.version, held.get(entry.id))
            if change is not None:
                changes.append(change)
        for tombstone in lst.tombstones:
            image = held.get(tombstone.id)
            if image is not None and image.list_id == lst.id and image.state != REVOKED:
                reason = tombstone.reason or "revoked by the endorser"
                changes.append(site._withdraw(image, REVOKED, reason))
        for image in held.values():
            if (
                image.list_id == lst.id
                and image.state in ACTIVE_STATES
                and image.image_id not in listed
                and image.image_id not in revoked
            ):
                changes.append(site._withdraw(image, WITHDRAWN, "removed from the list"))
        site.emit(
            "list.accepted",
            subscription=sub.name,
            list_id=lst.id,
            version=lst.version,
            sha256=verified.sha256,
            expires=iso(lst.expires),
            path=str(path),
        )
        if then is not None:
            then()
    if retire:  # else after the commit group's commit
        site.retire_queued()
    return True, changes


def _relist_unsubscribed(site: Site, sub: Subscription, verified: VerifiedList) -> list[Change]:
    """Subscribed again to the version already held: the entries that `unsubscribe`
    withdrew are decided again, as if new (the approval policy says how)."""
    lst = verified.image_list
    changes: list[Change] = []
    for entry in lst.entries:
        image = site.store.image(entry.id)
        if image is not None and image.list_id == lst.id and _unsubscribed(image):
            change = _take_entry(site, sub, entry, lst.version, image)
            if change is not None:
                changes.append(change)
    return changes


def _note_other_copy(
    site: Site, sub: Subscription, verified: VerifiedList, current: ListVersion
) -> None:
    """History shows a copy of the accepted version in other unsigned bytes, once."""
    if verified.sha256 == current.sha256 or site.store.seen_sha256(sub.name, verified.sha256):
        return
    site.store.add_history(
        HistoryRecord(
            subscription=sub.name,
            list_id=current.list_id,
            at=site.now,
            outcome="same-copy",
            version=current.version,
            sha256=verified.sha256,
            reason=f"version {current.version} again, with the same signed content in "
            f"other bytes; the copy accepted first ({current.sha256[:16]}...) is kept",
        )
    )


def store_bytes(site: Site, verified: VerifiedList, *, folder: Path | None = None) -> Path:
    """The exact bytes under lists/, written before the commit (a crash leaves a stray file)."""
    lst = verified.image_list
    folder = folder or site.home.lists / lst.id
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    path = folder / f"{lst.version}-{verified.sha256}{verified.list_format.suffix}"
    write_atomic(path, verified.raw)
    return path


def add_version(
    site: Site, sub: Subscription, verified: VerifiedList, path: Path, *, export: bool = False
) -> None:
    lst = verified.image_list
    add = site.store.add_export_version if export else site.store.add_list_version
    add(
        ListVersion(
            list_id=lst.id,
            version=lst.version,
            sha256=verified.sha256,
            updated=lst.updated,
            expires=lst.expires,
            accepted_at=site.now,
            path=str(path.relative_to(site.home.root)),
            subscription=sub.name,
            signer=verified.signer.subject.slash(),
            content_sha256=verified.content_sha256,
        )
    )
    site.store.add_history(
        HistoryRecord(
            subscription=sub.name,
            list_id=lst.id,
            at=site.now,
            outcome="accepted",
            version=lst.version,
            sha256=verified.sha256,
        )
    )


def _take_entry(
    site: Site, sub: Subscription, entry: ImageEntry, version: int, image: ImageRecord | None
) -> Change | None:
    """One entry of an accepted version; ``image`` is its stored record, if any."""
    data = entry_data(entry)
    if image is not None and image.list_id != sub.list_id:
        return Change(
            image_id=entry.id,
            title=entry.title,
            what="conflict",
            detail=f"already listed by subscription {image.subscription}; ignored",
        )
    if image is None:
        fresh = ImageRecord(
            image_id=entry.id,
            list_id=sub.list_id,
            subscription=sub.name,
            sha512=entry.sha512,
            size=entry.size,
            url=entry.url,
            title=entry.title,
            state=NEW,
            shareable=False,
            reason=None,
            first_seen=site.now,
            changed_at=site.now,
            approved_at=None,
            list_version=version,
            entry=data,
        )
        return _admit(site, sub, fresh, entry, "new")
    if image.state == REVOKED:
        return None  # revocation is final for an image id
    same_bytes = image.sha512 == entry.sha512 and image.size == entry.size
    updated = dataclasses.replace(
        image,
        subscription=sub.name,
        sha512=entry.sha512,
        size=entry.size,
        url=entry.url,
        title=entry.title,
        list_version=version,
        entry=data,
    )
    if image.state in ACTIVE_STATES and same_bytes:
        site.store.put_image(updated)
        return _expire_if_due(site, updated, entry)
    if image.state in ACTIVE_STATES:  # new bytes under the same id: decide again
        site.store.put_image(updated)
        site._retire_unused(image.sha512, excluding=image.image_id)
        return _admit(site, sub, dataclasses.replace(updated, state=NEW), entry, "changed")
    # expired or withdrawn before, listed (valid) again
    frozen = site.frozen(sub.list_id) is not None
    if image.state == EXPIRED and image.approved_at is not None and same_bytes and not frozen:
        restored = dataclasses.replace(updated, state=APPROVED, reason=None, changed_at=site.now)
        site.store.put_image(restored)
        site.emit("image.approved", subscription=sub.name, image=restored, restored=True)
        return _expire_if_due(site, restored, entry) or Change(
            image_id=entry.id, title=entry.title, what="restored"
        )
    return _admit(site, sub, dataclasses.replace(updated, state=NEW), entry, "relisted")


def _admit(
    site: Site, sub: Subscription, image: ImageRecord, entry: ImageEntry, what: str
) -> Change:
    image = dataclasses.replace(image, state=NEW, reason=None, changed_at=site.now)
    if entry.expired_at(site.now):
        image = dataclasses.replace(image, state=EXPIRED, reason="the image's own expiry passed")
        site.store.put_image(image)
        return Change(image_id=image.image_id, title=image.title, what="expired")
    site.store.put_image(image)
    site.emit("image.new", subscription=sub.name, image=image, change=what)
    alarm = site.frozen(sub.list_id)
    if alarm is not None:  # an equivocation: nothing of the list is approved until decided
        why = f"held: list frozen by alarm {alarm}"
        site.store.put_image(dataclasses.replace(image, reason=why))
        return Change(image_id=image.image_id, title=image.title, what=what, detail=why)
    if site.policy.approves(entry, subscription=sub):
        image = dataclasses.replace(
            image, state=APPROVED, shareable=True, approved_at=site.now, reason=None
        )
        site.store.put_image(image)
        site.emit("image.approved", subscription=sub.name, image=image, by="policy")
        site.approved_by_policy.add(image.image_id)
        what = f"{what}, approved by policy"
    return Change(image_id=image.image_id, title=image.title, what=what)


def _expire_if_due(site: Site, image: ImageRecord, entry: ImageEntry) -> Change | None:
    if entry.expired_at(site.now) and image.state in ACTIVE_STATES:
        return site._withdraw(image, EXPIRED, "the image's own expiry passed")
    return None


def _unsubscribed(image: ImageRecord) -> bool:
    return image.state == WITHDRAWN and image.reason == UNSUBSCRIBED


def with_content_digest(site: Site, current: ListVersion) -> ListVersion:
    """A version accepted before vmic kept the digest of an Atom list's signed content
    (schema 3 kept the bytes' digest): compute it once from the stored bytes."""
    path = site.home.root / current.path
    if path.suffix != ListFormat.ATOM.suffix:
        return current
    try:
        digest = signed_content_sha256(path.read_bytes(), limits=site.config.limits)
    except (OSError, VmicError):
        return current  # same bytes still match by their digest; nothing is lost
    with site.store.atomic():
        site.store.set_content_sha256(current.list_id, current.version, digest)
    return dataclasses.replace(current, content_sha256=digest)
