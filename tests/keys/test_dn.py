"""Distinguished names: slash form and RFC 4514 both ways, losslessly; equality on the whole DN.

The pins of THREATS 2 compare whole subject and issuer DNs, so every DN a
grid tool can print must read back as exactly the same RDN sequence, and two
DNs that differ anywhere (an OU, an extra RDN, one character) must differ.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from keys.dn import DistinguishedName
from keys.errors import ConfigError
from tests.support.ca import TestCA

CN = NameOID.COMMON_NAME.dotted_string
UID = NameOID.USER_ID.dotted_string
OU = NameOID.ORGANIZATIONAL_UNIT_NAME.dotted_string
EMAIL = NameOID.EMAIL_ADDRESS.dotted_string

GRID_SERVICE = "/DC=ch/DC=cern/OU=computers/CN=host/ce.example.org"

# Slash-form DNs as OpenSSL and the grid tools print them; each must print back identically.
CANONICAL_SLASH = [
    "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser",
    "/C=DE/O=GermanGrid/OU=KIT/CN=J\u00fcrgen M\u00fcller",
    "/DC=org/DC=example/CN=a+UID=b",
    "/DC=org/CN=Jane+UID=jane+emailAddress=jane@example.org",
    "/O=Example/CN=Jane Doe/emailAddress=jane@example.org",
    GRID_SERVICE,
    "/DC=ch/DC=cern/OU=computers/CN=host/ce.example.org/CN=second/part",
    "/CN=a+UID=b/c",
    "/CN=a\\/b=c",
    "/CN=x\\/y=z/OU=after",
    "/CN=a\\+b",
    "/CN=a\\+UID=b",
    "/CN=back\\\\slash",
    "/CN=ends with backslash\\\\",
    "/CN=a=b",
    "/CN=key=value=more",
    "/CN=trailing slash/",
    "/CN=/leading slash",
    "/CN=double//slash",
    '/O=Example, Inc./CN=comma, semicolon; <angle> "quote"',
    "/CN=#not hex",
    "/CN= leading and trailing spaces ",
    "/1.2.3.4.5=dotted oid value",
    "/serialNumber=12345/title=Dr./GN=Jane/SN=Doe/initials=JD",
    "/street=1 Main St/postalCode=12345/L=Town/ST=State",
    "/pseudonym=jd/dnQualifier=q/generationQualifier=III/businessCategory=Research",
]


def test_grid_service_dn_reads_the_piece_without_equals_as_part_of_the_cn() -> None:
    dn = DistinguishedName.parse_slash(GRID_SERVICE)

    assert dn.rdns[-1] == ((CN, "host/ce.example.org"),)
    assert len(dn.rdns) == 4
    assert dn.common_name() == "host/ce.example.org"


def test_multi_valued_rdn_is_one_rdn_with_two_attributes() -> None:
    dn = DistinguishedName.parse_slash("/DC=org/CN=a+UID=b")

    assert dn.rdns[-1] == ((CN, "a"), (UID, "b"))
    assert len(dn.rdns) == 2


def test_escaped_plus_slash_and_backslash_stand_for_themselves() -> None:
    assert DistinguishedName.parse_slash("/CN=a\\+b").rdns == (((CN, "a+b"),),)
    assert DistinguishedName.parse_slash("/CN=a\\/b=c").rdns == (((CN, "a/b=c"),),)
    assert DistinguishedName.parse_slash("/CN=a\\\\b").rdns == (((CN, "a\\b"),),)
    # An escaped '+' is part of the value, not the start of a second attribute.
    assert DistinguishedName.parse_slash("/CN=a\\+UID=b").rdns == (((CN, "a+UID=b"),),)


def test_value_may_contain_equals_signs() -> None:
    assert DistinguishedName.parse_slash("/CN=key=value=more").rdns == (((CN, "key=value=more"),),)


def test_email_address_attribute_and_its_aliases_are_the_same_attribute() -> None:
    canonical = DistinguishedName.parse_slash("/CN=Jane/emailAddress=jane@example.org")

    assert canonical.rdns[-1] == ((EMAIL, "jane@example.org"),)
    assert DistinguishedName.parse_slash("/CN=Jane/E=jane@example.org") == canonical
    assert DistinguishedName.parse_slash("/CN=Jane/Email=jane@example.org") == canonical
    assert canonical.slash() == "/CN=Jane/emailAddress=jane@example.org"
    assert canonical.rfc4514() == "emailAddress=jane@example.org,CN=Jane"


def test_attribute_type_names_are_case_insensitive_but_values_are_not() -> None:
    assert DistinguishedName.parse_slash("/dc=org/cn=Jane") == DistinguishedName.parse_slash(
        "/DC=org/CN=Jane"
    )
    assert DistinguishedName.parse_slash("/DC=org/CN=jane") != DistinguishedName.parse_slash(
        "/DC=org/CN=Jane"
    )


def test_escaped_forms_that_need_no_escape_normalise_on_printing() -> None:
    dn = DistinguishedName.parse_slash("/CN=a\\=b/OU=c\\/d")

    assert dn.rdns == (((CN, "a=b"),), ((OU, "c/d"),))
    assert dn.slash() == "/CN=a=b/OU=c/d"
    assert DistinguishedName.parse_slash(dn.slash()) == dn


@pytest.mark.parametrize("text", CANONICAL_SLASH)
def test_slash_form_prints_back_exactly(text: str) -> None:
    assert DistinguishedName.parse_slash(text).slash() == text


@pytest.mark.parametrize("text", CANONICAL_SLASH)
def test_rfc4514_round_trip_is_lossless(text: str) -> None:
    dn = DistinguishedName.parse_slash(text)

    rfc = dn.rfc4514()
    back = DistinguishedName.parse_rfc4514(rfc)

    assert back == dn
    assert back.rdns == dn.rdns


@pytest.mark.parametrize("text", CANONICAL_SLASH)
def test_x509_name_round_trip_is_lossless(text: str) -> None:
    dn = DistinguishedName.parse_slash(text)

    name = dn.to_x509()
    der = name.public_bytes()

    assert DistinguishedName.from_x509(name) == dn
    assert DistinguishedName.from_x509(name).rdns == dn.rdns
    assert len(name.rdns) == len(dn.rdns)
    assert der == DistinguishedName.from_x509(name).to_x509().public_bytes()


def test_parse_tells_the_two_forms_apart_and_ignores_surrounding_blanks() -> None:
    slash = DistinguishedName.parse_slash("/DC=org/CN=a+UID=b")

    assert DistinguishedName.parse("  /DC=org/CN=a+UID=b\n") == slash
    assert DistinguishedName.parse(" CN=a+UID=b,DC=org ") == slash


def test_rfc4514_reverses_the_rdn_order() -> None:
    slash = DistinguishedName.parse_slash("/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser")

    assert slash.rfc4514() == "CN=Jane Endorser,OU=Users,DC=vmic-test,DC=org"
    assert DistinguishedName.parse_rfc4514("CN=Jane Endorser,OU=Users,DC=vmic-test,DC=org") == slash


def test_from_x509_reads_a_cryptography_name_built_elsewhere() -> None:
    name = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "org")]),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "host/ce.example.org"),
                    x509.NameAttribute(NameOID.USER_ID, "svc"),
                ]
            ),
        ]
    )

    dn = DistinguishedName.from_x509(name)

    assert dn == DistinguishedName.parse_slash("/DC=org/CN=host\\/ce.example.org+UID=svc")
    assert dn.to_x509() == name


# Built from (OID, value) pairs rather than text, so that the printer has to find the
# escapes itself. Each must read back as the same DN from its own slash output.
TRICKY_RDNS: list[list[list[tuple[str, str]]]] = [
    [[(CN, "a/b")]],
    [[(CN, "a/b=c")]],
    [[(CN, "a+b")]],
    [[(CN, "a\\b")]],
    [[(CN, "/")]],
    [[(CN, "a/")], [(OU, "b")]],
    [[(CN, "a/b+c")]],
    [[(CN, "a/b+c=d")]],
    [[(CN, "a"), (UID, "b/c")]],
    [[(CN, "a"), (UID, "b/c=d")]],
    [[(CN, "x=y"), (UID, "z")]],
    [[(CN, "host/ce.example.org")], [(CN, "svc/x")]],
    [[(CN, " spaced ")], [(OU, "#x")]],
]


@pytest.mark.parametrize("rdns", TRICKY_RDNS, ids=repr)
def test_printed_slash_form_reads_back_as_the_same_dn(rdns: list[list[tuple[str, str]]]) -> None:
    dn = DistinguishedName(rdns)

    printed = dn.slash()

    assert DistinguishedName.parse_slash(printed) == dn, printed
    assert DistinguishedName.parse_rfc4514(dn.rfc4514()) == dn


@pytest.mark.parametrize(
    "first_value", ["host/ce.example.org", "a/", "a/b/c"], ids=["service", "trailing", "two"]
)
def test_slash_in_first_value_of_multi_valued_rdn_reads_back_as_two_attributes(
    first_value: str,
) -> None:
    two_attributes = DistinguishedName([[(CN, first_value), (UID, "svc")]])
    one_attribute = DistinguishedName([[(CN, first_value + "+UID=svc")]])

    printed = two_attributes.slash()

    assert two_attributes != one_attribute
    assert DistinguishedName.parse_slash(printed) == two_attributes, printed
    assert DistinguishedName.parse_slash(one_attribute.slash()) == one_attribute


def test_parse_keeps_an_escaped_trailing_space_of_an_rfc4514_value() -> None:
    dn = DistinguishedName([[(CN, "Jane Endorser ")]])
    rfc = dn.rfc4514()

    assert rfc == "CN=Jane Endorser\\ "
    assert DistinguishedName.parse_rfc4514(rfc) == dn
    assert DistinguishedName.parse(rfc) == dn


def test_order_inside_a_multi_valued_rdn_is_irrelevant_for_equality() -> None:
    ab = DistinguishedName.parse_slash("/DC=org/CN=a+UID=b")
    ba = DistinguishedName.parse_slash("/DC=org/UID=b+CN=a")

    assert ab == ba
    assert hash(ab) == hash(ba)
    assert len({ab, ba}) == 1


def test_order_of_rdns_matters() -> None:
    assert DistinguishedName.parse_slash("/O=a/OU=b/CN=c") != DistinguishedName.parse_slash(
        "/OU=b/O=a/CN=c"
    )


@pytest.mark.parametrize(
    "other",
    [
        "/DC=org/DC=vmic-test/OU=Robots/CN=Jane Endorser",  # another OU, same CN
        "/DC=org/DC=vmic-test/CN=Jane Endorser",  # an RDN missing
        "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser/CN=proxy",  # an RDN added
        "/DC=org/DC=vmic-test/OU=Users/OU=Extra/CN=Jane Endorser",  # an RDN inserted
        "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser+UID=jane",  # an attribute added
        "/DC=org/DC=vmic-evil/OU=Users/CN=Jane Endorser",  # another DC
        "/DC=org/DC=vmic-test/OU=Users/CN=jane endorser",  # case of the value
        "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser ",  # trailing space
        "/DC=org/DC=vmic-test/OU=Users/UID=Jane Endorser",  # another attribute type
        "/DC=org/DC=vmic-test/OU=Users+CN=Jane Endorser",  # RDNs merged
    ],
)
def test_dns_differing_anywhere_are_not_equal(other: str) -> None:
    pinned = DistinguishedName.parse_slash("/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser")

    assert DistinguishedName.parse_slash(other) != pinned
    assert DistinguishedName.parse_rfc4514(DistinguishedName.parse_slash(other).rfc4514()) != pinned


def test_same_subject_from_two_issuers_is_told_apart_by_the_issuer_dn(
    root_ca: TestCA,
) -> None:
    other_ca = TestCA("/DC=org/DC=vmic-test/CN=Another Test CA", now=root_ca.now)
    subject = "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser"

    mine = root_ca.issue(subject)
    theirs = other_ca.issue(subject)

    assert mine.subject == theirs.subject
    assert mine.issuer != theirs.issuer


def test_dn_is_not_equal_to_its_string() -> None:
    dn = DistinguishedName.parse_slash("/CN=x")

    assert dn != "/CN=x"
    assert str(dn) == "/CN=x"
    assert repr(dn) == "DistinguishedName('/CN=x')"


def test_common_name_is_the_last_cn() -> None:
    dn = DistinguishedName.parse_slash("/DC=org/CN=Jane Endorser/CN=12345")

    assert dn.common_name() == "12345"
    assert DistinguishedName.parse_slash("/DC=org/O=No CN").common_name() is None


def test_certificate_subject_reads_back_as_the_dn_it_was_issued_for(root_ca: TestCA) -> None:
    for text in [GRID_SERVICE, "/DC=org/DC=example/CN=a+UID=b", "/CN=a\\+b/emailAddress=x@y.z"]:
        identity = root_ca.issue(text)

        assert identity.subject == DistinguishedName.parse_slash(text)
        assert identity.subject.slash() == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("CN=x/OU=y", "not in slash form"),
        ("DC=org/CN=x", "not in slash form"),
        ("", "not in slash form"),
        ("/", "has no '='"),
        ("//CN=x", "has no '='"),
        ("/FOO=bar", "unknown attribute type 'FOO'"),
        ("/=value", "unknown attribute type ''"),
        ("/CN=a+", "has no '='"),
        ("/CN=a+b", "'b' has no '='"),
        ("/CN=x/1.2.3=dotted/Bogus=y", "unknown attribute type 'Bogus'"),
    ],
)
def test_bad_slash_dn_raises_config_error(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        DistinguishedName.parse_slash(text)

    assert fragment in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("text", ["", "   ", "CN=a,,", "FOO=bar", "garbage", "CN"])
def test_bad_rfc4514_dn_raises_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        DistinguishedName.parse(text)

    assert repr(text.strip()) in info.value.message


def test_empty_rdn_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty RDN"):
        DistinguishedName([[(CN, "a")], []])


def test_unencodable_value_raises_config_error_when_converted() -> None:
    # X.509 country names are exactly two letters; cryptography refuses anything else.
    dn = DistinguishedName.parse_slash("/C=Germany/CN=x")

    with pytest.raises(ConfigError, match="cannot be encoded"):
        dn.to_x509()


# -- OpenSSL as yardstick ----------------------------------------------------

OPENSSL = shutil.which("openssl")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize(
    "text",
    [
        "/DC=ch/DC=cern/OU=computers/CN=host\\/ce.example.org",
        "/DC=org/DC=example/CN=a+UID=b/emailAddress=jane@example.org",
        "/C=DE/O=GermanGrid/OU=KIT/CN=Jane Doe",
    ],
)
def test_openssl_made_certificate_matches_the_parsed_dn_in_both_forms(
    text: str, tmp_path: Path
) -> None:
    assert OPENSSL is not None
    cert_path = tmp_path / "cert.pem"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(tmp_path / "key.pem"), "-out", str(cert_path),
            "-days", "1", "-multivalue-rdn", "-subj", text,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())

    def openssl_subject(nameopt: str) -> str:
        out = subprocess.run(
            [OPENSSL, "x509", "-in", str(cert_path), "-noout", "-subject", "-nameopt", nameopt],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.strip().removeprefix("subject=").strip()

    from_cert = DistinguishedName.from_x509(cert.subject)

    assert from_cert == DistinguishedName.parse_slash(text)
    assert DistinguishedName.parse_slash(openssl_subject("compat")) == from_cert
    assert DistinguishedName.parse_rfc4514(openssl_subject("RFC2253")) == from_cert
