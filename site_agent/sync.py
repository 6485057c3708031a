"""One `vmic sync`: the cron job that keeps a site's trusted images right.

Order of work (issue 3, DESIGN §5): take the site lock; open the store
(checked, migrated); reconcile what a crash may have left (partial files,
cache files without a runnable image, images marked available whose bytes
are gone, bytes installed but not yet recorded); then, for every
subscription concurrently, fetch the list (conditional GET), verify it with
the stored rollback state and accept or reject it; fail closed for lists
whose last good version has expired; withdraw images whose own expiry
passed; download approved images that are not cached (bounded concurrency,
each SHA-512 once, resumable); purge old withdrawn files; deliver events to
hooks. One bad subscription never stops the others: each failure becomes a
:class:`Problem` in the report, and the exit code says whether there were any.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from feeds.model import list_id
from feeds.verify import Expectation, verify_list
from keys.errors import ConfigError, ListFormatError, VerificationError, VmicError
from keys.trust import TrustStore
from site_agent import config as site_config
from site_agent.fetch import Fetcher, Validators
from site_agent.home import SiteHome
from site_agent.hooks import run_hook
from site_agent.lock import SiteLock
from site_agent.records import APPROVED, AVAILABLE, RUNNABLE_STATES, ImageRecord, Subscription, iso
from site_agent.site import Change, Site
from site_agent.store import Store

ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    subscription: str | None
    kind: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListResult:
    subscription: str
    outcome: str  # accepted, unchanged, not-modified, rejected, failed
    version: int | None = None


@dataclass(slots=True)
class SyncReport:
    started: datetime
    lists: list[ListResult] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    hooks_delivered: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, subscription: str | None, kind: str, message: str) -> None:
        self.problems.append(Problem(subscription=subscription, kind=kind, message=message))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "started": iso(self.started),
            "lists": [
                {"subscription": r.subscription, "outcome": r.outcome, "version": r.version}
                for r in self.lists
            ],
            "changes": [
                {"image_id": c.image_id, "title": c.title, "what": c.what, "detail": c.detail}
                for c in self.changes
            ],
            "downloaded": self.downloaded,
            "hooks_delivered": self.hooks_delivered,
            "problems": [
                {"subscription": p.subscription, "kind": p.kind, "message": p.message}
                for p in self.problems
            ],
        }


def run_sync(
    home: SiteHome,
    *,
    now: datetime,
    only: str | None = None,
    download: bool = True,
    progress: ProgressFactory | None = None,
) -> SyncReport:
    """Take the lock, open the store, and do one sync; raises only for whole-run failures."""
    home.require_initialised()
    config = site_config.load(home.config)
    with SiteLock(home.lock, purpose="vmic sync"), Store.open(home.database) as store:
        site = Site(home, config, store, now=now)
        subscriptions = store.subscriptions()
        if only is not None:
            subscriptions = [s for s in subscriptions if s.name == only]
            if not subscriptions:
                raise ConfigError(f"no subscription named {only}", hint="see `vmic subscriptions`")
        trust = TrustStore.from_directory(config.trust_dir)
        return asyncio.run(_sync(site, trust, subscriptions, download=download, progress=progress))


async def _sync(
    site: Site,
    trust: TrustStore,
    subscriptions: list[Subscription],
    *,
    download: bool,
    progress: ProgressFactory | None,
) -> SyncReport:
    report = SyncReport(started=site.now)
    reconcile(site, report)
    limits = site.config.limits
    async with Fetcher(limits=limits, ca_bundle=site.config.ca_bundle) as fetcher:
        gate = asyncio.Semaphore(limits.fetch_concurrency)
        results = await asyncio.gather(
            *(
                _sync_list(site, fetcher, sub, trust=trust, gate=gate, report=report)
                for sub in subscriptions
            )
        )
        report.lists.extend(results)
        for sub in subscriptions:
            expired = site.expire_list_if_due(sub)
            if expired is not None:
                current = site.store.current_list(sub.list_id)
                report.changes.extend(expired)
                report.problem(
                    sub.name,
                    "expired",
                    f"the last good list (version {current.version if current else '?'}) "
                    f"expired on {iso(current.expires) if current else '?'}; its images are "
                    "withdrawn until the endorser publishes a fresh one",
                )
        report.changes.extend(site.expire_images_if_due())
        if download:
            await _download_approved(site, fetcher, report, progress)
    site.cache.purge_expired(retention=site.config.expired_retention, now=site.now)
    await deliver_events(site, report)
    return report


async def _sync_list(
    site: Site,
    fetcher: Fetcher,
    sub: Subscription,
    *,
    trust: TrustStore,
    gate: asyncio.Semaphore,
    report: SyncReport,
) -> ListResult:
    store, now = site.store, site.now
    async with gate:
        try:
            fetched = await fetcher.fetch_list(
                sub.url, validators=Validators(etag=sub.etag, last_modified=sub.last_modified)
            )
        except VmicError as error:
            store.record_attempt(sub.name, at=now, ok=False, error=error.message, kind="fetch")
            report.problem(sub.name, "fetch", error.message)
            return ListResult(subscription=sub.name, outcome="failed")
        if fetched.not_modified:
            if sub.last_error_kind in (None, "fetch"):
                store.record_attempt(sub.name, at=now, ok=True)
            else:  # the same bytes that were rejected last time
                report.problem(sub.name, sub.last_error_kind, sub.last_error or "rejected")
            return ListResult(subscription=sub.name, outcome="not-modified")
        raw = fetched.body
        try:
            verified = await asyncio.to_thread(
                verify_list,
                raw,
                trust=trust,
                pins=sub.pins,
                now=now,
                crl=site.config.crl,
                expect=Expectation(list_id=list_id(sub.list_id), self_url=sub.self_url),
                previous=site.previous_state(sub.list_id),
                limits=site.config.limits,
            )
        except (VerificationError, ListFormatError) as error:
            digest = hashlib.sha256(raw).hexdigest()
            last = store.history(sub.name)[-1:] or None
            if not last or last[0].outcome != "rejected" or last[0].sha256 != digest:
                site.reject_list(sub, error, sha256=digest)
            kind = type(error).__name__
            store.record_attempt(
                sub.name,
                at=now,
                ok=False,
                error=error.message,
                kind=kind,
                etag=fetched.validators.etag,
                last_modified=fetched.validators.last_modified,
                validators=True,
            )
            report.problem(sub.name, kind, f"list rejected: {error.message}")
            return ListResult(subscription=sub.name, outcome="rejected")
        accepted, changes = site.accept_list(sub, verified)
        report.changes.extend(changes)
        for change in changes:
            if change.what == "conflict":
                report.problem(sub.name, "conflict", f"image {change.image_id}: {change.detail}")
        store.record_attempt(
            sub.name,
            at=now,
            ok=True,
            etag=fetched.validators.etag,
            last_modified=fetched.validators.last_modified,
            validators=True,
        )
        return ListResult(
            subscription=sub.name,
            outcome="accepted" if accepted else "unchanged",
            version=verified.image_list.version,
        )


def reconcile(site: Site, report: SyncReport) -> None:
    """Repair what an interrupted run can leave behind (THREATS 31)."""
    store, cache = site.store, site.cache
    runnable: dict[str, list[ImageRecord]] = defaultdict(list)
    for state in RUNNABLE_STATES:
        for image in store.images(state=state):
            runnable[image.sha512].append(image)
    wanted = {sha for sha, images in runnable.items() if any(i.state == APPROVED for i in images)}
    for path in sorted(site.home.partial.iterdir()):
        name = path.name.removesuffix(".resume")
        if name not in wanted:
            path.unlink(missing_ok=True)
    for cached in list(cache.files()):
        if cached.sha512 not in runnable:
            cache.retire(cached.sha512, now=site.now)
    for sha512, images in runnable.items():
        present = cache.has(sha512, images[0].size)
        for image in images:
            if image.state == AVAILABLE and not present:
                site.mark_missing(image, reason="the cached file was missing; downloading again")
            elif image.state == APPROVED and present:
                report.changes.append(site.mark_available(image))


async def _download_approved(
    site: Site, fetcher: Fetcher, report: SyncReport, progress: ProgressFactory | None
) -> None:
    by_sha: dict[str, list[ImageRecord]] = defaultdict(list)
    for image in site.store.images(state=APPROVED):
        by_sha[image.sha512].append(image)
    gate = asyncio.Semaphore(site.config.limits.download_concurrency)

    async def fetch_one(sha512: str, images: list[ImageRecord]) -> None:
        async with gate:
            if site.cache.has(sha512, images[0].size):
                ok = True
            else:
                ok = await _download_from_any(
                    site, fetcher, sha512, images, report=report, progress=progress
                )
            if ok:
                for image in images:
                    report.changes.append(site.mark_available(image))

    await asyncio.gather(*(fetch_one(sha, images) for sha, images in by_sha.items()))


async def _download_from_any(
    site: Site,
    fetcher: Fetcher,
    sha512: str,
    images: list[ImageRecord],
    *,
    report: SyncReport,
    progress: ProgressFactory | None,
) -> bool:
    """Try each URL the lists give for these bytes; the SHA-512 decides, not the source."""
    urls = list(dict.fromkeys(image.url for image in images))
    first = images[0]
    errors = []
    for url in urls:
        callback = progress(first.title, first.size) if progress else None
        try:
            await fetcher.download(
                url,
                partial=site.cache.partial(sha512),
                size=first.size,
                sha512=sha512,
                progress=callback,
            )
        except VmicError as error:
            errors.append(f"{url}: {error.message}")
            continue
        site.cache.install(site.cache.partial(sha512), sha512)
        report.downloaded.append(first.image_id)
        return True
    for image in images:
        report.problem(
            image.subscription,
            "download",
            f"image {image.image_id} ({image.title}) not downloaded: {'; '.join(errors)}",
        )
    return False


async def deliver_events(site: Site, report: SyncReport) -> None:
    """Run hooks for the events recorded (now or by earlier runs) that are not delivered yet."""
    hooks = {hook.name: hook for hook in site.config.hooks}
    limit = site.config.event_max_attempts
    for event, delivery in site.store.pending_deliveries():
        hook = hooks.get(delivery.hook)
        if hook is None:
            error: str | None = "the hook is no longer configured"
        else:
            outcome = await asyncio.to_thread(run_hook, hook, event, home=str(site.home.root))
            error = outcome.error
        give_up = error is not None and (hook is None or delivery.attempts + 1 >= limit)
        with site.store.atomic():
            site.store.record_delivery(
                event.id, delivery.hook, at=site.now, error=error, give_up=give_up
            )
        if error is None:
            report.hooks_delivered += 1
        elif give_up:
            report.problem(
                event.subscription,
                "hook",
                f"hook {delivery.hook} gave up on event {event.id} ({event.type}) "
                f"after {delivery.attempts + 1} attempts: {error}",
            )
        else:
            report.problem(
                event.subscription,
                "hook",
                f"hook {delivery.hook} failed for event {event.id} ({event.type}), "
                f"will retry: {error}",
            )
