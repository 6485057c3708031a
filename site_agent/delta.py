"""An image update that costs the bytes that changed: blocks the site holds, the rest by Range.

When an image's entry names a block index (SCHEMA §13), `vmic sync` first
gets that index (checked against the size and SHA-512 the signed list
gives it) and looks up each block among the blocks of images the site
already holds: cached images, and withdrawn ones still in cache/expired,
older versions of the same list first. Then it assembles the new image in
a partial file of its own (``<sha512>.delta``): blocks of zeros are left as
holes, blocks found locally are copied (each checked against the index
before it is written), and the missing ones are fetched with coalesced
HTTP Range requests (:mod:`site_agent.ranges`) from the endorser or from
peers that hold the image (each fetched block checked against the index
too). Finally the whole file is hashed, in order on a second thread while
the copying runs: only bytes whose SHA-512 is the endorser's are installed.

Anything unexpected — no index, an index that does not verify, a server
that ignores Range, a block that does not match, a wrong whole digest —
raises a vmic error; the caller then downloads the whole image as usual
(:mod:`site_agent.sources`), so nothing unverified is ever used and an
update is never worse than a plain download, beyond the index's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import queue
import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from feeds.blocks import (
    BLOCK,
    DIGEST,
    ZERO_DIGEST,
    BlockIndex,
    blocks_in,
    digest,
    index_size,
    parse_index,
)
from keys.errors import (
    DigestMismatchError,
    DiskFullError,
    FetchError,
    StoreError,
    VmicError,
)
from keys.fileio import fsync_file
from site_agent.cache import Cache
from site_agent.fetch import Fetcher
from site_agent.peering import ByteSource
from site_agent.ranges import Blame, fetch_ranges, write_at
from site_agent.records import ImageRecord
from site_agent.sink import WRITEBACK, hash_file, start_writeback
from site_agent.site import Site
from site_agent.transport import (
    about,
)

log = logging.getLogger("vmic.sync")

DELTA_SUFFIX = ".delta"
"""The partial file of an assembly: ``<sha512>.delta``."""
INDEX_SUFFIX = ".blocks"
"""A block index being downloaded: ``<sha512>.blocks``; peers serve it at the image's
content address + ``.blocks``."""
COPY_RUN = 256
"""Blocks copied from a local file at a time (1 MiB)."""
WORTH = 8
"""An assembly is tried when at least 1/WORTH of the image is found locally or is zeros."""
MAX_BLOCKS = 4 * 1024 * 1024
"""Images of more blocks (16 GiB) are downloaded whole: a plan keeps 8 bytes per block and
about 130 per distinct non-zero block in memory (about 230 MB for a 16 GiB image 40 % full)."""
_DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
CANDIDATES = 8
"""Held images whose indexes are searched at most (older versions of the same list first)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexRef:
    """What the signed entry says of its image's block index."""

    url: str
    size: int
    sha512: str


def index_ref(image: ImageRecord) -> IndexRef | None:
    """The block index an image's verified entry names, if any."""
    ref = image.entry.get("blocks")
    if not isinstance(ref, dict):
        return None
    url, size, sha512 = ref.get("url"), ref.get("size"), ref.get("sha512")
    if not (isinstance(url, str) and isinstance(size, int) and isinstance(sha512, str)):
        return None
    return IndexRef(url=url, size=size, sha512=sha512)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    reused: int
    """Bytes not fetched: copied from held images, or blocks of zeros."""
    fetched: int
    """Bytes fetched: the index (when it was not held) and the ranges."""


_NOT_HELD = -1
_SOURCE_SHIFT = 40
"""A held block is recorded as ``file number << 40 | block number`` (files < 2**23)."""


@dataclass(slots=True)
class _Plan:
    index: BlockIndex
    sources: list[Path]
    held: array[int]
    """Per block of the image: where it is held (file number << 40 | block), or -1."""
    missing: list[int] = field(default_factory=list)
    zeros: int = 0
    reused: int = 0
    """Bytes of the image held (not counting zeros)."""

    def reusable(self) -> int:
        return self.reused + self.zeros * BLOCK


async def update(
    site: Site,
    fetcher: Fetcher,
    image: ImageRecord,
    *,
    index: BlockIndex,
    index_fetched: int,
    sources: list[ByteSource],
    blame: Blame,
) -> Outcome:
    """Assemble ``image`` from held blocks and ranges from ``sources`` into the cache's
    partial file ``<sha512>.delta`` and return what it cost; a vmic error when it cannot
    (the partial file is then gone; :class:`DiskFullError` when the disk is full)."""
    held = _held_images(site, image)  # the store is read on this thread, files on another
    plan = await asyncio.to_thread(_plan, site.cache, held, index)
    if plan.reusable() * WORTH < image.size:
        raise FetchError(
            f"only {plan.reusable():,} of {image.size:,} bytes are held or zeros; "
            "not worth an assembly"
        )
    partial = site.cache.partial(image.sha512).with_name(image.sha512 + DELTA_SUFFIX)
    try:
        fetched = await _build(
            fetcher, plan, partial=partial, image=image, sources=sources, blame=blame
        )
    except OSError as exc:
        discard(partial)
        if exc.errno in _DISK_FULL:
            raise DiskFullError(f"no space left to assemble image {image.image_id}") from exc
        raise StoreError(f"cannot assemble {partial}: {exc.strerror or exc}") from exc
    except BaseException:
        discard(partial)
        raise
    return Outcome(reused=max(0, image.size - fetched), fetched=fetched + index_fetched)


async def _build(
    fetcher: Fetcher,
    plan: _Plan,
    *,
    partial: Path,
    image: ImageRecord,
    sources: list[ByteSource],
    blame: Blame,
) -> int:
    """Fetch the missing blocks, then copy the held ones and hash the whole; the bytes
    fetched."""
    await asyncio.to_thread(_create, partial, image.size)
    fetched = await fetch_ranges(
        fetcher, plan.index, partial=partial, missing=plan.missing, sources=sources, blame=blame
    )
    rotten, got = await asyncio.to_thread(_assemble, plan, partial)
    if rotten:  # held blocks that changed since they were indexed: fetched, then hashed
        log.info("image %s: %d held block(s) changed since indexed", image.image_id, len(rotten))
        fetched += await fetch_ranges(
            fetcher, plan.index, partial=partial, missing=rotten, sources=sources, blame=blame
        )
        got = await asyncio.to_thread(_whole_digest, partial, image.size)
    if got != image.sha512:
        raise DigestMismatchError(
            f"the assembled image {image.image_id} does not have the SHA-512 the list gives"
        )
    await asyncio.to_thread(fsync_file, partial)
    return fetched


def discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)


async def get_index(
    site: Site,
    fetcher: Fetcher,
    image: ImageRecord,
    *,
    ref: IndexRef,
    sources: list[ByteSource],
    blame: Blame,
) -> tuple[BlockIndex, int]:
    """The image's block index, kept from an earlier run or fetched from the first of
    ``sources`` that serves exactly the bytes the entry names; and the bytes fetched."""
    if blocks_in(image.size) > MAX_BLOCKS:
        raise FetchError(
            f"image {image.image_id} has more than {MAX_BLOCKS:,} blocks; downloaded whole"
        )
    kept = await asyncio.to_thread(site.cache.load_index, image.sha512, image.size)
    if kept is not None and hashlib.sha512(kept.encode()).hexdigest() == ref.sha512:
        return kept, 0
    if ref.size != index_size(image.size):  # the reader refuses such a list; check anyway
        raise FetchError(f"the block index of image {image.image_id} has the wrong size")
    partial = site.cache.partial(image.sha512).with_name(image.sha512 + INDEX_SUFFIX)
    errors = []
    for source in sources:
        try:
            await fetcher.download(source.url, partial=partial, size=ref.size, sha512=ref.sha512)
            raw = await asyncio.to_thread(partial.read_bytes)
        except VmicError as error:
            errors.append(about(source.url, error.message))
            blame(source, error)
            continue
        except OSError as exc:
            raise FetchError(f"cannot read the block index {partial}: {exc.strerror}") from exc
        finally:
            discard(partial)
            discard(partial.with_name(partial.name + ".resume"))
        index = parse_index(raw, image_size=image.size)
        await asyncio.to_thread(site.cache.keep_index, image.sha512, index)
        return index, ref.size
    raise FetchError("the block index could not be fetched: " + "; ".join(errors))


# -- the plan: which blocks are held where --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Held:
    sha512: str
    size: int
    same_list: bool


def _held_images(site: Site, image: ImageRecord) -> list[_Held]:
    """Images the site knows besides ``image``, older versions of the same list first,
    then the most recently changed."""
    records = [i for i in site.store.images() if i.sha512 != image.sha512]
    records.sort(key=lambda i: (i.list_id != image.list_id, -i.changed_at.timestamp()))
    held: dict[str, _Held] = {}
    for record in records:
        held.setdefault(
            record.sha512,
            _Held(
                sha512=record.sha512, size=record.size, same_list=record.list_id == image.list_id
            ),
        )
    return list(held.values())


def _plan(cache: Cache, held: list[_Held], index: BlockIndex) -> _Plan:
    """Where each block of the image is: zeros, held (in which file, at which block), or
    missing. Memory: 8 bytes per block, and about 130 per distinct non-zero block."""
    count = index.count
    plan = _Plan(index=index, sources=[], held=array("q", [_NOT_HELD]) * count)
    first: dict[bytes, int] = {}  # a digest -> the first block that has it
    repeats: dict[int, list[int]] = {}  # that first block -> the later blocks with its digest
    digests = index.digests
    for block in range(count):
        key = digests[block * DIGEST : (block + 1) * DIGEST]
        if key == ZERO_DIGEST and index.length(block) == BLOCK:
            plan.zeros += 1
            continue
        seen = first.setdefault(key, block)
        if seen != block:
            repeats.setdefault(seen, []).append(block)
    left = len(first)
    for path, other in _candidates(cache, held):
        if not left:
            break
        number = len(plan.sources)
        plan.sources.append(path)
        data = other.digests
        for block in range(other.count):
            target = first.get(data[block * DIGEST : (block + 1) * DIGEST])
            if target is not None and plan.held[target] == _NOT_HELD:
                plan.held[target] = number << _SOURCE_SHIFT | block
                left -= 1
    for target in first.values():
        where = plan.held[target]
        blocks = [target, *repeats.get(target, ())]
        if where == _NOT_HELD:
            plan.missing.extend(blocks)
            continue
        for block in blocks:
            plan.held[block] = where
            plan.reused += index.length(block)
    plan.missing.sort()
    return plan


def _candidates(cache: Cache, held: list[_Held]) -> Iterator[tuple[Path, BlockIndex]]:
    """Files the site holds, with their indexes: at most CANDIDATES of them; an index not
    kept yet is made (and kept) for images of the same list only."""
    count = 0
    for image in held:
        if count >= CANDIDATES:
            return
        path = cache.held(image.sha512)
        if path is None or blocks_in(image.size) > MAX_BLOCKS:
            continue
        index = cache.load_index(image.sha512, image.size)
        if index is None and image.same_list:
            index = cache.make_index(image.sha512, path)
        if index is None:
            continue
        count += 1
        yield path, index


# -- assembling: held blocks copied, every byte hashed in order ----------------------------------


def _create(partial: Path, size: int) -> None:
    """An empty partial file of the image's size: blocks not written stay holes (zeros)."""
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


_ZEROS = bytes(COPY_RUN * BLOCK)
_HELD, _ZERO, _FETCHED = "held", "zero", "fetched"
_BLOCK_MASK = (1 << _SOURCE_SHIFT) - 1


def _runs(plan: _Plan) -> Iterator[tuple[str, int, int, int, int]]:
    """The image in order as runs (kind, first block, count, source file, source block) of
    at most COPY_RUN blocks: held blocks that continue each other in one file, zeros, or
    blocks fetched into the partial file."""
    index, held = plan.index, plan.held
    kind, first, count, number, source = "", 0, 0, -1, 0
    for block in range(index.count):
        where = held[block]
        if where != _NOT_HELD:
            this, this_number, this_source = _HELD, where >> _SOURCE_SHIFT, where & _BLOCK_MASK
        elif index.at(block) == ZERO_DIGEST and index.length(block) == BLOCK:
            this, this_number, this_source = _ZERO, -1, 0
        else:
            this, this_number, this_source = _FETCHED, -1, 0
        continues = (
            this == kind
            and count < COPY_RUN
            and this_number == number
            and (this != _HELD or this_source == source + count)
        )
        if continues:
            count += 1
            continue
        if count:
            yield kind, first, count, number, source
        kind, first, count, number, source = this, block, 1, this_number, this_source
    if count:
        yield kind, first, count, number, source


def _assemble(plan: _Plan, partial: Path) -> tuple[list[int], str]:
    """Copy the held blocks into the partial file (each checked against the index first)
    while a second thread hashes the whole image in order (hashlib releases the GIL).
    Returns the held blocks that no longer match (to fetch; the digest is then of no
    use) and the SHA-512 of the assembled file."""
    index = plan.index
    rotten: list[int] = []
    digest512 = hashlib.sha512()
    pieces: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=8)

    failure: list[BaseException] = []

    def hash_in_order() -> None:
        while (piece := pieces.get()) is not None:
            if not failure:
                try:
                    digest512.update(piece)
                except BaseException as exc:  # noqa: BLE001 - kept, raised by the caller
                    failure.append(exc)

    fd = os.open(partial, os.O_RDWR | os.O_CLOEXEC)
    sources: dict[int, int] = {}
    for number, path in enumerate(plan.sources):
        with contextlib.suppress(OSError):  # a file gone since: its blocks are fetched
            sources[number] = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    written = flushed = 0
    hasher = threading.Thread(target=hash_in_order, name="vmic-delta-hash", daemon=True)
    hasher.start()
    try:
        for kind, first, count, number, source in _runs(plan):
            length = (count - 1) * BLOCK + index.length(first + count - 1)
            if kind == _ZERO:
                pieces.put(memoryview(_ZEROS)[:length])
            elif kind == _FETCHED:
                pieces.put(os.pread(fd, length, first * BLOCK))
            else:
                data, bad = _copy_run(
                    fd, sources.get(number), index, first=first, count=count, source=source
                )
                rotten.extend(bad)
                pieces.put(data)  # with a bad block, the digest is of no use; the stream goes on
                written += len(data)
                if written - flushed >= WRITEBACK:  # no long fsync at the end
                    start_writeback(fd)
                    flushed = written
    finally:
        pieces.put(None)
        hasher.join()
        os.close(fd)
        for held in sources.values():
            os.close(held)
    if failure:
        raise failure[0]
    return rotten, digest512.hexdigest()


def _copy_run(
    fd: int, held: int | None, index: BlockIndex, *, first: int, count: int, source: int
) -> tuple[bytes, list[int]]:
    """Copy ``count`` held blocks from block ``source`` of the file ``held`` to block
    ``first`` of the image: the bytes read, and the blocks that did not match (not written)."""
    length = (count - 1) * BLOCK + index.length(first + count - 1)
    data = b""
    if held is not None:
        with contextlib.suppress(OSError):
            data = os.pread(held, length, source * BLOCK)
    bad = _check_blocks(index, data, first, count)
    if not bad:
        write_at(fd, data, first * BLOCK)
        return data, bad
    for k in range(count):
        if first + k not in bad:
            write_at(fd, data[k * BLOCK : (k + 1) * BLOCK], (first + k) * BLOCK)
    return data, bad


def _check_blocks(index: BlockIndex, data: bytes, first: int, count: int) -> list[int]:
    """The blocks of ``data`` (blocks ``first``.. of the image) that do not match the index."""
    bad = []
    for k in range(count):
        block = first + k
        piece = data[k * BLOCK : k * BLOCK + index.length(block)]
        if len(piece) != index.length(block) or digest(piece) != index.at(block):
            bad.append(block)
    return bad


def _whole_digest(partial: Path, size: int) -> str:
    got, count = hash_file(partial, size + 1)
    return got.hexdigest() if count == size else ""
