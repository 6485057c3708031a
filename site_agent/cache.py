"""The content-addressed image cache: verified bytes named by their SHA-512.

A file is in ``cache/images/sha512/<hex>`` only after its size and SHA-512
were checked against an endorser-signed list; it arrives there by an atomic
rename of a fsynced partial file, followed by a fsync of the folder. Nothing
here deletes an image silently: withdrawn images move to ``cache/expired``
(deleted after the configured retention), files that fail a re-hash move to
``cache/quarantine``. The same SHA-512 listed by two lists is stored once.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from feeds.blocks import BlockIndex, index_file, index_size, parse_index
from keys.errors import StoreError, VmicError
from keys.fileio import fsync_dir, read_regular, sha512_file, write_atomic
from site_agent.home import SiteHome

_HEX = re.compile(r"[0-9a-f]{128}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedFile:
    sha512: str
    path: Path
    size: int


class Cache:
    def __init__(self, home: SiteHome) -> None:
        self.home = home

    def path(self, sha512: str) -> Path:
        if not _HEX.fullmatch(sha512):  # names come from verified lists; check anyway
            raise StoreError(f"not a SHA-512 digest: {sha512[:20]!r}")
        return self.home.images / sha512

    def partial(self, sha512: str) -> Path:
        return self.home.partial / self.path(sha512).name

    def has(self, sha512: str, size: int) -> bool:
        try:
            return self.path(sha512).stat().st_size == size
        except FileNotFoundError:
            return False

    def install(self, partial: Path, sha512: str) -> Path:
        """Move a verified, fsynced partial file into place (atomic rename, folder fsync),
        and stamp it as hashed now (:meth:`vouched`)."""
        target = self.path(sha512)
        try:
            partial.chmod(0o644)
            partial.replace(target)
            fsync_dir(target.parent)
            partial.with_name(partial.name + ".resume").unlink(missing_ok=True)
            self._stamp(target, sha512)
        except OSError as exc:
            raise StoreError(f"cannot move {partial} into the cache: {exc.strerror}") from exc
        return target

    def _stamp(self, target: Path, sha512: str) -> None:
        """Record the identity of a file whose every byte was just hashed (while it was
        downloaded): a server may then skip hashing it again until its interval is up,
        as long as the file is still that very file (device, inode, size, times)."""
        st = target.lstat()
        stamp = {
            "identity": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns],
            "hashed_at": time.time(),
        }
        self.home.checked.mkdir(mode=0o750, parents=True, exist_ok=True)
        write_atomic(self.home.checked / sha512, json.dumps(stamp).encode(), mode=0o640)

    def vouched(self, sha512: str) -> tuple[tuple[int, ...], float] | None:
        """The identity of the cache file of ``sha512`` when it was hashed while downloaded,
        and when (Unix time); None without a readable stamp."""
        try:
            data = json.loads(read_regular(self.home.checked / self.path(sha512).name))
            identity = tuple(int(v) for v in data["identity"])
            return identity, float(data["hashed_at"])
        except (OSError, ValueError, KeyError, TypeError, VmicError):
            return None

    def forget_stamp(self, sha512: str) -> None:
        (self.home.checked / self.path(sha512).name).unlink(missing_ok=True)

    def retire(self, sha512: str, *, now: datetime) -> Path | None:
        """Move a cached image to cache/expired (kept for a while, then purged)."""
        return self._move(sha512, self.home.expired, now=now)

    def quarantine(self, sha512: str, *, now: datetime) -> Path | None:
        return self._move(sha512, self.home.quarantine, now=now)

    def _move(self, sha512: str, folder: Path, *, now: datetime) -> Path | None:
        self.forget_stamp(sha512)
        source = self.path(sha512)
        if not source.exists():
            return None
        target = folder / f"{sha512}.{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"
        try:
            source.replace(target)
            stamp = now.timestamp()
            os.utime(target, (stamp, stamp))  # the retention counts from the move
            fsync_dir(folder)
            fsync_dir(source.parent)
        except OSError as exc:
            raise StoreError(f"cannot move {source} to {folder}: {exc.strerror}") from exc
        return target

    # -- block indexes (site_agent.delta) -----------------------------------------------

    def held(self, sha512: str) -> Path | None:
        """A file with these bytes: the cached one, else the newest withdrawn copy."""
        cached = self.path(sha512)
        if cached.is_file():
            return cached
        copies = sorted(
            p for p in self.home.expired.glob(f"{sha512}.*") if p.is_file() and not p.is_symlink()
        )
        return copies[-1] if copies else None

    def load_index(self, sha512: str, size: int) -> BlockIndex | None:
        """The kept block index of the image ``sha512`` of ``size`` bytes; None when there is
        none or it cannot be used."""
        path = self.home.blocks / self.path(sha512).name
        try:
            if path.lstat().st_size != index_size(size):
                return None
            return parse_index(read_regular(path), image_size=size)
        except (OSError, VmicError):
            return None

    def keep_index(self, sha512: str, index: BlockIndex) -> None:
        """Keep an image's block index (a temporary file of its own, then a rename: two
        updates may index the same held image at once)."""
        target = self.home.blocks / self.path(sha512).name
        try:
            self.home.blocks.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.home.blocks, prefix=".index-")
            tmp = Path(name)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(index.encode())
                tmp.chmod(0o644)
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot keep the block index {target}: {exc.strerror}") from exc

    def make_index(self, sha512: str, path: Path) -> BlockIndex | None:
        """Index a held file (and keep the index); None when it cannot be read."""
        try:
            index = index_file(path)
        except VmicError:
            return None
        self.keep_index(sha512, index)
        return index

    def prune_indexes(self) -> None:
        """Forget the indexes of images this site no longer holds in any form."""
        if not self.home.blocks.is_dir():
            return
        for path in sorted(self.home.blocks.iterdir()):
            if not _HEX.fullmatch(path.name) or self.held(path.name) is None:
                path.unlink(missing_ok=True)

    def files(self) -> Iterator[CachedFile]:
        for path in sorted(self.home.images.iterdir()):
            if _HEX.fullmatch(path.name) and path.is_file():
                yield CachedFile(sha512=path.name, path=path, size=path.stat().st_size)

    def rehash(self, sha512: str) -> bool:
        """True when the cached file's bytes still hash to its name."""
        digest, _size = sha512_file(self.path(sha512))
        return digest == sha512

    def purge_expired(self, *, retention: timedelta, now: datetime) -> list[Path]:
        """Delete files in cache/expired that were moved there longer ago than ``retention``."""
        removed = []
        for path in sorted(self.home.expired.iterdir()):
            moved = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            if path.is_file() and now - moved > retention:
                path.unlink()
                removed.append(path)
        if removed:
            self.prune_indexes()
        return removed

    def purge(self, sha512: str, *, keep_cached: bool) -> int:
        """Delete every copy of these bytes: retired and quarantined files, a partial
        download, and (unless ``keep_cached``: another image runs on them) the cached file.
        Returns the bytes freed."""
        self.path(sha512)  # checks the name
        found = [
            path
            for folder in (self.home.expired, self.home.quarantine)
            for path in sorted(folder.iterdir())
            if path.name.startswith(f"{sha512}.") and path.is_file()
        ]
        partial = self.partial(sha512)
        found += [p for p in (partial, partial.with_name(partial.name + ".resume")) if p.exists()]
        if not keep_cached and self.path(sha512).exists():
            found.append(self.path(sha512))
            self.forget_stamp(sha512)
        freed = 0
        for path in found:
            try:
                size = path.stat().st_size
                path.unlink()
            except OSError as exc:
                raise StoreError(f"cannot delete {path}: {exc.strerror}") from exc
            freed += size
        for folder in {path.parent for path in found}:
            fsync_dir(folder)
        self.prune_indexes()
        return freed

    def discard_partial(self, sha512: str) -> None:
        partial = self.partial(sha512)
        partial.unlink(missing_ok=True)
        partial.with_name(partial.name + ".resume").unlink(missing_ok=True)
