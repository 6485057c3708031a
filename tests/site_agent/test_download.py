"""Image downloads against real loopback servers: every line of THREATS 19-23 that concerns
the bytes, plus retries and redirects (24). Each failure test also checks what is left on
disk: a partial is either kept for resume (with its sidecar) or gone, never half-trusted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keys.errors import (
    DigestMismatchError,
    DiskFullError,
    FetchError,
    FetchTimeoutError,
    HTTPStatusError,
    SizeMismatchError,
)
from site_agent.download import sidecar
from site_agent.fetch import Fetcher
from tests.sim import Simulator
from tests.site_agent.netkit import (
    LIMITS,
    ONCE,
    download,
    image,
    namespaces_allowed,
    run_isolated,
    silent_server,
)

MiB = 1024 * 1024
SIZE = 4 * MiB
MODIFIED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[Simulator]:
    with Simulator(safety_timeout=10) as sim:
        yield sim


@pytest.fixture
def body(server: Simulator) -> tuple[bytes, str]:
    data, sha = image(SIZE)
    server.publish("/img.raw", data, last_modified=MODIFIED)
    return data, sha


@pytest.fixture
def partial(tmp_path: Path) -> Path:
    folder = tmp_path / "partial"
    folder.mkdir()
    return folder / "img"


def _get(server: Simulator, partial: Path, body: tuple[bytes, str], **options: object) -> None:
    data, sha = body
    download(server.url("/img.raw"), partial, size=len(data), sha512=sha, **options)  # type: ignore[arg-type]


def _left(partial: Path) -> list[str]:
    return sorted(p.name for p in partial.parent.iterdir())


# -- success -----------------------------------------------------------------------------


def test_download_leaves_exactly_the_verified_bytes_and_no_sidecar(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    seen: list[int] = []
    _get(server, partial, body, progress=seen.append)
    assert partial.read_bytes() == body[0]
    assert _left(partial) == ["img"]
    assert sum(seen) == SIZE
    (record,) = server.requests
    assert record.range is None
    assert record.status == 200


def test_a_redirect_within_the_scheme_is_followed(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    server.fault("/moved.raw", redirect_to="/img.raw")
    download(server.url("/moved.raw"), partial, size=SIZE, sha512=body[1])
    assert partial.read_bytes() == body[0]


def test_a_redirect_to_a_link_local_host_is_refused(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    server.fault("/img.raw", redirect_to="http://169.254.169.254/img.raw")
    with pytest.raises(FetchError, match="link-local"):
        _get(server, partial, body)
    assert _left(partial) == []


def test_a_server_error_is_retried_and_a_404_is_not(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    server.fault("/img.raw", status=500, times=1)
    _get(server, partial, body)
    assert [r.status for r in server.requests] == [500, 200]
    partial.unlink()
    server.remove("/img.raw")
    with pytest.raises(HTTPStatusError, match="404"):
        _get(server, partial, body)
    assert [r.status for r in server.requests][2:] == [404]
    assert _left(partial) == []


def test_an_empty_image_needs_no_request(server: Simulator, partial: Path) -> None:
    _, sha = image(0)
    download(server.url("/empty"), partial, size=0, sha512=sha)
    assert partial.read_bytes() == b""
    assert server.requests == []


# -- THREATS 19: wrong bytes -------------------------------------------------------------


def test_wrong_bytes_raise_a_digest_mismatch_and_leave_nothing(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    _, other_sha = image(SIZE)
    with pytest.raises(DigestMismatchError, match="SHA-512"):
        _get(server, partial, (body[0], other_sha))
    assert _left(partial) == []
    assert len(server.requests) == 1  # integrity errors are not retried


# -- THREATS 20: endless data ------------------------------------------------------------


def test_a_disagreeing_content_length_is_refused_before_reading(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    server.fault("/img.raw", content_length=SIZE + 1)
    with pytest.raises(SizeMismatchError, match=f"{SIZE + 1} bytes declared, {SIZE} expected"):
        _get(server, partial, body)
    assert _left(partial) == []
    assert len(server.requests) == 1


def test_overrun_after_a_lying_content_length_stops_at_the_size(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    server.fault("/img.raw", content_length=SIZE, overrun=8 * MiB)
    _get(server, partial, body)
    assert partial.read_bytes() == body[0]


def test_endless_data_without_content_length_stops_at_the_size(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    server.fault("/img.raw", overrun=200 * MiB)  # chunked, no length
    _get(server, partial, body)
    assert partial.read_bytes() == body[0]
    (record,) = server.requests
    assert record.bytes_sent < 100 * MiB  # the client hung up at the declared size


def test_endless_wrong_data_is_cut_at_the_size_and_fails_the_digest(
    server: Simulator, partial: Path
) -> None:
    data, _ = image(MiB)
    _, sha = image(2 * MiB)
    server.publish("/img.raw", data)
    server.fault("/img.raw", overrun=200 * MiB)
    with pytest.raises(DigestMismatchError):
        download(server.url("/img.raw"), partial, size=2 * MiB, sha512=sha)
    assert _left(partial) == []


def test_a_body_shorter_than_the_size_keeps_the_partial_for_resume(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    data = body[0]
    server.publish("/img.raw", data[: SIZE // 2], last_modified=MODIFIED)
    server.fault("/img.raw", no_content_length=True)
    with pytest.raises(SizeMismatchError, match=f"ended after {SIZE // 2} of {SIZE} bytes"):
        _get(server, partial, body)
    assert partial.read_bytes() == data[: SIZE // 2]
    assert json.loads(sidecar(partial).read_text())["url"] == server.url("/img.raw")


# -- THREATS 21: slow retrieval ----------------------------------------------------------


def test_a_drip_below_the_minimum_rate_times_out_and_keeps_the_partial(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    server.fault("/img.raw", drip=1000)
    with pytest.raises(FetchTimeoutError, match="below the minimum of 4096 bytes/s"):
        _get(server, partial, body, limits=ONCE)
    assert 0 < partial.stat().st_size < SIZE
    assert sidecar(partial).exists()


def test_a_download_past_its_deadline_times_out_and_keeps_the_partial(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    limits = replace(ONCE, download_deadline=timedelta(seconds=1), min_rate=0)
    server.fault("/img.raw", drip=64 * 1024)
    with pytest.raises(FetchTimeoutError, match="not complete after 1 s"):
        _get(server, partial, body, limits=limits)
    assert partial.stat().st_size > 0
    assert sidecar(partial).exists()


def test_a_stalled_server_times_out_after_the_read_timeout(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    limits = replace(ONCE, read_timeout=timedelta(seconds=0.3))
    server.fault("/img.raw", stall_after=MiB)
    with pytest.raises(FetchTimeoutError, match=r"no data for 0\.3 s"):
        _get(server, partial, body, limits=limits)
    assert partial.stat().st_size == MiB


def test_a_slow_download_does_not_hold_up_another(
    server: Simulator, body: tuple[bytes, str], tmp_path: Path
) -> None:
    slow, slow_sha = image(SIZE)
    server.publish("/slow.raw", slow)
    server.fault("/slow.raw", drip=1000)
    finished: dict[str, float] = {}

    async def one(fetcher: Fetcher, path: str, sha: str) -> None:
        try:
            await fetcher.download(
                server.url(path), partial=tmp_path / path.strip("/"), size=SIZE, sha512=sha
            )
        finally:
            finished[path] = time.monotonic()

    async def both() -> tuple[BaseException | None, BaseException | None]:
        async with Fetcher(limits=ONCE) as fetcher:
            return await asyncio.gather(
                one(fetcher, "/slow.raw", slow_sha),
                one(fetcher, "/img.raw", body[1]),
                return_exceptions=True,
            )

    slow_result, fast_result = asyncio.run(both())
    assert isinstance(slow_result, FetchTimeoutError)
    assert fast_result is None
    assert (tmp_path / "img.raw").read_bytes() == body[0]
    assert finished["/img.raw"] < finished["/slow.raw"]


# -- THREATS 22: resume ------------------------------------------------------------------


def _interrupted(server: Simulator, partial: Path, body: tuple[bytes, str], at: int) -> int:
    """A first attempt cut off after ``at`` bytes; returns the size of the partial kept."""
    server.fault("/img.raw", truncate_at=at, times=1)
    with pytest.raises(FetchError, match="broken off"):
        _get(server, partial, body, limits=ONCE)
    kept = partial.stat().st_size
    assert 0 < kept <= at
    assert partial.read_bytes() == body[0][:kept]
    assert sidecar(partial).exists()
    return kept


def test_an_interrupted_download_resumes_with_range_and_if_range(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    kept = _interrupted(server, partial, body, 3 * MiB)
    etag = json.loads(sidecar(partial).read_text())["etag"]
    _get(server, partial, body)
    assert partial.read_bytes() == body[0]
    assert _left(partial) == ["img"]
    resumed = server.requests[-1]
    assert resumed.range == f"bytes={kept}-"
    assert resumed.if_range == etag
    assert resumed.status == 206
    assert resumed.bytes_sent == SIZE - kept


def test_resume_uses_last_modified_when_there_is_no_strong_etag(
    server: Simulator, partial: Path
) -> None:
    data, sha = image(SIZE)
    server.publish("/img.raw", data, etag='W/"weak"', last_modified=MODIFIED)
    kept = _interrupted(server, partial, (data, sha), 2 * MiB)
    _get(server, partial, (data, sha))
    resumed = server.requests[-1]
    assert resumed.range == f"bytes={kept}-"
    assert resumed.if_range == "Wed, 04 Mar 2026 05:06:07 GMT"
    assert resumed.status == 206


def test_without_any_validator_the_download_starts_again(server: Simulator, partial: Path) -> None:
    data, sha = image(SIZE)
    server.publish("/img.raw", data, etag=None)
    _interrupted(server, partial, (data, sha), 2 * MiB)
    _get(server, partial, (data, sha))
    assert partial.read_bytes() == data
    assert server.requests[-1].range is None


def test_a_server_that_ignores_range_restarts_from_zero(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    kept = _interrupted(server, partial, body, 2 * MiB)
    server.fault("/img.raw", ignore_range=True)
    _get(server, partial, body)
    assert partial.read_bytes() == body[0]
    last = server.requests[-1]
    assert last.range == f"bytes={kept}-"
    assert (last.status, last.bytes_sent) == (200, SIZE)


def test_a_wrong_content_range_discards_the_partial_and_starts_again(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    kept = _interrupted(server, partial, body, 2 * MiB)
    server.fault("/img.raw", wrong_content_range=True)
    _get(server, partial, body)
    assert partial.read_bytes() == body[0]
    wrong, fresh = server.requests[-2:]
    assert (wrong.range, wrong.status) == (f"bytes={kept}-", 206)
    assert (fresh.range, fresh.status) == (None, 200)


def test_a_416_discards_the_partial_and_starts_again(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    _interrupted(server, partial, body, 2 * MiB)
    server.fault("/img.raw", status=416, times=1)
    _get(server, partial, body)
    assert partial.read_bytes() == body[0]
    assert [(r.status, r.range is None) for r in server.requests[-2:]] == [
        (416, False),
        (200, True),
    ]


def test_a_file_changed_on_the_server_restarts_from_zero(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    _interrupted(server, partial, body, 2 * MiB)
    new, new_sha = image(SIZE)
    server.publish("/img.raw", new, last_modified=MODIFIED + timedelta(days=1))
    _get(server, partial, (new, new_sha))
    assert partial.read_bytes() == new
    last = server.requests[-1]
    assert last.range is not None  # If-Range no longer matches: the server sent everything
    assert (last.status, last.bytes_sent) == (200, SIZE)


def test_the_digest_covers_the_bytes_kept_from_before(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    kept = _interrupted(server, partial, body, 2 * MiB)
    with partial.open("r+b") as handle:  # a bit flips in the kept part
        handle.seek(kept // 2)
        handle.write(bytes([body[0][kept // 2] ^ 1]))
    with pytest.raises(DigestMismatchError):
        _get(server, partial, body)
    assert server.requests[-1].status == 206
    assert _left(partial) == []


def test_a_partial_without_sidecar_is_not_trusted(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    partial.write_bytes(b"junk" * 1000)
    _get(server, partial, body)
    assert partial.read_bytes() == body[0]
    assert server.requests[-1].range is None


def test_a_sidecar_of_another_url_is_not_trusted(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    _interrupted(server, partial, body, 2 * MiB)
    server.publish("/mirror.raw", body[0])
    download(server.url("/mirror.raw"), partial, size=SIZE, sha512=body[1])
    assert partial.read_bytes() == body[0]
    assert server.requests[-1].range is None


def test_a_complete_partial_is_verified_without_a_request(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    partial.write_bytes(body[0])
    _get(server, partial, body)
    assert server.requests == []
    partial.write_bytes(bytes(SIZE))  # complete but wrong: downloaded again
    _get(server, partial, body)
    assert partial.read_bytes() == body[0]
    assert len(server.requests) == 1


def test_retries_within_one_call_resume_where_the_last_attempt_stopped(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    server.fault("/img.raw", truncate_at=MiB, times=2)
    _get(server, partial, body)
    assert partial.read_bytes() == body[0]
    ranges = [r.range for r in server.requests]
    assert ranges[0] is None
    assert all(r is not None for r in ranges[1:])
    assert len(ranges) == 3


# -- THREATS 23: disk full ---------------------------------------------------------------


def test_the_free_space_check_refuses_a_huge_image_before_any_request(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    with pytest.raises(DiskFullError, match="needed"):
        download(server.url("/img.raw"), partial, size=2**60, sha512=body[1])
    assert server.requests == []
    assert _left(partial) == []


def test_the_free_space_check_counts_the_margin(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    limits = replace(LIMITS, free_space_margin=2**60)
    with pytest.raises(DiskFullError, match="kept free"):
        _get(server, partial, body, limits=limits)
    assert server.requests == []


_FILL_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from keys.errors import DiskFullError
    from keys.limits import Limits
    from site_agent.fetch import Fetcher

    url, partial, size, sha, mode = sys.argv[1:6]
    partial = Path(partial)
    filled = []

    def fill(_count):
        # another process takes the rest of the disk while the download runs
        if filled or mode != "fill":
            return
        filled.append(True)
        fd = os.open(partial.parent / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, bytes(64 * 1024)):
                pass
        except OSError:
            pass
        os.close(fd)

    if mode == "fsize":
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))

    async def main():
        async with Fetcher(limits=Limits(retries=0, free_space_margin=0)) as fetcher:
            await fetcher.download(url, partial=partial, size=int(size), sha512=sha, progress=fill)

    try:
        asyncio.run(main())
    except DiskFullError as exc:
        print("DiskFullError:", exc.message)
    print("left:", sorted(p.name for p in partial.parent.iterdir()))
    """
)


@pytest.mark.skipif(not namespaces_allowed(), reason="unshare -rm and mount are not permitted")
def test_a_disk_filling_up_during_the_download_removes_the_partial(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    folder = partial.parent
    done = run_isolated(
        f"mount -t tmpfs -o size=8m tmpfs {folder}",
        _FILL_SCRIPT,
        server.url("/img.raw"),
        str(partial),
        str(SIZE),
        body[1],
        "fill",
    )
    assert done.returncode == 0, done.stderr
    assert "DiskFullError: no space left for" in done.stdout
    assert "left: ['filler']" in done.stdout  # neither the partial nor its sidecar


def test_a_file_size_limit_while_writing_removes_the_partial(
    server: Simulator, body: tuple[bytes, str], partial: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _FILL_SCRIPT,
            server.url("/img.raw"),
            str(partial),
            str(SIZE),
            body[1],
            "fsize",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "DiskFullError: no space left for" in done.stdout
    assert "left: []" in done.stdout


def test_a_server_that_never_answers_times_out_after_the_read_timeout(tmp_path: Path) -> None:
    """A server accepting the connection but sending no headers cannot hold a download
    for the whole download deadline: the read timeout covers waiting for the answer."""
    with silent_server() as url:
        started = time.monotonic()
        with pytest.raises(FetchTimeoutError, match="no answer"):
            download(url, tmp_path / "partial", size=10, sha512="0" * 128, limits=ONCE)
        assert time.monotonic() - started < LIMITS.download_deadline.total_seconds()
