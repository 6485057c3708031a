"""What a new site admin reads when a URL is wrong: one clear line, each URL named once.

Each case was a confusing message once: a hint about TLS certificates for a
plain-HTTP server, "fetch: fetch:" for a misspelt scheme, download errors
naming the URL twice, `vmic verify` turning a URL into a file name. Each
also checks that the site's trusted state did not change.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from federation.cli import main
from federation.cli.common import ExitCode
from tests.support import der
from tests.support.ca import TestCA
from tests.support.site import CA_DN, ENDORSER_DN, LIST_PATH, World, image_uuid


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def hang_up_port() -> Iterator[int]:
    """A loopback server that reads a request and closes without an answer (a TLS-only
    server, to a plain-HTTP client, behaves alike)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(4096)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        server.close()


def subscribe(world: World, url: str) -> int:
    config = world.home.config.read_text()
    world.home.config.write_text(config.replace("\nretries = 2\n", "\nretries = 0\n"))
    return world.vmic(
        "subscribe", url, "--name", "base", "--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN
    )


def test_a_closed_port_is_named_without_a_word_about_tls(
    world: World, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    before = world.snapshot()
    url = f"http://127.0.0.1:{closed_port}/lists/base.atom"

    assert subscribe(world, url) == ExitCode.FETCH

    err = capsys.readouterr().err
    assert f"cannot connect to 127.0.0.1:{closed_port} (Connection refused)" in err
    assert "ssl" not in err.lower()
    assert "tls" not in err.lower()
    assert "certificate" not in err
    assert err.count(url) == 1
    assert world.snapshot() == before


def test_a_server_that_hangs_up_on_plain_http_suggests_https(
    world: World, hang_up_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    before = world.snapshot()

    assert subscribe(world, f"http://127.0.0.1:{hang_up_port}/l.atom") == ExitCode.FETCH

    err = capsys.readouterr().err
    assert "closed the connection without an answer" in err
    assert "write https://" in err
    assert "certificate" not in err
    assert world.snapshot() == before


@pytest.mark.parametrize("url", ["htp://images.example.org/l.atom", "ftp://example.org/l"])
def test_a_misspelt_scheme_says_so_once(
    world: World, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = world.snapshot()

    assert subscribe(world, url) == ExitCode.FETCH

    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"vmic: fetch: {url!r} must be an absolute http(s) URL"
    assert "http:// and https://" in err
    assert world.snapshot() == before


def test_a_download_error_names_the_url_once(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=1, images=(1,))
    assert subscribe(world, world.sim.url(LIST_PATH)) == 0
    assert world.vmic("approve", image_uuid(1)) == 0
    world.sim.remove("/images/img-1.raw")
    capsys.readouterr()
    before = world.snapshot()

    assert world.vmic("sync") == ExitCode.PROBLEMS

    err = capsys.readouterr().err
    url = world.sim.url("/images/img-1.raw")
    (line,) = [line for line in err.splitlines() if url in line]
    assert line.count(url) == 1
    assert "HTTP 404" in line
    assert world.snapshot() == before


def test_verify_fetches_a_url_as_a_site_would(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.publish(version=3)
    url = world.sim.url(LIST_PATH)

    assert verify(world, url, "--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN) == ExitCode.OK

    assert "version 3 is trusted" in capsys.readouterr().out
    assert world.sim.requests_for(LIST_PATH)


def test_verify_of_an_unreachable_url_is_a_fetch_error(
    world: World, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"https://127.0.0.1:{closed_port}/l.atom"

    assert verify(world, url) == ExitCode.FETCH

    err = capsys.readouterr().err
    assert err.count(url) == 1
    assert "No such file" not in err


def verify(world: World, *args: str) -> int:
    """`vmic verify` takes no site home: run it as an endorser or a site admin would."""
    return main(["verify", *args, "--trust", str(world.trust)])


def igtf_directory(world: World) -> None:
    """What an IGTF distribution and fetch-crl leave besides plain CAs: a CA as NAME.pem
    reached through its hash link, .info/.crl_url/.signing_policy/.namespaces files, a
    packaged CA the library warns about (a negative serial), a rule Python warns about."""
    other = TestCA("/DC=org/DC=igtf-test/CN=Negative Serial CA", now=world.now)
    tbs = der.tbs_of(other.cert.public_bytes(serialization.Encoding.DER))
    der.at(tbs, (1,)).content = b"\xff"  # serialNumber -1
    negative = ssl.DER_cert_to_PEM_cert(der.resign(tbs, other.key))  # (no library would)
    (world.trust / "NegativeSerial.pem").write_text(negative)
    (world.trust / "5e7a1b2c.0").symlink_to("NegativeSerial.pem")
    (world.trust / "00000000.info").write_text("alias = vmic-test\nversion = 1.0\n")
    (world.trust / "00000000.crl_url").write_text("http://crl.example.org/vmic-test.crl\n")
    (world.trust / "00000000.namespaces").write_text(
        f'TO Issuer "{CA_DN}" PERMIT Subject "/DC=org/DC=vmic-test/OU=Users/[[C]N=.*"\n'
    )
    (world.trust / "00000000.signing_policy").write_text(
        f"access_id_CA X509 '{CA_DN}'\npos_rights globus CA:sign\n"
        "cond_subjects globus '\"/DC=org/DC=vmic-test/*\"'\n"
    )


def test_verify_against_an_igtf_directory_prints_no_library_warning(
    world: World, tmp_path: Path
) -> None:
    """Python shows every warning here (PYTHONWARNINGS=always): none reaches the admin."""
    igtf_directory(world)
    list_file = tmp_path / "base.atom"
    list_file.write_bytes(world.publish(version=2))
    command = [sys.executable, "-m", "federation", "verify", str(list_file)]
    command += ["--trust", str(world.trust), "--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN]

    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "always"},
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "version 2 is trusted" in done.stdout
