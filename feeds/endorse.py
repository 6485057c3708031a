"""The endorser's workflow: manifest edits, rendering, signing.

Each function does one command's work and returns what the CLI reports.
Versioning: every signing, and every render of a template for an external
signer, issues the next version (a new signing always changes the bytes,
and sites reject one version with two different documents); a render for
review only shows the next version and records nothing; ``updated`` moves
only when the content changed. The manifest is saved with the new version
*before* the output is written, so a failure can burn a version number but
never reuse one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509

from feeds.atom import render_list, to_bytes
from feeds.blocks import hash_and_index
from feeds.formats import guess_format
from feeds.hepix import render_hepix
from feeds.manifest import Manifest
from feeds.model import (
    URN_UUID,
    BlocksRef,
    ImageEntry,
    ImageList,
    check_author_uri,
    check_token,
    check_url,
    image_id,
    list_id,
    new_uuid,
    sha512_hex,
)
from feeds.policy.model import Report
from feeds.qcow2 import has_compressed_clusters
from feeds.verify import ListFormat, verify_list
from keys.certs import PrivateKey, cert_label, check_key_strength, is_ca, public_keys_equal
from keys.dn import DistinguishedName
from keys.errors import CertificateError, ConfigError, ListFormatError, PolicyError
from keys.fileio import sha512_file, write_atomic
from keys.smime import sign_smime
from keys.trust import CrlPolicy, TrustStore
from keys.xmlsig import SignerPin, add_signature_template, sign_enveloped

T = TypeVar("T")

MAX_VALIDITY = timedelta(days=400)
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``28d``, ``12h``, ``2w``, ... as a timedelta."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"{text!r} is not a duration", hint="write e.g. 28d, 12h or 2w")
    value = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if value <= timedelta(0) or value > MAX_VALIDITY:
        raise ConfigError(f"validity {text} must be more than 0 and at most {MAX_VALIDITY.days}d")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageMeta:
    """What the endorser says about an image besides its bytes."""

    url: str
    title: str | None = None
    summary: str | None = None
    format: str | None = None
    hypervisor: str | None = None
    arch: str | None = None
    os: str | None = None
    osname: str | None = None
    osversion: str | None = None
    version: str | None = None
    produced: datetime | None = None
    expires: datetime | None = None
    vo: str | None = None
    tags: Sequence[str] = field(default_factory=tuple)
    info_url: str | None = None
    policy_override: str | None = None
    blocks: bool | None = None
    """Write a block index: always (True), never (False), or by format (None: raw, and
    qcow2 without compressed clusters)."""
    blocks_url: str | None = None
    """Where the index is published (default: the image URL, ``.blocks`` added to its path)."""


BLOCKS_SUFFIX = ".blocks"
INDEXED_FORMATS = ("raw", "qcow2")
"""Formats indexed by default: their bytes are the disk's blocks (qcow2 unless compressed)."""


def blocks_path(image_file: Path) -> Path:
    """Where `vmic endorse add` writes an image's block index: ``FILE.blocks`` beside it."""
    return image_file.with_name(image_file.name + BLOCKS_SUFFIX)


def default_blocks_url(url: str) -> str:
    """The image's URL with ``.blocks`` added to its path (any query stays after it)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path + BLOCKS_SUFFIX))


def wants_index(image_file: Path, fmt: str, choice: bool | None) -> bool:
    """Whether `endorse add` indexes an image: as ``choice`` says, or by format (a qcow2
    image is read for compressed clusters; a malformed one raises ConfigError)."""
    if choice is not None:
        return choice
    if fmt == "qcow2":
        return not has_compressed_clusters(image_file)
    return fmt in INDEXED_FORMATS


def init_manifest(
    path: Path,
    *,
    title: str,
    self_url: str,
    author: str,
    email: str | None = None,
    subtitle: str | None = None,
    author_uri: str | None = None,
    vo: str | None = None,
) -> Manifest:
    _reword(lambda: check_url(self_url, what="--self-url"))
    if not title.strip() or not author.strip():
        raise ConfigError("--title and --author must not be empty")
    if author_uri:
        _reword(lambda: check_author_uri(author_uri or ""))
    if vo:
        _reword(lambda: check_token(vo or "", what="--vo"))
    return Manifest.create(
        path,
        title=title,
        self_url=self_url,
        author=author,
        email=email or None,
        subtitle=subtitle or None,
        new_id=new_uuid(),
        author_uri=author_uri or None,
        vo=vo or None,
    )


def add_image(
    path: Path,
    image_file: Path,
    meta: ImageMeta,
    *,
    now: datetime,
    progress: Callable[[int], None] | None = None,
    policy: Callable[[Path], str | None] | None = None,
) -> ImageEntry:
    """Hash and add one image. ``policy`` (the policy check of `vmic endorse add`) runs once
    the arguments are known to be good, may refuse the image, and says what to record.

    An image indexed (:func:`wants_index`) is hashed and indexed in the same read; its index
    is written as ``FILE.blocks`` beside it (:func:`blocks_path`) before the manifest,
    which records it, is saved."""
    manifest = Manifest.load(path)
    if not image_file.is_file():
        raise ConfigError(f"{image_file} is not a file")
    _reword(lambda: check_url(meta.url, what="--url"))
    fmt = meta.format or guess_format(image_file)
    _reword(lambda: check_token(fmt, what="--format"))
    if meta.vo:
        _reword(lambda: check_token(meta.vo or "", what="--vo"))
    for tag in meta.tags:
        _reword(partial(check_token, tag, what="--tag"))
    if meta.info_url:
        _reword(lambda: check_url(meta.info_url or "", what="--info-url"))
    if meta.expires is not None and meta.expires <= now:
        raise ConfigError("--expires is in the past")
    if meta.blocks_url:
        if meta.blocks is False:
            raise ConfigError("--blocks-url names a block index, which --no-blocks leaves out")
        _reword(lambda: check_url(meta.blocks_url or "", what="--blocks-url"))
    override = policy(image_file) if policy is not None else meta.policy_override
    index: bytes | None = None
    if wants_index(image_file, fmt, meta.blocks):
        digest, size, blocks = hash_and_index(image_file, progress=progress)
        index = blocks.encode()
    else:
        digest, size = sha512_file(image_file, progress=progress)
    entry = ImageEntry(
        id=image_id(new_uuid()),
        title=(meta.title or image_file.name).strip() or image_file.name,
        summary=meta.summary or "",
        url=meta.url,
        size=size,
        sha512=sha512_hex(digest),
        format=fmt,
        updated=now,
        endorsed=now,
        hypervisor=meta.hypervisor or None,
        arch=meta.arch or None,
        os=meta.os or None,
        osname=meta.osname or None,
        osversion=meta.osversion or None,
        version=meta.version or None,
        produced=meta.produced,
        expires=meta.expires,
        vo=meta.vo or None,
        tags=tuple(meta.tags),
        info_url=meta.info_url or None,
        policy_override=override or None,
        blocks=None
        if index is None
        else BlocksRef(
            url=meta.blocks_url or default_blocks_url(meta.url),
            size=len(index),
            sha512=sha512_hex(hashlib.sha512(index).hexdigest()),
        ),
    )
    index_file = blocks_path(image_file)
    manifest.add_image(
        entry, filename=image_file.name, blocks_file=None if index is None else index_file.name
    )
    if index is not None:  # before the manifest that names it
        try:
            write_atomic(index_file, index, mode=0o644)
        except ConfigError as exc:
            raise ConfigError(
                exc.message, hint="give --no-blocks to endorse the image without a block index"
            ) from exc
    manifest.save()
    return entry


def policy_override(report: Report, override: str | None) -> str | None:
    """What an image's entry records after its policy check (``vmic endorse add``).

    A clean image records nothing. An image with errors is refused
    (:class:`PolicyError`) unless the endorser gives a reason, which is then
    recorded with the rules it overrides and published in the signed list.
    """
    if report.clean:
        return None
    if override is None or not override.strip():
        listed = "; ".join(f"{f.rule} {f.path}" for f in report.errors[:5])
        more = f" and {len(report.errors) - 5} more" if len(report.errors) > 5 else ""
        raise PolicyError(
            f"{Path(report.image).name} breaks the trusted-image policy: {listed}{more}"
        )
    rules = sorted({f.rule for f in report.errors})
    return f"{override.strip()} (overrides: {', '.join(rules)})"


def revoke_image(path: Path, image: str, *, reason: str, now: datetime) -> ImageEntry:
    if not reason.strip():
        raise ConfigError("--reason must say why the image is revoked")
    manifest = Manifest.load(path)
    text = image.removeprefix(URN_UUID)
    wanted = _reword(lambda: image_id(text, any_case=True))
    revoked = manifest.revoke(wanted, reason=reason, when=now)
    manifest.save()
    return revoked


def _reword(check: Callable[[], T]) -> T:
    """Run a model check on user input, reporting its failure as a usage error."""
    try:
        return check()
    except ListFormatError as exc:
        raise ConfigError(exc.message) from exc


def issue_next(
    manifest: Manifest,
    *,
    now: datetime,
    valid_for: timedelta,
    endorser_dn: DistinguishedName,
    issuer_dn: DistinguishedName,
    record: bool = True,
) -> ImageList:
    """The next version of the list; the manifest records it (and is saved) first, unless
    ``record`` is false (a preview: nothing is issued)."""
    content = manifest.content_sha256()
    updated = manifest.state.updated
    if updated is not None and now < updated:
        raise ConfigError(
            f"this machine's clock ({now:%Y-%m-%d %H:%M:%S}Z) is behind the last signing of "
            f"this list ({updated:%Y-%m-%d %H:%M:%S}Z); sites would reject the new version",
            hint="set the clock right (NTP) and sign again",
        )
    if updated is None or content != manifest.state.content_sha256:
        updated = now
    version = manifest.state.version + 1
    info = manifest.info
    image_list = ImageList(
        id=list_id(info.id),
        title=info.title,
        subtitle=info.subtitle,
        self_url=info.self_url,
        updated=updated,
        expires=now + valid_for,
        version=version,
        endorser_dn=endorser_dn,
        issuer_dn=issuer_dn,
        author_name=info.author,
        author_email=info.email,
        author_uri=info.author_uri,
        vo=info.vo,
        entries=manifest.images,
        tombstones=manifest.tombstones(),
    )
    if not record:
        return image_list
    manifest.record_issue(
        version=version,
        updated=updated,
        content_sha256=content,
        endorser_dn=endorser_dn,
        issuer_dn=issuer_dn,
    )
    manifest.save()
    return image_list


def render(
    path: Path,
    out: Path,
    *,
    now: datetime,
    valid_for: timedelta,
    cert: x509.Certificate | None = None,
    template: str | None = None,
    digest: str = "sha256",
) -> ImageList:
    """Write the unsigned list: a preview for review (nothing issued), or with ``template``
    an empty signature for an external signer to fill in (the version is issued)."""
    manifest = Manifest.load(path)
    if cert is not None:
        endorser_dn = DistinguishedName.from_x509(cert.subject)
        issuer_dn = DistinguishedName.from_x509(cert.issuer)
    elif manifest.info.endorser_dn and manifest.info.issuer_dn:
        endorser_dn, issuer_dn = manifest.info.endorser_dn, manifest.info.issuer_dn
    else:
        raise ConfigError(
            "the list must name its endorser's DN",
            hint="give --cert CERT.pem (the certificate that will sign it)",
        )
    image_list = issue_next(
        manifest,
        now=now,
        valid_for=valid_for,
        endorser_dn=endorser_dn,
        issuer_dn=issuer_dn,
        record=template is not None,
    )
    root = render_list(image_list)
    if template is not None:
        add_signature_template(root, key_type=template, digest=digest)
    write_atomic(out, to_bytes(root))
    return image_list


def check_signer(
    cert: x509.Certificate,
    key: PrivateKey,
    intermediates: Sequence[x509.Certificate],
    *,
    now: datetime,
    until: datetime,
    trust: TrustStore | None = None,
    crl: CrlPolicy = CrlPolicy.REQUIRE,
) -> None:
    """Refuse a certificate with which the list would not verify at sites."""
    label = cert_label(cert)
    if not public_keys_equal(key.public_key(), cert.public_key()):
        raise ConfigError(f"the key does not belong to the certificate {label}")
    check_key_strength(cert.public_key(), owner=f"certificate {label}")
    if is_ca(cert):
        raise CertificateError(f"{label} is a CA certificate; sign with a personal certificate")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        signs = usage.digital_signature
    except x509.ExtensionNotFound:
        signs = False
    if not signs:
        raise CertificateError(f"certificate {label} lacks keyUsage digitalSignature")
    if now < cert.not_valid_before_utc:
        raise CertificateError(f"certificate {label} is not valid yet")
    if until > cert.not_valid_after_utc:
        raise CertificateError(
            f"certificate {label} expires on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z, "
            f"before the list would ({until:%Y-%m-%d %H:%M}Z)",
            hint="renew the certificate, or sign with a shorter --valid-for",
        )
    if trust is not None:
        trust.validate(cert, intermediates, at=now, crl=crl)


def sign(
    path: Path,
    out: Path,
    *,
    now: datetime,
    valid_for: timedelta,
    cert: x509.Certificate,
    key: PrivateKey,
    intermediates: Sequence[x509.Certificate] = (),
    digest: str = "sha256",
    trust: TrustStore | None = None,
    crl: CrlPolicy = CrlPolicy.REQUIRE,
    list_format: ListFormat = ListFormat.ATOM,
    hepix_out: Path | None = None,
) -> ImageList:
    """Render and sign the next version; with ``trust``, verify the result as a site would.

    ``list_format`` says how ``out`` is written; ``hepix_out`` writes the same
    version as a HEPiX list as well (for vmcatcher subscribers). Nothing is
    written unless every output signed (and, with ``trust``, verified).
    """
    if hepix_out is not None and list_format is ListFormat.HEPIX:
        raise ConfigError("--hepix-out goes with --format atom (--out is the HEPiX list already)")
    check_signer(cert, key, intermediates, now=now, until=now + valid_for, trust=trust, crl=crl)
    manifest = Manifest.load(path)
    image_list = issue_next(
        manifest,
        now=now,
        valid_for=valid_for,
        endorser_dn=DistinguishedName.from_x509(cert.subject),
        issuer_dn=DistinguishedName.from_x509(cert.issuer),
    )
    outputs = [(out, list_format)]
    if hepix_out is not None:
        outputs.append((hepix_out, ListFormat.HEPIX))
    documents = []
    for target, kind in outputs:
        if kind is ListFormat.HEPIX:
            signed = sign_smime(render_hepix(image_list), key=key, cert=cert, chain=intermediates)
        else:
            signed = sign_enveloped(
                render_list(image_list),
                key=key,
                cert=cert,
                intermediates=intermediates,
                digest=digest,
            )
        if trust is not None:
            pin = SignerPin(subject=image_list.endorser_dn, issuer=image_list.issuer_dn)
            verify_list(signed, trust=trust, pins=[pin], now=now, crl=crl, list_format=kind)
        documents.append((target, signed))
    for target, signed in documents:
        write_atomic(target, signed)
    return image_list
