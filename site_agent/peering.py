"""What a sync asks of the federation, as an interface the site agent owns.

The site agent does not import the federation (dependencies point one way:
``site_agent`` <- ``federation``). Where a sync can use peer sites, it calls
a :class:`Peering` that the federation implements and the command line
passes in: refresh the peers' exports before the lists, compare what peers say
they hold with the site's own lists after them, offer peers' copies
of a list, offer peers as sources of image bytes (best first), learn how a
source did, and write the site's own export at the end. Without one
(``None``), a sync uses endorsers only. Whatever a peer offers is checked
as if it came from anywhere: lists by their endorser's signature and the
rollback state of the list, bytes by the endorser's SHA-512.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from keys.trust import TrustStore
from site_agent.fetch import Fetcher
from site_agent.report import SyncReport
from site_agent.site import Site


@dataclass(frozen=True, slots=True, kw_only=True)
class ListCopy:
    """A peer's copy of an endorser's list (its original signed bytes)."""

    url: str
    peer: str
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ByteSource:
    """Somewhere to get an image's bytes; ``peer`` is None for the endorser's URL."""

    url: str
    peer: str | None = None


class Peering(Protocol):
    async def refresh(
        self, site: Site, fetcher: Fetcher, trust: TrustStore, report: SyncReport
    ) -> None:
        """Fetch and verify every peer's export; remember what each offers."""
        ...

    async def watch(
        self, site: Site, fetcher: Fetcher, trust: TrustStore, report: SyncReport
    ) -> None:
        """After the lists: compare what peers say they hold with what this site holds, and
        raise an alarm on proof of two signed versions of one list (split views)."""
        ...

    def list_copies(self, site: Site, list_id: str) -> list[ListCopy]:
        """Peers' copies of a list, newest version first."""
        ...

    def byte_sources(self, site: Site, sha512: str) -> list[ByteSource]:
        """Peers that serve these bytes, best first."""
        ...

    def peer_approvals(self, site: Site, image_id: str) -> int:
        """How many peers approved and share this image."""
        ...

    def record_transfer(
        self, site: Site, source: ByteSource, *, ok: bool, size: int, seconds: float, error: str
    ) -> None:
        """How a peer did, so later runs choose better."""
        ...

    def finish(self, site: Site, report: SyncReport) -> None:
        """After the sync: write the site's own signed export."""
        ...
