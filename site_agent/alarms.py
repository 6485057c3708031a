"""Alarms: what a site found by comparing its lists with its peers', kept until decided.

Two kinds (docs/threats.md, THREATS 41 and 44):

``equivocation``
    Two copies of one endorser's list with the same id and version and other
    signed content, each verified against the subscription's trust anchors and
    pinned endorser: proof that the endorser's key signed two different lists
    for the same version (a stolen key, or a coerced endorser showing each
    group of sites its own view). Both copies are kept under
    ``evidence/<alarm>/``. The list is *frozen* while the alarm is open: the
    site approves none of its new images (not by policy, not by peers, not
    with `vmic approve`) until an admin decides with `vmic alarm resolve`.

``freeze``
    The endorser's own URL serves an older version than one the site took from
    its peers, for longer than :data:`FREEZE_GRACE` after that version was
    signed (an endorser's server kept on an old version, so that a site never
    hears of a revocation). The site already runs the newer version; nothing is
    frozen. The alarm closes by itself once the endorser's URL serves that
    version or a newer one.

An alarm is raised once: the same proof of equivocation (list, version and
other content) raises nothing new, whether its alarm is open or was
resolved; the same freeze nothing new while its alarm is open. Raising one writes its row
and its ``list.equivocation`` or ``list.freeze`` event in one transaction;
`vmic sync` exits with :data:`ALARM_EXIT` while any alarm is open, `vmic
status` and `/metrics` show them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from keys.errors import ConfigError
from keys.fileio import make_folder, write_atomic
from site_agent.records import iso, parse_iso
from site_agent.store import Store

if TYPE_CHECKING:
    from site_agent.report import ListResult
    from site_agent.site import Site

EQUIVOCATION = "equivocation"
FREEZE = "freeze"
KINDS = (EQUIVOCATION, FREEZE)
FREEZE_GRACE = timedelta(hours=1)
"""How long after a version was signed its endorser's URL may still serve an older one
(caches, mirrors and cron schedules lag) before that is a freeze."""
_log = logging.getLogger("vmic.sync")
_EVIDENCE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Alarm:
    id: int
    kind: str
    list_id: str
    subscription: str
    version: int
    peer: str | None
    ours: str | None
    """The SHA-256 of the signed content this site holds (equivocation)."""
    theirs: str | None
    """The SHA-256 of the signed content of the other copy (equivocation)."""
    detail: str
    evidence: str | None
    """The folder of the evidence, relative to the site home."""
    raised_at: datetime
    resolved_at: datetime | None = None
    resolution: str | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    @property
    def freezes(self) -> bool:
        """Whether the alarm freezes its list while open."""
        return self.kind == EQUIVOCATION

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Alarm:
        raised = parse_iso(row["raised_at"])
        if raised is None:
            raise ValueError("alarm without a time")  # the store's own rows: a bug
        return cls(
            id=row["id"],
            kind=row["kind"],
            list_id=row["list_id"],
            subscription=row["subscription"],
            version=row["version"],
            peer=row["peer"],
            ours=row["ours"],
            theirs=row["theirs"],
            detail=row["detail"],
            evidence=row["evidence"],
            raised_at=raised,
            resolved_at=parse_iso(row["resolved_at"]),
            resolution=row["resolution"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "open": self.open,
            "list_id": self.list_id,
            "subscription": self.subscription,
            "version": self.version,
            "peer": self.peer,
            "ours": self.ours,
            "theirs": self.theirs,
            "detail": self.detail,
            "evidence": self.evidence,
            "raised_at": iso(self.raised_at),
            "resolved_at": iso(self.resolved_at),
            "resolution": self.resolution,
        }

    def headline(self) -> str:
        """One line: what, where, and what it did to the list."""
        what = f"alarm {self.id}: {self.kind} of list {self.subscription} version {self.version}"
        if self.open and self.freezes:
            what += " (the list is frozen)"
        return f"{what}: {self.detail}"


class AlarmStore:
    """Typed access to the ``alarms`` table of one open :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def alarms(self, *, everything: bool = False) -> list[Alarm]:
        """The open alarms, oldest first (``everything``: the resolved ones too)."""
        where = "" if everything else " WHERE resolved_at IS NULL"
        rows = self.store._rows(f"SELECT * FROM alarms{where} ORDER BY id")  # noqa: S608 - fixed text
        return [Alarm.from_row(r) for r in rows]

    def alarm(self, alarm_id: int) -> Alarm | None:
        return self.store._one("SELECT * FROM alarms WHERE id = ?", (alarm_id,), Alarm.from_row)

    def frozen(self) -> dict[str, int]:
        """The lists frozen by an open alarm, with the first such alarm's id."""
        rows = self.store._rows(
            "SELECT list_id, MIN(id) AS id FROM alarms WHERE resolved_at IS NULL AND kind = ?"
            " GROUP BY list_id",
            (EQUIVOCATION,),
        )
        return {str(r["list_id"]): int(r["id"]) for r in rows}

    def seen(self, kind: str, list_id: str, version: int, theirs: str | None) -> bool:
        """Whether an alarm says this already: for an equivocation, open or resolved (a
        proof an admin decided on is not raised again); for a freeze, open (an endorser's
        URL that caught up and fell behind again is a freeze again)."""
        still = " AND resolved_at IS NULL" if kind == FREEZE else ""
        rows = self.store._rows(
            "SELECT id FROM alarms WHERE kind = ? AND list_id = ?"  # noqa: S608 - fixed text
            f" AND version = ? AND COALESCE(theirs, '') = ?{still}",
            (kind, list_id, version, theirs or ""),
        )
        return bool(rows)

    def add(
        self,
        *,
        kind: str,
        list_id: str,
        subscription: str,
        version: int,
        peer: str | None,
        ours: str | None,
        theirs: str | None,
        detail: str,
        at: datetime,
    ) -> int:
        cursor = self.store._run(
            "INSERT INTO alarms (kind, list_id, subscription, version, peer, ours, theirs,"
            " detail, raised_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, list_id, subscription, version, peer, ours, theirs, detail, iso(at)),
        )
        if cursor.lastrowid is None:
            raise ValueError("no alarm id")  # SQLite always gives one for an INSERT
        return cursor.lastrowid

    def set_evidence(self, alarm_id: int, folder: str) -> None:
        self.store._run("UPDATE alarms SET evidence = ? WHERE id = ?", (folder, alarm_id))

    def resolve(self, alarm_id: int, *, at: datetime, resolution: str) -> None:
        self.store._run(
            "UPDATE alarms SET resolved_at = ?, resolution = ?"
            " WHERE id = ? AND resolved_at IS NULL",
            (iso(at), resolution, alarm_id),
        )


def raise_alarm(
    site: Site,
    *,
    kind: str,
    list_id: str,
    subscription: str,
    version: int,
    detail: str,
    peer: str | None = None,
    ours: str | None = None,
    theirs: str | None = None,
    evidence: Mapping[str, bytes] | None = None,
) -> Alarm | None:
    """Raise an alarm unless one says the same (:meth:`AlarmStore.seen`); None if one does.

    Its row, its evidence folder's name and its event are written in one transaction;
    the evidence files (name -> bytes) are written and synced first, so an alarm the
    store holds always has its evidence. The caller freezes the list of an equivocation
    (:meth:`Site.freeze`)."""
    alarms = AlarmStore(site.store)
    if alarms.seen(kind, list_id, version, theirs):
        return None
    with site.store.atomic():
        alarm_id = alarms.add(
            kind=kind,
            list_id=list_id,
            subscription=subscription,
            version=version,
            peer=peer,
            ours=ours,
            theirs=theirs,
            detail=detail,
            at=site.now,
        )
        folder = None
        if evidence:
            folder = f"evidence/{alarm_id}"
            make_folder(site.home.root / folder)
            for name, data in evidence.items():
                if not _EVIDENCE_NAME.fullmatch(name):
                    raise ValueError(f"evidence file name {name!r}")  # vmic's own names only
                write_atomic(site.home.root / folder / name, data)
            alarms.set_evidence(alarm_id, folder)
        site.emit(
            f"list.{kind}",
            subscription=subscription,
            alarm=alarm_id,
            list_id=list_id,
            version=version,
            peer=peer,
            ours=ours,
            theirs=theirs,
            detail=detail,
            evidence=None if folder is None else str(site.home.root / folder),
        )
    raised = alarms.alarm(alarm_id)
    if raised is not None:
        _log.warning("ALARM %s", raised.headline())
    return raised


def resolve_alarm(store: Store, alarm_id: int, *, at: datetime, resolution: str) -> Alarm:
    """Close an open alarm with the admin's decision; ConfigError if there is none such."""
    alarms = AlarmStore(store)
    alarm = alarms.alarm(alarm_id)
    if alarm is None:
        raise ConfigError(f"no alarm {alarm_id} at this site", hint="see `vmic alarms --all`")
    if not alarm.open:
        raise ConfigError(
            f"alarm {alarm_id} was resolved already ({iso(alarm.resolved_at)}: {alarm.resolution})"
        )
    if not resolution.strip():
        raise ConfigError("say what was decided: --note TEXT")
    with store.atomic():
        alarms.resolve(alarm_id, at=at, resolution=resolution)
    closed = alarms.alarm(alarm_id)
    if closed is None:
        raise ConfigError(f"no alarm {alarm_id} at this site")  # removed meanwhile: cannot be
    return closed


def check_freezes(site: Site, results: Sequence[ListResult]) -> None:
    """After the lists of a sync: raise a freeze alarm for each list whose endorser's URL
    answered with an older version than the one the site took from peers, signed more than
    :data:`FREEZE_GRACE` ago; close the freeze alarms of lists whose endorser's URL serves
    their version now."""
    answered = {r.subscription for r in results if r.endorser_answered}
    alarms = AlarmStore(site.store)
    freezes = [a for a in alarms.alarms() if a.kind == FREEZE]
    in_force = site.store.current_lists()
    for sub in site.store.subscriptions():
        served = sub.endorser_version
        current = in_force.get(sub.list_id)
        if sub.name not in answered or served is None or current is None:
            continue
        for alarm in freezes:
            if alarm.list_id == sub.list_id and alarm.version <= served:
                with site.store.atomic():
                    alarms.resolve(
                        alarm.id,
                        at=site.now,
                        resolution=f"closed by vmic: the endorser's URL serves version {served}",
                    )
        if current.version <= served:
            continue
        if site.now - current.updated < FREEZE_GRACE:
            continue  # the endorser's URL may simply not have caught up yet
        raise_alarm(
            site,
            kind=FREEZE,
            list_id=sub.list_id,
            subscription=sub.name,
            version=current.version,
            detail=(
                f"the endorser's URL {sub.url} still serves version {served}; version "
                f"{current.version}, signed {iso(current.updated)}, came from peers"
            ),
        )
