"""Images at a site: downloads, the cache, withdrawals, hooks, crashes and contention.

Real loopback servers, real `vmic sync` runs (in-process, and as processes
that are killed with SIGKILL), real files and SQLite. THREATS 19, 21-23,
26, 30-32, and the events and hooks of DESIGN §5.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import tomlkit

from federation.cli.common import ExitCode
from site_agent.lock import SiteLock
from tests.support.site import World, image_bytes, image_uuid


def configure(world: World, **network: object) -> None:
    """Change [network] settings of the site's config.toml."""
    doc = tomlkit.parse(world.home.config.read_text())
    table = doc["network"]
    assert isinstance(table, dict)
    for key, value in network.items():
        table[key] = value
    world.home.config.write_text(tomlkit.dumps(doc))


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def approved_site(world: World, *, images: tuple[int, ...] = (1, 2)) -> None:
    world.publish(version=1, images=images)
    assert world.subscribe(auto=True) == 0


def hook_script(tmp_path: Path, name: str, body: str) -> Path:
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


@contextmanager
def vmic_process(world: World, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`vmic ARGS --home HOME` as a separate process (killed if still running at the end)."""
    with subprocess.Popen(  # a fixed argument list, no shell
        [sys.executable, "-m", "federation", *args, "--home", str(world.home.root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=60)


def partial_size(world: World, n: int) -> int:
    partial = world.home.partial / sha512(image_bytes(n, world.image_sizes.get(n, 4096)))
    return partial.stat().st_size if partial.exists() else 0


def wait_for(condition: object, *, timeout: float = 20.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_approved_images_are_downloaded_checked_and_named_by_their_sha512(world: World) -> None:
    approved_site(world)

    assert world.vmic("sync") == 0

    assert set(world.states().values()) == {"available"}
    for n in (1, 2):
        cached = world.home.images / sha512(image_bytes(n))
        assert cached.read_bytes() == image_bytes(n)
    assert list(world.home.partial.iterdir()) == []


def test_held_images_are_not_downloaded(world: World) -> None:
    world.publish(version=1)
    assert world.subscribe() == 0

    assert world.vmic("sync") == 0

    assert set(world.states().values()) == {"new"}
    assert world.sim.requests_for("/images/img-1.raw") == []


def test_wrong_bytes_are_never_visible_in_the_cache(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """THREATS 19: a hash mismatch deletes the partial file; the image stays approved."""
    approved_site(world, images=(1,))
    world.sim.publish("/images/img-1.raw", image_bytes(99))
    before = world.snapshot()
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.PROBLEMS

    assert "not downloaded" in capsys.readouterr().err
    assert world.snapshot() == before
    assert world.states() == {image_uuid(1): "approved"}
    assert list(world.home.partial.iterdir()) == []


def test_a_stalled_download_does_not_hold_up_the_others(world: World) -> None:
    """THREATS 21: per-read timeout on one image; the other image still arrives."""
    configure(world, read_timeout_seconds=1, retries=0)
    approved_site(world)
    world.sim.fault("/images/img-1.raw", stall_after=1000)

    assert world.vmic("sync") == ExitCode.PROBLEMS

    assert world.states() == {image_uuid(1): "approved", image_uuid(2): "available"}
    world.sim.clear_faults()
    assert world.vmic("sync") == 0
    assert set(world.states().values()) == {"available"}


def test_the_same_bytes_listed_twice_are_downloaded_and_stored_once(world: World) -> None:
    one = world.image_entry(1)
    twin = replace(world.image_entry(2), sha512=one.sha512, size=one.size, url=one.url)
    world.publish(replace(world.make_list(version=1, images=()), entries=(one, twin)))
    assert world.subscribe(auto=True) == 0

    assert world.vmic("sync") == 0

    assert set(world.states().values()) == {"available"}
    assert len(list(world.home.images.iterdir())) == 1
    assert len(world.sim.requests_for("/images/img-1.raw")) == 1


def test_a_revoked_image_is_withdrawn_and_its_bytes_move_to_expired(world: World) -> None:
    approved_site(world)
    assert world.vmic("sync") == 0
    world.publish(version=2, images=(1,), revoked=(2,))

    assert world.vmic("sync") == 0

    assert world.states() == {image_uuid(1): "available", image_uuid(2): "revoked"}
    assert not (world.home.images / sha512(image_bytes(2))).exists()
    (moved,) = world.home.expired.iterdir()
    assert moved.name.startswith(sha512(image_bytes(2)))
    assert moved.read_bytes() == image_bytes(2)


def test_an_image_removed_from_the_list_is_withdrawn(world: World) -> None:
    approved_site(world)
    assert world.vmic("sync") == 0
    world.publish(version=2, images=(2,))

    assert world.vmic("sync") == 0

    assert world.states() == {image_uuid(1): "withdrawn", image_uuid(2): "available"}


def test_hooks_get_each_event_in_the_environment_and_on_stdin(world: World, tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    script = hook_script(
        tmp_path,
        "hook.sh",
        'printf "%s %s %s %s\\n" "$VMIC_EVENT" "$VMIC_IMAGE_ID" "$VMIC_STATE" "$VMIC_PATH"'
        f" >> {log}\n"
        f"cat >> {tmp_path / 'stdin.jsonl'}\necho >> {tmp_path / 'stdin.jsonl'}\n",
    )
    assert (
        world.vmic(
            "hooks",
            "add",
            "log",
            "--on",
            "image.available",
            "--on",
            "image.withdrawn",
            "--",
            str(script),
        )
        == 0
    )
    approved_site(world, images=(1,))

    assert world.vmic("sync") == 0
    world.publish(version=2, images=(), revoked=(1,))
    assert world.vmic("sync") == 0

    lines = log.read_text().splitlines()
    cached = world.home.images / sha512(image_bytes(1))
    assert lines == [
        f"image.available {image_uuid(1)} available {cached}",
        f"image.withdrawn {image_uuid(1)} revoked ",
    ]
    payloads = [json.loads(x) for x in (tmp_path / "stdin.jsonl").read_text().split("\n") if x]
    assert [p["type"] for p in payloads] == ["image.available", "image.withdrawn"]
    assert payloads[0]["data"]["sha512"] == sha512(image_bytes(1))


def test_a_failing_hook_is_retried_then_given_up_and_reported(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counter = tmp_path / "count"
    script = hook_script(
        tmp_path, "fail.sh", f"echo x >> {counter}\necho 'glance is down' >&2\nexit 3\n"
    )
    assert world.vmic("hooks", "add", "glance", "--on", "list.accepted", "--", str(script)) == 0
    doc = tomlkit.parse(world.home.config.read_text())
    events = doc["events"]
    assert isinstance(events, dict)
    events["max_attempts"] = 2
    world.home.config.write_text(tomlkit.dumps(doc))
    approved_site(world, images=(1,))
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.PROBLEMS
    assert "will retry" in capsys.readouterr().err
    assert world.vmic("sync") == ExitCode.PROBLEMS
    err = capsys.readouterr().err
    assert "gave up" in err
    assert "glance is down" in err
    assert world.vmic("sync") == 0
    assert counter.read_text().count("x") == 2


def test_a_site_already_locked_is_left_alone(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """THREATS 30, in-process: the second run exits at once, nothing changed."""
    approved_site(world)
    before = world.snapshot()
    capsys.readouterr()

    with SiteLock(world.home.lock, purpose="test"):
        assert world.vmic("sync") == ExitCode.LOCKED
        assert world.vmic("approve", image_uuid(1)) == ExitCode.LOCKED

    assert "another vmic run holds" in capsys.readouterr().err
    assert world.snapshot() == before


def test_two_sync_processes_at_once_the_second_exits_at_once(world: World) -> None:
    """THREATS 30 with real processes: the first is slowed by a dripping download."""
    world.image_sizes[1] = 4 * 1024 * 1024
    approved_site(world, images=(1,))
    world.sim.fault("/images/img-1.raw", drip=1024 * 1024)
    with vmic_process(world, "sync") as first:
        wait_for(lambda: partial_size(world, 1) > 0 or first.poll() is not None)
        assert first.poll() is None, "the first run ended before the second started"
        started = time.monotonic()
        second = subprocess.run(  # a fixed argument list, no shell
            [sys.executable, "-m", "federation", "sync", "--home", str(world.home.root)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == ExitCode.LOCKED
        assert b"another vmic run holds" in second.stderr
        assert time.monotonic() - started < 10
        assert first.wait(timeout=60) == 0
    assert world.states() == {image_uuid(1): "available"}


def test_a_sync_killed_mid_download_resumes_with_a_range_request(world: World) -> None:
    """THREATS 22: SIGKILL during a download; the next run resumes and verifies every byte."""
    size = world.image_sizes[1] = 4 * 1024 * 1024
    approved_site(world, images=(1,))
    world.sim.fault("/images/img-1.raw", drip=1024 * 1024)
    with vmic_process(world, "sync") as process:
        wait_for(lambda: partial_size(world, 1) > 0 or process.poll() is not None)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    kept = partial_size(world, 1)
    assert 0 < kept < size
    assert world.states() == {image_uuid(1): "approved"}
    world.sim.clear_faults()

    assert world.vmic("sync") == 0

    ranged = [r for r in world.sim.requests_for("/images/img-1.raw") if r.range]
    assert [r.range for r in ranged] == [f"bytes={kept}-"]
    assert ranged[0].status == 206
    assert ranged[0].if_range is not None
    assert (world.home.images / sha512(image_bytes(1, size))).read_bytes() == image_bytes(1, size)
    assert world.states() == {image_uuid(1): "available"}


def test_a_crash_between_install_and_commit_is_reconciled(world: World) -> None:
    """THREATS 31: bytes already in the cache are recorded; leftovers are cleaned."""
    approved_site(world, images=(1, 2))
    (world.home.images / sha512(image_bytes(1))).write_bytes(image_bytes(1))
    orphan_partial = world.home.partial / ("f" * 128)
    orphan_partial.write_bytes(b"half")
    stray = world.home.images / ("e" * 128)
    stray.write_bytes(b"not used by any image")

    assert world.vmic("sync") == 0

    assert world.sim.requests_for("/images/img-1.raw") == []
    assert set(world.states().values()) == {"available"}
    assert not orphan_partial.exists()
    assert not stray.exists()
    assert any(p.name.startswith("e" * 128) for p in world.home.expired.iterdir())


def test_an_available_image_whose_file_vanished_is_downloaded_again(world: World) -> None:
    approved_site(world, images=(1,))
    assert world.vmic("sync") == 0
    (world.home.images / sha512(image_bytes(1))).unlink()

    assert world.vmic("sync") == 0

    assert (world.home.images / sha512(image_bytes(1))).read_bytes() == image_bytes(1)
    assert len(world.sim.requests_for("/images/img-1.raw")) == 2


def test_cache_verify_finds_rot_and_repair_gets_the_image_again(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """THREATS 26: a cached file tampered with on disk is detected and quarantined."""
    approved_site(world, images=(1,))
    assert world.vmic("sync") == 0
    cached = world.home.images / sha512(image_bytes(1))
    cached.chmod(0o644)
    data = bytearray(cached.read_bytes())
    data[100] ^= 0xFF
    cached.write_bytes(bytes(data))

    assert world.vmic("cache", "verify") == ExitCode.INTEGRITY
    assert world.states() == {image_uuid(1): "available"}
    assert world.vmic("cache", "verify", "--repair") == 0
    assert world.states() == {image_uuid(1): "approved"}
    assert len(list(world.home.quarantine.iterdir())) == 1
    assert world.vmic("sync") == 0
    assert cached.read_bytes() == image_bytes(1)
    capsys.readouterr()


def test_a_truncated_database_stops_the_run_and_is_never_replaced(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """THREATS 32."""
    approved_site(world, images=(1,))
    for name in ("vmic.db-wal", "vmic.db-shm"):
        (world.home.root / name).unlink(missing_ok=True)
    data = world.home.database.read_bytes()
    world.home.database.write_bytes(data[: len(data) // 2])
    damaged = world.home.database.read_bytes()
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.STORE
    assert world.vmic("site", "init") == ExitCode.STORE

    assert "damaged" in capsys.readouterr().err
    assert world.home.database.read_bytes() == damaged


def test_a_missing_database_is_not_recreated_by_sync(world: World) -> None:
    approved_site(world, images=(1,))
    world.home.database.unlink()

    assert world.vmic("sync") == ExitCode.STORE
    assert world.vmic("site", "init") == ExitCode.CONFIG
    assert not world.home.database.exists()


@pytest.fixture
def small_partial_fs(world: World) -> list[str]:
    """A command prefix that runs vmic with a 1 MiB tmpfs over cache/partial (a full disk)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(  # a fixed argument list, no shell
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {world.home.partial}"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace: {probe.stderr.decode().strip()}")
    script = 'mount -t tmpfs -o size=1m tmpfs "$1" && shift && exec "$@"'
    return [unshare, "-rm", "sh", "-c", script, "sh", str(world.home.partial)]


def test_a_full_disk_leaves_no_partial_file_and_the_database_untouched(
    world: World, small_partial_fs: list[str]
) -> None:
    """THREATS 23: ENOSPC while downloading."""
    world.image_sizes[1] = 3 * 1024 * 1024
    configure(world, retries=0)
    approved_site(world, images=(1,))
    doc = tomlkit.parse(world.home.config.read_text())
    before = world.snapshot()
    env = dict(os.environ)

    result = subprocess.run(  # a fixed argument list, no shell
        [
            *small_partial_fs,
            sys.executable,
            "-m",
            "federation",
            "sync",
            "--home",
            str(world.home.root),
        ],
        capture_output=True,
        timeout=120,
        check=False,
        env=env,
    )

    assert result.returncode == ExitCode.PROBLEMS, result.stderr
    assert b"bytes free" in result.stderr
    assert world.snapshot() == before
    assert world.states() == {image_uuid(1): "approved"}
    assert list(world.home.partial.iterdir()) == []
    assert tomlkit.dumps(doc) == world.home.config.read_text()
