"""The cloud settings and the planner, alone: every rule of the plan, every refused setting.

The planner is pure (what is wanted, what Glance shows, what the registry
holds, ``now``), so each of its rules is checked here directly; the real
Glance tests (tests/federation/test_cloud.py) show the same rules end to end.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keys.errors import ConfigError
from site_agent import config as site_config
from site_agent.cloud.plan import (
    CREATE,
    DEACTIVATE,
    DELETE,
    FORGET,
    REACTIVATE,
    REPAIR,
    UPLOADING,
    Seen,
    Step,
    Wanted,
    plan,
)
from site_agent.cloud.registry import ACTIVE, DEACTIVATED, Registration
from site_agent.cloud.settings import CloudSettings, parse_cloud
from site_agent.config_edit import add_cloud, remove_cloud

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CLOUD = CloudSettings(name="site1", os_cloud="ops", delete_after=timedelta(days=7))


def wanted(n: int, *, sha: str = "a", members: frozenset[str] = frozenset()) -> Wanted:
    return Wanted(
        image_id=f"image-{n}",
        sha512=sha * 128,
        size=10,
        path="/cache/x",
        name=f"Image {n}",
        disk_format="raw",
        container_format="bare",
        properties={"vmic_image_id": f"image-{n}"},
        visibility="shared",
        members=members,
    )


def seen(n: int, *, status: str = ACTIVE, name: str | None = None, **more: object) -> Seen:
    fields: dict[str, object] = {
        "glance_id": f"g-{n}",
        "status": status,
        "name": name or f"Image {n}",
        "visibility": "shared",
        "properties": {"vmic_image_id": f"image-{n}"},
    }
    fields.update(more)
    return Seen(**fields)  # type: ignore[arg-type]


def registration(
    n: int, *, sha: str = "a", state: str = ACTIVE, since: datetime | None = None
) -> Registration:
    return Registration(
        cloud="site1",
        glance_id=f"g-{n}",
        image_id=f"image-{n}",
        sha512=sha * 128,
        state=state,
        adopted=False,
        registered_at=NOW - timedelta(days=30),
        changed_at=since or NOW - timedelta(days=30),
        withdrawn_at=since,
    )


def whats(steps: list[Step]) -> list[tuple[str, str]]:
    return [(s.what, s.image_id) for s in steps]


def test_a_wanted_image_without_registration_is_created() -> None:
    assert whats(plan(CLOUD, [wanted(1)], {}, [], now=NOW)) == [(CREATE, "image-1")]


def test_an_image_as_wanted_needs_nothing() -> None:
    assert plan(CLOUD, [wanted(1)], {"g-1": seen(1)}, [registration(1)], now=NOW) == []


def test_changes_made_outside_vmic_are_repaired() -> None:
    image = seen(1, name="renamed", visibility="public", members=frozenset({"stranger"}))
    (step,) = plan(
        CLOUD,
        [wanted(1, members=frozenset({"proj-b"}))],
        {"g-1": image},
        [registration(1)],
        now=NOW,
    )
    assert step.what == REPAIR
    assert step.changes == ("name", "visibility", "members")
    assert (step.add_members, step.remove_members) == (
        frozenset({"proj-b"}),
        frozenset({"stranger"}),
    )


def test_a_deactivated_image_wanted_again_is_reactivated() -> None:
    image = seen(1, status=DEACTIVATED)
    reg = registration(1, state=DEACTIVATED, since=NOW - timedelta(days=1))
    assert whats(plan(CLOUD, [wanted(1)], {"g-1": image}, [reg], now=NOW)) == [
        (REACTIVATE, "image-1")
    ]


def test_an_image_no_longer_wanted_is_deactivated_then_deleted_after_the_grace() -> None:
    assert whats(plan(CLOUD, [], {"g-1": seen(1)}, [registration(1)], now=NOW)) == [
        (DEACTIVATE, "image-1")
    ]
    image = seen(1, status=DEACTIVATED)
    young = registration(1, state=DEACTIVATED, since=NOW - timedelta(days=6))
    assert plan(CLOUD, [], {"g-1": image}, [young], now=NOW) == []
    old = registration(1, state=DEACTIVATED, since=NOW - timedelta(days=7))
    assert whats(plan(CLOUD, [], {"g-1": image}, [old], now=NOW)) == [(DELETE, "image-1")]


def test_withdrawn_delete_deletes_at_once() -> None:
    cloud = CloudSettings(name="site1", os_cloud="ops", withdrawn="delete")
    assert whats(plan(cloud, [], {"g-1": seen(1)}, [registration(1)], now=NOW)) == [
        (DELETE, "image-1")
    ]


def test_other_bytes_under_the_same_id_replace_the_old_registration() -> None:
    steps = plan(CLOUD, [wanted(1, sha="b")], {"g-1": seen(1)}, [registration(1)], now=NOW)
    assert whats(steps) == [(DEACTIVATE, "image-1"), (CREATE, "image-1")]
    assert steps[0].reason == "other bytes under the same image id"


def test_a_glance_image_gone_is_forgotten_and_registered_again() -> None:
    steps = plan(CLOUD, [wanted(1)], {}, [registration(1)], now=NOW)
    assert whats(steps) == [(FORGET, "image-1"), (CREATE, "image-1")]
    killed = plan(CLOUD, [wanted(1)], {"g-1": seen(1, status="killed")}, [registration(1)], now=NOW)
    assert whats(killed) == [(FORGET, "image-1"), (CREATE, "image-1")]


@pytest.mark.parametrize("status", ["queued", "saving", "active"])
def test_an_unfinished_upload_is_deleted_and_done_again(status: str) -> None:
    reg = registration(1, state=UPLOADING)
    steps = plan(CLOUD, [wanted(1)], {"g-1": seen(1, status=status)}, [reg], now=NOW)
    assert whats(steps) == [(DELETE, "image-1"), (CREATE, "image-1")]


def test_an_image_registered_twice_keeps_one() -> None:
    adopted = replace(registration(1), glance_id="g-9", adopted=True)
    images = {"g-1": seen(1), "g-9": seen(1, glance_id="g-9")}
    steps = plan(CLOUD, [wanted(1)], images, [registration(1), adopted], now=NOW)
    assert [(s.what, s.glance_id) for s in steps] == [(DEACTIVATE, "g-9")]
    assert steps[0].reason == "registered twice; the other copy stays"


def test_no_step_ever_names_a_glance_image_without_a_registration() -> None:
    images = {"g-1": seen(1), "foreign": seen(2, glance_id="foreign")}
    steps = plan(CLOUD, [wanted(1)], images, [registration(1)], now=NOW)
    assert all(s.glance_id != "foreign" for s in steps)


# -- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"name": "bad name", "os_cloud": "x"}, "name 'bad name'"),
        ({"name": "a"}, "os_cloud must be a non-empty string"),
        ({"name": "a", "os_cloud": "x", "visibility": "everyone"}, "visibility must be"),
        ({"name": "a", "os_cloud": "x", "visibility": "shared"}, "needs projects"),
        ({"name": "a", "os_cloud": "x", "withdrawn": "keep"}, "deactivate or delete"),
        ({"name": "a", "os_cloud": "x", "delete_after_days": -1}, "from 0 to 3650"),
        ({"name": "a", "os_cloud": "x", "name_template": "{secret}"}, "not {secret}"),
        ({"name": "a", "os_cloud": "x", "name_template": "{title"}, "name_template"),
        ({"name": "a", "os_cloud": "x", "projects": {"dteam": ["a b"]}}, "project ids"),
        ({"name": "a", "os_cloud": "x", "colour": "blue"}, "unknown keys: colour"),
    ],
)
def test_a_bad_cloud_table_is_refused_naming_what_is_wrong(
    table: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_cloud(table, "config.toml: [[clouds]]")


def test_image_names_come_from_the_template() -> None:
    cloud = parse_cloud(
        {"name": "a", "os_cloud": "x", "name_template": "{title} {osversion} ({vo})"}, "here"
    )
    assert cloud.image_name({"title": "Alma", "osversion": "9.4", "vo": "dteam"}) == (
        "Alma 9.4 (dteam)"
    )
    assert cloud.image_name({"image_id": "u-1"}) == "()"  # what the template gives


def test_cloud_add_writes_a_table_that_loads_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    site_config.write_default(path, trust=tmp_path)
    cloud = parse_cloud(
        {"name": "site1", "os_cloud": "ops", "visibility": "shared", "projects": {"d": ["p"]}},
        "--",
    )
    add_cloud(path, cloud)
    assert site_config.load(path).clouds == (cloud,)
    assert "# Clouds: OpenStack Glance" in path.read_text()
    with pytest.raises(ConfigError, match="exists already"):
        add_cloud(path, cloud)
    remove_cloud(path, "site1")
    assert site_config.load(path).clouds == ()
