"""What the handlers of `vmic serve` share: the site home, its settings, a store reader, counters.

The store is SQLite; a query may wait (busy timeout) while a sync writes, so
every read runs on one worker thread that owns one connection
(:class:`StoreReader`) and the event loop never blocks on the database. The
one write the server makes — an image whose cached file failed its re-hash
goes back to ``approved`` — opens a store of its own on the re-hash thread
(:func:`quarantine_and_reset`). The server never takes the site lock: WAL
and the busy timeout let a sync run at the same time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from federation.rehash import CacheGuard
from feeds.model import Sha512Hex
from site_agent.cache import Cache
from site_agent.config import SiteConfig
from site_agent.home import SiteHome
from site_agent.records import AVAILABLE
from site_agent.site import Site
from site_agent.store import Store

T = TypeVar("T")
log = logging.getLogger("vmic.serve")


class StoreReader:
    """The site's store, read on one worker thread that owns its connection."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vmic-store")
        self._store: Store | None = None

    def _call(self, query: Callable[[Store], T]) -> T:
        if self._store is None:
            self._store = Store.open(self._path)
        return query(self._store)

    async def run(self, query: Callable[[Store], T]) -> T:
        """Run ``query`` with the open store on the reader's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, query)

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def close(self) -> None:
        """Close the connection (on its own thread) and stop the thread; blocks until done."""
        self._executor.submit(self._close_store).result()
        self._executor.shutdown(wait=True)


@dataclass(slots=True)
class Counters:
    bytes_served: int = 0
    """Body bytes of lists, the export and images sent since the server started."""


@dataclass(slots=True, kw_only=True)
class ServeState:
    home: SiteHome
    config: SiteConfig
    reader: StoreReader
    guard: CacheGuard
    clock: Callable[[], datetime]
    counters: Counters


STATE = web.AppKey("vmic_serve_state", ServeState)


def state_of(request: web.Request) -> ServeState:
    return request.app[STATE]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def quarantine_and_reset(
    home: SiteHome, config: SiteConfig, sha512: Sha512Hex, *, now: datetime
) -> None:
    """A cached file failed its re-hash: move it aside, then set its images back to approved.

    The file goes first: if the database write then fails, the next sync
    finds an ``available`` image without a file and repairs it.
    """
    log.error("cache file %s failed its re-hash; moving it to cache/quarantine", sha512)
    cache = Cache(home)
    moved = cache.quarantine(sha512, now=now)
    path = cache.path(sha512)
    if moved is None and path.is_symlink():  # a dangling symlink: exists() said no
        target = home.quarantine / f"{sha512}.{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"
        path.replace(target)
    with Store.open(home.database) as store:
        site = Site(home, config, store, now=now)
        for image in store.images(state=AVAILABLE):
            if image.sha512 == sha512:
                site.mark_missing(
                    image, reason="the cached file failed a re-hash in `vmic serve`; quarantined"
                )
