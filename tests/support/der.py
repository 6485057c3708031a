"""A small DER toolkit for hostile test inputs: parse, mutate, re-encode and re-sign.

Certificates, CRLs and CMS messages are trees of tag-length-value nodes.
:func:`parse` reads DER into :class:`Node` trees (constructed nodes have
children; primitive nodes keep their content bytes), :func:`encode` writes
them back, and :func:`resign_certificate` / :func:`resign_crl` put a new
issuer signature over a mutated ``tbsCertificate`` / ``tbsCertList``, so a
mutation reaches the code behind the signature check instead of stopping
at it. Nothing here validates anything: it builds what a hostile server
could send.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from keys.certs import PrivateKey

CONSTRUCTED = 0x20
SEQUENCE = 0x30
OCTET_STRING = 0x04
BIT_STRING = 0x03
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
_RSA_SHA256 = bytes.fromhex("300d06092a864886f70d01010b0500")


@dataclass(slots=True)
class Node:
    """One TLV: ``tag`` byte(s), and either ``content`` (primitive) or ``children``."""

    tag: bytes
    content: bytes = b""
    children: list[Node] | None = None
    wrapped: bool = field(default=False)
    """An OCTET or BIT STRING whose content was parsed as DER (extension values, keys)."""
    raw: bytes | None = None
    """Bytes written as they are, in place of the TLV (whatever they hold)."""

    @property
    def constructed(self) -> bool:
        return self.children is not None


def _length(data: bytes, at: int) -> tuple[int, int]:
    first = data[at]
    if first < 0x80:
        return first, at + 1
    count = first & 0x7F
    if count == 0 or count > 4 or at + 1 + count > len(data):
        raise ValueError("unsupported DER length")
    return int.from_bytes(data[at + 1 : at + 1 + count], "big"), at + 1 + count


def _tag(data: bytes, at: int) -> tuple[bytes, int]:
    start = at
    if data[at] & 0x1F == 0x1F:
        at += 1
        while data[at] & 0x80:
            at += 1
    return data[start : at + 1], at + 1


def parse_many(data: bytes, *, deep: bool = True) -> list[Node]:
    nodes, at = [], 0
    while at < len(data):
        tag, at = _tag(data, at)
        size, at = _length(data, at)
        if at + size > len(data):
            raise ValueError("DER length runs past the end")
        content = data[at : at + size]
        at += size
        if tag[0] & CONSTRUCTED:
            nodes.append(Node(tag=tag, children=parse_many(content, deep=deep)))
        elif deep and tag[0] in (OCTET_STRING, BIT_STRING) and content:
            nodes.append(_maybe_wrapped(tag, content))
        else:
            nodes.append(Node(tag=tag, content=content))
    return nodes


def _maybe_wrapped(tag: bytes, content: bytes) -> Node:
    """An OCTET/BIT STRING holding DER keeps it as children (so mutations reach inside)."""
    inner = content[1:] if tag[0] == BIT_STRING else content
    if tag[0] == BIT_STRING and content[:1] != b"\x00":
        return Node(tag=tag, content=content)
    try:
        children = parse_many(inner, deep=True)
    except (ValueError, IndexError):
        return Node(tag=tag, content=content)
    if not children or encode_many(children) != inner:
        return Node(tag=tag, content=content)
    return Node(tag=tag, children=children, wrapped=True)


def parse(data: bytes) -> Node:
    nodes = parse_many(data)
    if len(nodes) != 1:
        raise ValueError("expected one DER value")
    return nodes[0]


def encode_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def encode(node: Node) -> bytes:
    if node.raw is not None:
        return node.raw
    if node.children is None:
        body = node.content
    else:
        body = encode_many(node.children)
        if node.wrapped and node.tag[0] == BIT_STRING:
            body = b"\x00" + body
    return node.tag + encode_length(len(body)) + body


def encode_many(nodes: list[Node]) -> bytes:
    return b"".join(encode(n) for n in nodes)


def walk(node: Node, path: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Node]]:
    """Every node with its path of child indexes from ``node``."""
    yield path, node
    for index, child in enumerate(node.children or ()):
        yield from walk(child, (*path, index))


def at(node: Node, path: tuple[int, ...]) -> Node:
    for index in path:
        assert node.children is not None
        node = node.children[index]
    return node


def sign_tbs(tbs: bytes, key: PrivateKey) -> tuple[bytes, bytes]:
    """(AlgorithmIdentifier DER, signature bytes) over ``tbs`` with SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _ECDSA_SHA256, key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    assert isinstance(key, rsa.RSAPrivateKey)
    return _RSA_SHA256, key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())


def resign(tbs: Node, key: PrivateKey) -> bytes:
    """A ``SEQUENCE { tbs, algorithm, BIT STRING signature }`` (a certificate or a CRL)."""
    tbs_der = encode(tbs)
    algorithm, signature = sign_tbs(tbs_der, key)
    bits = bytes([BIT_STRING]) + encode_length(len(signature) + 1) + b"\x00" + signature
    body = tbs_der + algorithm + bits
    return bytes([SEQUENCE]) + encode_length(len(body)) + body


def tbs_of(signed_der: bytes) -> Node:
    """The to-be-signed part of a certificate or CRL, as a tree to mutate."""
    outer = parse(signed_der)
    assert outer.children is not None
    return outer.children[0]


Mutation = tuple[int, int, bytes]
"""(which node, which operation, payload): one step of :func:`mutate`, as hypothesis draws it."""

OPERATIONS = 8


def mutate(root: Node, step: Mutation) -> None:
    """Apply one structural mutation to the tree under ``root`` (never to ``root`` itself).

    Operations: replace a primitive's content; change a tag; duplicate, delete,
    or swap children; insert a new primitive child; flip a bit; truncate.
    Nodes are numbered in :func:`walk` order, modulo their count.
    """
    which, operation, payload = step
    nodes = [node for path, node in walk(root) if path]
    if not nodes:
        return
    node = nodes[which % len(nodes)]
    kids = node.children
    operation %= OPERATIONS
    if operation == 0 and kids is None:
        node.content = payload
    elif operation == 1:
        node.tag = payload[:1] or b"\x05"
    elif operation == 2 and kids:
        kids.append(copy.deepcopy(kids[which % len(kids)]))
    elif operation == 3 and kids:
        del kids[which % len(kids)]
    elif operation == 4 and kids is not None:
        kids.insert(which % (len(kids) + 1), Node(tag=payload[:1] or b"\x0c", content=payload[1:]))
    elif operation == 5 and kids is None and node.content:
        flipped = bytearray(node.content)
        flipped[which % len(flipped)] ^= 1 << (which % 8)
        node.content = bytes(flipped)
    elif operation == 6 and kids is None:
        node.content = node.content[: which % (len(node.content) + 1)]
    elif operation == 7 and kids is not None and len(kids) > 1:
        first, second = which % len(kids), (which // 7) % len(kids)
        kids[first], kids[second] = kids[second], kids[first]
    elif kids is None:  # an operation that needs children, on a leaf: replace it instead
        node.content = payload
    else:
        node.tag = payload[:1] or b"\x05"


# -- semantic mutations: well-formed DER, odd meaning --------------------------------
# Structural mutations mostly produce DER that no parser reads past; these keep the
# encoding valid and change what it says (a name's string type, a time, an extension),
# so the certificate loads and the oddity reaches the checks behind it.

INTEGER, OID, BOOLEAN = 0x02, 0x06, 0x01
TIMES = (0x17, 0x18)  # UTCTime, GeneralizedTime
STRING_TAGS = (0x0C, 0x13, 0x16, 0x1E, 0x14, 0x1C, 0x03, 0x12, 0x1A, 0x04)
"""UTF8, Printable, IA5, BMP, Teletex, Universal, BIT STRING, Numeric, Visible, OCTET."""
EXTENSION_OIDS = (
    "2.5.29.19",
    "2.5.29.15",
    "2.5.29.37",
    "2.5.29.17",
    "2.5.29.18",
    "2.5.29.30",
    "2.5.29.36",
    "2.5.29.32",
    "2.5.29.31",
    "1.3.6.1.5.5.7.1.1",
    "2.5.29.14",
    "2.5.29.35",
    "2.5.29.54",
    "2.5.29.33",
    "2.5.29.9",
    "1.2.3.4.5",
    "1.3.6.1.5.5.7.1.24",
    "1.3.6.1.4.1.11129.2.4.3",
    "2.5.29.20",
    "2.5.29.27",
    "2.5.29.28",
    "2.5.29.46",
    "2.5.29.21",
    "2.5.29.24",
    "2.5.29.29",
)  # certificate and CRL (entry) extensions cryptography knows, and one it does not
SEMANTIC_KINDS = 6

SemanticMutation = tuple[int, int, int, bytes]
"""(which kind of node, which node of that kind, a choice, payload)."""


def encode_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk, rest = [part & 0x7F], part >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return bytes(body)


def _is_extension(node: Node) -> bool:
    kids = node.children or []
    return (
        node.tag == bytes([SEQUENCE])
        and len(kids) in (2, 3)
        and kids[0].tag == bytes([OID])
        and kids[-1].tag == bytes([OCTET_STRING])
    )


def _is_ava(node: Node) -> bool:
    kids = node.children or []
    return (
        node.tag == bytes([SEQUENCE])
        and len(kids) == 2
        and kids[0].tag == bytes([OID])
        and kids[1].children is None
        and kids[1].tag[0] in STRING_TAGS
    )


def _pick(nodes: list[Node], which: int) -> Node | None:
    return nodes[which % len(nodes)] if nodes else None


def semantic_mutate(root: Node, step: SemanticMutation) -> None:
    """Change what a well-formed node says: an integer, a time, a name attribute's type
    and value, an extension's value or criticality, a new extension, an OID."""
    kind, which, choice, payload = step
    nodes = [n for path, n in walk(root) if path]
    kind %= SEMANTIC_KINDS
    if kind == 0:  # an INTEGER (version, serial, CRL number, ...)
        node = _pick([n for n in nodes if n.tag == bytes([INTEGER])], which)
        if node is not None:
            node.content = payload or b"\x00"
    elif kind == 1:  # a time, as UTCTime or GeneralizedTime
        node = _pick([n for n in nodes if n.tag[:1] and n.tag[0] in TIMES], which)
        if node is not None:
            node.tag, node.content = bytes([TIMES[choice % 2]]), payload
    elif kind == 2:  # a name attribute: another string type and value, sometimes another type
        node = _pick([n for n in nodes if _is_ava(n)], which)
        if node is not None and node.children is not None:
            string = bytes([STRING_TAGS[choice % len(STRING_TAGS)]])
            node.children[1] = Node(tag=string, content=payload)
            if choice % 5 == 0:
                oid = EXTENSION_OIDS[choice % len(EXTENSION_OIDS)]
                node.children[0].content = encode_oid(oid)
    elif kind == 3:  # an extension's value, or its criticality
        node = _pick([n for n in nodes if _is_extension(n)], which)
        if node is not None and node.children is not None:
            first, last = node.children[0], node.children[-1]
            if choice % 3 == 0:
                node.children = [first, Node(tag=bytes([BOOLEAN]), content=b"\xff"), last]
            else:
                node.children[-1] = Node(tag=bytes([OCTET_STRING]), content=payload)
    elif kind == 4:  # a new extension, in the first list of extensions
        node = _pick([n for n in nodes if n.children and all(map(_is_extension, n.children))], 0)
        if node is not None and node.children is not None:
            node.children.insert(which % (len(node.children) + 1), _extension(choice, payload))
    else:  # an OID anywhere (algorithms, curves, attribute types, extension ids)
        node = _pick([n for n in nodes if n.tag == bytes([OID])], which)
        if node is not None:
            node.content = (
                encode_oid(EXTENSION_OIDS[choice % len(EXTENSION_OIDS)]) if choice % 2 else payload
            )


def _extension(choice: int, payload: bytes) -> Node:
    oid = EXTENSION_OIDS[choice % len(EXTENSION_OIDS)]
    value = payload if choice % 2 else encode(Node(tag=bytes([SEQUENCE]), content=payload))
    fields = [Node(tag=bytes([OID]), content=encode_oid(oid))]
    if choice % 4 < 2:
        fields.append(Node(tag=bytes([BOOLEAN]), content=b"\xff"))
    fields.append(Node(tag=bytes([OCTET_STRING]), content=value))
    return Node(tag=bytes([SEQUENCE]), children=fields)


Step = Mutation | SemanticMutation


def apply_all(root: Node, steps: list[Step]) -> None:
    """Apply structural (three-part) and semantic (four-part) steps in order."""
    for step in steps:
        if len(step) == 4:
            semantic_mutate(root, step)
        else:
            mutate(root, step)
