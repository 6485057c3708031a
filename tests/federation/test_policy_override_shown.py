"""A policy override travels in the signed list; a site sees it wherever it decides.

`vmic verify`, `vmic images`, `vmic image show` show it; `vmic approve` shows
it and goes on only on confirmation (at a terminal) or with --yes. A refused
approval changes nothing.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from federation.cli import main
from federation.cli.common import ExitCode
from tests.support.site import CA_DN, ENDORSER_DN, LIST_PATH, World, image_uuid

REASON = "authorized_keys is the VO's pilot key, published on purpose (rules: authorized-keys)"


def publish_with_override(world: World) -> None:
    lst = world.make_list(version=1)
    first, second = lst.entries
    world.publish(replace(lst, entries=(replace(first, policy_override=REASON), second)))


@pytest.fixture
def overridden(world: World) -> World:
    publish_with_override(world)
    assert world.subscribe() == 0
    return world


def test_verify_shows_the_override_of_each_image(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_with_override(world)
    url = world.sim.url(LIST_PATH)
    capsys.readouterr()

    pins = ["--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN]
    code = main(["verify", url, "--trust", str(world.trust), *pins])

    assert code == 0
    out = capsys.readouterr().out
    assert out.count("policy override:") == 1
    assert f"      policy override: {REASON}" in out


def test_images_and_image_show_mark_the_override(
    overridden: World, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert overridden.vmic("images") == 0
    table = capsys.readouterr().out
    assert overridden.vmic("image", "show", image_uuid(1)) == 0
    page = capsys.readouterr().out
    assert overridden.vmic("image", "show", image_uuid(1), "--json") == 0
    data = json.loads(capsys.readouterr().out)

    first, second = table.splitlines()
    assert first.endswith("[policy override]")
    assert not second.endswith("[policy override]")
    assert page.splitlines()[1].startswith(f"  POLICY OVERRIDE: {REASON} (the endorser published")
    assert data["policy_override"] == REASON


def test_approve_refuses_an_override_without_confirmation_and_changes_nothing(
    overridden: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = overridden.snapshot()
    capsys.readouterr()

    with Path(os.devnull).open() as no_terminal:  # as cron or a script runs it
        monkeypatch.setattr(sys, "stdin", no_terminal)
        assert overridden.vmic("approve", image_uuid(2), image_uuid(1)) == ExitCode.CONFIG

    out, err = capsys.readouterr()
    assert f"{image_uuid(1)} (Test image 1): policy override: {REASON}" in out
    assert "nothing was approved" in err
    assert "--yes" in err
    assert overridden.snapshot() == before  # not even the image without an override


def test_approve_with_yes_approves_the_override(overridden: World) -> None:
    assert overridden.vmic("approve", image_uuid(1), "--yes") == 0
    assert overridden.states()[image_uuid(1)] == "approved"


@pytest.mark.parametrize(("answer", "approved"), [("y", True), ("n", False), ("", False)])
def test_approve_at_a_terminal_asks(overridden: World, answer: str, approved: bool) -> None:
    """A real terminal (a pty) on the command's stdin, the admin answering the question."""
    command = [sys.executable, "-m", "federation", "approve", image_uuid(1)]
    command += ["--home", str(overridden.home.root)]
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            command, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        os.write(leader, f"{answer}\n".encode())
        out, err = process.communicate(timeout=60)
    finally:
        os.close(leader)
        os.close(follower)

    assert "approve anyway? [y/N]" in out
    assert f"policy override: {REASON}" in out
    assert (process.returncode == 0) is approved, err
    assert (overridden.states()[image_uuid(1)] == "approved") is approved
