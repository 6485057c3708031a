"""Sites watch each other: what peers say they hold, against what this site holds.

An endorser's key that is stolen, or an endorser that is coerced, can sign
two lists with the same id and version and show each to other sites (a
split view): every signature checks, and no site can see it alone. Every
site's signed export names, for each endorser's list it holds, the version
and the SHA-256 of the content its signature covers (``vmic:holds``,
SCHEMA §11). After the lists of a sync, :func:`watch` takes each such claim
about a list this site subscribes to, for a version this site accepted
(the one in force, or an earlier one whose digest it kept):

- the same digest: the two sites saw the same list;
- another digest: the site fetches the peer's copy (the claim's URL) and
  verifies it as it verifies any copy of the list (trust directory, CRLs,
  the subscription's pinned endorser, the list's id and self link), but
  without the rollback state, which the version in question already is.
  When the copy is valid, of that version, with the claimed digest, and
  signed by the endorser (subject DN) that signed the site's own copy,
  the site holds proof of equivocation (:mod:`site_agent.equivocation`):
  both copies go to ``evidence/<alarm>/``, an ``equivocation`` alarm is
  raised and the list is frozen.
- Anything less is not proof and freezes nothing: a copy that cannot be
  fetched, fails verification, is of another version or turns out to be the
  site's own content, or is signed by another pinned endorser, is reported
  against the peer (a problem of the run, and a failure in its record), and
  the peer's other claims wait for the next run: a lying peer costs one
  fetch per run, not one (with its retries and deadline) per list.
- A valid copy in the other format (HEPiX where the site holds Atom, or the
  other way round) is no proof either: `vmic endorse sign --hepix-out`
  signs every version in both, whose signed contents are other bytes by
  design, so their digests cannot be compared. A claim whose URL names
  the other format is not fetched; nothing is reported (the peer said the
  truth).

Claims about newer versions need nothing here: a sync takes a peer's newer
copy of a list itself (:mod:`site_agent.sync_lists`), and then the endorser's
URL lagging behind is a freeze (:func:`site_agent.alarms.check_freezes`).
A claim whose difference an alarm (open or resolved) holds already is not
fetched again. The second copy must be valid now: a copy that has expired, or
whose signing certificate has, is not proof here (it cannot be told from a
copy signed with a key that is no longer the endorser's).
"""

from __future__ import annotations

import logging
from pathlib import Path

from feeds.verify import VerifiedList
from keys.errors import VmicError
from keys.trust import TrustStore
from site_agent.alarms import EQUIVOCATION, AlarmStore
from site_agent.equivocation import (
    NotProofError,
    OtherFormatError,
    check_proof,
    raise_equivocation,
    verify_copy,
)
from site_agent.fetch import Fetcher
from site_agent.peerstore import PeerClaim, PeerStore
from site_agent.records import ListVersion, Subscription
from site_agent.report import SyncReport
from site_agent.site import Site
from site_agent.versions import with_content_digest

_log = logging.getLogger("vmic.sync")


async def watch(site: Site, fetcher: Fetcher, trust: TrustStore, report: SyncReport) -> None:
    """Compare every peer's claims with the site's own copies; raise equivocation alarms."""
    subscriptions = {s.list_id: s for s in site.store.subscriptions()}
    digests = site.store.content_digests()
    alarms = AlarmStore(site.store)
    unbacked: set[str] = set()  # peers that could not back a claim: the rest waits a run
    for claim in PeerStore(site.store).claims():
        if claim.peer in unbacked:
            continue
        sub = subscriptions.get(claim.list_id)
        if sub is None:
            continue  # not a list this site follows: nothing of ours to compare
        key = (claim.list_id, claim.version)
        if key not in digests or digests[key] == claim.content_sha256:
            continue  # a version this site never accepted, or the same list
        ours = _our_version(site, claim)
        if ours is None or ours.content_sha256 in (None, claim.content_sha256):
            continue
        if alarms.seen(EQUIVOCATION, claim.list_id, claim.version, claim.content_sha256):
            continue
        if not claim.url.endswith(Path(ours.path).suffix):
            continue  # the list's other format (vmic endorse sign --hepix-out): no comparison
        try:
            theirs = await _their_copy(site, fetcher=fetcher, trust=trust, sub=sub, claim=claim)
            check_proof(ours, theirs)
        except OtherFormatError as why:
            _log.info("peer %s, list %s version %s: %s", claim.peer, sub.name, claim.version, why)
            continue
        except NotProofError as why:
            unbacked.add(claim.peer)
            _blame(site, report, claim, sub, f"its copy: {why}")
            continue
        raise_equivocation(
            site, report, sub=sub, ours=ours, theirs=theirs, url=claim.url, peer=claim.peer
        )


def _our_version(site: Site, claim: PeerClaim) -> ListVersion | None:
    """The site's accepted version the claim is about, with its content digest."""
    ours = site.store.list_version(claim.list_id, claim.version)
    if ours is not None and ours.content_sha256 is None:
        ours = with_content_digest(site, ours)
    return ours


async def _their_copy(
    site: Site,
    *,
    fetcher: Fetcher,
    trust: TrustStore,
    sub: Subscription,
    claim: PeerClaim,
) -> VerifiedList:
    """The peer's copy, verified against the subscription, of the version and signed content
    it claims; NotProofError if not."""
    try:
        raw = (await fetcher.fetch_list(claim.url)).body
    except VmicError as error:
        raise NotProofError(f"it cannot be fetched: {error.message}") from error
    try:
        verified = await verify_copy(site, sub, raw, trust)
    except VmicError as error:
        raise NotProofError(f"it is not a valid list: {error.message}") from error
    if verified.image_list.version != claim.version:
        got = verified.image_list.version
        raise NotProofError(f"it is version {got}, not the version {claim.version} claimed")
    if verified.content_sha256 != claim.content_sha256:
        raise NotProofError("its signed content is not the one the export claims")
    return verified


def _blame(site: Site, report: SyncReport, claim: PeerClaim, sub: Subscription, why: str) -> None:
    """A claim without proof: a problem of the peer, never an alarm."""
    message = (
        f"peer {claim.peer} claims version {claim.version} of list {sub.name} with other "
        f"signed content than this site's, but {why}; nothing is frozen (its other "
        "claims wait for the next run)"
    )
    report.problem(None, "peer", message)
    with site.store.atomic():
        PeerStore(site.store).record_transfer(
            claim.peer, ok=False, size=0, seconds=0, at=site.now, error=message
        )
