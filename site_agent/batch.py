"""Group commit: the lists one sync accepts or rejects share a transaction.

A commit costs an fsync of the database's log; one per list was most of what a
sync of many changed lists spent beyond fetching and verifying them. A
:class:`CommitGroup` opens a transaction when the first subscription joins it
and commits it when ``most`` have joined, ``wait`` seconds after it opened, or
when the group is closed, whichever comes first; then the next joiner opens a
new one. What holds, as with a commit per list:

- a list's bytes are written and fsynced before its rows are written (the
  caller's order, :meth:`site_agent.site.Site.accept_list_async`), so before
  the commit that names them; a crash before the commit leaves every list of
  the group unaccepted, with its old validators: the next run fetches, verifies
  and accepts it again (its file is written again under the same name);
- each subscription's rows are a savepoint of the group's transaction
  (:meth:`site_agent.store.Store.atomic` nests), so one that fails rolls back
  its own rows only;
- a subscription counts as done only once the commit holding its rows
  succeeded (:meth:`CommitGroup.settle`); if that commit fails, or a write
  error rolled the transaction back in the meantime, every subscription of the
  group fails with the store's error and nothing of the group holds;
- a failed commit that no subscription waits for (its members failed before
  waiting, or it holds only writes made outside :meth:`CommitGroup.join`:
  failure lines, attempts, peers' transfer counts) is kept
  (:meth:`CommitGroup.unheard`), and so is an error of the work done after
  a commit (:attr:`CommitGroup.after_errors`): the sync reports both as
  site-wide problems, so its exit code says something was not done.

Transactions begin with ``BEGIN IMMEDIATE``: a deferred one that only read
before an ``await`` would hold a read snapshot, and its first write after
another process committed (`vmic serve` marking an image missing) would fail
with ``SQLITE_BUSY_SNAPSHOT`` instead of waiting (:meth:`Store.begin`).

Everything runs on the event loop's thread, which owns the store's connection;
no savepoint is open across an ``await``, so a commit between two steps of the
loop always finds whole subscriptions only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from keys.errors import StoreError, VmicError
from site_agent.records import Change
from site_agent.store import Store

# Limits of one transaction of the group: they trade how much one failed commit takes
# with it, and how long a batch holds the database's write lock (``vmic serve`` waits for
# it, up to its 30 s busy timeout), against the fsyncs saved.
MOST = 64
"""Subscriptions per transaction at most: the one that makes it this full commits it."""
WAIT = 0.05
"""Seconds a transaction stays open for more subscriptions after the first joined it."""


@dataclass(slots=True, eq=False)  # by identity: two batches are never the same one
class Batch:
    """One transaction of the group: who joined it, and how its commit went."""

    joined: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    error: StoreError | None = None
    heard: bool = False
    """A member waited for the commit (:meth:`CommitGroup.settle`): its outcome reached one."""

    @property
    def committed(self) -> bool:
        return self.done.is_set() and self.error is None


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """A version the sync accepted (:meth:`site_agent.site.Site.accept_list_async`), and
    the group's transaction holding its rows (None: committed already)."""

    version: int
    new: bool
    """A new version, not the one in force again."""
    changes: list[Change]
    batch: Batch | None

    @property
    def committed(self) -> bool:
        return self.batch is None or self.batch.committed


class CommitGroup:
    def __init__(
        self,
        store: Store,
        *,
        most: int | None = None,
        wait: float | None = None,
        after: Callable[[], None],
    ) -> None:
        self._store = store
        self._most = MOST if most is None else most
        self._wait = WAIT if wait is None else wait
        self._after = after
        """Called after each successful commit (moving cache files no image uses)."""
        self._batch: Batch | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._members: dict[str, list[Batch]] = {}
        self._failed: list[Batch] = []
        self.after_errors: list[VmicError] = []
        """Errors of the work after a commit; the commit itself holds."""

    def join(self, name: str) -> Batch:
        """Subscription ``name`` is about to write: into the open transaction, or a new one.
        Returns the transaction's batch (its commit tells whether the writes hold)."""
        batch = self._batch
        if batch is not None and not self._store.in_transaction:
            self.commit()  # rolled back under us (a write error): fails its members
            batch = None
        if batch is None:
            self._store.begin()
            batch = self._batch = Batch()
            self._timer = asyncio.get_running_loop().call_later(self._wait, self.commit)
        joined = self._members.setdefault(name, [])
        if batch not in joined:
            batch.joined += 1
            joined.append(batch)
        return batch

    def written(self) -> None:
        """A member's rows are written: commit at once if the group is full."""
        if self._batch is not None and self._batch.joined >= self._most:
            self.commit()

    def commit(self) -> None:
        """Commit the open transaction, if any, and tell its members how it went."""
        batch, self._batch = self._batch, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if batch is None:
            return
        if not self._store.in_transaction:
            batch.error = StoreError(
                f"the transaction of {batch.joined} list(s) in {self._store.path} was "
                "rolled back by an earlier write error; they are fetched again next run"
            )
        else:
            try:
                self._store.commit()
            except StoreError as error:
                self._store.rollback()
                batch.error = error
        batch.done.set()
        if batch.error is not None:
            self._failed.append(batch)
            return
        try:
            self._after()
        except VmicError as error:  # the commit holds; the sync reports it for the site
            self.after_errors.append(error)

    def abandon(self) -> None:
        """Roll the open transaction back (the run is being stopped), as a crash would."""
        batch, self._batch = self._batch, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._store.rollback()
        if batch is not None:
            batch.error = StoreError("the sync stopped before these lists were committed")
            batch.done.set()

    async def settle(self, name: str) -> None:
        """Wait for the commit of everything ``name`` wrote; raise if one failed."""
        batches = self._members.pop(name, [])
        for batch in batches:
            await batch.done.wait()
            batch.heard = True
        for batch in batches:
            if batch.error is not None:
                raise StoreError(batch.error.message, hint=batch.error.hint) from batch.error

    def unheard(self) -> list[Batch]:
        """The batches whose commit failed and that no member waited for (:meth:`settle`):
        nobody else reports them."""
        return [batch for batch in self._failed if not batch.heard]
