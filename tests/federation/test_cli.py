"""The `vmic` command line, end to end and in-process, with real files and signatures."""

from __future__ import annotations

import json
import os
import pwd
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from federation.cli import main
from federation.cli.common import ExitCode, utcnow
from feeds.manifest import Manifest
from tests.support.glance import qcow2_image

CA_DN = "/DC=org/DC=vmic-cli/CN=CLI Test CA"
JANE = "/DC=org/DC=vmic-cli/OU=Users/CN=Jane Endorser"
JOE = "/DC=org/DC=vmic-cli/OU=Users/CN=Joe Endorser"
POLICY_OVERRIDE = "test bytes, not a bootable image"


@dataclass
class Endorser:
    root: Path
    ca: Path
    jane: Path
    joe: Path
    manifest: Path
    signed: Path

    def pin(self, subject: str = JANE) -> list[str]:
        return ["--endorser-dn", subject, "--ca-dn", CA_DN]


def run(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def endorser(tmp_path: Path) -> Endorser:
    return make_endorser(tmp_path)


def make_endorser(tmp_path: Path) -> Endorser:
    """A CA, two endorsers (Jane, Joe), a manifest with two images, signed once by Jane."""
    e = Endorser(
        root=tmp_path,
        ca=tmp_path / "ca",
        jane=tmp_path / "jane",
        joe=tmp_path / "joe",
        manifest=tmp_path / "list.toml",
        signed=tmp_path / "list.atom",
    )
    assert run("keys", "ca", "--subject", CA_DN, "--out", e.ca, "--key-type", "ec") == 0
    assert (
        run(
            "keys",
            "issue",
            "--ca",
            e.ca,
            "--subject",
            JANE,
            "--out",
            e.jane,
            "--key-type",
            "ec",
            "--email",
            "jane@example.org",
        )
        == 0
    )
    assert (
        run("keys", "issue", "--ca", e.ca, "--subject", JOE, "--out", e.joe, "--key-type", "ec")
        == 0
    )
    assert (
        run(
            "endorse",
            "init",
            e.manifest,
            "--title",
            "CLI list",
            "--self-url",
            "https://example.org/list.atom",
            "--author",
            "Jane",
            "--vo",
            "dteam",
        )
        == 0
    )
    for name in ("one.img", "two.qcow2"):
        image = tmp_path / name
        data = name.encode() * 500
        image.write_bytes(qcow2_image(data) if name.endswith("qcow2") else data)
        assert (
            run(
                "endorse",
                "add",
                e.manifest,
                image,
                "--url",
                f"https://example.org/{name}",
                "--arch",
                "x86_64",
                "--policy-override",
                POLICY_OVERRIDE,
            )
            == 0
        )
    assert (
        run(
            "endorse",
            "sign",
            e.manifest,
            "--cert",
            e.jane / "cert.pem",
            "--key",
            e.jane / "key.pem",
            "--trust",
            e.ca,
            "--out",
            e.signed,
        )
        == 0
    )
    return e


def test_verify_accepts_a_list_signed_by_the_pinned_endorser(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert run("verify", endorser.signed, "--trust", endorser.ca, *endorser.pin()) == 0
    out = capsys.readouterr().out
    assert "is trusted" in out
    assert JANE in out
    assert "two.qcow2" in out


def test_verify_json_lists_entries_and_signer(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert run("verify", endorser.signed, "--trust", endorser.ca, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert data["version"] == 1
    assert data["endorser"]["subject"] == JANE
    assert [e["format"] for e in data["entries"]] == ["raw", "qcow2"]
    assert all(len(e["sha512"]) == 128 for e in data["entries"])


def test_every_signing_issues_the_next_version(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    for expected in (2, 3):
        assert (
            run(
                "endorse",
                "sign",
                endorser.manifest,
                "--cert",
                endorser.jane / "cert.pem",
                "--key",
                endorser.jane / "key.pem",
                "--out",
                endorser.signed,
            )
            == 0
        )
        capsys.readouterr()
        assert run("verify", endorser.signed, "--trust", endorser.ca, "--json") == 0
        assert json.loads(capsys.readouterr().out)["version"] == expected


def test_verify_names_a_tampered_list_as_a_signature_failure(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = endorser.root / "tampered.atom"
    tampered.write_bytes(endorser.signed.read_bytes().replace(b"one.img", b"0ne.img", 1))
    capsys.readouterr()
    assert run("verify", tampered, "--trust", endorser.ca) == ExitCode.SIGNATURE
    err = capsys.readouterr().err
    assert err.startswith("vmic: signature: ")
    assert "hint:" in err


def test_verify_refuses_another_endorsers_pin(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run("verify", endorser.signed, "--trust", endorser.ca, *endorser.pin(JOE))
    assert code == ExitCode.WRONG_ENDORSER
    assert "wrong endorser" in capsys.readouterr().err


def test_verify_refuses_a_revoked_signer_and_signing_with_it_is_refused(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("keys", "revoke", "--ca", endorser.ca, endorser.jane / "cert.pem") == 0
    assert run("verify", endorser.signed, "--trust", endorser.ca) == ExitCode.REVOKED
    manifest_before = endorser.manifest.read_bytes()
    out = endorser.root / "new.atom"
    code = run(
        "endorse",
        "sign",
        endorser.manifest,
        "--cert",
        endorser.jane / "cert.pem",
        "--key",
        endorser.jane / "key.pem",
        "--trust",
        endorser.ca,
        "--out",
        out,
    )
    assert code == ExitCode.REVOKED
    assert endorser.manifest.read_bytes() == manifest_before
    assert not out.exists()
    assert "revoked" in capsys.readouterr().err


def test_verify_refuses_an_expired_list(endorser: Endorser) -> None:
    later = (utcnow() + timedelta(days=29)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code = run(
        "verify", endorser.signed, "--trust", endorser.ca, "--at", later, "--crl", "if-present"
    )
    assert code == ExitCode.EXPIRED


def test_verify_refuses_a_list_under_an_unknown_ca(endorser: Endorser, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    assert (
        run("keys", "ca", "--subject", "/DC=org/CN=Other CA", "--out", other, "--key-type", "ec")
        == 0
    )
    assert run("verify", endorser.signed, "--trust", other) == ExitCode.UNTRUSTED_CHAIN


def test_verify_refuses_another_list_id(endorser: Endorser) -> None:
    code = run(
        "verify",
        endorser.signed,
        "--trust",
        endorser.ca,
        "--list-id",
        "00000000-0000-4000-8000-000000000000",
    )
    assert code == ExitCode.WRONG_LIST


def test_verify_refuses_a_malformed_document(endorser: Endorser) -> None:
    broken = endorser.root / "broken.atom"
    broken.write_bytes(endorser.signed.read_bytes()[:-20])
    assert run("verify", broken, "--trust", endorser.ca) == ExitCode.MALFORMED


def test_verify_json_reports_the_reason_of_a_rejection(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = run("verify", endorser.signed, "--trust", endorser.ca, "--json", *endorser.pin(JOE))
    assert code == ExitCode.WRONG_ENDORSER
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "ok": False,
        "error": "wrong endorser",
        "exit_code": int(ExitCode.WRONG_ENDORSER),
        "message": data["message"],
        "hint": data["hint"],
    }
    assert JANE in data["message"]


def test_verify_reports_configuration_errors(endorser: Endorser, tmp_path: Path) -> None:
    assert run("verify", endorser.signed, "--trust", tmp_path / "missing") == ExitCode.CONFIG
    unpaired = ["--endorser-dn", JANE]
    assert run("verify", endorser.signed, "--trust", endorser.ca, *unpaired) == ExitCode.CONFIG
    assert run("verify", endorser.signed) == ExitCode.USAGE


def test_endorse_init_without_user_takes_the_account_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cron and containers often leave $USER and $LOGNAME unset."""
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.delenv("LOGNAME", raising=False)
    manifest = tmp_path / "list.toml"

    code = run("endorse", "init", manifest, "--title", "T", "--self-url", "https://e.org/l.atom")

    assert code == ExitCode.OK
    account = pwd.getpwuid(os.getuid()).pw_name
    assert Manifest.load(manifest).info.author == account
    assert f"author: {account} (your account name" in capsys.readouterr().out


def test_endorse_init_refuses_an_empty_author_and_writes_nothing(tmp_path: Path) -> None:
    manifest = tmp_path / "list.toml"
    args = ("--title", "T", "--self-url", "https://e.org/l.atom", "--author", " ")
    assert run("endorse", "init", manifest, *args) == ExitCode.CONFIG
    assert not manifest.exists()


def test_endorse_add_refuses_a_bad_url_and_leaves_the_manifest_alone(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    before = endorser.manifest.read_bytes()
    image = endorser.root / "three.img"
    image.write_bytes(b"three" * 100)
    for url in ("file:///etc/passwd", "https://user:secret@example.org/x", "ftp://example.org/x"):
        code = run("endorse", "add", endorser.manifest, image, "--url", url)
        assert code == ExitCode.CONFIG
    assert endorser.manifest.read_bytes() == before
    assert "--url" in capsys.readouterr().err


def test_endorse_revoke_publishes_a_tombstone(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert run("endorse", "show", endorser.manifest, "--json") == 0
    first = json.loads(capsys.readouterr().out)["images"][0]["id"]
    assert run("endorse", "revoke", endorser.manifest, first, "--reason", "broken sshd") == 0
    assert (
        run(
            "endorse",
            "sign",
            endorser.manifest,
            "--cert",
            endorser.jane / "cert.pem",
            "--key",
            endorser.jane / "key.pem",
            "--out",
            endorser.signed,
        )
        == 0
    )
    capsys.readouterr()
    assert run("verify", endorser.signed, "--trust", endorser.ca, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in data["tombstones"]] == [first]
    assert data["tombstones"][0]["reason"] == "broken sshd"
    assert first not in [e["id"] for e in data["entries"]]


def test_endorse_render_template_then_unsigned_list_is_refused(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    unsigned = endorser.root / "unsigned.atom"
    manifest = endorser.manifest.read_bytes()
    assert run("endorse", "render", endorser.manifest, "--out", unsigned) == 0
    assert "(not issued; `vmic endorse sign` issues it)" in capsys.readouterr().out
    assert endorser.manifest.read_bytes() == manifest  # a preview burns no version
    assert b"<ds:Signature" not in unsigned.read_bytes()
    assert run("verify", unsigned, "--trust", endorser.ca) == ExitCode.SIGNATURE
    assert "not signed" in capsys.readouterr().err


def test_keys_show_prints_both_dn_forms(
    endorser: Endorser, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert run("keys", "show", endorser.jane / "cert.pem", "--json") == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["subject"] == JANE
    assert shown["subject_rfc4514"] == "CN=Jane Endorser,OU=Users,DC=vmic-cli,DC=org"
    assert shown["issuer"] == CA_DN
    assert shown["email"] == ["jane@example.org"]
    assert "digital_signature" in shown["key_usage"]
    assert (endorser.jane / "key.pem").stat().st_mode & 0o777 == 0o600


def test_keys_crl_refresh_keeps_the_revocation(endorser: Endorser) -> None:
    assert run("keys", "revoke", "--ca", endorser.ca, endorser.joe / "cert.pem") == 0
    assert run("keys", "crl", "--ca", endorser.ca, "--days", "10") == 0
    joe_list = endorser.root / "joe.atom"
    assert (
        run(
            "endorse",
            "sign",
            endorser.manifest,
            "--cert",
            endorser.joe / "cert.pem",
            "--key",
            endorser.joe / "key.pem",
            "--out",
            joe_list,
        )
        == 0
    )
    assert run("verify", joe_list, "--trust", endorser.ca) == ExitCode.REVOKED
    assert run("verify", endorser.signed, "--trust", endorser.ca) == 0


def test_endorse_init_records_the_lists_vo_and_the_authors_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "vo.toml"
    base = ["endorse", "init", manifest, "--title", "VO list", "--self-url"]
    base += ["https://example.org/vo.atom", "--author", "Jane"]
    assert run(*base, "--vo", "vo.example.org", "--author-uri", "javascript:x") == ExitCode.CONFIG
    assert not manifest.exists()
    assert run(*base, "--vo", "vo.example.org", "--author-uri", "https://example.org/jane") == 0
    capsys.readouterr()

    assert run("endorse", "show", manifest, "--json") == 0

    shown = json.loads(capsys.readouterr().out)
    assert (shown["vo"], shown["author_uri"]) == ("vo.example.org", "https://example.org/jane")
