"""The cloud-init NoCloud seed: the CD's files plus ``user-data`` and ``meta-data``.

cloud-init's NoCloud datasource reads a volume labelled ``cidata`` holding
``user-data`` and ``meta-data``. The seed vmic writes holds the same files
as the CONTEXT CD, and its ``user-data`` runs vmic's own in-image script
(the very text ``vmic context install`` puts in an image, passed to ``sh
-c``; no shell command is built from site data) with
``VMIC_CONTEXT_LABEL=cidata``, so it mounts the seed and runs the scripts
exactly as the boot units do:

* ``bootcmd`` (Network stage, ``cloud_init_modules``; every boot) runs
  ``prolog``. cloud-init runs no user commands before the network is up, so
  here the prolog comes *after* network set-up, not before it;
* ``runcmd`` (written in the Config stage, run by ``scripts_user`` in the
  Final stage, after ``network-online.target``; first boot of an instance
  only) runs ``epilog``.

``meta-data`` names the instance ``vmic-context-`` plus the first 16 hex
digits of a SHA-256 over the CD's files, so the seed is reproducible, and a
changed CD is a new instance to cloud-init (which then runs ``runcmd``
again).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from site_agent.context.install import script_text
from site_agent.context.tree import FILE_MODE, ContextFile

SEED_LABEL = "cidata"
USER_DATA = "user-data"
META_DATA = "meta-data"

_PREAMBLE = """\
#cloud-config
# Written by `vmic context build --cloud-init`. The script below is vmic's in-image
# script (as `vmic context install` installs it). It finds this seed by its label
# (cidata), mounts it read-only, sources context.sh and runs prolog.sh (bootcmd:
# every boot, once the network is up) or epilog.sh (runcmd: first boot, last).
"""


def instance_id(files: Sequence[ContextFile]) -> str:
    """``vmic-context-`` + 16 hex digits of a SHA-256 over every path, mode and content."""
    digest = hashlib.sha256()
    for entry in sorted(files, key=lambda f: f.path):
        path = entry.path.encode("utf-8")
        for field in (path, f"{entry.mode:o}".encode(), entry.data):
            digest.update(len(field).to_bytes(8, "big"))
            digest.update(field)
    return f"vmic-context-{digest.hexdigest()[:16]}"


def user_data(script: str) -> bytes:
    """The ``#cloud-config`` document: the script once (a YAML anchor), used twice."""
    if not script.isascii() or "\t" in script or "\r" in script:
        raise ValueError("the in-image script must be plain ASCII without tabs")
    block = "".join(f"      {line}\n" if line else "\n" for line in script.splitlines())
    return (
        f"{_PREAMBLE}"
        "bootcmd:\n"
        "  - - env\n"
        f"    - VMIC_CONTEXT_LABEL={SEED_LABEL}\n"
        "    - sh\n"
        "    - -c\n"
        "    - &vmic_context |\n"
        f"{block}"
        "    - vmic-context\n"
        "    - prolog\n"
        "runcmd:\n"
        f"  - [env, VMIC_CONTEXT_LABEL={SEED_LABEL}, sh, -c, *vmic_context, vmic-context, epilog]\n"
    ).encode("ascii")


def meta_data(files: Sequence[ContextFile]) -> bytes:
    return f"instance-id: {instance_id(files)}\n".encode("ascii")


def seed_files(files: Sequence[ContextFile]) -> tuple[ContextFile, ...]:
    """The CD's files plus ``user-data`` and ``meta-data``, sorted by path."""
    extra = (
        ContextFile(path=USER_DATA, data=user_data(script_text()), mode=FILE_MODE),
        ContextFile(path=META_DATA, data=meta_data(files), mode=FILE_MODE),
    )
    return tuple(sorted((*files, *extra), key=lambda f: f.path))
