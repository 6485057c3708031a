"""S/MIME signed data, as HEPiX image lists use it: verify (in Python) and sign.

A HEPiX list is JSON signed with ``openssl smime -sign`` (or M2Crypto, or
cryptography): either ``multipart/signed`` with a detached CMS signature, or
opaque ``application/pkcs7-mime`` signed data that carries the JSON inside.
:func:`verify_smime` accepts both, and a bare DER or PEM ``PKCS7`` as well.

Verification, in this order, stopping at the first failure:

1. the MIME envelope (size-capped, parsed by hand so the signed bytes are
   exactly the bytes received) and the CMS structure (asn1crypto): one
   ``SignedData``, one ``SignerInfo``, at most ``MAX_CERTIFICATES``
   certificates, among them the signer's;
2. the content's digest (SHA-1, SHA-256, SHA-384 or SHA-512) against the
   signed ``message-digest`` attribute, or the signature directly over the
   content when there are no signed attributes; for ``multipart/signed`` the
   content is the first part in canonical form (CRLF line ends, as S/MIME
   text mode signs it), or exactly as received (binary mode);
3. the signature value (RSA PKCS #1 v1.5 or ECDSA) with the key of the
   certificate the ``SignerInfo`` names.

This only says that the content is what the holder of that certificate
signed; whether the certificate is trusted (chain, CRLs, namespaces, pins)
is the caller's to decide with :class:`keys.trust.TrustStore` -- after the
signature, so a forged or altered message is reported as such whoever
claims to have signed it. The ``signing-time`` attribute is never believed.
"""

from __future__ import annotations

import base64
import binascii
import email.message
import email.parser
import email.policy
import hashlib
import hmac
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from keys.certs import PrivateKey, load_der_certificate
from keys.errors import ConfigError, ListFormatError, SignatureError, VmicError
from keys.limits import DEFAULT_LIMITS, Limits

MAX_CERTIFICATES = 10
"""Most certificates one signed message may carry (the signer and its intermediates)."""

_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
DIGEST_NAMES = {"sha1": "SHA-1", "sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}
# signatureAlgorithm values a SignerInfo may carry, and the digest each one implies.
_RSA_ALGORITHMS = {
    "rsassa_pkcs1v15": None,
    "sha1_rsa": "sha1",
    "sha256_rsa": "sha256",
    "sha384_rsa": "sha384",
    "sha512_rsa": "sha512",
}
_ECDSA_ALGORITHMS = {
    "ecdsa": None,
    "sha1_ecdsa": "sha1",
    "sha256_ecdsa": "sha256",
    "sha384_ecdsa": "sha384",
    "sha512_ecdsa": "sha512",
}
_SIGNATURE_TYPES = {"application/pkcs7-signature", "application/x-pkcs7-signature"}
_OPAQUE_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}
_HEADER_LINE = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9-]*:")
_PEM_MARKERS = (
    (b"-----BEGIN PKCS7-----", b"-----END PKCS7-----"),
    (b"-----BEGIN CMS-----", b"-----END CMS-----"),
)
_MAX_HEADERS = 16 * 1024
"""Bytes of MIME headers accepted (a real S/MIME header block is a few hundred)."""
_MAX_BOUNDARY = 70  # RFC 2046


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedContent:
    """Content whose signature is valid, and the certificates that came with it."""

    content: bytes
    """The signed bytes, with any text-mode MIME headers (``Content-Type: text/plain``) removed."""
    signer: x509.Certificate
    others: tuple[x509.Certificate, ...]
    digest: str
    """``SHA-256`` and so on."""
    signature: str
    """``RSA`` or ``ECDSA``."""
    detached: bool


def looks_like_smime(raw: bytes) -> bool:
    """True for a MIME message, a PEM PKCS7 or a DER ``ContentInfo`` (cheap prefix test)."""
    head = raw.lstrip()[:4096]
    if _is_der(head):
        return True
    if head.startswith((b"-----BEGIN PKCS7-----", b"-----BEGIN CMS-----")):
        return True
    return _HEADER_LINE.match(head) is not None and b"content-type:" in head.lower()


def verify_smime(raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> SignedContent:
    """Check an S/MIME signed message; its content and signer (not yet trusted).

    Raises ListFormatError or SignatureError, and nothing else: whatever a
    parser makes of hostile bytes (deep nesting, unknown curves, duplicate
    extensions in a certificate no one has vouched for yet) is a rejection.
    """
    if len(raw) > limits.max_list_bytes:
        raise ListFormatError(
            f"the signed list is {len(raw)} bytes, more than the limit of {limits.max_list_bytes}"
        )
    try:
        return _verify_message(raw)
    except VmicError:
        raise
    except Exception as exc:  # any library failure on untrusted input rejects it
        raise SignatureError(
            f"the signed message cannot be checked ({type(exc).__name__}: {exc})"
        ) from exc


def _verify_message(raw: bytes) -> SignedContent:
    stripped = raw.lstrip()
    if _is_der(stripped):
        return _verify_cms(stripped, candidates=None)
    if stripped.startswith(b"-----BEGIN"):
        return _verify_cms(_pem_body(stripped), candidates=None)
    headers, body = _split_message(raw)
    message = _parse_headers(headers)
    content_type = message.get_content_type()
    if content_type == "multipart/signed":
        boundary = message.get_param("boundary")
        if not isinstance(boundary, str) or not 0 < len(boundary) <= _MAX_BOUNDARY:
            raise ListFormatError("multipart/signed needs a boundary of 1 to 70 characters")
        content, signature_part = _two_parts(body, boundary.encode("ascii", "replace"))
        sig_headers, sig_body = _split_message(signature_part)
        sig_message = _parse_headers(sig_headers)
        if sig_message.get_content_type() not in _SIGNATURE_TYPES:
            raise ListFormatError(
                f"the second part is {sig_message.get_content_type()}, "
                "expected application/pkcs7-signature"
            )
        der = _decode_body(sig_message.get("Content-Transfer-Encoding"), sig_body)
        canonical = _canonical_crlf(content)
        candidates = [canonical] if canonical == content else [canonical, content]
        return _verify_cms(der, candidates=candidates)
    if content_type in _OPAQUE_TYPES:
        smime_type = message.get_param("smime-type")
        if smime_type not in (None, "signed-data"):
            raise ListFormatError(f"S/MIME type {smime_type} is not signed data")
        der = _decode_body(message.get("Content-Transfer-Encoding"), body)
        return _verify_cms(der, candidates=None)
    raise ListFormatError(
        f"a MIME message of type {content_type}; a signed HEPiX list is multipart/signed "
        "or application/pkcs7-mime"
    )


def sign_smime(
    content: bytes,
    *,
    key: PrivateKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
) -> bytes:
    """``multipart/signed`` S/MIME over ``content`` (text mode: CRLF, SHA-256)."""
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"an S/MIME signature needs an RSA or EC key, not {type(key).__name__}")
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key, hashes.SHA256())
    for extra in chain:
        builder = builder.add_certificate(extra)
    return builder.sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature])


def _is_der(data: bytes) -> bool:
    """A DER SEQUENCE long enough to be a signed message (length in 1-4 bytes, or BER's 0x80)."""
    return len(data) > 1 and data[0] == 0x30 and 0x80 <= data[1] <= 0x84


# -- MIME -------------------------------------------------------------------------
def _pem_body(data: bytes) -> bytes:
    for begin, end in _PEM_MARKERS:
        if data.startswith(begin):
            stop = data.find(end, len(begin))
            if stop < 0:
                raise ListFormatError("the PEM PKCS7 block is not terminated")
            return _base64(data[len(begin) : stop], what="the PEM PKCS7 block")
    raise ListFormatError("a PEM block that is not a PKCS7 signed message")


def _split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Headers and body, split at the first empty line (CRLF or LF)."""
    match = re.search(rb"\r?\n\r?\n", raw[: _MAX_HEADERS + 4])
    if match is None:
        if len(raw) > _MAX_HEADERS:
            raise ListFormatError(f"MIME headers longer than {_MAX_HEADERS} bytes")
        raise ListFormatError("not a MIME message (no empty line after the headers)")
    return raw[: match.start()] + b"\n", raw[match.end() :]


def _parse_headers(headers: bytes) -> email.message.Message:
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(headers)


def _two_parts(body: bytes, boundary: bytes) -> tuple[bytes, bytes]:
    """The two body parts of a multipart/signed body, byte for byte (RFC 2046 5.1.1).

    The line end before each delimiter belongs to the delimiter, not to the part.
    """
    marks: list[_Delimiter] = []
    for mark in _delimiters(body, boundary):
        marks.append(mark)
        if mark.closing or len(marks) > 3:
            break
    if len(marks) != 3 or not marks[2].closing or any(m.closing for m in marks[:2]):
        raise ListFormatError(
            "a multipart/signed body must hold exactly two parts and a closing boundary"
        )
    parts = []
    for opening, closing in itertools.pairwise(marks):
        start = opening.end + 1  # past the LF that ends the delimiter line
        part = body[start : closing.start]
        parts.append(part[:-2] if part.endswith(b"\r\n") else part.removesuffix(b"\n"))
    return parts[0], parts[1]


@dataclass(frozen=True, slots=True)
class _Delimiter:
    start: int
    """Where ``--BOUNDARY`` starts."""
    end: int
    """Where the delimiter line ends (at its LF, or at the end of the body)."""
    closing: bool
    """``--BOUNDARY--``: the close delimiter."""


def _delimiters(body: bytes, boundary: bytes) -> Iterator[_Delimiter]:
    """The lines ``--BOUNDARY``, then ``--`` for the close delimiter, then only blanks,
    in order: what ``^--BOUNDARY(--)?[ \\t]*\\r?$`` finds in multi-line mode. After the
    first line the search is for the LF before the boundary, a literal that the regular
    expression engine looks for quickly (a ``^`` it tries at every byte of a 10 MB list).
    """
    line = re.escape(b"--" + boundary) + rb"(--)?[ \t]*\r?$"
    first = re.compile(line, re.MULTILINE).match(body)
    if first is not None:
        yield _Delimiter(start=first.start(), end=first.end(), closing=bool(first.group(1)))
    later = re.compile(b"\n(" + line + b")", re.MULTILINE)
    for match in later.finditer(body, first.end() if first is not None else 0):
        yield _Delimiter(start=match.start(1), end=match.end(1), closing=bool(match.group(2)))


def _canonical_crlf(data: bytes) -> bytes:
    """Every line end as CRLF, as S/MIME text mode signs (openssl's SMIME_crlf_copy):
    a lone LF becomes CRLF, a CRLF stays, a lone CR stays."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _decode_body(encoding: str | None, body: bytes) -> bytes:
    name = (encoding or "7bit").strip().lower()
    if name == "base64":
        return _base64(body, what="the signature part")
    if name in ("binary", "8bit", "7bit"):
        return body
    raise ListFormatError(f"Content-Transfer-Encoding {encoding} is not supported")


def _base64(data: bytes, *, what: str) -> bytes:
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except binascii.Error as exc:
        raise ListFormatError(f"{what} is not valid base64") from exc


def _strip_text_headers(content: bytes) -> bytes:
    """Content signed in text mode starts with ``Content-Type: text/plain`` and an empty line."""
    if not _HEADER_LINE.match(content):
        return content
    headers, body = _split_message(content)
    message = _parse_headers(headers)
    if message.get_content_type() != "text/plain":
        raise ListFormatError(
            f"the signed content is {message.get_content_type()}, expected text/plain or JSON"
        )
    return body


# -- CMS --------------------------------------------------------------------------
def _verify_cms(der: bytes, *, candidates: list[bytes] | None) -> SignedContent:
    """Check a DER ContentInfo; ``candidates`` are the detached content's possible forms."""
    signed_data = _signed_data(der)
    certificates = _certificates(signed_data)
    infos = signed_data["signer_infos"]
    if len(infos) != 1:
        raise SignatureError(f"the message has {len(infos)} signers; exactly one is required")
    info = infos[0]
    signer = _signer_certificate(info, certificates)
    digest_name = info["digest_algorithm"]["algorithm"].native
    if digest_name not in _DIGESTS:
        raise SignatureError(f"digest algorithm {digest_name} is not accepted")
    encapsulated = signed_data["encap_content_info"]
    if encapsulated["content_type"].native != "data":
        raise SignatureError(f"the signed content is {encapsulated['content_type'].native}")
    embedded = encapsulated["content"]
    if candidates is None:
        if embedded.native is None:
            raise SignatureError("the signature is detached but no content came with it")
        candidates = [bytes(embedded.native)]
    elif embedded.native is not None:
        raise SignatureError("multipart/signed with content inside the signature as well")
    signed_attrs = info["signed_attrs"]
    if signed_attrs.native is None:
        content = _content_signed_directly(info, signer, digest_name, candidates)
    else:
        content = _content_with_attributes(signed_attrs, digest_name, candidates)
        # The signature covers the attributes as a DER SET OF, not as their [0] tag.
        attrs_der = b"\x31" + signed_attrs.dump()[1:]
        _check_signature_value(info, signer, digest_name, attrs_der)
    others = tuple(c for c in certificates if c is not signer)
    return SignedContent(
        content=_strip_text_headers(content),
        signer=signer,
        others=others,
        digest=DIGEST_NAMES[digest_name],
        signature="RSA" if isinstance(signer.public_key(), rsa.RSAPublicKey) else "ECDSA",
        detached=embedded.native is None,
    )


def _signed_data(der: bytes) -> Any:
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise SignatureError(f"the CMS message is {info['content_type'].native}, not signed")
        signed_data = info["content"]
    except (ValueError, TypeError, KeyError) as exc:
        raise SignatureError(f"the CMS signature does not parse: {exc}") from exc
    return signed_data


def _certificates(signed_data: Any) -> list[x509.Certificate]:
    choices = signed_data["certificates"]
    if not isinstance(choices, cms.CertificateSet) or len(choices) == 0:
        raise SignatureError("the signature carries no certificate")
    if len(choices) > MAX_CERTIFICATES:
        raise SignatureError(
            f"the signature carries {len(choices)} certificates, more than {MAX_CERTIFICATES}"
        )
    out = []
    for index, choice in enumerate(choices, start=1):
        if choice.name != "certificate":
            raise SignatureError(f"a {choice.name} certificate in the signature is not accepted")
        what = f"certificate #{index} of the signature"
        out.append(load_der_certificate(choice.chosen.dump(), what=what, error=SignatureError))
    return out


def _signer_certificate(info: Any, certificates: list[x509.Certificate]) -> x509.Certificate:
    sid = info["sid"]
    matches: list[x509.Certificate] = []
    if sid.name == "issuer_and_serial_number":
        issuer_der = sid.chosen["issuer"].dump()
        serial = sid.chosen["serial_number"].native
        matches = [
            c
            for c in certificates
            if c.serial_number == serial and c.issuer.public_bytes() == issuer_der
        ]
    elif sid.name == "subject_key_identifier":
        wanted = sid.chosen.native
        for cert in certificates:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == wanted:
                matches.append(cert)
    if len(matches) != 1:
        raise SignatureError("the signer's certificate is not among those the signature carries")
    return matches[0]


def _attribute(signed_attrs: Any, name: str) -> Any:
    found = [a for a in signed_attrs if a["type"].native == name]
    if len(found) != 1 or len(found[0]["values"]) != 1:
        raise SignatureError(f"the signed attributes must hold exactly one {name}")
    return found[0]["values"][0].native


def _content_with_attributes(signed_attrs: Any, digest_name: str, candidates: list[bytes]) -> bytes:
    if _attribute(signed_attrs, "content_type") != "data":
        raise SignatureError("the signed content-type attribute is not data")
    expected = _attribute(signed_attrs, "message_digest")
    for candidate in candidates:
        if hmac.compare_digest(hashlib.new(digest_name, candidate).digest(), expected):
            return candidate
    raise SignatureError("the content differs from what was signed (message digest mismatch)")


def _content_signed_directly(
    info: Any, signer: x509.Certificate, digest_name: str, candidates: list[bytes]
) -> bytes:
    for candidate in candidates:
        try:
            _check_signature_value(info, signer, digest_name, candidate)
        except SignatureError:
            continue
        return candidate
    raise SignatureError("the content differs from what was signed (signature mismatch)")


def _check_signature_value(
    info: Any, signer: x509.Certificate, digest_name: str, data: bytes
) -> None:
    algorithm = info["signature_algorithm"]["algorithm"].native
    value = bytes(info["signature"].native)
    key = signer.public_key()
    digest = _DIGESTS[digest_name]()
    implied = _RSA_ALGORITHMS.get(algorithm, _ECDSA_ALGORITHMS.get(algorithm))
    if implied is not None and implied != digest_name:
        raise SignatureError(f"signature algorithm {algorithm} does not fit digest {digest_name}")
    try:
        if algorithm in _RSA_ALGORITHMS and isinstance(key, rsa.RSAPublicKey):
            key.verify(value, data, padding.PKCS1v15(), digest)
            return
        if algorithm in _ECDSA_ALGORITHMS and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(value, data, ec.ECDSA(digest))
            return
    except InvalidSignature as exc:
        raise SignatureError(
            "the signature value does not match the signer's key (the message was altered "
            "or signed by another key)"
        ) from exc
    raise SignatureError(
        f"signature algorithm {algorithm} does not fit the signer's key ({type(key).__name__})"
    )
