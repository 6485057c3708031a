"""What goes on a contextualisation CD: the two scripts, context.sh and the site's extra files.

:func:`make_tree` reads every source once (so what is checked is what is
written), checks it and returns the files sorted by path, each with the
mode it gets on the CD: ``prolog.sh`` and ``epilog.sh`` 0755,
``context.sh`` 0644, an extra file 0755 if its source is executable by its
owner, else 0644.

An extra file is ``--file SRC:DEST``. SRC must be a regular file. DEST is a
relative path of at most :data:`MAX_DEPTH` parts, each 1 to
:data:`MAX_PART` characters from ``A-Z a-z 0-9 . _ + -``, not starting with
``.`` or ``-`` (so no ``..``, no hidden names, nothing a shell or a
Joliet reader would trip on); it may not be, or sit under, a name the CD
reserves (:data:`RESERVED_NAMES`), and may not clash with another file.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from keys.errors import ConfigError
from site_agent.context.settings import Setting, render_context_sh

PROLOG = "prolog.sh"
EPILOG = "epilog.sh"
CONTEXT_SH = "context.sh"
CLOUD_INIT_NAMES = ("user-data", "meta-data", "vendor-data", "network-config")
RESERVED_NAMES = (PROLOG, EPILOG, CONTEXT_SH, *CLOUD_INIT_NAMES)
"""Top-level names only vmic writes (the cloud-init ones are what NoCloud reads from a seed)."""

MAX_DEPTH = 7  # ISO 9660 allows eight directory levels, the root being the first
MAX_PART = 64  # Joliet's limit for one name
MAX_TOTAL_BYTES = 256 * 1024 * 1024
"""All files on one CD together; it is read into memory, and it is for settings, not data."""

SCRIPT_MODE = 0o755
FILE_MODE = 0o644

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_SH_SHEBANGS = frozenset({"#!/bin/sh", "#!/usr/bin/sh", "#!/usr/bin/env sh"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextFile:
    """One file on the CD: its path (relative, ``/``-separated), bytes and permission bits."""

    path: str
    data: bytes
    mode: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtraFile:
    """``--file SRC:DEST``, checked."""

    source: Path
    dest: str


def parse_file_spec(text: str) -> ExtraFile:
    """``SRC:DEST``; split at the last ``:`` (DEST cannot hold one)."""
    source, sep, dest = text.rpartition(":")
    if not sep or not source:
        raise ConfigError(
            f"--file {text!r} is not SRC:DEST",
            hint="e.g. --file ./rsyslog.conf:etc/rsyslog.d/site.conf",
        )
    return ExtraFile(source=Path(source), dest=check_dest(dest))


def check_dest(dest: str) -> str:
    hint = (
        "DEST is a relative path like etc/site.conf: parts of A-Z a-z 0-9 . _ + -, "
        f"not starting with . or -, at most {MAX_DEPTH} parts of {MAX_PART} characters"
    )
    if dest.startswith("/"):
        raise ConfigError(f"--file destination {dest!r} is absolute", hint=hint)
    parts = dest.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ConfigError(f"--file destination {dest!r} has an empty, . or .. part", hint=hint)
    for part in parts:
        if not _PART.fullmatch(part) or len(part) > MAX_PART:
            raise ConfigError(f"--file destination {dest!r}: {part!r} is not allowed", hint=hint)
    if len(parts) > MAX_DEPTH:
        raise ConfigError(f"--file destination {dest!r} is too deep", hint=hint)
    if parts[0].lower() in RESERVED_NAMES:
        raise ConfigError(
            f"--file destination {dest!r} clashes with {parts[0]}, which vmic writes",
            hint=f"the CD's own names are {', '.join(RESERVED_NAMES)}; choose another",
        )
    return str(PurePosixPath(*parts))


def read_source(path: Path, *, what: str, limit: int = MAX_TOTAL_BYTES) -> tuple[bytes, int]:
    """A regular file's bytes and permission bits (a symbolic link to one is followed)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ConfigError(
            f"{what} {path} is not a regular file", hint="give a file, not a folder or device"
        )
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise ConfigError(
            f"{what} {path} is larger than {limit} bytes",
            hint="the CD carries scripts and settings; fetch large data from the scripts",
        )
    return data, stat.S_IMODE(mode)


def check_script(name: str, data: bytes) -> bytes:
    """The CD's scripts run as ``sh script``: a ``#!`` line naming anything else is ignored."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if first.startswith(b"#!"):
        shebang = b"#!" + b" ".join(first[2:].split())
        if shebang.decode("utf-8", "replace") not in _SH_SHEBANGS:
            raise ConfigError(
                f"{name} starts with {first.decode('utf-8', 'replace')!r}, but the CD's scripts "
                "run with /bin/sh (the CD is mounted noexec)",
                hint="write POSIX sh and start with #!/bin/sh (put `set -e` in the script, "
                "not on the #! line); call bash yourself if you need it",
            )
    return data


def make_tree(
    *,
    prolog: Path,
    epilog: Path,
    settings: Sequence[Setting],
    files: Sequence[ExtraFile],
) -> tuple[ContextFile, ...]:
    """Every file of the CD, sorted by path, read and checked."""
    prolog_data, _ = read_source(prolog, what="prolog")
    epilog_data, _ = read_source(epilog, what="epilog")
    tree = [
        ContextFile(path=PROLOG, data=check_script(PROLOG, prolog_data), mode=SCRIPT_MODE),
        ContextFile(path=EPILOG, data=check_script(EPILOG, epilog_data), mode=SCRIPT_MODE),
        ContextFile(path=CONTEXT_SH, data=render_context_sh(settings), mode=FILE_MODE),
    ]
    for extra in files:
        data, mode = read_source(extra.source, what="--file source")
        executable = mode & stat.S_IXUSR
        tree.append(
            ContextFile(
                path=check_dest(extra.dest),
                data=data,
                mode=SCRIPT_MODE if executable else FILE_MODE,
            )
        )
    check_layout(tree)
    total = sum(len(f.data) for f in tree)
    if total > MAX_TOTAL_BYTES:
        raise ConfigError(
            f"the CD's files add up to {total} bytes, more than {MAX_TOTAL_BYTES}",
            hint="the CD carries scripts and settings; fetch large data from the scripts",
        )
    return tuple(sorted(tree, key=lambda f: f.path))


def check_layout(tree: Sequence[ContextFile]) -> None:
    """No path twice, and no file where another file needs a folder."""
    files: set[str] = set()
    folders: set[str] = set()
    for entry in tree:
        if entry.path in files:
            raise ConfigError(f"{entry.path} is given twice", hint="give each --file DEST once")
        files.add(entry.path)
        folders.update(str(p) for p in PurePosixPath(entry.path).parents if str(p) != ".")
    clash = sorted(files & folders)
    if clash:
        raise ConfigError(
            f"{clash[0]} is both a file and a folder on the CD",
            hint="one --file DEST sits under another; rename one of them",
        )


def folders_of(tree: Sequence[ContextFile]) -> tuple[str, ...]:
    """The folders the files need, parents first."""
    found: set[str] = set()
    for entry in tree:
        found.update(str(p) for p in PurePosixPath(entry.path).parents if str(p) != ".")
    return tuple(sorted(found, key=lambda p: (p.count("/"), p)))
