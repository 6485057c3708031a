"""Where an image's bytes come from: the endorser's URL and peers, raced.

An image can come from the endorser's URL and from peers that hold it. The
sources form two lanes, the peers' (best first) and the endorser's; each
lane tries its sources one after another, as a plain download does. The
preferred lane (``prefer_peers``) starts at once; the other starts when the
first has run out of sources, or after a head start (``race_after``) if the
first has sent nothing yet or still needs longer than ``_LONG_WAIT``
seconds at its rate so far (a race costs the other source's bandwidth; it
pays where a wait is long). Then both run, each into a partial file of
its own, and the first lane whose bytes match the endorser's SHA-512 and
size wins: its file goes into the cache and the other lane is cancelled and
its partial file removed. A lane that is clearly losing (projected to need
more than twice as long, and at least ``_STAND_DOWN_MARGIN`` seconds more,
after both ran ``_GRACE`` seconds) stands down early, keeping its partial
file, and takes up its download again if the other lane fails.

Trust does not depend on who wins: every lane's bytes are checked against
the signed SHA-512 before they count, so racing changes only where bytes
come from and how soon they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from keys.errors import DiskFullError, IntegrityError, VmicError
from site_agent.delta import DELTA_SUFFIX, INDEX_SUFFIX, IndexRef, get_index, index_ref, update
from site_agent.fetch import Fetcher
from site_agent.peering import ByteSource, Peering
from site_agent.records import ImageRecord
from site_agent.report import SyncReport
from site_agent.site import Site
from site_agent.transport import about

log = logging.getLogger("vmic.sync")

_CHECK = 0.5
"""Seconds between two looks at how the lanes are doing while both run."""
_LONG_WAIT = 30.0
"""After its head start, the first lane is raced only when it still needs longer than this
(or has sent nothing): a race costs the other source's bandwidth while it lasts."""
_GRACE = 5.0
"""Seconds both lanes run before one may stand down."""
_STAND_DOWN_MARGIN = 5.0
"""A losing lane stands down only when it is projected to need this many seconds more."""
RACE_SUFFIX = ".race"
"""The partial file of the lane that started second: ``<sha512>.race``."""


@dataclass(slots=True, kw_only=True)
class _Lane:
    """One way to get the bytes: a list of sources tried in turn, into one partial file."""

    name: str
    sources: list[ByteSource]
    partial: Path
    index: int = 0
    """The source being tried (or to try next)."""
    received: int = 0
    """Bytes received from the current source in this attempt."""
    since: float = 0.0
    """When the current source was started (monotonic)."""
    task: asyncio.Task[bool] | None = None
    standing_down: bool = False
    started: bool = False

    def begin(self) -> None:
        self.received = 0
        self.since = time.monotonic()

    def eta(self, size: int, now: float) -> float | None:
        """Projected seconds to finish, or None before there is a rate to go by."""
        elapsed = now - self.since
        if elapsed < _GRACE or self.received <= 0:
            return None
        return (size - self.received) / (self.received / elapsed)

    def running(self) -> bool:
        """Downloading, and not told to stand down."""
        return self.task is not None and not self.task.done() and not self.standing_down


@dataclass(slots=True, kw_only=True)
class _Race:
    site: Site
    fetcher: Fetcher
    sha512: str
    first: ImageRecord
    report: SyncReport
    peering: Peering | None
    shown: Callable[[int], None] | None
    errors: list[str] = field(default_factory=list)
    shown_bytes: int = 0

    def progress(self, lane: _Lane) -> Callable[[int], None]:
        """Count ``lane``'s bytes; the bar shows the lane that is furthest along."""

        def update(amount: int) -> None:
            lane.received += amount
            if self.shown is not None and lane.received > self.shown_bytes:
                self.shown(lane.received - self.shown_bytes)
                self.shown_bytes = lane.received

        return update

    async def walk(self, lane: _Lane) -> bool:
        """Try the lane's sources in turn from the current one; True once one delivered."""
        while lane.index < len(lane.sources):
            source = lane.sources[lane.index]
            lane.begin()
            try:
                await self.fetcher.download(
                    source.url,
                    partial=lane.partial,
                    size=self.first.size,
                    sha512=self.sha512,
                    progress=self.progress(lane),
                )
            except VmicError as error:
                self.failed(source, error)
                lane.index += 1
                continue
            if source.peer is not None and self.peering is not None:
                self.peering.record_transfer(
                    self.site,
                    source,
                    ok=True,
                    size=self.first.size,
                    seconds=time.monotonic() - lane.since,
                    error="",
                )
            return True
        return False

    def failed(self, source: ByteSource, error: VmicError) -> None:
        self.errors.append(about(source.url, error.message))
        if source.peer is None or self.peering is None:
            return
        self.peering.record_transfer(
            self.site, source, ok=False, size=0, seconds=0, error=error.message
        )
        if isinstance(error, IntegrityError):  # a peer serving bytes that do not match
            self.report.problem(
                self.first.subscription,
                "peer",
                f"peer {source.peer} served wrong bytes for image {self.first.image_id}: "
                f"{error.message}",
            )

    def start(self, lane: _Lane) -> None:
        lane.standing_down = False
        lane.started = True
        lane.task = asyncio.create_task(self.walk(lane))


async def download_image(
    site: Site,
    fetcher: Fetcher,
    sha512: str,
    images: list[ImageRecord],
    *,
    endorsers: list[ByteSource],
    peers: list[ByteSource],
    report: SyncReport,
    progress: Callable[[int], None] | None,
    peering: Peering | None,
) -> bool:
    """Get the bytes of ``sha512`` into the cache from the fastest source that has them
    right; False (with one problem per image) when none did."""
    first = images[0]
    race = _Race(
        site=site,
        fetcher=fetcher,
        sha512=sha512,
        first=first,
        report=report,
        peering=peering,
        shown=progress,
    )
    settings = site.config.federation
    groups = [("peer", peers), ("endorser", endorsers)]
    if not settings.prefer_peers:
        groups.reverse()
    main = site.cache.partial(sha512)
    lanes = [
        _Lane(name=name, sources=sources, partial=partial)
        for (name, sources), partial in zip(
            [g for g in groups if g[1]],
            (main, main.with_name(main.name + RACE_SUFFIX)),
            strict=False,
        )
    ]
    ref = index_ref(first)
    if ref is not None and await _by_blocks(
        site,
        fetcher,
        images,
        ref,
        endorsers=endorsers,
        peers=peers,
        report=report,
        peering=peering,
        progress=progress,
    ):
        return True
    head_start = settings.race_after.total_seconds() if settings.race else None
    winner = await _run(race, lanes, head_start)
    if winner is None:  # every partial file stays, to be resumed by the next run
        for image in images:
            report.problem(
                image.subscription,
                "download",
                f"image {image.image_id} ({image.title}) not downloaded: {'; '.join(race.errors)}",
            )
        return False
    if len(lanes) > 1 and all(lane.started for lane in lanes):
        log.info(
            "image %s: the %s lane won the race (%s)",
            first.image_id,
            winner.name,
            winner.sources[winner.index].url,
        )
    for lane in lanes:
        if lane is not winner and lane.started:
            await asyncio.to_thread(_discard, lane.partial)
    site.cache.install(winner.partial, sha512)
    report.downloaded.append(first.image_id)
    return True


async def _by_blocks(
    site: Site,
    fetcher: Fetcher,
    images: list[ImageRecord],
    ref: IndexRef,
    *,
    endorsers: list[ByteSource],
    peers: list[ByteSource],
    report: SyncReport,
    peering: Peering | None,
    progress: Callable[[int], None] | None,
) -> bool:
    """Try an update that fetches only the blocks the site does not hold
    (:mod:`site_agent.delta`); False, after a line in the site log, when it cannot. A full
    disk is not worked around: it fails the image as a download would."""
    first = images[0]
    ordered = [*peers, *endorsers] if site.config.federation.prefer_peers else [*endorsers, *peers]
    index_sources = list(
        dict.fromkeys(
            ByteSource(url=s.url + INDEX_SUFFIX, peer=s.peer) if s.peer else ByteSource(url=ref.url)
            for s in ordered
        )
    )

    def blame(source: ByteSource, error: VmicError) -> None:
        if source.peer is None or peering is None:
            return
        peering.record_transfer(site, source, ok=False, size=0, seconds=0, error=error.message)
        if isinstance(error, IntegrityError):
            report.problem(
                first.subscription,
                "peer",
                f"peer {source.peer} served wrong bytes for image {first.image_id} "
                f"(update by blocks): {error.message}",
            )

    try:
        index, index_fetched = await get_index(
            site, fetcher, first, ref=ref, sources=index_sources, blame=blame
        )
        outcome = await update(
            site,
            fetcher,
            first,
            index=index,
            index_fetched=index_fetched,
            sources=ordered,
            blame=blame,
        )
    except DiskFullError:
        raise
    except VmicError as error:
        log.info(
            "image %s: not updated by blocks (%s); downloading the whole image",
            first.image_id,
            error.message,
        )
        return False
    partial = site.cache.partial(first.sha512).with_name(first.sha512 + DELTA_SUFFIX)
    site.cache.install(partial, first.sha512)
    report.downloaded.append(first.image_id)
    report.bytes_reused += outcome.reused
    report.bytes_fetched += outcome.fetched
    site.count_delta(reused=outcome.reused, fetched=outcome.fetched)
    if progress is not None:
        progress(first.size)  # the bar ends full
    log.info(
        "image %s: updated by blocks: %d bytes reused, %d fetched",
        first.image_id,
        outcome.reused,
        outcome.fetched,
    )
    return True


async def _run(race: _Race, lanes: list[_Lane], head_start: float | None) -> _Lane | None:
    """Run the lanes as the module docstring says; the winner, or None if all failed."""
    if not lanes:
        return None
    try:
        race.start(lanes[0])
        challenger_at = None if head_start is None else time.monotonic() + head_start
        while True:
            active = [lane.task for lane in lanes if lane.task is not None and not lane.task.done()]
            waiting = [lane for lane in lanes if not lane.started]
            resumable = [lane for lane in lanes if lane.standing_down]
            if not any(lane.running() for lane in lanes):
                nxt = next(iter(waiting + resumable), None)
                if nxt is None:
                    return None
                await _cancel(nxt)  # a lane that stood down has closed its file first
                race.start(nxt)
                continue
            timeout: float | None = None
            if waiting and challenger_at is not None:
                timeout = max(0.0, challenger_at - time.monotonic())
            if len(active) > 1:
                timeout = _CHECK
            done, _ = await asyncio.wait(
                active, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for lane in lanes:
                if lane.task in done and not lane.task.cancelled() and lane.task.result():
                    return lane
            now = time.monotonic()
            if waiting and challenger_at is not None and now >= challenger_at:
                challenger_at = None
                if _worth_racing(lanes[0], race.first.size, now):
                    race.start(waiting[0])
            _stand_down_loser(lanes, race.first.size, now)
    finally:
        for lane in lanes:
            await _cancel(lane)


def _worth_racing(lane: _Lane, size: int, now: float) -> bool:
    """Whether the lane that had the head start leaves a wait worth racing: no byte yet,
    or more than ``_LONG_WAIT`` seconds to go at its rate so far."""
    elapsed = now - lane.since
    if not lane.running() or lane.received <= 0 or elapsed <= 0:
        return True
    return (size - lane.received) / (lane.received / elapsed) > _LONG_WAIT


def _stand_down_loser(lanes: list[_Lane], size: int, now: float) -> None:
    running = [lane for lane in lanes if lane.running()]
    if len(running) != 2:
        return
    first, second = (lane.eta(size, now) for lane in running)
    if first is None or second is None:
        return
    (slow, lane), (fast, _) = sorted(zip((first, second), running, strict=True), key=_by_eta)[::-1]
    if slow > 2 * fast and slow - fast > _STAND_DOWN_MARGIN:
        log.info(
            "image download: the %s lane stands down (projected %.0f s against %.0f s)",
            lane.name,
            slow,
            fast,
        )
        if lane.task is not None:
            lane.task.cancel()
        lane.standing_down = True


def _by_eta(pair: tuple[float, _Lane]) -> float:
    return pair[0]


async def _cancel(lane: _Lane) -> None:
    """Stop a lane's download and wait until its files are closed."""
    if lane.task is None or lane.task.done():
        return
    lane.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lane.task


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    partial.with_name(partial.name + ".resume").unlink(missing_ok=True)
