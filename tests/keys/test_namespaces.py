"""IGTF namespace files: a CA signing outside its namespace is not trusted (THREATS 16)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from feeds.verify import verify_list
from keys.dn import DistinguishedName
from keys.errors import CertificateError, ConfigError
from keys.fileio import list_directory
from keys.namespaces import parse_namespaces, parse_signing_policy
from keys.trust import TrustStore
from tests.support.ca import TestCA, write_trust_dir
from tests.support.lists import image_list, sign

CA = "/DC=org/DC=vmic-test/CN=Namespace Test CA"
INSIDE = "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser"
OUTSIDE = "/DC=org/DC=elsewhere/OU=Users/CN=Jane Endorser"


@pytest.fixture
def ca(now: datetime) -> TestCA:
    return TestCA(CA, now=now)


def trust_with(tmp_path: Path, ca: TestCA, **files: str) -> TrustStore:
    folder = write_trust_dir(tmp_path / "trust", [ca])
    for suffix, text in files.items():
        (folder / f"00000000.{suffix}").write_text(text)
    return TrustStore.from_directory(folder)


NAMESPACES = f"""\
##############################################################################
#NAMESPACES-VERSION: 1.0
#
# @(#)00000000.namespaces
# CA alias    : vmic test
TO Issuer "{CA}" \\
  PERMIT Subject "/DC=org/DC=vmic-test/.*"
"""

SIGNING_POLICY = f"""\
# ca-signing-policy.conf, see ca-signing-policy.doc for more information
access_id_CA      X509         '{CA}'
pos_rights        globus        CA:sign
cond_subjects     globus       '"/DC=org/DC=vmic-test/*"'
"""


def test_a_subject_inside_the_namespace_is_trusted(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    trust = trust_with(tmp_path, ca, namespaces=NAMESPACES)

    trust.validate(ca.issue(INSIDE).cert, [], at=now)

    assert trust.problems == ()


def test_a_namespace_that_excludes_the_endorser_rejects_the_list(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    excluding = NAMESPACES.replace("/DC=org/DC=vmic-test/.*", "/DC=org/DC=other/.*")
    trust = trust_with(tmp_path, ca, namespaces=excluding)
    endorser = ca.issue(INSIDE)
    raw = sign(image_list(endorser, now=now), endorser)

    with pytest.raises(CertificateError, match="outside the namespace"):
        verify_list(raw, trust=trust, pins=None, now=now)


def test_a_ca_issuing_outside_its_namespace_is_not_trusted(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    trust = trust_with(tmp_path, ca, namespaces=NAMESPACES)

    with pytest.raises(CertificateError, match=r"00000000\.namespaces"):
        trust.validate(ca.issue(OUTSIDE).cert, [], at=now)


def test_deny_wins_over_permit(tmp_path: Path, ca: TestCA, now: datetime) -> None:
    deny = 'DENY Subject "/DC=org/DC=vmic-test/OU=Users/.*" \\\n  '
    permit = 'PERMIT Subject "/DC=org/DC=vmic-test/.*"'
    denying = NAMESPACES.replace(permit, deny + permit)
    trust = trust_with(tmp_path, ca, namespaces=denying)

    trust.validate(ca.issue("/DC=org/DC=vmic-test/OU=Hosts/CN=ce.example.org").cert, [], at=now)
    with pytest.raises(CertificateError):
        trust.validate(ca.issue(INSIDE).cert, [], at=now)


def test_a_signing_policy_alone_constrains_the_ca(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    trust = trust_with(tmp_path, ca, signing_policy=SIGNING_POLICY)

    trust.validate(ca.issue(INSIDE).cert, [], at=now)
    with pytest.raises(CertificateError, match="signing_policy"):
        trust.validate(ca.issue(OUTSIDE).cert, [], at=now)


def test_the_namespaces_file_decides_when_both_exist(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    narrow_policy = SIGNING_POLICY.replace("/DC=org/DC=vmic-test/*", "/DC=org/DC=nowhere/*")
    trust = trust_with(tmp_path, ca, namespaces=NAMESPACES, signing_policy=narrow_policy)

    trust.validate(ca.issue(INSIDE).cert, [], at=now)


def test_an_intermediate_outside_the_roots_namespace_is_not_trusted(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    intermediate = ca.intermediate("/DC=org/DC=elsewhere/CN=Rogue Sub CA")
    signer = intermediate.issue("/DC=org/DC=elsewhere/CN=Jane Endorser")
    folder = write_trust_dir(tmp_path / "trust", [ca, intermediate])
    (folder / "00000000.namespaces").write_text(NAMESPACES)
    trust = TrustStore.from_directory(folder)

    with pytest.raises(CertificateError, match="Rogue Sub CA"):
        trust.validate(signer.cert, signer.intermediates, at=now)


def test_a_ca_without_namespace_files_is_not_constrained(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    other = NAMESPACES.replace(CA, "/DC=org/DC=vmic-test/CN=Some Other CA")
    trust = trust_with(tmp_path, ca, namespaces=other)

    trust.validate(ca.issue(OUTSIDE).cert, [], at=now)


def test_namespaces_parse_continuations_comments_and_several_rules() -> None:
    text = (
        '# comment\nTO Issuer "/C=DE/O=GermanGrid/CN=GridKa-CA" \\\n'
        '  PERMIT Subject "/C=DE/O=GermanGrid/.*" \\\n'
        '  DENY Subject "/C=DE/O=GermanGrid/OU=Bad/.*"\n'
    )
    (space,) = parse_namespaces(text, "x.namespaces").values()

    assert space.allows(DistinguishedName.parse_slash("/C=DE/O=GermanGrid/OU=DESY/CN=Owen"))
    assert not space.allows(DistinguishedName.parse_slash("/C=DE/O=GermanGrid/OU=Bad/CN=X"))
    assert not space.allows(DistinguishedName.parse_slash("/C=FR/O=GermanGrid/CN=X"))


def test_signing_policy_globs_match_only_with_star() -> None:
    text = (
        "access_id_CA X509 '/C=DE/O=GermanGrid/CN=GridKa-CA'\n"
        'cond_subjects globus \'"/C=DE/O=GermanGrid/*" "/C=DE/O=Other.Grid/CN=?"\'\n'
    )
    (space,) = parse_signing_policy(text, "x.signing_policy").values()

    assert space.allows(DistinguishedName.parse_slash("/C=DE/O=GermanGrid/CN=anyone"))
    assert space.allows(DistinguishedName.parse_slash("/C=DE/O=Other.Grid/CN=?"))
    assert not space.allows(DistinguishedName.parse_slash("/C=DE/O=OtherXGrid/CN=?"))
    assert not space.allows(DistinguishedName.parse_slash("/C=DE/O=Other.Grid/CN=a"))


@pytest.mark.parametrize(
    "text",
    ['TO Issuer "/C=DE/CN=CA"\n', 'TO Issuer "/C=DE/CN=CA" PERMIT Subject "("\n', "nonsense\n"],
)
def test_malformed_namespaces_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_namespaces(text, "x.namespaces")


def test_a_fifo_named_as_a_namespaces_file_is_a_problem_not_a_hang(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    """Reading a FIFO would wait for a writer for ever: it is reported and constrains
    nothing, and the real signing policy beside it still decides."""
    folder = write_trust_dir(tmp_path / "trust", [ca])
    os.mkfifo(folder / "00000000.namespaces")
    (folder / "00000000.signing_policy").write_text(SIGNING_POLICY)

    trust = TrustStore.from_directory(folder)

    assert trust.problems == ("00000000.namespaces: unreadable (not a regular file)",)
    assert trust.validate(ca.issue(INSIDE).cert, [], at=now).anchor == ca.cert
    with pytest.raises(CertificateError, match=r"00000000\.signing_policy"):
        trust.validate(ca.issue(OUTSIDE).cert, [], at=now)


def test_a_trust_directory_that_cannot_be_listed_is_a_config_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "certificates"
    not_a_folder.write_text("a file where the folder should be")

    with pytest.raises(ConfigError, match=r"cannot list the trust directory .*certificates"):
        list_directory(not_a_folder, what="the trust directory")
    with pytest.raises(ConfigError, match="is not a folder"):
        TrustStore.from_directory(not_a_folder)


def test_a_pattern_python_warns_about_is_read_without_a_word_on_stderr(
    tmp_path: Path, ca: TestCA, now: datetime, capfd: pytest.CaptureFixture[str]
) -> None:
    """`[[` is a set holding `[` to OpenSSL and to Python today; Python warns that it may
    not stay so. The rule still applies, and nothing is printed."""
    rule = f'TO Issuer "{CA}" PERMIT Subject "/DC=org/DC=vmic-test/OU=Users/[[C]N=.*"\n'
    trust = trust_with(tmp_path, ca, namespaces=rule)

    trust.validate(ca.issue(INSIDE).cert, [], at=now)
    with pytest.raises(CertificateError, match="outside the namespace"):
        trust.validate(ca.issue("/DC=org/DC=vmic-test/OU=Users/O=Jane").cert, [], at=now)

    assert capfd.readouterr() == ("", "")
