"""Serve files from a simulator in its own process, for benchmarks of the site agent.

``python -m tests.sim FILE...`` publishes each file at ``/<name>`` (read
from disk at each request, so a 1 GiB image costs no memory), writes the
base URL on one line of standard output, and serves until its standard input
is closed. Running the server in another process keeps it out of the
measured process's CPU time, GIL and peak RSS.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.sim.server import Simulator


def main(argv: list[str] | None = None) -> int:
    files = [Path(name) for name in (sys.argv[1:] if argv is None else argv)]
    with Simulator(safety_timeout=3600) as sim:
        for file in files:
            sim.publish_file(file.name, file)
        sys.stdout.write(sim.base_url + "\n")
        sys.stdout.flush()
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
