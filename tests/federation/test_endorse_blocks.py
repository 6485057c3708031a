"""Block indexes at the endorser's command line and at `vmic serve --manifest`."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from feeds.blocks import index_file
from feeds.endorse import ImageMeta, add_image, init_manifest, sign
from feeds.manifest import Manifest
from keys.certs import load_private_key
from tests.federation.test_cli import POLICY_OVERRIDE, Endorser, make_endorser
from tests.federation.test_cli import run as run_cli
from tests.federation.test_serve_endorser import Endorser as Published
from tests.federation.test_serve_endorser import get, serving
from tests.feeds.test_policy import clean_tree
from tests.support.ca import Identity, TestCA, write_identity, write_trust_dir
from tests.support.images import write_tar

OVERRIDE = ("--policy-override", POLICY_OVERRIDE)  # test bytes, not bootable images


def run(*args: object) -> int:
    return run_cli(*args, *(OVERRIDE if args[:2] == ("endorse", "add") else ()))


@pytest.fixture
def endorser(tmp_path: Path) -> Endorser:
    return make_endorser(tmp_path)


def test_endorse_add_says_it_wrote_the_index(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fixture's images: one.img (raw) and two.qcow2 (uncompressed) both have one."""
    manifest = Manifest.load(endorser.manifest)
    assert all(image.blocks is not None for image in manifest.images)
    capsys.readouterr()
    image = endorser.root / "three.img"
    image.write_bytes(b"three" * 2000)
    url = "https://example.org/three.img"
    assert run("endorse", "add", endorser.manifest, image, "--url", url) == 0
    out = capsys.readouterr().out
    index = endorser.root / "three.img.blocks"
    assert f"wrote block index {index} (" in out
    assert f"publish it at {url}.blocks" in out
    assert index.read_bytes() == index_file(image).encode()


def test_endorse_add_no_blocks_and_blocks(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = endorser.root / "plain.img"
    plain.write_bytes(b"plain" * 2000)
    assert (
        run(
            "endorse",
            "add",
            endorser.manifest,
            plain,
            "--url",
            "https://example.org/plain.img",
            "--no-blocks",
            "--json",
        )
        == 0
    )
    added = json.loads(capsys.readouterr().out)
    assert added["blocks"] is None
    assert not (endorser.root / "plain.img.blocks").exists()
    archive = write_tar(clean_tree(), endorser.root / "empty.tar.gz", "gz")
    args = ("endorse", "add", endorser.manifest, archive, "--url", "https://example.org/e.tgz")
    options = ("--blocks", "--blocks-url", "https://cdn.example.org/e.idx", "--json")
    assert run_cli(*args, *options) == 0  # a clean image: no --policy-override
    added = json.loads(capsys.readouterr().out)
    index = (endorser.root / "empty.tar.gz.blocks").read_bytes()
    assert added["format"] == "tar.gz"
    assert added["blocks"] == {
        "url": "https://cdn.example.org/e.idx",
        "size": len(index),
        "sha512": hashlib.sha512(index).hexdigest(),
    }


def test_blocks_and_no_blocks_together_are_a_usage_error(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    image = endorser.root / "x.img"
    image.write_bytes(b"x")
    args = ("endorse", "add", endorser.manifest, image, "--url", "https://e.org/x")
    assert run(*args, "--blocks", "--no-blocks") == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_endorse_show_says_which_images_have_an_index(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    image = endorser.root / "bare.img"
    image.write_bytes(b"bare" * 100)
    url = "https://example.org/bare.img"
    assert run("endorse", "add", endorser.manifest, image, "--url", url, "--no-blocks") == 0
    capsys.readouterr()
    assert run("endorse", "show", endorser.manifest) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert len(lines) == 3
    assert [line.endswith("[block index]") for line in lines] == [True, True, False]
    assert run("endorse", "show", endorser.manifest, "--json") == 0
    shown = json.loads(capsys.readouterr().out)["images"]
    manifest = Manifest.load(endorser.manifest)
    for item, entry in zip(shown, manifest.images, strict=True):
        if entry.blocks is None:
            assert item["blocks"] is None
        else:
            assert item["blocks"] == {
                "url": entry.blocks.url,
                "size": entry.blocks.size,
                "sha512": entry.blocks.sha512,
            }


# -- `vmic serve --manifest` ----------------------------------------------------------------


@pytest.fixture
def published(tmp_path: Path, now: datetime, jane: Identity) -> Published:
    images = tmp_path / "www"
    images.mkdir()
    manifest = tmp_path / "list.toml"
    init_manifest(
        manifest, title="Served list", self_url="https://e.example.org/l.atom", author="Jane"
    )
    image = images / "img-1.raw"
    image.write_bytes(hashlib.shake_256(b"img").digest(3 * 4096 + 100))
    add_image(manifest, image, ImageMeta(url="https://e.example.org/img-1.raw"), now=now)
    other = images / "img-2.raw"
    other.write_bytes(b"two" * 3000)
    add_image(
        manifest,
        other,
        ImageMeta(
            url="https://e.example.org/img-2.raw", blocks_url="https://e.example.org/idx/two"
        ),
        now=now,
    )
    _cert, key, _chain = write_identity(tmp_path / "jane", jane)
    published = Published(manifest, images / "list.atom", images, jane, key, now)
    sign(
        manifest,
        published.signed,
        now=now,
        valid_for=timedelta(days=28),
        cert=jane.cert,
        key=load_private_key(key),
    )
    return published


@pytest.fixture(scope="module")
def jane(root_ca: TestCA) -> Identity:
    """The conftest's ``endorser`` is shadowed here by the CLI endorser of test_cli."""
    return root_ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Blocks Endorser")


def test_serve_gives_the_index_at_the_path_its_url_names_with_ranges(
    published: Published,
) -> None:
    index = (published.images / "img-1.raw.blocks").read_bytes()
    other = (published.images / "img-2.raw.blocks").read_bytes()
    image_sha = hashlib.sha512((published.images / "img-1.raw").read_bytes()).hexdigest()
    with serving(published) as port:
        status, headers, body = get(port, "/img-1.raw.blocks")
        assert (status, body) == (200, index)
        assert headers["etag"] == f'"{hashlib.sha512(index).hexdigest()}"'
        assert headers["accept-ranges"] == "bytes"
        status, headers, part = get(port, "/img-1.raw.blocks", {"Range": "bytes=24-39"})
        assert (status, part) == (206, index[24:40])
        assert headers["content-range"] == f"bytes 24-39/{len(index)}"
        assert get(port, "/idx/two")[2] == other
        assert get(port, "/idx/two", {"Range": "bytes=-16"})[0] == 206
        # content-addressed beside the image, as peers serve it
        status, _headers, body = get(port, f"/images/sha512/{image_sha}.blocks")
        assert (status, body) == (200, index)
        # never as an image under its own digest
        assert get(port, f"/images/sha512/{hashlib.sha512(index).hexdigest()}")[0] == 404
        assert get(port, "/img-2.raw.blocks")[0] == 404  # its URL is /idx/two


def test_an_index_changed_after_signing_is_never_served(published: Published) -> None:
    path = published.images / "img-1.raw.blocks"
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with serving(published) as port:
        for _ in range(2):
            status, _headers, body = get(port, "/img-1.raw.blocks")
            assert status == 503
            assert original not in body
        path.unlink()
        assert get(port, "/img-1.raw.blocks")[0] == 404


def test_vmic_verify_json_names_each_index(
    published: Published, root_ca: TestCA, capsys: pytest.CaptureFixture[str]
) -> None:
    trust = write_trust_dir(published.images.parent / "trust", [root_ca])
    capsys.readouterr()
    assert (
        run(
            "verify",
            published.signed,
            "--trust",
            trust,
            "--endorser-dn",
            str(published.identity.subject),
            "--ca-dn",
            str(published.identity.issuer),
            "--json",
        )
        == 0
    )
    entries = json.loads(capsys.readouterr().out)["entries"]
    manifest = Manifest.load(published.manifest)
    assert [e["blocks"] for e in entries] == [
        {"url": m.blocks.url, "size": m.blocks.size, "sha512": m.blocks.sha512}
        for m in manifest.images
        if m.blocks is not None
    ]
