"""One subscription, peer or download that fails, for any reason, never stops the others.

THREATS 33-34. A real site with two subscriptions on a loopback endorser: one
list is made to fail (by a hostile certificate in its KeyInfo, or by a
fault injected into the verifier to stand for a bug in vmic), and the other
must still be accepted, its images approved and downloaded, in the same run.
The failing one keeps its last good state, has the failure in its history,
and the site log holds the reason (and the traceback for a bug).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from federation.cli.common import ExitCode
from feeds import verify as verify_module
from feeds.model import list_id
from feeds.verify import VerifiedList
from site_agent import sources, sync_lists
from site_agent import sync as sync_module
from tests.support import hostile
from tests.support.site import World, image_uuid

OTHER_PATH = "/lists/other.atom"
OTHER_ID = list_id("0a0b0c0d-1111-4222-8333-444455556666")


def publish_other(world: World, *, version: int, title: str = "Other list") -> bytes:
    other = replace(
        world.make_list(version=version, images=(3,)),
        id=OTHER_ID,
        title=title,
        self_url=world.sim.url(OTHER_PATH),
    )
    return world.publish(other, path=OTHER_PATH)


@pytest.fixture
def two(world: World) -> World:
    """Two subscriptions, each with one good version accepted and auto-approved."""
    world.publish(version=1, images=(1,))
    publish_other(world, version=1)
    assert world.subscribe(name="first", auto=True) == 0
    assert world.subscribe(name="other", path=OTHER_PATH, auto=True) == 0
    assert world.vmic("sync") == 0
    assert world.states() == {image_uuid(1): "available", image_uuid(3): "available"}
    return world


def other_rows(world: World) -> tuple[Any, ...]:
    """The trusted state of the failing subscription: its image rows and versions."""
    snap = world.snapshot()
    return (
        tuple(r for r in snap.images if r[1] == OTHER_ID),
        tuple(r for r in snap.lists if r[0] == OTHER_ID),
    )


def test_a_hostile_certificate_in_one_list_does_not_stop_the_others(two: World) -> None:
    """The class of the report: a certificate cryptography chokes on, in one list's KeyInfo."""
    world = two
    signed = publish_other(world, version=2)
    bad = hostile.resigned(world.endorser, world.ca, hostile.duplicate_basic_constraints)
    world.sim.publish(OTHER_PATH, hostile.with_keyinfo_certificate(signed, bad))
    world.publish(version=2, images=(1, 2))
    before = other_rows(world)

    assert world.vmic("sync") == ExitCode.PROBLEMS

    assert world.states()[image_uuid(2)] == "available"  # the other list went on
    assert other_rows(world) == before
    with world.store() as store:
        last = store.history("other")[-1]
    assert last.outcome == "rejected"
    assert "not a well-formed certificate" in (last.reason or "")
    log = world.home.log.read_text()
    assert "not a well-formed certificate" in log
    assert "Traceback" not in log  # a refused input, not a bug


def test_a_bug_while_verifying_one_list_is_recorded_and_the_sync_goes_on(
    two: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fault injected into the verifier for one list stands for a bug in vmic."""
    world = two
    publish_other(world, version=2, title="Breaks the verifier")
    world.publish(version=2, images=(1, 2))
    real = verify_module.verify_list

    def buggy(raw: bytes, **kwargs: Any) -> VerifiedList:
        if b"Breaks the verifier" in raw:
            raise KeyError("a bug in vmic")
        return real(raw, **kwargs)

    monkeypatch.setattr(sync_lists, "verify_list", buggy)
    before = other_rows(world)

    assert world.vmic("sync") == ExitCode.PROBLEMS

    assert world.states()[image_uuid(2)] == "available"
    assert other_rows(world) == before
    err = capsys.readouterr().err
    assert "other: internal: the list failed unexpectedly (KeyError" in err
    with world.store() as store:
        last = store.history("other")[-1]
        (sub,) = [s for s in store.subscriptions() if s.name == "other"]
    assert (last.outcome, last.kind) == ("failed", "internal")
    assert sub.last_error is not None
    assert "KeyError" in sub.last_error
    log = world.home.log.read_text()
    assert "Traceback" in log
    assert "a bug in vmic" in log

    # Fixed (the fault gone), the next run takes the list.
    monkeypatch.setattr(sync_lists, "verify_list", real)
    assert world.vmic("sync") == 0
    with world.store() as store:
        current = store.current_list(OTHER_ID)
    assert current is not None
    assert current.version == 2


def test_a_bug_in_one_download_does_not_stop_the_others(
    two: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = two
    world.publish(version=2, images=(1, 2, 4))
    real = sources.download_image

    async def buggy(site: Any, fetcher: Any, sha512: str, images: Any, *a: Any, **k: Any) -> bool:
        if images[0].image_id == image_uuid(2):
            raise ZeroDivisionError("a bug in vmic")
        return await real(site, fetcher, sha512, images, *a, **k)

    monkeypatch.setattr(sync_module, "download_image", buggy)

    assert world.vmic("sync") == ExitCode.PROBLEMS

    states = world.states()
    assert states[image_uuid(4)] == "available"
    assert states[image_uuid(2)] == "approved"  # waits for the next run
    assert "ZeroDivisionError" in world.home.log.read_text()


def test_an_unusable_trust_file_is_reported_by_name_and_the_sync_goes_on(
    two: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world = two
    (world.trust / "deadbeef.0").write_bytes(
        b"-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAK\n-----END CERTIFICATE-----\n"
    )
    world.publish(version=2, images=(1, 2))

    assert world.vmic("sync") == ExitCode.PROBLEMS

    assert world.states()[image_uuid(2)] == "available"
    err = capsys.readouterr().err
    assert "trust: trust directory" in err
    assert "deadbeef.0: not a usable certificate" in err
