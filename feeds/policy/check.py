"""Checking one image against the policy: choose a reader, scan, collect one report.

The kind of image is told from its first bytes (:mod:`feeds.formats`): a
folder is walked; a tar archive (plain, gzip, bzip2, xz) is streamed; a raw
disk is split into its file systems; qcow2, vmdk, vdi, vhd and vhdx are
converted to raw with ``qemu-img`` first. Whatever cannot be read becomes a
``not-inspected`` finding that says why and what would help, so the report
is complete about what it did not see.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from feeds.formats import guess_format
from feeds.policy.extfs import DebugfsTree
from feeds.policy.model import Fact, Finding, PolicyLimits, Report, Severity
from feeds.policy.partitions import partitions
from feeds.policy.qemu import CONVERTIBLE, convert_to_raw
from feeds.policy.rules import RULES, wanted
from feeds.policy.scan import Scan
from feeds.policy.trees import (
    NOT_INSPECTED,
    DirectoryTree,
    ImageTree,
    TarTree,
    TooManyEntriesError,
)
from keys.errors import ConfigError

_TAR_KINDS = ("tar", "tar.gz", "tar.bz2", "tar.xz")
_PROGRESS_EVERY = 2000


def check_image(
    path: Path,
    *,
    allow: Iterable[str] = (),
    limits: PolicyLimits | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Check ``path`` (a folder or an image file); ``allow`` names rules to show but not count.

    ``progress`` is called now and then with the number of entries read so far.
    """
    allowed = set(allow)
    unknown = sorted(allowed - set(RULES))
    if unknown:
        raise ConfigError(
            f"no policy rule {', '.join(unknown)}", hint="`vmic policy rules` lists them"
        )
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    run = _Run(limits=limits or PolicyLimits(), progress=progress)
    if path.is_dir():
        kind = "directory"
        run.scan(DirectoryTree(path, run.limits))
    else:
        kind = _format(path)
        run.facts.append(Fact(name="image size", value=f"{path.stat().st_size} bytes"))
        try:
            if kind in _TAR_KINDS:
                run.scan(TarTree(path, run.limits))
            elif kind in CONVERTIBLE:
                run.converted(path, kind)
            elif kind == "raw":
                kind = "disk"
                run.disk(path)
            else:
                run.unseen("-", f"{kind} images are not inspected by vmic")
        except (OSError, ValueError, struct.error) as exc:  # bytes of the image's making
            run.unseen("-", f"reading stopped: {exc}")
    marked = tuple(
        Finding(
            rule=f.rule,
            severity=f.severity,
            path=f.path,
            reason=f.reason,
            allowed=f.rule in allowed,
        )
        for f in sorted(run.findings, key=_order)
    )
    return Report(
        image=str(path), kind=kind, findings=marked, facts=tuple(run.facts), files=run.entries
    )


def _format(path: Path) -> str:
    try:
        return guess_format(path)
    except ConfigError:
        return "compressed file"  # compressed, but not a tar archive


@dataclass
class _Run:
    limits: PolicyLimits
    progress: Callable[[int], None] | None
    findings: list[Finding] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    entries: int = 0

    def scan(self, tree: ImageTree, label: str = "") -> None:
        scan = Scan(label=label)
        limit = self.limits.scan_bytes
        try:
            for entry, content in tree.walk(lambda e: wanted(e, limit)):
                scan.feed(entry, content)
                if self.progress and (self.entries + scan.entries) % _PROGRESS_EVERY == 0:
                    self.progress(self.entries + scan.entries)
        except TooManyEntriesError:
            self.unseen(
                label + "-", f"more than {self.limits.max_entries} entries; reading stopped there"
            )
        except OSError as exc:
            self.unseen(label + "-", f"reading stopped: {exc}")
        found, learned = scan.finish()
        self.findings.extend(tree.notes)
        self.findings.extend(found)
        self.facts.extend(learned)
        self.entries += scan.entries

    def disk(self, path: Path) -> None:
        parts = partitions(path)
        if not any(p.ext for p in parts):
            self.unseen("-", "no ext2/3/4 file system found (on the disk or in a partition)")
        several = len(parts) > 1
        for part in parts:
            label = f"partition {part.number}:" if several else ""
            if part.harmless:
                self.findings.append(
                    Finding(
                        rule=NOT_INSPECTED,
                        severity=Severity.INFO,
                        path=label or "-",
                        reason=f"{part.kind}; not read",
                    )
                )
            elif not part.ext:
                self.unseen(label or "-", f"{part.kind}: vmic reads ext2/3/4 file systems only")
            else:
                try:
                    tree = DebugfsTree(path, part.offset, self.limits, label)
                except FileNotFoundError:
                    self.unseen(
                        label or "-", "ext file systems are read with debugfs: install e2fsprogs"
                    )
                    continue
                self.scan(tree, label)

    def converted(self, path: Path, kind: str) -> None:
        with tempfile.TemporaryDirectory(prefix="vmic-policy-") as tmp:
            try:
                raw = convert_to_raw(path, kind, Path(tmp), self.limits)
            except FileNotFoundError:
                self.unseen(
                    "-",
                    f"{kind} disks are read through qemu-img: install it "
                    "(Debian and Ubuntu: qemu-utils; RHEL: qemu-img)",
                )
                return
            except OSError as exc:
                self.unseen("-", str(exc))
                return
            self.disk(raw)

    def unseen(self, path: str, reason: str) -> None:
        self.findings.append(
            Finding(rule=NOT_INSPECTED, severity=Severity.ERROR, path=path, reason=reason)
        )


_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


def _order(finding: Finding) -> tuple[int, str, str]:
    return _RANK[finding.severity], finding.path, finding.rule
