"""What a policy check reports: rules, findings, facts, and the limits it works within."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    """Against the policy: an endorser must not sign the image as it is."""
    WARNING = "warning"
    """Worth a look; does not block endorsing."""
    INFO = "info"
    """A fact about the image, or a part of it that was not inspected."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    id: str
    severity: Severity
    title: str
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    rule: str
    severity: Severity
    path: str
    """The path inside the image (``/etc/shadow``), or ``-`` for the image as a whole."""
    reason: str
    allowed: bool = False
    """The endorser allowed this rule (``--allow``): shown, but not counted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
    name: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    image: str
    kind: str
    """How the image was read: ``directory``, ``tar``, ``tar.gz``, ``disk``, ``qcow2``, ..."""
    findings: tuple[Finding, ...]
    facts: tuple[Fact, ...]
    files: int
    """Entries (files, folders, links) seen."""

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR and not f.allowed)

    @property
    def clean(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyLimits:
    """Bounds on what a check reads, entries it keeps, and the time its tools may take."""

    max_entries: int = 1_000_000
    """Entries (files, folders, links) read before the check gives up."""
    scan_bytes: int = 1024 * 1024
    """How much of a file is read to search it for keys and credentials."""
    max_inflation: int = 200
    """An archive may decompress to this many times its own size ..."""
    min_inflation_budget: int = 8 * 1024**3
    """... or to this many bytes, whichever is more, before it is called a bomb."""
    max_disk_bytes: int = 256 * 1024**3
    """Largest virtual size of a qcow2/vmdk/... disk converted to raw for reading."""
    tool_timeout: float = 3600.0
    """Seconds a helper tool (debugfs, qemu-img) may run."""
