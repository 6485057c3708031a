"""Small file helpers shared by every package: reads, atomic writes, hashing.

`keys` is the bottom of the dependency graph, so these live here. An atomic
write goes to a temporary file in the same folder, is fsynced, renamed over
the target, and the folder is fsynced, so a crash leaves either the old
file or the new one, never a mix.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from keys.errors import ConfigError


def read_file(path: Path, *, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def read_regular(path: Path) -> bytes:
    """A regular file's bytes; anything else raises OSError "not a regular file".

    Opened without blocking and checked on the open descriptor: a FIFO dropped in a trust
    folder would block a read for ever, a device never end, and a check before the open
    could be raced."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            return stream.read()
    finally:
        os.close(fd)


def list_directory(directory: Path, *, what: str) -> list[Path]:
    """The entries of a folder, sorted; ConfigError if it cannot be listed."""
    try:
        return sorted(directory.iterdir())
    except OSError as exc:
        raise ConfigError(f"cannot list {what} {directory}: {exc.strerror}") from exc


def make_folder(path: Path) -> None:
    """Make a folder and its parents (ConfigError naming it if it cannot be made)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the folder {path}: {exc.strerror}") from exc


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk (it must exist)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


CHUNK = 1024 * 1024


def sha512_file(path: Path, *, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """SHA-512 (hex) and size of a file, read in chunks; ``progress`` gets each chunk's length."""
    digest = hashlib.sha512()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(len(chunk))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return digest.hexdigest(), size
