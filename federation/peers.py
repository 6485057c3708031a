"""Peer sites: following their signed exports, and using them as sources.

:class:`SiteFederation` is the federation's side of
:class:`site_agent.peering.Peering`. In every sync it fetches each peer's
export (conditional GET), verifies it like any list (chain, CRLs, the pinned
site DNs, the export's id and self link, its rollback state), and remembers
what it offers: the images the peer approved and shares, where it serves
their bytes, and which version of which endorser list they come from. Those
offers give the sync more sources (copies of lists, image bytes) and, when
the site asks for it, approvals (``approve_if_peers``). A peer whose export
fails verification or expires offers nothing until it is fixed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

from federation.export import write_export
from federation.watch import watch
from feeds.model import ImageList, ListId
from feeds.verify import Expectation, PreviousState, VerifiedList, verify_list
from keys.errors import (
    ListFormatError,
    VerificationError,
    VmicError,
    WrongListError,
)
from keys.trust import TrustStore
from keys.xmlsig import SignerPin
from site_agent.admin import default_name
from site_agent.fetch import Fetcher, Validators
from site_agent.names import slug
from site_agent.peering import ByteSource, ListCopy
from site_agent.peerstore import Peer, PeerClaim, PeerImage, PeerStore
from site_agent.records import Subscription
from site_agent.report import SyncReport
from site_agent.site import Site
from site_agent.units import failed, run_unit


def offers_of(peer: str, verified: VerifiedList) -> list[PeerImage]:
    """The images a verified export offers (entries that name their source list)."""
    offers = []
    for entry in verified.image_list.entries:
        if entry.source_list is None or entry.source_version is None or entry.source_url is None:
            continue  # not an export entry; nothing to use it for
        offers.append(
            PeerImage(
                peer=peer,
                image_id=entry.id,
                sha512=entry.sha512,
                size=entry.size,
                url=entry.url,
                source_list=entry.source_list,
                source_version=entry.source_version,
                source_url=entry.source_url,
                title=entry.title,
            )
        )
    return offers


def claims_of(peer: str, verified: VerifiedList) -> list[PeerClaim]:
    """The lists a verified export says its site holds (``vmic:holds``)."""
    return [
        PeerClaim(
            peer=peer,
            list_id=held.list_id,
            version=held.version,
            content_sha256=held.content_sha256,
            url=held.url,
        )
        for held in verified.image_list.holds
    ]


def check_export_id(site: Site, export_id: str) -> None:
    """Refuse an export whose id is that of a list the site knows (THREATS 35).

    A peer is trusted for what it approved, never to speak for an endorser's
    list: an export under the id of a list this site subscribes to, accepted or
    holds images of (or of the site's own export) is refused, whichever came
    first. What other peers merely say they carry does not count: a hostile
    peer could otherwise name an honest peer's export id and have it refused.
    """
    own = site.store.meta("export_list_id")
    if export_id in site.store.known_list_ids() or export_id == own:
        raise WrongListError(
            f"the export claims the id {export_id} of an image list this site knows; "
            "a site's export must have an id of its own",
            hint="the peer is misconfigured or hostile; its export is not used",
        )


def verify_export(
    site: Site,
    peer: Peer,
    raw: bytes,
    trust: TrustStore,
    *,
    previous: PreviousState | None,
) -> VerifiedList:
    """Verify a peer's export like any list (pure: safe to run on a worker thread)."""
    return verify_list(
        raw,
        trust=trust,
        pins=list(peer.pins),
        now=site.now,
        crl=site.config.crl,
        expect=Expectation(list_id=ListId(peer.list_id), self_url=peer.self_url),
        previous=previous,
        limits=site.config.limits,
    )


def take_export(site: Site, peer: Peer, verified: VerifiedList) -> None:
    """Keep the export's version (rollback state) and what it offers."""
    holder = Subscription(
        name=peer.subscription,
        url=peer.url,
        list_id=peer.list_id,
        self_url=peer.self_url,
        pins=peer.pins,
        auto_approve=False,
        created=peer.created,
    )
    site.record_export(holder, verified)
    with site.store.atomic():
        store = PeerStore(site.store)
        store.replace_offers(peer.name, offers_of(peer.name, verified))
        store.replace_claims(peer.name, claims_of(peer.name, verified))


class SiteFederation:
    """Peers for one sync; see :class:`site_agent.peering.Peering`."""

    async def refresh(
        self, site: Site, fetcher: Fetcher, trust: TrustStore, report: SyncReport
    ) -> None:
        peers = PeerStore(site.store).peers()
        await asyncio.gather(
            *(
                run_unit(
                    self._refresh_one(site, fetcher, trust, peer, report),
                    report=report,
                    source=None,
                    what=f"peer {peer.name}",
                    record=_peer_recorder(site, peer),
                )
                for peer in peers
            )
        )
        if site.config.federation.follow:
            await self._follow(site, fetcher, trust, report)

    async def _follow(
        self, site: Site, fetcher: Fetcher, trust: TrustStore, report: SyncReport
    ) -> None:
        """Subscribe to lists peers carry whose endorser is on the site's allow-list."""
        allowed = list(site.config.federation.follow)
        taken = {s.name for s in site.store.subscriptions()}
        for lid, copies in sorted(carried_lists(site).items()):
            await run_unit(
                self._follow_one(
                    site,
                    fetcher,
                    trust,
                    report,
                    allowed=allowed,
                    taken=taken,
                    lid=lid,
                    copies=copies,
                ),
                report=report,
                source=None,
                what=f"following list {lid} carried by peers",
            )

    async def _follow_one(
        self,
        site: Site,
        fetcher: Fetcher,
        trust: TrustStore,
        report: SyncReport,
        *,
        allowed: list[SignerPin],
        taken: set[str],
        lid: str,
        copies: list[ListCopy],
    ) -> None:
        """Subscribe to one list from the first peer copy an allowed endorser signed."""
        for copy in copies:
            try:
                raw = (await fetcher.fetch_list(copy.url)).body
                verified = await site.verify(
                    verify_list,
                    raw,
                    trust=trust,
                    pins=allowed,
                    now=site.now,
                    crl=site.config.crl,
                    expect=Expectation(list_id=ListId(lid)),
                    previous=site.previous_state(lid),
                    limits=site.config.limits,
                )
            except VmicError:
                continue  # not an allowed endorser, or a bad copy: try the next peer
            lst = verified.image_list
            signer = verified.signer
            pins = tuple(
                p for p in allowed if p.subject == signer.subject and p.issuer == signer.issuer
            )
            sub = Subscription(
                name=default_name(lst.title, taken),
                url=lst.self_url,
                list_id=lst.id,
                self_url=lst.self_url,
                pins=pins,
                auto_approve=False,
                created=site.now,
            )
            taken.add(sub.name)
            with site.store.atomic():
                site.store.add_subscription(sub)
            _accepted, changes = site.accept_list(sub, verified)
            site.store.record_attempt(sub.name, at=site.now, ok=True)
            report.changes.extend(changes)
            break

    async def _refresh_one(
        self, site: Site, fetcher: Fetcher, trust: TrustStore, peer: Peer, report: SyncReport
    ) -> None:
        store = PeerStore(site.store)
        try:
            check_export_id(site, peer.list_id)  # a list subscribed since the peer was added
            fetched = await fetcher.fetch_list(
                peer.url, validators=Validators(etag=peer.etag, last_modified=peer.last_modified)
            )
            if not fetched.not_modified:
                previous = site.previous_export_state(peer.list_id)  # the store stays here
                verified = await site.verify(
                    verify_export, site, peer, fetched.body, trust, previous=previous
                )
                take_export(site, peer, verified)
        except (VerificationError, ListFormatError) as error:
            self._drop(site, peer, report, f"export rejected: {error.message}")
            return
        except VmicError as error:
            store.record_attempt(peer.name, at=site.now, error=error.message)
            report.problem(None, "peer", f"peer {peer.name}: {error.message}")
            return
        current = site.store.current_export(peer.list_id)
        if current is None or site.now >= current.expires:
            self._drop(site, peer, report, "its export has expired")
            return
        store.record_attempt(
            peer.name,
            at=site.now,
            error=None,
            etag=fetched.validators.etag,
            last_modified=fetched.validators.last_modified,
            validators=True,
        )

    def _drop(self, site: Site, peer: Peer, report: SyncReport, why: str) -> None:
        store = PeerStore(site.store)
        with site.store.atomic():
            store.replace_offers(peer.name, [])
            store.replace_claims(peer.name, [])
            store.record_attempt(peer.name, at=site.now, error=why)
        report.problem(None, "peer", f"peer {peer.name}: {why}; nothing is taken from it")

    async def watch(
        self, site: Site, fetcher: Fetcher, trust: TrustStore, report: SyncReport
    ) -> None:
        await watch(site, fetcher, trust, report)

    def list_copies(self, site: Site, list_id: str) -> list[ListCopy]:
        store = PeerStore(site.store)
        peers = {p.name: p for p in store.peers()}
        best: dict[str, ListCopy] = {}
        for offer in store.offers(source_list=list_id):
            copy = ListCopy(url=offer.source_url, peer=offer.peer, version=offer.source_version)
            if offer.peer not in best or copy.version > best[offer.peer].version:
                best[offer.peer] = copy
        return sorted(
            best.values(),
            key=lambda c: (-c.version, -peers[c.peer].throughput if c.peer in peers else 0),
        )

    def byte_sources(self, site: Site, sha512: str) -> list[ByteSource]:
        store = PeerStore(site.store)
        peers = {p.name: p for p in store.peers()}
        urls: dict[str, str] = {}
        for offer in store.offers(sha512=sha512):
            urls.setdefault(offer.peer, offer.url)
        ranked = sorted(
            urls, key=lambda name: (peers[name].failures, -peers[name].throughput, name)
        )
        return [ByteSource(url=urls[name], peer=name) for name in ranked]

    def peer_approvals(self, site: Site, image_id: str) -> int:
        return len({o.peer for o in PeerStore(site.store).offers(image_id=image_id)})

    def record_transfer(
        self, site: Site, source: ByteSource, *, ok: bool, size: int, seconds: float, error: str
    ) -> None:
        if source.peer is None:
            return
        with site.store.atomic():
            PeerStore(site.store).record_transfer(
                source.peer, ok=ok, size=size, seconds=seconds, at=site.now, error=error
            )

    def finish(self, site: Site, report: SyncReport) -> None:
        if site.config.identity is None:
            return
        try:
            write_export(site)
        except VmicError as error:
            report.problem(None, "export", f"the site's export was not written: {error.message}")


def _peer_recorder(site: Site, peer: Peer) -> Callable[[str, str], None]:
    """Write a failed refresh into the peer's row and its export's history."""

    def record(kind: str, message: str) -> None:
        with site.store.atomic():
            PeerStore(site.store).record_attempt(peer.name, at=site.now, error=message)
            failed(site, peer.subscription, peer.list_id, kind=kind, message=message)

    return record


def carried_lists(site: Site) -> dict[str, list[ListCopy]]:
    """Lists peers carry that this site does not subscribe to, with every peer's copy."""
    subscribed = {s.list_id for s in site.store.subscriptions()}
    copies: dict[str, dict[str, ListCopy]] = defaultdict(dict)
    for offer in PeerStore(site.store).offers():
        if offer.source_list in subscribed:
            continue
        copy = ListCopy(url=offer.source_url, peer=offer.peer, version=offer.source_version)
        known = copies[offer.source_list].get(offer.peer)
        if known is None or copy.version > known.version:
            copies[offer.source_list][offer.peer] = copy
    return {
        lid: sorted(by_peer.values(), key=lambda c: -c.version) for lid, by_peer in copies.items()
    }


def default_peer_name(export: ImageList) -> str:
    """A peer's name when none is given: its site's common name, made a name."""
    return slug(export.endorser_dn.common_name() or "", fallback="peer")
