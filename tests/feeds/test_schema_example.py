"""The signed example in feeds/SCHEMA.md verifies, and is what the code writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from federation.cli import main
from feeds.atom import VMIC, render_list, to_bytes
from feeds.verify import verify_list
from keys.dn import DistinguishedName
from keys.errors import FreshnessError
from keys.trust import TrustStore
from keys.xmlsig import SignerPin
from tests.feeds.schema_example import (
    BLOCKS,
    CA_DN,
    ENDORSER_DN,
    SCHEMA,
    VERIFY_AT,
    example_list,
    extract,
)


@pytest.fixture(scope="module")
def blocks() -> dict[str, str]:
    found = extract(SCHEMA.read_text())
    assert sorted(found) == sorted(BLOCKS)
    return found


@pytest.fixture
def trust_dir(tmp_path: Path, blocks: dict[str, str]) -> Path:
    folder = tmp_path / "trust"
    folder.mkdir()
    (folder / "ca.pem").write_text(blocks["ca"] + "\n")
    (folder / "ca.crl.pem").write_text(blocks["crl"] + "\n")
    return folder


def test_schema_example_verifies_with_the_pinned_endorser(
    blocks: dict[str, str], trust_dir: Path
) -> None:
    pin = SignerPin(
        subject=DistinguishedName.parse_slash(ENDORSER_DN),
        issuer=DistinguishedName.parse_slash(CA_DN),
    )
    verified = verify_list(
        blocks["list"].encode(),
        trust=TrustStore.from_directory(trust_dir),
        pins=[pin],
        now=VERIFY_AT,
    )
    assert verified.image_list == example_list()
    assert verified.signer.subject == pin.subject


def test_schema_example_is_byte_for_byte_what_the_writer_renders(blocks: dict[str, str]) -> None:
    signed = blocks["list"]
    without_signature = re.sub(r"<ds:Signature .*</ds:Signature>", "", signed, flags=re.DOTALL)
    assert without_signature.encode() == to_bytes(render_list(example_list()))


def test_schema_example_verifies_with_the_cli(
    blocks: dict[str, str], trust_dir: Path, tmp_path: Path
) -> None:
    listing = tmp_path / "list.atom"
    listing.write_text(blocks["list"])
    at = VERIFY_AT.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert main(["verify", str(listing), "--trust", str(trust_dir), "--at", at]) == 0


def test_schema_example_is_refused_after_it_expires(
    blocks: dict[str, str], trust_dir: Path
) -> None:
    with pytest.raises(FreshnessError):
        verify_list(
            blocks["list"].encode(),
            trust=TrustStore.from_directory(trust_dir),
            pins=None,
            now=example_list().expires,
        )


def test_every_vmic_element_of_the_example_is_specified(blocks: dict[str, str]) -> None:
    spec = SCHEMA.read_text()
    root = etree.fromstring(blocks["list"].encode())
    names = {etree.QName(n).localname for n in root.iter() if etree.QName(n).namespace == VMIC}
    assert names  # the example uses the vmic namespace
    missing = sorted(name for name in names if f"`vmic:{name}`" not in spec)
    assert missing == []
