"""What a group commit (site_agent.batch) must not lose when a step or a commit fails.

A real site home and SQLite store, real files, real `vmic sync` runs against
the loopback endorser; faults are a trigger that makes SQLite refuse a
COMMIT (a deferred foreign key broken by the version that should fail), a
peer's copy of a list served by the simulator (the site's peer offers are
stood in for: a copy needs a peer otherwise), a peers-table write that
fails, and a folder in the way of the cache. Where the store's own timing
matters (a batch rolled back during a verification, another process writing
between two members of a batch), the test drives :class:`Site` directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
from datetime import UTC
from pathlib import Path

import pytest

from federation.cli import site_cmd
from federation.cli.common import ExitCode
from federation.peers import SiteFederation
from feeds.verify import VerifiedList, verify_list
from keys.errors import SignatureError, StoreError
from keys.trust import TrustStore
from site_agent import batch
from site_agent import config as site_config
from site_agent.peering import ByteSource, ListCopy
from site_agent.site import Site, previous_of
from site_agent.store import Store
from tests.site_agent.test_sync_commits import (
    OTHER_ID,
    publish_version_2,
    sql,
    trusted_rows,
    two_subscriptions,
)
from tests.support.site import LIST_UUID, World, image_bytes, image_uuid

COPY_PATH = "/peer/base.atom"
BREAK_COMMIT = """
    CREATE TABLE test_fault (event INTEGER REFERENCES events(id) DEFERRABLE INITIALLY DEFERRED);
    CREATE TRIGGER test_fault AFTER INSERT ON lists WHEN NEW.version = {version}
    BEGIN INSERT INTO test_fault VALUES (-1); END;
"""
"""SQLite refuses the COMMIT of a transaction that accepted this version of a list."""


def offer_copy(world: World, monkeypatch: pytest.MonkeyPatch, *, version: int) -> None:
    """A peer offers its copy of `base` at COPY_PATH, at ``version``."""
    copy = ListCopy(url=world.sim.url(COPY_PATH), peer="peer-a", version=version)

    def list_copies(_self: object, _site: Site, lid: str) -> list[ListCopy]:
        return [copy] if lid == LIST_UUID else []

    monkeypatch.setattr(SiteFederation, "list_copies", list_copies)


def failing_transfer_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recording how a peer did fails, as a write to the peers table can."""

    def record_transfer(_self: object, _site: Site, _source: ByteSource, **_: object) -> None:
        raise StoreError("cannot write the database: disk I/O error (test)")

    monkeypatch.setattr(SiteFederation, "record_transfer", record_transfer)


def sync_json(world: World, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    capsys.readouterr()
    code = world.vmic("sync", "--no-download", "--json")
    return code, json.loads(capsys.readouterr().out)


def current_version(world: World, list_id: str = LIST_UUID) -> int | None:
    with world.store() as store:
        current = store.current_list(list_id)
    return None if current is None else current.version


def test_a_version_committed_before_a_later_step_fails_is_reported_as_accepted(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1)
    assert world.subscribe() == 0
    world.publish(version=2, images=(1, 2, 3))
    offer_copy(world, monkeypatch, version=3)
    world.sim.publish(COPY_PATH, b"not a list")  # the copy is rejected, then recording fails
    failing_transfer_record(monkeypatch)

    code, report = sync_json(world, capsys)

    assert code == ExitCode.PROBLEMS
    assert report["lists"] == [{"subscription": "base", "outcome": "accepted", "version": 2}]
    changes = report["changes"]
    assert isinstance(changes, list)
    assert {c["image_id"]: c["what"] for c in changes} == {image_uuid(3): "new"}
    problems = report["problems"]
    assert isinstance(problems, list)
    assert any("disk I/O error (test)" in p["message"] for p in problems)
    assert current_version(world) == 2
    with world.store() as store:
        assert store.history("base")[-1].outcome == "failed"  # the later step's failure


def test_a_version_in_a_batch_that_committed_is_reported_when_a_later_batch_fails(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1)
    assert world.subscribe() == 0
    world.publish(version=2, images=(1, 2, 3))
    world.publish(version=3, images=(1, 2, 3, 4), path=COPY_PATH)
    offer_copy(world, monkeypatch, version=3)
    monkeypatch.setattr(batch, "WAIT", 0)  # the endorser's version commits before the copy's
    sql(world, BREAK_COMMIT.format(version=3))

    code, report = sync_json(world, capsys)

    assert code == ExitCode.PROBLEMS
    assert report["lists"] == [{"subscription": "base", "outcome": "accepted", "version": 2}]
    changes = report["changes"]
    assert isinstance(changes, list)
    assert {c["image_id"]: c["what"] for c in changes} == {image_uuid(3): "new"}
    assert current_version(world) == 2  # the copy's version 3 was not committed
    assert image_uuid(4) not in world.states()


def test_a_failed_commit_of_a_list_whose_later_step_failed_is_reported(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1)
    assert world.subscribe() == 0
    world.publish(version=2, images=(1, 2, 3))
    offer_copy(world, monkeypatch, version=3)
    world.sim.publish(COPY_PATH, b"not a list")
    failing_transfer_record(monkeypatch)
    sql(world, BREAK_COMMIT.format(version=2))
    before = trusted_rows(world.snapshot())
    capsys.readouterr()

    assert world.vmic("sync", "--no-download") == ExitCode.PROBLEMS

    err = capsys.readouterr().err
    assert "base: StoreError: what the sync of the list wrote was not committed" in err
    assert "disk I/O error (test)" in err
    assert trusted_rows(world.snapshot()) == before
    assert current_version(world) == 1


def test_a_failed_commit_nobody_waits_for_is_kept_for_the_report(world: World) -> None:
    """Also the commit when the group closes: a member that never waits (its task gone)."""
    two_subscriptions(world)
    v2 = world.publish(version=2, images=(1, 2, 3))
    sql(world, BREAK_COMMIT.format(version=2))
    before = trusted_rows(world.snapshot())
    config = site_config.load(world.home.config)
    trust = TrustStore.from_directory(config.trust_dir)

    async def accept_without_waiting() -> tuple[list[batch.Batch], batch.Batch | None]:
        with Store.open(world.home.database) as store:
            site = Site(world.home, config, store, now=world.now)
            sub = store.subscription("base")
            assert sub is not None
            current = site.current_list(sub.list_id)
            verified = verify_list(v2, trust=trust, pins=sub.pins, now=world.now, crl=config.crl)
            with site.commit_group(most=100, wait=3600) as group:
                accepted = await site.accept_list_async(sub, verified, current=current)
            return group.unheard(), accepted.batch

    unheard, joined = asyncio.run(accept_without_waiting())

    assert unheard == [joined]
    assert joined is not None
    assert joined.error is not None
    assert "FOREIGN KEY" in joined.error.message
    assert trusted_rows(world.snapshot()) == before


def test_an_error_moving_cache_files_after_a_commit_is_a_site_problem(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(site_cmd, "utcnow", lambda: world.now)  # names the retired file
    world.publish(version=1, images=(1, 2))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    world.publish(version=2, images=(2,))  # image 1 withdrawn: its file leaves the cache
    sha512 = hashlib.sha512(image_bytes(1)).hexdigest()
    cached = world.home.images / sha512
    in_the_way = world.home.expired / f"{sha512}.{world.now.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    in_the_way.mkdir()
    capsys.readouterr()

    assert world.vmic("sync", "--no-download") == ExitCode.PROBLEMS

    err = capsys.readouterr().err
    assert "vmic sync: cache: after a commit of accepted lists: cannot move" in err
    assert "base:" not in err  # the list's commit holds: not its problem
    assert current_version(world) == 2
    assert world.states()[image_uuid(1)] == "withdrawn"
    assert cached.is_file()

    in_the_way.rmdir()
    assert world.vmic("sync", "--no-download") == 0
    assert not cached.exists()  # the next run's reconciliation moves it
    assert in_the_way.is_file()


def test_a_failed_commit_leaves_no_success_for_a_list_taken_from_a_peer(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1)
    assert world.subscribe() == 0
    world.publish(version=2, images=(1, 2, 3), path=COPY_PATH)
    world.sim.fault("/lists/base.atom", status=503)  # the endorser is unreachable
    offer_copy(world, monkeypatch, version=2)
    monkeypatch.setattr(batch, "MOST", 1)  # the commit comes before the attempt is written
    sql(world, BREAK_COMMIT.format(version=2))
    sql(world, "UPDATE subscriptions SET last_success = '2001-02-03T04:05:06Z'")
    before = trusted_rows(world.snapshot())
    capsys.readouterr()

    assert world.vmic("sync", "--no-download") == ExitCode.PROBLEMS

    assert "base: StoreError" in capsys.readouterr().err
    assert trusted_rows(world.snapshot()) == before
    with world.store() as store:
        sub = store.subscription("base")
        assert sub is not None
        assert sub.last_success is not None
        assert sub.last_success.year == 2001  # `vmic status` shows no success now
        assert store.history("base")[-1].outcome == "failed"


def test_a_list_whose_version_in_force_was_rolled_back_while_verified_is_not_accepted(
    world: World,
) -> None:
    """`current` was read from a batch that a write error then rolled back."""
    two_subscriptions(world)
    v2 = world.publish(version=2, images=(1, 2, 3))
    v3 = world.publish(version=3, images=(1, 2, 3, 4))
    # A write of `other` that rolls back the whole transaction (as SQLITE_FULL would).
    sql(
        world,
        """
        CREATE TRIGGER test_fault BEFORE INSERT ON history WHEN NEW.subscription = 'other'
        BEGIN SELECT RAISE(ROLLBACK, 'test fault'); END;
        """,
    )
    before = trusted_rows(world.snapshot())
    config = site_config.load(world.home.config)
    trust = TrustStore.from_directory(config.trust_dir)

    def verify(raw: bytes, previous: Site, list_id: str) -> VerifiedList:
        sub = previous.store.subscription_for_list(list_id)
        assert sub is not None
        return verify_list(
            raw,
            trust=trust,
            pins=sub.pins,
            now=world.now,
            crl=config.crl,
            previous=previous_of(previous.current_list(list_id)),
        )

    async def accept_on_a_stale_current() -> None:
        with Store.open(world.home.database) as store:
            site = Site(world.home, config, store, now=world.now)
            base, other = store.subscription("base"), store.subscription("other")
            assert base is not None
            assert other is not None
            with site.commit_group(most=100, wait=3600) as group:
                await site.accept_list_async(
                    base, verify(v2, site, LIST_UUID), current=site.current_list(LIST_UUID)
                )
                current = site.current_list(LIST_UUID)  # version 2, in the open batch
                verified = verify(v3, site, LIST_UUID)
                with pytest.raises(StoreError):
                    site.reject_list(other, SignatureError("bad"), sha256=None)
                assert not store.in_transaction  # version 2 went with it
                with pytest.raises(StoreError, match="version in force changed"):
                    await site.accept_list_async(base, verified, current=current)
            with pytest.raises(StoreError, match="rolled back"):
                await group.settle("base")  # what it wrote first went with the batch

    asyncio.run(accept_on_a_stale_current())

    assert trusted_rows(world.snapshot()) == before
    assert current_version(world) == 1
    assert current_version(world, OTHER_ID) == 1


def test_another_process_writing_while_a_batch_only_read_waits_for_its_commit(
    world: World, tmp_path: Path
) -> None:
    """`vmic serve` marks an image missing between two members of a batch, the first of
    which only read (the version in force again, from a peer): the batch holds the write
    lock from its start, so the other writer waits instead of the batch failing."""
    two_subscriptions(world)
    publish_version_2(world)
    with world.store() as store:
        held = store.current_list(LIST_UUID)
    assert held is not None
    v1 = (world.home.root / held.path).read_bytes()  # the very bytes in force: nothing to note
    config = site_config.load(world.home.config)
    trust = TrustStore.from_directory(config.trust_dir)
    wrote = threading.Event()
    outcome: list[BaseException | None] = []

    def serve_writes() -> None:  # another process's connection, as `vmic serve` opens it
        conn = sqlite3.connect(world.home.database, timeout=30, isolation_level=None)
        try:
            conn.execute(
                "UPDATE images SET reason = 'missing (test)' WHERE image_id = ?", (image_uuid(1),)
            )
            outcome.append(None)
        except sqlite3.Error as exc:
            outcome.append(exc)
        finally:
            conn.close()
            wrote.set()

    async def two_members() -> None:
        with Store.open(world.home.database) as store:
            site = Site(world.home, config, store, now=world.now)
            base, other = store.subscription("base"), store.subscription("other")
            assert base is not None
            assert other is not None
            current = site.current_list(LIST_UUID)
            verified = verify_list(v1, trust=trust, pins=base.pins, now=world.now, crl=config.crl)
            with site.commit_group(most=100, wait=3600) as group:
                await site.accept_list_async(base, verified, current=current)  # reads only
                writer = threading.Thread(target=serve_writes)
                writer.start()
                await asyncio.sleep(0.2)  # a deferred batch lets the writer commit now
                site.reject_list(other, SignatureError("bad"), sha256=None)
            await asyncio.to_thread(writer.join, 30)
            await group.settle("base")
            await group.settle("other")

    asyncio.run(two_members())

    assert wrote.is_set()
    assert outcome == [None]
    with world.store() as store:
        assert store.history("other")[-1].outcome == "rejected"
        image = store.image(image_uuid(1))
        assert image is not None
        assert image.reason == "missing (test)"
