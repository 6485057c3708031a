"""`vmic serve` with ``[serve] accel_redirect``: the lists in force handed to nginx by name.

Each test runs the real server on 127.0.0.1 for a site home that `vmic
sync` filled (real SQLite, signed lists from a loopback endorser), with the
prefix set in its ``config.toml``, and reads the answer itself, with no
nginx: an empty ``200`` whose ``X-Accel-Redirect`` names the stored file of
the version in force under the prefix, the same from the fast lane and from
aiohttp, whatever conditional headers the request carries; ``404`` for a
list not in force; ``503`` and no name when the file or its record is not
what the store says. tests/federation/test_nginx_front.py runs nginx on it.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import tomlkit

from keys.errors import ConfigError
from site_agent import config as site_config
from tests.support.lists import LIST_ID
from tests.support.serving import ServeThread, available_site, site_world
from tests.support.site import World

PREFIX = "/_vmic_lists/"
ATOM = "application/atom+xml"


@pytest.fixture
def world(tmp_path: Path, now: datetime) -> Iterator[World]:
    with site_world(tmp_path, now) as made:
        available_site(made)
        _set_prefix(made, PREFIX)
        yield made


def _set_prefix(world: World, prefix: str) -> None:
    config = tomlkit.parse(world.home.config.read_text())
    serve = config["serve"]
    assert isinstance(serve, dict)
    serve["accel_redirect"] = prefix
    world.home.config.write_text(tomlkit.dumps(config))


def _stored(world: World) -> Path:
    (path,) = (world.home.lists / LIST_ID).glob("*.atom")
    return path


def _target(world: World) -> str:
    """What X-Accel-Redirect must say for the version in force."""
    stored = _stored(world)
    return f"{PREFIX}{stored.relative_to(world.home.lists)}"


Answer = tuple[int, dict[str, str], bytes]


def _parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


def _ask(server: ServeThread, path: str, *extra: str, method: str = "GET") -> Answer:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *extra, "Connection: close"]
    return _parse(server.raw(("\r\n".join(lines) + "\r\n\r\n").encode()))


# -- the header ----------------------------------------------------------------------------
def test_a_list_in_force_is_answered_with_an_empty_body_naming_its_stored_file(
    world: World,
) -> None:
    stored = _stored(world)
    with ServeThread(world.home) as server:
        before = server.state.counters.bytes_served
        for method in ("GET", "HEAD"):
            reply = server.get(f"/lists/{LIST_ID}.atom", method=method)
            assert (reply.status, reply.body) == (200, b""), method
            assert reply.headers["X-Accel-Redirect"] == _target(world)
            assert reply.headers["Content-Type"] == ATOM
            assert reply.headers["Cache-Control"] == "no-cache"
            assert reply.headers.get("Content-Length", "0") == "0"
            assert "Etag" not in reply.headers  # nginx makes validators from the file
            assert "Last-Modified" not in reply.headers
        assert server.state.counters.bytes_served == before
    name = _target(world).removeprefix(PREFIX)
    assert re.fullmatch(rf"{LIST_ID}/1-[0-9a-f]{{64}}\.atom", name)
    assert (world.home.lists / name).read_bytes() == stored.read_bytes()
    assert name.endswith(f"-{hashlib.sha256(stored.read_bytes()).hexdigest()}.atom")


@pytest.mark.parametrize(
    "extra",
    [
        "If-None-Match: *",
        "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT",
        "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT",
        "Range: bytes=0-9",
    ],
)
def test_conditional_and_range_requests_are_left_to_nginx(world: World, extra: str) -> None:
    with ServeThread(world.home) as server:
        status, headers, body = _ask(server, f"/lists/{LIST_ID}.atom", extra)
    assert (status, body) == (200, b"")
    assert headers["X-Accel-Redirect"] == _target(world)


def test_the_newer_version_is_named_as_soon_as_a_sync_accepts_it(world: World) -> None:
    with ServeThread(world.home) as server:
        first = server.get(f"/lists/{LIST_ID}.atom").headers["X-Accel-Redirect"]
        signed = world.publish(version=2, images=(1, 2, 3))
        assert world.vmic("sync") == 0
        for _ in range(2):  # the slow path, then the fast lane from memory
            now = server.get(f"/lists/{LIST_ID}.atom").headers["X-Accel-Redirect"]
            sha256 = hashlib.sha256(signed).hexdigest()
            assert now == f"{PREFIX}{LIST_ID}/2-{sha256}.atom" != first
    assert (world.home.lists / now.removeprefix(PREFIX)).read_bytes() == signed


@pytest.mark.parametrize(
    "name",
    [
        "00000000-0000-4000-8000-0000000000ff.atom",  # well formed, not in force
        f"{LIST_ID}.smime",  # in force as Atom, not as HEPiX
        f"{LIST_ID.upper()}.atom",
        f"{LIST_ID}.atom/..",
        "..%2F..%2Fvmic.db",
        f"{LIST_ID}%2F..%2F..%2Fvmic.db.atom",
    ],
)
def test_lists_not_in_force_are_404_without_a_name(world: World, name: str) -> None:
    stray = world.home.lists / "00000000-0000-4000-8000-0000000000ff" / f"1-{'a' * 64}.atom"
    stray.parent.mkdir()
    stray.write_bytes(b"<feed>left by a crash before the commit</feed>")
    with ServeThread(world.home) as server:
        for _ in range(2):
            reply = server.get(f"/lists/{name}")
            assert reply.status == 404
            assert "X-Accel-Redirect" not in reply.headers


# -- the fast lane and aiohttp agree ---------------------------------------------------------
def _without_date(answer: Answer) -> Answer:
    status, headers, body = answer
    return status, {k: v for k, v in headers.items() if k != "Date"}, body


def test_the_fast_lane_names_the_file_exactly_as_aiohttp_does(world: World) -> None:
    path = f"/lists/{LIST_ID}.atom"
    with ServeThread(world.home) as server:
        assert server.running is not None
        gate = server.running.gate
        assert server.get(path).status == 200  # read and checked once
        for method, extra in (
            ("GET", ()),
            ("HEAD", ()),
            ("GET", ('If-None-Match: "anything"',)),
            ("GET", ("If-None-Match: *",)),
        ):
            before = gate.fast_answers
            fast = _without_date(_ask(server, path, *extra, method=method))
            assert gate.fast_answers == before + 1, (method, extra)
            slow = _without_date(_ask(server, f"{path}?via=aiohttp", *extra, method=method))
            assert gate.fast_answers == before + 1
            assert slow == fast, (method, extra)
            assert fast[1]["X-Accel-Redirect"] == _target(world)


# -- never a name the store does not vouch for -----------------------------------------------
def _no_name(server: ServeThread) -> None:
    for answer in (
        _ask(server, f"/lists/{LIST_ID}.atom"),  # the fast lane, then aiohttp
        _ask(server, f"/lists/{LIST_ID}.atom?via=aiohttp"),
    ):
        status, headers, _ = answer
        assert status == 503
        assert "X-Accel-Redirect" not in headers


def test_a_stored_list_whose_bytes_changed_is_never_named(world: World) -> None:
    stored = _stored(world)
    with ServeThread(world.home) as server:
        assert server.get(f"/lists/{LIST_ID}.atom").status == 200
        stored.write_bytes(stored.read_bytes().replace(b"Test image 1", b"Test image X"))
        _no_name(server)


def test_a_symlink_in_place_of_a_stored_list_is_never_named(world: World, tmp_path: Path) -> None:
    stored = _stored(world)
    outside = tmp_path / "outside.atom"
    outside.write_bytes(stored.read_bytes())  # the very bytes, but not the site's file
    with ServeThread(world.home) as server:
        assert server.get(f"/lists/{LIST_ID}.atom").status == 200
        stored.unlink()
        stored.symlink_to(outside)
        _no_name(server)


@pytest.mark.parametrize(
    "column",
    [
        "path = replace(path, '/' || list_id || '/', '/' || list_id || '/../' || list_id || '/')",
        "path = 'lists/peer-exports/' || list_id || '/' || version || '-' || sha256 || '.atom'",
        "version = version + 1",
        "sha256 = upper(sha256)",
    ],
)
def test_a_record_that_does_not_name_its_own_file_is_never_named(world: World, column: str) -> None:
    with ServeThread(world.home) as server:
        assert server.get(f"/lists/{LIST_ID}.atom").status == 200  # named, and kept in memory
        conn = sqlite3.connect(world.home.database)
        try:
            with conn:
                conn.execute(f"UPDATE lists SET {column}")  # noqa: S608 - the test's own text
        finally:
            conn.close()
        _no_name(server)
        _no_name(server)  # the record is in memory now: the fast lane checks it as aiohttp does


# -- configuration -------------------------------------------------------------------------
def test_accel_redirect_is_off_by_default_and_the_template_shows_it(world: World) -> None:
    config = tomlkit.parse(world.home.config.read_text())
    serve = config["serve"]
    assert isinstance(serve, dict)
    del serve["accel_redirect"]
    text = tomlkit.dumps(config)
    assert f'\n# accel_redirect = "{PREFIX}"\n' in text  # the template's commented example
    world.home.config.write_text(text)
    assert site_config.load(world.home.config).serve.accel_redirect is None
    with ServeThread(world.home) as server:
        reply = server.get(f"/lists/{LIST_ID}.atom")
    assert reply.body == _stored(world).read_bytes()
    assert "X-Accel-Redirect" not in reply.headers
    world.home.config.write_text(text.replace("# accel_redirect", "accel_redirect"))
    assert site_config.load(world.home.config).serve.accel_redirect == PREFIX


@pytest.mark.parametrize(
    "prefix",
    [
        "/_vmic_lists",  # no trailing slash: /_vmic_lists../ would match an alias
        "_vmic_lists/",
        "/",
        "//",
        "/a//b/",
        "/../",
        "/a/../b/",
        "/./",
        "/_vmic.lists/",
        "/a%2f/",
        "/a b/",
        "@vmic_lists",
        "/a?b=/",
        "/a/\r\nX-Injected: yes/",
        "/" + "a" * 300 + "/",
    ],
)
def test_an_unsafe_accel_redirect_prefix_is_refused(world: World, prefix: str) -> None:
    _set_prefix(world, prefix)
    with pytest.raises(ConfigError, match="accel_redirect"):
        site_config.load(world.home.config)
