"""The in-image script at boot, run for real against a folder standing for the mounted CD.

The CD is built by `vmic context build`, read back with pycdlib into
``tmp_path/cd`` and handed to the installed script through
``VMIC_CONTEXT_DIR`` (documented in docs/contextualisation.md), so
everything but the mount itself runs as it would in an image: /bin/sh (and
dash when present) runs the script, which sources context.sh and runs
prolog.sh and epilog.sh with sh, under ``timeout``.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from site_agent.context import install
from site_agent.context.build import ContextRequest, build_context
from tests.support.context import extract, run_boot, write_scripts

SHELLS = [s for s in ("/bin/sh", shutil.which("dash")) if s]


@pytest.fixture
def script(tmp_path: Path) -> Path:
    """The script as `vmic context install` puts it into an image."""
    root = tmp_path / "root"
    root.mkdir()
    install.install(root)
    return root / install.SCRIPT_PATH


def _cd(tmp_path: Path, *settings: str, prolog: str | None = None) -> Path:
    """Build a CD from real files, and copy its files into the folder that stands for it."""
    folder = tmp_path / "in"
    prolog_path, epilog_path = (
        write_scripts(folder) if prolog is None else write_scripts(folder, prolog=prolog)
    )
    conf = folder / "site.conf"
    conf.write_text("site-conf-content")
    out = tmp_path / "context.iso"
    build_context(
        ContextRequest(
            prolog=prolog_path,
            epilog=epilog_path,
            settings=(
                "SYSLOG_SERVER=logs.example.org",
                "BATCH_SYSTEM=htcondor $(touch pwned) `touch pwned2`",
                "MONITORING=it's here",
                *settings,
            ),
            files=(f"{conf}:etc/site.conf",),
            out=out,
        )
    )
    return extract(out, tmp_path / "cd")


def test_script_is_posix_sh(script: Path) -> None:
    for shell in SHELLS:
        subprocess.run([shell, "-n", str(script)], check=True)
    assert script.read_text().startswith("#!/bin/sh\n")
    assert script.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("shell", SHELLS)
def test_prolog_runs_before_epilog_with_the_settings(
    shell: str, script: Path, tmp_path: Path
) -> None:
    cd = _cd(tmp_path)
    log = tmp_path / "log"
    env = {"VMIC_CONTEXT_DIR": str(cd), "VMIC_TEST_LOG": str(log)}
    prolog = run_boot([shell, str(script), "prolog"], env=env)
    assert prolog.returncode == 0, prolog.stderr
    epilog = run_boot([shell, str(script), "epilog"], env=env)
    assert epilog.returncode == 0, epilog.stderr
    assert log.read_text().splitlines() == [
        "prolog logs.example.org|htcondor $(touch pwned) `touch pwned2`",
        f"epilog it's here|{cd}|site-conf-content",
    ]
    assert "prolog ran: syslog=logs.example.org phase=prolog" in prolog.stdout
    assert "vmic-context: prolog.sh finished" in prolog.stdout
    # the settings were text: nothing was created, neither on the "CD" nor anywhere near
    assert not list(tmp_path.rglob("pwned*"))


def test_the_installed_script_runs_by_itself(script: Path, tmp_path: Path) -> None:
    cd = _cd(tmp_path)
    log = tmp_path / "log"
    result = run_boot(
        [str(script), "prolog"], env={"VMIC_CONTEXT_DIR": str(cd), "VMIC_TEST_LOG": str(log)}
    )
    assert result.returncode == 0, result.stderr
    assert log.read_text().startswith("prolog logs.example.org|")


def test_no_cd_means_nothing_to_do_and_success(script: Path) -> None:
    label = "VMIC_TEST_" + secrets.token_hex(4).upper()  # no disk carries this label
    for phase in ("prolog", "epilog"):
        result = run_boot(["/bin/sh", str(script), phase], env={"VMIC_CONTEXT_LABEL": label})
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"vmic-context: no CD labelled {label}; nothing to do\n"


def test_a_failing_script_fails_the_phase(script: Path, tmp_path: Path) -> None:
    cd = _cd(tmp_path, prolog="#!/bin/sh\necho 'about to fail' >&2\nexit 3\n")
    result = run_boot(["/bin/sh", str(script), "prolog"], env={"VMIC_CONTEXT_DIR": str(cd)})
    assert result.returncode == 3
    assert "about to fail" in result.stderr
    assert "prolog.sh failed with exit status 3" in result.stderr


def test_a_script_that_hangs_is_stopped_at_the_time_limit(script: Path, tmp_path: Path) -> None:
    cd = _cd(tmp_path, prolog="#!/bin/sh\nsleep 60\n")
    result = run_boot(
        ["/bin/sh", str(script), "prolog"],
        env={"VMIC_CONTEXT_DIR": str(cd), "VMIC_CONTEXT_TIMEOUT": "1"},
        timeout=30,
    )
    assert result.returncode == 124
    assert "prolog.sh was stopped after 1s" in result.stderr


def test_a_bad_context_sh_fails_before_the_script_runs(script: Path, tmp_path: Path) -> None:
    cd = _cd(tmp_path)
    (cd / "context.sh").write_text("A='unterminated\n")
    log = tmp_path / "log"
    result = run_boot(
        ["/bin/sh", str(script), "prolog"],
        env={"VMIC_CONTEXT_DIR": str(cd), "VMIC_TEST_LOG": str(log)},
    )
    assert result.returncode != 0
    assert not log.exists()


def test_a_folder_without_the_phase_script_is_an_error(script: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_boot(["/bin/sh", str(script), "epilog"], env={"VMIC_CONTEXT_DIR": str(empty)})
    assert result.returncode == 1
    assert "has no epilog.sh" in result.stderr


@pytest.mark.parametrize("argv", [[], ["boot"], ["prolog.sh"]])
def test_usage(script: Path, argv: list[str]) -> None:
    result = run_boot(["/bin/sh", str(script), *argv], env={})
    assert result.returncode == 2
    assert "usage: vmic-context prolog|epilog" in result.stderr


def test_a_bad_time_limit_is_refused(script: Path, tmp_path: Path) -> None:
    cd = _cd(tmp_path)
    result = run_boot(
        ["/bin/sh", str(script), "prolog"],
        env={"VMIC_CONTEXT_DIR": str(cd), "VMIC_CONTEXT_TIMEOUT": "1; touch pwned"},
    )
    assert result.returncode == 2
    assert "whole seconds" in result.stderr
    assert not list(tmp_path.rglob("pwned*"))
