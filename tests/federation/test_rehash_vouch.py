"""A file `vmic sync` hashed while downloading it is served without a second full read.

The sync stamps each file it installs with the file's identity (device,
inode, size, mtime, ctime) and the time of the hash; the server's guard counts
that hash as its own check while the file is still that very file and the
interval has not passed. Anything else (a file written to, replaced, a stamp
forged for another file, an old stamp, no stamp) is hashed before it is served,
and a bad file is still never served. Real files, a real cache, the real guard.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from federation.rehash import CacheGuard, NotServable, Verdict
from feeds.model import sha512_hex
from site_agent.cache import Cache
from site_agent.home import SiteHome

DATA = b"image bytes " * 50_000
SHA512 = sha512_hex(hashlib.sha512(DATA).hexdigest())


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    home = SiteHome(tmp_path / "site")
    home.create_directories()
    cache = Cache(home)
    partial = cache.partial(SHA512)
    partial.write_bytes(DATA)  # what a download leaves, its digest checked on the way
    cache.install(partial, SHA512)
    return cache


def guard_of(
    cache: Cache, *, interval: timedelta = timedelta(hours=24)
) -> tuple[CacheGuard, list[str]]:
    rotten: list[str] = []
    guard = CacheGuard(cache.path, interval=interval, on_rot=rotten.append, vouched=cache.vouched)
    return guard, rotten


def serve_once(guard: CacheGuard) -> bytes:
    async def run() -> bytes:
        opened = await guard.open(SHA512)
        try:
            return os.pread(opened.fd, len(DATA) + 1, 0)
        finally:
            opened.close()

    return asyncio.run(run())


def test_a_file_hashed_while_downloaded_is_served_without_a_second_read(cache: Cache) -> None:
    guard, rotten = guard_of(cache)

    assert serve_once(guard) == DATA
    assert serve_once(guard) == DATA

    assert (guard.checks, guard.vouches, rotten) == (0, 1, [])


def test_without_the_stamp_the_guard_hashes_first(cache: Cache) -> None:
    cache.forget_stamp(SHA512)
    guard, _rotten = guard_of(cache)

    assert serve_once(guard) == DATA

    assert (guard.checks, guard.vouches) == (1, 0)


def test_a_file_written_to_after_its_download_is_hashed_and_never_served(cache: Cache) -> None:
    path = cache.path(SHA512)
    path.chmod(0o644)
    with path.open("r+b") as file:  # same size, one byte changed: mtime and ctime move
        file.write(b"I")
    guard, rotten = guard_of(cache)

    with pytest.raises(NotServable) as caught:
        serve_once(guard)

    assert caught.value.verdict is Verdict.ROTTEN
    assert (guard.checks, guard.vouches, rotten) == (1, 0, [SHA512])


def test_a_file_put_in_its_place_is_hashed(cache: Cache, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_bytes(DATA)  # even the right bytes: another file, so checked
    other.replace(cache.path(SHA512))
    guard, _rotten = guard_of(cache)

    assert serve_once(guard) == DATA

    assert (guard.checks, guard.vouches) == (1, 0)


def test_a_stamp_copied_from_another_file_vouches_for_nothing(cache: Cache) -> None:
    stamp = cache.home.checked / SHA512
    data = json.loads(stamp.read_text())
    data["identity"][1] += 1  # another inode
    stamp.write_text(json.dumps(data))
    guard, _rotten = guard_of(cache)

    serve_once(guard)

    assert (guard.checks, guard.vouches) == (1, 0)


@pytest.mark.parametrize("garbage", [b"", b"{", b'{"identity": "x", "hashed_at": 1}', b"\xff"])
def test_an_unreadable_stamp_vouches_for_nothing(cache: Cache, garbage: bytes) -> None:
    (cache.home.checked / SHA512).write_bytes(garbage)
    guard, _rotten = guard_of(cache)

    assert serve_once(guard) == DATA

    assert (guard.checks, guard.vouches) == (1, 0)


def test_a_stamp_older_than_the_interval_is_not_enough(cache: Cache) -> None:
    guard, _rotten = guard_of(cache, interval=timedelta(0))

    serve_once(guard)

    assert (guard.checks, guard.vouches) == (1, 0)


def test_retiring_the_file_drops_its_stamp(cache: Cache) -> None:
    cache.retire(SHA512, now=datetime.now(UTC))

    assert not (cache.home.checked / SHA512).exists()
    assert cache.vouched(SHA512) is None
