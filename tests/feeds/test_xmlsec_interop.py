"""Interoperability with xmlsec1, an independent XML-DSig implementation.

(a) lists signed by vmic verify with ``xmlsec1 --verify``, and tampered copies
do not; (b) templates written by vmic and signed by ``xmlsec1 --sign`` are
accepted by :func:`feeds.verify.verify_list` and by ``vmic verify``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from federation.cli import main
from federation.cli.common import ExitCode
from feeds.atom import ATOM, render_list, to_bytes
from feeds.blocks import index_size
from feeds.endorse import ImageMeta, add_image, init_manifest, render
from feeds.model import BlocksRef, ImageList, sha512_hex
from feeds.verify import VerifiedList, verify_list
from keys.errors import SignatureError
from keys.trust import TrustStore
from keys.xmlsig import DS, SignerPin, add_signature_template
from tests.support import lists
from tests.support.ca import Identity, TestCA, pem, store, write_identity, write_trust_dir
from tests.support.glance import qcow2_image


@dataclass(frozen=True)
class Signer:
    kind: str
    identity: Identity
    key_type: str  # what a signature template announces: "rsa" or "ec"


@dataclass(frozen=True)
class Env:
    """Everything the interop tests share: the tool, the PKI, the signers, the clock."""

    xmlsec1: str
    ca_pem: Path
    root_ca: TestCA
    sub_ca: TestCA
    signers: dict[str, Signer]
    trust: TrustStore
    now: datetime


@pytest.fixture(scope="module")
def env(
    root_ca: TestCA, endorser: Identity, now: datetime, tmp_path_factory: pytest.TempPathFactory
) -> Env:
    xmlsec1 = shutil.which("xmlsec1")
    if xmlsec1 is None:
        pytest.skip("xmlsec1 is not installed")
    sub_ca = root_ca.intermediate("/DC=org/DC=vmic-test/CN=vmic Test Sub CA")
    signers = {
        "ec": Signer("ec", endorser, "ec"),
        "rsa": Signer(
            "rsa",
            root_ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Rsa Endorser", key_kind="rsa"),
            "rsa",
        ),
        "intermediate": Signer(
            "intermediate", sub_ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Sub Endorser"), "ec"
        ),
    }
    ca_pem = tmp_path_factory.mktemp("xmlsec-ca") / "ca.pem"
    ca_pem.write_bytes(pem(root_ca.cert))  # the root only: intermediates travel in KeyInfo
    return Env(
        xmlsec1=xmlsec1,
        ca_pem=ca_pem,
        root_ca=root_ca,
        sub_ca=sub_ca,
        signers=signers,
        trust=store([root_ca, sub_ca]),
        now=now,
    )


def run(xmlsec1: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [xmlsec1, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def xmlsec1_verifies(xmlsec1: str, ca_pem: Path, document: Path) -> bool:
    result = run(
        xmlsec1, "--verify", "--trusted-pem", ca_pem, "--enabled-reference-uris", "empty", document
    )
    if result.returncode == 0:
        assert "OK" in result.stdout + result.stderr
        return True
    assert "FAIL" in result.stdout + result.stderr or "rror" in result.stderr, result.stderr
    return False


def xmlsec1_sign(xmlsec1: str, signer: Identity, template: Path, out: Path) -> None:
    cert, key, chain = write_identity(template.parent / "identity", signer)
    keys = [key, cert, *([chain] if signer.intermediates else [])]
    result = run(
        xmlsec1,
        "--sign",
        "--privkey-pem",
        ",".join(map(str, keys)),
        "--output",
        out,
        template,
    )
    assert result.returncode == 0, result.stderr


def pin(signer: Identity) -> list[SignerPin]:
    return [SignerPin(subject=signer.subject, issuer=signer.issuer)]


SIGNER_KINDS = ["ec", "rsa", "intermediate"]


# -- (a) vmic signs, xmlsec1 verifies --------------------------------------------------


@pytest.mark.parametrize("digest", ["sha256", "sha512"])
@pytest.mark.parametrize("kind", SIGNER_KINDS)
def test_xmlsec1_verifies_a_list_signed_by_vmic(
    env: Env, tmp_path: Path, kind: str, digest: str
) -> None:
    signer = env.signers[kind].identity
    document = tmp_path / "list.atom"
    document.write_bytes(lists.sign(lists.image_list(signer, now=env.now), signer, digest=digest))
    # The intermediate travels in KeyInfo: no --untrusted-pem is needed.
    assert xmlsec1_verifies(env.xmlsec1, env.ca_pem, document)


def test_xmlsec1_verifies_a_list_that_names_block_indexes_and_sees_them_tampered(
    env: Env, tmp_path: Path
) -> None:
    """``vmic:blocks`` is signed content like any other element (SCHEMA §13)."""
    signer = env.signers["ec"].identity
    image_list = lists.image_list(signer, now=env.now)
    entries = tuple(
        replace(
            e,
            blocks=BlocksRef(
                url=e.url + ".blocks",
                size=index_size(e.size),
                sha512=sha512_hex(hashlib.sha512(e.id.encode()).hexdigest()),
            ),
        )
        for e in image_list.entries
    )
    raw = lists.sign(replace(image_list, entries=entries), signer)
    assert raw.count(b"<vmic:blocks ") == 2
    document = tmp_path / "list.atom"
    document.write_bytes(raw)
    assert xmlsec1_verifies(env.xmlsec1, env.ca_pem, document)
    first = entries[0].blocks
    assert first is not None
    document.write_bytes(raw.replace(first.sha512.encode(), b"0" * 128, 1))
    assert not xmlsec1_verifies(env.xmlsec1, env.ca_pem, document)
    with pytest.raises(SignatureError):
        verify_list(document.read_bytes(), trust=env.trust, pins=pin(signer), now=env.now)


def test_xmlsec1_also_takes_the_intermediate_from_untrusted_pem(env: Env, tmp_path: Path) -> None:
    signer = env.signers["intermediate"].identity
    document = tmp_path / "list.atom"
    document.write_bytes(lists.sign(lists.image_list(signer, now=env.now), signer))
    untrusted = tmp_path / "sub.pem"
    untrusted.write_bytes(pem(env.sub_ca.cert))
    result = run(
        env.xmlsec1,
        "--verify",
        "--trusted-pem",
        env.ca_pem,
        "--untrusted-pem",
        untrusted,
        "--enabled-reference-uris",
        "empty",
        document,
    )
    assert result.returncode == 0, result.stderr


def _tampered(raw: bytes, how: str) -> bytes:
    if how == "title":
        changed = raw.replace(b"<title>Test image 1</title>", b"<title>Test image X</title>")
    elif how == "url":
        changed = raw.replace(b"img-1.qcow2", b"img-1.qcow3", 2)
    elif how == "drop-entry":
        root = etree.fromstring(raw)
        root.remove(root.findall(f"{{{ATOM}}}entry")[1])
        changed = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    else:  # "version"
        changed = raw.replace(b"<vmic:version>1</vmic:version>", b"<vmic:version>2</vmic:version>")
    assert changed != raw
    return changed


@pytest.mark.parametrize("how", ["title", "url", "drop-entry", "version"])
@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_tampered_list_fails_in_xmlsec1_and_in_vmic(
    env: Env, tmp_path: Path, kind: str, how: str
) -> None:
    signer = env.signers[kind].identity
    raw = lists.sign(lists.image_list(signer, now=env.now), signer)
    original, tampered = tmp_path / "list.atom", tmp_path / "tampered.atom"
    original.write_bytes(raw)
    tampered.write_bytes(_tampered(raw, how))
    assert xmlsec1_verifies(env.xmlsec1, env.ca_pem, original)
    assert not xmlsec1_verifies(env.xmlsec1, env.ca_pem, tampered)
    with pytest.raises(SignatureError):
        verify_list(tampered.read_bytes(), trust=env.trust, pins=pin(signer), now=env.now)


def test_xmlsec1_rejects_a_vmic_list_under_another_trusted_ca(env: Env, tmp_path: Path) -> None:
    """The xmlsec1 check above is not vacuous: it does look at the trust anchor."""
    signer = env.signers["ec"].identity
    document = tmp_path / "list.atom"
    document.write_bytes(lists.sign(lists.image_list(signer, now=env.now), signer))
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pem(TestCA("/DC=org/DC=elsewhere/CN=Other CA", now=env.now).cert))
    assert not xmlsec1_verifies(env.xmlsec1, other, document)


# -- (b) vmic writes a template, xmlsec1 signs, vmic verifies -----------------------------


def _manifest_with_images(tmp_path: Path, now: datetime) -> Path:
    manifest = tmp_path / "base.toml"
    init_manifest(
        manifest,
        title="Base images",
        self_url=lists.SELF_URL,
        author="Jane Endorser",
        email="jane@example.org",
    )
    for n, data in enumerate((qcow2_image(bytes(60)), bytes(4096)), start=1):
        path = tmp_path / f"img-{n}"
        path.write_bytes(data)
        add_image(
            manifest,
            path,
            ImageMeta(url=f"https://images.example.org/img-{n}", vo="dteam", tags=("base",)),
            now=now,
        )
    return manifest


def _accepted(env: Env, raw: bytes, signer: Identity, expected: ImageList) -> VerifiedList:
    verified = verify_list(raw, trust=env.trust, pins=pin(signer), now=env.now)
    assert verified.image_list == expected
    return verified


@pytest.mark.parametrize("kind", SIGNER_KINDS)
def test_template_from_endorse_render_signed_by_xmlsec1_is_accepted(
    env: Env, tmp_path: Path, kind: str
) -> None:
    signer = env.signers[kind]
    manifest = _manifest_with_images(tmp_path, env.now)
    template, out = tmp_path / "template.atom", tmp_path / "signed.atom"
    rendered = render(
        manifest,
        template,
        now=env.now,
        valid_for=timedelta(days=28),
        cert=signer.identity.cert,
        template=signer.key_type,
    )
    assert all(e.blocks is not None for e in rendered.entries)  # raw and plain qcow2
    xmlsec1_sign(env.xmlsec1, signer.identity, template, out)
    verified = _accepted(env, out.read_bytes(), signer.identity, rendered)
    expected_method = "RSA-SHA256" if signer.key_type == "rsa" else "ECDSA-SHA256"
    assert verified.signer.signature_method == expected_method
    certs = etree.fromstring(out.read_bytes()).findall(f".//{{{DS}}}X509Certificate")
    assert len(certs) == 1 + len(signer.identity.intermediates)


@pytest.mark.parametrize("kind", SIGNER_KINDS)
def test_template_with_sha512_digest_signed_by_xmlsec1_is_accepted(
    env: Env, tmp_path: Path, kind: str
) -> None:
    signer = env.signers[kind]
    image_list = lists.image_list(
        signer.identity, now=env.now, entries=3, subtitle="from a template"
    )
    root = render_list(image_list)
    add_signature_template(root, key_type=signer.key_type, digest="sha512")
    template, out = tmp_path / "template.atom", tmp_path / "signed.atom"
    template.write_bytes(to_bytes(root))
    xmlsec1_sign(env.xmlsec1, signer.identity, template, out)
    verified = _accepted(env, out.read_bytes(), signer.identity, image_list)
    assert verified.signer.digest_method == "SHA-512"


def test_xmlsec1_signed_list_passes_the_vmic_verify_command(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = env.signers["intermediate"].identity
    image_list = lists.image_list(signer, now=env.now)
    root = render_list(image_list)
    add_signature_template(root, key_type="ec")
    template, out = tmp_path / "template.atom", tmp_path / "signed.atom"
    template.write_bytes(to_bytes(root))
    xmlsec1_sign(env.xmlsec1, signer, template, out)
    trust_dir = write_trust_dir(tmp_path / "trust", [env.root_ca, env.sub_ca])
    args = [
        "verify",
        str(out),
        "--trust",
        str(trust_dir),
        "--endorser-dn",
        signer.subject.slash(),
        "--ca-dn",
        signer.issuer.slash(),
        "--list-id",
        lists.LIST_ID,
        "--self-url",
        lists.SELF_URL,
        "--json",
    ]
    assert main(args) == ExitCode.OK
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["version"] == image_list.version
    assert [e["id"] for e in report["entries"]] == [e.id for e in image_list.entries]

    tampered = tmp_path / "tampered.atom"
    tampered.write_bytes(_tampered(out.read_bytes(), "title"))
    args[1] = str(tampered)
    assert main(args) == ExitCode.SIGNATURE
    capsys.readouterr()
