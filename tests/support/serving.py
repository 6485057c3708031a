"""`vmic serve` for tests: the real application on 127.0.0.1 port 0, in a thread of its own.

:class:`ServeThread` runs :func:`federation.server.create_app` behind
:func:`federation.listener.start` on its own event loop, so that the test's
thread may run `vmic sync` in-process meanwhile and talk to the server with
plain blocking clients. :func:`get` uses ``http.client``, which sends the
path exactly as given (no normalisation of ``..`` or ``%2e``); :func:`raw`
sends bytes on a socket for what ``http.client`` refuses to send.
:func:`available_site` publishes a list, subscribes with auto-approval and
syncs, so that the site holds verified images.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType

from aiohttp import web

from federation.listener import RunningServer, start
from federation.serve_state import STATE, ServeState
from federation.server import create_app
from site_agent.config import SiteConfig
from site_agent.home import SiteHome
from tests.sim.server import Simulator
from tests.support.ca import TestCA
from tests.support.site import CA_DN, ENDORSER_DN, World, image_bytes, make_world

TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class ServeThread:
    """The server for one site home; use as a context manager."""

    def __init__(
        self,
        home: SiteHome,
        *,
        config: SiteConfig | None = None,
        warm_up: bool = False,
        max_connections: int = 64,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.home = home
        self._config = config
        self._warm_up = warm_up
        self._max_connections = max_connections
        self._ssl = ssl_context
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vmic-serve-test", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.running: RunningServer | None = None
        self.app: web.Application | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.app = create_app(self.home, config=self._config, warm_up=self._warm_up)
        self.running = await start(
            self.app,
            host="127.0.0.1",
            port=0,
            ssl_context=self._ssl,
            max_connections=self._max_connections,
            shutdown_timeout=2.0,
        )
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.running.close()

    def __enter__(self) -> ServeThread:
        self._thread.start()
        if not self._ready.wait(TIMEOUT):
            raise TimeoutError("the server did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the server did not stop"
        if self._error is not None and exc is None:
            raise self._error

    @property
    def state(self) -> ServeState:
        assert self.app is not None
        return self.app[STATE]

    @property
    def port(self) -> int:
        assert self.running is not None
        return self.running.address[1]

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    def get(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        context: ssl.SSLContext | None = None,
    ) -> Reply:
        conn: http.client.HTTPConnection
        if context is not None:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=TIMEOUT, context=context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request(method, path, headers=dict(headers or {}))
            response = conn.getresponse()
            body = response.read()
            return Reply(response.status, dict(response.getheaders()), body)
        finally:
            conn.close()

    def raw(self, request: bytes) -> bytes:
        """Send ``request`` as it is; everything the server answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def raw_status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@contextmanager
def site_world(tmp_path: Path, now: datetime) -> Iterator[World]:
    """A fresh endorser (on a loopback server) and an initialised site home."""
    with Simulator() as sim:
        ca = TestCA(CA_DN, now=now)
        yield make_world(tmp_path, now, ca, ca.issue(ENDORSER_DN), sim)


def available_site(
    world: World,
    *,
    images: tuple[int, ...] = (1, 2, 3),
    titles: Mapping[int, str] | None = None,
) -> bytes:
    """Publish a list of ``images``, subscribe with auto-approval, sync; the signed list."""
    lst = world.make_list(version=1, images=images)
    names = dict(titles or {})
    entries = tuple(
        replace(e, title=names[n]) if n in names else e
        for n, e in zip(images, lst.entries, strict=True)
    )
    signed = world.publish(replace(lst, entries=entries))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    assert set(world.states().values()) == {"available"}
    return signed


def image_data(world: World, n: int) -> bytes:
    return image_bytes(n, world.image_sizes.get(n, 4096))
