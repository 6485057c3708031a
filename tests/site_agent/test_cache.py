"""The content-addressed image cache, and `vmic cache verify` over a real site home.

THREATS 24 (cache files are named by their SHA-512; a name from metadata can
never point outside the cache) and 26 (a cached file that rots or is
tampered with is found by re-hashing and quarantined; its image goes back to
"approved" so that it is downloaded again). Files are real files in
``tmp_path``; the site home is made by ``vmic site init``.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keys.errors import LockedError, StoreError
from site_agent import admin
from site_agent.cache import Cache, CachedFile
from site_agent.home import SiteHome
from site_agent.lock import SiteLock
from site_agent.records import APPROVED, AVAILABLE, ImageRecord
from site_agent.store import Store

DATA = b"an image's bytes\n" * 4096
SHA = hashlib.sha512(DATA).hexdigest()


@pytest.fixture
def home(tmp_path: Path) -> SiteHome:
    home = SiteHome(tmp_path / "site")
    home.create_directories()
    return home


@pytest.fixture
def cache(home: SiteHome) -> Cache:
    return Cache(home)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _cached(cache: Cache, data: bytes) -> str:
    sha512 = hashlib.sha512(data).hexdigest()
    partial = cache.partial(sha512)
    partial.write_bytes(data)
    cache.install(partial, sha512)
    return sha512


def _flip_a_byte(path: Path, offset: int) -> None:
    path.chmod(0o644)
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


# -- install and naming -----------------------------------------------------------------


def test_install_moves_the_partial_into_place_readable_and_drops_the_resume_note(
    cache: Cache, home: SiteHome
) -> None:
    partial = cache.partial(SHA)
    partial.write_bytes(DATA)
    partial.chmod(0o600)
    sidecar = partial.with_name(partial.name + ".resume")
    sidecar.write_text('{"etag": "x", "offset": 4096}')

    target = cache.install(partial, SHA)

    assert target == home.images / SHA
    assert target.read_bytes() == DATA
    assert target.stat().st_mode & 0o777 == 0o644
    assert list(home.partial.iterdir()) == []
    assert cache.has(SHA, len(DATA))
    assert not cache.has(SHA, len(DATA) + 1)
    assert list(cache.files()) == [CachedFile(sha512=SHA, path=target, size=len(DATA))]


def test_install_of_a_missing_partial_is_a_store_error_and_installs_nothing(
    cache: Cache, home: SiteHome
) -> None:
    with pytest.raises(StoreError, match="cannot move"):
        cache.install(cache.partial(SHA), SHA)

    assert list(home.images.iterdir()) == []


@pytest.mark.parametrize(
    "name",
    [
        "../../../etc/passwd",
        "../" + "a" * 125,
        "a" * 127,
        "a" * 129,
        "A" * 128,
        "g" * 128,
        "a" * 127 + "/",
        "",
        "a" * 64 + "/../" + "a" * 60,
    ],
)
def test_a_name_that_is_not_a_sha512_digest_is_refused(
    cache: Cache, home: SiteHome, now: datetime, name: str
) -> None:
    with pytest.raises(StoreError, match="not a SHA-512 digest"):
        cache.path(name)
    with pytest.raises(StoreError, match="not a SHA-512 digest"):
        cache.partial(name)
    with pytest.raises(StoreError, match="not a SHA-512 digest"):
        cache.retire(name, now=now)

    assert list(home.images.iterdir()) == []
    assert list(home.expired.iterdir()) == []


def test_files_lists_only_digest_named_files(cache: Cache, home: SiteHome) -> None:
    sha512 = _cached(cache, DATA)
    (home.images / "README").write_text("not an image")
    (home.images / ("b" * 128)).mkdir()

    assert [f.sha512 for f in cache.files()] == [sha512]


# -- retire, quarantine, purge ------------------------------------------------------------


def test_retire_moves_the_file_to_expired_and_stamps_it_with_now(
    cache: Cache, home: SiteHome, now: datetime
) -> None:
    _cached(cache, DATA)
    moved_at = now - timedelta(days=3)

    target = cache.retire(SHA, now=moved_at)

    assert target == home.expired / f"{SHA}.{moved_at:%Y%m%dT%H%M%SZ}"
    assert target.read_bytes() == DATA
    assert target.stat().st_mtime == moved_at.timestamp()
    assert list(home.images.iterdir()) == []
    assert not cache.has(SHA, len(DATA))


def test_retiring_an_image_that_is_not_cached_does_nothing(
    cache: Cache, home: SiteHome, now: datetime
) -> None:
    assert cache.retire(SHA, now=now) is None
    assert list(home.expired.iterdir()) == []


def test_quarantine_moves_the_file_out_of_the_cache(
    cache: Cache, home: SiteHome, now: datetime
) -> None:
    _cached(cache, DATA)

    target = cache.quarantine(SHA, now=now)

    assert target is not None
    assert target.parent == home.quarantine
    assert target.read_bytes() == DATA
    assert list(home.images.iterdir()) == []
    assert list(home.expired.iterdir()) == []


def test_purge_expired_deletes_only_files_older_than_the_retention(
    cache: Cache, home: SiteHome, now: datetime
) -> None:
    old = _cached(cache, b"old image")
    recent = _cached(cache, b"recent image")
    old_path = cache.retire(old, now=now - timedelta(days=8))
    recent_path = cache.retire(recent, now=now - timedelta(days=6))
    assert old_path is not None
    assert recent_path is not None
    kept = _files(home.expired)
    del kept[old_path.name]

    removed = cache.purge_expired(retention=timedelta(days=7), now=now)

    assert removed == [old_path]
    assert _files(home.expired) == kept
    assert recent_path.exists()


def test_purge_expired_leaves_the_live_cache_and_subfolders_alone(
    cache: Cache, home: SiteHome, now: datetime
) -> None:
    _cached(cache, DATA)
    folder = home.expired / "kept-by-admin"
    folder.mkdir()
    stamp = (now - timedelta(days=30)).timestamp()
    os.utime(folder, (stamp, stamp))

    assert cache.purge_expired(retention=timedelta(days=7), now=now) == []
    assert folder.is_dir()
    assert _files(home.images) == {SHA: DATA}


def test_discard_partial_removes_the_partial_and_its_resume_note(
    cache: Cache, home: SiteHome
) -> None:
    partial = cache.partial(SHA)
    partial.write_bytes(DATA[:100])
    partial.with_name(partial.name + ".resume").write_text("{}")

    cache.discard_partial(SHA)
    cache.discard_partial(SHA)  # nothing left: still fine

    assert list(home.partial.iterdir()) == []


# -- re-hashing --------------------------------------------------------------------------


def test_rehash_accepts_intact_bytes(cache: Cache) -> None:
    _cached(cache, DATA)

    assert cache.rehash(SHA)


@pytest.mark.parametrize("offset", [0, len(DATA) // 2, len(DATA) - 1])
def test_rehash_detects_a_flipped_byte(cache: Cache, offset: int) -> None:
    _cached(cache, DATA)
    _flip_a_byte(cache.path(SHA), offset)

    assert not cache.rehash(SHA)


def test_rehash_detects_a_truncated_file(cache: Cache) -> None:
    _cached(cache, DATA)
    os.truncate(cache.path(SHA), len(DATA) - 1)

    assert not cache.rehash(SHA)


# -- vmic cache verify over a site home ---------------------------------------------------


IMAGE_ID = "00000000-0000-4000-8000-000000000001"
GOOD_ID = "00000000-0000-4000-8000-000000000002"


def _available(now: datetime, image_id: str, data: bytes) -> ImageRecord:
    return ImageRecord(
        image_id=image_id,
        list_id="6f2a7a52-2a36-4c57-9c52-3c1f5d1f3d51",
        subscription="egi",
        sha512=hashlib.sha512(data).hexdigest(),
        size=len(data),
        url=f"https://images.example.org/{image_id}.qcow2",
        title=f"Image {image_id[-1]}",
        state=AVAILABLE,
        shareable=True,
        reason=None,
        first_seen=now - timedelta(days=2),
        changed_at=now - timedelta(days=1),
        approved_at=now - timedelta(days=1),
        list_version=1,
        entry={"title": f"Image {image_id[-1]}", "size": len(data)},
    )


@pytest.fixture
def site(tmp_path: Path, now: datetime) -> tuple[SiteHome, ImageRecord, ImageRecord]:
    """A site home with two available images in the cache: one will be damaged, one not."""
    home = SiteHome(tmp_path / "site")
    admin.init_site(home, trust=tmp_path / "trust")
    damaged = _available(now, IMAGE_ID, DATA)
    good = _available(now, GOOD_ID, b"a good image\n" * 100)
    with Store.open(home.database) as store, store.atomic():
        store.put_image(damaged)
        store.put_image(good)
    cache = Cache(home)
    _cached(cache, DATA)
    _cached(cache, b"a good image\n" * 100)
    return home, damaged, good


def _images(home: SiteHome) -> dict[str, ImageRecord]:
    with Store.open(home.database) as store:
        return {i.image_id: i for i in store.images()}


def _state(home: SiteHome) -> dict[str, Any]:
    return {
        "images": _images(home),
        "cache": _files(home.images),
        "quarantine": _files(home.quarantine),
    }


def test_cache_verify_passes_intact_files_and_changes_nothing(
    site: tuple[SiteHome, ImageRecord, ImageRecord], now: datetime
) -> None:
    home, damaged, good = site
    before = _state(home)

    checks = admin.verify_cache(home, repair=True, now=now)

    assert sorted((c.sha512, c.ok, c.action) for c in checks) == sorted(
        [(damaged.sha512, True, "ok"), (good.sha512, True, "ok")]
    )
    assert {c.image.image_id for c in checks if c.image} == {IMAGE_ID, GOOD_ID}
    assert _state(home) == before


def test_cache_verify_reports_a_damaged_file_and_without_repair_changes_nothing(
    site: tuple[SiteHome, ImageRecord, ImageRecord], now: datetime
) -> None:
    home, damaged, good = site
    _flip_a_byte(home.images / damaged.sha512, 1234)
    before = _state(home)

    checks = admin.verify_cache(home, repair=False, now=now)

    by_sha = {c.sha512: c for c in checks}
    assert (by_sha[damaged.sha512].ok, by_sha[damaged.sha512].action) == (False, "found damaged")
    assert by_sha[damaged.sha512].image == damaged
    assert (by_sha[good.sha512].ok, by_sha[good.sha512].action) == (True, "ok")
    assert _state(home) == before


def test_cache_verify_with_repair_quarantines_a_damaged_file_and_wants_it_again(
    site: tuple[SiteHome, ImageRecord, ImageRecord], now: datetime
) -> None:
    home, damaged, good = site
    path = home.images / damaged.sha512
    _flip_a_byte(path, 1234)
    tampered = path.read_bytes()
    good_bytes = (home.images / good.sha512).read_bytes()

    checks = admin.verify_cache(home, repair=True, now=now)

    [check] = [c for c in checks if not c.ok]
    assert check.sha512 == damaged.sha512
    assert check.action == "quarantined; will be downloaded again"
    assert not path.exists()
    assert _files(home.quarantine) == {f"{damaged.sha512}.{now:%Y%m%dT%H%M%SZ}": tampered}
    assert _files(home.images) == {good.sha512: good_bytes}
    images = _images(home)
    assert images[IMAGE_ID].state == APPROVED
    assert images[IMAGE_ID].reason == "failed a re-hash; quarantined"
    assert images[IMAGE_ID].changed_at == now
    assert images[IMAGE_ID].first_seen == damaged.first_seen
    assert images[GOOD_ID] == good


def test_cache_verify_refuses_to_run_while_another_run_holds_the_lock(
    site: tuple[SiteHome, ImageRecord, ImageRecord], now: datetime
) -> None:
    home, damaged, _good = site
    _flip_a_byte(home.images / damaged.sha512, 0)
    before = _state(home)

    with SiteLock(home.lock, purpose="vmic sync"), pytest.raises(LockedError):
        admin.verify_cache(home, repair=True, now=now)

    assert _state(home) == before
