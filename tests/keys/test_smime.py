"""S/MIME verification in Python against every way HEPiX tools sign, and what it refuses."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import pytest
from asn1crypto import cms, core
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import serialization

from keys.errors import ListFormatError, SignatureError
from keys.limits import Limits
from keys.smime import MAX_CERTIFICATES, looks_like_smime, sign_smime, verify_smime
from tests.support import hepix
from tests.support.ca import Identity, TestCA
from tests.support.hepix import INTEROP

CONTENT = b'{\n    "hv:imagelist": {\n        "dc:title": "test"\n    }\n}\n'


def as_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


@pytest.fixture(scope="module")
def rsa_endorser(root_ca: TestCA) -> Identity:
    return root_ca.issue("/DC=org/DC=vmic-test/CN=RSA Endorser", key_kind="rsa")


@pytest.mark.parametrize("key", ["ec", "rsa"])
def test_python_detached_signature_verifies(
    key: str, endorser: Identity, rsa_endorser: Identity
) -> None:
    signer = endorser if key == "ec" else rsa_endorser
    signed = sign_smime(CONTENT, key=signer.key, cert=signer.cert, chain=signer.intermediates)
    assert looks_like_smime(signed)

    got = verify_smime(signed)

    assert as_lf(got.content) == CONTENT
    assert got.signer == signer.cert
    assert got.detached
    assert got.digest == "SHA-256"
    assert got.signature == ("ECDSA" if key == "ec" else "RSA")


@pytest.mark.parametrize(
    ("options", "digest"),
    [
        ({}, "sha256"),
        ({"digest": "sha512"}, "sha512"),
        ({"text": True}, "sha256"),
        ({"opaque": True}, "sha256"),
        ({"der": True}, "sha256"),
    ],
)
def test_every_cryptography_form_verifies(
    options: dict[str, object], digest: str, rsa_endorser: Identity
) -> None:
    signed = hepix.sign_bytes(CONTENT, rsa_endorser, **options)  # type: ignore[arg-type]

    got = verify_smime(signed)

    assert as_lf(got.content) == CONTENT  # any text/plain header is gone
    assert got.digest == {"sha1": "SHA-1", "sha256": "SHA-256", "sha512": "SHA-512"}[digest]
    assert got.detached == (not options.get("opaque") and not options.get("der"))


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("-md", "sha1"),
        ("-md", "sha256"),
        ("-text",),
        ("-nodetach",),
        ("-binary",),
        ("-nodetach", "-outform", "PEM"),
        ("-nodetach", "-text"),
        ("-nodetach", "-md", "sha1"),
    ],
)
def test_openssl_smime_sign_output_verifies(
    options: tuple[str, ...], rsa_endorser: Identity, tmp_path: Path
) -> None:
    signed = hepix.openssl_sign(CONTENT, rsa_endorser, tmp_path, options=options)

    got = verify_smime(signed)

    assert as_lf(got.content) == CONTENT
    assert got.signer == rsa_endorser.cert


def test_a_list_whose_line_ends_were_changed_in_transit_still_verifies(
    rsa_endorser: Identity,
) -> None:
    """Text mode signs CRLF; a copy saved with LF line ends is the same signed text."""
    signed = hepix.sign_bytes(CONTENT, rsa_endorser)
    assert b"\r\n" in signed

    got = verify_smime(as_lf(signed))

    assert as_lf(got.content) == CONTENT


def test_binary_mode_content_is_checked_byte_for_byte(
    rsa_endorser: Identity, tmp_path: Path
) -> None:
    content = CONTENT.replace(b"\n", b"\r\n").replace(b"test", b"te\rst")
    signed = hepix.openssl_sign(content, rsa_endorser, tmp_path, options=("-binary",))

    assert verify_smime(signed).content == content
    with pytest.raises(SignatureError, match="differs from what was signed"):
        verify_smime(signed.replace(b"te\rst", b"te\r\nst"))


def test_openssl_accepts_what_vmic_signs(
    endorser: Identity, root_ca: TestCA, tmp_path: Path
) -> None:
    signed = sign_smime(CONTENT, key=endorser.key, cert=endorser.cert)

    done = hepix.openssl_verify(
        signed, root_ca.cert.public_bytes(serialization.Encoding.PEM), tmp_path
    )

    assert done.returncode == 0, done.stderr.decode()
    assert as_lf(done.stdout) == CONTENT


# -- refusals -------------------------------------------------------------------------


def test_changed_content_is_refused(rsa_endorser: Identity) -> None:
    signed = hepix.sign_bytes(CONTENT, rsa_endorser)

    with pytest.raises(SignatureError, match="differs from what was signed"):
        verify_smime(signed.replace(b'"test"', b'"tesT"'))


def test_changed_opaque_content_is_refused(rsa_endorser: Identity) -> None:
    der = hepix.sign_bytes(CONTENT, rsa_endorser, der=True)
    at = der.index(b'"test"')
    altered = der[:at] + b'"tesT"' + der[at + 6 :]

    with pytest.raises(SignatureError, match="differs from what was signed"):
        verify_smime(altered)


def test_the_signature_of_another_message_is_refused(rsa_endorser: Identity) -> None:
    """This list's text with the signature part of a list the endorser really signed."""
    mine = hepix.sign_bytes(CONTENT, rsa_endorser)
    theirs = hepix.sign_bytes(CONTENT.replace(b"test", b"evil"), rsa_endorser)
    cut = b"Content-Type: application/x-pkcs7-signature"
    mine_boundary = re.search(rb'boundary="([^"]+)"', mine)
    theirs_boundary = re.search(rb'boundary="([^"]+)"', theirs)
    assert mine_boundary
    assert theirs_boundary
    signature_part = theirs[theirs.index(cut) :].replace(
        theirs_boundary.group(1), mine_boundary.group(1)
    )
    forged = mine[: mine.index(cut)] + signature_part
    verify_smime(mine[: mine.index(cut)] + mine[mine.index(cut) :])  # the splice itself is sound

    with pytest.raises(SignatureError, match="differs from what was signed"):
        verify_smime(forged)


def test_signed_attributes_are_covered(rsa_endorser: Identity) -> None:
    """Changing a signed attribute (here signing-time) breaks the signature value."""
    der = bytearray(hepix.sign_bytes(CONTENT, rsa_endorser, der=True))
    utc_time = der.rindex(b"\x17\x0d")  # signing-time: after the certificates' validity
    der[utc_time + 2] = ord("0") if der[utc_time + 2] != ord("0") else ord("1")

    with pytest.raises(SignatureError, match="signature value does not match"):
        verify_smime(bytes(der))


def test_a_certificate_swapped_for_another_key_is_refused(
    rsa_endorser: Identity, root_ca: TestCA
) -> None:
    """A message whose signer certificate is replaced by one with the same name and serial."""
    impostor = root_ca.issue("/DC=org/DC=vmic-test/CN=RSA Endorser", key_kind="rsa")
    der = hepix.sign_bytes(CONTENT, rsa_endorser, der=True)
    real = rsa_endorser.cert.public_bytes(serialization.Encoding.DER)
    fake = impostor.cert.public_bytes(serialization.Encoding.DER)
    swapped = der.replace(real, fake)
    assert swapped != der

    with pytest.raises(SignatureError):
        verify_smime(swapped)


def test_md5_is_refused(rsa_endorser: Identity, tmp_path: Path) -> None:
    try:
        signed = hepix.openssl_sign(CONTENT, rsa_endorser, tmp_path, options=("-md", "md5"))
    except AssertionError:
        pytest.skip("this openssl refuses to sign with MD5")

    with pytest.raises(SignatureError, match="md5"):
        verify_smime(signed)


def test_two_signers_are_refused(
    rsa_endorser: Identity, endorser: Identity, tmp_path: Path
) -> None:
    first = hepix.openssl_sign(CONTENT, rsa_endorser, tmp_path / "a", options=("-nodetach",))
    second_folder = tmp_path / "b"
    hepix.openssl_sign(b"", endorser, second_folder)  # writes the EC signer's key and cert
    (second_folder / "first.smime").write_bytes(first)
    done = subprocess.run(
        [
            hepix.openssl(),
            "smime",
            "-resign",
            "-in",
            str(second_folder / "first.smime"),
            "-signer",
            str(second_folder / "cert.pem"),
            "-inkey",
            str(second_folder / "key.pem"),
            "-nodetach",
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.skip(f"openssl -resign failed: {done.stderr.decode()[:200]}")

    with pytest.raises(SignatureError, match="2 signers"):
        verify_smime(done.stdout)


def test_a_signature_without_certificates_is_refused(
    rsa_endorser: Identity, tmp_path: Path
) -> None:
    signed = hepix.openssl_sign(CONTENT, rsa_endorser, tmp_path, options=("-nocerts",))

    with pytest.raises(SignatureError, match="no certificate"):
        verify_smime(signed)


@pytest.mark.parametrize(
    ("mangle", "error", "match"),
    [
        (lambda s: s.replace(b"multipart/signed", b"multipart/mixed"), ListFormatError, "mixed"),
        (lambda s: re.sub(rb"\r?\n--[^\r\n]*--\r?\n?$", b"\n", s), ListFormatError, "two parts"),
        (
            lambda s: s.replace(b"application/x-pkcs7-signature;", b"text/plain;"),
            ListFormatError,
            "second part",
        ),
        (lambda s: s.replace(b"MII", b"M!I", 1), ListFormatError, "base64"),
        (
            lambda s: s.split(b"\n\n", 1)[1] if b"\n\n" in s else s.split(b"\r\n\r\n", 1)[1],
            ListFormatError,
            "MIME",
        ),
    ],
)
def test_broken_envelopes_are_refused(
    mangle: object, error: type[Exception], match: str, rsa_endorser: Identity
) -> None:
    signed = hepix.sign_bytes(CONTENT, rsa_endorser)
    broken = mangle(signed)  # type: ignore[operator]
    assert broken != signed

    with pytest.raises(error, match=match):
        verify_smime(broken)


def test_pem_of_a_detached_signature_has_no_content(rsa_endorser: Identity, tmp_path: Path) -> None:
    signed = hepix.openssl_sign(CONTENT, rsa_endorser, tmp_path, options=("-outform", "PEM"))

    with pytest.raises(SignatureError, match="detached but no content"):
        verify_smime(signed)


def test_garbage_der_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not parse"):
        verify_smime(b"\x30\x82\x01\x00" + b"\x00" * 8)
    with pytest.raises(SignatureError, match="does not parse"):
        verify_smime(
            b"MIME-Version: 1.0\nContent-Type: application/pkcs7-mime\n"
            b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"\x30\x03\x02\x01\x01")
        )


def test_a_message_over_the_byte_cap_is_refused_before_parsing(rsa_endorser: Identity) -> None:
    signed = hepix.sign_bytes(CONTENT, rsa_endorser)

    with pytest.raises(ListFormatError, match="more than the limit"):
        verify_smime(signed, limits=Limits(max_list_bytes=len(signed) - 1))


# -- the public samples ----------------------------------------------------------------


def test_cloudkeeper_signed_sample_has_a_valid_signature_by_its_test_ca() -> None:
    got = verify_smime((INTEROP / "cloudkeeper_imagelist01.signed.smime").read_bytes())

    assert got.digest == "SHA-256"
    assert got.signer.subject.rfc4514_string() == "O=Internet Widgits Pty Ltd,ST=Some-State,C=AU"
    unsigned = (INTEROP / "cloudkeeper_imagelist01.unsigned.json").read_bytes()
    assert json.loads(got.content) == json.loads(unsigned)


def test_cloudkeeper_invalid_sample_is_refused_as_altered() -> None:
    with pytest.raises(SignatureError, match="differs from what was signed"):
        verify_smime((INTEROP / "cloudkeeper_imagelist_invalid.signed.smime").read_bytes())


# -- hostile input: rejected, never a crash or a stall ----------------------------------


def test_deep_nesting_in_a_signed_attribute_is_a_rejection(rsa_endorser: Identity) -> None:
    info = cms.ContentInfo.load(hepix.sign_bytes(CONTENT, rsa_endorser, der=True))
    nested = b"\x05\x00"
    for _ in range(3000):
        nested = b"\x30" + _der_length(len(nested)) + nested
    attribute = cms.CMSAttribute({"type": "1.2.3.4", "values": [core.Any.load(nested)]})
    info["content"]["signer_infos"][0]["signed_attrs"].append(attribute)

    with pytest.raises(SignatureError, match="RecursionError"):
        verify_smime(info.dump(force=True))


def test_a_signer_certificate_on_an_unsupported_curve_is_a_rejection(
    rsa_endorser: Identity, root_ca: TestCA
) -> None:
    """The certificate is the attacker's own until the chain is checked: it may be anything."""
    info = cms.ContentInfo.load(hepix.sign_bytes(CONTENT, rsa_endorser, der=True))
    choice = info["content"]["certificates"][0]
    spki = choice.chosen["tbs_certificate"]["subject_public_key_info"]
    spki["algorithm"] = asn1_keys.PublicKeyAlgorithm(
        {"algorithm": "ec", "parameters": asn1_keys.ECDomainParameters("named", "1.3.132.0.6")}
    )
    spki["public_key"] = b"\x04" + b"\x01" * 28

    with pytest.raises(SignatureError, match="UnsupportedAlgorithm"):
        verify_smime(info.dump(force=True))


def test_more_certificates_than_allowed_are_refused(
    rsa_endorser: Identity, root_ca: TestCA
) -> None:
    crowd = [root_ca.issue(f"/DC=org/CN=Extra {n}").cert for n in range(MAX_CERTIFICATES)]
    many = Identity(cert=rsa_endorser.cert, key=rsa_endorser.key, intermediates=crowd)

    with pytest.raises(SignatureError, match="certificates, more than"):
        verify_smime(hepix.sign_bytes(CONTENT, many))


def test_an_unterminated_pem_block_is_refused_at_once() -> None:
    with pytest.raises(ListFormatError, match="not terminated"):
        verify_smime(b"-----BEGIN PKCS7-----" * 20_000)


def test_endless_mime_headers_are_refused_before_they_are_parsed() -> None:
    hostile = b'Content-Type: multipart/signed; a="' + b";" * 160_000 + b"\r\n\r\nbody"

    with pytest.raises(ListFormatError, match="headers longer than"):
        verify_smime(hostile)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw
