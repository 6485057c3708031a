"""Where a site admin sees an image's VO, page and EGI AppDB ids: `vmic images`, `vmic
image show`, their JSON, and the catalogue of `vmic serve`.

The site subscribes to a signed AppDB-like HEPiX list (the VO at list level,
``ad:mpuri``, ``ad:appid``, ``ad:base_mpuri``; one image with a ``<script>``
title and appliance id and ``javascript:`` marketplace URIs) and to an Atom
list whose image names its page, both served on loopback and really signed.
What a list says is shown escaped everywhere, and only an http(s) URL ever
becomes a link.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.site_agent.test_vmcatcher_hooks import (
    APPID,
    ATOM_PAGE,
    BASE_MPURI,
    HOSTILE_APPID,
    HOSTILE_TITLE,
    JS_URL,
    LIST_VO,
    LONG_VO,
    MPURI,
    subscribe_appdb_lists,
)
from tests.support.serving import ServeThread, site_world
from tests.support.site import World, image_uuid

REL = 'rel="noopener noreferrer nofollow"'


@pytest.fixture
def site(tmp_path: Path, now: datetime) -> Iterator[World]:
    with site_world(tmp_path, now) as world:
        subscribe_appdb_lists(world)
        yield world


def _out(world: World, capsys: pytest.CaptureFixture[str], *args: object) -> str:
    capsys.readouterr()
    assert world.vmic(*args) == 0
    return capsys.readouterr().out


def _hrefs(page: str) -> list[str]:
    return re.findall(r'href="([^"]*)"', page)


# -- the command line ----------------------------------------------------------------------
def test_vmic_images_shows_each_images_vo_cut_to_the_column(
    site: World, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _out(site, capsys, "images").splitlines()

    assert sorted(lines) == [
        f"{image_uuid(1)}  available shared    4.0 KiB  dteam             Test image 1",
        f"{image_uuid(2)}  available shared    4.0 KiB  vo.access.egi.eu  Test image 2",
        f"{image_uuid(3)}  available shared    4.0 KiB  vo.elixir-eur...  {HOSTILE_TITLE}",
    ]
    assert all(len(line) < 100 for line in lines if "Test image" in line)


def test_vmic_images_json_carries_the_vo_page_and_appdb_ids(
    site: World, capsys: pytest.CaptureFixture[str]
) -> None:
    images = {i["id"]: i for i in json.loads(_out(site, capsys, "images", "--json"))}

    fields = ("vo", "info_url", "appliance_id", "base_marketplace_url")
    assert {n: tuple(images[image_uuid(n)][f] for f in fields) for n in (1, 2, 3)} == {
        1: ("dteam", ATOM_PAGE, None, None),
        2: (LIST_VO, MPURI, APPID, BASE_MPURI),
        3: (LONG_VO, None, HOSTILE_APPID, None),
    }
    # what the list wrote stays with the entry, exactly
    assert images[image_uuid(3)]["entry"]["extra"]["ad:mpuri"] == JS_URL
    assert images[image_uuid(3)]["title"] == HOSTILE_TITLE


def test_vmic_image_show_names_the_vo_page_and_appdb_ids_when_set(
    site: World, capsys: pytest.CaptureFixture[str]
) -> None:
    hepix = _out(site, capsys, "image", "show", image_uuid(2))
    for line in (
        f"  VO:           {LIST_VO}\n",
        f"  image page:   {MPURI}\n",
        f"  AppDB app id: {APPID}\n",
        f"  base image:   {BASE_MPURI}\n",
    ):
        assert line in hepix, line

    atom = _out(site, capsys, "image", "show", image_uuid(1))
    assert f"  image page:   {ATOM_PAGE}\n" in atom
    assert "  VO:           dteam\n" in atom
    assert "AppDB app id" not in atom
    assert "base image" not in atom

    hostile = _out(site, capsys, "image", "show", image_uuid(3))
    assert hostile.startswith(f"{HOSTILE_TITLE}  ({image_uuid(3)})\n")
    assert f"  VO:           {LONG_VO}\n" in hostile  # whole here
    assert f"  AppDB app id: {HOSTILE_APPID}\n" in hostile
    assert "image page" not in hostile
    assert "base image" not in hostile
    assert "javascript:" not in hostile

    data = json.loads(_out(site, capsys, "image", "show", image_uuid(2), "--json"))
    assert (data["vo"], data["info_url"], data["appliance_id"], data["base_marketplace_url"]) == (
        LIST_VO,
        MPURI,
        APPID,
        BASE_MPURI,
    )


# -- the catalogue -------------------------------------------------------------------------
def test_the_catalogue_table_shows_the_vo_and_links_each_image_page(site: World) -> None:
    with ServeThread(site.home) as server:
        page = server.get("/").text
        filtered = server.get("/?q=vo.access.egi.eu").text

    assert '<th scope="col" data-type="text"><a href="/?sort=vo&amp;order=asc">VO</a></th>' in page
    for vo in ("dteam", LIST_VO, LONG_VO):
        assert f"<td>{vo}</td>" in page, vo
    assert f'<td><a href="{MPURI}" {REL}>appdb.egi.eu</a></td>' in page
    assert f'<td><a href="{ATOM_PAGE}" {REL}>images.example.org</a></td>' in page
    assert "javascript" not in page
    assert "&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;" in page
    assert page.count("<script") == 1  # the page's own
    assert all(h.startswith(("/", "http://", "https://")) for h in _hrefs(page))
    assert f'data-image="{image_uuid(2)}"' in filtered
    assert f'data-image="{image_uuid(1)}"' not in filtered


def test_an_image_page_shows_the_vo_the_page_as_a_link_and_the_appdb_ids(site: World) -> None:
    with ServeThread(site.home) as server:
        hepix = server.get(f"/image/{image_uuid(2)}").text
        atom = server.get(f"/image/{image_uuid(1)}").text

    for text in (
        f"<dt>VO</dt><dd>{LIST_VO}</dd>",
        f'<dt>Image page</dt><dd><a href="{MPURI}" {REL}>{MPURI}</a></dd>',
        f"<dt>AppDB appliance</dt><dd>{APPID}</dd>",
        f'<dt>Base image page</dt><dd><a href="{BASE_MPURI}" {REL}>{BASE_MPURI}</a></dd>',
    ):
        assert text in hepix, text
    assert f'<dt>Image page</dt><dd><a href="{ATOM_PAGE}" {REL}>{ATOM_PAGE}</a></dd>' in atom
    assert "<dt>AppDB appliance</dt><dd>—</dd>" in atom
    assert "<dt>Base image page</dt><dd>—</dd>" in atom


def test_an_image_page_shows_hostile_appdb_values_as_text_and_never_links_them(
    site: World,
) -> None:
    with ServeThread(site.home) as server:
        reply = server.get(f"/image/{image_uuid(3)}")

    assert reply.status == 200
    page = reply.text
    assert f"<dt>VO</dt><dd>{LONG_VO}</dd>" in page
    assert "<h1>&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;</h1>" in page
    assert (
        "<dt>AppDB appliance</dt><dd>&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;</dd>" in page
    )
    assert "<dt>Image page</dt><dd>—</dd>" in page
    assert "<dt>Base image page</dt><dd>—</dd>" in page
    assert "<script" not in page
    assert "javascript" not in page
    assert all(h.startswith(("/", "http://", "https://")) for h in _hrefs(page))


def test_a_stored_page_url_that_is_not_http_is_text_not_a_link(site: World) -> None:
    """Readers keep only http(s) pages; should a stored entry hold another (a database
    written by another tool, say), the catalogue still shows it as text."""
    conn = sqlite3.connect(site.home.database)
    try:
        (raw,) = conn.execute(
            "SELECT entry FROM images WHERE image_id = ?", (image_uuid(3),)
        ).fetchone()
        entry = json.loads(raw)
        entry["info_url"] = JS_URL
        entry["base_marketplace_url"] = "data:text/html,<script>alert(2)</script>"
        with conn:
            conn.execute(
                "UPDATE images SET entry = ? WHERE image_id = ?",
                (json.dumps(entry), image_uuid(3)),
            )
    finally:
        conn.close()

    with ServeThread(site.home) as server:
        table = server.get("/").text
        page = server.get(f"/image/{image_uuid(3)}").text

    assert f"<td>{JS_URL}</td>" in table
    assert f"<dt>Image page</dt><dd>{JS_URL}</dd>" in page
    assert (
        "<dt>Base image page</dt><dd>data:text/html,&lt;script&gt;alert(2)&lt;/script&gt;</dd>"
        in page
    )
    for html in (table, page):
        assert not any(h.startswith(("javascript", "data")) for h in _hrefs(html))
        assert all(h.startswith(("/", "http://", "https://")) for h in _hrefs(html))
