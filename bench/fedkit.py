"""Pieces of the federation benchmark: the endorser's counting server, `vmic` processes,
and sites' `vmic serve` processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import multiprocessing
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from benchkit import IMAGE_NAME, LIST_NAME, Endorser, write_one_image_list  # bench/benchkit.py

from site_agent.home import SiteHome

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: ``python -m federation`` runs from here."""
MiB = 1024**2
GiB = 1024**3
MB = 1_000_000
CHUNK = 4 * MiB
PACED_PIECE = 256 * 1024
"""Bytes written at a time through a capped uplink."""
PREFIX = "/files"
BYTES_TARGET = 2.0
"""With peers on, the endorser serves at most this many times the image size."""
CAPPED_TARGET = 3.0
"""With the endorser's uplink capped, peers make the propagation at least this much faster."""
STARTUP_TIMEOUT = 60.0
COMMAND_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
POLL_SECONDS = 0.01
SITE_DN = "/DC=org/DC=example/O=vmic bench/OU=Sites/CN=bench site {n:02d}"
_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class BenchError(Exception):
    """A sync failed or a site does not hold the image: the run is not valid."""


# -- the endorser: a list, an image, a counting static server (another process) ----------------


def write_list(served: Path, base: str, endorser: Endorser, *, sha512: str, size: int) -> None:
    """The endorser's signed list, naming the image at ``base``."""
    write_one_image_list(served, base, endorser, what="federation", sha512=sha512, size=size)


@dataclass(frozen=True, slots=True, kw_only=True)
class Served:
    """What the endorser's server sent: body bytes of complete GET responses (200 or 206)."""

    list_bytes: int = 0
    list_bodies: int = 0
    image_bytes: int = 0
    image_bodies: int = 0
    not_modified: int = 0
    aborted: int = 0
    """Responses cut off by the client (none in a clean run without racing)."""
    aborted_bytes: int = 0
    """Body bytes of cut-off responses, where known (the rate-capped image only)."""

    @property
    def total(self) -> int:
        return self.list_bytes + self.image_bytes + self.aborted_bytes

    def __sub__(self, other: Served) -> Served:
        return Served(
            list_bytes=self.list_bytes - other.list_bytes,
            list_bodies=self.list_bodies - other.list_bodies,
            image_bytes=self.image_bytes - other.image_bytes,
            image_bodies=self.image_bodies - other.image_bodies,
            not_modified=self.not_modified - other.not_modified,
            aborted=self.aborted - other.aborted,
            aborted_bytes=self.aborted_bytes - other.aborted_bytes,
        )


class _CountedFile(web.FileResponse):
    """A static file (sendfile) whose body bytes are counted once they were sent."""

    def __init__(self, path: Path, kind: str, counts: dict[str, int]) -> None:
        super().__init__(path)
        self._kind = kind
        self._counts = counts

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            writer = await super().prepare(request)  # returns once the whole body is sent
        except (ConnectionError, asyncio.CancelledError):
            self._counts["aborted"] += 1
            raise
        if self.status == 304:
            self._counts["not_modified"] += 1
        elif request.method == "GET" and self.status in (200, 206):
            self._counts[f"{self._kind}_bytes"] += self.content_length or 0
            self._counts[f"{self._kind}_bodies"] += 1
        return writer


class Uplink:
    """The endorser's uplink, shared by all its responses: at most ``rate`` bytes a second.

    Each piece of a body reserves the next free stretch of the uplink's time line and
    is written when its stretch begins, so concurrent downloads share the rate."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._free_at = 0.0

    async def take(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._free_at)
        self._free_at = start + count / self.rate
        if start > now:
            await asyncio.sleep(start - now)


async def _paced_file(
    request: web.Request, path: Path, uplink: Uplink, counts: dict[str, int]
) -> web.StreamResponse:
    """The image through a capped uplink: always the whole file (200), in pieces of
    ``PACED_PIECE`` bytes; the bytes of a response cut off by the client are counted too."""
    size = path.stat().st_size
    response = web.StreamResponse(status=200)
    response.content_length = size
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    sent = 0
    try:
        with path.open("rb") as handle:
            while piece := handle.read(PACED_PIECE):
                await uplink.take(len(piece))
                await response.write(piece)
                sent += len(piece)
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        counts["aborted"] += 1
        counts["aborted_bytes"] += sent
        raise
    counts["image_bytes"] += size
    counts["image_bodies"] += 1
    return response


def _endorser_process(directory: str, rate: float | None, conn: Connection) -> None:
    asyncio.run(_endorser_async(Path(directory), conn, rate))


async def _endorser_async(directory: Path, conn: Connection, rate: float | None) -> None:
    counts = {f.name: 0 for f in dataclasses.fields(Served)}
    kinds = {LIST_NAME: "list", IMAGE_NAME: "image"}
    uplink = None if rate is None else Uplink(rate)

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in kinds:
            raise web.HTTPNotFound
        if uplink is not None and kinds[name] == "image":
            return await _paced_file(request, directory / name, uplink, counts)
        return _CountedFile(directory / name, kinds[name], counts)

    app = web.Application()
    app.router.add_get(PREFIX + "/{name}", handler)
    await serve_app(app, conn, lambda _message: dict(counts))


async def serve_app(
    app: web.Application, conn: Connection, answer: Callable[[object], object]
) -> None:
    """Serve ``app`` on 127.0.0.1 (a free port, sent to the parent), answer each message
    from the parent with ``answer(message)``, and stop when the parent closes its end."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock, backlog=1024).start()
    conn.send(sock.getsockname()[1])
    stop = asyncio.Event()

    def on_message() -> None:
        try:
            conn.send(answer(conn.recv()))
        except (EOFError, OSError):
            stop.set()  # the parent closed its end: stop

    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), on_message)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await runner.cleanup()


@dataclass(frozen=True, slots=True, kw_only=True)
class EndorserServer:
    base: str
    pid: int
    conn: Connection

    def served(self) -> Served:
        try:
            self.conn.send("counts")
            counts = self.conn.recv() if self.conn.poll(STARTUP_TIMEOUT) else None
        except EOFError:
            counts = None
        if not isinstance(counts, dict):
            raise BenchError("the endorser's server did not report its counts")
        return Served(**counts)


@contextlib.contextmanager
def endorser_server(directory: Path, *, rate: float | None = None) -> Iterator[EndorserServer]:
    """Serve ``directory``'s list and image on 127.0.0.1 from a spawned process; with
    ``rate``, the image's bytes go out through an uplink of that many bytes a second."""
    with spawned_server(_endorser_process, str(directory), rate) as (port, pid, conn):
        yield EndorserServer(base=f"http://127.0.0.1:{port}{PREFIX}", pid=pid, conn=conn)


@contextlib.contextmanager
def spawned_server(
    target: Callable[..., None], *args: object
) -> Iterator[tuple[int, int, Connection]]:
    """Run ``target(*args, conn)`` in a spawned process until the end of the block; its
    port (which it sends first, as :func:`serve_app` does), process id and connection."""
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    process = ctx.Process(target=target, args=(*args, theirs), daemon=True)
    process.start()
    theirs.close()
    try:
        try:
            port = mine.recv() if mine.poll(STARTUP_TIMEOUT) else None
        except EOFError:
            port = None
        if not isinstance(port, int):
            raise BenchError(f"the endorser's server did not start (exit {process.exitcode})")
        if process.pid is None:
            raise BenchError("the endorser's server has no process id")
        yield port, process.pid, mine
    finally:
        mine.close()  # the server sees EOF and stops
        process.join(STOP_TIMEOUT)
        if process.is_alive():
            process.terminate()
            process.join()


# -- processes: `python -m federation ...` -----------------------------------------------------


def vmic(*args: object) -> list[str]:
    return [sys.executable, "-m", "federation", *(str(a) for a in args)]


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (0.0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """User + system CPU seconds of the child processes waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    key: int
    code: int
    seconds: float
    output: str


def run_concurrently(
    jobs: Sequence[tuple[int, list[str]]], *, timeout: float, what: str
) -> list[Finished]:
    """Start every command at once; wait for all (killing them all after ``timeout``)."""
    running: dict[int, tuple[subprocess.Popen[bytes], IO[bytes], float]] = {}
    done: list[Finished] = []
    try:
        for key, argv in jobs:
            out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
            proc = subprocess.Popen(
                argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
            running[key] = (proc, out, time.perf_counter())
        deadline = time.monotonic() + timeout
        while running:
            for key, (proc, out, started) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                seconds = time.perf_counter() - started
                out.seek(0)
                text = out.read().decode("utf-8", "replace").strip()
                done.append(Finished(key=key, code=code, seconds=seconds, output=text))
                out.close()
                del running[key]
            if running and time.monotonic() > deadline:
                raise BenchError(
                    f"{what}: {len(running)} command(s) still running after {timeout:g} s"
                )
            time.sleep(POLL_SECONDS)
    finally:
        for proc, out, _ in running.values():
            proc.kill()
            proc.wait()
            out.close()
    return sorted(done, key=lambda f: f.key)


def check_finished(results: list[Finished], what: str) -> None:
    bad = [r for r in results if r.code != 0]
    if bad:
        first = bad[0]
        raise BenchError(
            f"{what}: {len(bad)} command(s) failed; site {first.key} exited {first.code}: "
            f"{first.output[-2000:]}"
        )


class SiteServer:
    """`vmic serve` for one site home, in a process of its own, on 127.0.0.1 (any free port)."""

    def __init__(self, home: SiteHome, log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            vmic("serve", "--home", home.root, "--bind", "127.0.0.1:0"),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
        )
        self.url = ""

    def wait_ready(self, deadline: float) -> str:
        stdout = self.process.stdout
        if stdout is None:
            raise BenchError("vmic serve has no stdout")
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    line = stdout.readline().decode("utf-8", "replace")
                    match = _LISTENING.search(line)
                    if match:
                        self.url = match.group(1)
                        return self.url
                    if not line:
                        break
        self.process.poll()
        raise BenchError(
            f"vmic serve did not start (exit {self.process.returncode}): "
            f"{self.log.read_text(errors='replace')[-2000:]}"
        )

    def metrics(self) -> dict[str, float]:
        """The unlabelled samples of its /metrics."""
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=COMMAND_TIMEOUT)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode("utf-8")
        finally:
            conn.close()
        samples = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if line and not line.startswith("#") and "{" not in name:
                samples[name] = float(value)
        return samples

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log_file.close()
