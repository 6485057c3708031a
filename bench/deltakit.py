"""Pieces of the delta benchmark: an OS-like file tree and its package updates, the pair of
ext4 images made from it with ``mke2fs -d``, how much of one image is new at 4 KiB blocks,
a cProfile of a `vmic` command, and a static server that answers single Range requests and
counts what it sends, as fast as loopback allows or through a capped uplink.

Everything here is deterministic from a seed except the image layout itself, which follows
the order in which the host file system lists folders (``mke2fs -d`` copies in that order).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import math
import pstats
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from fedkit import (  # bench/fedkit.py
    PACED_PIECE,
    ROOT,
    Uplink,
    serve_app,
    spawned_server,
)
from fedkit import BenchError as ServerError

from feeds.blocks import BLOCK, ZERO_DIGEST, index_file

TEXT, LIBRARY, BINARY = "text", "library", "binary"
STARTUP_TIMEOUT = 60.0
PREFIX = "/files"
MB = 1_000_000
USED = 0.4
"""The share of the image the tree fills."""
_MKE2FS_TIMEOUT = 1800.0
_PROFILE_TIMEOUT = 900.0
_FOLD = bytes(i & 0x8F for i in range(256))
"""Maps bytes onto 16 values: stretches of machine code and tables compress, random ones not."""
_STRETCH = 16 * 1024
_DOCS = ("README", "NEWS", "COPYING", "AUTHORS", "changelog", "TODO")


# -- content ------------------------------------------------------------------------------------


def _vocabulary() -> tuple[list[str], list[float]]:
    rng = random.Random("vmic-bench-delta-words")  # noqa: S311 - test data, not secrets
    letters = "etaoinshrdlcumwfgypbvkjxqz_"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(6000)]
    weights = [1.0 / (rank + 8) for rank in range(len(words))]  # Zipf-like, as prose is
    return words, list(_accumulate(weights))


def _accumulate(values: list[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


_WORDS, _CUM_WEIGHTS = _vocabulary()


def _rng(*parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))  # noqa: S311 - test data, not secrets


def text(key: str, size: int) -> bytes:
    """``size`` bytes of prose-like lines (compresses about 2.5x, as documentation does)."""
    rng = _rng("text", key)
    words = rng.choices(_WORDS, cum_weights=_CUM_WEIGHTS, k=size // 5 + 16)
    lines, used, at = [], 0, 0
    while used < size:
        count = rng.randint(3, 14)
        line = " ".join(words[at : at + count])
        at = (at + count) % (len(words) - 14)
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines).encode()[:size]


def binary(key: str, size: int) -> bytes:
    """``size`` bytes of machine-code-like data: 16 KiB stretches of random bytes alternate
    with stretches folded onto 16 byte values (compresses about 1.5x, as binaries do)."""
    out = bytearray(hashlib.shake_128(f"binary:{key}".encode()).digest(size))
    for start in range(_STRETCH, size, 2 * _STRETCH):
        out[start : start + _STRETCH] = out[start : start + _STRETCH].translate(_FOLD)
    return bytes(out)


def content(kind: str, key: str, size: int) -> bytes:
    return text(key, size) if kind == TEXT else binary(key, size)


# -- the tree -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeFile:
    path: str
    """Relative to the tree's root."""
    kind: str
    package: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Tree:
    root: Path
    files: list[TreeFile]
    packages: int
    size: int
    """Bytes in all files."""

    def count(self, kind: str) -> int:
        return sum(1 for f in self.files if f.kind == kind)


def _size(rng: random.Random, typical: float, sigma: float, cap: int) -> int:
    return max(16, min(cap, round(rng.lognormvariate(math.log(typical), sigma))))


def _package(rng: random.Random, n: int, cap: int) -> list[tuple[TreeFile, int]]:
    """One package's files and sizes: docs, configuration, man page, modules, data,
    libraries and executables, in the proportions of a distribution's packages."""
    name = f"{rng.choice(_WORDS[:2000]).strip('_') or 'pkg'}{n}"
    files: list[tuple[str, str, int]] = [
        (f"usr/share/doc/{name}/{doc}", TEXT, _size(rng, 4000, 1.0, cap))
        for doc in _DOCS[: rng.randint(1, 4)]
    ]
    if rng.random() < 0.5:
        files.append((f"etc/{name}/{name}.conf", TEXT, _size(rng, 1500, 0.8, cap)))
    if rng.random() < 0.5:
        files.append((f"usr/share/man/man1/{name}.1", TEXT, _size(rng, 6000, 0.7, cap)))
    if rng.random() < 0.35:
        files += [
            (f"usr/lib/python3/site-packages/{name}/m{k}.py", TEXT, _size(rng, 5000, 1.1, cap))
            for k in range(rng.randint(5, 40))
        ]
    if rng.random() < 0.2:
        files += [
            (f"usr/share/{name}/data{k}.txt", TEXT, _size(rng, 2000, 1.2, cap))
            for k in range(rng.randint(3, 30))
        ]
    for k in range(rng.choice((0, 0, 1, 1, 2, 3))):
        lib = f"usr/lib64/lib{name}{k}.so.{rng.randint(0, 9)}"
        files.append((lib, LIBRARY, _size(rng, 250_000, 1.1, cap)))
    for k in range(rng.choice((0, 1, 1, 2))):
        big = rng.random() < 0.12
        size = _size(rng, 3_000_000, 0.7, cap) if big else _size(rng, 60_000, 1.0, cap)
        files.append((f"usr/bin/{name}-{k}", BINARY, size))
    return [(TreeFile(path=p, kind=kind, package=n), size) for p, kind, size in files]


def build_tree(root: Path, *, used: int, seed: int) -> Tree:
    """Packages' files under ``root`` until they hold about ``used`` bytes."""
    rng = _rng("tree", seed)
    cap = max(64 * 1024, used // 16)
    files: list[TreeFile] = []
    total, packages = 0, 0
    while total < used:
        for tree_file, size in _package(rng, packages, cap):
            path = root / tree_file.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content(tree_file.kind, f"{seed}:{tree_file.path}:1", size))
            files.append(tree_file)
            total += size
        packages += 1
    return Tree(root=root, files=files, packages=packages, size=total)


@dataclass(slots=True, kw_only=True)
class Change:
    """What a round of package updates did to the tree."""

    rewritten: int = 0
    patched: int = 0
    appended: int = 0
    added: int = 0
    deleted: int = 0
    written: int = 0
    """Bytes of the files written (their whole new contents), as a package manager writes them."""
    new: int = 0
    """Of those, bytes that are new content (rewrites, patches, appends, added files)."""

    @property
    def files(self) -> int:
        return self.rewritten + self.patched + self.appended + self.added + self.deleted


def _patch(kind: str, key: str, old: bytes, rng: random.Random) -> tuple[bytes, int]:
    """``old`` with a stretch in its middle replaced by one of about the same length."""
    size = len(old)
    start = rng.randrange(size // 4, max(size // 4 + 1, 3 * size // 4))
    length = min(size - start, rng.randint(16, max(16, size // (20 if kind == TEXT else 8))))
    piece = content(kind, key, max(1, length + rng.randint(-64, 96)))
    return old[:start] + piece + old[start + length :], len(piece)


def _update_file(
    root: Path, tree_file: TreeFile, rng: random.Random, change: Change, *, key: str, cap: int
) -> bool:
    """Delete, append to, patch or rewrite one file; False when it was deleted."""
    path = root / tree_file.path
    old = path.read_bytes()
    roll = rng.random()
    if roll < 0.04:
        path.unlink()
        change.deleted += 1
        return False
    if tree_file.kind == TEXT and roll < 0.35:
        piece = text(key, rng.randint(100, max(100, len(old) // 10)))
        data, new = old + b"\n" + piece, len(piece) + 1
        change.appended += 1
    elif roll < (0.7 if tree_file.kind == TEXT else 0.25):
        data, new = _patch(tree_file.kind, key, old, rng)
        change.patched += 1
    else:
        size = min(cap, max(16, round(len(old) * rng.uniform(0.9, 1.1))))
        data = content(tree_file.kind, key, size)
        new = len(data)
        change.rewritten += 1
    path.write_bytes(data)
    change.written += len(data)
    change.new += new
    return True


def change_tree(tree: Tree, *, fraction: float, seed: int) -> tuple[Tree, Change]:
    """Update about ``fraction`` of the files in place, whole packages at a time, the way
    package updates do: executables and libraries mostly rebuilt, text files patched or
    appended to, a few files deleted and a few added."""
    rng = _rng("change", seed)
    target = max(1, round(fraction * len(tree.files)))
    by_package: dict[int, list[TreeFile]] = {}
    for tree_file in tree.files:
        by_package.setdefault(tree_file.package, []).append(tree_file)
    order = list(by_package)
    rng.shuffle(order)
    added_count = max(1, round(0.05 * target))
    chosen: list[TreeFile] = []
    for package in order:
        if len(chosen) >= target - added_count:
            break
        chosen += by_package[package][: target - added_count - len(chosen)]
    change = Change()
    gone: set[str] = set()
    cap = max(64 * 1024, tree.size // 16)
    for tree_file in chosen:
        if not _update_file(
            tree.root, tree_file, rng, change, key=f"{seed}:{tree_file.path}:2", cap=cap
        ):
            gone.add(tree_file.path)
    files = [f for f in tree.files if f.path not in gone]
    packages = sorted({f.package for f in chosen} or {0})
    for k in range(added_count):
        package = rng.choice(packages)
        size = _size(rng, 5000, 1.1, cap)
        tree_file = TreeFile(
            path=f"usr/share/doc/pkg{package}-new/{k}.txt", kind=TEXT, package=package
        )
        path = tree.root / tree_file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text(f"{seed}:{tree_file.path}:2", size))
        files.append(tree_file)
        change.added += 1
        change.written += size
        change.new += size
    total = sum((tree.root / f.path).stat().st_size for f in files)
    return Tree(root=tree.root, files=files, packages=tree.packages, size=total), change


# -- images -------------------------------------------------------------------------------------


def find_mke2fs() -> str | None:
    return shutil.which("mke2fs") or shutil.which("mke2fs", path="/usr/sbin:/sbin")


def make_ext4(mke2fs: str, tree: Path, image: Path, size: int) -> None:
    """``mke2fs -t ext4 -b 4096 -d TREE -F IMAGE SIZE`` into a new file (4 KiB blocks even
    for small sizes, where mke2fs would otherwise choose 1 KiB)."""
    image.unlink(missing_ok=True)
    argv = [mke2fs, "-q", "-t", "ext4", "-b", str(BLOCK), "-d", str(tree), "-F", str(image)]
    subprocess.run(
        [*argv, f"{size // 1024}k"],
        check=True,
        capture_output=True,
        timeout=_MKE2FS_TIMEOUT,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockChange:
    size: int
    """Of the new image."""
    nonzero: int
    """Bytes in the new image's blocks that are not all zeros."""
    changed: int
    """Bytes in its non-zero blocks whose digest is not among the old image's."""
    index_size: int
    """Bytes of the new image's block index."""


def block_change(old: Path, new: Path) -> BlockChange:
    """How much of ``new`` is not in ``old`` as aligned 4 KiB blocks (:mod:`feeds.blocks`)."""
    before, after = index_file(old), index_file(new)
    have = {before.at(i) for i in range(before.count)}
    nonzero = changed = 0
    for i in range(after.count):
        found = after.at(i)
        if found == ZERO_DIGEST:
            continue
        nonzero += after.length(i)
        if found not in have:
            changed += after.length(i)
    return BlockChange(
        size=after.size, nonzero=nonzero, changed=changed, index_size=len(after.encode())
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Pair:
    """Two versions of an image and how the second differs."""

    files: int
    tree_bytes: int
    change: Change
    blocks: BlockChange


def make_pair(
    mke2fs: str, workdir: Path, served: Path, *, size: int, changed: float, seed: int
) -> Pair:
    """A tree filling ``USED`` of ``size``, ``served``/image-v1.raw of it; the tree changed
    (about ``changed`` of its files), ``served``/image-v2.raw of that; the tree removed.
    Prints what each step made and how long it took."""
    start = time.perf_counter()
    tree = build_tree(workdir / "tree", used=round(USED * size), seed=seed)
    print(
        f"tree: {len(tree.files):,} files in {tree.packages:,} packages, "
        f"{tree.size / MB:,.1f} MB ({tree.count(TEXT):,} text, {tree.count(LIBRARY):,} "
        f"libraries, {tree.count(BINARY):,} executables; seed {seed}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    start = time.perf_counter()
    make_ext4(mke2fs, tree.root, served / "image-v1.raw", size)
    print(f"image v1: mke2fs -t ext4 -d, {size:,} bytes, in {time.perf_counter() - start:.1f} s")
    files = len(tree.files)
    start = time.perf_counter()
    tree, change = change_tree(tree, fraction=changed, seed=seed)
    make_ext4(mke2fs, tree.root, served / "image-v2.raw", size)
    print(
        f"image v2: {change.files:,} files changed ({change.files / files:.1%}), mke2fs -d again "
        f"into a new file, in {time.perf_counter() - start:.1f} s"
    )
    shutil.rmtree(tree.root)
    start = time.perf_counter()
    blocks = block_change(served / "image-v1.raw", served / "image-v2.raw")
    print(f"block indexes of both images compared in {time.perf_counter() - start:.1f} s")
    return Pair(files=files, tree_bytes=tree.size, change=change, blocks=blocks)


def sha512_file(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


# -- profiling ----------------------------------------------------------------------------------


def profile_vmic(*args: object, out: Path) -> str:
    """``python -m federation ARGS`` under cProfile (its main thread; the profile written to
    ``out``): the functions of most cumulative time, then those of most own time."""
    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "federation", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        timeout=_PROFILE_TIMEOUT,
        check=True,
    )
    text = io.StringIO()
    stats = pstats.Stats(str(out), stream=text)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(30)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(15)
    return text.getvalue()


# -- the endorser's server: any file of one folder, single Ranges, counted (another process) ----


@dataclass(frozen=True, slots=True, kw_only=True)
class Served:
    """Body bytes of complete GET responses, by kind (``.atom`` lists, ``.blocks`` indexes,
    anything else an image), and how the responses went."""

    list_bytes: int = 0
    index_bytes: int = 0
    image_bytes: int = 0
    bodies: int = 0
    """Responses with a body (200 or 206), of any kind."""
    image_full: int = 0
    """Responses with a whole image (200)."""
    image_ranges: int = 0
    """Responses with a part of an image (206)."""
    not_modified: int = 0
    aborted: int = 0
    """Responses cut off by the client."""
    aborted_bytes: int = 0
    """Body bytes those sent before they were cut off, where known (paced responses only)."""

    @property
    def total(self) -> int:
        return self.list_bytes + self.index_bytes + self.image_bytes + self.aborted_bytes

    def __sub__(self, other: Served) -> Served:
        return Served(
            **{
                f.name: getattr(self, f.name) - getattr(other, f.name)
                for f in dataclasses.fields(self)
            }
        )


def _kind(name: str) -> str:
    if name.endswith(".atom"):
        return "list"
    return "index" if name.endswith(".blocks") else "image"


def _count_body(counts: dict[str, int], kind: str, status: int, length: int) -> None:
    counts[f"{kind}_bytes"] += length
    counts["bodies"] += 1
    if kind == "image":
        counts["image_full" if status == 200 else "image_ranges"] += 1


class _CountedFile(web.FileResponse):
    """A static file (sendfile; Range and conditional GETs as aiohttp answers them) whose
    body bytes are counted once they were sent."""

    def __init__(self, path: Path, counts: dict[str, int]) -> None:
        super().__init__(path)
        self._kind = _kind(path.name)
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
            _count_body(self._counts, self._kind, self.status, self.content_length or 0)
        return writer


def _wanted(request: web.Request, size: int) -> tuple[int, int] | None:
    """The (start, count) a GET asks for, as aiohttp's FileResponse reads a single Range
    (a suffix, an open end, an end past the file); None when it cannot be satisfied."""
    if hdrs.RANGE not in request.headers:
        return 0, size
    try:
        rng = request.http_range  # ValueError: malformed, several ranges, start after end
    except ValueError:
        return None
    start, end = rng.start, rng.stop
    if start is not None and start < 0 and end is None:
        start = max(0, start + size)
        return start, size - start
    start = start or 0
    if start >= size:
        return None
    return start, min(size if end is None else end, size) - start


async def _paced_file(
    request: web.Request, path: Path, uplink: Uplink, counts: dict[str, int]
) -> web.StreamResponse:
    """An image or index through the capped uplink, whole (200) or one Range of it (206),
    in pieces of ``PACED_PIECE`` bytes; the bytes of a response cut off are counted too."""
    st = path.stat()
    size = st.st_size
    wanted = _wanted(request, size)
    if wanted is None:
        return web.Response(status=416, headers={hdrs.CONTENT_RANGE: f"bytes */{size}"})
    start, count = wanted
    partial = hdrs.RANGE in request.headers
    response = web.StreamResponse(status=206 if partial else 200)
    response.content_length = count
    response.content_type = "application/octet-stream"
    response.etag = f"{st.st_mtime_ns:x}-{st.st_size:x}"
    response.last_modified = st.st_mtime
    response.headers[hdrs.ACCEPT_RANGES] = "bytes"
    if partial:
        response.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{start + count - 1}/{size}"
    kind, sent = _kind(path.name), 0
    try:
        await response.prepare(request)
        if request.method == "GET":
            with path.open("rb") as handle:
                handle.seek(start)
                while sent < count:
                    piece = handle.read(min(PACED_PIECE, count - sent))
                    if not piece:
                        break  # the file shrank: the client sees a short body
                    await uplink.take(len(piece))
                    await response.write(piece)
                    sent += len(piece)
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError) as exc:
        counts["aborted"] += 1
        counts["aborted_bytes"] += sent
        if isinstance(exc, asyncio.CancelledError):
            raise
        return response  # the client went away: aiohttp closes the connection quietly
    if request.method == "GET":
        _count_body(counts, kind, response.status, count)
    return response


def _server_process(directory: str, conn: Connection) -> None:
    asyncio.run(_server_async(Path(directory), conn))


async def _server_async(directory: Path, conn: Connection) -> None:
    counts = {f.name: 0 for f in dataclasses.fields(Served)}
    uplink: Uplink | None = None

    async def handler(request: web.Request) -> web.StreamResponse:
        path = directory / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound
        if uplink is not None and _kind(path.name) != "list":
            return await _paced_file(request, path, uplink, counts)
        return _CountedFile(path, counts)

    def answer(message: object) -> object:
        nonlocal uplink
        if isinstance(message, tuple):  # ("rate", bytes a second or None)
            uplink = None if message[1] is None else Uplink(float(message[1]))
            return message[1]
        return dict(counts)

    app = web.Application()
    app.router.add_get(PREFIX + "/{name}", handler)  # one path segment: no way out of the folder
    await serve_app(app, conn, answer)


@dataclass(frozen=True, slots=True, kw_only=True)
class CountingServer:
    base: str
    conn: Connection

    def _ask(self, message: object, what: str) -> object:
        try:
            self.conn.send(message)
            if self.conn.poll(STARTUP_TIMEOUT):
                return self.conn.recv()
        except EOFError:
            pass
        raise ServerError(f"the endorser's server did not {what}")

    def served(self) -> Served:
        counts = self._ask("counts", "report its counts")
        if not isinstance(counts, dict):
            raise ServerError("the endorser's server did not report its counts")
        return Served(**counts)

    def cap(self, rate: float | None) -> None:
        """From now on, send image and index bodies (not lists) through one uplink of
        ``rate`` bytes a second shared by all responses; None: as fast as loopback allows."""
        if self._ask(("rate", rate), "take its new rate") != rate:
            raise ServerError("the endorser's server did not take its new rate")


@contextlib.contextmanager
def counting_server(directory: Path) -> Iterator[CountingServer]:
    """Serve the files of ``directory`` on 127.0.0.1 from a spawned process."""
    with spawned_server(_server_process, str(directory)) as (port, _pid, conn):
        yield CountingServer(base=f"http://127.0.0.1:{port}{PREFIX}", conn=conn)
