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
