"""Updates by blocks between sites: a peer serves the block index and the ranges.

Site A holds version 2 of an image (updated by blocks from the endorser);
site B holds version 1 and follows A. The endorser's server no longer has
the new image at all: B gets the index (`/images/sha512/<hex>.blocks`) and
the changed blocks (Range requests to `/images/sha512/<hex>`) from A's
`vmic serve`, checked against the endorser's signed list.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from urllib.request import urlopen

import pytest

from federation.cli.common import ExitCode
from feeds.blocks import BLOCK
from feeds.model import list_id
from site_agent.peerstore import PeerStore
from site_agent.store import Store
from tests.federation.test_peers import HostilePeer, make_site, site_dn
from tests.sim.server import Simulator
from tests.site_agent.test_delta import cached, index_of, publish, version_1, version_2
from tests.support.lists import LIST_ID, sign
from tests.support.site import LIST_PATH, World, image_uuid


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as servers:
        yield servers


def test_a_follower_updates_by_blocks_from_its_peer(
    world: World, stack: ExitStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(world, tmp_path, version=1, images={1: version_1()})
    a = make_site(world, stack, tmp_path, "a", first=True)
    assert world.subscribe(auto=True) == 0
    assert a.vmic("sync") == 0
    b = make_site(world, stack, tmp_path, "b")
    b.follow(a)
    assert b.vmic("sync") == 0
    assert b.states() == {image_uuid(1): "available"}

    publish(world, tmp_path, version=2, images={2: version_2()})
    assert a.vmic("sync") == 0
    sha = hashlib.sha512(version_2()).hexdigest()
    reply = a.server.get(f"/images/sha512/{sha}.blocks")
    assert reply.status == 200
    assert reply.body == index_of(version_2())
    metrics = a.server.get("/metrics").text
    reused = [line for line in metrics.splitlines() if line.startswith("vmic_delta_bytes_reused")]
    assert len(reused) == 1
    assert int(reused[0].split()[1]) > len(version_2()) // 2
    world.sim.remove("/images/img-2.raw")  # the endorser's server lost the new image
    world.sim.remove("/images/img-2.raw.blocks")
    capsys.readouterr()

    assert b.vmic("sync", "--json") == 0

    report = json.loads(capsys.readouterr().out)
    assert b.states()[image_uuid(2)] == "available"
    home_b = b.home
    assert (home_b.images / sha).read_bytes() == version_2()
    assert 0 < report["bytes_fetched"] < len(version_2()) // 4
    assert report["bytes_reused"] > len(version_2()) // 2
    assert cached(world, version_2()) == version_2()  # site A (the world's home) too


def test_an_index_is_served_only_for_an_available_image(
    world: World, stack: ExitStack, tmp_path: Path
) -> None:
    publish(world, tmp_path, version=1, images={1: version_1()})
    a = make_site(world, stack, tmp_path, "a", first=True)
    unknown = hashlib.sha512(b"not here").hexdigest()
    (a.home.blocks).mkdir(parents=True, exist_ok=True)
    (a.home.blocks / unknown).write_bytes(index_of(b"not here"))

    assert a.server.get(f"/images/sha512/{unknown}.blocks").status == 404
    assert a.server.get(f"/images/sha512/{unknown.upper()}.blocks").status == 404


def test_a_peer_serving_wrong_blocks_is_reported_and_the_endorser_serves_them(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(world, tmp_path, version=1, images={1: version_1()})
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    entries = publish(world, tmp_path, version=2, images={2: version_2()})
    wrong = bytearray(version_2())
    wrong[100 * BLOCK] ^= 0xFF  # one of the blocks that changed
    with Simulator() as server:
        mallory = HostilePeer(sim=server, identity=world.ca.issue(site_dn("mallory")), world=world)
        offered = replace(entries[2], url=server.url("/images/one"))
        with urlopen(world.sim.url(LIST_PATH), timeout=10) as answer:  # noqa: S310 - loopback
            genuine = answer.read()
        mallory.publish_export(list_copy=genuine, list_version=2, image_data=bytes(wrong))
        export = replace(
            world.make_list(version=mallory.version, images=()),
            id=list_id("99999999-8888-4777-8666-555555555555"),
            self_url=server.url("/export.atom"),
            endorser_dn=mallory.identity.subject,
            issuer_dn=mallory.identity.issuer,
            entries=(
                replace(
                    offered,
                    source_list=LIST_ID,
                    source_version=2,
                    source_url=server.url("/lists/copy.atom"),
                    blocks=None,
                ),
            ),
        )
        server.publish("/export.atom", sign(export, mallory.identity))
        server.publish("/images/one.blocks", index_of(version_2()))
        mallory.add_to(world)
        capsys.readouterr()

        assert world.vmic("sync") == ExitCode.PROBLEMS

        err = capsys.readouterr().err
        assert "peer mallory served wrong bytes for image" in err
        assert "(update by blocks)" in err
        assert cached(world, version_2()) == version_2()
        assert [r.range for r in server.requests_for("/images/one")]  # ranges were asked
        with Store.open(world.home.database) as store:
            peer = PeerStore(store).peer("mallory")
            assert peer is not None
            assert peer.failures >= 1
