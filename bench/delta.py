"""Benchmark: updating a site to a new version of an image, against downloading it whole.

Builds an image pair the way the measurement of issue 15 did (bench/deltakit.py):
an OS-like tree of packages (a few thousand files at the default size: many
small text files, shared libraries, some executables of several MB; content
deterministic from ``--seed`` that compresses about as real files do) holding
about 40 % of ``--size`` (default 1 GiB), an ext4 image of it with ``mke2fs
-t ext4 -b 4096 -d TREE -F IMAGE SIZE``; then about ``--changed`` (default
6 %) of the files changed the way package updates do (executables and
libraries rebuilt or patched in the middle, text files patched or appended
to, a few files deleted and added) and a second image made the same way,
into a new file of the same size.

The endorser is real: a dev CA and endorser certificate (bench/benchkit.py),
then ``vmic endorse init``, ``vmic endorse add`` of version 1 (which also
writes FILE.blocks, the block index, when the endorser side has it), ``vmic
endorse sign``; then ``add`` of version 2, ``revoke`` of version 1 and
``sign`` again. When an index was written, version 2 is also endorsed
alone with ``--no-blocks`` in a second list: a site given that list can
only download the image whole. The endorser's folder is served from
127.0.0.1 by an aiohttp static handler in a spawned process that answers
single Range requests and counts the body bytes it sends, by kind (list,
index, image). Sites are real ``python -m federation`` processes (`vmic
site init`, `vmic subscribe --auto-approve`, `vmic sync --json`).

On loopback both an update and a full download are bound by the SHA-512 of
the whole image, so every timed sync is run twice: uncapped, and (unless
``--rate 0``) with the endorser's uplink capped at ``--rate`` MB/s (default
100, about a 1 Gb/s link), as on a real network: image and index bodies,
whole or single Ranges, go out in paced pieces through one token bucket
shared by all responses (lists are not paced). In each of ``--rounds``
rounds (default 3; the order of the steps rotates from round to round, that
of the two variants alternates), each step for each variant:

- update: a fresh site syncs version 1 (a full download, uncapped, not timed), the
  endorser publishes version 2 and the site syncs again: that sync is timed
  and what the endorser serves meanwhile is counted;
- full download (the baseline): a fresh site syncs version 2 listed without
  an index, so it downloads the same image whole through the same server,
  timed the same way;
- for information, when there is an index: a fresh site syncs version 2
  with its index (it holds nothing, but need not fetch the blocks of zeros).

Reported: the image size; the bytes of version 2 that are not in version 1
as aligned 4 KiB blocks (its non-zero blocks whose digest is not among
version 1's, by :func:`feeds.blocks.index_file`: the "changed bytes"); the
file-level change; what the endorser served for the update; the
``bytes_reused`` and ``bytes_fetched`` that `vmic sync --json` reports (0 or
absent: no delta update happened, the sync downloaded the whole image) —
bytes once, from the uncapped runs (they do not depend on the rate); the
times for each variant. Targets: the image bytes and index the endorser
served for the update at most 1.3x the changed bytes; the update sync at
most 0.5x the time of the full download (medians, for each variant).
``--profile`` adds a cProfile of one more update sync (its main thread only,
uncapped). Missing a target is reported, not fatal: the exit code is 1 only
when a tool is missing, a command fails, or a site does not end up holding
version 2 as available with the right SHA-512 (hashed again here). Nothing
leaves 127.0.0.1; the temporary folder is removed.

    .venv/bin/python bench/delta.py [--size BYTES] [--changed FRACTION] [--seed N] [--rounds N]
                                    [--rate MB/S] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import (  # bench/benchkit.py, next to this script
    CA_DN,
    ENDORSER_DN,
    GiB,
    make_endorser,
    parse_size,
    samples,
    verdict,
)
from deltakit import (  # bench/deltakit.py
    MB,
    CountingServer,
    Pair,
    Served,
    counting_server,
    find_mke2fs,
    make_pair,
    profile_vmic,
    sha512_file,
)
from fedkit import ROOT, vmic  # bench/fedkit.py
from fedkit import BenchError as ServerError

from feeds.blocks import BLOCK
from site_agent.home import SiteHome
from site_agent.records import AVAILABLE
from site_agent.store import Store

FETCHED_TARGET = 1.3
"""Bytes served for the update at most this many times the changed bytes."""
TIME_TARGET = 0.5
"""The update sync at most this fraction of the full download's time."""
COMMAND_TIMEOUT = 900.0
LIST = "list.atom"
MIN_SIZE = 16 * 1024**2


class BenchError(Exception):
    """A command failed or a site does not hold the image: the run is not valid."""


def run(*args: object, what: str) -> str:
    """One `vmic` command from the repository root; its stdout."""
    try:
        done = subprocess.run(
            vmic(*args),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: still running after {COMMAND_TIMEOUT:g} s") from exc
    if done.returncode != 0:
        raise BenchError(f"{what} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def settle() -> None:
    """Before each timed sync: write back what earlier steps left dirty (not timed)."""
    os.sync()


# -- the endorser ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    path: Path
    sha512: str
    image_id: str = ""
    blocks: int | None = None
    """Bytes of the block index `vmic endorse add` wrote beside it (None: none written)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lists:
    v1: Path
    """Version 1 signed."""
    v2: Path
    """Version 2 added (with its index, when `vmic endorse add` writes one), version 1 revoked."""
    plain: Path
    """Version 2 alone without an index (another manifest, ``--no-blocks``): what a full
    download looks like; ``v2`` itself when the endorser writes no indexes."""
    trust: Path
    """The dev CA's folder: the sites' trust directory."""
    first: Version
    second: Version
    second_plain: Version


def _add(manifest: Path, image: Path, base: str, version: int, *extra: str) -> Version:
    out = run(
        *("endorse", "add", manifest, image, "--url", f"{base}/{image.name}", "--format", "raw"),
        *("--title", "vmic delta benchmark OS", "--version", version, "--json", *extra),
        what=f"vmic endorse add (version {version})",
    )
    entry: dict[str, Any] = json.loads(out)
    index = image.with_name(image.name + ".blocks")
    return Version(
        path=image,
        sha512=str(entry["sha512"]),
        image_id=str(entry["id"]),
        blocks=index.stat().st_size if index.is_file() and not extra else None,
    )


def _init(manifest: Path, base: str) -> None:
    run(
        *("endorse", "init", manifest, "--title", "vmic delta benchmark list"),
        *("--self-url", f"{base}/{LIST}", "--author", "Bench Endorser"),
        *("--email", "bench@example.org"),
        what="vmic endorse init",
    )


def endorse(workdir: Path, served: Path, base: str) -> Lists:
    """Version 1 signed; then version 2 added, version 1 revoked, signed again; and when
    there is an index, version 2 without it in a list of its own (for the full download)."""
    endorser = make_endorser(workdir, datetime.now(UTC))
    cert, key = workdir / "endorser" / "cert.pem", workdir / "endorser" / "key.pem"
    manifest, lists = workdir / "manifest.toml", workdir / "lists"
    lists.mkdir()
    _init(manifest, base)
    first = _add(manifest, served / "image-v1.raw", base, 1)
    run(*_sign(manifest, cert, key, lists / "v1.atom"), what="vmic endorse sign (version 1)")
    second = _add(manifest, served / "image-v2.raw", base, 2)
    run(
        *("endorse", "revoke", manifest, first.image_id, "--reason", "superseded by version 2"),
        what="vmic endorse revoke",
    )
    run(*_sign(manifest, cert, key, lists / "v2.atom"), what="vmic endorse sign (version 2)")
    plain, second_plain = lists / "v2.atom", second
    if second.blocks is not None:
        other = workdir / "plain.toml"
        _init(other, base)
        second_plain = _add(other, served / "image-v2.raw", base, 2, "--no-blocks")
        plain = lists / "plain.atom"
        run(*_sign(other, cert, key, plain), what="vmic endorse sign (no index)")
    return Lists(
        v1=lists / "v1.atom",
        v2=lists / "v2.atom",
        plain=plain,
        trust=endorser.ca_dir,
        first=first,
        second=second,
        second_plain=second_plain,
    )


def _sign(manifest: Path, cert: Path, key: Path, out: Path) -> tuple[object, ...]:
    return ("endorse", "sign", manifest, "--cert", cert, "--key", key, "--out", out)


def publish(signed: Path, served: Path) -> None:
    """The endorser puts ``signed`` up as its list (a new file: new validators)."""
    staging = served / f".{LIST}.new"
    shutil.copyfile(signed, staging)
    staging.replace(served / LIST)


# -- sites ----------------------------------------------------------------------------------


def new_site(home: Path, trust: Path, base: str) -> SiteHome:
    run("site", "init", "--home", home, "--trust", trust, what="vmic site init")
    run(
        *("subscribe", f"{base}/{LIST}", "--home", home, "--name", "bench"),
        *("--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN, "--auto-approve"),
        what="vmic subscribe",
    )
    return SiteHome(home)


@dataclass(frozen=True, slots=True, kw_only=True)
class Synced:
    seconds: float
    served: Served
    reused: int
    fetched: int
    reported: bool
    """Whether `vmic sync --json` carried bytes_reused and bytes_fetched at all."""


def timed_sync(home: SiteHome, server: CountingServer, rate: float | None, what: str) -> Synced:
    """`vmic sync --json`, timed, the endorser's uplink at ``rate`` B/s (None: uncapped)."""
    settle()
    before = server.served()
    server.cap(rate)
    try:
        start = time.perf_counter()
        out = run("sync", "--home", home.root, "--json", what=what)
        seconds = time.perf_counter() - start
    finally:
        server.cap(None)
    served = server.served() - before
    report: dict[str, Any] = json.loads(out)
    if report.get("ok") is not True:
        raise BenchError(f"{what}: the sync reported problems: {report.get('problems')}")
    reused, fetched = report.get("bytes_reused"), report.get("bytes_fetched")
    return Synced(
        seconds=seconds,
        served=served,
        reused=reused if isinstance(reused, int) else 0,
        fetched=fetched if isinstance(fetched, int) else 0,
        reported=isinstance(reused, int) and isinstance(fetched, int),
    )


def check_holds(home: SiteHome, version: Version, what: str, *, rehash: bool) -> None:
    """The site holds ``version`` as available, its file of the right size and SHA-512."""
    with Store.open(home.database) as store:
        record = store.image(version.image_id)
    if record is None or record.state != AVAILABLE or record.sha512 != version.sha512:
        state = "not in the store" if record is None else f"{record.state}"
        raise BenchError(f"{what}: the site does not hold the image as available ({state})")
    cached = home.images / version.sha512
    if not cached.is_file() or cached.stat().st_size != version.path.stat().st_size:
        raise BenchError(f"{what}: the cached file is missing or has the wrong size")
    if rehash and sha512_file(cached) != version.sha512:
        raise BenchError(f"{what}: the cached file's SHA-512 is not the endorsed one")


def _said(synced: Synced) -> str:
    served = synced.served
    return (
        f"{synced.seconds:7.3f} s, endorser served {served.total / MB:,.1f} MB (image: "
        f"{served.image_ranges} ranges, {served.image_full} whole)"
    )


def _label(rate: float | None) -> str:
    return "uncapped" if rate is None else f"{rate / MB:g} MB/s"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bench:
    workdir: Path
    served: Path
    server: CountingServer
    lists: Lists

    def site_with_v1(self, name: str) -> SiteHome:
        """A new site that synced version 1 (a full download)."""
        publish(self.lists.v1, self.served)
        home = new_site(self.workdir / name, self.lists.trust, self.server.base)
        run("sync", "--home", home.root, what="vmic sync of version 1")
        check_holds(home, self.lists.first, "version 1", rehash=False)
        publish(self.lists.v2, self.served)
        return home

    def update(self, n: int, rate: float | None) -> Synced:
        """A site that holds version 1 (synced uncapped, not timed) syncs version 2."""
        home = self.site_with_v1(f"update-{n}")
        what = f"vmic sync to version 2 (update, {_label(rate)})"
        synced = timed_sync(home, self.server, rate, what)
        check_holds(home, self.lists.second, "update", rehash=True)
        shutil.rmtree(home.root)
        print(f"  {'update, ' + _label(rate) + ':':<35} {_said(synced)}")
        return synced

    def full(self, n: int, rate: float | None) -> Synced:
        """A new site syncs version 2 listed without an index: a plain download."""
        return self._fresh(n, rate, "full download", self.lists.plain, self.lists.second_plain)

    def indexed(self, n: int, rate: float | None) -> Synced:
        """A new site syncs version 2 with its index (it need not fetch the zero blocks)."""
        return self._fresh(n, rate, "new site, with index", self.lists.v2, self.lists.second)

    def _fresh(
        self, n: int, rate: float | None, what: str, signed: Path, version: Version
    ) -> Synced:
        publish(signed, self.served)
        home = new_site(self.workdir / f"fresh-{n}", self.lists.trust, self.server.base)
        synced = timed_sync(
            home, self.server, rate, f"vmic sync of version 2 ({what}, {_label(rate)})"
        )
        check_holds(home, version, what, rehash=True)
        shutil.rmtree(home.root)
        print(f"  {what + ', ' + _label(rate) + ':':<35} {_said(synced)}")
        return synced

    def profile(self) -> str:
        """cProfile of one more update sync (the main thread of `vmic sync`)."""
        home = self.site_with_v1("profiled")
        settle()
        text = profile_vmic("sync", "--home", home.root, out=self.workdir / "sync.prof")
        shutil.rmtree(home.root)
        return text


# -- main -----------------------------------------------------------------------------------


Step = Callable[[int, float | None], Synced]
"""One step of a round: its number, the uplink's rate (None: uncapped); the timed sync."""


@dataclass(slots=True, kw_only=True)
class Variant:
    """The syncs timed with the endorser's uplink uncapped (``rate`` None) or capped."""

    rate: float | None
    updates: list[Synced] = field(default_factory=list)
    fulls: list[Synced] = field(default_factory=list)
    indexed: list[Synced] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class Found:
    size: int
    pair: Pair
    lists: Lists
    variants: list[Variant]
    """The uncapped one first."""
    profile: str | None = None


def measure(args: argparse.Namespace, mke2fs: str, workdir: Path) -> Found:
    served = workdir / "served"
    served.mkdir()
    pair = make_pair(mke2fs, workdir, served, size=args.size, changed=args.changed, seed=args.seed)
    with counting_server(served) as server:
        start = time.perf_counter()
        lists = endorse(workdir, served, server.base)
        print(
            f"endorser: dev CA, vmic endorse init/add/sign, add/revoke/sign "
            f"({time.perf_counter() - start:.1f} s); server {server.base}"
        )
        bench = Bench(workdir=workdir, served=served, server=server, lists=lists)
        rates = [None] + ([args.rate * MB] if args.rate > 0 else [])
        found = Found(
            size=args.size, pair=pair, lists=lists, variants=[Variant(rate=r) for r in rates]
        )
        steps: list[tuple[Step, Callable[[Variant], list[Synced]]]] = [
            (bench.update, lambda v: v.updates),
            (bench.full, lambda v: v.fulls),
        ]
        if lists.plain != lists.v2:
            steps.append((bench.indexed, lambda v: v.indexed))
        for n in range(args.rounds):
            print(f"round {n + 1}:")
            variants = found.variants if n % 2 == 0 else found.variants[::-1]
            for step, into in steps[n % len(steps) :] + steps[: n % len(steps)]:
                for variant in variants:
                    into(variant).append(step(n, variant.rate))
        if args.profile:
            found.profile = bench.profile()
    return found


def _median(values: list[int] | list[float]) -> float:
    return float(statistics.median(values))


def _index_line(version: Version) -> str:
    if version.blocks is None:
        return "none written (vmic endorse add wrote no FILE.blocks)"
    return f"{version.path.name}.blocks, {version.blocks:,} bytes"


def _served_line(runs: list[Synced]) -> str:
    image = _median([r.served.image_bytes for r in runs])
    index = _median([r.served.index_bytes for r in runs])
    listed = _median([r.served.list_bytes for r in runs])
    cut = _median([r.served.aborted_bytes for r in runs])
    return (
        f"{image + index + listed:>15,.0f} bytes: image {image:,.0f} in "
        f"{_median([r.served.image_ranges for r in runs]):.0f} range and "
        f"{_median([r.served.image_full for r in runs]):.0f} whole responses, index "
        f"{index:,.0f}, list {listed:,.0f}" + (f"; cut off: {cut:,.0f}" if cut else "")
    )


def _reported(runs: list[Synced], size: int) -> str:
    reused = _median([r.reused for r in runs])
    fetched = _median([r.fetched for r in runs])
    if not any(r.reported for r in runs):
        said = "no such keys in `vmic sync --json`: no delta update happened"
    elif reused == 0 and fetched == 0:
        said = "no delta update happened: the sync downloaded the whole image"
    else:
        said = f"reused + fetched = {(reused + fetched) / size:.1%} of the image, index included"
    return f"bytes_reused {reused:,.0f}, bytes_fetched {fetched:,.0f} ({said})"


def _seconds(runs: list[Synced]) -> str:
    values = [r.seconds for r in runs]
    return f"{_median(values):7.3f} s  [{samples(values)}]"


def _times(variant: Variant) -> None:
    """The time rows of one variant and its ratio against the target."""
    if variant.rate is None:
        print("\ntimes, the endorser uncapped (loopback):")
    else:
        print(
            f"\ntimes, the endorser's uplink capped at {variant.rate / MB:g} MB/s (image and "
            "index bodies and ranges paced together; lists not):"
        )
    t_update = _median([u.seconds for u in variant.updates])
    t_full = _median([f.seconds for f in variant.fulls])
    print(f"update sync:               {_seconds(variant.updates)}")
    plain = "v2 listed without an index" if variant.indexed else "the same list: no index"
    print(f"full-download sync:        {_seconds(variant.fulls)}  ({plain})")
    if variant.indexed:
        print(f"new site, with index:      {_seconds(variant.indexed)}  (information only)")
    ratio_time = t_update / t_full
    print(
        f"ratio time update/full:    {ratio_time:.3f}x  "
        f"(target <= {TIME_TARGET:g}x: {verdict(ratio_time <= TIME_TARGET)})"
    )


def _totals(variant: Variant) -> list[float]:
    """Median bytes served: update, full download, new site with index."""
    runs = (variant.updates, variant.fulls, variant.indexed)
    return [_median([r.served.total for r in x]) for x in runs if x]


def print_report(found: Found) -> None:
    size, pair, base = found.size, found.pair, found.variants[0]
    updates, fulls, indexed = base.updates, base.fulls, base.indexed
    changed, change = pair.blocks.changed, pair.change
    kinds = "update, full download" + (", new site with index" if indexed else "")
    rates = ", ".join(_label(v.rate) for v in found.variants)
    print(
        f"\nrounds: {len(updates)} ({kinds}; each {rates}; the order rotates); medians, [samples]"
    )
    print(f"image size:                {size:>15,} bytes ({size / GiB:.2f} GiB, ext4, raw)")
    print(
        f"  non-zero blocks of v2:   {pair.blocks.nonzero:>15,} bytes "
        f"({pair.blocks.nonzero / size:.1%} of the image); files {pair.tree_bytes / MB:,.1f} MB"
    )
    share = changed / max(pair.blocks.nonzero, 1)
    print(
        f"changed bytes (4 KiB):     {changed:>15,} bytes ({share:.1%} of v2's non-zero bytes "
        f"are in blocks not found in v1, at {BLOCK}-byte alignment)"
    )
    print(
        f"file-level change:         {change.files:,} of {pair.files:,} files "
        f"({change.files / pair.files:.1%}): {change.rewritten} rewritten, {change.patched} "
        f"patched, {change.appended} appended, {change.added} added, {change.deleted} deleted"
    )
    print(
        f"  bytes of files written:  {change.written:>15,} bytes, of which new content "
        f"{change.new:,}"
    )
    print(f"block index of v2:         {_index_line(found.lists.second)}")
    print(f"served for the update:     {_served_line(updates)}")
    print(f"update sync reported:      {_reported(updates, size)}")
    image = _median([u.served.image_bytes for u in updates])
    fetched = image + _median([u.served.index_bytes for u in updates])
    ratio = fetched / max(changed, 1)
    print(
        f"ratio fetched/changed:     {ratio:.3f}x  (image ranges + index served; "
        f"target <= {FETCHED_TARGET:g}x: {verdict(ratio <= FETCHED_TARGET)}); "
        f"image ranges alone {image / max(changed, 1):.3f}x"
    )
    print(f"ratio fetched/image size:  {fetched / size:.3f}x")
    print(f"served for a full download: {_served_line(fulls).strip()}")
    if indexed:
        print(f"served for a new site with the index: {_served_line(indexed).strip()}")
        print(f"  its sync reported:       {_reported(indexed, size)}")
    for other in found.variants[1:]:
        totals = _totals(other)
        said = ", ".join(f"{t:,.0f}" for t in totals) + " bytes (update, full, new site)"
        if totals == _totals(base):
            said = "the same bytes as uncapped (bytes do not depend on the rate)"
        print(f"{'served at ' + _label(other.rate) + ':':<27}{said}")
    for variant in found.variants:
        _times(variant)
    print(
        "\nsites: every site of every round holds v2 as available, its SHA-512 checked again here"
    )
    print(
        "timing: whole `vmic sync --json` processes (interpreter start, list fetch and "
        "verification, store, download or assembly, fsync); os.sync() before each; the "
        "served images and the update site's copy of v1 were just written, so they are in "
        "the page cache; the update site's copy of v1 was always synced uncapped (not timed)"
    )
    if found.profile is not None:
        print("\ncProfile of one more update sync (main thread of `vmic sync`):")
        print(found.profile.rstrip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time `vmic sync` updating a site from one version of an ext4 image to the next "
            "(about 6 % of its files changed) against a full download of the new version, "
            "and count the bytes the endorser serves, on a loopback server, uncapped and "
            "with its uplink capped."
        )
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=GiB,
        help="image size in bytes, or with a k/m/g suffix (default 1g; at least 16m)",
    )
    parser.add_argument(
        "--changed", type=float, default=0.06, help="fraction of the files changed (0.06)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the tree and its changes")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (medians)")
    parser.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="also time every sync with the endorser's uplink capped at this many MB/s "
        "(default 100, about a 1 Gb/s link; 0: only uncapped)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of one more update sync"
    )
    args = parser.parse_args(argv)
    if args.size < MIN_SIZE:
        parser.error("--size must be at least 16m")
    if not 0 < args.changed < 1:
        parser.error("--changed must be between 0 and 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not args.rate >= 0:
        parser.error("--rate must not be negative")
    args.size -= args.size % BLOCK
    return args


def machine() -> str:
    load = os.getloadavg()[0]
    return f"machine: {os.cpu_count()} CPUs, 1-minute load average {load:.2f} at the start"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mke2fs = find_mke2fs()
    if mke2fs is None:
        print(
            "mke2fs not found (PATH, /sbin, /usr/sbin): install e2fsprogs "
            "(apt-get install e2fsprogs, dnf install e2fsprogs)",
            file=sys.stderr,
        )
        return 1
    print(machine())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vmic-bench-delta-") as tmp:
        try:
            found = measure(args, mke2fs, Path(tmp))
        except (BenchError, ServerError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        except subprocess.CalledProcessError as exc:
            print(f"{exc.cmd[0]} failed: {exc.stderr.decode(errors='replace')}", file=sys.stderr)
            return 1
    print_report(found)
    print(f"\nwhole benchmark: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
