"""Editing `config.toml` from the command line, keeping the admin's comments and layout.

tomlkit edits the document in place; each edit is written atomically and the
result is loaded again, so a command never leaves a configuration that
`vmic sync` would refuse.
"""

from __future__ import annotations

from pathlib import Path

import tomlkit
from tomlkit.items import AoT

from keys.errors import ConfigError
from keys.fileio import write_atomic
from site_agent.config import Hook, document, load


def add_hook(path: Path, hook: Hook) -> None:
    doc = document(path)
    existing = load(path).hooks
    if any(h.name == hook.name for h in existing):
        raise ConfigError(f"a hook named {hook.name} exists already", hint="remove it first")
    table = tomlkit.table()
    table["name"] = hook.name
    table["on"] = list(hook.events)
    table["command"] = list(hook.command)
    table["timeout_seconds"] = hook.timeout
    if hook.vmcatcher_env:
        table["vmcatcher_env"] = True
    if "hooks" not in doc:
        doc.append("hooks", tomlkit.aot())
    hooks = doc["hooks"]
    if not isinstance(hooks, AoT):
        raise ConfigError(f"{path}: hooks must be an array of [[hooks]] tables")
    hooks.append(table)
    write_atomic(path, tomlkit.dumps(doc).encode("utf-8"), mode=0o640)


def remove_hook(path: Path, name: str) -> None:
    doc = document(path)
    hooks = doc.get("hooks")
    if isinstance(hooks, AoT):
        for index, table in enumerate(hooks):
            if table.get("name") == name:
                del hooks[index]
                if not len(hooks):
                    del doc["hooks"]
                write_atomic(path, tomlkit.dumps(doc).encode("utf-8"), mode=0o640)
                return
    raise ConfigError(f"no hook named {name}", hint="see `vmic hooks list`")


def set_identity(path: Path, *, cert: Path, key: Path, chain: Path | None, base_url: str) -> None:
    """Write [identity] (keeping the rest of the file and its comments)."""
    doc = document(path)
    if "identity" not in doc:
        doc.append("identity", tomlkit.table())
    table = doc["identity"]
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [identity] must be a table")
    table["cert"] = str(cert)
    table["key"] = str(key)
    if chain is not None:
        table["chain"] = str(chain)
    elif "chain" in table:
        del table["chain"]
    table["base_url"] = base_url
    write_atomic(path, tomlkit.dumps(doc).encode("utf-8"), mode=0o640)
    load(path)  # what was written must load
