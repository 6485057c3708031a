"""The catalogue of `vmic serve` as a site admin and a VO user read it.

Each test runs the real server on 127.0.0.1 port 0 for a site home that
`vmic subscribe` and `vmic sync` filled from a loopback endorser's signed
list, and reads the HTML it answers: image versions and expiries, the
default view (images available here) and its switch to every state, the
endorser by name with the DN on hover, no download link for an image that
is not available, each list's health, and an endorser's policy override.
Text from lists stays text wherever it lands (cells, ``title`` attributes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from site_agent.records import iso
from tests.support.lists import LIST_ID
from tests.support.serving import ServeThread, available_site, site_world
from tests.support.site import CA_DN, ENDORSER_DN, LIST_PATH, World, image_uuid, make_world

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(2)>'
OVERRIDE = 'kernel "5.14" < the baseline & unsigned; reviewed by <b>Jane</b>'


def _publish(
    world: World, *, auto: bool = True, changes: Mapping[int, Mapping[str, object]] | None = None
) -> None:
    """Publish images 1-3 (each with its ``changes``), subscribe and sync."""
    lst = world.make_list(version=1, images=(1, 2, 3))
    wanted = changes or {}
    entries = tuple(
        replace(e, **wanted.get(n, {}))  # type: ignore[arg-type]  # ImageEntry fields
        for n, e in zip((1, 2, 3), lst.entries, strict=True)
    )
    world.publish(replace(lst, entries=entries))
    assert world.subscribe(auto=auto) == 0
    assert world.vmic("sync") == 0


def _rows(page: str) -> dict[str, str]:
    """Each row of the images table by image id: its HTML."""
    return dict(re.findall(r'<tr data-image="([^"]+)">(.*?)</tr>', page))


def _cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", row)


def _column(page: str, label: str) -> int:
    head = re.search(r'<table id="images"><thead>(.*?)</thead>', page)
    assert head is not None
    labels = re.findall(r'<a href="[^"]*">([^<]+)</a></th>', head.group(1))
    return labels.index(label)


def _cell(page: str, image: str, label: str) -> str:
    return _cells(_rows(page)[image])[_column(page, label)]


@pytest.fixture
def site(tmp_path: Path, now: datetime) -> Iterator[World]:
    with site_world(tmp_path, now) as made:
        yield made


@pytest.fixture
def available(site: World) -> World:
    available_site(site)
    return site


# -- versions and expiries -----------------------------------------------------------------
def test_the_table_shows_each_images_version_and_expiry(site: World, now: datetime) -> None:
    own = now + timedelta(days=10)
    _publish(site, changes={1: {"expires": own, "version": "2.5-rc1"}})
    with site.store() as store:
        listed = store.current_list(LIST_ID)
    assert listed is not None
    with ServeThread(site.home) as server:
        page = server.get("/").text
        one = server.get(f"/image/{image_uuid(1)}").text
        two = server.get(f"/image/{image_uuid(2)}").text
    assert _cell(page, image_uuid(1), "Version") == "2.5-rc1"
    assert _cell(page, image_uuid(2), "Version") == "1.0"
    # Image 1 has an expiry of its own; image 2 has none and shows its list's, marked so.
    own_cell = re.search(
        rf'<td class="date" data-key="{iso(own)}">([^<]*)</td>', _rows(page)[image_uuid(1)]
    )
    assert own_cell is not None
    assert own_cell.group(1) == own.strftime("%Y-%m-%d")
    list_cell = _cell(page, image_uuid(2), "Expires")
    assert list_cell.startswith(listed.expires.strftime("%Y-%m-%d") + " ")
    assert ">(list)</span>" in list_cell
    assert f'data-key="{iso(listed.expires)}"' in _rows(page)[image_uuid(2)]
    assert f"<dt>Expires</dt><dd>{own:%Y-%m-%d %H:%M} UTC</dd>" in one
    assert f"<dt>Expires</dt><dd>{listed.expires:%Y-%m-%d %H:%M} UTC, its list" in two


def test_the_table_sorts_by_expiry(site: World, now: datetime) -> None:
    _publish(site, changes={3: {"expires": now + timedelta(days=2)}})
    with ServeThread(site.home) as server:
        page = server.get("/?sort=expires&order=asc").text
    assert next(iter(_rows(page))) == image_uuid(3)  # 2 days before the list's 28


# -- which states are shown ------------------------------------------------------------------
def test_only_available_images_are_shown_by_default(available: World) -> None:
    assert available.vmic("withdraw", image_uuid(2)) == 0
    with ServeThread(available.home) as server:
        default = server.get("/").text
        every = server.get("/?state=all").text
        withdrawn = server.get("/?state=withdrawn").text
        nonsense = server.get("/?state=%3Cscript%3E").text
    assert sorted(_rows(default)) == [image_uuid(1), image_uuid(3)]
    assert '<span id="shown">2</span> of 3 shown' in default
    assert '<option value="available" selected>' in default
    assert (
        '<p id="other-states" class="muted">Only images available here are shown; 1 image in'
        ' another state is hidden: <a href="/?state=all&amp;sort=title&amp;order=asc">'
    ) in default
    assert sorted(_rows(every)) == [image_uuid(n) for n in (1, 2, 3)]
    assert '<option value="all" selected>' in every
    assert 'id="other-states"' not in every
    assert 'href="/?state=all&amp;sort=size&amp;order=asc"' in every  # sorting keeps the switch
    assert list(_rows(withdrawn)) == [image_uuid(2)]
    assert sorted(_rows(nonsense)) == sorted(_rows(default))
    assert "&lt;script" not in nonsense


def test_a_site_with_nothing_available_says_how_to_see_the_rest(site: World) -> None:
    _publish(site, auto=False)  # every image waits for the admin
    with ServeThread(site.home) as server:
        default = server.get("/").text
        waiting = server.get("/?state=new").text
    assert _rows(default) == {}
    assert '<p id="empty" class="muted">' in default  # shown, not hidden
    assert "3 images in other states are hidden" in default
    assert sorted(_rows(waiting)) == [image_uuid(n) for n in (1, 2, 3)]


# -- the endorser ----------------------------------------------------------------------------
def test_the_endorser_is_named_with_the_dn_on_hover(available: World) -> None:
    with ServeThread(available.home) as server:
        page = server.get("/").text
        by_name = server.get("/?q=jane+endorser").text
        detail = server.get(f"/image/{image_uuid(1)}").text
    cell = _cell(page, image_uuid(1), "Endorser")
    assert cell == f'<span title="{ENDORSER_DN}">Jane Endorser</span>'
    assert len(_rows(by_name)) == 3
    assert (
        f'<dt>Endorser</dt><dd>Jane Endorser (<span class="dn">{ENDORSER_DN}</span>)</dd>' in detail
    )


def test_a_hostile_endorser_name_and_dn_are_text(tmp_path: Path, now: datetime) -> None:
    hostile_dn = f"/DC=org/DC=vmic-test/OU={XSS_SCRIPT}/CN={XSS_ATTR}"
    with site_world(tmp_path, now) as base:
        world = make_world(tmp_path / "hostile", now, base.ca, base.ca.issue(hostile_dn), base.sim)
        world.publish(version=1, images=(1,))
        assert (
            world.vmic(
                "subscribe",
                world.sim.url(LIST_PATH),
                *("--name", "base", "--endorser-dn", hostile_dn, "--ca-dn", CA_DN),
            )
            == 0
        )
        assert world.vmic("sync") == 0
        with ServeThread(world.home) as server:
            page = server.get("/?state=all").text
            detail = server.get(f"/image/{image_uuid(1)}").text
    escaped_cn = "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"
    cell = _cell(page, image_uuid(1), "Endorser")
    assert cell.startswith('<span title="/DC=org/DC=vmic-test/OU=&lt;script&gt;alert(1)')
    assert cell.endswith(f'">{escaped_cn}</span>')
    for html in (page, detail):
        assert "<img" not in html
        assert XSS_SCRIPT not in html
        assert XSS_ATTR not in html
    assert f"<dd>{escaped_cn} (" in detail


# -- no download of bytes that are not available ---------------------------------------------
def _download_links(world: World, page: str) -> list[str]:
    endorser_url = world.sim.url("/images/img-2.raw")
    links = re.findall(r'<a href="([^"]+)"', page)
    return [u for u in links if u == endorser_url or u.startswith("/images/")]


@pytest.mark.parametrize("how", ["revoked", "withdrawn", "new", "refused"])
def test_an_image_that_is_not_available_links_to_no_download(site: World, how: str) -> None:
    if how in ("new", "refused"):
        _publish(site, auto=False)
        if how == "refused":
            assert site.vmic("refuse", image_uuid(2), "--reason", "not here") == 0
    else:
        available_site(site)
        if how == "revoked":
            site.publish(version=2, images=(1, 3), revoked=(2,))
            assert site.vmic("sync") == 0
        else:
            assert site.vmic("withdraw", image_uuid(2)) == 0
    assert site.states()[image_uuid(2)] == how
    with ServeThread(site.home) as server:
        page = server.get(f"/image/{image_uuid(2)}").text
    assert _download_links(site, page) == []
    url = site.sim.url("/images/img-2.raw")
    assert f"<dt>Download location</dt><dd>{url} (not linked: {how} here)</dd>" in page
    assert f"<li>the endorser: {url}</li>" in page
    assert f"<li>not held at this site (state: {how})</li>" in page


def test_an_available_image_links_to_its_bytes(available: World) -> None:
    with ServeThread(available.home) as server:
        page = server.get(f"/image/{image_uuid(2)}").text
    links = _download_links(available, page)
    assert sum(u.startswith("/images/sha512/") for u in links) == 1  # this site's copy
    assert links.count(available.sim.url("/images/img-2.raw")) == 2  # location, the endorser


# -- list health -------------------------------------------------------------------------------
def _list_row(page: str, name: str = "base") -> str:
    found = re.search(rf'<tr data-list="{name}">(.*?)</tr>', page)
    assert found is not None
    return found.group(1)


def test_each_list_shows_its_version_expiry_and_last_sync(available: World) -> None:
    with available.store() as store:
        listed, sub = store.current_list(LIST_ID), store.subscription("base")
    assert listed is not None
    assert sub is not None
    assert sub.last_success is not None
    with ServeThread(available.home) as server:
        page = server.get("/").text
    assert _cells(_list_row(page)) == [
        f'<a href="/lists/{LIST_ID}.atom">base</a>',
        "1",
        f"{listed.expires:%Y-%m-%d %H:%M} UTC",
        f"{sub.last_success:%Y-%m-%d %H:%M} UTC",
        '<span class="health health-ok">ok</span>',
    ]


@pytest.mark.parametrize(
    ("later", "level", "note"),
    [
        (timedelta(days=24, hours=12), "soon", "expires in 3 days"),
        (timedelta(days=27, hours=21), "soon", "expires in 3 hours"),
        (timedelta(days=28, hours=1), "expired", "expired: sync withdraws its images"),
    ],
)
def test_a_list_that_expired_or_expires_soon_is_flagged(
    available: World, later: timedelta, level: str, note: str
) -> None:
    with available.store() as store:
        listed = store.current_list(LIST_ID)
    assert listed is not None
    published = listed.expires - timedelta(days=28)  # the test lists expire in 28 days
    with ServeThread(available.home) as server:
        server.state.clock = lambda: published + later  # the server reads it per request
        row = _list_row(server.get("/").text)
    assert f'<span class="health health-{level}">{note}' in row


def test_a_list_without_a_version_in_force_is_flagged(available: World) -> None:
    """`vmic subscribe` stores the subscription, then accepts the list; a crash between
    the two leaves a subscription with no version in force."""
    with available.store() as store:
        base = store.subscription("base")
        assert base is not None
        store.add_subscription(
            replace(base, name="later", list_id="00000000-0000-4000-8000-0000000000cc")
        )
    with ServeThread(available.home) as server:
        page = server.get("/").text
    assert _cells(_list_row(page, "later")) == [
        "later",
        "—",
        "—",
        "never",
        '<span class="health health-none">no version accepted yet</span>',
    ]
    assert "health-ok" in _list_row(page, "base")


# -- policy overrides --------------------------------------------------------------------------
def test_a_policy_override_is_marked_in_the_table_and_on_the_image_page(site: World) -> None:
    _publish(site, changes={2: {"policy_override": OVERRIDE}})
    with ServeThread(site.home) as server:
        page = server.get("/").text
        overridden = server.get("/?q=policy+override").text
        detail = server.get(f"/image/{image_uuid(2)}").text
        plain = server.get(f"/image/{image_uuid(1)}").text
    shown = (
        "kernel &quot;5.14&quot; &lt; the baseline &amp; unsigned;"
        " reviewed by &lt;b&gt;Jane&lt;/b&gt;"
    )
    title = _cell(page, image_uuid(2), "Title")
    assert title.endswith(
        f' <span class="override" title="policy override: {shown}">policy override</span>'
    )
    assert "override" not in _cell(page, image_uuid(1), "Title")
    assert list(_rows(overridden)) == [image_uuid(2)]  # the filter finds what the table shows
    assert (
        '<p class="override" role="note"><strong>Policy override:</strong> the endorser'
        f" published this image despite a policy-check error, saying: {shown}</p>"
    ) in detail
    assert f"<dt>Policy override</dt><dd>{shown}</dd>" in detail
    assert "<b>" not in detail
    assert 'class="override"' not in plain
    assert "<dt>Policy override</dt><dd>none</dd>" in plain


def test_a_hostile_policy_override_is_text(site: World) -> None:
    _publish(site, changes={1: {"policy_override": XSS_SCRIPT}, 2: {"policy_override": XSS_ATTR}})
    with ServeThread(site.home) as server:
        pages = [server.get("/").text] + [
            server.get(f"/image/{image_uuid(n)}").text for n in (1, 2)
        ]
    for page in pages:
        assert XSS_ATTR not in page
        assert "<img" not in page
        assert page.count("<script") <= 1  # the catalogue's own script only
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1]
    assert 'title="policy override: &quot;&gt;&lt;img src=x onerror=alert(2)&gt;"' in pages[0]
