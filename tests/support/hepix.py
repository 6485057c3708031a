"""Signing HEPiX lists for tests: in Python (cryptography) and with ``openssl smime``.

Every way a HEPiX endorser's tool writes S/MIME is here, so the verifier is
tested against each: detached ``multipart/signed`` in text mode (vmcaster,
``openssl smime -sign``), with a ``Content-Type: text/plain`` header
(``-text``), opaque ``application/pkcs7-mime`` (``-nodetach``), SHA-1 or
SHA-256, and bare DER.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from feeds.hepix import render_hepix
from feeds.model import ImageList
from keys.smime import sign_smime
from tests.support.ca import Identity, pem

INTEROP = Path(__file__).resolve().parents[1] / "interop" / "hepix"
"""Public HEPiX samples, byte for byte as their projects publish them (see README.md there)."""


def sign(image_list: ImageList, signer: Identity) -> bytes:
    """The way `vmic endorse sign --format hepix` signs: detached, text mode, SHA-256."""
    return sign_smime(
        render_hepix(image_list), key=signer.key, cert=signer.cert, chain=signer.intermediates
    )


def sign_bytes(
    content: bytes,
    signer: Identity,
    *,
    digest: str = "sha256",
    opaque: bool = False,
    text: bool = False,
    der: bool = False,
) -> bytes:
    """S/MIME (or bare DER) made by cryptography, with the options a test picks."""
    assert isinstance(signer.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    algorithm = {"sha256": hashes.SHA256(), "sha512": hashes.SHA512()}[digest]
    builder = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(
            signer.cert,
            signer.key,
            algorithm,  # type: ignore[arg-type]
        )
    )
    for extra in signer.intermediates:
        builder = builder.add_certificate(extra)
    options = [] if opaque or der else [pkcs7.PKCS7Options.DetachedSignature]
    if text:
        options.append(pkcs7.PKCS7Options.Text)
    if der or opaque:
        signed = builder.sign(serialization.Encoding.DER, options)
        if der:
            return signed
        body = base64.encodebytes(signed)
        return (
            b'MIME-Version: 1.0\nContent-Disposition: attachment; filename="smime.p7m"\n'
            b'Content-Type: application/x-pkcs7-mime; smime-type=signed-data; name="smime.p7m"\n'
            b"Content-Transfer-Encoding: base64\n\n" + body
        )
    return builder.sign(serialization.Encoding.SMIME, options)


def openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        pytest.skip("the openssl command is not installed")
    return found


def openssl_sign(
    content: bytes, signer: Identity, folder: Path, *, options: tuple[str, ...] = ()
) -> bytes:
    """``openssl smime -sign`` over ``content``, as vmcaster's users run it."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "key.pem"
    key.write_bytes(
        signer.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert = folder / "cert.pem"
    cert.write_bytes(pem(signer.cert))
    data = folder / "list.json"
    data.write_bytes(content)
    command = [openssl(), "smime", "-sign", "-in", str(data), "-signer", str(cert)]
    command += ["-inkey", str(key), *options]
    if signer.intermediates:
        chain = folder / "chain.pem"
        chain.write_bytes(pem(*signer.intermediates))
        command += ["-certfile", str(chain)]
    done = subprocess.run(command, capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def openssl_verify(
    signed: bytes, ca_pem: bytes, folder: Path
) -> subprocess.CompletedProcess[bytes]:
    """``openssl smime -verify`` as a vmcatcher site would run it (any purpose)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "signed.smime").write_bytes(signed)
    (folder / "ca.pem").write_bytes(ca_pem)
    command = [openssl(), "smime", "-verify", "-in", str(folder / "signed.smime")]
    command += ["-CAfile", str(folder / "ca.pem"), "-purpose", "any"]
    return subprocess.run(command, capture_output=True, check=False, timeout=60)
