"""The trust store: CApath directories, chain validation at a given time, CRLs.

THREATS 1 (untrusted or self-signed signer), 7 (weak keys), 14 (validity
periods), 15 (revocation, CRL signature, stale or missing CRLs), 17 (malformed
chains) and 18 (a renewed certificate next to a revoked old one). Every CA here
is created per test (or per module, when nothing revokes under it), so no
revocation leaks into the shared session fixtures.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from keys.certs import subject_dn
from keys.errors import CertificateError, ConfigError, RevokedError
from keys.trust import CrlPolicy, TrustStore
from tests.support.ca import (
    TestCA,
    new_key,
    pem,
    self_signed_identity,
    store,
    write_trust_dir,
)

ROOT = "/DC=org/DC=vmic-test/CN=Trust Test Root CA"
INTER = "/DC=org/DC=vmic-test/CN=Trust Test Intermediate CA"
SIGNER = "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser"


@pytest.fixture
def ca(now: datetime) -> TestCA:
    return TestCA(ROOT, now=now)


@pytest.fixture
def inter(ca: TestCA) -> TestCA:
    return ca.intermediate(INTER)


def crl_with(
    ca: TestCA, extension: x509.ExtensionType, *, revoked: tuple[int, ...] = ()
) -> x509.CertificateRevocationList:
    """A current CRL of ``ca``, genuinely signed, carrying one more (critical) extension."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(ca.now - timedelta(hours=1))
        .next_update(ca.now + timedelta(days=7))
        .add_extension(x509.CRLNumber(2), critical=False)
        .add_extension(extension, critical=True)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(ca.now - timedelta(minutes=1))
            .build()
        )
    return builder.sign(ca.key, hashes.SHA256())


def _idp(**narrowing: object) -> x509.IssuingDistributionPoint:
    fields: dict[str, object] = {
        "full_name": None,
        "relative_name": None,
        "only_contains_user_certs": False,
        "only_contains_ca_certs": False,
        "only_some_reasons": None,
        "indirect_crl": False,
        "only_contains_attribute_certs": False,
    }
    fields.update(narrowing)
    return x509.IssuingDistributionPoint(**fields)  # type: ignore[arg-type]


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def crl_der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


# -- loading a trust directory ------------------------------------------------


def test_directory_loads_hashed_and_pem_certificates_and_both_crl_spellings(
    tmp_path: Path, now: datetime
) -> None:
    hashed, named = TestCA(ROOT, now=now), TestCA("/DC=org/CN=Named Root", now=now)
    (tmp_path / "1a2b3c4d.0").write_bytes(pem(hashed.cert))
    (tmp_path / "1a2b3c4d.r0").write_bytes(crl_pem(hashed.crl()))
    (tmp_path / "named.pem").write_bytes(pem(named.cert))
    (tmp_path / "named.crl.pem").write_bytes(crl_der(named.crl()))  # DER under a PEM name

    trust = TrustStore.from_directory(tmp_path)

    assert {c.subject for c in trust.anchors} == {hashed.cert.subject, named.cert.subject}
    assert trust.problems == ()
    assert trust.source == str(tmp_path)
    # Both CRLs were loaded: validation under crl=REQUIRE passes for both CAs.
    for issuer in (hashed, named):
        leaf = issuer.issue(SIGNER)
        chain = trust.validate(leaf.cert, [], at=now, crl=CrlPolicy.REQUIRE)
        assert chain.leaf == leaf.cert
        assert chain.anchor == issuer.cert


def test_directory_ignores_igtf_side_files_and_unrelated_files(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    write_trust_dir(tmp_path, [ca])
    garbage = b"this is not a certificate\n"
    for name in [
        "00000000.info",
        "00000000.crl_url",
        "README",
        "index.html",
        "00000000.0.bak",
        "policy-igtf-classic.info",
    ]:
        (tmp_path / name).write_bytes(garbage)
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "key.pem").write_bytes(garbage)

    trust = TrustStore.from_directory(tmp_path)

    assert trust.problems == ()
    assert [c.subject for c in trust.anchors] == [ca.cert.subject]
    trust.validate(ca.issue(SIGNER).cert, [], at=now)


def test_unreadable_namespace_files_are_reported_and_constrain_nothing(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    write_trust_dir(tmp_path, [ca])
    (tmp_path / "00000000.namespaces").write_bytes(b"this is not a namespaces file\n")
    (tmp_path / "00000000.signing_policy").write_bytes(b"cond_subjects globus '\"/x*\"'\n")

    trust = TrustStore.from_directory(tmp_path)

    assert [p.split(":")[0] for p in trust.problems] == [
        "00000000.namespaces",
        "00000000.signing_policy",
    ]
    trust.validate(ca.issue(SIGNER).cert, [], at=now)


def test_same_certificate_under_two_names_is_loaded_once(
    tmp_path: Path, ca: TestCA, inter: TestCA
) -> None:
    (tmp_path / "root.pem").write_bytes(pem(ca.cert))
    (tmp_path / "0badcafe.0").symlink_to(tmp_path / "root.pem")
    (tmp_path / "deadbeef.0").write_bytes(pem(ca.cert))
    (tmp_path / "inter.pem").write_bytes(pem(inter.cert))
    (tmp_path / "12345678.0").write_bytes(pem(inter.cert))

    trust = TrustStore.from_directory(tmp_path)

    assert trust.anchors == [ca.cert]
    assert trust.intermediates == [inter.cert]


def test_malformed_files_are_recorded_as_problems_and_loading_goes_on(
    tmp_path: Path, ca: TestCA, now: datetime
) -> None:
    write_trust_dir(tmp_path, [ca])
    (tmp_path / "bad.pem").write_bytes(
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    (tmp_path / "abcdef01.0").write_bytes(b"\x00\x01 not DER either")
    (tmp_path / "abcdef01.r0").write_bytes(
        b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    )
    (tmp_path / "broken.crl.pem").write_bytes(b"garbage")

    trust = TrustStore.from_directory(tmp_path)

    assert [c.subject for c in trust.anchors] == [ca.cert.subject]
    assert sorted(p.split(":")[0] for p in trust.problems) == [
        "abcdef01.0",
        "abcdef01.r0",
        "bad.pem",
        "broken.crl.pem",
    ]
    assert any("not a usable CRL" in p for p in trust.problems)
    assert any("not a usable certificate" in p for p in trust.problems)
    # The good CRL still counts.
    trust.validate(ca.issue(SIGNER).cert, [], at=now, crl=CrlPolicy.REQUIRE)


def test_directory_without_a_ca_certificate_is_a_config_error(tmp_path: Path, ca: TestCA) -> None:
    leaf = ca.issue(SIGNER)
    (tmp_path / "leaf.pem").write_bytes(pem(leaf.cert))  # an end-entity certificate is no CA
    (tmp_path / "00000000.r0").write_bytes(crl_pem(ca.crl()))
    (tmp_path / "00000000.info").write_text("alias = test\n")

    with pytest.raises(ConfigError, match="holds no usable CA certificates"):
        TrustStore.from_directory(tmp_path)


def test_empty_or_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no usable CA certificates"):
        TrustStore.from_directory(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        TrustStore.from_directory(tmp_path / "missing")


def test_directory_with_300_cas_loads_and_validates(tmp_path: Path, now: datetime) -> None:
    cas = [TestCA(f"/DC=org/DC=igtf/CN=Test CA {n:03d}", now=now) for n in range(300)]
    write_trust_dir(tmp_path, cas)

    trust = TrustStore.from_directory(tmp_path)

    assert len(trust.anchors) == 300
    assert trust.problems == ()
    leaf = cas[217].issue(SIGNER)
    assert trust.validate(leaf.cert, [], at=now).anchor == cas[217].cert


# -- chains ---------------------------------------------------------------------


def test_chain_through_an_intermediate_validates(ca: TestCA, inter: TestCA, now: datetime) -> None:
    leaf = inter.issue(SIGNER)

    chain = store([ca, inter]).validate(leaf.cert, leaf.intermediates, at=now)

    assert chain.certificates == (leaf.cert, inter.cert, ca.cert)
    assert chain.leaf == leaf.cert
    assert chain.anchor == ca.cert
    assert chain.at == now


def test_intermediate_found_in_the_trust_store_need_not_be_sent(
    ca: TestCA, inter: TestCA, now: datetime
) -> None:
    trust = TrustStore([ca.cert, inter.cert], [ca.crl(), inter.crl()])
    leaf = inter.issue(SIGNER)

    assert trust.validate(leaf.cert, [], at=now).certificates == (leaf.cert, inter.cert, ca.cert)


def test_two_level_intermediate_chain_validates(ca: TestCA, inter: TestCA, now: datetime) -> None:
    sub = inter.intermediate("/DC=org/DC=vmic-test/CN=Trust Test Sub CA")
    leaf = sub.issue(SIGNER)

    chain = store([ca, inter, sub]).validate(leaf.cert, leaf.intermediates, at=now)

    assert chain.certificates == (leaf.cert, sub.cert, inter.cert, ca.cert)


def test_ecdsa_and_rsa_signers_are_both_accepted(ca: TestCA, now: datetime) -> None:
    trust = store([ca])
    for identity in (ca.issue(SIGNER), ca.issue(SIGNER, key_kind="rsa", rsa_bits=2048)):
        assert trust.validate(identity.cert, [], at=now).leaf == identity.cert


@pytest.mark.parametrize(
    ("not_before", "not_after", "fragment"),
    [
        (timedelta(days=-400), timedelta(days=-1), "expired on"),
        (timedelta(days=-400), timedelta(seconds=0), "expired on"),  # not_after is exclusive
        (timedelta(days=1), timedelta(days=400), "is not valid before"),
        (timedelta(seconds=1), timedelta(days=400), "is not valid before"),
    ],
    ids=["expired", "expires-now", "not-yet-valid", "valid-in-one-second"],
)
def test_signer_outside_its_validity_period_is_rejected(
    ca: TestCA, now: datetime, not_before: timedelta, not_after: timedelta, fragment: str
) -> None:
    leaf = ca.issue(SIGNER, not_before=now + not_before, not_after=now + not_after)

    with pytest.raises(CertificateError, match=fragment) as info:
        store([ca]).validate(leaf.cert, [], at=now)

    assert "Jane Endorser" in info.value.message
    assert not isinstance(info.value, RevokedError)


def test_signer_is_valid_from_its_first_second_to_just_before_its_last(
    ca: TestCA, now: datetime
) -> None:
    leaf = ca.issue(SIGNER, not_before=now, not_after=now + timedelta(days=1))
    trust = store([ca])

    trust.validate(leaf.cert, [], at=now)
    trust.validate(leaf.cert, [], at=now + timedelta(days=1) - timedelta(seconds=1))


def test_expired_intermediate_is_rejected(ca: TestCA, now: datetime) -> None:
    old = ca.intermediate(
        INTER, not_before=now - timedelta(days=800), not_after=now - timedelta(days=1)
    )
    leaf = old.issue(SIGNER)

    with pytest.raises(CertificateError, match="Intermediate CA expired on"):
        store([ca, old]).validate(leaf.cert, leaf.intermediates, at=now)


def test_not_yet_valid_intermediate_is_rejected(ca: TestCA, now: datetime) -> None:
    future = ca.intermediate(INTER, not_before=now + timedelta(days=1))
    leaf = future.issue(SIGNER)

    with pytest.raises(CertificateError, match="Intermediate CA is not valid before"):
        store([ca, future]).validate(leaf.cert, leaf.intermediates, at=now)


def test_expired_intermediate_kept_in_the_trust_store_is_not_used(
    ca: TestCA, now: datetime
) -> None:
    old = ca.intermediate(
        INTER, not_before=now - timedelta(days=800), not_after=now - timedelta(days=1)
    )
    leaf = old.issue(SIGNER)
    trust = TrustStore([ca.cert, old.cert], [ca.crl(), old.crl()])

    with pytest.raises(CertificateError, match="does not chain"):
        trust.validate(leaf.cert, [], at=now)


def test_expired_root_is_rejected(now: datetime) -> None:
    root = TestCA(
        ROOT, now=now, not_before=now - timedelta(days=800), not_after=now - timedelta(days=1)
    )
    leaf = root.issue(SIGNER)

    with pytest.raises(CertificateError, match="does not chain"):
        store([root]).validate(leaf.cert, [], at=now)


# -- revocation -------------------------------------------------------------------


def test_revoked_signer_is_rejected(ca: TestCA, now: datetime) -> None:
    leaf = ca.issue(SIGNER)
    ca.revoke(leaf.cert)

    with pytest.raises(RevokedError, match=f"serial {leaf.cert.serial_number:X}\\) is revoked"):
        store([ca]).validate(leaf.cert, [], at=now)


def test_revoked_intermediate_is_rejected(ca: TestCA, inter: TestCA, now: datetime) -> None:
    leaf = inter.issue(SIGNER)
    ca.revoke(inter.cert)

    with pytest.raises(RevokedError, match=r"Intermediate CA .*is revoked"):
        store([ca, inter]).validate(leaf.cert, leaf.intermediates, at=now)


def test_revoked_signer_is_rejected_under_if_present_too(ca: TestCA, now: datetime) -> None:
    leaf = ca.issue(SIGNER)
    ca.revoke(leaf.cert)

    with pytest.raises(RevokedError, match="is revoked"):
        store([ca]).validate(leaf.cert, [], at=now, crl=CrlPolicy.IF_PRESENT)


def test_revoked_serial_in_a_stale_crl_is_still_rejected_under_if_present(
    ca: TestCA, now: datetime
) -> None:
    leaf = ca.issue(SIGNER)
    ca.revoke(leaf.cert)
    stale = ca.crl(this_update=now - timedelta(days=30), next_update=now - timedelta(days=1))

    with pytest.raises(RevokedError, match="is revoked"):
        store([ca], crls=[stale]).validate(leaf.cert, [], at=now, crl=CrlPolicy.IF_PRESENT)


def test_crl_signed_by_the_wrong_key_is_ignored(ca: TestCA, now: datetime) -> None:
    leaf = ca.issue(SIGNER)
    forged = ca.crl(signed_by=new_key())

    with pytest.raises(RevokedError, match=r"no CRL for .*1 CRL\(s\) with a bad signature ignored"):
        store([ca], crls=[forged]).validate(leaf.cert, [], at=now, crl=CrlPolicy.REQUIRE)


def test_forged_crl_cannot_revoke_a_good_signer(ca: TestCA, now: datetime) -> None:
    leaf = ca.issue(SIGNER)
    genuine = ca.crl()
    ca.revoke(leaf.cert)
    forged = ca.crl(signed_by=new_key())

    chain = store([ca], crls=[genuine, forged]).validate(leaf.cert, [], at=now)

    assert chain.leaf == leaf.cert


def test_forged_fresh_crl_does_not_hide_a_revocation(ca: TestCA, now: datetime) -> None:
    leaf = ca.issue(SIGNER)
    ca.revoke(leaf.cert)
    genuine = ca.crl()
    ca.revoked.clear()
    forged_empty = ca.crl(signed_by=new_key(), next_update=now + timedelta(days=365))

    with pytest.raises(RevokedError, match="is revoked"):
        store([ca], crls=[forged_empty, genuine]).validate(leaf.cert, [], at=now)


def test_crl_of_another_ca_with_the_same_name_is_ignored(ca: TestCA, now: datetime) -> None:
    impostor = TestCA(ROOT, now=now)
    leaf = ca.issue(SIGNER)

    with pytest.raises(RevokedError, match="bad signature ignored"):
        store([ca], crls=[impostor.crl()]).validate(leaf.cert, [], at=now)


@pytest.mark.parametrize(
    ("this_update", "next_update"),
    [
        (timedelta(days=-30), timedelta(days=-1)),
        (timedelta(days=-30), timedelta(seconds=0)),
    ],
    ids=["stale", "due-now"],
)
def test_stale_crl_rejects_under_require_and_passes_under_if_present(
    ca: TestCA, now: datetime, this_update: timedelta, next_update: timedelta
) -> None:
    leaf = ca.issue(SIGNER)
    stale = ca.crl(this_update=now + this_update, next_update=now + next_update)
    trust = store([ca], crls=[stale])

    with pytest.raises(RevokedError, match="is stale") as info:
        trust.validate(leaf.cert, [], at=now, crl=CrlPolicy.REQUIRE)

    assert "if-present" in info.value.hint
    assert trust.validate(leaf.cert, [], at=now, crl=CrlPolicy.IF_PRESENT).leaf == leaf.cert


def test_crl_from_the_future_is_not_current(ca: TestCA, now: datetime) -> None:
    leaf = ca.issue(SIGNER)
    future = ca.crl(this_update=now + timedelta(hours=1), next_update=now + timedelta(days=7))

    with pytest.raises(RevokedError):
        store([ca], crls=[future]).validate(leaf.cert, [], at=now)


def test_one_current_crl_among_stale_ones_is_enough(ca: TestCA, now: datetime) -> None:
    leaf = ca.issue(SIGNER)
    stale = ca.crl(this_update=now - timedelta(days=30), next_update=now - timedelta(days=1))

    chain = store([ca], crls=[stale, ca.crl()]).validate(leaf.cert, [], at=now)

    assert chain.leaf == leaf.cert


@pytest.mark.parametrize(
    "extension",
    [
        x509.DeltaCRLIndicator(1),
        _idp(only_contains_ca_certs=True),
        _idp(only_some_reasons=frozenset({x509.ReasonFlags.key_compromise})),
        _idp(only_contains_attribute_certs=True),
    ],
    ids=["delta", "ca-certs-only", "some-reasons-only", "attribute-certs-only"],
)
def test_partial_crl_alone_does_not_satisfy_require(
    ca: TestCA, now: datetime, extension: x509.ExtensionType
) -> None:
    """A delta CRL, or one narrowed by its distribution point, cannot vouch for a serial."""
    leaf = ca.issue(SIGNER)
    trust = store([ca], crls=[crl_with(ca, extension)])

    with pytest.raises(RevokedError):
        trust.validate(leaf.cert, [], at=now, crl=CrlPolicy.REQUIRE)

    assert trust.validate(leaf.cert, [], at=now, crl=CrlPolicy.IF_PRESENT).leaf == leaf.cert
    assert (
        store([ca], crls=[crl_with(ca, extension), ca.crl()]).validate(leaf.cert, [], at=now).leaf
        == leaf.cert
    )


def test_serial_listed_in_a_delta_crl_is_rejected(ca: TestCA, now: datetime) -> None:
    leaf = ca.issue(SIGNER)
    delta = crl_with(ca, x509.DeltaCRLIndicator(1), revoked=(leaf.cert.serial_number,))

    with pytest.raises(RevokedError, match="is revoked"):
        store([ca], crls=[ca.crl(), delta]).validate(leaf.cert, [], at=now)


def test_missing_crl_rejects_under_require_and_passes_under_if_present(
    ca: TestCA, now: datetime
) -> None:
    leaf = ca.issue(SIGNER)
    trust = store([ca], crls=[])

    with pytest.raises(RevokedError, match="no CRL for /DC=org/DC=vmic-test/CN=Trust Test Root CA"):
        trust.validate(leaf.cert, [], at=now)

    assert trust.validate(leaf.cert, [], at=now, crl=CrlPolicy.IF_PRESENT).leaf == leaf.cert


def test_missing_crl_of_the_intermediate_rejects_under_require(
    ca: TestCA, inter: TestCA, now: datetime
) -> None:
    leaf = inter.issue(SIGNER)
    trust = store([ca, inter], crls=[ca.crl()])

    with pytest.raises(RevokedError, match=r"no CRL for .*Intermediate CA"):
        trust.validate(leaf.cert, leaf.intermediates, at=now)


def test_renewed_certificate_is_accepted_while_the_revoked_old_one_is_rejected(
    ca: TestCA, now: datetime
) -> None:
    old = ca.issue(SIGNER)
    ca.revoke(old.cert)
    renewed = ca.issue(SIGNER)  # same DN, new key, new serial
    trust = store([ca])

    assert subject_dn(renewed.cert) == subject_dn(old.cert)
    assert renewed.cert.public_key() != old.cert.public_key()
    assert trust.validate(renewed.cert, [], at=now).leaf == renewed.cert
    with pytest.raises(RevokedError, match="is revoked"):
        trust.validate(old.cert, [], at=now)


# -- malformed chains, weak keys, untrusted roots --------------------------------


def test_ca_without_critical_basic_constraints_is_rejected(ca: TestCA, now: datetime) -> None:
    lax = ca.intermediate(INTER, critical_basic_constraints=False)
    leaf = lax.issue(SIGNER)

    with pytest.raises(
        CertificateError, match=r"2\.5\.29\.19\)?: Certificate extension has incorrect criticality"
    ):
        store([ca, lax]).validate(leaf.cert, leaf.intermediates, at=now)


@pytest.mark.parametrize(
    ("issue_kwargs", "fragment"),
    [
        ({"digital_signature": False}, "lacks keyUsage digitalSignature"),
        ({"key_usage": False}, r"2\.5\.29\.15\)?: Certificate is missing required extension"),
        ({"is_ca": True}, "is a CA certificate"),
    ],
    ids=["no-digital-signature", "no-key-usage", "leaf-is-ca"],
)
def test_unfit_signer_certificate_is_rejected_with_a_reason(
    ca: TestCA, now: datetime, issue_kwargs: dict[str, bool], fragment: str
) -> None:
    leaf = ca.issue(SIGNER, **issue_kwargs)  # type: ignore[arg-type]

    with pytest.raises(CertificateError, match=fragment) as info:
        store([ca]).validate(leaf.cert, [], at=now)

    assert "Jane Endorser" in info.value.message


@pytest.mark.parametrize(
    ("issue_kwargs", "fragment"),
    [
        ({"key_kind": "rsa", "rsa_bits": 1024}, "RSA key of 1024 bits, at least 2048 required"),
        ({"key_kind": "ec-small"}, "EC key on secp192r1, at least 256 bits required"),
    ],
    ids=["rsa-1024", "ec-p192"],
)
def test_weak_signer_key_is_rejected(
    ca: TestCA, now: datetime, issue_kwargs: dict[str, object], fragment: str
) -> None:
    leaf = ca.issue(SIGNER, **issue_kwargs)  # type: ignore[arg-type]

    with pytest.raises(CertificateError, match=fragment):
        store([ca]).validate(leaf.cert, [], at=now)


def test_weak_intermediate_key_is_rejected(ca: TestCA, now: datetime) -> None:
    weak = ca.intermediate(INTER, key_kind="ec-small")
    leaf = weak.issue(SIGNER)

    with pytest.raises(CertificateError, match="does not chain"):
        store([ca, weak]).validate(leaf.cert, leaf.intermediates, at=now)


def test_signer_under_an_untrusted_ca_is_rejected(ca: TestCA, now: datetime) -> None:
    stranger = TestCA("/DC=org/DC=elsewhere/CN=Untrusted CA", now=now)
    leaf = stranger.issue(SIGNER)
    trust = TrustStore([ca.cert], [ca.crl(), stranger.crl()])

    # Shipping the untrusted root along with the signer does not make it an anchor.
    with pytest.raises(CertificateError, match="does not chain to a CA in <memory>") as info:
        trust.validate(leaf.cert, [stranger.cert], at=now)

    assert not isinstance(info.value, RevokedError)


def test_self_signed_signer_is_rejected(ca: TestCA, now: datetime) -> None:
    rogue = self_signed_identity(SIGNER, now=now)

    with pytest.raises(CertificateError, match="does not chain"):
        store([ca]).validate(rogue.cert, [], at=now)


def test_intermediate_impersonating_the_root_name_does_not_chain(ca: TestCA, now: datetime) -> None:
    impostor = TestCA(ROOT, now=now)  # same DN as the trusted root, another key
    leaf = impostor.issue(SIGNER)

    with pytest.raises(CertificateError, match="does not chain"):
        store([ca]).validate(leaf.cert, [impostor.cert], at=now)


def test_leaf_signed_by_another_key_than_its_issuer_does_not_chain(
    ca: TestCA, now: datetime
) -> None:
    genuine = ca.issue(SIGNER)
    key = new_key()
    forged = (
        x509.CertificateBuilder()
        .subject_name(genuine.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(genuine.cert.serial_number)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
    )
    for ext in genuine.cert.extensions:
        forged = forged.add_extension(ext.value, critical=ext.critical)
    cert = forged.sign(key, hashes.SHA256())  # claims the CA as issuer, signed by itself

    with pytest.raises(CertificateError, match="does not chain"):
        store([ca]).validate(cert, [], at=now)


def test_store_without_anchors_rejects_everything(ca: TestCA, inter: TestCA, now: datetime) -> None:
    leaf = inter.issue(SIGNER)
    trust = TrustStore([inter.cert], [inter.crl()])

    assert trust.anchors == []
    with pytest.raises(CertificateError, match="no trust anchors"):
        trust.validate(leaf.cert, [], at=now)
