"""The site agent's network client: conditional, bounded list fetches and verified downloads.

A :class:`Fetcher` holds one aiohttp session for a whole run. ``fetch_list``
sends a conditional GET and returns the body under a byte cap (THREATS 6)
within a deadline and a minimum rate; ``download`` fills a partial file with
exactly the bytes a signed list promises (THREATS 19-23, in
:mod:`site_agent.download`). Both follow redirects by hand and refuse
forbidden addresses, also behind a proxy, and scheme changes (THREATS 24)
and verify TLS (THREATS 25), through :mod:`site_agent.transport`. Transient failures
(connection errors, timeouts, 5xx, 429) are retried ``limits.retries`` times
with exponential backoff; 4xx answers, size and digest errors never are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver

from keys.errors import FetchError, TooLargeError
from keys.limits import DEFAULT_LIMITS, Limits
from site_agent.config import Identity
from site_agent.download import download as _download
from site_agent.transport import (
    Pace,
    check_encoding,
    open_session,
    open_url,
    read_some,
    sendable,
    status_error,
    with_retries,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Validators:
    """What a conditional GET sends back: the ETag and Last-Modified of the last response."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListFetch:
    """The outcome of one list fetch."""

    url: str
    """Final URL, after redirects."""
    not_modified: bool
    """True on a 304 (``body`` is then ``b""``)."""
    body: bytes
    validators: Validators
    """From this response; on a 304, the ones sent unless the server sent new ones."""


class Fetcher:
    """One aiohttp ClientSession for a whole run (use as an async context manager).

    ``resolver`` answers host names in place of aiohttp's default resolver (tests map
    names to loopback addresses with it); the address guard applies to its answers.
    """

    def __init__(
        self,
        *,
        limits: Limits = DEFAULT_LIMITS,
        ca_bundle: Path | None = None,
        user_agent: str = "vmic",
        resolver: AbstractResolver | None = None,
        identity: Identity | None = None,
    ) -> None:
        """``identity``: the site's certificate, presented to servers that ask for one
        (peers that serve peers only, :mod:`federation.peer_tls`)."""
        self.limits = limits
        self._ca_bundle = ca_bundle
        self._identity = identity
        self._user_agent = user_agent
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        if self._session is not None:
            raise RuntimeError("Fetcher is already open")
        self._session = open_session(
            self.limits,
            ca_bundle=self._ca_bundle,
            user_agent=self._user_agent,
            resolver=self._resolver,
            identity=self._identity,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the Fetcher inside `async with`")
        return self._session

    async def fetch_list(self, url: str, *, validators: Validators | None = None) -> ListFetch:
        """GET a list conditionally; its body is at most ``limits.max_list_bytes`` long."""
        sent = validators or Validators()
        return await with_retries(self.limits, lambda: self._fetch_list_once(url, sent))

    async def download(
        self,
        url: str,
        *,
        partial: Path,
        size: int,
        sha512: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Fill ``partial`` with exactly ``size`` bytes whose SHA-512 is ``sha512``, fsynced.

        Resumes a partial left by an earlier attempt when the server allows it
        (``partial`` + ".resume" holds what is needed). ``progress`` is called
        on the event loop with the length of each piece received.
        """
        await _download(
            self.session,
            self.limits,
            url=url,
            partial=partial,
            size=size,
            sha512=sha512,
            progress=progress,
        )

    async def _fetch_list_once(self, url: str, sent: Validators) -> ListFetch:
        limits = self.limits
        headers = {}
        if (etag := sendable(sent.etag)) is not None:
            headers["If-None-Match"] = etag
        if (last_modified := sendable(sent.last_modified)) is not None:
            headers["If-Modified-Since"] = last_modified
        pace = Pace(limits, deadline=limits.list_deadline.total_seconds(), url=url)
        final, response = await open_url(
            self.session, url, headers=headers, limits=limits, pace=pace
        )
        pace.url = final
        try:
            received = Validators(
                etag=response.headers.get("ETag"),
                last_modified=_strong_last_modified(response.headers),
            )
            if response.status == 304 and headers:
                return ListFetch(
                    url=final,
                    not_modified=True,
                    body=b"",
                    validators=Validators(
                        etag=received.etag or sent.etag,
                        last_modified=received.last_modified or sent.last_modified,
                    ),
                )
            if response.status != 200:
                raise status_error(final, response.status)
            check_encoding(final, response)
            body = await _read_capped(response, pace, cap=limits.max_list_bytes)
            return ListFetch(url=final, not_modified=False, body=body, validators=received)
        finally:
            response.release()


_SETTLED = 60  # seconds between Last-Modified and Date for the former to be strong


def _strong_last_modified(headers: Mapping[str, str]) -> str | None:
    """Last-Modified, when it can tell versions apart (RFC 9110 §8.8.2.2).

    Dates have a resolution of one second: a list re-signed within the second
    it was fetched would look unmodified. As HTTP caches do, a Last-Modified
    less than 60 seconds before the response's Date is not used as a validator.
    """
    value = headers.get("Last-Modified")
    date = headers.get("Date")
    if value is None or date is None:
        return None
    try:
        modified, sent = parsedate_to_datetime(value), parsedate_to_datetime(date)
        age = (sent - modified).total_seconds()  # TypeError: one has a zone, one not (-0000)
    except (TypeError, ValueError):
        return None
    return value if age >= _SETTLED else None


async def _read_capped(response: aiohttp.ClientResponse, pace: Pace, *, cap: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > cap:
        raise TooLargeError(f"{pace.url}: {declared} bytes declared, more than {cap} allowed")
    body = bytearray()
    while chunk := await read_some(response, pace, received=len(body)):
        if len(body) + len(chunk) > cap:
            raise TooLargeError(f"{pace.url}: more than {cap} bytes sent")
        body += chunk
    if declared is not None and len(body) != declared:
        raise FetchError(f"{pace.url}: {len(body)} bytes received, {declared} declared")
    return bytes(body)
