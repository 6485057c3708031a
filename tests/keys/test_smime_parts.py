"""Splitting a multipart/signed body and putting text in canonical form, at the edges.

A detached signature covers the first body part exactly: where a delimiter
line is (RFC 2046 5.1.1: ``--BOUNDARY`` at the start of a line, then only
blanks; the line end before it belongs to the delimiter) and how text mode
line ends are made CRLF decide which bytes are checked. These messages are
put together by hand around a real signature, so each edge is reached.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from keys.errors import ListFormatError, SignatureError
from keys.smime import verify_smime
from tests.support.ca import Identity, TestCA

BOUNDARY = b"----B0UND"
DASHES = b"--" + BOUNDARY


@pytest.fixture(scope="module")
def signer(root_ca: TestCA) -> Identity:
    return root_ca.issue("/DC=org/DC=vmic-test/CN=Parts Endorser", key_kind="rsa")


def signature(content: bytes, signer: Identity, *, binary: bool = False) -> bytes:
    """A detached DER signature over ``content`` (text mode: over its CRLF form)."""
    options = [pkcs7.PKCS7Options.DetachedSignature]
    if binary:
        options.append(pkcs7.PKCS7Options.Binary)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    builder = builder.add_signer(signer.cert, signer.key, hashes.SHA256())
    return builder.sign(serialization.Encoding.DER, options)


def message(
    first_part: bytes,
    der: bytes,
    *,
    preamble: bytes = b"This is an S/MIME signed message\n",
    opening: bytes = DASHES,
    middle: bytes = DASHES,
    closing: bytes = DASHES + b"--",
    epilogue: bytes = b"",
    eol: bytes = b"\n",
) -> bytes:
    sig = base64.encodebytes(der).replace(b"\n", eol)
    return b"".join(
        [
            b"MIME-Version: 1.0" + eol,
            b'Content-Type: multipart/signed; protocol="application/x-pkcs7-signature"; '
            b'micalg="sha-256"; boundary="' + BOUNDARY + b'"' + eol,
            eol,
            preamble,
            opening + eol,
            first_part + eol,
            middle + eol,
            b'Content-Type: application/x-pkcs7-signature; name="smime.p7s"' + eol,
            b"Content-Transfer-Encoding: base64" + eol,
            eol,
            sig,
            eol,
            closing + eol,
            epilogue,
        ]
    )


CONTENT = b'{\n    "hv:imagelist": {}\n}'


def test_a_message_put_together_by_hand_verifies(signer: Identity) -> None:
    got = verify_smime(message(CONTENT, signature(CONTENT, signer)))
    assert got.content == CONTENT.replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    "line",
    [
        DASHES + b"x",  # the boundary, then more than blanks
        DASHES + b"-- x",
        DASHES + b" \tx",
        b" " + DASHES,  # not at the start of a line
        b"x" + DASHES,
        b"-" + DASHES,
        DASHES[:-1],
    ],
    ids=repr,
)
def test_a_line_like_a_delimiter_inside_the_content_is_content(
    signer: Identity, line: bytes
) -> None:
    content = CONTENT + b"\n" + line + b"\n" + line + b"tail"
    got = verify_smime(message(content, signature(content, signer)))
    assert got.content == content.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("blanks", [b" ", b"\t", b" \t \t"])
@pytest.mark.parametrize("which", ["opening", "middle", "closing"])
def test_blanks_after_a_delimiter_are_allowed(signer: Identity, blanks: bytes, which: str) -> None:
    der = signature(CONTENT, signer)
    dashes = DASHES + b"--" if which == "closing" else DASHES
    got = verify_smime(message(CONTENT, der, **{which: dashes + blanks}))
    assert got.content == CONTENT.replace(b"\n", b"\r\n")


def test_crlf_delimiter_lines_are_delimiters(signer: Identity) -> None:
    got = verify_smime(message(CONTENT, signature(CONTENT, signer), eol=b"\r\n"))
    assert got.content == CONTENT.replace(b"\n", b"\r\n")


def test_delimiter_lookalikes_in_the_preamble_and_an_epilogue_are_ignored(
    signer: Identity,
) -> None:
    preamble = b"x" + DASHES + b"\n" + DASHES + b"x\n" + DASHES + b" -\n"
    raw = message(
        CONTENT, signature(CONTENT, signer), preamble=preamble, epilogue=DASHES + b"\nafter\n"
    )
    assert verify_smime(raw).content == CONTENT.replace(b"\n", b"\r\n")


def test_a_delimiter_at_the_very_start_of_the_body_opens_the_first_part(
    signer: Identity,
) -> None:
    raw = message(CONTENT, signature(CONTENT, signer), preamble=b"")
    assert verify_smime(raw).content == CONTENT.replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    "change",
    [
        {"middle": DASHES + b"--"},  # closed after the first part
        {"closing": DASHES},  # never closed
        {"closing": DASHES + b"x"},
        {"closing": b" " + DASHES + b"--"},
        {"opening": DASHES + b"x"},  # never opened
        {"epilogue": b""},
    ],
    ids=repr,
)
def test_a_body_without_exactly_two_parts_and_a_closing_delimiter_is_refused(
    signer: Identity, change: dict[str, bytes]
) -> None:
    raw = message(CONTENT, signature(CONTENT, signer), **change)
    if change == {"epilogue": b""}:  # a third part instead
        raw = raw.replace(DASHES + b"--\n", DASHES + b"\nthird\n" + DASHES + b"--\n")
    with pytest.raises(ListFormatError, match="exactly two parts and a closing boundary"):
        verify_smime(raw)


def test_text_mode_makes_lone_line_feeds_crlf_and_keeps_lone_carriage_returns(
    signer: Identity,
) -> None:
    canonical = b"a\r\nb\rc\r\r\nd\r\n\r\ne"
    der = signature(canonical, signer, binary=True)  # exactly these bytes are signed
    for sent in (canonical, b"a\nb\rc\r\r\nd\n\ne", b"a\r\nb\rc\r\r\nd\n\r\ne"):
        assert verify_smime(message(sent, der)).content == canonical


def test_a_lone_carriage_return_is_not_made_a_line_end(signer: Identity) -> None:
    canonical = b"a\r\nb"
    der = signature(canonical, signer, binary=True)
    with pytest.raises(SignatureError, match="differs from what was signed"):
        verify_smime(message(b"a\rb", der))
