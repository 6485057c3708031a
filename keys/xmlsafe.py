"""Parsing untrusted XML without letting it reach beyond its own bytes.

One parser configuration for every document vmic reads: no DTD, no entity
expansion, no network, no huge-tree mode (libxml2 then refuses text nodes
over 10 MB), a byte cap checked before parsing, UTF-8 only, no processing
instructions (they would make the canonical form of the document differ from
that of its root element), and a nesting depth bound checked after parsing.
Anything else is a ListFormatError.
"""

from __future__ import annotations

from lxml import etree

from keys.errors import ListFormatError, outside_bytes
from keys.limits import Limits


class _RefuseAll(etree.Resolver):
    """Answers every request for an external resource with nothing."""

    # lxml calls resolve(url, public_id, context); lxml-stubs leave out the context.
    def resolve(  # type: ignore[override]
        self, system_url: str | None, public_id: str | None, context: object
    ) -> object:
        return self.resolve_string("", context, base_url=None)


def hardened_parser() -> etree.XMLParser:
    """A new parser that resolves nothing outside the document.

    The options alone are not enough: with them libxml2 still opens a local
    file named by an external DTD or parameter entity, so a resolver refuses
    every external resource as well.
    """
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        collect_ids=False,
        remove_blank_text=False,
    )
    parser.resolvers.add(_RefuseAll())
    return parser


def parse_untrusted(raw: bytes, *, limits: Limits, what: str = "document") -> etree._Element:
    """Parse ``raw`` into an element tree or raise ListFormatError (and nothing else)."""
    with outside_bytes(f"{what} cannot be parsed", ListFormatError):
        return _parse(raw, limits, what)


def _parse(raw: bytes, limits: Limits, what: str) -> etree._Element:
    if len(raw) > limits.max_list_bytes:
        raise ListFormatError(
            f"{what} is {len(raw)} bytes, over the limit of {limits.max_list_bytes}",
            hint="raise max_list_bytes only if such large lists are expected",
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00", b"\x00<", b"<\x00")):
        raise ListFormatError(f"{what} is not UTF-8 encoded")
    # A DTD is never part of the profile; refuse before libxml2 reads it.
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise ListFormatError(f"{what} contains a DTD or entity declaration, which is not allowed")
    try:
        root = etree.fromstring(raw, parser=hardened_parser())
    except etree.XMLSyntaxError as exc:
        raise ListFormatError(f"{what} is not well-formed XML: {exc}") from exc
    tree = root.getroottree()
    docinfo = tree.docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.doctype:
        raise ListFormatError(f"{what} contains a DTD, which is not allowed")
    encoding = (docinfo.encoding or "UTF-8").upper()
    if encoding not in {"UTF-8", "UTF8"}:
        raise ListFormatError(f"{what} is encoded as {docinfo.encoding}; only UTF-8 is allowed")
    for node in root.iter(etree.Entity, etree.ProcessingInstruction):
        raise ListFormatError(f"{what} contains {_kind(node)}, which is not allowed")
    for sibling in (*root.itersiblings(preceding=True), *root.itersiblings()):
        if isinstance(sibling, etree._ProcessingInstruction):
            raise ListFormatError(f"{what} contains {_kind(sibling)}, which is not allowed")
    check_depth(root, limits=limits, what=what)
    return root


def _kind(node: etree._Element) -> str:
    if isinstance(node, etree._ProcessingInstruction):
        return f"a processing instruction ({node.target!r})"
    return f"an entity reference ({node!r})"


def check_depth(root: etree._Element, *, limits: Limits, what: str) -> None:
    """Reject trees with an element deeper than the limit (evaluated in libxml2)."""
    too_deep = etree.XPath("boolean(" + "/*" * (limits.max_xml_depth + 1) + ")")
    if too_deep(root):
        raise ListFormatError(
            f"{what} nests elements deeper than the limit of {limits.max_xml_depth}"
        )
