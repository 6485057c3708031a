"""The endorser's workflow on real files: init, add, revoke, render, sign, and the refusals."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from feeds.atom import TOMBSTONES, render_list, to_bytes
from feeds.endorse import (
    ImageMeta,
    add_image,
    init_manifest,
    parse_duration,
    render,
    revoke_image,
    sign,
)
from feeds.manifest import Manifest
from feeds.reader import read_list
from feeds.verify import PreviousState, VerifiedList, verify_list
from keys.errors import CertificateError, ConfigError, SignatureError, VmicError
from keys.fileio import CHUNK
from keys.trust import TrustStore
from keys.xmlsig import DS, SignerPin
from tests.support.ca import Identity, TestCA, new_key, store
from tests.support.glance import qcow2_image

SELF_URL = "https://endorser.example.org/lists/base.atom"
VALID_FOR = timedelta(days=28)
USER_COMMENTS = (
    "# Ops: the endorser certificate is renewed every May (ticket OPS-42)",
    "# shown to sites as the feed title",
    "# images below are rebuilt nightly by the CI",
)


@pytest.fixture(scope="module")
def trust(root_ca: TestCA) -> TrustStore:
    return store([root_ca])


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "base.toml"
    init_manifest(
        path,
        title="Base images",
        self_url=SELF_URL,
        author="Jane Endorser",
        email="jane@example.org",
        subtitle="Weekly signed",
    )
    return path


def image(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def meta(n: int, **changes: object) -> ImageMeta:
    fields: dict[str, object] = {"url": f"https://images.example.org/img-{n}.qcow2"}
    fields.update(changes)
    return ImageMeta(**fields)  # type: ignore[arg-type]


def verify(
    raw: bytes, trust: TrustStore, signer: Identity, now: datetime, **kw: object
) -> VerifiedList:
    pin = SignerPin(subject=signer.subject, issuer=signer.issuer)
    return verify_list(raw, trust=trust, pins=[pin], now=now, **kw)  # type: ignore[arg-type]


def sign_as(signer: Identity, path: Path, out: Path, now: datetime) -> None:
    sign(
        path,
        out,
        now=now,
        valid_for=VALID_FOR,
        cert=signer.cert,
        key=signer.key,
        intermediates=signer.intermediates,
    )


# -- init -----------------------------------------------------------------------


def test_init_creates_a_manifest_that_loads(manifest: Path) -> None:
    loaded = Manifest.load(manifest)
    assert loaded.info.title == "Base images"
    assert loaded.info.self_url == SELF_URL
    assert loaded.info.author == "Jane Endorser"
    assert loaded.info.email == "jane@example.org"
    assert loaded.info.subtitle == "Weekly signed"
    assert loaded.info.endorser_dn is None
    assert loaded.state.version == 0
    assert loaded.images == ()
    assert loaded.revoked == ()


def test_init_gives_each_list_a_new_id(tmp_path: Path) -> None:
    ids = set()
    for name in ("a.toml", "b.toml"):
        init_manifest(tmp_path / name, title="T", self_url=SELF_URL, author="A")
        ids.add(Manifest.load(tmp_path / name).info.id)
    assert len(ids) == 2


def test_init_refuses_to_overwrite_a_manifest(manifest: Path) -> None:
    before = manifest.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        init_manifest(manifest, title="Other", self_url=SELF_URL, author="Mallory")
    assert manifest.read_bytes() == before


@pytest.mark.parametrize(
    ("title", "url", "author"),
    [
        ("T", "ftp://endorser.example.org/l.atom", "A"),
        ("T", "https://u:p@endorser.example.org/l.atom", "A"),
        ("  ", SELF_URL, "A"),
        ("T", SELF_URL, ""),
    ],
)
def test_init_refuses_bad_arguments_and_writes_nothing(
    tmp_path: Path, title: str, url: str, author: str
) -> None:
    path = tmp_path / "new.toml"
    with pytest.raises(ConfigError):
        init_manifest(path, title=title, self_url=url, author=author)
    assert not path.exists()


# -- add ------------------------------------------------------------------------


def test_add_image_hashes_the_file_while_streaming(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    data = hashlib.shake_256(b"vmic").digest(2 * CHUNK + 12345)
    path = image(tmp_path, "disk.img", data)
    chunks: list[int] = []
    entry = add_image(manifest, path, meta(1, format="raw"), now=now, progress=chunks.append)
    assert entry.sha512 == hashlib.sha512(data).hexdigest()
    assert entry.size == len(data)
    assert chunks == [CHUNK, CHUNK, 12345]
    assert Manifest.load(manifest).images == (entry,)


def test_add_image_records_every_field(manifest: Path, tmp_path: Path, now: datetime) -> None:
    path = image(tmp_path, "alma9.qcow2", qcow2_image(b"alma" * 256))
    produced = now - timedelta(days=2)
    expires = now + timedelta(days=180)
    entry = add_image(
        manifest,
        path,
        meta(
            1,
            title="AlmaLinux 9 base",
            summary="Minimal image",
            hypervisor="KVM",
            arch="x86_64",
            os="Linux",
            osname="AlmaLinux",
            osversion="9.4",
            version="2024.05",
            produced=produced,
            expires=expires,
            vo="dteam",
            tags=("base", "cvmfs"),
            info_url="https://wiki.example.org/alma9",
            policy_override="reviewed",
        ),
        now=now,
    )
    assert entry.format == "qcow2"
    assert entry.title == "AlmaLinux 9 base"
    assert entry.endorsed == entry.updated == now
    assert entry.produced == produced
    assert entry.expires == expires
    assert entry.tags == ("base", "cvmfs")
    assert Manifest.load(manifest).images == (entry,)


def test_add_image_guesses_format_unless_given(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    guessed = add_image(manifest, image(tmp_path, "a", qcow2_image(b"1" * 60)), meta(1), now=now)
    given = add_image(
        manifest, image(tmp_path, "b", b"QFI\xfb" + b"2" * 60), meta(2, format="vmdk"), now=now
    )
    plain = add_image(manifest, image(tmp_path, "c", b"\0" * 4096), meta(3), now=now)
    assert (guessed.format, given.format, plain.format) == ("qcow2", "vmdk", "raw")


def test_add_image_defaults_the_title_to_the_file_name(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    entry = add_image(manifest, image(tmp_path, "debian-12.img", b"d"), meta(1), now=now)
    assert entry.title == "debian-12.img"


def test_add_image_refuses_a_file_already_listed(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    first = add_image(manifest, image(tmp_path, "one.img", b"same bytes"), meta(1), now=now)
    before = manifest.read_bytes()
    with pytest.raises(ConfigError, match=first.id):
        add_image(manifest, image(tmp_path, "copy.img", b"same bytes"), meta(2), now=now)
    assert manifest.read_bytes() == before


@pytest.mark.parametrize(
    "changes",
    [
        {"url": "file:///srv/images/img.qcow2"},
        {"url": "ftp://images.example.org/img.qcow2"},
        {"url": "javascript:alert(1)"},
        {"url": "https://user:secret@images.example.org/img.qcow2"},
        {"url": "https://images.example.org/my image.qcow2"},
        {"url": "images.example.org/img.qcow2"},
        {"info_url": "javascript:alert(1)"},
        {"tags": ("ok", "not ok")},
        {"vo": "../dteam"},
        {"format": "qcow2 --evil"},
    ],
    ids=lambda c: next(iter(c)) + "=" + str(next(iter(c.values()))),
)
def test_add_image_refuses_bad_input_and_leaves_the_manifest_alone(
    manifest: Path, tmp_path: Path, now: datetime, changes: dict[str, object]
) -> None:
    add_image(manifest, image(tmp_path, "ok.img", b"ok"), meta(1), now=now)
    before = manifest.read_bytes()
    with pytest.raises(ConfigError):
        add_image(manifest, image(tmp_path, "new.img", b"new"), meta(2, **changes), now=now)
    assert manifest.read_bytes() == before


def test_add_image_refuses_an_expiry_in_the_past(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    before = manifest.read_bytes()
    with pytest.raises(ConfigError, match="past"):
        add_image(manifest, image(tmp_path, "x", b"x"), meta(1, expires=now), now=now)
    assert manifest.read_bytes() == before


def test_add_image_refuses_a_missing_file(manifest: Path, tmp_path: Path, now: datetime) -> None:
    before = manifest.read_bytes()
    with pytest.raises(ConfigError):
        add_image(manifest, tmp_path / "absent.img", meta(1), now=now)
    with pytest.raises(ConfigError):
        add_image(manifest, tmp_path, meta(1), now=now)
    assert manifest.read_bytes() == before


# Characters that XML 1.0 cannot carry: lxml refuses them with a bare ValueError when the
# list is rendered, so they must be refused as input (ConfigError), before anything is saved.
@pytest.mark.parametrize(
    ("field", "bad"),
    [("title", "\x1b[31m"), ("summary", "\x00"), ("osname", "\x0b"), ("version", "\ufffe")],
)
def test_add_image_refuses_text_that_xml_cannot_carry(
    manifest: Path, tmp_path: Path, now: datetime, field: str, bad: str
) -> None:
    before = manifest.read_bytes()
    with pytest.raises(ConfigError):
        add_image(manifest, image(tmp_path, "x", b"x"), meta(1, **{field: f"a{bad}b"}), now=now)
    assert manifest.read_bytes() == before


def test_init_refuses_text_that_xml_cannot_carry(tmp_path: Path) -> None:
    path = tmp_path / "new.toml"
    with pytest.raises(ConfigError):
        init_manifest(path, title="Base\x07", self_url=SELF_URL, author="Jane")
    assert not path.exists()


def test_sign_reports_a_hand_edited_control_character_as_a_config_error(
    manifest: Path, tmp_path: Path, now: datetime, endorser: Identity
) -> None:
    add_image(manifest, image(tmp_path, "one", b"one"), meta(1, title="One"), now=now)
    manifest.write_text(manifest.read_text().replace('title = "One"', 'title = "One\\u0007"'))
    with pytest.raises(ConfigError, match="U\\+0007"):
        Manifest.load(manifest)
    out = tmp_path / "base.atom"
    with pytest.raises(ConfigError):
        sign_as(endorser, manifest, out, now)
    assert not out.exists()


# -- revoke ---------------------------------------------------------------------


def test_revoke_moves_the_image_to_revoked(manifest: Path, tmp_path: Path, now: datetime) -> None:
    keep = add_image(manifest, image(tmp_path, "keep", b"keep"), meta(1), now=now)
    gone = add_image(manifest, image(tmp_path, "gone", b"gone"), meta(2), now=now)
    later = now + timedelta(minutes=5)
    revoked = revoke_image(manifest, gone.id, reason="CVE-2024-1234", now=later)
    assert revoked == gone
    loaded = Manifest.load(manifest)
    assert [e.id for e in loaded.images] == [keep.id]
    assert [(t.id, t.when, t.reason) for t in loaded.revoked] == [(gone.id, later, "CVE-2024-1234")]
    assert "[[revoked]]" in manifest.read_text()


def test_revoke_accepts_a_urn_and_upper_case(manifest: Path, tmp_path: Path, now: datetime) -> None:
    entry = add_image(manifest, image(tmp_path, "x", b"x"), meta(1), now=now)
    revoke_image(manifest, "urn:uuid:" + entry.id.upper(), reason="typo", now=now)
    assert [t.id for t in Manifest.load(manifest).revoked] == [entry.id]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("00000000-0000-4000-8000-00000000dead", "no such image"),
        ("../../etc/passwd", "bad id"),
        ("listed", "   "),
    ],
)
def test_revoke_refuses_and_leaves_the_manifest_alone(
    manifest: Path, tmp_path: Path, now: datetime, target: str, reason: str
) -> None:
    entry = add_image(manifest, image(tmp_path, "x", b"x"), meta(1), now=now)
    before = manifest.read_bytes()
    with pytest.raises(ConfigError):
        revoke_image(manifest, entry.id if target == "listed" else target, reason=reason, now=now)
    assert manifest.read_bytes() == before


def test_revoke_quotes_a_bad_id_as_given(manifest: Path, tmp_path: Path, now: datetime) -> None:
    add_image(manifest, image(tmp_path, "x", b"x"), meta(1), now=now)
    before = manifest.read_bytes()
    with pytest.raises(ConfigError) as caught:
        revoke_image(manifest, "urn:uuid:ABCDEF-NOT-AN-ID", reason="typo", now=now)
    assert "'ABCDEF-NOT-AN-ID' is not a UUID" in caught.value.message
    assert "any case" in caught.value.message
    assert manifest.read_bytes() == before


def test_revoke_twice_is_refused(manifest: Path, tmp_path: Path, now: datetime) -> None:
    add_image(manifest, image(tmp_path, "keep", b"keep"), meta(1), now=now)
    entry = add_image(manifest, image(tmp_path, "x", b"x"), meta(2), now=now)
    revoke_image(manifest, entry.id, reason="first", now=now)
    before = manifest.read_bytes()
    with pytest.raises(ConfigError, match="already revoked"):
        revoke_image(manifest, entry.id, reason="second", now=now)
    assert manifest.read_bytes() == before


def test_revoked_image_is_a_deleted_entry_in_the_signed_list(
    manifest: Path, tmp_path: Path, now: datetime, endorser: Identity, trust: TrustStore
) -> None:
    keep = add_image(manifest, image(tmp_path, "keep", b"keep"), meta(1), now=now)
    gone = add_image(manifest, image(tmp_path, "gone", b"gone"), meta(2), now=now)
    revoke_image(manifest, gone.id, reason="compromised build", now=now)
    out = tmp_path / "base.atom"
    sign_as(endorser, manifest, out, now)
    verified = verify(out.read_bytes(), trust, endorser, now)
    assert [e.id for e in verified.image_list.entries] == [keep.id]
    assert verified.image_list.entry(gone.id) is None
    (tombstone,) = verified.image_list.tombstones
    assert (tombstone.id, tombstone.reason, tombstone.when) == (gone.id, "compromised build", now)
    deleted = etree.fromstring(out.read_bytes()).findall(f"{{{TOMBSTONES}}}deleted-entry")
    assert [d.get("ref") for d in deleted] == [f"urn:uuid:{gone.id}"]
    assert deleted[0].findtext(f"{{{TOMBSTONES}}}comment") == "compromised build"


def test_adding_an_image_after_revoking_the_only_one_works(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    # Deleting the last [[images]] table leaves `images = []`, an inline array, at the
    # top of the file; Manifest._aot then refuses it as "not an array of tables".
    only = add_image(manifest, image(tmp_path, "only", b"only"), meta(1), now=now)
    revoke_image(manifest, only.id, reason="withdrawn", now=now)
    assert Manifest.load(manifest).images == ()
    replacement = add_image(manifest, image(tmp_path, "new", b"new"), meta(2), now=now)
    assert [e.id for e in Manifest.load(manifest).images] == [replacement.id]


# -- hand edits survive -----------------------------------------------------------


def test_comments_a_person_added_survive_add_revoke_and_sign(
    manifest: Path, tmp_path: Path, now: datetime, endorser: Identity, trust: TrustStore
) -> None:
    first = add_image(manifest, image(tmp_path, "one", b"one"), meta(1), now=now)
    text = manifest.read_text()
    text = text.replace('title = "Base images"', f'title = "Base images"  {USER_COMMENTS[1]}')
    text = text.replace("[[images]]", f"{USER_COMMENTS[2]}\n[[images]]", 1)
    manifest.write_text(f"{USER_COMMENTS[0]}\n{text}")
    add_image(manifest, image(tmp_path, "two", b"two"), meta(2), now=now)
    add_image(manifest, image(tmp_path, "three", b"three"), meta(3), now=now)
    revoke_image(manifest, first.id, reason="superseded", now=now)
    out = tmp_path / "base.atom"
    sign_as(endorser, manifest, out, now)
    sign_as(endorser, manifest, out, now + timedelta(minutes=1))
    text = manifest.read_text()
    for comment in USER_COMMENTS:
        assert comment in text
    assert Manifest.load(manifest).state.version == 2
    assert len(verify(out.read_bytes(), trust, endorser, now).image_list.entries) == 2


# -- render ---------------------------------------------------------------------


def test_a_render_for_review_writes_the_next_version_and_issues_nothing(
    manifest: Path, tmp_path: Path, now: datetime, endorser: Identity, trust: TrustStore
) -> None:
    add_image(manifest, image(tmp_path, "one", b"one"), meta(1), now=now)
    before = manifest.read_bytes()
    out = tmp_path / "unsigned.atom"
    rendered = render(manifest, out, now=now, valid_for=VALID_FOR, cert=endorser.cert)
    assert rendered.version == 1
    assert rendered.endorser_dn == endorser.subject
    assert rendered.issuer_dn == endorser.issuer
    assert rendered.expires == now + VALID_FOR
    raw = out.read_bytes()
    root = etree.fromstring(raw)
    assert root.find(f".//{{{DS}}}Signature") is None
    assert read_list(root) == rendered
    assert raw == to_bytes(render_list(rendered))
    assert manifest.read_bytes() == before  # nothing issued, nothing recorded
    with pytest.raises(SignatureError, match="not signed"):
        verify(raw, trust, endorser, now)
    again = render(manifest, out, now=now, valid_for=VALID_FOR, cert=endorser.cert)
    assert again.version == 1
    assert manifest.read_bytes() == before


def test_a_render_for_an_external_signer_issues_the_version(
    manifest: Path, tmp_path: Path, now: datetime, endorser: Identity
) -> None:
    out = tmp_path / "template.atom"
    issued = render(manifest, out, now=now, valid_for=VALID_FOR, cert=endorser.cert, template="ec")
    assert issued.version == 1
    state = Manifest.load(manifest)
    assert state.state.version == 1
    assert state.info.endorser_dn == endorser.subject
    # The DNs are now recorded, so the next render needs no certificate.
    preview = render(manifest, tmp_path / "preview.atom", now=now, valid_for=VALID_FOR)
    assert preview.version == 2
    assert preview.endorser_dn == endorser.subject
    assert Manifest.load(manifest).state.version == 1


def test_render_without_cert_or_recorded_dns_is_refused(
    manifest: Path, tmp_path: Path, now: datetime
) -> None:
    before = manifest.read_bytes()
    out = tmp_path / "unsigned.atom"
    with pytest.raises(ConfigError, match="DN"):
        render(manifest, out, now=now, valid_for=VALID_FOR)
    assert manifest.read_bytes() == before
    assert not out.exists()


def test_render_with_template_adds_an_empty_signature(
    manifest: Path, tmp_path: Path, now: datetime, endorser: Identity
) -> None:
    out = tmp_path / "template.atom"
    render(manifest, out, now=now, valid_for=VALID_FOR, cert=endorser.cert, template="ec")
    signature = etree.fromstring(out.read_bytes()).find(f"{{{DS}}}Signature")
    assert signature is not None
    assert signature.findtext(f"{{{DS}}}SignatureValue") in (None, "")


# -- sign -----------------------------------------------------------------------


def test_signed_list_verifies_and_versions_and_updated_move_as_promised(
    manifest: Path, tmp_path: Path, now: datetime, endorser: Identity, trust: TrustStore
) -> None:
    out = tmp_path / "base.atom"
    first = add_image(manifest, image(tmp_path, "one", b"one"), meta(1), now=now)
    seen: list[VerifiedList] = []
    previous: PreviousState | None = None
    times = [now, now + timedelta(hours=1), now + timedelta(hours=2)]
    for step, when in enumerate(times, start=1):
        if step == 3:
            add_image(manifest, image(tmp_path, "two", b"two"), meta(2), now=when)
        sign_as(endorser, manifest, out, when)
        verified = verify(out.read_bytes(), trust, endorser, when, previous=previous)
        assert verified.image_list.version == step
        assert Manifest.load(manifest).state.version == step
        previous = PreviousState(
            version=verified.image_list.version,
            sha256=verified.sha256,
            updated=verified.image_list.updated,
        )
        seen.append(verified)
    one, two, three = (v.image_list for v in seen)
    assert one.entries == (first,)
    assert one.updated == two.updated == now  # re-signed, content unchanged
    assert two.expires == times[1] + VALID_FOR  # but the validity is renewed
    assert three.updated == times[2]  # content changed
    assert len(three.entries) == 2
    assert seen[0].raw != seen[1].raw


def test_sign_with_trust_checks_the_result_as_a_site_would(
    manifest: Path, tmp_path: Path, now: datetime, endorser: Identity, trust: TrustStore
) -> None:
    add_image(manifest, image(tmp_path, "one", b"one"), meta(1), now=now)
    out = tmp_path / "base.atom"
    signed = sign(
        manifest,
        out,
        now=now,
        valid_for=VALID_FOR,
        cert=endorser.cert,
        key=endorser.key,
        trust=trust,
        digest="sha512",
    )
    verified = verify(out.read_bytes(), trust, endorser, now)
    assert verified.image_list == signed
    assert verified.signer.digest_method == "SHA-512"


def test_sign_with_an_intermediate_ships_the_chain(
    manifest: Path, tmp_path: Path, now: datetime, root_ca: TestCA
) -> None:
    sub_ca = root_ca.intermediate("/DC=org/DC=vmic-test/CN=vmic Test Sub CA")
    signer = sub_ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Sub Endorser")
    out = tmp_path / "base.atom"
    sign_as(signer, manifest, out, now)
    verified = verify(out.read_bytes(), store([root_ca, sub_ca]), signer, now)
    assert verified.signer.issuer == signer.issuer


def test_sign_with_a_clock_behind_the_last_issue_does_not_publish_a_rollback(
    manifest: Path, tmp_path: Path, now: datetime, endorser: Identity, trust: TrustStore
) -> None:
    """An endorser clock that went back must not yield a list every site rejects.

    Version 1 is signed at ``now + 1h``; the clock then reads ``now`` and the content
    changes. ``sign`` may refuse (ConfigError, the published list untouched) or write
    a version 2 that a site holding version 1 accepts; it may not silently write a
    version 2 whose ``updated`` is earlier than version 1's (RollbackError at sites).
    """
    ahead = now + timedelta(hours=1)
    out = tmp_path / "base.atom"
    add_image(manifest, image(tmp_path, "one", b"one"), meta(1), now=ahead)
    sign_as(endorser, manifest, out, ahead)
    v1 = verify(out.read_bytes(), trust, endorser, ahead)
    add_image(manifest, image(tmp_path, "two", b"two"), meta(2), now=now)
    try:
        sign_as(endorser, manifest, out, now)
    except ConfigError:
        assert out.read_bytes() == v1.raw
        return
    previous = PreviousState(
        version=v1.image_list.version, sha256=v1.sha256, updated=v1.image_list.updated
    )
    v2 = verify(out.read_bytes(), trust, endorser, ahead, previous=previous)
    assert v2.image_list.version == 2


@pytest.fixture(scope="module")
def refused(root_ca: TestCA, endorser: Identity, now: datetime) -> dict[str, Identity]:
    """Signers that `sign` must refuse, by the reason why."""
    subject = "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser"
    return {
        "expired": root_ca.issue(
            subject, not_before=now - timedelta(days=400), not_after=now - timedelta(days=1)
        ),
        "not-yet-valid": root_ca.issue(
            subject, not_before=now + timedelta(days=1), not_after=now + timedelta(days=300)
        ),
        "no-digital-signature": root_ca.issue(subject, digital_signature=False),
        "no-key-usage": root_ca.issue(subject, key_usage=False),
        "ca-certificate": Identity(cert=root_ca.cert, key=root_ca.key),
        "key-not-matching": Identity(cert=endorser.cert, key=new_key()),
        "expires-before-the-list": root_ca.issue(subject, not_after=now + timedelta(days=10)),
        "rsa-1024": root_ca.issue(subject, key_kind="rsa", rsa_bits=1024),
    }


REFUSALS: dict[str, type[VmicError]] = {
    "expired": CertificateError,
    "not-yet-valid": CertificateError,
    "no-digital-signature": CertificateError,
    "no-key-usage": CertificateError,
    "ca-certificate": CertificateError,
    "key-not-matching": ConfigError,
    "expires-before-the-list": CertificateError,
    "rsa-1024": CertificateError,
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_sign_refuses_an_unusable_signer_and_changes_nothing(
    manifest: Path,
    tmp_path: Path,
    now: datetime,
    refused: dict[str, Identity],
    case: str,
) -> None:
    add_image(manifest, image(tmp_path, "one", b"one"), meta(1), now=now)
    signer = refused[case]
    before = manifest.read_bytes()
    out = tmp_path / "base.atom"
    with pytest.raises(REFUSALS[case]) as caught:
        sign_as(signer, manifest, out, now)
    assert type(caught.value) is REFUSALS[case]
    assert manifest.read_bytes() == before
    assert not out.exists()


def test_sign_refuses_a_signer_the_trust_store_does_not_accept(
    manifest: Path, tmp_path: Path, now: datetime, trust: TrustStore
) -> None:
    rogue_ca = TestCA("/DC=org/DC=vmic-test/CN=vmic Test Root CA", now=now)
    rogue = rogue_ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser")
    before = manifest.read_bytes()
    out = tmp_path / "base.atom"
    with pytest.raises(CertificateError):
        sign(
            manifest, out, now=now, valid_for=VALID_FOR, cert=rogue.cert, key=rogue.key, trust=trust
        )
    assert manifest.read_bytes() == before
    assert not out.exists()


# -- durations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("28d", timedelta(days=28)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("90m", timedelta(minutes=90)),
        ("400d", timedelta(days=400)),
        (" 7d ", timedelta(days=7)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["0d", "0s", "500d", "401d", "58w", "soon", "", "28", "d", "-1d", "1.5d", "28 d", "1y"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)
