"""Hooks with vmcatcher's environment: an existing vmcatcher event handler runs unchanged.

:func:`publish_appdb_lists` publishes what an EGI site subscribes to: an
AppDB-like HEPiX list (the VO at list level, ``ad:mpuri``, ``ad:appid``,
``ad:base_mpuri``, and one image whose values are hostile) and an Atom list
whose image names its page; the catalogue and CLI tests use it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from federation.cli.common import ExitCode
from feeds.hepix import render_hepix
from feeds.model import ImageList, list_id
from keys.smime import sign_smime
from site_agent import config as site_config
from site_agent.hooks import hook_environment
from site_agent.records import EventRecord
from tests.support.site import LIST_UUID, World, image_bytes, image_uuid

APPDB_PATH = "/store/vo/vo.access.egi.eu/image.list"
APPDB_LIST = list_id("5b3f5a2e-7d51-4c1e-9b0a-3e2d1c0b9a88")
LIST_VO = "vo.access.egi.eu"
"""The HEPiX list's ``ad:vo``; image 2 names none of its own and takes it."""
LONG_VO = "vo.elixir-europe.org"
"""Image 3's own ``ad:vo``: longer than the `vmic images` column."""
ATOM_PAGE = "https://images.example.org/pages/alma9-wn"
"""Image 1's page, in the Atom list (``atom:link rel=alternate``)."""
MPURI = f"https://appdb.egi.eu/store/vm/image/{image_uuid(2)}:8420/"
APPID = "1017"
BASE_MPURI = "https://appdb.egi.eu/store/vm/image/base-alma9:0/"
HOSTILE_TITLE = "<script>alert('title')</script>"
HOSTILE_APPID = '"><script>alert(1)</script>'
JS_URL = "javascript:alert(document.cookie)"
"""Image 3's ``ad:mpuri`` and ``ad:base_mpuri``: never a page vmic links to."""

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


def appdb_list(world: World, *, version: int) -> ImageList:
    """Images 2 and 3 as the AppDB publishes them; image 3's values are hostile."""
    base = world.make_list(version=version, images=(2, 3))
    two, three = base.entries
    return dataclasses.replace(
        base,
        id=APPDB_LIST,
        title="AppDB images for vo.access.egi.eu",
        self_url=world.sim.url(APPDB_PATH),
        vo=LIST_VO,
        entries=(
            dataclasses.replace(
                two,
                vo=None,
                tags=(),
                info_url=MPURI,
                appliance_id=APPID,
                base_marketplace_url=BASE_MPURI,
            ),
            dataclasses.replace(
                three,
                title=HOSTILE_TITLE,
                vo=LONG_VO,
                tags=(),
                appliance_id=HOSTILE_APPID,
                extra=(("ad:base_mpuri", JS_URL), ("ad:mpuri", JS_URL)),
            ),
        ),
    )


def publish_appdb_lists(world: World) -> None:
    """The Atom list (image 1, with its page) and the signed HEPiX list (images 2, 3)."""
    atom = world.make_list(version=1, images=(1,))
    world.publish(
        dataclasses.replace(
            atom, entries=tuple(dataclasses.replace(e, info_url=ATOM_PAGE) for e in atom.entries)
        )
    )
    document = json.loads(render_hepix(appdb_list(world, version=20260101000000)))
    images = document["hv:imagelist"]["hv:images"]
    del images[0]["hv:image"]["ad:vo"]  # image 2 has the list's VO only
    assert document["hv:imagelist"]["ad:vo"] == LIST_VO
    assert images[1]["hv:image"]["ad:mpuri"] == JS_URL
    content = json.dumps(document, indent=2).encode()
    signer = world.endorser
    world.sim.publish(
        APPDB_PATH,
        sign_smime(content, key=signer.key, cert=signer.cert, chain=signer.intermediates),
    )


def subscribe_appdb_lists(world: World) -> None:
    """Subscribe to both lists (approving what they list) and sync: every image available."""
    publish_appdb_lists(world)
    assert world.subscribe(name="atom", auto=True) == 0
    assert world.subscribe(name="appdb", path=APPDB_PATH, auto=True) == 0
    assert world.vmic("sync") == 0
    assert world.states() == {image_uuid(n): "available" for n in (1, 2, 3)}


def _dumped(folder: Path) -> dict[str, dict[str, str]]:
    """What the dumping hook wrote: per image id, its VMIC_* and VMCATCHER_* variables."""
    out = {}
    for path in folder.iterdir():
        lines = path.read_text().splitlines()
        out[path.name] = dict(line.split("=", 1) for line in lines)
    return out


def test_hooks_get_the_image_page_and_appdb_ids_from_hepix_and_atom_lists(
    world: World, tmp_path: Path
) -> None:
    script = tmp_path / "dump.sh"
    script.write_text(
        "#!/bin/sh\n"
        'env | grep -E "^(VMIC|VMCATCHER)_" | sort > "$1/$VMCATCHER_EVENT_DC_IDENTIFIER"\n'
    )
    script.chmod(0o755)
    dump = tmp_path / "events"
    dump.mkdir()
    assert (
        world.vmic(
            "hooks", "add", "glance", "--vmcatcher-env", "--on", "image.available",
            "--", script, dump,
        )
        == 0
    )  # fmt: skip

    subscribe_appdb_lists(world)

    env = _dumped(dump)
    assert set(env) == {image_uuid(n) for n in (1, 2, 3)}
    hepix = env[image_uuid(2)]
    assert hepix["VMCATCHER_EVENT_TYPE"] == "AvailablePostfix"
    assert hepix["VMCATCHER_EVENT_AD_MPURI"] == MPURI
    assert hepix["VMCATCHER_EVENT_AD_APPID"] == APPID
    assert hepix["VMCATCHER_EVENT_AD_BASE_MPURI"] == BASE_MPURI
    assert hepix["VMCATCHER_EVENT_VO"] == LIST_VO
    assert hepix["VMIC_INFO_URL"] == MPURI
    assert hepix["VMIC_APPLIANCE_ID"] == APPID
    assert hepix["VMIC_BASE_MARKETPLACE_URL"] == BASE_MPURI
    assert hepix["VMIC_VO"] == LIST_VO
    assert hepix["VMIC_LIST_ID"] == APPDB_LIST
    assert hepix["VMIC_SUBSCRIPTION"] == "appdb"
    atom = env[image_uuid(1)]
    assert atom["VMCATCHER_EVENT_AD_MPURI"] == ATOM_PAGE
    assert atom["VMIC_INFO_URL"] == ATOM_PAGE
    assert "VMCATCHER_EVENT_AD_APPID" not in atom
    assert "VMIC_APPLIANCE_ID" not in atom
    # a marketplace URI that is not http(s) is never vmic's page of the image; vmcatcher's
    # handlers get the list's value as written, as vmcatcher gave it to them
    hostile = env[image_uuid(3)]
    assert "VMIC_INFO_URL" not in hostile
    assert "VMIC_BASE_MARKETPLACE_URL" not in hostile
    assert hostile["VMIC_X_AD_MPURI"] == JS_URL
    assert hostile["VMCATCHER_EVENT_AD_MPURI"] == JS_URL
    assert hostile["VMIC_APPLIANCE_ID"] == HOSTILE_APPID
    assert hostile["VMIC_VO"] == LONG_VO
