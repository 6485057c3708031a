"""The CD image itself: ISO 9660 with Rock Ridge and Joliet, built and read with pycdlib.

Names. Rock Ridge (read by Linux) and Joliet (read by Windows and most
tools) carry each file's real name. The plain ISO 9660 names underneath,
for readers that know neither, are interchange level 1: upper-case
``NAME.EXT;1`` with at most 8 + 3 characters from ``A-Z 0-9 _`` (folders 8,
no extension); :func:`iso9660_names` derives them from the real names, in
sorted order, numbering any that would collide (``CONFIG1.CON``).

Reproducible bytes. pycdlib stamps every volume descriptor and directory
record with ``time.time()`` in local time and offers no parameter for it,
so :func:`build_iso` runs pycdlib with a clock that always reads the given
epoch, in UTC, and adds files in sorted order with fixed identifiers: the
same files, label and epoch give the same bytes on any machine, in any time
zone. With epoch 0 (the default) the volume dates are "not specified" and
the file dates read 1970-01-01.
"""

from __future__ import annotations

import io
import re
import stat
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from time import struct_time
from typing import Any

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from keys.errors import ConfigError
from site_agent.context.tree import ContextFile, folders_of

APPLICATION = "VMIC CONTEXT"
MAX_EPOCH = (
    5_869_584_000 - 1
)  # 2155-12-31: an ISO 9660 directory record counts years from 1900 in one byte
READ_LIMIT = 16 * 1024 * 1024  # the most `read_iso` reads of one small file (context.sh, user-data)

_NOT_D = re.compile(r"[^A-Z0-9_]")


@dataclass(frozen=True, slots=True, kw_only=True)
class IsoEntry:
    """A file found on a CD: its Rock Ridge path, size and permission bits."""

    path: str
    size: int
    mode: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IsoContents:
    label: str
    entries: tuple[IsoEntry, ...]
    small_files: dict[str, bytes]
    """The bytes of the files asked for by name (only those present and within the limit)."""


def iso9660_names(paths: Sequence[str]) -> dict[str, str]:
    """Real path -> ISO 9660 level 1 path, e.g. ``etc/x.conf`` -> ``/ETC/X.CON;1``.

    ``paths`` are file paths; their folders are named too, without ``;1``.
    """
    folders = {str(p) for path in paths for p in PurePosixPath(path).parents if str(p) != "."}
    used: dict[str, set[str]] = {}
    names: dict[str, str] = {}
    for path in sorted({*paths, *folders}, key=lambda p: (p.count("/"), p)):
        parent, _, name = path.rpartition("/")
        taken = used.setdefault(parent, set())
        short = _short_name(name, folder=path in folders, taken=taken)
        taken.add(short)
        prefix = names[parent] if parent else ""
        names[path] = f"{prefix}/{short}" if path in folders else f"{prefix}/{short};1"
    return names


def _short_name(name: str, *, folder: bool, taken: set[str]) -> str:
    if folder:
        base, ext = _NOT_D.sub("_", name.upper())[:8], None
    else:
        stem, dot, suffix = name.rpartition(".")
        if not dot or not stem:
            stem, suffix = name, ""
        base = _NOT_D.sub("_", stem.upper())[:8]
        ext = _NOT_D.sub("_", suffix.upper())[:3]

    def render(text: str) -> str:
        return text if ext is None else f"{text}.{ext}"

    candidate, number = render(base), 0
    while candidate in taken:
        number += 1
        tag = str(number)
        candidate = render(base[: 8 - len(tag)] + tag)
    return candidate


_CLOCK_LOCK = threading.Lock()


class _FixedClock:
    """Stands in for the ``time`` module inside pycdlib: now is always ``epoch``, in UTC."""

    def __init__(self, epoch: int) -> None:
        self._epoch = float(epoch)

    def time(self) -> float:
        return self._epoch

    def localtime(self, seconds: float | None = None) -> struct_time:
        return time.gmtime(self._epoch if seconds is None else seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextmanager
def _fixed_clock(epoch: int) -> Iterator[None]:
    """Give every pycdlib module that imported ``time`` the fixed clock, and put it back after."""
    clock = _FixedClock(epoch)
    with _CLOCK_LOCK:
        patched = [
            module
            for name, module in sorted(sys.modules.items())
            if (name == "pycdlib" or name.startswith("pycdlib."))
            and getattr(module, "time", None) is time
        ]
        for module in patched:
            module.time = clock  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for module in patched:
                module.time = time  # type: ignore[attr-defined]


def check_epoch(epoch: int) -> int:
    if not 0 <= epoch <= MAX_EPOCH:
        raise ConfigError(
            f"timestamp {epoch} is outside what ISO 9660 can record",
            hint="SOURCE_DATE_EPOCH must be seconds since 1970, before the year 2156",
        )
    return epoch


def build_iso(files: Sequence[ContextFile], *, label: str, epoch: int) -> bytes:
    """The ISO image holding ``files`` (sorted by path), volume label ``label``."""
    ordered = sorted(files, key=lambda f: f.path)
    names = iso9660_names([f.path for f in ordered])
    out = io.BytesIO()
    with _fixed_clock(check_epoch(epoch)):
        image = pycdlib.PyCdlib()
        try:
            image.new(
                interchange_level=1,
                vol_ident=label,
                app_ident_str=APPLICATION,
                rock_ridge="1.09",
                joliet=3,
            )
            for folder in folders_of(ordered):
                image.add_directory(
                    iso_path=names[folder],
                    rr_name=PurePosixPath(folder).name,
                    joliet_path=f"/{folder}",
                    file_mode=stat.S_IFDIR | 0o555,
                )
            for entry in ordered:
                image.add_fp(
                    io.BytesIO(entry.data),
                    len(entry.data),
                    iso_path=names[entry.path],
                    rr_name=PurePosixPath(entry.path).name,
                    joliet_path=f"/{entry.path}",
                    file_mode=stat.S_IFREG | entry.mode,
                )
            image.write_fp(out)
        except PyCdlibException as exc:
            raise ConfigError(f"cannot build the CD image: {exc}") from exc
        finally:
            image.close()
    return out.getvalue()


def read_iso(path: Path, *, want: Sequence[str] = ()) -> IsoContents:
    """The label and files of a CD image, and the bytes of the files named in ``want``."""
    image = pycdlib.PyCdlib()
    try:
        image.open(str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except PyCdlibException as exc:
        raise ConfigError(
            f"{path} is not an ISO 9660 image: {exc}", hint="give a CD built by vmic context build"
        ) from exc
    try:
        if not image.has_rock_ridge():
            raise ConfigError(
                f"{path} has no Rock Ridge names", hint="give a CD built by vmic context build"
            )
        label = image.pvd.volume_identifier.decode("ascii", "replace").rstrip()
        entries = tuple(_walk(image))
        small: dict[str, bytes] = {}
        for entry in entries:
            if entry.path in want and entry.size <= READ_LIMIT:
                buffer = io.BytesIO()
                image.get_file_from_iso_fp(buffer, rr_path=f"/{entry.path}")
                small[entry.path] = buffer.getvalue()
    except PyCdlibException as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    finally:
        image.close()
    return IsoContents(label=label, entries=entries, small_files=small)


def _walk(image: Any) -> Iterator[IsoEntry]:
    found: list[IsoEntry] = []
    for folder, _dirs, names in image.walk(rr_path="/"):
        for name in names:
            full = f"{folder.rstrip('/')}/{name}"
            record = image.get_record(rr_path=full)
            found.append(
                IsoEntry(
                    path=full.lstrip("/"),
                    size=record.get_data_length(),
                    mode=stat.S_IMODE(record.rock_ridge.get_file_mode()),
                )
            )
    yield from sorted(found, key=lambda e: e.path)
