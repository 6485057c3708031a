"""`vmic serve --manifest`: an endorser publishing its signed list and its images.

An endorser without a web server of its own can serve, read-only:

    /lists/<list-id>.atom     the signed list file (re-read when it changes,
                              e.g. re-signed from cron), ETag / Last-Modified / 304
    /images/sha512/<hex>      the image files the manifest lists, by the SHA-512
                              they were endorsed with, with Range and HEAD
    /images/sha512/<hex>.blocks  the block index of that image (SCHEMA §13), if the
                              manifest records one, as peers serve it
    /healthz                  the list's version and expiry
    the paths the list names  the list at the path of its self URL, each
                              image at the path of its download URL and each
                              block index at the path of its URL (the
                              manifest's ``self_url``, ``url`` and
                              ``blocks_url``), so the URLs in the signed list
                              work as they are


Every identifier from a URL is checked before anything touches the
filesystem; image files are looked up only through the manifest (a plain
file name in the images folder) and opened without following symlinks. An
image file is re-hashed before it is first served and whenever it changes
(and every ``rehash_interval``): a file that no longer matches the SHA-512
it was endorsed with is never served. A block index (``FILE.blocks``, the
manifest's ``blocks_file``) is served the same way, checked against the
SHA-512 the list gives for it, with Range.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import hdrs, web
from yarl import URL

from federation.rehash import CacheGuard
from federation.serve_images import serve_checked
from federation.serve_state import Counters
from feeds.atom import format_time
from feeds.manifest import Manifest
from feeds.model import Sha512Hex, list_id, sha512_hex
from feeds.reader import read_list
from keys.errors import ListFormatError, VmicError
from keys.limits import DEFAULT_LIMITS
from keys.xmlsafe import parse_untrusted
from keys.xmlsig import DS

log = logging.getLogger("vmic.serve")


@dataclass(slots=True, kw_only=True)
class EndorserState:
    manifest_path: Path
    list_path: Path
    images: Path
    rehash_interval: timedelta
    guard: CacheGuard = field(init=False)
    counters: Counters = field(default_factory=Counters)
    _files: dict[str, Path] = field(default_factory=dict)
    _indexes: dict[str, Path] = field(default_factory=dict)
    _by_path: dict[str, Sha512Hex] = field(default_factory=dict)
    _self_path: str | None = None
    _manifest_mtime: int = -1

    def __post_init__(self) -> None:
        self.guard = CacheGuard(self.locate, interval=self.rehash_interval, on_rot=_refuse)

    def locate(self, sha512: Sha512Hex) -> Path:
        """The image file endorsed with ``sha512``, or the block index file the list gives
        that SHA-512 (a name in the images folder)."""
        self._refresh()
        name = self._files.get(sha512) or self._indexes.get(sha512)
        if name is None:
            return self.images / ".vmic-no-such-image"  # opening it gives MISSING
        return name

    def _refresh(self) -> None:
        mtime = self.manifest_path.stat().st_mtime_ns
        if mtime == self._manifest_mtime:
            return
        manifest = Manifest.load(self.manifest_path)
        files: dict[str, Path] = {}
        indexes: dict[str, Path] = {}
        by_path: dict[str, Sha512Hex] = {}
        for image in manifest.images:
            name = manifest.file_of(image.id)
            if name and _plain(name):
                files[image.sha512] = self.images / name
                by_path[URL(image.url).path] = image.sha512
            index = manifest.blocks_file_of(image.id)
            if image.blocks is not None and index and _plain(index):
                indexes[image.blocks.sha512] = self.images / index
                by_path[URL(image.blocks.url).path] = image.blocks.sha512
                by_path[f"/images/sha512/{image.sha512}.blocks"] = image.blocks.sha512
        self._files, self._indexes, self._by_path = files, indexes, by_path
        self._self_path = URL(manifest.info.self_url).path
        self._manifest_mtime = mtime

    def is_image(self, sha512: Sha512Hex) -> bool:
        """Whether ``sha512`` is an image's (a block index is served only by its name)."""
        self._refresh()
        return sha512 in self._files

    def named(self, path: str) -> Sha512Hex | bool | None:
        """What the list's own URLs name at ``path`` (decoded): the SHA-512 of an image or
        of a block index, True for the list itself, None for nothing."""
        self._refresh()
        if path == self._self_path:
            return True
        return self._by_path.get(path)

    def served_list(self) -> tuple[str, bytes]:
        """The list's id and bytes (read fresh: it is re-signed in place)."""
        raw = self.list_path.read_bytes()
        root = parse_untrusted(raw, limits=DEFAULT_LIMITS, what=str(self.list_path))
        signature = root.find(f"{{{DS}}}Signature")
        if signature is not None:
            root.remove(signature)
        return read_list(root).id, raw


ENDORSER = web.AppKey("vmic-endorser", EndorserState)


def _plain(name: str) -> bool:
    """A file name in the images folder, not a path out of it."""
    return "/" not in name and name not in {"", ".", ".."}


def _refuse(sha512: Sha512Hex) -> None:
    log.error("file %s... no longer matches the SHA-512 the list gives it; not served", sha512[:16])


def _state(request: web.Request) -> EndorserState:
    return request.app[ENDORSER]


async def _list(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    try:
        wanted = list_id(name.removesuffix(".atom")) if name.endswith(".atom") else None
    except ListFormatError:
        wanted = None
    if wanted is None:
        return await _named(request)
    served_id, raw = _read_list(request)
    if served_id != wanted:
        raise web.HTTPNotFound
    return _list_response(request, raw)


def _read_list(request: web.Request) -> tuple[str, bytes]:
    try:
        return _state(request).served_list()
    except (OSError, VmicError) as exc:
        log.warning("cannot read the list: %s", exc)
        raise web.HTTPServiceUnavailable(text="503: the list cannot be read\n") from None


def _list_response(request: web.Request, raw: bytes) -> web.Response:
    digest = hashlib.sha256(raw).hexdigest()
    modified = datetime.fromtimestamp(_state(request).list_path.stat().st_mtime, UTC)
    headers = {
        hdrs.ETAG: f'"{digest}"',
        hdrs.LAST_MODIFIED: modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        hdrs.CACHE_CONTROL: "no-cache",
    }
    if request.headers.get(hdrs.IF_NONE_MATCH, "").strip() in {f'"{digest}"', "*"}:
        return web.Response(status=304, headers=headers)
    _state(request).counters.bytes_served += len(raw)
    body = b"" if request.method == hdrs.METH_HEAD else raw
    response = web.Response(body=body, headers=headers, content_type="application/atom+xml")
    if request.method == hdrs.METH_HEAD:
        response.content_length = len(raw)
    return response


async def _image(request: web.Request) -> web.StreamResponse:
    try:
        sha512 = sha512_hex(request.match_info["hex"])
    except ListFormatError:
        return await _named(request)
    if not _known_image(request, sha512):
        raise web.HTTPNotFound
    return await _image_response(request, sha512)


def _known_image(request: web.Request, sha512: Sha512Hex) -> bool:
    try:
        return _state(request).is_image(sha512)
    except (OSError, VmicError) as exc:
        log.warning("cannot read the manifest: %s", exc)
        raise web.HTTPServiceUnavailable(text="503: the manifest cannot be read\n") from None


async def _named(request: web.Request) -> web.StreamResponse:
    """The list, an image or a block index at a path one of the list's own URLs names."""
    try:
        named = _state(request).named(request.path)
    except (OSError, VmicError) as exc:
        log.warning("cannot read the manifest: %s", exc)
        raise web.HTTPServiceUnavailable(text="503: the manifest cannot be read\n") from None
    if named is True:
        return _list_response(request, _read_list(request)[1])
    if isinstance(named, str):
        return await _image_response(request, named)
    raise web.HTTPNotFound


async def _image_response(request: web.Request, sha512: Sha512Hex) -> web.StreamResponse:
    state = _state(request)
    return await serve_checked(
        request,
        state.guard,
        state.counters,
        sha512,
        rotten="503: the file no longer matches the SHA-512 it was endorsed with\n",
    )


async def _healthz(request: web.Request) -> web.Response:
    try:
        _id, raw = _state(request).served_list()
        root = parse_untrusted(raw, limits=DEFAULT_LIMITS)
        signature = root.find(f"{{{DS}}}Signature")
        if signature is not None:
            root.remove(signature)
        lst = read_list(root)
    except (OSError, VmicError) as exc:
        return web.json_response({"ok": False, "error": str(exc)}, status=503)
    return web.json_response(
        {"ok": True, "list": lst.id, "version": lst.version, "expires": format_time(lst.expires)}
    )


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    response.headers[hdrs.SERVER] = "vmic"


def create_endorser_app(
    manifest: Path, signed_list: Path, images: Path, *, rehash_interval: timedelta
) -> web.Application:
    state = EndorserState(
        manifest_path=manifest,
        list_path=signed_list,
        images=images,
        rehash_interval=rehash_interval,
    )
    app = web.Application(client_max_size=1024)
    app[ENDORSER] = state
    app.on_response_prepare.append(_headers)
    app.router.add_get("/lists/{name}", _list)
    app.router.add_get("/images/sha512/{hex}", _image)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/{path:.+}", _named)
    return app
