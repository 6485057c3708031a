"""`python -m federation` runs the `vmic` command line (as the console script does)."""

from federation.cli import run

run()
