"""One ext2/3/4 file system of a disk image, read with e2fsprogs' ``debugfs``.

``debugfs -c`` (read-only catalogue mode) gets command files of vmic's own
making: folders are listed by inode number, level by level, in batches; the
files a rule wants are copied out by inode number into a private temporary
folder under names vmic chooses, read, and deleted, a few at a time. File
names from the image never become part of a command.

The listing is the image author's text, so it is read with suspicion: each
listing in a batch is cut out by a separator command whose name carries a
random nonce (a crafted file name cannot forge it); what a listing holds
besides well-formed entries, a name that appears twice in one folder, a
folder reached twice (a directory hard link), and paths longer than
``PATH_MAX`` are reported as not inspected rather than guessed at.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from feeds.policy.model import Finding, PolicyLimits, Severity
from feeds.policy.trees import NOT_INSPECTED, Entry, Kind, TooManyEntriesError, Wanted, note

_LIST_BATCH = 200
_DUMP_BATCH = 32
DUMP_MAX = 16 * 1024 * 1024
"""Files larger than this are not copied out (their content is not read)."""
_PATH_MAX = 4096
# One `ls -p` line: /inode/mode/uid/gid/name/size/
_LS_LINE = re.compile(rb"/(\d+)/([0-7]{5,6})/(\d+)/(\d+)/([^/]*)/(\d*)/\n")
# debugfs's banner, and the separators of a listing batch (unknown commands on purpose)
_EXPECTED_STDERR = re.compile(r"debugfs [0-9.]+ \(|debugfs: Command not found vmic-[0-9a-f]+-\d+$")
_SAFE_TEMP = re.compile(r"[A-Za-z0-9/._-]+")
_HARD_LINKED = "a folder reached twice (a directory hard link): listed once, elsewhere"
_KINDS = {0o100000: Kind.FILE, 0o040000: Kind.DIR, 0o120000: Kind.LINK}


class DebugfsTree:
    kind = "ext"

    def __init__(self, image: Path, offset: int, limits: PolicyLimits, label: str = "") -> None:
        self.image = image.resolve()
        self.offset = offset
        self.limits = limits
        self.label = label
        self.notes: list[Finding] = []
        found = shutil.which("debugfs") or shutil.which("debugfs", path="/usr/sbin:/sbin")
        if found is None:
            raise FileNotFoundError("debugfs")
        self.debugfs = found
        self._spec = ""

    def walk(self, wanted: Wanted) -> Iterator[tuple[Entry, bytes | None]]:
        with tempfile.TemporaryDirectory(prefix="vmic-policy-") as tmp:
            if not _SAFE_TEMP.fullmatch(tmp):
                raise OSError(f"the temporary folder {tmp!r} cannot be named to debugfs")
            folder = Path(tmp)
            link = folder / "disk"  # debugfs reads '?' in its file name as options
            link.symlink_to(self.image)
            self._spec = f"{link}?offset={self.offset}" if self.offset else str(link)
            pending: list[tuple[Entry, int, int]] = []
            copies: list[int] = []
            for entry, ino in self._list():
                size = wanted(entry) if entry.kind is Kind.FILE else 0
                pending.append((entry, ino, size))
                if size and entry.size <= DUMP_MAX:
                    copies.append(ino)
                if len(copies) >= _DUMP_BATCH:
                    yield from self._flush(pending, copies, folder)
                    pending, copies = [], []
            yield from self._flush(pending, copies, folder)

    def _flush(
        self, pending: list[tuple[Entry, int, int]], copies: list[int], folder: Path
    ) -> Iterator[tuple[Entry, bytes | None]]:
        if copies:
            self._run([f"dump <{ino}> {folder / f'c{ino}'}" for ino in copies])
        for entry, ino, size in pending:
            content = None
            copy = folder / f"c{ino}"
            if size and copy.is_file() and not copy.is_symlink():
                with copy.open("rb") as handle:
                    content = handle.read(size)
            yield entry, content
        for ino in copies:
            (folder / f"c{ino}").unlink(missing_ok=True)

    def _list(self) -> Iterator[tuple[Entry, int]]:
        count = 0
        level = [(2, "")]  # the root folder is inode 2
        folders_seen = {2}
        nonce = secrets.token_hex(16)
        while level:
            deeper: list[tuple[int, str]] = []
            for start in range(0, len(level), _LIST_BATCH):
                batch = level[start : start + _LIST_BATCH]
                commands = []
                for n, (ino, _) in enumerate(batch):
                    commands += [f"ls -p <{ino}>", f"vmic-{nonce}-{n}"]
                output = self._run(commands)
                parts = re.split(rb"debugfs: vmic-" + nonce.encode() + rb"-\d+\n", output)
                for (ino, inside), listing in zip(batch, parts, strict=False):
                    for entry, child in self._entries(listing, ino, inside):
                        count += 1
                        if count > self.limits.max_entries:
                            raise TooManyEntriesError
                        yield entry, child
                        if entry.kind is not Kind.DIR:
                            continue
                        if child in folders_seen:
                            self._unseen(entry.path, _HARD_LINKED)
                        elif len(entry.path) > _PATH_MAX:
                            self._unseen(entry.path[:200] + "...", "a path longer than PATH_MAX")
                        else:
                            folders_seen.add(child)
                            deeper.append((child, entry.path))
            level = deeper

    def _entries(self, listing: bytes, ino: int, inside: str) -> Iterator[tuple[Entry, int]]:
        echo = f"debugfs: ls -p <{ino}>\n".encode()
        where = inside or "/"
        if not listing.startswith(echo):
            self._unseen(where, "debugfs did not list this folder")
            return
        body = listing[len(echo) :]
        names: set[str] = set()
        for match in _LS_LINE.finditer(body):
            child, mode = int(match[1]), int(match[2], 8)
            name = match[5].decode("utf-8", "surrogateescape")
            if name in (".", "..") or child == 0:
                continue
            path = f"{inside}/{name}"
            if name in names:
                self._unseen(path, "two entries with this name in one folder")
                continue
            names.add(name)
            kind = _KINDS.get(mode & 0o170000, Kind.OTHER)
            yield (
                Entry(
                    path=path,
                    kind=kind,
                    size=int(match[6] or 0) if kind is Kind.FILE else 0,
                    mode=mode & 0o7777,
                    uid=int(match[3]),
                ),
                child,
            )
        if _LS_LINE.sub(b"", body).strip():
            self._unseen(where, "the folder's listing holds damaged or unreadable entries")

    def _unseen(self, path: str, reason: str) -> None:
        note(self.notes, NOT_INSPECTED, self.label + path, reason, Severity.ERROR)

    def _run(self, commands: list[str]) -> bytes:
        try:
            done = subprocess.run(  # noqa: S603 - an argument list; commands hold numbers and our paths
                [self.debugfs, "-c", "-f", "-", self._spec],
                input="\n".join(commands).encode() + b"\n",
                capture_output=True,
                timeout=self.limits.tool_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise OSError(f"debugfs took longer than {self.limits.tool_timeout:g} s") from exc
        complaints = [
            line
            for line in done.stderr.decode("utf-8", "replace").splitlines()
            if line.strip() and not _EXPECTED_STDERR.match(line)
        ]
        if complaints:  # debugfs goes on after a failed command: say so, keep the rest
            self._unseen("-", "debugfs: " + "; ".join(complaints[:3])[:300])
        return done.stdout
