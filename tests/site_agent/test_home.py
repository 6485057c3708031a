"""The site home and `vmic site init`: what a home must hold, and creating it safely.

THREATS 32: a home whose database is missing or damaged while ``lists/`` shows
that lists were accepted before is never given a fresh, empty database (that
would forget the versions seen and reopen rollback). ``init_site`` only ever
adds what is missing; it never rewrites a config or a database.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keys.errors import ConfigError, StoreError
from site_agent import admin
from site_agent.config import DEFAULT_TRUST, load
from site_agent.home import DIRECTORIES, SiteHome, default_home
from site_agent.store import Store

LIST_FILE = "lists/6f2a7a52-2a36-4c57-9c52-3c1f5d1f3d51/3-" + "ab" * 32 + ".atom"

Snapshot = dict[str, tuple[bytes, int, int] | None]


def _snapshot(root: Path) -> Snapshot:
    """Every file (bytes, mtime, mode) and every folder under ``root``."""
    out: Snapshot = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_file():
            stat = path.stat()
            out[name] = (path.read_bytes(), stat.st_mtime_ns, stat.st_mode)
        else:
            out[name] = None
    return out


@pytest.fixture
def home(tmp_path: Path) -> SiteHome:
    return SiteHome(tmp_path / "site")


@pytest.fixture
def ready(home: SiteHome) -> SiteHome:
    admin.init_site(home, trust=None)
    return home


def _accepted_list(home: SiteHome) -> Path:
    path = home.root / LIST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"<feed>signed bytes of version 3</feed>")
    return path


# -- default_home ---------------------------------------------------------------------


def test_default_home_prefers_vmic_home_from_the_environment() -> None:
    assert default_home({"VMIC_HOME": "/srv/vmic"}) == Path("/srv/vmic")


def test_default_home_without_vmic_home_depends_on_the_user() -> None:
    expected = (
        Path("/var/lib/vmic") if os.geteuid() == 0 else Path.home() / ".local" / "share" / "vmic"
    )
    assert default_home({}) == expected
    assert default_home({"VMIC_HOME": ""}) == expected


# -- require_initialised ------------------------------------------------------------------


def test_require_initialised_refuses_a_folder_without_config(home: SiteHome) -> None:
    home.root.mkdir()

    with pytest.raises(ConfigError, match=r"no config\.toml") as caught:
        home.require_initialised()

    assert "vmic site init" in caught.value.hint
    assert list(home.root.iterdir()) == []


def test_require_initialised_refuses_a_missing_database(ready: SiteHome) -> None:
    ready.database.unlink()
    before = _snapshot(ready.root)

    with pytest.raises(StoreError, match="is missing") as caught:
        ready.require_initialised()

    assert "accepted lists before" not in caught.value.message
    assert "backup" in caught.value.hint
    assert _snapshot(ready.root) == before


def test_require_initialised_says_the_site_accepted_lists_before_when_lists_is_not_empty(
    ready: SiteHome,
) -> None:
    ready.database.unlink()
    _accepted_list(ready)
    before = _snapshot(ready.root)

    with pytest.raises(StoreError, match="although this site has accepted lists before"):
        ready.require_initialised()

    assert _snapshot(ready.root) == before
    assert not ready.database.exists()


@pytest.mark.parametrize("folder", DIRECTORIES)
def test_require_initialised_refuses_a_home_missing_a_folder(ready: SiteHome, folder: str) -> None:
    (ready.root / folder).rmdir()
    before = _snapshot(ready.root)

    with pytest.raises(StoreError, match=f"lacks {folder}$") as caught:
        ready.require_initialised()

    assert "vmic site init" in caught.value.hint
    assert _snapshot(ready.root) == before


def test_require_initialised_accepts_a_home_made_by_init(ready: SiteHome) -> None:
    ready.require_initialised()


def test_create_directories_makes_only_the_missing_ones(home: SiteHome) -> None:
    first = home.create_directories()
    (home.root / "cache" / "expired").rmdir()

    second = home.create_directories()

    assert home.root in first
    assert {p.relative_to(home.root).as_posix() for p in first if p != home.root} == set(
        DIRECTORIES
    )
    assert second == [home.expired]


# -- init_site ------------------------------------------------------------------------------


def test_init_creates_the_folders_the_config_and_the_database(home: SiteHome) -> None:
    trust = Path("/etc/vmic/trust")

    result = admin.init_site(home, trust=trust)

    assert result.config_written
    assert result.database_created
    assert result.home == home.root
    for folder in DIRECTORIES:
        assert (home.root / folder).is_dir()
    assert home.config.stat().st_mode & 0o777 == 0o640
    assert load(home.config).trust_dir == trust
    with Store.open(home.database) as store:
        assert store.subscriptions() == []
    home.require_initialised()


def test_init_a_second_time_changes_nothing(ready: SiteHome) -> None:
    _accepted_list(ready)
    before = _snapshot(ready.root)

    result = admin.init_site(ready, trust=None)

    assert result.created == ()
    assert not result.config_written
    assert not result.database_created
    assert _snapshot(ready.root) == before


def test_init_adds_a_missing_folder_and_touches_nothing_else(ready: SiteHome) -> None:
    ready.quarantine.rmdir()
    before = _snapshot(ready.root)

    result = admin.init_site(ready, trust=None)

    assert result.created == (ready.quarantine,)
    after = _snapshot(ready.root)
    assert after.pop("cache/quarantine") is None
    assert after == before


def test_init_never_overwrites_an_existing_config(home: SiteHome) -> None:
    home.root.mkdir()
    custom = b'# ours\n[trust]\ndirectory = "/opt/trust"\ncrl = "if-present"\n'
    home.config.write_bytes(custom)

    result = admin.init_site(home, trust=None)

    assert not result.config_written
    assert result.database_created
    assert home.config.read_bytes() == custom


def test_init_refuses_trust_when_the_config_exists(ready: SiteHome) -> None:
    before = _snapshot(ready.root)

    with pytest.raises(ConfigError, match="--trust was not applied"):
        admin.init_site(ready, trust=Path("/elsewhere"))

    assert _snapshot(ready.root) == before
    assert load(ready.config).trust_dir == Path(DEFAULT_TRUST)


def test_init_refuses_to_create_a_database_when_lists_hold_files(ready: SiteHome) -> None:
    ready.database.unlink()
    _accepted_list(ready)
    before = _snapshot(ready.root)

    with pytest.raises(ConfigError, match="has accepted lists but no database") as caught:
        admin.init_site(ready, trust=None)

    assert "backup" in caught.value.hint
    assert not ready.database.exists()
    assert _snapshot(ready.root) == before


def test_init_refuses_a_damaged_database_and_leaves_it_as_it_is(ready: SiteHome) -> None:
    ready.database.write_bytes(b"not SQLite at all\n" * 512)
    before = _snapshot(ready.root)

    with pytest.raises(StoreError, match="not a database"):
        admin.init_site(ready, trust=None)

    assert _snapshot(ready.root) == before


def test_init_refuses_a_zero_byte_database_when_lists_hold_files(ready: SiteHome) -> None:
    # vmic.db cut to nothing next to accepted lists is a lost database, like a missing one:
    # init must not fill it with an empty schema (THREATS 32).
    ready.database.write_bytes(b"")
    _accepted_list(ready)

    with pytest.raises((ConfigError, StoreError)):
        admin.init_site(ready, trust=None)

    assert ready.database.read_bytes() == b""
