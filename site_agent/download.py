"""One image download into a partial file, with every check THREATS 19-23 asks for.

On success the partial holds exactly the promised bytes, fsynced with its
folder; the caller renames it into the content-addressed cache. Nothing is
written outside the partial and its ``.resume`` sidecar (JSON: the URL and
the validators of the response that started the file).

- Resume (22): a partial with a sidecar is continued with ``Range`` and
  ``If-Range``; bytes are appended only after a 206 whose Content-Range is
  exactly the rest of the file. A 200 starts again from zero; a wrong 206 or
  a 416 discards the partial and starts again, once. The digest always
  covers the whole file: the kept bytes are hashed again first.
- Size (20): a Content-Length that disagrees is refused before reading; no
  more than the declared size is ever read; a short body keeps the partial.
- Digest (19): a SHA-512 mismatch deletes the partial and the sidecar.
- Slow (21): deadlines and the minimum rate come from :class:`Pace`; the
  partial is kept for the next attempt.
- Disk (23): free space is checked first; ENOSPC, EFBIG or EDQUOT while
  writing deletes the partial and the sidecar.

Receiving runs on the event loop; writing and hashing run on worker threads
(:mod:`site_agent.sink`), so the three overlap in bounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from keys.errors import (
    DigestMismatchError,
    DiskFullError,
    FetchError,
    SizeMismatchError,
    StoreError,
)
from keys.fileio import fsync_dir
from keys.limits import Limits
from site_agent.sink import BATCH, Sink, hash_file, write_all
from site_agent.transport import (
    Pace,
    check_encoding,
    open_url,
    read_some,
    sendable,
    status_error,
    with_retries,
)

if TYPE_CHECKING:
    from hashlib import _Hash

_DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def sidecar(partial: Path) -> Path:
    """Where the resume information of ``partial`` lives."""
    return partial.with_name(partial.name + ".resume")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Resume:
    url: str
    etag: str | None
    last_modified: str | None

    def if_range(self) -> str | None:
        """A strong ETag, else Last-Modified: what makes a ranged request safe (either only
        if it can be sent back; see :func:`~site_agent.transport.sendable`)."""
        strong = None if self.etag is None or self.etag.startswith("W/") else self.etag
        return sendable(strong) or sendable(self.last_modified)


class _Restart(Exception):  # noqa: N818 -- control flow between attempts, never escapes
    """The server cannot continue this partial: discard it and start from zero (once)."""


async def download(
    session: aiohttp.ClientSession,
    limits: Limits,
    *,
    url: str,
    partial: Path,
    size: int,
    sha512: str,
    progress: Callable[[int], None] | None = None,
) -> None:
    """See :meth:`site_agent.fetch.Fetcher.download`."""
    if size < 0:
        raise ValueError("size must not be negative")
    job = _Download(
        session,
        limits,
        url=url,
        partial=partial,
        size=size,
        sha512=sha512.lower(),
        progress=progress,
    )
    if await asyncio.to_thread(job.prepare):
        return
    restarted = False
    while True:
        try:
            await with_retries(limits, job.attempt)
        except _Restart as restart:
            if restarted:
                raise FetchError(f"{restart} (after starting again once)") from restart
            restarted = True
            await asyncio.to_thread(job.reset)
            continue
        break
    await asyncio.to_thread(job.finish)


class _Download:
    """The state of one download across its attempts."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        limits: Limits,
        *,
        url: str,
        partial: Path,
        size: int,
        sha512: str,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.session = session
        self.limits = limits
        self.url = url
        self.partial = partial
        self.sidecar = sidecar(partial)
        self.size = size
        self.sha512 = sha512
        self.progress = progress
        self.offset = 0
        self.digest: _Hash = hashlib.sha512()
        self.resume: _Resume | None = None

    # -- on a worker thread --------------------------------------------------------------

    def prepare(self) -> bool:
        """Take up an existing partial (hashing its bytes), check free space; True if done."""
        try:
            return self._prepare()
        except OSError as exc:
            raise self.store_error(exc) from exc

    def _prepare(self) -> bool:
        try:
            have = self.partial.stat().st_size
        except FileNotFoundError:
            have = 0
        resume = _read_resume(self.sidecar)
        if have == self.size:  # complete: a crash came after the download, before the rename
            if have:
                self.digest, self.offset = hash_file(self.partial, have)
            if self.offset == self.size and self.digest.hexdigest() == self.sha512:
                self.finish()
                return True
            self.reset()
        elif 0 < have < self.size and resume is not None and resume.url == self.url:
            if resume.if_range() is None:
                self.reset()
            else:
                self.resume = resume
                self.digest, self.offset = hash_file(self.partial, have)
        elif have or resume is not None:
            self.reset()
        self.check_space()
        return False

    def check_space(self) -> None:
        needed = self.size - self.offset + self.limits.free_space_margin
        stat = os.statvfs(self.partial.parent)
        free = stat.f_bavail * stat.f_frsize
        if free < needed:
            raise DiskFullError(
                f"{self.partial.parent}: {free} bytes free, {needed} needed "
                f"({self.size - self.offset} to download, "
                f"{self.limits.free_space_margin} kept free)"
            )

    def reset(self) -> None:
        """Forget the partial and its sidecar: the next attempt starts from zero."""
        try:
            self.partial.unlink(missing_ok=True)
            self.sidecar.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot remove {self.partial}: {exc.strerror}") from exc
        self.offset = 0
        self.digest = hashlib.sha512()
        self.resume = None

    def finish(self) -> None:
        """The verified partial: fsynced with its folder, sidecar gone."""
        try:
            fd = os.open(self.partial, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.sidecar.unlink(missing_ok=True)
            fsync_dir(self.partial.parent)
        except OSError as exc:
            raise self.store_error(exc) from exc

    def store_error(self, exc: OSError) -> StoreError:
        if exc.errno in _DISK_FULL:
            with contextlib.suppress(OSError):  # the error to report is the full disk
                self.partial.unlink(missing_ok=True)
                self.sidecar.unlink(missing_ok=True)
            return DiskFullError(
                f"no space left for {self.partial} ({exc.strerror}); the partial file was removed"
            )
        return StoreError(f"cannot write {self.partial}: {exc.strerror}")

    # -- on the event loop ---------------------------------------------------------------

    async def attempt(self) -> None:
        headers = {}
        validator = None if self.resume is None else self.resume.if_range()
        ranged = self.offset > 0 and validator is not None
        if ranged and validator is not None:
            headers["Range"] = f"bytes={self.offset}-"
            headers["If-Range"] = validator
        pace = Pace(
            self.limits, deadline=self.limits.download_deadline.total_seconds(), url=self.url
        )
        final, response = await open_url(
            self.session, self.url, headers=headers, limits=self.limits, pace=pace
        )
        pace.url = final
        try:
            if response.status == 206 and ranged:
                wanted = f"bytes {self.offset}-{self.size - 1}/{self.size}"
                got = response.headers.get("Content-Range")
                if got != wanted:
                    raise _Restart(f"{final}: Content-Range {got!r}, expected {wanted!r}")
            elif response.status == 416 and ranged:
                raise _Restart(f"{final}: the server cannot continue at byte {self.offset} (416)")
            elif response.status != 200:
                raise status_error(final, response.status)
            check_encoding(final, response)
            start = self.offset if response.status == 206 else 0
            declared = response.content_length
            if declared is not None and declared != self.size - start:
                raise SizeMismatchError(
                    f"{final}: {declared} bytes declared, {self.size - start} expected"
                    + (f" from byte {start}" if start else "")
                )
            if response.status == 200:
                await asyncio.to_thread(self.start_over, response.headers)
            await self.receive(response, pace)
        finally:
            response.close()  # never reuse a connection whose body we may have cut short

    def start_over(self, headers: Mapping[str, str]) -> None:
        """A full body (200): truncate the partial and record the response's validators."""
        self.reset()
        self.resume = _Resume(
            url=self.url, etag=headers.get("ETag"), last_modified=headers.get("Last-Modified")
        )
        data = json.dumps(
            {"url": self.url, "etag": self.resume.etag, "last_modified": self.resume.last_modified}
        ).encode()
        try:
            fd = os.open(self.sidecar, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self.store_error(exc) from exc

    async def receive(self, response: aiohttp.ClientResponse, pace: Pace) -> None:
        try:
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise self.store_error(exc) from exc
        try:
            os.ftruncate(fd, self.offset)
            os.lseek(fd, self.offset, os.SEEK_SET)
        except OSError as exc:
            os.close(fd)
            raise self.store_error(exc) from exc
        sink = Sink(fd, self.digest)
        need = self.size - self.offset
        received = 0
        batch: list[bytes] = []
        batched = 0
        try:
            while received < need and sink.error is None:
                chunk = await read_some(response, pace, received=received)
                if not chunk:
                    break
                if len(chunk) > need - received:
                    chunk = chunk[: need - received]  # THREATS 20: never past the declared size
                received += len(chunk)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= BATCH:
                    await sink.put(batch)
                    batch, batched = [], 0
                if self.progress is not None:
                    self.progress(len(chunk))
        finally:
            await sink.close(batch)  # what was received is kept, even after a failure
            self.offset += sink.written
        if sink.error is not None:
            raise await asyncio.to_thread(self.store_error, sink.error) from sink.error
        if received < need:
            raise SizeMismatchError(
                f"{pace.url}: the body ended after {self.offset} of {self.size} bytes; "
                "the partial file is kept for the next run"
            )
        got = self.digest.hexdigest()
        if got != self.sha512:
            await asyncio.to_thread(self.reset)
            raise DigestMismatchError(
                f"{pace.url}: SHA-512 of the {self.size} bytes is {got[:16]}..., "
                f"the list says {self.sha512[:16]}...; the partial file was removed"
            )


def _read_resume(path: Path) -> _Resume | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    url, etag, modified = data.get("url"), data.get("etag"), data.get("last_modified")
    if not isinstance(url, str) or not all(
        v is None or isinstance(v, str) for v in (etag, modified)
    ):
        return None
    return _Resume(url=url, etag=etag, last_modified=modified)
