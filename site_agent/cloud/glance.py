"""The one place vmic talks to Glance: openstacksdk, behind a small typed interface.

openstacksdk finds the cloud as every OpenStack user expects: the clouds.yaml
entry ``os_cloud`` (in its standard places, or the file ``OS_CLIENT_CONFIG_FILE``
names), the usual ``OS_*`` variables, Keystone, application credentials, or
``auth_type: none`` with an endpoint for a Glance without Keystone. It is
imported here only, when a cloud is used: the rest of vmic starts without it.

Every call is wrapped: whatever openstacksdk, keystoneauth or the network
raise becomes a :class:`~keys.errors.CloudError` naming the cloud and the
step, never with a credential in it (only the cloud's name and the Glance
image id are quoted).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from keys.errors import CloudError, describe
from site_agent.cloud.plan import Seen, Wanted

T = TypeVar("T")

_STANDARD = frozenset(
    {
        "id", "name", "status", "visibility", "tags", "owner", "protected", "checksum",
        "os_hash_algo", "os_hash_value", "size", "virtual_size", "disk_format",
        "container_format", "min_disk", "min_ram", "created_at", "updated_at", "file",
        "schema", "self", "direct_url", "locations", "stores", "os_hidden",
    }
)  # fmt: skip
"""Glance's own fields: everything else of an image is a property."""


class Glance:
    """One connection to one cloud (use as a context manager)."""

    def __init__(self, cloud: str, os_cloud: str) -> None:
        self.cloud = cloud
        self.os_cloud = os_cloud
        self._connection: Any = None

    def __enter__(self) -> Glance:
        import openstack  # noqa: PLC0415 - heavy; only cloud commands pay for it

        self._connection = self._call(
            "cannot connect", lambda: openstack.connect(cloud=self.os_cloud)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    @property
    def _image(self) -> Any:
        if self._connection is None:
            raise RuntimeError("use Glance inside `with`")
        return self._connection.image

    def _call(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except CloudError:
            raise
        except Exception as exc:  # openstacksdk, keystoneauth, requests, the OS: all refusals
            raise CloudError(f"cloud {self.cloud}: {what}: {_reason(exc)}") from exc

    # -- reading -------------------------------------------------------------------------
    def images(self, tag: str, among: Collection[str]) -> dict[str, Seen]:
        """The images of ``among`` (ids) that carry ``tag`` and this cloud's credentials can
        list, by id: one listing, and members read only for those (never for images of
        others that happen to carry the tag)."""

        def listed() -> dict[str, Seen]:
            return {
                image.id: self._seen(image)
                for image in self._image.images(tag=tag)
                if image.id in among
            }

        return self._call(f"cannot list the images tagged {tag}", listed)

    def image(self, glance_id: str) -> Seen | None:
        from openstack import exceptions  # noqa: PLC0415

        def fetched() -> Seen | None:
            try:
                found = self._image.get_image(glance_id)
            except exceptions.NotFoundException:
                return None
            return self._seen(found)

        return self._call(f"cannot read image {glance_id}", fetched)

    def _seen(self, image: Any) -> Seen:
        members: frozenset[str] = frozenset()
        if image.visibility == "shared":  # Glance lists members of shared images only
            members = frozenset(m.member_id for m in self._image.members(image.id))
        return Seen(
            glance_id=image.id,
            status=str(image.status or ""),
            name=str(image.name or ""),
            visibility=str(image.visibility or ""),
            properties=_properties(image),
            members=members,
            hash_algo=image.hash_algo,
            hash_value=image.hash_value,
            size=image.size,
        )

    def all_images(self) -> Iterator[Any]:
        """Every image the credentials can see (for adoption), as openstacksdk gives it."""
        yield from self._call("cannot list images", lambda: list(self._image.images()))

    # -- changing ------------------------------------------------------------------------
    def create(self, wanted: Wanted, tag: str) -> str:
        """A new image record, private, hidden from image lists and with no members; its id
        (the bytes come next; it is shown once they are checked)."""
        from openstack.image.v2.image import Image  # noqa: PLC0415

        def created() -> str:
            record = Image.new(
                name=wanted.name,
                disk_format=wanted.disk_format,
                container_format=wanted.container_format,
                visibility="private",
                is_hidden=True,
                tags=[tag],
                **dict(wanted.properties),
            )
            return str(record.create(self._image).id)

        return self._call(f"cannot create an image for {wanted.image_id}", created)

    def upload(self, glance_id: str, path: Path, size: int) -> Sent:
        """Stream the file's bytes into the image (never read whole into memory), hashing
        them with SHA-512 on the way: what was sent, not what the file held before."""

        from openstack.image.v2.image import Image  # noqa: PLC0415

        def uploaded() -> Sent:
            with path.open("rb") as stream:
                reader = _Hashing(stream, size)
                Image.existing(id=glance_id).upload(self._image, data=reader, size=size)
            return Sent(size=reader.count, sha512=reader.digest.hexdigest())

        return self._call(f"cannot upload the bytes of image {glance_id}", uploaded)

    def update(
        self,
        glance_id: str,
        *,
        name: str | None = None,
        properties: Mapping[str, str] | None = None,
        visibility: str | None = None,
        hidden: bool | None = None,
    ) -> None:
        changes: dict[str, Any] = dict(properties or {})
        if name is not None:
            changes["name"] = name
        if visibility is not None:
            changes["visibility"] = visibility
        if hidden is not None:
            changes["is_hidden"] = hidden
        if changes:
            self._call(
                f"cannot update image {glance_id}",
                lambda: self._image.update_image(glance_id, **changes),
            )

    def set_tags(
        self, glance_id: str, *, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()
    ) -> None:
        def tagged() -> None:
            for tag in add:
                self._image.add_tag(glance_id, tag)
            for tag in remove:
                self._image.remove_tag(glance_id, tag)

        self._call(f"cannot change the tags of image {glance_id}", tagged)

    def add_member(self, glance_id: str, project: str) -> None:
        self._call(
            f"cannot share image {glance_id} with project {project}",
            lambda: self._image.add_member(glance_id, member=project),
        )

    def accept_member(self, glance_id: str, project: str) -> bool:
        """Accept the share on the project's behalf, as atrope does, where the cloud's
        credentials may (an admin's); otherwise the project's users accept it once (``openstack
        image set --accept``). Whether it was accepted."""
        from openstack import exceptions  # noqa: PLC0415

        def accepted() -> bool:
            try:
                self._image.update_member(project, glance_id, status="accepted")
            except exceptions.ForbiddenException:
                return False
            return True

        return self._call(f"cannot accept image {glance_id} for project {project}", accepted)

    def remove_member(self, glance_id: str, project: str) -> None:
        self._call(
            f"cannot stop sharing image {glance_id} with project {project}",
            lambda: self._image.remove_member(project, glance_id, ignore_missing=True),
        )

    def deactivate(self, glance_id: str) -> None:
        self._call(
            f"cannot deactivate image {glance_id}",
            lambda: self._image.deactivate_image(glance_id),
        )

    def reactivate(self, glance_id: str) -> None:
        self._call(
            f"cannot reactivate image {glance_id}",
            lambda: self._image.reactivate_image(glance_id),
        )

    def delete(self, glance_id: str) -> None:
        self._call(
            f"cannot delete image {glance_id}",
            lambda: self._image.delete_image(glance_id, ignore_missing=True),
        )


@dataclass(frozen=True, slots=True)
class Sent:
    """What an upload sent: its byte count and SHA-512."""

    size: int
    sha512: str


class _Hashing:
    """A file as requests sends it (``read`` and a length), hashed as it is read."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._size = size
        self.count = 0
        self.digest = hashlib.sha512()

    def read(self, amount: int = -1) -> bytes:
        chunk = self._stream.read(amount)
        self.digest.update(chunk)
        self.count += len(chunk)
        return chunk

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:  # openstacksdk tests ``if data``: an empty image is data too
        return True

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(_CHUNK):
            yield chunk


_CHUNK = 1024 * 1024
_TAGS = re.compile(r"<[^>]{0,200}>")


def _reason(exc: Exception) -> str:
    """What Glance or the network said, briefly: an HTTP status and Glance's own words,
    without the HTML Glance wraps them in, or the exception's kind and text."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        details = getattr(exc, "details", None) or ""
        text = " ".join(_TAGS.sub(" ", str(details)).split())
        return f"HTTP {status}" + (f": {text[:300]}" if text else "")
    text = describe(exc)
    return text if len(text) <= 240 else text[:240] + "..."


def _properties(image: Any) -> dict[str, str]:
    """An image's properties as strings (openstacksdk keeps unknown fields there)."""
    found: dict[str, str] = {}
    for key, value in (getattr(image, "properties", None) or {}).items():
        if key not in _STANDARD and value is not None:
            found[str(key)] = str(value)
    for key in ("os_distro", "os_version", "architecture"):
        value = getattr(image, key, None)
        if value is not None:
            found[key] = str(value)
    return found
