"""The endorser's URL raced against a peer for an image's bytes (site_agent/sources.py).

A real `vmic sync` against two loopback servers: the endorser's (the test
simulator) and a peer's (a simulator serving a genuinely signed export that
offers the image at its own URL). Fault switches make one of them stall or
drip; the other must win, the loser's request must be cut short, and
nothing but the verified file may be left behind.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import pytest
import tomlkit

from site_agent import sources
from site_agent.peerstore import PeerStore
from site_agent.store import Store
from tests.federation.test_peers import HostilePeer, configure, site_dn
from tests.sim.server import Simulator
from tests.support.site import World, image_bytes, image_uuid

SIZE = 256 * 1024
ENDORSER_IMAGE = "/images/img-1.raw"
PEER_IMAGE = "/images/one"


@pytest.fixture
def peer(world: World) -> Iterator[HostilePeer]:
    """A peer whose export offers image 1 with the right bytes."""
    world.image_sizes[1] = SIZE
    with Simulator() as server:
        peer = HostilePeer(sim=server, identity=world.ca.issue(site_dn("peer")), world=world)
        genuine = world.publish(version=1, images=(1,))
        peer.publish_export(list_copy=genuine, list_version=1, image_data=image_bytes(1, SIZE))
        peer.add_to(world)
        assert world.subscribe(auto=True) == 0
        yield peer


def cached(world: World) -> bytes:
    return (world.home.images / hashlib.sha512(image_bytes(1, SIZE)).hexdigest()).read_bytes()


def leftovers(world: World) -> list[str]:
    return sorted(p.name for p in world.home.partial.iterdir())


def peer_bytes(world: World) -> int:
    with Store.open(world.home.database) as store:
        return sum(p.bytes_received for p in PeerStore(store).peers())


def test_a_stalled_peer_loses_the_race_to_the_endorser(world: World, peer: HostilePeer) -> None:
    configure(world.home, prefer_peers=True, race_after_seconds=0.2)
    peer.sim.fault(PEER_IMAGE, stall_after=1024)

    assert world.vmic("sync") == 0

    assert world.states() == {image_uuid(1): "available"}
    assert cached(world) == image_bytes(1, SIZE)
    assert [r.bytes_sent for r in world.sim.requests_for(ENDORSER_IMAGE)] == [SIZE]
    assert all(r.bytes_sent <= 1024 for r in peer.sim.requests_for(PEER_IMAGE))
    assert leftovers(world) == []  # the peer lane's partial file went with it


def test_a_fast_peer_finishes_before_the_endorser_is_asked(world: World, peer: HostilePeer) -> None:
    configure(world.home, prefer_peers=True, race_after_seconds=30)

    assert world.vmic("sync") == 0

    assert cached(world) == image_bytes(1, SIZE)
    assert world.sim.requests_for(ENDORSER_IMAGE) == []
    assert [r.bytes_sent for r in peer.sim.requests_for(PEER_IMAGE)] == [SIZE]
    assert leftovers(world) == []


def test_a_peer_that_will_soon_be_done_is_not_raced(world: World, peer: HostilePeer) -> None:
    configure(world.home, prefer_peers=True, race_after_seconds=0.1)
    peer.sim.fault(PEER_IMAGE, drip=512 * 1024)  # half a second: not worth a race

    assert world.vmic("sync") == 0

    assert cached(world) == image_bytes(1, SIZE)
    assert world.sim.requests_for(ENDORSER_IMAGE) == []


def test_a_slow_endorser_loses_to_a_peer_when_the_endorser_comes_first(
    world: World,
    peer: HostilePeer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sources, "_LONG_WAIT", 1.0)
    configure(world.home, prefer_peers=False, race_after_seconds=0.1)
    world.sim.fault(ENDORSER_IMAGE, drip=16 * 1024)  # 16 s for the whole image
    caplog.set_level(logging.INFO, logger="vmic.sync")

    assert world.vmic("sync") == 0

    assert cached(world) == image_bytes(1, SIZE)
    assert all(r.bytes_sent < SIZE for r in world.sim.requests_for(ENDORSER_IMAGE))
    assert [r.bytes_sent for r in peer.sim.requests_for(PEER_IMAGE)] == [SIZE]
    assert "the peer lane won the race" in caplog.text
    assert leftovers(world) == []


def test_without_racing_a_slow_peer_is_waited_for(world: World, peer: HostilePeer) -> None:
    configure(world.home, prefer_peers=True, race=False, race_after_seconds=0)
    peer.sim.fault(PEER_IMAGE, drip=512 * 1024)  # half a second

    assert world.vmic("sync") == 0

    assert cached(world) == image_bytes(1, SIZE)
    assert world.sim.requests_for(ENDORSER_IMAGE) == []


def test_wrong_bytes_from_the_winner_never_count(
    world: World, peer: HostilePeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast peer serves bytes whose SHA-512 is wrong: its lane fails, the slower
    endorser's lane goes on and its bytes are the ones installed."""
    monkeypatch.setattr(sources, "_LONG_WAIT", 0.05)
    configure(world.home, prefer_peers=False, race_after_seconds=0.1)
    genuine = world.publish(version=1, images=(1,))
    peer.publish_export(list_copy=genuine, list_version=1, image_data=image_bytes(66, SIZE))
    world.sim.fault(ENDORSER_IMAGE, drip=512 * 1024)

    assert world.vmic("sync") != 0  # the peer's wrong bytes are a problem to report

    assert world.states() == {image_uuid(1): "available"}
    assert cached(world) == image_bytes(1, SIZE)
    assert peer_bytes(world) == 0
    assert leftovers(world) == []


def test_a_clearly_slower_lane_stands_down_and_the_faster_one_wins(
    world: World,
    peer: HostilePeer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sources, "_GRACE", 0.3)
    monkeypatch.setattr(sources, "_STAND_DOWN_MARGIN", 0.3)
    monkeypatch.setattr(sources, "_LONG_WAIT", 1.0)
    configure(world.home, prefer_peers=True, race_after_seconds=0)
    peer.sim.fault(PEER_IMAGE, drip=8 * 1024)  # 32 s
    world.sim.fault(ENDORSER_IMAGE, drip=128 * 1024)  # 2 s
    caplog.set_level(logging.INFO, logger="vmic.sync")

    assert world.vmic("sync") == 0

    assert cached(world) == image_bytes(1, SIZE)
    assert "the peer lane stands down" in caplog.text
    assert "the endorser lane won the race" in caplog.text
    assert leftovers(world) == []


def test_a_lane_that_stood_down_takes_up_its_download_when_the_winner_fails(
    world: World,
    peer: HostilePeer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sources, "_GRACE", 0.3)
    monkeypatch.setattr(sources, "_STAND_DOWN_MARGIN", 0.3)
    monkeypatch.setattr(sources, "_LONG_WAIT", 1.0)
    configure(world.home, prefer_peers=True, race_after_seconds=0)
    peer.sim.fault(PEER_IMAGE, drip=16 * 1024, times=1)  # the first request: 16 s
    world.sim.publish(ENDORSER_IMAGE, image_bytes(66, SIZE))  # the endorser's server is broken
    world.sim.fault(ENDORSER_IMAGE, drip=256 * 1024)  # 1 s
    caplog.set_level(logging.INFO, logger="vmic.sync")

    assert world.vmic("sync") == 0

    assert "the peer lane stands down" in caplog.text
    assert cached(world) == image_bytes(1, SIZE)
    first, *again = peer.sim.requests_for(PEER_IMAGE)
    assert first.bytes_sent < SIZE
    assert again
    assert again[-1].range is not None
    resumed_at = int(again[-1].range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= first.bytes_sent  # resumed where it stood, not started over
    assert leftovers(world) == []


def test_both_lanes_failing_keeps_the_partial_files_for_the_next_run(
    world: World, peer: HostilePeer
) -> None:
    configure(world.home, prefer_peers=True, race_after_seconds=0)
    doc = tomlkit.parse(world.home.config.read_text())
    doc["network"]["retries"] = 0  # one attempt per source
    world.home.config.write_text(tomlkit.dumps(doc))
    peer.sim.fault(PEER_IMAGE, truncate_at=SIZE // 2, ignore_range=True)
    world.sim.fault(ENDORSER_IMAGE, truncate_at=SIZE // 4, ignore_range=True)
    before = world.snapshot()

    assert world.vmic("sync") != 0

    assert world.snapshot() == before
    main = hashlib.sha512(image_bytes(1, SIZE)).hexdigest()
    assert set(leftovers(world)) >= {main, main + sources.RACE_SUFFIX}

    peer.sim.clear_faults()
    world.sim.clear_faults()
    assert world.vmic("sync") == 0
    assert cached(world) == image_bytes(1, SIZE)
    ranged = [r for r in peer.sim.requests_for(PEER_IMAGE) if r.range]
    assert ranged
    assert ranged[-1].range == f"bytes={SIZE // 2}-"  # resumed, not started over
    assert leftovers(world) == []
