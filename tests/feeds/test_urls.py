"""check_url, which every URL of a list goes through: the rules, and its quick path.

A list names thousands of URLs, so check_url takes the usual form (http(s),
a plain host name, a short port, printable ASCII) without urlsplit. These
tests hold it to the full rules, written out here as urlsplit applies them:
generated URLs near every rule's edge must get the same answer both ways.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from feeds.model import check_url
from keys.errors import ListFormatError


def by_the_rules(text: str) -> bool:
    """Whether the full rules accept ``text`` (SCHEMA.md section 6, URL)."""
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in text):
        return False
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError:
        return False
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        return False
    return parts.username is None and parts.password is None


def accepted(text: str) -> bool:
    try:
        assert check_url(text, what="URL") == text
    except ListFormatError:
        return False
    return True


_pieces = st.sampled_from(
    [
        "http://",
        "https://",
        "HTTPS://",
        "ftp://",
        "//",
        "images.example.org",
        "a",
        "-",
        ".",
        "_",
        "xn--bcher-kva.example",
        "\u00e4",
        "@",
        "user:pw@",
        ":",
        ":443",
        ":0",
        ":65535",
        ":65536",
        ":99999",
        ":-1",
        ":8a",
        "[::1]",
        "[",
        "]",
        "/",
        "/path/img.qcow2",
        "?",
        "?q=1&x=%20",
        "#",
        "#frag",
        "%2e",
        "\\",
        " ",
        "\t",
        "\n",
        "\x00",
        "\x7f",
        "\x85",
        "\u2028",
        "~",
        "!",
    ]
)
urls = st.lists(_pieces, max_size=8).map("".join)


@given(urls)
@example("https://images.example.org/img.qcow2")
@example("http://images.example.org:8080/a%20b/img.qcow2?token=x&y=1")
@example("https://images.example.org:65536/x")
@example("https://user@images.example.org/x")
@example("https://-.example/x?a=[b]#c")
@example("https:///path")
def test_check_url_follows_the_rules(text: str) -> None:
    assert accepted(text) == by_the_rules(text), text


@pytest.mark.parametrize(
    "url",
    [
        "https://images.example.org",
        "http://IMAGES.example.org:8443/x/y.qcow2?a=1#b",
        "https://10.0.0.1/img",
        "https://images.example.org/~user/[x]/a@b",
    ],
)
def test_usual_urls_are_accepted(url: str) -> None:
    assert accepted(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://images.example.org:65536/x",
        "https://images.example.org:/x",
        "https://user@images.example.org/x",
        "https://images.example.org/a b",
        "https://images.example.org/\u00e4\u2028",
        "https://[::1/x",
        "file:///etc/passwd",
    ],
)
def test_unusual_urls_get_the_full_check(url: str) -> None:
    assert accepted(url) == by_the_rules(url)
