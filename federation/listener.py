"""The listening socket of `vmic serve`: bind address, TLS, connection limits, a fast lane.

aiohttp's own sites accept every connection and wait on every client as
long as it likes. :func:`start` instead puts :class:`_Connection` in front
of aiohttp's request handler, which

- counts open connections (from the moment a connection is established,
  after the TLS handshake, until it is lost), in all and per client address
  (an IPv6 /64 counts as one address), and answers a connection above
  ``max_connections`` or ``max_connections_per_address`` with ``503`` and
  ``Retry-After`` and closes it, so neither a flood nor one greedy client
  can exhaust file descriptors or take every slot;
- gives a client ``header_timeout`` seconds to send a request's headers
  (from connecting, or from the first byte of its next request); a client
  that has not finished by then gets ``408`` and is closed (idle or
  half-sent requests cannot hold slots others need); an idle keep-alive
  connection is closed after :data:`KEEPALIVE_SECONDS`;
- answers simple requests from a :class:`FastLane` when the application
  offers one (``app[FAST_LANE]``): ``GET`` or ``HEAD`` over HTTP/1.1 with a
  plain path, no body and no header beyond a known few, answered from
  memory without building a request object. Anything else — another
  method or version, a query (but one of plain characters to the catalogue
  API), percent-escapes, a body, ``Range`` or
  ``If-Modified-Since``, anything malformed — and everything after it on
  that connection goes to aiohttp, which parses and answers as always. The
  lane is off while the access log is on (so that every request is logged),
  and an application serving peers only offers it ``/healthz`` alone.

With ``[serve] access = "peers"`` the application carries a
:class:`~federation.peer_tls.PeerGate`; :func:`start` then refuses to listen
without TLS and has the TLS context ask every client for a certificate
(:meth:`~federation.peer_tls.PeerGate.prepare_tls`), which the gate judges.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import resource
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from federation.peer_tls import PEER_GATE
from federation.serve_state import FastLane, Refresh, parse_head
from keys.errors import ConfigError
from site_agent.serve_settings import ServeSettings

KEEPALIVE_SECONDS = 15.0
"""Idle keep-alive connections are closed after this, freeing their slot."""
SHUTDOWN_SECONDS = 10.0
"""On stop, requests in flight get this long to finish."""
LINGER_SECONDS = 1.0
"""A refused or timed-out connection is closed this long after its answer (so the client can
read it), whether or not the client reads."""
MAX_HEAD = 8190
"""Request headers longer than this never take the fast lane (aiohttp refuses them)."""
MAX_BUFFERED = 65536
"""Unanswered bytes the fast lane holds before it stops reading from the client."""
FILE_MARGIN = 256
"""File descriptors beyond one per connection: listening sockets, files being served, the store."""
log = logging.getLogger("vmic.serve")


def _plain(status: str, text: str, *extra: str) -> bytes:
    body = text.encode()
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain; charset=utf-8"]
    head += [f"Content-Length: {len(body)}", *extra, "Connection: close", "Server: vmic"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


BUSY = _plain("503 Service Unavailable", "503: too many connections; retry\n", "Retry-After: 1")
BUSY_ADDRESS = _plain(
    "503 Service Unavailable",
    "503: too many connections from your address; retry\n",
    "Retry-After: 1",
)
TOO_SLOW = _plain("408 Request Timeout", "408: the request headers took too long\n")


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a host and a port number."""
    host, sep, port = text.strip().rpartition(":")
    usage = "expected HOST:PORT, e.g. 127.0.0.1:8080, 0.0.0.0:8443 or [::1]:8080"
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"bind address {text!r}: {usage}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"bind address {text!r}: write an IPv6 address in brackets; {usage}")
    return host, int(port)


def client_key(peername: object) -> str:
    """What the per-address limit counts: the IPv4 address, or the IPv6 /64."""
    host = peername[0] if isinstance(peername, tuple) and peername else str(peername)
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(host)  # a UNIX socket or an unknown family: one key
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class ConnectionGate:
    limit: int
    per_address: int = 1 << 30
    open: int = 0
    refused: int = 0
    """Connections answered 503 (over either limit)."""
    timed_out: int = 0
    """Connections closed because their request headers did not arrive in time."""
    fast_answers: int = 0
    """Requests the fast lane answered."""
    by_address: dict[str, int] = field(default_factory=dict)
    lane: set[_Connection] = field(default_factory=set)
    """Connections the fast lane answers (aiohttp closes its own on shutdown)."""


FAST_LANE: web.AppKey[FastLane] = web.AppKey("vmic_fast_lane")
"""The fast lane an application offers (:func:`start` uses it)."""
SETTINGS = web.AppKey("vmic_serve_settings", ServeSettings)
"""An application's [serve] settings, which :func:`start` uses unless told otherwise."""


# -- one connection -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Limits:
    header_timeout: float
    lane: FastLane | None


class _Connection(asyncio.Protocol):
    """A client connection: counted at the gate, timed while it sends request headers,
    answered by the fast lane while its requests are simple, else by aiohttp."""

    def __init__(
        self, make_inner: Callable[[], asyncio.Protocol], gate: ConnectionGate, limits: _Limits
    ) -> None:
        self._make_inner = make_inner
        self._gate = gate
        self._limits = limits
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._key: str | None = None
        """The client's address (its gate key) once admitted."""
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = math.inf
        self._in_head = True
        """Between a request's first byte and its blank line (or waiting for the first one)."""
        self._tail = b""
        self._buffer = bytearray()
        self._busy = False
        self._retried = False
        self._write_paused = False
        self._read_paused = False
        self._eof = False
        self._finished = False
        """Answered 408: nothing more is read."""

    # -- the gate
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream server
        gate = self._gate
        key = client_key(transport.get_extra_info("peername"))
        if gate.open >= gate.limit or gate.by_address.get(key, 0) >= gate.per_address:
            gate.refused += 1
            self._answer_and_close(transport, BUSY if gate.open >= gate.limit else BUSY_ADDRESS)
            return
        gate.open += 1
        gate.by_address[key] = gate.by_address.get(key, 0) + 1
        self._key = key
        self._transport = transport
        self._arm(self._limits.header_timeout)
        if self._limits.lane is None:
            self._hand_over()
        else:
            gate.lane.add(self)

    @staticmethod
    def _answer_and_close(transport: asyncio.Transport, answer: bytes) -> None:
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        loop = asyncio.get_running_loop()
        loop.call_later(LINGER_SECONDS, transport.close)
        loop.call_later(2 * LINGER_SECONDS, transport.abort)  # a client that does not read

    def connection_lost(self, exc: Exception | None) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        gate = self._gate
        gate.lane.discard(self)
        gate.open -= 1
        left = gate.by_address.pop(key, 1) - 1
        if left > 0:
            gate.by_address[key] = left
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def close(self) -> None:
        """Close a fast-lane connection (the server stops); a refresh in flight is dropped."""
        if self._transport is not None and self._inner is None:
            self._transport.close()

    # -- timers: one deadline, one timer handle moved only when the deadline comes sooner
    def _arm(self, seconds: float) -> None:
        self._deadline = deadline = self._loop.time() + seconds
        if self._timer is not None and self._timer.when() <= deadline:
            return  # it fires first and looks again
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._look)

    def _disarm(self) -> None:
        self._deadline = math.inf

    def _look(self) -> None:
        self._timer = None
        if self._deadline == math.inf:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._look)
            return
        self._deadline = math.inf
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not self._in_head:  # an idle keep-alive connection of the fast lane
            transport.close()
            return
        self._gate.timed_out += 1
        if self._inner is None and not self._busy:
            self._finished = True
            self._answer_and_close(transport, TOO_SLOW)
        else:  # aiohttp may be mid-answer: no bytes of ours in between
            transport.close()

    def _watch_heads(self, data: bytes) -> None:
        """For aiohttp's requests: time each head from its first byte to its blank line."""
        if not self._in_head:
            self._in_head = True
            self._arm(self._limits.header_timeout)
        seen = self._tail + data
        end = seen.rfind(b"\r\n\r\n")
        if end >= 0 and end + 4 == len(seen):
            self._in_head = False
            self._disarm()
        elif end >= 0:
            self._arm(self._limits.header_timeout)  # one head done, the next begun
        self._tail = seen[-3:]

    # -- bytes in and out
    def data_received(self, data: bytes) -> None:
        if self._key is None or self._finished:
            return
        if self._inner is not None:
            self._watch_heads(data)
            self._inner.data_received(data)
            return
        if not self._in_head:  # the first byte of the next request
            self._in_head = True
            self._arm(self._limits.header_timeout)
        self._buffer += data
        if len(self._buffer) > MAX_BUFFERED and not self._read_paused:
            assert self._transport is not None  # noqa: S101 - admitted
            self._transport.pause_reading()
            self._read_paused = True
        self._drain()

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        if self._key is None or not (self._busy or self._write_paused):
            return False
        self._eof = True  # answer what was asked, then close
        return True

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()
        else:
            self._write_paused = True

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
        else:
            self._write_paused = False
            if self._key is not None:
                self._drain()

    # -- the fast lane
    def _drain(self) -> None:
        """Answer the complete heads in the buffer, in order, while the lane can."""
        transport, lane = self._transport, self._limits.lane
        assert transport is not None  # noqa: S101 - admitted
        assert lane is not None  # noqa: S101 - on the fast lane
        while not (self._busy or self._write_paused or transport.is_closing()):
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    self._hand_over()
                elif self._eof:
                    transport.close()
                elif not self._buffer:
                    self._in_head = False
                    self._arm(KEEPALIVE_SECONDS)
                break
            head = parse_head(bytes(self._buffer[:end]))
            answer = lane.answer(head) if head is not None else None
            if head is None or answer is None or (callable(answer) and self._retried):
                self._hand_over()
                break
            if callable(answer):
                self._refresh(answer)
                break
            self._retried = False
            del self._buffer[: end + 4]
            self._gate.fast_answers += 1
            transport.write(answer)
            if head.close:
                transport.close()
                break
            if self._buffer:
                self._arm(self._limits.header_timeout)
        if self._read_paused and len(self._buffer) <= MAX_BUFFERED and self._inner is None:
            self._read_paused = False
            transport.resume_reading()

    def _refresh(self, refresh: Refresh) -> None:
        self._busy = True
        task = asyncio.ensure_future(refresh())
        task.add_done_callback(self._refreshed)

    def _refreshed(self, task: asyncio.Future[None]) -> None:
        self._busy = False
        self._retried = True
        if not task.cancelled() and task.exception() is not None:
            log.error("the fast lane failed; aiohttp answers instead", exc_info=task.exception())
        if self._key is not None and self._inner is None:
            self._drain()

    def _hand_over(self) -> None:
        """From here on aiohttp parses and answers everything on this connection."""
        transport = self._transport
        assert transport is not None  # noqa: S101 - admitted
        inner = self._make_inner()
        self._inner = inner
        self._gate.lane.discard(self)
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        inner.connection_made(transport)
        data, self._buffer = bytes(self._buffer), bytearray()
        self._in_head = True
        if data:
            self._watch_heads(data)
            inner.data_received(data)
        if self._eof:
            transport.close()


# -- the server ---------------------------------------------------------------------------
class RunningServer:
    """A started `vmic serve`; :meth:`close` stops it (requests in flight may finish)."""

    def __init__(
        self,
        runner: web.AppRunner,
        listener: asyncio.Server,
        gate: ConnectionGate,
        *,
        tls: bool,
        peers_only: bool = False,
    ) -> None:
        self.runner = runner
        self.listener = listener
        self.gate = gate
        self.tls = tls
        self.peers_only = peers_only
        """Client certificates are asked for; exports, lists and images only for peers."""

    @property
    def address(self) -> tuple[str, int]:
        name = self.listener.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{shown}:{port}"

    async def close(self) -> None:
        self.listener.close()
        for connection in list(self.gate.lane):
            connection.close()
        await self.runner.cleanup()


def _enough_files(connections: int) -> None:
    """Raise the soft limit on open files to what the connection cap needs (up to the hard
    limit); say so when the hard limit is lower."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = connections + FILE_MARGIN
        if soft != resource.RLIM_INFINITY and soft < wanted:
            limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
            if limit < wanted:
                log.warning(
                    "only %d open files allowed (ulimit -n); fewer than %d connections may fit",
                    limit,
                    connections,
                )


async def start(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    settings: ServeSettings | None = None,
    max_connections: int | None = None,
    access_log: logging.Logger | None = None,
    shutdown_timeout: float = SHUTDOWN_SECONDS,
) -> RunningServer:
    """Listen on ``host:port`` (port 0: any free port) and serve ``app``.

    The limits are ``settings`` (by default the application's ``app[SETTINGS]``, else
    :class:`ServeSettings`' defaults); ``max_connections`` overrides its cap.
    """
    limits = settings or app.get(SETTINGS) or ServeSettings()
    cap = max_connections if max_connections is not None else limits.max_connections
    peers = app.get(PEER_GATE)
    if peers is not None:
        peers.prepare_tls(ssl_context)  # ConfigError without TLS
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=access_log,
        keepalive_timeout=KEEPALIVE_SECONDS,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    server = runner.server
    assert server is not None  # noqa: S101 - set by setup()
    gate = ConnectionGate(limit=cap, per_address=limits.max_connections_per_address)
    lane = _Limits(
        header_timeout=limits.header_timeout,
        lane=app.get(FAST_LANE) if access_log is None else None,
    )
    _enough_files(cap)
    loop = asyncio.get_running_loop()
    try:
        listener = await loop.create_server(
            lambda: _Connection(server, gate, lane),
            host,
            port,
            ssl=ssl_context,
            family=socket.AF_UNSPEC,
            reuse_address=True,
            backlog=limits.listen_backlog,
            ssl_handshake_timeout=limits.header_timeout if ssl_context is not None else None,
        )
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="choose another --bind address or port, or stop what listens there",
        ) from exc
    return RunningServer(
        runner, listener, gate, tls=ssl_context is not None, peers_only=peers is not None
    )
