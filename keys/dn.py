"""Distinguished names in the two spellings grid people use, losslessly.

Grid tools write DNs in OpenSSL's slash form, most significant RDN first
(``/DC=ch/DC=cern/OU=Users/CN=Jane Endorser``); RFC 4514 writes them the
other way round (``CN=Jane Endorser,OU=Users,DC=cern,DC=ch``). A
:class:`DistinguishedName` parses and prints both, keeps multi-valued RDNs
(``/CN=a+UID=b``), and compares on the whole RDN sequence: every attribute
type and value, in order, exactly (no case folding, no first-CN shortcuts).

Slash form escapes: ``\\`` escapes the next character, so ``\\/``, ``\\+``,
``\\=`` and ``\\\\`` stand for themselves. As in OpenSSL output and in the grid
tools, a slash-separated piece without ``=`` continues the previous value,
so a service DN such as ``/CN=host/ce.example.org`` reads as one CN.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from keys.errors import ConfigError

# Short names as OpenSSL prints them in slash form, most used first.
_SHORT_NAMES: dict[str, ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "title": NameOID.TITLE,
    "GN": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
    "initials": NameOID.INITIALS,
    "pseudonym": NameOID.PSEUDONYM,
    "street": NameOID.STREET_ADDRESS,
    "postalCode": NameOID.POSTAL_CODE,
    "dnQualifier": NameOID.DN_QUALIFIER,
    "generationQualifier": NameOID.GENERATION_QUALIFIER,
    "businessCategory": NameOID.BUSINESS_CATEGORY,
}
_ALIASES: dict[str, ObjectIdentifier] = {
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "USERID": NameOID.USER_ID,
    "GIVENNAME": NameOID.GIVEN_NAME,
    "SURNAME": NameOID.SURNAME,
}
_BY_UPPER: dict[str, ObjectIdentifier] = {k.upper(): v for k, v in _SHORT_NAMES.items()}
_BY_UPPER.update(_ALIASES)
_NAME_OF: dict[str, str] = {oid.dotted_string: name for name, oid in _SHORT_NAMES.items()}
# RFC 4514 names for attributes cryptography does not name itself.
_RFC4514_NAMES: dict[ObjectIdentifier, str] = {
    oid: name
    for name, oid in _SHORT_NAMES.items()
    if name in {"emailAddress", "serialNumber", "title", "GN", "SN", "initials", "pseudonym"}
}
_RFC4514_PARSE: dict[str, ObjectIdentifier] = {name: oid for oid, name in _RFC4514_NAMES.items()}
_RFC4514_PARSE.update({"E": NameOID.EMAIL_ADDRESS, "EMAIL": NameOID.EMAIL_ADDRESS})

Ava = tuple[str, str]  # (dotted OID, value)


def _oid_for(name: str, *, dn: str) -> ObjectIdentifier:
    oid = _BY_UPPER.get(name.upper())
    if oid is not None:
        return oid
    if name and all(part.isdigit() for part in name.split(".")) and "." in name:
        return ObjectIdentifier(name)
    raise ConfigError(
        f"unknown attribute type {name!r} in DN {dn!r}",
        hint="use OpenSSL short names (C, O, OU, CN, DC, UID, emailAddress, ...) or dotted OIDs",
    )


class DistinguishedName:
    """An X.509 name as a sequence of RDNs, each a sequence of (OID, value) pairs."""

    __slots__ = ("_key", "rdns")

    rdns: tuple[tuple[Ava, ...], ...]

    def __init__(self, rdns: Sequence[Sequence[Ava]]) -> None:
        self.rdns = tuple(tuple(rdn) for rdn in rdns)
        if any(not rdn for rdn in self.rdns):
            raise ConfigError("a DN cannot contain an empty RDN")
        # A multi-valued RDN is a SET: the order inside it carries no meaning.
        self._key = tuple(tuple(sorted(rdn)) for rdn in self.rdns)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DistinguishedName):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"DistinguishedName({self.slash()!r})"

    def __str__(self) -> str:
        return self.slash()

    def __iter__(self) -> Iterator[tuple[Ava, ...]]:
        return iter(self.rdns)

    # -- constructors ---------------------------------------------------
    @classmethod
    def from_x509(cls, name: x509.Name) -> DistinguishedName:
        rdns = []
        for rdn in name.rdns:
            avas = []
            for attr in rdn:
                value = attr.value
                text = value if isinstance(value, str) else "#" + bytes(value).hex()
                avas.append((attr.oid.dotted_string, text))
            rdns.append(tuple(avas))
        return cls(rdns)

    @classmethod
    def parse_slash(cls, text: str) -> DistinguishedName:
        """Parse OpenSSL slash form, e.g. ``/DC=org/DC=example/CN=Jane Doe``."""
        if not text.startswith("/"):
            raise ConfigError(
                f"DN {text!r} is not in slash form",
                hint="write DNs as OpenSSL prints them, starting with '/', e.g. /DC=org/CN=Jane",
            )
        rdns: list[list[list[str]]] = []  # each AVA as [type, value]
        for piece in _split_unescaped(text[1:], "/"):
            avas = _split_unescaped(piece, "+")
            if _type_of(avas[0])[1]:
                rdn: list[list[str]] = []
                rdns.append(rdn)
            else:
                # No '=': the piece continues the previous value (``CN=host/ce.example.org``);
                # any further ``+TYPE=value`` belongs to that same RDN.
                if not rdns:
                    raise ConfigError(f"DN {text!r}: {piece!r} has no '=' (expected TYPE=value)")
                rdn = rdns[-1]
                rdn[-1][1] += "/" + _unescape(avas.pop(0))
            for ava in avas:
                atype, has_eq = _type_of(ava)
                if not has_eq:
                    raise ConfigError(f"DN {text!r}: {ava!r} has no '=' (expected TYPE=value)")
                raw_value = ava[len(atype) + 1 :]
                rdn.append([atype, _unescape(raw_value)])
        if not rdns:
            raise ConfigError(f"DN {text!r} is empty")
        return cls(
            [tuple((_oid_for(t.strip(), dn=text).dotted_string, v) for t, v in rdn) for rdn in rdns]
        )

    @classmethod
    def parse_rfc4514(cls, text: str) -> DistinguishedName:
        """Parse RFC 4514, e.g. ``CN=Jane Doe,DC=example,DC=org``."""
        try:
            name = x509.Name.from_rfc4514_string(text, _RFC4514_PARSE)
        except ValueError as exc:
            raise ConfigError(f"DN {text!r} is not a valid RFC 4514 string: {exc}") from exc
        if not name.rdns:
            raise ConfigError(f"DN {text!r} is empty")
        return cls.from_x509(name)

    @classmethod
    def parse(cls, text: str) -> DistinguishedName:
        """Slash form when the text starts with '/', else RFC 4514."""
        text = _strip_unescaped(text)
        return cls.parse_slash(text) if text.startswith("/") else cls.parse_rfc4514(text)

    # -- printers ---------------------------------------------------------
    def slash(self) -> str:
        out = []
        for rdn in self.rdns:
            out.append(
                "+".join(f"{_NAME_OF.get(oid, oid)}={_escape_slash(value)}" for oid, value in rdn)
            )
        return "/" + "/".join(out)

    def rfc4514(self) -> str:
        return self.to_x509().rfc4514_string(_RFC4514_NAMES)

    def to_x509(self) -> x509.Name:
        try:
            return x509.Name(
                [
                    x509.RelativeDistinguishedName(
                        [x509.NameAttribute(ObjectIdentifier(oid), value) for oid, value in rdn]
                    )
                    for rdn in self.rdns
                ]
            )
        except ValueError as exc:
            raise ConfigError(f"DN {self.slash()!r} cannot be encoded: {exc}") from exc

    def common_name(self) -> str | None:
        """The last CN, for display only (never for trust decisions)."""
        cn = NameOID.COMMON_NAME.dotted_string
        names = [value for rdn in self.rdns for oid, value in rdn if oid == cn]
        return names[-1] if names else None


@functools.lru_cache(maxsize=256)
def display_name(dn: str) -> str:
    """The CN of a slash-form DN, for display only; the DN itself if it has none or does not
    parse (a name shown to people, never used for trust)."""
    try:
        return DistinguishedName.parse_slash(dn).common_name() or dn
    except ConfigError:
        return dn


def _strip_unescaped(text: str) -> str:
    """Strip surrounding blanks, but keep a trailing blank that a backslash escapes."""
    text = text.lstrip()
    stripped = text.rstrip()
    backslashes = len(stripped) - len(stripped.rstrip("\\"))
    if backslashes % 2 and len(stripped) < len(text):
        return text[: len(stripped) + 1]
    return stripped


def _type_of(ava: str) -> tuple[str, bool]:
    """The attribute type before the first unescaped '=' and whether there is one."""
    i = 0
    while i < len(ava):
        if ava[i] == "\\":
            i += 2
            continue
        if ava[i] == "=":
            return ava[:i], True
        i += 1
    return ava, False


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _escape_slash(value: str) -> str:
    """Escape a value for slash form, leaving '/' bare where it reads back the same.

    The parser takes a bare '/' as a continuation of the value when the text
    after it, up to the next bare '/', has no '='. Deciding right to left
    keeps that true for every slash left bare.
    """
    pieces = value.replace("\\", "\\\\").replace("+", "\\+").split("/")
    out = segment = pieces[-1]
    for piece in reversed(pieces[:-1]):
        if "=" in segment:
            out = piece + "\\/" + out
            segment = piece + "\\/" + segment
        else:
            out = piece + "/" + out
            segment = piece
    return out
