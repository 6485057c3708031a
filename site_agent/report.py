"""What one `vmic sync` did, for the CLI to print and for monitoring to read.

Every problem is also written to the ``vmic.sync`` logger as it is found
(the CLI sends that logger to the site log), so the log keeps what a cron
mail may lose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from site_agent.records import Change, iso

if TYPE_CHECKING:
    from site_agent.alarms import Alarm

_log = logging.getLogger("vmic.sync")


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    subscription: str | None
    kind: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListResult:
    subscription: str
    outcome: str  # accepted, unchanged, not-modified, rejected, failed
    version: int | None = None
    endorser_answered: bool = False
    """The endorser's own URL answered (200 or 304), whatever came of it."""


@dataclass(slots=True)
class SyncReport:
    started: datetime
    lists: list[ListResult] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    hooks_delivered: int = 0
    clouds: list[str] = field(default_factory=list)
    """What was done in the site's clouds, one line each ("site1: registered image ...")."""
    bytes_reused: int = 0
    """Image bytes not fetched because the site held them (updates by blocks)."""
    bytes_fetched: int = 0
    """Bytes fetched for updates by blocks (block indexes and ranges)."""
    alarms: list[Alarm] = field(default_factory=list)
    """The site's open alarms after the run (`vmic alarms`), new or not."""

    @property
    def ok(self) -> bool:
        return not self.problems and not self.alarms

    @property
    def waiting(self) -> list[Change]:
        """Images that arrived in this run and wait for the admin (said once, when they came)."""
        return [change for change in self.changes if change.waits_for_admin]

    def problem(self, subscription: str | None, kind: str, message: str) -> None:
        self.problems.append(Problem(subscription=subscription, kind=kind, message=message))
        _log.warning("%s: %s: %s", subscription or "site", kind, message)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "started": iso(self.started),
            "lists": [
                {"subscription": r.subscription, "outcome": r.outcome, "version": r.version}
                for r in self.lists
            ],
            "changes": [
                {"image_id": c.image_id, "title": c.title, "what": c.what, "detail": c.detail}
                for c in self.changes
            ],
            "waiting": [c.image_id for c in self.waiting],
            "downloaded": self.downloaded,
            "hooks_delivered": self.hooks_delivered,
            "clouds": self.clouds,
            "bytes_reused": self.bytes_reused,
            "bytes_fetched": self.bytes_fetched,
            "alarms": [alarm.to_json() for alarm in self.alarms],
            "problems": [
                {"subscription": p.subscription, "kind": p.kind, "message": p.message}
                for p in self.problems
            ],
        }
