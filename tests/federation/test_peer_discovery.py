"""`vmic peer add` given a site's address, and HTML where a list is expected.

A person types the address of a site (``https://site-b.example.org/``),
which `vmic serve` answers with its catalogue page; the page names the
site's export by its feed-autodiscovery link. Real `vmic serve` servers and
loopback simulators serve genuinely signed exports; a URL that leads to no
export is refused, saying it is an HTML page, with the site's state unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from federation.cli import main
from federation.cli.common import ExitCode
from federation.peer_admin import export_link
from site_agent.peerstore import Peer, PeerStore
from site_agent.store import Store
from tests.federation.test_peers import HostilePeer, make_site, site_dn
from tests.sim.server import Simulator
from tests.support.serving import ServeThread
from tests.support.site import CA_DN, ENDORSER_DN, World, image_bytes, image_uuid

OTHER_PAGE = b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body>Hi</body></html>"


def page_linking(href: str) -> bytes:
    """An HTML page whose head names an Atom feed at ``href`` (beside a style sheet)."""
    return (
        b"<!doctype html>\n<html><head>\n"
        b'<link rel="stylesheet" href="/style.css">\n'
        b'<link rel="alternate" type="application/atom+xml" href="' + href.encode() + b'">\n'
        b"<title>A site</title></head><body></body></html>"
    )


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as servers:
        yield servers


@pytest.fixture
def mallory(world: World) -> Iterator[HostilePeer]:
    """A peer site whose genuinely signed export is at /export.atom of a simulator."""
    with Simulator() as server:
        peer = HostilePeer(sim=server, identity=world.ca.issue(site_dn("mallory")), world=world)
        genuine = world.publish(version=1, images=(1,))
        peer.publish_export(list_copy=genuine, list_version=1, image_data=image_bytes(1))
        yield peer


def peers_of(database: Path) -> list[Peer]:
    with Store.open(database) as store:
        return PeerStore(store).peers()


def add_peer(world: World, url: str, peer: HostilePeer) -> int:
    return world.vmic("peer", "add", url, "--site-dn", str(peer.identity.subject), "--ca-dn", CA_DN)


# -- found from the site's address ----------------------------------------------------


@pytest.mark.parametrize("slash", ["/", ""], ids=["slash", "no-slash"])
def test_peer_add_takes_a_sites_address(
    world: World,
    stack: ExitStack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    slash: str,
) -> None:
    world.publish(version=1, images=(1,))
    a = make_site(world, stack, tmp_path, "a", first=True)
    assert world.subscribe(auto=True) == 0
    assert a.vmic("sync") == 0  # signs A's export
    b = make_site(world, stack, tmp_path, "b")
    capsys.readouterr()

    code = b.vmic(
        "peer", "add", a.server.url + slash, "--site-dn", str(a.identity.subject), "--ca-dn", CA_DN
    )

    assert code == ExitCode.OK
    export = a.server.url + "/export.atom"
    assert f"following peer site-a: {export} " in capsys.readouterr().out
    (peer,) = peers_of(b.home.database)
    assert peer.url == export
    assert b.vmic("sync") == 0  # later runs fetch the export from the stored URL
    assert b.states() == {image_uuid(1): "available"}


def test_peer_add_follows_the_export_link_a_page_names(
    world: World, mallory: HostilePeer, sim: Simulator
) -> None:
    """The page's link wins over /export.atom on the page's host (which has none here)."""
    sim.publish("/about/site.html", page_linking(mallory.sim.url("/export.atom")))

    assert add_peer(world, sim.url("/about/site.html"), mallory) == ExitCode.OK

    (peer,) = peers_of(world.home.database)
    assert peer.url == mallory.sim.url("/export.atom")
    assert not sim.requests_for("/export.atom")


def test_peer_add_of_a_bare_address_with_no_page_tries_export_atom(
    world: World, mallory: HostilePeer
) -> None:
    assert add_peer(world, mallory.sim.base_url, mallory) == ExitCode.OK

    (peer,) = peers_of(world.home.database)
    assert peer.url == mallory.sim.url("/export.atom")


def test_peer_add_of_the_export_itself_stores_it_as_given(
    world: World, mallory: HostilePeer
) -> None:
    url = mallory.sim.url("/export.atom")

    assert add_peer(world, url, mallory) == ExitCode.OK

    (peer,) = peers_of(world.home.database)
    assert peer.url == url
    assert len(mallory.sim.requests) == 1


# -- refused: HTML that leads to no export --------------------------------------------


@pytest.mark.parametrize(
    ("path", "page", "says"),
    [
        ("/", OTHER_PAGE, "it names no export, and"),
        ("/about.html", OTHER_PAGE, "it names no export, and"),
        ("/", page_linking("/feeds/news.atom"), "the export it names"),
        ("/", page_linking("/feeds/page.html"), "is an HTML page too"),
    ],
    ids=["no-link", "other-page", "link-not-found", "link-to-html"],
)
def test_peer_add_of_a_page_that_leads_to_no_export_says_html_and_changes_nothing(
    world: World,
    sim: Simulator,
    mallory: HostilePeer,
    capsys: pytest.CaptureFixture[str],
    path: str,
    page: bytes,
    says: str,
) -> None:
    sim.publish(path, page)
    sim.publish("/feeds/page.html", OTHER_PAGE)
    before = world.snapshot()
    capsys.readouterr()

    assert add_peer(world, sim.url(path), mallory) == ExitCode.CONFIG

    err = capsys.readouterr().err
    assert f"{sim.url(path)} returned an HTML page, not a signed image list" in err
    assert says in err
    assert peers_of(world.home.database) == []
    assert world.snapshot() == before


def test_peer_add_of_a_bare_address_with_nothing_there_names_both_urls(
    world: World, sim: Simulator, mallory: HostilePeer, capsys: pytest.CaptureFixture[str]
) -> None:
    before = world.snapshot()
    capsys.readouterr()

    assert add_peer(world, sim.base_url + "/", mallory) == ExitCode.CONFIG

    err = capsys.readouterr().err
    assert "HTTP 404" in err
    assert sim.url("/export.atom") in err
    assert peers_of(world.home.database) == []
    assert world.snapshot() == before


# -- verify and subscribe say HTML ----------------------------------------------------


def test_subscribe_to_a_sites_page_says_it_is_html_and_changes_nothing(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1, images=(1,))
    assert world.subscribe() == 0
    before = world.snapshot()
    capsys.readouterr()

    with ServeThread(world.home) as server:
        code = world.vmic(
            "subscribe",
            server.url + "/",
            "--name",
            "page",
            "--endorser-dn",
            ENDORSER_DN,
            "--ca-dn",
            CA_DN,
        )

    assert code == ExitCode.MALFORMED
    assert "an HTML page (a web page), not a signed image list" in capsys.readouterr().err
    assert world.snapshot() == before
    with world.store() as store:
        assert [s.name for s in store.subscriptions()] == ["base"]


def test_verify_of_a_saved_web_page_says_it_is_html(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ServeThread(world.home) as server:
        page = server.get("/")
    saved = tmp_path / "catalogue.html"
    saved.write_bytes(page.body)
    capsys.readouterr()

    assert main(["verify", str(saved), "--trust", str(world.trust)]) == ExitCode.MALFORMED

    assert "an HTML page (a web page), not a signed image list" in capsys.readouterr().err


# -- the autodiscovery link -----------------------------------------------------------


@pytest.mark.parametrize(
    ("page_url", "page", "found"),
    [
        (
            "https://b.example.org/",
            page_linking("/export.atom"),
            "https://b.example.org/export.atom",
        ),
        (
            "https://b.example.org/vmic/index.html",
            page_linking("../export.atom?v=1"),
            "https://b.example.org/export.atom?v=1",
        ),
        (
            "http://b.example.org/",
            page_linking("https://c.example.org/x.atom"),
            "https://c.example.org/x.atom",
        ),
        (
            "https://b.example.org/",
            (
                b'<html><head><LINK REL="Alternate Feed" TYPE="Application/Atom+XML; charset=utf-8"'
                b' HREF=" /e.atom "></head></html>'
            ),
            "https://b.example.org/e.atom",
        ),
        ("https://b.example.org/", page_linking("http://b.example.org/export.atom"), None),
        ("https://b.example.org/", page_linking("https://u:p@b.example.org/e.atom"), None),
        ("https://b.example.org/", page_linking("javascript:alert(1)"), None),
        ("https://b.example.org/", page_linking(""), None),
        (
            "https://b.example.org/",
            b'<html><head><link rel="alternate" type="application/rss+xml" href="/rss">',
            None,
        ),
        ("https://b.example.org/", OTHER_PAGE, None),
        ("https://b.example.org/", b"", None),
        ("https://b.example.org/", b"\x00\xff\xfe", None),
    ],
)
def test_export_link_is_the_pages_atom_alternate_resolved_and_checked(
    page_url: str, page: bytes, found: str | None
) -> None:
    assert export_link(page, page_url) == found


def test_export_link_reads_only_the_start_of_a_huge_page() -> None:
    head = page_linking("/export.atom")
    late = b"<html><body>" + b"x" * (1024 * 1024) + page_linking("/late.atom")
    assert export_link(head + b"<p>" * 100_000, "https://b.example.org/") == (
        "https://b.example.org/export.atom"
    )
    assert export_link(late, "https://b.example.org/") is None


def test_a_peer_named_after_a_common_name_with_spaces_gets_a_usable_name(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    with Simulator() as server:
        identity = world.ca.issue("/DC=org/DC=vmic-test/OU=Sites/CN=Site of Mallory: Bâle Ost")
        peer = HostilePeer(sim=server, identity=identity, world=world)
        peer.publish_export(list_copy=world.publish(version=1), list_version=1, image_data=b"x")

        assert add_peer(world, server.url("/export.atom"), peer) == ExitCode.OK

    (added,) = peers_of(world.home.database)
    assert added.name == "site-of-mallory-b-le-ost"
    assert f"following peer {added.name}:" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["peer:x", "a b", "x\x1b[2K"])
def test_peer_add_refuses_a_name_that_is_not_one_short_word(
    world: World, mallory: HostilePeer, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = world.snapshot()

    code = world.vmic(
        "peer", "add", mallory.sim.url("/export.atom"), "--name", name,
        "--site-dn", str(mallory.identity.subject), "--ca-dn", CA_DN,
    )  # fmt: skip

    assert code == ExitCode.CONFIG
    assert "peer name" in capsys.readouterr().err
    assert world.snapshot() == before
    assert peers_of(world.home.database) == []
