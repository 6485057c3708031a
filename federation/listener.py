"""The listening socket of `vmic serve`: bind address, optional TLS, bounded connections.

aiohttp's own sites accept every connection. :func:`start` instead puts a
small protocol in front of aiohttp's request handler that counts open
connections (from the moment a connection is established, after the TLS
handshake, until it is lost) and answers a connection above
``max_connections`` with ``503 Service Unavailable`` and closes it, so a
flood of clients cannot exhaust file descriptors or memory.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass

from aiohttp import web

from keys.errors import ConfigError

KEEPALIVE_SECONDS = 15.0
"""Idle keep-alive connections are closed after this, freeing their slot."""
SHUTDOWN_SECONDS = 10.0
"""On stop, requests in flight get this long to finish."""
LINGER_SECONDS = 1.0
"""A refused connection is closed this long after its 503 (so the client can read it)."""
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 33\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    b"503: too many connections; retry\n"
)


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


@dataclass(slots=True)
class ConnectionGate:
    limit: int
    open: int = 0
    refused: int = 0


class _Gated(asyncio.Protocol):
    """aiohttp's request handler behind a connection count."""

    def __init__(self, inner: asyncio.Protocol, gate: ConnectionGate) -> None:
        self._inner = inner
        self._gate = gate
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._gate.open >= self._gate.limit:
            self._gate.refused += 1
            assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream server
            transport.write(BUSY)
            if transport.can_write_eof():
                transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)
            return
        self._gate.open += 1
        self._admitted = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self._gate.open -= 1
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else False

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()


class RunningServer:
    """A started `vmic serve`; :meth:`close` stops it (requests in flight may finish)."""

    def __init__(
        self,
        runner: web.AppRunner,
        listener: asyncio.Server,
        gate: ConnectionGate,
        *,
        tls: bool,
    ) -> None:
        self.runner = runner
        self.listener = listener
        self.gate = gate
        self.tls = tls

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
        await self.runner.cleanup()


async def start(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int = 64,
    access_log: logging.Logger | None = None,
    shutdown_timeout: float = SHUTDOWN_SECONDS,
) -> RunningServer:
    """Listen on ``host:port`` (port 0: any free port) and serve ``app``."""
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
    gate = ConnectionGate(limit=max_connections)
    loop = asyncio.get_running_loop()
    try:
        listener = await loop.create_server(
            lambda: _Gated(server(), gate),
            host,
            port,
            ssl=ssl_context,
            family=socket.AF_UNSPEC,
            reuse_address=True,
        )
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="choose another --bind address or port, or stop what listens there",
        ) from exc
    return RunningServer(runner, listener, gate, tls=ssl_context is not None)
