"""Guessing an image's format from its first bytes, for `vmic endorse add`.

Only magic numbers are read (a few KiB at fixed offsets, plus the first
512 bytes of a compressed stream to tell a tar.gz from another .gz); the
endorser can always say ``--format`` instead. A file with no known
signature is taken as a raw disk image.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from pathlib import Path

from keys.errors import ConfigError

_TAR_MAGIC_OFFSET = 257
_ISO_OFFSET = 0x8001
_PROBE = 0x8006


def _is_tar(block: bytes) -> bool:
    return block[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar"


def _first_member_is_ovf(block: bytes) -> bool:
    name = block[:100].split(b"\0", 1)[0]
    return name.lower().endswith(b".ovf")


def guess_format(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            head = handle.read(_PROBE)
            size = handle.seek(0, 2)
            tail = b""
            if size >= 512:
                handle.seek(size - 512)
                tail = handle.read(512)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith((b"KDMV", b"# Disk DescriptorFile")):
        return "vmdk"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix") or tail.startswith(b"conectix"):
        return "vhd"
    if head.startswith(b"<<< ") and b"VirtualBox Disk Image" in head[:64]:
        return "vdi"
    if head[_ISO_OFFSET : _ISO_OFFSET + 5] == b"CD001":
        return "iso"
    if _is_tar(head):
        return "ova" if _first_member_is_ovf(head) else "tar"
    for magic, opener, name in (
        (b"\x1f\x8b", gzip.open, "tar.gz"),
        (b"\xfd7zXZ\x00", lzma.open, "tar.xz"),
        (b"BZh", bz2.open, "tar.bz2"),
    ):
        if head.startswith(magic):
            try:
                with opener(path, "rb") as stream:
                    block = stream.read(512)
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
                raise ConfigError(f"{path} looks compressed but cannot be read: {exc}") from exc
            if _is_tar(block):
                return name
            raise ConfigError(
                f"{path} is a compressed file but not a tar archive",
                hint="give --format explicitly",
            )
    return "raw"
