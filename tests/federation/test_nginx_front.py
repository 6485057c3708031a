"""nginx in front of `vmic serve`, configured exactly as docs/serving.md says.

The test reads the nginx block and the ``config.toml`` lines from
docs/serving.md (each fenced block after its ``nginx-front`` marker),
replaces the example paths, ports and certificate with its own (each one
must occur in the block, so the page cannot drift from what runs here), and
runs a real nginx (one unprivileged process, its own prefix, configuration
and pid file, on a free 127.0.0.1 port, TLS with a self-signed certificate)
in front of a real `vmic serve` of a real site home (signed lists, images
synced from a loopback endorser, a signed export). It checks that image
bytes, a list, the export and the catalogue come through with the right
bytes, that nginx sends a list in force itself (``X-Accel-Redirect`` from
`vmic serve`), the newer version right after a sync, and never a list not in
force or a file that a crafted list id names, that nothing else in the site
home comes through, and that a second site follows the first through nginx
and syncs an image from it after the endorser went offline.

Outside `make test` the tests skip when nginx (``VMIC_NGINX``, else on PATH
or in /usr/sbin) is missing; with ``VMIC_REQUIRE_INTEROP=1`` (which `make
test` sets) they fail instead.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import tomlkit

from federation.cli import main
from site_agent import config as site_config
from site_agent.home import SiteHome
from site_agent.store import Store
from tests.site_agent.netkit import self_signed
from tests.support.ca import write_identity
from tests.support.lists import LIST_ID
from tests.support.serving import ServeThread, available_site, image_data, site_world
from tests.support.site import CA_DN, ENDORSER_DN, LIST_PATH, World, image_uuid

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"
SITE_DN = "/DC=org/DC=vmic-test/OU=Sites/CN=site-front"
TIMEOUT = 20.0
BIG = 3 * 1024 * 1024 + 17

MAIN_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{block}
}}
"""


def _missing(what: str) -> None:
    """Skip, or fail under `make test` (``VMIC_REQUIRE_INTEROP=1``)."""
    message = f"{what}; .ci/run installs it (nginx-light)"
    if os.environ.get("VMIC_REQUIRE_INTEROP") == "1":
        pytest.fail(message)
    pytest.skip(message)


def nginx_command() -> str:
    """``VMIC_NGINX``, else nginx on PATH or in /usr/sbin."""
    given = os.environ.get("VMIC_NGINX")
    for candidate in (given,) if given else (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    _missing(f"nginx is not installed{f' at {given}' if given else ''}")
    raise AssertionError("unreachable")


def doc_block(marker: str, language: str) -> str:
    """The fenced block that follows the ``nginx-front: <marker>`` comment in the page."""
    text = DOC.read_text()
    found = re.search(
        rf"<!-- nginx-front: {re.escape(marker)}[^>]*-->\n```{language}\n(.*?)\n```", text, re.S
    )
    assert found, f"docs/serving.md has no {language} block marked {marker!r}"
    return found.group(1)


def replaced(text: str, replacements: Mapping[str, str]) -> str:
    for example, ours in replacements.items():
        assert example in text, f"docs/serving.md no longer says {example!r}"
        text = text.replace(example, ours)
    return text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Front:
    """nginx as the page configures it, in front of a `vmic serve` of ``world``'s site."""

    world: World
    server: ServeThread
    port: int
    cert: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def get(self, path: str, **headers: str) -> Reply:
        return self._request("GET", path, headers)

    def head(self, path: str, **headers: str) -> Reply:
        return self._request("HEAD", path, headers)

    def _request(self, method: str, path: str, headers: Mapping[str, str]) -> Reply:
        context = ssl.create_default_context(cafile=str(self.cert))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=TIMEOUT, context=context)
        try:
            conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
            response = conn.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()


@pytest.fixture
def front(tmp_path: Path, now: datetime) -> Iterator[Front]:
    nginx = nginx_command()
    with site_world(tmp_path, now) as world:
        world.image_sizes[1] = BIG
        available_site(world)
        port = free_port()
        (tmp_path / "tls").mkdir()
        cert, key = self_signed(tmp_path / "tls")
        _give_identity(world, tmp_path, f"https://127.0.0.1:{port}")
        assert world.vmic("export") == 0
        with ServeThread(world.home) as server:
            block = replaced(
                doc_block("the server block", "nginx"),
                {
                    "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
                    "/etc/grid-security/vmic/hostcert.pem": str(cert),
                    "/etc/grid-security/vmic/hostkey.pem": str(key),
                    "/var/lib/vmic": str(world.home.root),
                    "127.0.0.1:8080": f"127.0.0.1:{server.port}",
                },
            )
            with _nginx(nginx, tmp_path / "nginx", block, port):
                yield Front(world=world, server=server, port=port, cert=cert)


def _give_identity(world: World, tmp_path: Path, base_url: str) -> None:
    """`vmic site identity`, then the page's config.toml lines (with nginx's address)."""
    cert, key, _ = write_identity(tmp_path / "identity", world.ca.issue(SITE_DN))
    assert world.vmic("site", "identity", "--cert", cert, "--key", key, "--base-url", base_url) == 0
    lines = replaced(
        doc_block("the config.toml lines", "toml"), {"https://vmic.site.example.org": base_url}
    )
    config = tomlkit.parse(world.home.config.read_text())
    for name, table in tomlkit.parse(lines).items():
        section = config[name]
        assert isinstance(section, dict)
        section.update(table)
    world.home.config.write_text(tomlkit.dumps(config))
    serve = site_config.load(world.home.config).serve
    assert serve.max_connections_per_address == serve.max_connections


@contextmanager
def _nginx(nginx: str, prefix: Path, block: str, port: int) -> Iterator[None]:
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(MAIN_CONF.format(prefix=prefix, block=block))
    log = prefix / "error.log"
    process = subprocess.Popen(  # a fixed argument list, no shell
        [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"nginx exited {process.returncode}: {log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()}"'


# -- what comes through ----------------------------------------------------------------------
def test_image_bytes_come_from_the_cache_through_nginx_alone(front: Front) -> None:
    data = image_data(front.world, 1)
    path = f"/images/sha512/{hashlib.sha512(data).hexdigest()}"
    served_before = front.server.state.counters.bytes_served
    whole = front.get(path)
    assert (whole.status, whole.body) == (200, data)
    assert whole.headers["Content-Type"] == "application/octet-stream"
    assert whole.headers["X-Content-Type-Options"] == "nosniff"
    part = front.get(path, Range="bytes=1048570-1048600")
    assert (part.status, part.body) == (206, data[1048570:1048601])
    assert front.server.state.counters.bytes_served == served_before  # not from vmic serve


def test_a_list_the_export_and_the_catalogue_come_through_with_their_bytes(front: Front) -> None:
    home = front.world.home
    stored = next((home.lists / LIST_ID).glob("*.atom")).read_bytes()
    listed = front.get(f"/lists/{LIST_ID}.atom")
    assert (listed.status, listed.body) == (200, stored)

    export = front.get("/export.atom")
    assert (export.status, export.body) == (200, (home.exports / "export.atom").read_bytes())
    assert export.headers["Content-Type"] == "application/atom+xml"
    assert f"https://127.0.0.1:{front.port}/images/sha512/".encode() in export.body
    assert front.get("/export.atom", If_None_Match=export.headers["ETag"]).status == 304

    page, direct = front.get("/"), front.server.get("/")
    assert page.status == 200
    assert _without_nonces(page.body) == _without_nonces(direct.body)
    assert b"Test image 1" in page.body
    assert "nonce-" in page.headers["Content-Security-Policy"]
    assert front.get("/healthz").body.startswith(b'{"ok": true')


def _without_nonces(page: bytes) -> bytes:
    return re.sub(rb'nonce="[^"]*"', b'nonce=""', page)


def test_a_newly_signed_export_is_served_at_once(front: Front) -> None:
    first = front.get("/export.atom").body
    assert front.world.vmic("export", "--force") == 0
    now = (front.world.home.exports / "export.atom").read_bytes()
    assert now != first
    assert front.get("/export.atom").body == now


# -- the lists in force, sent by nginx as vmic serve names them ---------------------------
def _stored(front: Front) -> Path:
    (path,) = (front.world.home.lists / LIST_ID).glob("*.atom")
    return path


def test_a_list_in_force_is_sent_by_nginx_with_its_original_bytes_and_type(front: Front) -> None:
    stored = _stored(front).read_bytes()
    served_before = front.server.state.counters.bytes_served
    listed = front.get(f"/lists/{LIST_ID}.atom")
    assert (listed.status, listed.body) == (200, stored)
    assert listed.headers["Content-Type"] == "application/atom+xml"  # vmic serve's, kept
    assert listed.headers["Cache-Control"] == "no-cache"  # vmic serve's, kept
    assert listed.headers["X-Content-Type-Options"] == "nosniff"
    assert listed.headers["Server"] == "nginx"
    assert "X-Accel-Redirect" not in listed.headers
    assert listed.headers["ETag"] != _etag(stored)  # nginx's own, from the file
    assert front.server.state.counters.bytes_served == served_before  # not from vmic serve

    for conditional in (
        {"If_None_Match": listed.headers["ETag"]},
        {"If_Modified_Since": listed.headers["Last-Modified"]},
    ):
        again = front.get(f"/lists/{LIST_ID}.atom", **conditional)
        assert (again.status, again.body) == (304, b""), conditional
    part = front.get(f"/lists/{LIST_ID}.atom", Range="bytes=5-24")
    assert (part.status, part.body) == (206, stored[5:25])
    head = front.head(f"/lists/{LIST_ID}.atom")
    assert (head.status, head.body) == (200, b"")
    assert head.headers["Content-Length"] == str(len(stored))


def test_a_newer_list_version_is_sent_right_after_the_sync_that_accepted_it(
    front: Front,
) -> None:
    first = front.get(f"/lists/{LIST_ID}.atom").body
    signed = front.world.publish(version=2, images=(1, 2, 3))
    assert front.world.vmic("sync") == 0
    listed = front.get(f"/lists/{LIST_ID}.atom")
    assert (listed.status, listed.body) == (200, signed)
    assert signed != first
    assert listed.headers["Content-Type"] == "application/atom+xml"


def test_a_list_not_in_force_is_404_even_with_a_file_in_lists(front: Front) -> None:
    other = "00000000-0000-4000-8000-0000000000ff"
    stray = front.world.home.lists / other / f"1-{'a' * 64}.atom"  # as a crash would leave it
    stray.parent.mkdir()
    stray.write_bytes(CANARY)
    for path in (f"/lists/{other}.atom", f"/lists/{LIST_ID}.smime"):
        reply = front.get(path)
        assert reply.status == 404, path
        assert CANARY not in reply.body
    assert front.get(f"/lists/{LIST_ID}.atom").status == 200


def test_a_crafted_list_id_reaches_no_other_file(front: Front) -> None:
    home = front.world.home
    stored = _stored(front)
    secrets = [CANARY, home.database.read_bytes()[:16], home.config.read_bytes()[:40]]
    (home.lists / "canary.atom").write_bytes(CANARY)
    for path in (
        "/lists/canary.atom",
        "/lists/../vmic.db",
        "/lists/..%2Fvmic.db",
        "/lists/%2e%2e%2fconfig.toml",
        "/lists/..%2F..%2Fvmic.db.atom",
        f"/lists/{LIST_ID}/../../vmic.db",
        f"/lists/{LIST_ID}.atom/../../config.toml",
        f"/lists/{LIST_ID}%2F..%2F..%2Fvmic.db",
        f"/lists/{LIST_ID}%00.atom",
        f"/lists/{LIST_ID.upper()}.atom",
        f"/lists/{LIST_ID}/{stored.name}",
        f"/lists/{LIST_ID}",
        "/lists/",
        f"/_vmic_lists/{LIST_ID}/{stored.name}",  # internal: only vmic serve's answers lead here
        "/_vmic_lists/canary.atom",
        "/_vmic_lists/../vmic.db",
        "/_vmic_lists/%2e%2e/vmic.db",
        "/_vmic_lists/",
        f"/{stored.relative_to(home.root)}",
    ):
        reply = front.get(path)
        assert reply.status >= 400, path
        assert not any(secret in reply.body for secret in secrets), path


def test_a_symlink_in_place_of_a_list_in_force_is_never_sent(front: Front, tmp_path: Path) -> None:
    stored = _stored(front)
    assert front.get(f"/lists/{LIST_ID}.atom").status == 200  # vmic serve checked the file
    canary = tmp_path / "outside.atom"
    canary.write_bytes(CANARY)
    stored.unlink()
    stored.symlink_to(canary)
    reply = front.get(f"/lists/{LIST_ID}.atom")
    assert reply.status == 503
    assert CANARY not in reply.body


CANARY = b"CANARY: a file outside the cache that nginx must never serve\n"


def test_nothing_else_in_the_site_home_comes_through(front: Front, tmp_path: Path) -> None:
    home = front.world.home
    canary = tmp_path / "outside.img"
    canary.write_bytes(CANARY)
    linked = "e" * 128
    (home.images / linked).symlink_to(canary)
    sha512 = hashlib.sha512(image_data(front.world, 2)).hexdigest()
    stored = next((home.lists / LIST_ID).glob("*.atom")).relative_to(home.root)
    secrets = [CANARY, home.database.read_bytes()[:16], home.config.read_bytes()[:40]]
    for path in (
        f"/images/sha512/{linked}",
        f"/images/sha512/{sha512.upper()}",
        "/images/sha512/../../vmic.db",
        "/images/sha512/%2e%2e/%2e%2e/vmic.db",
        "/images/sha512/..%2F..%2Fconfig.toml",
        "/vmic.db",
        "/config.toml",
        "/exports/export.atom",
        f"/cache/images/sha512/{sha512}",
        f"/{stored}",
        "/export.atom/",
        "/images/sha512/",
    ):
        reply = front.get(path)
        assert reply.status >= 400, path
        assert not any(secret in reply.body for secret in secrets), path
    assert front.get(f"/images/sha512/{sha512}").status == 200


# -- a peer behind the front --------------------------------------------------------------
def test_a_peer_follows_the_site_through_nginx_once_the_endorser_is_gone(
    front: Front, tmp_path: Path
) -> None:
    peer = SiteHome(tmp_path / "peer")
    argv = ["site", "init", "--home", str(peer.root), "--trust", str(front.world.trust)]
    assert main(argv) == 0
    config = tomlkit.parse(peer.config.read_text())
    federation, network = config["federation"], config["network"]
    assert isinstance(federation, dict)
    assert isinstance(network, dict)
    federation.update({"follow": [[ENDORSER_DN, CA_DN]], "approve_if_peers": 1})
    network["ca_bundle"] = str(front.cert)
    peer.config.write_text(tomlkit.dumps(config))
    for n in (1, 2, 3):
        front.world.sim.remove(f"/images/img-{n}.raw")
    front.world.sim.remove(LIST_PATH)
    served_before = front.server.state.counters.bytes_served
    add = ["peer", "add", f"{front.url}/export.atom", "--name", "front"]
    assert main([*add, "--site-dn", SITE_DN, "--ca-dn", CA_DN, "--home", str(peer.root)]) == 0
    assert main(["sync", "--home", str(peer.root)]) == 0
    with Store.open(peer.database) as store:
        states = {i.image_id: i.state for i in store.images()}
    assert states == {image_uuid(n): "available" for n in (1, 2, 3)}
    for n in (1, 2, 3):
        data = image_data(front.world, n)
        assert (peer.images / hashlib.sha512(data).hexdigest()).read_bytes() == data
    assert front.server.state.counters.bytes_served - served_before < BIG  # the list, not images
