"""The site's SQLite store: creation, refusal of damaged files, transactions, typed rows.

THREATS 32 (a corrupted, truncated, foreign or newer database stops the agent
with a clear error; the file is never replaced or rewritten) and 30-31 (writes
of one step commit together or not at all). Every database here is a real
SQLite file in ``tmp_path``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keys.dn import DistinguishedName
from keys.errors import StoreError
from keys.xmlsig import SignerPin
from site_agent.records import (
    APPROVED,
    AVAILABLE,
    NEW,
    REFUSED,
    WITHDRAWN,
    ImageRecord,
    ListVersion,
    Subscription,
    iso,
)
from site_agent.store import SCHEMA, SCHEMA_VERSION, Store

LIST_ID = "6f2a7a52-2a36-4c57-9c52-3c1f5d1f3d51"
OTHER_LIST = "0b7e7c0e-58a5-4a8b-8a43-6a3c2d1f0e99"
JANE = "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser"
CA = "/DC=org/DC=vmic-test/CN=vmic Test Root CA"


def _sub(now: datetime, name: str = "egi", list_id: str = LIST_ID, **kw: Any) -> Subscription:
    return Subscription(
        name=name,
        url=f"https://lists.example.org/{name}.atom",
        list_id=list_id,
        self_url=f"https://lists.example.org/{name}.atom",
        pins=(
            SignerPin(
                subject=DistinguishedName.parse_slash(JANE),
                issuer=DistinguishedName.parse_slash(CA),
            ),
        ),
        auto_approve=False,
        created=now,
        **kw,
    )


def _list_version(now: datetime, version: int, list_id: str = LIST_ID) -> ListVersion:
    return ListVersion(
        list_id=list_id,
        version=version,
        sha256=f"{version:064x}",
        updated=now - timedelta(hours=1),
        expires=now + timedelta(days=7),
        accepted_at=now,
        path=f"lists/{list_id}/{version}-{version:064x}.atom",
        subscription="egi",
        signer=JANE,
    )


def _image(now: datetime, n: int, *, state: str = NEW, list_id: str = LIST_ID) -> ImageRecord:
    return ImageRecord(
        image_id=f"00000000-0000-4000-8000-{n:012d}",
        list_id=list_id,
        subscription="egi",
        sha512=f"{n:0128x}",
        size=1000 + n,
        url=f"https://images.example.org/{n}.qcow2",
        title=f"Image {n}",
        state=state,
        shareable=False,
        reason=None,
        first_seen=now,
        changed_at=now,
        approved_at=None,
        list_version=1,
        entry={"title": f"Image {n}", "size": 1000 + n, "expires": None},
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "vmic.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store.open(db_path, create=True) as opened:
        yield opened


def _filled(db_path: Path, now: datetime, *, rows: int = 50) -> None:
    """A store with a subscription, some list versions and enough images to span many pages."""
    with Store.open(db_path, create=True) as store, store.atomic():
        store.add_subscription(_sub(now))
        for version in (1, 2, 3):
            store.add_list_version(_list_version(now, version))
        for n in range(rows):
            image = _image(now, n)
            store.put_image(
                ImageRecord(**{**_fields(image), "entry": {"summary": "x" * 2000, "n": n}})
            )


def _fields(image: ImageRecord) -> dict[str, Any]:
    return {name: getattr(image, name) for name in ImageRecord.__slots__}


def _sidecars(db_path: Path) -> list[str]:
    return sorted(p.name for p in db_path.parent.iterdir() if p.name != db_path.name)


# -- opening ---------------------------------------------------------------------------


def test_open_with_create_makes_a_wal_database_at_the_current_schema(db_path: Path) -> None:
    Store.open(db_path, create=True).close()

    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"subscriptions", "lists", "history", "images", "events", "deliveries"} <= tables


def test_reopening_keeps_the_rows_and_does_not_migrate_again(db_path: Path, now: datetime) -> None:
    _filled(db_path, now, rows=3)

    with Store.open(db_path) as store:
        assert [s.name for s in store.subscriptions()] == ["egi"]
        current = store.current_list(LIST_ID)
        assert current is not None
        assert current.version == 3
        assert len(store.images()) == 3
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_schema_2_database_is_migrated_and_keeps_its_rollback_state(
    db_path: Path, now: datetime
) -> None:
    """A site from before schema 3: its list versions stay, without a content digest; the
    versions of peers' exports move to a realm of their own (schema 4)."""
    export_id = "0e0e0e0e-0000-4000-8000-000000000001"
    conn = sqlite3.connect(db_path)
    try:
        for step in SCHEMA[:2]:
            conn.executescript(step)
        for list_id, version, holder in ((LIST_ID, 7, "egi"), (export_id, 3, "peer:site-b")):
            conn.execute(
                "INSERT INTO lists (list_id, version, sha256, updated, expires, accepted_at, path,"
                " subscription, signer) VALUES (?, ?, ?, ?, ?, ?, 'lists/x', ?, '/CN=J')",
                (list_id, version, "ab" * 32, iso(now), iso(now), iso(now), holder),
            )
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
    finally:
        conn.close()

    with Store.open(db_path) as store:
        current = store.current_list(LIST_ID)
        export = store.current_export(export_id)
        assert store.current_list(export_id) is None
        assert store.current_export(LIST_ID) is None
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    assert current is not None
    assert (current.version, current.sha256, current.content_sha256) == (7, "ab" * 32, None)
    assert export is not None
    assert (export.version, export.subscription) == (3, "peer:site-b")


def test_open_without_create_refuses_a_missing_file_and_creates_nothing(db_path: Path) -> None:
    with pytest.raises(StoreError, match="missing"):
        Store.open(db_path)

    assert not db_path.exists()
    assert list(db_path.parent.iterdir()) == []


def test_open_refuses_a_truncated_database_and_leaves_the_file_byte_identical(
    db_path: Path, now: datetime
) -> None:
    _filled(db_path, now, rows=200)
    size = db_path.stat().st_size
    assert size > 64 * 1024  # many pages, so half of them really are gone
    with db_path.open("r+b") as handle:
        handle.truncate(size // 2)
    before = db_path.read_bytes()

    with pytest.raises(StoreError, match="damaged") as caught:
        Store.open(db_path)

    assert str(db_path) in caught.value.message
    assert "backup" in caught.value.hint
    assert db_path.read_bytes() == before
    assert _sidecars(db_path) == []


def test_open_refuses_a_file_of_random_bytes_and_leaves_it_byte_identical(
    db_path: Path,
) -> None:
    db_path.write_bytes(os.urandom(16 * 1024))
    before = db_path.read_bytes()

    with pytest.raises(StoreError, match="not a database"):
        Store.open(db_path)
    with pytest.raises(StoreError, match="not a database"):
        Store.open(db_path, create=True)  # `vmic site init` must not start over either

    assert db_path.read_bytes() == before
    assert _sidecars(db_path) == []


def test_open_refuses_a_newer_schema_and_leaves_the_file_byte_identical(
    db_path: Path, now: datetime
) -> None:
    _filled(db_path, now, rows=3)
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = db_path.read_bytes()

    with pytest.raises(StoreError, match="newer than this vmic") as caught:
        Store.open(db_path, create=True)

    assert f"schema {SCHEMA_VERSION + 1}" in caught.value.message
    assert db_path.read_bytes() == before


def test_open_refuses_a_newer_rollback_journal_database_without_rewriting_it(
    db_path: Path,
) -> None:
    # A database that is not in WAL mode (restored with `sqlite3 .dump | sqlite3`, say):
    # refusing it must not first switch it to WAL, which rewrites its header.
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE lists (list_id TEXT, version INTEGER)")
    conn.execute("INSERT INTO lists VALUES (?, 7)", (LIST_ID,))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = db_path.read_bytes()

    with pytest.raises(StoreError, match="newer than this vmic"):
        Store.open(db_path)

    assert db_path.read_bytes() == before


def test_open_without_create_refuses_a_zero_byte_database_instead_of_starting_over(
    db_path: Path,
) -> None:
    # A database truncated to nothing (a full disk, a bad restore) is the worst case of
    # THREATS 32: re-creating the schema in it forgets every list version seen.
    db_path.write_bytes(b"")

    with pytest.raises(StoreError):
        Store.open(db_path).close()

    assert db_path.read_bytes() == b""


# -- transactions -------------------------------------------------------------------


class _BoomError(Exception):
    pass


def _write_everything_then_fail(store: Store, now: datetime) -> None:
    with store.atomic():
        store.add_list_version(_list_version(now, 1))
        store.put_image(_image(now, 1, state=APPROVED))
        store.put_image(_image(now, 2))
        store.remove_subscription("egi")
        store.add_event(
            at=now, type="image.new", subscription="egi", image_id=None, data={}, hooks=["h"]
        )
        raise _BoomError


def test_atomic_rolls_back_every_write_of_the_block_when_it_raises(
    store: Store, now: datetime
) -> None:
    store.add_subscription(_sub(now))
    store.put_image(_image(now, 1))

    with pytest.raises(_BoomError):
        _write_everything_then_fail(store, now)

    assert store.current_list(LIST_ID) is None
    assert [(i.image_id, i.state) for i in store.images()] == [(_image(now, 1).image_id, NEW)]
    assert [s.name for s in store.subscriptions()] == ["egi"]
    assert store.events() == []
    assert store.pending_deliveries() == []


def test_atomic_commits_the_block_when_it_ends_normally(db_path: Path, now: datetime) -> None:
    with Store.open(db_path, create=True) as store, store.atomic():
        store.add_subscription(_sub(now))
        store.add_list_version(_list_version(now, 1))

    with Store.open(db_path) as store:
        assert store.subscription("egi") is not None
        assert store.current_list(LIST_ID) is not None


def _subscribe_and_store_version_5_again(store: Store, now: datetime) -> None:
    with store.atomic():
        store.add_subscription(_sub(now))
        store.add_list_version(_list_version(now, 5))  # the same version again: refused


def test_a_refused_write_inside_atomic_raises_store_error_and_undoes_the_block(
    store: Store, now: datetime
) -> None:
    store.add_list_version(_list_version(now, 5))
    stored = store.current_list(LIST_ID)

    with pytest.raises(StoreError, match="cannot write"):
        _subscribe_and_store_version_5_again(store, now)

    assert store.subscriptions() == []
    assert store.current_list(LIST_ID) == stored


# -- subscriptions ----------------------------------------------------------------------


def test_subscription_round_trips_with_its_signer_pins(store: Store, now: datetime) -> None:
    pins = (
        SignerPin(
            subject=DistinguishedName.parse_slash(JANE),
            issuer=DistinguishedName.parse_slash(CA),
        ),
        SignerPin(
            subject=DistinguishedName.parse_slash(
                "/DC=org/DC=vmic-test/OU=Hosts/CN=host/ce.example.org+UID=ce01"
            ),
            issuer=DistinguishedName.parse_slash("/C=NL/O=Example, Inc./CN=Example CA 2"),
        ),
    )
    sub = Subscription(
        name="egi",
        url="https://lists.example.org/egi.atom",
        list_id=LIST_ID,
        self_url="https://lists.example.org/egi.atom",
        pins=pins,
        auto_approve=True,
        created=now,
    )

    store.add_subscription(sub)

    assert store.subscription("egi") == sub
    assert store.subscription_for_list(LIST_ID) == sub
    assert store.subscriptions() == [sub]
    loaded = store.subscription("egi")
    assert loaded is not None
    assert loaded.pins[1].subject.slash() == pins[1].subject.slash()
    assert store.subscription("other") is None


def test_a_second_subscription_to_the_same_list_is_refused(store: Store, now: datetime) -> None:
    store.add_subscription(_sub(now))

    with pytest.raises(StoreError):
        store.add_subscription(_sub(now, name="again"))

    assert [s.name for s in store.subscriptions()] == ["egi"]


def test_record_attempt_keeps_the_last_success_when_an_attempt_fails(
    store: Store, now: datetime
) -> None:
    store.add_subscription(_sub(now))
    later = now + timedelta(hours=1)

    store.record_attempt("egi", at=now, ok=True, etag='"v1"', last_modified="Mon", validators=True)
    store.record_attempt("egi", at=later, ok=False, error="HTTP 503", kind="HTTPStatusError")

    sub = store.subscription("egi")
    assert sub is not None
    assert sub.last_success == now
    assert sub.last_attempt == later
    assert (sub.last_error, sub.last_error_kind) == ("HTTP 503", "HTTPStatusError")
    assert (sub.etag, sub.last_modified) == ('"v1"', "Mon")


# -- lists ------------------------------------------------------------------------------


def test_current_list_is_the_highest_version_not_the_latest_inserted(
    store: Store, now: datetime
) -> None:
    for version in (2, 10, 9):  # 10 > 9 numerically, although "10" < "9" as text
        store.add_list_version(_list_version(now, version))
    store.add_list_version(_list_version(now, 99, list_id=OTHER_LIST))

    current = store.current_list(LIST_ID)

    assert current == _list_version(now, 10)
    assert store.current_list("no-such-list") is None


def test_the_same_list_version_cannot_be_stored_twice(store: Store, now: datetime) -> None:
    store.add_list_version(_list_version(now, 3))
    other = ListVersion(**_lv_fields(now, 3))  # same version, other bytes

    with pytest.raises(StoreError):
        store.add_list_version(other)

    assert store.current_list(LIST_ID) == _list_version(now, 3)


def _lv_fields(now: datetime, version: int) -> dict[str, Any]:
    original = _list_version(now, version)
    fields = {name: getattr(original, name) for name in ListVersion.__slots__}
    fields["sha256"] = "f" * 64
    return fields


# -- images -----------------------------------------------------------------------------


def test_put_image_inserts_then_updates_in_place_and_keeps_first_seen(
    store: Store, now: datetime
) -> None:
    first = _image(now, 1)
    store.put_image(first)
    later = now + timedelta(days=1)
    changed = ImageRecord(
        **{
            **_fields(first),
            "state": APPROVED,
            "shareable": True,
            "reason": "looks fine",
            "first_seen": later,  # ignored on update: the image was first seen before
            "changed_at": later,
            "approved_at": later,
            "list_version": 2,
            "entry": {"title": "Image 1", "size": 1001, "expires": "2099-01-01T00:00:00Z"},
        }
    )

    store.put_image(changed)

    assert store.images() == [ImageRecord(**{**_fields(changed), "first_seen": now})]
    loaded = store.image(first.image_id)
    assert loaded is not None
    assert loaded.expires == datetime.fromisoformat("2099-01-01T00:00:00+00:00")
    assert store.image("00000000-0000-4000-8000-999999999999") is None


def test_images_are_queried_by_state_list_and_subscription(store: Store, now: datetime) -> None:
    store.put_image(_image(now, 1, state=NEW))
    store.put_image(_image(now, 2, state=AVAILABLE))
    store.put_image(_image(now, 3, state=AVAILABLE, list_id=OTHER_LIST))
    store.put_image(_image(now, 4, state=WITHDRAWN))
    store.put_image(_image(now, 5, state=REFUSED))

    def ids(images: list[ImageRecord]) -> list[int]:
        return [int(i.image_id[-12:]) for i in images]

    assert ids(store.images()) == [1, 2, 3, 4, 5]
    assert ids(store.images(state=AVAILABLE)) == [2, 3]
    assert ids(store.images(state=AVAILABLE, list_id=LIST_ID)) == [2]
    assert ids(store.images(subscription="egi", state=NEW)) == [1]
    assert ids(store.images(subscription="nobody")) == []
    assert sorted(ids(store.active_images(LIST_ID))) == [1, 2, 5]
    assert store.sha512_in_use(f"{2:0128x}", states=(AVAILABLE,))
    assert not store.sha512_in_use(f"{4:0128x}", states=(AVAILABLE, APPROVED))


# -- events and deliveries ----------------------------------------------------------------


def _event(store: Store, now: datetime, hooks: list[str]) -> int:
    return store.add_event(
        at=now,
        type="image.available",
        subscription="egi",
        image_id=_image(now, 1).image_id,
        data={"title": "Image 1", "size": 1001},
        hooks=hooks,
    )


def _deliveries(store: Store) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in store.db.execute(
            "SELECT event_id, hook, attempts, delivered_at, last_error, gave_up"
            " FROM deliveries ORDER BY event_id, hook"
        ).fetchall()
    ]


def test_add_event_creates_one_pending_delivery_per_hook(store: Store, now: datetime) -> None:
    event_id = _event(store, now, ["glance", "mail", "audit"])
    silent = _event(store, now, [])

    pending = store.pending_deliveries()

    assert [(e.id, d.hook, d.attempts) for e, d in pending] == [
        (event_id, "audit", 0),
        (event_id, "glance", 0),
        (event_id, "mail", 0),
    ]
    event = pending[0][0]
    assert (event.type, event.subscription, event.at) == ("image.available", "egi", now)
    assert event.data == {"title": "Image 1", "size": 1001}
    assert [e.id for e in store.events()] == [event_id, silent]
    assert [e.id for e in store.events(since=event_id)] == [silent]


def test_a_delivered_event_leaves_the_pending_list(store: Store, now: datetime) -> None:
    event_id = _event(store, now, ["glance", "mail"])

    store.record_delivery(event_id, "glance", at=now, error=None, give_up=False)

    assert [d.hook for _e, d in store.pending_deliveries()] == ["mail"]
    assert _deliveries(store)[0] == (
        event_id,
        "glance",
        1,
        now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        None,
        0,
    )


def test_a_failed_delivery_stays_pending_with_its_error_and_attempt_count(
    store: Store, now: datetime
) -> None:
    event_id = _event(store, now, ["glance"])

    store.record_delivery(event_id, "glance", at=now, error="exit status 1", give_up=False)
    store.record_delivery(event_id, "glance", at=now, error="exit status 2", give_up=False)

    [(_event_record, delivery)] = store.pending_deliveries()
    assert delivery.attempts == 2
    assert delivery.last_error == "exit status 2"
    assert delivery.delivered_at is None
    assert not delivery.gave_up


def test_a_given_up_delivery_leaves_the_pending_list_but_keeps_its_error(
    store: Store, now: datetime
) -> None:
    event_id = _event(store, now, ["glance", "mail"])

    store.record_delivery(event_id, "glance", at=now, error="timed out after 5 s", give_up=True)

    assert [d.hook for _e, d in store.pending_deliveries()] == ["mail"]
    assert _deliveries(store) == [
        (event_id, "glance", 1, None, "timed out after 5 s", 1),
        (event_id, "mail", 0, None, None, 0),
    ]
