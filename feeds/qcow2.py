"""Whether a qcow2 image holds compressed clusters, read from its header and tables.

`vmic endorse add` writes a block index (:mod:`feeds.blocks`) for a qcow2 image
only when its clusters are stored as they are: a compressed cluster changes
as a whole when one byte of it does, so an index of such a file finds almost
nothing to reuse. The answer comes from the image's own metadata, as the
QCOW2 specification (qemu ``docs/interop/qcow2.txt``) lays it out, all
numbers big-endian:

- the header: magic ``QFI\\xfb``, version 2 or 3, ``cluster_bits`` (9 to 21),
  the active L1 table's size (entries) and offset; in version 3 the
  incompatible feature bits, of which bit 4 (extended L2 entries) makes each
  L2 entry 16 bytes instead of 8;
- each L1 entry names an L2 table (bits 9-55: its offset, cluster-aligned;
  0 when unallocated), a cluster of L2 entries;
- an L2 entry whose bit 62 is set describes a compressed cluster.

Every read is bounded: the L1 table at most 32 MiB (qemu's own limit), each
L2 table one cluster, each read once, and all of them inside the file. A
file that is not a qcow2 image, or whose tables point outside it, raises a
:class:`~keys.errors.ConfigError` naming the file. Internal snapshots'
tables are not read (images are published without them).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from keys.errors import ConfigError

MAGIC = b"QFI\xfb"
_HEADER_V2 = struct.Struct(">4sIQIIQIIQQIIQ")
"""magic, version, backing file offset and size, cluster_bits, virtual size, crypt
method, l1_size, l1_table_offset, refcount table offset and clusters, snapshots count
and offset: the 72 bytes every version has."""
_FEATURES = struct.Struct(">QQQII")
"""Version 3, from byte 72: incompatible, compatible, autoclear features, refcount
order, header length."""
_MIN_CLUSTER_BITS, _MAX_CLUSTER_BITS = 9, 21
_MAX_L1_BYTES = 32 * 1024 * 1024
_EXTENDED_L2 = 1 << 4
_KNOWN_INCOMPATIBLE = 0b11111  # dirty, corrupt, external data file, compression type, extended L2
_L2_OFFSET = 0x00FF_FFFF_FFFF_FE00  # bits 9-55 of an L1 entry
_COMPRESSED = 1 << 62


def has_compressed_clusters(path: Path) -> bool:
    """Whether any cluster the active L1 table reaches is compressed; ConfigError when
    ``path`` cannot be read or is not a well-formed qcow2 image."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return _Qcow2(path, fd).compressed()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)


class _Qcow2:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(
            f"{self.path} is not a well-formed qcow2 image: {problem}",
            hint="check the file (`qemu-img check`), or give --format, or --no-blocks",
        )

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or offset + length > self.size:
            raise self.fail(f"the {what} lies outside the file ({self.size} bytes)")
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise self.fail(f"the file ended while reading the {what}")
        return data

    def compressed(self) -> bool:
        header = self.read(0, _HEADER_V2.size, "header")
        magic, version, _bf_offset, _bf_size, cluster_bits, _virtual, _crypt, l1_size, l1_offset = (
            _HEADER_V2.unpack(header)[:9]
        )
        if magic != MAGIC:
            raise self.fail("no QFI\\xfb magic")
        if version not in (2, 3):
            raise self.fail(f"version {version}, only 2 and 3 are defined")
        if not _MIN_CLUSTER_BITS <= cluster_bits <= _MAX_CLUSTER_BITS:
            raise self.fail(f"cluster_bits {cluster_bits} is outside 9-21")
        entry_size = 8
        if version == 3:
            incompatible, _compatible, _autoclear, _order, length = _FEATURES.unpack(
                self.read(_HEADER_V2.size, _FEATURES.size, "version 3 header")
            )
            if length < _HEADER_V2.size + _FEATURES.size:
                raise self.fail(f"header length {length} is below 104")
            unknown = incompatible & ~_KNOWN_INCOMPATIBLE
            if unknown:
                raise self.fail(f"unknown incompatible features {unknown:#x}")
            if incompatible & _EXTENDED_L2:
                entry_size = 16
        cluster = 1 << cluster_bits
        if l1_size * 8 > _MAX_L1_BYTES:
            raise self.fail(f"an L1 table of {l1_size} entries is larger than 32 MiB")
        if l1_size and l1_offset % cluster:
            raise self.fail(f"the L1 table offset {l1_offset} is not cluster-aligned")
        l1 = struct.unpack(f">{l1_size}Q", self.read(l1_offset, l1_size * 8, "L1 table"))
        seen: set[int] = set()
        stride = entry_size // 8  # an extended L2 entry's second word is a bitmap
        for entry in l1:
            l2_offset = entry & _L2_OFFSET
            if not l2_offset or l2_offset in seen:
                continue
            seen.add(l2_offset)
            if l2_offset % cluster:
                raise self.fail(f"the L2 table offset {l2_offset} is not cluster-aligned")
            table = struct.unpack(f">{cluster // 8}Q", self.read(l2_offset, cluster, "L2 table"))
            if any(value & _COMPRESSED for value in table[::stride]):
                return True
        return False
