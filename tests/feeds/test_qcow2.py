"""feeds.qcow2: compressed clusters found from a qcow2 image's own tables, malformed
images refused naming the file."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from feeds.qcow2 import has_compressed_clusters
from keys.errors import ConfigError
from tests.support.glance import qcow2_image

CLUSTER = 1 << 16  # tests.support.glance.qcow2_image's layout: L1 at cluster 3, L2 at 4


def qemu_img() -> str:
    """Skip, or fail under `make test` (``VMIC_REQUIRE_INTEROP=1``)."""
    tool = shutil.which("qemu-img")
    if tool is None:
        if os.environ.get("VMIC_REQUIRE_INTEROP") == "1":
            pytest.fail("qemu-img is required under `make test` (Debian qemu-utils)")
        pytest.skip("qemu-img is not installed")
    return tool


def compressible(size: int) -> bytes:
    line = b"vmic block index test data, compressible and not all zeros\n"
    return (line * (size // len(line) + 1))[:size]


def convert(raw: Path, out: Path, *options: str) -> Path:
    subprocess.run(
        [qemu_img(), "convert", "-O", "qcow2", *options, str(raw), str(out)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("qcow2") / "disk.raw"
    path.write_bytes(compressible(3 * 1024 * 1024) + bytes(1024 * 1024))
    return path


@pytest.mark.parametrize(
    ("options", "compressed"),
    [
        ((), False),
        (("-c",), True),
        (("-o", "compat=0.10"), False),
        (("-c", "-o", "compat=0.10"), True),
        (("-o", "cluster_size=4096"), False),
        (("-c", "-o", "cluster_size=2M"), True),
        (("-o", "extended_l2=on,cluster_size=128k"), False),
        (("-c", "-o", "extended_l2=on,cluster_size=128k"), True),
    ],
    ids=["plain", "compressed", "v2", "v2-compressed", "4k", "2M-compressed", "ext-l2", "ext-l2-c"],
)
def test_compressed_clusters_are_found_in_images_qemu_img_makes(
    raw: Path, tmp_path: Path, options: tuple[str, ...], compressed: bool
) -> None:
    image = convert(raw, tmp_path / "disk.qcow2", *options)
    assert has_compressed_clusters(image) is compressed


def test_an_empty_qcow2_has_no_compressed_clusters(tmp_path: Path) -> None:
    image = tmp_path / "empty.qcow2"
    subprocess.run(
        [qemu_img(), "create", "-q", "-f", "qcow2", str(image), "1G"], check=True, timeout=60
    )
    assert has_compressed_clusters(image) is False


def test_a_synthetic_qcow2_is_read_without_qemu_img(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(qcow2_image(compressible(3 * CLUSTER)))
    assert has_compressed_clusters(image) is False
    data = bytearray(image.read_bytes())
    entry = struct.unpack_from(">Q", data, 4 * CLUSTER + 8)[0]
    struct.pack_into(">Q", data, 4 * CLUSTER + 8, entry | 1 << 62)  # the second cluster
    image.write_bytes(bytes(data))
    assert has_compressed_clusters(image) is True


def _patched(tmp_path: Path, patch: object) -> Path:
    data = bytearray(qcow2_image(compressible(2 * CLUSTER)))
    patch(data)  # type: ignore[operator]
    path = tmp_path / "bad.qcow2"
    path.write_bytes(bytes(data))
    return path


def _put(fmt: str, offset: int, value: int) -> object:
    return lambda data: struct.pack_into(fmt, data, offset, value)


def _cut(length: int) -> object:
    def cut(data: bytearray) -> None:
        del data[length:]

    return cut


MALFORMED = [
    ("empty", _cut(0), "header lies outside the file"),
    ("header-cut", _cut(50), "header lies outside the file"),
    ("v3-header-cut", _cut(80), "version 3 header lies outside"),
    ("magic", _put(">I", 0, 0x51464900), "no QFI"),
    ("version-1", _put(">I", 4, 1), "version 1, only 2 and 3"),
    ("version-4", _put(">I", 4, 4), "version 4"),
    ("cluster-bits-8", _put(">I", 20, 8), "cluster_bits 8 is outside"),
    ("cluster-bits-63", _put(">I", 20, 63), "cluster_bits 63"),
    ("header-length", _put(">I", 100, 72), "header length 72"),
    ("unknown-feature", _put(">Q", 72, 1 << 40), "unknown incompatible features 0x10000000000"),
    ("l1-huge", _put(">I", 36, 0xFFFF_FFFF), "larger than 32 MiB"),
    ("l1-past-the-end", _put(">Q", 40, 1 << 40), "L1 table lies outside"),
    ("l1-unaligned", _put(">Q", 40, 3 * CLUSTER + 8), "L1 table offset .* not cluster-aligned"),
    ("l1-size-past-the-end", _put(">I", 36, 1 << 20), "L1 table lies outside"),
    ("l2-past-the-end", _put(">Q", 3 * CLUSTER, 1 << 50), "L2 table lies outside"),
    (
        "l2-unaligned",
        _put(">Q", 3 * CLUSTER, 4 * CLUSTER + 512),
        "L2 table offset .* not cluster-aligned",
    ),
    ("l2-cut", _cut(4 * CLUSTER + 100), "L2 table lies outside"),
]


@pytest.mark.parametrize(("name", "patch", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_qcow2_is_a_config_error_naming_the_file(
    tmp_path: Path, name: str, patch: object, message: str
) -> None:
    path = _patched(tmp_path, patch)
    with pytest.raises(ConfigError, match=message) as caught:
        has_compressed_clusters(path)
    assert str(path) in caught.value.message
    assert "not a well-formed qcow2 image" in caught.value.message


def test_an_l2_table_named_many_times_is_read_once(tmp_path: Path) -> None:
    """A hostile L1 table pointing every entry at one L2 table costs one read of it."""
    data = bytearray(qcow2_image(compressible(CLUSTER), virtual_size=1 << 40))
    count = 2048
    struct.pack_into(">I", data, 36, count)
    data[3 * CLUSTER : 3 * CLUSTER + 8 * count] = struct.pack(">Q", 4 * CLUSTER) * count
    path = tmp_path / "many.qcow2"
    path.write_bytes(bytes(data))
    assert has_compressed_clusters(path) is False


def test_a_file_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        has_compressed_clusters(tmp_path / "absent.qcow2")
    with pytest.raises(ConfigError, match="cannot read"):
        has_compressed_clusters(tmp_path)  # a folder
