"""The units of a sync: one subscription, one peer, one download, one hook delivery.

Whatever goes wrong in one unit (a hostile input, a full disk, even a bug in
vmic) must not stop the others (THREATS 34): a site whose sync dies on one
list stops applying revocations on every other list. :func:`run_unit` runs
one unit and turns any failure into a :class:`~site_agent.report.Problem` of
that unit, written to the site log (with the traceback when it is not a
vmic error: that is a bug to report) and, through ``record``, to the unit's
own history; the sync goes on, and its exit code reports the problem.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from keys.errors import VmicError, describe
from site_agent.records import HistoryRecord
from site_agent.report import SyncReport
from site_agent.site import Site

T = TypeVar("T")

log = logging.getLogger("vmic.sync")

INTERNAL = "internal"
"""The problem kind of a failure that is not a vmic error: a bug, with a traceback logged."""


async def run_unit(
    work: Awaitable[T],
    *,
    report: SyncReport,
    source: str | None,
    what: str,
    record: Callable[[str, str], None] | None = None,
) -> T | None:
    """Await ``work``; on any failure report it for ``source``, call ``record(kind,
    message)`` (the unit's own history), and return None."""
    try:
        return await work
    except Exception as exc:  # noqa: BLE001 - one unit must never stop the others (reported, logged)
        report_failure(exc, report=report, source=source, what=what, record=record)
        return None


def run_unit_now(
    work: Callable[[], T],
    *,
    report: SyncReport,
    source: str | None,
    what: str,
    record: Callable[[str, str], None] | None = None,
) -> T | None:
    """:func:`run_unit` for work that is not a coroutine (a cloud, which runs on the
    thread that holds the store)."""
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - one unit must never stop the others (reported, logged)
        report_failure(exc, report=report, source=source, what=what, record=record)
        return None


def report_failure(
    exc: Exception,
    *,
    report: SyncReport,
    source: str | None,
    what: str,
    record: Callable[[str, str], None] | None,
) -> None:
    """Report the failure of a unit (``what``) for ``source``, and ``record`` it; for a
    unit that handles a failure itself and goes on (:func:`site_agent.sync_lists.sync_list`
    after a version was committed)."""
    kind = type(exc).__name__ if isinstance(exc, VmicError) else INTERNAL
    if isinstance(exc, VmicError):
        message = f"{what} failed: {exc.message}"
    else:
        message = f"{what} failed unexpectedly ({describe(exc)}); the site log has details"
        log.error("%s: %s", source or "sync", message, exc_info=exc)
    report.problem(source, kind, message)
    if record is not None:
        try:
            record(kind, message)
        except Exception:  # the report already holds the problem; the log says why
            log.exception("%s: cannot record the failure", source or "sync")


def failed(site: Site, holder: str, list_id: str, *, kind: str, message: str) -> None:
    """A ``failed`` line in the history of ``holder`` (a subscription, or ``peer:NAME``)."""
    site.store.add_history(
        HistoryRecord(
            subscription=holder,
            list_id=list_id,
            at=site.now,
            outcome="failed",
            reason=message,
            kind=kind,
        )
    )


def subscription_recorder(site: Site, name: str, list_id: str) -> Callable[[str, str], None]:
    """Write a failed unit into a subscription's history and last-attempt columns."""

    def record(kind: str, message: str) -> None:
        if name in site.unchanged:  # it failed after its 304: not a success after all
            site.unchanged.remove(name)
        with site.store.atomic():
            failed(site, name, list_id, kind=kind, message=message)
            if site.store.subscription(name) is not None:
                site.store.record_attempt(name, at=site.now, ok=False, error=message, kind=kind)

    return record
