"""Guessing image formats from small real files built in tmp_path."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from feeds.formats import guess_format
from feeds.model import KNOWN_FORMATS
from keys.errors import ConfigError


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def make_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


DISK = [("disk.img", b"\0" * 2048)]
OVA = [("appliance.ovf", b"<Envelope/>"), ("disk1.vmdk", b"KDMV" + b"\0" * 508)]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("a.qcow2", b"QFI\xfb\x00\x00\x00\x03" + bytes(504), "qcow2"),
        ("a.vmdk", b"KDMV\x01\x00\x00\x00" + bytes(504), "vmdk"),
        (
            "b.vmdk",
            b'# Disk DescriptorFile\nversion=1\nCID=fffffffe\ncreateType="monolithicFlat"\n',
            "vmdk",
        ),
        ("a.vhdx", b"vhdxfile" + "Microsoft Windows".encode("utf-16-le") + bytes(4096), "vhdx"),
        ("dynamic.vhd", b"conectix" + bytes(504) + bytes(2048) + b"conectix" + bytes(504), "vhd"),
        ("fixed.vhd", bytes(4096) + b"conectix\x00\x00\x00\x02" + bytes(500), "vhd"),
        (
            "a.vdi",
            b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(64, b"\0")
            + b"\x7f\x10\xda\xbe"
            + bytes(444),
            "vdi",
        ),
        ("a.iso", bytes(0x8001) + b"CD001\x01" + bytes(2042), "iso"),
        ("a.img", bytes(1 << 16), "raw"),
        ("random.bin", bytes(range(256)) * 40, "raw"),
        ("tiny", b"x", "raw"),
        ("empty", b"", "raw"),
    ],
)
def test_guess_format_from_magic_bytes(
    tmp_path: Path, name: str, data: bytes, expected: str
) -> None:
    assert guess_format(write(tmp_path, name, data)) == expected
    assert expected in KNOWN_FORMATS


def test_file_name_does_not_decide_the_format(tmp_path: Path) -> None:
    assert guess_format(write(tmp_path, "looks.qcow2", bytes(1024))) == "raw"
    assert guess_format(write(tmp_path, "looks.raw", b"QFI\xfb" + bytes(1020))) == "qcow2"


def test_iso_magic_needs_its_offset(tmp_path: Path) -> None:
    assert guess_format(write(tmp_path, "short.iso", b"CD001" + bytes(0x9000))) == "raw"


@pytest.mark.parametrize(
    "tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]
)
def test_tar_archive(tmp_path: Path, tar_format: int) -> None:
    path = tmp_path / "image.tar"
    with tarfile.open(path, "w", format=tar_format) as archive:
        info = tarfile.TarInfo("disk.img")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"disk"))
    assert guess_format(path) == "tar"


def test_ova_is_a_tar_whose_first_member_is_the_ovf(tmp_path: Path) -> None:
    assert guess_format(make_tar(tmp_path / "a.ova", OVA)) == "ova"
    upper = [("APPLIANCE.OVF", b"<Envelope/>"), *OVA[1:]]
    assert guess_format(make_tar(tmp_path / "b.ova", upper)) == "ova"


def test_tar_with_the_ovf_not_first_is_a_plain_tar(tmp_path: Path) -> None:
    assert guess_format(make_tar(tmp_path / "x.tar", list(reversed(OVA)))) == "tar"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("w:gz", "tar.gz"), ("w:xz", "tar.xz"), ("w:bz2", "tar.bz2")],
)
def test_compressed_tar(tmp_path: Path, mode: str, expected: str) -> None:
    path = make_tar(tmp_path / f"image.{expected}", DISK, mode)
    assert guess_format(path) == expected


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("disk.img.gz", gzip.compress),
        ("disk.img.xz", lzma.compress),
        ("disk.img.bz2", bz2.compress),
    ],
)
def test_compressed_file_that_is_not_a_tar_is_refused(
    tmp_path: Path, name: str, compress: Callable[[bytes], bytes]
) -> None:
    path = write(tmp_path, name, compress(b"QFI\xfb" + bytes(4096)))
    with pytest.raises(ConfigError, match="not a tar archive"):
        guess_format(path)


@pytest.mark.parametrize(
    "data",
    [
        gzip.compress(b"x" * 4096)[:20],  # truncated stream
        b"\x1f\x8b" + b"not really gzip" * 10,
        b"BZh9" + b"garbage" * 20,
        b"\xfd7zXZ\x00" + b"garbage" * 20,
    ],
    ids=["truncated-gz", "bad-gz", "bad-bz2", "bad-xz"],
)
def test_unreadable_compressed_file_is_refused(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ConfigError):
        guess_format(write(tmp_path, "broken", data))


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        guess_format(tmp_path / "absent.img")
