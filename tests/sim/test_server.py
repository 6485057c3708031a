"""The simulator itself, checked with the standard library's http.client (not vmic's code):
HTTP semantics it must get right for the network tests to mean anything, and its bounds."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.sim import Simulator

BODY = bytes(range(256)) * 40
MODIFIED = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(safety_timeout=1) as server:
        server.publish("/f", BODY, last_modified=MODIFIED)
        yield server


def _get(
    sim: Simulator, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    host, port = sim.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_serves_the_body_with_validators_and_logs_the_request(sim: Simulator) -> None:
    status, headers, body = _get(sim, "/f")
    assert (status, body) == (200, BODY)
    assert headers["ETag"].startswith('"')
    assert headers["Last-Modified"] == "Wed, 06 May 2026 07:08:09 GMT"
    assert headers["Content-Length"] == str(len(BODY))
    (record,) = sim.requests
    assert (record.method, record.path, record.status, record.bytes_sent) == (
        "GET",
        "/f",
        200,
        len(BODY),
    )


def test_head_unknown_paths_and_other_methods(sim: Simulator) -> None:
    status, headers, body = _get(sim, "/f", method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(BODY)))
    assert _get(sim, "/missing")[0] == 404
    assert _get(sim, "/f", method="POST")[0] == 405
    sim.remove("/f")
    assert _get(sim, "/f")[0] == 404


def test_conditional_requests_get_a_304(sim: Simulator) -> None:
    etag = _get(sim, "/f")[1]["ETag"]
    assert _get(sim, "/f", {"If-None-Match": etag})[0] == 304
    assert _get(sim, "/f", {"If-None-Match": '"other"'})[0] == 200
    assert _get(sim, "/f", {"If-Modified-Since": "Wed, 06 May 2026 07:08:09 GMT"})[0] == 304
    assert _get(sim, "/f", {"If-Modified-Since": "Wed, 06 May 2026 07:08:08 GMT"})[0] == 200


def test_ranges_and_if_range(sim: Simulator) -> None:
    etag = _get(sim, "/f")[1]["ETag"]
    status, headers, body = _get(sim, "/f", {"Range": "bytes=100-"})
    assert (status, body) == (206, BODY[100:])
    assert headers["Content-Range"] == f"bytes 100-{len(BODY) - 1}/{len(BODY)}"
    status, headers, body = _get(sim, "/f", {"Range": "bytes=10-19", "If-Range": etag})
    assert (status, body, headers["Content-Range"]) == (
        206,
        BODY[10:20],
        f"bytes 10-19/{len(BODY)}",
    )
    status, _, body = _get(sim, "/f", {"Range": "bytes=10-", "If-Range": '"stale"'})
    assert (status, body) == (200, BODY)
    date = "Wed, 06 May 2026 07:08:09 GMT"
    assert _get(sim, "/f", {"Range": "bytes=10-", "If-Range": date})[0] == 206
    status, headers, _ = _get(sim, "/f", {"Range": f"bytes={len(BODY)}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(BODY)}")
    log = sim.requests
    assert log[1].range == "bytes=100-"
    assert log[2].if_range == etag


def test_faults_apply_for_the_given_number_of_requests(sim: Simulator) -> None:
    sim.fault("/f", status=503, times=2)
    assert [_get(sim, "/f")[0] for _ in range(3)] == [503, 503, 200]
    sim.fault("/f", redirect_to="http://example.invalid/")
    status, headers, _ = _get(sim, "/f")
    assert (status, headers["Location"]) == (302, "http://example.invalid/")
    sim.clear_faults("/f")
    assert _get(sim, "/f")[0] == 200


def test_range_faults(sim: Simulator) -> None:
    sim.fault("/f", ignore_range=True)
    assert _get(sim, "/f", {"Range": "bytes=5-"})[0] == 200
    sim.fault("/f", wrong_content_range=True)
    status, headers, _ = _get(sim, "/f", {"Range": "bytes=5-"})
    assert (status, headers["Content-Range"]) == (206, f"bytes 0-{len(BODY) - 1}/{len(BODY)}")


def test_length_faults(sim: Simulator) -> None:
    sim.fault("/f", no_content_length=True)
    status, headers, body = _get(sim, "/f")
    assert (status, body, headers.get("Transfer-Encoding")) == (200, BODY, "chunked")
    sim.fault("/f", overrun=1000)
    assert _get(sim, "/f")[2] == BODY + b"\xaa" * 1000
    sim.fault("/f", content_length=100)
    assert _get(sim, "/f")[2] == BODY[:100]
    sim.fault("/f", truncate_at=1000)
    with pytest.raises(http.client.IncompleteRead):
        _get(sim, "/f")


def test_drip_sends_slowly(sim: Simulator) -> None:
    sim.publish("/small", b"x" * 200)
    sim.fault("/small", drip=1000)
    start = time.monotonic()
    assert _get(sim, "/small")[2] == b"x" * 200
    assert time.monotonic() - start > 0.15


def test_a_stall_is_bounded_by_the_safety_timeout(sim: Simulator) -> None:
    sim.fault("/f", stall_after=10)
    start = time.monotonic()
    with pytest.raises(http.client.IncompleteRead):
        _get(sim, "/f")
    assert 0.9 < time.monotonic() - start < 4
    assert sim.requests[-1].bytes_sent == 10


def test_stopping_with_a_client_still_connected_is_quick() -> None:
    start = time.monotonic()
    with Simulator(safety_timeout=30) as server:
        server.publish("/f", BODY)
        server.fault("/f", stall_after=10)
        host, port = server.base_url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        connection.request("GET", "/f")
        response = connection.getresponse()
        assert response.read(10) == BODY[:10]
    connection.close()
    assert time.monotonic() - start < 5


def test_publish_file_and_the_standalone_server(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(BODY * 10)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.sim", str(image)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert child.stdout is not None
        base = child.stdout.readline().strip()
        host, port = base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        connection.request("GET", "/disk.img", headers={"Range": "bytes=7-"})
        response = connection.getresponse()
        assert (response.status, response.read()) == (206, (BODY * 10)[7:])
        connection.close()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=10) == 0
        if child.stdout is not None:
            child.stdout.close()
