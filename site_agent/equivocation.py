"""Proof that an endorser signed two lists for one version, and the alarm it raises.

A site holds proof of equivocation when it has two copies of one list with
the same id and version, both verified against the subscription's trust
anchors and pinned endorser, whose signed contents differ, signed by the
same endorser (subject DN) and in the same format. (`vmic endorse sign
--hepix-out` signs every version as Atom and as HEPiX: their signed
contents are other bytes by design, so copies in two formats prove
nothing.) The second copy comes from a peer that claims it
(:mod:`federation.watch`) or from any source of the list itself, the
endorser's URL included (:mod:`site_agent.sync_lists`: such a copy is
refused by the same-version rule, and is proof besides).

:func:`raise_equivocation` keeps both copies and what they are under
``evidence/<alarm>/``, raises the ``equivocation`` alarm and freezes the list
(:mod:`site_agent.alarms`).
"""

from __future__ import annotations

import json
from pathlib import Path

from feeds.model import list_id
from feeds.verify import Expectation, ListFormat, VerifiedList, verify_list
from keys.errors import VmicError
from keys.fileio import read_file
from keys.trust import TrustStore
from site_agent.alarms import EQUIVOCATION, Alarm, raise_alarm
from site_agent.records import ListVersion, Subscription, iso
from site_agent.report import SyncReport
from site_agent.site import Site


class NotProofError(Exception):
    """A second copy that does not prove equivocation; the message says why."""


class OtherFormatError(NotProofError):
    """A valid second copy in the other list format: its signed content cannot be compared
    with the site's by digest (not the fault of whoever served it)."""


async def verify_copy(site: Site, sub: Subscription, raw: bytes, trust: TrustStore) -> VerifiedList:
    """A second copy of a list, verified as any copy of it (trust directory, CRLs, the
    subscription's pinned endorser, the list's id and self link) but without the rollback
    state: it may be a version the site accepted. Raises a VmicError."""
    return await site.verify(
        verify_list,
        raw,
        trust=trust,
        pins=sub.pins,
        now=site.now,
        crl=site.config.crl,
        expect=Expectation(list_id=list_id(sub.list_id), self_url=sub.self_url),
        previous=None,
        limits=site.config.limits,
    )


def check_proof(ours: ListVersion, theirs: VerifiedList) -> None:
    """NotProofError unless ``theirs`` (verified against the subscription) and the site's
    accepted ``ours`` are two signed contents of one version by one endorser."""
    got = theirs.image_list.version
    if got != ours.version:
        raise NotProofError(f"it is version {got}, not version {ours.version}")
    if ours.content_sha256 is None or theirs.content_sha256 == ours.content_sha256:
        raise NotProofError("it is the same signed list as this site's")
    if theirs.list_format.suffix != Path(ours.path).suffix:
        raise OtherFormatError(
            f"it is the {theirs.list_format} list, this site's the {_format_of(ours)} one: "
            "signed contents in two formats cannot be compared; not a split view"
        )
    signer = theirs.signer.subject.slash()
    if signer != ours.signer:
        raise NotProofError(f"it is signed by {signer}, this site's by {ours.signer}")


def _format_of(version: ListVersion) -> str:
    suffix = Path(version.path).suffix
    return next((str(f) for f in ListFormat if f.suffix == suffix), suffix or "?")


def raise_equivocation(
    site: Site,
    report: SyncReport,
    *,
    sub: Subscription,
    ours: ListVersion,
    theirs: VerifiedList,
    url: str,
    peer: str | None,
) -> Alarm | None:
    """Raise the alarm (unless it was raised before) with both copies as evidence, and
    freeze the list; ``peer`` None: the second copy came from ``url``, the subscription's."""
    suffix = theirs.list_format.suffix
    try:
        our_bytes = read_file(site.home.root / ours.path, what="the site's copy of the list")
    except VmicError as error:  # the stored copy is gone: the alarm stands on theirs
        our_bytes = f"not kept: {error.message}\n".encode()
    facts = {
        "kind": EQUIVOCATION,
        "list_id": sub.list_id,
        "subscription": sub.name,
        "version": ours.version,
        "found_at": iso(site.now),
        "ours": {
            "content_sha256": ours.content_sha256,
            "sha256": ours.sha256,
            "signer": ours.signer,
            "accepted_at": iso(ours.accepted_at),
            "file": f"ours{Path(ours.path).suffix}",
        },
        "theirs": {
            "content_sha256": theirs.content_sha256,
            "sha256": theirs.sha256,
            "signer": theirs.signer.subject.slash(),
            "peer": peer,
            "url": url,
            "file": f"theirs{suffix}",
        },
    }
    where = f"peer {peer} holds" if peer is not None else f"{url} serves"
    alarm = raise_alarm(
        site,
        kind=EQUIVOCATION,
        list_id=sub.list_id,
        subscription=sub.name,
        version=ours.version,
        peer=peer,
        ours=ours.content_sha256,
        theirs=theirs.content_sha256,
        detail=(
            f"{where} another list signed by {ours.signer} as the same version (signed "
            f"content SHA-256 {theirs.content_sha256[:16]}..., this site's "
            f"{(ours.content_sha256 or '?')[:16]}...)"
        ),
        evidence={
            f"ours{Path(ours.path).suffix}": our_bytes,
            f"theirs{suffix}": theirs.raw,
            "alarm.json": json.dumps(facts, indent=2, sort_keys=True).encode() + b"\n",
        },
    )
    if alarm is not None:
        report.changes.extend(site.freeze(sub.list_id, alarm.id))
    return alarm
