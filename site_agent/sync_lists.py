"""One subscription in one sync: fetch the list, verify it, accept or reject it.

The endorser's URL is asked first, with a conditional GET. Peers' copies of
the list (the original signed bytes, which peers re-serve) are used when
the endorser cannot be reached, and whenever a peer holds a newer version
than the site: the newest valid version wins, whatever its source. Every
copy is verified exactly like the endorser's answer, against the same pins,
the same expected list id and self link, and the same rollback state (kept
per list, never per source).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
from collections.abc import Callable

from feeds.model import list_id
from feeds.verify import Expectation, verify_list
from keys.errors import (
    ListFormatError,
    RollbackError,
    StoreError,
    VerificationError,
    VmicError,
)
from keys.trust import TrustStore
from site_agent.batch import Accepted
from site_agent.equivocation import NotProofError, check_proof, raise_equivocation, verify_copy
from site_agent.fetch import Fetcher, Validators
from site_agent.peering import ByteSource, ListCopy, Peering
from site_agent.records import Subscription
from site_agent.report import ListResult, SyncReport
from site_agent.site import Site, previous_of
from site_agent.units import report_failure, subscription_recorder
from site_agent.versions import with_content_digest


async def sync_list(
    site: Site,
    fetcher: Fetcher,
    sub: Subscription,
    *,
    trust: TrustStore,
    gate: asyncio.Semaphore,
    report: SyncReport,
    peering: Peering | None,
) -> ListResult:
    """One subscription's list, in force once its rows are committed (with the others of
    its commit group, :meth:`site_agent.site.Site.commit_group`): only then does it count
    as done, and its changes go into the report.

    Whatever happens, the subscription waits for the commits of what it wrote; the
    changes of every version committed are reported. A failure (of a later step, or of a
    commit) is then raised, or, once a new version was committed, reported here and the
    outcome is ``accepted`` with that version."""
    taken: list[Accepted] = []
    failure: Exception | None = None
    result: ListResult | None = None
    try:
        async with gate:
            result = await _sync_list(
                site, fetcher, sub, trust=trust, report=report, peering=peering, taken=taken
            )
    except Exception as exc:  # noqa: BLE001 - raised again below, or reported as run_unit does
        failure = exc
    # Not in a `finally`: a cancelled sync (interrupted) does not wait for the commits;
    # the group is abandoned, rolled back as a crash would leave it.
    lost = await _settle(site, sub, taken, report)
    if failure is None and lost is None and result is not None:
        return result
    if failure is not None and lost is not None:  # both: the later step's failure is raised
        report.problem(sub.name, type(lost).__name__, _not_committed(lost))
    error: Exception = failure or lost or StoreError("no result")
    committed = [a for a in taken if a.new and a.committed]
    if not committed:
        raise error
    report_failure(
        error,
        report=report,
        source=sub.name,
        what="the list",
        record=subscription_recorder(site, sub.name, sub.list_id),
    )
    newest = max(a.version for a in committed)
    return ListResult(subscription=sub.name, outcome="accepted", version=newest)


async def _settle(
    site: Site, sub: Subscription, taken: list[Accepted], report: SyncReport
) -> StoreError | None:
    """Wait for the commits of what ``sub`` wrote; report the changes of the versions
    committed. Returns the error of a commit that failed."""
    try:
        await site.settle(sub.name)
        lost = None
    except StoreError as error:
        lost = error
    for accepted in taken:
        if not accepted.committed:
            continue
        report.changes.extend(accepted.changes)
        for change in accepted.changes:
            if change.what == "conflict":
                report.problem(sub.name, "conflict", f"image {change.image_id}: {change.detail}")
    return lost


def _not_committed(error: StoreError) -> str:
    return f"what the sync of the list wrote was not committed: {error.message}"


async def _sync_list(
    site: Site,
    fetcher: Fetcher,
    sub: Subscription,
    *,
    trust: TrustStore,
    report: SyncReport,
    peering: Peering | None,
    taken: list[Accepted],
) -> ListResult:
    """Fetch, verify, accept or reject; what was accepted is added to ``taken``."""
    copies = peering.list_copies(site, sub.list_id) if peering else []
    try:
        fetched = await fetcher.fetch_list(
            sub.url, validators=Validators(etag=sub.etag, last_modified=sub.last_modified)
        )
    except VmicError as error:
        for copy in copies:
            result = await _from_copy(
                site,
                fetcher,
                sub,
                copy,
                trust=trust,
                report=report,
                peering=peering,
                taken=taken,
                then=_peer_attempt(site, sub, error, copy),
            )
            if result is not None and result.outcome in ("accepted", "unchanged"):
                return result
        site.store.record_attempt(
            sub.name, at=site.now, ok=False, error=error.message, kind="fetch"
        )
        report.problem(sub.name, "fetch", error.message)
        return ListResult(subscription=sub.name, outcome="failed")
    if fetched.not_modified:
        result = _not_modified(site, sub, report)
    else:
        result = await _take(
            site,
            sub,
            fetched.body,
            trust,
            report,
            taken=taken,
            then=_endorser_attempt(site, sub, fetched.validators),
        )
    result = dataclasses.replace(result, endorser_answered=True)
    if not copies:
        return result
    current = site.store.current_list(sub.list_id)
    held = current.version if current else 0
    for copy in copies:
        if copy.version > held:  # a peer has a newer version than the endorser gave us
            newer = await _from_copy(
                site,
                fetcher,
                sub,
                copy,
                trust=trust,
                report=report,
                peering=peering,
                taken=taken,
            )
            if newer is not None and newer.outcome == "accepted":
                return dataclasses.replace(newer, endorser_answered=True)
    return result


def _endorser_attempt(
    site: Site, sub: Subscription, validators: Validators
) -> Callable[[int], None]:
    """The endorser's answer (of the version given) was taken: its validators for the next
    run (written with the list's rows, so they hold only if the rows do), and the version
    the endorser's URL serves (a site holding a newer one from peers sees a freeze)."""

    def attempt(version: int) -> None:
        site.store.record_attempt(
            sub.name,
            at=site.now,
            ok=True,
            etag=validators.etag,
            last_modified=validators.last_modified,
            validators=True,
            endorser_version=version,
        )

    return attempt


def _peer_attempt(
    site: Site, sub: Subscription, error: VmicError, copy: ListCopy
) -> Callable[[int], None]:
    """The endorser was unreachable and a peer's copy was taken: a success, written with
    the list's rows (a commit that fails leaves no success behind)."""

    def attempt(_version: int) -> None:
        site.store.record_attempt(
            sub.name,
            at=site.now,
            ok=True,
            error=f"endorser unreachable ({error.message}); list from peer {copy.peer}",
            kind="fetch",
        )

    return attempt


def _not_modified(site: Site, sub: Subscription, report: SyncReport) -> ListResult:
    """The endorser's list is the one last taken: validators are kept for accepted bytes
    only (a rejection clears them, so rejected bytes are fetched and verified again). The
    success is written with every other unchanged list's, in one transaction
    (:meth:`site_agent.site.Site.record_unchanged`)."""
    site.unchanged.append(sub.name)
    return ListResult(subscription=sub.name, outcome="not-modified")


async def _from_copy(
    site: Site,
    fetcher: Fetcher,
    sub: Subscription,
    copy: ListCopy,
    *,
    trust: TrustStore,
    report: SyncReport,
    peering: Peering | None,
    taken: list[Accepted],
    then: Callable[[int], None] | None = None,
) -> ListResult | None:
    try:
        fetched = await fetcher.fetch_list(copy.url)
    except VmicError as error:
        if peering is not None:
            peering.record_transfer(
                site,
                ByteSource(url=copy.url, peer=copy.peer),
                ok=False,
                size=0,
                seconds=0,
                error=error.message,
            )
        return None
    result = await _take(
        site, sub, fetched.body, trust, report, peer=copy.peer, url=copy.url, taken=taken, then=then
    )
    if result.outcome == "rejected" and peering is not None:
        peering.record_transfer(
            site,
            ByteSource(url=copy.url, peer=copy.peer),
            ok=False,
            size=len(fetched.body),
            seconds=0,
            error="served a list that was rejected",
        )
    return result


async def _take(
    site: Site,
    sub: Subscription,
    raw: bytes,
    trust: TrustStore,
    report: SyncReport,
    *,
    taken: list[Accepted],
    then: Callable[[int], None] | None,
    peer: str | None = None,
    url: str | None = None,
) -> ListResult:
    """Verify ``raw`` against the subscription and the rollback state; accept or reject.
    What was accepted goes to ``taken``; ``then`` (the subscription's attempt, given the
    version) is written with the accepted rows."""
    store, now = site.store, site.now
    current = site.current_list(sub.list_id)
    try:
        verified = await site.verify(
            verify_list,
            raw,
            trust=trust,
            pins=sub.pins,
            now=now,
            crl=site.config.crl,
            expect=Expectation(list_id=list_id(sub.list_id), self_url=sub.self_url),
            previous=previous_of(current),
            limits=site.config.limits,
        )
    except (VerificationError, ListFormatError) as error:
        if isinstance(error, RollbackError) and current is not None:
            await _other_content(site, sub, raw, trust, report, url=url or sub.url, peer=peer)
        digest = hashlib.sha256(raw).hexdigest()
        via = f" (copy from peer {peer})" if peer else ""
        last = store.last_history(sub.name)
        if last is None or last.outcome != "rejected" or last.sha256 != digest:
            site.reject_list(sub, error, sha256=digest, via=via)
        kind = type(error).__name__
        if peer is None:
            # The endorser's answer. Its validators are dropped: the next run fetches the
            # list in full and verifies it again, so a fixed trust store, a new CRL or a
            # certificate that became valid takes effect at once, and the problem is
            # reported for as long as it lasts (no new history line for the same bytes).
            store.record_attempt(
                sub.name, at=now, ok=False, error=error.message, kind=kind, validators=True
            )
        report.problem(sub.name, kind, f"list rejected{via}: {error.message}")
        return ListResult(subscription=sub.name, outcome="rejected")

    record = None if then is None else functools.partial(then, verified.image_list.version)
    accepted = await site.accept_list_async(sub, verified, current=current, then=record)
    taken.append(accepted)
    return ListResult(
        subscription=sub.name,
        outcome="accepted" if accepted.new else "unchanged",
        version=accepted.version,
    )


async def _other_content(
    site: Site,
    sub: Subscription,
    raw: bytes,
    trust: TrustStore,
    report: SyncReport,
    *,
    url: str,
    peer: str | None,
) -> None:
    """A copy refused by the rollback rule may be a version the site accepted, with other
    signed content: verified apart from the rollback state, it is then proof of
    equivocation (:mod:`site_agent.equivocation`). Anything else was a rollback, as
    reported."""
    try:
        theirs = await verify_copy(site, sub, raw, trust)
        held = site.store.list_version(sub.list_id, theirs.image_list.version)
        if held is None:
            return  # older than any version accepted here: a rollback, nothing to compare
        ours = held if held.content_sha256 else with_content_digest(site, held)
        check_proof(ours, theirs)
    except (VmicError, NotProofError):
        return
    raise_equivocation(site, report, sub=sub, ours=ours, theirs=theirs, url=url, peer=peer)
