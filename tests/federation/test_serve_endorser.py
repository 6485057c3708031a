"""`vmic serve --manifest`: an endorser serving its signed list and its images."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from federation.cli import main
from federation.listener import RunningServer, start
from federation.serve_endorser import create_endorser_app
from feeds.endorse import ImageMeta, add_image, init_manifest, sign
from feeds.manifest import Manifest
from keys.certs import load_private_key
from tests.support.ca import Identity, TestCA, write_identity


@dataclass
class Endorser:
    manifest: Path
    signed: Path
    images: Path
    identity: Identity
    key_path: Path
    now: datetime

    def sign(self) -> None:
        sign(
            self.manifest,
            self.signed,
            now=self.now,
            valid_for=timedelta(days=28),
            cert=self.identity.cert,
            key=load_private_key(self.key_path),
        )


@pytest.fixture
def published(tmp_path: Path, now: datetime, root_ca: TestCA, endorser: Identity) -> Endorser:
    images = tmp_path / "www"
    images.mkdir()
    manifest = tmp_path / "list.toml"
    init_manifest(
        manifest, title="Served list", self_url="https://e.example.org/l.atom", author="Jane"
    )
    for n in (1, 2):
        image = images / f"img-{n}.raw"
        image.write_bytes(f"image {n} ".encode() * 1000)
        add_image(manifest, image, ImageMeta(url=f"https://e.example.org/img-{n}.raw"), now=now)
    _cert, key, _chain = write_identity(tmp_path / "jane", endorser)
    e = Endorser(manifest, tmp_path / "www" / "list.atom", images, endorser, key, now)
    e.sign()
    return e


@dataclass
class _Handle:
    port: int = 0
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None


@contextmanager
def serving(e: Endorser) -> Iterator[int]:
    """The endorser app on 127.0.0.1 (a free port), in a thread with its own event loop."""
    ready = threading.Event()
    handle = _Handle()

    async def run() -> None:
        app = create_endorser_app(
            e.manifest, e.signed, e.images, rehash_interval=timedelta(hours=24)
        )
        running: RunningServer = await start(app, host="127.0.0.1", port=0)
        handle.port, handle.loop, handle.stop = (
            running.address[1],
            asyncio.get_running_loop(),
            asyncio.Event(),
        )
        ready.set()
        try:
            await handle.stop.wait()
        finally:
            await running.close()

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    assert ready.wait(20)
    try:
        yield handle.port
    finally:
        assert handle.loop is not None
        assert handle.stop is not None
        handle.loop.call_soon_threadsafe(handle.stop.set)
        thread.join(20)


def get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of a GET sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        named = {k.lower(): v for k, v in response.getheaders()}
        return response.status, named, response.read()
    finally:
        conn.close()


def sha(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def test_the_signed_list_is_served_byte_for_byte_with_a_validator(published: Endorser) -> None:
    list_id = Manifest.load(published.manifest).info.id
    with serving(published) as port:
        status, headers, body = get(port, f"/lists/{list_id}.atom")
        assert status == 200
        assert body == published.signed.read_bytes()
        again = get(port, f"/lists/{list_id}.atom", {"If-None-Match": headers["etag"]})
        assert again[0] == 304
        published.sign()  # re-signed in place: served at once, with a new validator
        status, newer, body = get(port, f"/lists/{list_id}.atom")
        assert body == published.signed.read_bytes()
        assert newer["etag"] != headers["etag"]
        assert get(port, "/lists/00000000-0000-4000-8000-000000000000.atom")[0] == 404
        assert get(port, "/lists/..%2f..%2fetc%2fpasswd")[0] == 404


def test_images_are_served_by_their_endorsed_sha512_with_ranges(published: Endorser) -> None:
    data = (published.images / "img-1.raw").read_bytes()
    with serving(published) as port:
        status, _headers, body = get(port, f"/images/sha512/{sha(data)}")
        assert (status, body) == (200, data)
        status, headers, part = get(port, f"/images/sha512/{sha(data)}", {"Range": "bytes=10-19"})
        assert (status, part) == (206, data[10:20])
        assert headers["content-range"] == f"bytes 10-19/{len(data)}"
        assert get(port, f"/images/sha512/{'0' * 128}")[0] == 404
        assert get(port, "/images/sha512/../../list.toml")[0] == 404


def test_an_image_file_changed_after_its_endorsement_is_never_served(
    published: Endorser,
) -> None:
    path = published.images / "img-2.raw"
    original = path.read_bytes()
    path.write_bytes(original.replace(b"image 2", b"image X", 1))
    with serving(published) as port:
        for _ in range(2):
            status, _headers, body = get(port, f"/images/sha512/{sha(original)}")
            assert status == 503
            assert original not in body


def test_a_symlink_to_a_file_outside_is_not_followed(published: Endorser, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes((published.images / "img-1.raw").read_bytes())  # even matching bytes
    data = (published.images / "img-1.raw").read_bytes()
    (published.images / "img-1.raw").unlink()
    (published.images / "img-1.raw").symlink_to(secret)
    with serving(published) as port:
        status, _headers, _body = get(port, f"/images/sha512/{sha(data)}")
    assert status in (404, 503)


def test_serve_needs_both_manifest_and_list(published: Endorser) -> None:
    assert main(["serve", "--manifest", str(published.manifest)]) == 3


def test_the_list_and_images_are_served_at_the_paths_their_urls_name(
    published: Endorser,
) -> None:
    """A site subscribes to the self URL and downloads the image URLs the list names."""
    data = (published.images / "img-1.raw").read_bytes()
    with serving(published) as port:
        status, headers, body = get(port, "/l.atom")
        assert (status, body) == (200, published.signed.read_bytes())
        assert get(port, "/l.atom", {"If-None-Match": headers["etag"]})[0] == 304
        status, _headers, body = get(port, "/img-1.raw")
        assert (status, body) == (200, data)
        status, _headers, part = get(port, "/img-1.raw", {"Range": "bytes=5-9"})
        assert (status, part) == (206, data[5:10])
        for path in ("/img-3.raw", "/list.toml", "/img-1.raw/", "/lists/l.atom", "/../l.atom"):
            assert get(port, path)[0] == 404, path
        (published.images / "img-1.raw").write_bytes(data.replace(b"image 1", b"image X", 1))
        assert get(port, "/img-1.raw")[0] == 503  # the same re-hash guards this path


def test_the_paths_follow_the_manifest_when_it_changes(published: Endorser) -> None:
    manifest = Manifest.load(published.manifest)
    with serving(published) as port:
        assert get(port, "/img-2.raw")[0] == 200
        revoked = next(i for i in manifest.images if i.url.endswith("img-2.raw"))
        main(["endorse", "revoke", str(published.manifest), revoked.id, "--reason", "gone"])
        assert get(port, "/img-2.raw")[0] == 404
