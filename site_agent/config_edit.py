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
from site_agent.cloud.settings import CloudSettings
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


def add_cloud(path: Path, cloud: CloudSettings) -> None:
    """Append a ``[[clouds]]`` table (checked by loading the result before it is kept)."""
    doc = document(path)
    if any(c.name == cloud.name for c in load(path).clouds):
        raise ConfigError(f"a cloud named {cloud.name} exists already", hint="remove it first")
    table = tomlkit.table()
    table["name"] = cloud.name
    table["os_cloud"] = cloud.os_cloud
    table["lists"] = list(cloud.lists)
    table["vos"] = list(cloud.vos)
    table["visibility"] = cloud.visibility
    projects = tomlkit.inline_table()
    for vo, ids in cloud.projects:
        projects[vo] = list(ids)
    table["projects"] = projects
    table["name_template"] = cloud.name_template
    table["withdrawn"] = cloud.withdrawn
    table["delete_after_days"] = cloud.delete_after.total_seconds() / 86400
    if "clouds" not in doc:
        doc.append("clouds", tomlkit.aot())
    clouds = doc["clouds"]
    if not isinstance(clouds, AoT):
        raise ConfigError(f"{path}: clouds must be an array of [[clouds]] tables")
    clouds.append(table)
    _write_checked(path, doc)


def remove_cloud(path: Path, name: str) -> None:
    doc = document(path)
    clouds = doc.get("clouds")
    if isinstance(clouds, AoT):
        for index, table in enumerate(clouds):
            if table.get("name") == name:
                del clouds[index]
                if not len(clouds):
                    del doc["clouds"]
                _write_checked(path, doc)
                return
    raise ConfigError(f"no cloud named {name}", hint="see `vmic clouds`")


def _write_checked(path: Path, doc: tomlkit.TOMLDocument) -> None:
    """Write ``doc`` only if it loads; the file on disk is never left unloadable."""
    text = tomlkit.dumps(doc)
    scratch = path.with_name(f".{path.name}.check")
    write_atomic(scratch, text.encode("utf-8"), mode=0o640)
    try:
        load(scratch)
    finally:
        scratch.unlink(missing_ok=True)
    write_atomic(path, text.encode("utf-8"), mode=0o640)
