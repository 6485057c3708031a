"""`vmic subscribe` and `vmic sync` against a loopback endorser: which lists a site accepts.

Each failure test checks the exit code, the reason, and that the site's
trusted state (image rows, accepted versions, stored list bytes, cached
files) is exactly what it was before. THREATS 1-3, 8-13, 15, 27.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from federation.cli import main
from federation.cli.common import ExitCode
from feeds.model import list_id
from keys.errors import RollbackError
from site_agent.home import SiteHome
from site_agent.names import check_name
from site_agent.sync import run_sync
from tests.support.ca import TestCA, write_trust_dir
from tests.support.site import CA_DN, ENDORSER_DN, LIST_PATH, World, image_uuid


def subscribed(world: World, *, version: int = 1, auto: bool = False) -> None:
    world.publish(version=version)
    assert world.subscribe(auto=auto) == 0


def history(world: World) -> list[dict[str, object]]:
    with world.store() as store:
        return [
            {"outcome": r.outcome, "version": r.version, "kind": r.kind, "reason": r.reason}
            for r in store.history()
        ]


def test_subscribe_accepts_a_verified_list_and_holds_its_images(world: World) -> None:
    signed = world.publish(version=1)
    assert world.subscribe() == 0

    assert world.states() == {image_uuid(1): "new", image_uuid(2): "new"}
    assert [h["outcome"] for h in history(world)] == ["accepted"]
    (stored,) = world.home.lists.rglob("*.atom")
    assert stored.read_bytes() == signed  # the exact original bytes
    with world.store() as store:
        (sub,) = store.subscriptions()
        assert sub.list_id == world.make_list(version=1).id
        assert sub.last_success is not None


def test_subscribe_refuses_a_list_that_does_not_verify_and_stores_nothing(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = world.publish(version=1)
    world.sim.publish(LIST_PATH, signed.replace(b"Test image 1", b"Test image X"))
    before = world.snapshot()

    assert world.subscribe() == ExitCode.SIGNATURE

    assert "signature" in capsys.readouterr().err
    assert world.snapshot() == before
    with world.store() as store:
        assert store.subscriptions() == []


@pytest.mark.parametrize(
    "name", ["peer:alpha", "two words", ".hidden", "x\x1b[2Ky", "é", "n" * 65, ""]
)
def test_subscribe_refuses_a_name_that_is_not_one_short_word(
    world: World, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1)
    before = world.snapshot()

    assert world.subscribe(name=name) == ExitCode.CONFIG

    assert "subscription name" in capsys.readouterr().err
    assert world.snapshot() == before
    with world.store() as store:
        assert store.subscriptions() == []


def test_a_subscription_named_from_a_title_is_a_usable_name(world: World) -> None:
    world.publish(version=1)
    assert (
        world.vmic(
            "subscribe", world.sim.url(LIST_PATH), "--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN
        )
        == 0
    )
    with world.store() as store:
        (sub,) = store.subscriptions()
    assert check_name(sub.name, "name") == sub.name


def test_subscribe_refuses_a_signer_that_is_not_pinned(world: World) -> None:
    other = world.ca.issue("/DC=org/DC=vmic-test/OU=Users/CN=Mallory")
    world.publish(world.make_list(version=1, endorser_dn=other.subject), signer=other)
    before = world.snapshot()

    assert world.subscribe() == ExitCode.WRONG_ENDORSER
    assert world.snapshot() == before


def test_sync_accepts_a_new_version_and_says_once_what_waits_for_the_admin(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Silent when all is well; an image held for the admin is worth a line (cron mails it)
    in the run it arrived, not in every run after."""
    subscribed(world)
    world.publish(version=2, images=(1, 2, 3))
    capsys.readouterr()

    assert world.vmic("sync") == 0

    out, err = capsys.readouterr()
    assert out == ""
    notice = (
        f"vmic sync: image {image_uuid(3)} (Test image 3) waits for approval: "
        f"`vmic image show {image_uuid(3)}`, then `vmic approve` or `vmic refuse`"
    )
    assert err.splitlines() == [notice]
    assert world.states()[image_uuid(3)] == "new"
    assert [h["version"] for h in history(world)] == [1, 2]
    assert world.vmic("sync") == 0
    assert capsys.readouterr() == ("", "")  # said once
    world.publish(version=3, images=(1, 2, 3, 4))
    assert world.vmic("sync", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["waiting"] == [image_uuid(4)]


def test_sync_is_silent_when_the_policy_approves_what_comes(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    subscribed(world, auto=True)
    world.publish(version=2, images=(1, 2, 3))
    capsys.readouterr()

    assert world.vmic("sync") == 0

    assert capsys.readouterr() == ("", "")
    assert world.states()[image_uuid(3)] == "available"


def test_sync_uses_a_conditional_get(world: World) -> None:
    subscribed(world)
    assert world.vmic("sync") == 0
    assert world.vmic("sync") == 0

    last = world.sim.requests_for(LIST_PATH)[-1]
    assert last.if_none_match is not None
    assert last.status == 304


@pytest.mark.parametrize(
    ("name", "tamper"),
    [
        ("tampered byte", lambda raw: raw.replace(b"Test image 2", b"Test image 9")),
        ("entry removed", lambda raw: raw.replace(b"<vmic:arch>x86_64</vmic:arch>", b"", 1)),
        ("unsigned", lambda raw: raw[: raw.index(b"<ds:Signature")] + b"</feed>"),
    ],
)
def test_sync_rejects_a_changed_list_and_keeps_the_last_good_one(
    world: World, name: str, tamper: object, capsys: pytest.CaptureFixture[str]
) -> None:
    subscribed(world)
    signed = world.publish(version=2, images=(1, 2, 3))
    assert callable(tamper)
    world.sim.publish(LIST_PATH, tamper(signed))
    before = world.snapshot()
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.PROBLEMS

    err = capsys.readouterr().err
    assert "list rejected" in err
    assert world.snapshot() == before
    assert history(world)[-1]["outcome"] == "rejected"


def test_sync_rejects_a_replayed_older_version(world: World) -> None:
    old = world.publish(version=1)
    assert world.subscribe() == 0
    world.publish(version=2)
    assert world.vmic("sync") == 0
    world.sim.publish(LIST_PATH, old)
    before = world.snapshot()

    assert world.vmic("sync") == ExitCode.PROBLEMS

    assert world.snapshot() == before
    assert history(world)[-1]["kind"] == RollbackError.__name__


def test_sync_rejects_the_same_version_with_other_bytes(world: World) -> None:
    subscribed(world, version=3)
    world.publish(version=3, images=(1,))
    before = world.snapshot()

    # Refused; and, validly signed by the same endorser, proof of equivocation (an alarm:
    # tests/federation/test_equivocation.py)
    assert world.vmic("sync") == ExitCode.ALARM

    assert world.snapshot() == before
    assert "already accepted with different content" in str(history(world)[-1]["reason"])


def test_a_rejected_list_is_recorded_once_but_reported_every_run(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    subscribed(world, version=3)
    world.publish(version=2)
    for _ in range(3):
        assert world.vmic("sync") == ExitCode.PROBLEMS
        assert "older than version 3" in capsys.readouterr().err
    assert [h["outcome"] for h in history(world)] == ["accepted", "rejected"]


def test_sync_rejects_a_fast_forward_version(world: World) -> None:
    subscribed(world)
    world.publish(version=2**40)
    before = world.snapshot()

    assert world.vmic("sync") == ExitCode.PROBLEMS
    assert world.snapshot() == before


def test_sync_rejects_a_list_updated_in_the_future(world: World) -> None:
    subscribed(world)
    world.publish(version=2, updated=world.now + timedelta(days=2))
    before = world.snapshot()

    assert world.vmic("sync") == ExitCode.PROBLEMS
    assert world.snapshot() == before
    assert history(world)[-1]["kind"] == "FreshnessError"


def test_sync_rejects_another_list_of_the_same_endorser_at_the_url(world: World) -> None:
    subscribed(world)
    other = replace(world.make_list(version=5), id=list_id("11111111-2222-4333-8444-555555555555"))
    world.publish(other)
    before = world.snapshot()

    assert world.vmic("sync") == ExitCode.PROBLEMS
    assert world.snapshot() == before
    assert history(world)[-1]["kind"] == "WrongListError"


def test_sync_rejects_a_list_signed_after_the_endorser_was_revoked(world: World) -> None:
    subscribed(world)
    world.ca.revoke(world.endorser.cert)
    write_trust_dir(world.trust, [world.ca])  # fetch-crl brings the new CRL
    world.publish(version=2, images=(1, 2, 3))
    before = world.snapshot()

    assert world.vmic("sync") == ExitCode.PROBLEMS
    assert world.snapshot() == before
    assert history(world)[-1]["kind"] == "RevokedError"


def test_a_renewed_certificate_with_the_same_dn_is_accepted(world: World) -> None:
    subscribed(world)
    renewed = world.ca.issue(str(world.endorser.subject))
    world.publish(version=2, images=(1, 2, 3), signer=renewed)

    assert world.vmic("sync") == 0
    assert image_uuid(3) in world.states()


def test_a_list_from_an_untrusted_ca_is_rejected(world: World) -> None:
    subscribed(world)
    rogue_ca = TestCA("/DC=org/DC=vmic-test/CN=vmic Test Root CA", now=world.now)
    impostor = rogue_ca.issue(str(world.endorser.subject))
    world.publish(version=2, images=(1, 2, 3), signer=impostor)
    before = world.snapshot()

    assert world.vmic("sync") == ExitCode.PROBLEMS
    assert world.snapshot() == before
    assert history(world)[-1]["kind"] == "CertificateError"


def test_a_peer_reserialized_list_is_rejected(world: World) -> None:
    """A mirror that pretty-prints or re-encodes the list breaks the signature (THREATS 27)."""
    subscribed(world)
    signed = world.publish(version=2, images=(1, 2, 3))
    world.sim.publish(LIST_PATH, signed.replace(b"\n  <entry>", b"\n    <entry>"))
    before = world.snapshot()

    assert world.vmic("sync") == ExitCode.PROBLEMS
    assert world.snapshot() == before


def test_an_expired_list_withdraws_its_images_once_and_alarms_every_run(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Freeze: the server keeps serving a list past its expiry (THREATS 10)."""
    subscribed(world, auto=True)
    assert world.vmic("sync") == 0
    assert set(world.states().values()) == {"available"}
    cached = sorted(world.home.images.iterdir())
    later = world.now + timedelta(days=29)
    write_trust_dir(world.trust, [world.ca], [world.ca.crl(next_update=later + timedelta(days=1))])

    first = run_sync(world.home, now=later)
    second = run_sync(world.home, now=later + timedelta(minutes=15))

    assert not first.ok
    assert any(p.kind == "expired" for p in first.problems)
    assert any(p.kind == "expired" for p in second.problems)
    assert set(world.states().values()) == {"expired"}
    assert list(world.home.images.iterdir()) == []
    assert sorted(p.name.split(".")[0] for p in world.home.expired.iterdir()) == [
        p.name for p in cached
    ]
    with world.store() as store:
        expired_events = [e for e in store.events() if e.type == "list.expired"]
    assert len(expired_events) == 1
    assert [h["outcome"] for h in history(world)][-1] == "expired"


def test_a_fresh_list_after_expiry_restores_approved_images(world: World) -> None:
    subscribed(world, auto=True)
    assert world.vmic("sync") == 0
    later = world.now + timedelta(days=29)
    write_trust_dir(world.trust, [world.ca], [world.ca.crl(next_update=later + timedelta(days=1))])
    run_sync(world.home, now=later)
    fresh = world.make_list(version=2, updated=later, expires=later + timedelta(days=28))
    world.publish(fresh)

    report = run_sync(world.home, now=later + timedelta(minutes=1))

    assert report.ok, report.problems
    assert set(world.states().values()) == {"available"}


def test_sync_json_summarises_the_run(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    subscribed(world)
    world.publish(version=2, images=(1,))
    capsys.readouterr()

    assert world.vmic("sync", "--json") == 0

    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["lists"] == [{"subscription": "base", "outcome": "accepted", "version": 2}]
    assert {c["what"] for c in report["changes"]} == {"withdrawn"}


def test_one_failing_subscription_does_not_stop_the_others(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    subscribed(world)
    other = replace(world.make_list(version=1), id=list_id("22222222-3333-4444-8555-666666666666"))
    other = replace(other, self_url=world.sim.url("/lists/other.atom"), entries=())
    world.publish(other, path="/lists/other.atom")
    assert world.subscribe(name="other", path="/lists/other.atom") == 0
    world.sim.fault(LIST_PATH, status=500)
    world.publish(
        replace(other, version=2, entries=(world.image_entry(7),)), path="/lists/other.atom"
    )
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.PROBLEMS

    err = capsys.readouterr().err
    assert "base: fetch" in err
    assert world.states()[image_uuid(7)] == "new"


def test_only_syncs_one_subscription(world: World) -> None:
    subscribed(world)
    world.publish(version=2, images=(1, 2, 3))
    assert world.vmic("sync", "--only", "nope") == ExitCode.CONFIG
    assert world.vmic("sync", "--only", "base", "--no-download") == 0
    assert image_uuid(3) in world.states()


def test_unsubscribe_withdraws_images_and_keeps_the_rollback_state(world: World) -> None:
    subscribed(world, version=4, auto=True)
    assert world.vmic("sync") == 0

    assert world.vmic("unsubscribe", "base") == 0

    assert set(world.states().values()) == {"withdrawn"}
    assert list(world.home.images.iterdir()) == []
    world.publish(version=3)
    assert world.subscribe() == ExitCode.ROLLBACK  # the site still remembers version 4


@pytest.mark.parametrize("name", ["base", "again"])
@pytest.mark.parametrize("version", [4, 5])
def test_subscribing_again_brings_the_images_back_under_the_approval_policy(
    world: World, name: str, version: int
) -> None:
    """The same version (nothing new to accept) or a newer one, under the old name or another."""
    subscribed(world, version=4)
    assert world.vmic("approve", image_uuid(1)) == 0
    assert world.vmic("unsubscribe", "base") == 0
    assert set(world.states().values()) == {"withdrawn"}
    world.publish(version=version)

    assert world.subscribe(name=name) == 0

    assert world.states() == {image_uuid(1): "new", image_uuid(2): "new"}  # "hold" decides
    with world.store() as store:
        assert {i.subscription for i in store.images()} == {name}
    assert world.vmic("approve", image_uuid(1), image_uuid(2)) == 0
    assert world.vmic("sync") == 0
    assert set(world.states().values()) == {"available"}


def test_subscribing_again_with_auto_approve_approves_them(world: World) -> None:
    subscribed(world, version=2)
    assert world.vmic("unsubscribe", "base") == 0

    assert world.subscribe(auto=True) == 0

    assert set(world.states().values()) == {"approved"}


def test_an_image_the_admin_withdrew_stays_withdrawn_while_subscribed(world: World) -> None:
    subscribed(world, version=2)
    assert world.vmic("withdraw", image_uuid(1)) == 0
    assert world.vmic("sync") == 0
    assert world.states()[image_uuid(1)] == "withdrawn"


def test_sync_on_a_home_that_was_never_initialised_is_refused(tmp_path: Path) -> None:
    home = SiteHome(tmp_path / "nothing")

    assert main(["sync", "--home", str(home.root)]) == ExitCode.CONFIG
    assert not home.root.exists()


def test_the_same_version_in_other_unsigned_bytes_is_the_same_list(world: World) -> None:
    """THREATS 36: a copy with whitespace in its base64 values (a mirror's, a peer's) came
    first; the endorser's own bytes of that version are taken as the same list, the bytes
    first accepted stay, and history shows the second copy once."""
    signed = world.publish(version=3)
    value = signed.index(b"<ds:SignatureValue>") + len(b"<ds:SignatureValue>")
    mirrored = signed[:value] + b"\n   " + signed[value:]
    world.sim.publish(LIST_PATH, mirrored)
    assert world.subscribe() == 0
    world.sim.publish(LIST_PATH, signed)
    before = world.snapshot()

    assert world.vmic("sync") == 0
    assert world.vmic("sync") == 0

    assert world.snapshot() == before  # the bytes first accepted stay
    (stored,) = world.home.lists.rglob("*.atom")
    assert stored.read_bytes() == mirrored
    seen = [(h["outcome"], h["version"]) for h in history(world)]
    assert seen == [("accepted", 3), ("same-copy", 3)]


def test_a_rejected_list_is_verified_again_each_run_and_taken_once_the_site_is_fixed(
    world: World,
) -> None:
    """The site's CRL went stale, so the endorser's new version is refused. Nothing is
    remembered of the refused bytes but their digest: each run fetches them in full (no
    conditional GET), verifies them again and reports the problem, without a new history
    line; once fetch-crl has run, the same bytes are taken without the endorser doing
    anything."""
    subscribed(world)
    world.publish(version=2, images=(1, 2, 3))
    later = world.now + timedelta(days=2)
    write_trust_dir(world.trust, [world.ca], [world.ca.crl(next_update=later - timedelta(hours=1))])
    before = world.snapshot()

    first = run_sync(world.home, now=later)
    second = run_sync(world.home, now=later + timedelta(minutes=15))

    assert not first.ok
    assert not second.ok
    assert [p.kind for p in first.problems] == [p.kind for p in second.problems]
    assert world.snapshot() == before
    assert [h["outcome"] for h in history(world)] == ["accepted", "rejected"]
    last = world.sim.requests_for(LIST_PATH)[-1]
    assert (last.if_none_match, last.status) == (None, 200)

    write_trust_dir(world.trust, [world.ca], [world.ca.crl(next_update=later + timedelta(days=7))])
    third = run_sync(world.home, now=later + timedelta(minutes=30))

    assert third.ok, third.problems
    assert [h["outcome"] for h in history(world)] == ["accepted", "rejected", "accepted"]
    assert world.states()[image_uuid(3)] == "new"
    assert world.vmic("sync") == 0  # and from now on the conditional GET again
    assert world.sim.requests_for(LIST_PATH)[-1].status == 304
