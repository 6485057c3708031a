"""The site's export: what it lists, who signs it, when a new version is issued."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from federation.cli.common import ExitCode
from federation.export import write_export
from feeds.verify import PreviousState, VerifiedList, verify_list
from keys.errors import ConfigError
from keys.trust import TrustStore
from keys.xmlsig import SignerPin
from site_agent.admin import locked_site
from tests.support.ca import Identity, write_identity
from tests.support.site import World, image_uuid

SITE_DN = "/DC=org/DC=vmic-test/OU=Sites/CN=site-a.example.org"


def with_identity(world: World, tmp_path: Path) -> Identity:
    site = world.ca.issue(SITE_DN)
    cert, key, _chain = write_identity(tmp_path / "site-id", site)
    assert (
        world.vmic(
            "site",
            "identity",
            "--cert",
            cert,
            "--key",
            key,
            "--base-url",
            "https://site-a.example.org:8443/",
        )
        == 0
    )
    return site


def verified_export(
    world: World, site: Identity, previous: PreviousState | None = None
) -> VerifiedList:
    raw = (world.home.exports / "export.atom").read_bytes()
    return verify_list(
        raw,
        trust=TrustStore.from_directory(world.trust),
        pins=[SignerPin(subject=site.subject, issuer=site.issuer)],
        now=world.now,
        previous=previous,
    )


def test_export_lists_the_approved_shareable_images_with_their_sources(
    world: World, tmp_path: Path
) -> None:
    site = with_identity(world, tmp_path)
    world.publish(version=3, images=(1, 2, 3))
    assert world.subscribe() == 0
    assert world.vmic("approve", image_uuid(1)) == 0
    assert world.vmic("approve", image_uuid(2), "--local-only") == 0
    assert world.vmic("sync") == 0

    export = verified_export(world, site)
    entries = export.image_list.entries
    assert [e.id for e in entries] == [image_uuid(1)]
    (entry,) = entries
    assert entry.url == f"https://site-a.example.org:8443/images/sha512/{entry.sha512}"
    assert entry.source_list == world.make_list(version=3).id
    assert entry.source_version == 3
    assert entry.source_url == (
        f"https://site-a.example.org:8443/lists/{world.make_list(version=3).id}.atom"
    )
    assert export.image_list.self_url == "https://site-a.example.org:8443/export.atom"
    assert export.signer.subject == site.subject


def test_a_new_export_version_only_when_something_changed(world: World, tmp_path: Path) -> None:
    with_identity(world, tmp_path)
    world.publish(version=1, images=(1, 2))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    first = (world.home.exports / "export.atom").read_bytes()

    assert world.vmic("sync") == 0
    assert (world.home.exports / "export.atom").read_bytes() == first

    assert world.vmic("withdraw", image_uuid(2)) == 0
    assert world.vmic("sync") == 0
    second = (world.home.exports / "export.atom").read_bytes()
    assert second != first
    assert b"<vmic:version>3</vmic:version>" in second  # 1: written by `site identity`
    assert image_uuid(2).encode() not in second


def test_an_export_past_half_its_validity_is_signed_again(world: World, tmp_path: Path) -> None:
    with_identity(world, tmp_path)
    world.publish(version=1, images=(1,))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    with locked_site(world.home, now=world.now + timedelta(days=4), purpose="test") as site:
        result = write_export(site)
    assert result.written
    assert result.version == 3  # 1 by `site identity`, 2 by the sync that approved


def test_the_export_is_signed_as_soon_as_the_identity_is_set(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/export.atom answers right after `vmic site identity`, before any sync or `vmic export`."""
    assert not (world.home.exports / "export.atom").exists()

    site = with_identity(world, tmp_path)

    assert "export written" in capsys.readouterr().out
    export = verified_export(world, site)
    assert export.image_list.version == 1
    assert export.image_list.entries == ()


def test_an_identity_set_while_a_sync_runs_is_kept_and_the_export_waits(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with locked_site(world.home, now=world.now, purpose="vmic sync"):
        site = with_identity(world, tmp_path)
    assert "the next `vmic sync` writes it" in capsys.readouterr().out
    assert not (world.home.exports / "export.atom").exists()
    assert world.vmic("sync") == 0
    assert verified_export(world, site).image_list.version == 1


def test_export_without_an_identity_is_a_configuration_error(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert world.vmic("export") == ExitCode.CONFIG
    assert "no identity" in capsys.readouterr().err
    assert not (world.home.exports / "export.atom").exists()


def test_site_identity_refuses_a_key_others_can_read(world: World, tmp_path: Path) -> None:
    site = world.ca.issue(SITE_DN)
    cert, key, _chain = write_identity(tmp_path / "site-id", site)
    key.chmod(0o644)
    before = world.home.config.read_bytes()

    code = world.vmic(
        "site", "identity", "--cert", cert, "--key", key, "--base-url", "https://a.example.org"
    )

    assert code == ExitCode.CONFIG
    assert world.home.config.read_bytes() == before


def test_site_identity_refuses_a_certificate_unfit_for_signing(
    world: World, tmp_path: Path
) -> None:
    unfit = world.ca.issue(SITE_DN, digital_signature=False)
    cert, key, _chain = write_identity(tmp_path / "site-id", unfit)
    before = world.home.config.read_bytes()

    code = world.vmic(
        "site", "identity", "--cert", cert, "--key", key, "--base-url", "https://a.example.org"
    )

    assert code == ExitCode.UNTRUSTED_CHAIN
    assert world.home.config.read_bytes() == before


def test_write_export_raises_without_identity(world: World) -> None:
    with (
        locked_site(world.home, now=world.now, purpose="test") as site,
        pytest.raises(ConfigError),
    ):
        write_export(site)
