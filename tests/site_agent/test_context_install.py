"""`vmic context install`: script and units land in an image tree, enabled, idempotent, safe.

The units are checked by ``systemd-analyze verify --root`` where the tool
exists, with its warnings treated as failures (it exits 0 on most of them),
in a tree that holds this machine's systemd units as an image would.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from keys.errors import ConfigError
from site_agent.context import install

ANALYZE = shutil.which("systemd-analyze")
HOST_UNITS = Path("/usr/lib/systemd/system")
PROLOG_UNIT, EPILOG_UNIT = install.UNITS


def _tree(root: Path) -> dict[str, tuple[str, bytes | str]]:
    found: dict[str, tuple[str, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = ("link", str(path.readlink()))
        elif path.is_file():
            found[name] = (f"{path.stat().st_mode & 0o7777:o}", path.read_bytes())
    return found


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(install.unit_text(name))
    return parser


def test_install_writes_the_script_units_and_links(tmp_path: Path) -> None:
    done = install.install(tmp_path)
    assert {(str(d.path), d.action) for d in done} == {
        ("usr/libexec/vmic-context", "written"),
        (f"etc/systemd/system/{PROLOG_UNIT}", "written"),
        (f"etc/systemd/system/{EPILOG_UNIT}", "written"),
        (f"etc/systemd/system/multi-user.target.wants/{PROLOG_UNIT}", "linked"),
        (f"etc/systemd/system/multi-user.target.wants/{EPILOG_UNIT}", "linked"),
    }
    tree = _tree(tmp_path)
    assert tree["usr/libexec/vmic-context"] == ("755", install.script_text().encode())
    assert tree[f"etc/systemd/system/{PROLOG_UNIT}"] == (
        "644",
        install.unit_text(PROLOG_UNIT).encode(),
    )
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    assert (wants / PROLOG_UNIT).readlink() == Path(f"../{PROLOG_UNIT}")
    assert (wants / EPILOG_UNIT).resolve() == tmp_path / f"etc/systemd/system/{EPILOG_UNIT}"


def test_install_twice_changes_nothing(tmp_path: Path) -> None:
    install.install(tmp_path)
    before = _tree(tmp_path)
    again = install.install(tmp_path)
    assert {d.action for d in again} == {"unchanged"}
    assert _tree(tmp_path) == before


def test_install_repairs_a_changed_file_and_mode(tmp_path: Path) -> None:
    install.install(tmp_path)
    script = tmp_path / install.SCRIPT_PATH
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o644)
    done = {str(d.path): d.action for d in install.install(tmp_path)}
    assert done["usr/libexec/vmic-context"] == "written"
    assert script.read_text() == install.script_text()
    assert script.stat().st_mode & 0o777 == 0o755


def test_a_link_out_of_the_tree_is_refused(tmp_path: Path) -> None:
    root, host_etc = tmp_path / "root", tmp_path / "host-etc"
    root.mkdir()
    host_etc.mkdir()
    (root / "etc").symlink_to(host_etc)  # as an absolute /etc link would point into the build host
    with pytest.raises(ConfigError, match="outside"):
        install.install(root)
    assert list(host_etc.iterdir()) == []


def test_a_link_to_a_file_out_of_the_tree_is_not_written_through(tmp_path: Path) -> None:
    root, victim = tmp_path / "root", tmp_path / "victim"
    (root / "usr/libexec").mkdir(parents=True)
    victim.write_text("precious")
    (root / "usr/libexec/vmic-context").symlink_to(victim)
    with pytest.raises(ConfigError, match="out of"):
        install.install(root)
    assert victim.read_text() == "precious"


def test_a_link_inside_the_tree_is_followed(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/libexec").symlink_to("lib")
    install.install(tmp_path)
    assert (tmp_path / "usr/lib/vmic-context").read_text() == install.script_text()


def test_a_masked_unit_is_left_masked(tmp_path: Path) -> None:
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / PROLOG_UNIT).symlink_to(os.devnull)
    with pytest.raises(ConfigError, match="masked"):
        install.install(tmp_path)
    assert (units / PROLOG_UNIT).readlink() == Path(os.devnull)


def test_root_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        install.install(tmp_path / "missing")


def test_prolog_runs_before_the_network_and_epilog_after_it() -> None:
    prolog, epilog = _unit(PROLOG_UNIT), _unit(EPILOG_UNIT)
    assert "network-pre.target" in prolog["Unit"]["Before"].split()
    assert "network-pre.target" in prolog["Unit"]["Wants"].split()
    assert prolog["Unit"]["DefaultDependencies"] == "no"
    assert "network-online.target" in epilog["Unit"]["After"].split()
    assert "network-online.target" in epilog["Unit"]["Wants"].split()
    assert PROLOG_UNIT in epilog["Unit"]["After"].split()
    for unit, phase in ((prolog, "prolog"), (epilog, "epilog")):
        assert unit["Service"]["Type"] == "oneshot"
        assert unit["Service"]["ExecStart"] == f"/{install.SCRIPT_PATH} {phase}"
        assert int(unit["Service"]["TimeoutStartSec"]) > 300 + 10  # the script's own limit + kill
        assert unit["Install"]["WantedBy"] == "multi-user.target"


def _image_root(root: Path) -> Path:
    """A tree with systemd's own units (sysinit.target, ...), as an image has them."""
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    install.install(root)
    return root


needs_analyze = pytest.mark.skipif(
    ANALYZE is None or not HOST_UNITS.is_dir(), reason="systemd-analyze or systemd units missing"
)


@needs_analyze
def test_systemd_analyze_verifies_the_installed_units(tmp_path: Path) -> None:
    assert ANALYZE is not None
    _image_root(tmp_path)
    for unit in install.UNITS:
        result = subprocess.run(
            [ANALYZE, "verify", "--man=no", f"--root={tmp_path}", f"/etc/systemd/system/{unit}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, ""), unit


@needs_analyze
def test_systemd_analyze_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit with a typo, verified the same way, gives warnings."""
    assert ANALYZE is not None
    _image_root(tmp_path)
    unit = tmp_path / "etc/systemd/system" / PROLOG_UNIT
    unit.write_text(unit.read_text().replace("Type=oneshot", "Type=oneshoot"))
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", f"--root={tmp_path}", f"/etc/systemd/system/{PROLOG_UNIT}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "oneshoot" in result.stderr
