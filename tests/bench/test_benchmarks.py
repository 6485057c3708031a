"""Every benchmark runs at a tiny size in `make test`, so none of them rots.

The figures at such sizes mean nothing and nothing is asserted about them;
what is checked is that each script still runs to its end (exit 0) against
the real code and prints its result lines. `make bench` runs them at size.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

CASES = {
    "verify": (["--entries", "30", "--repeat", "1"], "ratio vmic/xmlsec1"),
    "verify_memory": (["--entries", "30"], "the document"),
    "mirror": (["--size", "256k", "--rounds", "1"], "ratio vmic sync/baseline"),
    "delta": (["--size", "24m", "--rounds", "1", "--rate", "50"], "ratio fetched/changed"),
    "sync": (["--subscriptions", "4", "--rounds", "1"], "nothing changed (all 304)"),
    "federation_tree": (
        ["--size", "32k", "--sites", "2", "--fanout", "1", "--rate", "1"],
        "speed-up with peers (off/on)",
    ),
    "glance": (["--size", "256k", "--rounds", "1"], "ratio vmic/client"),
    "startup": (["--rounds", "1"], "ratio vmic/baseline (start-up)"),
    "serve": (
        [
            *("--seconds", "0.5", "--connections", "4", "--size", "256k", "--rounds", "1"),
            *("--idle", "50", "--idle-wait", "0"),
        ],
        "ratio vmic/nginx",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_benchmark_runs_to_its_end_at_a_tiny_size(name: str) -> None:
    arguments, expected = CASES[name]
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert expected in done.stdout
