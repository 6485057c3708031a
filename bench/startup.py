"""Benchmark: how long `vmic` takes to start, against the interpreter and its own libraries.

Each row runs a whole process ``--rounds`` times (default 15), alternating
with the baseline, and compares medians:

- ``vmic --version`` and ``vmic --help`` against the baseline
  ``python -c "import lxml.etree, cryptography.x509, sqlite3"`` (the
  libraries any vmic command stands on; target: at most 2x);
- ``vmic keys --help``, ``vmic verify --help``, ``vmic status --help`` and
  ``vmic sync --help``: what a command's own imports add (reported);
- a bare ``python -c pass``, for scale.

Every process is ``python -m federation`` with the same interpreter, as the
console script runs it. Missing a target is reported, not fatal.

    .venv/bin/python bench/startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = [sys.executable, "-c", "import lxml.etree, cryptography.x509, sqlite3"]
BARE = [sys.executable, "-c", "pass"]
TARGET = 2.0


def vmic(*args: str) -> list[str]:
    return [sys.executable, "-m", "federation", *args]


def once(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - started


def median_pair(command: list[str], rounds: int) -> tuple[float, float]:
    """Medians of ``command`` and of the baseline, run in turn so that noise hits both."""
    mine, base = [], []
    for _ in range(rounds):
        mine.append(once(command))
        base.append(once(BASELINE))
    return statistics.median(mine), statistics.median(base)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="runs of each process")
    args = parser.parse_args()
    bare = statistics.median(once(BARE) for _ in range(args.rounds))
    print(f"python -c pass: {bare * 1000:.0f} ms (median of {args.rounds})")
    print(f"{'command':<24} {'vmic':>8} {'baseline':>9} {'ratio':>6}  target")
    worst = 0.0
    rows = [
        ("--version", True),
        ("--help", True),
        ("keys --help", False),
        ("verify --help", False),
        ("status --help", False),
        ("sync --help", False),
    ]
    for words, targeted in rows:
        mine, base = median_pair(vmic(*words.split()), args.rounds)
        ratio = mine / base
        if targeted:
            worst = max(worst, ratio)
        goal = f"<= {TARGET:g}x" if targeted else "(reported)"
        print(
            f"vmic {words:<19} {mine * 1000:>6.0f}ms {base * 1000:>7.0f}ms {ratio:>5.2f}x  {goal}"
        )
    met = worst <= TARGET
    print(
        f"ratio vmic/baseline (start-up): {worst:.2f}x, target <= {TARGET:g}x: "
        f"{'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
