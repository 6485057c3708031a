"""What a site admin does with peers: add, remove, list, see what they carry; the export.

Adding a peer fetches and verifies its export first (a peer that would fail
is refused with the reason), as subscribing does for a list. The admin may
give the site's address instead of its export's: a URL that answers with an
HTML page (the catalogue `vmic serve` shows at ``/``) is followed to the
export the page names by its feed-autodiscovery link, or else to
``/export.atom`` on its host, and the export's URL is what is stored.

Suggestions are the lists peers carry that this site does not subscribe to:
each is fetched from a peer's copy and verified (with any signer the trust
directory accepts) to show who endorsed it; subscribing stays the admin's
decision and still pins the endorser's DN.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree

from federation.export import ExportResult, write_export
from federation.peers import (
    carried_lists,
    check_export_id,
    default_peer_name,
    take_export,
    verify_export,
)
from feeds.model import check_url
from feeds.verify import looks_like_html, verify_list
from keys.errors import ConfigError, FetchError, HTTPStatusError, ListFormatError, VmicError
from keys.trust import TrustStore
from keys.xmlsig import SignerPin
from site_agent.admin import locked_site, read_store
from site_agent.fetch import Fetcher
from site_agent.home import SiteHome
from site_agent.names import check_name
from site_agent.peerstore import Peer, PeerStore
from site_agent.site import Site


async def _fetch(site: Site, url: str) -> bytes:
    async with Fetcher(
        limits=site.config.limits,
        ca_bundle=site.config.ca_bundle,
        identity=site.config.identity,
    ) as fetcher:
        return (await fetcher.fetch_list(url)).body


EXPORT_PATH = "/export.atom"
"""Where `vmic serve` publishes a site's export."""
_PAGE_BYTES = 256 * 1024
"""Of an HTML page, what is parsed for its export link (which is in the page's head)."""
_PAGE_PARSER = lxml.html.HTMLParser(no_network=True, remove_comments=True, remove_pis=True)
_EXPORT_HINT = "give the URL of the peer site's export (`vmic serve` publishes it at /export.atom)"


async def _fetch_export(site: Site, url: str) -> tuple[str, bytes]:
    """The peer's export and its URL, from the URL of the export or of the site.

    A URL that answers with an HTML page, or a site's bare address that answers
    with an HTTP error, is followed once: to the export the page names, else to
    ``/export.atom`` on the host. The export is verified by the caller.
    """
    async with Fetcher(
        limits=site.config.limits,
        ca_bundle=site.config.ca_bundle,
        identity=site.config.identity,
    ) as fetcher:
        html: bytes | None = None
        try:
            page = await fetcher.fetch_list(url)
        except HTTPStatusError as exc:
            if urlsplit(url).path not in ("", "/"):
                raise
            base, said = url, exc.message
        else:
            if not looks_like_html(page.body):
                return url, page.body
            html, base = page.body, page.url
            said = f"{url} returned an HTML page, not a signed image list"
        named = export_link(html, base) if html is not None else None
        export_url = named or urljoin(base, EXPORT_PATH)
        if named:
            tried = f"the export it names, {export_url},"
        elif html is not None:
            tried = f"it names no export, and {export_url}"
        else:
            tried = export_url
        try:
            export = await fetcher.fetch_list(export_url)
        except FetchError as exc:
            raise ConfigError(
                f"{said}; {tried} cannot be fetched ({exc.message})", hint=_EXPORT_HINT
            ) from exc
        if looks_like_html(export.body):
            raise ConfigError(f"{said}; {tried} is an HTML page too", hint=_EXPORT_HINT)
        return export_url, export.body


def export_link(page: bytes, page_url: str) -> str | None:
    """The export an HTML page names by its feed-autodiscovery link, as an absolute URL.

    That is the first ``<link rel="alternate" type="application/atom+xml" href=...>``
    (the catalogue of `vmic serve` has one), resolved against the page's URL, that
    is an http(s) URL without credentials and not http from an https page.
    """
    try:
        document = lxml.html.document_fromstring(page[:_PAGE_BYTES], parser=_PAGE_PARSER)
    except (etree.ParserError, ValueError):
        return None
    secure = urlsplit(page_url).scheme == "https"
    for node in document.iter("link"):
        rel = (node.get("rel") or "").lower().split()
        kind = (node.get("type") or "").partition(";")[0].strip().lower()
        href = (node.get("href") or "").strip()
        if "alternate" not in rel or kind != "application/atom+xml" or not href:
            continue
        found = urljoin(page_url, href)
        try:
            check_url(found, what="export link")
        except ListFormatError:
            continue
        if secure and urlsplit(found).scheme != "https":
            continue
        return found
    return None


def add_peer(
    home: SiteHome, url: str, *, pins: list[SignerPin], name: str | None, now: datetime
) -> tuple[Peer, int]:
    """Follow another site's export; returns the peer and how many images it offers."""
    if not pins:
        raise ConfigError("pin the peer site: --site-dn DN --ca-dn DN")
    with locked_site(home, now=now, purpose="vmic peer add") as site:
        store = PeerStore(site.store)
        url, raw = asyncio.run(_fetch_export(site, url))
        trust = TrustStore.from_directory(site.config.trust_dir)
        verified = verify_list(
            raw, trust=trust, pins=pins, now=now, crl=site.config.crl, limits=site.config.limits
        )
        export = verified.image_list
        taken = {p.name for p in store.peers()}
        chosen = check_name(name, "peer name") if name else default_peer_name(export)
        if chosen in taken or any(p.list_id == export.id for p in store.peers()):
            raise ConfigError(f"this peer (or the name {chosen}) is already followed")
        check_export_id(site, export.id)
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
        previous = site.previous_export_state(export.id)
        verified = verify_export(site, peer, raw, trust, previous=previous)
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
