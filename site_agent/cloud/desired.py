"""What should be in a cloud: the site's available images, as Glance should show them.

An image belongs in a cloud when the site holds its verified bytes
(``available``: approved and downloaded) and the cloud's settings take its
subscription and VO. Its Glance record carries vmic's marker (the tag
``vmic`` and ``vmic_*`` properties, for people and for recovery: the site's
registry, not the marker, says what vmic may touch) and the properties the
EGI tools read: ``vmcatcher_event_ad_mpuri`` (cloud-info-provider publishes
only images that have one, cASO accounts by it), the title and description
under their ``vmcatcher_event_*`` names, and Glance's own ``os_distro``,
``os_version`` and ``architecture``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from site_agent.cloud.plan import Wanted
from site_agent.cloud.settings import CloudSettings
from site_agent.records import AVAILABLE, ImageRecord, iso
from site_agent.site import Site

TAG = "vmic"
MAX_PROPERTY = 255
"""Glance refuses a property value longer than this."""
DISK_FORMATS = {
    "raw": ("raw", "bare"),
    "img": ("raw", "bare"),
    "qcow2": ("qcow2", "bare"),
    "vmdk": ("vmdk", "bare"),
    "vdi": ("vdi", "bare"),
    "vhd": ("vhd", "bare"),
    "vhdx": ("vhdx", "bare"),
    "iso": ("iso", "bare"),
    "ploop": ("ploop", "bare"),
    "ova": ("vmdk", "ova"),
}
"""vmic's image format -> Glance's disk and container format; other formats stay out."""
_ARCHITECTURES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "i386": "i686"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Left:
    """An image that would belong in the cloud but cannot go there, and why."""

    image: ImageRecord
    reason: str


def desired(site: Site, cloud: CloudSettings, site_id: str) -> tuple[list[Wanted], list[Left]]:
    """The images that should be in ``cloud``, and those that cannot be (with the reason)."""
    wanted: list[Wanted] = []
    left: list[Left] = []
    for image in site.store.images(state=AVAILABLE):
        vo = image.entry.get("vo")
        if not cloud.wants(subscription=image.subscription, vo=vo):
            continue
        formats = DISK_FORMATS.get(str(image.entry.get("format", "")).lower())
        if formats is None:
            left.append(
                Left(image=image, reason=f"Glance takes no {image.entry.get('format')} images")
            )
            continue
        members = cloud.projects_of(vo) if cloud.visibility == "shared" else ()
        if cloud.visibility == "shared" and not members:
            left.append(
                Left(
                    image=image,
                    reason=f"visibility shared, but no project is mapped to VO {vo or '(none)'}",
                )
            )
            continue
        wanted.append(
            Wanted(
                image_id=image.image_id,
                sha512=image.sha512,
                size=image.size,
                path=str(site.cache.path(image.sha512)),
                name=cloud.image_name({**image.entry, "image_id": image.image_id}),
                disk_format=formats[0],
                container_format=formats[1],
                properties=dict(_properties(site, image, site_id)),
                visibility=cloud.visibility,
                members=frozenset(members),
            )
        )
    return wanted, left


def _properties(site: Site, image: ImageRecord, site_id: str) -> Iterator[tuple[str, str]]:
    entry = image.entry
    listed = site.store.current_list(image.list_id)
    expires = entry.get("expires") or (iso(listed.expires) if listed else None)
    values = {
        "vmic_image_id": image.image_id,
        "vmic_sha512": image.sha512,
        "vmic_list_id": image.list_id,
        "vmic_subscription": image.subscription,
        "vmic_list_version": str(listed.version) if listed else None,
        "vmic_endorser_dn": listed.signer if listed else None,
        "vmic_vo": entry.get("vo"),
        "vmic_expires": expires,
        "vmic_site": site_id,
        "vmcatcher_event_ad_mpuri": entry.get("info_url"),
        "vmcatcher_event_dc_title": entry.get("title"),
        "vmcatcher_event_dc_description": entry.get("summary"),
        "image_version": entry.get("version"),
        "os_distro": (entry.get("osname") or "").lower() or None,
        "os_version": entry.get("osversion"),
        "architecture": _architecture(entry.get("arch")),
    }
    for key, value in values.items():
        if value:
            yield key, str(value)[:MAX_PROPERTY]


def _architecture(arch: object) -> str | None:
    if not isinstance(arch, str) or not arch:
        return None
    return _ARCHITECTURES.get(arch.lower(), arch.lower())
