"""Benchmark: `vmic sync` of many subscriptions on one loopback server, against the bare HTTP.

Makes a throw-away dev CA and an endorser (keys.pki, EC keys), ``--subscriptions``
small signed lists (default 1,000; two images each, never approved, so nothing
is downloaded), and serves them on 127.0.0.1 from an aiohttp static route in a
separate process (ETag and Last-Modified, 304 on a matching conditional GET).
A site is made with ``vmic site init`` and subscribed to every list with
:func:`site_agent.admin.subscribe` (set-up, reported but not the benchmark).
Then, with :func:`site_agent.sync.run_sync` in this process, it times:

- an unchanged sync: every list answers 304. Subscribing keeps each list's
  validators, so the first sync after subscribing is a conditional one
  already; it is reported (it pays for warming up) and not counted. The next
  ``--rounds`` syncs are timed;
- a changed sync: before each of ``--rounds`` rounds every list is signed
  again with a higher version, so each sync fetches, verifies and accepts all
  of them.

Baselines in the same run, at the site's fetch concurrency, with a plain
aiohttp session against the same server: the same conditional GETs (304),
and plain GETs reading every body (200); and :func:`feeds.verify.verify_list`
of one list, alone, times the number of lists. Targets: under 5 ms per
unchanged subscription and at most 2x the conditional GETs; a changed sync at
most 2x the GETs plus the verification; subscribing (the set-up, timed as
well) at most 20 ms per list. Missing one is reported, not fatal: the exit code is
non-zero only when something fails to verify, fetch or sync. Nothing leaves
127.0.0.1.

    .venv/bin/python bench/sync.py [--subscriptions N] [--rounds N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import aiohttp
from benchkit import (  # bench/benchkit.py, next to this script
    Endorser,
    make_endorser,
    samples,
    serving,
    verdict,
)

from feeds.atom import render_list
from feeds.model import ImageEntry, ImageList, image_id, list_id, sha512_hex
from feeds.verify import verify_list
from keys.dn import DistinguishedName
from keys.errors import VmicError
from keys.trust import TrustStore
from keys.xmlsig import SignerPin, sign_enveloped
from site_agent import admin
from site_agent import config as site_config
from site_agent.home import SiteHome
from site_agent.report import SyncReport
from site_agent.store import Store
from site_agent.sync import run_sync

T = TypeVar("T")

MS_TARGET = 5.0
RATIO_TARGET = 2.0
"""vmic sync against the bare HTTP (unchanged) or the HTTP plus verification (changed)."""
SUBSCRIBE_MS_TARGET = 20.0
IMAGES_PER_LIST = 2


class BenchError(Exception):
    """Something failed to verify, fetch or sync: the run is not valid."""


# -- the server (another process) ------------------------------------------------------------


# -- the endorser: many small signed lists ---------------------------------------------------


def _list_name(n: int) -> str:
    return f"{n:05d}.atom"


def _image_list(n: int, *, base: str, endorser: Endorser, now: datetime) -> ImageList:
    made = now - timedelta(hours=1)
    entries = tuple(
        ImageEntry(
            id=image_id(f"1a2b3c4d-{k:04x}-4000-8000-{n:012x}"),
            title=f"Bench image {n}.{k}",
            summary=f"Image {k} of benchmark list {n}; never approved, never downloaded",
            url=f"https://images.example.org/bench/{n}/{k}.qcow2",
            size=1_073_741_824,
            sha512=sha512_hex(hashlib.sha512(f"image {n}.{k}".encode()).hexdigest()),
            format="qcow2",
            updated=made,
            endorsed=made,
            hypervisor="KVM",
            arch="x86_64",
            os="Linux",
            osname="AlmaLinux",
            osversion="9.4",
            vo="dteam",
        )
        for k in range(IMAGES_PER_LIST)
    )
    return ImageList(
        id=list_id(f"5b0c7d2e-0000-4000-8000-{n:012x}"),
        title=f"vmic benchmark list {n}",
        self_url=f"{base}/{_list_name(n)}",
        updated=now - timedelta(minutes=30),
        expires=now + timedelta(days=28),
        version=1,
        endorser_dn=DistinguishedName.from_x509(endorser.cert.subject),
        issuer_dn=DistinguishedName.from_x509(endorser.cert.issuer),
        author_name="Bench Endorser",
        author_email="bench@example.org",
        entries=entries,
    )


class Lists:
    """The endorser's lists and the folder the server serves them from."""

    def __init__(self, folder: Path, base: str, endorser: Endorser, count: int) -> None:
        now = datetime.now(UTC)
        self.folder = folder
        self.endorser = endorser
        self.created = now
        self.lists = [_image_list(n, base=base, endorser=endorser, now=now) for n in range(count)]
        self.urls = [lst.self_url for lst in self.lists]
        self.version = 0

    def publish(self, version: int) -> None:
        """Sign every list again as ``version`` (a later ``updated``) and write it out."""
        updated = self.created - timedelta(minutes=30) + timedelta(seconds=version)
        for n, lst in enumerate(self.lists):
            signed = sign_enveloped(
                render_list(replace(lst, version=version, updated=updated)),
                key=self.endorser.key,
                cert=self.endorser.cert,
            )
            (self.folder / _list_name(n)).write_bytes(signed)
        self.version = version


# -- timing helpers ----------------------------------------------------------------------------


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def profiled(fn: Callable[[], T], title: str) -> tuple[T, str]:
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        result = fn()
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(30)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(20)
    return result, f"\ncProfile of {title} (main thread only):\n{out.getvalue().rstrip()}"


# -- vmic ------------------------------------------------------------------------------------------


def sync(home: SiteHome, *, expect: str, version: int | None, count: int) -> SyncReport:
    """One run_sync; every list must have the ``expect``ed outcome and there be no problem."""
    report = run_sync(home, now=datetime.now(UTC))
    outcomes = Counter(result.outcome for result in report.lists)
    if report.problems:
        first = report.problems[0]
        raise BenchError(
            f"sync reported {len(report.problems)} problems, first: "
            f"{first.subscription}: {first.kind}: {first.message}"
        )
    if outcomes != Counter({expect: count}):
        raise BenchError(f"sync outcomes {dict(outcomes)}, expected {count} {expect}")
    if report.downloaded:
        raise BenchError(f"sync downloaded {len(report.downloaded)} images; none are approved")
    if version is not None and any(r.version != version for r in report.lists):
        raise BenchError(f"not every list was accepted as version {version}")
    return report


def subscribe_all(home: SiteHome, lists: Lists) -> None:
    for n, url in enumerate(lists.urls):
        admin.subscribe(
            home,
            url,
            pins=[lists.endorser.pin],
            name=f"list-{n:05d}",
            auto_approve=False,
            now=datetime.now(UTC),
        )


# -- the baselines ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    url: str
    etag: str | None
    last_modified: str | None


def stored_validators(home: SiteHome) -> list[Request]:
    """The URLs and the validators vmic recorded, as it will send them."""
    with Store.open(home.database) as store:
        return [
            Request(url=s.url, etag=s.etag, last_modified=s.last_modified)
            for s in store.subscriptions()
        ]


async def _get_all(requests: list[Request], *, concurrency: int, conditional: bool) -> int:
    """GET every URL at ``concurrency``, reading bodies; returns the bytes read."""
    gate = asyncio.Semaphore(concurrency)
    expected = 304 if conditional else 200

    async def one(request: Request, session: aiohttp.ClientSession) -> int:
        headers = {}
        if conditional and request.etag is not None:
            headers["If-None-Match"] = request.etag
        if conditional and request.last_modified is not None:
            headers["If-Modified-Since"] = request.last_modified
        async with gate, session.get(request.url, headers=headers) as response:
            body = await response.read()
            if response.status != expected:
                raise BenchError(f"{request.url}: HTTP {response.status}, expected {expected}")
            return len(body)

    async with aiohttp.ClientSession() as session:
        sizes = await asyncio.gather(*(one(r, session) for r in requests))
    return sum(sizes)


def http_baseline(requests: list[Request], *, concurrency: int, conditional: bool) -> float:
    seconds, _ = timed(
        lambda: asyncio.run(_get_all(requests, concurrency=concurrency, conditional=conditional))
    )
    return seconds


def verify_one(raw: bytes, trust: TrustStore, pin: SignerPin) -> float:
    """verify_list of one list, in this thread (as each sync worker thread runs it)."""
    seconds, _ = timed(lambda: verify_list(raw, trust=trust, pins=[pin], now=datetime.now(UTC)))
    return seconds


# -- output and arguments -------------------------------------------------------------------------


def _line(label: str, values: list[float], count: int) -> str:
    median = statistics.median(values)
    return (
        f"{label:<44} {median:7.3f} s  {1000 * median / count:6.2f} ms/subscription  "
        f"[{samples(values)}]"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time `vmic sync` of many subscriptions on one loopback server (nothing changed: "
            "all 304; every list changed: fetch, verify, accept), against the bare HTTP."
        )
    )
    parser.add_argument(
        "--subscriptions", type=int, default=1000, help="lists subscribed to (default 1000)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed syncs of each kind (medians; default 3)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a cProfile of one more unchanged and one more changed sync",
    )
    args = parser.parse_args(argv)
    if args.subscriptions < 1 or args.rounds < 1:
        parser.error("--subscriptions and --rounds must be at least 1")
    return args


# -- main ---------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Measurements:
    count: int
    first: float = 0.0
    unchanged: list[float] = field(default_factory=list)
    conditional: list[float] = field(default_factory=list)
    full: list[float] = field(default_factory=list)
    changed: list[float] = field(default_factory=list)
    resign: list[float] = field(default_factory=list)
    verify_one: float = 0.0
    subscribe_each: float = 0.0
    profiles: list[str] = field(default_factory=list)


def _check_validators(requests: list[Request]) -> None:
    if any(r.etag is None for r in requests):
        raise BenchError("vmic recorded no ETag for some subscription")


def measure_unchanged(
    home: SiteHome, found: Measurements, *, rounds: int, concurrency: int, profile: bool
) -> None:
    count = found.count
    found.first, _ = timed(lambda: sync(home, expect="not-modified", version=None, count=count))
    requests = stored_validators(home)
    _check_validators(requests)
    http_baseline(requests, concurrency=concurrency, conditional=True)  # warm-up
    for _ in range(rounds):
        seconds, _ = timed(lambda: sync(home, expect="not-modified", version=None, count=count))
        found.unchanged.append(seconds)
        found.conditional.append(http_baseline(requests, concurrency=concurrency, conditional=True))
        found.full.append(http_baseline(requests, concurrency=concurrency, conditional=False))
    if profile:
        _, text = profiled(
            lambda: sync(home, expect="not-modified", version=None, count=count),
            "one unchanged sync (all 304)",
        )
        found.profiles.append(text)


def changed_sync(home: SiteHome, lists: Lists, count: int) -> tuple[float, float]:
    """Sign every list again with the next version, then sync; the seconds of both."""
    version = lists.version + 1
    resign, _ = timed(lambda: lists.publish(version))
    seconds, _ = timed(lambda: sync(home, expect="accepted", version=version, count=count))
    return resign, seconds


def measure_changed(
    home: SiteHome, lists: Lists, found: Measurements, *, rounds: int, profile: bool
) -> None:
    for _ in range(rounds):
        resign, seconds = changed_sync(home, lists, found.count)
        found.resign.append(resign)
        found.changed.append(seconds)
    if profile:
        _, text = profiled(
            lambda: changed_sync(home, lists, found.count),
            "signing every list again and one changed sync (fetch, verify, accept)",
        )
        found.profiles.append(text)


def measure(args: argparse.Namespace, workdir: Path) -> Measurements:
    """Set up, then time every sync and baseline; raises BenchError on any failure."""
    count: int = args.subscriptions
    served = workdir / "served"
    served.mkdir()
    home = SiteHome(workdir / "site")
    found = Measurements(count=count)
    setup_start = time.perf_counter()
    endorser = make_endorser(workdir, datetime.now(UTC))
    with serving(served, prefix="/lists", backlog=1024) as base:
        lists = Lists(served, base, endorser, count)
        sign_s, _ = timed(lambda: lists.publish(1))
        admin.init_site(home, trust=endorser.ca_dir)
        subscribe_s, _ = timed(lambda: subscribe_all(home, lists))
        found.subscribe_each = subscribe_s / count
        concurrency = site_config.load(home.config).limits.fetch_concurrency
        print(
            f"set-up: {count} lists of {IMAGES_PER_LIST} images (EC signer), signed in "
            f"{sign_s:.1f} s ({1000 * sign_s / count:.2f} ms each); `vmic site init`; "
            f"admin.subscribe to each in {subscribe_s:.1f} s "
            f"({1000 * subscribe_s / count:.1f} ms each); total "
            f"{time.perf_counter() - setup_start:.1f} s"
        )
        print(
            f"server: aiohttp static in another process, {base}/ ; "
            f"fetch concurrency {concurrency} (site default)"
        )
        measure_unchanged(
            home, found, rounds=args.rounds, concurrency=concurrency, profile=args.profile
        )
        measure_changed(home, lists, found, rounds=args.rounds, profile=args.profile)
        trust = TrustStore.from_directory(endorser.ca_dir)
        raw = (served / _list_name(0)).read_bytes()
        found.verify_one = statistics.median(
            verify_one(raw, trust, endorser.pin) for _ in range(max(args.rounds, 5))
        )
    return found


def print_report(found: Measurements, rounds: int) -> None:
    count = found.count
    t_unchanged = statistics.median(found.unchanged)
    t_conditional = statistics.median(found.conditional)
    t_full = statistics.median(found.full)
    t_changed = statistics.median(found.changed)
    per_unchanged = 1000 * t_unchanged / count
    verify_all = found.verify_one * count
    print(f"\n{count} subscriptions, {rounds} rounds each; medians, [samples] in s")
    print(f"{'first sync after subscribing (not counted)':<44} {found.first:7.3f} s")
    print(_line("vmic sync, nothing changed (all 304)", found.unchanged, count))
    print(_line(f"  baseline: {count} conditional GETs (304)", found.conditional, count))
    print(
        f"  vmic adds {t_unchanged - t_conditional:.3f} s over the HTTP "
        f"({1000 * (t_unchanged - t_conditional) / count:.2f} ms/subscription; "
        f"ratio {t_unchanged / t_conditional:.1f}x)"
    )
    print(
        f"  target < {MS_TARGET:g} ms per unchanged subscription: "
        f"{verdict(per_unchanged < MS_TARGET)} ({per_unchanged:.2f} ms); "
        f"ratio vmic/conditional GETs {t_unchanged / t_conditional:.2f}x, target <= 2x: "
        f"{verdict(t_unchanged / t_conditional <= RATIO_TARGET)}"
    )
    print(_line("vmic sync, every list changed (new version)", found.changed, count))
    print(_line(f"  baseline: {count} plain GETs (200, bodies)", found.full, count))
    print(
        f"  baseline: verify_list of one list alone: {1000 * found.verify_one:.2f} ms "
        f"(x {count} = {verify_all:.3f} s)"
    )
    print(
        f"  vmic adds {t_changed - t_full - verify_all:.3f} s over GETs + verification "
        f"(store, list files, events; ratio to GETs alone {t_changed / t_full:.1f}x)"
    )
    changed_ratio = t_changed / (t_full + verify_all)
    print(
        f"  ratio vmic/(GETs + verification) {changed_ratio:.2f}x, target <= 2x: "
        f"{verdict(changed_ratio <= RATIO_TARGET)}"
    )
    print(
        f"  subscribing one by one: {1000 * found.subscribe_each:.1f} ms each, target <= "
        f"{SUBSCRIBE_MS_TARGET:g} ms: {verdict(1000 * found.subscribe_each <= SUBSCRIBE_MS_TARGET)}"
    )
    print(f"  (re-signing all lists before each round, not timed: [{samples(found.resign)}] s)")
    for text in found.profiles:
        print(text)


def machine() -> str:
    """CPUs and load: other work on the machine makes every figure noisier."""
    load = os.getloadavg()[0]
    return f"machine: {os.cpu_count()} CPUs, 1-minute load average {load:.2f} at the start"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="vmic-bench-sync-") as tmp:
        try:
            found = measure(args, Path(tmp))
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        except VmicError as exc:
            print(f"vmic failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except aiohttp.ClientError as exc:
            print(f"baseline HTTP failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    print_report(found, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
