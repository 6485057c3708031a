"""HEPiX lists on the command line: `endorse sign --format hepix`, `verify` on S/MIME."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from federation.cli.common import ExitCode
from tests.federation.test_cli import JANE, Endorser, make_endorser, run
from tests.support import hepix
from tests.support.hepix import INTEROP


@pytest.fixture
def endorser(tmp_path: Path) -> Endorser:
    return make_endorser(tmp_path)


def sign(e: Endorser, *options: object) -> int:
    return run(
        "endorse",
        "sign",
        e.manifest,
        "--cert",
        e.jane / "cert.pem",
        "--key",
        e.jane / "key.pem",
        "--trust",
        e.ca,
        *options,
    )


def test_endorse_sign_writes_a_hepix_list_that_vmic_and_openssl_accept(
    endorser: Endorser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "list.smime"
    assert sign(endorser, "--format", "hepix", "--out", out) == 0
    capsys.readouterr()

    assert run("verify", out, "--trust", endorser.ca, *endorser.pin(), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "hepix"
    assert data["version"] == 2
    assert [e["format"] for e in data["entries"]] == ["raw", "qcow2"]

    done = hepix.openssl_verify(out.read_bytes(), (endorser.ca / "ca.pem").read_bytes(), tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    document = json.loads(done.stdout)
    x509 = document["hv:imagelist"]["hv:endorser"]["hv:x509"]
    assert x509["hv:dn"] == JANE
    assert document["hv:imagelist"]["hv:version"] == "2"


def test_hepix_out_writes_the_same_version_beside_the_atom_list(
    endorser: Endorser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    atom, smime = tmp_path / "list.atom", tmp_path / "list.smime"
    assert sign(endorser, "--out", atom, "--hepix-out", smime) == 0
    capsys.readouterr()

    versions = []
    for path in (atom, smime):
        assert run("verify", path, "--trust", endorser.ca, *endorser.pin(), "--json") == 0
        data = json.loads(capsys.readouterr().out)
        versions.append((data["format"], data["version"], data["list_id"]))
    assert versions[0][1:] == versions[1][1:]
    assert [v[0] for v in versions] == ["atom", "hepix"]


def test_hepix_out_with_format_hepix_is_refused_and_burns_nothing(
    endorser: Endorser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest_before = endorser.manifest.read_bytes()

    code = sign(
        endorser, "--format", "hepix", "--out", tmp_path / "a", "--hepix-out", tmp_path / "b"
    )

    assert code == ExitCode.CONFIG
    assert "--hepix-out goes with --format atom" in capsys.readouterr().err
    assert endorser.manifest.read_bytes() == manifest_before
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_verify_with_the_wrong_format_says_so(
    endorser: Endorser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "list.smime"
    assert sign(endorser, "--format", "hepix", "--out", out) == 0
    capsys.readouterr()

    code = run("verify", out, "--trust", endorser.ca, "--format", "atom")

    assert code == ExitCode.MALFORMED


@pytest.fixture
def sample_trust(tmp_path: Path) -> Path:
    folder = tmp_path / "sample-ca"
    folder.mkdir()
    shutil.copy(INTEROP / "cloudkeeper_test_ca_9da13359.0", folder / "9da13359.0")
    return folder


def test_verify_refuses_the_cloudkeeper_sample_for_its_dn_mismatch(
    sample_trust: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        "verify",
        INTEROP / "cloudkeeper_imagelist01.signed.smime",
        "--trust",
        sample_trust,
        "--crl",
        "if-present",
        "--at",
        "2026-01-01T00:00:00Z",
    )

    assert code == ExitCode.WRONG_ENDORSER
    err = capsys.readouterr().err
    assert "names endorser /DC=XXX/DC=YYY/C=ZZZ/O=Hosts/O=AA.net/CN=some.unknown.source" in err


def test_verify_refuses_the_invalid_cloudkeeper_sample_as_altered(
    sample_trust: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        "verify",
        INTEROP / "cloudkeeper_imagelist_invalid.signed.smime",
        "--trust",
        sample_trust,
        "--crl",
        "if-present",
        "--at",
        "2026-01-01T00:00:00Z",
    )

    assert code == ExitCode.SIGNATURE
    assert "differs from what was signed" in capsys.readouterr().err
