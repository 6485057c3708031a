"""What vmcatcher gives its event handlers, so they run under vmic unchanged.

vmcatcher calls its handler with ``VMCATCHER_EVENT_TYPE`` (``ImageNew``,
``AvailablePostfix``, ``ExpirePosfix``, ...), one ``VMCATCHER_EVENT_<FIELD>``
per HEPiX image key, and its cache folders. Its cache names an image file by
the image's UUID and an expired one ``<uuid>.<time>``; vmic names cached
files by their SHA-512. So that handlers that build paths either way
(``$VMCATCHER_CACHE_DIR_CACHE/$VMCATCHER_EVENT_FILENAME`` or
``.../$VMCATCHER_EVENT_DC_IDENTIFIER``) find the bytes, a vmcatcher hook sees
``vmcatcher/cache/<uuid>`` and ``vmcatcher/expired/<uuid>.<time>`` in the
site home: symbolic links into vmic's cache. A link never keeps bytes alive:
when vmic deletes an expired file, its link dangles and is pruned.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path

from site_agent.home import SiteHome
from site_agent.hook_env import extra_variables
from site_agent.records import EventRecord

TYPES = {
    "image.new": "ImageNew",
    "image.available": "AvailablePostfix",
    "image.withdrawn": "ExpirePosfix",  # vmcatcher's spelling
}
"""vmic event -> vmcatcher event type; vmic sends vmcatcher hooks no other events."""

# VMCATCHER_EVENT_<NAME> <- the key of vmic's event data (the HEPiX key in the comment).
_FIELDS = {
    "DC_IDENTIFIER": "image_id",  # dc:identifier
    "DC_TITLE": "title",  # dc:title
    "DC_DESCRIPTION": "summary",  # dc:description
    "HV_URI": "url",  # hv:uri
    "HV_SIZE": "size",  # hv:size
    "HV_HYPERVISOR": "hypervisor",  # hv:hypervisor
    "HV_VERSION": "version",  # hv:version
    "HV_FORMAT": "format",  # hv:format
    "SL_CHECKSUM_SHA512": "sha512",  # sl:checksum:sha512
    "SL_ARCH": "arch",  # sl:arch
    "SL_OS": "os",  # sl:os
    "SL_OSVERSION": "osversion",  # sl:osversion
    "IL_DC_IDENTIFIER": "list_id",  # the image list's dc:identifier
    "VO": "vo",  # ad:vo, the AppDB virtual organisation (the image's, else the list's)
}
# The AppDB keys vmic reads into typed fields; a HEPiX list's own value (in ``extra``)
# stands where vmic has none (an ``ad:mpuri`` that is not an http(s) URL, say).
_APPDB = {
    "AD_MPURI": "info_url",  # ad:mpuri, the marketplace URI (an Atom list's image page)
    "AD_APPID": "appliance_id",  # ad:appid
    "AD_BASE_MPURI": "base_marketplace_url",  # ad:base_mpuri
}
# Other keys of a HEPiX image (sl:comments, ad:mpuri, ...) follow as VMCATCHER_EVENT_SL_COMMENTS,
# VMCATCHER_EVENT_AD_MPURI, ... (vmcatcher_extra_variables), never under these names:
RESERVED = frozenset(
    "VMCATCHER_EVENT_" + name for name in (*_FIELDS, "TYPE", "FILENAME", "UUID_SESSION")
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHA512 = re.compile(r"[0-9a-f]{128}")


def vmcatcher_environment(event: EventRecord, *, home: str) -> dict[str, str]:
    """The ``VMCATCHER_*`` variables for one event (and the cache links they name)."""
    paths = SiteHome(Path(home))
    view = _View(paths)
    env = {
        "VMCATCHER_EVENT_TYPE": TYPES.get(event.type, event.type),
        "VMCATCHER_CACHE_DIR_CACHE": str(view.cache),
        "VMCATCHER_CACHE_DIR_DOWNLOAD": str(paths.partial),
        "VMCATCHER_CACHE_DIR_EXPIRE": str(view.expired),
        "VMCATCHER_EVENT_UUID_SESSION": str(uuid.uuid4()),
    }
    data = event.data
    for name, key in _FIELDS.items():
        value = data.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            env["VMCATCHER_EVENT_" + name] = str(value)
    for name, key in _APPDB.items():  # an Atom list's image page is its marketplace URI too
        value = data.get(key)
        if isinstance(value, str) and value:
            env["VMCATCHER_EVENT_" + name] = value
    image_id = str(data.get("image_id", ""))
    sha512 = str(data.get("sha512", ""))
    if not (_UUID.fullmatch(image_id) and _SHA512.fullmatch(sha512)):
        return env  # not an image event: no file to name
    env["VMCATCHER_EVENT_FILENAME"] = image_id
    view.prune()
    if event.type == "image.available":
        view.show_cached(image_id, sha512)
    elif event.type == "image.withdrawn":
        expired = view.show_expired(image_id, sha512)
        if expired:
            env["VMCATCHER_EVENT_FILENAME"] = expired
    return env


def vmcatcher_extra_variables(event: EventRecord) -> dict[str, str]:
    """``VMCATCHER_EVENT_AD_MPURI`` and the like, from the HEPiX keys vmic does not read."""
    return extra_variables(event.data, "VMCATCHER_EVENT_", reserved=RESERVED, namespaced=True)


class _View:
    """vmcatcher's cache layout as links into vmic's cache (names checked by the caller)."""

    def __init__(self, paths: SiteHome) -> None:
        self.paths = paths
        self.cache = paths.root / "vmcatcher" / "cache"
        self.expired = paths.root / "vmcatcher" / "expired"

    def prune(self) -> None:
        """Drop links whose file vmic has moved or deleted."""
        for folder in (self.cache, self.expired):
            folder.mkdir(mode=0o750, parents=True, exist_ok=True)
            for entry in folder.iterdir():
                if entry.is_symlink() and not entry.exists():
                    entry.unlink(missing_ok=True)

    def show_cached(self, image_id: str, sha512: str) -> None:
        target = self.paths.images / sha512
        if target.is_file():
            _link(self.cache / image_id, target)

    def show_expired(self, image_id: str, sha512: str) -> str | None:
        """Link the newest expired copy of ``sha512`` as ``<uuid>.<time>``; its name."""
        (self.cache / image_id).unlink(missing_ok=True)
        copies = sorted(self.paths.expired.glob(f"{sha512}.*"))
        if not copies:
            return None  # still in use by another runnable image, or already purged
        name = f"{image_id}.{copies[-1].name.removeprefix(sha512 + '.')}"
        _link(self.expired / name, copies[-1])
        return name


def _link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` (relative, replaced atomically)."""
    relative = os.path.relpath(target, link.parent)
    staging = link.with_name(f".{link.name}.{os.getpid()}")
    staging.unlink(missing_ok=True)
    staging.symlink_to(relative)
    try:
        staging.replace(link)
    except OSError:
        with contextlib.suppress(OSError):
            staging.unlink()
        raise
