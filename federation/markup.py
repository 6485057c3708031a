"""A tiny HTML template helper: every value is escaped unless it is already markup.

Everything shown on the catalogue pages comes from image lists, that is from
endorsers and, through exports, from peers: titles, DNs, URLs. The pages are
built only with :func:`render`, which escapes each value it fills in
(``html.escape`` with quotes) unless the value is :class:`Markup` made by
this module; no page concatenates a raw value into HTML.

>>> render("<td>{title}</td>", title="<script>alert(1)</script>")
'<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>'
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from urllib.parse import urlencode, urlsplit


class Markup(str):
    """HTML that is safe as it is (made by :func:`render` or :func:`join`)."""

    __slots__ = ()


def escape(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def render(template: str, **values: object) -> Markup:
    """Fill ``{name}`` fields of a constant template with escaped values."""
    return Markup(template.format_map({key: escape(value) for key, value in values.items()}))


def join(parts: Iterable[Markup], separator: str = "") -> Markup:
    return Markup(separator.join(escape(part) for part in parts))


def trusted(text: str) -> Markup:
    """A constant of this program (a style sheet, a script) used as it is."""
    return Markup(text)


def link(url: str, text: object | None = None) -> Markup:
    """A link to an http(s) URL from a list; any other scheme is shown as plain text."""
    scheme = urlsplit(url).scheme.lower() if url else ""
    if scheme not in ("http", "https"):
        return escape(text if text is not None else url)
    return render(
        '<a href="{url}" rel="noopener noreferrer nofollow">{text}</a>',
        url=url,
        text=url if text is None else text,
    )


def query(**params: str) -> str:
    """A query string for a link on this site (escape it again when put in HTML)."""
    return "?" + urlencode({k: v for k, v in params.items() if v})
