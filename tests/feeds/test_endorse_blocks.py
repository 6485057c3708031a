"""`endorse add` writes an image's block index beside it and names it in the signed list;
the manifest keeps it (SCHEMA §13)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import tomlkit

from feeds.blocks import BLOCK, index_file, index_size, parse_index
from feeds.endorse import ImageMeta, add_image, default_blocks_url, init_manifest, sign
from feeds.manifest import Manifest
from feeds.verify import verify_list
from keys.errors import ConfigError, PolicyError
from keys.fileio import CHUNK
from keys.trust import TrustStore
from keys.xmlsig import SignerPin
from tests.support.ca import Identity, TestCA, store
from tests.support.glance import qcow2_image

SELF_URL = "https://endorser.example.org/lists/base.atom"


@pytest.fixture(scope="module")
def trust(root_ca: TestCA) -> TrustStore:
    return store([root_ca])


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "base.toml"
    init_manifest(path, title="Base images", self_url=SELF_URL, author="Jane Endorser")
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def data(size: int, seed: bytes = b"disk") -> bytes:
    return hashlib.shake_256(seed).digest(size)


def meta(name: str, **changes: object) -> ImageMeta:
    return ImageMeta(url=f"https://images.example.org/{name}", **changes)  # type: ignore[arg-type]


def qemu_img() -> str:
    tool = shutil.which("qemu-img")
    if tool is None:
        if os.environ.get("VMIC_REQUIRE_INTEROP") == "1":
            pytest.fail("qemu-img is required under `make test` (Debian qemu-utils)")
        pytest.skip("qemu-img is not installed")
    return tool


def test_add_writes_the_index_beside_the_image_and_names_it_in_the_entry(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    content = data(2 * CHUNK + 3 * BLOCK + 123)  # several reads, not a multiple of 4096
    image = write(tmp_path / "disk.raw", content)
    chunks: list[int] = []
    entry = add_image(manifest, image, meta("disk.raw"), now=now, progress=chunks.append)
    assert chunks == [CHUNK, CHUNK, 3 * BLOCK + 123]  # one read of the image, as before
    written = tmp_path / "disk.raw.blocks"
    index = written.read_bytes()
    assert index == index_file(image).encode()
    assert parse_index(index, image_size=len(content)).count == -(-len(content) // BLOCK)
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert entry.sha512 == hashlib.sha512(content).hexdigest()
    assert entry.blocks is not None
    assert entry.blocks.url == "https://images.example.org/disk.raw.blocks"
    assert entry.blocks.size == len(index) == index_size(len(content))
    assert entry.blocks.sha512 == hashlib.sha512(index).hexdigest()
    loaded = Manifest.load(manifest)
    assert loaded.images == (entry,)
    assert loaded.blocks_file_of(entry.id) == "disk.raw.blocks"
    assert loaded.file_of(entry.id) == "disk.raw"
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_signed_list_carries_the_index_size_and_sha512(
    manifest: Path, tmp_path: Path, now: datetime, endorser: Identity, trust: TrustStore
) -> None:
    image = write(tmp_path / "disk.img", data(5 * BLOCK + 1))
    entry = add_image(manifest, image, meta("disk.img"), now=now)
    out = tmp_path / "list.atom"
    sign(
        manifest,
        out,
        now=now,
        valid_for=timedelta(days=28),
        cert=endorser.cert,
        key=endorser.key,
        trust=trust,
    )
    raw = out.read_bytes()
    index = (tmp_path / "disk.img.blocks").read_bytes()
    assert (
        f'<vmic:blocks href="https://images.example.org/disk.img.blocks" '
        f'length="{len(index)}" sha512="{hashlib.sha512(index).hexdigest()}"/>'
    ).encode() in raw
    pin = SignerPin(subject=endorser.subject, issuer=endorser.issuer)
    verified = verify_list(raw, trust=trust, pins=[pin], now=now)
    assert verified.image_list.entries[0].blocks == entry.blocks


def test_no_blocks_writes_no_index_and_names_none(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    image = write(tmp_path / "disk.raw", data(BLOCK))
    entry = add_image(manifest, image, meta("disk.raw", blocks=False), now=now)
    assert entry.blocks is None
    assert not (tmp_path / "disk.raw.blocks").exists()
    text = manifest.read_text()
    assert "blocks" not in text
    assert Manifest.load(manifest).blocks_file_of(entry.id) is None


@pytest.mark.parametrize(
    ("fmt", "choice", "indexed"),
    [
        ("raw", None, True),
        ("tar.gz", None, False),
        ("vmdk", None, False),
        ("iso", None, False),
        ("tar.gz", True, True),
        ("ova", True, True),
        ("raw", False, False),
    ],
)
def test_which_formats_are_indexed(
    manifest: Path, tmp_path: Path, now: datetime, fmt: str, choice: bool | None, indexed: bool
) -> None:
    image = write(tmp_path / "image", data(3000))
    entry = add_image(manifest, image, meta("image", format=fmt, blocks=choice), now=now)
    assert (entry.blocks is not None) is indexed
    assert (tmp_path / "image.blocks").exists() is indexed


def test_a_compressed_qcow2_gets_no_index_and_an_uncompressed_one_does(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    raw = write(tmp_path / "disk.raw", b"text that compresses well\n" * 100_000 + bytes(BLOCK))
    tool = qemu_img()
    for name, options in (("plain.qcow2", []), ("small.qcow2", ["-c"])):
        out = tmp_path / name
        subprocess.run(
            [tool, "convert", *options, "-O", "qcow2", str(raw), str(out)], check=True, timeout=60
        )
    plain = add_image(manifest, tmp_path / "plain.qcow2", meta("plain.qcow2"), now=now)
    small = add_image(manifest, tmp_path / "small.qcow2", meta("small.qcow2"), now=now)
    assert (plain.format, small.format) == ("qcow2", "qcow2")
    assert plain.blocks is not None
    assert (tmp_path / "plain.qcow2.blocks").read_bytes() == index_file(
        tmp_path / "plain.qcow2"
    ).encode()
    assert small.blocks is None
    assert not (tmp_path / "small.qcow2.blocks").exists()


def test_blocks_forces_an_index_of_a_compressed_qcow2(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    raw = write(tmp_path / "disk.raw", b"compressible\n" * 50_000)
    out = tmp_path / "small.qcow2"
    subprocess.run(
        [qemu_img(), "convert", "-c", "-O", "qcow2", str(raw), str(out)], check=True, timeout=60
    )
    entry = add_image(manifest, out, meta("small.qcow2", blocks=True), now=now)
    assert entry.blocks is not None
    assert (tmp_path / "small.qcow2.blocks").read_bytes() == index_file(out).encode()


def test_a_malformed_qcow2_is_refused_naming_the_file_unless_no_blocks(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    before = manifest.read_bytes()
    image = write(tmp_path / "broken.qcow2", b"QFI\xfb" + bytes(60))
    with pytest.raises(ConfigError, match=r"broken\.qcow2 is not a well-formed qcow2 image"):
        add_image(manifest, image, meta("broken.qcow2"), now=now)
    assert manifest.read_bytes() == before
    assert not (tmp_path / "broken.qcow2.blocks").exists()
    entry = add_image(manifest, image, meta("broken.qcow2", blocks=False), now=now)
    assert entry.format == "qcow2"
    assert entry.blocks is None


def test_a_synthetic_uncompressed_qcow2_is_indexed(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    image = write(tmp_path / "synthetic.qcow2", qcow2_image(data(70_000)))
    entry = add_image(manifest, image, meta("synthetic.qcow2"), now=now)
    assert entry.blocks is not None


def test_blocks_url_names_where_the_index_is_published(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    image = write(tmp_path / "disk.raw", data(100))
    url = "https://cdn.example.org/indexes/disk.idx"
    entry = add_image(manifest, image, meta("disk.raw", blocks_url=url), now=now)
    assert entry.blocks is not None
    assert entry.blocks.url == url
    assert Manifest.load(manifest).images[0].blocks == entry.blocks
    assert (tmp_path / "disk.raw.blocks").exists()  # the file keeps its name


def test_the_default_url_adds_blocks_to_the_path_not_the_query() -> None:
    assert default_blocks_url("https://e.org/a/disk.img") == "https://e.org/a/disk.img.blocks"
    assert (
        default_blocks_url("https://e.org/d.img?sig=a%20b")
        == "https://e.org/d.img.blocks?sig=a%20b"
    )
    assert default_blocks_url("http://e.org:8080/d#x") == "http://e.org:8080/d.blocks#x"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"blocks_url": "ftp://e.org/x.blocks"}, "--blocks-url"),
        ({"blocks_url": "https://u:p@e.org/x.blocks"}, "--blocks-url"),
        ({"blocks_url": "https://e.org/x.blocks", "blocks": False}, "--no-blocks"),
    ],
)
def test_bad_block_options_are_refused_and_nothing_is_written(
    manifest: Path, tmp_path: Path, now: datetime, changes: dict[str, object], message: str
) -> None:
    before = manifest.read_bytes()
    image = write(tmp_path / "disk.raw", data(100))
    with pytest.raises(ConfigError, match=message):
        add_image(manifest, image, meta("disk.raw", **changes), now=now)
    assert manifest.read_bytes() == before
    assert not (tmp_path / "disk.raw.blocks").exists()


def test_a_refused_duplicate_writes_no_index(manifest: Path, tmp_path: Path, now: datetime) -> None:
    add_image(manifest, write(tmp_path / "one.raw", b"same"), meta("one.raw"), now=now)
    before = manifest.read_bytes()
    with pytest.raises(ConfigError, match="already listed"):
        add_image(manifest, write(tmp_path / "copy.raw", b"same"), meta("copy.raw"), now=now)
    assert not (tmp_path / "copy.raw.blocks").exists()
    assert manifest.read_bytes() == before


def test_a_policy_refusal_writes_no_index(manifest: Path, tmp_path: Path, now: datetime) -> None:
    def refuse(_image: Path) -> str | None:
        raise PolicyError("breaks the policy")

    image = write(tmp_path / "disk.raw", data(100))
    with pytest.raises(PolicyError):
        add_image(manifest, image, meta("disk.raw"), now=now, policy=refuse)
    assert not (tmp_path / "disk.raw.blocks").exists()


def test_an_index_that_cannot_be_written_leaves_the_manifest_alone(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    before = manifest.read_bytes()
    image = write(tmp_path / "disk.raw", data(100))
    (tmp_path / "disk.raw.blocks").mkdir()  # in the way
    with pytest.raises(ConfigError, match=r"cannot write .*disk\.raw\.blocks") as caught:
        add_image(manifest, image, meta("disk.raw"), now=now)
    assert "--no-blocks" in (caught.value.hint or "")
    assert manifest.read_bytes() == before


def test_an_existing_index_is_replaced(manifest: Path, tmp_path: Path, now: datetime) -> None:
    image = write(tmp_path / "disk.raw", data(9000))
    write(tmp_path / "disk.raw.blocks", b"stale")
    add_image(manifest, image, meta("disk.raw"), now=now)
    assert (tmp_path / "disk.raw.blocks").read_bytes() == index_file(image).encode()


# -- the manifest ------------------------------------------------------------------------------


def test_the_manifest_keeps_the_index_and_comments_across_edits(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    manifest.write_text(manifest.read_text() + "# kept: a comment by hand\n")
    first = add_image(manifest, write(tmp_path / "a.raw", data(5000)), meta("a.raw"), now=now)
    second = add_image(
        manifest, write(tmp_path / "b.raw", data(10, b"b")), meta("b.raw", blocks=False), now=now
    )
    text = manifest.read_text()
    assert "# kept: a comment by hand" in text
    document = tomlkit.parse(text).unwrap()
    table = document["images"][0]
    assert first.blocks is not None
    assert table["blocks_file"] == "a.raw.blocks"
    assert table["blocks_url"] == first.blocks.url
    assert table["blocks_size"] == first.blocks.size == index_size(5000)
    assert table["blocks_sha512"] == first.blocks.sha512
    assert not any(key.startswith("blocks") for key in document["images"][1])
    loaded = Manifest.load(manifest)
    assert loaded.images == (first, second)
    loaded.revoke(second.id, reason="gone", when=now)
    loaded.save()
    again = Manifest.load(manifest)
    assert again.images == (first,)
    assert again.blocks_file_of(first.id) == "a.raw.blocks"
    assert "# kept: a comment by hand" in manifest.read_text()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("blocks_size", 41), "blocks_size: 41 is not the size of the block index"),
        (("blocks_size", -1), "blocks_size: must not be negative"),
        (("blocks_size", "40"), "blocks_size: expected int"),
        (("blocks_sha512", "AB" * 64), "blocks_sha512: .*expected 128 hex digits"),
        (("blocks_url", "file:///etc/passwd"), "blocks_url: .*absolute http"),
        (("blocks_file", "../x.blocks"), "blocks_file: '../x.blocks' must be a file name"),
        (("blocks_file", ".."), "must be a file name"),
        (("blocks_url", None), "blocks_url: missing .*needs all of"),
        (("blocks_file", None), "blocks_file: missing"),
        (("blocks_sha512", None), "blocks_sha512: missing"),
    ],
)
def test_a_hand_edited_index_that_is_wrong_is_refused_naming_the_key(
    manifest: Path, tmp_path: Path, now: datetime, edit: tuple[str, object], message: str
) -> None:
    add_image(manifest, write(tmp_path / "a.raw", data(5000)), meta("a.raw"), now=now)
    document = tomlkit.parse(manifest.read_text())
    key, value = edit
    table = document["images"][0]
    if value is None:
        del table[key]
    else:
        table[key] = value
    manifest.write_text(tomlkit.dumps(document))
    with pytest.raises(ConfigError, match=r"images\[1\] .*" + message):
        Manifest.load(manifest)


def test_an_image_of_a_manifest_without_index_keys_has_no_index(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    """Manifests written before block indexes existed read as they did."""
    entry = add_image(manifest, write(tmp_path / "a.raw", data(10)), meta("a.raw"), now=now)
    document = tomlkit.parse(manifest.read_text())
    for key in ("blocks_file", "blocks_url", "blocks_size", "blocks_sha512"):
        del document["images"][0][key]
    manifest.write_text(tomlkit.dumps(document))
    loaded = Manifest.load(manifest)
    assert loaded.images[0].blocks is None
    assert loaded.images[0].sha512 == entry.sha512
