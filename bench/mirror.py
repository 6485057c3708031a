"""Benchmark: mirroring one large image with vmic against ``curl && sha512sum`` and the hash limit.

Writes one image of ``--size`` random bytes (default 1 GiB) into a temporary
folder and serves it on 127.0.0.1 from an aiohttp static route (sendfile) in a
separate process, so the server takes no CPU time, GIL or memory from the
measured side. Then, for ``--rounds`` rounds (default 3), alternating within
each round, it times:

- vmic: in a fresh child process, :meth:`site_agent.fetch.Fetcher.download`
  (receive, SHA-512 while streaming, write to ``cache/partial``, fsync the
  file and its folder) and :meth:`site_agent.cache.Cache.install` (rename,
  folder fsync). The child reports its own wall time, CPU time and peak RSS
  (``VmHWM``), so interpreter start and imports are not timed;
- the baseline an admin scripts by hand: ``curl -s -o FILE URL`` and then
  ``sha512sum FILE``, as two subprocesses against the same server and URL;
- the limit: :func:`hashlib.sha512` over the same bytes already in memory
  (only the hashing is timed);
- with ``--sync`` (the default): a real ``vmic sync`` (``python -m
  federation sync``) of a site subscribed to a signed list that approves the
  image, the cached copy removed before each round, so each round downloads
  it again; reported separately, as it includes interpreter start, the list
  fetch and verification and the store.

Medians are compared. Targets: vmic <= 0.8x the baseline's time, vmic within
1.3x of the in-memory hash, vmic's peak RSS below 150 MB. Missing a target is
reported, not fatal: the exit code is non-zero only when a download or a
digest check fails. Nothing leaves 127.0.0.1.

    .venv/bin/python bench/mirror.py [--size BYTES] [--rounds N] [--no-sync] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import multiprocessing
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

from benchkit import (
    IMAGE_NAME,
    LIST_NAME,
    make_endorser,
    make_image,
    parse_size,
    rate,
    samples,  # bench/benchkit.py, next to this script
    serving,
    verdict,
    write_one_image_list,
)

from keys.dn import DistinguishedName
from keys.errors import VmicError
from keys.xmlsig import SignerPin
from site_agent import admin
from site_agent.cache import Cache
from site_agent.fetch import Fetcher
from site_agent.home import SiteHome

GiB = 1024**3
MiB = 1024**2
MB = 1_000_000
CHUNK = 4 * MiB
BASELINE_RATIO_TARGET = 0.8
HASH_RATIO_TARGET = 1.3
RSS_TARGET_MB = 150.0


class BenchError(Exception):
    """A download, a digest or a command failed: the run is not valid."""


# -- the image and its server (another process) -------------------------------------


# -- vmic, in a child process -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class VmicJob:
    url: str
    size: int
    sha512: str
    home: str
    profile: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class VmicResult:
    seconds: float
    """Download (with its fsyncs) and install, as the child measured them."""
    download: float
    install: float
    cpu_user: float
    cpu_system: float
    rss_before_mb: float
    """VmRSS of the child before the download: the interpreter and its imports."""
    peak_rss_mb: float
    """VmHWM of the child after the download and install (its own high-water mark; the
    kernel's ru_maxrss of a child would include this process's, see _SYNC_WRAPPER)."""
    profile: str | None
    error: str | None


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def _vmic_child(job: VmicJob, conn: Connection) -> None:
    try:
        conn.send(_vmic_mirror(job))
    except (VmicError, OSError) as exc:
        conn.send(
            VmicResult(
                seconds=0.0,
                download=0.0,
                install=0.0,
                cpu_user=0.0,
                cpu_system=0.0,
                rss_before_mb=0.0,
                peak_rss_mb=0.0,
                profile=None,
                error=f"{type(exc).__name__}: {exc}",
            )
        )
    finally:
        conn.close()


async def _download(url: str, *, partial: Path, size: int, sha512: str) -> None:
    async with Fetcher() as fetcher:
        await fetcher.download(url, partial=partial, size=size, sha512=sha512)


def _vmic_mirror(job: VmicJob) -> VmicResult:
    cache = Cache(SiteHome(Path(job.home)))
    partial = cache.partial(job.sha512)
    rss_before = _proc_status_mb("VmRSS")
    profiler = cProfile.Profile() if job.profile else None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    asyncio.run(_download(job.url, partial=partial, size=job.size, sha512=job.sha512))
    downloaded = time.perf_counter()
    target = cache.install(partial, job.sha512)
    done = time.perf_counter()
    if profiler is not None:
        profiler.disable()
    after = resource.getrusage(resource.RUSAGE_SELF)
    if target.stat().st_size != job.size:
        raise OSError(f"{target} has {target.stat().st_size} bytes, expected {job.size}")
    text = None
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(25)
        stats.sort_stats(pstats.SortKey.TIME).print_stats(15)
        text = out.getvalue()
    return VmicResult(
        seconds=done - start,
        download=downloaded - start,
        install=done - downloaded,
        cpu_user=after.ru_utime - usage.ru_utime,
        cpu_system=after.ru_stime - usage.ru_stime,
        rss_before_mb=rss_before,
        peak_rss_mb=_proc_status_mb("VmHWM"),
        profile=text,
        error=None,
    )


def settle() -> None:
    """Before each timed step: write back what earlier steps left dirty and let the file
    system finish freeing deleted files (with ``discard`` mounts that also means TRIM), so
    that one step's leftovers do not land on the next one's time."""
    os.sync()


def empty_cache(home: SiteHome) -> None:
    for folder in (home.images, home.partial):
        for path in folder.iterdir():
            path.unlink()


def run_vmic(job: VmicJob) -> VmicResult:
    """One mirror by vmic in a fresh (spawned) process; the cache is emptied first."""
    empty_cache(SiteHome(Path(job.home)))
    settle()
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    process = ctx.Process(target=_vmic_child, args=(job, theirs))
    process.start()
    theirs.close()
    try:
        result = mine.recv()
    except EOFError as exc:
        raise BenchError(f"the vmic child died (exit {process.exitcode})") from exc
    finally:
        mine.close()
        process.join()
    if not isinstance(result, VmicResult):
        raise BenchError(f"the vmic child sent {type(result).__name__}")
    if result.error is not None:
        raise BenchError(f"vmic download failed: {result.error}")
    return result


# -- the baseline and the limit -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineResult:
    curl: float
    sha512sum: float

    @property
    def seconds(self) -> float:
        return self.curl + self.sha512sum


def run_baseline(url: str, out: Path, sha512: str) -> BaselineResult:
    """``curl -s -o FILE URL && sha512sum FILE``; FILE is removed first (not timed)."""
    out.unlink(missing_ok=True)
    settle()
    start = time.perf_counter()
    subprocess.run(["curl", "-s", "-o", str(out), url], check=True)
    fetched = time.perf_counter()
    summed = subprocess.run(["sha512sum", str(out)], check=True, capture_output=True)
    done = time.perf_counter()
    got = summed.stdout.split()[0].decode() if summed.stdout else ""
    if got != sha512:
        raise BenchError(f"curl + sha512sum: digest {got[:16]}..., expected {sha512[:16]}...")
    return BaselineResult(curl=fetched - start, sha512sum=done - fetched)


def run_hash(data: bytes, sha512: str) -> float:
    settle()
    start = time.perf_counter()
    got = hashlib.sha512(data).hexdigest()
    seconds = time.perf_counter() - start
    if got != sha512:
        raise BenchError("hashlib.sha512 of the image in memory gave another digest")
    return seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class FsyncCost:
    write: float
    fsync: float


def measure_fsync(data: bytes, path: Path) -> FsyncCost:
    """Write ``data`` to a new file and fsync it, once: what durability costs on this disk."""
    settle()
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:CHUNK]) :]
        written = time.perf_counter()
        os.fsync(fd)
        synced = time.perf_counter()
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return FsyncCost(write=written - start, fsync=synced - written)


def page_cache_residency(path: Path) -> str:
    """What ``fincore`` says of ``path`` (bytes of it in the page cache), if it is installed."""
    if shutil.which("fincore") is None:
        return "unknown (fincore not installed)"
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    text = done.stdout.strip()
    if done.returncode != 0 or not text.isdigit():
        return f"unknown (fincore: {done.stderr.strip() or text})"
    resident = int(text)
    size = path.stat().st_size
    return f"{resident / MB:.0f} MB of {size / MB:.0f} MB ({100 * resident / max(size, 1):.0f}%)"


# -- a real `vmic sync` --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncSite:
    home: SiteHome
    sha512: str
    size: int


def build_sync_site(workdir: Path, served: Path, base: str, *, sha512: str, size: int) -> SyncSite:
    """A dev CA, an endorser, a signed list naming the image, a site subscribed with
    --auto-approve (so the image is approved and the next sync downloads it)."""
    now = datetime.now(UTC)
    endorser = make_endorser(workdir, now)
    ca_dir, cert = endorser.ca_dir, endorser.cert
    write_one_image_list(served, base, endorser, what="mirror", sha512=sha512, size=size)
    home = SiteHome(workdir / "site")
    admin.init_site(home, trust=ca_dir)
    pin = SignerPin(
        subject=DistinguishedName.from_x509(cert.subject),
        issuer=DistinguishedName.from_x509(cert.issuer),
    )
    admin.subscribe(
        home,
        f"{base}/{LIST_NAME}",
        pins=[pin],
        name="bench",
        auto_approve=True,
        now=datetime.now(UTC),
    )
    return SyncSite(home=home, sha512=sha512, size=size)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    seconds: float
    peak_rss_mb: float


# `vmic sync` exactly as the console script runs it (``sys.exit(main())``), then its own VmHWM
# on stdout (`vmic sync` prints nothing there on success). The kernel's ru_maxrss of a child
# (wait4, RUSAGE_CHILDREN) is no use here: subprocess starts children with vfork, and exec
# folds the parent's high-water mark (this process holds the image in memory) into theirs.
_SYNC_WRAPPER = """\
import sys
from federation.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
sys.exit(code)
"""


def run_vmic_sync(site: SyncSite) -> CommandResult:
    """``vmic sync`` after removing the cached copy, so that it downloads the image again."""
    empty_cache(site.home)
    settle()
    argv = [sys.executable, "-c", _SYNC_WRAPPER, "sync", "--home", str(site.home.root)]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"vmic sync exited {done.returncode}: {done.stderr.strip()}")
    cached = site.home.images / site.sha512
    if not cached.is_file() or cached.stat().st_size != site.size:
        raise BenchError("vmic sync exited 0 but the image is not in the cache")
    return CommandResult(seconds=seconds, peak_rss_mb=int(done.stdout.split()[-1]) * 1024 / MB)


def time_startup() -> float:
    """Interpreter start and vmic's imports: ``python -m federation --help``."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "federation", "--help"], check=True, capture_output=True)
    return time.perf_counter() - start


# -- main -----------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time vmic mirroring one image (download, SHA-512, write, fsync, install) against "
            "`curl -s -o FILE URL && sha512sum FILE` and against hashlib.sha512 in memory, "
            "on a loopback server."
        )
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=GiB,
        help="image size in bytes, or with a k/m/g suffix (default 1g)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (medians)")
    parser.add_argument(
        "--sync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time a real `vmic sync` that downloads the image (default: yes)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a cProfile of the vmic child's event-loop thread (one extra run)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


@dataclass(slots=True, kw_only=True)
class Measurements:
    size: int
    vmic: list[VmicResult]
    baseline: list[BaselineResult]
    hashes: list[float]
    syncs: list[CommandResult]
    fsync: FsyncCost
    startup: float | None
    profile: str | None


def measure(args: argparse.Namespace, workdir: Path) -> Measurements:
    """Make the image, serve it, and run every round; raises BenchError on any failure."""
    size: int = args.size
    served = workdir / "served"
    served.mkdir()
    image = served / IMAGE_NAME
    start = time.perf_counter()
    sha512 = make_image(image, size)
    print(
        f"image: {size:,} bytes ({size / GiB:.2f} GiB) of os.urandom, written in "
        f"{time.perf_counter() - start:.1f} s; SHA-512 {sha512[:16]}..."
    )
    home = SiteHome(workdir / "mirror-site")
    home.create_directories()
    with serving(served, prefix="/files") as base:
        url = f"{base}/{IMAGE_NAME}"
        site = None
        if args.sync:
            start = time.perf_counter()
            site = build_sync_site(workdir, served, base, sha512=sha512, size=size)
            print(
                "vmic sync site: dev CA, endorser, signed list, `vmic site init`, "
                f"subscribe --auto-approve ({time.perf_counter() - start:.1f} s)"
            )
        print(f"server: aiohttp static (sendfile) in another process, {url}")
        print(f"served file in page cache before timing: {page_cache_residency(image)}")
        data = image.read_bytes()
        job = VmicJob(url=url, size=size, sha512=sha512, home=str(home.root), profile=False)
        found = Measurements(
            size=size,
            vmic=[],
            baseline=[],
            hashes=[],
            syncs=[],
            fsync=FsyncCost(write=0.0, fsync=0.0),
            startup=None,
            profile=None,
        )
        curl_file = workdir / "curl.out"
        for _ in range(args.rounds):
            found.vmic.append(run_vmic(job))
            found.baseline.append(run_baseline(url, curl_file, sha512))
            curl_file.unlink()
            found.hashes.append(run_hash(data, sha512))
            if site is not None:
                found.syncs.append(run_vmic_sync(site))
        print(f"served file in page cache after timing:  {page_cache_residency(image)}")
        found.fsync = measure_fsync(data, workdir / "fsync.probe")
        if site is not None:
            found.startup = time_startup()
        if args.profile:
            found.profile = run_vmic(replace(job, profile=True)).profile
    return found


def print_report(found: Measurements, rounds: int) -> None:
    size = found.size
    vmic_s = [r.seconds for r in found.vmic]
    base_s = [r.seconds for r in found.baseline]
    t_vmic, t_base, t_hash = _median(vmic_s), _median(base_s), _median(found.hashes)
    peak = max(r.peak_rss_mb for r in found.vmic)
    print(f"\nrounds: {rounds}, alternating vmic / curl+sha512sum / hashlib; medians, [samples]")
    print(
        f"vmic download+install:        {t_vmic:7.3f} s  {rate(size, t_vmic):>11}  "
        f"[{samples(vmic_s)}]"
    )
    print(
        f"  of which download+fsync     {_median([r.download for r in found.vmic]):7.3f} s, "
        f"install (rename, folder fsync) {_median([r.install for r in found.vmic]):.3f} s"
    )
    print(
        f"  child CPU (all threads)     user {_median([r.cpu_user for r in found.vmic]):.3f} s, "
        f"system {_median([r.cpu_system for r in found.vmic]):.3f} s"
    )
    print(
        f"curl -s -o && sha512sum:      {t_base:7.3f} s  {rate(size, t_base):>11}  "
        f"[{samples(base_s)}]"
    )
    print(
        f"  of which curl               {_median([r.curl for r in found.baseline]):7.3f} s, "
        f"sha512sum {_median([r.sha512sum for r in found.baseline]):.3f} s"
    )
    print(
        f"hashlib.sha512 in memory:     {t_hash:7.3f} s  {rate(size, t_hash):>11}  "
        f"[{samples(found.hashes)}]"
    )
    ratio_base = t_vmic / t_base
    ratio_hash = t_vmic / t_hash
    print(
        f"ratio vmic/baseline:          {ratio_base:.3f}x  "
        f"(target <= {BASELINE_RATIO_TARGET:g}x: {verdict(ratio_base <= BASELINE_RATIO_TARGET)})"
    )
    print(
        f"ratio vmic/hashlib-in-memory: {ratio_hash:.3f}x  "
        f"(target <= {HASH_RATIO_TARGET:g}x: {verdict(ratio_hash <= HASH_RATIO_TARGET)})"
    )
    print(
        f"vmic peak RSS (child VmHWM):  {peak:.1f} MB, of which "
        f"{found.vmic[0].rss_before_mb:.1f} MB before the download (interpreter, imports)  "
        f"(target < {RSS_TARGET_MB:g} MB: {verdict(peak < RSS_TARGET_MB)})"
    )
    print(
        f"\nfsync: a plain write of {size / MB:,.0f} MB (into the page cache) took "
        f"{found.fsync.write:.3f} s and its "
        f"fsync {found.fsync.fsync:.3f} s on this disk. vmic pays for durability (it starts "
        "writeback as it writes, fsyncs the file and the folder); curl does not fsync, its "
        "file stays dirty in the page cache and sha512sum reads it back from there."
    )
    print(
        "page cache: the served file was written just before the rounds, so the server "
        "sends it from memory (see fincore above), for both sides alike; nothing drops "
        "caches between rounds; os.sync() runs before each timed step (not timed)."
    )
    if found.syncs:
        sync_s = [r.seconds for r in found.syncs]
        t_sync = _median(sync_s)
        print(
            f"\nvmic sync (whole command, separate): {t_sync:.3f} s  {rate(size, t_sync)}  "
            f"[{samples(sync_s)}]; peak RSS {max(r.peak_rss_mb for r in found.syncs):.1f} MB"
        )
        if found.startup is not None:
            print(
                f"  includes interpreter start and imports: `python -m federation --help` "
                f"takes {found.startup:.3f} s; plus lock, store, list fetch (304) and "
                "reconcile"
            )
        print(
            f"  ratio vmic sync/baseline: {t_sync / t_base:.2f}x, "
            f"vmic sync/hashlib-in-memory: {t_sync / t_hash:.2f}x"
        )
    if found.profile is not None:
        print("\ncProfile of one vmic download+install (event-loop thread only):")
        print(found.profile.rstrip())


def machine() -> str:
    """CPUs and load: other work on the machine makes every figure noisier."""
    load = os.getloadavg()[0]
    return f"machine: {os.cpu_count()} CPUs, 1-minute load average {load:.2f} at the start"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in ("curl", "sha512sum") if shutil.which(tool) is None]
    if missing:
        print(f"not on PATH: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(machine())
    with tempfile.TemporaryDirectory(prefix="vmic-bench-mirror-") as tmp:
        try:
            found = measure(args, Path(tmp))
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        except subprocess.CalledProcessError as exc:
            print(f"baseline failed: {exc}", file=sys.stderr)
            return 1
        except VmicError as exc:
            print(f"vmic set-up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    print_report(found, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
