"""The site's export: a signed list of the images it approved and shares (SCHEMA §11).

The export is a list of the same format as an endorser's, signed with the
site's certificate, with its own constant id, its own growing version and
its own expiry. Each entry repeats the endorser's entry (same id, SHA-512
and size) and says where this site serves the bytes (by content address)
and the original signed list they come from (not while the list is frozen by
an equivocation alarm); it names no block index (a
peer finds one beside the bytes, ``/images/sha512/<hex>.blocks``). A peer
trusts it only for *which* images this site approved and *where* they are;
content is always checked against the endorser's signature.

A new export is signed when its content changed, when the last one is past
half its validity, or on request; otherwise the file on disk stays as it is
(peers then get 304s). The version and content digest live in the store's
``meta`` table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from feeds.atom import render_list
from feeds.endorse import check_signer
from feeds.model import HeldList, ImageEntry, ImageList, list_id, new_uuid
from keys.certs import load_certificate, load_certificates, load_private_key
from keys.dn import DistinguishedName
from keys.errors import ConfigError
from keys.fileio import write_atomic
from keys.xmlsig import sign_enveloped
from site_agent.alarms import AlarmStore
from site_agent.config import Identity
from site_agent.peerstore import PeerStore
from site_agent.records import RUNNABLE_STATES, entry_from_data, iso, parse_iso
from site_agent.site import Site
from site_agent.versions import with_content_digest

EXPORT_FILE = "export.atom"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportResult:
    path: Path
    version: int
    images: int
    written: bool


def export_path(site: Site) -> Path:
    return site.home.exports / EXPORT_FILE


def _entries(site: Site, identity: Identity) -> tuple[ImageEntry, ...]:
    """The shareable runnable images, but those of lists frozen by an equivocation alarm:
    while it is open the site vouches for none of them (peers approving what K peers
    share would count it)."""
    entries = []
    frozen = AlarmStore(site.store).frozen()
    for state in RUNNABLE_STATES:
        for image in site.store.images(state=state):
            if not image.shareable or image.list_id in frozen:
                continue
            current = site.store.current_list(image.list_id)
            if current is None:
                continue
            entry = entry_from_data(image.entry)
            entries.append(
                dataclasses.replace(
                    entry,
                    url=f"{identity.base_url}/images/sha512/{image.sha512}",
                    blocks=None,  # peers serve an index at /images/sha512/<hex>.blocks
                    source_list=list_id(image.list_id),
                    source_version=current.version,
                    source_url=f"{identity.base_url}/lists/{image.list_id}{_suffix(current.path)}",
                )
            )
    return tuple(sorted(entries, key=lambda e: e.id))


def _holds(site: Site, identity: Identity) -> tuple[HeldList, ...]:
    """Every endorser's list the site holds, in the version in force, with the digest of
    its signed content: what peers compare with their own copies (split views)."""
    held = []
    for lid, in_force in sorted(site.store.current_lists().items()):
        current = in_force if in_force.content_sha256 else with_content_digest(site, in_force)
        if current.content_sha256 is None:
            continue  # an S/MIME version from before schema 3: no digest to claim
        held.append(
            HeldList(
                list_id=list_id(lid),
                version=current.version,
                content_sha256=current.content_sha256,
                url=f"{identity.base_url}/lists/{lid}{_suffix(current.path)}",
            )
        )
    return tuple(held)


def _suffix(stored: str) -> str:
    """``.atom`` or ``.smime``: the served name of a list says its format."""
    return ".smime" if stored.endswith(".smime") else ".atom"


def _digest(
    entries: tuple[ImageEntry, ...],
    holds: tuple[HeldList, ...],
    identity: Identity,
    subject: str,
) -> str:
    data = [{f.name: str(getattr(e, f.name)) for f in dataclasses.fields(e)} for e in entries]
    held = [dataclasses.astuple(h) for h in holds]
    text = json.dumps([identity.base_url, subject, data, held], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_export(site: Site, *, force: bool = False) -> ExportResult:
    """Sign and write a new export if one is due; raises ConfigError without an identity."""
    identity = site.config.identity
    if identity is None:
        raise ConfigError(
            "this site has no identity to sign an export with",
            hint="`vmic site identity --cert CERT --key KEY --base-url URL`",
        )
    cert = load_certificate(identity.cert)
    key = load_private_key(identity.key)
    chain = load_certificates(identity.chain) if identity.chain else []
    subject = DistinguishedName.from_x509(cert.subject)
    entries = _entries(site, identity)
    holds = _holds(site, identity)
    meta = PeerStore(site.store)
    digest = _digest(entries, holds, identity, subject.slash())
    version = int(meta.meta("export_version") or 0)
    expires = parse_iso(meta.meta("export_expires"))
    path = export_path(site)
    half = identity.export_validity / 2
    due = (
        force
        or not path.exists()
        or digest != meta.meta("export_content")
        or expires is None
        or expires - site.now < half
    )
    if not due:
        return ExportResult(path=path, version=version, images=len(entries), written=False)
    until = site.now + identity.export_validity
    check_signer(cert, key, chain, now=site.now, until=until)
    export_id = meta.meta("export_list_id") or new_uuid()
    updated = parse_iso(meta.meta("export_updated"))
    if updated is None or digest != meta.meta("export_content"):
        updated = site.now
    image_list = ImageList(
        id=list_id(export_id),
        title=f"Images shared by {subject.common_name() or subject.slash()}",
        self_url=f"{identity.base_url}/export.atom",
        updated=updated,
        expires=until,
        version=version + 1,
        endorser_dn=subject,
        issuer_dn=DistinguishedName.from_x509(cert.issuer),
        author_name=subject.common_name() or subject.slash(),
        entries=entries,
        holds=holds,
    )
    signed = sign_enveloped(render_list(image_list), key=key, cert=cert, intermediates=chain)
    with site.store.atomic():  # the version is recorded before the file is written
        meta.set_meta("export_list_id", export_id)
        meta.set_meta("export_version", str(version + 1))
        meta.set_meta("export_content", digest)
        meta.set_meta("export_updated", iso(image_list.updated) or "")
        meta.set_meta("export_expires", iso(until) or "")
    write_atomic(path, signed)
    return ExportResult(path=path, version=version + 1, images=len(entries), written=True)
