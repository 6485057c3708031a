"""Images into the site's cloud: a real Glance 33, the real `vmic sync` and `vmic cloud ...`.

THREATS 38-40. The site's cloud credentials act as project ``ops`` (a plain
member, not a cloud admin), through an ordinary clouds.yaml entry. The
endorser's images reach Glance only once the site holds their verified
bytes; Glance's own SHA-512 of what it stored must be the endorser's before
anyone else sees them; VO projects see what is shared with them; withdrawn
images are deactivated, then deleted; what someone changed in Glance is
repaired; nothing vmic did not register or adopt is ever touched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from federation.cli.common import ExitCode
from tests.support.glance import GlanceServer, glance_image
from tests.support.serving import ServeThread
from tests.support.site import World, image_bytes, image_uuid
from tests.support.tamper import TamperingRelay

OPS = "ops"
MEMBER = "member,reader"


def publish_raw(world: World, *, version: int, images: tuple[int, ...], **changes: Any) -> None:
    """A list of raw images (Glance checks that an image's bytes fit its disk format)."""
    lst = world.make_list(version=version, images=images, **changes)
    world.publish(replace(lst, entries=tuple(replace(e, format="raw") for e in lst.entries)))


def registered(glance: GlanceServer) -> dict[str, dict[str, Any]]:
    """Glance's images that vmic registered, by the endorsed image id."""
    return {
        image["vmic_image_id"]: image
        for image in glance.images()
        if "vmic_image_id" in image and image["status"] != "deleted"
    }


def members(glance: GlanceServer, glance_id: str) -> set[str]:
    reply = glance.request("GET", f"/v2/images/{glance_id}/members", OPS, roles=MEMBER)
    assert reply.status == 200, reply.body
    return {m["member_id"] for m in reply.json()["members"]}


@pytest.fixture
def site(
    world: World, glance: GlanceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> World:
    """A site holding images 1 and 2 (VO dteam) and a cloud shared with two projects."""
    path = glance.write_clouds_yaml(tmp_path / "clouds.yaml", "vmic-ops", OPS, roles=MEMBER)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    publish_raw(world, version=1, images=(1, 2))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    cloud = ["cloud", "add", "site1", "--os-cloud", "vmic-ops", "--delete-after-days", "0"]
    assert world.vmic(*cloud, "--vo", "dteam=proj-b", "--vo", "dteam=proj-c") == 0
    return world


def test_sync_registers_verified_images_and_shares_them_with_the_vos_projects(
    site: World, glance: GlanceServer
) -> None:
    assert site.vmic("sync") == 0

    images = registered(glance)
    assert set(images) == {image_uuid(1), image_uuid(2)}
    for n in (1, 2):
        image = images[image_uuid(n)]
        assert image["status"] == "active"
        assert image["owner"] == OPS
        assert image["os_hash_algo"] == "sha512"
        assert image["os_hash_value"] == hashlib.sha512(image_bytes(n)).hexdigest()
        assert image["visibility"] == "shared"
        assert image["os_hidden"] is False  # hidden from image lists only until checked
        assert image["vmic_list_id"] == str(site.make_list(version=1).id)
        assert image["os_distro"] == "almalinux"
        assert image["tags"] == ["vmic"]
        assert members(glance, image["id"]) == {"proj-b", "proj-c"}
        assert glance_image(glance, "proj-b", image["id"], roles=MEMBER) is not None
        assert glance_image(glance, "proj-x", image["id"], roles=MEMBER) is None


def test_a_second_run_changes_nothing(
    site: World, glance: GlanceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert site.vmic("sync") == 0
    before = registered(glance)
    capsys.readouterr()

    assert site.vmic("cloud", "sync") == 0

    assert capsys.readouterr().out.strip() == "cloud site1: nothing to do"
    assert registered(glance) == before


def test_a_withdrawn_image_is_deactivated_then_deleted(site: World, glance: GlanceServer) -> None:
    assert site.vmic("sync") == 0
    gone = registered(glance)[image_uuid(2)]["id"]
    publish_raw(site, version=2, images=(1,), revoked=(2,))

    assert site.vmic("sync") == 0
    assert registered(glance)[image_uuid(2)]["status"] == "deactivated"
    assert registered(glance)[image_uuid(1)]["status"] == "active"

    assert site.vmic("cloud", "sync") == 0  # delete_after_days = 0: due at the next run
    assert image_uuid(2) not in registered(glance)
    assert all(image["id"] != gone for image in glance.images())


def test_changes_made_in_glance_are_repaired_and_a_deleted_image_registered_again(
    site: World, glance: GlanceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert site.vmic("sync") == 0
    images = registered(glance)
    first, second = images[image_uuid(1)]["id"], images[image_uuid(2)]["id"]
    patch = [
        {"op": "replace", "path": "/name", "value": "renamed by hand"},
        {"op": "replace", "path": "/vmic_sha512", "value": "0" * 128},
    ]
    reply = glance.request(
        "PATCH",
        f"/v2/images/{first}",
        OPS,
        roles=MEMBER,
        body=json.dumps(patch).encode(),
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    assert reply.status == 200, reply.body
    assert glance.request("DELETE", f"/v2/images/{second}", OPS, roles=MEMBER).status == 204
    capsys.readouterr()

    assert site.vmic("cloud", "sync") == 0

    out = capsys.readouterr().out
    assert f"repaired image {image_uuid(1)} ({first}): name, properties" in out
    assert f"forgot image {image_uuid(2)} ({second})" in out
    images = registered(glance)
    assert images[image_uuid(1)]["id"] == first  # repaired in place
    assert images[image_uuid(1)]["name"] == "Test image 1"
    assert images[image_uuid(1)]["vmic_sha512"] == hashlib.sha512(image_bytes(1)).hexdigest()
    assert images[image_uuid(2)]["id"] != second  # registered again
    assert images[image_uuid(2)]["status"] == "active"


def test_an_image_vmic_did_not_register_is_never_touched(site: World, glance: GlanceServer) -> None:
    """Even one that carries vmic's tag and claims an image id of this site."""
    body = {
        "name": "someone else's",
        "disk_format": "raw",
        "container_format": "bare",
        "tags": ["vmic"],
        "vmic_image_id": image_uuid(1),
    }
    reply = glance.request(
        "POST",
        "/v2/images",
        OPS,
        roles=MEMBER,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 201, reply.body
    foreign = reply.json()

    assert site.vmic("sync") == 0
    assert site.vmic("cloud", "sync") == 0

    again = glance_image(glance, OPS, foreign["id"], roles=MEMBER)
    assert again is not None
    assert (again["status"], again["name"], again["updated_at"]) == (
        "queued",
        "someone else's",
        foreign["updated_at"],
    )


def test_a_cache_file_that_rotted_is_never_sent_as_the_endorsed_image(
    site: World, glance: GlanceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """THREATS 38: the cache file rotted after it was verified; the SHA-512 of the bytes as
    they were sent is not the endorser's, the upload is deleted, nobody else saw it, the
    next run tries again."""
    with site.store() as store:
        image = store.image(image_uuid(1))
    assert image is not None
    cached = site.home.images / image.sha512
    good = cached.read_bytes()
    cached.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    before = site.snapshot()
    capsys.readouterr()

    assert site.vmic("cloud", "sync") == ExitCode.PROBLEMS

    assert "no longer holds the endorsed bytes" in capsys.readouterr().err
    assert image_uuid(1) not in registered(glance)
    assert all(img.get("vmic_image_id") != image_uuid(1) for img in glance.images())
    assert site.snapshot().images == before.images  # the site's own state is as it was
    cached.write_bytes(good)
    assert site.vmic("cloud", "sync") == 0
    assert registered(glance)[image_uuid(1)]["status"] == "active"


def test_bytes_changed_on_the_way_into_glance_never_become_visible(
    site: World,
    glance: GlanceServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """THREATS 38: a relay between the site and Glance flips bytes of image 1's upload
    (same length); Glance's own SHA-512 of what it stored is not the endorser's, so the
    upload is deleted before it is shown or shared; image 2 goes in untouched."""
    marker = image_bytes(1)[:32]
    clouds = tmp_path / "tampered.yaml"
    with TamperingRelay(_port(glance.endpoint(OPS, MEMBER)), marker, bytes(32)) as relay:
        entry = {**glance.clouds_entry(OPS, MEMBER), "auth": {"endpoint": relay.url}}
        entry["image_endpoint_override"] = relay.url
        clouds.write_text(json.dumps({"clouds": {"vmic-ops": entry}}))
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
        before = site.snapshot()
        capsys.readouterr()

        assert site.vmic("cloud", "sync") == ExitCode.PROBLEMS

    assert relay.swaps == 1
    assert "Glance's sha512 of image" in capsys.readouterr().err
    assert image_uuid(1) not in registered(glance)
    assert registered(glance)[image_uuid(2)]["status"] == "active"
    assert all(img.get("vmic_image_id") != image_uuid(1) for img in glance.images())
    assert site.snapshot().images == before.images
    with site.store() as store:
        rows = store.db.execute("SELECT image_id FROM cloud_images").fetchall()
    assert [r[0] for r in rows] == [image_uuid(2)]


def test_an_upload_cut_off_half_way_leaves_nothing_in_glance(
    site: World,
    glance: GlanceServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """THREATS 39: the connection drops in the middle of image 1's bytes; the half-filled
    record is deleted (nothing left queued or saving), image 2 goes in, the next run
    registers image 1."""
    clouds = tmp_path / "cut.yaml"
    marker = image_bytes(1)[2048:2080]
    with TamperingRelay(_port(glance.endpoint(OPS, MEMBER)), marker, bytes(32), cut=True) as relay:
        entry = {**glance.clouds_entry(OPS, MEMBER), "auth": {"endpoint": relay.url}}
        entry["image_endpoint_override"] = relay.url
        clouds.write_text(json.dumps({"clouds": {"vmic-ops": entry}}))
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
        before = site.snapshot()
        capsys.readouterr()

        assert site.vmic("cloud", "sync") == ExitCode.PROBLEMS

    assert relay.swaps == 1
    assert "cannot upload the bytes of image" in capsys.readouterr().err
    left = [img for img in glance.images() if img.get("vmic_image_id") == image_uuid(1)]
    assert [img["status"] for img in left if img["status"] != "deleted"] == []
    assert registered(glance)[image_uuid(2)]["status"] == "active"
    assert site.snapshot().images == before.images
    with site.store() as store:
        rows = store.db.execute("SELECT image_id FROM cloud_images").fetchall()
    assert [r[0] for r in rows] == [image_uuid(2)]

    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    assert site.vmic("cloud", "sync") == 0
    assert registered(glance)[image_uuid(1)]["status"] == "active"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_glance_down_is_a_problem_of_the_cloud_and_the_sync_goes_on(
    site: World, glance: GlanceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_raw(site, version=2, images=(1, 2, 3))
    capsys.readouterr()
    with glance.stopped():
        assert site.vmic("sync") == ExitCode.PROBLEMS
        err = capsys.readouterr().err
        assert "cloud site1" in err
    assert site.states()[image_uuid(3)] == "available"  # the rest of the sync went on
    with site.store() as store:
        rows = store.db.execute("SELECT COUNT(*) FROM cloud_images").fetchone()[0]
    assert rows == 0

    assert site.vmic("sync") == 0
    assert set(registered(glance)) == {image_uuid(1), image_uuid(2), image_uuid(3)}


def _registered_by_another_tool(
    glance: GlanceServer, marks: dict[str, Any], data: bytes, *, tags: list[str] | None = None
) -> str:
    """An image registered (record and bytes) the way another tool does; its Glance id."""
    body: dict[str, Any] = {
        "name": "registered elsewhere",
        "disk_format": "raw",
        "container_format": "bare",
    }
    body.update(marks)
    if tags:
        body["tags"] = tags
    created = glance.request(
        "POST",
        "/v2/images",
        OPS,
        roles=MEMBER,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    ).json()
    uploaded = glance.request(
        "PUT",
        f"/v2/images/{created['id']}/file",
        OPS,
        roles=MEMBER,
        body=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert uploaded.status == 204, uploaded.body
    return str(created["id"])


def _tool_marks(tool: str, sha512: str) -> tuple[dict[str, Any], list[str]]:
    """What cloudkeeper-os, atrope and vmcatcher's handlers write on an image (their sources)."""
    if tool == "cloudkeeper-os":
        attributes = {"sl:checksum:sha512": sha512, "ad:vo": "dteam"}
        return {
            "APPLIANCE_ID": image_uuid(1),
            "APPLIANCE_ATTRIBUTES": json.dumps(attributes),
            "vmcatcher_event_ad_mpuri": "https://appdb.example.org/store/vm/image/1:1/",
        }, []
    if tool == "atrope":
        return {"appdb_id": image_uuid(1), "image_hash": f"sha512:{sha512}"}, ["atrope-catchall"]
    return {
        "vmcatcher_event_dc_identifier": image_uuid(1),
        "vmcatcher_event_sl_checksum_sha512": sha512,
    }, []


@pytest.fixture
def held(
    world: World, glance: GlanceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> World:
    """A site holding image 1, with a cloud that shares with proj-b (not synced yet)."""
    path = glance.write_clouds_yaml(tmp_path / "clouds.yaml", "vmic-ops", OPS, roles=MEMBER)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    publish_raw(world, version=1, images=(1,))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    cloud = ["cloud", "add", "site1", "--os-cloud", "vmic-ops", "--vo", "dteam=proj-b"]
    assert world.vmic(*cloud) == 0
    return world


@pytest.mark.parametrize("tool", ["cloudkeeper-os", "atrope", "vmcatcher"])
def test_adopt_takes_over_an_image_another_tool_registered_in_place(
    tool: str, held: World, glance: GlanceServer
) -> None:
    data = image_bytes(1)
    marks, tags = _tool_marks(tool, hashlib.sha512(data).hexdigest())
    glance_id = _registered_by_another_tool(glance, marks, data, tags=tags)

    assert held.vmic("cloud", "adopt", "site1") == 0
    assert held.vmic("cloud", "sync") == 0

    images = [img for img in glance.images() if img["status"] != "deleted"]
    assert [img["id"] for img in images] == [glance_id]  # no second copy: adopted in place
    adopted = images[0]
    assert adopted["vmic_image_id"] == image_uuid(1)
    assert adopted["vmic_adopted_from"] == tool
    for key, value in marks.items():
        assert adopted[key] == value  # what site scripts read stays
    assert "vmic" in adopted["tags"]
    assert not any(t.startswith("atrope") for t in adopted["tags"])  # no longer atrope's
    assert adopted["name"] == "Test image 1"
    assert members(glance, glance_id) == {"proj-b"}


def test_adopt_leaves_other_bytes_and_double_registrations_alone(
    held: World, glance: GlanceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    data = image_bytes(1)
    old_marks, _ = _tool_marks("cloudkeeper-os", hashlib.sha512(b"older bytes").hexdigest())
    older = _registered_by_another_tool(glance, old_marks, b"older bytes")
    capsys.readouterr()

    assert held.vmic("cloud", "adopt", "site1") == ExitCode.PROBLEMS
    assert "only other bytes in Glance" in capsys.readouterr().err

    marks, tags = _tool_marks("atrope", hashlib.sha512(data).hexdigest())
    one = _registered_by_another_tool(glance, marks, data, tags=tags)
    two = _registered_by_another_tool(glance, marks, data, tags=tags)
    assert held.vmic("cloud", "adopt", "site1") == ExitCode.PROBLEMS
    assert "registered 2 times" in capsys.readouterr().err
    for glance_id in (older, one, two):
        image = glance_image(glance, OPS, glance_id, roles=MEMBER)
        assert image is not None
        assert "vmic_image_id" not in image
    with held.store() as store:
        assert store.db.execute("SELECT COUNT(*) FROM cloud_images").fetchone()[0] == 0


@pytest.mark.parametrize("tool", ["cloudkeeper-os", "atrope", "vmcatcher"])
def test_adopt_goes_by_glances_hash_not_by_what_the_properties_claim(
    tool: str, held: World, glance: GlanceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A property is anyone's word: an image naming the endorsed SHA-512 over other bytes
    (same size, so only the hash tells) is not adopted, and vmic registers its own copy."""
    data = image_bytes(1)
    other = bytes(len(data))
    marks, tags = _tool_marks(tool, hashlib.sha512(data).hexdigest())
    impostor = _registered_by_another_tool(glance, marks, other, tags=tags)
    capsys.readouterr()

    assert held.vmic("cloud", "adopt", "site1") == ExitCode.PROBLEMS
    assert "Glance's own hash or size of its bytes is not the endorser's" in (
        capsys.readouterr().err
    )
    image = glance_image(glance, OPS, impostor, roles=MEMBER)
    assert image is not None
    assert "vmic_image_id" not in image
    assert "vmic" not in image["tags"]
    with held.store() as store:
        assert store.db.execute("SELECT COUNT(*) FROM cloud_images").fetchone()[0] == 0

    assert held.vmic("cloud", "sync") == 0  # vmic's own, checked copy goes in beside it
    ours = [img for img in glance.images() if img.get("vmic_image_id") == image_uuid(1)]
    assert len(ours) == 1
    assert ours[0]["id"] != impostor
    assert ours[0]["os_hash_value"] == hashlib.sha512(data).hexdigest()


def test_what_a_run_killed_during_an_upload_leaves_is_cleaned_up(
    site: World, glance: GlanceServer
) -> None:
    """A run killed mid-upload leaves its registry row (written before any byte) and
    Glance's record half filled (queued or saving): the next run deletes that record and
    registers the image anew; nobody ever saw the half-filled one."""
    assert site.vmic("sync") == 0
    images = registered(glance)
    body = {"name": "Test image 1", "disk_format": "raw", "container_format": "bare"}
    left = glance.request(
        "POST",
        "/v2/images",
        OPS,
        roles=MEMBER,
        body=json.dumps({**body, "tags": ["vmic"]}).encode(),
        headers={"Content-Type": "application/json"},
    ).json()
    with site.store() as store, store.atomic():
        store.db.execute(
            "INSERT INTO cloud_images (cloud, glance_id, image_id, sha512, state, adopted,"
            " registered_at, changed_at) VALUES ('site1', ?, ?, ?, 'uploading', 0, ?, ?)",
            (left["id"], image_uuid(3), "ab" * 64, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        )

    assert site.vmic("cloud", "sync") == 0

    assert glance_image(glance, OPS, left["id"], roles=MEMBER) is None  # deleted
    assert registered(glance) == images  # the others untouched
    with site.store() as store:
        states = store.db.execute("SELECT state FROM cloud_images").fetchall()
    assert sorted(s for (s,) in states) == ["active", "active"]


def test_where_each_image_is_registered_shows_in_the_cli_the_catalogue_and_metrics(
    site: World, glance: GlanceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert site.vmic("sync", "-v") == 0
    images = registered(glance)
    first, second = images[image_uuid(1)]["id"], images[image_uuid(2)]["id"]
    out = capsys.readouterr().out
    assert f"cloud site1: registered image {image_uuid(1)} as {first} (Test image 1)" in out
    assert f"cloud site1: registered image {image_uuid(2)} as {second} (Test image 2)" in out

    publish_raw(site, version=2, images=(1,), revoked=(2,))
    assert site.vmic("sync", "-v") == 0
    assert f"cloud site1: deactivated image {image_uuid(2)} ({second})" in capsys.readouterr().out

    assert site.vmic("image", "show", image_uuid(1), "--json") == 0
    clouds = json.loads(capsys.readouterr().out)["clouds"]
    assert [(c["cloud"], c["glance_id"], c["state"], c["adopted"]) for c in clouds] == [
        ("site1", first, "active", False)
    ]
    assert clouds[0]["registered_at"] is not None
    assert site.vmic("image", "show", image_uuid(2)) == 0
    text = capsys.readouterr().out
    assert f"  clouds:       site1: {second} deactivated since " in text
    assert ", registered by vmic " in text

    assert site.vmic("images", "--json") == 0
    listed = {i["id"]: i["clouds"] for i in json.loads(capsys.readouterr().out)}
    assert [(c["glance_id"], c["state"]) for c in listed[image_uuid(1)]] == [(first, "active")]
    assert [(c["glance_id"], c["state"]) for c in listed[image_uuid(2)]] == [
        (second, "deactivated")
    ]
    assert site.vmic("images") == 0
    table = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "  site1  Test image 1" in table[image_uuid(1)]

    with ServeThread(site.home) as server:
        catalogue = server.get("/?state=all").text
        page = server.get(f"/image/{image_uuid(2)}").text
        metrics = server.get("/metrics").text

    assert '<a href="/?state=all&amp;sort=clouds&amp;order=asc">Clouds</a>' in catalogue
    assert "<td>site1</td>" in catalogue
    assert "<td>site1 (deactivated)</td>" in catalogue
    assert f"<li>site1: <code>{second}</code> deactivated since " in page
    assert "registered by vmic" in page
    assert 'vmic_cloud_images{cloud="site1",state="active"} 1' in metrics
    assert 'vmic_cloud_images{cloud="site1",state="deactivated"} 1' in metrics
    assert 'vmic_cloud_images{cloud="site1",state="uploading"} 0' in metrics


def test_with_admin_credentials_the_share_is_accepted_for_the_vos_projects(
    world: World, glance: GlanceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As atrope does: the VO's users then find the image in their own image list
    (cloud-info-provider lists images as each project). With a member's credentials the
    share stays pending until the project accepts it."""
    path = glance.write_clouds_yaml(tmp_path / "clouds.yaml", "vmic-admin", OPS)  # admin role
    glance.write_clouds_yaml(path, "vmic-ops", OPS, roles=MEMBER)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    publish_raw(world, version=1, images=(1,))
    assert world.subscribe(auto=True) == 0
    assert (
        world.vmic("cloud", "add", "as-admin", "--os-cloud", "vmic-admin", "--vo", "dteam=b") == 0
    )
    assert world.vmic("sync") == 0

    listed = glance.request("GET", "/v2/images", "b", roles=MEMBER).json()["images"]
    assert [i["vmic_image_id"] for i in listed] == [image_uuid(1)]
    (image,) = listed
    reply = glance.request("GET", f"/v2/images/{image['id']}/members/b", "b", roles=MEMBER)
    assert reply.json()["status"] == "accepted"


def test_dry_run_prints_the_plan_and_changes_nothing(
    site: World, glance: GlanceServer, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()

    assert site.vmic("cloud", "sync", "--dry-run", "--json") == 0

    (report,) = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True
    assert sorted((s["what"], s["image_id"]) for s in report["steps"]) == [
        ("create", image_uuid(1)),
        ("create", image_uuid(2)),
    ]
    assert glance.images() == []
    with site.store() as store:
        assert store.db.execute("SELECT COUNT(*) FROM cloud_images").fetchone()[0] == 0
