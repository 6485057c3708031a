"""The names a site admin gives things: subscriptions, peers, hooks, clouds.

A name is typed on the command line, kept in the store and config.toml, shown in
tables and logs and passed to hooks; so it is one short word of ASCII letters,
digits, '.', '_' and '-', starting with a letter or digit. In particular it has no
':' (``peer:<name>`` names a peer's history), no space and no control character.
"""

from __future__ import annotations

import re

from keys.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NOT_NAME = re.compile(r"[^a-z0-9]+")


def check_name(name: str, what: str) -> str:
    """``name`` if it is a usable name, else a ConfigError about ``what`` (e.g. "peer name")."""
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r}: use up to 64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def slug(text: str, *, fallback: str) -> str:
    """A name made from a title or a common name: lower case, runs of other characters as '-'."""
    return _NOT_NAME.sub("-", text.lower()).strip("-")[:40] or fallback
