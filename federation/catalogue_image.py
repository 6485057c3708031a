"""The page of one image in the catalogue of `vmic serve`: ``GET /image/<uuid>``.

It shows what the HEPiX catalogue showed (endorser DN, download location,
file name, status, UUID, production and endorsement dates, checksum,
hypervisor, OS version, architecture), the image's VO, page, EGI AppDB
appliance id and base image page, the endorser's policy override reason,
and where the bytes can be had: this site's ``/images/sha512/<hex>``, the
endorser's URL and peers that offer it, as links only while the image is
available (a revoked, withdrawn, expired, refused, new or not yet
downloaded image links to no download); and where vmic registered it (each
cloud, Glance id and state, from the site's registry of ``cloud_images``).
As on the table, every value from a list goes through
:mod:`federation.markup`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from aiohttp import web

from federation.catalogue import Row, human_size, page_frame, respond, show_time, yes_no
from federation.markup import Markup, escape, join, link, render
from federation.serve_state import state_of
from feeds.model import image_id
from keys.errors import ListFormatError
from site_agent.cloud.registry import DEACTIVATED, Registration, Registry
from site_agent.peerstore import PeerImage, PeerStore
from site_agent.records import AVAILABLE, ImageRecord
from site_agent.store import Store


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
    items.append(render("<li>the endorser: {url}</li>", url=_download(image, image.url)))
    items.extend(
        render("<li>peer {name}: {url}</li>", name=offer.peer, url=_download(image, offer.url))
        for offer in detail.offers
    )
    return render("<ul>{items}</ul>", items=join(items))


def _download(image: ImageRecord, url: str) -> Markup:
    """A link to the image's bytes while it is available here, else the URL as text."""
    return link(url) if image.state == AVAILABLE else escape(url)


def _endorser(row: Row) -> Markup | str:
    """The endorser's name and, unless it is all there is, its DN."""
    if row.endorser_name == row.endorser:
        return row.endorser
    return render('{name} (<span class="dn">{dn}</span>)', name=row.endorser_name, dn=row.endorser)


def _expiry_time(row: Row) -> str:
    if row.expiry_from_list:
        return f"{show_time(row.expires)}, its list's expiry (the image has none of its own)"
    return show_time(row.expires)


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
                since=f" since {show_time(since)}" if since else "",
                how="adopted" if reg.adopted else "registered by vmic",
                registered=show_time(reg.registered_at),
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
        _field("Endorser", _endorser(row)),
        _field("Endorsed on", show_time(row.field("endorsed"))),
        _field("Produced on", show_time(row.field("produced"))),
        _field(
            "Download location",
            render(
                "{url}{why}",
                url=_download(image, image.url),
                why="" if image.state == AVAILABLE else f" (not linked: {image.state} here)",
            ),
        ),
        _field("File name", file_name(image.url)),
        _field("Status", f"{image.state} ({image.reason})" if image.reason else image.state),
        _field("Approved to run locally", yes_no(row.approved_locally)),
        _field("Can be shared with other sites", yes_no(image.shareable)),
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
        _field("Expires", _expiry_time(row)),
        _field("Policy override", row.policy_override or "none"),
        _field(
            "List",
            render(
                '{sub}: <a href="/lists/{id}.atom">{id}</a>{version}',
                sub=image.subscription,
                id=image.list_id,
                version=f", version {listed.version} in force" if listed else "",
            ),
        ),
        _field("First seen here", show_time(image.first_seen)),
        _field("Approved here", show_time(image.approved_at)),
        _field("Last change", show_time(image.changed_at)),
        _field("Bytes from", _sources(detail, base)),
        _field("Registered in clouds", _registrations(row.clouds)),
    ]
    body = render(
        '<p><a href="/">&larr; all images</a></p>\n<h1>{title}</h1>\n'
        '<p class="muted">{summary}</p>\n{override}<dl>\n{fields}\n</dl>\n',
        title=image.title,
        summary=row.field("summary"),
        override=render(
            '<p class="override" role="note"><strong>Policy override:</strong> the endorser'
            " published this image despite a policy-check error, saying: {why}</p>\n",
            why=row.policy_override,
        )
        if row.policy_override
        else "",
        fields=join(fields, "\n"),
    )
    nonce = secrets.token_urlsafe(18)
    return respond(page_frame(f"{image.title} — vmic", body, nonce, script=False), nonce)
