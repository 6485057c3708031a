"""Every limit vmic enforces, in one place.

Byte caps, nesting depth, clock skew and version bounds are the knobs an
operator may need to turn; they live in one frozen dataclass (as python-tuf's
``ngclient/config.py`` does) so that tests and configuration change them in
one place and no module hides a constant of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_list_bytes: int = 16 * MiB
    """A signed list larger than this is refused before parsing (and cut off while it is
    fetched). 16 MiB is about 13,000 images in an Atom list; the largest real lists name a
    few hundred. Verifying a list takes about 13 times its size in memory while it runs
    (bench/verify_memory.py): about 210 MiB at this cap."""

    max_xml_depth: int = 32
    """Deepest element nesting accepted in a list (the profile needs 7)."""

    max_entries: int = 10_000
    """Most images (entries plus tombstones) one list may name."""

    max_text_chars: int = 65_536
    """Longest text value of any element or attribute in a list."""

    clock_skew: timedelta = timedelta(minutes=5)
    """How far in the future a list's `updated` may be."""

    max_version: int = 2**53 - 1
    """Highest list version; keeps versions exact in JSON and bounded."""

    max_version_step: int = 2**32
    """Largest jump in version from the last accepted list (fast-forward guard)."""

    # -- the network (site agent) ------------------------------------------------
    list_deadline: timedelta = timedelta(seconds=60)
    """Total time allowed to fetch one list, redirects and retries excluded."""

    read_timeout: timedelta = timedelta(seconds=30)
    """Longest wait for the next bytes of any response."""

    connect_timeout: timedelta = timedelta(seconds=15)
    """Longest wait for a TCP and TLS connection."""

    min_rate: int = 16 * 1024
    """Bytes per second a transfer must average (measured after ``rate_grace``)."""

    rate_grace: timedelta = timedelta(seconds=20)
    """How long a transfer may run before its average rate is checked."""

    download_deadline: timedelta = timedelta(hours=6)
    """Total time allowed for one image download."""

    retries: int = 2
    """Extra attempts after a failed fetch or download (with backoff)."""

    backoff: timedelta = timedelta(seconds=2)
    """Wait before the first retry; doubled for each further one."""

    max_redirects: int = 5
    """Redirects followed for one request."""

    fetch_concurrency: int = 8
    """Lists fetched at the same time (each body held up to ``max_list_bytes``)."""

    verify_concurrency: int = 2
    """Lists verified at the same time, each on a thread of its own. With the caps above a
    sync holds at most ``fetch_concurrency`` x 16 MiB of list bodies plus
    ``verify_concurrency`` x ~210 MiB of verification, about 550 MiB in all."""

    download_concurrency: int = 2
    """Images downloaded at the same time."""

    free_space_margin: int = 512 * MiB
    """Space that must stay free on the cache's file system after a download."""


DEFAULT_LIMITS = Limits()
