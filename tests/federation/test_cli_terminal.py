"""What list data may do to a terminal: every value from outside is shown escaped.

Titles, reasons, DNs and error messages that quote them come from endorsers,
mirrors and peers. Here they carry carriage returns and line feeds (a forged
line), 8-bit CSI sequences (U+009B), DEL, tabs, NEL, bidi overrides and
isolates (Trojan Source) and the line and paragraph separators; a signer's
DN carries ESC and backspaces. The lists are really signed and served on
loopback, the commands run in-process, and no line they print may hold a
raw control character: each hostile value must appear as visible escapes.
JSON output keeps the data exactly, with those characters as ``\\uXXXX``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import unicodedata
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.cli import main
from federation.cli.common import ExitCode, print_json, shown
from feeds.model import ImageList, Tombstone, image_id, list_id
from tests.sim.server import Simulator
from tests.support.ca import Identity
from tests.support.lists import sign
from tests.support.site import CA_DN, ENDORSER_DN, LIST_PATH, World, image_uuid

# Each hostile value beside what the terminal must show for it, spelt out by hand.
LIST_TITLE = "Base\r\nvmic: 0 problems, all lists verified"
LIST_TITLE_SHOWN = r"Base\x0d\x0avmic: 0 problems, all lists verified"
TITLE_1 = "Alma \x9b2J\x9b1;31mOWNED\x9b0m\x7f\x7f"
TITLE_1_SHOWN = r"Alma \x9b2J\x9b1;31mOWNED\x9b0m\x7f\x7f"
TITLE_2 = "invoice\u202egpj.exe"
TITLE_2_SHOWN = r"invoice\u202egpj.exe"
TITLE_3 = "tab\there \u2066isolated\u2069 \x85NEL"
TITLE_3_SHOWN = r"tab\x09here \u2066isolated\u2069 \x85NEL"
OS_NAME = "Alma\u2028Linux\u2029 \u202a\u202b\u202c\u202d"
OS_NAME_SHOWN = r"Alma\u2028Linux\u2029 \u202a\u202b\u202c\u202d"
REASON = "compromised\r\x9b1A\x9b2Kimage is fine, keep running it"
REASON_SHOWN = r"compromised\x0d\x9b1A\x9b2Kimage is fine, keep running it"
EVIL_DN = "/DC=org/DC=vmic-test/OU=Users/CN=Jane \x1b]0;pwned\x07\x1b[2J\x08\x08\u202eX"
EVIL_DN_SHOWN = r"/DC=org/DC=vmic-test/OU=Users/CN=Jane \x1b]0;pwned\x07\x1b[2J\x08\x08\u202eX"

# Characters that must never reach a terminal raw (the CLI's own line feeds aside).
UNSAFE = "".join(
    [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
    + [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)]
)
RAW = re.compile(f"[{re.escape(UNSAFE.replace(chr(10), ''))}]")


def assert_clean(text: str) -> None:
    """No line holds a raw control, bidi or separator character."""
    for line in text.split("\n"):
        found = RAW.search(line)
        assert found is None, f"raw U+{ord(found.group()):04X} in {line!r}"


def hostile_list(world: World, *, version: int, revoked: bool = False) -> ImageList:
    """Images 1-3 with hostile titles and OS name; image 3's bytes are nowhere to be found."""
    base = world.make_list(version=version, images=(1, 2, 3) if not revoked else (1, 3))
    titles = {image_uuid(1): TITLE_1, image_uuid(2): TITLE_2, image_uuid(3): TITLE_3}
    entries = tuple(
        dataclasses.replace(
            e,
            title=titles[e.id],
            osname=OS_NAME,
            url=world.sim.url("/missing.raw") if e.id == image_uuid(3) else e.url,
        )
        for e in base.entries
    )
    tombstones = (
        (
            Tombstone(
                id=image_id(image_uuid(2)), when=world.now - timedelta(minutes=1), reason=REASON
            ),
        )
        if revoked
        else ()
    )
    return dataclasses.replace(base, title=LIST_TITLE, entries=entries, tombstones=tombstones)


def evil_signer(world: World) -> Identity:
    return world.ca.issue(EVIL_DN)


def run(world: World, capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run a command (a site command on the world's site home), check what it printed."""
    code = main([str(a) for a in args]) if args[0] == "verify" else world.vmic(*args)
    out = capsys.readouterr()
    assert_clean(out.out)
    assert_clean(out.err)
    return code, out.out, out.err


def test_list_text_reaches_the_terminal_escaped_from_subscribe_to_history(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(hostile_list(world, version=1))

    code, out, _ = run(world, capsys, "subscribe", world.sim.url(LIST_PATH), "--name", "base",
                       "--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN)  # fmt: skip
    assert code == ExitCode.OK
    assert f"({LIST_TITLE_SHOWN})" in out
    for title in (TITLE_1_SHOWN, TITLE_2_SHOWN, TITLE_3_SHOWN):
        assert f"new          {title}\n" in out

    code, out, _ = run(world, capsys, "images")
    assert code == ExitCode.OK
    assert out.count("\n") == 3  # one line per image, however many line feeds a title holds
    assert f"  {TITLE_2_SHOWN}\n" in out

    code, out, _ = run(world, capsys, "image", "show", image_uuid(1))
    assert code == ExitCode.OK
    assert out.startswith(f"{TITLE_1_SHOWN}  ({image_uuid(1)})\n")
    assert f"  OS name:      {OS_NAME_SHOWN}\n" in out

    code, out, _ = run(world, capsys, "approve", image_uuid(1), image_uuid(2), image_uuid(3))
    assert code == ExitCode.OK
    assert f"approved     {TITLE_3_SHOWN}\n" in out

    code, out, err = run(world, capsys, "sync", "-v")
    assert code == ExitCode.PROBLEMS  # image 3 cannot be downloaded; its title is in the message
    assert f"available    {TITLE_1_SHOWN}\n" in out
    assert f"image {image_uuid(3)} ({TITLE_3_SHOWN}) not downloaded" in err
    assert err.startswith("vmic sync: base: download: ")

    world.publish(hostile_list(world, version=2, revoked=True))
    code, out, _ = run(world, capsys, "sync", "-v", "--no-download")
    assert code == ExitCode.OK
    assert f"revoked      {TITLE_2_SHOWN} ({REASON_SHOWN})\n" in out

    code, out, _ = run(world, capsys, "image", "show", image_uuid(2))
    assert f"  state:        revoked ({REASON_SHOWN})\n" in out

    before = world.snapshot()
    world.publish(world.make_list(version=3), signer=evil_signer(world))
    code, _, err = run(world, capsys, "sync")
    assert code == ExitCode.PROBLEMS
    assert f"signed by {EVIL_DN_SHOWN} (issuer {CA_DN})" in err
    assert [line[:17] for line in err.splitlines()] == ["vmic sync: base: "] * 2  # and image 3
    assert world.snapshot() == before

    code, out, _ = run(world, capsys, "history")
    assert code == ExitCode.OK
    assert f"    UntrustedSignerError: signed by {EVIL_DN_SHOWN} (issuer" in out

    code, out, _ = run(world, capsys, "subscriptions")
    assert code == ExitCode.OK
    assert "  last error:   " in out
    assert EVIL_DN_SHOWN in out


def test_a_refused_subscription_shows_the_signers_dn_escaped(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(hostile_list(world, version=1), signer=evil_signer(world))
    before = world.snapshot()

    code, out, err = run(world, capsys, "subscribe", world.sim.url(LIST_PATH),
                         "--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN)  # fmt: skip

    assert code == ExitCode.WRONG_ENDORSER
    assert out == ""
    assert err.startswith(f"vmic: wrong endorser: signed by {EVIL_DN_SHOWN} (issuer {CA_DN})")
    assert err.count("\n") == 2  # the message and the hint, one line each
    assert world.snapshot() == before
    with world.store() as store:
        assert store.subscriptions() == []


def test_verify_shows_titles_reasons_and_dns_escaped(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = tmp_path / "hostile.atom"
    signed.write_bytes(sign(hostile_list(world, version=2, revoked=True), world.endorser))
    evil = tmp_path / "evil.atom"
    evil.write_bytes(sign(hostile_list(world, version=2), evil_signer(world)))
    pins = ("--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN)

    code, out, _ = run(world, capsys, "verify", signed, "--trust", world.trust, *pins)
    assert code == ExitCode.OK
    assert f"  title:    {LIST_TITLE_SHOWN}\n" in out
    assert f"  {TITLE_3_SHOWN}\n" in out
    assert f"  {REASON_SHOWN}\n" in out

    code, out, err = run(world, capsys, "verify", evil, "--trust", world.trust, *pins)
    assert code == ExitCode.WRONG_ENDORSER
    assert f"signed by {EVIL_DN_SHOWN}" in err

    code, out, _ = run(world, capsys, "verify", evil, "--trust", world.trust, *pins, "--json")
    assert code == ExitCode.WRONG_ENDORSER
    assert EVIL_DN in json.loads(out)["message"]

    code, out, _ = run(world, capsys, "verify", signed, "--trust", world.trust, "--json")
    assert code == ExitCode.OK
    data = json.loads(out)
    assert data["title"] == LIST_TITLE
    assert [e["title"] for e in data["entries"]] == [TITLE_1, TITLE_3]
    assert data["tombstones"][0]["reason"] == REASON


def test_json_output_keeps_hostile_text_exactly_and_writes_no_raw_control(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(hostile_list(world, version=1))
    assert world.subscribe() == 0
    assert world.vmic("approve", image_uuid(1), image_uuid(3)) == 0
    world.publish(hostile_list(world, version=2, revoked=True))
    capsys.readouterr()

    code, out, _ = run(world, capsys, "sync", "--json")
    assert code == ExitCode.PROBLEMS
    summary = json.loads(out)
    assert any(TITLE_3 in p["message"] for p in summary["problems"])

    code, out, _ = run(world, capsys, "images", "--json")
    images = {i["id"]: i for i in json.loads(out)}
    assert images[image_uuid(1)]["title"] == TITLE_1
    assert images[image_uuid(2)]["reason"] == REASON
    assert images[image_uuid(3)]["entry"]["osname"] == OS_NAME
    assert "\\u009b2J" in out
    assert "\\u202e" in out
    assert "\\u2028" in out
    assert "\\u007f" in out

    code, out, _ = run(world, capsys, "image", "show", image_uuid(2), "--json")
    assert json.loads(out)["title"] == TITLE_2

    world.publish(world.make_list(version=3), signer=evil_signer(world))
    assert world.vmic("sync") == ExitCode.PROBLEMS
    capsys.readouterr()
    code, out, _ = run(world, capsys, "history", "--json")
    assert EVIL_DN in json.loads(out)[-1]["reason"]
    code, out, _ = run(world, capsys, "subscriptions", "--json")
    assert EVIL_DN in json.loads(out)[0]["last_error"]


def _export_carrying(peer: Simulator, world: World, site: Identity, copy: bytes) -> None:
    """A peer site's signed export offering image 1 from a copy of the endorser's list."""
    endorser_list = hostile_list(world, version=1)
    entry = dataclasses.replace(
        endorser_list.entries[0],
        url=peer.url("/images/one"),
        source_list=endorser_list.id,
        source_version=1,
        source_url=peer.url("/lists/copy.atom"),
    )
    export = dataclasses.replace(
        world.make_list(version=1, images=()),
        id=list_id("99999999-8888-4777-8666-555555555555"),
        self_url=peer.url("/export.atom"),
        endorser_dn=site.subject,
        issuer_dn=site.issuer,
        entries=(entry,),
    )
    peer.publish("/export.atom", sign(export, site))
    peer.publish("/lists/copy.atom", copy)


def test_peers_suggest_shows_a_carried_lists_title_escaped(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    site = world.ca.issue("/DC=org/DC=vmic-test/OU=Sites/CN=site-mallory")
    with Simulator() as peer:
        _export_carrying(peer, world, site, sign(hostile_list(world, version=1), world.endorser))
        code, out, _ = run(world, capsys, "peer", "add", peer.url("/export.atom"),
                           "--site-dn", str(site.subject), "--ca-dn", CA_DN)  # fmt: skip
        assert code == ExitCode.OK
        assert "following peer site-mallory" in out

        code, out, _ = run(world, capsys, "peers", "suggest")

    assert code == ExitCode.OK
    assert out.startswith(f"{LIST_TITLE_SHOWN}  (list ")
    assert out.count("\n") == 4  # title, endorser, peers, the command to subscribe


# -- the helpers themselves, on generated text ------------------------------------------

HOSTILE_CHARS = st.sampled_from(
    [*UNSAFE, "\\", "é", "ü", "\u200f", "\ufeff", "\U0001f600", "x", "\u00a0"]
)
TEXT = st.text(st.one_of(st.characters(), HOSTILE_CHARS))
_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4})")


def _unsafe(char: str) -> bool:
    code = ord(char)
    return (
        unicodedata.category(char) == "Cc"
        or 0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
        or code in {0x2028, 0x2029}
    )


@pytest.mark.fuzz
@given(TEXT)
def test_shown_leaves_no_control_character_and_loses_nothing(text: str) -> None:
    out = shown(text)

    assert not any(_unsafe(c) for c in out)
    if "\\" not in text:  # without backslashes of its own, the escapes read back exactly
        assert _ESCAPE.sub(lambda m: chr(int(m.group(1)[1:], 16)), out) == text
    if not any(_unsafe(c) for c in text):
        assert out == text  # accents, other scripts and emoji are shown as they are


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.fuzz
@given(JSON)
def test_print_json_writes_valid_json_without_raw_controls(data: Any) -> None:
    with contextlib.redirect_stdout(io.StringIO()) as stream:
        print_json(data)
    out = stream.getvalue()

    assert json.loads(out) == data
    assert not any(_unsafe(c) for c in out if c != "\n")


def test_print_json_keeps_readable_non_ascii() -> None:
    with contextlib.redirect_stdout(io.StringIO()) as stream:
        print_json({"name": "Müller \u65e5\u672c", "evil": "\x1b\x9b\u202e\u2028\x7f"})

    assert stream.getvalue() == (
        '{\n  "name": "Müller \u65e5\u672c",\n  "evil": "\\u001b\\u009b\\u202e\\u2028\\u007f"\n}\n'
    )


def test_shown_escapes_esc_backspace_and_del_visibly() -> None:
    assert shown("a\x1b[2Jb\x08\x7f\n") == r"a\x1b[2Jb\x08\x7f\x0a"
    assert shown("/CN=Jane \\/ Doe") == "/CN=Jane \\/ Doe"  # slash-form escapes stay as they are
