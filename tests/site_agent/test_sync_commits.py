"""The lists one sync accepts share a commit (site_agent.batch): what a failure leaves.

A sync writes each accepted list's bytes (fsynced) before its rows, and
commits the rows of several lists at once. These tests make that commit
fail, or stop before it, with a real SQLite store and real files (a
trigger that breaks a deferred foreign key makes SQLite refuse the COMMIT
itself; a copy of the database files taken before the commit is what a
crash at that moment leaves), and check that nothing the site trusts
changed, that the failure is reported for every list of the group, and
that the next run accepts the lists. THREATS 31.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from federation.cli.common import ExitCode
from feeds.model import list_id
from feeds.verify import verify_list
from keys.trust import TrustStore
from site_agent import config as site_config
from site_agent.site import Site
from site_agent.store import Store
from tests.support.site import TrustedState, World, image_uuid

OTHER_PATH = "/lists/other.atom"
OTHER_ID = list_id("22222222-3333-4444-8555-666666666666")


def two_subscriptions(world: World) -> None:
    """`base` (images 1, 2) and `other` (image 5), both at version 1."""
    world.publish(version=1)
    assert world.subscribe() == 0
    other = replace(world.make_list(version=1, images=(5,)), id=OTHER_ID)
    world.publish(replace(other, self_url=world.sim.url(OTHER_PATH)), path=OTHER_PATH)
    assert world.subscribe(name="other", path=OTHER_PATH) == 0


def publish_version_2(world: World) -> None:
    """Both lists at version 2, each with one image more (3 for base, 6 for other)."""
    world.publish(version=2, images=(1, 2, 3))
    other = replace(world.make_list(version=2, images=(5, 6)), id=OTHER_ID)
    world.publish(replace(other, self_url=world.sim.url(OTHER_PATH)), path=OTHER_PATH)


def sql(world: World, script: str) -> None:
    conn = sqlite3.connect(world.home.database)
    try:
        conn.executescript(script)
    finally:
        conn.close()


def trusted_rows(state: TrustedState) -> tuple[object, ...]:
    """The trusted state but the stored lists' folder, where a list's bytes are written
    before the commit that names them (a failed commit leaves them unnamed)."""
    return state.images, state.lists, state.cache


def validators(world: World) -> dict[str, tuple[str | None, str | None]]:
    with world.store() as store:
        return {s.name: (s.etag, s.last_modified) for s in store.subscriptions()}


def test_a_failed_group_commit_fails_every_list_in_it_and_changes_nothing(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    two_subscriptions(world)
    publish_version_2(world)
    # Every accepted version breaks a deferred foreign key: SQLite refuses the COMMIT.
    sql(
        world,
        """
        CREATE TABLE test_fault (
            event INTEGER REFERENCES events(id) DEFERRABLE INITIALLY DEFERRED
        );
        CREATE TRIGGER test_fault AFTER INSERT ON lists
        BEGIN INSERT INTO test_fault VALUES (-1); END;
        """,
    )
    before, kept = world.snapshot(), validators(world)
    capsys.readouterr()

    assert world.vmic("sync", "--no-download") == ExitCode.PROBLEMS

    err = capsys.readouterr().err
    assert "base: StoreError" in err
    assert "other: StoreError" in err
    assert trusted_rows(world.snapshot()) == trusted_rows(before)
    assert validators(world) == kept  # so the next run fetches both lists in full
    with world.store() as store:
        assert {h.subscription for h in store.history() if h.outcome == "failed"} == {
            "base",
            "other",
        }

    sql(world, "DROP TRIGGER test_fault; DROP TABLE test_fault;")
    assert world.vmic("sync", "--no-download") == 0
    assert {image_uuid(3), image_uuid(6)} <= set(world.states())


def test_a_list_failing_inside_a_group_rolls_back_its_own_rows_only(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    two_subscriptions(world)
    publish_version_2(world)
    sql(
        world,
        f"""
        CREATE TRIGGER test_fault BEFORE INSERT ON lists WHEN NEW.list_id = '{OTHER_ID}'
        BEGIN SELECT RAISE(ABORT, 'test fault'); END;
        """,
    )
    before = world.snapshot()
    capsys.readouterr()

    assert world.vmic("sync", "--no-download") == ExitCode.PROBLEMS

    err = capsys.readouterr().err
    assert "other: StoreError" in err
    assert "base:" not in err
    states = world.states()
    assert image_uuid(3) in states  # base's version 2, committed with the group
    assert image_uuid(6) not in states  # other's rows were rolled back, alone
    with world.store() as store:
        current = store.current_list(OTHER_ID)
        assert current is not None
        assert current.version == 1
    assert [row for row in world.snapshot().lists if row[0] == OTHER_ID] == [
        row for row in before.lists if row[0] == OTHER_ID
    ]


def crash_copy(database: Path, into: Path) -> Path:
    """The database files as they are now: what a crash at this moment leaves on disk."""
    into.mkdir()
    for suffix in ("", "-wal"):
        source = database.with_name(database.name + suffix)
        if source.exists():
            shutil.copyfile(source, into / source.name)
    return into / database.name


def test_a_crash_before_the_group_commit_leaves_the_lists_unaccepted(
    world: World, tmp_path: Path
) -> None:
    two_subscriptions(world)
    base_v2 = world.publish(version=2, images=(1, 2, 3))
    before = world.snapshot()
    config = site_config.load(world.home.config)
    trust = TrustStore.from_directory(config.trust_dir)

    async def accept_then_look() -> tuple[Path, Path]:
        with Store.open(world.home.database) as store:
            site = Site(world.home, config, store, now=world.now)
            sub = store.subscription("base")
            assert sub is not None
            current = site.current_list(sub.list_id)
            verified = verify_list(
                base_v2, trust=trust, pins=sub.pins, now=world.now, crl=config.crl
            )
            with site.commit_group(most=100, wait=3600):
                await site.accept_list_async(sub, verified, current=current)
                stored = sorted(world.home.lists.rglob("2-*.atom"))
                assert len(stored) == 1  # written (and fsynced) before the commit
                crashed = crash_copy(world.home.database, tmp_path / "crash")
            await site.settle("base")
            return stored[0], crashed

    stored, crashed = asyncio.run(accept_then_look())

    crash = sqlite3.connect(crashed)
    try:
        images = tuple(crash.execute("SELECT * FROM images ORDER BY image_id").fetchall())
        lists = tuple(crash.execute("SELECT * FROM lists ORDER BY list_id, version").fetchall())
    finally:
        crash.close()
    assert images == before.images
    assert lists == before.lists
    assert stored.read_bytes() == base_v2
    # The run itself went on and committed: the version and its new image hold.
    assert image_uuid(3) in world.states()
