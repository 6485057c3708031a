"""A peer's export may say anything (THREATS 27-29, 33-35; issue 9, class 1).

A real site follows a hostile peer. The peer's export is genuinely signed
with the peer site's own certificate from the test CA (it passes the
signature and the pins), but its content is generated: random and borrowed
image ids, digests and sizes; source lists that are the endorser's list the
site subscribes to, the site's own export, the peer's export or nothing
known; odd source versions; via and enclosure links to good, old, altered,
missing and garbage copies (on 127.0.0.1 only); titles with control
characters; thousands of entries; repeated ids. Or it is the bytes of a
genuine export, mutated.

For each example a real `vmic sync` runs in-process, and then:

- it exits 0 or with PROBLEMS, and no problem is an internal error (a bug);
- what the site trusts (image rows, accepted list versions, stored lists,
  cached files) is exactly as before: a peer is trusted for which images it
  approved and where it serves them, never to speak for an endorser's list;
- the endorser then publishes a newer version with a new image, and the
  next sync accepts it and makes the image available: the peer cannot block
  the genuine list.

`make test` runs a few fixed examples, `make fuzz` many more.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from hypothesis import event, given, settings
from hypothesis import strategies as st

from federation.cli.common import ExitCode
from feeds.atom import atom, render_list
from feeds.model import ImageEntry, ImageList, ListId, Sha512Hex, image_id, list_id
from site_agent.peerstore import PeerStore
from site_agent.site import PEER_EXPORTS
from site_agent.store import Store
from tests.federation.test_peers import HostilePeer, Site, configure, make_site, site_dn
from tests.feeds.test_hostile_lists import Step, byte_steps, mutate_bytes
from tests.sim.server import Simulator
from tests.support.lists import LIST_ID, entry, sign_root
from tests.support.site import (
    CA_DN,
    ENDORSER_DN,
    LIST_PATH,
    TrustedState,
    World,
    image_bytes,
    image_uuid,
)

pytestmark = pytest.mark.fuzz

EXPORT_ID = list_id("99999999-8888-4777-8666-555555555555")
"""The id of the hostile peer's export (HostilePeer's)."""
EXAMPLES = max(8, min(settings().max_examples // 10, 200))
"""8 examples in `make test` (each is two syncs), up to 150 in `make fuzz`."""
_UNIQUE = re.compile(r"[0-9a-f-]{36}|\d+|\(.*")
"""What makes outcomes differ in `--hypothesis-show-statistics` beyond their kind."""
GARBAGE = b"not the image you are looking for\n" * 64
HTML = b"<!doctype html>\n<html><body>a peer's web page</body></html>\n"


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as servers:
        yield servers


@pytest.fixture
def hostile(world: World) -> Iterator[HostilePeer]:
    with Simulator() as server:
        yield HostilePeer(sim=server, identity=world.ca.issue(site_dn("mallory")), world=world)


def no_retries(site: Site) -> None:
    """A closed port on 127.0.0.1 is refused at once; do not wait to try it again."""
    doc = tomlkit.parse(site.home.config.read_text())
    network = doc.get("network")
    if network is None:
        network = tomlkit.table()
        doc["network"] = network
    assert isinstance(network, dict)
    network["retries"] = 0
    site.home.config.write_text(tomlkit.dumps(doc))


@dataclass
class Scene:
    """The site, its endorser and the hostile peer it follows, between examples."""

    world: World
    site: Site
    peer: HostilePeer
    own_export: ListId
    version: int
    """The endorser list's version the site holds."""
    image: int
    """The newest image the endorser published."""
    genuine: bytes
    """The signed bytes of that version."""
    first: bytes
    """The signed bytes of version 1 (a replay)."""

    @property
    def next_image(self) -> int:
        return self.image + 1

    def sha512(self, n: int) -> Sha512Hex:
        return Sha512Hex(hashlib.sha512(image_bytes(n)).hexdigest())


@pytest.fixture
def scene(world: World, stack: ExitStack, tmp_path: Path, hostile: HostilePeer) -> Scene:
    first = world.publish(version=1, images=(1,))
    site = make_site(world, stack, tmp_path, "a", first=True)
    configure(world.home, follow=[[ENDORSER_DN, CA_DN]], approve_if_peers=1, prefer_peers=True)
    no_retries(site)
    assert world.subscribe(auto=True) == 0
    hostile.publish_export(list_copy=first, list_version=1, image_data=image_bytes(1))
    hostile.add_to(world)
    assert world.vmic("sync") == 0
    with Store.open(world.home.database) as store:
        own = PeerStore(store).meta("export_list_id")
    assert own is not None
    assert world.states() == {image_uuid(1): "available"}
    return Scene(
        world=world,
        site=site,
        peer=hostile,
        own_export=list_id(own),
        version=1,
        image=1,
        genuine=first,
        first=first,
    )


def trusted(world: World) -> tuple[TrustedState, tuple[tuple[Any, ...], ...]]:
    """World.snapshot() without the peers' exports (the peer may change its own), and what
    each subscription trusts (the peer must not add one, nor change one)."""
    state = world.snapshot()
    conn = sqlite3.connect(world.home.database)
    try:
        subscriptions = tuple(
            conn.execute(
                "SELECT name, url, list_id, self_url, pins, auto_approve FROM subscriptions "
                "ORDER BY name"
            ).fetchall()
        )
    finally:
        conn.close()
    own = tuple(s for s in state.stored_lists if not s[0].startswith(PEER_EXPORTS))
    return replace(state, stored_lists=own), subscriptions


def sync(world: World, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """A real `vmic sync`; its problems, none of which may be a bug."""
    capsys.readouterr()
    code = world.vmic("sync", "--json")
    assert code in (0, ExitCode.PROBLEMS)
    report = json.loads(capsys.readouterr().out)
    problems: list[dict[str, Any]] = report["problems"]
    assert [p for p in problems if p["kind"] == "internal"] == []
    assert (code == 0) == (problems == [])
    log = world.home.log
    assert not log.exists() or "Traceback" not in log.read_text(encoding="utf-8")
    return problems


# -- what the peer serves -----------------------------------------------------------------


def via_urls(scene: Scene) -> list[str]:
    """Where export entries say the endorser's list is: copies good, old, altered, foreign,
    missing; the endorser's own URL and the site's own; all on 127.0.0.1."""
    peer = scene.peer.sim
    return [
        peer.url("/lists/copy.atom"),
        peer.url("/lists/old.atom"),
        peer.url("/lists/mutated.atom"),
        peer.url("/lists/export.atom"),
        peer.url("/lists/page.html"),
        peer.url("/lists/missing.atom"),
        peer.url("/lists/away"),
        scene.world.sim.url(LIST_PATH),
        f"{scene.site.server.url}/lists/{LIST_ID}.atom",
        f"{scene.site.server.url}/export.atom",
        "http://127.0.0.1:9/lists/closed.atom",
    ]


def image_urls(scene: Scene) -> list[str]:
    peer = scene.peer.sim
    return [
        peer.url("/images/one"),
        peer.url("/images/garbage"),
        peer.url("/images/missing"),
        peer.url("/images/away"),
        scene.world.sim.url("/images/img-1.raw"),
        f"{scene.site.server.url}/images/sha512/{scene.sha512(1)}",
        "http://127.0.0.1:9/images/closed",
    ]


ODD_URLS = [
    "file:///etc/passwd",
    "javascript:alert(1)",
    "http://127.0.0.1:99999/",
    "http://127.0.0.1/a b",
    "http://127.0.0.1/\n",
    "http://[::1/",
    "http://user:pw@127.0.0.1/",
    "ftp://127.0.0.1/x",
]


def serve_copies(scene: Scene, steps: list[Step]) -> None:
    """The resources behind the URLs above, for this example."""
    sim = scene.peer.sim
    sim.publish("/lists/copy.atom", scene.genuine)
    sim.publish("/lists/old.atom", scene.first)
    sim.publish("/lists/mutated.atom", mutate_bytes(scene.genuine, steps))
    sim.publish("/lists/page.html", HTML)
    sim.publish("/images/one", image_bytes(1))
    sim.publish("/images/garbage", GARBAGE)
    sim.fault("/lists/away", redirect_to="file:///etc/passwd")
    sim.fault("/images/away", redirect_to="ftp://127.0.0.1/x")


def _ids(scene: Scene) -> st.SearchStrategy[str]:
    known = [image_uuid(n) for n in (1, 2, scene.image, scene.next_image, scene.next_image + 1)]
    return st.one_of(st.sampled_from(known), st.uuids().map(str))


def _digests(scene: Scene) -> st.SearchStrategy[str]:
    known = [scene.sha512(n) for n in (1, scene.image, scene.next_image)]
    return st.one_of(st.sampled_from(known), st.binary(min_size=64, max_size=64).map(bytes.hex))


def _titles() -> st.SearchStrategy[str]:
    """Text XML can carry, with the control characters it allows; never blank."""
    chars = st.one_of(
        st.sampled_from("\t\n\r\x7f\x85\x9f\u2028\u202e\ufeff"),
        st.characters(min_codepoint=0x20, max_codepoint=0xD7FF),
        st.characters(min_codepoint=0x10000),
    )
    return st.text(chars, max_size=30).map(lambda text: "Image " + text)


@st.composite
def export_entries(draw: st.DrawFn, scene: Scene, odd_one_in: int) -> ImageEntry:
    """An entry whose fields are each plausible, or odd about one time in ``odd_one_in``
    (never when it is 0): a peer whose export verifies, or one whose export is refused."""

    def pick(sane: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], label: str) -> Any:
        odd_now = odd_one_in > 0 and draw(st.integers(1, odd_one_in), label=label) == odd_one_in
        return draw(odd if odd_now else sane, label)

    lists_known = [LIST_ID, scene.own_export, EXPORT_ID]
    return replace(
        entry(1, now=scene.world.now),
        id=image_id(draw(_ids(scene), label="id")),
        title=pick(_titles(), st.sampled_from([" ", "\t", "x" * 70_000]), "title"),
        sha512=pick(_digests(scene), st.sampled_from(["A" * 128, "0" * 127]), "sha512"),
        size=pick(
            st.one_of(st.just(4096), st.integers(0, 2**63 - 1)),
            st.sampled_from([-1, 2**63]),
            "size",
        ),
        url=pick(st.sampled_from(image_urls(scene)), st.sampled_from(ODD_URLS), "url"),
        source_list=pick(
            st.one_of(st.sampled_from(lists_known), st.uuids().map(lambda u: list_id(str(u)))),
            st.none(),  # not an export entry: no offer
            "source list",
        ),
        source_version=pick(
            st.one_of(
                st.sampled_from([1, scene.version, scene.version + 1, 2**32, 2**53 - 1]),
                st.integers(1, 2**53 - 1),
            ),
            st.sampled_from([0, -1, 2**53, 2**63]),
            "source version",
        ),
        source_url=pick(
            st.sampled_from(via_urls(scene)),
            st.one_of(st.none(), st.sampled_from(ODD_URLS)),
            "via",
        ),
    )


def export_of(scene: Scene, entries: tuple[ImageEntry, ...], *, export_id: ListId) -> ImageList:
    return replace(
        scene.world.make_list(version=scene.peer.version, images=()),
        id=export_id,
        title="Images shared by mallory",
        self_url=scene.peer.sim.url("/export.atom"),
        endorser_dn=scene.peer.identity.subject,
        issuer_dn=scene.peer.identity.issuer,
        entries=entries,
    )


def signed_export(
    scene: Scene, entries: list[ImageEntry], *, export_id: ListId = EXPORT_ID, **changes: Any
) -> bytes:
    """Signed with the peer site's own certificate. Repeated ids are written into the tree
    by hand: the model refuses them, a hostile peer's software need not."""
    first: dict[str, ImageEntry] = {}
    repeats: list[ImageEntry] = []
    for item in entries:
        if item.id in first:
            repeats.append(item)
        else:
            first[item.id] = item
    lst = replace(export_of(scene, tuple(first.values()), export_id=export_id), **changes)
    root = render_list(lst)
    for item in repeats:
        (node,) = render_list(replace(lst, entries=(item,))).iterfind(atom("entry"))
        root.append(node)
    return sign_root(root, scene.peer.identity)


def genuine_entry(scene: Scene) -> ImageEntry:
    """What an honest export says of the endorser's newest image."""
    base = scene.peer.sim.base_url
    n = scene.image
    return replace(
        entry(n, now=scene.world.now, data=image_bytes(n)),
        url=f"{base}/images/one" if n == 1 else f"{base}/images/garbage",
        source_list=LIST_ID,
        source_version=scene.version,
        source_url=f"{base}/lists/copy.atom",
    )


def many(template: ImageEntry, count: int) -> list[ImageEntry]:
    """``count`` copies of one entry under ids of their own (a big export, bounded)."""
    return [
        replace(template, id=image_id(f"00000000-0000-4000-9000-{n:012x}")) for n in range(count)
    ]


@st.composite
def hostile_export(draw: st.DrawFn, scene: Scene) -> bytes:
    """A generated export, genuinely signed by the peer, or a genuine one's bytes altered."""
    if draw(st.integers(0, 4), label="mutated genuine export") == 4:
        genuine = signed_export(scene, [genuine_entry(scene)])
        return mutate_bytes(genuine, draw(byte_steps, label="export steps"))
    odd_one_in = draw(st.sampled_from([0, 0, 30, 8]), label="odd fields")
    entries = draw(st.lists(export_entries(scene, odd_one_in), max_size=5), label="entries")
    if draw(st.integers(0, 9), label="thousands") == 9:
        template = entries[0] if entries else genuine_entry(scene)
        entries += many(template, draw(st.sampled_from([1000, 3000]), label="count"))
    if draw(st.integers(0, 4), label="repeat an id") == 4 and entries:
        twin = draw(st.sampled_from(entries), label="twin")
        entries.append(replace(twin, title=twin.title + " (again)", size=twin.size + 1))
    now = scene.world.now
    export_id = draw(
        st.sampled_from([*[EXPORT_ID] * 12, LIST_ID, scene.own_export]), label="export id"
    )
    times = draw(
        st.sampled_from(
            [
                *[{}] * 8,
                {"expires": now - timedelta(days=1), "updated": now - timedelta(days=2)},
                {"updated": now + timedelta(days=1)},
            ]
        ),
        label="times",
    )
    return signed_export(scene, entries, export_id=export_id, **times)


def export_outcome(world: World) -> str:
    """Whether the last sync took the peer's export, and how many offers it kept."""
    with Store.open(world.home.database) as store:
        peers = PeerStore(store)
        peer = peers.peer("mallory")
        assert peer is not None
        if peer.last_error:
            return peer.last_error[:90]
        return f"taken, {min(len(peers.offers()), 2)}+ offers"


# -- the property -------------------------------------------------------------------------


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_a_hostile_export_changes_nothing_the_site_trusts_and_never_blocks_the_endorser(
    data: st.DataObject, scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    world = scene.world
    serve_copies(scene, data.draw(byte_steps, label="steps for the altered list copy"))
    raw = data.draw(hostile_export(scene), label="export")
    scene.peer.sim.publish("/export.atom", raw)
    scene.peer.sim.publish("/lists/export.atom", raw)
    scene.peer.version += 1
    before = trusted(world)

    problems = sync(world, capsys)

    event(f"problems: {sorted({p['kind'] for p in problems})}")
    event(f"export: {_UNIQUE.sub('...', export_outcome(world))}")
    assert trusted(world) == before
    # The endorser publishes a newer version with a new image: it is taken, whatever the
    # peer said (offers for that image's digest included).
    scene.version += 1
    scene.image += 1
    scene.genuine = world.publish(version=scene.version, images=(1, scene.image))
    sync(world, capsys)
    with Store.open(world.home.database) as store:
        current = store.current_list(LIST_ID)
    assert current is not None
    assert current.version == scene.version
    states = world.states()
    assert states[image_uuid(1)] == states[image_uuid(scene.image)] == "available"
    cached = world.home.images / scene.sha512(scene.image)
    assert cached.read_bytes() == image_bytes(scene.image)
