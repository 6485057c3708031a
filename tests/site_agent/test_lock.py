"""One run at a time per site home: the flock on ``home/lock``.

THREATS 30 (two cron runs at once: the second stops at once and says who
holds the lock) and 31 (a run killed with ``kill -9`` leaves no stale lock;
the next run starts at once). The other holder is a real ``python``
process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys.errors import ConfigError, LockedError
from site_agent.lock import SiteLock

HOLDER = """
import sys, time
from pathlib import Path
from site_agent.lock import SiteLock
with SiteLock(Path(sys.argv[1]), purpose="vmic sync"):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "lock"


@pytest.fixture
def holder(lock_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that has taken the lock and sleeps while holding it."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "locked\n"  # EOF ("") if it died first
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_a_second_lock_on_the_same_file_is_refused_naming_the_holder(lock_path: Path) -> None:
    with SiteLock(lock_path, purpose="vmic sync"):
        held = lock_path.read_text()

        with pytest.raises(LockedError) as caught, SiteLock(lock_path, purpose="vmic approve"):
            pytest.fail("the second lock was granted")

        assert f"(pid {os.getpid()}, since " in caught.value.message
        assert "vmic sync" in caught.value.message
        assert "`vmic approve` did nothing" in caught.value.message
        assert lock_path.read_text() == held  # the refused run did not touch the holder's note


def test_the_lock_is_granted_again_once_the_first_is_released(lock_path: Path) -> None:
    with SiteLock(lock_path, purpose="vmic sync"):
        pass
    assert lock_path.read_text() == ""

    with SiteLock(lock_path, purpose="vmic approve"):
        assert lock_path.read_text().split()[0] == str(os.getpid())
        assert lock_path.read_text().endswith(" vmic approve\n")


def test_the_lock_is_released_when_the_block_raises(lock_path: Path) -> None:
    with pytest.raises(RuntimeError), SiteLock(lock_path, purpose="vmic sync"):
        raise RuntimeError

    with SiteLock(lock_path, purpose="vmic sync"):
        pass


def test_a_lock_held_by_another_process_is_refused_at_once(
    lock_path: Path, holder: subprocess.Popen[str]
) -> None:
    held = lock_path.read_text()
    started = time.monotonic()

    with pytest.raises(LockedError) as caught, SiteLock(lock_path, purpose="vmic sync"):
        pytest.fail("the lock was granted while another process holds it")

    assert time.monotonic() - started < 1  # refused, not waited for
    assert f"(pid {holder.pid}, since " in caught.value.message
    assert lock_path.read_text() == held
    assert holder.poll() is None


def test_the_lock_of_a_process_killed_with_sigkill_is_free_at_once(
    lock_path: Path, holder: subprocess.Popen[str]
) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    assert holder.wait(timeout=10) == -signal.SIGKILL
    assert lock_path.read_text().split()[0] == str(holder.pid)  # its note is stale, not a lock

    with SiteLock(lock_path, purpose="vmic sync"):
        assert lock_path.read_text().split()[0] == str(os.getpid())


def test_a_lock_in_a_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "no-such-home" / "lock"

    with (
        pytest.raises(ConfigError, match="cannot open the lock file"),
        SiteLock(path, purpose="vmic sync"),
    ):
        pytest.fail("locked a file in a missing folder")

    assert not path.parent.exists()
