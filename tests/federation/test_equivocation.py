"""Sites watch each other: split views (equivocation) and freezes (THREATS 41, 42, 44).

Real sites on loopback (`vmic serve` for each, real `vmic sync` runs, real
signatures). The endorser signs two lists with the same version and shows
each to its own group of sites (group A asks one URL, group B another); a
site that follows a site of the other group holds two valid signed copies
and raises the alarm. Lying peers (a genuinely signed export whose claim has
nothing valid behind it) cannot freeze a list.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from federation.cli import main
from federation.cli.common import ExitCode
from feeds.model import HeldList, list_id
from site_agent.alarms import AlarmStore
from site_agent.home import SiteHome
from site_agent.records import EventRecord
from site_agent.store import Store
from tests.federation.test_peers import Site, site_dn
from tests.sim.server import Simulator
from tests.support.ca import write_identity
from tests.support.lists import LIST_ID, sign
from tests.support.serving import ServeThread
from tests.support.site import CA_DN, ENDORSER_DN, LIST_PATH, World, image_bytes, image_uuid

VIEW_B = "/view-b/base.atom"
"""Where the endorser shows group B its other list (self link the same as group A's)."""


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as servers:
        yield servers


def new_site(world: World, stack: ExitStack, tmp_path: Path, name: str, path: str) -> Site:
    """A site with its own home, identity and server, subscribed (auto-approve) at ``path``."""
    home = SiteHome(tmp_path / f"site-{name}")
    assert main(["site", "init", "--home", str(home.root), "--trust", str(world.trust)]) == 0
    identity = world.ca.issue(site_dn(name))
    cert, key, _ = write_identity(tmp_path / f"id-{name}", identity)
    server = stack.enter_context(ServeThread(home))
    site = Site(name=name, home=home, identity=identity, server=server)
    assert (
        site.vmic("site", "identity", "--cert", cert, "--key", key, "--base-url", server.url) == 0
    )
    assert (
        site.vmic(
            "subscribe",
            world.sim.url(path),
            "--name",
            "base",
            "--endorser-dn",
            ENDORSER_DN,
            "--ca-dn",
            CA_DN,
            "--auto-approve",
        )
        == 0
    )
    return site


def alarms(site: Site, *, everything: bool = False) -> list[dict[str, object]]:
    with Store.open(site.home.database) as store:
        return [a.to_json() for a in AlarmStore(store).alarms(everything=everything)]


def events(site: Site, kind: str) -> list[EventRecord]:
    with Store.open(site.home.database) as store:
        return [e for e in store.events() if e.type == kind]


def lists_held(site: Site) -> list[tuple[int, str | None]]:
    with Store.open(site.home.database) as store:
        current = store.current_list(LIST_ID)
        assert current is not None
        return [(current.version, current.content_sha256)]


def publish_split_view(world: World, version: int) -> tuple[bytes, bytes]:
    """Version ``version`` twice: group A's list names images 1 and 2, group B's 1 and 3."""
    view_a = world.publish(version=version, images=(1, 2))
    view_b = world.publish(version=version, images=(1, 3), path=VIEW_B)
    return view_a, view_b


def test_a_split_view_raises_the_alarm_at_each_site_that_follows_the_other_group(
    world: World, stack: ExitStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    view_a, view_b = publish_split_view(world, version=2)
    a1 = new_site(world, stack, tmp_path, "a1", LIST_PATH)
    a2 = new_site(world, stack, tmp_path, "a2", LIST_PATH)
    b1 = new_site(world, stack, tmp_path, "b1", VIEW_B)
    b2 = new_site(world, stack, tmp_path, "b2", VIEW_B)
    for site in (a1, a2, b1, b2):
        assert site.vmic("sync") == ExitCode.OK, site.name  # each group alone sees nothing
    assert a1.states() == {image_uuid(1): "available", image_uuid(2): "available"}
    assert b1.states() == {image_uuid(1): "available", image_uuid(3): "available"}
    a1.follow(a2)  # the same group: the same list
    a2.follow(b1)  # across the groups
    b2.follow(a1)
    before = a2.states()
    capsys.readouterr()

    assert a2.vmic("sync") == ExitCode.ALARM
    err = capsys.readouterr().err
    assert "ALARM alarm 1: equivocation of list base version 2 (the list is frozen)" in err
    assert "peer b1 holds another list signed by" in err
    assert b2.vmic("sync") == ExitCode.ALARM
    assert a1.vmic("sync") == ExitCode.OK  # follows only its own group
    assert b1.vmic("sync") == ExitCode.OK  # follows nobody
    assert alarms(a1) == alarms(b1) == []

    (found,) = alarms(a2)
    assert (found["kind"], found["version"], found["peer"], found["open"]) == (
        "equivocation",
        2,
        "b1",
        True,
    )
    assert found["ours"] == lists_held(a2)[0][1]
    assert found["theirs"] == lists_held(b1)[0][1]
    assert a2.states() == before  # what ran before the alarm is the admin's to decide
    # The evidence: both signed copies, each verifies on its own, and what they are.
    evidence = a2.home.root / str(found["evidence"])
    assert (evidence / "ours.atom").read_bytes() == view_a
    assert (evidence / "theirs.atom").read_bytes() == view_b
    for copy in ("ours.atom", "theirs.atom"):
        assert (
            main(
                [
                    "verify",
                    str(evidence / copy),
                    "--trust",
                    str(world.trust),
                    "--endorser-dn",
                    ENDORSER_DN,
                    "--ca-dn",
                    CA_DN,
                ]
            )
            == ExitCode.OK
        )
    facts = json.loads((evidence / "alarm.json").read_text())
    assert facts["theirs"]["sha256"] == hashlib.sha256(view_b).hexdigest()
    assert facts["ours"]["sha256"] == hashlib.sha256(view_a).hexdigest()
    assert facts["theirs"]["url"].startswith(b1.server.url + "/lists/")
    (event,) = events(a2, "list.equivocation")
    assert event.data["alarm"] == 1
    assert event.data["evidence"] == str(evidence)
    # Monitoring sees it: /metrics, `vmic status` (critical), `vmic alarms --json`.
    metrics = a2.server.get("/metrics").body.decode()
    assert 'vmic_alarms_open{kind="equivocation"} 1' in metrics
    assert 'vmic_alarms_open{kind="freeze"} 0' in metrics
    assert 'vmic_alarms_open{kind="equivocation"} 0' in a1.server.get("/metrics").body.decode()
    capsys.readouterr()
    assert a2.vmic("status") == 2
    assert "equivocation of list base" in capsys.readouterr().out
    assert a2.vmic("alarms", "--json") == 0
    assert json.loads(capsys.readouterr().out) == alarms(a2)
    # The next run says it again (the alarm is open) but raises nothing new.
    assert a2.vmic("sync") == ExitCode.ALARM
    assert len(alarms(a2)) == 1
    assert len(events(a2, "list.equivocation")) == 1


def test_a_frozen_list_approves_nothing_until_the_alarm_is_resolved(
    world: World, stack: ExitStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_split_view(world, version=2)
    a1 = new_site(world, stack, tmp_path, "a1", LIST_PATH)
    a2 = new_site(world, stack, tmp_path, "a2", LIST_PATH)
    b1 = new_site(world, stack, tmp_path, "b1", VIEW_B)
    for site in (a1, a2, b1):
        assert site.vmic("sync") == ExitCode.OK
    a2.follow(b1)
    assert a2.vmic("sync") == ExitCode.ALARM
    # While frozen the site vouches for none of the list's images; it still says what it holds.
    export = a2.server.get("/export.atom").body.decode()
    assert "<entry>" not in export
    assert f'<vmic:holds list="urn:uuid:{LIST_ID}" version="2"' in export

    world.publish(version=3, images=(1, 2, 4))  # group A's next version, a new image
    capsys.readouterr()
    assert a2.vmic("sync") == ExitCode.ALARM
    assert "held: list frozen by alarm 1" in capsys.readouterr().err
    assert a1.vmic("sync") == ExitCode.OK
    assert a1.states()[image_uuid(4)] == "available"  # not frozen there: auto-approved
    assert a2.states()[image_uuid(4)] == "new"  # frozen here: held for the admin
    with Store.open(a2.home.database) as store:
        held = store.image(image_uuid(4))
        assert held is not None
        assert held.reason == "held: list frozen by alarm 1"
    assert a2.vmic("approve", image_uuid(4)) == ExitCode.CONFIG  # not even by hand
    assert "frozen by alarm 1" in capsys.readouterr().err
    assert a2.states()[image_uuid(4)] == "new"
    # what an admin reads first
    assert a2.vmic("alarms") == 0
    listed = capsys.readouterr().out
    assert "1  equivocation" in listed
    assert "base version 2  (open, list frozen)" in listed
    assert a2.vmic("alarm", "show", "1") == 0
    shown = capsys.readouterr().out
    assert (
        f"evidence:   {a2.home.root / 'evidence' / '1'} (alarm.json, ours.atom, theirs.atom)"
        in shown
    )
    assert f"waiting:    {image_uuid(4)}" in shown
    assert a2.vmic("alarm", "show", "1", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["waiting"], data["evidence_path"]) == (
        [image_uuid(4)],
        str(a2.home.root / "evidence" / "1"),
    )
    assert a2.vmic("alarm", "show", "7") == ExitCode.CONFIG
    assert not (a2.home.images / hashlib.sha512(image_bytes(4)).hexdigest()).exists()

    assert a2.vmic("alarm", "resolve", "1", "--note", "view A confirmed by the endorser") == 0
    out = capsys.readouterr().out
    assert "list base is no longer frozen" in out
    assert image_uuid(4) in out
    (closed,) = alarms(a2, everything=True)
    assert closed["resolution"] == "view A confirmed by the endorser"
    assert (a2.home.root / str(closed["evidence"]) / "theirs.atom").exists()  # kept
    assert a2.vmic("approve", image_uuid(4)) == ExitCode.OK
    assert a2.vmic("sync") == ExitCode.OK  # B's claim is the resolved finding: not again
    assert a2.states()[image_uuid(4)] == "available"
    assert a2.server.get("/export.atom").body.decode().count("<entry>") == 3  # shared again
    assert a2.vmic("alarm", "resolve", "1", "--note", "again") == ExitCode.CONFIG


def test_an_alarm_found_after_this_run_approved_holds_those_approvals(
    world: World, stack: ExitStack, tmp_path: Path
) -> None:
    """The same run accepts a version (approving its new image by policy) and then finds the
    split view: the image is held again before anything downloads it."""
    publish_split_view(world, version=2)
    a1 = new_site(world, stack, tmp_path, "a1", LIST_PATH)
    b1 = new_site(world, stack, tmp_path, "b1", VIEW_B)
    assert a1.vmic("sync", "--no-download") == ExitCode.OK
    assert b1.vmic("sync") == ExitCode.OK
    a1.follow(b1)
    world.publish(version=3, images=(1, 2, 5))
    world.publish(version=3, images=(1, 3, 5), path=VIEW_B)
    assert b1.vmic("sync") == ExitCode.OK

    assert a1.vmic("sync") == ExitCode.ALARM

    (found,) = alarms(a1)
    assert found["version"] == 3
    states = a1.states()
    assert states[image_uuid(5)] == "new"
    assert states[image_uuid(2)] == "available"  # approved before this run: the admin's call
    held = [e for e in events(a1, "image.new") if e.image_id == image_uuid(5)]
    assert held[-1].data["change"] == "held: list frozen by alarm 1"


# -- lying peers ---------------------------------------------------------------------------


def lying_export(world: World, sim: Simulator, *, claimed: str, copy: bytes | None) -> None:
    """A genuinely signed export from site "mallory" claiming version 1 of the list with
    ``claimed`` as its content digest; its copy of the list is ``copy`` (None: nothing)."""
    identity = world.ca.issue(site_dn("mallory"))
    base = sim.base_url
    export = replace(
        world.make_list(version=1, images=()),
        id=list_id("99999999-8888-4777-8666-555555555555"),
        self_url=f"{base}/export.atom",
        endorser_dn=identity.subject,
        issuer_dn=identity.issuer,
        holds=(
            HeldList(
                list_id=LIST_ID,
                version=1,
                content_sha256=claimed,
                url=f"{base}/lists/claimed.atom",
            ),
        ),
    )
    sim.publish("/export.atom", sign(export, identity))
    if copy is not None:
        sim.publish("/lists/claimed.atom", copy)
    assert world.add_peer(sim.url("/export.atom"), name="mallory", site_dn=identity.subject) == 0


def other_endorser_copy(world: World) -> bytes:
    """Version 1 of the same list id, validly signed, but by an endorser the site did not pin."""
    other = world.ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Mallory Endorser")
    lst = replace(
        world.make_list(version=1, images=(3,)),
        endorser_dn=other.subject,
        issuer_dn=other.issuer,
    )
    return sign(lst, other)


@pytest.mark.parametrize(
    ("copy", "why"),
    [
        pytest.param(lambda world, genuine: None, "cannot be fetched", id="nothing"),
        pytest.param(lambda world, genuine: b"\x00garbage<feed", "not a valid list", id="garbage"),
        pytest.param(
            lambda world, genuine: genuine, "not the one the export claims", id="our-own-copy"
        ),
        pytest.param(
            lambda world, genuine: genuine.replace(b"Test image 1", b"Test image X"),
            "not a valid list",
            id="tampered",
        ),
        pytest.param(
            lambda world, genuine: other_endorser_copy(world),
            "not a valid list",
            id="another-endorser",
        ),
    ],
)
def test_a_lying_peer_cannot_freeze_a_list(
    world: World, copy: object, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    genuine = world.publish(version=1, images=(1,))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == ExitCode.OK
    with Simulator() as sim:
        served = copy(world, genuine)  # type: ignore[operator]
        lying_export(world, sim, claimed=hashlib.sha256(b"made up").hexdigest(), copy=served)
        before = world.snapshot()
        capsys.readouterr()

        assert world.vmic("sync") == ExitCode.PROBLEMS

        err = capsys.readouterr().err
        assert "peer mallory claims version 1 of list base" in err
        assert why in err
        assert "nothing is frozen" in err
        assert world.snapshot() == before
        with world.store() as store:
            assert AlarmStore(store).alarms(everything=True) == []
            assert [e for e in store.events() if e.type.startswith("list.equ")] == []
        world.publish(version=2, images=(1, 2))  # the list is not frozen: approved as ever
        world.vmic("sync")
        assert world.states()[image_uuid(2)] == "available"


# -- freezes -----------------------------------------------------------------------------


def test_an_endorser_url_left_behind_peers_raises_a_freeze_that_closes_itself(
    world: World, stack: ExitStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = world.make_list(version=2, images=(1,), updated=world.now - timedelta(hours=3))
    world.publish(old)
    world.publish(old, path=VIEW_B)  # the same list at a second URL
    a = new_site(world, stack, tmp_path, "a", LIST_PATH)
    b = new_site(world, stack, tmp_path, "b", VIEW_B)
    assert a.vmic("sync") == b.vmic("sync") == ExitCode.OK
    a.follow(b)
    # Version 3 was signed two hours ago; a's endorser URL still serves version 2.
    newer = world.make_list(version=3, images=(1, 2), updated=world.now - timedelta(hours=2))
    world.publish(newer, path=VIEW_B)
    assert b.vmic("sync") == ExitCode.OK
    capsys.readouterr()

    assert a.vmic("sync") == ExitCode.ALARM

    assert "freeze of list base version 3" in capsys.readouterr().err
    assert lists_held(a)[0][0] == 3  # the newer version runs: nothing is frozen
    assert a.states()[image_uuid(2)] == "available"
    (found,) = alarms(a)
    assert found["kind"] == "freeze"
    assert "still serves version 2" in str(found["detail"])
    assert len(events(a, "list.freeze")) == 1
    assert a.vmic("status") == 1  # a warning, not critical

    world.publish(newer)  # the endorser's URL catches up
    assert a.vmic("sync") == ExitCode.OK
    assert alarms(a) == []
    (closed,) = alarms(a, everything=True)
    assert closed["resolution"] == "closed by vmic: the endorser's URL serves version 3"


def test_a_version_signed_minutes_ago_is_not_a_freeze_yet(
    world: World, stack: ExitStack, tmp_path: Path
) -> None:
    world.publish(version=2, images=(1,))
    world.publish(version=2, images=(1,), path=VIEW_B)  # the same list at a second URL
    a = new_site(world, stack, tmp_path, "a", LIST_PATH)
    b = new_site(world, stack, tmp_path, "b", VIEW_B)
    assert a.vmic("sync") == b.vmic("sync") == ExitCode.OK
    a.follow(b)
    world.publish(version=3, images=(1,), path=VIEW_B)  # signed ten minutes ago
    assert b.vmic("sync") == ExitCode.OK

    assert a.vmic("sync") == ExitCode.OK

    assert lists_held(a)[0][0] == 3
    assert alarms(a, everything=True) == []


def test_exports_say_which_version_of_each_list_the_site_holds(
    world: World, stack: ExitStack, tmp_path: Path
) -> None:
    view_a = world.publish(version=2, images=(1,))
    a = new_site(world, stack, tmp_path, "a", LIST_PATH)
    assert a.vmic("sync") == ExitCode.OK
    reply = a.server.get("/export.atom")
    assert reply.status == 200
    text = reply.body.decode()
    held = lists_held(a)[0][1]
    assert held is not None
    assert f'list="urn:uuid:{LIST_ID}" version="2" content-sha256="{held}"' in text
    assert a.server.get(f"/lists/{LIST_ID}.atom").body == view_a


def test_the_endorsers_own_url_serving_another_list_as_the_same_version_is_proof(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """No peer needed: the site holds version 2, then the endorser's URL serves another
    version 2 (to this site, say, while the rest saw the first). Refused as ever by the
    same-version rule, and proof besides."""
    first = world.publish(version=2, images=(1, 2))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == ExitCode.OK
    second = world.publish(version=2, images=(1, 3))
    before = world.snapshot()
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.ALARM

    err = capsys.readouterr().err
    assert "RollbackError" in err  # the list is refused, as before
    assert f"{world.sim.url(LIST_PATH)} serves another list signed by" in err
    assert world.snapshot() == before  # nothing of the other copy was taken
    with world.store() as store:
        (found,) = AlarmStore(store).alarms()
        assert (found.kind, found.peer, found.version) == ("equivocation", None, 2)
        assert found.evidence is not None
    evidence = world.home.root / found.evidence
    assert (evidence / "ours.atom").read_bytes() == first
    assert (evidence / "theirs.atom").read_bytes() == second
    world.publish(version=3, images=(1, 2, 4))  # the list is frozen: nothing approved
    assert world.vmic("sync") == ExitCode.ALARM
    assert world.states()[image_uuid(4)] == "new"


def test_an_older_version_replayed_is_a_rollback_and_another_one_is_proof(
    world: World,
) -> None:
    old = world.publish(version=2, images=(1,))
    assert world.subscribe(auto=True) == 0
    world.publish(version=3, images=(1, 2))
    assert world.vmic("sync") == ExitCode.OK
    world.sim.publish(LIST_PATH, old)  # version 2 again, as accepted: a replay

    assert world.vmic("sync") == ExitCode.PROBLEMS

    with world.store() as store:
        assert AlarmStore(store).alarms(everything=True) == []
    world.publish(version=2, images=(1, 3))  # another version 2 than the one accepted

    assert world.vmic("sync") == ExitCode.ALARM

    with world.store() as store:
        (found,) = AlarmStore(store).alarms()
        assert (found.kind, found.version) == ("equivocation", 2)
