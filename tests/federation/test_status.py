"""`vmic status`: one screen of the site's health, and an exit code Nagios/Icinga can read.

Real site homes, real signed lists from the loopback endorser, real SQLite.
Each case also checks that `vmic status` changed nothing the site trusts.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from federation.cli import main
from federation.cli.common import ExitCode
from site_agent.lock import SiteLock
from tests.support.ca import TestCA, pem
from tests.support.site import World, image_uuid

OK, WARNING, CRITICAL = 0, 1, 2


def status(world: World, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    before = world.snapshot()
    code = world.vmic("status", *args)
    out = capsys.readouterr().out
    assert world.snapshot() == before  # reads only
    return code, out


def status_json(world: World, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out = status(world, capsys, "--json", *args)
    data: dict[str, Any] = json.loads(out)
    assert data["exit_code"] == code
    return data


def test_a_healthy_site_is_ok(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.publish(version=3)
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0

    code, out = status(world, capsys)

    assert code == OK
    first = out.splitlines()[0]
    assert first.startswith("OK: 1 list(s), 2 image(s) available, 0 waiting, 0 downloading |")
    assert " available=2 " in first  # performance data after the bar
    assert "version 3" in out
    assert "images: 2 available" in out


def test_images_waiting_for_approval_are_a_warning_naming_them(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1)
    assert world.subscribe() == 0

    code, out = status(world, capsys)

    assert code == WARNING
    assert out.startswith("WARNING: 2 image(s) wait for approval")
    assert f"waiting  {image_uuid(1)}  Test image 1 (base)" in out
    assert status_json(world, capsys)["waiting"][1]["image_id"] == image_uuid(2)


def test_a_list_close_to_expiry_warns_and_an_expired_one_is_critical(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(world.make_list(version=1, expires=world.now + timedelta(days=10)))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    assert status(world, capsys)[0] == OK

    soon = (world.now + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (world.now + timedelta(days=11, hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    warned = status_json(world, capsys, "--at", soon)
    expired = status_json(world, capsys, "--at", later)

    assert warned["status"] == "WARNING"
    assert any("expires in 5 days" in f["message"] for f in warned["findings"])
    assert expired["status"] == "CRITICAL"
    assert any("version 1 expired 36 hours ago" in f["message"] for f in expired["findings"])
    # (and eleven days and a half without a sync is a warning of its own)
    assert any("no successful sync for 11 days" in f["message"] for f in expired["findings"])


def test_a_ca_without_its_crl_is_critical(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    lonely = TestCA("/DC=org/DC=vmic-test/CN=CA Without CRL", now=world.now)
    (world.trust / "10e1e100.0").write_bytes(pem(lonely.cert))

    code, out = status(world, capsys)

    assert code == CRITICAL
    assert out.startswith("CRITICAL: /DC=org/DC=vmic-test/CN=CA Without CRL: no CRL")
    assert "CRITICAL crl: " in out


def test_a_download_in_progress_and_the_run_holding_the_site_are_shown(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.image_sizes[1] = 1_000_000
    world.publish(version=1, images=(1,))
    assert world.subscribe(auto=True) == 0
    with world.store() as store:
        image = store.image(image_uuid(1))
    assert image is not None
    # what a sync downloading it leaves in the partial folder, a quarter through
    (world.home.partial / image.sha512).write_bytes(b"\0" * 250_000)

    with SiteLock(world.home.lock, purpose="vmic sync"):
        code, out = status(world, capsys)
        data = status_json(world, capsys)
        refused = world.vmic("approve", image_uuid(1))
        err = capsys.readouterr().err

    assert code == OK
    assert f"download {image_uuid(1)}  Test image 1: 244.1 KiB of 976.6 KiB (25%)" in out
    assert "running: pid " in out
    assert out.rstrip().splitlines()[-1].startswith("cache: ")
    assert data["downloads"] == [
        {"image_id": image_uuid(1), "title": "Test image 1", "bytes": 250_000, "size": 1_000_000}
    ]
    assert data["running"]["command"] == "vmic sync"
    assert refused == ExitCode.LOCKED
    assert "running for 0 min: vmic sync" in err
    assert "`vmic status` shows how far its downloads are" in err


def test_status_of_a_folder_that_is_no_site_home_cannot_tell(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = tmp_path_factory.mktemp("nothing") / "home"

    assert main(["status", "--home", str(nowhere)]) == 3  # Nagios: UNKNOWN

    assert "vmic site init" in capsys.readouterr().err
    assert not nowhere.exists()
