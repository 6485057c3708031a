"""What every vmic command shares: exit codes, error reporting, time and output helpers.

Exit codes are named (:class:`ExitCode`); each error class of the tree in
:mod:`keys.errors` maps to one code and one short label, so a script can tell
a bad signature from an expired list without reading messages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, TextIO

from feeds.verify import ListFormat
from keys.errors import (
    CertificateError,
    ConfigError,
    FetchError,
    FreshnessError,
    IntegrityError,
    ListFormatError,
    LockedError,
    PolicyError,
    RevokedError,
    RollbackError,
    SignatureError,
    StoreError,
    UntrustedSignerError,
    VerificationError,
    VmicError,
    WrongListError,
)


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    MALFORMED = 4
    SIGNATURE = 5
    UNTRUSTED_CHAIN = 6
    REVOKED = 7
    WRONG_ENDORSER = 8
    EXPIRED = 9
    WRONG_LIST = 10
    ROLLBACK = 11
    FETCH = 12
    INTEGRITY = 13
    STORE = 14
    LOCKED = 15
    PROBLEMS = 16
    POLICY = 17
    INTERRUPTED = 130


# Most specific first: the first matching class decides code and label.
_ERROR_CODES: tuple[tuple[type[VmicError], ExitCode, str], ...] = (
    (ConfigError, ExitCode.CONFIG, "configuration"),
    (ListFormatError, ExitCode.MALFORMED, "malformed"),
    (SignatureError, ExitCode.SIGNATURE, "signature"),
    (RevokedError, ExitCode.REVOKED, "revoked"),
    (CertificateError, ExitCode.UNTRUSTED_CHAIN, "untrusted chain"),
    (UntrustedSignerError, ExitCode.WRONG_ENDORSER, "wrong endorser"),
    (FreshnessError, ExitCode.EXPIRED, "expired"),
    (WrongListError, ExitCode.WRONG_LIST, "wrong list"),
    (RollbackError, ExitCode.ROLLBACK, "rollback"),
    (VerificationError, ExitCode.SIGNATURE, "not trusted"),
    (FetchError, ExitCode.FETCH, "fetch"),
    (IntegrityError, ExitCode.INTEGRITY, "integrity"),
    (StoreError, ExitCode.STORE, "store"),
    (LockedError, ExitCode.LOCKED, "locked"),
    (PolicyError, ExitCode.POLICY, "policy"),
)


def classify(error: VmicError) -> tuple[ExitCode, str]:
    for cls, code, label in _ERROR_CODES:
        if isinstance(error, cls):
            return code, label
    return ExitCode.FAILURE, "error"


def report_error(error: VmicError, *, stream: TextIO | None = None) -> ExitCode:
    """One line naming the kind of failure and the reason, then the hint."""
    out = stream or sys.stderr
    code, label = classify(error)
    print(f"vmic: {label}: {error.message}", file=out)
    if error.hint:
        print(f"  hint: {error.hint}", file=out)
    return code


def error_json(error: VmicError) -> dict[str, Any]:
    code, label = classify(error)
    return {
        "ok": False,
        "error": label,
        "exit_code": int(code),
        "message": error.message,
        "hint": error.hint,
    }


def utcnow() -> datetime:
    """The one place the CLI reads the clock; everything below takes `now` as an argument."""
    return datetime.now(UTC).replace(microsecond=0)


def parse_time_arg(text: str) -> datetime:
    """An RFC 3339 time (``2026-11-26T12:00:00Z``) or a date (``2026-11-26``, midnight UTC)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"{text!r} is not a time", hint="write 2026-11-26T12:00:00Z or 2026-11-26"
        ) from exc
    if value.tzinfo is None:
        if "T" in text or " " in text.strip():
            raise ConfigError(f"time {text!r} needs a time zone (e.g. a trailing Z)")
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def human_size(size: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value = float(size)
    for unit in units:
        if value < 1024 or unit == units[-1]:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False))


class Progress:
    """A one-line progress bar on a terminal's stderr; silent when not a terminal."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() and total > 0
        self.total = total
        self.label = label
        self.done = 0
        self._last = 0.0

    def update(self, amount: int) -> None:
        self.done += amount
        if not self.enabled:
            return
        if self.done >= self.total:
            self._draw()
            self.close()
            return
        moment = time.monotonic()
        if moment - self._last < 0.1:
            return
        self._last = moment
        self._draw()

    def _draw(self) -> None:
        share = min(self.done / self.total, 1.0)
        bar = "#" * int(share * 30)
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {share:4.0%} "
            f"{human_size(self.done)}/{human_size(self.total)}"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    @property
    def callback(self) -> Callable[[int], None]:
        return self.update


def add_format_option(parser: argparse.ArgumentParser) -> None:
    """``--format auto|atom|hepix``: which kind of signed list to expect."""
    parser.add_argument(
        "--format",
        choices=["auto", *(f.value for f in ListFormat)],
        default="auto",
        help="atom (XML signature) or hepix (JSON signed as S/MIME); default: told from "
        "the first bytes",
    )


def format_from(args: argparse.Namespace) -> ListFormat | None:
    return None if args.format == "auto" else ListFormat(args.format)
