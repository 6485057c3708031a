"""Where the ``vmic`` loggers go: the site log for `vmic sync`, stderr for the rest.

Cron mails stderr and forgets; the site log (``vmic.log`` in the site home,
rotated at 1 MiB, five old files kept) keeps every problem of every run with
its time, and the traceback of any failure that is a bug in vmic rather than
a refused input. `vmic sync` prints its problems itself (silent when all is
well), so its log records go to the file only; other commands show warnings
(a proxy assumption, say) on stderr. Only the CLI configures logging
(STYLE): the site agent writes to the ``vmic`` loggers, never prints. Log
lines quote list data, so they are escaped as the terminal output is.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from io import TextIOWrapper
from logging.handlers import RotatingFileHandler
from typing import TextIO

from federation.cli.common import shown
from keys.errors import VmicError
from site_agent.home import SiteHome

MAX_BYTES = 1024 * 1024
BACKUPS = 5
LOG_MODE = 0o640
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Escaped(logging.Formatter):
    """A record is one line: its message escaped whole (list data can hold line feeds that
    would forge a line of their own, and control characters); a traceback follows on
    lines of its own, each escaped."""

    def format(self, record: logging.LogRecord) -> str:
        plain = logging.makeLogRecord(record.__dict__)
        plain.msg, plain.args = shown(record.getMessage()), None
        plain.exc_info = plain.exc_text = plain.stack_info = None
        lines = [super().format(plain)]
        if record.exc_info:
            lines.extend(self.formatException(record.exc_info).split("\n"))
        if record.stack_info:
            lines.extend(self.formatStack(record.stack_info).split("\n"))
        return "\n".join([lines[0], *(shown(line) for line in lines[1:])])


class _SiteLogFile(RotatingFileHandler):
    """The rotating site log, each file made readable by the site's group only (0640): it
    quotes URLs, peers and problems of a site's trust."""

    def _open(self) -> TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.baseFilename, flags, LOG_MODE)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def _warning_to_log(  # noqa: PLR0917 - the signature of warnings.showwarning
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A library's warning (a deprecation, say) is not the admin's business: one line in
    the site log, never Python's display of a source line on stderr."""
    logging.getLogger("vmic.warnings").info(
        "%s from %s:%d: %s", category.__name__, filename, lineno, message
    )


@contextmanager
def command_logging(*, to_stderr: bool) -> Iterator[None]:
    """For one command: never Python's fallback output; warnings on stderr if asked.

    Python warnings raised while the command runs go to the ``vmic.warnings``
    logger (the site log, when the command keeps one) instead of stderr."""
    logger = logging.getLogger("vmic")
    handler: logging.Handler = logging.NullHandler()
    if to_stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Escaped("vmic: %(message)s"))
        handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    shown_before = warnings.showwarning
    warnings.showwarning = _warning_to_log
    try:
        yield
    finally:
        warnings.showwarning = shown_before
        logger.removeHandler(handler)


@contextmanager
def site_log(home: SiteHome) -> Iterator[None]:
    """Send the ``vmic`` loggers (INFO and above) to the site log while the block runs.

    A home whose log cannot be opened (permissions, a read-only disk) still
    syncs: the CLI says so once on stderr and the block runs without a file.
    """
    logger = logging.getLogger("vmic")
    if not home.root.is_dir():  # not a site home: the command says so itself
        yield
        return
    try:
        handler = _SiteLogFile(home.log, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError as exc:
        print(f"vmic: cannot write the site log {home.log}: {exc.strerror}", file=sys.stderr)
        yield
        return
    handler.setFormatter(_Escaped(FORMAT))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    except VmicError as error:  # the whole run stopped: say so in the log too
        logger.error("stopped: %s", error.message)  # noqa: TRY400 - a refusal, not a bug: no traceback
        raise
    except Exception:
        logger.exception("stopped by a failure of vmic itself")
        raise
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
