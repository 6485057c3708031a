"""The catalogue API of `vmic serve` for VO pilot factories: which endorsed images can run
at this site, and where their bytes and signed lists are (DESIGN §10).

Routes, all GET (and HEAD), every answer JSON::

    /api/v1/images          a page of images: filters, sorting, a cursor
    /api/v1/images/<uuid>   one image (any state)
    /api/v1/openapi.json    the OpenAPI 3.1 document of the API

An image is the object of :mod:`federation.api_schema`, the one `vmic images --json`
prints; that module also holds the schemas and the OpenAPI document. ``/api/v1/images``
takes these query parameters, and no others:

- filters ``vo``, ``endorser`` (its DN or common name), ``os``, ``osversion``, ``arch``,
  ``hypervisor``, ``format``: the field equals the value, ignoring case; repeated, any of
  the values. ``state``: one of the image states, repeated for several, or ``all``; by
  default ``available``, the images whose verified bytes this site serves;
- ``sort`` (a field of the image object, default ``title``) and ``order`` (``asc`` or
  ``desc``); images without the field come last in ascending order; ties go by id;
- ``limit`` (1 to 1000, default 100) and ``cursor``.

Pagination is by cursor (keyset), not by offset. A page's ``next`` link (also in a
``Link: <...>; rel="next"`` header) carries an opaque cursor: the sort value and id of
the page's last image; the next page starts after it. A sync may add, withdraw or change
images while a client walks the pages. With an offset, every image that comes or goes
before the cut shifts the rest, so the client sees some twice and misses others; with
the cursor, each image present all along whose sort value does not change is seen
exactly once. A cursor holds for the sort and order it was made for.

Every 200 carries a strong ETag (the SHA-256 of the body) and ``Cache-Control:
no-cache``; ``If-None-Match`` with it gets 304. Parameters come from anyone: a bad one
gets 400, an unknown image or path 404, a store that cannot be read 503, each with a
JSON body ``{"error": ..., "detail": ...}``. The images are read on the server's store
thread once per change of the store (:class:`federation.serve_state.StoreMemo`); a
request filters, sorts and pages them in memory, and the answer to each query string is
kept until the store changes (at most :data:`MAX_PAGES_KEPT`, :data:`MAX_BYTES_KEPT`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import hdrs, web
from multidict import MultiMapping

from federation.api_schema import (
    ALL,
    DEFAULT_LIMIT,
    FILTERS,
    MAX_LIMIT,
    MAX_VALUE,
    PREFIX,
    SORTS,
    image_objects,
    openapi_document,
)
from federation.serve_state import Document, Refresh, ServeState, StoreMemo, log
from feeds.model import image_id, quoted
from keys.errors import ListFormatError, StoreError
from site_agent.records import AVAILABLE, STATES
from site_agent.store import Store

JSON = "application/json"
_SORT_FIELD = {"endorser": "endorser_name"}
_NUMERIC = frozenset(("size",))
_SINGLE = ("sort", "order", "limit", "cursor")
_KNOWN = frozenset((*FILTERS, "state", *_SINGLE))

IMAGES_PATH = f"{PREFIX}/images"
MAX_PAGES_KEPT = 256
MAX_BYTES_KEPT = 16 * 1024 * 1024
"""Answers kept for the catalogue in force (:class:`ApiState`): at most so many, of at
most so many bytes together."""

SortKey = tuple[int, str | int, str]
"""(0 with a value, 1 without), the value (folded text or a number), the image id."""


class _QueryError(Exception):
    """A bad parameter (400); the message says which and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageQuery:
    """What a client asked ``/api/v1/images`` for, checked."""

    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    states: frozenset[str] | None = frozenset((AVAILABLE,))
    """None: every state."""
    sort: str = "title"
    order: str = "asc"
    limit: int = DEFAULT_LIMIT
    after: SortKey | None = None


# -- parameters ----------------------------------------------------------------------------
def parse_query(params: MultiMapping[str]) -> ImageQuery:
    """The query asked by ``params``; _QueryError names the first bad parameter."""
    for name in params:
        if name not in _KNOWN:
            raise _QueryError(f"unknown parameter {quoted(name, limit=40)}")
    values = {name: _values(params, name) for name in _KNOWN if name in params}
    for name in _SINGLE:
        if len(values.get(name, ())) > 1:
            raise _QueryError(f"{name}: give it once")
    sort = _one(values, "sort", "title")
    if sort not in SORTS:
        raise _QueryError(f"sort: {quoted(sort, limit=40)} is not one of {', '.join(SORTS)}")
    order = _one(values, "order", "asc")
    if order not in ("asc", "desc"):
        raise _QueryError(f"order: {quoted(order, limit=40)} is not asc or desc")
    cursor = _one(values, "cursor", "")
    return ImageQuery(
        filters=tuple((name, values[name]) for name in FILTERS if name in values),
        states=_states(values.get("state", (AVAILABLE,))),
        sort=sort,
        order=order,
        limit=_limit(_one(values, "limit", str(DEFAULT_LIMIT))),
        after=decode_cursor(cursor, sort=sort, order=order) if cursor else None,
    )


def _values(params: MultiMapping[str], name: str) -> tuple[str, ...]:
    found = tuple(params.getall(name))
    for value in found:
        if not value:
            raise _QueryError(f"{name}: empty value")
        if len(value) > MAX_VALUE:
            raise _QueryError(f"{name}: longer than {MAX_VALUE} characters")
    return found


def _one(values: Mapping[str, tuple[str, ...]], name: str, default: str) -> str:
    given = values.get(name)
    return given[0] if given else default


def _states(given: tuple[str, ...]) -> frozenset[str] | None:
    if ALL in given:
        if len(given) > 1:
            raise _QueryError("state: 'all' goes alone")
        return None
    for state in given:
        if state not in STATES:
            raise _QueryError(
                f"state: {quoted(state, limit=40)} is not one of {', '.join(STATES)} or all"
            )
    return frozenset(given)


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdecimal() and len(text) <= 6):
        raise _QueryError(f"limit: {quoted(text, limit=40)} is not a whole number")
    limit = int(text)
    if not 1 <= limit <= MAX_LIMIT:
        raise _QueryError(f"limit: {limit} is not between 1 and {MAX_LIMIT}")
    return limit


# -- the cursor ----------------------------------------------------------------------------
def encode_cursor(key: SortKey, *, sort: str, order: str) -> str:
    """An opaque cursor for the page after the image with ``key``."""
    text = json.dumps([sort, order, *key], ensure_ascii=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(text: str, *, sort: str, order: str) -> SortKey:
    """The key a cursor carries; _QueryError unless it is one of ours, for ``sort``/``order``."""
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        data = json.loads(raw.decode("ascii"))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise _QueryError("cursor: not a cursor of this API; take the `next` link") from exc
    if not isinstance(data, list) or len(data) != 5:
        raise _QueryError("cursor: not a cursor of this API; take the `next` link")
    made_for, made_order, rank, value, last = data
    if (made_for, made_order) != (sort, order):
        raise _QueryError("cursor: made for another sort or order; keep those of its page")
    fits = type(value) is int if sort in _NUMERIC else isinstance(value, str)
    if rank not in (0, 1) or type(rank) is not int or not fits or not isinstance(last, str):
        raise _QueryError("cursor: not a cursor of this API; take the `next` link")
    return rank, value, last


# -- choosing a page -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    images: list[Mapping[str, Any]]
    total: int
    last: SortKey | None
    """The key of the page's last image when more follow, else None."""


def sort_key(image: Mapping[str, Any], sort: str) -> SortKey:
    """Where ``image`` goes when sorting by ``sort`` (one of :data:`SORTS`)."""
    value = image[_SORT_FIELD.get(sort, sort)]
    numeric = sort in _NUMERIC
    if value is None:
        return 1, 0 if numeric else "", image["id"]
    return 0, int(value) if numeric else str(value).casefold(), image["id"]


def _matches(
    image: Mapping[str, Any], query: ImageQuery, wanted: Sequence[tuple[str, set[str]]]
) -> bool:
    if query.states is not None and image["state"] not in query.states:
        return False
    for name, values in wanted:
        fields = ("endorser", "endorser_name") if name == "endorser" else (name,)
        if not any(image[f] is not None and image[f].casefold() in values for f in fields):
            return False
    return True


def select(images: Sequence[Mapping[str, Any]], query: ImageQuery) -> Page:
    """The page of ``images`` that ``query`` asks for."""
    wanted = [(name, {v.casefold() for v in values}) for name, values in query.filters]
    descending = query.order == "desc"
    keyed = sorted(
        ((sort_key(i, query.sort), i) for i in images if _matches(i, query, wanted)),
        key=lambda pair: pair[0],
        reverse=descending,
    )
    start = 0
    if query.after is not None:
        after = query.after
        start = next(
            (n for n, (k, _i) in enumerate(keyed) if (k < after if descending else k > after)),
            len(keyed),
        )
    chosen = keyed[start : start + query.limit]
    more = start + query.limit < len(keyed)
    return Page(
        images=[i for _k, i in chosen],
        total=len(keyed),
        last=chosen[-1][0] if more and chosen else None,
    )


def next_link(base_url: str, query: ImageQuery, last: SortKey) -> str:
    """The URL of the page after ``last``, with the same filters, sort and limit."""
    pairs = [(name, value) for name, values in query.filters for value in values]
    if query.states is None:
        pairs.append(("state", ALL))
    elif query.states != {AVAILABLE}:
        pairs.extend(("state", s) for s in STATES if s in query.states)
    pairs += [("sort", query.sort), ("order", query.order), ("limit", str(query.limit))]
    pairs.append(("cursor", encode_cursor(last, sort=query.sort, order=query.order)))
    return f"{base_url}{PREFIX}/images?{urlencode(pairs)}"


# -- answers -------------------------------------------------------------------------------
def _error(status: int, error: str, detail: str) -> web.Response:
    body = _encode({"error": error, "detail": detail})
    headers = {hdrs.CACHE_CONTROL: "no-store"}
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


def _made(body: bytes, link: str | None = None) -> Document:
    """An answer with a strong ETag (the SHA-256 of ``body``) and a Link to ``link``, the
    next page; the fast lane writes it as aiohttp would (:class:`federation.server.Lane`)."""
    return Document(
        body=body,
        content_type=JSON,
        sha256=hashlib.sha256(body).hexdigest(),
        link=None if link is None else f'<{link}>; rel="next"',
    )


def _answer(request: web.Request, body: bytes, link: str | None = None) -> web.Response:
    return _send(request, _made(body, link))


def _send(request: web.Request, answer: Document) -> web.Response:
    """A 200 with the answer's validators, or 304 when If-None-Match names its ETag."""
    validators = answer.validators()
    tags = request.if_none_match
    if tags is not None and any(tag.value in ("*", answer.sha256) for tag in tags):
        return web.Response(status=304, headers=validators)
    return web.Response(body=answer.body, content_type=JSON, headers=validators)


def fast_answer(api: ApiState, query: bytes) -> tuple[Document | None, Refresh | None]:
    """For the fast lane: the page kept for ``query`` (None when none is kept: aiohttp makes
    it), or how to refresh the catalogue when the store changed. Raises StoreError."""
    known = api.catalogue.peek(None)
    if known is None:
        return None, api.refresh
    return api.page(known.value, query.decode("ascii")), None


def _encode(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _unavailable(request: web.Request, exc: StoreError) -> web.Response:
    log.error("%s %s: %s", request.method, request.path, exc.message)
    return _error(503, "unavailable", "the site's state cannot be read now; try again later")


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalogue:
    """Every image of the site as image objects, in order and by id (never changed)."""

    images: tuple[Mapping[str, Any], ...]
    by_id: Mapping[str, Mapping[str, Any]]


def load_catalogue(store: Store, base_url: str) -> Catalogue:
    found = image_objects(store, base_url=base_url)
    return Catalogue(images=tuple(found), by_id={i["id"]: i for i in found})


@dataclass(slots=True, kw_only=True)
class ApiState:
    catalogue: StoreMemo[None, Catalogue]
    base_url: str
    """The site's base URL (empty when it has no identity): this site's URLs are absolute."""
    openapi: bytes
    pages: dict[str, Document] = field(default_factory=dict)
    """The pages answered from ``pages_of``, by their query string (pilot factories ask the
    same few questions again and again); emptied when the catalogue changes."""
    pages_of: Catalogue | None = None
    kept_bytes: int = 0

    def page(self, catalogue: Catalogue, query_string: str) -> Document | None:
        if catalogue is not self.pages_of:
            self.pages_of = catalogue
            self._forget()
        return self.pages.get(query_string)

    def keep(self, query_string: str, answer: Document) -> None:
        size = len(answer.body) + len(query_string)
        if len(self.pages) >= MAX_PAGES_KEPT or self.kept_bytes + size > MAX_BYTES_KEPT:
            self._forget()  # a client asking ever new questions: start over
        self.pages[query_string] = answer
        self.kept_bytes += size

    def _forget(self) -> None:
        self.pages.clear()
        self.kept_bytes = 0

    async def refresh(self) -> None:
        """Read the catalogue again (for the fast lane: errors are aiohttp's to answer)."""
        with contextlib.suppress(StoreError):
            await self.catalogue.get(None)


API = web.AppKey("vmic_api", ApiState)


async def list_images(request: web.Request) -> web.Response:
    api = request.app[API]
    try:
        catalogue = await api.catalogue.get(None)
    except StoreError as exc:
        return _unavailable(request, exc)
    asked = request.query_string
    answer = api.page(catalogue, asked)
    if answer is None:
        try:
            query = parse_query(request.query)
        except _QueryError as exc:
            return _error(400, "bad-parameter", str(exc))
        page = select(catalogue.images, query)
        link = next_link(api.base_url, query, page.last) if page.last is not None else None
        body = {
            "images": page.images,
            "count": len(page.images),
            "total": page.total,
            "next": link,
        }
        answer = _made(_encode(body), link)
        api.keep(asked, answer)
    return _send(request, answer)


async def one_image(request: web.Request) -> web.Response:
    api = request.app[API]
    try:
        wanted = image_id(request.match_info["id"], any_case=True)
    except ListFormatError as exc:
        return _error(400, "bad-parameter", exc.message)
    try:
        catalogue = await api.catalogue.get(None)
    except StoreError as exc:
        return _unavailable(request, exc)
    found = catalogue.by_id.get(wanted)
    if found is None:
        return _error(404, "not-found", f"no image {wanted} at this site")
    return _answer(request, _encode(found))


async def openapi(request: web.Request) -> web.Response:
    return _answer(request, request.app[API].openapi)


async def no_such_path(request: web.Request) -> web.Response:
    return _error(404, "not-found", f"no such path; see {PREFIX}/openapi.json")


def add_routes(app: web.Application, state: ServeState) -> ApiState:
    """Serve the API from ``app`` (the application of :func:`federation.server.create_app`);
    its state, for the fast lane."""
    identity = state.config.identity
    base_url = identity.base_url if identity is not None else ""
    app[API] = ApiState(
        catalogue=StoreMemo(
            state.reader, state.watch, lambda store, _key: load_catalogue(store, base_url)
        ),
        base_url=base_url,
        openapi=_encode(openapi_document(base_url)),
    )
    router = app.router
    router.add_get(IMAGES_PATH, list_images)
    router.add_get(f"{PREFIX}/images/{{id:[^/]+}}", one_image)
    router.add_get(f"{PREFIX}/openapi.json", openapi)
    router.add_get(r"/api/{tail:[\s\S]*}", no_such_path)  # any character, newlines too
    return app[API]
