"""A site on HEPiX lists: subscribe, sync, hooks, rollback, and Atom lists beside them.

The endorser publishes over a real loopback server; lists are signed as
S/MIME by the test CA; the site's SQLite and cache are real.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from feeds.model import ImageList, list_id
from tests.support import hepix
from tests.support.site import World, image_uuid

HEPIX_PATH = "/store/vo/dteam/image.list"
OTHER_LIST = list_id("5b3f5a2e-7d51-4c1e-9b0a-3e2d1c0b9a88")
MPURI = "https://appdb.example.org/store/vm/image/{}:42/"


def hepix_list(world: World, *, version: int, images: tuple[int, ...] = (1, 2)) -> ImageList:
    """An AppDB-like list: HEPiX carries no tags, ad:mpuri per image, self link = its URL."""
    base = world.make_list(version=version, images=images)
    return dataclasses.replace(
        base,
        self_url=world.sim.url(HEPIX_PATH),
        entries=tuple(
            dataclasses.replace(
                e, tags=(), produced=None, extra=(("ad:mpuri", MPURI.format(e.id)),)
            )
            for e in base.entries
        ),
    )


def publish_hepix(world: World, lst: ImageList, path: str = HEPIX_PATH) -> bytes:
    signed = hepix.sign(lst, world.endorser)
    world.sim.publish(path, signed)
    return signed


def test_a_site_subscribes_to_a_hepix_list_and_mirrors_it(world: World, tmp_path: Path) -> None:
    dump = tmp_path / "events"
    dump.mkdir()
    script = tmp_path / "dump.sh"
    script.write_text(
        '#!/bin/sh\nenv | grep -E "^(VMIC|VMCATCHER)_" | sort > "$1/$VMIC_EVENT_ID"\n'
    )
    script.chmod(0o755)
    assert world.vmic("hooks", "add", "dump", "--on", "image.available", "--", script, dump) == 0
    assert (
        world.vmic(
            "hooks", "add", "vmc", "--vmcatcher-env", "--on", "image.available",
            "--", script, tmp_path / "vmcatcher",
        )
        == 0
    )  # fmt: skip
    (tmp_path / "vmcatcher").mkdir()
    publish_hepix(world, hepix_list(world, version=20260101000000))

    assert world.subscribe(path=HEPIX_PATH, auto=True) == 0
    assert world.vmic("sync") == 0

    assert world.states() == {image_uuid(1): "available", image_uuid(2): "available"}
    stored = sorted(p.name for p in world.home.lists.rglob("*") if p.is_file())
    assert len(stored) == 1
    assert stored[0].startswith("20260101000000-")
    assert stored[0].endswith(".smime")
    own = [(dump / name).read_text() for name in sorted(p.name for p in dump.iterdir())]
    assert len(own) == 2
    assert f"VMIC_X_AD_MPURI={MPURI.format(image_uuid(1))}" in own[0] + own[1]
    vmc = "".join(p.read_text() for p in (tmp_path / "vmcatcher").iterdir())
    assert f"VMCATCHER_EVENT_AD_MPURI={MPURI.format(image_uuid(2))}" in vmc
    assert "VMCATCHER_EVENT_TYPE=AvailablePostfix" in vmc
    assert "VMCATCHER_EVENT_VO=dteam" in vmc


def test_the_subscription_is_checked_against_hv_dn_and_the_pins(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    other = world.ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Someone Else")
    signed = hepix.sign(hepix_list(world, version=1), other)  # names Jane, signed by another
    world.sim.publish(HEPIX_PATH, signed)
    before = world.snapshot()

    code = world.subscribe(path=HEPIX_PATH)

    assert code != 0
    assert "names endorser" in capsys.readouterr().err
    assert world.snapshot() == before
    with world.store() as store:
        assert store.subscriptions() == []


def test_a_lower_or_reused_hepix_version_keeps_the_last_good_list(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_hepix(world, hepix_list(world, version=5))
    assert world.subscribe(path=HEPIX_PATH, auto=True) == 0
    assert world.vmic("sync") == 0
    before = world.snapshot()

    publish_hepix(world, hepix_list(world, version=4, images=(1,)))
    assert world.vmic("sync") != 0
    assert "older than version 5" in capsys.readouterr().err
    assert world.snapshot() == before

    changed = dataclasses.replace(hepix_list(world, version=5, images=(1,)), title="Other")
    publish_hepix(world, changed)
    assert world.vmic("sync") != 0
    assert "already accepted with different content" in capsys.readouterr().err
    assert world.snapshot() == before


def test_an_image_removed_from_a_hepix_list_is_withdrawn(world: World) -> None:
    publish_hepix(world, hepix_list(world, version=1))
    assert world.subscribe(path=HEPIX_PATH, auto=True) == 0
    assert world.vmic("sync") == 0

    publish_hepix(world, hepix_list(world, version=2, images=(2,)))
    assert world.vmic("sync") == 0

    assert world.states() == {image_uuid(1): "withdrawn", image_uuid(2): "available"}


def test_atom_and_hepix_lists_coexist_and_a_uuid_claimed_twice_stays_with_the_first(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1, images=(1, 2))  # the endorser's Atom list
    assert world.subscribe(name="atom", auto=True) == 0
    other = dataclasses.replace(hepix_list(world, version=1, images=(2, 3)), id=OTHER_LIST)
    publish_hepix(world, other)
    capsys.readouterr()

    assert world.subscribe(name="appdb", path=HEPIX_PATH, auto=True) == 0
    said = capsys.readouterr().out
    assert f"{image_uuid(2)}  conflict" in said
    assert "already listed by subscription atom; ignored" in said
    assert world.vmic("sync") == 0

    assert world.states() == {
        image_uuid(1): "available",
        image_uuid(2): "available",
        image_uuid(3): "available",
    }
    with world.store() as store:
        owner = store.image(image_uuid(2))
        third = store.image(image_uuid(3))
    assert owner is not None
    assert owner.subscription == "atom"
    assert owner.list_id == world.make_list(version=1).id
    assert third is not None
    assert third.subscription == "appdb"

    # every new version of the second list that still claims the image is reported again
    publish_hepix(
        world, dataclasses.replace(hepix_list(world, version=2, images=(2, 3)), id=OTHER_LIST)
    )
    capsys.readouterr()
    code = world.vmic("sync", "--json")
    out = json.loads(capsys.readouterr().out)
    problems = [p for p in out["problems"] if p["kind"] == "conflict"]
    assert [p["subscription"] for p in problems] == ["appdb"]
    assert image_uuid(2) in problems[0]["message"]
    assert code != 0
    with world.store() as store:
        still = store.image(image_uuid(2))
    assert still is not None
    assert still.subscription == "atom"
