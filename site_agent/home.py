"""The site home: where a site keeps everything, and how it is found and created.

Layout (DESIGN §5)::

    config.toml              the site's settings (commented; `vmic hooks` edits it)
    vmic.db                  SQLite: subscriptions, accepted lists, images, events
    lists/<list-id>/<version>-<sha256>.atom (or .smime for a HEPiX list)
                             the exact bytes of every list version accepted
    cache/partial/           downloads in progress (with .resume sidecars)
    cache/images/sha512/<hex>
                             verified image bytes, named by their SHA-512
    cache/expired/           withdrawn images, kept for a while, then deleted
    cache/quarantine/        cached files that failed a re-hash
    cache/blocks/<hex>       the block index of a held image (SCHEMA §13), made
                             on demand
    exports/                 the site's export for peers (federation)
    evidence/<alarm>/        the two signed copies behind an alarm (`vmic alarms`),
                             made when one is raised
    lock                     held by the run that works on the site
    vmic.log                 the site log: every problem of every sync, with a
                             traceback where vmic itself failed (rotated)

The home is ``--home``, else ``$VMIC_HOME``, else ``/var/lib/vmic`` for root
and ``~/.local/share/vmic`` for others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from keys.errors import ConfigError, StoreError

DIRECTORIES = (
    "lists",
    "cache/partial",
    "cache/images/sha512",
    "cache/expired",
    "cache/quarantine",
    "exports",
)


def default_home(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("VMIC_HOME"):
        return Path(env["VMIC_HOME"])
    if os.geteuid() == 0:
        return Path("/var/lib/vmic")
    return Path.home() / ".local" / "share" / "vmic"


@dataclass(frozen=True, slots=True)
class SiteHome:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def database(self) -> Path:
        return self.root / "vmic.db"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def log(self) -> Path:
        return self.root / "vmic.log"

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    @property
    def evidence(self) -> Path:
        return self.root / "evidence"

    @property
    def partial(self) -> Path:
        return self.root / "cache" / "partial"

    @property
    def images(self) -> Path:
        return self.root / "cache" / "images" / "sha512"

    @property
    def checked(self) -> Path:
        """Stamps of cache files hashed while they were downloaded (see Cache.vouched)."""
        return self.root / "cache" / "checked"

    @property
    def blocks(self) -> Path:
        """Block indexes of held images, named by the image's SHA-512 (see site_agent.delta)."""
        return self.root / "cache" / "blocks"

    @property
    def expired(self) -> Path:
        return self.root / "cache" / "expired"

    @property
    def quarantine(self) -> Path:
        return self.root / "cache" / "quarantine"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    def create_directories(self) -> list[Path]:
        """Make the folders that are missing (mode 0750); return the ones made."""
        made = []
        for name in ("", *DIRECTORIES):
            path = self.root / name
            if not path.is_dir():
                try:
                    path.mkdir(mode=0o750, parents=True)
                except OSError as exc:
                    raise ConfigError(f"cannot create {path}: {exc.strerror}") from exc
                made.append(path)
        return made

    def require_initialised(self) -> None:
        """Refuse to work on a folder that `vmic site init` has not prepared."""
        if not self.config.is_file():
            raise ConfigError(
                f"{self.root} is not a vmic site home (no config.toml)",
                hint=f"run `vmic site init --home {self.root}`, or give --home / VMIC_HOME",
            )
        if not self.database.is_file():
            history = any(self.lists.iterdir()) if self.lists.is_dir() else False
            raise StoreError(
                f"the database {self.database} is missing"
                + (" although this site has accepted lists before" if history else ""),
                hint="restore it from a backup; starting over empty would forget which "
                "list versions were seen (rollback protection)",
            )
        missing = [name for name in DIRECTORIES if not (self.root / name).is_dir()]
        if missing:
            raise StoreError(
                f"{self.root} lacks {', '.join(missing)}",
                hint=f"`vmic site init --home {self.root}` adds what is missing",
            )
