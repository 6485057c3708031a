"""`vmic site check`, and unusable trust files in `vmic sync` and `/metrics` (THREATS 37).

One odd file in a large trust directory (kept by package updates) must not
take a site down: it is named, once, wherever an admin looks — the sync's
output, the metrics, and the check an admin runs after updating the
directory — and everything else keeps working.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from federation.cli.common import ExitCode
from tests.support import der, hostile
from tests.support.ca import TestCA, pem, write_identity
from tests.support.serving import ServeThread
from tests.support.site import World


def broken_ca_file(world: World) -> bytes:
    """A CA certificate (of a CA the site does not use) with one extension twice."""
    other = TestCA("/DC=org/DC=vmic-test/CN=Broken Packaged CA", now=world.now)
    tbs = der.tbs_of(other.cert.public_bytes(serialization.Encoding.DER))
    hostile.duplicate_basic_constraints(tbs)
    return der.resign(tbs, other.key)


def test_a_healthy_site_checks_ok(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert world.vmic("site", "check") == 0

    out = capsys.readouterr().out
    assert "1 root and 0 intermediate CA certificate(s), 1 CRL(s)" in out
    assert out.rstrip().endswith("site check: ok")


def test_site_check_names_unusable_files_and_cas_without_a_crl(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    (world.trust / "0badca00.0").write_bytes(broken_ca_file(world))
    lonely = TestCA("/DC=org/DC=vmic-test/CN=CA Without CRL", now=world.now)
    (world.trust / "10e1e100.0").write_bytes(pem(lonely.cert))
    capsys.readouterr()

    assert world.vmic("site", "check", "--json") == ExitCode.PROBLEMS

    report = json.loads(capsys.readouterr().out)
    problems = [f["message"] for f in report["findings"] if f["problem"]]
    assert report["ok"] is False
    assert any(p.startswith("0badca00.0: not a usable certificate (Duplicate") for p in problems)
    assert any("CN=CA Without CRL: no CRL; no list signed under it" in p for p in problems)
    assert len(problems) == 2  # the good CA and its CRL are not problems


def test_an_identity_about_to_expire_is_a_problem(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    identity = world.ca.issue(
        "/DC=org/DC=vmic-test/OU=Sites/CN=site-soon", not_after=world.now + timedelta(days=3)
    )
    cert, key, _ = write_identity(tmp_path_factory.mktemp("id"), identity)
    base = "http://site.test"
    assert world.vmic("site", "identity", "--cert", cert, "--key", key, "--base-url", base) == 0
    capsys.readouterr()

    assert world.vmic("site", "check") == ExitCode.PROBLEMS
    assert "renew it" in capsys.readouterr().out


def test_sync_and_metrics_name_an_unusable_trust_file_and_go_on(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1)
    assert world.subscribe(auto=True) == 0
    (world.trust / "0badca00.0").write_bytes(broken_ca_file(world))
    capsys.readouterr()

    assert world.vmic("sync") == ExitCode.PROBLEMS

    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "0badca00.0" in line] == [
        line for line in err if line.startswith("vmic sync: trust: ")
    ]
    assert len([line for line in err if "0badca00.0" in line]) == 1  # once, by name
    assert set(world.states().values()) == {"available"}
    with ServeThread(world.home) as server:
        metrics = server.get("/metrics").text
    assert "vmic_trust_unusable_files 1" in metrics
    assert 'vmic_trust_unusable_file{file="0badca00.0"} 1' in metrics

    (world.trust / "0badca00.0").unlink()  # the admin removes it; the next sync is clean
    assert world.vmic("sync") == 0
    with ServeThread(world.home) as server:
        assert "vmic_trust_unusable_files 0" in server.get("/metrics").text
