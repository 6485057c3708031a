"""The federation's rows in the site's store: the site's own export state, peers, offers.

A peer is another site whose signed export this site follows. For each peer
the store keeps how to reach and verify its export (URL, pinned site DNs,
list id and self link, conditional-GET validators), how well it has served
bytes (for choosing sources), and what its last verified export offers
(``peer_images``) and which version of which endorser's list it says it holds,
with the digest of that version's signed content (``peer_holds``: compared
with the site's own copies, :mod:`federation.watch`). The rollback state of
a peer's export is kept in ``peer_exports``, apart from endorsers' lists
(``lists``), so an export can never occupy, shadow or block an endorser's
list id (THREATS 35); its history is kept under the name ``peer:<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keys.xmlsig import SignerPin
from site_agent.records import iso, parse_iso, pins_from_json, pins_to_json
from site_agent.store import Store

PEER_PREFIX = "peer:"


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    name: str
    url: str
    list_id: str
    self_url: str
    pins: tuple[SignerPin, ...]
    created: datetime
    etag: str | None = None
    last_modified: str | None = None
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None
    bytes_received: int = 0
    seconds: float = 0.0
    failures: int = 0
    last_failure: str | None = None

    @property
    def subscription(self) -> str:
        """The name its export's history and rollback state are kept under."""
        return PEER_PREFIX + self.name

    @property
    def throughput(self) -> float:
        """Bytes per second over everything it served (0 before the first transfer)."""
        return self.bytes_received / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Peer:
        return cls(
            name=row["name"],
            url=row["url"],
            list_id=row["list_id"],
            self_url=row["self_url"],
            pins=pins_from_json(row["pins"]),
            created=parse_iso(row["created"]) or datetime.min.replace(tzinfo=UTC),
            etag=row["etag"],
            last_modified=row["last_modified"],
            last_attempt=parse_iso(row["last_attempt"]),
            last_success=parse_iso(row["last_success"]),
            last_error=row["last_error"],
            bytes_received=row["bytes_received"],
            seconds=row["seconds"],
            failures=row["failures"],
            last_failure=row["last_failure"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerImage:
    """One image a peer's verified export says it approved, shares and serves."""

    peer: str
    image_id: str
    sha512: str
    size: int
    url: str
    source_list: str
    source_version: int
    source_url: str
    title: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PeerImage:
        return cls(
            peer=row["peer"],
            image_id=row["image_id"],
            sha512=row["sha512"],
            size=row["size"],
            url=row["url"],
            source_list=row["source_list"],
            source_version=row["source_version"],
            source_url=row["source_url"],
            title=row["title"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerClaim:
    """A version of an endorser's list that a peer's verified export says it holds, the
    SHA-256 of its signed content, and where the peer serves its bytes."""

    peer: str
    list_id: str
    version: int
    content_sha256: str
    url: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PeerClaim:
        return cls(
            peer=row["peer"],
            list_id=row["list_id"],
            version=row["version"],
            content_sha256=row["content_sha256"],
            url=row["url"],
        )


class PeerStore:
    """Typed access to the federation's tables of one open :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- meta ----------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        return self.store.meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.store.set_meta(key, value)

    # -- peers ---------------------------------------------------------------------
    def peers(self) -> list[Peer]:
        return [Peer.from_row(r) for r in self.store._rows("SELECT * FROM peers ORDER BY name")]

    def peer(self, name: str) -> Peer | None:
        rows = self.store._rows("SELECT * FROM peers WHERE name = ?", (name,))
        return Peer.from_row(rows[0]) if rows else None

    def add_peer(self, peer: Peer) -> None:
        pins = pins_to_json(peer.pins)
        self.store._run(
            "INSERT INTO peers (name, url, list_id, self_url, pins, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (peer.name, peer.url, peer.list_id, peer.self_url, pins, iso(peer.created)),
        )

    def remove_peer(self, name: str) -> None:
        self.store._run("DELETE FROM peer_images WHERE peer = ?", (name,))
        self.store._run("DELETE FROM peer_holds WHERE peer = ?", (name,))
        self.store._run("DELETE FROM peers WHERE name = ?", (name,))

    def record_attempt(
        self,
        name: str,
        *,
        at: datetime,
        error: str | None,
        etag: str | None = None,
        last_modified: str | None = None,
        validators: bool = False,
    ) -> None:
        sets = ["last_attempt = ?", "last_error = ?"]
        params: list[Any] = [iso(at), error]
        if error is None:
            sets.append("last_success = ?")
            params.append(iso(at))
        if validators:
            sets += ["etag = ?", "last_modified = ?"]
            params += [etag, last_modified]
        self.store._run(
            f"UPDATE peers SET {', '.join(sets)} WHERE name = ?",  # noqa: S608 - column names only
            (*params, name),
        )

    def record_transfer(
        self, name: str, *, ok: bool, size: int, seconds: float, at: datetime, error: str = ""
    ) -> None:
        if ok:
            self.store._run(
                "UPDATE peers SET bytes_received = bytes_received + ?, seconds = seconds + ?"
                " WHERE name = ?",
                (size, seconds, name),
            )
        else:
            self.store._run(
                "UPDATE peers SET failures = failures + 1, last_failure = ? WHERE name = ?",
                (f"{iso(at)} {error}".strip(), name),
            )

    # -- what peers offer --------------------------------------------------------------
    def replace_offers(self, name: str, offers: list[PeerImage]) -> None:
        self.store._run("DELETE FROM peer_images WHERE peer = ?", (name,))
        for o in offers:
            self.store._run(
                "INSERT INTO peer_images (peer, image_id, sha512, size, url, source_list,"
                " source_version, source_url, title)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    o.peer,
                    o.image_id,
                    o.sha512,
                    o.size,
                    o.url,
                    o.source_list,
                    o.source_version,
                    o.source_url,
                    o.title,
                ),
            )

    def offers(
        self,
        *,
        sha512: str | None = None,
        source_list: str | None = None,
        image_id: str | None = None,
    ) -> list[PeerImage]:
        clauses, params = [], []
        for column, value in (
            ("sha512", sha512),
            ("source_list", source_list),
            ("image_id", image_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.store._rows(
            f"SELECT * FROM peer_images{where} ORDER BY peer, image_id",  # noqa: S608 - ? marks only
            tuple(params),
        )
        return [PeerImage.from_row(r) for r in rows]

    # -- what peers say they hold ---------------------------------------------------------
    def replace_claims(self, name: str, claims: list[PeerClaim]) -> None:
        self.store._run("DELETE FROM peer_holds WHERE peer = ?", (name,))
        for c in claims:
            self.store._run(
                "INSERT INTO peer_holds (peer, list_id, version, content_sha256, url)"
                " VALUES (?, ?, ?, ?, ?)",
                (c.peer, c.list_id, c.version, c.content_sha256, c.url),
            )

    def claims(self) -> list[PeerClaim]:
        rows = self.store._rows("SELECT * FROM peer_holds ORDER BY list_id, peer")
        return [PeerClaim.from_row(r) for r in rows]
