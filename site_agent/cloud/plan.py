"""From what should be in a cloud and what is there, the steps that close the difference.

Pure: no Glance, no store, no clock reading (``now`` is given). The inputs are
:class:`Wanted` images (available and approved at the site, for this cloud),
:class:`Seen` Glance images (those vmic registered or adopted, as Glance
shows them now) and the site's :class:`~site_agent.cloud.registry.Registration`
rows; the output is a list of steps, in an order that is safe to apply one
by one (each can fail alone):

1. a wanted image with a registration whose Glance image is usable is kept:
   reactivated if it was deactivated, its name, properties, visibility and
   members repaired where someone changed them;
2. a registration whose Glance image is gone is forgotten (and the image,
   if still wanted, registered again); one left ``queued``/``saving`` by an
   upload that did not finish is deleted first;
3. a wanted image without a usable registration is created (uploaded,
   verified, then shown);
4. a registration nothing wants any more (withdrawn, expired, revoked, no
   longer for this cloud, or other bytes under the same image id) is
   deactivated, and deleted once ``delete_after`` has passed since (at once
   with ``withdrawn = "delete"``).

A Glance image that no registration names is never in a plan: vmic does not
touch what it did not create or adopt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from site_agent.cloud.registry import DEACTIVATED, Registration
from site_agent.cloud.settings import CloudSettings

UPLOADING = "uploading"
"""A registration written before the bytes were sent (a crash leaves it to be cleaned up)."""
UNFINISHED = frozenset({"queued", "saving", "uploading", "importing"})
GONE = frozenset({"killed", "deleted", "pending_delete"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Wanted:
    """An image that should be in the cloud, and how it should look there."""

    image_id: str
    sha512: str
    size: int
    path: str
    """The verified file in the site's cache."""
    name: str
    disk_format: str
    container_format: str
    properties: Mapping[str, str]
    visibility: str
    members: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """A Glance image as Glance shows it now."""

    glance_id: str
    status: str
    name: str
    visibility: str
    properties: Mapping[str, str]
    members: frozenset[str] = frozenset()
    hash_algo: str | None = None
    hash_value: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One thing to do; ``what`` is one of the constants below."""

    what: str
    image_id: str
    glance_id: str | None = None
    wanted: Wanted | None = None
    registration: Registration | None = None
    changes: tuple[str, ...] = ()
    """For ``repair``: which of name, properties, visibility, members differ."""
    reason: str = ""
    add_members: frozenset[str] = field(default_factory=frozenset)
    remove_members: frozenset[str] = field(default_factory=frozenset)


CREATE, REPAIR, REACTIVATE = "create", "repair", "reactivate"
DEACTIVATE, DELETE, FORGET = "deactivate", "delete", "forget"


def plan(
    cloud: CloudSettings,
    wanted: Iterable[Wanted],
    seen: Mapping[str, Seen],
    registrations: Iterable[Registration],
    *,
    now: datetime,
) -> list[Step]:
    """The steps for one cloud; ``seen`` maps Glance ids to what Glance shows."""
    want = {w.image_id: w for w in wanted}
    steps: list[Step] = []
    kept: set[str] = set()
    for reg in registrations:
        image = seen.get(reg.glance_id)
        target = want.get(reg.image_id)
        current = target is not None and target.sha512 == reg.sha512
        if image is None or image.status in GONE:
            steps.append(_forget(reg, "the Glance image is gone (deleted outside vmic)"))
            continue
        if reg.state == UPLOADING or image.status in UNFINISHED:
            steps.append(_delete(reg, f"an upload that did not finish ({image.status})"))
            continue
        if current and target is not None and target.image_id not in kept:
            kept.add(target.image_id)
            steps.extend(_keep(reg, image, target))
            continue
        if target is None:
            why = "no longer available here"
        elif current:
            why = "registered twice; the other copy stays"
        else:
            why = "other bytes under the same image id"
        steps.extend(_withdraw(cloud, reg, image, now=now, why=why))
    for image_id, target in sorted(want.items()):
        if image_id not in kept:
            steps.append(Step(what=CREATE, image_id=image_id, wanted=target))
    return steps


def _keep(reg: Registration, image: Seen, target: Wanted) -> list[Step]:
    steps = []
    if DEACTIVATED in (image.status, reg.state):
        steps.append(
            Step(
                what=REACTIVATE,
                image_id=reg.image_id,
                glance_id=reg.glance_id,
                registration=reg,
                wanted=target,
                reason="wanted again",
            )
        )
    changes = []
    if image.name != target.name:
        changes.append("name")
    if any(image.properties.get(k) != v for k, v in target.properties.items()):
        changes.append("properties")
    if image.visibility != target.visibility:
        changes.append("visibility")
    add = target.members - image.members
    remove = image.members - target.members
    if add or remove:
        changes.append("members")
    if changes:
        steps.append(
            Step(
                what=REPAIR,
                image_id=reg.image_id,
                glance_id=reg.glance_id,
                registration=reg,
                wanted=target,
                changes=tuple(changes),
                add_members=frozenset(add),
                remove_members=frozenset(remove),
                reason="changed outside vmic: " + ", ".join(changes),
            )
        )
    return steps


def _withdraw(
    cloud: CloudSettings, reg: Registration, image: Seen, *, now: datetime, why: str
) -> list[Step]:
    if cloud.withdrawn == "delete":
        return [_delete(reg, why)]
    if image.status != DEACTIVATED or reg.state != DEACTIVATED:
        return [
            Step(
                what=DEACTIVATE,
                image_id=reg.image_id,
                glance_id=reg.glance_id,
                registration=reg,
                reason=why,
            )
        ]
    since = reg.withdrawn_at or reg.changed_at
    if now - since >= cloud.delete_after:
        return [_delete(reg, f"deactivated since {since:%Y-%m-%d %H:%M}Z")]
    return []


def _delete(reg: Registration, why: str) -> Step:
    return Step(
        what=DELETE, image_id=reg.image_id, glance_id=reg.glance_id, registration=reg, reason=why
    )


def _forget(reg: Registration, why: str) -> Step:
    return Step(
        what=FORGET, image_id=reg.image_id, glance_id=reg.glance_id, registration=reg, reason=why
    )
