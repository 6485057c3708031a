"""`vmic status`: the site's health on one screen, and as a Nagios/Icinga check.

It reads and changes nothing (no lock: it works while a sync runs). What it
weighs, each finding as ``ok``, ``warning`` (look soon) or ``critical``
(a person is needed now):

- each subscription: the version in force, when it was accepted, when it
  expires (a warning :data:`LIST_EXPIRY_WARNING` before, critical once
  expired: its images are withdrawn), the last successful sync (a warning
  when none succeeded for :data:`STALE_AFTER`) and the last error;
- images waiting for the admin (state ``new``: a warning), approved images
  not downloaded yet, downloads in progress (bytes so far, from the partial
  files) and the run that holds the site, if any;
- followed peers: the last success and the last error (a warning);
- everything `vmic site check` finds (configuration, database, trust
  directory and CRLs, the site's identity): its problems are critical;
- the cache: bytes held, and the free space of its file system (critical
  under :data:`MIN_FREE_FRACTION`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from pathlib import Path

from keys.errors import VmicError
from site_agent.alarms import AlarmStore
from site_agent.check import check_site
from site_agent.home import SiteHome
from site_agent.lock import Holder, holder
from site_agent.peerstore import PeerStore
from site_agent.records import APPROVED, AVAILABLE, NEW, ImageRecord
from site_agent.store import Store

LIST_EXPIRY_WARNING = timedelta(days=7)
"""A list expiring sooner than this is a warning: its endorser has not re-signed it."""
STALE_AFTER = timedelta(days=1)
"""A subscription without a successful sync for this long is a warning (cron not running?)."""
MIN_FREE_FRACTION = 0.05
"""Less free space than this, on the cache's file system, is critical: downloads will fail."""


class Level(IntEnum):
    """Ordered as Nagios reads exit codes: 0 OK, 1 WARNING, 2 CRITICAL."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    area: str
    """``list``, ``images``, ``download``, ``peer``, ``cache`` or an area of `site check`."""
    level: Level
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListHealth:
    subscription: str
    list_id: str
    version: int | None
    accepted_at: datetime | None
    expires: datetime | None
    last_success: datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Download:
    image_id: str
    title: str
    have: int
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerHealth:
    name: str
    last_success: datetime | None
    last_error: str | None


@dataclass(slots=True, kw_only=True)
class SiteStatus:
    now: datetime
    lists: list[ListHealth] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    """Images per state."""
    waiting: list[ImageRecord] = field(default_factory=list)
    """Images in state ``new``: the admin approves or refuses them."""
    downloads: list[Download] = field(default_factory=list)
    peers: list[PeerHealth] = field(default_factory=list)
    running: Holder | None = None
    cache_bytes: int = 0
    free_bytes: int = 0
    total_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def level(self) -> Level:
        return max((f.level for f in self.findings), default=Level.OK)

    def add(self, area: str, level: Level, message: str) -> None:
        self.findings.append(Finding(area=area, level=level, message=message))


def site_status(home: SiteHome, *, now: datetime) -> SiteStatus:
    """Everything `vmic status` shows; raises only when ``home`` is not a site home."""
    check = check_site(home, now=now)
    status = SiteStatus(now=now, running=holder(home.lock))
    for found in check.findings:
        if found.problem:
            status.add(found.area, Level.CRITICAL, found.message)
    if any(f.area in ("config", "database") for f in status.findings):
        return status  # nothing below can be read
    try:
        with Store.open(home.database) as store:
            _lists(store, status)
            _images(store, home, status)
            _peers(store, status)
            _alarms(store, status)
    except VmicError as error:
        status.add("database", Level.CRITICAL, error.message)
    _cache(home, status)
    return status


def _lists(store: Store, status: SiteStatus) -> None:
    now = status.now
    for sub in store.subscriptions():
        current = store.current_list(sub.list_id)
        status.lists.append(
            ListHealth(
                subscription=sub.name,
                list_id=sub.list_id,
                version=current.version if current else None,
                accepted_at=current.accepted_at if current else None,
                expires=current.expires if current else None,
                last_success=sub.last_success,
                last_error=sub.last_error,
            )
        )
        if current is None:
            status.add("list", Level.CRITICAL, f"{sub.name}: no version in force")
        elif current.expires <= now:
            status.add(
                "list",
                Level.CRITICAL,
                f"{sub.name}: version {current.version} expired {_ago(now - current.expires)}; "
                "its images are withdrawn until the endorser signs a new one",
            )
        elif current.expires - now < LIST_EXPIRY_WARNING:
            status.add(
                "list",
                Level.WARNING,
                f"{sub.name}: version {current.version} expires in "
                f"{span(current.expires - now)}; the endorser has not signed a newer one",
            )
        last = sub.last_success or sub.created
        if now - last > STALE_AFTER:
            status.add(
                "list",
                Level.WARNING,
                f"{sub.name}: no successful sync for {span(now - last)}"
                + (f" (last error: {sub.last_error})" if sub.last_error else ""),
            )
        elif sub.last_error and (sub.last_attempt or now) > last:
            status.add("list", Level.WARNING, f"{sub.name}: last sync failed: {sub.last_error}")


def _images(store: Store, home: SiteHome, status: SiteStatus) -> None:
    images = store.images()
    for image in images:
        status.counts[image.state] = status.counts.get(image.state, 0) + 1
    status.waiting = [i for i in images if i.state == NEW]
    if status.waiting:
        status.add(
            "images",
            Level.WARNING,
            f"{len(status.waiting)} image(s) wait for approval (`vmic approve` or `vmic refuse`)",
        )
    by_sha512 = {i.sha512: i for i in images if i.state in (APPROVED, AVAILABLE)}
    for partial in _files(home.partial):
        fetching = by_sha512.get(partial.name)
        if fetching is not None:
            status.downloads.append(
                Download(
                    image_id=fetching.image_id,
                    title=fetching.title,
                    have=partial.stat().st_size,
                    size=fetching.size,
                )
            )


def _peers(store: Store, status: SiteStatus) -> None:
    for peer in PeerStore(store).peers():
        status.peers.append(
            PeerHealth(name=peer.name, last_success=peer.last_success, last_error=peer.last_error)
        )
        failed_last = peer.last_error and (
            peer.last_success is None or (peer.last_attempt or status.now) > peer.last_success
        )
        if failed_last:
            status.add("peer", Level.WARNING, f"peer {peer.name}: {peer.last_error}")


def _cache(home: SiteHome, status: SiteStatus) -> None:
    for folder in (home.images, home.partial, home.expired, home.quarantine):
        status.cache_bytes += sum(f.stat().st_size for f in _files(folder))
    try:
        usage = shutil.disk_usage(home.images)
    except OSError as exc:
        status.add("cache", Level.CRITICAL, f"{home.images}: {exc.strerror}")
        return
    status.free_bytes, status.total_bytes = usage.free, usage.total
    if usage.total and usage.free / usage.total < MIN_FREE_FRACTION:
        status.add(
            "cache",
            Level.CRITICAL,
            f"{home.images}: {usage.free / usage.total:.1%} of the file system free; "
            "downloads will fail (`vmic cache` and `vmic image purge` free space)",
        )


def _files(folder: Path) -> list[Path]:
    """Regular files directly or deeper in ``folder`` (no sidecars), without following links."""
    found = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            if not name.endswith(".resume") and path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def span(delta: timedelta) -> str:
    """A duration as a person reads it: minutes, hours, or days."""
    seconds = int(delta.total_seconds())
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds >= 2 * 3600:
        return f"{seconds // 3600} hours"
    return f"{max(seconds // 60, 0)} min"


def _ago(delta: timedelta) -> str:
    return f"{span(delta)} ago"


def _alarms(store: Store, status: SiteStatus) -> None:
    """An equivocation is critical (its list is frozen); a freeze is a warning."""
    for alarm in AlarmStore(store).alarms():
        level = Level.CRITICAL if alarm.freezes else Level.WARNING
        status.add("alarm", level, f"{alarm.headline()} (`vmic alarm show {alarm.id}`)")
