"""Hostile HTTP answers (issue 9): whatever bytes a server sends back, ``fetch_list`` and
``download`` return normally or raise a vmic error, within their deadlines; a failed download
leaves at most a partial with its ``.resume`` sidecar (what resume keeps by design), nothing
else.

:class:`_RawServer` is a real TCP server on 127.0.0.1 that reads each request's head and
answers the connection with the next scripted :class:`_Answer`: bytes as they come,
well-formed or not, sent whole, cut by a pause, or followed by a stall, then the connection is
closed. The strategies build whole responses: odd status codes, redirects to anywhere, broken
lengths and chunks, encodings, garbage header lines, bodies shorter or longer than declared,
pure noise. Honest answers among them reach the success path, which is then asserted. Every
name a Location header brings up is answered with 127.0.0.1 by :class:`_Loopback`, so no
lookup and no connection leaves the machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import tempfile
import threading
from collections import deque
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import event, given
from hypothesis import strategies as st

from keys.errors import FetchError, HTTPStatusError, VmicError
from keys.limits import Limits
from site_agent.download import sidecar
from site_agent.fetch import Fetcher, ListFetch, Validators
from site_agent.transport import sendable

T = TypeVar("T")

LIMITS = Limits(
    list_deadline=timedelta(seconds=1),
    download_deadline=timedelta(seconds=1),
    read_timeout=timedelta(seconds=0.25),
    connect_timeout=timedelta(seconds=1),
    rate_grace=timedelta(seconds=1),
    min_rate=1024,
    retries=0,
    backoff=timedelta(0),
    max_redirects=3,
    max_list_bytes=4096,
    free_space_margin=0,
)
"""Deadlines short enough that a stalling server costs a fraction of a second."""
HANG = 5.0
"""Seconds after which a call counts as hung (its deadlines are 1 s; two attempts at most)."""
PORT = b"@PORT@"
"""Stands for the server's port in generated answers; the server fills it in."""
_RANGE = re.compile(rb"\r\nrange: bytes=(\d+)-\r\n", re.IGNORECASE)


# -- the server --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Answer:
    """What one connection gets: ``data`` (``pause_at`` bytes, ``stall`` seconds of silence,
    the rest), then the server closes. ``honest`` answers with ``data`` as a file instead:
    200 with all of it (its length given by ``framing``), or 206 with the rest when the
    request asked for a range."""

    data: bytes
    pause_at: int | None = None
    stall: float = 0.0
    honest: bool = False
    framing: str = "length"
    """Content-Length, "close" (the body ends with the connection) or "chunked"."""

    def render(self, head: bytes, port: int) -> bytes:
        if not self.honest:
            return self.data.replace(PORT, str(port).encode())
        asked = _RANGE.search(head)
        start = int(asked.group(1)) if asked else 0
        if (asked is None or start >= len(self.data)) and self.framing == "chunked":
            pieces = [self.data[n : n + 1000] for n in range(0, len(self.data), 1000)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
            chunked = [*_PLAIN, b"Transfer-Encoding: chunked"]
            return _response(b"HTTP/1.1 200 OK", chunked, body + b"0\r\n\r\n", length=False)
        if asked is None or start >= len(self.data):
            length = self.framing == "length"
            return _response(b"HTTP/1.1 200 OK", _PLAIN, self.data, length=length)
        rest = self.data[start:]
        ranged = b"Content-Range: bytes %d-%d/%d" % (start, len(self.data) - 1, len(self.data))
        return _response(b"HTTP/1.1 206 Partial Content", [*_PLAIN, ranged], rest)


_PLAIN = [b'ETag: "v1"', b"Connection: close"]


def _response(status: bytes, headers: list[bytes], body: bytes, *, length: bool = True) -> bytes:
    lines = [status, *headers, *([b"Content-Length: %d" % len(body)] if length else [])]
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


class _RawServer:
    """A TCP server on 127.0.0.1 answering each connection with the next scripted answer
    (none left: it closes without a word). One thread per connection, each bounded."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._answers: deque[_Answer] = deque()
        self.heads: list[bytes] = []
        """The head of every request received since the last :meth:`script`."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def url(self, path: str = "/list.xml") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *answers: _Answer) -> None:
        with self._lock:
            self._answers = deque(answers)
            self.heads = []

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(1.0)
            try:
                head = _read_head(connection)
                with self._lock:
                    self.heads.append(head)
                    answer = self._answers.popleft() if self._answers else None
                if answer is None:
                    return
                data = answer.render(head, self.port)
                cut = len(data) if answer.pause_at is None else answer.pause_at
                connection.sendall(data[:cut])
                if self._stop.wait(answer.stall):
                    return
                connection.sendall(data[cut:])
                connection.shutdown(socket.SHUT_WR)
            except OSError:
                return  # the client gave up first


def _read_head(connection: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        piece = connection.recv(65536)
        if not piece:
            break
        head += piece
    return head


class _Loopback(AbstractResolver):
    """Answers every name with 127.0.0.1: a Location may name any host, none is looked up."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_RawServer]:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    raw = _RawServer()
    try:
        yield raw
    finally:
        raw.close()


# -- calls -------------------------------------------------------------------------------


async def _bounded(call: Awaitable[T]) -> T | VmicError:
    """The result of ``call`` or the vmic error it raised; anything else fails the test."""
    try:
        async with asyncio.timeout(HANG) as timer:
            return await call
    except VmicError as error:
        return error
    except TimeoutError:
        if timer.expired():
            pytest.fail(f"hung for {HANG} s")
        raise


def _fetch_list(url: str, validators: Validators | None = None) -> ListFetch | VmicError:
    async def run() -> ListFetch | VmicError:
        async with Fetcher(limits=LIMITS, resolver=_Loopback()) as fetcher:
            return await _bounded(fetcher.fetch_list(url, validators=validators))

    return asyncio.run(run())


def _download(url: str, partial: Path, payload: bytes) -> VmicError | None:
    digest = hashlib.sha512(payload).hexdigest()

    async def run() -> VmicError | None:
        async with Fetcher(limits=LIMITS, resolver=_Loopback()) as fetcher:
            return await _bounded(
                fetcher.download(url, partial=partial, size=len(payload), sha512=digest)
            )

    return asyncio.run(run())


def _check_list(got: ListFetch | VmicError, *, honest: bool, payload: bytes) -> None:
    if honest:
        assert isinstance(got, ListFetch), got
        assert (got.body, got.not_modified) == (payload, False)
    elif isinstance(got, ListFetch):
        assert len(got.body) <= LIMITS.max_list_bytes
        assert not (got.not_modified and got.body)


def _check_download(
    error: VmicError | None, *, honest: bool, partial: Path, payload: bytes, url: str
) -> None:
    """Success: the partial holds exactly the payload, alone. Failure: at most a partial
    shorter than the payload with the sidecar naming this URL (kept for resume), or nothing;
    never anything in the cache or elsewhere in the site's folder."""
    site = partial.parent.parent
    assert not any((site / "images").iterdir()), "a file in the cache"
    assert {p.parent for p in site.rglob("*") if p.is_file()} <= {partial.parent}
    left = {p.name for p in partial.parent.iterdir()}
    if honest:
        assert error is None, error
    if error is None:
        assert left == {partial.name}
        assert partial.read_bytes() == payload
        return
    assert left <= {partial.name, sidecar(partial).name}, left
    if partial.name in left:
        assert sidecar(partial).name in left, "a partial kept without what resumes it"
        assert partial.stat().st_size < len(payload)
        assert json.loads(sidecar(partial).read_bytes())["url"] == url


def _partial(tmp_path: Path) -> Path:
    """A partial file in a fresh site folder for one example (``tmp_path`` is shared by all
    of them), beside an empty cache; the caller installs into the cache only on success."""
    site = Path(tempfile.mkdtemp(dir=tmp_path))
    (site / "partial").mkdir()
    (site / "images").mkdir()
    return site / "partial" / "image"


# -- strategies --------------------------------------------------------------------------

_CODES = (100, 101, 103, 199, 201, 204, 226, 299, 300, 301, 302, 303, 304, 305, 307, 308)
_ODD_CODES = (399, 400, 404, 416, 429, 500, 503, 599, 0, 99, 1000, 1200, -1)
_STATUS = st.builds(
    lambda version, code, reason: version + b" " + code + reason,
    st.sampled_from([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2", b"HTTP/0.9", b"ICY", b"http/1.1"]),
    st.sampled_from(
        [b"%d" % code for code in (200,) * 8 + (206,) * 3 + _CODES + _ODD_CODES]
        + [b"2OO", b"", b"0200", b"20"]
    ),
    st.sampled_from(
        [b" OK"] * 8 + [b"", b" ", b" \xff\xfe reason", b" \x00\x7f", b" " + b"r" * 9000]
    ),
)
"""Mostly a status line that parses (200 most of all), so that the rest of the answer is read."""
_LOCATIONS = st.sampled_from(
    [
        b"/next",
        b"next",
        b"",
        b" ",
        b"?query",
        b"#fragment",
        b"//127.0.0.1:" + PORT + b"/next",
        b"http://127.0.0.1:" + PORT + b"/next",
        b"http://mirror.test:" + PORT + b"/next",
        b"https://127.0.0.1:" + PORT + b"/next",
        b"http://127.0.0.1:0/",
        b"http://127.0.0.1:1/",
        b"http://127.0.0.1:65536/",
        b"http://127.0.0.1:99999999999/",
        b"http://127.0.0.1:-1/",
        b"http://127.0.0.1:port/",
        b"http://127.1:" + PORT + b"/",
        b"http://2130706433:" + PORT + b"/",
        b"http://0.0.0.0:" + PORT + b"/",
        b"http://169.254.169.254/latest/meta-data/",
        b"http://[fe80::1]/",
        b"http://[::ffff:169.254.169.254]/",
        b"http://224.0.0.1/",
        b"http://[::1",
        b"http://[zz]/",
        b"http://user:pw@127.0.0.1:" + PORT + b"/",
        b"http://\xc3\xbc.test:" + PORT + b"/",
        b"http://\xff\xfe/",
        b"http://127.0.0.1:" + PORT + b"/\xff\x00",
        b"http://xn--zz.test:" + PORT + b"/",
        b"http://" + b"a" * 300 + b".test:" + PORT + b"/",
        b"http://127.0.0.1:" + PORT + b"/" + b"p" * 20000,
        b"file:///etc/passwd",
        b"ftp://127.0.0.1/image",
        b"data:text/plain,hello",
        b"javascript:alert(1)",
        b"gopher://127.0.0.1:" + PORT + b"/",
        b"http:/next",
        b"http:",
        b"\\\\127.0.0.1\\share",
    ]
)
_HEADERS = st.sampled_from(
    [
        b"Content-Encoding: gzip",
        b"Content-Encoding: br",
        b"Content-Encoding: deflate, gzip",
        b"Content-Encoding: identity",
        b"Content-Encoding: ",
        b"Content-Encoding: x-garbage\xff",
        b"Transfer-Encoding: gzip, chunked",
        b"Transfer-Encoding: identity",
        b"Transfer-Encoding: chunked, chunked",
        b"Transfer-Encoding: \xff",
        b"Content-Length: -1",
        b"Content-Length: 99999999999999999999999",
        b"Content-Length: abc",
        b"Content-Length: 0x10",
        b"Content-Length: 1, 2",
        b'ETag: "v1"',
        b'ETag: W/"weak"',
        b"ETag: unquoted",
        b'ETag: "\xff\xfe"',
        b'ETag: "\xc3\xa9t\xc3\xa9"',
        b'ETag: "\x01\x1b[2J"',
        b'ETag: "a\x7f"',
        b"ETag: ",
        b'ETag: "' + b"e" * 9000 + b'"',
        b"Last-Modified: Mon, 01 Jan 2024 00:00:00 -0000",
        b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT",
        b"Last-Modified: Mon, 01 Jan 0001 00:00:00 +2359",
        b"Last-Modified: Fri, 31 Dec 9999 23:59:59 -2359",
        b"Last-Modified: garbage",
        b"Last-Modified: \xff\x00",
        b"Date: Mon, 01 Jan 2024 01:00:00 GMT",
        b"Date: Mon, 01 Jan 2024 01:00:00 -0000",
        b"Date: Fri, 31 Dec 9999 23:59:59 +2359",
        b"Date: Mon, 99 Jan 2024 00:00:00 GMT",
        b"Date: \x01",
        b"Content-Range: bytes 0-0/1",
        b"Content-Range: bytes */*",
        b"Content-Range: garbage\xff",
        b"Location: /elsewhere",
        b"Connection: close",
        b"Connection: keep-alive",
        b"Connection: upgrade",
        b"Upgrade: websocket",
        b"Content-Type: text/xml; charset=\xff",
        b"no colon here",
        b"X-Ctl: a\x00b",
        b"X-Bin: \x80\xff\xfe",
        b"\xc3\xa9: a non-ASCII name",
        b"Bad Name: x",
        b": empty name",
        b"X-Fold: a\r\n continued",
        b"X-Fold: a\r\n\tfolded",
        b" leading: space",
        b"X-CR: a\rb",
        b"X-Long: " + b"l" * 20000,
    ]
)
_MANY = st.just([b"X-Many-%d: v" % n for n in range(200)])
_DATES = st.sampled_from(
    [
        b"Mon, 01 Jan 2024 00:00:00 GMT",
        b"Mon, 01 Jan 2024 01:00:00 GMT",
        b"Mon, 01 Jan 2024 00:00:00 -0000",
        b"Mon, 01 Jan 2024 00:00:00 +0130",
        b"Mon, 01 Jan 0001 00:00:00 +2359",
        b"Fri, 31 Dec 9999 23:59:59 -2359",
        b"Monday, 01-Jan-24 00:00:00 GMT",
        b"Mon Jan  1 00:00:00 2024",
        b"Mon, 99 Jan 2024 00:00:00 GMT",
        b"Mon, 01 Jan 2024 25:61:61 GMT",
        b"garbage",
        b"",
        b"\xff\x01",
    ]
)
_VALIDATORS = st.builds(
    lambda etag, modified, date: [
        b"ETag: " + etag,
        b"Last-Modified: " + modified,
        b"Date: " + date,
    ],
    st.sampled_from([b'"v1"', b'W/"v1"', b'"\xff"', b'"\xc3\xa9"', b'"\x01"', b'"a\x7f"', b""]),
    _DATES,
    _DATES,
)
"""The headers a list fetch keeps as validators, all together, each odd or not."""
_NOISE = st.binary(max_size=48)


@st.composite
def _body(draw: st.DrawFn, payload: bytes) -> bytes:
    """The payload, a piece of it, more than it, or other bytes."""
    kind = draw(st.sampled_from(["same", "same", "short", "long", "other", "empty", "big"]))
    if kind == "short":
        return payload[: draw(st.integers(0, max(len(payload) - 1, 0)))]
    if kind == "long":
        return payload + draw(st.binary(min_size=1, max_size=64))
    if kind == "other":
        return draw(st.binary(max_size=256))
    if kind == "big":
        return payload + b"b" * (LIMITS.max_list_bytes + 1)
    return b"" if kind == "empty" else payload


@st.composite
def _chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in chunks, each size line and ending possibly wrong, the last chunk maybe not."""
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    out = b""
    for piece in pieces:
        n = len(piece)
        size = draw(
            st.sampled_from([b"%x" % n] * 4 + [b"%X;ext=1" % n, b"%x" % (n + 1), b"%x" % (n // 2)])
            | st.sampled_from([b"zz", b"-1", b"f" * 24, b" %x" % n, b"", b"0x%x" % n])
        )
        end = draw(st.sampled_from([b"\r\n"] * 4 + [b"\n", b"", b"xx"]))
        out += size + b"\r\n" + piece + end
    last = draw(
        st.sampled_from(
            [b"0\r\n\r\n"] * 3 + [b"", b"0\r\n", b"0\r\nX-Trailer: \xff\r\n\r\n", b"0\r\n\r\nmore"]
        )
    )
    return out + last


@st.composite
def _structured(draw: st.DrawFn, payload: bytes) -> bytes:
    """A response with a status line, headers and a body, each odd or not."""
    status = draw(_STATUS)
    body = draw(_body(payload))
    framing = draw(st.sampled_from(["length", "length", "close", "chunked", "lie", "twice"]))
    headers: list[bytes] = []
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = draw(_chunked(body))
    elif framing == "lie":
        told = draw(st.sampled_from([len(payload), len(body) + 1, max(len(body) - 1, 0), 0]))
        headers.append(b"Content-Length: %d" % told)
    elif framing == "twice":
        headers += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1)]
    if draw(st.booleans()):
        headers.append(b"Location: " + draw(_LOCATIONS))
    headers += draw(st.lists(_HEADERS | _NOISE, max_size=4))
    if draw(st.booleans()):
        headers += draw(_VALIDATORS)
    if draw(st.integers(0, 9)) == 0:
        headers += draw(_MANY)
    draw(st.randoms()).shuffle(headers)
    eol = draw(st.sampled_from([b"\r\n"] * 5 + [b"\n"]))
    return b"".join(line + eol for line in [status, *headers]) + eol + body


@st.composite
def _redirect(draw: st.DrawFn) -> bytes:
    code = draw(st.sampled_from([301, 302, 303, 307, 308, 300, 305]))
    headers = [b"Location: " + draw(_LOCATIONS)] if draw(st.integers(0, 5)) else []
    headers += draw(st.lists(_HEADERS, max_size=2))
    return _response(b"HTTP/1.1 %d Moved" % code, headers, draw(st.binary(max_size=16)))


@st.composite
def _answer(draw: st.DrawFn, payload: bytes) -> _Answer:
    """Mostly responses that parse as HTTP (their odd parts then reach vmic), some noise."""
    kind = draw(st.sampled_from(["structured"] * 5 + ["redirect"] * 2 + ["noise", "nothing"]))
    if kind == "structured":
        data = draw(_structured(payload))
    elif kind == "redirect":
        data = draw(_redirect())
    else:
        data = draw(st.binary(max_size=512)) if kind == "noise" else b""
    stall = draw(st.sampled_from([0.0] * 6 + [0.05, 0.4]))
    pause_at = draw(st.none() | st.integers(0, len(data))) if stall else None
    return _Answer(data=data, pause_at=pause_at, stall=stall)


@st.composite
def _honest(draw: st.DrawFn, payload: bytes) -> list[_Answer]:
    """Up to two good redirects, then the payload as a file."""
    hops = []
    for _ in range(draw(st.integers(0, 2))):
        code = draw(st.sampled_from([301, 302, 303, 307, 308]))
        where = draw(
            st.sampled_from(
                [
                    b"/moved",
                    b"moved",
                    b"//127.0.0.1:" + PORT + b"/moved",
                    b"http://127.0.0.1:" + PORT + b"/moved",
                    b"http://mirror.test:" + PORT + b"/moved",
                ]
            )
        )
        headers = [b"Location: " + where, b"Connection: close"]
        hops.append(_Answer(data=_response(b"HTTP/1.1 %d Moved" % code, headers, b"")))
    framing = draw(st.sampled_from(["length", "close", "chunked"]))
    return [*hops, _Answer(data=payload, honest=True, framing=framing)]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Case:
    payload: bytes
    answers: list[_Answer]
    honest: bool


@st.composite
def _cases(draw: st.DrawFn) -> _Case:
    payload = draw(st.binary(min_size=1, max_size=3000))  # size 0 needs no download at all
    if draw(st.integers(0, 5)) == 0:
        return _Case(payload=payload, answers=draw(_honest(payload)), honest=True)
    answers = draw(st.lists(_answer(payload), min_size=1, max_size=4))
    return _Case(payload=payload, answers=answers, honest=False)


# -- generated ---------------------------------------------------------------------------


@pytest.mark.fuzz
@given(case=_cases())
def test_any_answer_ends_fetch_list_and_download_in_a_result_or_a_vmic_error(
    server: _RawServer, tmp_path: Path, case: _Case
) -> None:
    server.script(*case.answers)
    got = _fetch_list(server.url())
    event(f"fetch_list: {type(got).__name__}")
    _check_list(got, honest=case.honest, payload=case.payload)

    partial = _partial(tmp_path)
    url = server.url("/image.raw")
    server.script(*case.answers)
    error = _download(url, partial, case.payload)
    event(f"download: {type(error).__name__}")
    _check_download(error, honest=case.honest, partial=partial, payload=case.payload, url=url)


@pytest.mark.fuzz
@given(case=_cases(), payload=st.binary(min_size=1, max_size=2000))
def test_validators_from_any_answer_do_not_break_the_next_fetch(
    server: _RawServer, case: _Case, payload: bytes
) -> None:
    server.script(*case.answers)
    first = _fetch_list(server.url())
    if not isinstance(first, ListFetch):
        return
    server.script(_Answer(data=payload, honest=True))
    again = _fetch_list(server.url(), validators=first.validators)
    kept = [v for v in (first.validators.etag, first.validators.last_modified) if v is not None]
    event(f"validators kept: {len(kept)}, not sendable: {sum(not sendable(v) for v in kept)}")
    _check_list(again, honest=True, payload=payload)


@pytest.mark.fuzz
@given(
    case=_cases(),
    kept=st.floats(0.01, 0.99),
    validator=_VALIDATORS.map(lambda lines: lines[0].partition(b": ")[2])
    | _DATES
    | st.binary(max_size=32),
)
def test_a_resumed_download_ends_verified_or_resumable_after_any_answer(
    server: _RawServer, tmp_path: Path, case: _Case, kept: float, validator: bytes
) -> None:
    """The partial of an earlier run, with the validator its sidecar recorded from that
    run's answer (decoded as aiohttp decodes headers), meets any answer now."""
    url = server.url("/image.raw")
    partial = _partial(tmp_path)
    payload = case.payload + b"p" * 2  # room for a partial of at least one byte
    start = max(1, int(len(payload) * kept))
    partial.write_bytes(payload[:start])
    etag = validator.decode("utf-8", "surrogateescape")
    sidecar(partial).write_text(json.dumps({"url": url, "etag": etag, "last_modified": etag}))
    answers = [replace(case.answers[-1], data=payload)] if case.honest else case.answers
    server.script(*answers, *answers)  # a wrong 206 starts again once
    error = _download(url, partial, payload)
    event(f"resumed download: {type(error).__name__}")
    _check_download(error, honest=case.honest, partial=partial, payload=payload, url=url)


# -- what the generated cases found --------------------------------------------------------


def _ok(*headers: bytes, body: bytes = b"<feed/>") -> _Answer:
    return _Answer(data=_response(b"HTTP/1.1 200 OK", [*headers, b"Connection: close"], body))


@pytest.mark.parametrize(
    "etag", [b'"\x01\x1b[2J"', b'"a\x7f"', b'"\xff\xfe"'], ids=["control", "delete", "not-utf8"]
)
def test_a_validator_that_cannot_be_sent_back_is_not_sent(server: _RawServer, etag: bytes) -> None:
    """aiohttp refuses such a header value (ValueError): the next fetch would fail for ever."""
    server.script(_ok(b"ETag: " + etag))
    first = _fetch_list(server.url())
    assert isinstance(first, ListFetch)
    assert first.validators.etag is not None

    server.script(_ok())
    again = _fetch_list(server.url(), validators=first.validators)

    assert isinstance(again, ListFetch)
    assert again.body == b"<feed/>"
    assert b"if-none-match" not in server.heads[0].lower()


def test_a_resume_validator_that_cannot_be_sent_back_starts_the_download_again(
    server: _RawServer, tmp_path: Path
) -> None:
    """The sidecar keeps validators as the server sent them; one that aiohttp refuses to send
    (ValueError) would fail this download on every run."""
    url = server.url("/image.raw")
    partial = _partial(tmp_path)
    payload = b"0123456789" * 10
    partial.write_bytes(payload[:40])
    sidecar(partial).write_text(
        json.dumps({"url": url, "etag": '"\udcff\x01"', "last_modified": "\x7f"})
    )
    server.script(_Answer(data=payload, honest=True))

    error = _download(url, partial, payload)

    _check_download(error, honest=True, partial=partial, payload=payload, url=url)
    assert b"range:" not in server.heads[0].lower()


def test_a_last_modified_without_a_time_zone_is_not_a_validator(server: _RawServer) -> None:
    """``-0000`` parses to a naive datetime, which cannot be compared with an aware Date."""
    server.script(
        _ok(
            b"Last-Modified: Mon, 01 Jan 2024 00:00:00 -0000",
            b"Date: Mon, 01 Jan 2024 01:00:00 GMT",
        )
    )
    got = _fetch_list(server.url())

    assert isinstance(got, ListFetch)
    assert got.validators.last_modified is None


@pytest.mark.parametrize(
    "location", [b"http://[::1", b"a://[]/", b"http://[zz]/"], ids=["unclosed", "empty", "not-ip"]
)
def test_a_redirect_to_a_malformed_url_is_a_fetch_error(
    server: _RawServer, tmp_path: Path, location: bytes
) -> None:
    """urljoin raises ValueError on such a Location."""
    answer = _Answer(data=_response(b"HTTP/1.1 302 Found", [b"Location: " + location], b""))
    server.script(answer)
    assert isinstance(_fetch_list(server.url()), FetchError)

    url, partial = server.url("/image.raw"), _partial(tmp_path)
    server.script(answer)
    error = _download(url, partial, b"data")

    assert isinstance(error, FetchError)
    _check_download(error, honest=False, partial=partial, payload=b"data", url=url)
    assert not partial.exists()


@pytest.mark.parametrize("host", [b"xn--;", b"xn--", b"xn--zz.test"])
def test_a_redirect_to_a_host_that_is_not_idna_is_a_fetch_error(
    server: _RawServer, tmp_path: Path, host: bytes
) -> None:
    """yarl raises UnicodeError on such a host when aiohttp first reads it."""
    location = b"http://" + host + b":" + PORT + b"/elsewhere"
    answer = _Answer(data=_response(b"HTTP/1.1 301 Moved", [b"Location: " + location], b""))
    server.script(answer)
    got = _fetch_list(server.url())

    assert isinstance(got, FetchError)
    assert not isinstance(got, HTTPStatusError)
    assert len(server.heads) == 1  # the redirect was not followed

    url, partial = server.url("/image.raw"), _partial(tmp_path)
    server.script(answer)
    error = _download(url, partial, b"data")

    assert isinstance(error, FetchError)
    _check_download(error, honest=False, partial=partial, payload=b"data", url=url)
