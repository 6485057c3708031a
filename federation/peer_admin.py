"""What a site admin does with peers: add, remove, list, see what they carry; the export.

Adding a peer fetches and verifies its export first (a peer that would fail
is refused with the reason), as subscribing does for a list. Suggestions are
the lists peers carry that this site does not subscribe to: each is fetched
from a peer's copy and verified (with any signer the trust directory
accepts) to show who endorsed it; subscribing stays the admin's decision and
still pins the endorser's DN.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from federation.export import ExportResult, write_export
from federation.peers import carried_lists, check_peer_name, take_export, verify_export
from feeds.verify import verify_list
from keys.errors import ConfigError, VmicError
from keys.trust import TrustStore
from keys.xmlsig import SignerPin
from site_agent.admin import locked_site, read_store
from site_agent.fetch import Fetcher
from site_agent.home import SiteHome
from site_agent.peerstore import Peer, PeerStore
from site_agent.site import Site


async def _fetch(site: Site, url: str) -> bytes:
    async with Fetcher(limits=site.config.limits, ca_bundle=site.config.ca_bundle) as fetcher:
        return (await fetcher.fetch_list(url)).body


def add_peer(
    home: SiteHome, url: str, *, pins: list[SignerPin], name: str | None, now: datetime
) -> tuple[Peer, int]:
    """Follow another site's export; returns the peer and how many images it offers."""
    if not pins:
        raise ConfigError("pin the peer site: --site-dn DN --ca-dn DN")
    with locked_site(home, now=now, purpose="vmic peer add") as site:
        store = PeerStore(site.store)
        raw = asyncio.run(_fetch(site, url))
        trust = TrustStore.from_directory(site.config.trust_dir)
        verified = verify_list(
            raw, trust=trust, pins=pins, now=now, crl=site.config.crl, limits=site.config.limits
        )
        export = verified.image_list
        taken = {p.name for p in store.peers()}
        chosen = check_peer_name(name or (export.endorser_dn.common_name() or "peer"))
        if chosen in taken or any(p.list_id == export.id for p in store.peers()):
            raise ConfigError(f"this peer (or the name {chosen}) is already followed")
        if site.store.subscription_for_list(export.id) is not None:
            raise ConfigError("that is an endorser's list, not a site export: use `vmic subscribe`")
        peer = Peer(
            name=chosen,
            url=url,
            list_id=export.id,
            self_url=export.self_url,
            pins=tuple(pins),
            created=now,
        )
        with site.store.atomic():
            store.add_peer(peer)
        # With the rollback state of an export followed before, if any.
        verified = verify_export(site, peer, raw, trust, previous=site.previous_state(export.id))
        take_export(site, peer, verified)
        with site.store.atomic():
            store.record_attempt(peer.name, at=now, error=None)
        return peer, sum(1 for o in store.offers() if o.peer == peer.name)


def remove_peer(home: SiteHome, name: str, *, now: datetime) -> None:
    with locked_site(home, now=now, purpose="vmic peer remove") as site:
        store = PeerStore(site.store)
        if store.peer(name) is None:
            raise ConfigError(f"no peer named {name}", hint="see `vmic peers`")
        with site.store.atomic():
            store.remove_peer(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerStatus:
    peer: Peer
    offers: int


def peer_status(home: SiteHome) -> list[PeerStatus]:
    with read_store(home) as store:
        peers = PeerStore(store)
        offers = peers.offers()
        return [
            PeerStatus(peer=p, offers=sum(1 for o in offers if o.peer == p.name))
            for p in peers.peers()
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Suggestion:
    list_id: str
    title: str
    endorser: str
    issuer: str
    version: int
    peers: tuple[str, ...]
    url: str
    images: int


def suggest(home: SiteHome, *, now: datetime) -> tuple[list[Suggestion], list[str]]:
    """Lists peers carry that the site does not subscribe to (verified), and problems."""
    with locked_site(home, now=now, purpose="vmic peers suggest") as site:
        trust = TrustStore.from_directory(site.config.trust_dir)
        suggestions, problems = [], []
        for lid, copies in sorted(carried_lists(site).items()):
            for copy in copies:
                try:
                    raw = asyncio.run(_fetch(site, copy.url))
                    verified = verify_list(
                        raw,
                        trust=trust,
                        pins=None,
                        now=now,
                        crl=site.config.crl,
                        limits=site.config.limits,
                    )
                except VmicError as error:
                    problems.append(f"list {lid} from peer {copy.peer}: {error.message}")
                    continue
                lst = verified.image_list
                suggestions.append(
                    Suggestion(
                        list_id=lid,
                        title=lst.title,
                        endorser=verified.signer.subject.slash(),
                        issuer=verified.signer.issuer.slash(),
                        version=lst.version,
                        peers=tuple(c.peer for c in copies),
                        url=lst.self_url,
                        images=len(lst.entries),
                    )
                )
                break
        return suggestions, problems


def export_now(home: SiteHome, *, force: bool, now: datetime) -> ExportResult:
    with locked_site(home, now=now, purpose="vmic export") as site:
        return write_export(site, force=force)
