"""What the simulator serves at one path, the HTTP rules it applies, and its fault switches.

A :class:`Resource` is a published body (bytes, or a file read on demand)
with its validators; it answers conditional requests (If-None-Match,
If-Modified-Since) and single byte ranges guarded by If-Range, as RFC 9110
describes. :class:`Faults` holds the switches of :meth:`Simulator.fault`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """The misbehaviour of one path; each field is a keyword of ``Simulator.fault``."""

    status: int | None = None
    """Answer with this status and a short text body."""
    stall_after: int | None = None
    """Send this many body bytes, then nothing until the client goes away."""
    drip: int | None = None
    """Send the body at this many bytes per second."""
    truncate_at: int | None = None
    """Close the connection after this many body bytes."""
    overrun: int | None = None
    """Send this many bytes past the body (no Content-Length unless ``content_length``)."""
    no_content_length: bool = False
    """Chunked transfer encoding, no Content-Length."""
    ignore_range: bool = False
    """Always 200 with the full body."""
    wrong_content_range: bool = False
    """Answer a range request with a 206 for another range than the one asked."""
    redirect_to: str | None = None
    """302 to this URL."""
    content_length: int | None = None
    """Declare this Content-Length whatever is sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    body: bytes | None = None
    file: Path | None = None
    etag: str | None = None
    last_modified: datetime | None = None

    @property
    def size(self) -> int:
        if self.body is not None:
            return len(self.body)
        assert self.file is not None
        return self.file.stat().st_size

    def read(self, position: int, count: int) -> bytes:
        if self.body is not None:
            return self.body[position : position + count]
        assert self.file is not None
        with self.file.open("rb") as handle:
            handle.seek(position)
            return handle.read(count)

    def validators(self) -> dict[str, str]:
        headers = {}
        if self.etag is not None:
            headers["ETag"] = self.etag
        if self.last_modified is not None:
            headers["Last-Modified"] = http_date(self.last_modified)
        return headers

    def not_modified(self, headers: Mapping[str, str]) -> bool:
        """Whether a conditional GET gets a 304 (If-None-Match wins over If-Modified-Since)."""
        if_none_match = headers.get("If-None-Match")
        if if_none_match is not None:
            if self.etag is None:
                return False
            tags = {_weak(tag.strip()) for tag in if_none_match.split(",")}
            return "*" in tags or _weak(self.etag) in tags
        since = parse_http_date(headers.get("If-Modified-Since", ""))
        return since is not None and self.last_modified is not None and self.last_modified <= since

    def if_range_holds(self, value: str) -> bool:
        """If-Range: a strong ETag that matches exactly, or the exact Last-Modified date."""
        if value.startswith(('"', "W/")):
            return self.etag is not None and not value.startswith("W/") and value == self.etag
        return self.last_modified is not None and value == http_date(self.last_modified)


def parse_range(headers: Mapping[str, str], resource: Resource) -> tuple[int, int] | None:
    """The byte range asked (start, end exclusive), or None for the whole body."""
    text = headers.get("Range")
    if text is None:
        return None
    match = _RANGE.fullmatch(text.strip())
    if match is None:
        return None
    if_range = headers.get("If-Range")
    if if_range is not None and not resource.if_range_holds(if_range):
        return None
    start = int(match[1])
    end = resource.size if not match[2] else min(int(match[2]) + 1, resource.size)
    if match[2] and end <= start and start < resource.size:
        return None
    return start, end


def http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def parse_http_date(text: str) -> datetime | None:
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None


def _weak(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag
