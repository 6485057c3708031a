"""CRLs read as RFC 5280 says, and a trust directory with one odd file (issue 9, classes 4, 6).

A CRL can vouch for a certificate only when it carries no critical extension
vmic does not process (in the CRL or an entry), is complete, covers the
certificate (its issuing distribution point), and is current. Each refusal
names what it was. A CRL file or CA file that cannot be read is reported by
name; it never switches revocation checking off for its CA, and a chain that
needed that CA says which file it was. THREATS 15, 37.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from keys.dn import DistinguishedName
from keys.errors import CertificateError, RevokedError
from keys.pki import key_usage
from keys.trust import CrlPolicy, TrustStore
from tests.support import der, hostile
from tests.support.ca import Identity, TestCA, new_key, pem, store, write_trust_dir

ROOT = "/DC=org/DC=vmic-test/CN=CRL Test Root CA"
SIGNER = "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser"
UNKNOWN = ObjectIdentifier("1.3.6.1.4.1.99999.1")
PARTITION = "http://crl.example.org/partition-1.crl"


@pytest.fixture
def ca(now: datetime) -> TestCA:
    return TestCA(ROOT, now=now)


def crl(
    ca: TestCA,
    *extensions: tuple[x509.ExtensionType, bool],
    this_update: datetime | None = None,
    next_update: datetime | None = None,
    revoked: tuple[tuple[int, bool], ...] = (),
) -> x509.CertificateRevocationList:
    """A CRL of ``ca`` with extensions (value, critical) and revoked serials, each with an
    unknown critical entry extension when its flag is set."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(this_update or ca.now - timedelta(hours=1))
        .next_update(next_update or ca.now + timedelta(days=7))
        .add_extension(x509.CRLNumber(7), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    for serial, odd in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial)
        entry = entry.revocation_date(ca.now - timedelta(minutes=1))
        if odd:
            entry = entry.add_extension(x509.UnrecognizedExtension(UNKNOWN, b"\x05\x00"), True)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.key, hashes.SHA256())


def idp(**fields: object) -> x509.IssuingDistributionPoint:
    values: dict[str, object] = {
        "full_name": None,
        "relative_name": None,
        "only_contains_user_certs": False,
        "only_contains_ca_certs": False,
        "only_some_reasons": None,
        "indirect_crl": False,
        "only_contains_attribute_certs": False,
    }
    values.update(fields)
    return x509.IssuingDistributionPoint(**values)  # type: ignore[arg-type]


def leaf_with_distribution_point(ca: TestCA, uri: str | None) -> x509.Certificate:
    key = new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(DistinguishedName.parse_slash(SIGNER).to_x509())
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.now - timedelta(hours=1))
        .not_valid_after(ca.now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
    )
    if uri is not None:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(uri)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


# -- critical extensions vmic does not process --------------------------------------


def test_a_crl_with_an_unknown_critical_extension_does_not_vouch(ca: TestCA, now: datetime) -> None:
    leaf = ca.issue(SIGNER)
    odd = crl(ca, (x509.UnrecognizedExtension(UNKNOWN, b"\x05\x00"), True))
    trust = store([ca], crls=[odd])

    with pytest.raises(RevokedError, match="critical extension vmic does not process"):
        trust.validate(leaf.cert, [], at=now)
    # Not critical: it changes nothing.
    fine = crl(ca, (x509.UnrecognizedExtension(UNKNOWN, b"\x05\x00"), False))
    assert store([ca], crls=[fine]).validate(leaf.cert, [], at=now).leaf == leaf.cert


def test_a_crl_with_an_unknown_critical_entry_extension_does_not_vouch(
    ca: TestCA, now: datetime
) -> None:
    leaf = ca.issue(SIGNER)
    odd = crl(ca, revoked=((12345, True),))

    with pytest.raises(RevokedError, match="in the entry of serial 3039"):
        store([ca], crls=[odd]).validate(leaf.cert, [], at=now)


def test_a_serial_listed_in_a_crl_that_cannot_vouch_is_still_revoked(
    ca: TestCA, now: datetime
) -> None:
    """Fail closed: the CA said so, whatever else the CRL carries."""
    leaf = ca.issue(SIGNER)
    odd = crl(
        ca,
        (x509.UnrecognizedExtension(UNKNOWN, b"\x05\x00"), True),
        revoked=((leaf.cert.serial_number, False),),
    )
    trust = store([ca], crls=[odd, ca.crl()])
    for policy in CrlPolicy:
        with pytest.raises(RevokedError, match="is revoked"):
            trust.validate(leaf.cert, [], at=now, crl=policy)


# -- scope: the issuing distribution point ---------------------------------------------


def test_a_user_certificates_crl_vouches_for_a_signer_but_not_for_a_ca(
    ca: TestCA, now: datetime
) -> None:
    inter = ca.intermediate("/DC=org/DC=vmic-test/CN=CRL Test Intermediate CA")
    leaf = inter.issue(SIGNER)
    users_only = (idp(only_contains_user_certs=True), True)
    trust = store([ca, inter], crls=[crl(inter, users_only), crl(ca, users_only)])

    with pytest.raises(RevokedError, match="covers end-entity certificates only"):
        trust.validate(leaf.cert, leaf.intermediates, at=now)
    # The intermediate's own CRL (for the signer) is enough once the root's covers CAs.
    trust = store([ca, inter], crls=[crl(inter, users_only), ca.crl()])
    assert trust.validate(leaf.cert, leaf.intermediates, at=now).leaf == leaf.cert


@pytest.mark.parametrize(
    ("point", "covered"),
    [(PARTITION, True), ("http://crl.example.org/partition-2.crl", False), (None, False)],
    ids=["same-partition", "other-partition", "no-distribution-point"],
)
def test_a_partitioned_crl_covers_only_its_partition(
    ca: TestCA, now: datetime, point: str | None, covered: bool
) -> None:
    leaf = leaf_with_distribution_point(ca, point)
    partition = (idp(full_name=[x509.UniformResourceIdentifier(PARTITION)]), True)
    trust = store([ca], crls=[crl(ca, partition)])

    if covered:
        assert trust.validate(leaf, [], at=now).leaf == leaf
    else:
        with pytest.raises(RevokedError, match="covers only the certificates of its distri"):
            trust.validate(leaf, [], at=now)
        assert trust.validate(leaf, [], at=now, crl=CrlPolicy.IF_PRESENT).leaf == leaf
        assert store([ca], crls=[crl(ca, partition), ca.crl()]).validate(leaf, [], at=now)


# -- what the message says ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message", "hint"),
    [
        ({"delta": True}, "only a delta CRL", "fetch-crl"),
        ({"this_update": timedelta(hours=2)}, "is not valid before", "clock"),
        ({"next_update": timedelta(days=-1)}, "is stale", "fetch-crl"),
    ],
    ids=["delta-only", "from-the-future", "stale"],
)
def test_an_unusable_crl_is_reported_as_what_it_is(
    ca: TestCA, now: datetime, kwargs: dict[str, object], message: str, hint: str
) -> None:
    leaf = ca.issue(SIGNER)
    extensions = [(x509.DeltaCRLIndicator(6), True)] if kwargs.get("delta") else []
    this_update = kwargs.get("this_update")
    next_update = kwargs.get("next_update")
    assert this_update is None or isinstance(this_update, timedelta)
    assert next_update is None or isinstance(next_update, timedelta)
    odd = crl(
        ca,
        *extensions,
        this_update=now + this_update if this_update else now - timedelta(days=8),
        next_update=now + next_update if next_update else now + timedelta(days=7),
    )

    with pytest.raises(RevokedError, match=message) as info:
        store([ca], crls=[odd]).validate(leaf.cert, [], at=now)
    assert "stale" not in str(info.value) or message == "is stale"
    assert hint in info.value.hint


# -- files of the trust directory that cannot be used -------------------------------------


def test_an_unreadable_crl_file_never_switches_checking_off(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    write_trust_dir(tmp_path, [ca], crls=[])
    (tmp_path / "00000000.r0").write_bytes(
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    )
    trust = TrustStore.from_directory(tmp_path)
    leaf = ca.issue(SIGNER)

    assert [p.split(":")[0] for p in trust.problems] == ["00000000.r0"]
    for policy in CrlPolicy:
        with pytest.raises(
            RevokedError, match=r"the CRL of .* cannot be used: 00000000\.r0"
        ) as info:
            trust.validate(leaf.cert, [], at=now, crl=policy)
        assert "no CRL" not in info.value.message


def test_an_unreadable_crl_named_otherwise_is_matched_by_its_issuer(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    """A CRL whose entry cryptography refuses, under a name that says nothing of its CA."""
    write_trust_dir(tmp_path, [ca], crls=[])
    tbs = der.tbs_of(crl(ca, revoked=((77, False),)).public_bytes(serialization.Encoding.DER))
    revoked = [n for p, n in der.walk(tbs) if n.tag == b"\x02" and n.content == b"\x4d"]
    revoked[0].tag = b"\x04"  # the serial of an entry is no longer an INTEGER
    (tmp_path / "whatever.crl.pem").write_bytes(der.resign(tbs, ca.key))

    trust = TrustStore.from_directory(tmp_path)

    assert [p.split(":")[0] for p in trust.problems] == ["whatever.crl.pem"]
    with pytest.raises(RevokedError, match=r"whatever\.crl\.pem"):
        trust.validate(ca.issue(SIGNER).cert, [], at=now, crl=CrlPolicy.IF_PRESENT)


def test_a_chain_that_needed_an_unusable_ca_file_names_it(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    bystander = TestCA("/DC=org/DC=vmic-test/CN=Bystander CA", now=now)
    write_trust_dir(tmp_path, [bystander])
    tbs = der.tbs_of(ca.cert.public_bytes(serialization.Encoding.DER))
    hostile.duplicate_basic_constraints(tbs)
    (tmp_path / "c0ffee00.0").write_bytes(der.resign(tbs, ca.key))
    (tmp_path / "c0ffee00.r0").write_bytes(ca.crl().public_bytes(serialization.Encoding.PEM))

    trust = TrustStore.from_directory(tmp_path)

    assert [p.split(":")[0] for p in trust.problems] == ["c0ffee00.0"]
    assert "Duplicate" in trust.problems[0]
    with pytest.raises(CertificateError, match=r"the CA it needs is in c0ffee00\.0: not a usable"):
        trust.validate(ca.issue(SIGNER).cert, [], at=now)
    # The rest of the directory works.
    other: Identity = bystander.issue(SIGNER)
    assert trust.validate(other.cert, [], at=now).anchor == bystander.cert


def test_a_ca_file_that_cannot_be_read_at_all_is_named_as_a_suspect(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    bystander = TestCA("/DC=org/DC=vmic-test/CN=Bystander CA", now=now)
    write_trust_dir(tmp_path, [bystander])
    (tmp_path / "c0ffee00.0").write_bytes(pem(ca.cert)[:200])

    trust = TrustStore.from_directory(tmp_path)

    with pytest.raises(CertificateError, match=r"could not be read at all \(c0ffee00\.0\)"):
        trust.validate(ca.issue(SIGNER).cert, [], at=now)


def test_a_fifo_or_folder_in_the_trust_directory_is_reported_and_blocks_nothing(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    write_trust_dir(tmp_path, [ca])
    os.mkfifo(tmp_path / "0f1f0000.0")  # reading it would wait for a writer forever
    (tmp_path / "folder.pem").mkdir()

    trust = TrustStore.from_directory(tmp_path)

    assert sorted(trust.problems) == [
        "0f1f0000.0: unreadable (not a regular file)",
        "folder.pem: unreadable (not a regular file)",
    ]
    assert trust.validate(ca.issue(SIGNER).cert, [], at=now).anchor == ca.cert
