"""The file systems of a raw disk image: the whole disk, and its MBR or GPT partitions.

Everything here reads bytes the image's author chose, so every offset is
checked against the file's size, chains are bounded and a malformed table
yields fewer partitions, never an exception. Both a file system at offset 0
and a partition table are reported when a disk has both: a small decoy file
system must not hide the partitions its boot sector names.

Each partition is classified: ``ext`` (read with debugfs), a kind that holds
no files worth checking (EFI system partition, BIOS boot, swap, an extended
partition's container), or another file system (xfs, btrfs, LVM, ...), which
the check reports as not inspected.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SECTOR = 512
_MAX_PARTITIONS = 128
_EXT_MAGIC_AT, _EXT_MAGIC = 1024 + 56, b"\x53\xef"
_MBR_EXTENDED = {0x05, 0x0F, 0x85}
_MBR_HARMLESS = {0xEF: "EFI system partition"}
_GPT_HARMLESS = {
    uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"): "EFI system partition",
    uuid.UUID("21686148-6449-6e6f-744e-656564454649"): "BIOS boot partition",
}
# (offset, magic, name) of file systems vmic recognises but does not read
_OTHER_MAGIC = (
    (0, b"XFSB", "xfs"),
    (0x10040, b"_BHRfS_M", "btrfs"),
    (512, b"LABELONE", "LVM physical volume"),
    (0, b"LUKS\xba\xbe", "LUKS encrypted volume"),
    (3, b"NTFS    ", "NTFS"),
    (0x8001, b"CD001", "ISO 9660"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    number: int
    """0 for a file system that starts at the beginning of the disk."""
    offset: int
    size: int
    ext: bool
    kind: str
    """``ext2/3/4``, a harmless kind (``swap``, ...), or what else it holds."""
    harmless: bool = False


def partitions(path: Path) -> list[Partition]:
    """The disk's file systems (a file system at offset 0 first, then the table's)."""
    size = path.stat().st_size
    with path.open("rb") as disk:
        found = []
        if _is_ext(disk, 0, size):
            found.append(Partition(number=0, offset=0, size=size, ext=True, kind="ext2/3/4"))
        disk.seek(0)
        mbr = disk.read(SECTOR)
        if len(mbr) == SECTOR and mbr[510:512] == b"\x55\xaa":
            entries = _mbr_entries(mbr)
            if any(kind == 0xEE for kind, _, _ in entries):
                spans = _gpt_spans(disk, size)
            else:
                spans = _mbr_spans(disk, entries, size)
            for n, span in enumerate(spans[:_MAX_PARTITIONS], start=1):
                found.append(_classify(disk, size, n, span))
        return found


def _classify(
    disk: BinaryIO, size: int, number: int, span: tuple[int, int, str | None]
) -> Partition:
    """What a partition holds, from its content; the table's type only names harmless ones
    whose content agrees (a FAT EFI partition, a small BIOS boot partition, swap)."""
    offset, length, label = span

    def made(kind: str, *, ext: bool = False, harmless: bool = False) -> Partition:
        return Partition(
            number=number, offset=offset, size=length, ext=ext, kind=kind, harmless=harmless
        )

    if _is_ext(disk, offset, size):
        return made("ext2/3/4", ext=True)
    if _read(disk, offset + 4086, size, 10) in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return made("swap", harmless=True)
    boot = _read(disk, offset, size, SECTOR)
    fat = len(boot) == SECTOR and boot[510:512] == b"\x55\xaa" and b"FAT" in boot[54:90]
    if label == "EFI system partition" and fat:
        return made("EFI system partition (FAT)", harmless=True)
    if label == "BIOS boot partition" and length <= 4 * 1024 * 1024:
        return made(label, harmless=True)
    for at, magic, name in _OTHER_MAGIC:
        if _read(disk, offset + at, size, len(magic)) == magic:
            return made(name)
    return made("FAT" if fat else "an unknown file system")


def _read(disk: BinaryIO, at: int, size: int, count: int) -> bytes:
    if at < 0 or at + count > size:
        return b""
    disk.seek(at)
    return disk.read(count)


def _is_ext(disk: BinaryIO, offset: int, size: int) -> bool:
    return _read(disk, offset + _EXT_MAGIC_AT, size, 2) == _EXT_MAGIC


def _mbr_entries(sector: bytes) -> list[tuple[int, int, int]]:
    """(type, first LBA, sectors) of the four slots of an MBR or EBR that are in use."""
    out = []
    for slot in range(4):
        raw = sector[446 + 16 * slot : 462 + 16 * slot]
        kind = raw[4]
        first, count = struct.unpack("<II", raw[8:16])
        if kind and count:
            out.append((kind, first, count))
    return out


def _mbr_spans(
    disk: BinaryIO, entries: list[tuple[int, int, int]], size: int
) -> list[tuple[int, int, str | None]]:
    spans: list[tuple[int, int, str | None]] = []
    for kind, first, count in entries:
        if kind not in _MBR_EXTENDED:
            spans.append((first * SECTOR, count * SECTOR, _MBR_HARMLESS.get(kind)))
            continue
        seen: set[int] = set()
        ebr_at = first
        while ebr_at and ebr_at not in seen and len(seen) < _MAX_PARTITIONS:  # logical ones
            seen.add(ebr_at)
            ebr = _read(disk, ebr_at * SECTOR, size, SECTOR)
            if len(ebr) < SECTOR or ebr[510:512] != b"\x55\xaa":
                break
            links = _mbr_entries(ebr)
            if links and links[0][0] not in _MBR_EXTENDED:
                logical = links[0]
                spans.append(
                    (
                        (ebr_at + logical[1]) * SECTOR,
                        logical[2] * SECTOR,
                        _MBR_HARMLESS.get(logical[0]),
                    )
                )
            nxt = next((e for e in links[1:] if e[0] in _MBR_EXTENDED), None)
            ebr_at = first + nxt[1] if nxt else 0
    return spans


def _gpt_spans(disk: BinaryIO, size: int) -> list[tuple[int, int, str | None]]:
    header = _read(disk, SECTOR, size, 92)
    if len(header) < 92 or header[:8] != b"EFI PART":
        return []
    table_lba, count, entry_size = struct.unpack("<QII", header[72:88])
    if not 128 <= entry_size <= 4096 or count > 1024:
        return []
    table = _read(disk, table_lba * SECTOR, size, count * entry_size)
    spans: list[tuple[int, int, str | None]] = []
    for n in range(len(table) // entry_size):
        raw = table[n * entry_size : (n + 1) * entry_size]
        if raw[:16] == b"\0" * 16:
            continue
        first, last = struct.unpack("<QQ", raw[32:48])
        if last >= first and first * SECTOR < size:
            kind = _GPT_HARMLESS.get(uuid.UUID(bytes_le=bytes(raw[:16])))
            spans.append((first * SECTOR, (last - first + 1) * SECTOR, kind))
    return spans
