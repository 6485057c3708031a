"""Hooks with vmcatcher's environment: an existing vmcatcher event handler runs unchanged."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from federation.cli.common import ExitCode
from site_agent import config as site_config
from site_agent.hooks import hook_environment
from site_agent.records import EventRecord
from tests.support.site import LIST_UUID, World, image_bytes, image_uuid

# Written the way vmcatcher's handlers (glancepush and others) read their environment:
# act on *Postfix events, find the image under $VMCATCHER_CACHE_DIR_CACHE by
# $VMCATCHER_EVENT_FILENAME or by $VMCATCHER_EVENT_DC_IDENTIFIER, check it against
# $VMCATCHER_EVENT_SL_CHECKSUM_SHA512, and use the dc:/hv:/sl: fields.
HANDLER = """#!/bin/sh
log="$1"
case "$VMCATCHER_EVENT_TYPE" in
  AvailablePostfix)
    image="${VMCATCHER_CACHE_DIR_CACHE}/${VMCATCHER_EVENT_FILENAME}"
    by_uuid="${VMCATCHER_CACHE_DIR_CACHE}/${VMCATCHER_EVENT_DC_IDENTIFIER}"
    for f in "$image" "$by_uuid"; do
      sum=$(sha512sum "$f" | cut -d' ' -f1)
      if [ "$sum" != "$VMCATCHER_EVENT_SL_CHECKSUM_SHA512" ]; then echo "bad $f" >&2; exit 1; fi
    done
    echo "upload $VMCATCHER_EVENT_DC_IDENTIFIER '$VMCATCHER_EVENT_DC_TITLE'" \\
         "size=$VMCATCHER_EVENT_HV_SIZE format=$VMCATCHER_EVENT_HV_FORMAT" \\
         "os=$VMCATCHER_EVENT_SL_OS $VMCATCHER_EVENT_SL_OSVERSION arch=$VMCATCHER_EVENT_SL_ARCH" \\
         "list=$VMCATCHER_EVENT_IL_DC_IDENTIFIER" >> "$log" ;;
  ExpirePosfix)
    kept=gone; cached=uncached
    [ -f "${VMCATCHER_CACHE_DIR_EXPIRE}/${VMCATCHER_EVENT_FILENAME}" ] && kept=kept
    [ -e "${VMCATCHER_CACHE_DIR_CACHE}/${VMCATCHER_EVENT_DC_IDENTIFIER}" ] && cached=cached
    echo "delete $VMCATCHER_EVENT_DC_IDENTIFIER $kept $cached" >> "$log" ;;
  ImageNew)
    echo "new $VMCATCHER_EVENT_DC_IDENTIFIER" >> "$log" ;;
  *) echo "ignored $VMCATCHER_EVENT_TYPE" >> "$log" ;;
esac
"""


def test_a_vmcatcher_handler_uploads_available_images_and_deletes_withdrawn_ones(
    world: World, tmp_path: Path
) -> None:
    handler = tmp_path / "glancepush-like.sh"
    handler.write_text(HANDLER)
    handler.chmod(0o755)
    log = tmp_path / "glance.log"
    assert (
        world.vmic(
            "hooks",
            "add",
            "glance",
            "--vmcatcher-env",
            "--on",
            "image.new",
            "--on",
            "image.available",
            "--on",
            "image.withdrawn",
            "--",
            handler,
            log,
        )
        == 0
    )
    world.publish(version=1, images=(1,))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    world.publish(version=2, images=(), revoked=(1,))
    assert world.vmic("sync") == 0

    list_id = world.make_list(version=1).id
    assert log.read_text().splitlines() == [
        f"new {image_uuid(1)}",
        (
            f"upload {image_uuid(1)} 'Test image 1' size=4096 format=qcow2"
            f" os=Linux 9.4 arch=x86_64 list={list_id}"
        ),
        f"delete {image_uuid(1)} kept uncached",
    ]
    assert hashlib.sha512(image_bytes(1)).hexdigest() not in {
        p.name for p in world.home.images.iterdir()
    }
    # vmic purges the expired file; the next vmcatcher event prunes the link that dangles
    (expired_link,) = (world.home.root / "vmcatcher" / "expired").iterdir()
    expired_link.resolve().unlink()
    world.publish(version=3, images=(2,))
    assert world.vmic("sync") == 0
    assert list((world.home.root / "vmcatcher" / "expired").iterdir()) == []
    assert [p.name for p in (world.home.root / "vmcatcher" / "cache").iterdir()] == [image_uuid(2)]


def test_vmcatcher_hooks_take_only_the_events_vmcatcher_knows(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = world.home.config.read_bytes()

    code = world.vmic(
        "hooks", "add", "x", "--vmcatcher-env", "--on", "list.rejected", "--", "/bin/true"
    )

    assert code == ExitCode.CONFIG
    assert "vmcatcher handler only knows" in capsys.readouterr().err
    assert world.home.config.read_bytes() == before
    assert site_config.load(world.home.config).hooks == ()


def test_unread_hepix_keys_become_variables_but_never_replace_any_other(tmp_path: Path) -> None:
    sha512 = "ab" * 64
    event = EventRecord(
        id=7,
        at=datetime(2026, 1, 1, tzinfo=UTC),
        type="image.new",
        subscription="appdb",
        image_id=image_uuid(1),
        data={
            "image_id": image_uuid(1),
            "list_id": LIST_UUID,
            "sha512": sha512,
            "title": "Real title",
            "vo": None,
            "policy_override": None,
            "extra": {
                "ad:mpuri": "https://appdb.example.org/x",
                "sha512": "00" * 64,
                "dc:title": "Forged title",
                "il:dc:identifier": "forged",
                "type": "AvailablePostfix",
                "vo": "forged-vo",
                "policy_override": "site-approved",
                "path": "/etc/shadow",
                "key_passphrase": "from the list",
                "": "nameless",
            },
        },
    )
    hook = site_config.make_hook(
        name="h", events=["image.new"], command=["/bin/true"], timeout=5, vmcatcher_env=True
    )
    base = {"PATH": "/usr/bin", "VMIC_KEY_PASSPHRASE": "the operator's"}

    env = hook_environment(hook, event, home=str(tmp_path), base_env=base)

    assert env["VMIC_X_AD_MPURI"] == "https://appdb.example.org/x"
    assert env["VMCATCHER_EVENT_AD_MPURI"] == "https://appdb.example.org/x"
    # what vmic, vmcatcher or the agent's environment set is never replaced by list data
    assert env["VMIC_SHA512"] == sha512
    assert env["VMIC_TITLE"] == "Real title"
    assert env["VMIC_KEY_PASSPHRASE"] == base["VMIC_KEY_PASSPHRASE"]
    assert env["PATH"] == "/usr/bin"
    assert env["VMCATCHER_EVENT_DC_TITLE"] == "Real title"
    assert env["VMCATCHER_EVENT_IL_DC_IDENTIFIER"] == LIST_UUID
    assert env["VMCATCHER_EVENT_SL_CHECKSUM_SHA512"] == sha512
    assert env["VMCATCHER_EVENT_TYPE"] == "ImageNew"
    assert env["VMCATCHER_EVENT_FILENAME"] == image_uuid(1)
    # fields vmic left empty stay empty: a list cannot fill them in
    for name in ("VMIC_VO", "VMIC_POLICY_OVERRIDE", "VMIC_PATH", "VMCATCHER_EVENT_VO"):
        assert name not in env, name
    assert env["VMIC_X_POLICY_OVERRIDE"] == "site-approved"  # in its own namespace only
    assert "VMIC_X_" not in env
    assert "VMCATCHER_EVENT_" not in env
