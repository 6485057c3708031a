"""verify_list with real signed lists: what is accepted, and every rejection of THREATS 8-13.

Each rejection is checked through :func:`rejects`, which also asserts that the
rollback state handed to the verifier is unchanged afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from lxml import etree

from feeds.atom import render_list, to_bytes
from feeds.model import ImageList, list_id
from feeds.verify import (
    Expectation,
    ListFormat,
    PreviousState,
    VerifiedList,
    detect_format,
    looks_like_html,
    verify_list,
)
from keys.dn import DistinguishedName
from keys.errors import (
    CertificateError,
    FreshnessError,
    ListFormatError,
    RollbackError,
    SignatureError,
    UntrustedSignerError,
    WrongListError,
)
from keys.limits import DEFAULT_LIMITS, Limits
from keys.trust import TrustStore
from keys.xmlsig import SignerPin
from tests.support import lists
from tests.support.ca import Identity, TestCA
from tests.support.lists import rejects

SKEW = DEFAULT_LIMITS.clock_skew
OTHER_LIST = list_id("0b6a3e7c-1d2f-4a5b-8c9d-0e1f2a3b4c5d")


def make(endorser: Identity, now: datetime, **changes: Any) -> ImageList:
    changes.setdefault("version", 5)
    return lists.image_list(endorser, now=now, **changes)


def state_of(verified: VerifiedList) -> PreviousState:
    """What a site stores after accepting ``verified``."""
    return PreviousState(
        version=verified.image_list.version,
        sha256=verified.sha256,
        updated=verified.image_list.updated,
        content_sha256=verified.content_sha256,
    )


def accept(
    raw: bytes,
    trust: TrustStore,
    pins: Sequence[SignerPin] | None,
    now: datetime,
    **kwargs: Any,
) -> VerifiedList:
    return verify_list(raw, trust=trust, pins=pins, now=now, **kwargs)


# -- acceptance -----------------------------------------------------------------


def test_accepted_list_is_what_was_signed(
    endorser: Identity, root_ca: TestCA, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    image_list = make(endorser, now)
    raw = lists.sign(image_list, endorser)
    verified = accept(raw, trust, [pin], now)
    assert isinstance(verified, VerifiedList)
    assert verified.image_list == image_list
    assert verified.raw == raw
    assert verified.sha256 == hashlib.sha256(raw).hexdigest()
    assert verified.signer.subject == endorser.subject
    assert verified.signer.issuer == DistinguishedName.from_x509(root_ca.cert.subject)
    assert verified.signer.not_after == endorser.cert.not_valid_after_utc
    assert verified.signer.signature_method == "ECDSA-SHA256"
    assert verified.signer.digest_method == "SHA-256"
    assert verified.verified_at == now


def test_sha512_digest_is_accepted_and_reported(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    raw = lists.sign(make(endorser, now), endorser, digest="sha512")
    assert accept(raw, trust, [pin], now).signer.digest_method == "SHA-512"


def test_without_pins_any_signer_of_the_trust_store_is_accepted(
    endorser: Identity, trust: TrustStore, now: datetime
) -> None:
    raw = lists.sign(make(endorser, now), endorser)
    assert accept(raw, trust, None, now).signer.subject == endorser.subject


def test_one_matching_pin_among_several_is_enough(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    other = SignerPin(
        subject=DistinguishedName.parse_slash("/DC=org/DC=vmic-test/CN=Someone Else"),
        issuer=endorser.issuer,
    )
    raw = lists.sign(make(endorser, now), endorser)
    assert accept(raw, trust, [other, pin], now).image_list.version == 5


def test_accepted_list_with_a_matching_expectation(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    raw = lists.sign(make(endorser, now), endorser)
    expect = Expectation(list_id=lists.LIST_ID, self_url=lists.SELF_URL)
    assert accept(raw, trust, [pin], now, expect=expect).image_list.id == lists.LIST_ID


def test_verified_list_cannot_be_made_outside_verify_list(
    endorser: Identity, now: datetime
) -> None:
    kwargs: dict[str, Any] = {
        "image_list": make(endorser, now),
        "raw": b"<feed/>",
        "sha256": "00" * 32,
        "signer": None,
        "verified_at": now,
    }
    with pytest.raises(TypeError, match="verify_list only"):
        VerifiedList(**kwargs, _issuer=object())
    with pytest.raises(TypeError, match="verify_list only"):
        VerifiedList(**kwargs, _issuer=None)


def test_verified_list_cannot_be_copied_with_other_content(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    """dataclasses.replace must not be a way around the verifier."""
    verified = accept(lists.sign(make(endorser, now), endorser), trust, [pin], now)
    forged = make(endorser, now, entries=0, title="not what was signed")
    replace: Any = dataclasses.replace  # whether VerifiedList is a dataclass is not the point
    with pytest.raises(TypeError):
        replace(verified, image_list=forged)


def test_previous_state_is_frozen(previous: PreviousState) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        previous.version = 99  # type: ignore[misc]


# -- THREATS 1 and 3: the basics, through the same entry point --------------------


def test_unsigned_list_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = to_bytes(render_list(make(endorser, now)))
    rejects(SignatureError, raw, trust, [pin], now, previous=previous, match="not signed")


def test_list_signed_under_another_ca_is_rejected(
    trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    rogue_ca = TestCA("/DC=org/DC=vmic-test/CN=vmic Test Root CA", now=now)  # same name
    rogue = rogue_ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser")
    raw = lists.sign(make(rogue, now), rogue)
    rejects(CertificateError, raw, trust, [pin], now, previous=previous)


def test_changed_byte_of_signed_content_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(make(endorser, now), endorser)
    tampered = raw.replace(b"<vmic:size>7</vmic:size>", b"<vmic:size>8</vmic:size>", 1)
    tampered = tampered.replace(b'length="7"', b'length="8"', 1)
    assert tampered != raw
    rejects(SignatureError, tampered, trust, [pin], now, previous=previous)


# -- THREATS 8: replay of an older version --------------------------------------


def test_lower_version_than_previous_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    newer = accept(lists.sign(make(endorser, now, version=5), endorser), trust, [pin], now)
    older = lists.sign(make(endorser, now, version=4, updated=now - timedelta(days=2)), endorser)
    rejects(RollbackError, older, trust, [pin], now, previous=state_of(newer), match="older than")


def test_lower_version_is_rejected_even_when_the_stored_list_has_expired(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    # The site accepted version 5 half an hour ago; it expired ten minutes ago.
    then = now - timedelta(minutes=30)
    stored = make(
        endorser,
        now,
        version=5,
        updated=now - timedelta(minutes=40),
        expires=now - timedelta(minutes=10),
    )
    accepted = accept(lists.sign(stored, endorser), trust, [pin], then)
    rejects(
        FreshnessError,
        accepted.raw,
        trust,
        [pin],
        now,
        previous=state_of(accepted),
        match="expired",
    )
    # An older version that is still within its own validity is replayed.
    replay = make(
        endorser,
        now,
        version=3,
        updated=now - timedelta(minutes=50),
        expires=now + timedelta(days=20),
    )
    raw = lists.sign(replay, endorser)
    rejects(RollbackError, raw, trust, [pin], now, previous=state_of(accepted), match="older than")
    # A genuinely newer version is still taken.
    fresh = lists.sign(make(endorser, now, version=6), endorser)
    assert accept(fresh, trust, [pin], now, previous=state_of(accepted)).image_list.version == 6


# -- THREATS 9: same version, other bytes ---------------------------------------


def test_same_version_with_different_content_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    first = accept(lists.sign(make(endorser, now), endorser), trust, [pin], now)
    other = lists.sign(make(endorser, now, entries=3), endorser)
    rejects(
        RollbackError, other, trust, [pin], now, previous=state_of(first), match="different content"
    )


def test_same_version_resigned_with_the_same_content_is_the_same_list(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    """Same version means same signed content (SCHEMA §9), whatever the signature value."""
    image_list = make(endorser, now)
    first = accept(lists.sign(image_list, endorser), trust, [pin], now)
    again = lists.sign(image_list, endorser)  # ECDSA: a new signature value
    assert again != first.raw

    second = accept(again, trust, [pin], now, previous=state_of(first))

    assert second.content_sha256 == first.content_sha256
    assert second.sha256 != first.sha256


def _unsigned_variants(raw: bytes) -> list[bytes]:
    """The same signed list in other unsigned bytes: what a mirror or a peer may send."""
    declaration, _, rest = raw.partition(b"?>")
    value = rest.index(b"<ds:SignatureValue>") + len(b"<ds:SignatureValue>")
    certificate = rest.index(b"<ds:X509Certificate>") + len(b"<ds:X509Certificate>")
    return [
        rest[:value] + b"\n  " + rest[value:],  # whitespace inside base64 values
        rest[:certificate] + b"\r\n" + rest[certificate:],
        raw + b"\n<!-- a comment after the root -->\n",
        b"<!-- before -->\n" + rest.lstrip(),  # no XML declaration, a comment first
        b'<?xml version="1.0" encoding="utf-8" standalone="yes"?>' + rest,
        declaration + b"?>\n\n\n" + rest,
    ]


def test_same_version_in_other_unsigned_bytes_is_the_same_list(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    """THREATS 36: whichever copy arrives first, the endorser's own copy is never refused."""
    raw = lists.sign(make(endorser, now), endorser)
    first = accept(raw, trust, [pin], now)
    for variant in _unsigned_variants(raw):
        assert variant != raw
        copy = accept(variant, trust, [pin], now, previous=state_of(first))
        assert copy.content_sha256 == first.content_sha256
        assert copy.image_list == first.image_list
        # ... and the other way round: a copy first, then the endorser's bytes.
        assert accept(raw, trust, [pin], now, previous=state_of(copy)).sha256 == first.sha256


def test_same_version_with_the_same_bytes_is_accepted(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    raw = lists.sign(make(endorser, now), endorser)
    first = accept(raw, trust, [pin], now)
    later = now + timedelta(hours=6)
    second = accept(raw, trust, [pin], later, previous=state_of(first))
    assert second.image_list == first.image_list
    assert second.sha256 == first.sha256
    assert second.verified_at == later


# -- THREATS 10: freeze ---------------------------------------------------------


def test_list_past_its_expiry_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(
        make(endorser, now, updated=now - timedelta(days=2), expires=now - timedelta(seconds=1)),
        endorser,
    )
    rejects(FreshnessError, raw, trust, [pin], now, previous=previous, match="expired")


def test_list_is_rejected_at_the_exact_second_it_expires(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(make(endorser, now, expires=now + timedelta(days=1)), endorser)
    assert accept(raw, trust, [pin], now + timedelta(days=1) - timedelta(seconds=1))
    rejects(FreshnessError, raw, trust, [pin], now + timedelta(days=1), previous=previous)


def test_list_that_expires_before_it_was_updated_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(
        make(endorser, now, updated=now - timedelta(minutes=1), expires=now - timedelta(hours=1)),
        endorser,
    )
    rejects(FreshnessError, raw, trust, [pin], now, previous=previous)


# -- THREATS 11: the future and the clock going back --------------------------------


def test_updated_beyond_clock_skew_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(make(endorser, now, updated=now + SKEW + timedelta(seconds=1)), endorser)
    rejects(FreshnessError, raw, trust, [pin], now, previous=previous, match="future")


@pytest.mark.parametrize("ahead", [timedelta(seconds=1), timedelta(minutes=4), SKEW])
def test_updated_within_clock_skew_is_accepted(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, ahead: timedelta
) -> None:
    raw = lists.sign(make(endorser, now, updated=now + ahead), endorser)
    assert accept(raw, trust, [pin], now).image_list.updated == now + ahead


def test_clock_skew_comes_from_limits(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(make(endorser, now, updated=now + timedelta(seconds=1)), endorser)
    rejects(
        FreshnessError,
        raw,
        trust,
        [pin],
        now,
        previous=previous,
        limits=Limits(clock_skew=timedelta(0)),
    )


def test_higher_version_with_earlier_updated_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    first = accept(
        lists.sign(make(endorser, now, version=5, updated=now - timedelta(minutes=5)), endorser),
        trust,
        [pin],
        now,
    )
    earlier = lists.sign(
        make(endorser, now, version=6, updated=now - timedelta(minutes=6)), endorser
    )
    rejects(
        RollbackError, earlier, trust, [pin], now, previous=state_of(first), match="earlier update"
    )


def test_higher_version_with_the_same_updated_is_accepted(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    first = accept(lists.sign(make(endorser, now, version=5), endorser), trust, [pin], now)
    resigned = lists.sign(make(endorser, now, version=6), endorser)
    assert accept(resigned, trust, [pin], now, previous=state_of(first)).image_list.version == 6


# -- THREATS 12: fast-forward ---------------------------------------------------


def test_version_two_to_the_62_is_a_format_error(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(make(endorser, now, version=2**62), endorser)
    rejects(ListFormatError, raw, trust, [pin], now, previous=previous, match="vmic:version")


def test_version_just_above_max_version_is_a_format_error(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(make(endorser, now, version=DEFAULT_LIMITS.max_version + 1), endorser)
    rejects(ListFormatError, raw, trust, [pin], now, previous=previous, match="above the limit")


def test_jump_above_max_version_step_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    step = DEFAULT_LIMITS.max_version_step
    too_far = lists.sign(make(endorser, now, version=previous.version + step + 1), endorser)
    rejects(RollbackError, too_far, trust, [pin], now, previous=previous, match="jumps")
    at_limit = lists.sign(make(endorser, now, version=previous.version + step), endorser)
    verified = accept(at_limit, trust, [pin], now, previous=previous)
    assert verified.image_list.version == previous.version + step


def test_version_step_comes_from_limits(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(make(endorser, now, version=previous.version + 11), endorser)
    rejects(
        RollbackError, raw, trust, [pin], now, previous=previous, limits=Limits(max_version_step=10)
    )


def test_version_jump_is_allowed_without_previous_state(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    raw = lists.sign(make(endorser, now, version=DEFAULT_LIMITS.max_version), endorser)
    assert accept(raw, trust, [pin], now).image_list.version == DEFAULT_LIMITS.max_version


# -- THREATS 13: another list at this subscription's URL ------------------------------


def test_other_list_id_than_expected_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(make(endorser, now, id=OTHER_LIST), endorser)
    expect = Expectation(list_id=lists.LIST_ID, self_url=lists.SELF_URL)
    rejects(
        WrongListError, raw, trust, [pin], now, previous=previous, expect=expect, match=OTHER_LIST
    )


def test_other_self_link_than_expected_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    other_url = "https://endorser.example.org/lists/testing.atom"
    raw = lists.sign(make(endorser, now, self_url=other_url), endorser)
    expect = Expectation(list_id=lists.LIST_ID, self_url=lists.SELF_URL)
    rejects(
        WrongListError, raw, trust, [pin], now, previous=previous, expect=expect, match="self link"
    )


def test_expectation_of_only_the_list_id_ignores_the_self_link(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime
) -> None:
    raw = lists.sign(make(endorser, now, self_url="https://mirror.example.net/x.atom"), endorser)
    assert accept(raw, trust, [pin], now, expect=Expectation(list_id=lists.LIST_ID))


# -- the signer named in the list and the pins ---------------------------------------


def test_list_naming_another_endorser_dn_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    claimed = DistinguishedName.parse_slash("/DC=org/DC=vmic-test/OU=Users/CN=John Endorser")
    raw = lists.sign(make(endorser, now, endorser_dn=claimed), endorser)
    rejects(UntrustedSignerError, raw, trust, [pin], now, previous=previous, match="names endorser")


def test_a_list_naming_another_signer_says_so_and_not_that_pins_failed(
    endorser: Identity, trust: TrustStore, now: datetime
) -> None:
    """Checked without pins (`vmic verify` without --endorser-dn), the hint must not talk
    of pins: the list and its signature disagree."""
    claimed = DistinguishedName.parse_slash("/DC=org/DC=vmic-test/OU=Users/CN=John Endorser")
    raw = lists.sign(make(endorser, now, endorser_dn=claimed), endorser)
    with pytest.raises(UntrustedSignerError) as info:
        verify_list(raw, trust=trust, pins=None, now=now)
    assert "pinned" not in info.value.hint
    assert "the certificate that signed it" in info.value.hint


def test_list_naming_another_issuer_dn_is_rejected(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    claimed = DistinguishedName.parse_slash("/DC=org/DC=vmic-test/CN=Another CA")
    raw = lists.sign(make(endorser, now, issuer_dn=claimed), endorser)
    rejects(UntrustedSignerError, raw, trust, [pin], now, previous=previous, match="names issuer")


def test_signer_not_pinned_is_rejected(
    root_ca: TestCA, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    # Same CN, same CA, another OU: the whole DN is compared, not the CN.
    lookalike = root_ca.issue("/DC=org/DC=vmic-test/OU=Guests/CN=Jane Endorser")
    raw = lists.sign(make(lookalike, now), lookalike)
    rejects(UntrustedSignerError, raw, trust, [pin], now, previous=previous, match="not a pinned")


def test_pin_with_another_issuer_is_rejected(
    endorser: Identity, trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    pin = SignerPin(
        subject=endorser.subject,
        issuer=DistinguishedName.parse_slash("/DC=org/DC=vmic-test/CN=Another CA"),
    )
    raw = lists.sign(make(endorser, now), endorser)
    rejects(UntrustedSignerError, raw, trust, [pin], now, previous=previous)


def test_empty_pin_list_accepts_nobody(
    endorser: Identity, trust: TrustStore, now: datetime, previous: PreviousState
) -> None:
    raw = lists.sign(make(endorser, now), endorser)
    rejects(UntrustedSignerError, raw, trust, [], now, previous=previous)


def test_signed_but_malformed_list_is_a_format_error(
    endorser: Identity, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    root = render_list(make(endorser, now))
    entry = root.find("{http://www.w3.org/2005/Atom}entry")
    assert entry is not None
    etree.SubElement(entry, "{urn:vmic:imagelist:1}unknown").text = "x"
    raw = lists.sign_root(root, endorser)
    rejects(ListFormatError, raw, trust, [pin], now, previous=previous, match="unknown element")


# -- HTML where a list is expected ----------------------------------------------------

HTML_PAGES = [
    b"<!DOCTYPE html>\n<html><head><title>Images</title></head></html>",
    b"<!doctype HTML><title>404</title>",
    b"\xef\xbb\xbf\n  <html lang=en><body>Not found</body></html>",
    (
        b'<?xml version="1.0" encoding="utf-8"?>\n<!-- generated -->\n'
        b'<html xmlns="http://www.w3.org/1999/xhtml"><head/></html>'
    ),
    b'<!-- a -->\n<!-- b -->\n<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01//EN">\n<HTML>',
    b"<html>",
]


@pytest.mark.parametrize("page", HTML_PAGES)
def test_an_html_page_is_refused_as_html(
    page: bytes, trust: TrustStore, pin: SignerPin, now: datetime, previous: PreviousState
) -> None:
    assert looks_like_html(page)
    rejects(ListFormatError, page, trust, [pin], now, previous=previous, match="an HTML page")


@pytest.mark.parametrize(
    "text",
    [
        b'<?xml version="1.0"?>\n<!-- <html> -->\n<feed xmlns="http://www.w3.org/2005/Atom"/>',
        b"<feed><title>&lt;html&gt; in a title</title></feed>",
        b"<htmlish/>",
        b"<!DOCTYPE feed>",
        b"<!-- never closed <html>",
        b"",
    ],
)
def test_what_merely_mentions_html_is_not_taken_for_a_page(text: bytes) -> None:
    assert not looks_like_html(text)


def test_a_signed_list_is_not_taken_for_a_page(endorser: Identity, now: datetime) -> None:
    raw = lists.sign(lists.image_list(endorser, now=now, title="<!DOCTYPE html> <html>"), endorser)
    assert not looks_like_html(raw)
    assert detect_format(raw) is ListFormat.ATOM
