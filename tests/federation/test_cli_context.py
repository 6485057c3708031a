"""`vmic context build`, `show` and `install` from the command line, in-process, with real files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from federation.cli import main
from federation.cli.common import ExitCode
from tests.support.context import iso_files, write_scripts

VMIC = Path(sys.executable).parent / "vmic"


def run(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def scripts(tmp_path: Path) -> tuple[Path, Path]:
    return write_scripts(tmp_path / "in")


def _build(tmp_path: Path, scripts: tuple[Path, Path], *extra: object) -> int:
    prolog, epilog = scripts
    return run(
        "context",
        "build",
        "--prolog",
        prolog,
        "--epilog",
        epilog,
        "--set",
        "SYSLOG_SERVER=logs.example.org",
        "--set",
        "NOTE=a 'quoted' $(value)",
        *extra,
        "--out",
        tmp_path / "context.iso",
    )


def test_build_prints_each_image_and_its_sha256(
    tmp_path: Path, scripts: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _build(tmp_path, scripts, "--cloud-init") == ExitCode.OK
    out = capsys.readouterr().out.splitlines()
    cd, seed = tmp_path / "context.iso", tmp_path / "context-cidata.iso"
    assert out[0] == f"{cd}: label CONTEXT, 3 files, {cd.stat().st_size} bytes"
    assert out[1] == f"  sha256 {hashlib.sha256(cd.read_bytes()).hexdigest()}"
    assert out[2].startswith(f"{seed}: label cidata, 5 files, ")
    assert out[3] == f"  sha256 {hashlib.sha256(seed.read_bytes()).hexdigest()}"


def test_show_prints_files_and_settings(
    tmp_path: Path, scripts: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _build(tmp_path, scripts) == ExitCode.OK
    capsys.readouterr()
    assert run("context", "show", tmp_path / "context.iso") == ExitCode.OK
    out = capsys.readouterr().out
    assert out.startswith("label CONTEXT\nfiles:\n")
    assert "-rwxr-xr-x" in out
    assert "prolog.sh" in out
    assert "  SYSLOG_SERVER='logs.example.org'\n" in out
    assert "  NOTE='a '\\''quoted'\\'' $(value)'\n" in out


def test_show_json(
    tmp_path: Path, scripts: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _build(tmp_path, scripts) == ExitCode.OK
    capsys.readouterr()
    assert run("context", "show", tmp_path / "context.iso", "--json") == ExitCode.OK
    data = json.loads(capsys.readouterr().out)
    assert data["label"] == "CONTEXT"
    assert data["settings"] == {
        "SYSLOG_SERVER": "logs.example.org",
        "NOTE": "a 'quoted' $(value)",
    }
    assert {"path": "prolog.sh", "size": scripts[0].stat().st_size, "mode": "0755"} in data["files"]
    assert data["instance_id"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "syslog=x"], "setting name 'syslog' is not allowed"),
        (["--set", "PATH=/tmp"], "setting name PATH is reserved"),
        (["--set", "A=1", "--set", "A=2"], "setting A is given twice"),
        (["--file", "/etc/hostname:/etc/hostname"], "is absolute"),
        (["--file", "/etc/hostname:../x"], ".. part"),
        (["--file", "/etc/hostname:prolog.sh"], "clashes with prolog.sh"),
        (["--file", "/etc:etc"], "is not a regular file"),
        (["--seed-out", "seed.iso"], "--seed-out is only for --cloud-init"),
    ],
)
def test_bad_input_is_one_line_and_a_hint_and_writes_nothing(
    tmp_path: Path,
    scripts: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert _build(tmp_path, scripts, *extra) == ExitCode.CONFIG
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("vmic: configuration: ")
    assert message in err[0]
    assert err[1].startswith("  hint: ")
    assert not (tmp_path / "context.iso").exists()


def test_a_bash_prolog_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scripts = write_scripts(tmp_path / "in", prolog="#!/bin/bash\n[[ -n x ]]\n")
    assert _build(tmp_path, scripts) == ExitCode.CONFIG
    assert "run with /bin/sh" in capsys.readouterr().err


def test_source_date_epoch_sets_the_dates(
    tmp_path: Path, scripts: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _build(tmp_path, scripts) == ExitCode.OK
    default = (tmp_path / "context.iso").read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert _build(tmp_path, scripts) == ExitCode.OK
    dated = (tmp_path / "context.iso").read_bytes()
    assert dated != default
    assert _build(tmp_path, scripts) == ExitCode.OK
    assert (tmp_path / "context.iso").read_bytes() == dated
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    assert _build(tmp_path, scripts) == ExitCode.CONFIG


def test_show_refuses_what_is_not_a_context_cd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"not an iso" * 1000)
    assert run("context", "show", junk) == ExitCode.CONFIG
    assert "is not an ISO 9660 image" in capsys.readouterr().err
    assert run("context", "show", tmp_path / "missing.iso") == ExitCode.CONFIG


def test_install_prints_what_it_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("context", "install", "--root", tmp_path) == ExitCode.OK
    first = capsys.readouterr().out.splitlines()
    assert f"written   {tmp_path}/usr/libexec/vmic-context" in first
    assert run("context", "install", "--root", tmp_path) == ExitCode.OK
    assert all(line.startswith("unchanged ") for line in capsys.readouterr().out.splitlines())


def test_the_console_script_builds_a_cd(tmp_path: Path, scripts: tuple[Path, Path]) -> None:
    """The same through a real process, as a site admin runs it."""
    prolog, epilog = scripts
    out = tmp_path / "cd.iso"
    result = subprocess.run(
        [
            VMIC,
            "context",
            "build",
            "--prolog",
            prolog,
            "--epilog",
            epilog,
            "--set",
            "A=1",
            "--out",
            out,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert iso_files(out)["context.sh"][0].endswith(b"A='1'\n")
