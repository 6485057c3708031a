"""The catalogue API keeps the answer to each query string until the store changes, within
bounds (federation.api.ApiState): the same answers as made afresh, never stale."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from federation.api import API, MAX_PAGES_KEPT
from tests.support.serving import ServeThread, available_site, site_world
from tests.support.site import World, image_uuid


@pytest.fixture
def world(tmp_path: Path, now: datetime) -> Iterator[World]:
    with site_world(tmp_path, now) as made:
        available_site(made, images=(1, 2, 3, 4, 5))
        yield made


def test_kept_answers_are_bounded_and_match_fresh_ones(world: World) -> None:
    with ServeThread(world.home) as server:
        assert server.app is not None
        api = server.app[API]
        queries = [f"limit={n}&sort=title&order=desc" for n in range(1, MAX_PAGES_KEPT + 20)]
        first = {q: server.get(f"/api/v1/images?{q}").body for q in queries}
        assert len(api.pages) <= MAX_PAGES_KEPT
        for q in queries[:3] + queries[-3:]:  # forgotten and kept ones alike
            assert server.get(f"/api/v1/images?{q}").body == first[q]
        for n, q in enumerate(queries[:8], start=1):
            assert json.loads(first[q])["count"] == min(n, 5)
        assert server.get("/api/v1/images?limit=0").status == 400  # never kept: checked again
        assert "limit=0" not in api.pages


def test_a_kept_answer_is_dropped_when_the_store_changes(world: World) -> None:
    with ServeThread(world.home) as server:
        before = json.loads(server.get("/api/v1/images?sort=size").body)
        assert world.vmic("withdraw", image_uuid(2)) == 0
        after = json.loads(server.get("/api/v1/images?sort=size").body)

    assert (before["total"], after["total"]) == (5, 4)
    assert image_uuid(2) not in {i["id"] for i in after["images"]}


def test_vmic_images_json_lists_the_images_while_the_configuration_is_broken(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.home.config.write_text("[serve\nthis is not TOML")
    capsys.readouterr()

    assert world.vmic("images", "--json") == 0

    out, err = capsys.readouterr()
    listed = json.loads(out)
    assert {i["id"] for i in listed} == {image_uuid(n) for n in (1, 2, 3, 4, 5)}
    assert all(i["content_url"].startswith("/images/sha512/") for i in listed)
    assert "not valid TOML" in err
    assert "relative" in err


def _get(server: ServeThread, target: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    """One request as the bytes a client sends (so the fast lane may take it)."""
    lines = [f"GET {target} HTTP/1.1", "Host: site", *headers, "Connection: close", "", ""]
    answer = server.raw("\r\n".join(lines).encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *fields = head.decode().split("\r\n")
    found = dict(field.split(": ", 1) for field in fields)
    return int(status_line.split(" ")[1]), found, body


_SAME = ("Content-Type", "Etag", "Cache-Control", "Link", "X-Content-Type-Options")


def test_the_fast_lane_answers_a_page_asked_before_as_aiohttp_did(world: World) -> None:
    with ServeThread(world.home) as server:
        assert server.running is not None
        gate = server.running.gate
        page = "/api/v1/images?sort=size&order=desc&limit=2"
        before = gate.fast_answers
        first = _get(server, page)  # made by aiohttp, and kept
        assert gate.fast_answers == before
        again = _get(server, page)
        assert gate.fast_answers == before + 1
        assert (again[0], again[2]) == (first[0], first[2]) == (200, again[2])
        assert {k: again[1].get(k) for k in _SAME} == {k: first[1].get(k) for k in _SAME}
        assert first[1]["Link"].endswith('>; rel="next"')
        not_modified = _get(server, page, f"If-None-Match: {first[1]['Etag']}")
        assert (not_modified[0], not_modified[2]) == (304, b"")
        assert gate.fast_answers == before + 2
        # never from the lane: escapes, '+', other paths with a query, other API paths
        for target in (
            "/api/v1/images?vo=%61tlas",
            "/api/v1/images?vo=a+b",
            "/export.atom?sort=size&order=desc&limit=2",
            f"/api/v1/images/{image_uuid(1)}",
            "/api/v1/openapi.json",
        ):
            for _ in range(2):
                _get(server, target)
        assert gate.fast_answers == before + 2
        # a sync changes the store: the kept page is not answered again
        assert world.vmic("withdraw", image_uuid(5), image_uuid(4)) == 0
        status, _, body = _get(server, page)
        assert status == 200
        assert json.loads(body)["total"] == 3
        assert body != first[2]
