"""The development CA: folders, key modes, issued certificates, revocation, CRLs.

Real files in ``tmp_path``; every refused operation is checked to have left
the files it found byte-identical (and, where it would have created a
folder, to have created nothing). EC keys throughout, except where the test
is about the RSA default.
"""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keys.certs import (
    is_self_issued,
    load_certificates,
    load_private_key,
    public_keys_equal,
    summarize,
)
from keys.dn import DistinguishedName
from keys.errors import ConfigError, RevokedError
from keys.pki import (
    CA_CERT,
    CA_CHAIN,
    CA_CRL,
    CA_KEY,
    CertificateAuthority,
    create_ca,
    issue,
    refresh_crl,
    revoke,
)
from keys.trust import CrlPolicy, TrustStore

ROOT_DN = DistinguishedName.parse_slash("/DC=org/DC=vmic-dev/CN=vmic Dev Root CA")
INTER_DN = DistinguishedName.parse_slash("/DC=org/DC=vmic-dev/CN=vmic Dev Intermediate CA")
SUB_DN = DistinguishedName.parse_slash("/DC=org/DC=vmic-dev/CN=vmic Dev Sub CA")
JANE_DN = DistinguishedName.parse_slash("/DC=org/DC=vmic-dev/OU=Users/CN=Jane Endorser")


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory`` with its bytes and mode."""
    return {
        str(path.relative_to(directory)): (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_crl(ca: CertificateAuthority) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl((ca.directory / CA_CRL).read_bytes())


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def revoked_serials(crl: x509.CertificateRevocationList) -> list[int]:
    return [entry.serial_number for entry in crl]


@pytest.fixture
def root(tmp_path: Path, now: datetime) -> CertificateAuthority:
    return create_ca(ROOT_DN, tmp_path / "root-ca", now=now, key_type="ec")


@pytest.fixture
def inter(root: CertificateAuthority, tmp_path: Path, now: datetime) -> CertificateAuthority:
    return create_ca(
        INTER_DN, tmp_path / "inter-ca", now=now, key_type="ec", parent=root, days=1000
    )


# -- create_ca -------------------------------------------------------------------


def test_create_ca_writes_certificate_crl_and_a_private_key_only_the_owner_reads(
    root: CertificateAuthority, tmp_path: Path
) -> None:
    folder = tmp_path / "root-ca"

    assert sorted(snapshot(folder)) == [CA_CRL, CA_CERT, str(CA_KEY)]
    assert mode(folder / "private") == 0o700
    assert mode(folder / CA_KEY) == 0o600
    assert mode(folder / CA_CERT) == 0o644
    assert not (folder / CA_CHAIN).exists()
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_created_root_ca_is_a_self_signed_ca_with_the_right_extensions(
    root: CertificateAuthority, now: datetime
) -> None:
    (cert,) = load_certificates(root.directory / CA_CERT)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)

    assert cert == root.cert
    assert DistinguishedName.from_x509(cert.subject) == ROOT_DN
    assert is_self_issued(cert)
    assert basic.critical
    assert basic.value.ca
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc == now + timedelta(days=3650)
    assert root.chain == ()
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_created_ca_has_an_empty_current_crl_number_one(
    root: CertificateAuthority, now: datetime
) -> None:
    crl = load_crl(root)
    public_key = root.cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)

    assert crl.issuer == root.cert.subject
    assert crl.is_signature_valid(public_key)
    assert revoked_serials(crl) == []
    assert crl_number(crl) == 1
    assert crl.last_update_utc <= now
    assert crl.next_update_utc == now + timedelta(days=30)


def test_created_ca_loads_back_from_its_folder(root: CertificateAuthority) -> None:
    loaded = CertificateAuthority.load(root.directory)

    assert loaded.cert == root.cert
    assert public_keys_equal(loaded.key.public_key(), root.cert.public_key())
    assert loaded.chain == ()


def test_create_ca_refuses_to_overwrite_an_existing_ca(
    root: CertificateAuthority, now: datetime
) -> None:
    before = snapshot(root.directory)

    with pytest.raises(ConfigError, match="already holds a CA"):
        create_ca(INTER_DN, root.directory, now=now, key_type="ec")

    assert snapshot(root.directory) == before


def test_create_ca_refuses_a_folder_holding_only_the_ca_key(
    root: CertificateAuthority, now: datetime
) -> None:
    (root.directory / CA_CERT).unlink()
    (root.directory / CA_CRL).unlink()
    before = snapshot(root.directory)

    with pytest.raises(ConfigError, match="refusing to overwrite"):
        create_ca(ROOT_DN, root.directory, now=now, key_type="ec")

    assert snapshot(root.directory) == before


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"days": 0}, "at least 1"), ({"key_type": "dsa"}, "unknown key type 'dsa'")],
    ids=["zero-days", "unknown-key-type"],
)
def test_create_ca_refuses_bad_arguments_and_creates_nothing(
    tmp_path: Path, now: datetime, kwargs: dict[str, object], fragment: str
) -> None:
    out = tmp_path / "never"
    arguments: dict[str, object] = {"key_type": "ec", **kwargs}

    with pytest.raises(ConfigError, match=fragment):
        create_ca(ROOT_DN, out, now=now, **arguments)  # type: ignore[arg-type]

    assert not out.exists()


def test_intermediate_ca_has_a_chain_file_and_chains_to_its_parent(
    root: CertificateAuthority, inter: CertificateAuthority, now: datetime
) -> None:
    assert load_certificates(inter.directory / CA_CHAIN) == [inter.cert]
    assert inter.chain == (inter.cert,)
    assert inter.cert.issuer == root.cert.subject
    inter.cert.verify_directly_issued_by(root.cert)
    aki = inter.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert CertificateAuthority.load(inter.directory).chain == (inter.cert,)


def test_second_level_intermediate_lists_every_ca_up_to_the_root(
    inter: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    sub = create_ca(SUB_DN, tmp_path / "sub-ca", now=now, key_type="ec", parent=inter, days=500)

    assert load_certificates(sub.directory / CA_CHAIN) == [sub.cert, inter.cert]


def test_intermediate_may_not_outlive_its_parent(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    before = snapshot(root.directory)
    out = tmp_path / "too-long"

    with pytest.raises(ConfigError, match="outlive its parent"):
        create_ca(INTER_DN, out, now=now, key_type="ec", parent=root, days=3651)

    assert not out.exists()
    assert snapshot(root.directory) == before


# -- issue -------------------------------------------------------------------------


def test_issue_writes_certificate_owner_only_key_and_chain(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    out = tmp_path / "jane"

    cert = issue(root, JANE_DN, out, now=now, email="jane@example.org", key_type="ec")

    assert sorted(snapshot(out)) == ["cert.pem", "chain.pem", "key.pem"]
    assert mode(out / "key.pem") == 0o600
    assert load_certificates(out / "cert.pem") == [cert]
    assert load_certificates(out / "chain.pem") == [cert]
    key = load_private_key(out / "key.pem")
    assert public_keys_equal(key.public_key(), cert.public_key())


def test_issued_certificate_is_an_endorser_certificate(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(root, JANE_DN, tmp_path / "jane", now=now, email="jane@example.org", key_type="ec")
    summary = summarize(cert)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)

    assert summary.subject == JANE_DN
    assert summary.issuer == ROOT_DN
    assert summary.key_usage == ("digital_signature",)
    assert usage.critical
    assert summary.extended_key_usage == ("emailProtection",)
    assert summary.email == ("jane@example.org",)
    assert not summary.is_ca
    assert basic.critical
    assert summary.not_after == now + timedelta(days=365)
    assert summary.not_before <= now
    cert.verify_directly_issued_by(root.cert)


def test_issue_without_email_adds_no_subject_alternative_name(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(root, JANE_DN, tmp_path / "jane", now=now, key_type="ec")

    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_issue_makes_rsa_2048_keys_by_default(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(root, JANE_DN, tmp_path / "jane", now=now)

    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048


def test_certificate_issued_under_an_intermediate_ships_the_intermediate(
    inter: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(inter, JANE_DN, tmp_path / "jane", now=now, key_type="ec")

    assert load_certificates(tmp_path / "jane" / "chain.pem") == [cert, inter.cert]


def test_issue_refuses_to_outlive_the_ca(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    short = create_ca(INTER_DN, tmp_path / "short-ca", now=now, key_type="ec", days=30)
    before = snapshot(short.directory)
    out = tmp_path / "jane"

    with pytest.raises(ConfigError, match="outlive its CA"):
        issue(short, JANE_DN, out, now=now, days=31, key_type="ec")

    assert not out.exists()
    assert snapshot(short.directory) == before
    assert issue(short, JANE_DN, out, now=now, days=30, key_type="ec").not_valid_after_utc == (
        short.cert.not_valid_after_utc
    )


def test_issue_refuses_to_overwrite_a_certificate(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    out = tmp_path / "jane"
    issue(root, JANE_DN, out, now=now, key_type="ec")
    before = snapshot(out)

    with pytest.raises(ConfigError, match="already holds a certificate"):
        issue(root, JANE_DN, out, now=now, key_type="ec")

    assert snapshot(out) == before


# -- revoke and refresh_crl ----------------------------------------------------------


def test_revoke_lists_the_serial_and_bumps_the_crl_number(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(root, JANE_DN, tmp_path / "jane", now=now, key_type="ec")

    serial = revoke(root, tmp_path / "jane" / "cert.pem", now=now)

    crl = load_crl(root)
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert serial == cert.serial_number
    assert entry is not None
    assert entry.revocation_date_utc == now
    assert crl_number(crl) == 2
    public_key = root.cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(public_key)


def test_revoking_twice_keeps_one_entry_with_the_first_date(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(root, JANE_DN, tmp_path / "jane", now=now, key_type="ec")
    revoke(root, tmp_path / "jane" / "cert.pem", now=now)

    again = revoke(root, tmp_path / "jane" / "cert.pem", now=now + timedelta(days=1))

    crl = load_crl(root)
    assert again == cert.serial_number
    assert revoked_serials(crl) == [cert.serial_number]
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == now
    assert crl_number(crl) == 3


def test_revoke_keeps_earlier_revocations(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    first = issue(root, JANE_DN, tmp_path / "one", now=now, key_type="ec")
    second = issue(root, JANE_DN, tmp_path / "two", now=now, key_type="ec")

    revoke(root, tmp_path / "one" / "cert.pem", now=now)
    revoke(root, tmp_path / "two" / "cert.pem", now=now)

    assert sorted(revoked_serials(load_crl(root))) == sorted(
        [first.serial_number, second.serial_number]
    )


def test_revoke_refuses_a_certificate_of_another_ca(
    root: CertificateAuthority, inter: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    issue(inter, JANE_DN, tmp_path / "jane", now=now, key_type="ec")
    before = snapshot(root.directory)

    with pytest.raises(ConfigError, match="was not issued by the CA"):
        revoke(root, tmp_path / "jane" / "cert.pem", now=now)

    assert snapshot(root.directory) == before


def test_revoke_refuses_a_certificate_of_an_impostor_ca_with_the_same_dn(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    impostor = create_ca(ROOT_DN, tmp_path / "impostor-ca", now=now, key_type="ec")
    issue(impostor, JANE_DN, tmp_path / "jane", now=now, key_type="ec")
    before = snapshot(root.directory)

    with pytest.raises(ConfigError, match="was not issued by the CA"):
        revoke(root, tmp_path / "jane" / "cert.pem", now=now)

    assert snapshot(root.directory) == before


def test_revoke_refuses_the_cas_own_certificate(root: CertificateAuthority, now: datetime) -> None:
    before = snapshot(root.directory)

    with pytest.raises(ConfigError, match="cannot revoke its own certificate"):
        revoke(root, root.directory / CA_CERT, now=now)

    assert snapshot(root.directory) == before


def test_revoke_refuses_a_file_that_is_not_a_certificate(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    not_a_cert = tmp_path / "notes.pem"
    not_a_cert.write_text("hello\n")
    before = snapshot(root.directory)

    with pytest.raises(ConfigError):
        revoke(root, not_a_cert, now=now)
    with pytest.raises(ConfigError, match="cannot read"):
        revoke(root, tmp_path / "missing.pem", now=now)

    assert snapshot(root.directory) == before


def test_intermediate_revokes_into_its_own_crl(
    root: CertificateAuthority, inter: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(inter, JANE_DN, tmp_path / "jane", now=now, key_type="ec")
    root_before = snapshot(root.directory)

    revoke(inter, tmp_path / "jane" / "cert.pem", now=now)

    assert revoked_serials(load_crl(inter)) == [cert.serial_number]
    assert load_crl(inter).issuer == inter.cert.subject
    assert snapshot(root.directory) == root_before


def test_refresh_crl_keeps_revocations_and_moves_the_window(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(root, JANE_DN, tmp_path / "jane", now=now, key_type="ec")
    revoke(root, tmp_path / "jane" / "cert.pem", now=now)
    later = now + timedelta(days=20)

    refresh_crl(root, now=later, days=10)

    crl = load_crl(root)
    assert revoked_serials(crl) == [cert.serial_number]
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == now
    assert crl_number(crl) == 3
    assert crl.next_update_utc == later + timedelta(days=10)
    assert crl.last_update_utc <= later


# -- a CA folder as trust directory ---------------------------------------------------


def test_ca_folder_works_as_a_trust_directory(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(root, JANE_DN, tmp_path / "jane", now=now, key_type="ec")

    trust = TrustStore.from_directory(root.directory)

    assert trust.anchors == [root.cert]
    assert trust.problems == ()
    assert trust.validate(cert, [], at=now, crl=CrlPolicy.REQUIRE).anchor == root.cert


def test_revoked_issued_certificate_is_rejected_by_the_trust_store(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(root, JANE_DN, tmp_path / "jane", now=now, key_type="ec")
    renewed = issue(root, JANE_DN, tmp_path / "jane-renewed", now=now, key_type="ec")

    revoke(root, tmp_path / "jane" / "cert.pem", now=now)
    trust = TrustStore.from_directory(root.directory)

    with pytest.raises(RevokedError, match="is revoked"):
        trust.validate(cert, [], at=now)
    assert trust.validate(renewed, [], at=now).leaf == renewed


def test_crl_of_a_ca_folder_goes_stale_until_refreshed(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(root, JANE_DN, tmp_path / "jane", now=now, key_type="ec")
    later = now + timedelta(days=31)

    with pytest.raises(RevokedError, match="is stale"):
        TrustStore.from_directory(root.directory).validate(cert, [], at=later)

    refresh_crl(root, now=later)

    assert TrustStore.from_directory(root.directory).validate(cert, [], at=later).leaf == cert


def test_chain_under_an_intermediate_validates_from_ca_folders(
    root: CertificateAuthority, inter: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    issue(inter, JANE_DN, tmp_path / "jane", now=now, key_type="ec")
    trust_dir = tmp_path / "trust"
    trust_dir.mkdir()
    for name in (CA_CERT, CA_CRL):
        (trust_dir / f"root-{name}").write_bytes((root.directory / name).read_bytes())
    (trust_dir / "inter.pem").write_bytes((inter.directory / CA_CERT).read_bytes())
    (trust_dir / "inter.crl.pem").write_bytes((inter.directory / CA_CRL).read_bytes())
    leaf, *chain = load_certificates(tmp_path / "jane" / "chain.pem")

    trust = TrustStore.from_directory(trust_dir)

    assert trust.validate(leaf, chain, at=now).certificates == (leaf, inter.cert, root.cert)
    revoke(root, inter.directory / CA_CERT, now=now)
    (trust_dir / f"root-{CA_CRL}").write_bytes((root.directory / CA_CRL).read_bytes())
    with pytest.raises(RevokedError, match=r"Intermediate CA .*is revoked"):
        TrustStore.from_directory(trust_dir).validate(leaf, chain, at=now)


# -- loading a CA folder -----------------------------------------------------------------


def test_load_refuses_a_folder_without_a_ca(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a CA folder"):
        CertificateAuthority.load(tmp_path)


def test_load_refuses_a_ca_key_readable_by_others(root: CertificateAuthority) -> None:
    (root.directory / CA_KEY).chmod(0o644)

    with pytest.raises(ConfigError, match="accessible by group or others") as info:
        CertificateAuthority.load(root.directory)

    assert "chmod 600" in info.value.hint


# -- host certificates (--host) --------------------------------------------------------------
SITE_DN = DistinguishedName.parse_slash("/DC=org/DC=vmic-dev/OU=Sites/CN=site-a")


def test_a_host_certificate_serves_tls_and_is_a_tls_client_certificate(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    """Two site certificates from `vmic keys issue --host`: one serves TLS on loopback and
    asks for a client certificate, the other is presented; a real OpenSSL handshake takes
    both, and the server sees the client's DN."""
    server_cert = issue(root, SITE_DN, tmp_path / "a", now=now, key_type="ec", hosts=["127.0.0.1"])
    client_dn = DistinguishedName.parse_slash("/DC=org/DC=vmic-dev/OU=Sites/CN=site-b")
    issue(root, client_dn, tmp_path / "b", now=now, key_type="ec", hosts=["site-b.example.org"])
    uses = server_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(uses) == {
        x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION,
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    }

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "a" / "cert.pem", tmp_path / "a" / "key.pem")
    server.load_verify_locations(root.directory / CA_CERT)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=root.directory / CA_CERT)
    client.load_cert_chain(tmp_path / "b" / "cert.pem", tmp_path / "b" / "key.pem")
    seen: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True) as tls:
                seen.append(tls.getpeercert())
                tls.sendall(b"ok")

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
        thread.join(timeout=10)
    (peer,) = seen
    assert isinstance(peer, dict)
    assert ("commonName", "site-b") in [pair for rdn in peer["subject"] for pair in rdn]


def test_a_certificate_without_hosts_is_for_email_protection_only(
    root: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    cert = issue(root, JANE_DN, tmp_path / "jane", now=now, key_type="ec", email="j@x.org")
    uses = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(uses) == [x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.RFC822Name) == ["j@x.org"]


@pytest.mark.parametrize("host", ["", "-x.org", "a b", "x..org", "a/b", "é.org", "a" * 64])
def test_a_host_that_is_no_name_or_address_is_refused_and_nothing_written(
    root: CertificateAuthority, tmp_path: Path, now: datetime, host: str
) -> None:
    with pytest.raises(ConfigError, match="neither a DNS name nor an IP address"):
        issue(root, SITE_DN, tmp_path / "site", now=now, key_type="ec", hosts=[host])
    assert not (tmp_path / "site").exists()
