"""The catalogue page of `vmic serve`: a table of the site's images, and what the image
pages share (rows, columns, the page frame).

``GET /`` shows the images a VO user can run here (state ``available``);
``?state=all`` (or one state by name: the form's Show menu) shows the
others too. Each row has the endorser's name (the CN of its DN, the whole
DN on hover), list, VO, image version, OS, architecture, hypervisor,
format, size, state, whether it is approved to run locally and may be
shared, its dates (the image's own expiry, else its list's, marked "list")
and a link to its page (HEPiX ``ad:mpuri``, by its host name); an image an
endorser published despite a policy-check error is marked "policy
override". ``?q=`` filters (every word must appear in the row),
``?sort=COLUMN&order=asc|desc`` sorts, so the page works without its
script. Above the table, each subscribed list's version in force, expiry
and last successful sync, flagged when it expired or expires within
:data:`LIST_EXPIRY_WARNING`.

``GET /image/<uuid>``, the page of one image, is in
:mod:`federation.catalogue_image`. The table shows where vmic registered each
image (a Clouds column, once any image is registered in a cloud).

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
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from aiohttp import web

from federation.catalogue_assets import SCRIPT, STYLE
from federation.markup import Markup, escape, join, link, query, render, trusted
from federation.serve_state import state_of
from keys.dn import display_name
from site_agent.cloud.registry import ACTIVE, Registration, Registry
from site_agent.records import (
    AVAILABLE,
    RUNNABLE_STATES,
    STATES,
    ImageRecord,
    ListVersion,
    Subscription,
    iso,
    parse_iso,
)
from site_agent.status import LIST_EXPIRY_WARNING
from site_agent.store import Store

MAX_QUERY = 200
ALL_STATES = "all"
"""``?state=all``: images in every state; by default only ``available`` ones."""
OVERRIDE_MARK = "policy override"


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

    @property
    def endorser_name(self) -> str:
        return display_name(self.endorser) if self.endorser else ""

    @property
    def expires(self) -> datetime | None:
        """The image's own expiry, else that of the list version in force, if it lists it."""
        own, listed = self.image.expires, self.listed
        if own is None and listed is not None and listed.version == self.image.list_version:
            return listed.expires
        return own

    @property
    def expiry_from_list(self) -> bool:
        return self.image.expires is None and self.expires is not None

    @property
    def policy_override(self) -> str:
        """Why the endorser published the image despite a policy-check error, if it did."""
        return self.field("policy_override")

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


def show_time(value: datetime | str | None) -> str:
    moment = parse_iso(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _text(fn: Callable[[Row], str]) -> Callable[[Row], str | int]:
    return lambda row: fn(row).lower()


def _list_name(row: Row) -> str:
    version = f" v{row.listed.version}" if row.listed else ""
    return f"{row.image.subscription}{version}"


def _expires(row: Row) -> str:
    return _date(row.expires) + (" (list)" if row.expiry_from_list else "")


COLUMNS: tuple[Column, ...] = (
    Column("title", "Title", lambda r: r.image.title, _text(lambda r: r.image.title)),
    Column(
        "endorser", "Endorser", lambda r: r.endorser_name, _text(lambda r: r.endorser_name), "dn"
    ),
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
        lambda r: yes_no(r.approved_locally),
        lambda r: yes_no(r.approved_locally),
    ),
    Column(
        "shareable",
        "Shareable",
        lambda r: yes_no(r.image.shareable),
        lambda r: yes_no(r.image.shareable),
    ),
    Column(
        "endorsed",
        "Endorsed",
        lambda r: _date(r.field("endorsed")),
        lambda r: r.field("endorsed"),
        "date",
    ),
    Column("expires", "Expires", _expires, lambda r: iso(r.expires) or "", "date"),
    Column("page", "Image page", lambda r: r.page_host, _text(lambda r: r.page_host)),
    Column("clouds", "Clouds", lambda r: r.cloud_names, _text(lambda r: r.cloud_names)),
)
_BY_KEY = {c.key: c for c in COLUMNS}


def _columns(rows: list[Row]) -> tuple[Column, ...]:
    """The table's columns: Clouds only once vmic registered an image in a cloud."""
    if any(r.clouds for r in rows):
        return COLUMNS
    return tuple(c for c in COLUMNS if c.key != "clouds")


@dataclass(frozen=True, slots=True, kw_only=True)
class ListHealth:
    """A subscribed list: the version in force, if any, and its last successful sync."""

    subscription: Subscription
    current: ListVersion | None

    def flag(self, now: datetime) -> tuple[str, str]:
        """``ok``, ``soon``, ``expired`` or ``none`` (no version yet), and what that means."""
        current = self.current
        if current is None:
            return "none", "no version accepted yet"
        left = current.expires - now
        if left <= timedelta(0):
            return "expired", "expired: sync withdraws its images until a new version comes"
        if left < LIST_EXPIRY_WARNING:
            hours = left // timedelta(hours=1)
            span = f"{left.days} days" if left.days >= 2 else f"{hours} hours"
            return "soon", f"expires in {span if hours else 'less than an hour'}"
        return "ok", "ok"


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogueData:
    rows: list[Row]
    lists: list[ListHealth]


def load_catalogue(store: Store) -> CatalogueData:
    """Every image, with the list version in force for its list and where it is
    registered, and each subscribed list's health (on the reader thread)."""
    subscriptions = store.subscriptions()
    listed = {sub.list_id: store.current_list(sub.list_id) for sub in subscriptions}
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
    lists = [ListHealth(subscription=s, current=listed[s.list_id]) for s in subscriptions]
    return CatalogueData(rows=rows, lists=lists)


def matches(row: Row, words: list[str], state: str = ALL_STATES) -> bool:
    """Whether the row is in ``state`` and has every word (the script matches what it shows)."""
    if state not in (ALL_STATES, row.image.state):
        return False
    shown = [column.text(row) for column in COLUMNS]
    text = " ".join([*shown, OVERRIDE_MARK if row.policy_override else ""]).lower()
    return all(word in text for word in words)


def page_frame(title: str, body: Markup, nonce: str, *, script: bool) -> Markup:
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


def respond(page: Markup, nonce: str) -> web.Response:
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


def _header_cell(column: Column, *, q: str, state: str, sort: str, order: str) -> Markup:
    current = column.key == sort
    next_order = "desc" if current and order == "asc" else "asc"
    aria = ""
    if current:
        aria = "ascending" if order == "asc" else "descending"
    return render(
        '<th scope="col" data-type="{kind}"{aria}><a href="/{href}">{label}</a></th>',
        kind="number" if column.numeric else "text",
        aria=render(' aria-sort="{a}"', a=aria) if aria else trusted(""),
        href=query(q=q, state=state, sort=column.key, order=next_order),
        label=column.label,
    )


def _cell(column: Column, row: Row) -> Markup:
    text = column.text(row)
    content: Markup = escape(text)
    if column.key == "title":
        content = render(
            '<a href="/image/{id}">{title}</a>{mark}',
            id=row.image.image_id,
            title=text,
            mark=render(
                ' <span class="override" title="{why}">{mark}</span>',
                why=f"{OVERRIDE_MARK}: {row.policy_override}",
                mark=OVERRIDE_MARK,
            )
            if row.policy_override
            else "",
        )
    elif column.key == "endorser" and text:
        content = render('<span title="{dn}">{name}</span>', dn=row.endorser, name=text)
    elif column.key == "expires" and row.expiry_from_list:
        content = render(
            '{date} <span class="muted" title="{why}">(list)</span>',
            date=_date(row.expires),
            why=f"the expiry of the list {_list_name(row)}: the image has none of its own",
        )
    elif column.key == "state":
        content = render('<span class="state state-{s}">{s}</span>', s=text)
    elif column.key == "page" and text:
        content = link(row.field("info_url"), text)
    attributes = render(' class="{css}"', css=column.css) if column.css else trusted("")
    if column.css in ("num", "date"):  # these sort by a key of their own, text by what it shows
        attributes = render('{a} data-key="{key}"', a=attributes, key=column.sort_key(row))
    return render("<td{attributes}>{content}</td>", attributes=attributes, content=content)


def _list_health(lists: list[ListHealth], now: datetime) -> Markup | str:
    """Each subscribed list: its version in force, expiry, last successful sync, a flag."""
    rows = []
    for health in lists:
        sub, current = health.subscription, health.current
        level, note = health.flag(now)
        name = render('<a href="/lists/{id}.atom">{name}</a>', id=sub.list_id, name=sub.name)
        rows.append(
            render(
                '<tr data-list="{name}"><td>{link}</td><td class="num">{version}</td>'
                '<td class="date">{expires}</td><td class="date">{success}</td>'
                '<td><span class="health health-{level}">{note}</span></td></tr>',
                name=sub.name,
                link=name if current else sub.name,
                version=current.version if current else "—",
                expires=show_time(current.expires if current else None),
                success=show_time(sub.last_success) if sub.last_success else "never",
                level=level,
                note=note,
            )
        )
    if not rows:
        return ""
    return render(
        '<section aria-labelledby="lists-title"><h2 id="lists-title">Lists</h2>'
        '<table id="lists"><thead><tr><th scope="col">List</th><th scope="col">Version</th>'
        '<th scope="col">Expires</th><th scope="col">Last successful sync</th>'
        '<th scope="col">Health</th></tr></thead>\n<tbody>\n{rows}\n</tbody></table></section>\n',
        rows=join(rows, "\n"),
    )


def _state_options(wanted: str) -> Markup:
    choices = [(AVAILABLE, "available here"), (ALL_STATES, "every state")]
    choices += [(s, s) for s in STATES if s != AVAILABLE]
    return join(
        render(
            '<option value="{value}"{selected}>{label}</option>',
            value=value,
            selected=trusted(" selected") if value == wanted else "",
            label=label,
        )
        for value, label in choices
    )


async def catalogue(request: web.Request) -> web.Response:
    state = state_of(request)
    loaded = await state.reader.run(load_catalogue)
    rows = loaded.rows
    q = request.query.get("q", "")[:MAX_QUERY]
    wanted = request.query.get("state", AVAILABLE)
    wanted = wanted if wanted == ALL_STATES or wanted in STATES else AVAILABLE
    state_param = "" if wanted == AVAILABLE else wanted  # the default stays out of links
    sort = request.query.get("sort", "title")
    sort = sort if sort in _BY_KEY else "title"
    order = "desc" if request.query.get("order") == "desc" else "asc"
    lists = len({r.image.list_id for r in rows})
    available = sum(1 for r in rows if r.image.state == AVAILABLE)
    others = sum(1 for r in rows if not matches(r, [], wanted))
    words = q.lower().split()
    columns = _columns(rows)
    shown = sorted(
        (r for r in rows if matches(r, words, wanted)),
        key=lambda r: (_BY_KEY[sort].sort_key(r), r.image.title.lower(), r.image.image_id),
        reverse=order == "desc",
    )
    base = state.config.identity.base_url if state.config.identity else ""
    body = render(
        "<header><h1>Image catalogue</h1>"
        "<p>{total} {images} from {lists} {lists_word} at this site{base};"
        " {available} available here."
        ' Signed lists: <a href="/export.atom">this site\'s export</a>;'
        ' <a href="/metrics">metrics</a>.</p></header>\n{health}'
        '<form class="filter" method="get" action="/" role="search">'
        '<label for="filter">Filter</label>'
        '<input id="filter" name="q" type="search" value="{q}" autocomplete="off"'
        ' placeholder="title, OS, endorser, state…">'
        '<label for="state">Show</label><select id="state" name="state">{options}</select>'
        '<input type="hidden" name="sort" value="{sort}">'
        '<input type="hidden" name="order" value="{order}">'
        '<button type="submit">Apply</button>'
        '<span class="muted"><span id="shown">{count}</span> of {total} shown</span></form>\n'
        "{others}"
        '<table id="images"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>\n'
        '<p id="empty" class="muted"{hidden}>No image matches the filter.</p>\n',
        total=len(rows),
        images="image" if len(rows) == 1 else "images",
        lists=lists,
        lists_word="list" if lists == 1 else "lists",
        base=render(" ({b})", b=base) if base else trusted(""),
        available=available,
        health=_list_health(loaded.lists, state.clock()),
        q=q,
        options=_state_options(wanted),
        sort=sort,
        order=order,
        count=len(shown),
        others=render(
            '<p id="other-states" class="muted">Only {what} are shown; {hidden}:'
            ' <a href="/{href}">show every state</a>.</p>\n',
            what="images available here" if wanted == AVAILABLE else f"{wanted} images",
            hidden=f"{others} image in another state is hidden"
            if others == 1
            else f"{others} images in other states are hidden",
            href=query(q=q, state=ALL_STATES, sort=sort, order=order),
        )
        if others
        else "",
        head=join(_header_cell(c, q=q, state=state_param, sort=sort, order=order) for c in columns),
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
    return respond(page_frame("vmic image catalogue", body, nonce, script=True), nonce)
