"""Serving to peers only: `vmic serve` with ``[serve] access = "peers"`` (mutual TLS).

A real `vmic serve` on loopback with TLS, whose client certificates come from
the test CA: an allowed peer (listed in ``allowed_peers``, or a site the
server follows) gets the export, the lists and the image bytes; a client
without a certificate, with an unknown DN, a revoked, expired or not yet
valid certificate gets 403 naming why; a chain to an unknown CA is refused
in the handshake. The fast lane never answers a protected path for such a
client, the catalogue stays public or not as configured, and the verdict is
made once per connection. Every refusal leaves the serving site's trusted
state as it was, and a following site takes nothing from a peer that
refused it. The site agent's side: the site's certificate is presented as
the TLS client certificate (:mod:`site_agent.client_tls`).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import logging
import re
import socket
import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from cryptography.hazmat.primitives import serialization
from hypothesis import assume, given
from hypothesis import strategies as st

from federation.cli import main
from federation.cli.common import ExitCode
from federation.listener import start
from federation.peer_tls import PEER_GATE, PeerGate, Refusal, Verdict, check_client
from federation.server import create_app, tls_context
from keys.errors import ConfigError
from keys.limits import DEFAULT_LIMITS
from keys.trust import CrlPolicy
from site_agent import client_tls
from site_agent.config import Identity, load
from site_agent.config_section import parse_pins
from site_agent.home import SiteHome
from site_agent.peerstore import PeerStore
from site_agent.serve_settings import Access
from site_agent.store import Store
from site_agent.transport import open_session
from tests.support.ca import Identity as Issued
from tests.support.ca import TestCA, new_key, pem, store, write_identity, write_trust_dir
from tests.support.lists import LIST_ID
from tests.support.serving import ServeThread, available_site, image_data
from tests.support.site import CA_DN, ENDORSER_DN, World, image_uuid

TIMEOUT = 20.0


def site_dn(name: str) -> str:
    return f"/DC=org/DC=vmic-test/OU=Sites/CN=host/{name}.vmic-test.org"


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


# -- a serving site that serves peers only ------------------------------------------------
@dataclass
class Served:
    """Site A: its home (the world's), its host certificate, its server, the CA bundle."""

    world: World
    identity: Issued
    bundle: Path
    server: ServeThread
    tmp: Path

    @property
    def gate(self) -> PeerGate:
        assert self.server.app is not None
        return self.server.app[PEER_GATE]

    def client(self, who: Issued | None, name: str = "b") -> ssl.SSLContext:
        """The site agent's TLS context for a site holding ``who`` (None: no identity)."""
        return client_context(self.bundle, who, self.tmp / f"client-{name}")

    def get(self, path: str, who: Issued | None, name: str = "b") -> tuple[int, bytes]:
        reply = self.server.get(path, context=self.client(who, name))
        return reply.status, reply.body


def client_context(bundle: Path, who: Issued | None, folder: Path) -> ssl.SSLContext:
    if who is None:
        return client_tls.tls_context(bundle, None)
    cert, key, _ = write_identity(folder, who)
    return client_tls.tls_context(bundle, identity_of(cert, key))


def identity_of(cert: Path, key: Path) -> Identity:
    return Identity(
        cert=cert,
        key=key,
        chain=None,
        base_url="https://b.vmic-test.org",
        export_validity=timedelta(days=7),
    )


def configure(home: SiteHome, table: str, **values: object) -> None:
    doc = tomlkit.parse(home.config.read_text())
    section = doc.setdefault(table, tomlkit.table())
    assert isinstance(section, dict)
    section.update(values)
    home.config.write_text(tomlkit.dumps(doc))


def serve_peers_only(
    world: World,
    stack: ExitStack,
    tmp: Path,
    *,
    allowed: tuple[Issued, ...] = (),
    public_catalogue: bool = True,
) -> Served:
    """Site A with images, serving peers only over TLS with its host certificate."""
    available_site(world)
    identity = world.ca.issue_host(site_dn("a"))
    cert, key, _ = write_identity(tmp / "id-a", identity)
    bundle = tmp / "ca-bundle.pem"
    bundle.write_bytes(pem(world.ca.cert))
    configure(
        world.home,
        "serve",
        tls_cert=str(cert),
        tls_key=str(key),
        access="peers",
        public_catalogue=public_catalogue,
        allowed_peers=[[str(who.subject), str(who.issuer)] for who in allowed],
    )
    configure(world.home, "network", ca_bundle=str(bundle))
    context = tls_context(load(world.home.config).serve)
    server = stack.enter_context(ServeThread(world.home, ssl_context=context))
    assert vmic(
        world.home, "site", "identity", "--cert", cert, "--key", key, "--base-url", server.url
    )
    assert vmic(world.home, "export")
    return Served(world=world, identity=identity, bundle=bundle, server=server, tmp=tmp)


def vmic(home: SiteHome, *args: object) -> bool:
    """Run a `vmic` command on ``home``; whether it succeeded."""
    return main([*(str(a) for a in args), "--home", str(home.root)]) == 0


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as servers:
        yield servers


@pytest.fixture
def peer_b(world: World) -> Issued:
    return world.ca.issue_host(site_dn("b"))


@pytest.fixture
def served(world: World, stack: ExitStack, tmp_path: Path, peer_b: Issued) -> Served:
    return serve_peers_only(world, stack, tmp_path, allowed=(peer_b,))


PROTECTED = (
    "/export.atom",
    f"/lists/{LIST_ID}.atom",
    "/images/sha512/" + "0" * 128,  # not available: still 403 first, never 404
    "/nowhere",
)


def protected_paths(world: World) -> tuple[str, ...]:
    digest = sha512(image_data(world, 1))
    return (*PROTECTED, f"/images/sha512/{digest}", f"/images/sha512/{digest}.blocks")


# -- allowed peers ------------------------------------------------------------------------
def test_an_allowed_peer_gets_the_export_lists_and_image_bytes(
    served: Served, peer_b: Issued
) -> None:
    world = served.world
    before = world.snapshot()

    status, export = served.get("/export.atom", peer_b)
    assert status == 200
    assert export == (world.home.exports / "export.atom").read_bytes()
    status, signed = served.get(f"/lists/{LIST_ID}.atom", peer_b)
    assert status == 200
    assert LIST_ID.encode() in signed
    for n in (1, 2, 3):
        status, data = served.get(f"/images/sha512/{sha512(image_data(world, n))}", peer_b)
        assert (status, data) == (200, image_data(world, n))
    assert served.gate.refused == 0
    assert world.snapshot() == before


def test_the_site_agent_session_presents_the_site_certificate(
    served: Served, peer_b: Issued
) -> None:
    """open_session with the site's identity: aiohttp, as `vmic sync` fetches."""
    cert, key, _ = write_identity(served.tmp / "agent-b", peer_b)
    want = sha512(image_data(served.world, 2))

    async def fetch(identity: Identity | None) -> list[tuple[int, bytes]]:
        got = []
        async with open_session(
            DEFAULT_LIMITS,
            ca_bundle=served.bundle,
            user_agent="vmic-test",
            identity=identity,
        ) as session:
            for path in ("/export.atom", f"/images/sha512/{want}"):
                async with session.get(served.server.url + path) as response:
                    got.append((response.status, await response.read()))
        return got

    assert asyncio.run(fetch(identity_of(cert, key))) == [
        (200, (served.world.home.exports / "export.atom").read_bytes()),
        (200, image_data(served.world, 2)),
    ]
    refused = asyncio.run(fetch(None))
    assert [status for status, _ in refused] == [403, 403]
    assert refused[0][1] == b"403: no client certificate\n"


def test_a_site_the_server_follows_is_a_peer_until_it_is_removed(
    world: World, stack: ExitStack, tmp_path: Path
) -> None:
    """No allowed_peers: site B's certificate is allowed because site A follows B (its
    export's pinned DN, from `vmic peer add`), read from the store while A serves."""
    a = serve_peers_only(world, stack, tmp_path)
    b_identity = world.ca.issue_host(site_dn("b"))
    b_home = SiteHome(tmp_path / "site-b")
    assert main(["site", "init", "--home", str(b_home.root), "--trust", str(world.trust)]) == 0
    cert, key, _ = write_identity(tmp_path / "id-b", b_identity)
    b_context = tls_context(replace(load(b_home.config).serve, tls_cert=cert, tls_key=key))
    b_server = stack.enter_context(ServeThread(b_home, ssl_context=b_context))
    assert vmic(
        b_home, "site", "identity", "--cert", cert, "--key", key, "--base-url", b_server.url
    )
    assert vmic(b_home, "export")

    assert a.get("/export.atom", b_identity)[0] == 403
    url = b_server.url + "/export.atom"
    assert vmic(
        world.home, "peer", "add", url, "--name", "b", "--site-dn", site_dn("b"), "--ca-dn", CA_DN
    )
    assert a.get("/export.atom", b_identity)[0] == 200
    assert world.vmic("peer", "remove", "b") == 0
    assert a.get("/export.atom", b_identity) == (
        403,
        b"403: the client certificate's DN is not that of an allowed peer\n",
    )


# -- refusals -----------------------------------------------------------------------------
def _revoked(world: World) -> Issued:
    who = world.ca.issue_host(site_dn("b"))
    world.ca.revoke(who.cert)
    write_trust_dir(world.trust, [world.ca])  # the CRL now lists it
    return who


REFUSALS: dict[str, tuple[Any, Refusal, str]] = {
    "no certificate": (lambda world: None, Refusal.NO_CERTIFICATE, "no client certificate"),
    "unknown DN": (
        lambda world: world.ca.issue_host(site_dn("mallory")),
        Refusal.UNKNOWN_PEER,
        "is neither a peer this site follows nor in [serve] allowed_peers",
    ),
    "revoked": (_revoked, Refusal.REVOKED, "is revoked by the CRL"),
    "expired": (
        lambda world: world.ca.issue_host(
            site_dn("b"),
            not_before=world.now - timedelta(days=30),
            not_after=world.now - timedelta(days=1),
        ),
        Refusal.EXPIRED,
        "expired on",
    ),
    "not yet valid": (
        lambda world: world.ca.issue_host(site_dn("b"), not_before=world.now + timedelta(days=1)),
        Refusal.NOT_YET_VALID,
        "is not valid before",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_client_that_is_no_allowed_peer_gets_403_naming_why(
    case: str,
    world: World,
    stack: ExitStack,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make, refusal, logged = REFUSALS[case]
    who = make(world)
    allowed = (who,) if who is not None and case != "unknown DN" else ()
    served = serve_peers_only(world, stack, tmp_path, allowed=allowed)
    before = world.snapshot()
    caplog.set_level(logging.INFO, logger="vmic.serve")

    for path in protected_paths(world):
        status, body = served.get(path, who)
        assert (status, body) == (403, f"403: {refusal}\n".encode()), path

    assert served.gate.refused == len(protected_paths(world))
    assert served.server.get("/healthz", context=served.client(who)).status == 200
    assert any(logged in record.getMessage() for record in caplog.records), caplog.text
    assert world.snapshot() == before


def test_a_chain_to_a_ca_outside_the_trust_directory_is_refused_in_the_handshake(
    served: Served, now: datetime
) -> None:
    before = served.world.snapshot()
    stranger = TestCA("/DC=org/DC=elsewhere/CN=Other CA", now=now).issue_host(site_dn("b"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        served.get("/export.atom", stranger, name="stranger")
    assert served.gate.checks == 0  # nothing reached vmic's check, nothing was served
    assert served.world.snapshot() == before


def test_a_certificate_not_for_tls_clients_is_not_presented(served: Served, peer_b: Issued) -> None:
    """The site agent does not present a certificate its use forbids (emailProtection only,
    as `vmic keys` issues them): the server sees no certificate and says so."""
    signer = served.world.ca.issue(site_dn("b"))
    assert signer.subject == peer_b.subject  # the allowed DN
    assert served.get("/export.atom", signer, name="signer") == (
        403,
        b"403: no client certificate\n",
    )


def test_a_client_certificate_revoked_later_is_refused_once_the_crl_is_reloaded(
    served: Served, peer_b: Issued
) -> None:
    world = served.world
    assert served.get("/export.atom", peer_b)[0] == 200
    world.ca.revoke(peer_b.cert)
    write_trust_dir(world.trust, [world.ca])  # fetch-crl brings the new CRL
    served.gate.look_again()  # as its next look would, within TRUST_RECHECK_SECONDS
    before = world.snapshot()
    assert served.get("/export.atom", peer_b) == (403, f"403: {Refusal.REVOKED}\n".encode())
    assert world.snapshot() == before


def test_protected_paths_get_503_while_the_trust_directory_cannot_be_read(
    served: Served, peer_b: Issued
) -> None:
    for file in served.world.trust.iterdir():
        file.unlink()
    served.gate.look_again()
    assert served.get("/export.atom", peer_b)[0] == 503
    assert served.server.get("/healthz", context=served.client(None)).status == 200
    write_trust_dir(served.world.trust, [served.world.ca])
    served.gate.look_again()
    assert served.get("/export.atom", peer_b)[0] == 200


# -- the catalogue, /healthz, /metrics ----------------------------------------------------
@pytest.mark.parametrize("public", [True, False])
def test_the_catalogue_stays_public_unless_configured_otherwise(
    public: bool, world: World, stack: ExitStack, tmp_path: Path, peer_b: Issued
) -> None:
    served = serve_peers_only(world, stack, tmp_path, allowed=(peer_b,), public_catalogue=public)
    before = world.snapshot()
    catalogue = ("/", f"/image/{image_uuid(1)}", "/api/v1/images")
    for path in catalogue:
        status, _ = served.get(path, None)
        assert (status == 403) is not public, path
        assert served.get(path, peer_b)[0] != 403, path
    for path in ("/healthz", "/metrics"):
        assert served.get(path, None)[0] == 200, path
    assert world.snapshot() == before


# -- the fast lane and the verdict per connection -----------------------------------------
def raw_tls(port: int, context: ssl.SSLContext, request: bytes) -> bytes:
    """``request`` sent as it is over TLS; everything answered until the server closes."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(request)
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


LAST = b"%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
"""A request that asks the server to close the connection after answering."""


def statuses(answer: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def test_the_fast_lane_never_answers_a_protected_path(served: Served, peer_b: Issued) -> None:
    assert served.get("/export.atom", peer_b)[0] == 200  # the export is in memory now
    assert served.server.running is not None
    lane = served.server.running.gate
    before = (lane.fast_answers, served.world.snapshot())
    anyone = served.client(None)

    port = served.server.port
    pipelined = b"GET /export.atom HTTP/1.1\r\nHost: x\r\n\r\n" + LAST % b"GET /healthz"
    assert statuses(raw_tls(port, anyone, pipelined)) == [403, 200]
    answer = raw_tls(port, anyone, LAST % f"HEAD /lists/{LIST_ID}.atom".encode())
    assert statuses(answer) == [403]
    export = (served.world.home.exports / "export.atom").read_bytes()
    assert export not in answer
    assert (lane.fast_answers, served.world.snapshot()) == before

    answer = raw_tls(port, served.client(peer_b), LAST % b"GET /export.atom")
    assert statuses(answer) == [200]
    assert answer.endswith(export)


def test_the_verdict_is_made_once_per_connection(served: Served, peer_b: Issued) -> None:
    def session(who: Issued | None, paths: tuple[str, ...]) -> list[int]:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", served.server.port, timeout=TIMEOUT, context=served.client(who)
        )
        try:
            found = []
            for path in paths:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                found.append(response.status)
            return found
        finally:
            conn.close()

    paths = ("/export.atom", f"/lists/{LIST_ID}.atom", "/export.atom")
    assert session(peer_b, paths) == [200, 200, 200]
    assert served.gate.checks == 1
    assert session(None, paths) == [403, 403, 403]
    assert served.gate.checks == 2
    assert served.gate.refused == 3


# -- configuration ------------------------------------------------------------------------
def _config(tmp_path: Path, *, name: str = "home", **serve: object) -> Path:
    trust = write_trust_dir(tmp_path / "trust", [TestCA(CA_DN, now=datetime.now().astimezone())])
    home = SiteHome(tmp_path / name)
    assert main(["site", "init", "--home", str(home.root), "--trust", str(trust)]) == 0
    configure(home, "serve", **serve)
    return home.config


def test_peers_only_settings_load(tmp_path: Path) -> None:
    peers = [[site_dn("b"), CA_DN]]
    path = _config(tmp_path, access="peers", tls_cert="c", tls_key="k", allowed_peers=peers)
    configure(SiteHome(path.parent), "serve", public_catalogue=False)
    serve = load(path).serve
    assert serve.access is Access.PEERS
    assert [str(p.subject) for p in serve.allowed_peers] == [site_dn("b")]
    assert serve.public_catalogue is False
    defaults = load(_config(tmp_path, name="defaults")).serve
    assert (defaults.access, defaults.allowed_peers, defaults.public_catalogue) == (
        Access.ANYONE,
        (),
        True,
    )


def test_the_settings_in_docs_serving_md_load(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    found = re.search(r"<!-- peers-only:[^\n]*-->\n```toml\n(.*?)```", doc, re.DOTALL)
    assert found, "docs/serving.md has no toml block marked peers-only"
    path = _config(tmp_path)
    config = tomlkit.parse(path.read_text())
    config["serve"] = tomlkit.parse(found.group(1))["serve"]
    path.write_text(tomlkit.dumps(config))
    serve = load(path).serve
    assert (serve.access, len(serve.allowed_peers), serve.public_catalogue) == (
        Access.PEERS,
        1,
        True,
    )


TLS = {"tls_cert": "c.pem", "tls_key": "k.pem"}


@pytest.mark.parametrize(
    ("serve", "message"),
    [
        ({"access": "peers"}, 'access = "peers" needs tls_cert and tls_key'),
        ({"access": "friends"}, '"anyone" or "peers"'),
        ({"public_catalogue": False}, 'need access = "peers"'),
        ({"allowed_peers": [[site_dn("b"), CA_DN]]}, 'need access = "peers"'),
        ({**TLS, "access": "peers", "allowed_peers": [["x"]]}, "[subject DN, issuer DN]"),
        ({**TLS, "access": "peers", "allowed_peers": [["/CN", "/"]]}, "allowed_peers"),
        (
            {**TLS, "access": "peers", "accel_redirect": "/_vmic_lists/"},
            'access = "peers" cannot go with accel_redirect',
        ),
    ],
)
def test_peers_only_settings_that_cannot_work_are_refused(
    serve: dict[str, Any], message: str, tmp_path: Path
) -> None:
    path = _config(tmp_path, **serve)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(path)


def test_the_servers_tls_knows_no_ca_but_the_trust_directorys(
    tmp_path: Path, peer_b: Issued
) -> None:
    """No system CA is loaded for client certificates: with access = "peers" a certificate
    from a CA outside the trust directory fails in the handshake, as documented."""
    cert, key, _ = write_identity(tmp_path / "id", peer_b)
    path = _config(tmp_path, tls_cert=str(cert), tls_key=str(key), access="peers")
    context = tls_context(load(path).serve)
    assert context is not None
    assert context.cert_store_stats()["x509_ca"] == 0
    assert context.verify_mode == ssl.CERT_NONE  # until PeerGate.prepare_tls asks


def test_serving_peers_only_without_tls_is_refused_at_start(world: World) -> None:
    config = load(world.home.config)
    config = replace(config, serve=replace(config.serve, access=Access.PEERS))
    app = create_app(world.home, config=config, warm_up=False)

    async def listen() -> None:
        await start(app, host="127.0.0.1", port=0, ssl_context=None)

    with pytest.raises(ConfigError, match="TLS"):
        asyncio.run(listen())


_TOML = st.recursive(
    st.one_of(
        st.text(max_size=30),
        st.text(alphabet="/=+,\\#CNDOUc .0123456789", max_size=30),
        st.sampled_from([site_dn("b"), CA_DN, "CN=x,DC=org", "/", "/CN", "/CN=", "#00"]),
        st.integers(),
        st.floats(allow_nan=False),
        st.booleans(),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(items=st.lists(_TOML, max_size=4))
def test_the_allow_list_parser_returns_pins_or_a_config_error(items: list[Any]) -> None:
    try:
        pins = parse_pins(items, "[serve] allowed_peers")
    except ConfigError as exc:
        message = exc.message
    else:
        assert len(pins) == len(items)
        return
    assert "allowed_peers" in message


@given(access=_TOML, allowed=_TOML, public=_TOML)
def test_the_serve_table_loads_or_is_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, access: Any, allowed: Any, public: Any
) -> None:
    folder = tmp_path_factory.mktemp("toml")
    path = folder / "config.toml"
    doc = tomlkit.document()
    doc["trust"] = {"directory": str(folder)}
    doc["serve"] = {**TLS, "access": access, "allowed_peers": allowed, "public_catalogue": public}
    path.write_text(tomlkit.dumps(doc))
    try:
        serve = load(path).serve
    except ConfigError:
        return
    assert serve.access in set(Access)
    assert isinstance(serve.public_catalogue, bool)


# -- the check itself, on any bytes -------------------------------------------------------
@pytest.fixture(scope="module")
def pki() -> tuple[TestCA, bytes]:
    ca = TestCA(CA_DN, now=datetime.now().astimezone())
    return ca, ca.issue_host(site_dn("b")).cert.public_bytes(serialization.Encoding.DER)


@given(data=st.binary(max_size=2048))
def test_any_bytes_as_a_client_certificate_get_a_refusal(
    pki: tuple[TestCA, bytes], data: bytes
) -> None:
    ca, _ = pki
    verdict = check_client(data, trust=store([ca]), crl=CrlPolicy.REQUIRE, allowed=(), at=ca.now)
    assert isinstance(verdict, Verdict)
    assert verdict.refusal is not None


@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1))
def test_a_damaged_allowed_certificate_gets_a_refusal(
    pki: tuple[TestCA, bytes], flips: list[tuple[int, int]]
) -> None:
    ca, der = pki
    pins = parse_pins([[site_dn("b"), CA_DN]], "allowed")
    good = check_client(der, trust=store([ca]), crl=CrlPolicy.REQUIRE, allowed=pins, at=ca.now)
    assert good.allowed
    damaged = bytearray(der)
    for at, mask in flips:
        damaged[at % len(der)] ^= mask
    assume(damaged != der)  # two flips of one byte may undo each other
    verdict = check_client(
        bytes(damaged), trust=store([ca]), crl=CrlPolicy.REQUIRE, allowed=pins, at=ca.now
    )
    assert verdict.refusal is not None


def test_an_allowed_verdict_holds_no_longer_than_the_certificate_or_the_crl(
    pki: tuple[TestCA, bytes],
) -> None:
    ca, _ = pki
    short = ca.issue_host(site_dn("b"), not_after=ca.now + timedelta(minutes=3))
    der = short.cert.public_bytes(serialization.Encoding.DER)
    pins = parse_pins([[site_dn("b"), CA_DN]], "allowed")
    trust = store([ca])
    verdict = check_client(der, trust=trust, crl=CrlPolicy.REQUIRE, allowed=pins, at=ca.now)
    assert verdict.allowed
    assert verdict.until == short.cert.not_valid_after_utc
    horizon = ca.now + timedelta(minutes=1)
    verdict = check_client(
        der, trust=trust, crl=CrlPolicy.REQUIRE, allowed=pins, at=ca.now, crl_horizon=horizon
    )
    assert verdict.until == horizon


# -- the site agent's certificate ---------------------------------------------------------
def test_a_site_key_others_can_read_is_a_config_error(tmp_path: Path, peer_b: Issued) -> None:
    cert, key, _ = write_identity(tmp_path / "id", peer_b)
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=re.escape(str(key))):
        client_tls.client_context(None, identity_of(cert, key))
    with pytest.raises(ConfigError, match="missing"):
        client_tls.client_context(None, identity_of(tmp_path / "missing.pem", key))
    _, other_key, _ = write_identity(tmp_path / "other", replace(peer_b, key=new_key()))
    with pytest.raises(ConfigError, match=re.escape(str(cert))):
        client_tls.client_context(None, identity_of(cert, other_key))


def test_an_identity_that_cannot_be_presented_does_not_stop_the_sync(
    world: World, tmp_path: Path, peer_b: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    """A site key others can read: the export cannot be signed (a problem of the run), and
    the certificate is not presented, but the lists and images are fetched as ever."""
    cert, key, _ = write_identity(tmp_path / "id", peer_b)
    base = "https://site-b.example.org"
    assert world.vmic("site", "identity", "--cert", cert, "--key", key, "--base-url", base) == 0
    key.chmod(0o640)
    world.publish(version=1, images=(1,))
    assert world.subscribe(auto=True) == 0
    caplog.set_level(logging.WARNING, logger="vmic.fetch")

    assert world.vmic("sync") == ExitCode.PROBLEMS  # the export: not written

    assert world.states() == {image_uuid(1): "available"}
    assert any(
        str(key) in r.getMessage() and "cannot be presented" in r.getMessage()
        for r in caplog.records
    )


def test_presenting_the_site_certificate_to_a_server_that_does_not_ask_is_harmless(
    world: World, stack: ExitStack, tmp_path: Path, peer_b: Issued
) -> None:
    available_site(world)
    host = world.ca.issue_host(site_dn("a"))
    cert, key, _ = write_identity(tmp_path / "id-a", host)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem(world.ca.cert))
    context = tls_context(replace(load(world.home.config).serve, tls_cert=cert, tls_key=key))
    server = stack.enter_context(ServeThread(world.home, ssl_context=context))
    for who in (peer_b, None):
        context = client_context(bundle, who, tmp_path / "c")
        assert server.get(f"/lists/{LIST_ID}.atom", context=context).status == 200


# -- a real second site following a peers-only site ---------------------------------------
def follower(world: World, tmp_path: Path, bundle: Path, who: Issued | None) -> SiteHome:
    home = SiteHome(tmp_path / "site-b")
    assert main(["site", "init", "--home", str(home.root), "--trust", str(world.trust)]) == 0
    configure(home, "network", ca_bundle=str(bundle))
    if who is not None:
        cert, key, _ = write_identity(tmp_path / "id-b", who)
        base = "https://b.vmic-test.org"
        assert vmic(home, "site", "identity", "--cert", cert, "--key", key, "--base-url", base)
    return home


def follow_a(home: SiteHome, served: Served) -> bool:
    """`vmic peer add` of site A on ``home``; whether it succeeded."""
    url = served.server.url + "/export.atom"
    return vmic(
        home, "peer", "add", url, "--name", "a", "--site-dn", site_dn("a"), "--ca-dn", CA_DN
    )


def holds_nothing(home: SiteHome) -> bool:
    with Store.open(home.database) as db:
        rows = (db.images(), db.subscriptions(), PeerStore(db).peers())
    return not any(rows) and not list(home.images.iterdir())


def test_a_site_without_an_allowed_certificate_cannot_follow_a_peers_only_site(
    served: Served, tmp_path: Path
) -> None:
    before = served.world.snapshot()
    b = follower(served.world, tmp_path, served.bundle, None)
    assert not follow_a(b, served)
    assert holds_nothing(b)
    assert served.gate.refused >= 1
    assert served.world.snapshot() == before


def test_a_following_site_syncs_lists_and_images_from_a_peers_only_site(
    served: Served, tmp_path: Path, peer_b: Issued
) -> None:
    world = served.world
    b = follower(world, tmp_path, served.bundle, peer_b)
    configure(b, "federation", follow=[[ENDORSER_DN, CA_DN]], approve_if_peers=1)
    assert follow_a(b, served)
    world.sim.remove("/images/img-1.raw")  # the bytes can only come from site A
    assert vmic(b, "sync")
    with Store.open(b.database) as db:
        assert {i.image_id: i.state for i in db.images()}[image_uuid(1)] == "available"
    assert served.gate.refused == 0


@pytest.mark.parametrize("case", ["unknown DN", "revoked", "expired"])
def test_a_site_whose_certificate_is_refused_takes_nothing_from_a_peers_only_site(
    case: str,
    world: World,
    stack: ExitStack,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make, _refusal, logged = REFUSALS[case]
    who = make(world)
    served = serve_peers_only(
        world, stack, tmp_path, allowed=(who,) if case != "unknown DN" else ()
    )
    before = world.snapshot()
    caplog.set_level(logging.INFO, logger="vmic.serve")
    b = follower(world, tmp_path, served.bundle, None)
    cert, key, _ = write_identity(tmp_path / "id-b", who)  # as it was: no check on the way in
    configure(b, "identity", cert=str(cert), key=str(key), base_url="https://b.vmic-test.org")

    assert not follow_a(b, served)

    assert holds_nothing(b)
    assert any(logged in record.getMessage() for record in caplog.records), caplog.text
    assert world.snapshot() == before


def test_a_following_site_revoked_later_gets_nothing_new_from_the_peer(
    served: Served, tmp_path: Path, peer_b: Issued
) -> None:
    world = served.world
    b = follower(world, tmp_path, served.bundle, peer_b)
    configure(b, "federation", follow=[[ENDORSER_DN, CA_DN]], approve_if_peers=1)
    assert follow_a(b, served)
    assert vmic(b, "sync")
    with Store.open(b.database) as db:
        offers = PeerStore(db).offers()
        images = db.images()
    assert offers
    world.ca.revoke(peer_b.cert)
    write_trust_dir(world.trust, [world.ca])
    served.gate.look_again()
    refused = served.gate.refused

    assert not vmic(b, "sync")  # the peer is a problem of this run

    assert served.gate.refused > refused
    with Store.open(b.database) as db:
        assert PeerStore(db).offers() == offers
        assert db.images() == images


def test_a_site_certificate_for_signing_only_is_not_presented_and_not_warned_about(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The usual site: its certificate signs its export only (no clientAuth). Commands run
    as ever and say nothing about it on the terminal (the site log has it, at INFO)."""
    signer = world.ca.issue(site_dn("signing-only"))
    cert, key, _ = write_identity(tmp_path / "id", signer)
    base = "https://site.example.org"
    assert world.vmic("site", "identity", "--cert", cert, "--key", key, "--base-url", base) == 0
    world.publish(version=1, images=(1,))
    capsys.readouterr()

    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0

    assert "TLS clients" not in capsys.readouterr().err
    assert world.states() == {image_uuid(1): "available"}
