"""`vmic serve` against real site homes: lists, the export, images, pages, health, metrics.

Each test runs the real server (:mod:`federation.server`) on 127.0.0.1 port
0 for a site home that `vmic site init`, `vmic subscribe` and `vmic sync`
filled from a loopback endorser, and talks to it over HTTP. Path tricks are
sent byte for byte (no client normalises them); a canary file outside the
site home must never be read. THREATS 26: a cached file that rots is never
served, is quarantined, and its image goes back to ``approved``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from federation.cli import main
from federation.listener import parse_bind
from federation.server import tls_context
from keys.dn import DistinguishedName
from keys.errors import ConfigError, SignatureError
from keys.xmlsig import SignerPin
from site_agent import config as site_config
from site_agent.config import SiteConfig
from site_agent.peerstore import Peer, PeerStore
from site_agent.records import AVAILABLE
from site_agent.serve_settings import ServeSettings
from site_agent.site import Site
from site_agent.store import Store
from tests.site_agent.netkit import self_signed
from tests.support.lists import LIST_ID
from tests.support.serving import (
    ServeThread,
    available_site,
    image_data,
    raw_status,
    site_world,
)
from tests.support.site import World, image_uuid

BIG = 3 * 1024 * 1024 + 17
"""Image 1's size: more than one read chunk (1 MiB)."""
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(2)>'
CANARY = b"CANARY: a file outside the site home that vmic serve must never read\n"


@pytest.fixture
def world(tmp_path: Path, now: datetime) -> Iterator[World]:
    with site_world(tmp_path, now) as made:
        made.image_sizes[1] = BIG
        available_site(made)
        yield made


@pytest.fixture
def server(world: World) -> Iterator[ServeThread]:
    with ServeThread(world.home) as running:
        yield running


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def image_path(n: int, world: World) -> str:
    return f"/images/sha512/{sha512(image_data(world, n))}"


def with_rehash_interval(world: World, interval: timedelta) -> SiteConfig:
    config = site_config.load(world.home.config)
    serve = dataclasses.replace(config.serve, rehash_interval=interval)
    return dataclasses.replace(config, serve=serve)


# -- lists ---------------------------------------------------------------------------------
def test_a_list_is_served_as_its_original_bytes_with_validators(
    world: World, server: ServeThread
) -> None:
    stored = next(world.home.lists.rglob("*.atom")).read_bytes()
    reply = server.get(f"/lists/{LIST_ID}.atom")
    assert reply.status == 200
    assert reply.body == stored
    assert reply.headers["Content-Type"] == "application/atom+xml"
    assert reply.headers["Etag"] == f'"{hashlib.sha256(stored).hexdigest()}"'
    assert reply.headers["Last-Modified"].endswith(" GMT")


def test_a_list_answers_304_to_its_etag_or_an_unchanged_date(server: ServeThread) -> None:
    first = server.get(f"/lists/{LIST_ID}.atom")
    etag, modified = first.headers["Etag"], first.headers["Last-Modified"]
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"other", {etag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": modified},
    ):
        reply = server.get(f"/lists/{LIST_ID}.atom", headers=headers)
        assert (reply.status, reply.body) == (304, b""), headers
        assert reply.headers["Etag"] == etag
    for headers in (
        {"If-None-Match": '"something-else"'},
        {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
        {"If-None-Match": '"something-else"', "If-Modified-Since": modified},
    ):
        assert server.get(f"/lists/{LIST_ID}.atom", headers=headers).body == first.body


def test_head_of_a_list_has_the_headers_and_no_body(server: ServeThread) -> None:
    full = server.get(f"/lists/{LIST_ID}.atom")
    head = server.get(f"/lists/{LIST_ID}.atom", method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert head.headers["Content-Length"] == str(len(full.body))
    assert head.headers["Etag"] == full.headers["Etag"]


def test_the_newest_accepted_version_is_served(world: World, server: ServeThread) -> None:
    signed = world.publish(version=2, images=(1, 2, 3))
    assert world.vmic("sync") == 0
    reply = server.get(f"/lists/{LIST_ID}.atom")
    assert reply.body == signed
    assert reply.headers["Etag"] == f'"{hashlib.sha256(signed).hexdigest()}"'


@pytest.mark.parametrize(
    "name",
    [
        "00000000-0000-4000-8000-0000000000ff.atom",  # well formed, not held
        f"{LIST_ID.upper()}.atom",  # not canonical
        LIST_ID,  # no .atom
        f"{LIST_ID}.xml",
        "..%2F..%2Fvmic.db",
        "%2e%2e.atom",
        "6f1c1e0e-8a7b-4c55-9d3e-0a1b2c3d4e5f%00.atom",
    ],
)
def test_lists_not_held_or_malformed_are_404(server: ServeThread, name: str) -> None:
    reply = server.get(f"/lists/{name}")
    assert reply.status == 404
    assert b"SQLite" not in reply.body


# -- the export ----------------------------------------------------------------------------
def test_the_export_is_served_once_written(world: World, server: ServeThread) -> None:
    assert server.get("/export.atom").status == 404
    export = b"<?xml version='1.0'?><feed>signed export stand-in</feed>"
    (world.home.exports / "export.atom").write_bytes(export)
    reply = server.get("/export.atom")
    assert (reply.status, reply.body) == (200, export)
    assert reply.headers["Content-Type"] == "application/atom+xml"
    assert reply.headers["Etag"] == f'"{hashlib.sha256(export).hexdigest()}"'
    again = server.get("/export.atom", headers={"If-None-Match": reply.headers["Etag"]})
    assert again.status == 304
    since = server.get(
        "/export.atom", headers={"If-Modified-Since": reply.headers["Last-Modified"]}
    )
    assert since.status == 304


# -- images: bytes, HEAD, ranges -------------------------------------------------------------
def test_an_image_is_served_whole_with_its_digest_as_etag(
    world: World, server: ServeThread
) -> None:
    data = image_data(world, 1)
    reply = server.get(image_path(1, world))
    assert reply.status == 200
    assert reply.body == data
    assert reply.headers["Content-Length"] == str(BIG)
    assert reply.headers["Etag"] == f'"{sha512(data)}"'
    assert reply.headers["Accept-Ranges"] == "bytes"
    assert reply.headers["Content-Type"] == "application/octet-stream"


def test_head_of_an_image_has_its_length_and_no_body(world: World, server: ServeThread) -> None:
    reply = server.get(image_path(1, world), method="HEAD")
    assert (reply.status, reply.body) == (200, b"")
    assert reply.headers["Content-Length"] == str(BIG)
    assert reply.headers["Etag"] == f'"{sha512(image_data(world, 1))}"'


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),  # the first bytes
        ("bytes=1048570-1048600", 1048570, 1048600),  # across a read chunk
        ("bytes=2000000-2000000", 2000000, 2000000),  # one byte in the middle
        ("bytes=-500", BIG - 500, BIG - 1),  # a suffix
        ("bytes=3000000-", 3000000, BIG - 1),  # open-ended
        ("bytes=10-99999999999", 10, BIG - 1),  # past the end: clamped
        (f"bytes=-{BIG + 5}", 0, BIG - 1),  # a suffix longer than the file
    ],
)
def test_a_single_range_gets_206_with_the_right_bytes(
    world: World, server: ServeThread, header: str, start: int, end: int
) -> None:
    data = image_data(world, 1)
    reply = server.get(image_path(1, world), headers={"Range": header})
    assert reply.status == 206
    assert reply.body == data[start : end + 1]
    assert reply.headers["Content-Range"] == f"bytes {start}-{end}/{BIG}"
    assert reply.headers["Content-Length"] == str(end - start + 1)


@pytest.mark.parametrize("header", [f"bytes={BIG}-", f"bytes={BIG + 10}-{BIG + 20}", "bytes=-0"])
def test_an_unsatisfiable_range_gets_416(world: World, server: ServeThread, header: str) -> None:
    reply = server.get(image_path(1, world), headers={"Range": header})
    assert reply.status == 416
    assert reply.headers["Content-Range"] == f"bytes */{BIG}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=9-3", "bytes=abc"])
def test_several_or_malformed_ranges_get_the_whole_file(
    world: World, server: ServeThread, header: str
) -> None:
    reply = server.get(image_path(2, world), headers={"Range": header})
    assert (reply.status, reply.body) == (200, image_data(world, 2))


def test_if_range_keeps_the_range_only_for_the_same_etag(world: World, server: ServeThread) -> None:
    data = image_data(world, 1)
    etag = f'"{sha512(data)}"'
    same = server.get(image_path(1, world), headers={"Range": "bytes=5-9", "If-Range": etag})
    assert (same.status, same.body) == (206, data[5:10])
    other = server.get(image_path(1, world), headers={"Range": "bytes=5-9", "If-Range": '"stale"'})
    assert (other.status, other.body) == (200, data)
    assert server.get(image_path(1, world), headers={"If-None-Match": etag}).status == 304


# -- images: what is never served ----------------------------------------------------------
def _canary(tmp_path: Path) -> Path:
    canary = tmp_path / "outside" / "canary.img"
    canary.parent.mkdir()
    canary.write_bytes(CANARY)
    return canary


@pytest.mark.parametrize(
    "target",
    [
        "/images/sha512/../../../vmic.db",
        "/images/sha512/..%2F..%2F..%2Fvmic.db",
        "/images/sha512/%2e%2e/%2e%2e/%2e%2e/config.toml",
        "/images/sha512/%2e%2e%2f%2e%2e%2f%2e%2e%2fconfig.toml",
        "/images/sha512//etc/passwd",
        "/images/sha512/%2Fetc%2Fpasswd",
        "/images/sha512/{canary}",
        "/images/sha512/{canary_escaped}",
        "/images/sha512/{upper}",
        "/images/sha512/{hex}%00",
        "/images/sha512/{hex}%00.txt",
        "/images/sha512/{hex}/..",
        "/images/sha512/{hex}/../../../../vmic.db",
        "/images/sha512/",
        "/images/",
        "/cache/images/sha512/{hex}",
        "/lists/",
        "/lists/{list_id}/",
        "/image/..%2F..%2Fvmic.db",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/config.toml",
        "/vmic.db",
        "//etc/passwd",
    ],
)
def test_path_tricks_never_reach_the_filesystem(
    world: World, server: ServeThread, tmp_path: Path, target: str
) -> None:
    canary = _canary(tmp_path)
    hex_ = sha512(image_data(world, 2))
    path = target.format(
        hex=hex_,
        upper=hex_.upper(),
        canary=canary,
        canary_escaped=str(canary).replace("/", "%2F"),
        list_id=LIST_ID,
    )
    answer = server.raw(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert raw_status(answer) in (400, 404), answer[:200]
    assert b"SQLite" not in answer
    assert b"[trust]" not in answer
    assert CANARY not in answer
    assert b"root:" not in answer


def test_a_nul_byte_in_the_request_line_is_refused(world: World, server: ServeThread) -> None:
    hex_ = sha512(image_data(world, 2)).encode()
    answer = server.raw(b"GET /images/sha512/" + hex_ + b"\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw_status(answer) == 400
    assert image_data(world, 2) not in answer


def test_a_symlink_in_the_cache_is_never_followed(world: World, tmp_path: Path) -> None:
    canary = _canary(tmp_path)
    digest = sha512(CANARY)
    link = world.home.images / digest
    link.symlink_to(canary)
    with world.store() as store:  # an image whose digest is the canary's, marked available
        template = store.image(image_uuid(3))
        assert template is not None
        store.put_image(
            dataclasses.replace(
                template,
                image_id="00000000-0000-4000-8000-0000000000aa",
                sha512=digest,
                size=len(CANARY),
                state=AVAILABLE,
            )
        )
    with ServeThread(world.home) as server:
        reply = server.get(f"/images/sha512/{digest}")
        assert reply.status in (404, 503)
        assert CANARY not in reply.body
        assert server.get(f"/images/sha512/{digest}").status == 404
    assert canary.read_bytes() == CANARY  # the target is untouched, the link moved away
    assert not link.is_symlink()
    assert any(p.name.startswith(digest) for p in world.home.quarantine.iterdir())
    assert world.states()["00000000-0000-4000-8000-0000000000aa"] == "approved"


def test_a_withdrawn_or_unreferenced_file_is_not_served(world: World, server: ServeThread) -> None:
    data = image_data(world, 2)
    assert server.get(image_path(2, world)).status == 200
    assert world.vmic("withdraw", image_uuid(2)) == 0
    # Even with its bytes put back into the cache, a withdrawn image is not served.
    (world.home.images / sha512(data)).write_bytes(data)
    assert server.get(image_path(2, world)).status == 404
    stray = b"bytes that no image of this site names"
    (world.home.images / sha512(stray)).write_bytes(stray)
    assert server.get(f"/images/sha512/{sha512(stray)}").status == 404


def _flip_a_byte(path: Path, offset: int = 1000) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def test_a_rotted_file_is_never_served_and_is_quarantined(world: World) -> None:
    """THREATS 26: bit rot after download; the site never hands out the damaged bytes."""
    data = image_data(world, 1)
    cached = world.home.images / sha512(data)
    _flip_a_byte(cached)
    with ServeThread(world.home) as server:
        reply = server.get(image_path(1, world))
        assert reply.status == 503
        assert data[:100] not in reply.body
        assert not cached.exists()
        quarantined = list(world.home.quarantine.iterdir())
        assert [p.name.split(".")[0] for p in quarantined] == [sha512(data)]
        assert world.states()[image_uuid(1)] == "approved"
        assert server.get(image_path(1, world)).status == 404
        assert server.get(image_path(1, world), method="HEAD").status == 404
        assert "vmic_image_check_failures_total 1" in server.get("/metrics").text
        # The next sync, run while the server serves, downloads the image again.
        assert world.vmic("sync") == 0
        assert world.states()[image_uuid(1)] == "available"
        again = server.get(image_path(1, world))
        assert (again.status, again.body) == (200, data)


def test_a_file_changed_after_its_check_is_checked_again(world: World, server: ServeThread) -> None:
    assert server.get(image_path(2, world)).status == 200
    _flip_a_byte(world.home.images / sha512(image_data(world, 2)), offset=10)
    assert server.get(image_path(2, world)).status == 503
    assert world.states()[image_uuid(2)] == "approved"


def sitting_on_disk(world: World) -> None:
    """Forget the hashes `vmic sync` made while downloading: the files have been sitting
    on disk, and are hashed before they are served (test_rehash_vouch.py has the rest)."""
    shutil.rmtree(world.home.checked)


def test_a_file_is_hashed_once_until_the_interval_passes(world: World) -> None:
    sitting_on_disk(world)
    with ServeThread(world.home, config=with_rehash_interval(world, timedelta(days=1))) as s:
        for _ in range(3):
            assert s.get(image_path(2, world)).status == 200
        assert s.state.guard.checks == 1
    with ServeThread(world.home, config=with_rehash_interval(world, timedelta(0))) as s:
        for _ in range(3):
            assert s.get(image_path(2, world)).status == 200
        assert s.state.guard.checks == 3


def test_concurrent_requests_wait_for_one_check(world: World, server: ServeThread) -> None:
    sitting_on_disk(world)
    data = image_data(world, 1)
    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(lambda _: server.get(image_path(1, world)), range(6)))
    assert all((r.status, r.body) == (200, data) for r in replies)
    assert server.state.guard.checks == 1


def test_the_warm_up_takes_the_downloads_hashes_without_reading_the_files(world: World) -> None:
    with ServeThread(world.home, warm_up=True) as server:
        deadline = time.monotonic() + 10
        while server.state.guard.vouches < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (server.state.guard.vouches, server.state.guard.checks) == (3, 0)


def test_the_warm_up_checks_available_files_at_start(world: World) -> None:
    sitting_on_disk(world)
    with ServeThread(world.home, warm_up=True) as server:
        deadline = time.monotonic() + 10
        while server.state.guard.checks < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.state.guard.checks == 3
        assert server.get(image_path(1, world)).status == 200
        assert server.state.guard.checks == 3


# -- the catalogue -------------------------------------------------------------------------
@pytest.fixture
def hostile(tmp_path: Path, now: datetime) -> Iterator[World]:
    with site_world(tmp_path, now) as made:
        available_site(made, titles={1: XSS_SCRIPT, 2: XSS_ATTR})
        yield made


def test_the_catalogue_shows_html_from_lists_as_text(hostile: World) -> None:
    with ServeThread(hostile.home) as server:
        reply = server.get("/")
        page_one = server.get(f"/image/{image_uuid(1)}")
        page_two = server.get(f"/image/{image_uuid(2)}")
    assert reply.status == 200
    page = reply.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert XSS_SCRIPT not in page
    assert "<img" not in page
    assert "onerror=alert(2)>" not in page
    assert page.count("<script") == 1  # the page's own, with its nonce
    nonce = re.search(r'<script nonce="([^"]+)">', page)
    assert nonce is not None
    policy = reply.headers["Content-Security-Policy"]
    assert f"script-src 'nonce-{nonce.group(1)}'" in policy
    assert "default-src 'none'" in policy
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert not re.search(r"<(img|iframe|object|embed)\b|<[^>]*\ssrc=|url\(", page)
    # The one link is the page's own feed-autodiscovery link, which loads nothing.
    (link,) = re.findall(r"<link\b[^>]*>", page)
    assert link.startswith('<link rel="alternate" type="application/atom+xml" href="/export.atom"')
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</h1>" in page_one.text
    assert "<script" not in page_one.text
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;</h1>" in page_two.text
    assert "<img" not in page_two.text


def test_the_catalogue_lists_every_image_with_its_columns(
    world: World, server: ServeThread
) -> None:
    page = server.get("/").text
    for n in (1, 2, 3):
        assert f'href="/image/{image_uuid(n)}">Test image {n}</a>' in page
    for text in (
        "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser",
        "base v1",
        "AlmaLinux 9.4",
        "x86_64",
        "KVM",
        "qcow2",
        "3.0 MiB",
        "4.0 KiB",
        "state-available",
        "Approved locally",
        "Shareable",
        'id="filter"',
    ):
        assert text in page, text


def test_the_catalogue_filters_and_sorts_without_script(world: World, server: ServeThread) -> None:
    only_big = server.get("/?q=3.0+mib").text  # every word must appear in the row
    assert f"/image/{image_uuid(1)}" in only_big
    assert f"/image/{image_uuid(2)}" not in only_big
    assert '<span id="shown">1</span> of 3' in only_big
    none = server.get("/?q=no-such-image").text
    assert '<span id="shown">0</span>' in none
    assert 'id="empty" class="muted">' in none  # shown, not hidden
    by_size = server.get("/?sort=size&order=desc").text
    order = [by_size.index(f"/image/{image_uuid(n)}") for n in (1, 2, 3)]
    assert order[0] < min(order[1:])  # the 3 MiB image first
    assert server.get("/?sort=nonsense&order=sideways").status == 200


def test_an_image_page_shows_what_the_hepix_catalogue_showed(
    world: World, server: ServeThread
) -> None:
    data = image_data(world, 2)
    page = server.get(f"/image/{image_uuid(2)}").text
    for text in (
        "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser",
        world.sim.url("/images/img-2.raw"),
        "<dt>File name</dt><dd>img-2.raw</dd>",
        "<dt>Status</dt><dd>available</dd>",
        image_uuid(2),
        sha512(data),
        "<dt>Hypervisor</dt><dd>KVM</dd>",
        "<dt>OS version</dt><dd>9.4</dd>",
        "<dt>Architecture</dt><dd>x86_64</dd>",
        "Produced on",
        "Endorsed on",
        f'href="/images/sha512/{sha512(data)}"',
        f'href="/lists/{LIST_ID}.atom"',
    ):
        assert text in page, text


@pytest.mark.parametrize(
    "target",
    [
        "00000000-0000-4000-8000-0000000000ff",
        "not-a-uuid",
        image_uuid(2).replace("-", ""),
        f"urn:uuid:{image_uuid(2)}",
    ],
)
def test_an_unknown_image_page_is_404(server: ServeThread, target: str) -> None:
    assert server.get(f"/image/{target}").status == 404


# -- health and metrics --------------------------------------------------------------------
_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? -?[0-9.e+]+$'
)


def _metrics(server: ServeThread) -> dict[str, float]:
    reply = server.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in reply.text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* \S", line), line
            continue
        assert _SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def test_metrics_are_prometheus_text(world: World, now: datetime) -> None:
    with Store.open(world.home.database) as store:
        sub = store.subscription("base")
        assert sub is not None
        site = Site(world.home, site_config.load(world.home.config), store, now=now)
        site.reject_list(sub, SignatureError("a tampered list"), sha256=None)
        pins = (
            SignerPin(subject=DistinguishedName.parse_slash("/CN=p"), issuer=sub.pins[0].issuer),
        )
        peers = PeerStore(store)
        peers.add_peer(
            Peer(
                name='peer "one"',
                url="https://peer.example.org/export.atom",
                list_id="00000000-0000-4000-8000-0000000000bb",
                self_url="https://peer.example.org/export.atom",
                pins=pins,
                created=now,
            )
        )
        for _ in range(2):
            peers.record_transfer('peer "one"', ok=False, size=0, seconds=0, at=now, error="bad")
    with ServeThread(world.home) as server:
        before = _metrics(server)
        assert server.get(image_path(1, world)).status == 200
        after = _metrics(server)
    labels = f'{{subscription="base",list_id="{LIST_ID}"}}'
    assert before["vmic_lists"] == 1
    assert before[f"vmic_list_version{labels}"] == 1
    assert before[f"vmic_list_expires_timestamp_seconds{labels}"] > now.timestamp()
    assert before[f"vmic_list_last_success_timestamp_seconds{labels}"] >= now.timestamp() - 60
    assert before['vmic_images{state="available"}'] == 3
    assert before['vmic_images{state="withdrawn"}'] == 0
    assert before["vmic_last_sync_timestamp_seconds"] >= now.timestamp() - 60
    assert before["vmic_verification_failures_total"] == 1
    assert before['vmic_peer_failures_total{peer="peer \\"one\\""}'] == 2
    assert after["vmic_bytes_served_total"] - before["vmic_bytes_served_total"] == BIG
    # the sync hashed the file while downloading it: served without a second full read
    assert after["vmic_image_checks_total"] == 0
    assert after["vmic_image_vouched_total"] == 1


def test_healthz_reports_the_database_and_the_last_sync(world: World, server: ServeThread) -> None:
    reply = server.get("/healthz")
    assert reply.status == 200
    health = json.loads(reply.body)
    assert health["ok"] is True
    assert health["database"] is True
    with world.store() as store:
        sub = store.subscription("base")
    assert sub is not None
    assert sub.last_attempt is not None
    assert health["last_sync"] == sub.last_attempt.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_healthz_says_so_when_the_database_cannot_be_read(world: World) -> None:
    moved = world.home.root / "moved.db"
    with ServeThread(world.home) as server:  # the store is opened at the first request
        world.home.database.rename(moved)
        reply = server.get("/healthz")
        assert reply.status == 503
        health = json.loads(reply.body)
        assert (health["ok"], health["database"]) == (False, False)
        assert server.get("/").status == 503
        moved.rename(world.home.database)
        assert server.get("/healthz").status == 200


# -- the server as a whole -----------------------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head_are_served(world: World, server: ServeThread, method: str) -> None:
    for path in ("/", f"/lists/{LIST_ID}.atom", image_path(2, world), "/metrics"):
        assert server.get(path, method=method).status == 405


def test_an_overlong_request_line_or_header_is_refused(server: ServeThread) -> None:
    long_line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert raw_status(server.raw(long_line)) in (400, 414)
    long_header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    assert raw_status(server.raw(long_header)) in (400, 431)


def test_every_response_carries_the_security_headers(world: World, server: ServeThread) -> None:
    for path in ("/", "/healthz", "/metrics", f"/lists/{LIST_ID}.atom", "/nowhere"):
        reply = server.get(path)
        assert reply.headers["X-Content-Type-Options"] == "nosniff", path
        assert "default-src 'none'" in reply.headers["Content-Security-Policy"], path
        assert reply.headers["Server"] == "vmic"


def test_connections_above_the_limit_are_refused(world: World) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with ServeThread(world.home, max_connections=2) as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(2)]
        try:
            for sock in held:  # both are served and stay open (keep-alive)
                sock.sendall(request)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            third = server.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert raw_status(third) == 503
            assert server.running is not None
            assert server.running.gate.refused == 1
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 5
        while server.running.gate.open and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.get("/healthz").status == 200


def test_tls_is_used_when_configured(world: World, tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    cert, key = self_signed(tmp_path / "tls")
    settings = ServeSettings(tls_cert=cert, tls_key=key)
    context = tls_context(settings)
    assert context is not None
    with ServeThread(world.home, ssl_context=context) as server:
        assert server.url.startswith("https://127.0.0.1:")
        client = ssl.create_default_context(cafile=str(cert))
        client.check_hostname = False
        reply = server.get(f"/lists/{LIST_ID}.atom", context=client)
        assert reply.status == 200
    with pytest.raises(ConfigError, match="TLS certificate"):
        tls_context(ServeSettings(tls_cert=cert, tls_key=tmp_path / "missing.pem"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),  # noqa: S104 - a parser test, nothing listens
        ("[::1]:8443", ("::1", 8443)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_bind_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "host:", "host:http", "::1:80", "h:70000"])
def test_bad_bind_addresses_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_bind(text)


def test_vmic_serve_refuses_a_bad_bind_address(world: World) -> None:
    assert world.vmic("serve", "--bind", "nonsense") == 3


def test_vmic_serve_reports_a_port_in_use(world: World) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert world.vmic("serve", "--bind", f"127.0.0.1:{port}") == 3


def test_vmic_serve_runs_until_sigterm(world: World) -> None:
    with subprocess.Popen(  # a fixed argument list, no shell
        [
            sys.executable,
            *("-m", "federation", "serve"),
            *("--home", str(world.home.root), "--bind", "127.0.0.1:0"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            assert match, line
            port = int(match.group(1))
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, err
    assert "stopped" in out
    assert err == ""


def test_main_help_lists_serve(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    assert "/images/sha512/HEX" in capsys.readouterr().out
