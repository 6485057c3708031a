"""Building small image trees for the policy check, in every form it reads.

A tree is a mapping of paths inside the image to :class:`Node` values. It
becomes a folder, a tar archive (plain, gzip, bzip2, xz), an ext4 file
system made by ``mke2fs -d`` (e2fsprogs), or a disk with an MBR or GPT
partition table holding that file system.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)
from cryptography.x509.oid import NameOID

SECTOR = 512
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Node:
    data: bytes = b""
    mode: int = 0o644
    link: str | None = None
    """A symbolic link to this target instead of a file."""
    folder: bool = False


def text(value: str, mode: int = 0o644) -> Node:
    return Node(data=value.encode(), mode=mode)


def folder() -> Node:
    return Node(folder=True, mode=0o755)


def symlink(target: str) -> Node:
    return Node(link=target)


Tree = dict[str, Node]


def write_folder(tree: Tree, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for path, node in sorted(tree.items()):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if node.folder:
            target.mkdir(exist_ok=True)
        elif node.link is not None:
            target.symlink_to(node.link)
        else:
            target.write_bytes(node.data)
            target.chmod(node.mode)
    return root


def write_tar(tree: Tree, out: Path, compression: str = "") -> Path:
    """``compression``: "", "gz", "bz2" or "xz"."""
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(out, mode) as archive:  # type: ignore[call-overload]
        for path, node in sorted(tree.items()):
            info = tarfile.TarInfo("./" + path.lstrip("/"))
            if node.folder:
                info.type, info.mode = tarfile.DIRTYPE, node.mode
                archive.addfile(info)
            elif node.link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, node.link
                archive.addfile(info)
            else:
                info.size, info.mode = len(node.data), node.mode
                archive.addfile(info, io.BytesIO(node.data))
    return out


def mke2fs() -> str:
    found = shutil.which("mke2fs") or shutil.which("mke2fs", path="/usr/sbin:/sbin")
    if found is None or not (
        shutil.which("debugfs") or shutil.which("debugfs", path="/usr/sbin:/sbin")
    ):
        pytest.skip("e2fsprogs (mke2fs, debugfs) is not installed")
    return found


def write_ext4(tree: Tree, out: Path, work: Path, size_mib: int = 8) -> Path:
    """An ext4 file system holding ``tree`` (made with ``mke2fs -d``)."""
    source = write_folder(tree, work / "ext4-source")
    done = subprocess.run(
        [mke2fs(), "-q", "-F", "-t", "ext4", "-d", str(source), str(out), f"{size_mib}M"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    return out


def write_mbr_disk(partitions: list[tuple[int, bytes]], out: Path) -> Path:
    """A disk with an MBR: each (type byte, content) becomes a primary partition, 1 MiB aligned."""
    table, body, lba = bytearray(SECTOR), bytearray(), 2048
    for slot, (kind, content) in enumerate(partitions):
        sectors = -(-len(content) // SECTOR)
        entry = bytes([0, 0, 0, 0, kind, 0, 0, 0]) + struct.pack("<II", lba, sectors)
        table[446 + 16 * slot : 462 + 16 * slot] = entry
        body += b"\0" * (lba * SECTOR - SECTOR - len(body)) + content
        lba += -(-sectors // 2048) * 2048
    table[510:512] = b"\x55\xaa"
    out.write_bytes(bytes(table) + bytes(body))
    return out


def write_gpt_disk(partitions: list[bytes], out: Path) -> Path:
    """A disk with a protective MBR and a GPT (128 entries of 128 bytes at LBA 2)."""
    entries, body, lba = bytearray(128 * 128), bytearray(), 2048
    for n, content in enumerate(partitions):
        sectors = -(-len(content) // SECTOR)
        entry = (
            bytes(range(1, 17)) + bytes([n + 1] * 16) + struct.pack("<QQ", lba, lba + sectors - 1)
        )
        entries[n * 128 : n * 128 + len(entry)] = entry
        body += b"\0" * (lba * SECTOR - 34 * SECTOR - len(body)) + content
        lba += -(-sectors // 2048) * 2048
    header = bytearray(92)
    header[:8] = b"EFI PART"
    struct.pack_into("<IIII", header, 8, 0x00010000, 92, 0, 0)
    struct.pack_into("<QQQQ", header, 24, 1, lba, 34, lba - 1)
    struct.pack_into("<QII", header, 72, 2, 128, 128)
    struct.pack_into("<I", header, 88, zlib.crc32(bytes(entries)))
    struct.pack_into("<I", header, 16, zlib.crc32(bytes(header)))
    mbr = bytearray(SECTOR)
    mbr[446:462] = bytes([0, 0, 0, 0, 0xEE, 0, 0, 0]) + struct.pack("<II", 1, 0xFFFFFFFF)
    mbr[510:512] = b"\x55\xaa"
    gpt = bytes(header) + b"\0" * (SECTOR - 92) + bytes(entries)
    out.write_bytes(bytes(mbr) + gpt + bytes(body))
    return out


def fat_boot_sector() -> bytes:
    """The first sector of a FAT file system, as mkfs.fat writes it (enough to be told)."""
    boot = bytearray(SECTOR)
    boot[0:11] = b"\xeb\x3c\x90mkfs.fat"
    boot[54:62] = b"FAT16   "
    boot[510:512] = b"\x55\xaa"
    return bytes(boot)


def debugfs_write(image: Path, *commands: str) -> None:
    """Change a test file system in ways mke2fs would not (``debugfs -w``)."""
    tool = shutil.which("debugfs") or shutil.which("debugfs", path="/usr/sbin:/sbin")
    assert tool is not None
    done = subprocess.run(
        [tool, "-w", "-f", "-", str(image)],
        input="\n".join(commands).encode() + b"\n",
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()


# -- key material, made for real -------------------------------------------------------
def pem_private_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())


def openssh_private_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())


def pkcs12_bundle() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bundle")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2026, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2027, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )
    return pkcs12.serialize_key_and_certificates(
        b"bundle", key, cert, None, BestAvailableEncryption(b"secret")
    )
