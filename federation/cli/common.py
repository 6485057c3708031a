"""What every vmic command shares: exit codes, error reporting, time and output helpers.

Exit codes are named (:class:`ExitCode`); each error class of the tree in
:mod:`keys.errors` maps to one code and one short label, so a script can tell
a bad signature from an expired list without reading messages.

Text from outside (titles, summaries, DNs, URLs, reasons, error messages that
quote them) reaches the terminal only through :func:`shown`, and JSON only
through :func:`print_json`: neither lets a list move the cursor, rewrite a
line, change the terminal's state or reorder what is displayed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TextIO

from keys.errors import (
    CertificateError,
    CloudError,
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

if TYPE_CHECKING:
    from feeds.verify import ListFormat


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
    CLOUD = 18
    ALARM = 19
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
    (CloudError, ExitCode.CLOUD, "cloud"),
)


def classify(error: VmicError) -> tuple[ExitCode, str]:
    for cls, code, label in _ERROR_CODES:
        if isinstance(error, cls):
            return code, label
    return ExitCode.FAILURE, "error"


def report_error(error: VmicError, *, stream: TextIO | None = None) -> ExitCode:
    """One line naming the kind of failure and the reason, then the hint.

    Messages and hints quote titles, DNs and URLs from lists, so both go out
    through :func:`shown` (no message of vmic's own relies on a line break)."""
    out = stream or sys.stderr
    code, label = classify(error)
    print(f"vmic: {label}: {shown(error.message)}", file=out)
    if error.hint:
        print(f"  hint: {shown(error.hint)}", file=out)
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


# Characters that change what a terminal shows beyond themselves. Category Cc is C0
# (tab, LF, CR, ESC, BS, ...), DEL and C1 (U+009B is an 8-bit CSI): exactly U+0000-U+001F and
# U+007F-U+009F, a set Unicode's stability policy fixes for good. Then the bidi embedding,
# override and isolate controls (Trojan Source, CVE-2021-42574) and the line and paragraph
# separators, which some terminals and editors take for line breaks.
_CONTROL = (*range(0x20), *range(0x7F, 0xA0))
_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
_SEPARATORS = (0x2028, 0x2029)
_SHOWN = str.maketrans(
    {
        code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        for code in (*_CONTROL, *_BIDI, *_SEPARATORS)
    }
)
# json.dumps escapes C0 itself but writes DEL, C1, bidi controls and U+2028/9 raw.
_JSON_SAFE = str.maketrans(
    {code: f"\\u{code:04x}" for code in (*range(0x7F, 0xA0), *_BIDI, *_SEPARATORS)}
)


def shown(text: object) -> str:
    r"""``text`` for a terminal, each control character written as a visible escape.

    ESC shows as ``\x1b``, a line feed as ``\x0a``, a right-to-left override
    as ``\u202e``; everything else (accented and non-Latin letters, a
    backslash) is shown as it is. Apply it to each value from outside (list
    data, error messages quoting it, DNs), never to a line the CLI lays out
    itself: its own line breaks and indentation stay.
    """
    return str(text).translate(_SHOWN)


def print_json(data: object) -> None:
    r"""Indented JSON that keeps non-ASCII text readable (``"Müller"``) but writes DEL,
    C1, bidi controls and U+2028/9 as ``\uXXXX``: still valid JSON, and ``json.loads``
    gives back ``data``."""
    print(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False).translate(_JSON_SAFE))


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
    from feeds.verify import ListFormat  # noqa: PLC0415 - only commands that read lists

    parser.add_argument(
        "--format",
        choices=["auto", *(f.value for f in ListFormat)],
        default="auto",
        help="atom (XML signature) or hepix (JSON signed as S/MIME); default: told from "
        "the first bytes",
    )


def format_from(args: argparse.Namespace) -> ListFormat | None:
    from feeds.verify import ListFormat  # noqa: PLC0415

    return None if args.format == "auto" else ListFormat(args.format)
