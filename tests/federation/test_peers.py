"""Sites that follow each other: lists and image bytes from peers, every byte still checked.

Real `vmic serve` servers on loopback (one per site), real `vmic sync` runs,
real signatures: sites have certificates from the test CA, endorsers sign
lists, sites sign exports. Hostile peers are loopback servers serving
genuinely signed exports whose copies or bytes are bad. THREATS 27-29.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest
import tomlkit

from federation.cli import main
from federation.cli.common import ExitCode
from federation.peers import SiteFederation
from feeds.model import list_id
from site_agent.home import SiteHome
from site_agent.peerstore import PeerStore
from site_agent.store import Store
from site_agent.sync import run_sync
from tests.sim.server import Simulator
from tests.support import hepix
from tests.support.ca import Identity, write_identity, write_trust_dir
from tests.support.lists import sign
from tests.support.serving import ServeThread
from tests.support.site import CA_DN, ENDORSER_DN, LIST_PATH, World, image_bytes, image_uuid


@dataclass
class Site:
    name: str
    home: SiteHome
    identity: Identity
    server: ServeThread

    def vmic(self, *args: object) -> int:
        argv = [str(a) for a in args]
        return main([*argv, "--home", str(self.home.root)])

    def states(self) -> dict[str, str]:
        with Store.open(self.home.database) as store:
            return {i.image_id: i.state for i in store.images()}

    def follow(self, other: Site) -> None:
        assert (
            self.vmic(
                "peer",
                "add",
                other.server.url + "/export.atom",
                "--name",
                other.name,
                "--site-dn",
                str(other.identity.subject),
                "--ca-dn",
                CA_DN,
            )
            == 0
        )


def site_dn(name: str) -> str:
    return f"/DC=org/DC=vmic-test/OU=Sites/CN=site-{name}"


def configure(home: SiteHome, **federation: object) -> None:
    doc = tomlkit.parse(home.config.read_text())
    table = doc["federation"]
    assert isinstance(table, dict)
    for key, value in federation.items():
        table[key] = value
    home.config.write_text(tomlkit.dumps(doc))


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as servers:
        yield servers


def make_site(
    world: World, stack: ExitStack, tmp_path: Path, name: str, *, first: bool = False
) -> Site:
    home = world.home if first else SiteHome(tmp_path / f"site-{name}")
    if not first:
        assert main(["site", "init", "--home", str(home.root), "--trust", str(world.trust)]) == 0
        configure(home, follow=[[ENDORSER_DN, CA_DN]], approve_if_peers=1)
    identity = world.ca.issue(site_dn(name))
    cert, key, _ = write_identity(tmp_path / f"id-{name}", identity)
    server = stack.enter_context(ServeThread(home))
    site = Site(name=name, home=home, identity=identity, server=server)
    assert (
        site.vmic("site", "identity", "--cert", cert, "--key", key, "--base-url", server.url) == 0
    )
    return site


def test_an_image_travels_down_a_chain_of_five_sites_after_the_endorser_goes_offline(
    world: World, stack: ExitStack, tmp_path: Path
) -> None:
    world.image_sizes[1] = 256 * 1024
    world.publish(version=1, images=(1,))
    a = make_site(world, stack, tmp_path, "a", first=True)
    assert world.subscribe(auto=True) == 0
    assert a.vmic("sync") == 0
    assert a.states() == {image_uuid(1): "available"}
    world.sim.remove(LIST_PATH)  # the endorser goes offline
    world.sim.remove("/images/img-1.raw")
    endorser_requests = len(world.sim.requests)

    chain = [a]
    for name in "bcde":
        site = make_site(world, stack, tmp_path, name)
        site.follow(chain[-1])
        assert site.vmic("sync") == 0, name
        assert site.states() == {image_uuid(1): "available"}, name
        chain.append(site)

    e = chain[-1]
    cached = e.home.images / hashlib.sha512(image_bytes(1, 256 * 1024)).hexdigest()
    assert cached.read_bytes() == image_bytes(1, 256 * 1024)
    assert len(world.sim.requests) == endorser_requests  # nobody asked the endorser again
    with Store.open(e.home.database) as store:
        (sub,) = store.subscriptions()
        assert sub.pins[0].subject.slash() == ENDORSER_DN
        peer = PeerStore(store).peer("d")
        assert peer is not None
        assert peer.bytes_received == 256 * 1024
    assert e.vmic("sync") == 0  # the endorser is still offline: the list comes from D's copy


@dataclass
class HostilePeer:
    """A peer site whose export is genuinely signed, but whose copies and bytes are served
    from a loopback server the test controls."""

    sim: Simulator
    identity: Identity
    world: World
    version: int = 1

    def publish_export(self, *, list_copy: bytes, list_version: int, image_data: bytes) -> None:
        base = self.sim.base_url
        endorser_list = self.world.make_list(version=list_version, images=(1,))
        entry = replace(
            endorser_list.entries[0],
            url=f"{base}/images/one",
            source_list=endorser_list.id,
            source_version=list_version,
            source_url=f"{base}/lists/copy.atom",
        )
        export = replace(
            self.world.make_list(version=self.version, images=()),
            id=list_id("99999999-8888-4777-8666-555555555555"),
            self_url=f"{base}/export.atom",
            endorser_dn=self.identity.subject,
            issuer_dn=self.identity.issuer,
            entries=(entry,),
        )
        self.sim.publish("/export.atom", sign(export, self.identity))
        self.sim.publish("/lists/copy.atom", list_copy)
        self.sim.publish("/images/one", image_data)
        self.version += 1

    def add_to(self, world: World) -> None:
        url = self.sim.url("/export.atom")
        assert world.add_peer(url, name="mallory", site_dn=self.identity.subject) == 0


@pytest.fixture
def hostile(world: World) -> Iterator[HostilePeer]:
    with Simulator() as server:
        yield HostilePeer(sim=server, identity=world.ca.issue(site_dn("mallory")), world=world)


def failures(world: World) -> int:
    with Store.open(world.home.database) as store:
        peer = PeerStore(store).peer("mallory")
        assert peer is not None
        return peer.failures


def test_wrong_bytes_from_a_peer_are_refused_and_the_endorser_serves_them(
    world: World, hostile: HostilePeer, capsys: pytest.CaptureFixture[str]
) -> None:
    genuine = world.publish(version=1, images=(1,))
    hostile.publish_export(list_copy=genuine, list_version=1, image_data=image_bytes(66))
    hostile.add_to(world)
    assert world.subscribe(auto=True) == 0
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.PROBLEMS

    assert "peer mallory served wrong bytes" in capsys.readouterr().err
    assert world.states() == {image_uuid(1): "available"}
    cached = world.home.images / hashlib.sha512(image_bytes(1)).hexdigest()
    assert cached.read_bytes() == image_bytes(1)
    assert hostile.sim.requests_for("/images/one")
    assert failures(world) == 1


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda raw: raw.replace(b"Test image 1", b"Test image X"), id="tampered"),
        pytest.param(lambda raw: raw.replace(b"\n  <entry>", b"\n    <entry>"), id="reserialised"),
    ],
)
def test_a_bad_copy_of_a_list_from_a_peer_is_rejected_when_the_endorser_is_down(
    world: World, hostile: HostilePeer, spoil: object
) -> None:
    world.publish(version=1, images=(1,))
    assert world.subscribe() == 0
    newer = world.publish(version=2, images=(1, 2))
    world.sim.remove(LIST_PATH)
    assert callable(spoil)
    hostile.publish_export(list_copy=spoil(newer), list_version=2, image_data=image_bytes(1))
    hostile.add_to(world)
    before = world.snapshot()

    assert world.vmic("sync") == ExitCode.PROBLEMS

    assert world.snapshot() == before
    assert image_uuid(2) not in world.states()
    assert failures(world) >= 1


def test_a_peer_replaying_an_older_version_changes_nothing(
    world: World, hostile: HostilePeer
) -> None:
    old = world.publish(version=1, images=(1,))
    assert world.subscribe() == 0
    world.publish(version=2, images=(1, 2))
    assert world.vmic("sync") == 0
    hostile.publish_export(list_copy=old, list_version=3, image_data=image_bytes(1))  # lies
    hostile.add_to(world)
    world.sim.remove(LIST_PATH)
    before = world.snapshot()

    assert world.vmic("sync") == ExitCode.PROBLEMS

    assert world.snapshot() == before
    with Store.open(world.home.database) as store:
        current = store.current_list(str(world.make_list(version=2).id))
    assert current is not None
    assert current.version == 2


def test_the_newest_valid_version_wins_when_the_endorser_withholds_it(
    world: World, hostile: HostilePeer
) -> None:
    """THREATS 28: the endorser's server keeps serving version 1; a peer has version 2."""
    v1 = world.publish(version=1, images=(1,))
    assert world.subscribe() == 0
    v2 = sign(world.make_list(version=2, images=(1, 2)), world.endorser)
    world.sim.publish(LIST_PATH, v1)
    hostile.publish_export(list_copy=v2, list_version=2, image_data=image_bytes(1))
    hostile.add_to(world)

    assert world.vmic("sync") == 0

    assert image_uuid(2) in world.states()
    with Store.open(world.home.database) as store:
        current = store.current_list(str(world.make_list(version=2).id))
        assert current is not None
        assert current.version == 2


def test_an_export_signed_by_another_site_is_refused(world: World, hostile: HostilePeer) -> None:
    genuine = world.publish(version=1, images=(1,))
    hostile.publish_export(list_copy=genuine, list_version=1, image_data=image_bytes(1))

    code = world.vmic(
        "peer",
        "add",
        hostile.sim.url("/export.atom"),
        "--site-dn",
        site_dn("someone-else"),
        "--ca-dn",
        CA_DN,
    )

    assert code == ExitCode.WRONG_ENDORSER
    with Store.open(world.home.database) as store:
        assert PeerStore(store).peers() == []


def test_peers_suggest_shows_lists_peers_carry(
    world: World, hostile: HostilePeer, capsys: pytest.CaptureFixture[str]
) -> None:
    genuine = world.publish(version=1, images=(1,))
    hostile.publish_export(list_copy=genuine, list_version=1, image_data=image_bytes(1))
    hostile.add_to(world)
    capsys.readouterr()

    assert world.vmic("peers", "suggest", "--json") == 0

    (suggestion,) = json.loads(capsys.readouterr().out)
    assert suggestion["endorser"] == ENDORSER_DN
    assert suggestion["issuer"] == CA_DN
    assert suggestion["peers"] == ["mallory"]
    assert suggestion["list_id"] == str(world.make_list(version=1).id)


def test_approve_if_peers_approves_what_a_peer_shares(world: World, hostile: HostilePeer) -> None:
    configure(world.home, approve_if_peers=1)
    world.publish(version=1, images=(2,))
    assert world.subscribe() == 0
    hostile.publish_export(
        list_copy=world.publish(version=1, images=(2,)), list_version=1, image_data=image_bytes(1)
    )
    hostile.add_to(world)
    world.publish(version=2, images=(1, 2))  # image 1 is new here, and the peer shares it

    assert world.vmic("sync") == 0

    assert world.states() == {image_uuid(1): "available", image_uuid(2): "new"}


def test_peer_remove_forgets_what_it_offered(world: World, hostile: HostilePeer) -> None:
    genuine = world.publish(version=1, images=(1,))
    hostile.publish_export(list_copy=genuine, list_version=1, image_data=image_bytes(1))
    hostile.add_to(world)

    assert world.vmic("peer", "remove", "mallory") == 0

    with Store.open(world.home.database) as store:
        assert PeerStore(store).peers() == []
        assert PeerStore(store).offers() == []
    assert world.vmic("peer", "remove", "mallory") == ExitCode.CONFIG


def test_an_expired_peer_export_offers_nothing(world: World, hostile: HostilePeer) -> None:
    genuine = world.publish(version=1, images=(1,))
    hostile.publish_export(list_copy=genuine, list_version=1, image_data=image_bytes(1))
    hostile.add_to(world)
    assert world.subscribe() == 0
    later = world.now + timedelta(days=29)
    write_trust_dir(world.trust, [world.ca], [world.ca.crl(next_update=later + timedelta(days=1))])
    report = run_sync(world.home, now=later, download=False, peering=SiteFederation())

    assert any(p.kind == "peer" and "expired" in p.message for p in report.problems)
    with Store.open(world.home.database) as store:
        assert PeerStore(store).offers() == []


def test_a_hepix_list_and_its_images_travel_to_a_peer(
    world: World, stack: ExitStack, tmp_path: Path
) -> None:
    path = "/store/vo/dteam/image.list"
    made = world.make_list(version=20260101000000, images=(1,))
    hepix_list = replace(
        made,
        self_url=world.sim.url(path),
        entries=tuple(replace(e, tags=(), produced=None) for e in made.entries),
    )
    signed = hepix.sign(hepix_list, world.endorser)
    world.sim.publish(path, signed)
    a = make_site(world, stack, tmp_path, "a", first=True)
    assert world.subscribe(path=path, auto=True) == 0
    assert a.vmic("sync") == 0
    world.sim.remove(path)  # the endorser goes offline
    world.sim.remove("/images/img-1.raw")

    b = make_site(world, stack, tmp_path, "b")
    b.follow(a)
    assert b.vmic("sync") == 0

    assert b.states() == {image_uuid(1): "available"}
    stored = list(b.home.lists.rglob("*.smime"))  # beside A's export, an Atom list
    assert [p.name for p in stored] == [
        f"20260101000000-{hashlib.sha256(signed).hexdigest()}.smime"
    ]
    assert stored[0].read_bytes() == signed  # the endorser's bytes, by way of site A
