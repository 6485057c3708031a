"""The block index of an image: where its bytes might already be found (SCHEMA §13).

An image's block index names each aligned 4 KiB block of the image by the
first 16 bytes of its SHA-256. It is a pure function of the image's bytes,
so any site holding an image can make the very index the endorser signed
(the list names the index's SHA-512 and size). A site updating an image
uses the index to copy the blocks it already holds (from older versions and
other images) and to fetch only the others; the image's SHA-512 in the
signed list still decides whether the assembled bytes are used.

The format, all integers big-endian::

    offset  size  field
    0       8     magic b"vmicblk1"
    8       4     block size: 4096
    12      4     digest size: 16
    16      8     image size in bytes
    24      16*n  the digests of the n = ceil(image size / 4096) blocks, in order;
                  the last block is hashed as it is (shorter than 4096 bytes when
                  the image size is not a multiple of it)

Nothing else may follow. :func:`parse_index` refuses anything that is not
exactly this, for the image size the list states, with a
:class:`~keys.errors.ListFormatError`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keys.errors import ConfigError, ListFormatError
from keys.fileio import CHUNK

MAGIC = b"vmicblk1"
BLOCK = 4096
"""Bytes per block: file systems in images place data on 4 KiB boundaries."""
DIGEST = 16
"""Bytes of each block's SHA-256 kept in the index."""
HEADER = struct.Struct(">8sIIQ")
ZERO_DIGEST = hashlib.sha256(bytes(BLOCK)).digest()[:DIGEST]
"""The digest of a whole block of zeros: such blocks are never fetched."""
_READ = 1024 * BLOCK
"""Bytes read at a time while indexing a file."""


def blocks_in(size: int) -> int:
    """How many blocks an image of ``size`` bytes has."""
    return -(-size // BLOCK)


def index_size(size: int) -> int:
    """The exact size of the index of an image of ``size`` bytes."""
    return HEADER.size + DIGEST * blocks_in(size)


def digest(block: bytes | bytearray | memoryview) -> bytes:
    """The index's digest of one block."""
    return hashlib.sha256(block).digest()[:DIGEST]


@dataclass(frozen=True, slots=True)
class BlockIndex:
    """A parsed index: ``digests`` holds the n digests back to back."""

    size: int
    digests: bytes

    @property
    def count(self) -> int:
        return len(self.digests) // DIGEST

    def at(self, block: int) -> bytes:
        return self.digests[block * DIGEST : (block + 1) * DIGEST]

    def length(self, block: int) -> int:
        """Bytes in block number ``block`` (the last one may be short)."""
        return min(BLOCK, self.size - block * BLOCK)

    def encode(self) -> bytes:
        return HEADER.pack(MAGIC, BLOCK, DIGEST, self.size) + self.digests


class Indexer:
    """Builds an index from an image's bytes fed in order, in pieces of any size."""

    def __init__(self) -> None:
        self._digests = bytearray()
        self._pending = bytearray()
        self._size = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self._size += len(view)
        if self._pending:
            take = min(BLOCK - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < BLOCK:
                return
            self._digests += digest(self._pending)
            self._pending.clear()
        whole = len(view) - len(view) % BLOCK
        out = self._digests
        for start in range(0, whole, BLOCK):
            out += hashlib.sha256(view[start : start + BLOCK]).digest()[:DIGEST]
        self._pending += view[whole:]

    def finish(self) -> BlockIndex:
        if self._pending:
            self._digests += digest(self._pending)
            self._pending.clear()
        return BlockIndex(size=self._size, digests=bytes(self._digests))


def index_file(path: Path, *, progress: Callable[[int], None] | None = None) -> BlockIndex:
    """The index of a file on disk (:class:`ConfigError` when it cannot be read)."""
    indexer = Indexer()
    buffer = bytearray(_READ)
    view = memoryview(buffer)
    try:
        with path.open("rb", buffering=0) as handle:
            while count := handle.readinto(buffer):
                indexer.update(view[:count])
                if progress is not None:
                    progress(count)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return indexer.finish()


def hash_and_index(
    path: Path, *, progress: Callable[[int], None] | None = None
) -> tuple[str, int, BlockIndex]:
    """SHA-512 (hex), size and index of a file from one read of it, in the chunks
    :func:`keys.fileio.sha512_file` reads (:class:`ConfigError` when it cannot be read)."""
    sha512 = hashlib.sha512()
    indexer = Indexer()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                sha512.update(chunk)
                indexer.update(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(len(chunk))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return sha512.hexdigest(), size, indexer.finish()


def parse_index(raw: bytes, *, image_size: int) -> BlockIndex:
    """The index in ``raw``, which must be exactly the index of an image of ``image_size``
    bytes in the format above; :class:`ListFormatError` otherwise."""
    if image_size < 0:
        raise ListFormatError(f"block index: image size {image_size} is negative")
    if len(raw) < HEADER.size:
        raise ListFormatError(f"block index: {len(raw)} bytes, shorter than its header")
    magic, block, digest_size, size = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise ListFormatError("block index: not a vmic block index (wrong magic)")
    if block != BLOCK or digest_size != DIGEST:
        raise ListFormatError(
            f"block index: blocks of {block} bytes with {digest_size}-byte digests; "
            f"only {BLOCK} and {DIGEST} are defined"
        )
    if size != image_size:
        raise ListFormatError(f"block index: for an image of {size} bytes, not {image_size}")
    if len(raw) != index_size(image_size):
        raise ListFormatError(
            f"block index: {len(raw)} bytes, an image of {image_size} bytes needs "
            f"{index_size(image_size)}"
        )
    return BlockIndex(size=size, digests=bytes(raw[HEADER.size :]))
