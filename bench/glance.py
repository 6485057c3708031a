"""Benchmark: registering one large image in Glance with `vmic cloud sync` against the client.

Starts a real Glance 33 on 127.0.0.1 (:class:`tests.support.glance.GlanceServer`: gunicorn,
one worker, the file store, SHA-512 multihash), from the virtual environment `make test`
builds. Builds a site that holds one image of ``--size`` bytes (default 1 GiB, raw, random
bytes): a throw-away dev CA and endorser, a signed list served from 127.0.0.1 by an aiohttp
static route in another process, `vmic site init` and `vmic subscribe --auto-approve` (the
library calls behind them), then a real `vmic sync` that downloads the image into the cache
and `vmic cloud add bench --os-cloud vmic-bench`, whose clouds.yaml entry acts as project
``ops`` with the roles ``member,reader`` (not timed). Then, for ``--rounds`` rounds (default
3), the order alternating from one round to the next, each as a process of its own, with
``OS_CLIENT_CONFIG_FILE`` naming the same clouds.yaml:

- vmic: ``python -m federation cloud sync --home HOME`` (interpreter start and imports,
  the site lock and store, the plan, create, stream the cached file, Glance's SHA-512 and
  size checked against the endorser's, the registry row);
- the client, on the very same cached file: what ``openstack image create --file FILE
  --disk-format raw --container-format bare NAME`` does (python-openstackclient is not
  installed; it is a thin layer over openstacksdk), with the Glance venv's Python and its
  openstacksdk: ``connect``, ``create_image(NAME, filename=FILE, disk_format="raw",
  container_format="bare", allow_duplicates=True)`` (create, then a PUT of the file), then
  ``get_image``. This openstacksdk computes no md5/sha256 of the file before the upload
  (``validate_checksum`` defaults to False), as the client runs it by default.

Each side's wall time is measured from outside, and its peak RSS by polling its
``/proc/<pid>/status`` ``VmHWM`` while it runs; for where the time goes, also its CPU time
(``wait4``) and Glance's during the run (gunicorn's process group, from ``/proc``), and
the start-up of ``python -m federation --help``. Between runs every image is deleted from
Glance (as an admin, with the files of its store) and vmic's registry rows are removed, so
every vmic round is the same first registration that really uploads, on the same site.
``os.sync()`` runs before each timed run (not timed). Glance's own checks apply to both:
each image must end ``active`` with the file's size and SHA-512.

Medians are compared. Targets: vmic <= 1.1x the client's time, vmic's peak RSS below
150 MB. Missing a target is reported, not fatal: the exit code is non-zero only when a
command or a check fails. Nothing leaves 127.0.0.1.

    .venv/bin/python bench/glance.py [--size BYTES] [--rounds N] [--profile]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchkit import (
    LIST_NAME,
    make_endorser,
    make_image,
    parse_size,
    rate,
    samples,
    serving,
    verdict,
    write_one_image_list,
)

from keys.errors import VmicError
from site_agent import admin
from site_agent.cloud.registry import Registry
from site_agent.home import SiteHome

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: ``python -m federation`` runs from here, and ``tests`` lives here."""
sys.path.insert(1, str(ROOT))  # `tests` is not installed; bench/ stays first on the path
from tests.support.glance import (  # noqa: E402
    GLANCE_VERSION,
    GlanceMissingError,
    GlanceServer,
    glance_bin_dir,
    glance_image,
)

GiB = 1024**3
MiB = 1024**2
MB = 1_000_000
RATIO_TARGET = 1.1
RSS_TARGET_MB = 150.0
CLOUD = "bench"
OS_CLOUD = "vmic-bench"
PROJECT = "ops"
ROLES = "member,reader"
ADMIN = "vmic-test-admin"
POLL_SECONDS = 0.002
COMMAND_TIMEOUT = 1800.0

# What `openstack image create --file FILE --disk-format raw --container-format bare NAME`
# calls (python-openstackclient, image/v2/image.py CreateImage._take_action_image), run with
# the Glance venv's Python; one JSON line on stdout.
_CLIENT = """\
import importlib.metadata, json, sys
import openstack
cloud, name, filename = sys.argv[1:4]
conn = openstack.connect(cloud=cloud)
image = conn.image.create_image(
    name=name, filename=filename, disk_format="raw", container_format="bare",
    allow_duplicates=True,
)
image = conn.image.get_image(image)
conn.close()
print(json.dumps({"id": image.id, "status": image.status,
                  "sdk": importlib.metadata.version("openstacksdk")}))
"""


class BenchError(Exception):
    """A command or a check failed: the run is not valid."""


# -- running a command, timed, with its peak RSS ----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    seconds: float
    cpu_seconds: float
    """The child's user and system CPU time (wait4), all its threads."""
    peak_rss_mb: float
    """The child's VmHWM, last read while it ran (it starts afresh at exec)."""
    stdout: str
    stderr: str
    returncode: int


def _high_water_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None  # a zombie: its memory is gone


def run_measured(argv: list[str], *, env: dict[str, str], cwd: Path, out: Path) -> Run:
    """Run ``argv`` to its end: a thread polls its VmHWM while this one waits for it
    (``wait4``, for its CPU time); killed after COMMAND_TIMEOUT."""
    stdout, stderr = out.with_suffix(".out"), out.with_suffix(".err")
    peak = [0]
    with stdout.open("wb") as o, stderr.open("wb") as e:
        start = time.perf_counter()
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=o, stderr=e, env=env, cwd=cwd
        )
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                kib = _high_water_kib(child.pid)
                if kib is not None:
                    peak[0] = max(peak[0], kib)
                done.wait(POLL_SECONDS)

        poller = threading.Thread(target=poll, daemon=True)
        watchdog = threading.Timer(COMMAND_TIMEOUT, child.kill)
        poller.start()
        watchdog.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        watchdog.cancel()
        done.set()
        poller.join()
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Run(
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=peak[0] * 1024 / MB,
        stdout=stdout.read_text(errors="replace"),
        stderr=stderr.read_text(errors="replace"),
        returncode=child.returncode,
    )


def group_cpu_seconds(pgid: int) -> float:
    """User and system CPU time so far of the live processes of process group ``pgid``."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def glance_pgid(server: GlanceServer) -> int:
    """gunicorn's process group (its master starts a session of its own)."""
    process = server._process  # GlanceServer does not expose it; read only
    if process is None:
        raise BenchError("Glance is not running")
    return process.pid


def settle() -> None:
    """Write back what earlier runs left dirty (Glance's store), so it lands on no one's time."""
    os.sync()


# -- the site ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    home: SiteHome
    sha512: str
    size: int

    @property
    def cached(self) -> Path:
        return self.home.images / self.sha512


def vmic(*args: str, env: dict[str, str]) -> str:
    """A vmic command as the console script runs it, in a process of its own; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "federation", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
        timeout=COMMAND_TIMEOUT,
    )
    if done.returncode != 0:
        raise BenchError(f"vmic {args[0]} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def build_site(workdir: Path, size: int, env: dict[str, str]) -> Site:
    """A site that holds one available raw image of ``size`` bytes, and the cloud added."""
    served = workdir / "served"
    served.mkdir()
    sha512 = make_image(served / "image.raw", size)
    endorser = make_endorser(workdir, datetime.now(UTC))
    home = SiteHome(workdir / "site")
    with serving(served, prefix="/files") as base:
        write_one_image_list(served, base, endorser, what="glance", sha512=sha512, size=size)
        admin.init_site(home, trust=endorser.ca_dir)
        admin.subscribe(
            home,
            f"{base}/{LIST_NAME}",
            pins=[endorser.pin],
            name="bench",
            auto_approve=True,
            now=datetime.now(UTC),
        )
        vmic("sync", "--home", str(home.root), env=env)
    (served / "image.raw").unlink()  # the site's cache holds the bytes now
    site = Site(home=home, sha512=sha512, size=size)
    if not site.cached.is_file() or site.cached.stat().st_size != size:
        raise BenchError("vmic sync exited 0 but the image is not in the cache")
    vmic("cloud", "add", CLOUD, "--os-cloud", OS_CLOUD, "--home", str(home.root), env=env)
    return site


def forget_registrations(home: SiteHome) -> None:
    """Remove vmic's registry rows (their images were deleted from Glance)."""
    with admin.locked_site(home, now=datetime.now(UTC), purpose="bench") as site:
        registry = Registry(site.store)
        with site.store.atomic():
            for row in registry.all(CLOUD):
                registry.forget(CLOUD, row.glance_id)


def registered_ids(home: SiteHome) -> list[str]:
    with admin.read_store(home) as store:
        return [row.glance_id for row in Registry(store).all(CLOUD) if row.state == "active"]


def check_in_glance(server: GlanceServer, glance_id: str, site: Site, who: str) -> None:
    """The image is active in Glance, owned by the project, with the file's size and SHA-512."""
    record = glance_image(server, ADMIN, glance_id)
    if record is None:
        raise BenchError(f"{who}: image {glance_id} is not in Glance")
    seen = (record.get("status"), record.get("size"), record.get("owner"))
    if seen != ("active", site.size, PROJECT):
        raise BenchError(f"{who}: image {glance_id} is {seen}, wanted active, {site.size}, ops")
    if (record.get("os_hash_algo"), record.get("os_hash_value")) != ("sha512", site.sha512):
        raise BenchError(f"{who}: Glance's hash of image {glance_id} is not the file's SHA-512")


# -- the two sides ----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Sides:
    vmic: list[Run] = field(default_factory=list)
    client: list[Run] = field(default_factory=list)
    vmic_glance_cpu: list[float] = field(default_factory=list)
    client_glance_cpu: list[float] = field(default_factory=list)
    """Glance's (gunicorn's) CPU seconds during each run."""
    sdk: str = "?"


def run_vmic(server: GlanceServer, site: Site, env: dict[str, str], workdir: Path) -> Run:
    argv = [sys.executable, "-m", "federation", "cloud", "sync", "--home", str(site.home.root)]
    settle()
    run = run_measured(argv, env=env, cwd=ROOT, out=workdir / "vmic")
    if run.returncode != 0 or "registered image" not in run.stdout:
        raise BenchError(f"vmic cloud sync exited {run.returncode}: {run.stdout}{run.stderr}")
    ids = registered_ids(site.home)
    if len(ids) != 1:
        raise BenchError(f"vmic cloud sync left {len(ids)} active registrations, wanted 1")
    check_in_glance(server, ids[0], site, "vmic")
    return run


def run_client(
    server: GlanceServer, site: Site, env: dict[str, str], workdir: Path, n: int
) -> tuple[Run, str]:
    python = str(server.bin_dir / "python")
    argv = [python, "-c", _CLIENT, OS_CLOUD, f"bench-client-{n}", str(site.cached)]
    settle()
    run = run_measured(argv, env=env, cwd=workdir, out=workdir / "client")
    if run.returncode != 0:
        raise BenchError(f"the client exited {run.returncode}: {run.stderr.strip()[-2000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    check_in_glance(server, str(result["id"]), site, "client")
    return run, str(result["sdk"])


def clean(server: GlanceServer, site: Site) -> None:
    """Every image out of Glance (and its store), vmic's registry rows gone (not timed)."""
    server.reset()
    forget_registrations(site.home)


def time_startup(env: dict[str, str], rounds: int) -> float:
    """Interpreter start and vmic's imports: ``python -m federation --help`` (median)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "federation", "--help"],
            check=True,
            capture_output=True,
            cwd=ROOT,
            env=env,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_import_openstack(python: str, env: dict[str, str]) -> float:
    """``import openstack`` alone, in a fresh interpreter (both sides pay it)."""
    code = "import time; t = time.perf_counter(); import openstack; print(time.perf_counter() - t)"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(done.stdout.strip())


def profile_vmic(site: Site, env: dict[str, str], workdir: Path) -> str:
    """One more vmic cloud sync under cProfile (its main thread does the upload)."""
    out = workdir / "vmic.prof"
    argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "federation"]
    argv += ["cloud", "sync", "--home", str(site.home.root)]
    settle()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    if done.returncode != 0:
        raise BenchError(f"profiled vmic cloud sync exited {done.returncode}: {done.stderr}")
    text = io.StringIO()
    stats = pstats.Stats(str(out), stream=text)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(30)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(15)
    return text.getvalue()


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time `vmic cloud sync` registering one image in a local Glance against what "
            "`openstack image create --file` does (openstacksdk) on the same file."
        )
    )
    parser.add_argument(
        "--size", type=parse_size, default=GiB, help="image size in bytes, or k/m/g (default 1g)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (medians)")
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of one more vmic cloud sync"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def child_env(clouds_yaml: Path) -> dict[str, str]:
    """The environment of every command: the bench's own, with only this clouds.yaml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON"))}
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds_yaml)
    return env


def measure(args: argparse.Namespace, workdir: Path, bin_dir: Path) -> None:
    size: int = args.size
    with GlanceServer(bin_dir, workdir / "glance", identity_ports=1) as server:
        clouds = server.write_clouds_yaml(workdir / "clouds.yaml", OS_CLOUD, PROJECT, ROLES)
        env = child_env(clouds)
        print(
            f"glance: Glance {GLANCE_VERSION} (gunicorn, 1 worker, 8 threads) on {server.url}, "
            "file store, SHA-512 multihash; clouds.yaml entry acts as project ops (member,reader)"
        )
        start = time.perf_counter()
        site = build_site(workdir, size, env)
        print(
            f"image: {size:,} bytes ({size / GiB:.2f} GiB), raw, random; site built and "
            f"`vmic sync` downloaded it ({time.perf_counter() - start:.1f} s, not timed); "
            f"`vmic cloud add {CLOUD} --os-cloud {OS_CLOUD}`"
        )
        sides = Sides()
        for n in range(args.rounds):
            order = ("vmic", "client") if n % 2 == 0 else ("client", "vmic")
            for side in order:
                before = group_cpu_seconds(glance_pgid(server))
                if side == "vmic":
                    sides.vmic.append(run_vmic(server, site, env, workdir))
                    cpu = sides.vmic_glance_cpu
                else:
                    run, sides.sdk = run_client(server, site, env, workdir, n)
                    sides.client.append(run)
                    cpu = sides.client_glance_cpu
                cpu.append(group_cpu_seconds(glance_pgid(server)) - before)
                clean(server, site)
        startup = time_startup(env, args.rounds)
        imports = time_import_openstack(sys.executable, env)
        profile = profile_vmic(site, env, workdir) if args.profile else None
    report(size, args.rounds, sides, startup, imports)
    if profile is not None:
        print("\ncProfile of one more `vmic cloud sync` (main thread):")
        print(profile.rstrip())


def report(size: int, rounds: int, sides: Sides, startup: float, imports: float) -> None:
    vmic_s = [r.seconds for r in sides.vmic]
    client_s = [r.seconds for r in sides.client]
    t_vmic, t_client = statistics.median(vmic_s), statistics.median(client_s)
    peak = max(r.peak_rss_mb for r in sides.vmic)
    client_peak = max(r.peak_rss_mb for r in sides.client)
    print(
        f"client: openstacksdk {sides.sdk} in the Glance venv, as `openstack image create "
        "--file` calls it (create_image with filename=, then get_image; no md5/sha256 of the "
        "file first: validate_checksum defaults to False)"
    )
    print(
        f"\nrounds: {rounds}, each side a process of its own, order alternating; medians [samples]"
    )
    print(f"vmic cloud sync:   {t_vmic:7.3f} s  {rate(size, t_vmic):>10}  [{samples(vmic_s)}]")
    print(
        f"client (sdk):      {t_client:7.3f} s  {rate(size, t_client):>10}  [{samples(client_s)}]"
    )
    ratio = t_vmic / t_client
    print(
        f"ratio vmic/client: {ratio:.3f}x  "
        f"(target <= {RATIO_TARGET:g}x: {verdict(ratio <= RATIO_TARGET)})"
    )
    print(
        f"vmic peak RSS:     {peak:.1f} MB  (target < {RSS_TARGET_MB:g} MB: "
        f"{verdict(peak < RSS_TARGET_MB)}); the client's {client_peak:.1f} MB"
    )
    print(
        f"vmic - client:     {t_vmic - t_client:+.3f} s; CPU seconds (user+system, medians): "
        f"vmic {statistics.median(r.cpu_seconds for r in sides.vmic):.2f}, the client "
        f"{statistics.median(r.cpu_seconds for r in sides.client):.2f}; Glance's during "
        f"vmic's runs {statistics.median(sides.vmic_glance_cpu):.2f}, during the client's "
        f"{statistics.median(sides.client_glance_cpu):.2f}"
    )
    print(
        f"start-up: `python -m federation --help` takes {startup:.3f} s, "
        f"{100 * startup / t_vmic:.0f}% of vmic's time; `import openstack` (lazy in vmic, "
        f"paid by both sides) {imports:.3f} s more"
    )


def machine() -> str:
    load = os.getloadavg()[0]
    return f"machine: {os.cpu_count()} CPUs, 1-minute load average {load:.2f} at the start"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bin_dir = glance_bin_dir()
    except GlanceMissingError as exc:
        print(f"{exc}: `make test` builds it (or set VMIC_GLANCE_VENV)", file=sys.stderr)
        return 2
    print(machine())
    with tempfile.TemporaryDirectory(prefix="vmic-bench-glance-") as tmp:
        try:
            measure(args, Path(tmp), bin_dir)
        except (BenchError, VmicError, RuntimeError, subprocess.SubprocessError) as exc:
            print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
