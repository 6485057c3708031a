"""`vmic cloud adopt`: take over, in place, the Glance images another tool registered.

A site moving from cloudkeeper-os, atrope or vmcatcher's Glance handler has
images in Glance that users run and reference by id. For each image the
site holds as available and the cloud takes, vmic looks for the one Glance
image that tool registered for the same endorsed image and the same bytes,
by what that tool writes on it (read in their sources):

- cloudkeeper-os: ``APPLIANCE_ID`` is the image's UUID, its
  ``APPLIANCE_ATTRIBUTES`` JSON holds the endorser's ``sl:checksum:sha512``,
  and it is not marked for removal (``EOL``, ``APPLIANCE_REMOVE``);
- atrope: tagged ``atrope`` (or ``atrope-…``, as EGI's catch-all does),
  ``appdb_id`` is the UUID, and ``sha512`` (or ``image_hash`` =
  ``sha512:…``) is the endorser's SHA-512;
- vmcatcher's handlers: ``vmcatcher_event_dc_identifier`` and
  ``vmcatcher_event_sl_checksum_sha512``.

A tool's properties are its own word; the bytes are Glance's. A candidate is
taken only if Glance's own hash of what it stores (``os_hash_algo`` sha512,
``os_hash_value``) is the endorser's SHA-512 and its size the endorsed size:
an image whose properties name the right digest over other bytes is reported
and left alone.

Exactly one active match is adopted: the registry records it (so vmic may
act on it from now on), it gets vmic's tag and properties, and the other
tool's tag is removed so that tool would no longer claim it (its other
properties stay: site scripts may read them). The next `vmic cloud sync`
makes its name, visibility and members what the cloud's settings say; its
id does not change. Several matches, or a match with other bytes (an older
version), are reported and left alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from site_agent.cloud.desired import TAG, desired
from site_agent.cloud.glance import Glance
from site_agent.cloud.plan import Wanted
from site_agent.cloud.registry import ACTIVE, Registration, Registry
from site_agent.cloud.run import site_id
from site_agent.cloud.settings import CloudSettings
from site_agent.site import Site

REMOVAL_MARKS = ("EOL", "APPLIANCE_REMOVE")


@dataclass(slots=True)
class AdoptReport:
    cloud: str
    adopted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    glance_id: str
    tool: str
    sha512: str | None
    status: str
    tags: tuple[str, ...]
    hash_algo: str = ""
    hash_value: str = ""
    size: int | None = None

    def holds(self, target: Wanted) -> bool:
        """Whether Glance's own hash and size say these are the endorsed bytes."""
        return (
            self.hash_algo == "sha512"
            and self.hash_value == target.sha512
            and self.size == target.size
        )


def adopt(site: Site, cloud: CloudSettings, *, dry_run: bool = False) -> AdoptReport:
    report = AdoptReport(cloud=cloud.name)
    registry = Registry(site.store)
    held = {r.image_id for r in registry.all(cloud.name)}
    wanted, _left = desired(site, cloud, site_id(site))
    with Glance(cloud.name, cloud.os_cloud) as glance:
        everything = list(glance.all_images())
        taken = {r.glance_id for r in registry.all()}
        for target in wanted:
            if target.image_id in held:
                continue
            found = [
                c
                for image in everything
                if (c := candidate(image, target.image_id)) is not None and c.glance_id not in taken
            ]
            _adopt_one(site, glance, cloud, target, found=found, report=report, dry_run=dry_run)
    return report


def _adopt_one(
    site: Site,
    glance: Glance,
    cloud: CloudSettings,
    target: Wanted,
    *,
    found: list[Candidate],
    report: AdoptReport,
    dry_run: bool,
) -> None:
    label = f"image {target.image_id} ({target.name})"
    claimed = [c for c in found if c.sha512 == target.sha512 and c.status == ACTIVE]
    same = [c for c in claimed if c.holds(target)]
    for c in claimed:
        if not c.holds(target):
            report.problems.append(
                f"{label}: {c.glance_id} ({c.tool}) names the endorsed SHA-512 but Glance's own "
                f"hash or size of its bytes is not the endorser's "
                f"({c.hash_algo or 'no hash'}, {c.size} bytes): not adopted"
            )
    if not same:
        older = [c for c in found if c.sha512 != target.sha512]
        if older:
            ids = ", ".join(f"{c.glance_id} ({c.tool})" for c in older)
            report.problems.append(f"{label}: only other bytes in Glance ({ids}): not adopted")
        return
    if len(same) > 1:
        ids = ", ".join(f"{c.glance_id} ({c.tool})" for c in same)
        report.problems.append(f"{label}: registered {len(same)} times ({ids}): none adopted")
        return
    chosen = same[0]
    line = f"{label}: adopted {chosen.glance_id} from {chosen.tool}"
    if dry_run:
        report.adopted.append(line + " (dry run)")
        return
    glance.update(
        chosen.glance_id, properties={**target.properties, "vmic_adopted_from": chosen.tool}
    )
    glance.set_tags(chosen.glance_id, add=(TAG,), remove=_foreign_tags(chosen.tags))
    with site.store.atomic():
        Registry(site.store).put(
            Registration(
                cloud=cloud.name,
                glance_id=chosen.glance_id,
                image_id=target.image_id,
                sha512=target.sha512,
                state=ACTIVE,
                adopted=True,
                registered_at=site.now,
                changed_at=site.now,
            )
        )
    report.adopted.append(line)


def candidate(image: Any, image_id: str) -> Candidate | None:
    """What a Glance image says about being ``image_id`` registered by another tool."""
    props: Mapping[str, Any] = getattr(image, "properties", None) or {}
    tags = tuple(str(t) for t in (getattr(image, "tags", None) or ()))
    claim = _claim(props, tags, image_id)
    if claim is None:
        return None
    tool, sha512 = claim
    size = getattr(image, "size", None)
    return Candidate(
        glance_id=str(image.id),
        tool=tool,
        sha512=sha512,
        status=str(getattr(image, "status", "") or ""),
        tags=tags,
        hash_algo=str(getattr(image, "hash_algo", "") or "").lower(),
        hash_value=str(getattr(image, "hash_value", "") or "").lower(),
        size=size if isinstance(size, int) else None,
    )


def _claim(
    props: Mapping[str, Any], tags: tuple[str, ...], image_id: str
) -> tuple[str, str | None] | None:
    """Which tool registered the image as ``image_id``, and the SHA-512 its properties name."""
    if str(props.get("APPLIANCE_ID", "")).lower() == image_id:
        if any(mark in props or props.get("IMAGE_STATUS") == mark for mark in REMOVAL_MARKS):
            return None
        return "cloudkeeper-os", _attribute_sha512(props.get("APPLIANCE_ATTRIBUTES"))
    if str(props.get("appdb_id", "")).lower() == image_id and any(
        t.startswith("atrope") for t in tags
    ):
        digest = props.get("sha512") or str(props.get("image_hash", "")).removeprefix("sha512:")
        return "atrope", _hex(digest)
    if str(props.get("vmcatcher_event_dc_identifier", "")).lower() == image_id:
        return "vmcatcher", _hex(props.get("vmcatcher_event_sl_checksum_sha512"))
    return None


def _attribute_sha512(text: object) -> str | None:
    try:
        attributes = json.loads(str(text)) if text else {}
    except ValueError:
        return None
    return _hex(attributes.get("sl:checksum:sha512")) if isinstance(attributes, dict) else None


def _hex(value: object) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


def _foreign_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    """The other tool's claim on an image: atrope finds its images by its tag."""
    return tuple(t for t in tags if t.startswith("atrope"))
