"""One run at a time per site home: an exclusive, non-blocking lock on ``home/lock``.

The lock is an ``flock`` on an open file, so the kernel releases it when the
holding process ends, however it ends (``kill -9`` included): there is no
stale lock to clean up. The holder writes its PID and start time into the
file so that the refused run can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from keys.errors import ConfigError, LockedError


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """The run that holds a site's lock, as it wrote itself into the lock file."""

    pid: int
    since: datetime
    purpose: str

    def describe(self, now: datetime) -> str:
        minutes = max(int((now - self.since).total_seconds() // 60), 0)
        return (
            f"pid {self.pid}, since {self.since:%Y-%m-%dT%H:%M:%SZ}, running for {minutes} min: "
            f"{self.purpose}"
        )


def holder(path: Path) -> Holder | None:
    """Who holds the lock at ``path``, read without taking it (so a run starting meanwhile is
    never turned away); None when free, or when the writer is gone (killed: the kernel
    released its lock)."""
    try:
        with path.open("rb") as file:
            found = _parse_holder(file.read(200))
    except OSError:
        return None
    if found is None:
        return None
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return found


def _parse_holder(data: bytes) -> Holder | None:
    words = data.decode("utf-8", errors="replace").split()
    if len(words) < 3 or not words[0].isdigit():
        return None
    try:
        since = datetime.strptime(words[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return Holder(pid=int(words[0]), since=since, purpose=" ".join(words[2:]))


class SiteLock:
    def __init__(self, path: Path, *, purpose: str) -> None:
        self.path = path
        self.purpose = purpose
        self._fd: int | None = None

    def __enter__(self) -> SiteLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise ConfigError(f"cannot open the lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            try:
                other = _parse_holder(os.pread(fd, 200, 0))
            except OSError:
                other = None
            os.close(fd)
            raise _locked(self.path, self.purpose, other) from exc
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"cannot lock {self.path}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.write(fd, f"{os.getpid()} {started} {self.purpose}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _locked(path: Path, purpose: str, other: Holder | None) -> LockedError:
    now = datetime.now(UTC)
    who = f" ({other.describe(now)})" if other else ""
    hint = (
        "this run did nothing; run it again once the other has finished "
        "(`vmic status` shows its downloads meanwhile; reading commands such as "
        "`vmic images` work now)"
    )
    if other is not None and other.purpose.startswith("vmic sync"):
        hint = (
            "a `vmic sync` may download images for a long time: "
            "`vmic status` shows how far its downloads are; run this again once it has "
            "finished (reading commands such as `vmic images` work now), or leave it to the "
            "next scheduled sync"
        )
    return LockedError(f"another vmic run holds {path}{who}; `{purpose}` did nothing", hint=hint)
