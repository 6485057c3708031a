"""`vmic serve`: a read-only web server for a site home (DESIGN §6).

Routes, all GET (and HEAD), nothing else:

    /                         the catalogue page          (federation.catalogue)
    /image/<uuid>             one image's page            (federation.catalogue)
    /lists/<list-id>.atom     the original bytes of the list version in force
                              (``.smime`` for a HEPiX list)
    /export.atom              the site's signed export (exports/export.atom)
    /images/sha512/<hex>      image bytes, with ranges    (federation.serve_images)
    /healthz, /metrics        health and Prometheus text  (federation.serve_metrics)

Lists and the export carry a strong ETag (the SHA-256 of the bytes) and
Last-Modified, and answer If-None-Match / If-Modified-Since with 304. Every
identifier from a URL is checked (canonical UUID, 128 hex digits) before
anything touches the filesystem; there is no directory listing and no
static-file route. Every response carries ``X-Content-Type-Options:
nosniff`` and a Content-Security-Policy that forbids everything (the pages
allow their own nonce-tagged style and script).

The listener (:func:`start`) bounds concurrent connections: above
``max_connections`` a new connection gets ``503`` and is closed. Requests
have no bodies (``client_max_size`` is 1 KiB); aiohttp's limits on the
request line and headers apply. The access log is off unless asked for.
TLS is used when ``[serve] tls_cert`` and ``tls_key`` are set. The server
reads the store on its own thread and never takes the site lock, so `vmic
sync` runs while it serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from federation import catalogue, catalogue_image, serve_images, serve_metrics
from federation.listener import RunningServer, parse_bind, start
from federation.rehash import CacheGuard, NotServable, open_regular
from federation.serve_state import (
    STATE,
    Counters,
    ServeState,
    StoreReader,
    log,
    quarantine_and_reset,
    state_of,
    utcnow,
)
from feeds.model import Sha512Hex, list_id
from feeds.verify import ListFormat
from keys.errors import ConfigError, ListFormatError, StoreError
from site_agent import config as site_config
from site_agent.config import ServeSettings, SiteConfig
from site_agent.home import SiteHome
from site_agent.records import AVAILABLE, ListVersion
from site_agent.store import Store

ATOM = "application/atom+xml"
CLIENT_MAX_SIZE = 1024
LOCKED_DOWN = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

__all__ = ["RunningServer", "create_app", "parse_bind", "serve_until_signalled", "start"]


# -- conditional GET of signed documents ---------------------------------------------------
def _http_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _not_modified(request: web.Request, sha256: str, modified: datetime) -> bool:
    tags = request.if_none_match
    if tags is not None:  # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)
        return any(tag.value in ("*", sha256) for tag in tags)
    since = request.if_modified_since
    return since is not None and modified.replace(microsecond=0) <= since


def _document(
    request: web.Request,
    body: bytes | None,
    *,
    sha256: str,
    modified: datetime,
    content_type: str = ATOM,
) -> web.Response:
    headers = {
        hdrs.ETAG: f'"{sha256}"',
        hdrs.LAST_MODIFIED: _http_date(modified),
        hdrs.CACHE_CONTROL: "no-cache",
    }
    if body is None or _not_modified(request, sha256, modified):
        return web.Response(status=304, headers=headers)
    if request.method == hdrs.METH_GET:
        state_of(request).counters.bytes_served += len(body)
    return web.Response(body=body, content_type=content_type, headers=headers)


def _read_list(home: SiteHome, current: ListVersion) -> bytes:
    """The stored bytes of an accepted list version (on a worker thread)."""
    root = home.lists.resolve()
    path = (home.root / current.path).resolve()
    if not path.is_relative_to(root):
        raise StoreError(f"list {current.list_id}: stored path {current.path!r} is outside lists/")
    try:
        opened = open_regular(path)
    except (OSError, NotServable) as exc:
        raise StoreError(f"cannot read the stored list {path}") from exc
    try:
        body = os.pread(opened.fd, opened.size, 0)
    finally:
        opened.close()
    if hashlib.sha256(body).hexdigest() != current.sha256:
        raise StoreError(f"the stored list {path} does not match its recorded SHA-256")
    return body


async def list_document(request: web.Request) -> web.Response:
    state = state_of(request)
    name = request.match_info["name"]
    stem, dot, suffix = name.rpartition(".")
    kind = {"atom": ListFormat.ATOM, "smime": ListFormat.HEPIX}.get(suffix)
    if not dot or kind is None:
        raise web.HTTPNotFound
    try:
        wanted = list_id(stem)
    except ListFormatError:
        raise web.HTTPNotFound from None
    current = await state.reader.run(lambda store: store.current_list(wanted))
    if current is None or not current.path.endswith(kind.suffix):
        raise web.HTTPNotFound
    body = None
    if not _not_modified(request, current.sha256, current.accepted_at):
        body = await asyncio.to_thread(_read_list, state.home, current)
    return _document(
        request,
        body,
        sha256=current.sha256,
        modified=current.accepted_at,
        content_type=kind.media_type,
    )


def _read_export(home: SiteHome) -> tuple[bytes, datetime] | None:
    try:
        opened = open_regular(home.exports / "export.atom")
    except FileNotFoundError:
        return None
    except (OSError, NotServable) as exc:
        raise StoreError(f"cannot read {home.exports / 'export.atom'}") from exc
    try:
        body = os.pread(opened.fd, opened.size, 0)
    finally:
        opened.close()
    return body, datetime.fromtimestamp(opened.identity.mtime_ns // 10**9, UTC)


async def export_document(request: web.Request) -> web.Response:
    found = await asyncio.to_thread(_read_export, state_of(request).home)
    if found is None:
        raise web.HTTPNotFound
    body, modified = found
    return _document(request, body, sha256=hashlib.sha256(body).hexdigest(), modified=modified)


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
    """Re-hash the available images one by one, so first requests need not wait."""
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

    state = ServeState(
        home=home,
        config=settings,
        reader=StoreReader(home.database),
        guard=CacheGuard(
            lambda sha512: home.images / sha512,
            interval=settings.serve.rehash_interval,
            on_rot=on_rot,
        ),
        clock=clock,
        counters=Counters(),
    )
    app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[_store_errors])
    app[STATE] = state
    router = app.router
    router.add_get("/", catalogue.catalogue)
    router.add_get("/image/{id}", catalogue_image.image_page)
    router.add_get("/lists/{name}", list_document)
    router.add_get("/export.atom", export_document)
    router.add_get("/images/sha512/{hex}", serve_images.image_bytes)
    router.add_get("/healthz", serve_metrics.healthz)
    router.add_get("/metrics", serve_metrics.metrics)
    app.on_response_prepare.append(_security_headers)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_warm_up(state)) if warm_up else None
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await state.guard.close()
        await asyncio.to_thread(state.reader.close)

    app.cleanup_ctx.append(lifetime)
    return app


def tls_context(settings: ServeSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
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
