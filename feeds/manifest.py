"""The endorser's manifest: a TOML file that is the source of truth for one list.

vmic edits it (``vmic endorse init/add/revoke/sign``) with tomlkit, so the
comments and layout a person adds survive every edit. Layout::

    [list]             id, title, self_url, author, email, author_uri, subtitle,
                       vo, endorser_dn, issuer_dn (recorded at the last signing)
    [state]            kept by vmic: version (last issued), updated (when the
                       content last changed), content_sha256
    [[images]]         one table per endorsed image (the fields of an entry,
                       plus the file name it was hashed from); an image with a
                       block index also has blocks_file (its file name, beside
                       the image), blocks_url, blocks_size and blocks_sha512
    [[revoked]]        id, when, reason: images taken back

Loading validates everything and names the image and key at fault.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import tomlkit
import tomlkit.exceptions
from tomlkit.items import AoT, Table

from feeds.blocks import index_size
from feeds.model import (
    BlocksRef,
    ImageEntry,
    ImageId,
    Tombstone,
    check_author_uri,
    check_text,
    check_token,
    check_url,
    image_id,
    list_id,
    sha512_hex,
)
from keys.dn import DistinguishedName
from keys.errors import ConfigError, ListFormatError
from keys.fileio import read_file, write_atomic

T = TypeVar("T")

_HEADER = """\
vmic endorser manifest: the source of truth for one image list.
Edit it with `vmic endorse ...`; comments and hand edits are kept.
The [state] table is kept by vmic: do not edit it by hand.
"""

# Optional text fields of an image, in the order they are written.
_OPTIONAL_TEXT = (
    "hypervisor",
    "arch",
    "os",
    "osname",
    "osversion",
    "version",
    "vo",
    "info_url",
    "policy_override",
)
_OPTIONAL_TIME = ("produced", "expires")


@dataclass(frozen=True, slots=True, kw_only=True)
class ListInfo:
    id: str
    title: str
    self_url: str
    author: str
    email: str | None
    author_uri: str | None
    subtitle: str | None
    vo: str | None
    endorser_dn: DistinguishedName | None
    issuer_dn: DistinguishedName | None


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    version: int
    updated: datetime | None
    content_sha256: str


class Manifest:
    """A loaded manifest; edits go to the TOML document and are written by :meth:`save`."""

    def __init__(self, path: Path, document: tomlkit.TOMLDocument) -> None:
        self.path = path
        self._doc = document
        self._parse()

    def _parse(self) -> None:
        """(Re)build the validated view from the TOML document."""
        path = self.path
        data = self._doc.unwrap()
        self.info = _list_info(data.get("list"), path)
        self.state = _state(data.get("state", {}), path)
        self.images = tuple(
            _image(item, index, path) for index, item in enumerate(data.get("images", []), 1)
        )
        self._files = _names(data.get("images", []), "file")
        self._block_files = _names(data.get("images", []), "blocks_file")
        self.revoked = tuple(
            _revoked(item, index, path) for index, item in enumerate(data.get("revoked", []), 1)
        )

    # -- files -----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Path,
        *,
        title: str,
        self_url: str,
        author: str,
        email: str | None,
        subtitle: str | None,
        new_id: str,
        author_uri: str | None = None,
        vo: str | None = None,
    ) -> Manifest:
        if path.exists():
            raise ConfigError(f"{path} already exists; refusing to overwrite a manifest")
        doc = tomlkit.document()
        for line in _HEADER.splitlines():
            doc.add(tomlkit.comment(line))
        info = tomlkit.table()
        info["id"] = new_id
        info["title"] = title
        info["self_url"] = self_url
        info["author"] = author
        for key, value in (
            ("email", email),
            ("author_uri", author_uri),
            ("subtitle", subtitle),
            ("vo", vo),
        ):
            if value:
                info[key] = value
        doc["list"] = info
        state = tomlkit.table()
        state["version"] = 0
        state["content_sha256"] = ""
        state.add(tomlkit.nl())
        doc["state"] = state
        manifest = cls(path, doc)
        manifest.save()
        return manifest

    @classmethod
    def load(cls, path: Path) -> Manifest:
        text = read_file(path, what="manifest").decode("utf-8", errors="replace")
        try:
            doc = tomlkit.parse(text)
        except tomlkit.exceptions.ParseError as exc:
            raise ConfigError(f"manifest {path} is not valid TOML: {exc}") from exc
        return cls(path, doc)

    def save(self) -> None:
        write_atomic(self.path, tomlkit.dumps(self._doc).encode("utf-8"))

    # -- edits -----------------------------------------------------------------
    def add_image(
        self, entry: ImageEntry, *, filename: str, blocks_file: str | None = None
    ) -> None:
        """Add ``entry``, hashed from ``filename``; ``blocks_file`` names the file of its
        block index (required when the entry names one)."""
        if (entry.blocks is None) != (blocks_file is None):
            raise ValueError("an entry's block index and its file go together")
        for existing in self.images:
            if existing.sha512 == entry.sha512:
                raise ConfigError(
                    f"this file is already listed as image {existing.id} ({existing.title})",
                    hint="revoke the old image first if it is being replaced",
                )
        table = tomlkit.table()
        table["id"] = entry.id
        table["title"] = entry.title
        if entry.summary:
            table["summary"] = entry.summary
        table["url"] = entry.url
        table["file"] = filename
        table["size"] = entry.size
        table["sha512"] = entry.sha512
        table["format"] = entry.format
        if entry.blocks is not None and blocks_file is not None:
            table["blocks_file"] = blocks_file
            table["blocks_url"] = entry.blocks.url
            table["blocks_size"] = entry.blocks.size
            table["blocks_sha512"] = entry.blocks.sha512
        for key in _OPTIONAL_TEXT:
            value = getattr(entry, key)
            if value is not None:
                table[key] = value
        for key in _OPTIONAL_TIME:
            value = getattr(entry, key)
            if value is not None:
                table[key] = value
        if entry.tags:
            table["tags"] = list(entry.tags)
        table["endorsed"] = entry.endorsed
        table["updated"] = entry.updated
        table.add(tomlkit.nl())
        self._aot("images").append(table)
        self._parse()

    def revoke(self, image: ImageId, *, reason: str, when: datetime) -> ImageEntry:
        images = self._aot("images")
        for index, item in enumerate(self.images):
            if item.id == image:
                del images[index]
                table = tomlkit.table()
                table["id"] = image
                table["when"] = when
                table["reason"] = reason
                table.add(tomlkit.nl())
                self._aot("revoked").append(table)
                self._parse()
                return item
        if any(t.id == image for t in self.revoked):
            raise ConfigError(f"image {image} is already revoked")
        raise ConfigError(f"no image {image} in {self.path}", hint="see `vmic endorse show`")

    def record_issue(
        self,
        *,
        version: int,
        updated: datetime,
        content_sha256: str,
        endorser_dn: DistinguishedName,
        issuer_dn: DistinguishedName,
    ) -> None:
        state = self._table("state")
        state["version"] = version
        state["updated"] = updated
        state["content_sha256"] = content_sha256
        info = self._table("list")
        info["endorser_dn"] = endorser_dn.slash()
        info["issuer_dn"] = issuer_dn.slash()
        self._parse()

    def file_of(self, image: str) -> str | None:
        """The name of the file an image was hashed from, as recorded by `endorse add`."""
        return self._files.get(image)

    def blocks_file_of(self, image: str) -> str | None:
        """The name of the file of an image's block index, as recorded by `endorse add`."""
        return self._block_files.get(image)

    def content_sha256(self) -> str:
        """A digest of everything but the versioning fields: what 'content changed' means."""
        data = self._doc.unwrap()
        content = {
            "list": data.get("list", {}),
            "images": data.get("images", []),
            "revoked": data.get("revoked", []),
        }
        for key in ("endorser_dn", "issuer_dn"):
            content["list"].pop(key, None)
        canonical = json.dumps(content, sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def tombstones(self) -> tuple[Tombstone, ...]:
        return self.revoked

    def _aot(self, key: str) -> AoT:
        existing = self._doc.get(key)
        if isinstance(existing, list) and not existing and not isinstance(existing, AoT):
            del self._doc[key]  # TOML writes an emptied array of tables as `key = []`
        if key not in self._doc:
            self._doc.append(key, tomlkit.aot())
        value = self._doc[key]
        if not isinstance(value, AoT):
            raise ConfigError(f"manifest {self.path}: {key} must be an array of tables")
        return value

    def _table(self, key: str) -> Table:
        if key not in self._doc:
            self._doc.append(key, tomlkit.table())
        value = self._doc[key]
        if not isinstance(value, Table):
            raise ConfigError(f"manifest {self.path}: [{key}] must be a table")
        return value


# -- validation of loaded data ---------------------------------------------------


class _Table:
    """Typed access to one table of the manifest, with errors that name it."""

    def __init__(self, data: object, path: Path, section: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"manifest {path}: {section} must be a table")
        self.data: dict[str, Any] = data
        self.where = f"manifest {path}: {section}"

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: {problem}")

    def _typed(self, key: str, kind: type[T]) -> T | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, kind):
            raise self.fail(key, f"expected {kind.__name__}, got {type(value).__name__}")
        if isinstance(value, datetime) and value.tzinfo is None:
            raise self.fail(key, "needs a time zone (e.g. 2026-11-26T12:00:00Z)")
        if isinstance(value, str):
            self.checked(key, partial(check_text, value, what="text"))
        return value

    def opt_text(self, key: str) -> str | None:
        return self._typed(key, str)

    def text(self, key: str) -> str:
        value = self._typed(key, str)
        if value is None or not value.strip():
            raise self.fail(key, "missing or empty")
        return value

    def opt_number(self, key: str) -> int | None:
        value = self._typed(key, int)
        if value is not None and value < 0:
            raise self.fail(key, "must not be negative")
        return value

    def number(self, key: str) -> int:
        value = self.opt_number(key)
        if value is None:
            raise self.fail(key, "missing")
        return value

    def opt_time(self, key: str) -> datetime | None:
        return self._typed(key, datetime)

    def time(self, key: str) -> datetime:
        value = self.opt_time(key)
        if value is None:
            raise self.fail(key, "missing")
        return value

    def checked(self, key: str, check: Callable[[], T]) -> T:
        try:
            return check()
        except (ListFormatError, ConfigError) as exc:
            raise self.fail(key, exc.message) from exc

    def tags(self, key: str) -> tuple[str, ...]:
        tags = self.data.get(key, [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise self.fail(key, "must be a list of strings")
        return tuple(self.checked(key, partial(check_token, t, what="tag")) for t in tags)


def _names(images: object, key: str) -> dict[str, str]:
    """A file name each image records under ``key``, by image id (checked elsewhere)."""
    if not isinstance(images, list):
        return {}
    return {
        str(item.get("id")): str(item[key])
        for item in images
        if isinstance(item, dict) and isinstance(item.get(key), str)
    }


def _list_info(data: object, path: Path) -> ListInfo:
    if data is None:
        raise ConfigError(f"manifest {path} has no [list] table")
    table = _Table(data, path, "[list]")
    raw_id, url = table.text("id"), table.text("self_url")
    dns = {
        key: table.checked(key, partial(DistinguishedName.parse_slash, value))
        for key in ("endorser_dn", "issuer_dn")
        if (value := table.opt_text(key))
    }
    author_uri, vo = table.opt_text("author_uri"), table.opt_text("vo")
    return ListInfo(
        id=table.checked("id", lambda: list_id(raw_id)),
        title=table.text("title"),
        self_url=table.checked("self_url", lambda: check_url(url, what="self_url")),
        author=table.text("author"),
        email=table.opt_text("email"),
        author_uri=table.checked("author_uri", lambda: check_author_uri(author_uri))
        if author_uri
        else None,
        subtitle=table.opt_text("subtitle"),
        vo=table.checked("vo", lambda: check_token(vo, what="vo")) if vo else None,
        endorser_dn=dns.get("endorser_dn"),
        issuer_dn=dns.get("issuer_dn"),
    )


def _state(data: object, path: Path) -> State:
    table = _Table(data, path, "[state]")
    return State(
        version=table.opt_number("version") or 0,
        updated=table.opt_time("updated"),
        content_sha256=table.opt_text("content_sha256") or "",
    )


def _image(data: object, index: int, path: Path) -> ImageEntry:
    label = data.get("id", "?") if isinstance(data, dict) else "?"
    table = _Table(data, path, f"images[{index}] ({label})")
    raw_id, url, sha, fmt = (table.text(k) for k in ("id", "url", "sha512", "format"))
    vo = table.opt_text("vo")
    size = table.number("size")
    return ImageEntry(
        id=table.checked("id", lambda: image_id(raw_id)),
        title=table.text("title"),
        summary=table.opt_text("summary") or "",
        url=table.checked("url", lambda: check_url(url, what="url")),
        size=size,
        sha512=table.checked("sha512", lambda: sha512_hex(sha)),
        format=table.checked("format", lambda: check_token(fmt, what="format")),
        endorsed=table.time("endorsed"),
        updated=table.time("updated"),
        vo=table.checked("vo", lambda: check_token(vo, what="vo")) if vo else None,
        tags=table.tags("tags"),
        hypervisor=table.opt_text("hypervisor"),
        arch=table.opt_text("arch"),
        os=table.opt_text("os"),
        osname=table.opt_text("osname"),
        osversion=table.opt_text("osversion"),
        version=table.opt_text("version"),
        info_url=table.opt_text("info_url"),
        policy_override=table.opt_text("policy_override"),
        blocks=_blocks(table, size),
        produced=table.opt_time("produced"),
        expires=table.opt_time("expires"),
    )


_BLOCKS_KEYS = ("blocks_file", "blocks_url", "blocks_size", "blocks_sha512")


def _blocks(table: _Table, size: int) -> BlocksRef | None:
    """An image's block index: all four keys or none; the size that of the index of an
    image of ``size`` bytes, as the list reader requires."""
    present = [key for key in _BLOCKS_KEYS if key in table.data]
    if not present:
        return None
    for key in _BLOCKS_KEYS:
        if key not in present:
            raise table.fail(
                key, f"missing (an image with {present[0]} needs all of {', '.join(_BLOCKS_KEYS)})"
            )
    name, url, sha = (table.text(k) for k in ("blocks_file", "blocks_url", "blocks_sha512"))
    if "/" in name or name in {".", ".."}:
        raise table.fail("blocks_file", f"{name!r} must be a file name, not a path")
    length = table.number("blocks_size")
    if length != index_size(size):
        raise table.fail(
            "blocks_size",
            f"{length} is not the size of the block index of an image of {size} bytes "
            f"({index_size(size)})",
        )
    return BlocksRef(
        url=table.checked("blocks_url", lambda: check_url(url, what="blocks_url")),
        size=length,
        sha512=table.checked("blocks_sha512", lambda: sha512_hex(sha)),
    )


def _revoked(data: object, index: int, path: Path) -> Tombstone:
    table = _Table(data, path, f"revoked[{index}]")
    raw_id = table.text("id")
    return Tombstone(
        id=table.checked("id", lambda: image_id(raw_id)),
        when=table.time("when"),
        reason=table.opt_text("reason") or "",
    )
