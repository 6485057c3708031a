"""The missing blocks of an image update, fetched with HTTP Range requests.

:func:`fetch_ranges` asks for runs of missing blocks (neighbours joined,
``GAP``) from the first source that serves them right, ``RANGES_AT_ONCE``
at a time in one task group (one failing cancels the others); every block
is checked against the block index as it arrives, before it is written, and
a source that failed once is not asked again. The whole must arrive at the
limits' minimum rate. Used by :mod:`site_agent.delta`.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path

from feeds.blocks import BLOCK, BlockIndex, digest
from keys.errors import FetchError, FetchTimeoutError, IntegrityError, VmicError
from site_agent.fetch import Fetcher
from site_agent.peering import ByteSource
from site_agent.transport import (
    Pace,
    about,
    check_encoding,
    open_url,
    read_some,
    status_error,
    with_retries,
)

GAP = 2
"""Missing blocks whose numbers differ by at most this are fetched in one range: runs of
missing blocks with one held block between them go together. On bench/delta.py's pair
(5,374 missing blocks): 1 gives 878 ranges of exactly the missing bytes, 2 gives 604
ranges for 5 % more bytes, 4 gives 474 for 11 % more. Over a wide-area link, where each
request costs a round trip, fewer ranges are worth a few bytes."""
RANGE_BLOCKS = 2048
"""Blocks in one range request at most (8 MiB)."""
RANGES_AT_ONCE = 8


def write_at(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _ranges(missing: list[int]) -> list[tuple[int, int]]:
    """Missing blocks as (first, last) ranges: neighbours within GAP joined, each at most
    RANGE_BLOCKS long."""
    ranges: list[tuple[int, int]] = []
    for block in missing:
        if ranges:
            first, last = ranges[-1]
            if block <= last + GAP and block - first < RANGE_BLOCKS:
                ranges[-1] = (first, max(last, block))
                continue
        ranges.append((block, block))
    return ranges


Blame = Callable[[ByteSource, VmicError], None]
"""Told of each source that failed a range or the index (to record it against a peer)."""


async def fetch_ranges(
    fetcher: Fetcher,
    index: BlockIndex,
    *,
    partial: Path,
    missing: list[int],
    sources: list[ByteSource],
    blame: Blame,
) -> int:
    """Fetch and write the missing blocks, each range from the first source that serves it
    right (a source that failed once is not asked again); the bytes fetched. The whole
    must arrive within the limits' grace period plus its size at the minimum rate."""
    if not missing:
        return 0
    limits = fetcher.limits
    wanted = sum(index.length(block) for block in missing)
    deadline = limits.rate_grace.total_seconds() + wanted / limits.min_rate
    failed: set[str] = set()
    gate = asyncio.Semaphore(RANGES_AT_ONCE)
    fetched = 0

    async def one(first: int, last: int) -> None:
        nonlocal fetched
        async with gate:
            errors = []
            for source in sources:
                if source.url in failed:
                    continue
                try:
                    data = await with_retries(
                        limits,
                        functools.partial(_get_range, fetcher, source.url, index, first, last),
                    )
                except VmicError as error:
                    if source.url not in failed:
                        failed.add(source.url)
                        blame(source, error)
                    errors.append(about(source.url, error.message))
                    continue
                await asyncio.to_thread(_write_into, partial, data, first * BLOCK)
                fetched += len(data)
                return
            raise FetchError(f"blocks {first}-{last}: " + ("; ".join(errors) or "no source left"))

    try:
        async with asyncio.timeout(deadline):
            await _all(one(first, last) for first, last in _ranges(missing))
    except TimeoutError as exc:
        raise FetchTimeoutError(
            f"{wanted:,} bytes of missing blocks did not arrive within {deadline:.0f} s"
        ) from exc
    return fetched


async def _all(jobs: Iterator[Coroutine[None, None, None]]) -> None:
    """Run the jobs; the first to fail cancels the others (and its vmic error is raised)."""
    try:
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(job)
    except BaseExceptionGroup as failures:
        for failure in failures.exceptions:
            if isinstance(failure, VmicError):
                raise failure from None
        raise


def _write_into(partial: Path, data: bytes | bytearray, offset: int) -> None:
    """Write at ``offset`` of the partial file, opened for this write only (never created:
    a write that comes after the assembly was given up finds no file)."""
    fd = os.open(partial, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        write_at(fd, data, offset)
    finally:
        os.close(fd)


async def _get_range(fetcher: Fetcher, url: str, index: BlockIndex, first: int, last: int) -> bytes:
    """Blocks ``first``..``last`` from ``url``, each checked against the index."""
    start = first * BLOCK
    end = min(index.size, (last + 1) * BLOCK) - 1
    limits = fetcher.limits
    pace = Pace(limits, deadline=limits.download_deadline.total_seconds(), url=url)
    final, response = await open_url(
        fetcher.session, url, headers={"Range": f"bytes={start}-{end}"}, limits=limits, pace=pace
    )
    pace.url = final
    try:
        if response.status == 200:
            raise FetchError(f"{final}: the server does not answer Range requests")
        if response.status != 206:
            raise status_error(final, response.status)
        check_encoding(final, response)
        wanted = f"bytes {start}-{end}/{index.size}"
        if response.headers.get("Content-Range") != wanted:
            raise FetchError(
                f"{final}: Content-Range {response.headers.get('Content-Range')!r}, "
                f"expected {wanted!r}"
            )
        need = end - start + 1
        body = bytearray()
        while len(body) < need:
            chunk = await read_some(response, pace, received=len(body))
            if not chunk:
                break
            body += chunk[: need - len(body)]
        if len(body) != need:
            raise FetchError(f"{final}: the range ended after {len(body)} of {need} bytes")
    finally:
        response.close()
    for block in range(first, last + 1):
        offset = (block - first) * BLOCK
        if digest(body[offset : offset + index.length(block)]) != index.at(block):
            raise IntegrityError(f"{final}: block {block} does not match the block index")
    return bytes(body)
