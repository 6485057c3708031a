"""`vmic serve`: a read-only web server for a site home (DESIGN §6).

Routes, all GET (and HEAD), nothing else:

    /                         the catalogue page          (federation.catalogue)
    /image/<uuid>             one image's page            (federation.catalogue)
    /lists/<list-id>.atom     the original bytes of the list version in force
                              (``.smime`` for a HEPiX list); with ``[serve]
                              accel_redirect``, an empty answer whose
                              X-Accel-Redirect names its file for nginx in front
    /export.atom              the site's signed export (exports/export.atom)
    /images/sha512/<hex>      image bytes, with ranges    (federation.serve_images)
    /images/sha512/<hex>.blocks  the image's block index, when this site keeps one
    /healthz, /metrics        health and Prometheus text  (federation.serve_metrics)
    /api/v1/images[/<uuid>]   the catalogue API (JSON), /api/v1/openapi.json its
                              OpenAPI document            (federation.api)

Lists (unless nginx sends them) and the export carry a strong ETag (the
SHA-256 of the bytes) and Last-Modified, and answer If-None-Match /
If-Modified-Since with 304. They and ``/healthz`` are kept in memory
between syncs and checked at every request (the files by ``stat``, the
store by its data version; see :mod:`federation.serve_state`), and simple
requests for them are answered by the listener's fast lane (:class:`Lane`)
without building a request. Every
identifier from a URL is checked (canonical UUID, 128 hex digits) before
anything touches the filesystem; there is no directory listing and no
static-file route. Every response carries ``X-Content-Type-Options:
nosniff`` and a Content-Security-Policy that forbids everything (the pages
allow their own nonce-tagged style and script).

The listener (:func:`start`) bounds concurrent connections, in all and
per client address (``503``), and the time a client has to send its
request headers (``408``); see :mod:`federation.listener`. Requests have
no bodies (``client_max_size`` is 1 KiB); aiohttp's limits on the request
line and headers apply. The access log is off unless asked for.
TLS is used when ``[serve] tls_cert`` and ``tls_key`` are set; with ``access =
"peers"`` the export, the lists and the images (and, unless ``public_catalogue``,
the catalogue and the API) are only for clients presenting an allowed peer's
certificate (:mod:`federation.peer_tls`; others get 403). The server
reads the store on its own thread and never takes the site lock, so `vmic
sync` runs while it serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import signal
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from federation import api, catalogue, catalogue_image, peer_tls, serve_images, serve_metrics
from federation.listener import FAST_LANE, SETTINGS, RunningServer, parse_bind, start
from federation.rehash import CacheGuard, FileIdentity, NotServable, open_regular
from federation.serve_state import (
    LOCKED_DOWN,
    STATE,
    Counters,
    Document,
    Head,
    Redirect,
    Refresh,
    ServeState,
    StoreMemo,
    StoreReader,
    StoreWatch,
    log,
    quarantine_and_reset,
    state_of,
    utcnow,
)
from feeds.model import ListId, Sha512Hex, list_id
from feeds.verify import ListFormat
from keys.errors import ConfigError, ListFormatError, StoreError
from site_agent import config as site_config
from site_agent.cache import Cache
from site_agent.config import SiteConfig
from site_agent.home import SiteHome
from site_agent.records import AVAILABLE, ListVersion
from site_agent.serve_settings import Access, ServeSettings
from site_agent.store import Store

ATOM = "application/atom+xml"
CLIENT_MAX_SIZE = 1024
EXPORT = "export.atom"
API_IMAGES = api.IMAGES_PATH.encode()

__all__ = ["RunningServer", "create_app", "parse_bind", "serve_until_signalled", "start"]


# -- conditional GET of signed documents ---------------------------------------------------
def _not_modified(request: web.Request, sha256: str, modified: datetime) -> bool:
    tags = request.if_none_match
    if tags is not None:  # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)
        return any(tag.value in ("*", sha256) for tag in tags)
    since = request.if_modified_since
    return since is not None and modified.replace(microsecond=0) <= since


def _document(request: web.Request, doc: Document) -> web.Response:
    headers = doc.validators()
    sha256, modified = doc.sha256, doc.modified
    if sha256 is not None and modified is not None and _not_modified(request, sha256, modified):
        return web.Response(status=304, headers=headers)
    if request.method == hdrs.METH_GET:
        state_of(request).counters.bytes_served += len(doc.body)
    return web.Response(body=doc.body, content_type=doc.content_type, headers=headers)


# -- the lists in force and the export, read once per change ---------------------------------
def _list_wanted(name: str) -> tuple[ListId, ListFormat] | None:
    """The list id and format a ``/lists/`` name asks for; None when it is no such name."""
    stem, dot, suffix = name.rpartition(".")
    kind = {"atom": ListFormat.ATOM, "smime": ListFormat.HEPIX}.get(suffix)
    if not dot or kind is None:
        return None
    try:
        return list_id(stem), kind
    except ListFormatError:
        return None


def _read_document(path: Path, *, what: str) -> tuple[Document, os.stat_result] | None:
    """A small file's bytes as a Document (type and dates filled in by the caller), on a
    worker thread; None when there is no file."""
    try:
        opened = open_regular(path)
    except FileNotFoundError:
        return None
    except (OSError, NotServable) as exc:
        raise StoreError(f"cannot read {what} {path}") from exc
    try:
        body = os.pread(opened.fd, opened.size, 0)
        st = os.fstat(opened.fd)
    finally:
        opened.close()
    return Document(body=body, content_type=ATOM, sha256=hashlib.sha256(body).hexdigest()), st


def _list_key(state: ServeState, current: ListVersion) -> str:
    return f"{state.root}/{current.path}"  # the recorded path is relative to the site home


def _list_fresh(state: ServeState, current: ListVersion) -> Document | None:
    doc = state.files.peek(_list_key(state, current))
    if doc is None or doc.sha256 != current.sha256 or doc.modified != current.accepted_at:
        return None
    return doc


async def _read_list(state: ServeState, current: ListVersion) -> tuple[Document, os.stat_result]:
    """The stored bytes of a list version, checked against its recorded SHA-256."""
    path = Path(_list_key(state, current))

    def read() -> tuple[Document, os.stat_result] | None:
        if not path.resolve().is_relative_to(state.home.lists.resolve()):
            raise StoreError(
                f"list {current.list_id}: stored path {current.path!r} is outside lists/"
            )
        return _read_document(path, what="the stored list")

    found = await asyncio.to_thread(read)
    if found is None:
        raise StoreError(f"cannot read the stored list {path}")
    raw, st = found
    if raw.sha256 != current.sha256:
        raise StoreError(f"the stored list {path} does not match its recorded SHA-256")
    return raw, st


async def _list(state: ServeState, current: ListVersion, kind: ListFormat) -> Document:
    """The stored bytes of the list version in force, checked against its recorded SHA-256."""
    doc = _list_fresh(state, current)
    if doc is not None:
        return doc
    raw, st = await _read_list(state, current)
    doc = Document(
        body=raw.body, content_type=kind.media_type, sha256=raw.sha256, modified=current.accepted_at
    )
    state.files.keep(_list_key(state, current), FileIdentity.of(st), doc)
    return doc


# -- the lists in force through nginx (X-Accel-Redirect) -------------------------------------
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _redirect_target(prefix: str, wanted: ListId, current: ListVersion, kind: ListFormat) -> str:
    """Where nginx finds the list version in force: ``prefix`` + ``<list-id>/<version>-<sha256>``
    + suffix, made only of checked values (a canonical UUID, a whole number, 64 hex digits);
    StoreError unless the store records exactly that file under lists/."""
    version, sha256 = current.version, current.sha256
    if (
        current.list_id != wanted
        or type(version) is not int
        or version < 0
        or not isinstance(sha256, str)
        or not _SHA256.fullmatch(sha256)
        or current.path != f"lists/{wanted}/{version}-{sha256}{kind.suffix}"
    ):
        raise StoreError(
            f"list {wanted}: the stored path {current.path!r} is not lists/<list-id>/"
            "<version>-<sha256>; not handed to nginx"
        )
    return f"{prefix}{wanted}/{version}-{sha256}{kind.suffix}"


def _redirect_fresh(state: ServeState, target: str, current: ListVersion) -> Redirect | None:
    """The redirect to ``target`` kept for the record ``current``, while its file is unchanged."""
    redirect = state.redirects.peek(_list_key(state, current))
    if redirect is None or redirect.target != target or redirect.sha256 != current.sha256:
        return None
    return redirect


async def _redirect(
    state: ServeState, prefix: str, wanted: ListId, current: ListVersion, kind: ListFormat
) -> Redirect:
    """The list version in force as nginx's internal redirect, once its file was checked."""
    target = _redirect_target(prefix, wanted, current, kind)
    redirect = _redirect_fresh(state, target, current)
    if redirect is not None:
        return redirect
    _raw, st = await _read_list(state, current)
    redirect = Redirect(target=target, content_type=kind.media_type, sha256=current.sha256)
    state.redirects.keep(_list_key(state, current), FileIdentity.of(st), redirect)
    return redirect


async def _list_document(
    state: ServeState, wanted: ListId, kind: ListFormat
) -> Document | Redirect | None:
    """The list in force with id ``wanted`` in format ``kind`` (as a redirect for nginx with
    ``[serve] accel_redirect``); None when there is none."""
    current = await state.lists.get(wanted)
    if current is None or not current.path.endswith(kind.suffix):
        return None
    prefix = state.config.serve.accel_redirect
    if prefix is not None:
        return await _redirect(state, prefix, wanted, current, kind)
    return await _list(state, current, kind)


async def list_document(request: web.Request) -> web.Response:
    state = state_of(request)
    wanted = _list_wanted(request.match_info["name"])
    doc = await _list_document(state, *wanted) if wanted is not None else None
    if doc is None:
        raise web.HTTPNotFound
    if isinstance(doc, Redirect):  # nginx sends the file and answers conditional requests
        return web.Response(content_type=doc.content_type, headers=doc.headers())
    return _document(request, doc)


async def _export(state: ServeState) -> Document | None:
    doc = state.files.peek(state.export)
    if doc is not None:
        return doc
    found = await asyncio.to_thread(_read_document, Path(state.export), what="the export")
    if found is None:
        return None
    raw, st = found
    modified = datetime.fromtimestamp(st.st_mtime_ns // 10**9, UTC)
    doc = Document(body=raw.body, content_type=ATOM, sha256=raw.sha256, modified=modified)
    state.files.keep(state.export, FileIdentity.of(st), doc)
    return doc


async def export_document(request: web.Request) -> web.Response:
    doc = await _export(state_of(request))
    if doc is None:
        raise web.HTTPNotFound
    return _document(request, doc)


# -- the fast lane -------------------------------------------------------------------------
class Lane:
    """What the listener answers without aiohttp: ``/export.atom``, ``/lists/...``,
    ``/healthz`` and the catalogue API's pages answered before (by their query string,
    :func:`federation.api.fast_answer`), while what they need is in memory and still
    current.

    With ``[serve] access = "peers"`` it answers ``/healthz`` only: everything else goes to
    aiohttp, whose first middleware checks the client's certificate (:mod:`federation.peer_tls`).
    """

    def __init__(self, state: ServeState) -> None:
        self._state = state
        self._second = -1
        self._date = b""
        self._health_only = state.config.serve.access != Access.ANYONE
        self.api: api.ApiState | None = None
        """The catalogue API's state: pages it answered before are answered here again."""

    def _now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second, self._date = second, formatdate(second, usegmt=True).encode()
        return self._date

    def answer(self, head: Head) -> bytes | Refresh | None:
        state = self._state
        if self._health_only and head.path != b"/healthz":
            return None  # for peers only: aiohttp, behind the certificate check
        if head.query is not None and head.path != API_IMAGES:
            return None  # only the API's pages are kept by their query
        try:
            doc, refresh = self._find(head)
        except StoreError:
            return None  # aiohttp answers (503), and says why
        if doc is None:
            return refresh
        wire, body = doc.wire(head, self._now())
        if doc.sha256 is not None:
            state.counters.bytes_served += body
        return wire

    def _find(self, head: Head) -> tuple[Document | Redirect | None, Refresh | None]:
        state, path = self._state, head.path
        if path == API_IMAGES:
            return api.fast_answer(self.api, head.query or b"") if self.api else (None, None)
        if path == b"/export.atom":
            doc = state.files.peek(state.export)
            return doc, lambda: _quietly(_export(state))
        if path == b"/healthz":
            known = state.health.peek(None)
            return (known.value if known else None), lambda: _quietly(state.health.get(None))
        if not path.startswith(b"/lists/"):
            return None, None
        wanted = _list_wanted(path[7:].decode("ascii"))
        if wanted is None:
            return None, None
        found = state.lists.peek(wanted[0])
        current = found.value if found is not None else None
        if found is not None and (current is None or not current.path.endswith(wanted[1].suffix)):
            return None, None
        refresh = lambda: _quietly(_list_document(state, *wanted))  # noqa: E731
        if current is None:
            return None, refresh
        prefix = state.config.serve.accel_redirect
        if prefix is not None:  # the slow path's checks; StoreError: aiohttp answers 503
            target = _redirect_target(prefix, wanted[0], current, wanted[1])
            return _redirect_fresh(state, target, current), refresh
        return _list_fresh(state, current), refresh


def _quietly(work: Awaitable[object]) -> asyncio.Future[None]:
    """Refresh for the lane; a failure is left for aiohttp's handler to report."""

    async def run() -> None:
        try:
            await work
        except StoreError:
            return

    return asyncio.ensure_future(run())


# -- every response ----------------------------------------------------------------------
async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", LOCKED_DOWN)
    headers["X-Content-Type-Options"] = "nosniff"
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers[hdrs.SERVER] = "vmic"


@web.middleware
async def _store_errors(
    request: web.Request,
    handler: Handler,
) -> web.StreamResponse:
    try:
        return await handler(request)
    except StoreError as exc:
        log.error("%s %s: %s", request.method, request.path, exc.message)
        return web.Response(status=503, text="503: the site's state cannot be read\n")


# -- the application -----------------------------------------------------------------------
async def _warm_up(state: ServeState) -> None:
    """Read the export and the health answer, then re-hash the available images one by one,
    so first requests need not wait."""
    await _quietly(_export(state))
    await _quietly(state.health.get(None))
    shas = await state.reader.run(
        lambda store: sorted({i.sha512 for i in store.images(state=AVAILABLE)})
    )
    for sha512 in shas:
        try:
            opened = await state.guard.open(Sha512Hex(sha512))
        except NotServable:
            continue
        opened.close()


def create_app(
    home: SiteHome,
    *,
    config: SiteConfig | None = None,
    clock: Callable[[], datetime] = utcnow,
    warm_up: bool = True,
) -> web.Application:
    """The web application for one site home (read-only; start it with :func:`start`)."""
    home.require_initialised()
    settings = config or site_config.load(home.config)
    Store.open(home.database).close()  # a damaged store stops `vmic serve` at once

    def on_rot(sha512: Sha512Hex) -> None:
        quarantine_and_reset(home, settings, sha512, now=clock())

    reader = StoreReader(home.database)
    watch = StoreWatch(home.database)
    state = ServeState(
        home=home,
        config=settings,
        reader=reader,
        guard=CacheGuard(
            lambda sha512: home.images / sha512,
            interval=settings.serve.rehash_interval,
            on_rot=on_rot,
            vouched=Cache(home).vouched,  # files `vmic sync` hashed as it downloaded them
        ),
        clock=clock,
        counters=Counters(),
        watch=watch,
        lists=StoreMemo(reader, watch, lambda store, key: store.current_list(key)),
        available=StoreMemo(
            reader, watch, lambda store, key: store.sha512_in_use(key, states=(AVAILABLE,))
        ),
        health=StoreMemo(reader, watch, lambda store, _key: serve_metrics.health_document(store)),
    )
    app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[_store_errors])
    app[STATE] = state
    app[SETTINGS] = settings.serve
    lane = app[FAST_LANE] = Lane(state)
    peer_tls.install(app, state)  # [serve] access = "peers": the client-certificate check
    router = app.router
    router.add_get("/", catalogue.catalogue)
    router.add_get("/image/{id}", catalogue_image.image_page)
    router.add_get("/lists/{name}", list_document)
    router.add_get("/export.atom", export_document)
    router.add_get("/images/sha512/{hex:[0-9a-f]{128}}.blocks", serve_images.block_index)
    router.add_get("/images/sha512/{hex}", serve_images.image_bytes)
    router.add_get("/healthz", serve_metrics.healthz)
    router.add_get("/metrics", serve_metrics.metrics)
    lane.api = api.add_routes(app, state)  # /api/v1/... (federation.api)
    app.on_response_prepare.append(_security_headers)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_warm_up(state)) if warm_up else None
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await state.guard.close()
        await asyncio.to_thread(state.reader.close)
        watch.close()

    app.cleanup_ctx.append(lifetime)
    return app


def tls_context(settings: ServeSettings) -> ssl.SSLContext | None:
    """The server's TLS: Python's defaults for a server (no client certificate is asked
    for, and none of the system's CAs is loaded: with ``access = "peers"`` only the trust
    directory's CAs are, :meth:`federation.peer_tls.PeerGate.prepare_tls`)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {settings.tls_cert} and key {settings.tls_key}: "
            f"{exc}",
            hint="check [serve] tls_cert and tls_key in config.toml",
        ) from exc
    return context


async def serve_until_signalled(
    home: SiteHome,
    *,
    bind: str | None,
    access_log: bool,
    ready: Callable[[RunningServer], None],
) -> None:
    """Serve a site home until SIGINT or SIGTERM, then stop cleanly (the CLI's `vmic serve`)."""
    app = create_app(home)
    settings = app[STATE].config.serve
    await run_until_signalled(
        app,
        bind=bind or settings.bind,
        ssl_context=tls_context(settings),
        max_connections=settings.max_connections,
        access_log=access_log,
        ready=ready,
    )


async def run_until_signalled(
    app: web.Application,
    *,
    bind: str,
    ssl_context: ssl.SSLContext | None,
    max_connections: int,
    access_log: bool,
    ready: Callable[[RunningServer], None],
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then stop cleanly."""
    host, port = parse_bind(bind)
    running = await start(
        app,
        host=host,
        port=port,
        ssl_context=ssl_context,
        max_connections=max_connections,
        access_log=logging.getLogger("vmic.access") if access_log else None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:
        loop.add_signal_handler(number, stop.set)
    try:
        ready(running)
        await stop.wait()
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
        await running.close()
