"""A real HTTP server on 127.0.0.1 with fault switches, for the site agent's network tests.

:class:`Simulator` runs an aiohttp server on port 0 in a background thread
with its own event loop, so that the code under test may call
``asyncio.run`` (or the synchronous CLI) on the test's thread. It serves
published bodies (bytes, or files for large benchmarks) with ETag,
Last-Modified, conditional GET, single ranges and If-Range, and logs every
request. Per path, :meth:`Simulator.fault` switches on the misbehaviour of a
hostile or broken server (THREATS 19-25). Everything is bounded: a stalled or
dripping response ends once the client goes away or after ``safety_timeout``,
and stopping the server takes at most a few seconds.

``python -m tests.sim FILE...`` serves files from another process (for
benchmarks, see :mod:`tests.sim.__main__`).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from aiohttp import web

from tests.sim.resources import Faults, Resource, parse_range

PIECE = 256 * 1024
"""Bytes per write of a normal body."""
TICK = 0.02
"""Seconds between checks of a stalled or dripping response."""
LINGER = 0.2
"""Seconds a truncated response waits before closing (aiohttp drops unread bytes on a reset)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """One request as the server saw it, and what it answered."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    if_none_match: str | None
    if_modified_since: str | None
    status: int
    bytes_sent: int
    """Body bytes written (extra overrun bytes included)."""
    time: float
    """``time.monotonic()`` when the request arrived."""


@dataclass(slots=True)
class _Outcome:
    status: int = 0
    sent: int = 0


@dataclass(slots=True)
class _State:
    resources: dict[str, Resource] = field(default_factory=dict)
    faults: dict[str, Faults] = field(default_factory=dict)
    faults_left: dict[str, int] = field(default_factory=dict)
    log: list[RequestRecord] = field(default_factory=list)
    in_flight: int = 0


class Simulator:
    """A loopback HTTP(S) server; use as a context manager."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, safety_timeout: float = 20.0
    ) -> None:
        self.safety_timeout = safety_timeout
        self._ssl = ssl_context
        self._state = _State()
        self._lock = threading.Condition()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._startup_error: BaseException | None = None
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Simulator:
        self._thread = threading.Thread(target=self._serve, name="simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the simulator did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError("the simulator did not start") from self._startup_error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if self._thread.is_alive():
                raise RuntimeError("the simulator did not stop within 10 s")

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        runner = web.AppRunner(
            self._app(), access_log=None, shutdown_timeout=1.0, handle_signals=False
        )
        try:
            try:
                loop.run_until_complete(self._start(runner))
            except (OSError, RuntimeError) as exc:
                self._startup_error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    async def _start(self, runner: web.AppRunner) -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        port = runner.addresses[0][1]
        self.base_url = f"{'https' if self._ssl else 'http'}://127.0.0.1:{port}"

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    # -- the test's side -------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def publish(
        self,
        path: str,
        body: bytes,
        *,
        etag: str | None = "auto",
        last_modified: datetime | None = None,
    ) -> None:
        """Serve ``body`` at ``path``; ``etag="auto"`` is a quoted SHA-256 prefix of it."""
        if etag == "auto":
            etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        self._put(path, Resource(body=body, etag=etag, last_modified=last_modified))

    def publish_file(
        self,
        path: str,
        file: Path,
        *,
        etag: str | None = "auto",
        last_modified: datetime | None = None,
    ) -> None:
        """Serve a file read from disk at each request (big bodies stay out of memory)."""
        stat = file.stat()
        if etag == "auto":
            etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        self._put(path, Resource(file=file, etag=etag, last_modified=last_modified))

    def remove(self, path: str) -> None:
        with self._lock:
            self._state.resources.pop(_norm(path), None)

    def fault(
        self,
        path: str,
        *,
        times: int | None = None,
        status: int | None = None,
        stall_after: int | None = None,
        drip: int | None = None,
        truncate_at: int | None = None,
        overrun: int | None = None,
        no_content_length: bool = False,
        ignore_range: bool = False,
        wrong_content_range: bool = False,
        redirect_to: str | None = None,
        content_length: int | None = None,
    ) -> None:
        """Replace the faults of ``path``; with ``times``, only for its next N requests."""
        faults = Faults(
            status=status,
            stall_after=stall_after,
            drip=drip,
            truncate_at=truncate_at,
            overrun=overrun,
            no_content_length=no_content_length,
            ignore_range=ignore_range,
            wrong_content_range=wrong_content_range,
            redirect_to=redirect_to,
            content_length=content_length,
        )
        with self._lock:
            self._state.faults[_norm(path)] = faults
            if times is None:
                self._state.faults_left.pop(_norm(path), None)
            else:
                self._state.faults_left[_norm(path)] = times

    def clear_faults(self, path: str | None = None) -> None:
        with self._lock:
            if path is None:
                self._state.faults.clear()
                self._state.faults_left.clear()
            else:
                self._state.faults.pop(_norm(path), None)
                self._state.faults_left.pop(_norm(path), None)

    @property
    def requests(self) -> list[RequestRecord]:
        """The request log, once the requests in flight have ended (waits at most 5 s)."""
        with self._lock:
            self._lock.wait_for(lambda: self._state.in_flight == 0, timeout=5)
            return list(self._state.log)

    def requests_for(self, path: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.path == _norm(path)]

    def _put(self, path: str, resource: Resource) -> None:
        if resource.last_modified is not None:
            stamp = resource.last_modified.astimezone(UTC).replace(microsecond=0)
            resource = replace(resource, last_modified=stamp)
        with self._lock:
            self._state.resources[_norm(path)] = resource

    # -- the server's side -----------------------------------------------------------

    def _lookup(self, path: str) -> tuple[Resource | None, Faults]:
        with self._lock:
            state = self._state
            faults = state.faults.get(path, Faults())
            left = state.faults_left.get(path)
            if left is not None:
                if left <= 0:
                    faults = Faults()
                    state.faults.pop(path, None)
                    state.faults_left.pop(path, None)
                else:
                    state.faults_left[path] = left - 1
            return state.resources.get(path), faults

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrival = time.monotonic()
        outcome = _Outcome()
        with self._lock:
            self._state.in_flight += 1
        try:
            return await self._answer(request, outcome)
        finally:
            headers = request.headers
            record = RequestRecord(
                method=request.method,
                path=request.path,
                range=headers.get("Range"),
                if_range=headers.get("If-Range"),
                if_none_match=headers.get("If-None-Match"),
                if_modified_since=headers.get("If-Modified-Since"),
                status=outcome.status,
                bytes_sent=outcome.sent,
                time=arrival,
            )
            with self._lock:
                self._state.log.append(record)
                self._state.in_flight -= 1
                self._lock.notify_all()

    async def _answer(self, request: web.Request, outcome: _Outcome) -> web.StreamResponse:
        if request.method not in {"GET", "HEAD"}:
            outcome.status = 405
            return web.Response(status=405)
        resource, faults = self._lookup(request.path)
        if faults.redirect_to is not None:
            outcome.status = 302
            return web.Response(status=302, headers={"Location": faults.redirect_to})
        if faults.status is not None:
            outcome.status = faults.status
            return web.Response(status=faults.status, text=f"fault: HTTP {faults.status}\n")
        if resource is None:
            outcome.status = 404
            return web.Response(status=404, text="not published\n")
        validators = resource.validators()
        if resource.not_modified(request.headers):
            outcome.status = 304
            return web.Response(status=304, headers=validators)
        size = resource.size
        status, start, end = 200, 0, size
        wanted = None if faults.ignore_range else parse_range(request.headers, resource)
        if wanted is not None:
            start, end = wanted
            if start >= size:
                outcome.status = 416
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            if faults.wrong_content_range:
                start = 0 if start > 0 else 1
            status = 206
        response = web.StreamResponse(status=status, headers=validators)
        response.headers["Accept-Ranges"] = "bytes"
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        declared = faults.content_length
        if declared is None and not faults.no_content_length and faults.overrun is None:
            declared = end - start
        if declared is None:
            response.enable_chunked_encoding()
        else:
            response.content_length = declared
        outcome.status = status
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            await self._send(
                request, response, resource, start=start, end=end, faults=faults, outcome=outcome
            )
        except ConnectionError:
            return response  # the client went away
        await response.write_eof()
        return response

    async def _send(
        self,
        request: web.Request,
        response: web.StreamResponse,
        resource: Resource,
        *,
        start: int,
        end: int,
        faults: Faults,
        outcome: _Outcome,
    ) -> None:
        stop = end
        for cut in (faults.stall_after, faults.truncate_at):
            if cut is not None:
                stop = min(stop, start + cut)
        deadline = time.monotonic() + self.safety_timeout
        position = start
        while position < stop:
            if faults.drip is not None:
                count = max(1, faults.drip // 50)
                if time.monotonic() > deadline or _gone(request):
                    break
                await asyncio.sleep(count / faults.drip)
            else:
                count = PIECE
            piece = resource.read(position, min(count, stop - position))
            await response.write(piece)
            position += len(piece)
            outcome.sent += len(piece)
        if faults.stall_after is not None:
            while time.monotonic() < deadline and not _gone(request):
                await asyncio.sleep(TICK)
        if stop < end or (faults.content_length or 0) > end - start:
            await asyncio.sleep(LINGER)  # let the client read what was sent, then cut
            _close(request)
            return
        if faults.overrun is not None:
            await _overrun(request, response, faults, deadline=deadline, outcome=outcome)


async def _overrun(
    request: web.Request,
    response: web.StreamResponse,
    faults: Faults,
    *,
    deadline: float,
    outcome: _Outcome,
) -> None:
    """Send ``faults.overrun`` bytes past the body: in the body when no length was declared,
    raw on the connection after a lying Content-Length."""
    left = faults.overrun or 0
    raw = faults.content_length is not None
    junk = b"\xaa" * PIECE
    while left > 0 and time.monotonic() < deadline and not _gone(request):
        piece = junk[: min(left, PIECE)]
        if raw and request.transport is not None:
            request.transport.write(piece)
            await asyncio.sleep(0)
        else:
            await response.write(piece)
        left -= len(piece)
        outcome.sent += len(piece)
    if raw:
        _close(request)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _close(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


def _norm(path: str) -> str:
    return path if path.startswith("/") else "/" + path
