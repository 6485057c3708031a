"""openstacksdk against a real Glance: the path vmic's cloud commands will take.

Glance 33 (tests/support/glance.py; `make test` installs it) and openstacksdk, both real,
reached the way a site's clouds.yaml reaches them: ``openstack.connect(cloud=NAME)`` reads
the file named by ``OS_CLIENT_CONFIG_FILE``, whose entries are ``auth_type: none`` with the
image endpoint overridden. Project A registers, project B is the one images are shared with;
both hold only the member and reader roles, so Glance's policy applies to them in full.
The last tests record what Glance leaves behind when an upload is cut off or Glance itself
goes away, and which exceptions openstacksdk raises then, for vmic's cleanup and its error
wrapping.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import openstack
import pytest
import yaml
from keystoneauth1 import exceptions as ksa_exceptions
from openstack import exceptions as sdk_exceptions
from openstack.connection import Connection
from openstack.image.v2 import Proxy as ImageV2

from tests.support.glance import GlanceServer, glance_image, qcow2_image

PROJECT_A = "vmic-project-a"
PROJECT_B = "vmic-project-b"
MEMBER = "member,reader"
DATA = bytes(range(256)) * 24  # 6 KiB, declared raw


@pytest.fixture
def clouds(glance: GlanceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """clouds.yaml with ``site-a`` (project A) and ``site-b`` (project B), as a site has one."""
    path = tmp_path / "clouds.yaml"
    glance.write_clouds_yaml(path, "site-a", PROJECT_A, roles=MEMBER)
    glance.write_clouds_yaml(path, "site-b", PROJECT_B, roles=MEMBER)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    for name in [name for name in os.environ if name.startswith("OS_") and "CONFIG" not in name]:
        monkeypatch.delenv(name)  # no OS_CLOUD, OS_AUTH_URL ... from the caller's shell
    return path


@pytest.fixture
def site_a(clouds: Path) -> Iterator[ImageV2]:
    """openstacksdk's image service as project A, found through clouds.yaml."""
    with openstack.connect(cloud="site-a") as conn:
        yield _image_v2(conn)


@pytest.fixture
def site_b(clouds: Path) -> Iterator[ImageV2]:
    with openstack.connect(cloud="site-b") as conn:
        yield _image_v2(conn)


def _image_v2(conn: Connection) -> ImageV2:
    """The image proxy, which openstacksdk types as v1 or v2: v2 is what Glance 33 offers."""
    proxy = conn.image
    assert isinstance(proxy, ImageV2)
    return proxy


def _create(conn: ImageV2, data: bytes = DATA, disk_format: str = "raw") -> str:
    image = conn.create_image(
        "vmic-smoke",
        data=data,
        disk_format=disk_format,
        container_format="bare",
        allow_duplicates=True,
        properties={"vmic_image_uuid": "3f1c0f8e-0000-4000-8000-000000000001"},
    )
    return str(image.id)


def test_openstacksdk_registers_an_image_whose_glance_multihash_is_its_sha512(
    glance: GlanceServer, site_a: ImageV2, site_b: ImageV2
) -> None:
    image_id = _create(site_a)
    site_a.update_image(image_id, vmic_list_version="7", vmic_endorser="/DC=org/CN=Jane")

    image = site_a.get_image(image_id)
    assert (image.status, image.owner, image.size) == ("active", PROJECT_A, len(DATA))
    assert image.hash_algo == "sha512"
    assert image.hash_value == hashlib.sha512(DATA).hexdigest()
    assert image.properties["vmic_image_uuid"] == "3f1c0f8e-0000-4000-8000-000000000001"
    assert image.properties["vmic_list_version"] == "7"
    assert image.properties["vmic_endorser"] == "/DC=org/CN=Jane"
    assert b"".join(site_a.download_image(image_id, stream=True).iter_content(4096)) == DATA
    # Glance 33 makes a new image "shared" (not "private"), yet visible to members only
    assert image.visibility == "shared"
    with pytest.raises(sdk_exceptions.NotFoundException):
        site_b.get_image(image_id)
    assert glance_image(glance, PROJECT_B, image_id, roles=MEMBER) is None
    assert [i.id for i in site_b.images()] == []


def test_an_image_shared_with_project_b_reaches_it_once_b_accepts(
    glance: GlanceServer, site_a: ImageV2, site_b: ImageV2
) -> None:
    image_id = _create(site_a)
    site_a.update_image(image_id, visibility="shared")
    member = site_a.add_member(image_id, member=PROJECT_B)
    assert member.status == "pending"

    # B reads a pending image by its id, but does not list it until it accepts
    assert site_b.get_image(image_id).hash_value == hashlib.sha512(DATA).hexdigest()
    assert [i.id for i in site_b.images()] == []
    site_b.update_member(PROJECT_B, image_id, status="accepted")
    assert [i.id for i in site_b.images()] == [image_id]
    record = glance_image(glance, PROJECT_B, image_id, roles=MEMBER)
    assert record is not None
    assert record["owner"] == PROJECT_A
    # a member may not change the image
    with pytest.raises(sdk_exceptions.ForbiddenException):
        site_b.update_image(image_id, vmic_list_version="8")


def test_deactivated_image_keeps_its_record_refuses_its_data_and_comes_back(
    glance: GlanceServer, site_a: ImageV2
) -> None:
    image_id = _create(site_a)

    site_a.deactivate_image(image_id)
    assert site_a.get_image(image_id).status == "deactivated"
    refused = glance.request("GET", f"/v2/images/{image_id}/file", PROJECT_A, roles=MEMBER)
    assert refused.status == 403
    # openstacksdk 4.22 does not look at the status of a download: it hashes Glance's
    # error page and reports a checksum mismatch
    with pytest.raises(sdk_exceptions.InvalidResponse, match="checksum mismatch"):
        site_a.download_image(image_id)
    site_a.reactivate_image(image_id)
    assert site_a.get_image(image_id).status == "active"
    assert site_a.download_image(image_id).content == DATA

    site_a.delete_image(image_id)
    with pytest.raises(sdk_exceptions.NotFoundException):
        site_a.get_image(image_id)


def test_glance_takes_a_real_qcow2_and_refuses_bytes_that_only_claim_to_be_one(
    glance: GlanceServer, site_a: ImageV2
) -> None:
    disk = qcow2_image(DATA, virtual_size=4 << 20)
    image = site_a.get_image(_create(site_a, disk, "qcow2"))
    assert (image.status, image.size, image.virtual_size) == ("active", len(disk), 4 << 20)
    assert image.hash_value == hashlib.sha512(disk).hexdigest()

    with pytest.raises(sdk_exceptions.HttpException) as refused:
        _create(site_a, DATA, "qcow2")
    assert refused.value.status_code == 415
    assert [i["id"] for i in glance.images()] == [image.id]  # openstacksdk deleted the record


def test_an_upload_cut_off_half_way_leaves_the_image_queued_with_no_data(
    glance: GlanceServer, site_a: ImageV2
) -> None:
    image = site_a.create_image(
        "vmic-cut", disk_format="raw", container_format="bare", allow_duplicates=True
    )
    assert image.status == "queued"

    with _upload_cut_off(glance, image.id, size=1 << 20):
        assert _status(glance, image.id) == "saving"
    # the client went away: Glance puts the image back to queued and keeps no data
    assert _wait_for_status(glance, image.id, "queued") == "queued"
    assert image.id not in _stored(glance)
    site_a.delete_image(image.id)
    assert glance.images() == []


def test_glance_going_away_raises_keystoneauth_errors_and_strands_an_upload_in_saving(
    glance: GlanceServer, site_a: ImageV2, clouds: Path
) -> None:
    image_id = str(site_a.create_image("vmic-crash", disk_format="raw", allow_duplicates=True).id)
    with _upload_cut_off(glance, image_id, size=1 << 20):
        glance.kill()

    with pytest.raises(ksa_exceptions.ConnectFailure):  # a connection already in use
        site_a.get_image(image_id)
    with (
        openstack.connect(cloud="site-a") as fresh,
        pytest.raises(ksa_exceptions.DiscoveryFailure),
    ):  # a new one: version discovery fails first
        _image_v2(fresh).get_image(image_id)
    assert issubclass(ksa_exceptions.ConnectFailure, ksa_exceptions.ClientException)
    assert issubclass(ksa_exceptions.DiscoveryFailure, ksa_exceptions.ClientException)
    assert not issubclass(ksa_exceptions.ClientException, sdk_exceptions.SDKException)

    glance.start()
    # nothing ever finishes that upload: the image stays "saving" until someone deletes it,
    # and Glance 33 leaves the partial file in its store when it is deleted
    assert site_a.get_image(image_id).status == "saving"
    site_a.delete_image(image_id)
    with pytest.raises(sdk_exceptions.NotFoundException):
        site_a.get_image(image_id)
    assert image_id in _stored(glance)


@contextmanager
def _upload_cut_off(glance: GlanceServer, image_id: str, size: int) -> Iterator[None]:
    """A raw PUT announcing ``size`` bytes of the image's data, of which it sends 64 KiB and
    waits for Glance to say "saving"; the connection is closed when the block ends."""
    port = int(glance.url.rsplit(":", 1)[1])
    headers = {
        **glance.headers(PROJECT_A, MEMBER),
        "Host": f"127.0.0.1:{port}",
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"PUT /v2/images/{image_id}/file HTTP/1.1\r\n{head}\r\n".encode())
        sock.sendall(bytes(64 * 1024))
        assert _wait_for_status(glance, image_id, "saving") == "saving"
        yield


def _status(glance: GlanceServer, image_id: str) -> str | None:
    record = glance_image(glance, PROJECT_A, image_id, roles=MEMBER)
    return None if record is None else str(record["status"])


def _wait_for_status(glance: GlanceServer, image_id: str, wanted: str) -> str | None:
    deadline = time.monotonic() + 10
    while (status := _status(glance, image_id)) != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    return status


def _stored(glance: GlanceServer) -> list[str]:
    """The files in Glance's file store (named by image id)."""
    return sorted(path.name for path in (glance.root / "images").iterdir())


def test_write_clouds_yaml_keeps_other_entries_and_gives_each_identity_its_port(
    glance: GlanceServer, tmp_path: Path
) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text("clouds:\n  keystone:\n    auth_type: password\n")
    glance.write_clouds_yaml(path, "a", PROJECT_A, roles=MEMBER)
    glance.write_clouds_yaml(path, "b", PROJECT_B, roles=MEMBER)
    glance.write_clouds_yaml(path, "a-again", PROJECT_A, roles=MEMBER)

    entries = yaml.safe_load(path.read_text())["clouds"]
    assert list(entries) == ["keystone", "a", "b", "a-again"]
    assert entries["a"] == entries["a-again"] != entries["b"]
    assert entries["a"]["auth_type"] == "none"
    assert entries["a"]["auth"]["endpoint"] == entries["a"]["image_endpoint_override"]

    # on an identity port, the identity a client claims in headers counts for nothing
    url = urlsplit(entries["a"]["image_endpoint_override"])
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    body = json.dumps({"name": "claimed", "disk_format": "raw", "container_format": "bare"})
    spoofed = {**glance.headers(PROJECT_B, "admin"), "Content-Type": "application/json"}
    connection.request("POST", "/v2/images", body=body, headers=spoofed)
    reply = connection.getresponse()
    created = json.loads(reply.read())
    connection.close()
    assert reply.status == 201
    assert created["owner"] == PROJECT_A
