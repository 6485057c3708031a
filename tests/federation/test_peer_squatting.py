"""A peer's export can never occupy, shadow or block an endorser's list (THREATS 35).

A peer is trusted for which images it approved, never for content; its
export has a list id, and so does every endorser's list. Here a hostile
peer signs its export (genuinely, with its site certificate) under the id of
the endorser's list the site subscribes to, with a huge version. Whichever
comes first, `peer add` or `subscribe`, and across a restart of the site
(a separate `vmic sync` process), the genuine list is taken, keeps its own
rollback state, and the squatting export is refused with the reason.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.cli.common import ExitCode
from feeds.model import ImageEntry, ListId
from site_agent.peerstore import PeerStore
from tests.federation.test_peers import site_dn
from tests.sim.server import Simulator
from tests.support.ca import Identity, TestCA, write_identity
from tests.support.lists import LIST_ID, sign
from tests.support.site import CA_DN, ENDORSER_DN, World, make_world

HUGE = 2**40


@dataclass
class Squatter:
    sim: Simulator
    identity: Identity

    def publish(
        self, world: World, export_id: ListId, *, version: int = HUGE, carries: str | None = None
    ) -> None:
        """An export under ``export_id``; with ``carries``, one entry claiming to come from
        the list of that id (only a claim: nothing backs it)."""
        entries: tuple[ImageEntry, ...] = ()
        if carries is not None:
            entry = world.make_list(version=1, images=(1,)).entries[0]
            entries = (
                replace(
                    entry,
                    source_list=ListId(carries),
                    source_version=1,
                    source_url=self.sim.url("/lists/copy.atom"),
                ),
            )
        export = replace(
            world.make_list(version=version, images=()),
            id=export_id,
            title="Images shared by a squatter",
            self_url=self.sim.url("/export.atom"),
            endorser_dn=self.identity.subject,
            issuer_dn=self.identity.issuer,
            entries=entries,
        )
        self.sim.publish("/export.atom", sign(export, self.identity))

    def add_to(self, world: World, *, name: str = "squatter") -> int:
        return world.add_peer(
            self.sim.url("/export.atom"), name=name, site_dn=self.identity.subject
        )


@pytest.fixture
def squatter(world: World) -> Iterator[Squatter]:
    with Simulator() as server:
        identity = world.ca.issue("/DC=org/DC=vmic-test/OU=Sites/CN=site-squatter")
        yield Squatter(sim=server, identity=identity)


@pytest.fixture
def honest(world: World) -> Iterator[Squatter]:
    with Simulator() as server:
        identity = world.ca.issue("/DC=org/DC=vmic-test/OU=Sites/CN=site-honest")
        yield Squatter(sim=server, identity=identity)


def versions(world: World) -> tuple[int | None, int | None]:
    """(the endorser list's version in force, the squatting export's version kept)."""
    with world.store() as store:
        listed, exported = store.current_list(LIST_ID), store.current_export(LIST_ID)
    return (
        listed.version if listed else None,
        exported.version if exported else None,
    )


def test_a_peer_added_first_cannot_block_the_list_subscribed_later(
    world: World, squatter: Squatter, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1)
    squatter.publish(world, LIST_ID)
    assert squatter.add_to(world) == 0  # the site knows no list of that id yet
    assert versions(world) == (None, HUGE)  # kept apart from any endorser's list

    assert world.subscribe() == 0  # not a rollback: the export is not the list
    assert versions(world) == (1, HUGE)
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.PROBLEMS  # the squatter is refused from now on
    err = capsys.readouterr().err
    assert "peer squatter: export rejected" in err
    assert f"claims the id {LIST_ID}" in err
    with world.store() as store:
        assert PeerStore(store).offers() == []

    world.publish(version=2)
    assert world.vmic("sync") == ExitCode.PROBLEMS
    assert versions(world)[0] == 2

    # A restart: another process, the same home; the genuine list still moves on.
    world.publish(version=3)
    done = subprocess.run(
        [sys.executable, "-m", "federation", "sync", "--home", str(world.home.root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == ExitCode.PROBLEMS, done.stderr
    assert "claims the id" in done.stderr
    assert "Traceback" not in done.stderr
    assert versions(world)[0] == 3


def test_a_peer_whose_export_claims_a_subscribed_list_is_refused_at_peer_add(
    world: World, squatter: Squatter, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1)
    assert world.subscribe() == 0
    squatter.publish(world, LIST_ID)
    before = world.snapshot()
    capsys.readouterr()

    assert squatter.add_to(world) == ExitCode.WRONG_LIST

    assert "claims the id" in capsys.readouterr().err
    assert world.snapshot() == before
    with world.store() as store:
        assert PeerStore(store).peers() == []
        assert store.current_export(LIST_ID) is None


def test_a_list_unsubscribed_before_still_cannot_be_claimed(
    world: World, squatter: Squatter
) -> None:
    """A list the site accepted once keeps its rollback state after unsubscribing."""
    world.publish(version=4)
    assert world.subscribe(name="base") == 0
    assert world.vmic("unsubscribe", "base") == 0
    squatter.publish(world, LIST_ID)

    assert squatter.add_to(world) == ExitCode.WRONG_LIST
    assert versions(world) == (4, None)


def test_a_peer_cannot_claim_the_sites_own_export_id(
    world: World, squatter: Squatter, tmp_path_factory: pytest.TempPathFactory
) -> None:
    identity = world.ca.issue("/DC=org/DC=vmic-test/OU=Sites/CN=site-own")
    cert, key, _ = write_identity(tmp_path_factory.mktemp("own"), identity)
    assert (
        world.vmic("site", "identity", "--cert", cert, "--key", key, "--base-url", "http://x.test")
        == 0
    )
    assert world.vmic("export") == 0
    with world.store() as store:
        own = PeerStore(store).meta("export_list_id")
    assert own is not None
    squatter.publish(world, ListId(own), version=3)

    assert squatter.add_to(world) == ExitCode.WRONG_LIST


def test_a_peer_naming_an_honest_peers_export_as_a_list_cannot_get_it_refused(
    world: World, squatter: Squatter, honest: Squatter, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a peer says it carries is only its claim (THREATS 34: one source never stops
    another): it must not make the honest peer's export look like a squatter."""
    honest_id = ListId("7e7e7e7e-0000-4000-8000-000000000007")
    honest.publish(world, honest_id, version=1)
    assert honest.add_to(world, name="honest") == 0
    squatter.publish(world, ListId("5e5e5e5e-0000-4000-8000-000000000005"), carries=honest_id)
    assert squatter.add_to(world) == 0
    capsys.readouterr()

    world.vmic("sync")

    assert "honest" not in capsys.readouterr().err
    with world.store() as store:
        peers = {p.name: p for p in PeerStore(store).peers()}
        assert peers["honest"].last_error is None
        assert store.current_export(honest_id) is not None


@pytest.mark.fuzz
@settings(max_examples=min(settings().max_examples, 60))
@given(
    peer_first=st.booleans(),
    claims_the_list=st.booleans(),
    version=st.integers(min_value=1, max_value=2**53 - 1),
    entries=st.booleans(),
)
def test_whatever_a_peer_claims_and_whenever_the_list_keeps_its_own_versions(
    peer_first: bool,
    claims_the_list: bool,
    version: int,
    entries: bool,
    now: datetime,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Generated: either order, the list's id or another, any version, with or without an
    entry claiming the list: the endorser's next version is always taken."""
    ca = TestCA(CA_DN, now=now)
    with Simulator() as endorser_server, Simulator() as peer_server:
        world = make_world(
            tmp_path_factory.mktemp("site"), now, ca, ca.issue(ENDORSER_DN), endorser_server
        )
        squatter = Squatter(sim=peer_server, identity=ca.issue(site_dn("squatter")))
        world.publish(version=1)
        export_id = LIST_ID if claims_the_list else ListId("3c3c3c3c-0000-4000-8000-000000000003")
        squatter.publish(
            world, export_id, version=version, carries=str(LIST_ID) if entries else None
        )
        if peer_first:
            assert squatter.add_to(world) == 0
            assert world.subscribe() == 0
        else:
            assert world.subscribe() == 0
            expected = ExitCode.WRONG_LIST if claims_the_list else 0
            assert squatter.add_to(world) == expected
        world.publish(version=2)
        assert world.vmic("sync") in (0, ExitCode.PROBLEMS)

        assert versions(world)[0] == 2
        assert "Traceback" not in world.home.log.read_text()
