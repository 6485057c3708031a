"""One run at a time per site home: an exclusive, non-blocking lock on ``home/lock``.

The lock is an ``flock`` on an open file, so the kernel releases it when the
holding process ends, however it ends (``kill -9`` included): there is no
stale lock to clean up. The holder writes its PID and start time into the
file so that the refused run can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from keys.errors import ConfigError, LockedError


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
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"another vmic run holds {self.path}{holder}; `{self.purpose}` did nothing"
            ) from exc
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


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", errors="replace").split()
    except OSError:
        return ""
    if len(text) >= 2:
        return (
            f" (pid {text[0]}, since {text[1]}{', ' + ' '.join(text[2:]) if len(text) > 2 else ''})"
        )
    return ""
