"""Updates by blocks (site_agent/delta.py): held blocks copied, the rest fetched by Range.

A real `vmic sync` against the loopback simulator serving genuinely signed
lists whose entries name a block index (SCHEMA §13). Version 2 of an
image differs from version 1 in a few blocks; the site holds version 1.
Every fallback (no Range support, a bad index, a wrong block, a wrong
whole digest) ends in a full download or, when the bytes themselves are
wrong, in nothing trusted changing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from array import array
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.blocks import BLOCK, DIGEST, HEADER, ZERO_DIGEST, Indexer, digest, parse_index
from feeds.model import BlocksRef, ImageEntry, sha512_hex
from site_agent import delta
from site_agent.site import DELTA_FETCHED, DELTA_REUSED
from site_agent.store import Store
from tests.sim.server import Simulator
from tests.support.ca import TestCA
from tests.support.lists import entry
from tests.support.site import CA_DN, ENDORSER_DN, World, image_uuid, make_world

BLOCKS = 256
CHANGED = (3, 4, 5, 100, 200)


def version_1() -> bytes:
    data = bytearray()
    for n in range(BLOCKS):
        data += hashlib.sha512(f"block {n}".encode()).digest() * (BLOCK // 64)
    data[50 * BLOCK : 60 * BLOCK] = bytes(10 * BLOCK)  # some zeros, as file systems have
    return bytes(data)


def version_2() -> bytes:
    data = bytearray(version_1())
    for n in CHANGED:
        data[n * BLOCK : (n + 1) * BLOCK] = hashlib.sha512(f"new {n}".encode()).digest() * 64
    return bytes(data) + b"appended, shorter than a block"


def index_of(data: bytes) -> bytes:
    indexer = Indexer()
    indexer.update(data)
    return indexer.finish().encode()


def publish(
    world: World,
    tmp_path: Path,
    *,
    version: int,
    images: dict[int, bytes],
    index: dict[int, bytes] | None = None,
) -> dict[int, ImageEntry]:
    """A signed list whose images each name their block index, served beside them."""
    entries = {}
    for n, data in images.items():
        path = f"/images/img-{n}.raw"
        raw_index = (index or {}).get(n) or index_of(data)
        world.sim.publish(path, data)
        world.sim.publish(path + ".blocks", raw_index)
        signed_index = index_of(data)
        entries[n] = entry(
            n,
            now=world.now,
            data=data,
            url=world.sim.url(path),
            format="raw",
            blocks=BlocksRef(
                url=world.sim.url(path + ".blocks"),
                size=len(signed_index),
                sha512=sha512_hex(hashlib.sha512(raw_index).hexdigest()),
            ),
        )
    lst = replace(world.make_list(version=version, images=()), entries=tuple(entries.values()))
    world.publish(lst)
    return entries


def cached(world: World, data: bytes) -> bytes | None:
    path = world.home.images / hashlib.sha512(data).hexdigest()
    return path.read_bytes() if path.is_file() else None


def image_bodies(world: World, n: int) -> list[tuple[str | None, int]]:
    return [(r.range, r.bytes_sent) for r in world.sim.requests_for(f"/images/img-{n}.raw")]


def sync_json(world: World, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    world.vmic("sync", "--json")
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, dict)
    return out


@pytest.fixture
def holding_v1(world: World, tmp_path: Path) -> World:
    """A site that holds version 1 (image 1), downloaded whole."""
    publish(world, tmp_path, version=1, images={1: version_1()})
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    assert cached(world, version_1()) == version_1()
    return world


def test_an_update_fetches_only_the_blocks_that_changed(
    holding_v1: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = holding_v1
    publish(world, tmp_path, version=2, images={2: version_2()})

    report = sync_json(world, capsys)

    assert report["ok"] is True
    assert world.states() == {image_uuid(1): "withdrawn", image_uuid(2): "available"}
    assert cached(world, version_2()) == version_2()
    bodies = image_bodies(world, 2)
    assert bodies
    assert all(r is not None for r, _ in bodies)  # ranges only, never the whole image
    sent = sum(n for _, n in bodies)
    changed = len(CHANGED) * BLOCK + len(version_2()) - len(version_1())  # and the short tail
    assert changed <= sent <= 3 * changed
    assert report["bytes_fetched"] == sent + len(index_of(version_2()))
    assert report["bytes_reused"] == len(version_2()) - sent
    with Store.open(world.home.database) as store:
        assert int(store.meta(DELTA_REUSED) or 0) == report["bytes_reused"]
        assert int(store.meta(DELTA_FETCHED) or 0) == report["bytes_fetched"]
    kept = world.home.blocks / hashlib.sha512(version_2()).hexdigest()
    assert kept.read_bytes() == index_of(version_2())  # for later updates and peers
    assert list(world.home.partial.iterdir()) == []


def test_a_server_that_ignores_range_gets_a_full_download(
    holding_v1: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = holding_v1
    publish(world, tmp_path, version=2, images={2: version_2()})
    world.sim.fault("/images/img-2.raw", ignore_range=True)
    caplog.set_level(logging.INFO, logger="vmic.sync")

    assert world.vmic("sync") == 0

    assert cached(world, version_2()) == version_2()
    assert "does not answer Range requests" in caplog.text
    assert (None, len(version_2())) in image_bodies(world, 2)
    assert list(world.home.partial.iterdir()) == []


def test_an_index_that_is_not_the_signed_one_is_never_used(
    holding_v1: World, tmp_path: Path
) -> None:
    world = holding_v1
    publish(world, tmp_path, version=2, images={2: version_2()})
    good = index_of(version_2())
    world.sim.publish("/images/img-2.raw.blocks", good[:-16] + bytes(16))  # swapped on the way

    assert world.vmic("sync") == 0

    assert cached(world, version_2()) == version_2()
    assert all(r is None for r, _ in image_bodies(world, 2))  # the whole image instead
    assert not (world.home.blocks / hashlib.sha512(version_2()).hexdigest()).exists()


def test_a_signed_index_that_lies_about_a_block_ends_in_a_full_download(
    holding_v1: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The endorser signed an index that says block 7 of version 2 is block 8 of version 1:
    the copied block is wrong, the whole digest says so, the image is downloaded whole."""
    world = holding_v1
    good = bytearray(index_of(version_2()))
    v1 = parse_index(index_of(version_1()), image_size=len(version_1()))
    good[24 + 7 * 16 : 24 + 8 * 16] = v1.at(8)
    publish(world, tmp_path, version=2, images={2: version_2()}, index={2: bytes(good)})
    caplog.set_level(logging.INFO, logger="vmic.sync")

    assert world.vmic("sync") == 0

    assert "not updated by blocks" in caplog.text
    assert cached(world, version_2()) == version_2()
    assert (None, len(version_2())) in image_bodies(world, 2)


def test_wrong_bytes_in_a_range_change_nothing_the_site_trusts(
    holding_v1: World, tmp_path: Path
) -> None:
    world = holding_v1
    publish(world, tmp_path, version=2, images={2: version_2()})
    spoilt = bytearray(version_2())
    spoilt[4 * BLOCK + 10] ^= 1
    world.sim.publish("/images/img-2.raw", bytes(spoilt))  # the server's copy rotted
    world.vmic("sync")  # the list is accepted; the image cannot be had
    before = world.snapshot()

    assert world.vmic("sync") != 0

    assert world.snapshot() == before
    assert world.states()[image_uuid(2)] == "approved"
    assert cached(world, version_2()) is None
    assert not any(p.name.endswith(".delta") for p in world.home.partial.iterdir())


def test_a_held_block_that_changed_on_disk_is_fetched_instead(
    holding_v1: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = holding_v1
    held = world.home.images / hashlib.sha512(version_1()).hexdigest()
    with held.open("r+b") as handle:  # rot in the old version, not yet noticed
        handle.seek(150 * BLOCK)
        handle.write(b"rot")
    publish(world, tmp_path, version=2, images={2: version_2()})

    report = sync_json(world, capsys)

    assert cached(world, version_2()) == version_2()
    ranges = [r for r, _ in image_bodies(world, 2)]
    assert f"bytes={150 * BLOCK}-{151 * BLOCK - 1}" in ranges
    assert isinstance(report["bytes_reused"], int)
    assert report["bytes_reused"] > 0


def test_a_first_download_without_held_blocks_is_a_plain_download(
    world: World, tmp_path: Path
) -> None:
    publish(world, tmp_path, version=1, images={1: version_1()})
    assert world.subscribe(auto=True) == 0

    assert world.vmic("sync") == 0

    assert cached(world, version_1()) == version_1()
    assert image_bodies(world, 1) == [(None, len(version_1()))]


def test_leftovers_of_an_interrupted_assembly_are_removed(
    holding_v1: World, tmp_path: Path
) -> None:
    world = holding_v1
    stray = world.home.partial / (hashlib.sha512(b"gone").hexdigest() + ".delta")
    stray.write_bytes(b"half an image")
    (world.home.partial / (hashlib.sha512(b"gone").hexdigest() + ".blocks")).write_bytes(b"x")

    assert world.vmic("sync") == 0

    assert list(world.home.partial.iterdir()) == []


def test_sync_verbose_says_what_an_update_by_blocks_saved(
    holding_v1: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = holding_v1
    publish(world, tmp_path, version=2, images={2: version_2()})
    capsys.readouterr()

    assert world.vmic("sync", "-v") == 0

    out = capsys.readouterr().out
    assert "updates by blocks: 1004.0 KiB reused, 24.1 KiB fetched" in out


_LIES = st.dictionaries(
    st.integers(min_value=0, max_value=BLOCKS),
    st.one_of(
        st.binary(min_size=DIGEST, max_size=DIGEST),
        st.integers(min_value=0, max_value=BLOCKS - 1).map(
            lambda n: digest(version_1()[n * BLOCK : (n + 1) * BLOCK])
        ),
        st.just(ZERO_DIGEST),
    ),
    min_size=1,
    max_size=6,
)


@pytest.mark.fuzz
@settings(max_examples=min(settings().max_examples, 10))
@given(lies=_LIES)
def test_whatever_a_signed_index_says_only_the_endorsed_bytes_are_installed(
    lies: dict[int, bytes], now: datetime, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Generated: an endorser signs an index with some digests wrong (random, another
    block's, zeros): the site ends up with exactly version 2, by blocks or whole."""
    ca = TestCA(CA_DN, now=now)
    folder = tmp_path_factory.mktemp("delta")
    with Simulator() as server:
        world = make_world(folder, now, ca, ca.issue(ENDORSER_DN), server)
        publish(world, folder, version=1, images={1: version_1()})
        assert world.subscribe(auto=True) == 0
        assert world.vmic("sync") == 0
        lying = bytearray(index_of(version_2()))
        for block, value in lies.items():
            lying[HEADER.size + block * DIGEST : HEADER.size + (block + 1) * DIGEST] = value
        publish(world, folder, version=2, images={2: version_2()}, index={2: bytes(lying)})

        assert world.vmic("sync") == 0

        assert world.states()[image_uuid(2)] == "available"
        assert cached(world, version_2()) == version_2()
        assert list(world.home.partial.iterdir()) == []


def test_an_image_with_too_many_blocks_is_downloaded_whole_without_its_index(
    holding_v1: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delta, "MAX_BLOCKS", BLOCKS - 1)
    publish(holding_v1, tmp_path, version=2, images={2: version_2()})

    assert holding_v1.vmic("sync") == 0

    assert cached(holding_v1, version_2()) == version_2()
    assert holding_v1.sim.requests_for("/images/img-2.raw.blocks") == []
    assert image_bodies(holding_v1, 2) == [(None, len(version_2()))]


def test_a_dripping_server_cannot_hold_an_update_for_long(
    holding_v1: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = holding_v1
    caplog.set_level(logging.INFO, logger="vmic.sync")
    doc = tomlkit.parse(world.home.config.read_text())
    network = doc["network"]
    assert isinstance(network, dict)
    network.update(retries=0, rate_grace_seconds=1, min_rate_bytes_per_second=1_000_000)
    world.home.config.write_text(tomlkit.dumps(doc))
    publish(world, tmp_path, version=2, images={2: version_2()})
    world.sim.fault("/images/img-2.raw", drip=8 * 1024)
    world.vmic("sync", "--no-download")  # the list is accepted
    before = world.snapshot()
    started = time.monotonic()

    assert world.vmic("sync") != 0

    assert time.monotonic() - started < 15
    assert "not updated by blocks" in caplog.text
    assert "below the minimum of 1000000 bytes/s" in caplog.text
    assert world.snapshot() == before
    assert world.states()[image_uuid(2)] == "approved"
    assert not any(p.name.endswith(".delta") for p in world.home.partial.iterdir())


def test_the_hashing_thread_ends_when_the_partial_file_is_gone(tmp_path: Path) -> None:
    index = parse_index(index_of(version_1()), image_size=len(version_1()))
    plan = delta._Plan(index=index, sources=[], held=array("q", [-1]) * index.count)

    with pytest.raises(OSError, match="No such file"):
        delta._assemble(plan, tmp_path / "gone.delta")

    assert not [t for t in threading.enumerate() if t.name == "vmic-delta-hash"]
