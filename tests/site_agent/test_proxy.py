"""The address guard behind a forward proxy (THREATS 24), against real loopback servers.

With ``http_proxy`` set, aiohttp resolves only the proxy's name; these tests check that a
target whose name resolves to a refused address is still refused, before the proxy hears
of it. :class:`_Proxy` is a real forward proxy on 127.0.0.1: it records the absolute-form
target of each request and forwards it to 127.0.0.1 at the target's port, whatever the
name (it stands for a site proxy that resolves names itself). The origin is the loopback
:class:`Simulator`. Names are answered by :class:`_Names`, a resolver given to the
Fetcher that maps test names to addresses: the guard is under test here, not DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from keys.errors import FetchError
from site_agent.fetch import Fetcher, ListFetch
from tests.sim import Simulator
from tests.site_agent.netkit import ONCE

LIST = b"<feed>" + b"x" * 1000 + b"</feed>"
NAMES = {
    "mirror.test": "127.0.0.1",
    "metadata.test": "169.254.169.254",
    "mcast.test": "224.0.0.251",
}
"""What :class:`_Names` answers; any other name does not resolve."""
UNRESOLVED = "inside.test"
"""A name only the proxy knows."""
_HOP_BY_HOP = frozenset(
    {"connection", "proxy-connection", "keep-alive", "transfer-encoding", "content-length"}
)


class _Names(AbstractResolver):
    """Answers names from :data:`NAMES` (as /etc/hosts would) and records what it was asked;
    any other name fails as getaddrinfo does."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        address = NAMES.get(host)
        if address is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        kind = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            ResolveResult(hostname=host, host=address, port=port, family=kind, proto=0, flags=0)
        ]

    async def close(self) -> None:
        pass


class _Proxy:
    """A forward HTTP proxy serving on ``listener`` (127.0.0.1) while :meth:`running`."""

    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self.seen: list[str] = []
        """The target of every request received (CONNECT included)."""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await runner.setup()
        try:
            async with aiohttp.ClientSession(auto_decompress=False) as self._client:
                # a duplicate: the server closes its socket, the fixture keeps the port
                await web.SockSite(runner, self._listener.dup()).start()
                yield
        finally:
            await runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        self.seen.append(request.raw_path)
        target = URL(request.raw_path)
        if request.method != "GET" or not target.is_absolute() or target.port is None:
            return web.Response(status=501, text="absolute-form GET requests only")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._client.get(
            URL.build(scheme="http", host="127.0.0.1", port=target.port).join(target.relative()),
            headers=headers,
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=answer.status, headers=kept, body=body)


@pytest.fixture
def origin() -> Iterator[Simulator]:
    with Simulator(safety_timeout=10) as sim:
        sim.publish("/list.xml", LIST)
        yield sim


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Proxy]:
    """The proxy, named in ``http_proxy`` and ``https_proxy`` (other proxy settings cleared)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "REQUEST_METHOD":
            monkeypatch.delenv(name)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        forward = _Proxy(listener)
        monkeypatch.setenv("http_proxy", forward.url)
        monkeypatch.setenv("https_proxy", forward.url)
        yield forward


@pytest.fixture
def names() -> _Names:
    return _Names()


def _fetch(proxy: _Proxy, names: _Names, *urls: str) -> list[ListFetch]:
    """Fetch ``urls`` in turn with one Fetcher (one run) while the proxy serves."""

    async def run() -> list[ListFetch]:
        async with proxy.running(), Fetcher(limits=ONCE, resolver=names) as fetcher:
            return [await fetcher.fetch_list(url) for url in urls]

    return asyncio.run(run())


def _at(origin: Simulator, host: str, path: str = "/list.xml", *, scheme: str = "http") -> str:
    """The origin's URL for ``path`` under the name ``host``."""
    return origin.url(path).replace("http://127.0.0.1", f"{scheme}://{host}")


def test_a_name_resolving_to_an_allowed_address_is_fetched_through_the_proxy(
    origin: Simulator, proxy: _Proxy, names: _Names
) -> None:
    url = _at(origin, "mirror.test")
    [got] = _fetch(proxy, names, url)
    assert got.body == LIST
    assert proxy.seen == [url]
    assert names.asked == ["mirror.test"]  # once, by the guard: the connector sees the proxy
    assert len(origin.requests_for("/list.xml")) == 1


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://metadata.test", "metadata.test resolves to 169.254.169.254, a link-local"),
        ("https://metadata.test", "metadata.test resolves to 169.254.169.254, a link-local"),
        ("http://mcast.test", "mcast.test resolves to 224.0.0.251, a multicast"),
    ],
)
def test_a_name_resolving_to_a_forbidden_address_is_refused_before_the_proxy(
    origin: Simulator, proxy: _Proxy, names: _Names, target: str, expected: str
) -> None:
    scheme, _, host = target.partition("://")
    url = _at(origin, host, scheme=scheme)
    with pytest.raises(FetchError) as refused:
        _fetch(proxy, names, url)
    message = refused.value.message
    assert expected in message
    assert f"even through the proxy {proxy.url.removeprefix('http://')}" in message
    assert proxy.seen == []
    assert origin.requests == []


def test_a_redirect_to_a_forbidden_name_through_the_proxy_is_refused(
    origin: Simulator, proxy: _Proxy, names: _Names
) -> None:
    origin.fault("/old.xml", redirect_to=_at(origin, "metadata.test"))
    start = _at(origin, "mirror.test", "/old.xml")
    with pytest.raises(FetchError, match=r"metadata\.test resolves to 169\.254\.169\.254"):
        _fetch(proxy, names, start)
    assert proxy.seen == [start]  # the first hop only: nothing for the forbidden host
    assert origin.requests_for("/list.xml") == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14/",
        "http://2852039166/latest/meta-data/",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    ],
)
def test_a_literal_forbidden_address_is_refused_with_a_proxy(
    url: str, proxy: _Proxy, names: _Names
) -> None:
    with pytest.raises(FetchError, match=r", a link-local address: refused"):
        _fetch(proxy, names, url)
    assert proxy.seen == []
    assert names.asked == []


def test_a_name_that_does_not_resolve_locally_goes_through_the_proxy_with_a_warning(
    origin: Simulator, proxy: _Proxy, names: _Names, caplog: pytest.LogCaptureFixture
) -> None:
    url = _at(origin, UNRESOLVED)
    with caplog.at_level(logging.WARNING, logger="vmic.fetch"):
        got = _fetch(proxy, names, url, url)
    assert [g.body for g in got] == [LIST, LIST]
    assert proxy.seen == [url, url]
    warnings = [r for r in caplog.records if r.name == "vmic.fetch"]
    assert len(warnings) == 1  # once per host per run
    assert warnings[0].levelno == logging.WARNING
    said = warnings[0].getMessage()
    assert f"could not resolve {UNRESOLVED} locally" in said
    assert proxy.url.removeprefix("http://") in said
    assert "assuming its address is allowed" in said


def test_no_proxy_sends_a_name_directly_under_the_connectors_guard(
    origin: Simulator, proxy: _Proxy, names: _Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("no_proxy", "mirror.test,metadata.test")
    [got] = _fetch(proxy, names, _at(origin, "mirror.test"))
    assert got.body == LIST
    assert names.asked == ["mirror.test"]  # once, by the connector: no second look-up
    with pytest.raises(FetchError, match=r"metadata\.test resolves to 169\.254\.169\.254"):
        _fetch(proxy, names, _at(origin, "metadata.test"))
    assert proxy.seen == []
    assert len(origin.requests) == 1
