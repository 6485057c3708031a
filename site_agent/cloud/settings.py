"""The ``[[clouds]]`` of a site's config.toml: where images go, for whom, and for how long.

One table per cloud::

    [[clouds]]
    name = "site1"                 # how vmic names this cloud (vmic cloud sync site1)
    os_cloud = "openstack"         # the clouds.yaml entry openstacksdk reads
    lists = []                     # subscriptions whose images go there (empty: all)
    vos = []                       # VOs whose images go there (empty: all)
    visibility = "shared"          # private | shared | community | public
    projects = { dteam = ["0c4e..."] }   # VO -> projects an image is shared with
    name_template = "{title}"      # {title} {version} {vo} {os} {osversion} {arch} {image_id}
    withdrawn = "deactivate"       # deactivate, then delete after delete_after_days
    delete_after_days = 7          # 0: delete at once

Every value is checked when the configuration is read; `vmic cloud add`
writes a table and reads it back.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from keys.errors import ConfigError
from site_agent.names import check_name

VISIBILITIES = ("private", "shared", "community", "public")
WITHDRAWN = ("deactivate", "delete")
NAME_FIELDS = ("title", "version", "vo", "os", "osname", "osversion", "arch", "image_id")
KEYS = {
    "name",
    "os_cloud",
    "lists",
    "vos",
    "visibility",
    "projects",
    "name_template",
    "withdrawn",
    "delete_after_days",
}
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudSettings:
    name: str
    os_cloud: str
    lists: tuple[str, ...] = ()
    vos: tuple[str, ...] = ()
    visibility: str = "private"
    projects: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Each VO and the projects its images are shared with (visibility ``shared``)."""
    name_template: str = "{title}"
    withdrawn: str = "deactivate"
    delete_after: timedelta = timedelta(days=7)

    def projects_of(self, vo: str | None) -> tuple[str, ...]:
        return dict(self.projects).get(vo, ()) if vo else ()

    def wants(self, *, subscription: str, vo: str | None) -> bool:
        """Whether an image of this subscription and VO belongs in this cloud."""
        if self.lists and subscription not in self.lists:
            return False
        return not self.vos or vo in self.vos

    def image_name(self, fields: dict[str, Any]) -> str:
        values = {key: str(fields.get(key) or "") for key in NAME_FIELDS}
        return self.name_template.format(**values).strip()[:255] or values["image_id"]


def parse_clouds(items: object, path: Path) -> tuple[CloudSettings, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{path}: clouds must be an array of [[clouds]] tables")
    clouds = tuple(parse_cloud(item, f"{path}: [[clouds]]") for item in items)
    names = [c.name for c in clouds]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two clouds share a name")
    return clouds


def parse_cloud(item: object, where: str) -> CloudSettings:
    """One ``[[clouds]]`` table, every value checked."""
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: each entry must be a table")
    unknown = set(item) - KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys: {', '.join(sorted(unknown))}")
    name = _text(item, "name", where, default=None)
    check_name(name, f"{where}: name")
    where = f"{where} {name}"
    visibility = _text(item, "visibility", where, default="private")
    if visibility not in VISIBILITIES:
        raise ConfigError(f"{where}: visibility must be one of {', '.join(VISIBILITIES)}")
    withdrawn = _text(item, "withdrawn", where, default="deactivate")
    if withdrawn not in WITHDRAWN:
        raise ConfigError(f"{where}: withdrawn must be deactivate or delete")
    days = item.get("delete_after_days", 7)
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days <= 3650:
        raise ConfigError(f"{where}: delete_after_days must be a number from 0 to 3650")
    template = _text(item, "name_template", where, default="{title}")
    _check_template(template, where)
    projects = _projects(item.get("projects", {}), where)
    if visibility == "shared" and not projects:
        raise ConfigError(
            f"{where}: visibility shared needs projects to share with",
            hint='map each VO to its projects: projects = { dteam = ["PROJECT_ID"] }',
        )
    return CloudSettings(
        name=name,
        os_cloud=_text(item, "os_cloud", where, default=None),
        lists=_names(item.get("lists", []), "lists", where),
        vos=_names(item.get("vos", []), "vos", where),
        visibility=visibility,
        projects=projects,
        name_template=template,
        withdrawn=withdrawn,
        delete_after=timedelta(days=days),
    )


def _text(item: dict[str, Any], key: str, where: str, *, default: str | None) -> str:
    value = item.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _names(value: object, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key} must be a list of names")
    return tuple(value)


def _projects(value: object, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: projects must be a table of VO = [project, ...]")
    out = []
    for vo, given in sorted(value.items()):
        projects = [given] if isinstance(given, str) else given
        if not isinstance(projects, list) or not all(
            isinstance(p, str) and _PROJECT.fullmatch(p) for p in projects
        ):
            raise ConfigError(f"{where}: projects.{vo} must be project ids (letters, digits, -)")
        out.append((str(vo), tuple(projects)))
    return tuple(out)


def _check_template(template: str, where: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: name_template {template!r}: {exc}") from exc
    bad = [f for f in fields if f not in NAME_FIELDS]
    if bad:
        raise ConfigError(
            f"{where}: name_template may use {', '.join('{' + f + '}' for f in NAME_FIELDS)}, "
            f"not {{{bad[0]}}}"
        )
