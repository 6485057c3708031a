"""`vmic policy` and the policy gate of `vmic endorse add`, end to end in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from federation.cli.common import ExitCode
from feeds.policy.rules import RULES
from tests.federation.test_cli import Endorser, make_endorser, run
from tests.feeds.test_policy import clean_tree, hostile_tree
from tests.support.images import write_tar

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def endorser(tmp_path: Path) -> Endorser:
    return make_endorser(tmp_path)


def add(e: Endorser, image: Path, *options: object) -> int:
    return run(
        "endorse", "add", e.manifest, image, "--url", f"https://e.org/{image.name}", *options
    )


def test_a_clean_image_checks_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = write_tar(clean_tree(), tmp_path / "clean.tar.gz", "gz")

    assert run("policy", "check", image) == ExitCode.OK

    out = capsys.readouterr().out
    assert "(tar.gz, 16 entries): clean, 0 warning(s)" in out
    assert "os: Debian GNU/Linux 12 (bookworm)" in out


def test_a_hostile_image_fails_with_every_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_tar(hostile_tree(), tmp_path / "hostile.tar.gz", "gz")

    assert run("policy", "check", image, "--json") == ExitCode.POLICY

    data = json.loads(capsys.readouterr().out)
    assert data["clean"] is False
    assert data["kind"] == "tar.gz"
    rules = {f["rule"] for f in data["findings"] if f["severity"] == "error"}
    assert {"password", "ssh-host-key", "authorized-keys", "private-key"} <= rules
    assert all(
        set(f) == {"rule", "severity", "path", "reason", "allowed"} for f in data["findings"]
    )


def test_allow_lets_a_rule_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = clean_tree()
    tree["/etc/ssh/ssh_host_rsa_key"] = hostile_tree()["/etc/ssh/ssh_host_ed25519_key"]
    image = write_tar(tree, tmp_path / "keys.tar", "")

    assert run("policy", "check", image) == ExitCode.POLICY
    assert run("policy", "check", image, "--allow", "ssh-host-key") == ExitCode.OK
    assert "allowed  ssh-host-key" in capsys.readouterr().out
    assert run("policy", "check", image, "--allow", "no-such-rule") == ExitCode.CONFIG


def test_policy_rules_lists_every_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("policy", "rules", "--json") == ExitCode.OK

    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == list(RULES)
    assert all(r["why"] and r["title"] for r in listed)


def test_docs_list_every_rule_with_its_id() -> None:
    text = (ROOT / "docs" / "policy-rules.md").read_text()

    for rule in RULES.values():
        assert f"`{rule.id}`" in text, rule.id


def test_endorse_add_refuses_a_hostile_image_and_leaves_the_manifest_alone(
    endorser: Endorser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_tar(hostile_tree(), tmp_path / "hostile.tar.gz", "gz")
    before = endorser.manifest.read_bytes()
    capsys.readouterr()

    assert add(endorser, image) == ExitCode.POLICY

    err = capsys.readouterr().err
    assert "ssh-host-key" in err
    assert "/etc/ssh/ssh_host_ed25519_key" in err
    assert "breaks the trusted-image policy" in err
    assert "--policy-override" in err
    assert endorser.manifest.read_bytes() == before


def test_endorse_add_checks_the_url_before_the_image(
    endorser: Endorser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_tar(hostile_tree(), tmp_path / "hostile.tar.gz", "gz")

    code = run("endorse", "add", endorser.manifest, image, "--url", "ftp://e.org/x")

    assert code == ExitCode.CONFIG
    assert "policy" not in capsys.readouterr().err


def test_an_override_is_recorded_and_published_in_the_signed_list(
    endorser: Endorser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_tar(hostile_tree(), tmp_path / "hostile.tar.gz", "gz")
    reason = "a training image: the keys are published on purpose"

    assert add(endorser, image, "--policy-override", reason) == ExitCode.OK
    signed = tmp_path / "out.atom"
    sign = ["--cert", endorser.jane / "cert.pem", "--key", endorser.jane / "key.pem"]
    assert run("endorse", "sign", endorser.manifest, *sign, "--out", signed) == 0
    capsys.readouterr()
    assert run("verify", signed, "--trust", endorser.ca, "--json") == 0

    entries = json.loads(capsys.readouterr().out)["entries"]
    (published,) = [e["policy_override"] for e in entries if e["title"] == "hostile.tar.gz"]
    assert published.startswith(reason + " (overrides: ")
    assert "ssh-host-key" in published


def test_a_clean_image_is_added_without_an_override(
    endorser: Endorser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_tar(clean_tree(), tmp_path / "clean.tar.xz", "xz")

    assert add(endorser, image, "--policy-override", "not needed") == ExitCode.OK
    assert "--policy-override is not recorded" in capsys.readouterr().out
    assert run("endorse", "show", endorser.manifest, "--json") == 0
    images = json.loads(capsys.readouterr().out)["images"]
    (entry,) = [i for i in images if i["title"] == "clean.tar.xz"]
    assert entry["format"] == "tar.xz"
    assert entry.get("policy_override") is None


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """`vmic policy check IMAGE | head -1` on an image with thousands of findings."""
    root = tmp_path / "root"
    for n in range(3000):
        home = root / "home" / f"u{n:04d}"
        home.mkdir(parents=True)
        (home / ".bash_history").write_text("ls\n")
    command = [sys.executable, "-c", "from federation.cli import run; run()", "policy", "check"]
    process = subprocess.Popen(
        [*command, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    process.stdout.close()
    _, err = process.communicate(timeout=120)

    assert b"3000 error(s)" in first
    assert process.returncode != 0
    assert b"Traceback" not in err
