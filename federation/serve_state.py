"""What the handlers of `vmic serve` share: the site home, its settings, a store reader, counters.

The store is SQLite; a query may wait (busy timeout) while a sync writes, so
every read runs on one worker thread that owns one connection
(:class:`StoreReader`) and the event loop never blocks on the database. The
one write the server makes — an image whose cached file failed its re-hash
goes back to ``approved`` — opens a store of its own on the re-hash thread
(:func:`quarantine_and_reset`). The server never takes the site lock: WAL
and the busy timeout let a sync run at the same time.

What does not change between syncs is kept in memory and checked cheaply
at every request, so nothing stale is served after the check says it
changed: answers read from the store (:class:`StoreMemo`) while ``PRAGMA
data_version`` of a connection of the event loop's own
(:class:`StoreWatch`) stays the same, and small files (:class:`FileMemo`)
while a ``stat`` finds the same device, inode, size, mtime and ctime.
:func:`parse_head` is what the listener's fast lane sees of a request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import stat
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from aiohttp import hdrs, web

from federation.rehash import CacheGuard, FileIdentity
from feeds.model import Sha512Hex
from keys.errors import StoreError
from site_agent.cache import Cache
from site_agent.config import SiteConfig
from site_agent.home import SiteHome
from site_agent.records import AVAILABLE, ListVersion
from site_agent.site import Site
from site_agent.store import Store

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
log = logging.getLogger("vmic.serve")
MEMO_LIMIT = 4096
"""Answers a memo keeps for one state of the store (keys come from URLs)."""


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


class StoreWatch:
    """Whether the store changed: ``PRAGMA data_version`` on a connection of its own, read on
    the event loop (microseconds). It never waits for a lock: a busy store means "cannot
    tell now"."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def version(self) -> int | None:
        """A number that changes whenever another connection commits; None when the store
        cannot tell now. Raises StoreError when the database cannot be opened or read."""
        try:
            if self._conn is None:
                uri = f"{self._path.absolute().as_uri()}?mode=rw"  # never creates a file
                self._conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            self.close()
            raise StoreError(f"cannot read the database {self._path}: {exc}") from exc
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"cannot read the database {self._path}: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True, slots=True)
class Known(Generic[V]):
    """A value found in a memo (which may itself be None or False)."""

    value: V


class StoreMemo(Generic[K, V]):
    """``query(store, key)`` answers, kept while the store does not change.

    An answer is kept with the store's version read *before* the query ran,
    so a sync that commits meanwhile makes the next look run it again.
    Requests that miss together wait for one query.
    """

    def __init__(
        self, reader: StoreReader, watch: StoreWatch, query: Callable[[Store, K], V]
    ) -> None:
        self._reader = reader
        self._watch = watch
        self._query = query
        self._version: int | None = None
        self._values: dict[K, V] = {}
        self._pending: dict[K, asyncio.Future[V]] = {}

    def peek(self, key: K) -> Known[V] | None:
        """The answer while the store is unchanged (no waiting); raises StoreError."""
        version = self._watch.version()
        if version is None or version != self._version or key not in self._values:
            return None
        return Known(self._values[key])

    async def get(self, key: K) -> V:
        """The answer, from memory or from the store; raises StoreError."""
        known = self.peek(key)
        if known is not None:
            return known.value
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key))
            self._pending[key] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def _load(self, key: K) -> V:
        version = self._watch.version()
        value = await self._reader.run(lambda store: self._query(store, key))
        if version is not None:
            if version != self._version or len(self._values) >= MEMO_LIMIT:
                self._values.clear()
                self._version = version
            self._values[key] = value
        return value


@dataclass(frozen=True, slots=True)
class _Kept(Generic[V]):
    identity: FileIdentity
    value: V


@dataclass(slots=True)
class FileMemo(Generic[V]):
    """What was made of small files, kept while each file stays the same; a ``stat`` per look.

    A symlink or anything but a regular file is never the same as what was read."""

    limit: int = 256
    _kept: dict[str, _Kept[V]] = field(default_factory=dict)

    def peek(self, path: str) -> V | None:
        kept = self._kept.get(path)
        if kept is None:
            return None
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or FileIdentity.of(st) != kept.identity:
            return None
        return kept.value

    def keep(self, path: str, identity: FileIdentity, value: V) -> None:
        if len(self._kept) >= self.limit:
            self._kept.clear()
        self._kept[path] = _Kept(identity, value)


@dataclass(slots=True)
class Counters:
    bytes_served: int = 0
    """Body bytes of lists, the export and images sent since the server started."""


LOCKED_DOWN = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = (
    ("Content-Security-Policy", LOCKED_DOWN),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)
_SECURITY_WIRE = "".join(f"{k}: {v}\r\n" for k, v in SECURITY_HEADERS).encode() + b"\r\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class Document:
    """A small response kept in memory: body, type and validators (a strong ETag, the SHA-256
    of the body, with Last-Modified), and its header lines as the fast lane writes them, in
    the order aiohttp writes them."""

    body: bytes
    content_type: str
    sha256: str | None = None
    modified: datetime | None = None
    link: str | None = None
    """A ``Link`` header's value (a page's ``rel="next"``), sent with the validators."""
    _ok: bytes = field(init=False, repr=False)
    _not_modified: bytes = field(init=False, repr=False)
    _etag: bytes | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        validators = "".join(f"{k}: {v}\r\n" for k, v in self.validators().items())
        ok = f"HTTP/1.1 200 OK\r\n{validators}Content-Type: {self.content_type}\r\n"
        ok += f"Content-Length: {len(self.body)}\r\n"
        object.__setattr__(self, "_ok", ok.encode())
        object.__setattr__(
            self, "_not_modified", f"HTTP/1.1 304 Not Modified\r\n{validators}".encode()
        )
        etag = f'"{self.sha256}"'.encode() if self.sha256 else None
        object.__setattr__(self, "_etag", etag)

    def validators(self) -> dict[str, str]:
        if self.sha256 is None:
            return {}
        found = {str(hdrs.ETAG): f'"{self.sha256}"'}
        if self.modified is not None:
            found[str(hdrs.LAST_MODIFIED)] = http_date(self.modified)
        found[str(hdrs.CACHE_CONTROL)] = "no-cache"
        if self.link is not None:
            found[str(hdrs.LINK)] = self.link
        return found

    def wire(self, head: Head, date: bytes) -> tuple[bytes, int]:
        """The whole response to ``head`` and the body bytes in it."""
        if self._etag is not None and etag_matches(head.if_none_match, self._etag):
            start, body = self._not_modified, b""
        else:
            start, body = self._ok, b"" if head.method == b"HEAD" else self.body
        close = b"Connection: close\r\n" if head.close else b""
        parts = (start, b"Date: ", date, b"\r\nServer: vmic\r\n", close, _SECURITY_WIRE, body)
        return b"".join(parts), len(body)


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    """A list in force that nginx in front sends (``[serve] accel_redirect``): an empty answer
    whose ``X-Accel-Redirect`` names the stored file, with the headers nginx keeps from it on
    an internal redirect (Content-Type, Cache-Control). No validators: nginx makes its own
    from the file and answers conditional requests itself. ``sha256`` is what the file held
    when it was last read and checked."""

    target: str
    content_type: str
    sha256: str
    _head: bytes = field(init=False, repr=False)
    _get: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lines = "".join(f"{k}: {v}\r\n" for k, v in self.headers().items())
        head = f"HTTP/1.1 200 OK\r\n{lines}Content-Type: {self.content_type}\r\n".encode()
        object.__setattr__(self, "_head", head)  # aiohttp sends no Content-Length: 0 to a HEAD
        object.__setattr__(self, "_get", head + b"Content-Length: 0\r\n")

    def headers(self) -> dict[str, str]:
        return {"X-Accel-Redirect": self.target, str(hdrs.CACHE_CONTROL): "no-cache"}

    def wire(self, head: Head, date: bytes) -> tuple[bytes, int]:
        """The whole response to ``head`` (whatever it asks, nginx decides) and its 0 body bytes."""
        close = b"Connection: close\r\n" if head.close else b""
        start = self._head if head.method == b"HEAD" else self._get
        parts = (start, b"Date: ", date, b"\r\nServer: vmic\r\n", close, _SECURITY_WIRE)
        return b"".join(parts), 0


def http_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


@dataclass(slots=True, kw_only=True)
class ServeState:
    home: SiteHome
    config: SiteConfig
    reader: StoreReader
    guard: CacheGuard
    clock: Callable[[], datetime]
    counters: Counters
    watch: StoreWatch
    lists: StoreMemo[str, ListVersion | None]
    """The list version in force, by list id."""
    available: StoreMemo[str, bool]
    """Whether an image with this SHA-512 is available here."""
    health: StoreMemo[None, Document]
    """The /healthz answer."""
    files: FileMemo[Document] = field(default_factory=FileMemo)
    """The export and the lists in force, by path."""
    redirects: FileMemo[Redirect] = field(default_factory=FileMemo)
    """The lists in force as nginx's internal redirects (``[serve] accel_redirect``), by path."""
    root: str = field(init=False)
    """The site home, as a string (paths for the fast lane)."""
    export: str = field(init=False)
    """The export's path."""

    def __post_init__(self) -> None:
        self.root = str(self.home.root)
        self.export = str(self.home.exports / "export.atom")


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


# -- the fast lane's view of a request --------------------------------------------------
@dataclass(frozen=True, slots=True)
class Head:
    """A simple request, as the fast lane sees it."""

    method: bytes
    """``GET`` or ``HEAD``."""
    path: bytes
    if_none_match: bytes | None
    close: bool
    """The client said ``Connection: close``."""
    query: bytes | None = None
    """What followed ``?``: letters, digits and ``-._~=&,:`` only (no escapes, no ``+``, so
    it is the text aiohttp decodes it to); None without ``?``."""


Refresh = Callable[[], Awaitable[None]]


class FastLane(Protocol):
    def answer(self, head: Head) -> bytes | Refresh | None:
        """The whole response, from memory; a Refresh when what it needs is stale (awaited,
        then the lane is asked once more); None when the lane does not answer it."""


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH = re.compile(rb"/[A-Za-z0-9._~/-]{0,1000}")
_QUERY = re.compile(rb"[A-Za-z0-9._~=&,:-]{0,1000}")
_PRINTABLE = re.compile(rb"[\t\r\n\x20-\x7e]*")
_ETAGS = re.compile(rb'\*|(?:W/)?"[\x21\x23-\x7e]*"(?:[ \t]*,[ \t]*(?:W/)?"[\x21\x23-\x7e]*")*')
_NOT_FOR_THE_LANE = frozenset(
    (
        b"content-length",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"range",
        b"if-range",
        b"if-match",
        b"if-unmodified-since",
        b"if-modified-since",
    )
)


_SEEN_HEADS: dict[bytes, Head | None] = {}
SEEN_HEADS_LIMIT = 256
"""Heads remembered (clients send the same few requests again and again)."""


def parse_head(raw: bytes) -> Head | None:
    """The head of a simple request (the bytes before its blank line), or None."""
    try:
        return _SEEN_HEADS[raw]
    except KeyError:
        pass
    head = _parse_head(raw)
    if len(_SEEN_HEADS) >= SEEN_HEADS_LIMIT:
        _SEEN_HEADS.clear()
    _SEEN_HEADS[raw] = head
    return head


def _parse_head(raw: bytes) -> Head | None:
    if (
        not _PRINTABLE.fullmatch(raw)
        or raw.count(b"\r") != raw.count(b"\r\n")
        or raw.count(b"\n") != raw.count(b"\r\n")
    ):
        return None
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ")
    path, asks, query = parts[1].partition(b"?") if len(parts) == 3 else (b"", b"", b"")
    if (
        len(parts) != 3
        or parts[0] not in (b"GET", b"HEAD")
        or parts[2] != b"HTTP/1.1"
        or not _PATH.fullmatch(path)
        or (asks and not _QUERY.fullmatch(query))
        or len(lines) > 100
    ):
        return None
    etags: bytes | None = None
    close = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            return None  # also a folded line (it starts with a space)
        name, value = name.lower(), value.strip(b" \t")
        if name in _NOT_FOR_THE_LANE:
            return None
        if name == b"connection":
            tokens = {t.strip(b" \t").lower() for t in value.split(b",")}
            if b"upgrade" in tokens:
                return None
            close = close or b"close" in tokens
        elif name == b"if-none-match":
            if etags is not None or not _ETAGS.fullmatch(value):
                return None
            etags = value
    return Head(
        method=parts[0],
        path=path,
        if_none_match=etags,
        close=close,
        query=query if asks else None,
    )


def etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """If-None-Match against our strong ETag ``"..."`` (weak comparison, RFC 9110 §13.1.2)."""
    if if_none_match is None:
        return False
    if if_none_match == b"*":
        return True
    return any(tag.strip(b" \t").removeprefix(b"W/") == etag for tag in if_none_match.split(b","))
