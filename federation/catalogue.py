"""The catalogue pages of `vmic serve`: a table of the site's images and a page per image.

``GET /`` shows every image the site knows with its endorser, list, VO, OS,
architecture, hypervisor, format, size, state, whether it is approved to run
locally and may be shared, its dates and a link to its page (HEPiX
``ad:mpuri``, by its host name); ``?q=`` filters (every word must appear in
the row), ``?sort=COLUMN&order=asc|desc`` sorts, so the page works without
its script. ``GET /image/<uuid>`` shows what the HEPiX catalogue showed
(endorser DN, download location, file name, status, UUID, production and
endorsement dates, checksum, hypervisor, OS version, architecture), the
image's VO, page, EGI AppDB appliance id and base image page, and where the
bytes can be had: this site's ``/images/sha512/<hex>`` while the image is
available, the endorser's URL, and peers that offer it; and where vmic
registered it (each cloud, Glance id and state, from the site's registry of
``cloud_images``), which the table shows too, in a Clouds column, once any
image is registered.

Every page names the site's signed export in its head, by the feed
autodiscovery link (``<link rel="alternate" type="application/atom+xml"
href="/export.atom">``), so `vmic peer add` takes the site's address.

Every value from a list goes through :mod:`federation.markup`; only an
http(s) URL becomes a link (:func:`federation.markup.link`). Each
response carries a Content-Security-Policy that allows only the page's own
style and script blocks, by a fresh nonce.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlsplit

from aiohttp import web

from federation.catalogue_assets import SCRIPT, STYLE
from federation.markup import Markup, escape, join, link, query, render, trusted
from federation.serve_state import state_of
from feeds.model import image_id
from keys.errors import ListFormatError
from site_agent.cloud.registry import ACTIVE, DEACTIVATED, Registration, Registry
from site_agent.peerstore import PeerImage, PeerStore
from site_agent.records import AVAILABLE, RUNNABLE_STATES, ImageRecord, ListVersion, parse_iso
from site_agent.store import Store

MAX_QUERY = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """An image and the list version in force that lists it."""

    image: ImageRecord
    listed: ListVersion | None
    clouds: tuple[Registration, ...] = ()
    """Where vmic registered the image (the site's registry)."""

    @property
    def endorser(self) -> str:
        return self.listed.signer if self.listed else ""

    def field(self, name: str) -> str:
        value = self.image.entry.get(name)
        return "" if value is None else str(value)

    @property
    def os(self) -> str:
        name = self.field("osname") or self.field("os")
        return " ".join(p for p in (name, self.field("osversion")) if p)

    @property
    def page_host(self) -> str:
        """The host of the image's page, which the table shows (the URL if it has none)."""
        url = self.field("info_url")
        return (urlsplit(url).hostname or url) if url else ""

    @property
    def approved_locally(self) -> bool:
        return self.image.state in RUNNABLE_STATES

    @property
    def cloud_names(self) -> str:
        """Each cloud the image is registered in, with its state unless active."""
        return ", ".join(
            r.cloud if r.state == ACTIVE else f"{r.cloud} ({r.state})" for r in self.clouds
        )


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    text: Callable[[Row], str]
    sort_key: Callable[[Row], str | int]
    css: str = ""
    numeric: bool = False


def _date(value: datetime | str | None) -> str:
    moment = parse_iso(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d") if moment else ""


def _time(value: datetime | str | None) -> str:
    moment = parse_iso(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _text(fn: Callable[[Row], str]) -> Callable[[Row], str | int]:
    return lambda row: fn(row).lower()


def _list_name(row: Row) -> str:
    version = f" v{row.listed.version}" if row.listed else ""
    return f"{row.image.subscription}{version}"


COLUMNS: tuple[Column, ...] = (
    Column("title", "Title", lambda r: r.image.title, _text(lambda r: r.image.title)),
    Column("endorser", "Endorser", lambda r: r.endorser, _text(lambda r: r.endorser), "dn"),
    Column("list", "List", _list_name, _text(_list_name)),
    Column("vo", "VO", lambda r: r.field("vo"), _text(lambda r: r.field("vo"))),
    Column("version", "Version", lambda r: r.field("version"), _text(lambda r: r.field("version"))),
    Column("os", "OS", lambda r: r.os, _text(lambda r: r.os)),
    Column("arch", "Arch", lambda r: r.field("arch"), _text(lambda r: r.field("arch"))),
    Column(
        "hypervisor",
        "Hypervisor",
        lambda r: r.field("hypervisor"),
        _text(lambda r: r.field("hypervisor")),
    ),
    Column("format", "Format", lambda r: r.field("format"), _text(lambda r: r.field("format"))),
    Column("size", "Size", lambda r: human_size(r.image.size), lambda r: r.image.size, "num", True),
    Column("state", "State", lambda r: r.image.state, _text(lambda r: r.image.state)),
    Column(
        "approved",
        "Approved locally",
        lambda r: _yes(r.approved_locally),
        lambda r: _yes(r.approved_locally),
    ),
    Column(
        "shareable",
        "Shareable",
        lambda r: _yes(r.image.shareable),
        lambda r: _yes(r.image.shareable),
    ),
    Column(
        "endorsed",
        "Endorsed",
        lambda r: _date(r.field("endorsed")),
        lambda r: r.field("endorsed"),
        "date",
    ),
    Column(
        "expires",
        "Expires",
        lambda r: _date(r.field("expires")),
        lambda r: r.field("expires"),
        "date",
    ),
    Column("page", "Image page", lambda r: r.page_host, _text(lambda r: r.page_host)),
    Column("clouds", "Clouds", lambda r: r.cloud_names, _text(lambda r: r.cloud_names)),
)
_BY_KEY = {c.key: c for c in COLUMNS}


def _columns(rows: list[Row]) -> tuple[Column, ...]:
    """The table's columns: Clouds only once vmic registered an image in a cloud."""
    if any(r.clouds for r in rows):
        return COLUMNS
    return tuple(c for c in COLUMNS if c.key != "clouds")


def load_rows(store: Store) -> list[Row]:
    """Every image, with the list version in force for its list and where it is
    registered (on the reader thread)."""
    listed: dict[str, ListVersion | None] = {}
    clouds: dict[str, list[Registration]] = defaultdict(list)
    for reg in Registry(store).all():
        clouds[reg.image_id].append(reg)
    rows = []
    for image in store.images():
        if image.list_id not in listed:
            listed[image.list_id] = store.current_list(image.list_id)
        rows.append(
            Row(
                image=image,
                listed=listed[image.list_id],
                clouds=tuple(clouds.get(image.image_id, ())),
            )
        )
    return rows


def matches(row: Row, words: list[str]) -> bool:
    text = " ".join(column.text(row) for column in COLUMNS).lower()
    return all(word in text for word in words)


def _page(title: str, body: Markup, nonce: str, *, script: bool) -> Markup:
    return render(
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<link rel="alternate" type="application/atom+xml" href="/export.atom"'
        ' title="this site\'s signed export">\n'
        '<title>{title}</title>\n<style nonce="{nonce}">{style}</style>\n</head>\n'
        "<body>\n{body}\n{script}</body>\n</html>\n",
        title=title,
        nonce=nonce,
        style=trusted(STYLE),
        body=body,
        script=render(
            '<script nonce="{nonce}">{code}</script>\n', nonce=nonce, code=trusted(SCRIPT)
        )
        if script
        else trusted(""),
    )


def _respond(page: Markup, nonce: str) -> web.Response:
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return web.Response(
        text=str(page),
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": policy, "Cache-Control": "no-store"},
    )


def _header_cell(column: Column, *, q: str, sort: str, order: str) -> Markup:
    current = column.key == sort
    next_order = "desc" if current and order == "asc" else "asc"
    aria = ""
    if current:
        aria = "ascending" if order == "asc" else "descending"
    return render(
        '<th scope="col" data-type="{kind}"{aria}><a href="/{href}">{label}</a></th>',
        kind="number" if column.numeric else "text",
        aria=render(' aria-sort="{a}"', a=aria) if aria else trusted(""),
        href=query(q=q, sort=column.key, order=next_order),
        label=column.label,
    )


def _cell(column: Column, row: Row) -> Markup:
    text = column.text(row)
    content: Markup = escape(text)
    if column.key == "title":
        content = render('<a href="/image/{id}">{title}</a>', id=row.image.image_id, title=text)
    elif column.key == "state":
        content = render('<span class="state state-{s}">{s}</span>', s=text)
    elif column.key == "page" and text:
        content = link(row.field("info_url"), text)
    attributes = render(' class="{css}"', css=column.css) if column.css else trusted("")
    if column.css in ("num", "date"):  # these sort by a key of their own, text by what it shows
        attributes = render('{a} data-key="{key}"', a=attributes, key=column.sort_key(row))
    return render("<td{attributes}>{content}</td>", attributes=attributes, content=content)


async def catalogue(request: web.Request) -> web.Response:
    state = state_of(request)
    rows = await state.reader.run(load_rows)
    q = request.query.get("q", "")[:MAX_QUERY]
    sort = request.query.get("sort", "title")
    sort = sort if sort in _BY_KEY else "title"
    order = "desc" if request.query.get("order") == "desc" else "asc"
    lists = len({r.image.list_id for r in rows})
    available = sum(1 for r in rows if r.image.state == AVAILABLE)
    words = q.lower().split()
    columns = _columns(rows)
    shown = sorted(
        (r for r in rows if matches(r, words)),
        key=lambda r: (_BY_KEY[sort].sort_key(r), r.image.title.lower(), r.image.image_id),
        reverse=order == "desc",
    )
    base = state.config.identity.base_url if state.config.identity else ""
    body = render(
        "<header><h1>Image catalogue</h1>"
        "<p>{total} {images} from {lists} {lists_word} at this site{base};"
        " {available} available here."
        ' Signed lists: <a href="/export.atom">this site\'s export</a>;'
        ' <a href="/metrics">metrics</a>.</p></header>\n'
        '<form class="filter" method="get" action="/" role="search">'
        '<label for="filter">Filter</label>'
        '<input id="filter" name="q" type="search" value="{q}" autocomplete="off"'
        ' placeholder="title, OS, endorser, state…">'
        '<input type="hidden" name="sort" value="{sort}">'
        '<input type="hidden" name="order" value="{order}">'
        '<button type="submit">Apply</button>'
        '<span class="muted"><span id="shown">{count}</span> of {total} shown</span></form>\n'
        '<table id="images"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>\n'
        '<p id="empty" class="muted"{hidden}>No image matches the filter.</p>\n',
        total=len(rows),
        images="image" if len(rows) == 1 else "images",
        lists=lists,
        lists_word="list" if lists == 1 else "lists",
        base=render(" ({b})", b=base) if base else trusted(""),
        available=available,
        q=q,
        sort=sort,
        order=order,
        count=len(shown),
        head=join(_header_cell(c, q=q, sort=sort, order=order) for c in columns),
        body=join(
            (
                render(
                    '<tr data-image="{id}">{cells}</tr>',
                    id=r.image.image_id,
                    cells=join(_cell(c, r) for c in columns),
                )
                for r in shown
            ),
            "\n",
        ),
        hidden=trusted(" hidden") if shown else trusted(""),
    )
    nonce = secrets.token_urlsafe(18)
    return _respond(_page("vmic image catalogue", body, nonce, script=True), nonce)


@dataclass(frozen=True, slots=True, kw_only=True)
class Detail:
    row: Row
    offers: list[PeerImage]


def _load_detail(store: Store, wanted: str) -> Detail | None:
    image = store.image(wanted)
    if image is None:
        return None
    return Detail(
        row=Row(
            image=image,
            listed=store.current_list(image.list_id),
            clouds=tuple(Registry(store).of_image(image.image_id)),
        ),
        offers=PeerStore(store).offers(sha512=image.sha512),
    )


def file_name(url: str) -> str:
    """The last segment of the URL's path, as the HEPiX catalogue showed it."""
    return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def _sources(detail: Detail, base_url: str) -> Markup:
    image = detail.row.image
    items = []
    path = f"/images/sha512/{image.sha512}"
    if image.state == AVAILABLE:
        items.append(
            render(
                '<li>this site (verified copy): <a href="{path}">{shown}</a></li>',
                path=path,
                shown=base_url + path if base_url else path,
            )
        )
    else:
        items.append(render("<li>not held at this site (state: {s})</li>", s=image.state))
    items.append(render("<li>the endorser: {url}</li>", url=link(image.url)))
    items.extend(
        render("<li>peer {name}: {url}</li>", name=offer.peer, url=link(offer.url))
        for offer in detail.offers
    )
    return render("<ul>{items}</ul>", items=join(items))


def _registrations(clouds: tuple[Registration, ...]) -> Markup | str:
    """Each cloud the image is registered in: its Glance id, state and since when."""
    if not clouds:
        return ""
    items = []
    for reg in clouds:
        since = (reg.withdrawn_at or reg.changed_at) if reg.state == DEACTIVATED else None
        items.append(
            render(
                "<li>{cloud}: <code>{glance_id}</code> {state}{since}, {how} {registered}</li>",
                cloud=reg.cloud,
                glance_id=reg.glance_id,
                state=reg.state,
                since=f" since {_time(since)}" if since else "",
                how="adopted" if reg.adopted else "registered by vmic",
                registered=_time(reg.registered_at),
            )
        )
    return render("<ul>{items}</ul>", items=join(items))


def _maybe_link(url: str) -> Markup | str:
    """A link for an http(s) URL, escaped text for anything else, nothing for no URL."""
    return link(url) if url else ""


def _field(label: str, value: object) -> Markup:
    return render("<dt>{label}</dt><dd>{value}</dd>", label=label, value=value or "—")


async def image_page(request: web.Request) -> web.Response:
    state = state_of(request)
    try:
        wanted = image_id(request.match_info["id"])
    except ListFormatError:
        raise web.HTTPNotFound from None
    detail = await state.reader.run(lambda store: _load_detail(store, wanted))
    if detail is None:
        raise web.HTTPNotFound
    row, image = detail.row, detail.row.image
    base = state.config.identity.base_url if state.config.identity else ""
    listed = row.listed
    fields = [
        _field("Endorser", row.endorser),
        _field("Endorsed on", _time(row.field("endorsed"))),
        _field("Produced on", _time(row.field("produced"))),
        _field("Download location", link(image.url)),
        _field("File name", file_name(image.url)),
        _field("Status", f"{image.state} ({image.reason})" if image.reason else image.state),
        _field("Approved to run locally", _yes(row.approved_locally)),
        _field("Can be shared with other sites", _yes(image.shareable)),
        _field("UUID", render("<code>{id}</code>", id=image.image_id)),
        _field("Checksum (SHA-512)", render("<code>{sha}</code>", sha=image.sha512)),
        _field("Size", f"{human_size(image.size)} ({image.size} bytes)"),
        _field("Format", row.field("format")),
        _field("Hypervisor", row.field("hypervisor")),
        _field("Operating system", row.field("osname") or row.field("os")),
        _field("OS version", row.field("osversion")),
        _field("Architecture", row.field("arch")),
        _field("Image version", row.field("version")),
        _field("VO", row.field("vo")),
        _field("Tags", ", ".join(str(t) for t in image.entry.get("tags") or [])),
        _field("Image page", _maybe_link(row.field("info_url"))),
        _field("AppDB appliance", row.field("appliance_id")),
        _field("Base image page", _maybe_link(row.field("base_marketplace_url"))),
        _field("Expires", _time(row.field("expires"))),
        _field(
            "List",
            render(
                '{sub}: <a href="/lists/{id}.atom">{id}</a>{version}',
                sub=image.subscription,
                id=image.list_id,
                version=f", version {listed.version} in force" if listed else "",
            ),
        ),
        _field("First seen here", _time(image.first_seen)),
        _field("Approved here", _time(image.approved_at)),
        _field("Last change", _time(image.changed_at)),
        _field("Bytes from", _sources(detail, base)),
        _field("Registered in clouds", _registrations(row.clouds)),
    ]
    body = render(
        '<p><a href="/">&larr; all images</a></p>\n<h1>{title}</h1>\n'
        '<p class="muted">{summary}</p>\n<dl>\n{fields}\n</dl>\n',
        title=image.title,
        summary=row.field("summary"),
        fields=join(fields, "\n"),
    )
    nonce = secrets.token_urlsafe(18)
    return _respond(_page(f"{image.title} — vmic", body, nonce, script=False), nonce)
