"""The rules that change a site's trusted state, in one place.

:class:`Site` holds the store, the cache, the configuration and the clock
reading of one run, and performs every state change the agent and the admin
make: accepting a verified list (the diff itself, new, changed, removed,
revoked, expired images, is :mod:`site_agent.versions`), recording a
rejection, failing closed when a list expires, approving, refusing and
withdrawing images, and marking downloads available. Each change and its
events are written in one transaction; events are recorded before any hook
sees them.

Nothing here does network I/O; :mod:`site_agent.sync` fetches and downloads.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from feeds.verify import PreviousState, VerifiedList
from keys.errors import ConfigError, StoreError, VmicError
from site_agent.alarms import AlarmStore
from site_agent.approval import ApprovalPolicy, site_policy
from site_agent.batch import Accepted, CommitGroup
from site_agent.cache import Cache
from site_agent.config import SiteConfig
from site_agent.home import SiteHome
from site_agent.records import (
    ACTIVE_STATES,
    APPROVED,
    AVAILABLE,
    EXPIRED,
    NEW,
    REFUSED,
    RUNNABLE_STATES,
    WITHDRAWN,
    Change,
    HistoryRecord,
    ImageRecord,
    ListVersion,
    Subscription,
    iso,
)
from site_agent.store import Store
from site_agent.versions import (
    UNSUBSCRIBED,
    accept_version,
    add_version,
    store_bytes,
    with_content_digest,
)

T = TypeVar("T")

PEER_EXPORTS = "peer-exports"
"""Under lists/: the bytes of peers' exports, by export id (apart from endorsers' lists)."""
DELTA_REUSED = "delta_bytes_reused_total"
"""Meta key: image bytes all updates by blocks did not fetch (site_agent.delta)."""
DELTA_FETCHED = "delta_bytes_fetched_total"
"""Meta key: bytes all updates by blocks fetched (indexes and ranges)."""


class Site:
    def __init__(
        self,
        home: SiteHome,
        config: SiteConfig,
        store: Store,
        *,
        now: datetime,
        policy: ApprovalPolicy | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.store = store
        self.cache = Cache(home)
        self.now = now
        self.policy = policy or site_policy(config)
        self._retire_queue: set[str] = set()
        self._verify_gate = asyncio.Semaphore(config.limits.verify_concurrency)
        self.unchanged: list[str] = []
        """Subscriptions whose list answered 304 in this run: written by record_unchanged."""
        self._group: CommitGroup | None = None
        self._frozen: dict[str, int] | None = None
        self.approved_by_policy: set[str] = set()
        """Images the approval policy approved in this run (held again by :meth:`freeze`)."""

    def count_delta(self, *, reused: int, fetched: int) -> None:
        """Add an update by blocks to the site's running totals (for /metrics)."""
        with self.store.atomic():
            for key, amount in ((DELTA_REUSED, reused), (DELTA_FETCHED, fetched)):
                self.store.set_meta(key, str(int(self.store.meta(key) or 0) + amount))

    def record_unchanged(self) -> None:
        """The successful attempt of every unchanged list of the run, in one transaction."""
        names, self.unchanged = self.unchanged, []
        if names:
            with self.store.atomic():
                self.store.record_unchanged(names, at=self.now)

    async def verify(self, check: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a verification on a worker thread, at most ``limits.verify_concurrency`` at
        once: each holds about 13 times its list's size in memory while it runs."""
        async with self._verify_gate:
            return await asyncio.to_thread(check, *args, **kwargs)

    # -- events ------------------------------------------------------------------
    def emit(
        self,
        event_type: str,
        *,
        subscription: str | None,
        image: ImageRecord | None = None,
        **data: Any,
    ) -> None:
        if image is not None:
            data = {**_image_data(image), **data}
        hooks = [h.name for h in self.config.hooks if h.wants(event_type)]
        self.store.add_event(
            at=self.now,
            type=event_type,
            subscription=subscription,
            image_id=image.image_id if image else None,
            data=data,
            hooks=hooks,
        )

    # -- lists ------------------------------------------------------------------------
    def previous_state(self, list_id: str) -> PreviousState | None:
        """The rollback state of an endorser's list."""
        return previous_of(self.current_list(list_id))

    def previous_export_state(self, list_id: str) -> PreviousState | None:
        """The rollback state of a peer's export (never shared with an endorser's list)."""
        return previous_of(self.store.current_export(list_id))

    def current_list(self, list_id: str) -> ListVersion | None:
        """The version of an endorser's list in force (its rollback state: hand it to the
        verifier with :func:`previous_of`, then to :meth:`accept_list_async`)."""
        current = self.store.current_list(list_id)
        if current is not None and current.content_sha256 in (None, current.sha256):
            current = with_content_digest(self, current)
        return current

    @contextmanager
    def commit_group(
        self, *, most: int | None = None, wait: float | None = None
    ) -> Iterator[CommitGroup]:
        """While open, :meth:`accept_list_async` and :meth:`reject_list` share a transaction,
        committed every ``most`` lists, after ``wait`` seconds (by default
        :data:`site_agent.batch.MOST` and :data:`~site_agent.batch.WAIT`), and at the end:
        one commit (one fsync) for many lists. A subscription counts as done once it is
        committed (:meth:`settle`). The group is handed back: once closed, it holds the
        failed commits nobody waited for and the errors after commits, for the report. Left
        by an exception, the open group is rolled back, as a crash would leave it."""
        group = CommitGroup(self.store, most=most, wait=wait, after=self.retire_queued)
        self._group = group
        try:
            yield group
        except BaseException:
            self._group = None
            group.abandon()
            raise
        self._group = None
        group.commit()

    async def settle(self, name: str) -> None:
        """Wait until what subscription ``name`` wrote in the commit group is committed;
        raises the store's error if that commit failed (nothing of it then holds)."""
        if self._group is not None:
            await self._group.settle(name)

    async def accept_list_async(
        self,
        sub: Subscription,
        verified: VerifiedList,
        *,
        current: ListVersion | None,
        then: Callable[[], None] | None = None,
    ) -> Accepted:
        """:meth:`accept_list` for the sync, given the ``current`` version the verifier was
        shown. A new version's bytes are written and fsynced on a worker thread, so the
        other lists' fetches and verifications go on meanwhile; its rows are written after
        that, in the commit group if one is open (:meth:`commit_group`): the result names
        the group's batch, whose commit decides whether they hold.

        The version in force is read again before writing: a batch rolled back during the
        awaits (of the verification, of the write) may have taken ``current`` with it. If
        it changed, nothing is written and a :class:`StoreError` says so (the list is
        fetched and verified again next run)."""
        lst = verified.image_list
        stored = None
        if current is None or current.version != lst.version:
            stored = await asyncio.to_thread(store_bytes, self, verified)
        group = self._group
        batch = None if group is None else group.join(sub.name)
        now_current = self.store.current_list(lst.id)
        if _identity(now_current) != _identity(current):
            raise StoreError(
                f"list {lst.id}: the version in force changed while version {lst.version} was "
                f"verified (a commit of this run failed); it is fetched again next run"
            )
        new, changes = accept_version(
            self, sub, verified, current, stored=stored, then=then, retire=group is None
        )
        if group is not None:
            group.written()
        return Accepted(version=lst.version, new=new, changes=changes, batch=batch)

    def accept_list(
        self,
        sub: Subscription,
        verified: VerifiedList,
        *,
        then: Callable[[], None] | None = None,
    ) -> tuple[bool, list[Change]]:
        """Store the bytes, record the version, apply the diff; one transaction, which
        ``then`` (the subscription's attempt, say) joins.

        Returns whether this was a new version, and what happened to images.
        """
        current = self.store.current_list(verified.image_list.id)
        return accept_version(self, sub, verified, current, stored=None, then=then)

    def record_export(self, holder: Subscription, verified: VerifiedList) -> bool:
        """Keep a peer's verified export (bytes, version: its rollback state, in the realm of
        exports) without touching images; ``holder`` names the peer (``peer:<name>``)."""
        lst = verified.image_list
        current = self.store.current_export(lst.id)
        if current is not None and current.version == lst.version:
            return False
        path = store_bytes(self, verified, folder=self.home.lists / PEER_EXPORTS / lst.id)
        with self.store.atomic():
            add_version(self, holder, verified, path, export=True)
        return True

    def expire_images_if_due(self) -> list[Change]:
        """Withdraw active images whose own expiry has passed (checked every run)."""
        changes = []
        with self.store.atomic():
            for state in ACTIVE_STATES:
                for image in self.store.images_with_expiry(state):
                    expires = image.expires
                    if expires is not None and self.now >= expires:
                        changes.append(
                            self._withdraw(image, EXPIRED, "the image's own expiry passed")
                        )
        self.retire_queued()
        return changes

    def reject_list(
        self, sub: Subscription, error: VmicError, *, sha256: str | None, via: str = ""
    ) -> None:
        kind = type(error).__name__
        if self._group is not None:
            self._group.join(sub.name)
        with self.store.atomic():
            self.store.add_history(
                HistoryRecord(
                    subscription=sub.name,
                    list_id=sub.list_id,
                    at=self.now,
                    outcome="rejected",
                    sha256=sha256,
                    reason=error.message + via,
                    kind=kind,
                )
            )
            self.emit(
                "list.rejected",
                subscription=sub.name,
                list_id=sub.list_id,
                reason=error.message + via,
                kind=kind,
                sha256=sha256,
            )
        if self._group is not None:
            self._group.written()

    def expire_list_if_due(self, sub: Subscription) -> list[Change] | None:
        """Fail closed: once the last good list has expired, withdraw its images.

        Returns None while the list is in force, else the changes (empty when
        its images were withdrawn by an earlier run).
        """
        current = self.store.current_list(sub.list_id)
        if current is None or self.now < current.expires:
            return None
        with self.store.atomic():
            changes = [
                self._withdraw(image, EXPIRED, f"list expired on {iso(current.expires)}")
                for image in self.store.active_images(sub.list_id)
            ]
            if not current.expired_reported:
                self.store.mark_expiry_reported(current.list_id, current.version)
                self.store.add_history(
                    HistoryRecord(
                        subscription=sub.name,
                        list_id=sub.list_id,
                        at=self.now,
                        outcome="expired",
                        version=current.version,
                        sha256=current.sha256,
                        reason=f"expired on {iso(current.expires)} with no newer valid version",
                    )
                )
                self.emit(
                    "list.expired",
                    subscription=sub.name,
                    list_id=sub.list_id,
                    version=current.version,
                    expires=iso(current.expires),
                )
        self.retire_queued()
        return changes

    # -- images ---------------------------------------------------------------------
    def _withdraw(self, image: ImageRecord, state: str, reason: str) -> Change:
        withdrawn = dataclasses.replace(image, state=state, reason=reason, changed_at=self.now)
        self.store.put_image(withdrawn)
        self.emit(
            "image.withdrawn",
            subscription=image.subscription,
            image=withdrawn,
            previous_state=image.state,
        )
        self._retire_unused(image.sha512, excluding=image.image_id)
        return Change(image_id=image.image_id, title=image.title, what=state, detail=reason)

    def _retire_unused(self, sha512: str, *, excluding: str) -> None:
        """Queue the bytes for cache/expired; moved after the commit, if still unused."""
        self._retire_queue.add(sha512)

    def retire_queued(self) -> None:
        """Move queued files whose SHA-512 no runnable image uses (call after commits)."""
        while self._retire_queue:
            sha512 = self._retire_queue.pop()
            if not self.store.sha512_in_use(sha512, states=RUNNABLE_STATES):
                self.cache.retire(sha512, now=self.now)

    def find(self, image_id: str) -> ImageRecord:
        image = self.store.image(image_id.removeprefix("urn:uuid:").lower())
        if image is None:
            raise ConfigError(f"no image {image_id} at this site", hint="see `vmic images`")
        return image

    def frozen(self, list_id: str) -> int | None:
        """The open alarm that freezes ``list_id`` (no new approvals from it), or None."""
        if self._frozen is None:
            self._frozen = AlarmStore(self.store).frozen()
        return self._frozen.get(list_id)

    def freeze(self, list_id: str, alarm_id: int) -> list[Change]:
        """An equivocation alarm was raised for ``list_id``: from now on it approves nothing
        new, and its images approved by policy in this run (not yet downloaded, so never
        run here) are held for the admin again."""
        if self.frozen(list_id) is None and self._frozen is not None:
            self._frozen[list_id] = alarm_id
        why = f"held: list frozen by alarm {alarm_id}"
        changes = []
        with self.store.atomic():
            for image in self.store.images(state=APPROVED):
                if image.list_id != list_id or image.image_id not in self.approved_by_policy:
                    continue
                held = dataclasses.replace(
                    image, state=NEW, shareable=False, approved_at=None, reason=why
                )
                self.store.put_image(held)
                self.emit("image.new", subscription=image.subscription, image=held, change=why)
                changes.append(Change(image_id=image.image_id, title=image.title, what=why))
        return changes

    def approve(self, image_id: str, *, shareable: bool) -> Change:
        image = self.find(image_id)
        alarm = self.frozen(image.list_id)
        if alarm is not None and image.state not in RUNNABLE_STATES:
            raise ConfigError(
                f"image {image.image_id} comes from list {image.subscription}, which is frozen "
                f"by alarm {alarm}: two signed versions of it disagree",
                hint=f"see `vmic alarms`; `vmic alarm resolve {alarm} --note TEXT` when decided",
            )
        if image.state not in (NEW, REFUSED, APPROVED, AVAILABLE):
            raise ConfigError(
                f"image {image.image_id} is {image.state} ({image.reason}); it cannot be approved",
                hint="only images the current list names can run",
            )
        state = image.state if image.state in RUNNABLE_STATES else APPROVED
        approved = dataclasses.replace(
            image,
            state=state,
            shareable=shareable,
            reason=None,
            approved_at=image.approved_at or self.now,
            changed_at=self.now,
        )
        with self.store.atomic():
            self.store.put_image(approved)
            self.emit("image.approved", subscription=image.subscription, image=approved, by="admin")
        return Change(image_id=image.image_id, title=image.title, what=state)

    def refuse(self, image_id: str, *, reason: str) -> Change:
        image = self.find(image_id)
        if image.state not in ACTIVE_STATES:
            raise ConfigError(f"image {image.image_id} is {image.state} already")
        refused = dataclasses.replace(
            image, state=REFUSED, reason=reason, shareable=False, changed_at=self.now
        )
        with self.store.atomic():
            self.store.put_image(refused)
            self.emit("image.refused", subscription=image.subscription, image=refused)
            if image.state in RUNNABLE_STATES:
                self.emit(
                    "image.withdrawn",
                    subscription=image.subscription,
                    image=refused,
                    previous_state=image.state,
                )
                self._retire_unused(image.sha512, excluding=image.image_id)
        self.retire_queued()
        return Change(image_id=image.image_id, title=image.title, what=REFUSED, detail=reason)

    def withdraw(self, image_id: str) -> Change:
        image = self.find(image_id)
        if image.state not in ACTIVE_STATES:
            raise ConfigError(f"image {image.image_id} is {image.state} already")
        with self.store.atomic():
            change = self._withdraw(image, WITHDRAWN, "withdrawn by the admin")
        self.retire_queued()
        return change

    def withdraw_subscription(self, sub: Subscription) -> list[Change]:
        with self.store.atomic():
            changes = [
                self._withdraw(image, WITHDRAWN, UNSUBSCRIBED)
                for image in self.store.active_images(sub.list_id)
            ]
            self.store.remove_subscription(sub.name)
        self.retire_queued()
        return changes

    def purgeable(self, image_id: str) -> ImageRecord:
        """The image, if its bytes may be purged: it no longer runs here."""
        image = self.find(image_id)
        if image.state in RUNNABLE_STATES:
            raise ConfigError(
                f"image {image.image_id} is {image.state}; only an image that no longer runs "
                "here can be purged",
                hint="`vmic withdraw` or `vmic refuse` it first",
            )
        return image

    def purge(self, image_id: str) -> tuple[Change, int]:
        """Delete the bytes of an image that no longer runs here, for good; its record and
        the history stay (a line in the history says what was deleted). Returns the change
        and the number of bytes freed."""
        image = self.purgeable(image_id)
        shared = self.store.sha512_in_use(image.sha512, states=RUNNABLE_STATES)
        freed = self.cache.purge(image.sha512, keep_cached=shared)
        with self.store.atomic():
            self.store.add_history(
                HistoryRecord(
                    subscription=image.subscription,
                    list_id=image.list_id,
                    at=self.now,
                    outcome="purged",
                    version=image.list_version,
                    reason=f"image {image.image_id}: its bytes deleted by the admin ({freed} "
                    "bytes freed)"
                    + ("; the cached file stays: another image runs on it" if shared else ""),
                )
            )
        detail = f"{freed} bytes freed" + ("; cached copy kept: in use" if shared else "")
        change = Change(image_id=image.image_id, title=image.title, what="purged", detail=detail)
        return change, freed

    def mark_available(self, image: ImageRecord) -> Change:
        available = dataclasses.replace(image, state=AVAILABLE, changed_at=self.now)
        with self.store.atomic():
            self.store.put_image(available)
            self.emit(
                "image.available",
                subscription=image.subscription,
                image=available,
                path=str(self.cache.path(image.sha512)),
            )
        return Change(image_id=image.image_id, title=image.title, what=AVAILABLE)

    def mark_missing(self, image: ImageRecord, *, reason: str) -> None:
        """An available image whose bytes are gone or bad goes back to approved."""
        with self.store.atomic():
            self.store.put_image(
                dataclasses.replace(image, state=APPROVED, reason=reason, changed_at=self.now)
            )


def _identity(version: ListVersion | None) -> tuple[int, str] | None:
    """What makes the version in force the one a verification was given."""
    return None if version is None else (version.version, version.sha256)


def previous_of(current: ListVersion | None) -> PreviousState | None:
    """The rollback state the verifier checks a list against, from the version in force."""
    if current is None:
        return None
    return PreviousState(
        version=current.version,
        sha256=current.sha256,
        updated=current.updated,
        content_sha256=current.content_sha256,
    )


def _image_data(image: ImageRecord) -> dict[str, Any]:
    return {
        **image.entry,
        "image_id": image.image_id,
        "list_id": image.list_id,
        "state": image.state,
        "reason": image.reason,
        "shareable": image.shareable,
    }
