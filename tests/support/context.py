"""Helpers for the contextualisation CD tests: site scripts, reading CDs, running the boot script.

Everything is real: the scripts are files in ``tmp_path``, CDs are read with
pycdlib (as an independent reader of what :mod:`site_agent.context.iso`
wrote), and the in-image script runs as a subprocess of /bin/sh (or dash).
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pycdlib
from pycdlib.dr import DirectoryRecord

BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C"}

PROLOG = """#!/bin/sh
set -eu
echo "prolog ran: syslog=$SYSLOG_SERVER phase=$VMIC_CONTEXT_PHASE"
printf 'prolog %s|%s\\n' "$SYSLOG_SERVER" "$BATCH_SYSTEM" >> "$VMIC_TEST_LOG"
"""

EPILOG = """#!/bin/sh
set -eu
echo "epilog ran: batch=$BATCH_SYSTEM"
printf 'epilog %s|%s|%s\\n' "$MONITORING" "$VMIC_CONTEXT_DIR" "$(cat etc/site.conf)" \\
    >> "$VMIC_TEST_LOG"
"""


def write_scripts(folder: Path, *, prolog: str = PROLOG, epilog: str = EPILOG) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    prolog_path, epilog_path = folder / "prolog.sh", folder / "epilog.sh"
    prolog_path.write_text(prolog)
    epilog_path.write_text(epilog)
    return prolog_path, epilog_path


def iso_files(path: Path) -> dict[str, tuple[bytes, int]]:
    """Rock Ridge path -> (bytes, permission bits) of every file on an ISO image."""
    image = pycdlib.PyCdlib()
    image.open(str(path))
    try:
        found: dict[str, tuple[bytes, int]] = {}
        for folder, _dirs, names in image.walk(rr_path="/"):
            for name in names:
                full = f"{folder.rstrip('/')}/{name}"
                buffer = io.BytesIO()
                image.get_file_from_iso_fp(buffer, rr_path=full)
                record = image.get_record(rr_path=full)
                assert isinstance(record, DirectoryRecord)
                assert record.rock_ridge is not None
                mode = record.rock_ridge.get_file_mode() & 0o7777
                found[full.lstrip("/")] = (buffer.getvalue(), mode)
        return found
    finally:
        image.close()


def extract(path: Path, dest: Path) -> Path:
    """Copy the files of an ISO image into ``dest``: the folder that stands for the mounted CD."""
    for name, (data, mode) in iso_files(path).items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
    return dest


def run_boot(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the in-image script (``argv``), with only ``env`` on top of a plain PATH and locale."""
    return subprocess.run(
        list(argv),
        env={**BASE_ENV, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=os.sep,
    )
