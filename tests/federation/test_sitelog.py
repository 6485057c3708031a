"""The site log: one line per record whatever the list data says, readable by the site only."""

from __future__ import annotations

import logging
import os
import re
import stat
import warnings
from pathlib import Path

import pytest

from federation.cli.sitelog import (
    BACKUPS,
    LOG_MODE,
    MAX_BYTES,
    _warning_to_log,
    command_logging,
    site_log,
)
from site_agent.home import SiteHome

FORGED = "Evil list\n2026-01-01 00:00:00,000 ERROR vmic.sync: all lists verified\x1b[2K"
_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ vmic[.\w]*: ")


def _home(tmp_path: Path) -> SiteHome:
    home = SiteHome(tmp_path / "site")
    home.root.mkdir()
    return home


def test_a_line_feed_in_list_data_cannot_forge_a_log_line(tmp_path: Path) -> None:
    home = _home(tmp_path)
    with site_log(home):
        logging.getLogger("vmic.sync").warning("list %s refused", FORGED)
        logging.getLogger("vmic.sync").info("the next record")

    lines = home.log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert all(_LINE.match(line) for line in lines)
    assert "Evil list\\x0a2026-01-01 00:00:00,000 ERROR" in lines[0]
    assert "\x1b" not in home.log.read_text(encoding="utf-8")
    assert "\\x1b[2K" in lines[0]


def _fail(key: str) -> None:
    raise KeyError(key)


def test_a_traceback_follows_its_record_and_each_of_its_lines_is_escaped(tmp_path: Path) -> None:
    home = _home(tmp_path)
    with site_log(home):
        try:
            _fail(FORGED)
        except KeyError:
            logging.getLogger("vmic.sync").exception("a bug while reading %s", FORGED)

    lines = home.log.read_text(encoding="utf-8").splitlines()
    assert _LINE.match(lines[0])
    assert lines[1] == "Traceback (most recent call last):"
    assert not any(_LINE.match(line) for line in lines[1:])  # nothing looks like a record
    assert "\x1b" not in "".join(lines)


def test_the_log_and_its_rotations_are_not_readable_by_others(tmp_path: Path) -> None:
    home = _home(tmp_path)
    old = os.umask(0o022)
    try:
        with site_log(home):
            for _ in range(3):
                logging.getLogger("vmic.sync").warning("%s", "x" * (MAX_BYTES // 2))
    finally:
        os.umask(old)

    logs = sorted(home.root.glob("vmic.log*"))
    assert 2 <= len(logs) <= BACKUPS + 1  # rotated at least once
    for path in logs:
        assert stat.S_IMODE(path.stat().st_mode) == LOG_MODE


def test_a_library_warning_goes_to_the_site_log_not_to_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    home = SiteHome(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with command_logging(to_stderr=True), site_log(home):
            warnings.warn("old API, use the new one", DeprecationWarning, stacklevel=1)
        assert warnings.showwarning is not _warning_to_log  # put back after the command

    assert capfd.readouterr() == ("", "")
    text = home.log.read_text()
    assert "INFO vmic.warnings: DeprecationWarning from " in text
    assert text.rstrip().endswith("old API, use the new one")
