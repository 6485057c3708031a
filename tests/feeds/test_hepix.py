"""HEPiX lists: reading the JSON, and verify_list's rules for S/MIME-signed lists.

Every rejection goes through :func:`rejects`, which also checks that the
rollback state handed to the verifier is unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from feeds.atom import format_time
from feeds.hepix import read_hepix, render_hepix
from feeds.model import ImageList, Tombstone, image_id, list_id
from feeds.verify import (
    Expectation,
    ListFormat,
    PreviousState,
    VerifiedList,
    detect_format,
    verify_list,
)
from keys.dn import DistinguishedName
from keys.errors import (
    CertificateError,
    ConfigError,
    FreshnessError,
    ListFormatError,
    RevokedError,
    RollbackError,
    SignatureError,
    UntrustedSignerError,
    WrongListError,
)
from keys.trust import CrlPolicy, TrustStore
from keys.xmlsig import SignerPin
from tests.support import hepix, lists
from tests.support.ca import Identity, TestCA, store
from tests.support.hepix import INTEROP
from tests.support.lists import rejects


def make(endorser: Identity, now: datetime, **changes: Any) -> ImageList:
    """A list HEPiX can carry (no tombstones, no tags) at version 5."""
    changes.setdefault("version", 5)
    base = lists.image_list(endorser, now=now, **changes)
    return dataclasses.replace(
        base,
        entries=tuple(
            dataclasses.replace(
                e, tags=(), produced=None, updated=base.updated, endorsed=base.updated
            )
            for e in base.entries
        ),
    )


def json_of(image_list: ImageList) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(render_hepix(image_list))
    return loaded


def signed_json(document: dict[str, Any], signer: Identity) -> bytes:
    return hepix.sign_bytes(json.dumps(document, indent=2).encode(), signer)


# -- reading ----------------------------------------------------------------------------


def test_the_hepixvmitrust_example_reads() -> None:
    got = read_hepix((INTEROP / "hepixvmitrust_imagelist.json").read_bytes())

    assert got.id == "4e186b44-2c64-40ea-97d5-e9e5c0bce059"
    assert got.version == 1
    assert got.endorser_dn == DistinguishedName.parse_slash(
        "/C=DE/O=GermanGrid/OU=DESY/CN=Owen Synge"
    )
    assert got.issuer_dn == DistinguishedName.parse_slash("/C=DE/O=GermanGrid/CN=GridKa-CA")
    assert got.updated == datetime(2011, 3, 10, 17, 9, 12, tzinfo=UTC)
    assert got.expires == datetime(2011, 4, 7, 17, 9, 12, tzinfo=UTC)
    (image,) = got.entries
    assert image.id == "488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d"
    assert image.size == 2147483648
    assert image.url == "http://example.org/example-image.img"
    assert image.hypervisor == "kvm"
    assert image.osversion == "SL 5.5"
    assert dict(image.extra) == {"sl:comments": "Vanila install with contextulization scripts"}


def test_the_appdb_style_sample_reads_with_strings_for_numbers_and_ad_keys_kept() -> None:
    got = read_hepix((INTEROP / "cloudkeeper_imagelist01.unsigned.json").read_bytes())

    assert got.version == 20150618211400
    assert [e.size for e in got.entries] == [121243136, 581816320]
    first = got.entries[0]
    assert first.format == "ova"
    assert first.vo == "some1.vo.net"  # the list's ad:vo, inherited
    assert first.expires == datetime(2499, 12, 31, 22, 0, tzinfo=UTC)
    extra = dict(first.extra)
    assert extra["ad:mpuri"].endswith("c0482bc2-bf41-5d49-aaaa-a750174a186b:484/")
    assert extra["hv:ram_minimum"] == "512"
    assert extra["ad:user:fullname"] == "Bruce Wayne"
    assert dict(got.extra) == {"dc:source": "https://some.unknown.source/"}


def test_render_then_read_gives_the_same_list(endorser: Identity, now: datetime) -> None:
    image_list = make(endorser, now)

    again = read_hepix(render_hepix(image_list))

    assert again.id == image_list.id
    assert again.version == image_list.version
    assert again.endorser_dn == image_list.endorser_dn
    assert again.issuer_dn == image_list.issuer_dn
    # What HEPiX readers require is written with derived values (SCHEMA §10.3): an image
    # without an expiry of its own has the list's, and the list's URL names its page.
    expected = [
        dataclasses.replace(
            e,
            expires=e.expires or image_list.expires,
            info_url=e.info_url or f"{image_list.self_url}#{e.id}",
        )
        for e in image_list.entries
    ]
    assert [dataclasses.replace(e, extra=()) for e in again.entries] == expected
    assert again.vo == "dteam"  # the images' one VO, at list level
    assert sorted(dict(again.entries[0].extra)) == [
        "ad:group",
        "ad:mpuri",
        "ad:user:fullname",
        "ad:user:guid",
        "ad:user:uri",
        "sl:comments",
    ]


# What each consumer refuses a list or an image without (SCHEMA §10.3; read in their
# sources: atrope image_list/hepix.py, image.py, endorser.py; cloudkeeper
# entities/image_list.rb, appliance.rb, image.rb; hepixvmitrust vmitrustlib.py).
REQUIRED: dict[str, dict[str, set[str]]] = {
    "atrope": {
        "list": {
            "dc:date:created", "dc:date:expires", "hv:endorser", "dc:identifier",
            "dc:description", "dc:title", "hv:images", "dc:source", "hv:version", "hv:uri",
        },
        "endorser": {"dc:creator", "hv:ca", "hv:dn", "hv:email"},
        "image": {
            "ad:group", "ad:mpuri", "ad:user:fullname", "ad:user:guid", "ad:user:uri",
            "dc:description", "dc:identifier", "dc:title", "hv:hypervisor", "hv:format",
            "hv:size", "hv:uri", "hv:version", "sl:arch", "sl:checksum:sha512", "sl:comments",
            "sl:os", "sl:osname", "sl:osversion", "dc:date:expires",
        },
    },
    "cloudkeeper": {
        "list": {"dc:identifier", "dc:date:expires", "hv:images", "ad:vo"},
        "endorser": set(),
        "image": {"dc:identifier", "ad:mpuri", "dc:date:expires", "hv:uri", "sl:checksum:sha512"},
    },
    "vmcatcher": {
        "list": {
            "dc:date:created", "dc:date:expires", "dc:identifier", "dc:description",
            "dc:title", "dc:source", "hv:version", "hv:uri", "hv:endorser", "hv:images",
        },
        "endorser": {"hv:ca", "hv:dn", "hv:email", "dc:creator"},
        "image": {
            "dc:title", "dc:description", "hv:size", "sl:checksum:sha512", "sl:arch", "hv:uri",
            "dc:identifier", "sl:os", "sl:osversion", "sl:comments", "hv:hypervisor",
            "hv:version",
        },
    },
}  # fmt: skip


@pytest.mark.parametrize("consumer", sorted(REQUIRED))
def test_rendered_lists_carry_every_key_each_consumer_requires(
    consumer: str, endorser: Identity, now: datetime
) -> None:
    bare = make(endorser, now, entries=2)  # images with no VO, expiry or page of their own
    bare = dataclasses.replace(
        bare,
        vo="dteam",
        entries=tuple(
            dataclasses.replace(e, vo=None, expires=None, info_url=None, osname=None)
            for e in bare.entries
        ),
    )
    top = json_of(bare)["hv:imagelist"]
    wanted = REQUIRED[consumer]

    assert wanted["list"] <= set(top), wanted["list"] - set(top)
    assert wanted["endorser"] <= set(top["hv:endorser"]["hv:x509"])
    for item in top["hv:images"]:
        image = item["hv:image"]
        assert wanted["image"] <= set(image), wanted["image"] - set(image)
        assert all(image[key] is not None for key in wanted["image"])
    # cloudkeeper refuses blank values of these, and parses dates exactly so:
    assert top["ad:vo"] == "dteam"
    for item in top["hv:images"]:
        image = item["hv:image"]
        assert image["ad:mpuri"].strip()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", image["dc:date:expires"])


def test_derived_values_mean_something_and_stay_stable(endorser: Identity, now: datetime) -> None:
    image_list = make(endorser, now)
    first = json_of(image_list)["hv:imagelist"]
    image = first["hv:images"][0]["hv:image"]

    assert image["dc:date:expires"] == format_time(image_list.expires)  # the list's
    assert image["ad:mpuri"] == f"{image_list.self_url}#{image['dc:identifier']}"
    assert image["ad:group"] == image_list.title
    assert image["ad:user:fullname"] == image_list.author_name
    assert image["ad:user:uri"] == f"mailto:{image_list.author_email}"
    guid = uuid.UUID(image["ad:user:guid"])
    assert guid == uuid.uuid5(uuid.NAMESPACE_X500, endorser.subject.rfc4514())
    # The same endorser keeps the same id in every version; another endorser has another.
    later = json_of(make(endorser, now, version=9))["hv:imagelist"]
    assert later["hv:images"][0]["hv:image"]["ad:user:guid"] == str(guid)


def test_what_the_endorser_says_wins_over_derived_values(endorser: Identity, now: datetime) -> None:
    base = make(endorser, now)
    expires = now + timedelta(days=3)
    entry = dataclasses.replace(
        base.entries[0], info_url="https://endorser.example.org/img/1", expires=expires
    )
    image_list = dataclasses.replace(
        base, entries=(entry,), author_uri="https://endorser.example.org/jane", vo="atlas"
    )
    top = json_of(image_list)["hv:imagelist"]
    image = top["hv:images"][0]["hv:image"]

    assert image["ad:mpuri"] == "https://endorser.example.org/img/1"
    assert image["dc:date:expires"] == format_time(expires)
    assert image["ad:user:uri"] == "https://endorser.example.org/jane"
    assert top["ad:vo"] == "atlas"
    assert image["ad:vo"] == "dteam"  # the image's own VO stays


@pytest.mark.parametrize(
    ("vos", "match"),
    [((None, None), "none is named"), (("dteam", "atlas"), "its images name atlas, dteam")],
)
def test_a_hepix_list_needs_one_vo(
    vos: tuple[str | None, str | None], match: str, endorser: Identity, now: datetime
) -> None:
    """cloudkeeper takes a list's VO at list level only: one VO per HEPiX list."""
    base = make(endorser, now)
    entries = tuple(dataclasses.replace(e, vo=v) for e, v in zip(base.entries, vos, strict=True))
    with pytest.raises(ConfigError, match=match) as info:
        render_hepix(dataclasses.replace(base, entries=entries))
    assert "--vo" in info.value.hint


def test_appdb_keys_are_read_into_typed_fields_and_kept_for_handlers() -> None:
    got = read_hepix((INTEROP / "cloudkeeper_imagelist01.unsigned.json").read_bytes())

    first = got.entries[0]
    assert first.info_url is not None
    assert first.info_url.endswith("c0482bc2-bf41-5d49-aaaa-a750174a186b:484/")
    assert got.vo == "some1.vo.net"
    assert dict(first.extra)["ad:mpuri"] == first.info_url  # as written, for vmcatcher


def test_an_odd_marketplace_uri_is_kept_as_text_but_not_as_a_link(
    endorser: Identity, now: datetime
) -> None:
    document = json_of(make(endorser, now))
    image = document["hv:imagelist"]["hv:images"][0]["hv:image"]
    image.update({"ad:mpuri": "urn:appdb:1234", "ad:appid": "1006"})

    got = read_hepix(json.dumps(document).encode())

    assert got.entries[0].info_url is None
    assert got.entries[0].appliance_id == "1006"
    assert dict(got.entries[0].extra)["ad:mpuri"] == "urn:appdb:1234"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.pop("dc:identifier"), "dc:identifier is missing"),
        (lambda t: t.update({"dc:identifier": "not-a-uuid"}), "dc:identifier"),
        (lambda t: t.update({"hv:version": "1.2-beta"}), "positive whole number"),
        (lambda t: t.update({"hv:version": "1.2.3.4"}), "MAJOR.MINOR"),
        (lambda t: t.update({"hv:version": "0.0"}), "above 0"),
        (lambda t: t.update({"hv:version": True}), "string or a whole number"),
        (lambda t: t.update({"dc:date:expires": "2026-01-01"}), "date-time"),
        (lambda t: t["hv:endorser"]["hv:x509"].pop("hv:dn"), "hv:dn is missing"),
        (lambda t: t["hv:images"][0]["hv:image"].pop("sl:checksum:sha512"), "sha512"),
        (lambda t: t["hv:images"][0]["hv:image"].update({"hv:size": "-1"}), "byte count"),
        (lambda t: t["hv:images"][0]["hv:image"].update({"hv:size": 1.5}), "whole number"),
        (lambda t: t["hv:images"][0]["hv:image"].update({"hv:uri": "ftp://x/y"}), "http"),
        (lambda t: t["hv:images"].append(t["hv:images"][0]), "appears twice"),
        (lambda t: t.update({"hv:images": {}}), "hv:images must be a JSON list"),
    ],
)
def test_malformed_lists_are_refused(
    change: Any, match: str, endorser: Identity, now: datetime
) -> None:
    document = json_of(make(endorser, now))
    change(document["hv:imagelist"])

    with pytest.raises(ListFormatError, match=match):
        read_hepix(json.dumps(document).encode())


def test_uuids_and_checksums_are_read_in_any_case(endorser: Identity, now: datetime) -> None:
    """HEPiX writers differ in case; the list reads as its lower-case form."""
    document = json_of(make(endorser, now))
    top = document["hv:imagelist"]
    top["dc:identifier"] = f" {top['dc:identifier'].upper()} "
    for item in top["hv:images"]:
        image = item["hv:image"]
        image["dc:identifier"] = image["dc:identifier"].upper()
        image["sl:checksum:sha512"] = image["sl:checksum:sha512"].upper()

    got = read_hepix(json.dumps(document).encode())

    assert got == read_hepix(render_hepix(make(endorser, now)))


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("NOT-A-UUID", "'NOT-A-UUID'"),
        ("6F1C1E0E-8A7B-4C55-9D3E-0A1B2C3D4E5G", "'6F1C1E0E-8A7B-4C55-9D3E-0A1B2C3D4E5G'"),
        ("6f1c1e0e8a7b4c559d3e0a1b2c3d4e5f", "'6f1c1e0e8a7b4c559d3e0a1b2c3d4e5f'"),
        ("\u202e" + "X" * 500, "'\\u202e" + "X" * 59 + "'... (501 characters)"),
    ],
)
@pytest.mark.parametrize("where", ["list", "image"])
def test_a_bad_uuid_is_quoted_as_given_and_any_case_is_said_to_be_accepted(
    endorser: Identity, now: datetime, value: str, quoted: str, where: str
) -> None:
    document = json_of(make(endorser, now))
    top = document["hv:imagelist"]
    (top if where == "list" else top["hv:images"][0]["hv:image"])["dc:identifier"] = value

    with pytest.raises(ListFormatError) as caught:
        read_hepix(json.dumps(document).encode())

    message = caught.value.message
    assert f"{where} id: {quoted} is not a UUID" in message
    assert "any case" in message
    assert "lower-case" not in message
    assert "\u202e" not in message
    assert len(message) < 250


def test_a_bad_checksum_says_any_case_is_accepted(endorser: Identity, now: datetime) -> None:
    document = json_of(make(endorser, now))
    document["hv:imagelist"]["hv:images"][0]["hv:image"]["sl:checksum:sha512"] = "AB" * 63

    with pytest.raises(ListFormatError, match="128 hex digits, any case") as caught:
        read_hepix(json.dumps(document).encode())
    assert "lower-case" not in caught.value.message


def test_a_key_given_twice_is_refused(endorser: Identity, now: datetime) -> None:
    """Two readers could take different values: vmic takes none."""
    rendered = render_hepix(make(endorser, now))
    text = rendered.replace(b'"hv:uri":', b'"hv:version": "9", "hv:uri":', 1)
    assert text != rendered
    assert read_hepix(rendered).version == 5

    with pytest.raises(ListFormatError, match="appears twice"):
        read_hepix(text)


def test_nan_and_deep_nesting_are_refused() -> None:
    with pytest.raises(ListFormatError, match="NaN"):
        read_hepix(b'{"hv:imagelist": {"x": NaN}}')
    with pytest.raises(ListFormatError, match="deeply"):
        read_hepix(b'{"hv:imagelist": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


# -- verification -----------------------------------------------------------------------


def test_a_signed_hepix_list_is_accepted(
    endorser: Identity, root_ca: TestCA, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    image_list = make(endorser, now)
    raw = hepix.sign(image_list, endorser)

    verified = verify_list(raw, trust=trust, pins=[pin], now=now)

    assert isinstance(verified, VerifiedList)
    assert verified.list_format is ListFormat.HEPIX
    assert verified.raw == raw
    assert verified.sha256 == hashlib.sha256(raw).hexdigest()
    assert verified.image_list.id == image_list.id
    assert [e.sha512 for e in verified.image_list.entries] == [e.sha512 for e in image_list.entries]
    assert verified.signer.subject == endorser.subject
    assert verified.signer.issuer == DistinguishedName.from_x509(root_ca.cert.subject)
    assert verified.signer.digest_method == "SHA-256"


@pytest.mark.parametrize(
    "options", [(), ("-md", "sha1"), ("-text",), ("-nodetach",), ("-nodetach", "-outform", "PEM")]
)
def test_lists_signed_with_openssl_smime_are_accepted(
    options: tuple[str, ...], endorser: Identity, trust: TrustStore, now: datetime, tmp_path: Path
) -> None:
    image_list = make(endorser, now)
    raw = hepix.openssl_sign(render_hepix(image_list), endorser, tmp_path, options=options)
    pin = SignerPin(subject=endorser.subject, issuer=endorser.issuer)

    verified = verify_list(raw, trust=trust, pins=[pin], now=now, list_format=ListFormat.HEPIX)

    assert verified.image_list.version == 5
    assert len(verified.image_list.entries) == 2


def test_format_is_told_from_the_first_bytes(endorser: Identity, now: datetime) -> None:
    image_list = make(endorser, now)
    assert detect_format(lists.sign(image_list, endorser)) is ListFormat.ATOM
    assert detect_format(hepix.sign(image_list, endorser)) is ListFormat.HEPIX
    assert detect_format(hepix.sign_bytes(b"{}", endorser, der=True)) is ListFormat.HEPIX
    with pytest.raises(ListFormatError, match="unsigned HEPiX list"):
        detect_format(render_hepix(image_list))
    with pytest.raises(ListFormatError, match="neither"):
        detect_format(b"hello")


@pytest.fixture
def sample_trust(tmp_path: Path) -> TrustStore:
    """The cloudkeeper samples' test CA, as a CApath entry."""
    shutil.copy(INTEROP / "cloudkeeper_test_ca_9da13359.0", tmp_path / "9da13359.0")
    return TrustStore.from_directory(tmp_path)


def test_cloudkeeper_sample_is_refused_for_its_dn_mismatch(
    sample_trust: TrustStore, previous: PreviousState
) -> None:
    """The signature is good and the signer chains to the sample CA, but it is not hv:dn."""
    raw = (INTEROP / "cloudkeeper_imagelist01.signed.smime").read_bytes()

    rejects(
        UntrustedSignerError,
        raw,
        sample_trust,
        None,
        datetime(2026, 1, 1, tzinfo=UTC),
        previous=previous,
        match=r"names endorser /DC=XXX/DC=YYY/C=ZZZ/O=Hosts/O=AA.net/CN=some.unknown.source "
        r"but was signed by /C=AU/ST=Some-State/O=Internet Widgits Pty Ltd",
        crl=CrlPolicy.IF_PRESENT,
    )


def test_cloudkeeper_invalid_sample_is_refused_for_its_bad_signature(
    sample_trust: TrustStore, previous: PreviousState
) -> None:
    raw = (INTEROP / "cloudkeeper_imagelist_invalid.signed.smime").read_bytes()

    rejects(
        SignatureError,
        raw,
        sample_trust,
        None,
        datetime(2026, 1, 1, tzinfo=UTC),
        previous=previous,
        match="differs from what was signed",
        crl=CrlPolicy.IF_PRESENT,
    )


def test_the_named_endorser_must_be_the_signer(
    endorser: Identity, root_ca: TestCA, trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    other = root_ca.issue("/DC=org/DC=vmic-test/CN=Someone Else")
    raw = hepix.sign(make(endorser, now), other)

    rejects(UntrustedSignerError, raw, trust, None, now, previous=previous, match="names endorser")


def test_the_named_issuer_must_be_the_signers_ca(
    endorser: Identity, trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    document = json_of(make(endorser, now))
    document["hv:imagelist"]["hv:endorser"]["hv:x509"]["hv:ca"] = "/DC=org/CN=Another CA"

    rejects(
        UntrustedSignerError,
        signed_json(document, endorser),
        trust,
        None,
        now,
        previous=previous,
        match="names issuer",
    )


def test_a_signer_outside_the_pins_is_refused(
    endorser: Identity, root_ca: TestCA, trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    other = root_ca.issue("/DC=org/DC=vmic-test/CN=Someone Else")
    pin = SignerPin(subject=other.subject, issuer=other.issuer)

    rejects(
        UntrustedSignerError,
        hepix.sign(make(endorser, now), endorser),
        trust,
        [pin],
        now,
        previous=previous,
        match="not a pinned endorser",
    )


def test_a_signer_from_an_untrusted_ca_is_refused(
    trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    stranger = TestCA("/DC=org/DC=elsewhere/CN=Stranger CA", now=now)
    signer = stranger.issue("/DC=org/DC=elsewhere/CN=Jane")

    rejects(
        CertificateError,
        hepix.sign(make(signer, now), signer),
        trust,
        None,
        now,
        previous=previous,
        match="does not chain",
    )


def test_a_revoked_signer_is_refused(now: datetime, previous: PreviousState) -> None:
    ca = TestCA("/DC=org/DC=vmic-test/CN=Revoking CA", now=now)
    signer = ca.issue("/DC=org/DC=vmic-test/CN=Revoked Endorser")
    ca.revoke(signer.cert)

    rejects(
        RevokedError,
        hepix.sign(make(signer, now), signer),
        store([ca]),
        None,
        now,
        previous=previous,
        match="revoked",
    )


def test_the_subscribed_list_id_is_required(
    endorser: Identity, trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    other = list_id("0b6a3e7c-1d2f-4a5b-8c9d-0e1f2a3b4c5d")

    rejects(
        WrongListError,
        hepix.sign(make(endorser, now), endorser),
        trust,
        None,
        now,
        previous=previous,
        expect=Expectation(list_id=other),
    )


def test_created_in_the_future_is_refused(
    endorser: Identity, trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    image_list = make(endorser, now, updated=now + timedelta(hours=1))

    rejects(
        FreshnessError,
        hepix.sign(image_list, endorser),
        trust,
        None,
        now,
        previous=previous,
        match="future",
    )


def test_an_expired_list_is_refused(
    endorser: Identity, trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    image_list = make(
        endorser, now, updated=now - timedelta(days=2), expires=now - timedelta(seconds=1)
    )

    rejects(
        FreshnessError,
        hepix.sign(image_list, endorser),
        trust,
        None,
        now,
        previous=previous,
        match="expired",
    )


def test_a_lower_version_is_refused(
    endorser: Identity, trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    rejects(
        RollbackError,
        hepix.sign(make(endorser, now, version=3), endorser),
        trust,
        None,
        now,
        previous=previous,
        match="older",
    )


def test_the_same_version_with_other_content_is_refused(
    endorser: Identity, trust: TrustStore, now: datetime
) -> None:
    first = verify_list(hepix.sign(make(endorser, now), endorser), trust=trust, pins=None, now=now)
    state = PreviousState(
        version=first.image_list.version, sha256=first.sha256, updated=first.image_list.updated
    )
    changed = make(endorser, now, title="Another title")

    rejects(
        RollbackError,
        hepix.sign(changed, endorser),
        trust,
        None,
        now,
        previous=state,
        match="different content",
    )
    again = verify_list(first.raw, trust=trust, pins=None, now=now, previous=state)
    assert again.sha256 == first.sha256


def test_timestamp_versions_may_jump(endorser: Identity, trust: TrustStore, now: datetime) -> None:
    """AppDB versions are timestamps: the Atom fast-forward bound does not apply."""
    state = PreviousState(version=20150618211400, sha256="ab" * 32, updated=now - timedelta(days=9))

    verified = verify_list(
        hepix.sign(make(endorser, now, version=20260101000000), endorser),
        trust=trust,
        pins=None,
        now=now,
        previous=state,
    )

    assert verified.image_list.version == 20260101000000


def test_an_unsigned_list_is_refused(
    endorser: Identity, trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    rejects(
        ListFormatError,
        render_hepix(make(endorser, now)),
        trust,
        None,
        now,
        previous=previous,
        match="unsigned",
    )


def test_tombstones_cannot_be_written_in_hepix(endorser: Identity, now: datetime) -> None:
    image_list = make(
        endorser,
        now,
        tombstones=(Tombstone(id=image_id(lists.image_uuid(9)), when=now, reason="bad"),),
    )

    again = read_hepix(render_hepix(image_list))

    assert again.tombstones == ()
    assert len(again.entries) == 2


def test_the_same_version_with_other_unsigned_bytes_is_the_same_list(
    endorser: Identity, trust: TrustStore, now: datetime
) -> None:
    """Headers, preamble and epilogue of the MIME message are not signed: a copy whose
    unsigned bytes differ is the same version, not a rollback blamed on the endorser."""
    raw = hepix.sign(make(endorser, now), endorser)
    first = verify_list(raw, trust=trust, pins=None, now=now)
    state = PreviousState(
        version=first.image_list.version,
        sha256=first.sha256,
        updated=first.image_list.updated,
        content_sha256=first.content_sha256,
    )
    boundary = raw.split(b'boundary="', 1)[1].split(b'"', 1)[0]
    copy = (b"X-Relayed-By: a mirror\r\n" + raw).replace(
        b"\r\n\r\n--" + boundary, b"\r\n\r\na preamble\r\n--" + boundary, 1
    ) + b"an epilogue\r\n"
    assert copy != raw

    again = verify_list(copy, trust=trust, pins=None, now=now, previous=state)

    assert again.sha256 != first.sha256
    assert again.content_sha256 == first.content_sha256
    assert again.image_list == first.image_list


def test_a_version_above_the_highest_is_a_format_error(endorser: Identity, now: datetime) -> None:
    document = json_of(make(endorser, now))
    document["hv:imagelist"]["hv:version"] = "9999999999999999999"

    with pytest.raises(ListFormatError, match="above the highest list version"):
        read_hepix(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("3.3.0", "3.3.1"),
        ("3.3", "3.3.1"),
        ("3.9.0", "3.10.0"),  # component by component, not as text
        ("3.99999.99999", "4.0"),
        ("2.1", "20150618211400"),  # a whole number as it is: AppDB's timestamps
    ],
)
def test_dotted_list_versions_are_ordered_component_by_component(
    older: str, newer: str, endorser: Identity, trust: TrustStore, now: datetime
) -> None:
    """AppDB-modelled lists write versions like 3.3.0: a lower one is a rollback."""

    def signed(version: str) -> bytes:
        document = json_of(make(endorser, now))
        document["hv:imagelist"]["hv:version"] = version
        return signed_json(document, endorser)

    first = verify_list(signed(older), trust=trust, pins=None, now=now)
    state = PreviousState(
        version=first.image_list.version,
        sha256=first.sha256,
        updated=first.image_list.updated,
        content_sha256=first.content_sha256,
    )
    second = verify_list(signed(newer), trust=trust, pins=None, now=now, previous=state)
    assert second.image_list.version > first.image_list.version
    back = PreviousState(
        version=second.image_list.version,
        sha256=second.sha256,
        updated=second.image_list.updated,
        content_sha256=second.content_sha256,
    )
    rejects(RollbackError, signed(older), trust, None, now, previous=back, match="older")
