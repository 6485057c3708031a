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
hooks. One bad subscription never stops the others: each subscription, peer,
download and hook delivery is a unit (:mod:`site_agent.units`) whose failure,
of whatever kind, becomes a :class:`Problem` in the report and a line in its
history and the site log; the exit code says whether there were any.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from functools import partial

from keys.errors import ConfigError
from keys.trust import TrustStore
from site_agent import config as site_config
from site_agent.alarms import AlarmStore, check_freezes
from site_agent.approval import AnyOf, PeersApproved
from site_agent.batch import CommitGroup
from site_agent.cloud.run import sync_cloud
from site_agent.delta import DELTA_SUFFIX, INDEX_SUFFIX
from site_agent.fetch import Fetcher
from site_agent.home import SiteHome
from site_agent.hooks import run_hook
from site_agent.lock import SiteLock
from site_agent.peering import ByteSource, Peering
from site_agent.records import (
    APPROVED,
    AVAILABLE,
    RUNNABLE_STATES,
    Delivery,
    EventRecord,
    ImageRecord,
    Subscription,
    iso,
)
from site_agent.report import ListResult, SyncReport
from site_agent.site import Site
from site_agent.sources import RACE_SUFFIX, download_image
from site_agent.store import TRUST_PROBLEMS, Store
from site_agent.sync_lists import sync_list
from site_agent.units import log, run_unit, run_unit_now, subscription_recorder

ProgressFactory = Callable[[str, int], Callable[[int], None]]


def run_sync(
    home: SiteHome,
    *,
    now: datetime,
    only: str | None = None,
    download: bool = True,
    progress: ProgressFactory | None = None,
    peering: Peering | None = None,
) -> SyncReport:
    """Take the lock, open the store, and do one sync; raises only for whole-run failures."""
    home.require_initialised()
    config = site_config.load(home.config)
    with SiteLock(home.lock, purpose="vmic sync"), Store.open(home.database) as store:
        site = Site(home, config, store, now=now)
        if peering is not None and config.federation.approve_if_peers > 0:
            site.policy = AnyOf(
                [
                    site.policy,
                    PeersApproved(
                        needed=config.federation.approve_if_peers,
                        count=lambda image_id: peering.peer_approvals(site, image_id),
                    ),
                ]
            )
        subscriptions = store.subscriptions()
        if only is not None:
            subscriptions = [s for s in subscriptions if s.name == only]
            if not subscriptions:
                raise ConfigError(f"no subscription named {only}", hint="see `vmic subscriptions`")
        trust = TrustStore.from_directory(config.trust_dir)
        log.info("sync of %d subscription(s) started", len(subscriptions))
        report = asyncio.run(
            _sync(site, trust, subscriptions, download=download, progress=progress, peering=peering)
        )
        if download and only is None:
            sync_clouds(site, report)
        log.info(
            "sync done: %d list(s), %d change(s), %d download(s), %d problem(s)",
            len(report.lists),
            len(report.changes),
            len(report.downloaded),
            len(report.problems),
        )
        return report


async def _sync(
    site: Site,
    trust: TrustStore,
    subscriptions: list[Subscription],
    *,
    download: bool,
    progress: ProgressFactory | None,
    peering: Peering | None,
) -> SyncReport:
    report = SyncReport(started=site.now)
    for problem in trust.problems:  # each unusable file of the trust directory, once
        report.problem(None, "trust", f"trust directory {trust.source}: {problem}")
    with site.store.atomic():  # for /metrics
        site.store.set_meta(TRUST_PROBLEMS, json.dumps(list(trust.problems)))
    reconcile(site, report)
    limits = site.config.limits
    async with Fetcher(
        limits=limits, ca_bundle=site.config.ca_bundle, identity=site.config.identity
    ) as fetcher:
        if peering is not None:
            await peering.refresh(site, fetcher, trust, report)
        gate = asyncio.Semaphore(limits.fetch_concurrency)

        async def one_list(sub: Subscription) -> ListResult:
            result = await run_unit(
                sync_list(
                    site, fetcher, sub, trust=trust, gate=gate, report=report, peering=peering
                ),
                report=report,
                source=sub.name,
                what="the list",
                record=subscription_recorder(site, sub.name, sub.list_id),
            )
            return result or ListResult(subscription=sub.name, outcome="failed")

        try:
            with site.commit_group() as group:  # one commit for many accepted lists
                report.lists.extend(await asyncio.gather(*(one_list(sub) for sub in subscriptions)))
        finally:
            site.record_unchanged()
        _group_problems(group, report)
        fresh = {r.subscription for r in report.lists if r.outcome == "accepted"}
        in_force = site.store.current_lists()
        for sub in subscriptions:
            current = in_force.get(sub.list_id)
            if sub.name in fresh or current is None or site.now < current.expires:
                continue  # accepted in this run, or still in force: nothing to withdraw
            await run_unit(
                _expire_if_due(site, sub, report),
                report=report,
                source=sub.name,
                what="withdrawing the images of an expired list",
            )
        report.changes.extend(site.expire_images_if_due())
        await run_unit(
            _check_freezes(site, report),
            report=report,
            source=None,
            what="comparing the endorsers' URLs with the lists taken from peers",
        )
        if peering is not None:  # before the downloads: an equivocation holds approvals
            await run_unit(
                peering.watch(site, fetcher, trust, report),
                report=report,
                source=None,
                what="comparing the peers' lists with the site's",
            )
        if download:
            await _download_approved(site, fetcher, report, progress, peering)
    site.cache.purge_expired(retention=site.config.expired_retention, now=site.now)
    if peering is not None:
        await run_unit(
            _finish(peering, site, report),
            report=report,
            source=None,
            what="writing the site's export",
        )
    await deliver_events(site, report)
    report.alarms = AlarmStore(site.store).alarms()
    return report


def _group_problems(group: CommitGroup, report: SyncReport) -> None:
    """What the commit group's subscriptions could not report: failed commits none of
    them waited for, and errors of the work after a commit (moving cache files)."""
    for batch in group.unheard():
        message = batch.error.message if batch.error else "?"
        report.problem(
            None,
            "store",
            f"{batch.joined} list(s) and the records written with them were not committed: "
            f"{message}; they are fetched again next run",
        )
    for error in group.after_errors:
        report.problem(None, "cache", f"after a commit of accepted lists: {error.message}")


async def _check_freezes(site: Site, report: SyncReport) -> None:
    check_freezes(site, report.lists)  # on this thread: the store's connection


async def _finish(peering: Peering, site: Site, report: SyncReport) -> None:
    peering.finish(site, report)  # on this thread: the store's connection belongs to it


async def _expire_if_due(site: Site, sub: Subscription, report: SyncReport) -> None:
    """Fail closed for one subscription whose last good list has expired."""
    expired = site.expire_list_if_due(sub)
    if expired is None:
        return
    current = site.store.current_list(sub.list_id)
    report.changes.extend(expired)
    report.problem(
        sub.name,
        "expired",
        f"the last good list (version {current.version if current else '?'}) "
        f"expired on {iso(current.expires) if current else '?'}; its images are "
        "withdrawn until the endorser publishes a fresh one",
    )


def sync_clouds(site: Site, report: SyncReport) -> None:
    """Each configured cloud, as a unit of its own, after the images are in the cache."""
    for cloud in site.config.clouds:
        done = run_unit_now(
            partial(sync_cloud, site, cloud),
            report=report,
            source=None,
            what="cloud sync",
        )
        if done is None:
            continue
        report.clouds.extend(f"{cloud.name}: {line}" for _step, line in done.done)
        for problem in done.problems:
            report.problem(None, "cloud", f"cloud {cloud.name}: {problem}")


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
        for suffix in (RACE_SUFFIX, DELTA_SUFFIX, INDEX_SUFFIX):
            name = name.removesuffix(suffix)
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
    site: Site,
    fetcher: Fetcher,
    report: SyncReport,
    progress: ProgressFactory | None,
    peering: Peering | None,
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
                endorsers, peers = _sources(site, sha512, images, peering)
                first = images[0]
                ok = await download_image(
                    site,
                    fetcher,
                    sha512,
                    images,
                    endorsers=endorsers,
                    peers=peers,
                    report=report,
                    progress=progress(first.title, first.size) if progress else None,
                    peering=peering,
                )
            if ok:
                for image in images:
                    report.changes.append(site.mark_available(image))

    await asyncio.gather(
        *(
            run_unit(
                fetch_one(sha, images),
                report=report,
                source=images[0].subscription,
                what=f"downloading image {images[0].image_id}",
            )
            for sha, images in by_sha.items()
        )
    )


def _sources(
    site: Site, sha512: str, images: list[ImageRecord], peering: Peering | None
) -> tuple[list[ByteSource], list[ByteSource]]:
    """Where these bytes may come from: the endorsers' URLs, and peers that offer them
    (best first)."""
    endorsers = [ByteSource(url=url) for url in dict.fromkeys(image.url for image in images)]
    peers = [] if peering is None else peering.byte_sources(site, sha512)
    return endorsers, peers


async def deliver_events(site: Site, report: SyncReport) -> None:
    """Run hooks for the events recorded (now or by earlier runs) that are not delivered yet."""
    for event, delivery in site.store.pending_deliveries():
        await run_unit(
            _deliver(site, report, event, delivery),
            report=report,
            source=event.subscription,
            what=f"running hook {delivery.hook} for event {event.id}",
        )


async def _deliver(site: Site, report: SyncReport, event: EventRecord, delivery: Delivery) -> None:
    hooks = {hook.name: hook for hook in site.config.hooks}
    limit = site.config.event_max_attempts
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
            f"hook {delivery.hook} failed for event {event.id} ({event.type}), will retry: {error}",
        )
