"""A static file server on 127.0.0.1 in a separate process, shared by the benchmarks.

The server runs in a spawned process so that its CPU is not the measured
process's; aiohttp's static route answers with ETag and Last-Modified, 304
on a matching conditional GET, and Range. It stops when the parent closes
its end of the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from aiohttp import web

STARTUP_TIMEOUT = 60.0


class ServerError(Exception):
    """The loopback server did not start."""


def _serve(directory: str, prefix: str, backlog: int, conn: Connection) -> None:
    asyncio.run(_serve_async(Path(directory), prefix, backlog, conn))


async def _serve_async(directory: Path, prefix: str, backlog: int, conn: Connection) -> None:
    app = web.Application()
    app.router.add_static(prefix, directory)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock, backlog=backlog)
    await site.start()
    conn.send(sock.getsockname()[1])
    await asyncio.get_running_loop().run_in_executor(None, _wait_for_close, conn)
    await runner.cleanup()


def _wait_for_close(conn: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        conn.recv()


@contextlib.contextmanager
def serving(directory: Path, *, prefix: str, backlog: int = 128) -> Iterator[str]:
    """Serve ``directory`` under ``prefix`` on 127.0.0.1; yields the base URL."""
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    process = ctx.Process(
        target=_serve, args=(str(directory), prefix, backlog, theirs), daemon=True
    )
    process.start()
    theirs.close()
    try:
        if not mine.poll(STARTUP_TIMEOUT):
            raise ServerError("the loopback server did not start")
        port = mine.recv()
        yield f"http://127.0.0.1:{port}{prefix}"
    finally:
        mine.close()  # the server sees EOF and stops
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join()
