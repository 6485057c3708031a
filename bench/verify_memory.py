"""Benchmark: peak memory and time of verifying large lists, against xmlsec1 on the same file.

Anyone on the path can send a site a large list, and a sync verifies several
at once, so what verification costs bounds what a site needs. For signed
Atom lists of ``--entries`` images (default 10,000) and ten times that, this
prints, each measured in a fresh process of its own (``ru_maxrss``, after
the process has read the file and loaded the trust store):

- vmic ``verify_list`` on the valid list: peak memory over the document's
  size, and time;
- vmic on the same list with one altered byte (refused at the digest, after
  the whole document was parsed and canonicalized: the worst refusal);
- ``xmlsec1 --verify`` on the valid list: its peak memory, the same-run
  baseline (a C verifier that also holds the parsed tree);
- whether vmic's default limits (``keys.limits``) take the list at all: a
  list over the byte cap is refused before parsing, in milliseconds.

The larger list is verified with raised limits, to measure what the caps
prevent. Everything is local.

    .venv/bin/python bench/verify_memory.py [--entries N] [--key-type rsa|ec]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from verify import MB, build_fixture  # bench/verify.py

from feeds.verify import verify_list
from keys.errors import VmicError
from keys.limits import DEFAULT_LIMITS, Limits
from keys.trust import TrustStore

RAISED = Limits(max_list_bytes=2**31 - 1, max_entries=10_000_000)


def _child(path: Path, ca_dir: Path, *, tamper: bool, default_limits: bool) -> int:
    """In a fresh process: read, verify once, print peak RSS growth and seconds as JSON."""
    raw = path.read_bytes()
    if tamper:
        at = raw.index(b"Bench image 1<")
        raw = raw[:at] + b"X" + raw[at + 1 :]
    trust = TrustStore.from_directory(ca_dir)
    limits = DEFAULT_LIMITS if default_limits else RAISED
    base = high_water_kib(Path("/proc/self/status"))
    started = time.perf_counter()
    outcome = "verified"
    try:
        verify_list(raw, trust=trust, pins=None, now=datetime.now(UTC), limits=limits)
    except VmicError as exc:
        outcome = f"{type(exc).__name__}: {exc.message[:80]}"
    seconds = time.perf_counter() - started
    peak = high_water_kib(Path("/proc/self/status"))
    print(json.dumps({"kib": peak - base, "seconds": seconds, "outcome": outcome}))
    return 0


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    kib: int
    seconds: float
    outcome: str


def measure(path: Path, ca_dir: Path, *, tamper: bool = False, default_limits: bool = False) -> Run:
    argv = [sys.executable, __file__, "--child", str(path), "--ca", str(ca_dir)]
    argv += ["--tamper"] * tamper + ["--default-limits"] * default_limits
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(kib=int(data["kib"]), seconds=float(data["seconds"]), outcome=str(data["outcome"]))


def high_water_kib(status: Path) -> int:
    """A process's peak resident memory (``VmHWM``, KiB); unlike ``ru_maxrss`` it starts
    afresh at exec, so a child does not inherit its parent's peak."""
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in {status}")


def xmlsec1_kib(path: Path, ca_pem: Path) -> int | None:
    """Peak RSS of ``xmlsec1 --verify`` on ``path`` (read while it runs), or None."""
    if shutil.which("xmlsec1") is None:
        return None
    command = ["xmlsec1", "--verify", "--trusted-pem", str(ca_pem)]
    command += ["--enabled-reference-uris", "empty", str(path)]
    peak = 0
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as child:
        status = Path(f"/proc/{child.pid}/status")
        while child.poll() is None:  # bounded: xmlsec1 ends by itself
            try:
                peak = max(peak, high_water_kib(status))
            except (OSError, RuntimeError):  # it exited between poll and read
                break
            time.sleep(0.002)
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, command)
    return peak or None


def report(label: str, size: int, run: Run) -> None:
    ratio = run.kib * 1024 / size
    print(
        f"  {label:<34} peak {run.kib / 1024:8.1f} MiB = {ratio:5.1f}x the document, "
        f"{run.seconds:6.2f} s  ({run.outcome})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=10_000, help="images in the smaller list")
    parser.add_argument("--key-type", choices=("rsa", "ec"), default="ec")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ca", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tamper", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--default-limits", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return _child(args.child, args.ca, tamper=args.tamper, default_limits=args.default_limits)
    if args.entries < 1:
        parser.error("--entries must be at least 1")
    limits = DEFAULT_LIMITS
    print(
        f"default limits: {limits.max_list_bytes / 2**20:g} MiB per list, "
        f"{limits.max_entries} entries"
    )
    for entries in (args.entries, 10 * args.entries):
        with tempfile.TemporaryDirectory(prefix="vmic-bench-mem-") as tmp:
            fx = build_fixture(Path(tmp), entries=entries, key_type=args.key_type)
            size = len(fx.raw)
            print(f"\n{entries} entries, {size / MB:.1f} MB:")
            valid = measure(fx.signed_path, fx.ca_dir)
            report("vmic, valid (raised limits)", size, valid)
            report("vmic, one altered byte", size, measure(fx.signed_path, fx.ca_dir, tamper=True))
            baseline = xmlsec1_kib(fx.signed_path, fx.ca_pem)
            if baseline is not None:
                print(
                    f"  {'xmlsec1 --verify, valid (baseline)':<34} peak {baseline / 1024:8.1f} MiB "
                    f"= {baseline * 1024 / size:5.1f}x the document; vmic/xmlsec1 "
                    f"{valid.kib / baseline:.2f}x"
                )
            report(
                "vmic, default limits",
                size,
                measure(fx.signed_path, fx.ca_dir, default_limits=True),
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
