"""Cached image files opened for serving only after their bytes were re-hashed (THREATS 26).

`vmic serve` hands out ``cache/images/sha512/<hex>`` to peers and people.
Bits rot, disks lie, and someone may put a symlink or a different file in the
cache; a peer would reject the bytes, but the site must not serve them at
all. :class:`CacheGuard` therefore opens a cache file without following
symlinks, insists on a regular file, and re-hashes it (on a worker thread)
before the first time it is served after the server starts, whenever the
file changed (device, inode, size, mtime or ctime), and again once
``interval`` has passed since its last check. Requests for the same file
during a check wait for that one check.

A file that `vmic sync` hashed while downloading it needs no second full
read before it is first served: ``vouched`` gives the identity the file had
when it was installed and the (wall-clock) time of that hash; when the file
opened now is still that very file, the hash counts as this guard's own
check, made at that time, and the file is served at once (and re-hashed
``interval`` after the download, as any other). A file changed since, or
without a stamp, is hashed first, as before.

A file that fails is handed to ``on_rot`` (the server moves it to
``cache/quarantine`` and sets its images back to ``approved`` so that the
next sync downloads it again) and is never served.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from pathlib import Path

from feeds.model import Sha512Hex

CHUNK = 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class Verdict(Enum):
    MISSING = "missing"
    ROTTEN = "rotten"


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What changes when a file is replaced or written to."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def as_tuple(self) -> tuple[int, ...]:
        """In the order a sync's stamp records it (site_agent.cache.Cache.vouched)."""
        return (self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns)


@dataclass(slots=True)
class OpenFile:
    """A cache file opened for serving; the caller closes it."""

    fd: int
    identity: FileIdentity

    @property
    def size(self) -> int:
        return self.identity.size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class NotServable(Exception):  # noqa: N818 - a verdict on a file, not a program error
    """The file is missing (``verdict`` MISSING) or failed its check (ROTTEN)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.value)
        self.verdict = verdict


def open_regular(path: os.PathLike[str] | str) -> OpenFile:
    """Open a regular file without following a symlink.

    Raises FileNotFoundError when there is nothing there, NotServable(ROTTEN)
    when something other than a regular file is there (a symlink, a folder,
    a FIFO).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO cannot hang us
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise NotServable(Verdict.ROTTEN) from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotServable(Verdict.ROTTEN)
    os.set_blocking(fd, True)
    return OpenFile(fd=fd, identity=FileIdentity.of(st))


def hash_open_file(opened: OpenFile) -> str:
    digest = hashlib.sha512()
    offset = 0
    while chunk := os.pread(opened.fd, CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


class CacheGuard:
    """Opens image files for serving, re-hashing them when they are due.

    ``locate`` names the file of a digest: the site's cache file, or for an
    endorser the image file its manifest lists.
    """

    def __init__(
        self,
        locate: Callable[[Sha512Hex], Path],
        *,
        interval: timedelta,
        on_rot: Callable[[Sha512Hex], None],
        monotonic: Callable[[], float] = time.monotonic,
        vouched: Callable[[Sha512Hex], tuple[tuple[int, ...], float] | None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._locate = locate
        self._vouched = vouched
        self._wall = wall
        self.vouches = 0
        """Files served on the strength of the hash made while they were downloaded."""
        self.interval = interval.total_seconds()
        self._on_rot = on_rot
        self._monotonic = monotonic
        self._checked: dict[str, tuple[FileIdentity, float]] = {}
        self._pending: dict[str, asyncio.Task[FileIdentity | Verdict]] = {}
        self.checks = 0
        """Re-hashes run (each check counts once, however many requests waited for it)."""
        self.failures = 0
        """Files that failed a check and were handed to ``on_rot``."""

    def _due(self, sha512: str, identity: FileIdentity) -> bool:
        checked = self._checked.get(sha512)
        if checked is None or checked[0] != identity:
            return True
        return self._monotonic() - checked[1] >= self.interval

    async def open(self, sha512: Sha512Hex) -> OpenFile:
        """The file for ``sha512``, checked; raises NotServable when there is none to serve."""
        path = self._locate(sha512)
        for _attempt in range(3):
            try:
                opened: OpenFile | None = await asyncio.to_thread(open_regular, path)
            except FileNotFoundError as exc:
                raise NotServable(Verdict.MISSING) from exc
            except NotServable:
                opened = None  # the check below sees the same thing and quarantines it
            if opened is not None and sha512 not in self._checked and self._vouched:
                await asyncio.to_thread(self._take_vouch, sha512, opened.identity)
            if opened is not None and not self._due(sha512, opened.identity):
                return opened
            verdict = await self._check(sha512)
            if isinstance(verdict, Verdict):
                if opened is not None:
                    opened.close()
                raise NotServable(verdict)
            if opened is not None and verdict == opened.identity:
                return opened
            if opened is not None:  # replaced between our open and the check: look again
                opened.close()
        raise NotServable(Verdict.MISSING)

    def _take_vouch(self, sha512: Sha512Hex, identity: FileIdentity) -> None:
        """Count the download's hash as a check, if the stamp names this very file."""
        if self._vouched is None:
            return
        stamp = self._vouched(sha512)
        if stamp is None:
            return
        stamped, hashed_at = stamp
        age = self._wall() - hashed_at
        if stamped != identity.as_tuple() or not 0 <= age < self.interval:
            return
        self._checked[sha512] = (identity, self._monotonic() - age)
        self.vouches += 1

    async def _check(self, sha512: Sha512Hex) -> FileIdentity | Verdict:
        task = self._pending.get(sha512)
        if task is None:
            task = asyncio.create_task(self._run_check(sha512))
            self._pending[sha512] = task
            task.add_done_callback(lambda _t: self._pending.pop(sha512, None))
        # A request that goes away does not cancel the check others wait for.
        return await asyncio.shield(task)

    async def _run_check(self, sha512: Sha512Hex) -> FileIdentity | Verdict:
        self.checks += 1
        verdict = await asyncio.to_thread(self._check_file, sha512)
        if isinstance(verdict, FileIdentity):
            self._checked[sha512] = (verdict, self._monotonic())
        else:
            self._checked.pop(sha512, None)
            if verdict is Verdict.ROTTEN:
                self.failures += 1
        return verdict

    def _check_file(self, sha512: Sha512Hex) -> FileIdentity | Verdict:
        """On a worker thread: hash the file; hand a bad one to ``on_rot``."""
        try:
            opened = open_regular(self._locate(sha512))
        except FileNotFoundError:
            return Verdict.MISSING
        except NotServable:
            self._on_rot(sha512)
            return Verdict.ROTTEN
        try:
            good = hash_open_file(opened) == sha512
        finally:
            opened.close()
        if not good:
            self._on_rot(sha512)
            return Verdict.ROTTEN
        return opened.identity

    async def close(self) -> None:
        """Wait for checks still running (a server stopping mid-check)."""
        pending = list(self._pending.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
