"""Building and signing image lists for tests, with real signatures."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from lxml import etree

from feeds.atom import ATOM, TOMBSTONES, VMIC, render_list
from feeds.model import ImageEntry, ImageList, Tombstone, image_id, list_id, sha512_hex
from feeds.verify import PreviousState, verify_list
from keys.errors import VmicError
from keys.trust import TrustStore
from keys.xmlsig import SignerPin, sign_enveloped
from tests.support.ca import Identity

LIST_ID = list_id("6f1c1e0e-8a7b-4c55-9d3e-0a1b2c3d4e5f")
SELF_URL = "https://endorser.example.org/lists/base.atom"


def image_uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def entry(n: int, *, now: datetime, data: bytes | None = None, **changes: object) -> ImageEntry:
    payload = data if data is not None else f"image {n}".encode()
    base = ImageEntry(
        id=image_id(image_uuid(n)),
        title=f"Test image {n}",
        summary=f"A small test image number {n}",
        url=f"https://images.example.org/img-{n}.qcow2",
        size=len(payload),
        sha512=sha512_hex(hashlib.sha512(payload).hexdigest()),
        format="qcow2",
        updated=now - timedelta(days=1),
        endorsed=now - timedelta(days=1),
        hypervisor="KVM",
        arch="x86_64",
        os="Linux",
        osname="AlmaLinux",
        osversion="9.4",
        version="1.0",
        produced=now - timedelta(days=2),
        vo="dteam",
        tags=("test",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def image_list(
    signer: Identity,
    *,
    now: datetime,
    entries: int = 2,
    version: int = 1,
    updated: datetime | None = None,
    expires: datetime | None = None,
    tombstones: tuple[Tombstone, ...] = (),
    **changes: object,
) -> ImageList:
    base = ImageList(
        id=LIST_ID,
        title="Test endorser list",
        self_url=SELF_URL,
        updated=updated or now - timedelta(minutes=10),
        expires=expires or now + timedelta(days=28),
        version=version,
        endorser_dn=signer.subject,
        issuer_dn=signer.issuer,
        author_name="Jane Endorser",
        author_email="jane@example.org",
        entries=tuple(entry(n, now=now) for n in range(1, entries + 1)),
        tombstones=tombstones,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def sign(image_list: ImageList, signer: Identity, *, digest: str = "sha256") -> bytes:
    return sign_enveloped(
        render_list(image_list),
        key=signer.key,
        cert=signer.cert,
        intermediates=signer.intermediates,
        digest=digest,
    )


def sign_root(root: etree._Element, signer: Identity) -> bytes:
    return sign_enveloped(
        root, key=signer.key, cert=signer.cert, intermediates=signer.intermediates
    )


def rejects(
    error: type[VmicError],
    raw: bytes,
    trust: TrustStore,
    pins: Sequence[SignerPin] | None,
    now: datetime,
    *,
    previous: PreviousState,
    match: str | None = None,
    **kwargs: Any,
) -> None:
    """Expect ``error`` (exactly that class) and an untouched rollback state."""
    snapshot = copy.deepcopy(previous)
    with pytest.raises(error, match=match) as caught:
        verify_list(raw, trust=trust, pins=pins, now=now, previous=previous, **kwargs)
    assert type(caught.value) is error, type(caught.value)
    assert previous == snapshot
    assert dataclasses.asdict(previous) == dataclasses.asdict(snapshot)


def a(tag: str) -> str:
    """An Atom element's name in Clark notation."""
    return f"{{{ATOM}}}{tag}"


def v(tag: str) -> str:
    """A vmic element's name in Clark notation."""
    return f"{{{VMIC}}}{tag}"


def t(tag: str) -> str:
    """A tombstone element's name in Clark notation."""
    return f"{{{TOMBSTONES}}}{tag}"
