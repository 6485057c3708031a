"""Every rejection of the HEPiX reader, key by key, and what it takes leniently.

test_hepix.py pins the rejections of real-world mistakes; this file pins the
rest (the shape of each object, the type of every value, characters an Atom
list could not carry wherever they hide in the JSON, the length limit, the
lenient readings), so that a faster reader cannot drop a check unnoticed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from feeds.hepix import read_hepix, render_hepix
from feeds.model import ImageList
from keys.errors import ListFormatError
from keys.limits import DEFAULT_LIMITS, Limits
from tests.support import lists
from tests.support.ca import Identity

Document = dict[str, Any]


@pytest.fixture
def image_list(endorser: Identity, now: datetime) -> ImageList:
    base = lists.image_list(endorser, now=now, version=5, vo="dteam")
    return dataclasses.replace(
        base,
        entries=tuple(
            dataclasses.replace(
                e, tags=(), produced=None, updated=base.updated, endorsed=base.updated
            )
            for e in base.entries
        ),
    )


@pytest.fixture
def document(image_list: ImageList) -> Document:
    loaded: Document = json.loads(render_hepix(image_list))
    return loaded


def top(document: Document) -> Document:
    value: Document = document["hv:imagelist"]
    return value


def image(document: Document, index: int = 1) -> Document:
    value: Document = top(document)["hv:images"][index]["hv:image"]
    return value


def x509(document: Document) -> Document:
    value: Document = top(document)["hv:endorser"]["hv:x509"]
    return value


def read(document: object, *, limits: Limits = DEFAULT_LIMITS) -> ImageList:
    return read_hepix(json.dumps(document, ensure_ascii=False).encode(), limits=limits)


def rejected(content: object, *words: str, limits: Limits = DEFAULT_LIMITS) -> str:
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    with pytest.raises(ListFormatError) as caught:
        read_hepix(raw, limits=limits)
    message = caught.value.message
    for word in words:
        assert word in message, (word, message)
    return message


def test_the_fixture_reads_back(document: Document, image_list: ImageList) -> None:
    got = read(document)
    assert got.entries[1].id == image_list.entries[1].id
    assert got.vo == "dteam"


# -- the shape --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [[], "x", 1, None, {}, {"hv:imagelist": {}, "extra": 1}, {"HV:IMAGELIST": {}}],
    ids=repr,
)
def test_anything_but_one_imagelist_object_is_rejected(content: object) -> None:
    rejected(content, 'a HEPiX list is one object {"hv:imagelist": {...}}')


@pytest.mark.parametrize("value", [[], "x", 1, None, True])
def test_an_imagelist_that_is_not_an_object_is_rejected(value: object) -> None:
    rejected({"hv:imagelist": value}, "hv:imagelist must be a JSON object")


@pytest.mark.parametrize(
    ("place", "key", "words"),
    [
        (top, "hv:endorser", ("hv:imagelist: hv:endorser is missing",)),
        (top, "hv:images", ("hv:imagelist: hv:images is missing",)),
        (lambda d: top(d)["hv:endorser"], "hv:x509", ("hv:endorser: hv:x509 is missing",)),
        (lambda d: top(d)["hv:images"][0], "hv:image", ("hv:images[0]: hv:image is missing",)),
    ],
)
@pytest.mark.parametrize("how", ["removed", "null"])
def test_a_missing_object_is_rejected(
    document: Document,
    place: Callable[[Document], Document],
    key: str,
    words: tuple[str, ...],
    how: str,
) -> None:
    if how == "removed":
        del place(document)[key]
    else:
        place(document)[key] = None
    rejected(document, *words)


@pytest.mark.parametrize(
    ("place", "key", "words"),
    [
        (top, "hv:endorser", ("hv:endorser must be a JSON dict",)),
        (lambda d: top(d)["hv:endorser"], "hv:x509", ("hv:x509 must be a JSON dict",)),
        (lambda d: top(d)["hv:images"][0], "hv:image", ("hv:image must be a JSON dict",)),
    ],
)
@pytest.mark.parametrize("value", [[], "x", 1])
def test_an_object_of_another_type_is_rejected(
    document: Document,
    place: Callable[[Document], Document],
    key: str,
    words: tuple[str, ...],
    value: object,
) -> None:
    place(document)[key] = value
    rejected(document, *words)


@pytest.mark.parametrize("item", [[], "x", 1, None])
def test_an_image_that_is_not_an_object_is_rejected(document: Document, item: object) -> None:
    top(document)["hv:images"][1] = item
    rejected(document, "hv:images[1] must be a JSON object")


def test_an_image_wrapper_with_other_keys_is_rejected(document: Document) -> None:
    top(document)["hv:images"][1]["dc:title"] = "beside the image"
    rejected(document, 'hv:images[1]: each image is {"hv:image": {...}}')


def test_more_images_than_the_limit_are_rejected(document: Document) -> None:
    rejected(document, "the list has 2 images, more than 1", limits=Limits(max_entries=1))
    assert len(read(document, limits=Limits(max_entries=2)).entries) == 2


# -- values -----------------------------------------------------------------------------

READ_KEYS = [
    (top, "hv:imagelist", key)
    for key in (
        "dc:identifier",
        "dc:title",
        "dc:description",
        "dc:date:created",
        "dc:date:expires",
        "hv:version",
        "hv:uri",
        "ad:vo",
    )
] + [(x509, "hv:endorser/hv:x509", key) for key in ("hv:dn", "hv:ca", "dc:creator", "hv:email")]
IMAGE_KEYS = [
    (image, "hv:images[1]/hv:image", key)
    for key in (
        "dc:identifier",
        "dc:title",
        "dc:description",
        "hv:uri",
        "hv:size",
        "sl:checksum:sha512",
        "hv:format",
        "hv:hypervisor",
        "hv:version",
        "sl:arch",
        "sl:os",
        "sl:osname",
        "sl:osversion",
        "dc:date:expires",
        "ad:vo",
        "ad:mpuri",
        "ad:appid",
        "ad:base_mpuri",
    )
]
ALL_KEYS = READ_KEYS + IMAGE_KEYS
KEY_IDS = [f"{where}/{key}" for _place, where, key in ALL_KEYS]


@pytest.mark.parametrize(("place", "where", "key"), ALL_KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("value", [True, False, 1.5, [], {}, ["x"], {"a": "b"}], ids=repr)
def test_a_read_value_must_be_a_string_or_a_whole_number(
    document: Document,
    place: Callable[[Document], Document],
    where: str,
    key: str,
    value: object,
) -> None:
    place(document)[key] = value
    rejected(document, f"{where}: {key} must be a string or a whole number")


REQUIRED = [
    (top, "hv:imagelist", "dc:identifier"),
    (top, "hv:imagelist", "dc:date:created"),
    (top, "hv:imagelist", "dc:date:expires"),
    (top, "hv:imagelist", "hv:version"),
    (x509, "hv:endorser/hv:x509", "hv:dn"),
    (x509, "hv:endorser/hv:x509", "hv:ca"),
    (image, "hv:images[1]/hv:image", "dc:identifier"),
    (image, "hv:images[1]/hv:image", "hv:uri"),
    (image, "hv:images[1]/hv:image", "hv:size"),
    (image, "hv:images[1]/hv:image", "sl:checksum:sha512"),
]


@pytest.mark.parametrize(("place", "where", "key"), REQUIRED)
def test_a_required_value_left_out_is_rejected(
    document: Document, place: Callable[[Document], Document], where: str, key: str
) -> None:
    del place(document)[key]
    rejected(document, f"{where}: {key} is missing")


@pytest.mark.parametrize(("place", "where", "key"), REQUIRED)
def test_a_required_value_given_as_null_is_rejected(
    document: Document, place: Callable[[Document], Document], where: str, key: str
) -> None:
    place(document)[key] = None
    rejected(document, f"{where}: {key} must be a string or a whole number")


def test_optional_values_given_as_null_are_left_out(document: Document) -> None:
    for key in ("dc:title", "dc:description", "hv:uri", "ad:vo"):
        top(document)[key] = None
    for key in ("dc:creator", "hv:email"):
        x509(document)[key] = None
    for key in ("dc:title", "hv:format", "hv:hypervisor", "dc:date:expires", "ad:mpuri"):
        image(document)[key] = None
    got = read(document)
    assert (got.title, got.subtitle, got.self_url, got.vo) == ("", None, "", None)
    assert (got.author_name, got.author_email) == ("", None)
    entry = got.entries[1]
    assert (entry.title, entry.format, entry.hypervisor, entry.expires) == (
        entry.id,
        "unknown",
        None,
        None,
    )
    assert entry.info_url is None
    assert ("ad:mpuri", "null") in entry.extra


def test_whole_numbers_are_read_as_text(document: Document) -> None:
    image(document)["dc:title"] = 42
    image(document)["hv:size"] = 7
    top(document)["hv:version"] = 20150618211400
    got = read(document)
    assert got.entries[1].title == "42"
    assert got.entries[1].size == 7
    assert got.version == 20150618211400


@pytest.mark.parametrize(("place", "where", "key"), ALL_KEYS, ids=KEY_IDS)
def test_a_read_value_over_the_length_limit_is_rejected(
    document: Document, place: Callable[[Document], Document], where: str, key: str
) -> None:
    place(document)[key] = "x" * 1001
    rejected(
        document,
        f"{where}: {key} is longer than 1000 characters",
        limits=Limits(max_text_chars=1000),
    )


# Characters an XML document cannot carry, so an Atom list (a site's export) neither.
NOT_XML = ["\x00", "\x08", "\x0b", "\x0c", "\x1f", "\ud800", "\udfff", "\ufffe", "\uffff"]


def _escaped(document: Document) -> bytes:
    return json.dumps(document, ensure_ascii=True).encode()


def _raw(document: Document) -> bytes:
    """Every character written as itself where JSON allows it (U+FFFE and U+FFFF)."""
    text = json.dumps(document, ensure_ascii=True)
    return text.replace("\\ufffe", "\ufffe").replace("\\uffff", "\uffff").encode()


@pytest.mark.parametrize(("place", "where", "key"), ALL_KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("char", NOT_XML, ids=lambda c: f"U+{ord(c):04X}")
def test_a_character_xml_cannot_carry_is_rejected_in_every_read_value(
    document: Document, place: Callable[[Document], Document], where: str, key: str, char: str
) -> None:
    value = place(document).get(key) or "x"
    place(document)[key] = f"{value}{char}"
    rejected(_escaped(document), f"{where}: {key}: character U+{ord(char):04X} cannot appear")


@pytest.mark.parametrize("char", ["\ufffe", "\uffff"], ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("where", ["value", "extra value", "extra key"])
def test_a_non_character_written_as_itself_is_rejected(
    document: Document, char: str, where: str
) -> None:
    if where == "value":
        image(document)["dc:title"] = f"title{char}"
    elif where == "extra value":
        image(document)["sl:comments"] = f"comment{char}"
    else:
        image(document)[f"x:key{char}"] = "value"
    raw = _raw(document)
    assert char.encode() in raw
    rejected(raw, "hv:images[1]/hv:image", f"character U+{ord(char):04X} cannot appear")


@pytest.mark.parametrize("escape", ["\\b", "\\f", "\\u0001", "\\u001F", "\\uD800"])
@pytest.mark.parametrize("where", ["hv:imagelist", "hv:images[0]/hv:image"])
def test_an_escaped_control_character_is_rejected_in_an_extra_key_or_value(
    document: Document, escape: str, where: str
) -> None:
    holder = top(document) if where == "hv:imagelist" else image(document, 0)
    holder["x:extra"] = "MARK"
    text = json.dumps(document, ensure_ascii=False)
    rejected(text.replace("MARK", f"a{escape}b").encode(), where, "x:extra", "cannot appear")
    rejected(text.replace('"x:extra"', f'"x:{escape}"').encode(), where, "cannot appear")


def test_control_characters_inside_a_nested_extra_value_are_kept_escaped(
    document: Document,
) -> None:
    image(document)["x:nested"] = {"b": "tab\there", "a": "nul\x00"}
    extra = dict(read(document).entries[1].extra)
    assert extra["x:nested"] == '{"a": "nul\\u0000", "b": "tab\\there"}'


def test_allowed_control_characters_and_escapes_are_read(document: Document) -> None:
    image(document)["dc:description"] = 'tab\tline\ncr\r quote" slash/ back\\ \x85\u2028\U0001f600'
    image(document)["sl:comments"] = "\x7f\x9f"
    raw = _escaped(document).replace(b"slash/", b"slash\\/")
    entry = read_hepix(raw).entries[1]
    assert entry.summary == 'tab\tline\ncr\r quote" slash/ back\\ \x85\u2028\U0001f600'
    assert dict(entry.extra)["sl:comments"] == "\x7f\x9f"


def test_a_backslash_before_u_in_text_is_not_an_escape(document: Document) -> None:
    image(document)["dc:description"] = "C:\\users\\bfile\\f"
    assert read(document).entries[1].summary == "C:\\users\\bfile\\f"
    assert read_hepix(_escaped(document)).entries[1].summary == "C:\\users\\bfile\\f"


@pytest.mark.parametrize("where", ["extra key", "extra value"])
def test_extra_keys_and_values_over_the_length_limit_are_rejected(
    document: Document, where: str
) -> None:
    if where == "extra key":
        image(document)["x:" + "k" * 1000] = "v"
    else:
        image(document)["sl:comments"] = "v" * 1001
    rejected(
        document, "hv:images[1]/hv:image", "longer than 1000", limits=Limits(max_text_chars=1000)
    )


# -- lenient readings -----------------------------------------------------------------


def test_formats_are_read_in_lower_case_and_must_be_tokens(document: Document) -> None:
    image(document)["hv:format"] = "QCOW2"
    assert read(document).entries[1].format == "qcow2"
    image(document)["hv:format"] = "qcow 2"
    rejected(document, "hv:images[1]/hv:image: hv:format")


def test_an_image_vo_must_be_a_token_and_defaults_to_the_lists(document: Document) -> None:
    del image(document)["ad:vo"]
    assert read(document).entries[1].vo == "dteam"
    image(document)["ad:vo"] = "two words"
    rejected(document, "hv:images[1]/hv:image: ad:vo")


@pytest.mark.parametrize(
    "url", ["https://user:pw@images.example.org/x", "file:///etc/passwd", " https://a.org/x"]
)
def test_image_urls_are_checked_and_page_urls_dropped(document: Document, url: str) -> None:
    image(document)["ad:mpuri"] = url
    image(document)["ad:base_mpuri"] = url
    entry = read(document).entries[1]
    assert (entry.info_url, entry.base_marketplace_url) == (None, None)
    image(document)["hv:uri"] = url
    rejected(document, "hv:images[1]/hv:image: hv:uri")


def test_an_empty_appliance_id_is_none(document: Document) -> None:
    image(document)["ad:appid"] = ""
    assert read(document).entries[1].appliance_id is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2026-02-30T00:00:00Z", "is not a valid date-time"),
        ("2026-13-01T00:00:00Z", "is not a valid date-time"),
        ("2026-01-01T24:00:00Z", "is not a valid date-time"),
        ("2026-01-01T00:00:60Z", "is not a valid date-time"),
        ("0000-01-01T00:00:00Z", "is not a valid date-time"),
        ("2026-01-01T00:00:00+00:00", "is not a date-time like"),
        ("2026-01-01T00:00:00.5Z", "is not a date-time like"),
        ("2026-01-01t00:00:00z", "is not a date-time like"),
        ("2026-01-01T00:00:00Z\n", "is not a date-time like"),
    ],
)
def test_times_must_be_real_utc_times_in_one_form(
    document: Document, value: str, words: str
) -> None:
    image(document)["dc:date:expires"] = value
    rejected(document, "hv:images[1]/hv:image: dc:date:expires", words)


def test_the_first_and_last_second_of_the_calendar_are_read(document: Document) -> None:
    image(document)["dc:date:expires"] = "9999-12-31T23:59:59Z"
    image(document, 0)["dc:date:expires"] = "0001-01-01T00:00:00Z"
    got = read(document)
    assert got.entries[1].expires == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert got.entries[0].expires == datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"hv:imagelist": {"a": 1, "a": 2}}', "key 'a' appears twice in one object"),
        (b'{"hv:imagelist": {"a": {"b": 1, "c": 2, "b": 1}}}', "key 'b' appears twice"),
        (b'{"hv:imagelist": {"x": Infinity}}', "Infinity is not a JSON number"),
        (b'{"hv:imagelist": {"x": -Infinity}}', "-Infinity is not a JSON number"),
        (b'{"hv:imagelist": {"x": "\x01"}}', "not valid JSON"),
        (b'{"hv:imagelist": {}} x', "not valid JSON"),
        (b'{"hv:imagelist": {"x": "\xff"}}', "not UTF-8"),
        ('{"hv:imagelist": {}}'.encode("utf-16"), "not UTF-8"),
    ],
)
def test_json_that_two_readers_could_read_differently_is_rejected(
    content: bytes, words: str
) -> None:
    rejected(content, words)


def test_a_utf8_byte_order_mark_is_allowed(document: Document) -> None:
    raw = json.dumps(document).encode("utf-8-sig")
    assert read_hepix(raw) == read(document)
