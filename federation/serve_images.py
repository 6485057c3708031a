"""`GET/HEAD /images/sha512/<hex>`: image bytes by content address, with single ranges.

Nothing from the URL reaches the filesystem until it passed
:func:`feeds.model.sha512_hex` (128 lower-case hex digits), and a file is
served only while the store says an image with that digest is
``available`` (not withdrawn, expired, refused or merely left in the cache).
:class:`federation.rehash.CacheGuard` opens the file (no symlinks, regular
files only) and re-hashes it when due; a file that fails is quarantined and
the request gets 503, later ones 404.

Ranges (RFC 9110 §14): one ``bytes=`` range (first-last, first-, or a suffix
-N) gets 206 with Content-Range; a range that starts past the end gets 416;
several ranges, other units or bad syntax are ignored (200 with the whole
file), as the RFC allows. ``If-Range`` must carry the strong ETag, which is
the digest itself, so it never changes while the URL serves anything.
Whether a digest is available is asked of the store once per change of it
(:class:`federation.serve_state.StoreMemo`). A client that goes away in the
middle of a body is one line in the log (INFO), not a traceback.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web

from federation.rehash import CacheGuard, NotServable, OpenFile, Verdict
from federation.serve_state import Counters, log, state_of
from feeds.blocks import BLOCK, DIGEST, HEADER, MAGIC, index_size
from feeds.model import Sha512Hex, sha512_hex
from keys.errors import ListFormatError

_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int
    """Inclusive, as in Content-Range."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class UnsatisfiableRange(Exception):  # noqa: N818 - an HTTP outcome (416), not a program error
    """No byte of the file is in the range asked for."""


def parse_range(header: str, size: int) -> ByteRange | None:
    """The single range asked for; None means "send the whole file".

    Raises UnsatisfiableRange for a range that selects nothing (416).
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None  # several ranges, another unit, or bad syntax: ignored
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise UnsatisfiableRange
        return ByteRange(max(0, size - count), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid, so ignored
    if start >= size:
        raise UnsatisfiableRange
    return ByteRange(start, min(end, size - 1))


def _etag(sha512: str) -> str:
    return f'"{sha512}"'


def _base_headers(sha512: str) -> dict[str, str]:
    return {
        hdrs.ETAG: _etag(sha512),
        hdrs.ACCEPT_RANGES: "bytes",
        hdrs.CACHE_CONTROL: "no-cache",
    }


def _not_modified(request: web.Request, sha512: str) -> bool:
    tags = request.if_none_match
    return bool(tags) and any(t.value in ("*", sha512) for t in tags or ())


def _range_applies(request: web.Request, sha512: str) -> bool:
    """If-Range: only our strong ETag keeps the range (we send no Last-Modified)."""
    value = request.headers.get(hdrs.IF_RANGE)
    return value is None or value.strip() == _etag(sha512)


async def _available(request: web.Request) -> Sha512Hex:
    """The digest the URL names, checked, of an image available here; 404 otherwise."""
    try:
        sha512 = sha512_hex(request.match_info["hex"])
    except ListFormatError:
        raise web.HTTPNotFound from None
    if not await state_of(request).available.get(sha512):
        raise web.HTTPNotFound
    return sha512


async def image_bytes(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    sha512 = await _available(request)
    return await serve_checked(
        request,
        state.guard,
        state.counters,
        sha512,
        rotten="503: the cached file failed its integrity check and was quarantined\n",
    )


async def block_index(request: web.Request) -> web.StreamResponse:
    """The block index this site keeps of an available image (SCHEMA §13), with ranges.

    It is served as it is kept, once its header and length are those of an index (no
    symlink, a regular file): a client checks it against the size and SHA-512 the
    endorser's signed entry gives it before using it, as it checks image bytes."""
    state = state_of(request)
    sha512 = await _available(request)
    path = state.home.blocks / sha512
    if not await asyncio.to_thread(_looks_like_an_index, path):
        raise web.HTTPNotFound
    return web.FileResponse(
        path, headers={hdrs.CACHE_CONTROL: "no-cache", hdrs.CONTENT_TYPE: OCTET_STREAM}
    )


OCTET_STREAM = "application/octet-stream"


def _looks_like_an_index(path: Path) -> bool:
    """A regular file (not a link) with an index's header and exactly its length."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        head = os.pread(fd, HEADER.size, 0)
    except OSError:
        return False
    finally:
        os.close(fd)
    if len(head) != HEADER.size:
        return False
    magic, block, digest, size = HEADER.unpack(head)
    return (magic, block, digest) == (MAGIC, BLOCK, DIGEST) and st.st_size == index_size(size)


async def serve_checked(
    request: web.Request,
    guard: CacheGuard,
    counters: Counters,
    sha512: Sha512Hex,
    *,
    rotten: str,
) -> web.StreamResponse:
    """Open the file of ``sha512`` through the re-hash guard and send it; 404 when there is
    none, 503 (with ``rotten``) when it failed its check."""
    try:
        opened = await guard.open(sha512)
    except NotServable as exc:
        if exc.verdict is Verdict.MISSING:
            raise web.HTTPNotFound from None
        raise web.HTTPServiceUnavailable(text=rotten) from None
    try:
        return await send_file(request, counters, sha512, opened)
    finally:
        opened.close()


async def send_file(
    request: web.Request, counters: Counters, sha512: Sha512Hex, opened: OpenFile
) -> web.StreamResponse:
    """Answer a GET or HEAD for a checked file: 304, 416, 206 with one range, or 200."""
    headers = _base_headers(sha512)
    if _not_modified(request, sha512):
        return web.Response(status=304, headers=headers)
    size = opened.size
    wanted: ByteRange | None = None
    if hdrs.RANGE in request.headers and _range_applies(request, sha512):
        try:
            wanted = parse_range(request.headers[hdrs.RANGE], size)
        except UnsatisfiableRange:
            return web.Response(
                status=416, headers={**headers, hdrs.CONTENT_RANGE: f"bytes */{size}"}
            )
    response = web.StreamResponse(status=200 if wanted is None else 206, headers=headers)
    response.content_type = "application/octet-stream"
    if wanted is None:
        start, length = 0, size
    else:
        start, length = wanted.start, wanted.length
        response.headers[hdrs.CONTENT_RANGE] = f"bytes {wanted.start}-{wanted.end}/{size}"
    response.content_length = length
    await response.prepare(request)
    if request.method == hdrs.METH_HEAD:
        await response.write_eof()
        return response
    transport = request.transport
    if transport is None:
        return _went_away(request, response, sha512, 0, length)
    # The checked file itself (a duplicate of its descriptor), sent by the kernel
    # (sendfile) where the transport allows it; asyncio falls back to reads under TLS.
    with os.fdopen(os.dup(opened.fd), "rb") as handle:
        try:
            sent = await asyncio.get_running_loop().sendfile(transport, handle, start, length)
        except ConnectionError:
            return _went_away(request, response, sha512, handle.tell() - start, length)
    if sent != length:  # cannot happen for a checked file; never end a short body as whole
        raise OSError(f"cache file {sha512[:16]}... shrank while being served")
    counters.bytes_served += sent
    try:
        await response.write_eof()
    except ConnectionError:
        return _went_away(request, response, sha512, sent, length)
    return response


def _went_away(
    request: web.Request, response: web.StreamResponse, sha512: str, sent: int, length: int
) -> web.StreamResponse:
    """A client that disconnected mid-body: one line in the log, no traceback; the
    connection is closed (its response cannot be finished)."""
    log.info(
        "%s went away during %s /images/sha512/%s... (about %d of %d bytes sent)",
        request.remote or "a client",
        request.method,
        sha512[:16],
        max(sent, 0),
        length,
    )
    response.force_close()
    if request.transport is not None:
        request.transport.close()
    return response
