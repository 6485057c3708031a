"""`vmic context build` and `vmic context show`: from the site's inputs to CD images, and back.

:func:`build_context` checks everything first (settings, destinations,
sources, scripts), then builds each image in memory and writes it through
a temporary file renamed into place, so a failure leaves no half-written
CD. :func:`show_context` lists what a CD holds and reads its settings back
from ``context.sh`` without running anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from keys.errors import ConfigError
from keys.fileio import write_atomic
from site_agent.context import cloudinit
from site_agent.context.iso import IsoEntry, build_iso, check_epoch, read_iso
from site_agent.context.settings import Setting, check_unique, parse_assignment, parse_context_sh
from site_agent.context.tree import CONTEXT_SH, make_tree, parse_file_spec

CONTEXT_LABEL = "CONTEXT"
DEFAULT_EPOCH = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextRequest:
    """What `vmic context build` was given, as text (checked by :func:`build_context`)."""

    prolog: Path
    epilog: Path
    settings: Sequence[str] = ()
    files: Sequence[str] = ()
    out: Path
    cloud_init: bool = False
    seed_out: Path | None = None
    epoch: int = DEFAULT_EPOCH


@dataclass(frozen=True, slots=True, kw_only=True)
class WrittenImage:
    path: Path
    label: str
    files: int
    size: int
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextInfo:
    """What `vmic context show` reports."""

    label: str
    entries: tuple[IsoEntry, ...]
    settings: tuple[Setting, ...]
    instance_id: str | None


def source_date_epoch(environ: Mapping[str, str]) -> int:
    """``SOURCE_DATE_EPOCH`` if set (reproducible-builds.org), else :data:`DEFAULT_EPOCH`."""
    text = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return DEFAULT_EPOCH
    if not text.isdigit():
        raise ConfigError(
            f"SOURCE_DATE_EPOCH={text!r} is not a number of seconds",
            hint="e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct), or unset it",
        )
    return check_epoch(int(text))


def default_seed_path(out: Path) -> Path:
    """``context.iso`` -> ``context-cidata.iso``."""
    return out.with_name(f"{out.stem}-{cloudinit.SEED_LABEL}{out.suffix}")


def build_context(request: ContextRequest) -> tuple[WrittenImage, ...]:
    """Write the CONTEXT CD, and with ``cloud_init`` the NoCloud seed; return what was written."""
    if request.seed_out is not None and not request.cloud_init:
        raise ConfigError(
            "--seed-out is only for --cloud-init", hint="add --cloud-init, or drop --seed-out"
        )
    seed_path = (request.seed_out or default_seed_path(request.out)) if request.cloud_init else None
    if seed_path is not None and seed_path.resolve() == request.out.resolve():
        raise ConfigError(
            f"the CD and the seed would both be {seed_path}", hint="give another --seed-out"
        )
    settings = check_unique(parse_assignment(text) for text in request.settings)
    files = [parse_file_spec(text) for text in request.files]
    tree = make_tree(prolog=request.prolog, epilog=request.epilog, settings=settings, files=files)
    epoch = check_epoch(request.epoch)
    images = [(request.out, CONTEXT_LABEL, tree)]
    if seed_path is not None:
        images.append((seed_path, cloudinit.SEED_LABEL, cloudinit.seed_files(tree)))
    built = [
        (path, label, len(entries), build_iso(entries, label=label, epoch=epoch))
        for path, label, entries in images
    ]
    written = []
    for path, label, count, data in built:
        write_atomic(path, data, mode=0o644)
        written.append(
            WrittenImage(
                path=path,
                label=label,
                files=count,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return tuple(written)


def show_context(path: Path) -> ContextInfo:
    """The label, files and settings of a CD (or seed) built by `vmic context build`."""
    contents = read_iso(path, want=(CONTEXT_SH, cloudinit.META_DATA))
    if CONTEXT_SH not in contents.small_files:
        raise ConfigError(
            f"{path} has no {CONTEXT_SH}", hint="give a CD built by vmic context build"
        )
    settings = parse_context_sh(contents.small_files[CONTEXT_SH])
    instance = None
    meta = contents.small_files.get(cloudinit.META_DATA)
    if meta is not None:
        for line in meta.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "instance-id":
                instance = value.strip()
    return ContextInfo(
        label=contents.label, entries=contents.entries, settings=settings, instance_id=instance
    )
