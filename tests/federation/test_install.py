"""vmic installed outside the source tree, and the units and cron line shipped in contrib/.

The wheel is built from a copy of the source tree with this venv's own
setuptools (no build isolation, no network), must hold every module and
data file of the four packages, and is installed with ``pip --target`` into
a folder of its own. Its ``vmic`` then runs from a folder outside the tree,
its dependencies taken from this venv's site-packages through PYTHONPATH.
The interpreter runs with ``-S``: this venv's site-packages holds the
editable install, whose import hook would quietly fill anything missing
from the wheel out of the source tree.

The systemd units are checked by the real ``systemd-analyze verify``, with
``--root`` set to a tree that holds this machine's systemd units, the
contrib units unchanged in ``/etc/systemd/system`` and the installed vmic
at ``/usr/local/bin/vmic``, where the units expect it. The tool exits 0 on
most mistakes (an unknown directive, a bad value), so anything it prints
counts as a failure; the broken-unit tests show that it does print.
Outside `make test` these tests skip when systemd-analyze is missing; with
``VMIC_REQUIRE_INTEROP=1`` (which `make test` sets) they fail instead.
"""

from __future__ import annotations

import argparse
import configparser
import itertools
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tomllib
import urllib.request
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path

import pytest

from federation.cli import build_parser
from site_agent.context import install as context_install
from tests.support.ca import Identity, TestCA, write_trust_dir
from tests.support.lists import image_list, sign

PROJECT = Path(__file__).resolve().parents[2]
PACKAGES = ("keys", "feeds", "site_agent", "federation")
CONTRIB = PROJECT / "contrib"
UNIT_DIR = CONTRIB / "systemd"
UNITS = ("vmic-sync.service", "vmic-sync.timer", "vmic-serve.service")
SERVICES = ("vmic-sync.service", "vmic-serve.service")
CRON_FILE = CONTRIB / "cron" / "vmic"
SYSUSERS = CONTRIB / "sysusers.d" / "vmic.conf"
TMPFILES = CONTRIB / "tmpfiles.d" / "vmic.conf"
EXECUTABLE = "/usr/local/bin/vmic"
SITE_HOME = Path("/var/lib/vmic")
USER = "vmic"
TIMEOUT = 120
"""Seconds for one build, install or command."""

ANALYZE = shutil.which("systemd-analyze")
HOST_UNITS = Path("/usr/lib/systemd/system")
MIN_SETUPTOOLS = 77  # the `license` string of pyproject.toml (PEP 639)
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--quiet"]
"""pip of this venv; its commands below also take --no-index: nothing comes from the network."""

HARDENING = {
    "User": USER,
    "Group": USER,
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ReadWritePaths": str(SITE_HOME),
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "UMask": "0027",
}

# Runs argv[1:] with the kernel's memory-deny-write-execute set (PR_SET_MDWE, Linux 6.3),
# which the process keeps across exec: what MemoryDenyWriteExecute=yes enforces (with a
# seccomp filter in systemd 252). Exit 75: the kernel has no such switch.
_MDWE = """
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(75)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    os.execv(sys.argv[1], sys.argv[1:])
sys.exit(76)
"""
_NO_MDWE = 75
_MDWE_NOT_ENFORCED = 76

# Imports what the commands use, reads a data file, prints where every module came from.
_PROBE = """
import json, sys
import federation.cli, site_agent.context.install as ci
ci.script_text()
roots = ("keys", "feeds", "site_agent", "federation")
files = {n: m.__file__ for n, m in sorted(sys.modules.items())
         if n.split(".")[0] in roots and getattr(m, "__file__", None)}
finders = [getattr(f, "__module__", "") or type(f).__module__ for f in sys.meta_path]
print(json.dumps({"files": files, "path": sys.path, "finders": finders}))
"""


def _missing(what: str, *, installer: str = "`make test`") -> None:
    """Skip, or fail under `make test` (``VMIC_REQUIRE_INTEROP=1``)."""
    message = f"{what}; {installer} installs it"
    if os.environ.get("VMIC_REQUIRE_INTEROP") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _run(
    command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, check=False, cwd=cwd, env=env
    )


# -- the wheel, and vmic installed from it ------------------------------------------------


def _copy_ignore(folder: str, names: list[str]) -> set[str]:
    """What a build must not see: caches, venvs, earlier build output."""
    top = Path(folder) == PROJECT
    return {
        n
        for n in names
        if n == "__pycache__"
        or n.endswith((".pyc", ".egg-info"))
        or (top and (n.startswith(".") or n in ("build", "dist")))
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a fresh copy of the tree (no stale build/ in it)."""
    try:
        setuptools = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        setuptools = "0"
    if int(setuptools.split(".")[0]) < MIN_SETUPTOOLS:
        _missing(f"setuptools>={MIN_SETUPTOOLS} is not in this venv (found {setuptools})")
    source = tmp_path_factory.mktemp("install") / "source"
    shutil.copytree(PROJECT, source, ignore=_copy_ignore)
    out = source.parent / "wheel"
    built = _run(
        [
            *PIP,
            "wheel",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ]
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("vmic-*.whl")
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Installed:
    """vmic installed from the wheel into ``target`` (``pip install --target``)."""

    target: Path
    script: Path
    interpreter: list[str]
    env: dict[str, str]
    workdir: Path

    def argv(self, *args: object) -> list[str]:
        """The console script run by its own interpreter, without site (see the docstring)."""
        return [*self.interpreter, "-S", str(self.script), *map(str, args)]

    def vmic(self, *args: object) -> subprocess.CompletedProcess[str]:
        return _run(self.argv(*args), cwd=self.workdir, env=self.env)


@pytest.fixture(scope="module")
def installed(wheel: Path) -> Installed:
    target = wheel.parent.parent / "target"
    done = _run([*PIP, "install", "--no-index", "--no-deps", "--target", str(target), str(wheel)])
    assert done.returncode == 0, done.stdout + done.stderr
    script = target / "bin" / "vmic"
    assert os.access(script, os.X_OK)
    first = script.read_text().splitlines()[0]
    assert first.startswith("#!")
    interpreter = shlex.split(first[2:])
    assert Path(interpreter[0]).is_file()
    # the program from the target, its dependencies from this venv's site-packages
    site_packages = [sysconfig.get_paths()[kind] for kind in ("purelib", "platlib")]
    paths = dict.fromkeys([str(target), *site_packages])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VMIC_"))}
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PATH"] = os.pathsep.join([str(target / "bin"), env.get("PATH", "/usr/bin:/bin")])
    workdir = wheel.parent.parent / "elsewhere"
    workdir.mkdir()
    assert not workdir.resolve().is_relative_to(PROJECT)
    return Installed(
        target=target, script=script, interpreter=interpreter, env=env, workdir=workdir
    )


def _source_files() -> set[str]:
    """Every file of the four packages in the source tree (modules and data alike)."""
    return {
        str(path.relative_to(PROJECT))
        for package in PACKAGES
        for path in (PROJECT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = {n for n in archive.namelist() if not n.endswith("/")}
        dist_info = {n for n in names if n.split("/")[0].endswith(".dist-info")}
        packaged = names - dist_info
        source = _source_files()
        assert sorted(source - packaged) == [], "missing from the wheel"
        assert sorted(packaged - source) == [], "in the wheel but not in the source tree"
        copied = wheel.parent.parent / "source"
        for name in sorted(packaged):
            assert archive.read(name) == (copied / name).read_bytes(), name
        # what the code opens with importlib.resources, and the type-checking marker
        data = {n for n in packaged if not n.endswith(".py")}
        assert {f"site_agent/context/{n}" for n in (*context_install.UNITS, "vmic-context.sh")} <= (
            data
        )
        assert {f"{p}/py.typed" for p in PACKAGES} <= data
        info = next(n.split("/")[0] for n in dist_info)
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        requires = [
            line.removeprefix("Requires-Dist: ")
            for line in archive.read(f"{info}/METADATA").decode().splitlines()
            if line.startswith("Requires-Dist: ") and "extra ==" not in line
        ]
    assert re.search(r"^\[console_scripts\]\nvmic = federation\.cli:run$", entry_points, re.M)
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    assert sorted(requires) == sorted(project["dependencies"])


@pytest.fixture
def trust(tmp_path: Path, root_ca: TestCA) -> Path:
    return write_trust_dir(tmp_path / "trust", [root_ca])


@pytest.fixture
def signed_list(tmp_path: Path, endorser: Identity, now: datetime) -> Path:
    path = tmp_path / "list.atom"
    path.write_bytes(sign(image_list(endorser, now=now), endorser))
    return path


def _verify_args(signed_list: Path, trust: Path, endorser: Identity) -> list[object]:
    return [
        "verify",
        signed_list,
        "--trust",
        trust,
        "--endorser-dn",
        endorser.subject.slash(),
        "--ca-dn",
        endorser.issuer.slash(),
    ]


def test_the_installed_vmic_works_without_the_source_tree(
    installed: Installed, tmp_path: Path, trust: Path, signed_list: Path, endorser: Identity
) -> None:
    version = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["version"]
    # as cron and systemd start it: the file itself, found on PATH
    direct = _run(["vmic", "--version"], cwd=installed.workdir, env=installed.env)
    assert (direct.returncode, direct.stdout) == (0, f"vmic {version}\n"), direct.stderr

    home = tmp_path / "home"
    done = installed.vmic("site", "init", "--home", home, "--trust", trust)
    assert done.returncode == 0, done.stderr
    assert (home / "config.toml").is_file()
    assert (home / "vmic.db").is_file()

    check = installed.vmic("site", "check", "--home", home)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.rstrip().endswith("site check: ok")

    sync = installed.vmic("sync", "--home", home)  # the cron line's command: silent when well
    assert (sync.returncode, sync.stdout, sync.stderr) == (0, "", "")

    verified = installed.vmic(*_verify_args(signed_list, trust, endorser))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    image = tmp_path / "image"
    image.mkdir()
    context = installed.vmic("context", "install", "--root", image)  # package data files
    assert context.returncode == 0, context.stderr
    assert (image / "usr/libexec/vmic-context").read_bytes() == (
        PROJECT / "site_agent/context/vmic-context.sh"
    ).read_bytes()

    probe = _run(
        [*installed.interpreter, "-S", "-c", _PROBE], cwd=installed.workdir, env=installed.env
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    files = {name: Path(file) for name, file in found["files"].items()}
    assert files["federation"] == installed.target / "federation" / "__init__.py"
    assert files["site_agent.context.install"] == installed.target / "site_agent/context/install.py"
    assert [n for n, f in files.items() if not f.is_relative_to(installed.target)] == []
    holding = {p for p in found["path"] for n in PACKAGES if (installed.workdir / p / n).is_dir()}
    assert holding == {str(installed.target)}  # neither the source tree nor anything else
    assert [f for f in found["finders"] if "editable" in f] == []  # nor the editable install


def _serve_once(argv: list[str], installed: Installed) -> None:
    """Start `vmic serve`, fetch /healthz, stop it with SIGTERM as systemd does: exit 0."""
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=installed.workdir,
        env=installed.env,
    ) as process:
        assert process.stdout is not None
        try:
            ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
            line = process.stdout.readline() if ready else ""
            match = re.search(r"listening on (http://\S+)", line)
            assert match, f"vmic serve said {line!r}"
            with no_proxy.open(f"{match[1]}/healthz", timeout=TIMEOUT) as response:
                assert response.status == 200
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err
    assert out.endswith("vmic serve: stopped\n"), out


def test_the_installed_vmic_serve_stops_cleanly_on_sigterm(
    installed: Installed, tmp_path: Path, trust: Path
) -> None:
    home = tmp_path / "home"
    assert installed.vmic("site", "init", "--home", home, "--trust", trust).returncode == 0
    _serve_once(installed.argv("serve", "--home", home, "--bind", "127.0.0.1:0"), installed)


def test_the_installed_vmic_runs_with_memory_deny_write_execute(
    installed: Installed, tmp_path: Path, trust: Path, signed_list: Path, endorser: Identity
) -> None:
    """What the units' MemoryDenyWriteExecute=yes allows is enough for sync, verify, serve."""

    def guarded(*args: object) -> list[str]:
        return [*installed.interpreter, "-S", "-c", _MDWE, *installed.argv(*args)]

    first = _run(guarded("--version"), cwd=installed.workdir, env=installed.env)
    if first.returncode == _NO_MDWE:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3)")
    assert first.returncode != _MDWE_NOT_ENFORCED, (
        "PR_SET_MDWE was set, yet writable executable memory was not refused"
    )
    assert first.returncode == 0, first.stderr
    home = tmp_path / "home"
    for args in (
        ["site", "init", "--home", home, "--trust", trust],
        ["site", "check", "--home", home],
        ["sync", "--home", home],
        _verify_args(signed_list, trust, endorser),
    ):
        done = _run(guarded(*args), cwd=installed.workdir, env=installed.env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    _serve_once(guarded("serve", "--home", home, "--bind", "127.0.0.1:0"), installed)


# -- the units, the cron line, the user and the site home ---------------------------------


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNIT_DIR / name).read_text())
    return parser


def _command(line: str) -> tuple[str, argparse.Namespace]:
    """The executable and what the vmic command line makes of the rest."""
    argv = shlex.split(line)
    return argv[0], build_parser().parse_args(argv[1:])


def test_the_units_run_vmic_as_its_own_user_in_a_sandbox() -> None:
    for name in SERVICES:
        service = _unit(name)["Service"]
        assert {key: service.get(key) for key in HARDENING} == HARDENING, name
        executable, args = _command(service["ExecStart"])
        assert executable == EXECUTABLE
        assert args.home == SITE_HOME, name

    sync = _unit("vmic-sync.service")
    assert sync["Service"]["Type"] == "oneshot"
    assert _command(sync["Service"]["ExecStart"])[1].command == "sync"
    assert "Install" not in sync  # started by the timer only

    serve = _unit("vmic-serve.service")
    assert _command(serve["Service"]["ExecStart"])[1].command == "serve"
    assert serve["Service"]["Restart"] == "on-failure"
    assert serve["Install"]["WantedBy"] == "multi-user.target"

    timer = _unit("vmic-sync.timer")
    assert timer["Timer"].get("Unit", "vmic-sync.service") == "vmic-sync.service"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_cron_line_runs_the_units_command_as_vmic_every_15_minutes() -> None:
    text = CRON_FILE.read_text()
    assert text.endswith("\n")  # cron ignores a last line without one
    assert re.fullmatch(r"[A-Za-z0-9_-]+", CRON_FILE.name)  # run-parts skips names with dots
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    settings = [line for line in lines if re.match(r"[A-Z_]+=", line)]
    jobs = [line for line in lines if line not in settings]
    assert len(jobs) == 1
    fields = jobs[0].split(maxsplit=6)
    assert fields[:5] == ["*/15", "*", "*", "*", "*"]
    assert fields[5] == USER
    assert "%" not in fields[6]  # cron turns % into a new line
    executable, args = _command(fields[6])
    assert executable == EXECUTABLE
    assert (args.command, args.home) == ("sync", SITE_HOME)
    assert fields[6] == _unit("vmic-sync.service")["Service"]["ExecStart"]
    path = dict(s.split("=", 1) for s in settings)["PATH"]
    assert str(Path(EXECUTABLE).parent) in path.split(":")


@pytest.fixture
def analyze() -> str:
    if ANALYZE is None:
        _missing("systemd-analyze (Debian package systemd) is not installed", installer=".ci/run")
    if not HOST_UNITS.is_dir():
        _missing(f"{HOST_UNITS} (Debian package systemd) is missing", installer=".ci/run")
    assert ANALYZE is not None
    return ANALYZE


@pytest.fixture
def unit_root(tmp_path: Path, installed: Installed) -> Path:
    """A tree as a site's machine has it: systemd's units, vmic's, and vmic where they say."""
    root = tmp_path / "root"
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in UNITS:
        shutil.copyfile(UNIT_DIR / name, units / name)
    executable = root / EXECUTABLE.lstrip("/")
    executable.parent.mkdir(parents=True)
    shutil.copyfile(installed.script, executable)
    executable.chmod(0o755)
    return root


def _verify(analyze: str, root: Path) -> subprocess.CompletedProcess[str]:
    return _run(
        [analyze, "verify", "--man=no", f"--root={root}"]
        + [f"/etc/systemd/system/{name}" for name in UNITS]
    )


def _clean(result: subprocess.CompletedProcess[str]) -> bool:
    """systemd-analyze exits 0 on most mistakes: only silence means a good unit."""
    return (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_systemd_analyze_verifies_the_shipped_units(analyze: str, unit_root: Path) -> None:
    result = _verify(analyze, unit_root)
    assert _clean(result), result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "good", "bad", "complaint"),
    [
        pytest.param(
            "vmic-sync.service",
            "ProtectSystem=strict",
            "ProtectSytem=strict",
            "Unknown key 'ProtectSytem'",
            id="misspelt-directive",
        ),
        pytest.param(
            "vmic-sync.service",
            "Type=oneshot",
            "Type=oneshoot",
            "Failed to parse service type",
            id="bad-type",
        ),
        pytest.param(
            "vmic-serve.service",
            "Restart=on-failure",
            "Restart=on-failur",
            "Failed to parse service restart specifier",
            id="bad-restart",
        ),
        pytest.param(
            "vmic-sync.timer",
            "Persistent=true",
            "Persistent=ture",
            "Failed to parse boolean value",
            id="bad-boolean",
        ),
        pytest.param(
            "vmic-sync.timer",
            "OnCalendar=*:0/15",
            "OnCalendar=every 15 minutes",
            "Failed to parse calendar specification",
            id="bad-calendar",
        ),
    ],
)
def test_systemd_analyze_fails_a_broken_unit(
    analyze: str, unit_root: Path, name: str, good: str, bad: str, complaint: str
) -> None:
    unit = unit_root / "etc/systemd/system" / name
    text = unit.read_text()
    assert text.count(f"\n{good}\n") == 1
    unit.write_text(text.replace(f"\n{good}\n", f"\n{bad}\n"))
    result = _verify(analyze, unit_root)
    assert not _clean(result)
    assert complaint in result.stderr


def test_systemd_analyze_fails_units_whose_vmic_is_missing(analyze: str, unit_root: Path) -> None:
    (unit_root / EXECUTABLE.lstrip("/")).unlink()
    result = _verify(analyze, unit_root)
    assert not _clean(result)
    for name in SERVICES:
        assert f"{name}: Command {EXECUTABLE} is not executable" in result.stderr


def _timespan_us(analyze: str, span: str) -> int:
    done = _run([analyze, "timespan", span])
    assert done.returncode == 0, done.stderr
    match = re.search(r"μs: (\d+)", done.stdout)
    assert match, done.stdout
    return int(match[1])


def test_the_timer_runs_the_sync_every_15_minutes_spread_over_the_interval(
    analyze: str,
) -> None:
    timer = _unit("vmic-sync.timer")["Timer"]
    done = _run(
        [analyze, "calendar", "--iterations=4", timer["OnCalendar"]],
        env={**os.environ, "TZ": "UTC"},
    )
    assert done.returncode == 0, done.stderr
    stamps = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", done.stdout)
    times = [datetime.strptime(f"{s} +0000", "%Y-%m-%d %H:%M:%S %z") for s in stamps]
    assert len(times) == 4
    assert {b - a for a, b in itertools.pairwise(times)} == {timedelta(minutes=15)}
    delay = _timespan_us(analyze, timer["RandomizedDelaySec"])
    assert 0 < delay <= _timespan_us(analyze, "15min")


def test_sysusers_and_tmpfiles_make_the_user_and_the_site_home(tmp_path: Path) -> None:
    sysusers, tmpfiles = shutil.which("systemd-sysusers"), shutil.which("systemd-tmpfiles")
    if sysusers is None or tmpfiles is None:
        _missing(
            "systemd-sysusers/systemd-tmpfiles (Debian package systemd) are not installed",
            installer=".ci/run",
        )
    assert sysusers is not None
    assert tmpfiles is not None
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles gives the folder to vmic: needs root")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")

    made = _run([sysusers, f"--root={tmp_path}", str(SYSUSERS)])
    assert made.returncode == 0, made.stderr
    users = {
        e[0]: e for e in (line.split(":") for line in (etc / "passwd").read_text().splitlines())
    }
    groups = {
        e[0]: e for e in (line.split(":") for line in (etc / "group").read_text().splitlines())
    }
    user = users[USER]
    assert user[5] == str(SITE_HOME)
    assert user[6].endswith("nologin")
    assert groups[USER][2] == user[3]

    created = _run([tmpfiles, f"--root={tmp_path}", "--create", str(TMPFILES)])
    assert (created.returncode, created.stderr) == (0, ""), created.stderr
    home = (tmp_path / SITE_HOME.relative_to("/")).stat()
    assert (home.st_mode & 0o7777, home.st_uid, home.st_gid) == (
        0o750,
        int(user[2]),
        int(user[3]),
    )


def test_the_install_guide_names_every_contrib_file() -> None:
    guide = (PROJECT / "docs" / "install.md").read_text()
    shipped = sorted(str(p.relative_to(PROJECT)) for p in CONTRIB.rglob("*") if p.is_file())
    assert len(shipped) == len(UNITS) + 3
    assert [name for name in shipped if name not in guide] == []
