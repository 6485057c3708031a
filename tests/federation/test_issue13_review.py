"""Second read of peers-only serving and split-view detection (issue 13): defects found.

Each test reproduces one defect on loopback with real signatures and checks both
the outcome and that nothing the site trusted changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace

import pytest

from federation.cli.common import ExitCode
from feeds.model import HeldList, list_id
from feeds.verify import verify_list
from site_agent.alarms import AlarmStore
from tests.federation.test_equivocation import lying_export
from tests.federation.test_peers import site_dn
from tests.sim.server import Simulator
from tests.support import hepix
from tests.support.ca import store
from tests.support.lists import sign
from tests.support.site import World, image_uuid


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as server:
        yield server


# -- split views: one list in two formats is not two lists ---------------------------------
def test_the_hepix_copy_of_the_same_signing_is_no_equivocation(
    world: World, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vmic endorse sign --hepix-out` publishes each version as Atom and as HEPiX (for
    vmcatcher sites): the same id, version, self link and endorser, other signed bytes.
    A peer (honest, on the HEPiX URL, or hostile, having fetched the public HEPiX copy)
    that claims the HEPiX copy's digest must not freeze the list of a site on the Atom URL.
    """
    lst = world.make_list(version=1, images=(1,))
    world.publish(lst)
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == ExitCode.OK
    hepix_copy = hepix.sign(lst, world.endorser)  # the endorser's own HEPiX output
    digest = verify_list(
        hepix_copy, trust=store([world.ca]), pins=None, now=world.now
    ).content_sha256
    lying_export(world, sim, claimed=digest, copy=hepix_copy)
    before = world.snapshot()
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.OK  # the peer said the truth: nothing to report

    assert "ALARM" not in capsys.readouterr().err
    with world.store() as db:
        assert AlarmStore(db).alarms(everything=True) == []
        assert [e for e in db.events() if e.type == "list.equivocation"] == []
    assert world.snapshot() == before
    world.publish(version=2, images=(1, 2))  # the list is not frozen: approved as ever
    world.vmic("sync")
    assert world.states()[image_uuid(2)] == "available"


# -- split views: a lying peer costs one fetch per run, not one per list -------------------
LISTS = (
    list_id("11111111-1111-4111-8111-111111111111"),
    list_id("22222222-2222-4222-8222-222222222222"),
    list_id("33333333-3333-4333-8333-333333333333"),
)


def test_a_peer_that_cannot_back_a_claim_is_not_asked_for_its_other_claims(
    world: World, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hostile peer claims other content for every list the site holds (the versions are
    in the site's own export), each claim's URL stalling or failing: every claim cost a
    fetch with its retries, one after the other, before the sync's downloads and under
    the site lock. One claim it cannot back is enough: the others wait for the next run."""
    for n, lst in enumerate(LISTS, start=1):
        path = f"/lists/l{n}.atom"
        own = replace(world.make_list(version=1, images=(n,)), id=lst, self_url=world.sim.url(path))
        world.publish(own, path=path)
        assert world.subscribe(name=f"l{n}", path=path, auto=True) == 0
    assert world.vmic("sync") == ExitCode.OK
    identity = world.ca.issue(site_dn("mallory"))
    export = replace(
        world.make_list(version=1, images=()),
        id=list_id("99999999-8888-4777-8666-555555555555"),
        self_url=sim.url("/export.atom"),
        endorser_dn=identity.subject,
        issuer_dn=identity.issuer,
        holds=tuple(
            HeldList(
                list_id=lst,
                version=1,
                content_sha256=hashlib.sha256(f"made up {lst}".encode()).hexdigest(),
                url=sim.url(f"/lists/claimed-{n}.atom"),  # nothing there
            )
            for n, lst in enumerate(LISTS, start=1)
        ),
    )
    sim.publish("/export.atom", sign(export, identity))
    assert world.add_peer(sim.url("/export.atom"), name="mallory", site_dn=identity.subject) == 0
    before = world.snapshot()
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.PROBLEMS

    asked = [r.path for r in sim.requests if r.path.startswith("/lists/claimed-")]
    assert len(asked) == 1, asked
    err = capsys.readouterr().err
    assert err.count("peer mallory claims version 1") == 1
    assert "nothing is frozen" in err
    assert world.snapshot() == before
    with world.store() as db:
        assert AlarmStore(db).alarms(everything=True) == []
