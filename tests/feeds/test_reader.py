"""The reader's strictness: hand-edited trees are rejected with errors naming entry and field."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from feeds.atom import TAG_SCHEME, VO_SCHEME, render_list, to_bytes
from feeds.model import ImageList, Tombstone, image_id
from feeds.reader import read_list
from keys.errors import ListFormatError
from keys.limits import DEFAULT_LIMITS, Limits
from tests.support import lists
from tests.support.ca import Identity
from tests.support.lists import a, t, v

ID_2 = lists.image_uuid(2)
ENTRY_2 = f"entry 2 (urn:uuid:{ID_2})"
TOMB_ID = lists.image_uuid(9)


@pytest.fixture
def base(endorser: Identity, now: datetime) -> ImageList:
    """Two images and one tombstone."""
    return lists.image_list(
        endorser,
        now=now,
        tombstones=(Tombstone(id=image_id(TOMB_ID), when=now, reason="bad kernel"),),
    )


@pytest.fixture
def root(base: ImageList) -> etree._Element:
    """The list as a parsed tree, ready to be edited by hand."""
    return etree.fromstring(to_bytes(render_list(base)))


def entry2(root: etree._Element) -> etree._Element:
    return root.findall(a("entry"))[1]


def tombstone(root: etree._Element) -> etree._Element:
    node = root.find(t("deleted-entry"))
    assert node is not None
    return node


def child(node: etree._Element, tag: str) -> etree._Element:
    found = node.find(tag)
    assert found is not None, tag
    return found


def enclosure(node: etree._Element) -> etree._Element:
    found = node.find(f"{a('link')}[@rel='enclosure']")
    assert found is not None
    return found


def duplicate(node: etree._Element) -> None:
    node.addnext(copy.deepcopy(node))


def rejected(root: etree._Element, *words: str, limits: Limits | None = None) -> str:
    """Read ``root``, expecting ListFormatError whose message holds every one of ``words``."""
    with pytest.raises(ListFormatError) as caught:
        read_list(root, limits=limits or DEFAULT_LIMITS)
    message = str(caught.value)
    for word in words:
        assert word in message, (word, message)
    return message


def test_unedited_tree_reads_back_as_written(root: etree._Element, base: ImageList) -> None:
    assert read_list(root) == base


def test_root_other_than_atom_feed_is_rejected(root: etree._Element) -> None:
    root.tag = a("entries")
    rejected(root, "expected atom:feed")


# -- identifiers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id",
    [
        "urn:uuid:../../etc/passwd",
        "urn:uuid:00000000-0000-4000-8000-../../../x",
        "urn:uuid:not-a-uuid",
        "urn:uuid:00000000-0000-4000-8000-00000000000g",
        "urn:uuid:ABCDEF00-0000-4000-8000-000000000002",
        "urn:uuid:00000000-0000-4000-8000-00000000000A",
        ID_2,
        "uuid:" + ID_2,
        "URN:UUID:" + ID_2,
        "urn:uuid:{" + ID_2 + "}",
        "urn:uuid:" + ID_2.replace("-", ""),
        "urn:uuid:" + ID_2 + "/../x",
    ],
)
def test_entry_id_must_be_a_lower_case_urn_uuid(root: etree._Element, bad_id: str) -> None:
    child(entry2(root), a("id")).text = bad_id
    rejected(root, "entry 2", "atom:id")


@pytest.mark.parametrize(
    "bad_id",
    [
        "urn:uuid:../lists/other",
        "urn:uuid:" + lists.LIST_ID.upper(),
        lists.LIST_ID,
        "https://endorser.example.org/lists/base.atom",
    ],
)
def test_feed_id_must_be_a_lower_case_urn_uuid(root: etree._Element, bad_id: str) -> None:
    child(root, a("id")).text = bad_id
    rejected(root, "feed", "atom:id")


def test_a_bad_uuid_is_quoted_as_given_and_the_lower_case_rule_said(
    root: etree._Element,
) -> None:
    upper = lists.LIST_ID.upper()
    child(root, a("id")).text = "urn:uuid:" + upper
    message = rejected(root, "feed", "atom:id", f"{upper!r} is not a UUID", "lower-case")
    assert lists.LIST_ID not in message


@pytest.mark.parametrize(
    "bad_ref",
    ["urn:uuid:../x", "urn:uuid:ABCDEF00-0000-4000-8000-000000000009", TOMB_ID, "", "urn:uuid:"],
)
def test_tombstone_ref_must_be_a_lower_case_urn_uuid(root: etree._Element, bad_ref: str) -> None:
    tombstone(root).set("ref", bad_ref)
    rejected(root, "deleted-entry 1", "@ref")


@pytest.mark.parametrize("spaced", [" {}", "{} ", "\n{}\n", "\t{}"])
def test_whitespace_around_an_entry_id_is_rejected(root: etree._Element, spaced: str) -> None:
    child(entry2(root), a("id")).text = spaced.format("urn:uuid:" + ID_2)
    rejected(root, "entry 2", "atom:id", "whitespace")


def test_whitespace_around_the_feed_id_is_rejected(root: etree._Element) -> None:
    child(root, a("id")).text = f"\n  urn:uuid:{lists.LIST_ID}\n"
    rejected(root, "feed", "atom:id", "whitespace")


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        (v("sha512"), "{}\n"),
        (v("size"), " {}"),
        (v("format"), "{} "),
        (a("updated"), "{}\n"),
        (a("published"), " {}"),
    ],
)
def test_whitespace_around_exact_entry_fields_is_rejected(
    root: etree._Element, tag: str, value: str
) -> None:
    node = child(entry2(root), tag)
    node.text = value.format(node.text)
    rejected(root, "entry 2", "whitespace")


@pytest.mark.parametrize("tag", [v("version"), v("expires"), a("updated"), v("endorser-dn")])
def test_whitespace_around_exact_feed_fields_is_rejected(root: etree._Element, tag: str) -> None:
    node = child(root, tag)
    node.text = f" {node.text}"
    rejected(root, "feed", "whitespace")


def test_title_and_summary_keep_their_exact_text(root: etree._Element) -> None:
    title = "\n   Spaced   title\t with <angle> & amp \n"
    summary = "  indented\n\n  two paragraphs  "
    child(entry2(root), a("title")).text = title
    child(entry2(root), a("summary")).text = summary
    child(root, a("title")).text = "  List title  "
    read = read_list(etree.fromstring(etree.tostring(root)))
    assert read.entries[1].title == title
    assert read.entries[1].summary == summary
    assert read.title == "  List title  "


def test_blank_title_is_rejected(root: etree._Element) -> None:
    child(entry2(root), a("title")).text = "  \n "
    rejected(root, "entry 2", "atom:title", "empty")


# -- URLs -----------------------------------------------------------------------

BAD_URLS = [
    "file:///etc/passwd",
    "ftp://images.example.org/img.qcow2",
    "javascript:alert(1)",
    "data:application/octet-stream;base64,AAAA",
    "https://user:pass@images.example.org/img.qcow2",
    "https://user@images.example.org/img.qcow2",
    "https://images.example.org/my image.qcow2",
    "https://images.example.org/img.qcow2\t",
    "https://images.example.org/img\x7f.qcow2",
    "//images.example.org/img.qcow2",
    "/img.qcow2",
    "https:///img.qcow2",
    "images.example.org/img.qcow2",
    "https://images.example.org:99999/img.qcow2",
    "https://[::1/img.qcow2",
    "",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_enclosure_url_must_be_plain_http_or_https(root: etree._Element, url: str) -> None:
    enclosure(entry2(root)).set("href", url)
    rejected(root, "entry 2", "atom:link rel=enclosure")


@pytest.mark.parametrize("url", BAD_URLS[:8])
def test_self_link_must_be_plain_http_or_https(root: etree._Element, url: str) -> None:
    child(root, a("link")).set("href", url)
    rejected(root, "feed", "atom:link rel=self")


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/shadow"])
def test_alternate_link_must_be_plain_http_or_https(root: etree._Element, url: str) -> None:
    alternate = entry2(root).find(f"{a('link')}[@rel='alternate']")
    assert alternate is not None
    alternate.set("href", url)
    rejected(root, "entry 2", "atom:link rel=alternate")


def test_http_url_with_port_query_and_escapes_is_accepted(root: etree._Element) -> None:
    url = "http://images.example.org:8080/a%20b/img.qcow2?token=x&y=1"
    enclosure(entry2(root)).set("href", url)
    assert read_list(root).entries[1].url == url


# -- sizes, digests, versions ---------------------------------------------------


def test_enclosure_length_must_equal_vmic_size(root: etree._Element) -> None:
    enclosure(entry2(root)).set("length", "8")
    rejected(root, "entry 2", "atom:link@length", "differs from vmic:size 7")


def test_enclosure_without_length_is_rejected(root: etree._Element) -> None:
    del enclosure(entry2(root)).attrib["length"]
    rejected(root, "entry 2", "atom:link@length")


@pytest.mark.parametrize(
    "size",
    [
        "-1",
        "-0",
        "abc",
        "1e3",
        "0x10",
        "07",
        "+7",
        "7.0",
        "1_000",
        "\u0667",  # an Arabic-Indic digit seven: int() would take it
        str(2**63),
        "99999999999999999999",
    ],
)
def test_size_must_be_a_plain_byte_count(root: etree._Element, size: str) -> None:
    child(entry2(root), v("size")).text = size
    enclosure(entry2(root)).set("length", size)
    rejected(root, "entry 2", "vmic:size")


def test_largest_byte_count_is_accepted(root: etree._Element) -> None:
    child(entry2(root), v("size")).text = str(2**63 - 1)
    enclosure(entry2(root)).set("length", str(2**63 - 1))
    assert read_list(root).entries[1].size == 2**63 - 1


@pytest.mark.parametrize(
    "digest",
    [
        "a" * 127,
        "a" * 129,
        "A" * 128,
        "aB" * 64,
        "g" * 128,
        "a" * 64 + " " + "a" * 63,
        "",
    ],
)
def test_sha512_must_be_128_lower_case_hex_digits(root: etree._Element, digest: str) -> None:
    child(entry2(root), v("sha512")).text = digest
    rejected(root, "entry 2", "vmic:sha512")


@pytest.mark.parametrize(
    "version", ["0", "-1", "1e3", "01", "+1", "1.0", "0x10", "one", "\u0661", str(2**62)]
)
def test_list_version_must_be_a_positive_integer(root: etree._Element, version: str) -> None:
    child(root, v("version")).text = version
    rejected(root, "feed", "vmic:version")


def test_list_version_above_max_version_is_rejected(root: etree._Element) -> None:
    child(root, v("version")).text = str(2**53)
    rejected(root, "feed", "vmic:version", "above the limit")


def test_list_version_limit_comes_from_limits(root: etree._Element) -> None:
    limits = Limits(max_version=10)
    child(root, v("version")).text = "11"
    rejected(root, "vmic:version", "above the limit of 10", limits=limits)
    child(root, v("version")).text = "10"
    assert read_list(root, limits=limits).version == 10


# -- times ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "tag", "value"),
    [
        ("feed", a("updated"), "2026-11-26T12:00:00"),
        ("feed", v("expires"), "2026-12-26T12:00:00"),
        ("feed", a("updated"), "2026-11-26"),
        ("feed", a("updated"), "2026-02-30T12:00:00Z"),
        ("feed", a("updated"), "2026-11-26T25:00:00Z"),
        ("entry 2", a("updated"), "2026-11-26 12:00:00Z"),
        ("entry 2", a("published"), "2026-11-26T12:00:00.5"),
        ("entry 2", v("produced"), "2026-11-26T12:00:00"),
        ("entry 2", a("published"), "Thu, 26 Nov 2026 12:00:00 GMT"),
        ("entry 2", a("updated"), "1790000000"),
    ],
)
def test_times_need_rfc3339_with_a_time_zone(
    root: etree._Element, where: str, tag: str, value: str
) -> None:
    node = root if where == "feed" else entry2(root)
    child(node, tag).text = value
    rejected(root, where, "time")


def test_tombstone_time_needs_a_time_zone(root: etree._Element) -> None:
    tombstone(root).set("when", "2026-11-26T12:00:00")
    rejected(root, "deleted-entry 1", "@when")


def test_offsets_and_fractions_are_read_as_utc(root: etree._Element) -> None:
    child(root, a("updated")).text = "2026-11-26T14:00:00.250+02:00"
    child(entry2(root), v("produced")).text = "2026-11-25T23:30:00-01:00"
    read = read_list(root)
    assert read.updated == datetime(2026, 11, 26, 12, 0, 0, 250000, tzinfo=UTC)
    assert read.updated.utcoffset() == timedelta(0)
    assert read.entries[1].produced == datetime(2026, 11, 26, 0, 30, tzinfo=UTC)


# -- cardinality ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "field"),
    [
        (a("title"), "atom:title"),
        (a("id"), "atom:id"),
        (a("summary"), "atom:summary"),
        (a("updated"), "atom:updated"),
        (v("sha512"), "vmic:sha512"),
        (v("size"), "vmic:size"),
        (v("format"), "vmic:format"),
        (v("hypervisor"), "vmic:hypervisor"),
        (v("produced"), "vmic:produced"),
    ],
)
def test_duplicated_singular_entry_element_is_rejected(
    root: etree._Element, tag: str, field: str
) -> None:
    duplicate(child(entry2(root), tag))
    rejected(root, "entry 2", field, "appears 2 times")


@pytest.mark.parametrize(
    ("tag", "field"),
    [
        (a("title"), "atom:title"),
        (a("id"), "atom:id"),
        (a("updated"), "atom:updated"),
        (v("version"), "vmic:version"),
        (v("expires"), "vmic:expires"),
        (v("endorser-dn"), "vmic:endorser-dn"),
        (v("issuer-dn"), "vmic:issuer-dn"),
    ],
)
def test_duplicated_singular_feed_element_is_rejected(
    root: etree._Element, tag: str, field: str
) -> None:
    duplicate(child(root, tag))
    rejected(root, "feed", field, "appears 2 times")


def test_two_self_links_are_rejected(root: etree._Element) -> None:
    duplicate(child(root, a("link")))
    rejected(root, "feed", "atom:link rel=self", "found 2")


def test_two_authors_are_rejected(root: etree._Element) -> None:
    duplicate(child(root, a("author")))
    rejected(root, "feed", "atom:author", "found 2")


def test_two_enclosures_are_rejected(root: etree._Element) -> None:
    duplicate(enclosure(entry2(root)))
    rejected(root, "entry 2", "atom:link rel=enclosure", "found 2")


def test_two_vos_are_rejected(root: etree._Element) -> None:
    vo = entry2(root).find(f"{a('category')}[@scheme='{VO_SCHEME}']")
    assert vo is not None
    duplicate(vo)
    rejected(root, "entry 2", "atom:category (vo)")


@pytest.mark.parametrize(
    ("where", "tag", "field"),
    [
        ("entry 2", v("sha512"), "vmic:sha512"),
        ("entry 2", v("size"), "vmic:size"),
        ("entry 2", a("title"), "atom:title"),
        ("entry 2", a("id"), "atom:id"),
        ("feed", v("expires"), "vmic:expires"),
        ("feed", v("version"), "vmic:version"),
        ("feed", v("endorser-dn"), "vmic:endorser-dn"),
    ],
)
def test_missing_required_element_is_rejected(
    root: etree._Element, where: str, tag: str, field: str
) -> None:
    node = root if where == "feed" else entry2(root)
    node.remove(child(node, tag))
    rejected(root, where, field)


def test_entry_without_enclosure_is_rejected(root: etree._Element) -> None:
    entry2(root).remove(enclosure(entry2(root)))
    rejected(root, "entry 2", "atom:link rel=enclosure", "found 0")


def test_two_entries_with_the_same_id_are_rejected(root: etree._Element) -> None:
    child(entry2(root), a("id")).text = "urn:uuid:" + lists.image_uuid(1)
    rejected(root, lists.image_uuid(1), "twice")


def test_an_id_both_listed_and_revoked_is_rejected(root: etree._Element) -> None:
    tombstone(root).set("ref", "urn:uuid:" + ID_2)
    rejected(root, ID_2, "both listed and revoked")


def test_an_image_revoked_twice_is_rejected(root: etree._Element) -> None:
    duplicate(tombstone(root))
    rejected(root, "revoked twice")


def test_more_entries_than_max_entries_are_rejected(root: etree._Element) -> None:
    # two entries and one tombstone: three images in all
    rejected(root, "feed", "entries", "more than 2", limits=Limits(max_entries=2))
    assert len(read_list(root, limits=Limits(max_entries=3)).entries) == 2


# -- extensions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "name"),
    [
        ("feed", "signing-policy"),
        ("feed", "Version"),
        ("entry 2", "sha256"),
        ("entry 2", "url"),
        ("entry 2", "version"),  # a feed-level name, not allowed in an entry
    ],
)
def test_unknown_vmic_element_is_rejected(root: etree._Element, where: str, name: str) -> None:
    node = root if where == "feed" else entry2(root)
    etree.SubElement(node, v(name)).text = "1"
    rejected(root, where, f"vmic:{name}", "unknown element")


def test_foreign_namespaces_and_other_atom_elements_are_ignored(
    root: etree._Element, base: ImageList
) -> None:
    foreign = "urn:example:other"
    etree.SubElement(root, a("rights")).text = "CC-BY 4.0"
    etree.SubElement(root, a("icon")).text = "https://endorser.example.org/icon.png"
    etree.SubElement(root, a("logo")).text = "https://endorser.example.org/logo.png"
    etree.SubElement(root, a("generator")).text = "vmic"
    etree.SubElement(root, f"{{{foreign}}}mirror").text = "https://mirror.example.org/"
    node = entry2(root)
    etree.SubElement(node, a("rights")).text = "public domain"
    etree.SubElement(node, a("link"), rel="related", href="ftp://not.checked.example.org/")
    etree.SubElement(node, a("category"), term="Not A Token!", scheme="urn:example:s")
    extension = etree.SubElement(node, f"{{{foreign}}}extension", attrib={"x": "y"})
    etree.SubElement(extension, f"{{{foreign}}}nested").text = "ignored"
    root.insert(0, etree.Comment(" a comment "))
    assert read_list(etree.fromstring(etree.tostring(root))) == base


@pytest.mark.parametrize("kind", ["xhtml", "html"])
def test_title_with_markup_type_is_rejected(root: etree._Element, kind: str) -> None:
    title = child(entry2(root), a("title"))
    title.set("type", kind)
    if kind == "xhtml":
        title.text = None
        etree.SubElement(title, "{http://www.w3.org/1999/xhtml}div").text = "Image"
    rejected(root, "entry 2", "atom:title", f"type {kind!r}")


def test_summary_with_html_type_is_rejected(root: etree._Element) -> None:
    child(entry2(root), a("summary")).set("type", "html")
    rejected(root, "entry 2", "atom:summary")


def test_text_element_holding_elements_is_rejected(root: etree._Element) -> None:
    etree.SubElement(child(entry2(root), a("title")), a("b")).text = "bold"
    rejected(root, "entry 2", "atom:title", "text only")


@pytest.mark.parametrize("term", ["with space", "", "../x", "x" * 65])
def test_tag_must_be_a_simple_token(root: etree._Element, term: str) -> None:
    tag = entry2(root).find(f"{a('category')}[@scheme='{TAG_SCHEME}']")
    assert tag is not None
    tag.set("term", term)
    rejected(root, "entry 2", "atom:category (tag)")


def test_over_long_text_is_rejected(root: etree._Element) -> None:
    child(entry2(root), a("summary")).text = "x" * 201
    rejected(root, "entry 2", "atom:summary", "longer than 200", limits=Limits(max_text_chars=200))


# -- identifiers must be exact in attributes too -----------------------------------
# Python's ``$`` also matches before a final newline, so ``re.match(r"^...$")`` in
# feeds/model.py (_UUID, _SHA512, _TOKEN) accepts "<uuid>\n". Attribute values
# skip the reader's whitespace check, so a newline (``&#10;``) gets through there.


@pytest.mark.parametrize("image", [TOMB_ID, ID_2], ids=["unlisted", "listed"])
def test_tombstone_ref_with_trailing_newline_is_rejected(root: etree._Element, image: str) -> None:
    tombstone(root).set("ref", f"urn:uuid:{image}\n")
    reparsed = etree.fromstring(etree.tostring(root))
    assert tombstone(reparsed).get("ref") == f"urn:uuid:{image}\n"
    rejected(reparsed, "deleted-entry 1", "@ref")


@pytest.mark.parametrize("scheme", [VO_SCHEME, TAG_SCHEME])
def test_category_term_with_trailing_newline_is_rejected(root: etree._Element, scheme: str) -> None:
    category = entry2(root).find(f"{a('category')}[@scheme='{scheme}']")
    assert category is not None
    category.set("term", f"{category.get('term')}\n")
    rejected(etree.fromstring(etree.tostring(root)), "entry 2", "atom:category")


@pytest.mark.parametrize("where", ["deleted-entry", "author"])
def test_vmic_element_nested_in_tombstone_or_author_is_rejected(
    root: etree._Element, where: str
) -> None:
    node = tombstone(root) if where == "deleted-entry" else child(root, a("author"))
    etree.SubElement(node, v("expires")).text = "2020-01-01T00:00:00Z"
    rejected(root, "vmic:expires", "unknown element")
