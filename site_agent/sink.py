"""Where downloaded bytes go: a writer thread and a hasher thread fed by the event loop.

The event loop receives; :class:`Sink` hands batches of about 1 MiB to two
worker threads, one writing the partial file and one updating the SHA-512
(hashlib releases the GIL on large buffers), so receiving, hashing and
writing overlap. At most ``SLOTS`` batches wait for the slower thread, so
memory stays bounded whatever the image size; writeback is started as the
file grows, so the final fsync is short.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import _Hash

BATCH = 1024 * 1024
"""Bytes handed to the worker thread at a time."""
SLOTS = 8
"""Batches in flight between the receiver and each worker thread."""
WRITEBACK = 32 * 1024 * 1024
"""Bytes written between two calls of :func:`start_writeback`."""


class Sink:
    """Two worker threads, one writing and one hashing the batches in order, while the loop
    receives; at most ``SLOTS`` batches wait for the slower of the two."""

    def __init__(self, fd: int, digest: _Hash) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = fd
        self._digest = digest
        self._queues: tuple[queue.SimpleQueue[list[bytes] | None], ...] = (
            queue.SimpleQueue(),
            queue.SimpleQueue(),
        )
        self._slots = (asyncio.Semaphore(SLOTS), asyncio.Semaphore(SLOTS))
        self._done: tuple[asyncio.Future[None], ...] = (
            self._loop.create_future(),
            self._loop.create_future(),
        )
        self.written = 0
        self.error: OSError | None = None
        threading.Thread(target=self._write, name="vmic-write", daemon=True).start()
        threading.Thread(target=self._hash, name="vmic-hash", daemon=True).start()

    async def put(self, batch: list[bytes]) -> None:
        for slots in self._slots:
            await slots.acquire()
        for line in self._queues:
            line.put(batch)

    async def close(self, last: list[bytes]) -> None:
        """Give the workers a ``last`` batch, let them finish, and close the file."""
        for line in self._queues:
            if last:
                line.put(last)
            line.put(None)
        await asyncio.shield(asyncio.gather(*self._done))

    def _write(self) -> None:
        flushed = 0
        try:
            while (batch := self._queues[0].get()) is not None:
                if self.error is None:
                    try:
                        for piece in batch:
                            write_all(self._fd, piece)
                            self.written += len(piece)
                        if self.written - flushed >= WRITEBACK:
                            start_writeback(self._fd)
                            flushed = self.written
                    except OSError as exc:
                        self.error = exc
                self._call(self._slots[0].release)
        finally:
            try:
                os.close(self._fd)
            except OSError as exc:
                self.error = self.error or exc
            self._call(self._finished, 0)

    def _hash(self) -> None:
        try:
            while (batch := self._queues[1].get()) is not None:
                for piece in batch:
                    self._digest.update(piece)
                self._call(self._slots[1].release)
        finally:
            self._call(self._finished, 1)

    def _finished(self, which: int) -> None:
        if not self._done[which].done():
            self._done[which].set_result(None)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)


def start_writeback(fd: int) -> None:
    """Start writing the file's dirty pages to disk and drop its clean ones from the cache,
    so that a big download neither fills the page cache nor ends with a long fsync."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def hash_file(path: Path, length: int) -> tuple[_Hash, int]:
    """SHA-512 of the first ``length`` bytes of a file (fewer if it is shorter), and the count."""
    digest = hashlib.sha512()
    buffer = memoryview(bytearray(BATCH))
    done = 0
    with path.open("rb", buffering=0) as handle:
        while done < length:
            count = handle.readinto(buffer[: min(length - done, BATCH)])
            if not count:
                break
            digest.update(buffer[:count])
            done += count
    return digest, done
