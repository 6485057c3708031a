"""`vmic image purge`: the bytes of an image that no longer runs go for good; history stays."""

from __future__ import annotations

from dataclasses import replace

import pytest

from federation.cli.common import ExitCode
from feeds.model import image_id
from tests.support.site import World, image_bytes, image_uuid


def available(world: World) -> None:
    world.publish(version=1)
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    assert set(world.states().values()) == {"available"}


def files(world: World) -> set[str]:
    return {
        str(p.relative_to(world.home.root))
        for folder in (world.home.images, world.home.expired, world.home.partial)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_a_withdrawn_images_bytes_are_deleted_and_its_record_and_history_kept(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    available(world)
    assert world.vmic("withdraw", image_uuid(1)) == 0
    retired = [p for p in files(world) if p.startswith("cache/expired/")]
    assert len(retired) == 1  # kept for the retention period
    capsys.readouterr()

    assert world.vmic("image", "purge", image_uuid(1)) == 0

    out = capsys.readouterr().out
    assert "purged" in out
    assert "4.0 KiB freed" in out
    assert not [p for p in files(world) if p.startswith("cache/expired/")]
    assert world.states() == {image_uuid(1): "withdrawn", image_uuid(2): "available"}
    with world.store() as store:
        (purged,) = [h for h in store.history() if h.outcome == "purged"]
    assert purged.reason is not None
    assert purged.reason.startswith(f"image {image_uuid(1)}: its bytes deleted by the admin")
    assert world.vmic("history") == 0
    assert "purged" in capsys.readouterr().out


def test_a_partial_download_of_a_refused_image_is_deleted_too(world: World) -> None:
    world.publish(version=1)
    assert world.subscribe() == 0
    with world.store() as store:
        image = store.image(image_uuid(1))
    assert image is not None
    (world.home.partial / image.sha512).write_bytes(image_bytes(1)[:100])
    assert world.vmic("refuse", image_uuid(1), "--reason", "not here") == 0

    assert world.vmic("image", "purge", image_uuid(1)) == 0

    assert not (world.home.partial / image.sha512).exists()


def test_a_running_image_is_refused_and_nothing_is_deleted(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    available(world)
    assert world.vmic("withdraw", image_uuid(1)) == 0
    before, on_disk = world.snapshot(), files(world)
    capsys.readouterr()

    # the first id could be purged, the second runs: neither is touched
    assert world.vmic("image", "purge", image_uuid(1), image_uuid(2)) == ExitCode.CONFIG

    err = capsys.readouterr().err
    assert f"image {image_uuid(2)} is available" in err
    assert "`vmic withdraw` or `vmic refuse` it first" in err
    assert world.snapshot() == before
    assert files(world) == on_disk


def test_bytes_another_runnable_image_uses_stay_in_the_cache(world: World) -> None:
    """Two ids, the same bytes (an endorser re-listing an image under a new id)."""
    lst = world.make_list(version=1, images=(1,))
    (first,) = lst.entries
    twin = replace(first, id=image_id(image_uuid(9)), title="Same bytes, other id")
    world.publish(replace(lst, entries=(first, twin)))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    assert world.vmic("withdraw", image_uuid(1)) == 0

    assert world.vmic("image", "purge", image_uuid(1)) == 0

    assert (world.home.images / first.sha512).exists()
    assert world.states()[image_uuid(9)] == "available"
