"""Reading an image's files without extracting them: a folder, or a tar archive.

A tree yields :class:`Entry` values (path inside the image, kind, size,
mode, owner) and, for the entries the caller wants, their first bytes. Paths
are normalised to ``/etc/shadow``; symbolic links are reported, never
followed; device nodes and FIFOs are counted and otherwise ignored; nothing
is written to disk. A tar archive is read as a stream (gzip, bzip2 or xz
undone on the fly) and stops, with a finding, when it inflates beyond
:class:`~feeds.policy.model.PolicyLimits`. What goes wrong while reading is
kept in ``notes`` as findings, so a damaged or hostile image still gets a
report.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Protocol

from feeds.policy.model import Finding, PolicyLimits, Severity

NOT_INSPECTED = "not-inspected"
ARCHIVE_MEMBER = "archive-member"
ARCHIVE_BOMB = "archive-bomb"


class Kind(StrEnum):
    FILE = "file"
    DIR = "dir"
    LINK = "link"
    OTHER = "other"
    """Device nodes, FIFOs, sockets: ignored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    path: str
    kind: Kind
    size: int = 0
    mode: int = 0
    uid: int = 0
    target: str | None = None
    """A symbolic link's target, as written (never followed)."""


Wanted = Callable[[Entry], int]
"""How many bytes of a file's content the scan wants (0: none)."""


class ImageTree(Protocol):
    kind: str
    notes: list[Finding]

    def walk(self, wanted: Wanted) -> Iterator[tuple[Entry, bytes | None]]:
        """Every entry; for files, the first ``wanted(entry)`` bytes of their content."""
        ...


class TooManyEntriesError(Exception):
    """Raised inside a walk; the check turns it into a finding."""


def note(notes: list[Finding], rule: str, path: str, reason: str, severity: Severity) -> None:
    notes.append(Finding(rule=rule, severity=severity, path=path, reason=reason))


# -- a folder ---------------------------------------------------------------------------
class DirectoryTree:
    """An unpacked image tree (``vmic policy check /srv/images/root``)."""

    kind = "directory"

    def __init__(self, root: Path, limits: PolicyLimits) -> None:
        self.root = root
        self.limits = limits
        self.notes: list[Finding] = []

    def walk(self, wanted: Wanted) -> Iterator[tuple[Entry, bytes | None]]:
        seen = 0
        stack = [("", self.root)]
        while stack:
            inside, folder = stack.pop()
            try:
                children = sorted(os.scandir(folder), key=lambda d: d.name, reverse=True)
            except OSError as exc:
                note(
                    self.notes,
                    NOT_INSPECTED,
                    inside or "/",
                    f"cannot list: {exc.strerror}",
                    Severity.WARNING,
                )
                continue
            for child in children:
                seen += 1
                if seen > self.limits.max_entries:
                    raise TooManyEntriesError
                path = f"{inside}/{child.name}"
                try:
                    info = child.stat(follow_symlinks=False)
                except OSError as exc:
                    note(
                        self.notes,
                        NOT_INSPECTED,
                        path,
                        f"cannot stat: {exc.strerror}",
                        Severity.WARNING,
                    )
                    continue
                entry = _entry_of(path, info, child.path)
                content = None
                size = wanted(entry) if entry.kind is Kind.FILE else 0
                if size:
                    content = self._read(child.path, path, size)
                yield entry, content
                if entry.kind is Kind.DIR:
                    stack.append((path, Path(child.path)))

    def _read(self, real: str, path: str, limit: int) -> bytes | None:
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            note(self.notes, NOT_INSPECTED, path, f"cannot read: {exc.strerror}", Severity.WARNING)
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since it was listed
                return None
            chunks, left = [], limit
            while left > 0:
                chunk = os.read(fd, min(left, 1024 * 1024))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


def _entry_of(path: str, info: os.stat_result, real: str) -> Entry:
    mode = info.st_mode
    if stat.S_ISREG(mode):
        kind = Kind.FILE
    elif stat.S_ISDIR(mode):
        kind = Kind.DIR
    elif stat.S_ISLNK(mode):
        kind = Kind.LINK
    else:
        kind = Kind.OTHER
    target = None
    if kind is Kind.LINK:
        try:
            target = str(Path(real).readlink())
        except OSError:
            target = None
    return Entry(
        path=path,
        kind=kind,
        size=info.st_size if kind is Kind.FILE else 0,
        mode=stat.S_IMODE(mode),
        uid=info.st_uid,
        target=target,
    )


# -- a tar archive ----------------------------------------------------------------------
class _BombError(Exception):
    pass


class _Counted(io.RawIOBase):
    """The decompressed stream, counted: past ``budget`` bytes it raises :class:`_BombError`."""

    def __init__(self, stream: _Readable, budget: int) -> None:
        self.stream = stream
        self.budget = budget
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.stream.read(len(buffer))
        self.count += len(data)
        if self.count > self.budget:
            raise _BombError
        buffer[: len(data)] = data
        return len(data)


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


_MAGIC = ((b"\x1f\x8b", "tar.gz"), (b"BZh", "tar.bz2"), (b"\xfd7zXZ\x00", "tar.xz"))


def _decompressed(kind: str, raw: BinaryIO) -> _Readable:
    if kind == "tar.gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "tar.bz2":
        return bz2.BZ2File(raw, mode="rb")
    if kind == "tar.xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


class _BoundedTarInfo(tarfile.TarInfo):
    """PAX and GNU long-name headers of sane size only: CPython before 3.11.10 parses a
    large PAX header in quadratic time (CVE-2024-6232), and no real header needs more."""

    def _proc_pax(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > _MAX_HEADER:
            raise tarfile.HeaderError(f"a PAX header of {self.size} bytes")
        return super()._proc_pax(archive)  # type: ignore[misc,no-any-return]

    def _proc_gnulong(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > _MAX_HEADER:
            raise tarfile.HeaderError(f"a long-name header of {self.size} bytes")
        return super()._proc_gnulong(archive)  # type: ignore[misc,no-any-return]


_MAX_HEADER = 64 * 1024
_READ_ERRORS = (
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    UnicodeError,
    ValueError,
    OverflowError,
)


class TarTree:
    """A tar archive, plain or compressed, read once from start to end."""

    def __init__(self, path: Path, limits: PolicyLimits) -> None:
        self.path = path
        self.limits = limits
        self.notes: list[Finding] = []
        with path.open("rb") as handle:
            head = handle.read(8)
        self.kind = next((name for magic, name in _MAGIC if head.startswith(magic)), "tar")

    def walk(self, wanted: Wanted) -> Iterator[tuple[Entry, bytes | None]]:
        size = self.path.stat().st_size
        budget = max(size * self.limits.max_inflation, self.limits.min_inflation_budget)
        seen = 0
        with self.path.open("rb") as raw:
            counted = _Counted(_decompressed(self.kind, raw), budget)
            stream = io.BufferedReader(counted, buffer_size=1024 * 1024)
            try:
                with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as archive:
                    for member in archive:
                        # A stream needs no index of members; keep memory flat.
                        archive.members = []  # type: ignore[attr-defined]
                        seen += 1
                        if seen > self.limits.max_entries:
                            raise TooManyEntriesError
                        entry = self._entry(member)
                        if entry is None:
                            continue
                        content = None
                        want = wanted(entry) if entry.kind is Kind.FILE else 0
                        if want:
                            extracted = archive.extractfile(member)
                            content = extracted.read(want) if extracted is not None else None
                        yield entry, content
                    self._check_end(archive, seen)
            except _BombError:
                note(
                    self.notes,
                    ARCHIVE_BOMB,
                    "-",
                    f"the archive inflates beyond {budget} bytes ({self.limits.max_inflation} "
                    "times its size); reading stopped there",
                    Severity.ERROR,
                )
            except _READ_ERRORS as exc:
                note(
                    self.notes,
                    NOT_INSPECTED,
                    "-",
                    f"the archive is damaged after {seen} entries: {exc}",
                    Severity.ERROR,
                )

    def _check_end(self, archive: tarfile.TarFile, seen: int) -> None:
        """tarfile stops at the first header it cannot read, as if the archive ended there:
        anything but zeros after that point is a damaged header, and members unread."""
        source = archive.fileobj
        while chunk := source.read(1024 * 1024):
            if chunk.strip(b"\0"):
                note(
                    self.notes,
                    NOT_INSPECTED,
                    "-",
                    f"a damaged header after {seen} entries; the members after it were not read",
                    Severity.ERROR,
                )
                return

    def _entry(self, member: tarfile.TarInfo) -> Entry | None:
        name = member.name
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            note(
                self.notes,
                ARCHIVE_MEMBER,
                name,
                "a member path with '..' would be written outside the tree when unpacked; "
                "not inspected",
                Severity.ERROR,
            )
            return None
        if name.startswith("/"):
            note(
                self.notes,
                ARCHIVE_MEMBER,
                name,
                "an absolute member path (unpacking tools strip the '/'; read as relative)",
                Severity.WARNING,
            )
        path = "/" + "/".join(parts)
        if member.isreg():
            kind = Kind.FILE
        elif member.isdir():
            kind = Kind.DIR
        elif member.issym() or member.islnk():
            kind = Kind.LINK
        else:
            kind = Kind.OTHER
        return Entry(
            path=path,
            kind=kind,
            size=member.size if kind is Kind.FILE else 0,
            mode=member.mode & 0o7777,
            uid=member.uid,
            target=member.linkname if kind is Kind.LINK else None,
        )
