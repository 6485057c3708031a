"""The complete signed example in ``feeds/SCHEMA.md``: how it is made and read back.

The spec carries three blocks between markers: the example CA certificate,
its CRL and a signed list. ``test_schema_example.py`` verifies them at
:data:`VERIFY_AT`, so the spec cannot drift from the code. To regenerate
them after a deliberate format change::

    .venv/bin/python -m tests.feeds.schema_example
"""

from __future__ import annotations

import re
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from feeds.atom import render_list
from feeds.model import ImageEntry, ImageList, Tombstone, image_id, list_id, sha512_hex
from keys import pki
from keys.certs import load_private_key
from keys.dn import DistinguishedName
from keys.xmlsig import sign_enveloped

SCHEMA = Path(__file__).resolve().parents[2] / "feeds" / "SCHEMA.md"
CREATED = datetime(2026, 11, 1, tzinfo=UTC)
UPDATED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
VERIFY_AT = datetime(2026, 11, 27, tzinfo=UTC)
CA_DN = "/DC=org/DC=example/CN=Example Grid CA"
ENDORSER_DN = "/DC=org/DC=example/OU=Users/CN=Jane Endorser"
BLOCKS = ("ca", "crl", "list")
_BLOCK = re.compile(
    r"(<!-- example:(?P<name>\w+) -->\n```(?P<lang>\w+)\n)(?P<body>.*?)(\n```)", re.DOTALL
)


def example_list() -> ImageList:
    """The list the spec shows: one image with every field, one minimal, one revoked."""
    full = ImageEntry(
        id=image_id("3d1f5c0a-2b6e-4c1d-9f3a-5e7b8c9d0e1f"),
        title="AlmaLinux 9 worker node",
        summary="Minimal AlmaLinux 9.4 for batch worker nodes, contextualised by CD-ROM.",
        url="https://images.example.org/alma9-wn-2026.11.qcow2",
        size=1073741824,
        sha512=sha512_hex("ab" * 64),
        format="qcow2",
        updated=UPDATED - timedelta(days=1),
        endorsed=UPDATED - timedelta(days=1),
        hypervisor="KVM",
        arch="x86_64",
        os="Linux",
        osname="AlmaLinux",
        osversion="9.4",
        version="2026.11",
        produced=UPDATED - timedelta(days=3),
        expires=UPDATED + timedelta(days=180),
        vo="dteam",
        tags=("worker-node", "el9"),
        info_url="https://images.example.org/alma9-wn.html",
    )
    minimal = ImageEntry(
        id=image_id("7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"),
        title="Debian 12 service node",
        summary="",
        url="https://images.example.org/debian12-svc.img",
        size=2147483648,
        sha512=sha512_hex("cd" * 64),
        format="raw",
        updated=UPDATED - timedelta(days=10),
        endorsed=UPDATED - timedelta(days=10),
    )
    return ImageList(
        id=list_id("6f1c1e0e-8a7b-4c55-9d3e-0a1b2c3d4e5f"),
        title="Example VO images",
        subtitle="Images endorsed for the dteam VO",
        self_url="https://images.example.org/lists/dteam.atom",
        updated=UPDATED,
        expires=UPDATED + timedelta(days=28),
        version=7,
        endorser_dn=DistinguishedName.parse_slash(ENDORSER_DN),
        issuer_dn=DistinguishedName.parse_slash(CA_DN),
        author_name="Jane Endorser",
        author_email="jane@example.org",
        entries=(full, minimal),
        tombstones=(
            Tombstone(
                id=image_id("0e1d2c3b-4a59-4687-9a8b-7c6d5e4f3a2b"),
                when=UPDATED - timedelta(days=2),
                reason="OpenSSH in this image is vulnerable (CVE-2024-6387)",
            ),
        ),
    )


def make_blocks() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        ca = pki.create_ca(
            DistinguishedName.parse_slash(CA_DN),
            folder / "ca",
            now=CREATED,
            key_type="ec",
            crl_days=60,
        )
        cert = pki.issue(
            ca,
            DistinguishedName.parse_slash(ENDORSER_DN),
            folder / "jane",
            now=CREATED,
            email="jane@example.org",
            key_type="ec",
        )
        key = load_private_key(folder / "jane" / "key.pem")
        signed = sign_enveloped(render_list(example_list()), key=key, cert=cert)
        return {
            "ca": ca.cert.public_bytes(serialization.Encoding.PEM).decode().strip(),
            "crl": (folder / "ca" / pki.CA_CRL).read_text().strip(),
            "list": signed.decode("utf-8").strip(),
        }


def extract(text: str) -> dict[str, str]:
    """The example blocks of the spec, by name."""
    return {m.group("name"): m.group("body") for m in _BLOCK.finditer(text)}


def regenerate(path: Path = SCHEMA) -> None:
    blocks = make_blocks()
    text = path.read_text()

    def replace(match: re.Match[str]) -> str:
        return match.group(1) + blocks[match.group("name")] + match.group(5)

    new_text, count = _BLOCK.subn(replace, text)
    if count != len(BLOCKS):
        raise SystemExit(f"{path}: expected {len(BLOCKS)} example blocks, found {count}")
    path.write_text(new_text)


if __name__ == "__main__":
    regenerate(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA)
