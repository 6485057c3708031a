"""`vmic cloud sync`: read a cloud, plan, apply each step alone, record what vmic holds there.

For each cloud: what should be there (:mod:`site_agent.cloud.desired`), what
is there (the images the site's registry names, as Glance shows them now;
images of others are never read), the plan (:mod:`site_agent.cloud.plan`),
then the steps, each on its own: one that fails is reported and the others
go on; the next run plans again.

A new image goes in so (THREATS 38, 39): the record is created private,
hidden from image lists and with no members; the registry notes it as
``uploading`` before any byte is sent (a run killed half way leaves a row
that the next run cleans up); the bytes are streamed from the verified file
in the cache and hashed with SHA-512 as they are sent, which must be the
endorser's; Glance's own hash of what it stored must equal the endorser's
SHA-512 (or, where the cloud hashes with another SHA-2 or SHA-3 algorithm,
the same algorithm over the cached file, read again beside SHA-512) and its
size the endorsed size; only then is the image shown and shared as the
settings say. Any failure on the way deletes the upload: nothing is left
``queued`` or ``saving`` by vmic, and nobody sees bytes that were not
checked.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from keys.errors import CloudError, VmicError
from site_agent.cloud.desired import TAG, Left, desired
from site_agent.cloud.glance import Glance, Sent
from site_agent.cloud.plan import (
    CREATE,
    DEACTIVATE,
    DELETE,
    FORGET,
    REACTIVATE,
    REPAIR,
    UPLOADING,
    Seen,
    Step,
    Wanted,
    plan,
)
from site_agent.cloud.registry import ACTIVE, DEACTIVATED, Registration, Registry
from site_agent.cloud.settings import CloudSettings
from site_agent.site import Site

log = logging.getLogger("vmic.cloud")
SITE_ID = "site_id"
"""Meta key: this site's UUID, written on images as ``vmic_site``."""
_CHUNK = 1024 * 1024


@dataclass(slots=True)
class CloudReport:
    """What one cloud sync did (or, in a dry run, would do)."""

    cloud: str
    dry_run: bool = False
    done: list[tuple[Step, str]] = field(default_factory=list)
    """Each step applied (or planned) and a line saying what it was."""
    problems: list[str] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def site_id(site: Site) -> str:
    """This site's UUID (made once), so two sites sharing a cloud tell their images apart."""
    known = site.store.meta(SITE_ID)
    if known:
        return known
    made = str(uuid.uuid4())
    with site.store.atomic():
        site.store.set_meta(SITE_ID, made)
    return made


def sync_cloud(site: Site, cloud: CloudSettings, *, dry_run: bool = False) -> CloudReport:
    """Bring one cloud in step with the site; raises CloudError only when the cloud
    cannot be read at all (each step's failure is in the report)."""
    report = CloudReport(cloud=cloud.name, dry_run=dry_run)
    registry = Registry(site.store)
    wanted, report.left = desired(site, cloud, site_id(site))
    for item in report.left:
        report.problems.append(f"image {item.image.image_id} ({item.image.title}): {item.reason}")
    with Glance(cloud.name, cloud.os_cloud) as glance:
        registrations = registry.all(cloud.name)
        seen = glance.images(TAG, {reg.glance_id for reg in registrations})
        for reg in registrations:
            if reg.glance_id not in seen:  # an adopted image need not carry vmic's tag
                found = glance.image(reg.glance_id)
                if found is not None:
                    seen[reg.glance_id] = found
        steps = plan(cloud, wanted, seen, registrations, now=site.now)
        for step in steps:
            if dry_run:
                report.done.append((step, _describe(step)))
                continue
            try:
                line = _apply(site, glance, cloud, step, seen)
            except VmicError as error:
                report.problems.append(f"{_describe(step)}: {error.message}")
                log.warning("cloud %s: %s: %s", cloud.name, _describe(step), error.message)
                _note_error(site, step, error.message)
                continue
            report.done.append((step, line))
    return report


def _describe(step: Step) -> str:
    where = f" ({step.glance_id})" if step.glance_id else ""
    why = f": {step.reason}" if step.reason else ""
    return f"{step.what} image {step.image_id}{where}{why}"


def _apply(
    site: Site, glance: Glance, cloud: CloudSettings, step: Step, seen: dict[str, Seen]
) -> str:
    if step.what == CREATE:
        return _create(site, glance, cloud, _wanted(step))
    reg, glance_id = _registration(step), reg_id(step)
    if step.what == REPAIR:
        wanted = _wanted(step)
        glance.update(
            glance_id,
            name=wanted.name if "name" in step.changes else None,
            properties=wanted.properties if "properties" in step.changes else None,
            visibility=wanted.visibility if "visibility" in step.changes else None,
        )
        for project in sorted(step.add_members):
            glance.add_member(glance_id, project)
            glance.accept_member(glance_id, project)
        for project in sorted(step.remove_members):
            glance.remove_member(glance_id, project)
        _record(site, replace(reg, state=ACTIVE, changed_at=site.now, last_error=None))
        return f"repaired image {step.image_id} ({glance_id}): {', '.join(step.changes)}"
    if step.what == REACTIVATE:
        if glance_id not in seen or seen[glance_id].status == DEACTIVATED:
            glance.reactivate(glance_id)
        _record(site, replace(reg, state=ACTIVE, changed_at=site.now, withdrawn_at=None))
        return f"reactivated image {step.image_id} ({glance_id})"
    if step.what == DEACTIVATE:
        glance.deactivate(glance_id)
        withdrawn = replace(reg, state=DEACTIVATED, changed_at=site.now, withdrawn_at=site.now)
        _record(site, withdrawn)
        return f"deactivated image {step.image_id} ({glance_id}): {step.reason}"
    if step.what == DELETE:
        glance.delete(glance_id)
    if step.what in (DELETE, FORGET):
        with site.store.atomic():
            Registry(site.store).forget(cloud.name, glance_id)
        done = "deleted" if step.what == DELETE else "forgot"
        return f"{done} image {step.image_id} ({glance_id}): {step.reason}"
    raise CloudError(f"unknown step {step.what}")


def _wanted(step: Step) -> Wanted:
    if step.wanted is None:
        raise CloudError(f"step {step.what} of image {step.image_id} names no image to register")
    return step.wanted


def _registration(step: Step) -> Registration:
    if step.registration is None:
        raise CloudError(f"step {step.what} of image {step.image_id} names no registration")
    return step.registration


def reg_id(step: Step) -> str:
    return _registration(step).glance_id


def _create(site: Site, glance: Glance, cloud: CloudSettings, wanted: Wanted) -> str:
    glance_id = glance.create(wanted, TAG)
    row = Registration(
        cloud=cloud.name,
        glance_id=glance_id,
        image_id=wanted.image_id,
        sha512=wanted.sha512,
        state=UPLOADING,
        adopted=False,
        registered_at=site.now,
        changed_at=site.now,
    )
    try:
        _record(site, row)  # before any byte: a run killed now leaves a row to clean up
        sent = glance.upload(glance_id, Path(wanted.path), wanted.size)
        _check_sent(sent, wanted)
        _check_stored(glance.image(glance_id), wanted)
        glance.update(
            glance_id,
            hidden=False,
            visibility=wanted.visibility if wanted.visibility != "private" else None,
        )
        for project in sorted(wanted.members):
            glance.add_member(glance_id, project)
            glance.accept_member(glance_id, project)
        _record(site, replace(row, state=ACTIVE, changed_at=site.now))
    except VmicError as error:
        _discard(site, glance, cloud, glance_id, error)
        raise
    return f"registered image {wanted.image_id} as {glance_id} ({wanted.name})"


def _check_sent(sent: Sent, wanted: Wanted) -> None:
    """The bytes that left are the endorsed ones (the cached file was checked when it was
    mirrored; this checks what was read from it now)."""
    if sent.size != wanted.size or sent.sha512 != wanted.sha512:
        raise CloudError(
            f"the cached file of image {wanted.image_id} no longer holds the endorsed bytes "
            f"({sent.size} bytes sent, {wanted.size} endorsed); run `vmic sync` to fetch it again"
        )


CLOUD_HASHES = frozenset({"sha512", "sha384", "sha256", "sha3_512", "sha3_384", "sha3_256"})
"""The algorithms a cloud may hash with for vmic to accept its word on the stored bytes
(Glance's ``hashing_algorithm``; sha512 is its default). MD5 and SHA-1 are not enough."""


def _check_stored(stored: Seen | None, wanted: Wanted) -> None:
    """Glance's own hash and size of what it stored must be the endorser's (THREATS 38)."""
    if stored is None or stored.status != ACTIVE:
        status = stored.status if stored else "gone"
        raise CloudError(f"Glance did not take the bytes of image {wanted.image_id} ({status})")
    if stored.size is not None and stored.size != wanted.size:
        raise CloudError(
            f"Glance stored {stored.size} bytes of image {wanted.image_id}, "
            f"the endorser signed {wanted.size}"
        )
    algo = (stored.hash_algo or "").lower()
    if not algo or not stored.hash_value:
        raise CloudError(f"Glance gave no hash of image {wanted.image_id}; it cannot be checked")
    if algo not in CLOUD_HASHES:
        raise CloudError(
            f"Glance hashes with {algo}, too weak to check image {wanted.image_id} by; "
            "set its hashing_algorithm to sha512"
        )
    expected = wanted.sha512 if algo == "sha512" else _file_hash(Path(wanted.path), algo, wanted)
    if stored.hash_value.lower() != expected:
        raise CloudError(
            f"Glance's {algo} of image {wanted.image_id} is not the endorser's: "
            "other bytes were stored; the upload was deleted"
        )


def _file_hash(path: Path, algo: str, wanted: Wanted) -> str:
    """The cloud's hash algorithm over the cached file, read once with SHA-512 beside it so
    that the file is shown to still hold the endorsed bytes."""
    digest, check = hashlib.new(algo), hashlib.sha512()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                check.update(chunk)
    except OSError as exc:
        raise CloudError(f"cannot read the cached file of image {wanted.image_id}: {exc}") from exc
    if check.hexdigest() != wanted.sha512:
        raise CloudError(f"the cached file of image {wanted.image_id} changed during the upload")
    return digest.hexdigest()


def _discard(
    site: Site, glance: Glance, cloud: CloudSettings, glance_id: str, why: VmicError
) -> None:
    """Delete an upload that failed; if even that fails, the registry row stays for the next
    run to delete."""
    log.warning("cloud %s: discarding image %s: %s", cloud.name, glance_id, why.message)
    try:
        glance.delete(glance_id)
    except CloudError as error:
        log.warning("cloud %s: %s (the next run deletes it)", cloud.name, error.message)
        return
    try:
        with site.store.atomic():
            Registry(site.store).forget(cloud.name, glance_id)
    except VmicError as error:  # deleted in Glance; the next run forgets the row
        log.warning("cloud %s: %s", cloud.name, error.message)


def _note_error(site: Site, step: Step, message: str) -> None:
    """Keep a failed step's reason on the registration it concerns (shown by image show)."""
    reg = step.registration
    if reg is None or not any(
        r.glance_id == reg.glance_id for r in Registry(site.store).all(reg.cloud)
    ):
        return
    _record(site, replace(reg, changed_at=site.now, last_error=message))


def _record(site: Site, row: Registration) -> None:
    with site.store.atomic():
        Registry(site.store).put(row)


def registrations_of(site: Site, image_id: str) -> list[Registration]:
    return Registry(site.store).of_image(image_id)


def describe_when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}Z" if moment else "-"
