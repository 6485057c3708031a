"""`vmic serve` under load and abuse: connection limits, header timeouts, quiet disconnects,
and what it keeps in memory between syncs.

Each test runs the real server (:mod:`federation.server` behind
:mod:`federation.listener`) on 127.0.0.1 for a site home that `vmic sync`
filled, with real SQLite, and talks to it over sockets. Nothing here
asserts how fast anything is: the tests check mechanisms (a half-sent
request is answered 408 and closed, one address at its limit does not stop
another, a cached document changes as soon as its file or the store does,
the fast lane answers exactly what aiohttp would). Idle clients come from
127.0.0.2, a second loopback address.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from federation.listener import client_key
from federation.serve_state import parse_head
from keys.errors import ConfigError
from site_agent import config as site_config
from site_agent.config import SiteConfig
from site_agent.serve_settings import ServeSettings
from tests.support.lists import LIST_ID
from tests.support.serving import ServeThread, available_site, image_data, site_world
from tests.support.site import World

OTHER = "127.0.0.2"
"""A second loopback address: the greedy or idle client."""
PATIENCE = 20.0
"""Seconds a test waits for something the server must do (never a measured time)."""
BIG = 3 * 1024 * 1024


@pytest.fixture
def world(tmp_path: Path, now: datetime) -> Iterator[World]:
    with site_world(tmp_path, now) as made:
        made.image_sizes[1] = BIG
        available_site(made)
        (made.home.exports / "export.atom").write_bytes(b"<feed>the site's export</feed>\n")
        yield made


def limited(
    world: World,
    *,
    header_timeout: float = ServeSettings().header_timeout,
    max_connections_per_address: int = ServeSettings().max_connections_per_address,
) -> SiteConfig:
    """The site's config with other limits (what an admin writes in [serve])."""
    config = site_config.load(world.home.config)
    serve = dataclasses.replace(
        config.serve,
        header_timeout=header_timeout,
        max_connections_per_address=max_connections_per_address,
    )
    return dataclasses.replace(config, serve=serve)


Reply = tuple[int, dict[str, str], bytes]


class Client:
    """A raw HTTP/1.1 connection from ``source``, reading the server's responses one by one."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.settimeout(PATIENCE)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self._buffer = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def rest(self) -> bytes:
        """Everything until the server closes (a reset counts as closing)."""
        data, self._buffer = self._buffer, b""
        while chunk := self._more():
            data += chunk
        return data

    def response(self, *, head_only: bool = False) -> Reply:
        """One response (its body by Content-Length, none for a HEAD)."""
        while b"\r\n\r\n" not in self._buffer:
            chunk = self._more()
            assert chunk, "the server closed the connection"
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = 0 if head_only else int(headers.get("Content-Length", "0"))
        while len(self._buffer) < length:
            chunk = self._more()
            assert chunk, "the server closed the connection mid-body"
            self._buffer += chunk
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return int(lines[0].split()[1]), headers, body

    def get(self, path: str, *extra: str, method: str = "GET") -> Reply:
        lines = [f"{method} {path} HTTP/1.1", "Host: x", *extra]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self.response(head_only=method == "HEAD")


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not (condition() if callable(condition) else condition):
        assert time.monotonic() < deadline, f"waited {PATIENCE:g} s for {what}"
        time.sleep(0.01)


# -- slow and idle clients -----------------------------------------------------------------
@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connects and says nothing
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # half a request (no blank line)
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ",  # half a header
    ],
)
def test_a_request_whose_headers_never_end_gets_408_and_is_closed(
    world: World, sent: bytes
) -> None:
    with ServeThread(world.home, config=limited(world, header_timeout=0.3)) as server:
        with Client(server.port, OTHER) as sock:
            sock.send(sent)
            answer = sock.rest()
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"Connection: close" in answer
        assert server.running is not None
        assert server.running.gate.timed_out == 1
        wait_for(lambda: server.running is not None and not server.running.gate.open, "a close")
        assert server.get("/healthz").status == 200


def test_a_header_sent_a_byte_at_a_time_does_not_keep_the_connection(world: World) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 2000 + b"\r\n\r\n"
    with ServeThread(world.home, config=limited(world, header_timeout=0.5)) as server:
        with Client(server.port, OTHER) as sock:
            sent = 0
            try:
                for byte in request:  # 0.01 s a byte: 20 s in all, far beyond the timeout
                    sock.send(bytes([byte]))
                    sent += 1
                    time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = sock.rest()
        assert sent < len(request), "the server waited for the whole trickle"
        assert answer.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("/healthz", b"HTTP/1.1 408"),  # the fast lane says why
        ("/", b""),  # aiohttp answered the first request: closed, no bytes of ours
    ],
)
def test_the_next_request_on_a_kept_connection_is_timed_too(
    world: World, path: str, answer: bytes
) -> None:
    with ServeThread(world.home, config=limited(world, header_timeout=0.3)) as server:
        with Client(server.port, OTHER) as sock:
            assert sock.get(path)[0] == 200
            sock.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            assert sock.rest()[: len(answer)] == answer
        assert server.running is not None
        assert server.running.gate.timed_out == 1


def test_an_idle_kept_connection_is_closed_without_an_answer(world: World) -> None:
    config = limited(world, header_timeout=0.3)
    with ServeThread(world.home, config=config) as server, Client(server.port) as sock:
        assert sock.get("/healthz")[0] == 200
        assert sock.rest() == b""  # closed after the keep-alive time, no 408


# -- limits per client address and in all -------------------------------------------------
def test_one_address_at_its_limit_does_not_keep_out_another(world: World) -> None:
    config = limited(world, max_connections_per_address=2)
    with ServeThread(world.home, config=config) as server:
        assert server.running is not None
        greedy = [Client(server.port, OTHER) for _ in range(2)]
        try:
            for sock in greedy:
                assert sock.get("/healthz")[0] == 200  # admitted, and kept open
            with Client(server.port, OTHER) as third:
                refused = third.rest()
            assert refused.startswith(b"HTTP/1.1 503")
            assert b"too many connections from your address" in refused
            assert b"Retry-After: 1" in refused
            with Client(server.port) as other:
                assert other.get("/healthz")[0] == 200
                assert other.get("/export.atom")[0] == 200
        finally:
            for sock in greedy:
                sock.close()
        wait_for(lambda: not server.running.gate.by_address.get(OTHER), "the slots to free")
        with Client(server.port, OTHER) as again:
            assert again.get("/healthz")[0] == 200
        assert server.running.gate.refused == 1


def test_the_default_cap_serves_a_hundred_clients_at_once(world: World) -> None:
    """The real `vmic serve` with the config `vmic site init` wrote: no 503 for 100 clients
    holding their connections open together (the old cap was 64)."""
    with subprocess.Popen(  # a fixed argument list, no shell
        [
            *(sys.executable, "-m", "federation", "serve"),
            *("--home", str(world.home.root), "--bind", "127.0.0.1:0"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", process.stdout.readline())
            assert match
            port = int(match.group(1))
            clients = []
            try:
                for _ in range(100):
                    client = Client(port)
                    clients.append(client)
                    client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                statuses = [client.response()[0] for client in clients]
            finally:
                for client in clients:
                    client.close()
            assert statuses == [200] * 100
        finally:
            process.terminate()
            process.communicate(timeout=30)


def test_the_listening_socket_queues_listen_backlog_connections(world: World) -> None:
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("ss (iproute2) shows a listening socket's backlog; it is not installed")
    config = site_config.load(world.home.config)
    config = dataclasses.replace(config, serve=dataclasses.replace(config.serve, listen_backlog=77))
    with ServeThread(world.home, config=config) as server:
        shown = subprocess.run(  # a fixed argument list, no shell
            [ss, "-Hltn", f"sport = :{server.port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    assert shown[:3] == ["LISTEN", "0", "77"]  # state, queued now, the queue's size


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        (("192.0.2.7", 4711), "192.0.2.7"),
        (("2001:db8:1:2:aaaa::1", 4711, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 4711, 0, 0), "2001:db8:1:2::/64"),  # the same /64
        (("::ffff:192.0.2.7", 4711, 0, 0), "192.0.2.7"),  # IPv4 on a dual-stack socket
        (("fe80::1%eth0", 4711, 0, 2), "fe80::/64"),
    ],
)
def test_the_per_address_limit_counts_an_ipv6_slash_64_as_one_client(
    peer: tuple[object, ...], key: str
) -> None:
    assert client_key(peer) == key


# -- client disconnects ---------------------------------------------------------------------
def test_a_client_that_goes_away_mid_download_logs_one_quiet_line(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    sha512 = hashlib.sha512(image_data(world, 1)).hexdigest()
    caplog.set_level(logging.DEBUG)
    with ServeThread(world.home) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(PATIENCE)
        sock.connect(("127.0.0.1", server.port))
        sock.send(f"GET /images/sha512/{sha512} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # with bytes unread: a reset
        wait_for(lambda: any("went away" in r.getMessage() for r in caplog.records), "the line")
        assert server.get("/healthz").status == 200
    lines = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert f"/images/sha512/{sha512[:16]}" in lines[0].getMessage()
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# -- what is kept in memory, and when it is read again --------------------------------------
def _etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()}"'


def test_the_export_is_served_anew_as_soon_as_its_file_changes(world: World) -> None:
    export = world.home.exports / "export.atom"
    first = export.read_bytes()
    with ServeThread(world.home) as server:
        assert server.get("/export.atom").body == first
        # Same size, same mtime, written in place: only the ctime tells.
        before = export.stat()
        second = first.replace(b"the", b"THE")
        with export.open("r+b") as handle:
            handle.write(second)
        os.utime(export, ns=(before.st_atime_ns, before.st_mtime_ns))
        reply = server.get("/export.atom")
        assert (reply.body, reply.headers["Etag"]) == (second, _etag(second))
        # Replaced (a new inode), as `vmic export` does.
        third = b"<feed>a newer export</feed>\n"
        (world.home.exports / "new.atom").write_bytes(third)
        (world.home.exports / "new.atom").replace(export)
        stale = server.get("/export.atom", headers={"If-None-Match": _etag(second)})
        assert (stale.status, stale.body) == (200, third)
        assert server.get("/export.atom", headers={"If-None-Match": _etag(third)}).status == 304
        export.unlink()
        assert server.get("/export.atom").status == 404


def test_a_symlink_put_in_place_of_the_export_is_never_served(world: World, tmp_path: Path) -> None:
    export = world.home.exports / "export.atom"
    with ServeThread(world.home) as server:
        assert server.get("/export.atom").status == 200
        outside = tmp_path / "elsewhere.atom"
        outside.write_bytes(b"<feed>not the site's</feed>")
        export.unlink()
        export.symlink_to(outside)
        reply = server.get("/export.atom")
        assert reply.status == 503
        assert b"not the site's" not in reply.body


def test_a_list_in_force_is_served_anew_as_soon_as_a_sync_accepts_a_newer_one(
    world: World,
) -> None:
    with ServeThread(world.home) as server:
        first = server.get(f"/lists/{LIST_ID}.atom")
        assert first.status == 200
        signed = world.publish(version=2, images=(1, 2, 3))
        assert world.vmic("sync") == 0
        reply = server.get(
            f"/lists/{LIST_ID}.atom", headers={"If-None-Match": first.headers["Etag"]}
        )
        assert (reply.status, reply.body) == (200, signed)
        assert reply.headers["Etag"] == _etag(signed)


def test_healthz_changes_as_soon_as_another_connection_commits(world: World) -> None:
    with ServeThread(world.home) as server:
        assert json.loads(server.get("/healthz").body)["last_sync_ok"] is True
        conn = sqlite3.connect(world.home.database)
        try:
            with conn:
                conn.execute("UPDATE subscriptions SET last_error = 'the endorser is down'")
        finally:
            conn.close()
        assert json.loads(server.get("/healthz").body)["last_sync_ok"] is False


def test_an_image_withdrawn_by_a_sync_is_no_longer_served(world: World) -> None:
    sha512 = hashlib.sha512(image_data(world, 2)).hexdigest()
    with ServeThread(world.home) as server:
        assert server.get(f"/images/sha512/{sha512}", method="HEAD").status == 200
        world.publish(version=2, images=(1, 3), revoked=(2,))
        assert world.vmic("sync") == 0
        assert server.get(f"/images/sha512/{sha512}", method="HEAD").status == 404


# -- the fast lane answers as aiohttp does ----------------------------------------------------
def _without_date(reply: Reply) -> tuple[object, ...]:
    status, headers, body = reply
    return status, {k: v for k, v in headers.items() if k != "Date"}, body


@pytest.mark.parametrize("path", ["/export.atom", f"/lists/{LIST_ID}.atom", "/healthz"])
def test_the_fast_lane_answers_exactly_as_aiohttp_does(world: World, path: str) -> None:
    with ServeThread(world.home) as server, Client(server.port) as sock:
        assert server.running is not None
        etag = sock.get(path)[1].get("Etag", '"none"')
        for method, extra in (
            ("GET", ()),
            ("HEAD", ()),
            ("GET", (f"If-None-Match: {etag}",)),
            ("GET", (f'If-None-Match: "other", W/{etag}',)),
            ("GET", ("If-None-Match: *",)),
            ("GET", ('If-None-Match: "other"',)),
        ):
            fast_before = server.running.gate.fast_answers
            fast = _without_date(sock.get(path, *extra, method=method))
            assert server.running.gate.fast_answers == fast_before + 1, (method, extra)
            with Client(server.port) as slow:  # a query string: aiohttp answers
                slow_reply = slow.get(f"{path}?via=aiohttp", *extra, method=method)
            assert _without_date(slow_reply) == fast, (method, extra)
            assert server.running.gate.fast_answers == fast_before + 1


def test_stopping_the_server_closes_the_fast_lanes_connections(world: World) -> None:
    with ServeThread(world.home) as server:
        sock = Client(server.port)
        assert sock.get("/healthz")[0] == 200
        assert server.running is not None
        assert server.running.gate.lane  # a kept connection of the fast lane
    with sock:  # the server has stopped
        assert sock.rest() == b""


def test_pipelined_requests_are_answered_in_order_across_the_hand_over(world: World) -> None:
    export = (world.home.exports / "export.atom").read_bytes()
    with ServeThread(world.home) as server, Client(server.port) as sock:
        sock.send(
            b"GET /export.atom HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz?why=aiohttp HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /export.atom HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        replies = [sock.response() for _ in range(4)]
        assert sock.rest() == b""
    assert [r[0] for r in replies] == [200, 200, 200, 404]
    assert replies[0][2] == replies[2][2] == export
    assert json.loads(replies[1][2])["ok"] is True


def test_the_fast_lane_counts_the_bytes_it_serves(world: World) -> None:
    export = (world.home.exports / "export.atom").read_bytes()
    with ServeThread(world.home) as server, Client(server.port) as sock:
        before = server.state.counters.bytes_served
        assert sock.get("/export.atom")[2] == export
        assert sock.get("/export.atom", f"If-None-Match: {_etag(export)}")[0] == 304
        assert server.state.counters.bytes_served - before == len(export)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.0",  # another version
        b"POST /healthz HTTP/1.1",
        b"GET /healthz?x=%31 HTTP/1.1",  # a query with an escape
        b"GET /healthz?x=a+b HTTP/1.1",  # a query with '+' (a space in a query)
        b"GET /healthz?x=a/b HTTP/1.1",
        b"GET /%2e%2e/healthz HTTP/1.1",
        b"GET  /healthz HTTP/1.1",
        b"GET /healthz HTTP/1.1\r\nContent-Length: 0",
        b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked",
        b"GET /healthz HTTP/1.1\r\nRange: bytes=0-1",
        b"GET /healthz HTTP/1.1\r\nIf-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT",
        b"GET /healthz HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket",
        b"GET /healthz HTTP/1.1\r\n Folded: line",
        b"GET /healthz HTTP/1.1\r\nBad Name: x",
        b"GET /healthz HTTP/1.1\r\nX: \x00",
        b"GET /healthz HTTP/1.1\r\nX: caf\xc3\xa9",
        b"GET /healthz HTTP/1.1\nHost: x",  # a bare LF
        b'GET /healthz HTTP/1.1\r\nIf-None-Match: "a"\r\nIf-None-Match: "b"',
        b"GET /healthz HTTP/1.1\r\nIf-None-Match: not-a-tag",
    ],
)
def test_anything_but_a_simple_request_is_left_to_aiohttp(head: bytes) -> None:
    assert parse_head(head) is None


def test_a_query_of_plain_characters_is_kept_apart_from_the_path() -> None:
    """The lane answers only the catalogue API's kept pages by their query (the other
    routes leave every query to aiohttp: tests/federation/test_api_pages.py)."""
    head = parse_head(b"GET /api/v1/images?vo=atlas&sort=size HTTP/1.1\r\nHost: a")
    assert head is not None
    assert (head.path, head.query) == (b"/api/v1/images", b"vo=atlas&sort=size")
    plain = parse_head(b"GET /healthz HTTP/1.1")
    assert plain is not None
    assert plain.query is None


def test_a_simple_request_takes_the_fast_lane() -> None:
    head = parse_head(
        b"HEAD /lists/x.atom HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n"
        b'If-None-Match: "a", W/"b"\r\nUser-Agent: curl/8'
    )
    assert head is not None
    assert (head.method, head.path, head.close) == (b"HEAD", b"/lists/x.atom", True)
    assert head.if_none_match == b'"a", W/"b"'


# -- configuration -------------------------------------------------------------------------
def test_the_serve_limits_are_read_from_config_toml(world: World) -> None:
    text = world.home.config.read_text()
    for key in (
        "max_connections = 1024",
        "max_connections_per_address = 128",
        "header_timeout_seconds = 10",
        "listen_backlog = 1024",
    ):
        assert f"\n{key}\n" in text, key  # the template says what the default is
    assert site_config.load(world.home.config).serve == ServeSettings()
    changed = (
        text.replace("max_connections = 1024", "max_connections = 300")
        .replace("max_connections_per_address = 128", "max_connections_per_address = 300")
        .replace("header_timeout_seconds = 10", "header_timeout_seconds = 2.5")
        .replace("listen_backlog = 1024", "listen_backlog = 64")
    )
    world.home.config.write_text(changed)
    serve = site_config.load(world.home.config).serve
    assert (serve.max_connections, serve.max_connections_per_address) == (300, 300)
    assert (serve.header_timeout, serve.listen_backlog) == (2.5, 64)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("header_timeout_seconds = 0", "above 0"),
        ("max_connections_per_address = 0", "at least 1"),
        ("listen_backlog = -5", "at least 1"),
        ('max_connections = "many"', "expected int"),
    ],
)
def test_bad_serve_limits_are_refused(world: World, line: str, message: str) -> None:
    text = world.home.config.read_text()
    key = line.split(" = ", maxsplit=1)[0]
    world.home.config.write_text(re.sub(rf"(?m)^{key} = .*$", line, text))
    with pytest.raises(ConfigError, match=message):
        site_config.load(world.home.config)


def test_a_hundred_connections_through_the_lane_at_once_are_all_answered(world: World) -> None:
    export = (world.home.exports / "export.atom").read_bytes()

    def client(_n: int) -> bytes:
        with Client(server.port) as sock:
            return b"".join(sock.get("/export.atom")[2] for _ in range(5))

    with (
        ServeThread(world.home, max_connections=200) as server,
        ThreadPoolExecutor(max_workers=100) as pool,
    ):
        bodies = list(pool.map(client, range(100)))
    assert bodies == [export * 5] * 100
