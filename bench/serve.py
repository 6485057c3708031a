"""Benchmark: `vmic serve` against nginx serving the same files, on loopback.

A site home is made the real way (a dev CA and endorser, a signed list of
one image of ``--size`` random bytes served from loopback, `vmic site init`,
`vmic subscribe --auto-approve`, `vmic sync`, a site certificate and `vmic
export`). Then two servers run side by side, each as a child process pinned
to one CPU (when there are two or more): `vmic serve` with the site's
default configuration, and nginx (``--nginx``, one process, its own
temporary configuration, prefix and pid file, on a free 127.0.0.1 port)
serving the same files: the export, the image from the cache's
content-addressed folder, and a static copy of what vmic's ``/healthz``
answered. The load comes from another process (a Python asyncio client
speaking HTTP/1.1 with keep-alive, on the other CPU). Rows, each measured
for ``--seconds`` per server, vmic and nginx in turn, ``--rounds`` times
(medians):

- ``/export.atom``, ``/healthz`` and the catalogue API's ``/api/v1/images``
  (JSON made per request, as pilot factories ask it; nginx serves a static
  copy of the same answer) at each of ``--connections`` (default 10 and
  100): answers per second (200 only) and median latency;
- the image downloaded whole, again and again on one connection: MB/s;
- ``--clients`` (100) keep-alive clients on ``/healthz``, each retrying at
  once when refused: how many 503s, against the server's default cap;
- ``--idle`` (500) connections that send half a request and then nothing,
  from one other address and from as many addresses: does a normal client
  still get 200 within 1 s, and how many of the idle connections the
  server closed within ``--idle-wait`` seconds.

Targets: small responses (the API's included) at least 0.5x nginx's rate. Missing a target is
reported, not fatal. Without nginx the script says so and prints vmic's
figures alone (exit 0); the exit code is 1 only when setting up the site
fails. Nothing leaves 127.0.0.1; every process started here is stopped and
the temporary folder removed.

    .venv/bin/python bench/serve.py [--seconds S] [--connections 10,100] [--size 256m]
                                    [--rounds N] [--clients N] [--idle N] [--idle-wait S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.client
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

from benchkit import (  # bench/benchkit.py
    IMAGE_NAME,
    LIST_NAME,
    make_endorser,
    make_image,
    parse_size,
    verdict,
)
from fedkit import (  # bench/fedkit.py
    COMMAND_TIMEOUT,
    MB,
    ROOT,
    SITE_DN,
    STARTUP_TIMEOUT,
    BenchError,
    SiteServer,
    endorser_server,
    vmic,
    write_list,
)

from keys.dn import DistinguishedName
from keys.pki import CertificateAuthority, issue
from site_agent import admin, config_edit
from site_agent.home import SiteHome

TARGET = 0.5
API = "/api/v1/images"
"""The catalogue API's first page (the site's available images)."""
"""Small responses: at least this share of nginx's rate."""
WARM_UP = 0.3
PROBE_TIMEOUT = 1.0
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
ATTACKER = "127.0.0.2"
"""The one other address the idle connections come from (all of 127/8 is loopback)."""

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {prefix}/nginx.pid;
error_log stderr error;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /export.atom {{ root {home}/exports; default_type application/atom+xml; }}
        location = /healthz {{ root {prefix}/static; default_type application/json; }}
        location = /api/v1/images {{ root {prefix}/static; default_type application/json; }}
        location /images/sha512/ {{ alias {home}/cache/images/sha512/; }}
    }}
}}
"""


# -- the load generator (a process of its own) -------------------------------------------------


@dataclass(slots=True)
class Tally:
    start: float
    stop: float
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    body_bytes: int = 0
    errors: int = 0

    def running(self) -> bool:
        return time.perf_counter() < self.stop


class _Client(asyncio.Protocol):
    """One keep-alive connection sending ``request`` again as soon as an answer is complete;
    bodies are counted, not kept."""

    def __init__(self, request: bytes, tally: Tally, lost: asyncio.Future[None]) -> None:
        self.request = request
        self.tally = tally
        self.lost = lost
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.left = -1  # body bytes still to come; -1 while reading a header
        self.status = 0
        self.body = 0
        self.close = False
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream connection
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None  # noqa: S101 - connected
        if not self.tally.running():
            self.transport.close()
            return
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.left < 0:
                self.head += view
                view = view[len(view) :]
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    continue
                header = bytes(self.head[:end]).lower()
                view = memoryview(bytes(self.head[end + 4 :]))
                self.head.clear()
                self.status = int(header[9:12])
                self.close = b"\r\nconnection: close" in header
                at = header.find(b"\r\ncontent-length:")
                self.left = int(header[at + 17 : header.find(b"\r\n", at + 2)]) if at >= 0 else 0
                self.body = self.left
            take = min(len(view), self.left)
            self.left -= take
            view = view[take:]
            if self.left == 0:
                self.left = -1
                self._done()
                if self.close or self.transport is None or self.transport.is_closing():
                    return

    def _done(self) -> None:
        now = time.perf_counter()
        tally = self.tally
        if tally.start <= now <= tally.stop:
            tally.statuses[self.status] += 1
            tally.latencies.append(now - self.sent)
            tally.body_bytes += self.body
        assert self.transport is not None  # noqa: S101 - connected
        if self.close:
            self.transport.close()
        else:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def _connection(port: int, request: bytes, tally: Tally) -> None:
    """Keep one client connected until the end, reconnecting whenever the server closes."""
    loop = asyncio.get_running_loop()
    while tally.running():
        lost: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(
                functools.partial(_Client, request, tally, lost), "127.0.0.1", port
            )
            await lost
        except OSError:
            tally.errors += 1
            await asyncio.sleep(0.001)


async def _load(port: int, path: str, connections: int, seconds: float) -> dict[str, object]:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    began = time.perf_counter()
    tally = Tally(start=began + WARM_UP, stop=began + WARM_UP + seconds)
    await asyncio.gather(*(_connection(port, request, tally) for _ in range(connections)))
    latencies = sorted(tally.latencies)
    return {
        "statuses": dict(tally.statuses),
        "median": statistics.median(latencies) if latencies else float("nan"),
        "bytes": tally.body_bytes,
        "errors": tally.errors,
        "seconds": seconds,
    }


async def _get(port: int, path: str, source: str = "127.0.0.1") -> tuple[int, float]:
    """One request on a new connection: its status (0: none in time) and latency."""
    began = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            line = await reader.readline()
            await reader.read()
            writer.close()
        return int(line.split()[1]) if line else 0, time.perf_counter() - began
    except (TimeoutError, OSError, IndexError, ValueError):
        return 0, time.perf_counter() - began


async def _idle(port: int, path: str, count: int, spread: bool, wait: float) -> dict[str, object]:
    """``count`` half-sent requests, then a normal client; what the idle ones got."""
    half = f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode()
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for n in range(count):
        source = f"127.0.{1 + n // 250}.{1 + n % 250}" if spread else ATTACKER
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            writer.write(half)
            held.append((reader, writer))
    ends = [asyncio.ensure_future(reader.read()) for reader, _ in held]
    await asyncio.sleep(0.1)
    status, latency = await _get(port, path)
    if wait > 0:
        await asyncio.wait(ends, timeout=wait)
    closed = Counter(_ending(end) for end in ends if end.done())
    for end in ends:
        end.cancel()
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.2)
    after, _ = await _get(port, path)
    return {
        "status": status,
        "latency": latency,
        "opened": len(held),
        "closed": dict(closed),
        "after": after,
    }


def _ending(end: asyncio.Future[bytes]) -> int:
    """How the server ended an idle connection: its answer's status, 0 for none, -1 a reset."""
    if end.exception() is not None:
        return -1
    answer = end.result()
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def _load_process(conn: Connection) -> None:
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        kind, args = job
        result = asyncio.run(_load(*args) if kind == "load" else _idle(*args))
        conn.send(result)


class LoadGenerator:
    """The client process; each call runs one job there and returns what it measured."""

    def __init__(self, cpu: int | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, theirs = ctx.Pipe()
        self._process = ctx.Process(target=_load_process, args=(theirs,), daemon=True)
        self._process.start()
        theirs.close()
        if cpu is not None and self._process.pid is not None:
            os.sched_setaffinity(self._process.pid, {cpu})

    def run(self, kind: str, *args: object) -> dict[str, object]:
        self._conn.send((kind, args))
        if not self._conn.poll(COMMAND_TIMEOUT):
            raise BenchError("the load generator did not answer")
        result: dict[str, object] = self._conn.recv()
        return result

    def close(self) -> None:
        self._conn.close()
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()


# -- the site and the two servers ----------------------------------------------------------------


def build_site(workdir: Path, size: int) -> tuple[SiteHome, str]:
    """A site holding one available image and a signed export; the image's SHA-512."""
    now = datetime.now(UTC)
    endorser = make_endorser(workdir, now)
    served = workdir / "endorser-files"
    served.mkdir()
    sha512 = make_image(served / IMAGE_NAME, size)
    home = SiteHome(workdir / "site")
    admin.init_site(home, trust=endorser.ca_dir)
    with endorser_server(served) as server:
        write_list(served, server.base, endorser, sha512=sha512, size=size)
        admin.subscribe(
            home,
            f"{server.base}/{LIST_NAME}",
            pins=[endorser.pin],
            name="bench",
            auto_approve=True,
            now=now,
        )
        _command("sync", "--home", home.root)
    ca = CertificateAuthority.load(endorser.ca_dir)
    where = workdir / "site-id"
    issue(ca, DistinguishedName.parse_slash(SITE_DN.format(n=0)), where, now=now, key_type="ec")
    config_edit.set_identity(
        home.config,
        cert=where / "cert.pem",
        key=where / "key.pem",
        chain=None,
        base_url="https://vmic.bench.example.org",
    )
    _command("export", "--home", home.root)
    if not (home.images / sha512).is_file() or not (home.exports / "export.atom").is_file():
        raise BenchError("the site does not hold the image and its export")
    return home, sha512


def _command(*args: object) -> None:
    done = subprocess.run(
        vmic(*args), cwd=ROOT, capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT
    )
    if done.returncode != 0:
        raise BenchError(f"vmic {args[0]} exited {done.returncode}: {done.stderr[-2000:]}")


def find_nginx(given: str | None) -> str | None:
    for candidate in (given,) if given is not None else (shutil.which("nginx"), *NGINX_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited {process.returncode} at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise BenchError(f"{what} did not start")


@contextlib.contextmanager
def nginx_serving(
    nginx: str, home: SiteHome, prefix: Path, healthz: bytes, api: bytes
) -> Iterator[int]:
    """nginx serving the site's files on a free port (one process, as this user), and
    static copies of vmic's ``/healthz`` and ``/api/v1/images`` answers."""
    (prefix / "static" / "api" / "v1").mkdir(parents=True)
    (prefix / "static" / "healthz").write_bytes(healthz)
    (prefix / "static" / "api" / "v1" / "images").write_bytes(api)
    port = _free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, home=home.root))
    log = (prefix / "stderr.log").open("wb")
    process = subprocess.Popen(  # a fixed argument list, no shell
        [nginx, "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        _wait_listening(port, process, "nginx")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})


def _fetch(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=COMMAND_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(f"GET {path} answered {response.status}")
        return body
    finally:
        conn.close()


# -- rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figure:
    rate: float
    """200s per second, or body bytes per second for a download."""
    median: float
    refused: int
    """503 answers."""


def _figure(result: dict[str, object], *, download: bool) -> Figure:
    statuses = result["statuses"]
    seconds = result["seconds"]
    assert isinstance(statuses, dict)  # noqa: S101 - our own
    assert isinstance(seconds, float)  # noqa: S101 - our own
    body = result["bytes"]
    assert isinstance(body, int)  # noqa: S101 - our own
    median = result["median"]
    assert isinstance(median, float)  # noqa: S101 - our own
    rate = body / seconds if download else statuses.get(200, 0) / seconds
    return Figure(rate=rate, median=median, refused=int(statuses.get(503, 0)))


def _median_figure(figures: list[Figure]) -> Figure:
    return Figure(
        rate=statistics.median(f.rate for f in figures),
        median=statistics.median(f.median for f in figures),
        refused=int(statistics.median(f.refused for f in figures)),
    )


def paired(
    load: LoadGenerator,
    ports: dict[str, int],
    job: tuple[str, int],
    seconds: float,
    rounds: int,
    *,
    download: bool = False,
) -> dict[str, Figure]:
    """Each server in turn, ``rounds`` times; the median of each."""
    found: dict[str, list[Figure]] = {name: [] for name in ports}
    for _ in range(rounds):
        for name, port in ports.items():
            result = load.run("load", port, *job, seconds)
            found[name].append(_figure(result, download=download))
    return {name: _median_figure(figures) for name, figures in found.items()}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def small_row(label: str, figures: dict[str, Figure]) -> float | None:
    mine = figures["vmic"]
    cells = [f"vmic {mine.rate:>9,.0f}/s, median {_ms(mine.median)}"]
    if mine.refused:
        cells[0] += f" ({mine.refused} x 503)"
    base = figures.get("nginx")
    ratio = None
    if base is not None:
        ratio = mine.rate / base.rate if base.rate else 0.0
        cells.append(f"nginx {base.rate:>9,.0f}/s, median {_ms(base.median)}")
        cells.append(
            f"ratio vmic/nginx {ratio:.2f}x rate, {mine.median / base.median:.1f}x latency"
            f" ({verdict(ratio >= TARGET)}, >= {TARGET}x)"
        )
    print(f"{label:<30} " + "; ".join(cells), flush=True)
    return ratio


def download_row(label: str, figures: dict[str, Figure]) -> None:
    mine = figures["vmic"]
    cells = [f"vmic {mine.rate / MB:,.0f} MB/s"]
    base = figures.get("nginx")
    if base is not None:
        cells.append(f"nginx {base.rate / MB:,.0f} MB/s")
        cells.append(f"ratio vmic/nginx {mine.rate / base.rate:.2f}x throughput")
    print(f"{label:<30} " + "; ".join(cells), flush=True)


def cap_row(label: str, figures: dict[str, Figure]) -> None:
    cells = [f"{name} {figure.refused:,} x 503" for name, figure in figures.items()]
    if "nginx" in figures:
        cells.append(
            f"ratio vmic/nginx {figures['vmic'].refused:,} vs {figures['nginx'].refused:,} 503s"
        )
    print(f"{label:<30} " + "; ".join(cells), flush=True)


_HOW = {0: "silently", -1: "by a reset"}


def _idle_cell(name: str, found: dict[str, object]) -> str:
    status, latency, closed = found["status"], found["latency"], found["closed"]
    assert isinstance(status, int)  # noqa: S101 - our own
    assert isinstance(latency, float)  # noqa: S101 - our own
    assert isinstance(closed, dict)  # noqa: S101 - our own
    answer = f"200 in {_ms(latency)}" if status == 200 else f"NOT served ({status or 'no answer'})"
    shut = ", ".join(f"{n} {_HOW.get(s, f'with {s}')}" for s, n in sorted(closed.items()))
    return f"{name}: normal client {answer}; of {found['opened']} idle, closed {shut or 'none'}"


def idle_row(label: str, found: dict[str, dict[str, object]]) -> None:
    cells = [_idle_cell(name, result) for name, result in found.items()]
    if "nginx" in found:
        served = ["yes" if r["status"] == 200 else "no" for r in found.values()]
        cells.append(f"ratio vmic/nginx served within 1 s: {' vs '.join(served)}")
    print(f"{label:<30} " + "; ".join(cells), flush=True)


# -- the run -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[10, 100],
        help="concurrent connections of the small-response rows (default 10,100)",
    )
    parser.add_argument("--size", type=parse_size, default=parse_size("256m"), help="image size")
    parser.add_argument("--rounds", type=int, default=3, help="paired runs of each row")
    parser.add_argument("--clients", type=int, default=100, help="clients against the cap")
    parser.add_argument("--idle", type=int, default=500, help="idle half-sent requests")
    parser.add_argument(
        "--idle-wait", type=float, default=10.0, help="seconds to wait for idle ones to be closed"
    )
    parser.add_argument("--nginx", help="the nginx executable (default: on PATH or /usr/sbin)")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, workdir: Path, nginx: str | None) -> None:
    home, sha512 = build_site(workdir, args.size)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    with contextlib.ExitStack() as stack:
        site = SiteServer(home, workdir / "serve.log")
        stack.callback(site.stop)
        port = int(site.wait_ready(time.monotonic() + STARTUP_TIMEOUT).rsplit(":", 1)[1])
        _pin(site.process.pid, server_cpu)
        ports = {"vmic": port}
        if nginx is not None:
            healthz, api = _fetch(port, "/healthz"), _fetch(port, API)
            ports["nginx"] = stack.enter_context(
                nginx_serving(nginx, home, workdir / "nginx", healthz, api)
            )
            with (workdir / "nginx" / "nginx.pid").open() as pid:
                _pin(int(pid.read()), server_cpu)
            if _fetch(ports["nginx"], "/export.atom") != _fetch(port, "/export.atom"):
                raise BenchError("nginx and vmic serve different exports")
        load = LoadGenerator(client_cpu)
        stack.callback(load.close)
        pinned = "each pinned to a CPU of its own" if server_cpu is not None else "unpinned"
        print(
            f"vmic serve vs {'nginx ' + nginx if nginx else 'nothing (nginx not found)'}: one "
            f"process each; load: a Python asyncio client in another process ({pinned}); "
            f"{args.rounds} paired rounds of {args.seconds:g} s, medians",
            flush=True,
        )
        ratios: list[float] = []
        for path in ("/export.atom", "/healthz", API):
            for connections in args.connections:
                figures = paired(load, ports, (path, connections), args.seconds, args.rounds)
                ratio = small_row(f"{path}, {connections} connections", figures)
                if ratio is not None:
                    ratios.append(ratio)
        image = f"/images/sha512/{sha512}"
        figures = paired(load, ports, (image, 1), args.seconds, args.rounds, download=True)
        download_row(f"image download ({args.size / MB:,.1f} MB)", figures)
        figures = paired(load, ports, ("/healthz", args.clients), args.seconds, 1)
        cap_row(f"{args.clients} clients vs the cap", figures)
        for spread, label in ((False, "one address"), (True, f"{args.idle} addresses")):
            found = {
                name: load.run("idle", p, "/healthz", args.idle, spread, args.idle_wait)
                for name, p in ports.items()
            }
            idle_row(f"{args.idle} idle, {label}", found)
        if ratios:
            worst = min(ratios)
            print(
                f"ratio vmic/nginx (small responses, worst rate): {worst:.2f}x, target >= "
                f"{TARGET}x: {verdict(worst >= TARGET)}"
            )
        else:
            print("ratio vmic/nginx: n/a (nginx not found; vmic's figures alone)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nginx = find_nginx(args.nginx)
    if nginx is None:
        print("nginx not found (--nginx, PATH, /usr/sbin): printing vmic's figures alone")
    with tempfile.TemporaryDirectory(prefix="vmic-bench-serve-") as tmp:
        try:
            measure(args, Path(tmp), nginx)
        except BenchError as exc:
            print(f"bench/serve.py: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
