"""HTTP plumbing shared by list fetches and image downloads (THREATS 21, 24, 25).

One guarded aiohttp session per run: TLS verified against the system store or
a site CA bundle, proxies from the environment, no automatic decompression,
and a resolver that refuses link-local, unspecified, multicast and broadcast
addresses. Redirects are followed here, by hand, so that every hop is checked
(scheme kept, address allowed, a bounded count).

The same address rules hold behind a proxy. When ``http_proxy`` or
``https_proxy`` applies to a URL (``no_proxy`` included, by the standard
library's rules, which aiohttp's ``trust_env`` follows), the connector only
resolves the proxy's name; so :func:`open_url` first resolves the target's
name itself, with the same resolver, and refuses it as the connector would.
A name that does not resolve here (a site where only the proxy resolves
outside names) goes through the proxy, with a warning on the ``vmic.fetch``
logger once per host and run. Literal addresses are refused either way, as
aiohttp reads them (:func:`host_address`: yarl turns full-width digits into
an IPv4 literal, which aiohttp connects to without the resolver), and an IPv6
address is judged by the IPv4 address it carries as well (NAT64, 6to4,
mapped).

:class:`Pace` enforces a transfer's total deadline and minimum average rate;
aiohttp's own per-read timeout covers a silent server. Failures worth another
attempt (connection errors, timeouts, 5xx, 429) travel as :class:`Transient`,
which only :func:`with_retries` unwraps; everything else is raised as the
caller sees it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from feeds.model import check_url
from keys.errors import (
    FetchError,
    FetchTimeoutError,
    HTTPStatusError,
    ListFormatError,
    describe,
    outside_bytes,
)
from keys.limits import Limits
from site_agent.client_tls import tls_context
from site_agent.config import Identity

T = TypeVar("T")

REDIRECTS = frozenset({301, 302, 303, 307, 308})
READ_BUFFER = 1024 * 1024
"""aiohttp's per-response buffer; large enough that reads come in big pieces."""

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_REFUSED_HINT = "images and lists are never fetched from link-local or broadcast hosts"

_log = logging.getLogger("vmic.fetch")
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
"""What aiohttp refuses in a header value: control characters, bytes that were not UTF-8."""


class Transient(Exception):  # noqa: N818 -- a signal between attempts, not an error of the tree
    """An attempt failed in a way worth retrying; ``error`` is what the caller finally sees."""

    def __init__(self, error: FetchError) -> None:
        super().__init__(error.message)
        self.error = error


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/96"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NUMERIC = re.compile(r"[0-9a-fA-FxX.]{1,40}")
"""A host the C resolver may read as an IPv4 number ('2852039166', '0x7f.1', '127.1')."""


def forbidden_address(address: str) -> str | None:
    """Why vmic must not connect to this IP address (THREATS 24), or None if it may.

    An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4, Teredo, the old
    IPv4-compatible form) is judged by that IPv4 address too: a NAT64 gateway or 6to4
    relay would deliver the request there."""
    ip = ipaddress.ip_address(address)
    for each in (ip, *_embedded(ip)):
        if each.is_link_local:
            return "link-local"
        if each.is_unspecified or (
            isinstance(each, ipaddress.IPv4Address) and each in _THIS_NETWORK
        ):
            return "unspecified"
        if each.is_multicast:
            return "multicast"
        if each == _BROADCAST:
            return "broadcast"
    return None


def _embedded(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.append(ip.teredo[1])
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def host_address(url: str) -> str | None:
    """The IP address ``url``'s host is, or None for a name.

    Read as aiohttp will connect: yarl folds full-width digits and ideographic full
    stops into an IPv4 literal, which aiohttp then connects to without asking the
    resolver; and numeric forms the C resolver reads as IPv4 ('2852039166', '0x7f.1')
    count as the address they stand for."""
    try:
        host = URL(url).raw_host or ""
    except (ValueError, TypeError):
        host = urlsplit(url).hostname or ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _NUMERIC.fullmatch(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    return None


class GuardedResolver(AbstractResolver):
    """Wraps a resolver and refuses a name if any of its addresses is forbidden."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner
        self._assumed: set[str] = set()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return await self._resolve(host, port, family, via="")

    async def check_proxied(self, host: str, port: int, proxy: str) -> None:
        """Refuse ``host`` as :meth:`resolve` would, although ``proxy`` connects to it; a
        name that does not resolve here is let through (logged once per host)."""
        try:
            await self._resolve(
                host, port, socket.AF_UNSPEC, via=f" even through the proxy {proxy}"
            )
        except OSError as exc:
            if host not in self._assumed:
                self._assumed.add(host)
                _log.warning(
                    "could not resolve %s locally (%s); fetching through the proxy %s "
                    "and assuming its address is allowed",
                    host,
                    exc,
                    proxy,
                )

    async def _resolve(
        self, host: str, port: int, family: socket.AddressFamily, *, via: str
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = forbidden_address(result["host"])
            if reason is not None:
                raise FetchError(
                    f"{host} resolves to {result['host']}, a {reason} address: refused{via}",
                    hint=_REFUSED_HINT,
                )
        return results

    async def close(self) -> None:
        await self._inner.close()


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, keeping its resolver at hand for :func:`open_url`."""

    def __init__(self, *, ssl_context: ssl.SSLContext, guard: GuardedResolver) -> None:
        super().__init__(ssl=ssl_context, resolver=guard)
        self.guard = guard
        # The *_proxy variables, read once per run (reading them walks the whole environment),
        # and the no_proxy verdict once per host name
        self.proxies = getproxies()
        self._bypass: dict[str, bool] = {}

    def bypasses_proxy(self, host: str) -> bool:
        if host not in self._bypass:
            self._bypass[host] = bool(proxy_bypass(host))
        return self._bypass[host]


def open_session(
    limits: Limits,
    *,
    ca_bundle: Path | None,
    user_agent: str,
    resolver: AbstractResolver | None = None,
    identity: Identity | None = None,
) -> aiohttp.ClientSession:
    """The run's session; call inside a running event loop. ``resolver`` answers names
    (aiohttp's default resolver unless given); the address guard is put around it. With
    the site's ``identity``, its certificate is the TLS client certificate
    (:func:`site_agent.client_tls.tls_context`)."""
    context = tls_context(ca_bundle, identity)
    guard = GuardedResolver(DefaultResolver() if resolver is None else resolver)
    connector = _Connector(ssl_context=context, guard=guard)
    # No sock_read: aiohttp would re-arm a timer on every receive (thousands per GiB).
    # The read timeout is kept by open_url (headers) and read_some (body) instead.
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=limits.connect_timeout.total_seconds(),
        sock_connect=limits.connect_timeout.total_seconds(),
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        trust_env=True,
        auto_decompress=False,
        read_bufsize=READ_BUFFER,
        headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
    )


class Pace:
    """The clock of one attempt: a total deadline and, after a grace period, a minimum rate."""

    def __init__(self, limits: Limits, *, deadline: float, url: str) -> None:
        self._loop = asyncio.get_running_loop()
        self.url = url
        self.start = self._loop.time()
        self.deadline = deadline
        self.deadline_at = self.start + deadline
        self.grace_at = self.start + limits.rate_grace.total_seconds()
        self.min_rate = limits.min_rate
        self.read_timeout = limits.read_timeout.total_seconds()

    def next_failure(self, received: int) -> float:
        """Loop time at which the attempt fails unless more than ``received`` bytes arrive."""
        if self.min_rate <= 0:
            return self.deadline_at
        rate_at = max(self.grace_at, self.start + received / self.min_rate)
        return min(self.deadline_at, rate_at)

    def deadline_error(self) -> FetchTimeoutError:
        return FetchTimeoutError(f"{self.url}: not complete after {self.deadline:g} s")

    def failure(self, received: int) -> FetchTimeoutError:
        """The error for an attempt whose :meth:`next_failure` has passed."""
        if self.next_failure(received) >= self.deadline_at:
            return self.deadline_error()
        elapsed = max(self._loop.time() - self.start, 1e-9)
        return FetchTimeoutError(
            f"{self.url}: {received / elapsed:.0f} bytes/s after {elapsed:.1f} s, "
            f"below the minimum of {self.min_rate} bytes/s"
        )


def failed(url: str, exc: BaseException) -> BaseException:
    """The vmic error for an exception of aiohttp, yarl or the OS, wrapped if worth a retry."""
    if isinstance(exc, TimeoutError):
        return Transient(FetchTimeoutError(f"{url}: timed out ({type(exc).__name__})"))
    if isinstance(exc, aiohttp.ClientSSLError):
        refused = not isinstance(exc, aiohttp.ClientConnectorCertificateError)
        return FetchError(
            f"{url}: TLS connection refused ({type(exc).__name__})",
            hint="the server's certificate is not trusted; see the ca_bundle setting"
            + (" (or the server refused this site's [identity] certificate)" if refused else ""),
        )
    if isinstance(exc, aiohttp.InvalidURL):
        return FetchError(f"{url}: invalid URL ({type(exc).__name__})")
    if isinstance(exc, ValueError):  # yarl refusing a host name (IDNA), for one
        return FetchError(f"{url}: cannot be requested ({describe(exc)})")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Transient(FetchError(f"{url}: transfer broken off ({type(exc).__name__})"))
    if isinstance(exc, aiohttp.ClientConnectorError):
        # aiohttp's own text says "ssl:default" even for http://; name what failed instead
        cause, number = exc.os_error, exc.os_error.errno
        if isinstance(cause, socket.gaierror) and cause.strerror:
            reason = f"the name does not resolve: {cause.strerror}"
        elif isinstance(number, int) and number > 0:
            reason = os.strerror(number)
        else:
            reason = describe(cause)
        return Transient(
            FetchError(
                f"{url}: cannot connect to {exc.host}:{exc.port} ({reason})",
                hint="check the URL (host and port), that the server runs, and the network",
            )
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError) and url.startswith("http:"):
        return Transient(
            FetchError(
                f"{url}: the server closed the connection without an answer",
                hint="if the server speaks only HTTPS, write https://",
            )
        )
    return Transient(FetchError(f"{url}: connection failed ({type(exc).__name__}: {exc})"))


def about(url: str, message: str) -> str:
    """``message`` about ``url``, naming the URL once."""
    return message if message.startswith(url) else f"{url}: {message}"


def status_error(url: str, status: int) -> BaseException:
    error = HTTPStatusError(f"{url}: the server answered HTTP {status}")
    return Transient(error) if status >= 500 or status == 429 else error


def _checked(url: str) -> str:
    try:
        check_url(url, what="URL")
    except ListFormatError as exc:
        raise FetchError(
            exc.message.removeprefix("URL: "),
            hint="vmic fetches http:// and https:// URLs, without a user name or password",
        ) from exc
    address = host_address(url)
    if address is not None and (reason := forbidden_address(address)) is not None:
        raise FetchError(f"{url}: the host is {address}, a {reason} address: refused")
    return url  # a name: the resolver checks its addresses (or _guard_proxied does)


def _proxy_for(url: str, connector: _Connector) -> str | None:
    """The proxy a session with ``trust_env`` sends ``url`` through, as host:port without
    credentials, or None. The same calls as aiohttp's: on Linux, the ``*_proxy`` variables
    (``getproxies``) and ``no_proxy`` (``proxy_bypass``), read once per run."""
    parts = urlsplit(url)
    if connector.bypasses_proxy(parts.hostname or ""):
        return None
    proxy = connector.proxies.get(parts.scheme)
    if not proxy:
        return None
    return (urlsplit(proxy).netloc or proxy).rpartition("@")[2]


async def _guard_proxied(session: aiohttp.ClientSession, url: str) -> None:
    """Check the host of a request that goes through a proxy: the connector then resolves
    only the proxy's name, so the target's is resolved here, under the same rules."""
    connector = session.connector
    if not isinstance(connector, _Connector):
        raise TypeError("open_url needs a session made by open_session")
    proxy = _proxy_for(url, connector) if session.trust_env else None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if proxy is None or host_address(url) is not None:
        return  # the connector's resolver checks the name, or _checked the literal
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await connector.guard.check_proxied(host, port, proxy)


async def open_url(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    limits: Limits,
    pace: Pace,
) -> tuple[str, aiohttp.ClientResponse]:
    """Send a GET, following redirects under the rules of THREATS 24; returns the final URL
    and the open response (the caller releases it)."""
    current = _checked(url)
    loop = asyncio.get_running_loop()
    for _ in range(limits.max_redirects + 1):
        silent_at = loop.time() + pace.read_timeout  # the answer (headers) must start by then
        timer = asyncio.timeout_at(min(pace.deadline_at, silent_at))
        try:
            async with timer:
                await _guard_proxied(session, current)
                response = await session.get(current, headers=headers, allow_redirects=False)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            if timer.expired() and silent_at < pace.deadline_at:
                raise Transient(
                    FetchTimeoutError(f"{current}: no answer for {pace.read_timeout:g} s")
                ) from exc
            if timer.expired():
                raise Transient(pace.deadline_error()) from exc
            raise failed(current, exc) from exc
        if response.status not in REDIRECTS:
            return current, response
        location = response.headers.get("Location")
        response.release()
        if not location:
            raise HTTPStatusError(f"{current}: redirect ({response.status}) without a Location")
        with outside_bytes(f"{current}: redirect to an invalid URL", FetchError):
            joined = urljoin(current, location)
        target = _checked(joined)
        if urlsplit(target).scheme != urlsplit(current).scheme:
            raise FetchError(
                f"{current}: redirect to {target} changes the scheme: refused",
                hint="a server may not move a download between http and https",
            )
        current = target
    raise FetchError(f"{url}: more than {limits.max_redirects} redirects")


async def read_some(response: aiohttp.ClientResponse, pace: Pace, *, received: int) -> bytes:
    """The next bytes of a body (``b""`` at its end), within the attempt's deadline and rate."""
    failure_at = pace.next_failure(received)
    silent_at = asyncio.get_running_loop().time() + pace.read_timeout
    timer = asyncio.timeout_at(min(failure_at, silent_at))
    try:
        async with timer:
            return await response.content.readany()
    except TimeoutError as exc:
        if timer.expired() and failure_at <= silent_at:
            raise Transient(pace.failure(received)) from exc
        raise Transient(
            FetchTimeoutError(f"{pace.url}: no data for {pace.read_timeout:g} s")
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise failed(pace.url, exc) from exc


def sendable(value: str | None) -> str | None:
    """``value`` if it can go back to a server as a header value, else None.

    Validators (ETag, Last-Modified) are outside bytes sent back in later requests;
    aiohttp refuses control characters and bytes that were not UTF-8 (decoded with
    ``surrogateescape``), so such a value is not sent (the request is then unconditional)
    rather than failing every run.
    """
    return value if value and _UNSENDABLE.search(value) is None else None


def check_encoding(url: str, response: aiohttp.ClientResponse) -> None:
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise FetchError(f"{url}: the server sent a {encoding}-encoded body, not the bytes asked")


async def with_retries(limits: Limits, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` until it succeeds, retrying transient failures with backoff."""
    backoff = limits.backoff.total_seconds()
    for number in range(limits.retries + 1):
        try:
            return await attempt()
        except Transient as failure:
            if number == limits.retries:
                raise failure.error from failure.__cause__
        await asyncio.sleep(backoff * 2**number)
    raise AssertionError("unreachable")
