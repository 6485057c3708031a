"""Benchmark: one image spreading through a tree of sites, with peer sources on and off.

Twenty sites (``--sites``) form a tree of fan-out 3 (``--fanout``): site 0
takes the image from the endorser, sites 1-3 from site 0, sites 4-12 from
sites 1-3, sites 13-19 from the level above. The endorser publishes one
signed list naming one image of ``--size`` random bytes (default 256 MiB);
both are served from 127.0.0.1 by an aiohttp static handler (sendfile) in a
spawned process that counts the body bytes of every response it completed.
Two runs, in this order, each with fresh site homes:

- peers off (the baseline): every site subscribes to the endorser's list
  with --auto-approve, then the twenty `vmic sync` run at once (as cron
  would run them across sites), each as ``python -m federation sync`` in a
  process of its own, with the site's default download concurrency;
- peers on: every site has its own certificate (dev CA, EC key), its own
  `vmic serve` (``python -m federation serve --bind 127.0.0.1:0``, the
  real server in a process of its own) and writes its export
  (`vmic export`); every site but site 0 follows its parent with `vmic
  peer add`. With ``--join subscribe`` (the default) every site also
  subscribes to the endorser's list directly with --auto-approve and
  ``prefer_peers = true``: the very configuration of the baseline plus a
  peer, so every list fetch still goes to the endorser and is counted, and
  the only difference is where image bytes come from. With ``--join
  follow`` sites 1-19 do not subscribe: ``[federation] follow`` names the
  endorser and ``approve_if_peers = 1``, so they take the list from the
  parent's copy. Syncs run level by level: the sites of one level at once,
  the next level when they are all done (a site can only take the image
  from a parent that holds it; a site syncing earlier would fall back to
  the endorser).

Measured, for both runs: the bytes the endorser served (list and image,
from the first subscription until every site holds the image), and the
wall time from starting the first sync until every site's sync has
finished and every site holds the image as ``available`` (checked in its
store, with the cached file of the right size; the sync verified its
SHA-512 while downloading). Also where the time goes: each level's time,
each site's sync, the CPU seconds of the syncs, the site servers and the
endorser, the start-up of one ``python -m federation`` process, and with
peers on what each parent's `vmic serve` reports in /metrics (bytes served,
re-hashes before first serving). After each run every site syncs once more
(steady state, not part of the targets) to show what the endorser serves
then.

Both runs are done twice: first with the endorser's server as fast as
loopback allows, then (unless ``--rate 0``) with its uplink capped at
``--rate`` MB/s (default 50) for all its clients together, as an endorser's
server on a real network is; every image body then goes out in paced
pieces, and the bytes of a response a site cuts off (a site that raced the
endorser against its parent and took the parent's bytes) are counted too.

Targets: with peers on the endorser serves at most 2x the image size
(against about 20x with peers off); uncapped, the propagation with peers on
takes no longer than with peers off; capped, it is at least 3x faster with
peers on. Missing a target is reported, not fatal: the
exit code is 1 only when a command fails or a site does not end up holding
the image. Nothing leaves 127.0.0.1; every process started here is stopped
and the temporary folder removed.

This file is named like the ``federation`` package, and its folder comes
first on ``sys.path`` when it runs as a script, so it must not import that
package: everything of the federation runs as ``python -m federation ...``
from the repository root (the real command line, in processes of its own).

    .venv/bin/python bench/federation_tree.py [--size BYTES] [--sites N] [--fanout K]
                                         [--join subscribe|follow] [--timeout S] [--rate MB/S]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import tomlkit
from benchkit import (
    CA_DN,
    ENDORSER_DN,
    IMAGE_NAME,
    LIST_NAME,
    Endorser,
    make_endorser,
    make_image,
    parse_size,
    verdict,  # bench/benchkit.py
)
from fedkit import (  # bench/fedkit.py
    BYTES_TARGET,
    CAPPED_TARGET,
    COMMAND_TIMEOUT,
    MB,
    ROOT,
    SITE_DN,
    STARTUP_TIMEOUT,
    BenchError,
    EndorserServer,
    Finished,
    MiB,
    Served,
    SiteServer,
    check_finished,
    children_cpu,
    endorser_server,
    process_cpu,
    run_concurrently,
    vmic,
    write_list,
)

from keys.dn import DistinguishedName
from keys.errors import VmicError
from keys.fileio import write_atomic
from keys.pki import CertificateAuthority, issue
from site_agent import admin, config_edit
from site_agent import config as site_config
from site_agent.home import SiteHome
from site_agent.peerstore import PeerStore
from site_agent.records import AVAILABLE
from site_agent.store import Store

# -- the tree ------------------------------------------------------------------------------


def parent_of(site: int, fanout: int) -> int | None:
    return None if site == 0 else (site - 1) // fanout


def tree_levels(sites: int, fanout: int) -> list[list[int]]:
    """The sites of each level, root first (children of site p: p*fanout+1 .. p*fanout+fanout)."""
    depth = [0] * sites
    for site in range(1, sites):
        parent = parent_of(site, fanout)
        depth[site] = depth[parent] + 1 if parent is not None else 0
    levels: list[list[int]] = [[] for _ in range(max(depth) + 1)]
    for site, level in enumerate(depth):
        levels[level].append(site)
    return levels


def _span(sites: Sequence[int]) -> str:
    return f"site {sites[0]}" if len(sites) == 1 else f"sites {sites[0]}-{sites[-1]}"


# -- sites -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    sha512: str
    size: int


def set_federation(home: SiteHome, **values: object) -> None:
    """Set keys of [federation] in config.toml (what an admin edits by hand)."""
    doc = site_config.document(home.config)
    if "federation" not in doc:
        doc.append("federation", tomlkit.table())
    table = doc["federation"]
    if not isinstance(table, dict):
        raise BenchError(f"{home.config}: [federation] is not a table")
    for key, value in values.items():
        table[key] = value
    write_atomic(home.config, tomlkit.dumps(doc).encode("utf-8"), mode=0o640)
    site_config.load(home.config)  # what was written must load


def new_sites(folder: Path, count: int, endorser: Endorser) -> list[SiteHome]:
    """``vmic site init`` for each site, with the dev CA folder as the trust directory."""
    homes = [SiteHome(folder / f"site-{n:02d}") for n in range(count)]
    for home in homes:
        admin.init_site(home, trust=endorser.ca_dir)
    return homes


def subscribe(home: SiteHome, url: str, endorser: Endorser) -> None:
    """``vmic subscribe URL --endorser-dn .. --ca-dn .. --auto-approve`` (fetches the list)."""
    admin.subscribe(
        home, url, pins=[endorser.pin], name="bench", auto_approve=True, now=datetime.now(UTC)
    )


def holds_image(home: SiteHome, image: Image) -> str | None:
    """None when the site holds the image as available, with its file; else what is wrong."""
    with Store.open(home.database) as store:
        states = [i.state for i in store.images() if i.sha512 == image.sha512]
    if states != [AVAILABLE]:
        return f"image states {states}"
    cached = home.images / image.sha512
    if not cached.is_file() or cached.stat().st_size != image.size:
        return "the cached file is missing or has the wrong size"
    return None


def check_sites(homes: Sequence[SiteHome], sites: Sequence[int], image: Image, what: str) -> None:
    for site in sites:
        problem = holds_image(homes[site], image)
        if problem is not None:
            raise BenchError(f"{what}: site {site} does not hold the image: {problem}")


def settle() -> None:
    """Before each timed phase: write back what earlier phases left dirty (not timed)."""
    os.sync()


# -- the two runs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Level:
    sites: list[int]
    seconds: float
    cpu: float
    """CPU seconds of the syncs, the site servers and the endorser meanwhile."""


@dataclass(slots=True, kw_only=True)
class Run:
    name: str
    setup: float = 0.0
    seconds: float = 0.0
    """From starting the first sync until every site's sync finished."""
    served: Served = field(default_factory=Served)
    """By the endorser, from the first subscription until every site held the image."""
    steady: Served = field(default_factory=Served)
    """By the endorser during one more sync of every site."""
    levels: list[Level] = field(default_factory=list)
    syncs: dict[int, float] = field(default_factory=dict)
    sync_cpu: float = 0.0
    server_cpu: float = 0.0
    servers: int = 0
    endorser_cpu: float = 0.0
    peer_bytes: int = 0
    peer_checks: int = 0
    peer_transfers: list[tuple[int, int, float]] = field(default_factory=list)
    """(site, bytes, seconds) of each download from a peer, as the site recorded it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    sites: int
    fanout: int
    join: str
    timeout: float
    image: Image
    endorser: Endorser
    server: EndorserServer

    @property
    def list_url(self) -> str:
        return f"{self.server.base}/{LIST_NAME}"


def sync_all(
    homes: Sequence[SiteHome], sites: Sequence[int], setting: Setting, what: str
) -> list[Finished]:
    results = run_concurrently(
        [(n, vmic("sync", "--home", homes[n].root)) for n in sites],
        timeout=setting.timeout,
        what=what,
    )
    check_finished(results, what)
    return results


def steady_round(homes: Sequence[SiteHome], setting: Setting, run: Run) -> None:
    before = setting.server.served()
    sync_all(homes, range(len(homes)), setting, f"{run.name}: the steady-state sync")
    run.steady = setting.server.served() - before


def peers_off(setting: Setting, folder: Path) -> Run:
    """Every site subscribes to the endorser; all syncs at once."""
    run = Run(name="peers off")
    start_served = setting.server.served()
    start = time.perf_counter()
    homes = new_sites(folder, setting.sites, setting.endorser)
    for home in homes:
        subscribe(home, setting.list_url, setting.endorser)
    run.setup = time.perf_counter() - start
    settle()
    cpu = _cpu(setting, [])
    start = time.perf_counter()
    results = sync_all(homes, range(setting.sites), setting, "peers off: vmic sync")
    check_sites(homes, range(setting.sites), setting.image, "peers off")
    run.seconds = time.perf_counter() - start
    run.sync_cpu, _, run.endorser_cpu = (b - a for a, b in zip(cpu, _cpu(setting, []), strict=True))
    run.served = setting.server.served() - start_served
    run.syncs = {r.key: r.seconds for r in results}
    run.levels = [
        Level(
            sites=list(range(setting.sites)),
            seconds=run.seconds,
            cpu=run.sync_cpu + run.endorser_cpu,
        )
    ]
    steady_round(homes, setting, run)
    return run


def _identities(folder: Path, count: int, endorser: Endorser) -> list[tuple[Path, Path]]:
    """A certificate and key (EC) from the dev CA for each site."""
    ca = CertificateAuthority.load(endorser.ca_dir)
    now = datetime.now(UTC)
    out = []
    for n in range(count):
        where = folder / f"id-{n:02d}"
        issue(ca, DistinguishedName.parse_slash(SITE_DN.format(n=n)), where, now=now, key_type="ec")
        out.append((where / "cert.pem", where / "key.pem"))
    return out


def _start_servers(
    homes: Sequence[SiteHome], logs: Path, stack: contextlib.ExitStack
) -> list[SiteServer]:
    servers = []
    for n, home in enumerate(homes):
        server = SiteServer(home, logs / f"serve-{n:02d}.log")
        stack.callback(server.stop)
        servers.append(server)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    for server in servers:
        server.wait_ready(deadline)
    return servers


def _join(homes: Sequence[SiteHome], servers: Sequence[SiteServer], setting: Setting) -> None:
    """Each site but site 0 follows its parent (and, with --join subscribe, the endorser)."""
    if setting.join == "follow":
        subscribe(homes[0], setting.list_url, setting.endorser)
    else:
        for home in homes:
            subscribe(home, setting.list_url, setting.endorser)
    jobs = []
    for n in range(1, setting.sites):
        parent = parent_of(n, setting.fanout)
        if parent is None:
            continue
        export = servers[parent].url + "/export.atom"
        pin = ["--site-dn", SITE_DN.format(n=parent), "--ca-dn", CA_DN]
        name = f"site-{parent:02d}"
        jobs.append((n, vmic("peer", "add", export, *pin, "--name", name, "--home", homes[n].root)))
    check_finished(
        run_concurrently(jobs, timeout=COMMAND_TIMEOUT, what="vmic peer add"), "peer add"
    )


def _cpu(setting: Setting, servers: Sequence[SiteServer]) -> tuple[float, float, float]:
    """CPU seconds so far of the waited-for syncs, the site servers, the endorser."""
    return (
        children_cpu(),
        sum(process_cpu(s.process.pid) for s in servers),
        process_cpu(setting.server.pid),
    )


def peers_on(setting: Setting, folder: Path) -> Run:
    """Sites with certificates, servers, exports and a parent peer; synced level by level."""
    run = Run(name=f"peers on ({setting.join})")
    levels = tree_levels(setting.sites, setting.fanout)
    with contextlib.ExitStack() as stack:
        start_served = setting.server.served()
        start = time.perf_counter()
        homes = new_sites(folder, setting.sites, setting.endorser)
        logs = folder / "logs"
        logs.mkdir()
        servers = _start_servers(homes, logs, stack)
        for n, (home, (cert, key)) in enumerate(
            zip(homes, _identities(folder, setting.sites, setting.endorser), strict=True)
        ):
            config_edit.set_identity(
                home.config, cert=cert, key=key, chain=None, base_url=servers[n].url
            )
            if setting.join == "follow" and n > 0:
                set_federation(home, follow=[[ENDORSER_DN, CA_DN]], approve_if_peers=1)
            else:
                set_federation(home, prefer_peers=True)
        exports = [(n, vmic("export", "--home", home.root)) for n, home in enumerate(homes)]
        check_finished(
            run_concurrently(exports, timeout=COMMAND_TIMEOUT, what="vmic export"), "export"
        )
        _join(homes, servers, setting)
        run.setup = time.perf_counter() - start
        run.servers = len(servers)
        settle()
        first = cpu = _cpu(setting, servers)
        start = time.perf_counter()
        for number, sites in enumerate(levels):
            began = time.perf_counter()
            results = sync_all(homes, sites, setting, f"peers on: vmic sync of level {number}")
            check_sites(homes, sites, setting.image, f"peers on, level {number}")
            seconds, now = time.perf_counter() - began, _cpu(setting, servers)
            run.levels.append(Level(sites=sites, seconds=seconds, cpu=sum(now) - sum(cpu)))
            run.syncs.update({r.key: r.seconds for r in results})
            cpu = now
        run.seconds = time.perf_counter() - start
        run.sync_cpu, run.server_cpu, run.endorser_cpu = (
            b - a for a, b in zip(first, cpu, strict=True)
        )
        run.served = setting.server.served() - start_served
        for server in servers:
            samples = server.metrics()
            run.peer_bytes += int(samples.get("vmic_bytes_served_total", 0))
            run.peer_checks += int(samples.get("vmic_image_checks_total", 0))
        for n, home in enumerate(homes):
            with Store.open(home.database) as store:
                for peer in PeerStore(store).peers():
                    if peer.bytes_received:
                        run.peer_transfers.append((n, peer.bytes_received, peer.seconds))
        steady_round(homes, setting, run)
    return run


# -- output and arguments ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Spread one image through a tree of sites on 127.0.0.1 (real `vmic serve` and "
            "`vmic sync` processes), with peer sources off (every site syncs from the "
            "endorser at once) and on (each site takes the image from its parent, level by "
            "level); compare the bytes the endorser serves and the time until every site "
            "holds the image verified."
        )
    )
    parser.add_argument(
        "--size", type=parse_size, default=256 * MiB, help="image size, k/m/g suffix (default 256m)"
    )
    parser.add_argument("--sites", type=int, default=20, help="number of sites (default 20)")
    parser.add_argument("--fanout", type=int, default=3, help="children per site (default 3)")
    parser.add_argument(
        "--join",
        choices=("subscribe", "follow"),
        default="subscribe",
        help=(
            "peers on: every site subscribes to the endorser and adds its parent as a peer "
            "(subscribe, the default), or sites below the root only add their parent and "
            "follow the endorser's lists it carries, approving what it shares (follow)"
        ),
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds each round of syncs may take before it is killed (default 900)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help=(
            "also run both again with the endorser's uplink capped at this many MB/s "
            "(default 50; 0: only the uncapped runs)"
        ),
    )
    args = parser.parse_args(argv)
    if args.sites < 2 or args.fanout < 1 or args.timeout <= 0 or args.rate < 0:
        parser.error(
            "--sites must be at least 2, --fanout at least 1, --timeout positive, "
            "--rate not negative"
        )
    return args


def _times(values: Sequence[float]) -> str:
    median = statistics.median(values)
    return f"min {min(values):.2f} s, median {median:.2f} s, max {max(values):.2f} s"


def _served(served: Served, size: int) -> str:
    text = (
        f"{served.total:,} bytes = {served.total / size:.2f}x the image "
        f"(image: {served.image_bodies} bodies, {served.image_bytes:,} bytes; "
        f"list: {served.list_bodies} bodies, {served.list_bytes:,} bytes; "
        f"{served.not_modified} x 304)"
    )
    if served.aborted:
        text += f"; {served.aborted} responses cut off, not counted"
    return text


def print_run(run: Run, size: int, cpus: int) -> None:
    print(f"\n{run.name}")
    print(f"  set-up (not timed): {run.setup:.1f} s")
    for level in run.levels:
        each = [run.syncs[n] for n in level.sites]
        print(
            f"  {_span(level.sites):<14} {len(level.sites):2} at once: "
            f"{level.seconds:6.2f} s, CPU {level.cpu:5.1f} s "
            f"({100 * level.cpu / (level.seconds * cpus):3.0f}% of {cpus} CPUs); "
            f"each sync {_times(each)}"
        )
    print(f"  propagation, until every site holds the image: {run.seconds:.2f} s")
    print(f"  endorser served: {_served(run.served, size)}")
    busy = run.sync_cpu + run.server_cpu + run.endorser_cpu
    servers = f"{run.servers} site servers {run.server_cpu:.1f} s, " if run.servers else ""
    print(
        f"  CPU: {len(run.syncs)} syncs {run.sync_cpu:.1f} s, {servers}endorser "
        f"{run.endorser_cpu:.1f} s; {busy:.1f} s = {100 * busy / (run.seconds * cpus):.0f}% of "
        f"{cpus} CPUs x {run.seconds:.1f} s"
    )
    if run.peer_transfers:
        rates = [b / s / MB for _, b, s in run.peer_transfers if s > 0]
        print(
            f"  from peers: {len(run.peer_transfers)} downloads; site servers' /metrics: "
            f"{run.peer_bytes:,} body bytes served, {run.peer_checks} re-hashes before first "
            f"serving; download time as the sites recorded it: "
            f"{_times([s for _, _, s in run.peer_transfers])}"
            + (f", median {statistics.median(rates):.0f} MB/s" if rates else "")
        )
    print(
        f"  one more sync of every site (steady state): endorser served {_served(run.steady, size)}"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Costs:
    """Reference costs measured once, to attribute the time."""

    startup: float
    """``python -m federation --help``: interpreter start and vmic's imports."""
    sha512: float
    """hashlib.sha512 of the image already in memory."""


def measure_costs(image: Path) -> Costs:
    start = time.perf_counter()
    subprocess.run(vmic("--help"), cwd=ROOT, check=True, capture_output=True)
    startup = time.perf_counter() - start
    data = image.read_bytes()
    start = time.perf_counter()
    hashlib.sha512(data).hexdigest()
    return Costs(startup=startup, sha512=time.perf_counter() - start)


def print_summary(on: Run, off: Run, *, size: int, cpus: int, costs: Costs) -> None:
    on_x, off_x = on.served.total / size, off.served.total / size
    print("\nresults")
    print(
        f"  endorser bytes, peers on:  {on.served.total:>14,} ({on_x:.2f}x the image)  "
        f"(target <= {BYTES_TARGET:g}x: {verdict(on_x <= BYTES_TARGET)})"
    )
    print(f"  endorser bytes, peers off: {off.served.total:>14,} ({off_x:.2f}x the image)")
    print(
        f"  ratio off/on: {off.served.total / max(on.served.total, 1):.1f}x fewer bytes with peers"
    )
    ratio = on.seconds / off.seconds
    print(
        f"  propagation, peers on:  {on.seconds:7.2f} s ({len(on.levels)} levels one after another)"
    )
    print(f"  propagation, peers off: {off.seconds:7.2f} s (all syncs at once)")
    print(f"  ratio on/off: {ratio:.2f}x  (target <= 1: {verdict(ratio <= 1.0)})")
    cpu_on = on.sync_cpu + on.server_cpu + on.endorser_cpu
    cpu_off = off.sync_cpu + off.server_cpu + off.endorser_cpu
    print("\nwhere the time goes")
    print(
        f"  CPU seconds: peers on {cpu_on:.1f} (syncs {on.sync_cpu:.1f}, site servers "
        f"{on.server_cpu:.1f}), peers off {cpu_off:.1f} (syncs {off.sync_cpu:.1f})"
    )
    print(
        f"  site servers re-hashed the image {on.peer_checks} times before first serving it: "
        f"{on.peer_checks} x {costs.sha512:.2f} s (SHA-512 of the image in memory) = "
        f"{on.peer_checks * costs.sha512:.1f} CPU-s; each level below the root waits about "
        f"{costs.sha512:.2f} s for it before its first byte"
    )
    print(
        f"  interpreter start and imports (`python -m federation --help`: "
        f"{costs.startup:.2f} s) lie {len(on.levels)} times on the critical path with peers "
        f"on (one sync per level), once with peers off"
    )
    print(
        f"  levels run one after another; CPU use of the {cpus} CPUs per level: "
        + ", ".join(
            f"level {n} {100 * lv.cpu / (lv.seconds * cpus):.0f}%" for n, lv in enumerate(on.levels)
        )
    )


# -- main --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    """Both runs against one endorser: its uplink uncapped, or capped at ``rate``."""

    name: str
    rate: float | None
    on: Run
    off: Run


def measure(args: argparse.Namespace, workdir: Path) -> tuple[list[Variant], Costs]:
    served = workdir / "endorser-files"
    served.mkdir()
    start = time.perf_counter()
    sha512 = make_image(served / IMAGE_NAME, args.size)
    print(
        f"image: {args.size:,} bytes ({args.size / MiB:.0f} MiB) of os.urandom, written in "
        f"{time.perf_counter() - start:.1f} s; SHA-512 {sha512[:16]}..."
    )
    levels = tree_levels(args.sites, args.fanout)
    print(
        f"tree: {args.sites} sites, fan-out {args.fanout}: "
        + "; ".join(f"level {i}: {_span(sites)}" for i, sites in enumerate(levels))
        + " (site 0 takes the image from the endorser)"
    )
    endorser = make_endorser(workdir, datetime.now(UTC))
    rates: list[tuple[str, float | None]] = [("endorser uncapped", None)]
    if args.rate > 0:
        rates.append((f"endorser's uplink capped at {args.rate:g} MB/s", args.rate * MB))
    variants = []
    for name, rate in rates:
        with endorser_server(served, rate=rate) as server:
            write_list(served, server.base, endorser, sha512=sha512, size=args.size)
            how = (
                "aiohttp static (sendfile)"
                if rate is None
                else f"the image paced to {rate / MB:g} MB/s for all clients together"
            )
            print(
                f"\n{name}: {how}, in another process, {server.base}/ ; "
                "counts the body bytes of every response"
            )
            setting = Setting(
                sites=args.sites,
                fanout=args.fanout,
                join=args.join,
                timeout=args.timeout,
                image=Image(sha512=sha512, size=args.size),
                endorser=endorser,
                server=server,
            )
            off = peers_off(setting, workdir / "off")
            shutil.rmtree(workdir / "off")
            on = peers_on(setting, workdir / "on")
            shutil.rmtree(workdir / "on")
        variants.append(Variant(name=name, rate=rate, on=on, off=off))
    return variants, measure_costs(served / IMAGE_NAME)


def print_capped(variant: Variant, size: int) -> None:
    on, off = variant.on, variant.off
    speedup = off.seconds / on.seconds
    print(f"\nresults, {variant.name}")
    print(f"  endorser bytes, peers on:  {on.served.total:>14,} ({on.served.total / size:.2f}x)")
    print(f"  endorser bytes, peers off: {off.served.total:>14,} ({off.served.total / size:.2f}x)")
    print(f"  propagation, peers on:  {on.seconds:7.2f} s")
    print(f"  propagation, peers off: {off.seconds:7.2f} s")
    print(
        f"  speed-up with peers (off/on): {speedup:.2f}x  "
        f"(target >= {CAPPED_TARGET:g}: {verdict(speedup >= CAPPED_TARGET)})"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = os.cpu_count() or 1
    print(f"machine: {cpus} CPUs, 1-minute load average {os.getloadavg()[0]:.2f} at the start")
    with tempfile.TemporaryDirectory(prefix="vmic-bench-federation-") as tmp:
        try:
            variants, costs = measure(args, Path(tmp))
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        except VmicError as exc:
            print(f"vmic failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except (OSError, http.client.HTTPException, subprocess.CalledProcessError) as exc:
            print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    for variant in variants:
        print(f"\n== {variant.name}")
        for run in (variant.off, variant.on):
            print_run(run, args.size, cpus)
        if variant.rate is None:
            print_summary(variant.on, variant.off, size=args.size, cpus=cpus, costs=costs)
        else:
            print_capped(variant, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
