"""List fetches and the transport rules shared with downloads, against real loopback servers.

Conditional GET and validators; the byte cap while reading (THREATS 6);
retries of transient failures only; redirects, forbidden addresses and
schemes (THREATS 24); slow servers (THREATS 21); TLS verification
(THREATS 25).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from keys.errors import (
    ConfigError,
    FetchError,
    FetchTimeoutError,
    HTTPStatusError,
    TooLargeError,
)
from site_agent.fetch import Validators
from site_agent.transport import GuardedResolver, forbidden_address, host_address
from tests.sim import Simulator
from tests.site_agent.netkit import (
    LIMITS,
    fetch_list,
    namespaces_allowed,
    run_isolated,
    self_signed,
)

LIST = b"<feed>" + b"x" * 1000 + b"</feed>"
MODIFIED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[Simulator]:
    with Simulator(safety_timeout=10) as sim:
        sim.publish("/list.xml", LIST, last_modified=MODIFIED)
        yield sim


# -- conditional GET ---------------------------------------------------------------------


def test_fetch_list_returns_the_body_and_its_validators(server: Simulator) -> None:
    got = fetch_list(server.url("/list.xml"))
    assert got.body == LIST
    assert not got.not_modified
    assert got.url == server.url("/list.xml")
    assert got.validators.etag is not None
    assert got.validators.etag.startswith('"')
    assert got.validators.last_modified == "Fri, 02 Jan 2026 03:04:05 GMT"


def test_fetch_list_sends_the_validators_and_a_304_returns_no_body(server: Simulator) -> None:
    first = fetch_list(server.url("/list.xml"))
    again = fetch_list(server.url("/list.xml"), validators=first.validators)
    assert again.not_modified
    assert again.body == b""
    assert again.validators == first.validators
    sent = server.requests[-1]
    assert sent.if_none_match == first.validators.etag
    assert sent.if_modified_since == first.validators.last_modified
    assert sent.status == 304


def test_fetch_list_with_only_last_modified_gets_a_304(server: Simulator) -> None:
    got = fetch_list(
        server.url("/list.xml"),
        validators=Validators(last_modified="Sat, 03 Jan 2026 00:00:00 GMT"),
    )
    assert got.not_modified
    assert got.validators.etag is not None  # the 304 carries the current ETag


def test_a_last_modified_too_close_to_the_response_date_is_not_kept(server: Simulator) -> None:
    """One-second dates cannot tell apart two lists signed in the same second: a
    Last-Modified younger than 60 s is not a validator (RFC 9110 8.8.2.2)."""
    fresh = datetime.now(UTC)
    server.publish("/fresh.xml", b"<v1/>", etag=None, last_modified=fresh)
    first = fetch_list(server.url("/fresh.xml"))
    assert first.validators == Validators()
    server.publish("/fresh.xml", b"<v2/>", etag=None, last_modified=fresh)

    second = fetch_list(server.url("/fresh.xml"), validators=first.validators)

    assert second.body == b"<v2/>"
    assert server.requests_for("/fresh.xml")[-1].if_modified_since is None


def test_an_old_last_modified_is_kept_as_a_validator(server: Simulator) -> None:
    server.publish("/old.xml", b"<v1/>", etag=None, last_modified=datetime(2026, 1, 3, tzinfo=UTC))
    first = fetch_list(server.url("/old.xml"))
    assert first.validators.last_modified == "Sat, 03 Jan 2026 00:00:00 GMT"

    second = fetch_list(server.url("/old.xml"), validators=first.validators)

    assert second.not_modified


def test_fetch_list_with_stale_validators_gets_the_new_body(server: Simulator) -> None:
    first = fetch_list(server.url("/list.xml"))
    server.publish("/list.xml", LIST + b"<!-- v2 -->", last_modified=MODIFIED + timedelta(days=1))
    again = fetch_list(server.url("/list.xml"), validators=first.validators)
    assert not again.not_modified
    assert again.body == LIST + b"<!-- v2 -->"
    assert again.validators.etag != first.validators.etag


# -- byte cap (THREATS 6) ----------------------------------------------------------------


def test_fetch_list_refuses_a_declared_length_above_the_cap(server: Simulator) -> None:
    server.publish("/big.xml", b"x" * (LIMITS.max_list_bytes + 1))
    with pytest.raises(TooLargeError, match="declared"):
        fetch_list(server.url("/big.xml"))
    assert len(server.requests_for("/big.xml")) == 1  # not retried


def test_fetch_list_stops_a_body_without_length_at_the_cap(server: Simulator) -> None:
    server.fault("/list.xml", no_content_length=True, overrun=50 * 1024 * 1024)
    with pytest.raises(TooLargeError, match="more than 65536 bytes sent"):
        fetch_list(server.url("/list.xml"))
    (record,) = server.requests_for("/list.xml")
    assert record.bytes_sent < 40 * 1024 * 1024  # the client hung up long before the end


def test_fetch_list_accepts_a_body_of_exactly_the_cap(server: Simulator) -> None:
    server.publish("/cap.xml", b"y" * LIMITS.max_list_bytes)
    server.fault("/cap.xml", no_content_length=True)
    assert len(fetch_list(server.url("/cap.xml")).body) == LIMITS.max_list_bytes


# -- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_fetch_list_retries_transient_statuses_then_succeeds(
    server: Simulator, status: int
) -> None:
    server.fault("/list.xml", status=status, times=2)
    assert fetch_list(server.url("/list.xml")).body == LIST
    assert [r.status for r in server.requests_for("/list.xml")] == [status, status, 200]


def test_fetch_list_gives_up_after_the_retries(server: Simulator) -> None:
    server.fault("/list.xml", status=502)
    with pytest.raises(HTTPStatusError, match="502"):
        fetch_list(server.url("/list.xml"))
    assert len(server.requests_for("/list.xml")) == LIMITS.retries + 1


@pytest.mark.parametrize("status", [404, 403, 410])
def test_fetch_list_does_not_retry_a_client_error(server: Simulator, status: int) -> None:
    server.fault("/list.xml", status=status)
    with pytest.raises(HTTPStatusError, match=f"{status}") as caught:
        fetch_list(server.url("/list.xml"))
    assert server.url("/list.xml") in caught.value.message
    assert len(server.requests_for("/list.xml")) == 1


def test_fetch_list_of_an_unknown_path_is_a_404(server: Simulator) -> None:
    with pytest.raises(HTTPStatusError, match="404"):
        fetch_list(server.url("/nothing.xml"))


def test_a_refused_connection_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        FetchError, match=r"cannot connect to 127\.0\.0\.1:\d+ \(Connection refused"
    ):
        fetch_list(f"http://127.0.0.1:{port}/list.xml")


# -- redirects and addresses (THREATS 24) ------------------------------------------------


def test_fetch_list_follows_a_redirect_within_the_scheme(server: Simulator) -> None:
    server.fault("/old.xml", redirect_to=server.url("/list.xml"))
    got = fetch_list(server.url("/old.xml"))
    assert got.body == LIST
    assert got.url == server.url("/list.xml")


def test_a_relative_redirect_is_resolved_against_the_request(server: Simulator) -> None:
    server.fault("/a/old.xml", redirect_to="../list.xml")
    assert fetch_list(server.url("/a/old.xml")).url == server.url("/list.xml")


def test_a_redirect_to_another_scheme_is_refused(server: Simulator) -> None:
    target = server.url("/list.xml").replace("http://", "https://")
    server.fault("/old.xml", redirect_to=target)
    with pytest.raises(FetchError, match="changes the scheme"):
        fetch_list(server.url("/old.xml"))
    assert server.requests_for("/list.xml") == []


def test_too_many_redirects_are_refused(server: Simulator) -> None:
    server.fault("/a", redirect_to="/b")
    server.fault("/b", redirect_to="/a")
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetch_list(server.url("/a"))
    assert len(server.requests) == LIMITS.max_redirects + 1


def test_a_redirect_to_a_link_local_address_is_refused(server: Simulator) -> None:
    server.fault("/old.xml", redirect_to="http://169.254.169.254/latest/meta-data/")
    with pytest.raises(FetchError, match="link-local"):
        fetch_list(server.url("/old.xml"))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/list.xml", "link-local"),
        ("http://[::ffff:169.254.169.254]/list.xml", "link-local"),
        ("http://0.0.0.0/list.xml", "unspecified"),
        ("http://[::]/list.xml", "unspecified"),
        ("http://224.0.0.1/list.xml", "multicast"),
        ("http://255.255.255.255/list.xml", "broadcast"),
        # what aiohttp connects to without asking a resolver, once yarl has read the host
        ("http://\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11.\uff11/", "link-local"),
        ("http://169\u3002254\u3002169\u3002254/latest/", "link-local"),
        ("http://\uff10.\uff10.\uff10.\uff10/list.xml", "unspecified"),
        # numbers the C resolver reads as IPv4 addresses
        ("http://2852039166/list.xml", "link-local"),
        ("http://0xa9.0xfe.0xa9.0xfe/list.xml", "link-local"),
        ("http://0/list.xml", "unspecified"),
        # IPv6 addresses that a gateway or relay turns into a forbidden IPv4 one
        ("http://[64:ff9b::a9fe:a9fe]/list.xml", "link-local"),
        ("http://[2002:a9fe:a9fe::1]/list.xml", "link-local"),
        ("http://[::169.254.169.254]/list.xml", "link-local"),
        ("http://[64:ff9b::e000:1]/list.xml", "multicast"),
    ],
)
def test_forbidden_literal_addresses_are_refused(url: str, reason: str) -> None:
    with pytest.raises(FetchError, match=reason):
        fetch_list(url)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://[::FFFF:7F00:1]/", "::ffff:7f00:1"),
        ("http://mirror.example.org/", None),
        ("http://cafe.be/", None),
        ("http://deadbeef/", None),
    ],
)
def test_the_host_is_read_as_aiohttp_and_the_resolver_will_read_it(
    url: str, address: str | None
) -> None:
    assert host_address(url) == address


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/list.xml", "http://user:pw@127.0.0.1/x"]
)
def test_other_schemes_and_credentials_are_refused(url: str) -> None:
    with pytest.raises(FetchError):
        fetch_list(url)


def test_loopback_and_private_addresses_are_allowed() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "::1", "fd00::1"):
        assert forbidden_address(address) is None


class _FixedResolver(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


def test_the_resolver_refuses_a_name_with_any_forbidden_address() -> None:
    """A stand-in inner resolver gives fixed answers (DNS cannot be made to lie here without
    root); the end-to-end test below does it for real in a user namespace when allowed."""
    allowed = GuardedResolver(_FixedResolver("127.0.0.1"))
    mixed = GuardedResolver(_FixedResolver("192.0.2.1", "169.254.169.254"))
    assert asyncio.run(allowed.resolve("mirror.example"))[0]["host"] == "127.0.0.1"
    with pytest.raises(FetchError, match=r"mirror\.example resolves to 169\.254\.169\.254"):
        asyncio.run(mixed.resolve("mirror.example"))


_RESOLVE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import timedelta
    from keys.errors import FetchError
    from keys.limits import Limits
    from site_agent.fetch import Fetcher

    async def get(url):
        limits = Limits(retries=0, connect_timeout=timedelta(seconds=2))
        async with Fetcher(limits=limits) as fetcher:
            return await fetcher.fetch_list(url)

    good, bad = sys.argv[1:3]
    print("good", len(asyncio.run(get(good)).body))
    try:
        asyncio.run(get(bad))
    except FetchError as exc:
        print("refused", exc.message)
    """
)


@pytest.mark.skipif(not namespaces_allowed(), reason="unshare -rm and mount are not permitted")
def test_a_host_name_resolving_to_link_local_is_refused(server: Simulator, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 mirror.vmic.test\n169.254.169.254 metadata.vmic.test\n")
    port = server.base_url.rsplit(":", 1)[1]
    done = run_isolated(
        f"mount --bind {hosts} /etc/hosts",
        _RESOLVE_SCRIPT,
        f"http://mirror.vmic.test:{port}/list.xml",
        f"http://metadata.vmic.test:{port}/list.xml",
    )
    assert done.returncode == 0, done.stderr
    assert f"good {len(LIST)}" in done.stdout
    assert "refused" in done.stdout
    assert "resolves to 169.254.169.254, a link-local address" in done.stdout


# -- slow servers (THREATS 21) -----------------------------------------------------------


def test_a_list_dripping_below_the_minimum_rate_times_out(server: Simulator) -> None:
    server.fault("/list.xml", drip=500)
    with pytest.raises(FetchTimeoutError, match="below the minimum"):
        fetch_list(server.url("/list.xml"), limits=replace(LIMITS, retries=0))


def test_a_stalled_list_times_out_after_the_read_timeout(server: Simulator) -> None:
    limits = replace(LIMITS, retries=0, read_timeout=timedelta(seconds=0.3), min_rate=0)
    server.fault("/list.xml", stall_after=100)
    with pytest.raises(FetchTimeoutError, match=r"no data for 0\.3 s"):
        fetch_list(server.url("/list.xml"), limits=limits)


def test_a_list_slower_than_its_deadline_times_out(server: Simulator) -> None:
    limits = replace(LIMITS, retries=0, list_deadline=timedelta(seconds=0.5), min_rate=0)
    server.fault("/list.xml", drip=200)
    with pytest.raises(FetchTimeoutError, match=r"not complete after 0\.5 s"):
        fetch_list(server.url("/list.xml"), limits=limits)


def test_timeouts_are_retried(server: Simulator) -> None:
    limits = replace(LIMITS, read_timeout=timedelta(seconds=0.3))
    server.fault("/list.xml", stall_after=10, times=1)
    assert fetch_list(server.url("/list.xml"), limits=limits).body == LIST
    assert len(server.requests_for("/list.xml")) == 2


# -- TLS (THREATS 25) --------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Simulator, Path]]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with Simulator(ssl_context=context, safety_timeout=10) as sim:
        sim.publish("/list.xml", LIST)
        yield sim, cert


def test_https_with_an_untrusted_certificate_is_refused_by_default(
    tls_server: tuple[Simulator, Path],
) -> None:
    sim, _ = tls_server
    with pytest.raises(FetchError, match="TLS") as caught:
        fetch_list(sim.url("/list.xml"))
    assert "ca_bundle" in caught.value.hint


def test_https_is_accepted_with_the_certificate_as_ca_bundle(
    tls_server: tuple[Simulator, Path],
) -> None:
    sim, cert = tls_server
    assert sim.base_url.startswith("https://")
    assert fetch_list(sim.url("/list.xml"), ca_bundle=cert).body == LIST


def test_a_redirect_from_https_to_http_is_refused(
    tls_server: tuple[Simulator, Path], server: Simulator
) -> None:
    sim, cert = tls_server
    sim.fault("/list.xml", redirect_to=server.url("/list.xml"))
    with pytest.raises(FetchError, match="changes the scheme"):
        fetch_list(sim.url("/list.xml"), ca_bundle=cert)
    assert server.requests == []


def test_a_missing_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CA bundle"):
        fetch_list("https://127.0.0.1:1/list.xml", ca_bundle=tmp_path / "missing.pem")
