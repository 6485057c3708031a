"""The site's SQLite store: opening it safely, migrations, transactions, typed rows.

Opening checks the file before trusting it (``PRAGMA quick_check``); a
damaged or truncated database stops the run with a clear error and is never
replaced by an empty one (that would forget which list versions were seen
and reopen rollback). The schema version lives in ``PRAGMA user_version``;
each migration runs once, in a transaction. WAL mode lets the read-only
commands run while a sync writes.

Callers get frozen dataclasses (:mod:`site_agent.records`), never raw rows;
all writes of one logical step go through :meth:`Store.atomic`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from keys.errors import StoreError
from site_agent.records import (
    ACTIVE_STATES,
    Delivery,
    EventRecord,
    HistoryRecord,
    ImageRecord,
    ListVersion,
    Subscription,
    iso,
)
from site_agent.schema import SCHEMA, SCHEMA_VERSION

T = TypeVar("T")

__all__ = ["SCHEMA", "SCHEMA_VERSION", "TRUST_PROBLEMS", "Store", "trust_problems"]

_VERSION_TABLES = {"lists": "lists", "peer_exports": "peer_exports"}
TRUST_PROBLEMS = "trust_problems"
"""Meta key: the trust directory's unusable files ("name: reason") as the last sync saw them."""
"""The tables of accepted versions: endorsers' lists, and peers' exports apart from them."""


def _require_ok(check: tuple[Any, ...] | None, path: Path) -> None:
    if not check or check[0] != "ok":
        raise StoreError(
            f"the database {path} is damaged: {check[0] if check else 'no answer to quick_check'}",
            hint="restore it from a backup; vmic never replaces it with an empty one",
        )


class Store:
    """One open database; use as a context manager or call :meth:`close`."""

    def __init__(self, db: Database, path: Path) -> None:
        self.db = db
        self.path = path

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> Store:
        if not create and not path.is_file():
            raise StoreError(f"the database {path} is missing")
        if path.exists() and path.stat().st_size == 0:
            # SQLite would take an empty file for a new database and start over.
            raise StoreError(
                f"the database {path} is empty",
                hint="restore it from a backup; vmic never starts over with an empty one",
            )
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        db = Database(conn)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            check = conn.execute("PRAGMA quick_check").fetchone()
            _require_ok(check, path)
            store = cls(db, path)
            store._check_schema_version()  # before anything writes to the file
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            store._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"the database {path} is damaged or not a database ({exc})",
                hint="restore it from a backup; vmic never replaces it with an empty one",
            ) from exc
        except StoreError:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_schema_version(self) -> int:
        current = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the database {self.path} has schema {current}, newer than this vmic "
                f"({SCHEMA_VERSION})",
                hint="run the vmic version that last wrote it",
            )
        return current

    def _migrate(self) -> None:
        current = self._check_schema_version()
        for version in range(current, SCHEMA_VERSION):
            with self.db.atomic():
                for statement in SCHEMA[version].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {version + 1}")

    @contextmanager
    def atomic(self) -> Iterator[None]:
        try:
            with self.db.atomic():
                yield
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the database {self.path}: {exc}") from exc

    @property
    def in_transaction(self) -> bool:
        return self.db.conn.in_transaction

    def begin(self) -> None:
        """Open a transaction by hand (:class:`site_agent.batch.CommitGroup`); writes and
        :meth:`atomic` blocks join it until :meth:`commit`. It takes the write lock at once
        (``IMMEDIATE``): a deferred transaction that only read would keep a read snapshot
        across the group's awaits, and its first write after another process committed
        (`vmic serve`) would fail with ``SQLITE_BUSY_SNAPSHOT`` instead of waiting."""
        self._run("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._run("COMMIT")

    def rollback(self) -> None:
        """Roll back the open transaction, if any (never raises: used on the way out)."""
        try:
            if self.db.conn.in_transaction:
                self.db.conn.rollback()
        except sqlite3.Error:
            pass  # a connection that cannot roll back discards the transaction on close

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows of one SELECT of this module (on the connection itself: sqlite-utils'
        ``query`` wraps each in a savepoint, two statements more per read, in case the SQL
        is not a query)."""
        try:
            cursor = self.db.conn.execute(sql, params)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the database {self.path}: {exc}") from exc

    def _one(
        self, sql: str, params: tuple[Any, ...], make: Callable[[dict[str, Any]], T]
    ) -> T | None:
        rows = self._rows(sql, params)
        return make(rows[0]) if rows else None

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the database {self.path}: {exc}") from exc

    # -- site-wide values (the export's state, the trust directory's problems) -------
    def meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._run(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- subscriptions ---------------------------------------------------------
    def subscriptions(self) -> list[Subscription]:
        return [
            Subscription.from_row(r)
            for r in self._rows("SELECT * FROM subscriptions ORDER BY name")
        ]

    def subscription_names(self) -> set[str]:
        return {str(r["name"]) for r in self._rows("SELECT name FROM subscriptions")}

    def subscription(self, name: str) -> Subscription | None:
        return self._one(
            "SELECT * FROM subscriptions WHERE name = ?", (name,), Subscription.from_row
        )

    def subscription_for_list(self, list_id: str) -> Subscription | None:
        return self._one(
            "SELECT * FROM subscriptions WHERE list_id = ?", (list_id,), Subscription.from_row
        )

    def add_subscription(self, sub: Subscription) -> None:
        self._run(
            "INSERT INTO subscriptions (name, url, list_id, self_url, pins, auto_approve, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                sub.name,
                sub.url,
                sub.list_id,
                sub.self_url,
                sub.pins_json(),
                int(sub.auto_approve),
                iso(sub.created),
            ),
        )

    def remove_subscription(self, name: str) -> None:
        self._run("DELETE FROM subscriptions WHERE name = ?", (name,))

    def record_attempt(
        self,
        name: str,
        *,
        at: datetime,
        ok: bool,
        error: str | None = None,
        kind: str | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        validators: bool = False,
        endorser_version: int | None = None,
    ) -> None:
        """``endorser_version``: the version the endorser's own URL served, when it did."""
        sets = ["last_attempt = ?", "last_error = ?", "last_error_kind = ?"]
        params: list[Any] = [iso(at), error, kind]
        if ok:
            sets.append("last_success = ?")
            params.append(iso(at))
        if endorser_version is not None:
            sets.append("endorser_version = MAX(COALESCE(endorser_version, 0), ?)")
            params.append(endorser_version)
        if validators:
            sets += ["etag = ?", "last_modified = ?"]
            params += [etag, last_modified]
        self._run(f"UPDATE subscriptions SET {', '.join(sets)} WHERE name = ?", (*params, name))  # noqa: S608 - column names and ? marks only

    def record_unchanged(self, names: Sequence[str], *, at: datetime) -> None:
        """A successful attempt for each of ``names`` (lists that answered 304), in one
        statement per few hundred names; the caller makes it one transaction."""
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            sql = (
                "UPDATE subscriptions SET last_attempt = ?, last_success = ?,"  # noqa: S608 - ? marks only
                f" last_error = NULL, last_error_kind = NULL WHERE name IN ({marks})"
            )
            self._run(sql, (iso(at), iso(at), *chunk))

    # -- lists and history -------------------------------------------------------
    def current_list(self, list_id: str) -> ListVersion | None:
        """The highest accepted version of an endorser's list (its rollback state)."""
        return self._current("lists", list_id)

    def current_export(self, list_id: str) -> ListVersion | None:
        """The highest accepted version of a peer's export: a realm of its own (THREATS 35)."""
        return self._current("peer_exports", list_id)

    def content_digests(self) -> dict[tuple[str, int], str | None]:
        """The signed-content digest of every accepted version of every list (one read)."""
        rows = self._rows("SELECT list_id, version, content_sha256 FROM lists")
        return {(str(r["list_id"]), int(r["version"])): r["content_sha256"] for r in rows}

    def list_version(self, list_id: str, version: int) -> ListVersion | None:
        """One accepted version of an endorser's list."""
        return self._one(
            "SELECT * FROM lists WHERE list_id = ? AND version = ?",
            (list_id, version),
            ListVersion.from_row,
        )

    def _current(self, table: str, list_id: str) -> ListVersion | None:
        return self._one(
            f"SELECT * FROM {_VERSION_TABLES[table]} WHERE list_id = ?"  # noqa: S608 - fixed names
            " ORDER BY version DESC LIMIT 1",
            (list_id,),
            ListVersion.from_row,
        )

    def current_lists(self) -> dict[str, ListVersion]:
        """The highest accepted version of every endorser's list, by list id (one read)."""
        rows = self._rows(
            "SELECT lists.* FROM lists JOIN (SELECT list_id, MAX(version) AS version FROM lists"
            " GROUP BY list_id) AS top USING (list_id, version)"
        )
        return {str(r["list_id"]): ListVersion.from_row(r) for r in rows}

    def known_list_ids(self) -> set[str]:
        """Every endorser list id the site has met: subscribed, accepted or named by an image."""
        rows = self._rows(
            "SELECT list_id FROM subscriptions UNION SELECT list_id FROM lists"
            " UNION SELECT list_id FROM images"
        )
        return {str(r["list_id"]) for r in rows}

    def add_list_version(self, record: ListVersion) -> None:
        self._insert_version("lists", record)

    def add_export_version(self, record: ListVersion) -> None:
        self._insert_version("peer_exports", record)

    def _insert_version(self, table: str, record: ListVersion) -> None:
        self._run(
            f"INSERT INTO {_VERSION_TABLES[table]} (list_id, version, sha256, updated, expires,"  # noqa: S608 - fixed names
            " accepted_at, path, subscription, signer, content_sha256)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.list_id,
                record.version,
                record.sha256,
                iso(record.updated),
                iso(record.expires),
                iso(record.accepted_at),
                record.path,
                record.subscription,
                record.signer,
                record.content_sha256,
            ),
        )

    def set_content_sha256(self, list_id: str, version: int, content_sha256: str) -> None:
        """Record the signed-content digest of a version accepted before it was kept."""
        self._run(
            "UPDATE lists SET content_sha256 = ? WHERE list_id = ? AND version = ?",
            (content_sha256, list_id, version),
        )

    def mark_expiry_reported(self, list_id: str, version: int) -> None:
        self._run(
            "UPDATE lists SET expired_reported = 1 WHERE list_id = ? AND version = ?",
            (list_id, version),
        )

    def add_history(self, record: HistoryRecord) -> None:
        self._run(
            "INSERT INTO history (subscription, list_id, at, outcome, version, sha256, reason,"
            " kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.subscription,
                record.list_id,
                iso(record.at),
                record.outcome,
                record.version,
                record.sha256,
                record.reason,
                record.kind,
            ),
        )

    def last_history(self, subscription: str) -> HistoryRecord | None:
        return self._one(
            "SELECT * FROM history WHERE subscription = ? ORDER BY id DESC LIMIT 1",
            (subscription,),
            HistoryRecord.from_row,
        )

    def seen_sha256(self, subscription: str, sha256: str) -> bool:
        """Whether the history of ``subscription`` names these bytes already."""
        rows = self._rows(
            "SELECT 1 FROM history WHERE subscription = ? AND sha256 = ? LIMIT 1",
            (subscription, sha256),
        )
        return bool(rows)

    def history(self, subscription: str | None = None) -> list[HistoryRecord]:
        if subscription is None:
            rows = self._rows("SELECT * FROM history ORDER BY id")
        else:
            rows = self._rows(
                "SELECT * FROM history WHERE subscription = ? ORDER BY id", (subscription,)
            )
        return [HistoryRecord.from_row(r) for r in rows]

    # -- images --------------------------------------------------------------------
    def image(self, image_id: str) -> ImageRecord | None:
        return self._one(
            "SELECT * FROM images WHERE image_id = ?", (image_id,), ImageRecord.from_row
        )

    def images(
        self,
        *,
        state: str | None = None,
        list_id: str | None = None,
        subscription: str | None = None,
    ) -> list[ImageRecord]:
        clauses, params = [], []
        for column, value in (
            ("state", state),
            ("list_id", list_id),
            ("subscription", subscription),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(f"SELECT * FROM images{where} ORDER BY title, image_id", tuple(params))  # noqa: S608 - column names and ? marks only
        return [ImageRecord.from_row(r) for r in rows]

    def list_images(self, list_id: str, *, also: Sequence[str]) -> dict[str, ImageRecord]:
        """Every image of ``list_id`` (in any state) and, of any list, those among ``also``,
        by id: one statement when ``also`` names images of this list only."""
        rows = self._rows("SELECT * FROM images WHERE list_id = ?", (list_id,))
        found = {str(r["image_id"]): ImageRecord.from_row(r) for r in rows}
        found.update(self.images_by_id([i for i in also if i not in found]))
        return found

    def images_by_id(self, image_ids: Sequence[str]) -> dict[str, ImageRecord]:
        """The stored images among ``image_ids``, by id: one statement per few hundred ids."""
        found: dict[str, ImageRecord] = {}
        for start in range(0, len(image_ids), 500):
            chunk = image_ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._rows(f"SELECT * FROM images WHERE image_id IN ({marks})", tuple(chunk))  # noqa: S608 - ? marks only
            found.update((str(r["image_id"]), ImageRecord.from_row(r)) for r in rows)
        return found

    def images_with_expiry(self, state: str) -> list[ImageRecord]:
        """The images in ``state`` whose entry gives an expiry of its own (no other image
        can expire by itself), in the order of :meth:`images`."""
        rows = self._rows(
            "SELECT * FROM images WHERE state = ? AND json_extract(entry, '$.expires') IS NOT NULL"
            " ORDER BY title, image_id",
            (state,),
        )
        return [ImageRecord.from_row(r) for r in rows]

    def active_images(self, list_id: str) -> list[ImageRecord]:
        marks = ", ".join("?" for _ in ACTIVE_STATES)
        rows = self._rows(
            f"SELECT * FROM images WHERE list_id = ? AND state IN ({marks})",  # noqa: S608 - column names and ? marks only
            (list_id, *ACTIVE_STATES),
        )
        return [ImageRecord.from_row(r) for r in rows]

    def sha512_in_use(self, sha512: str, *, states: tuple[str, ...]) -> bool:
        marks = ", ".join("?" for _ in states)
        rows = self._rows(
            f"SELECT 1 FROM images WHERE sha512 = ? AND state IN ({marks}) LIMIT 1",  # noqa: S608 - column names and ? marks only
            (sha512, *states),
        )
        return bool(rows)

    def put_image(self, record: ImageRecord) -> None:
        self._run(
            "INSERT INTO images (image_id, list_id, subscription, sha512, size, url, title, state,"
            " shareable, reason, first_seen, changed_at, approved_at, list_version, entry)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (image_id) DO UPDATE SET list_id = excluded.list_id,"
            " subscription = excluded.subscription, sha512 = excluded.sha512,"
            " size = excluded.size, url = excluded.url, title = excluded.title,"
            " state = excluded.state, shareable = excluded.shareable, reason = excluded.reason,"
            " changed_at = excluded.changed_at, approved_at = excluded.approved_at,"
            " list_version = excluded.list_version, entry = excluded.entry",
            (
                record.image_id,
                record.list_id,
                record.subscription,
                record.sha512,
                record.size,
                record.url,
                record.title,
                record.state,
                int(record.shareable),
                record.reason,
                iso(record.first_seen),
                iso(record.changed_at),
                iso(record.approved_at),
                record.list_version,
                json.dumps(record.entry, sort_keys=True),
            ),
        )

    # -- events and their deliveries -------------------------------------------
    def add_event(
        self,
        *,
        at: datetime,
        type: str,  # noqa: A002 - the event's type, as in the CLI and hooks
        subscription: str | None,
        image_id: str | None,
        data: dict[str, Any],
        hooks: list[str],
    ) -> int:
        cursor = self._run(
            "INSERT INTO events (at, type, subscription, image_id, data) VALUES (?, ?, ?, ?, ?)",
            (iso(at), type, subscription, image_id, json.dumps(data, sort_keys=True)),
        )
        event_id = int(cursor.lastrowid or 0)
        for hook in hooks:
            self._run("INSERT INTO deliveries (event_id, hook) VALUES (?, ?)", (event_id, hook))
        return event_id

    def events(self, *, since: int = 0) -> list[EventRecord]:
        rows = self._rows("SELECT * FROM events WHERE id > ? ORDER BY id", (since,))
        return [EventRecord.from_row(r) for r in rows]

    def pending_deliveries(self) -> list[tuple[EventRecord, Delivery]]:
        rows = self._rows(
            "SELECT e.*, d.hook, d.attempts, d.delivered_at, d.last_error, d.gave_up"
            " FROM deliveries d JOIN events e ON e.id = d.event_id"
            " WHERE d.delivered_at IS NULL AND d.gave_up = 0 ORDER BY e.id, d.hook"
        )
        return [(EventRecord.from_row(r), Delivery.from_row(r)) for r in rows]

    def record_delivery(
        self, event_id: int, hook: str, *, at: datetime, error: str | None, give_up: bool
    ) -> None:
        self._run(
            "UPDATE deliveries SET attempts = attempts + 1, delivered_at = ?, last_error = ?,"
            " gave_up = ? WHERE event_id = ? AND hook = ?",
            (iso(at) if error is None else None, error, int(give_up), event_id, hook),
        )


def trust_problems(store: Store) -> list[str]:
    """The trust directory's unusable files as the last sync recorded them."""
    text = store.meta(TRUST_PROBLEMS)
    try:
        found = json.loads(text) if text else []
    except ValueError:
        return []
    return [str(p) for p in found] if isinstance(found, list) else []
