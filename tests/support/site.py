"""A small federation for site-agent tests: an endorser on a loopback server, a site home.

:class:`World` ties together the in-memory test CA (written out as a real
trust directory), an endorser identity, the loopback :class:`Simulator`
serving signed lists and image bytes, and a site home made by
``vmic site init``. Tests publish lists, run the real `vmic` commands
in-process (or as subprocesses), and compare snapshots of the site's
trusted state before and after.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from federation.cli import main
from feeds.model import ImageEntry, ImageList, Tombstone, image_id
from site_agent.home import SiteHome
from site_agent.store import Store
from tests.sim.server import Simulator
from tests.support.ca import Identity, TestCA, write_trust_dir
from tests.support.lists import LIST_ID, entry, image_list, sign

CA_DN = "/DC=org/DC=vmic-test/CN=vmic Test Root CA"
ENDORSER_DN = "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser"
LIST_PATH = "/lists/base.atom"


def image_bytes(n: int, size: int = 4096) -> bytes:
    """Deterministic bytes for image ``n``."""
    block = hashlib.sha512(f"image {n}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


@dataclass(frozen=True, slots=True)
class TrustedState:
    """What the site trusts: image rows, accepted list versions, stored lists, cached files."""

    images: tuple[tuple[Any, ...], ...]
    lists: tuple[tuple[Any, ...], ...]
    stored_lists: tuple[tuple[str, bytes], ...]
    cache: tuple[tuple[str, bytes], ...]


@dataclass
class World:
    sim: Simulator
    ca: TestCA
    endorser: Identity
    trust: Path
    home: SiteHome
    now: datetime
    image_sizes: dict[int, int] = field(default_factory=dict)

    # -- the endorser's side -------------------------------------------------------
    def image_entry(self, n: int, **changes: object) -> ImageEntry:
        data = image_bytes(n, self.image_sizes.get(n, 4096))
        self.sim.publish(f"/images/img-{n}.raw", data)
        return entry(
            n, now=self.now, data=data, url=self.sim.url(f"/images/img-{n}.raw"), **changes
        )

    def make_list(
        self,
        *,
        version: int,
        images: Sequence[int] = (1, 2),
        revoked: Sequence[int] = (),
        **changes: object,
    ) -> ImageList:
        base = image_list(
            self.endorser,
            now=self.now,
            entries=0,
            version=version,
            self_url=self.sim.url(LIST_PATH),
            tombstones=tuple(
                Tombstone(id=image_id(_uuid(n)), when=self.now - timedelta(minutes=1), reason="bad")
                for n in revoked
            ),
            **changes,  # type: ignore[arg-type]  # fields of ImageList, checked at run time
        )
        return replace(base, entries=tuple(self.image_entry(n) for n in images))

    def publish(
        self,
        lst: ImageList | None = None,
        *,
        signer: Identity | None = None,
        path: str = LIST_PATH,
        **make: Any,
    ) -> bytes:
        signed = sign(lst or self.make_list(**make), signer or self.endorser)
        self.sim.publish(path, signed)
        return signed

    # -- the site's side -----------------------------------------------------------
    def vmic(self, *args: object) -> int:
        """Run a site command on this site's home (``--home`` goes before any ``--``)."""
        argv = [str(a) for a in args]
        at = argv.index("--") if "--" in argv else len(argv)
        return main([*argv[:at], "--home", str(self.home.root), *argv[at:]])

    def subscribe(self, *, name: str = "base", path: str = LIST_PATH, auto: bool = False) -> int:
        extra = ["--auto-approve"] if auto else []
        return self.vmic(
            "subscribe",
            self.sim.url(path),
            "--name",
            name,
            "--endorser-dn",
            ENDORSER_DN,
            "--ca-dn",
            CA_DN,
            *extra,
        )

    def add_peer(self, url: str, *, name: str, site_dn: object) -> int:
        """`vmic peer add URL --name NAME --site-dn DN --ca-dn (the test CA)` on this site."""
        return self.vmic(
            "peer", "add", url, "--name", name, "--site-dn", str(site_dn), "--ca-dn", CA_DN
        )

    @contextmanager
    def store(self) -> Iterator[Store]:
        with Store.open(self.home.database) as store:
            yield store

    def states(self) -> dict[str, str]:
        with self.store() as store:
            return {i.image_id: i.state for i in store.images()}

    def snapshot(self) -> TrustedState:
        conn = sqlite3.connect(self.home.database)
        try:
            images = tuple(conn.execute("SELECT * FROM images ORDER BY image_id").fetchall())
            lists = tuple(conn.execute("SELECT * FROM lists ORDER BY list_id, version").fetchall())
        finally:
            conn.close()
        return TrustedState(
            images=images,
            lists=lists,
            stored_lists=_files(self.home.lists),
            cache=_files(self.home.images),
        )


def _uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def image_uuid(n: int) -> str:
    return _uuid(n)


def _files(folder: Path) -> tuple[tuple[str, bytes], ...]:
    return tuple(
        (str(p.relative_to(folder)), p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    )


def make_world(
    tmp_path: Path, now: datetime, ca: TestCA, endorser: Identity, sim: Simulator
) -> World:
    trust = write_trust_dir(tmp_path / "trust", [ca])
    home = SiteHome(tmp_path / "site")
    assert main(["site", "init", "--home", str(home.root), "--trust", str(trust)]) == 0
    return World(sim=sim, ca=ca, endorser=endorser, trust=trust, home=home, now=now)


LIST_UUID = LIST_ID
