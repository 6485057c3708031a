"""Naming a hook's environment variables, for vmic's own and vmcatcher's."""

from __future__ import annotations

import re
from typing import Any

_NOT_NAME = re.compile(r"[^A-Z0-9]+")


def env_name(prefix: str, key: str) -> str:
    """``VMIC_`` + ``ad:mpuri`` -> ``VMIC_AD_MPURI``."""
    return prefix + _NOT_NAME.sub("_", key.upper()).strip("_")


def add_extra(env: dict[str, str], prefix: str, data: dict[str, Any]) -> None:
    """The keys of a HEPiX list vmic does not read (``ad:mpuri``, ...), as variables.

    They never replace a variable vmic sets itself: an endorser cannot pass a
    key named ``sha512`` to override ``VMIC_SHA512``.
    """
    extra = data.get("extra")
    if not isinstance(extra, dict):
        return
    for key, value in sorted(extra.items()):
        name = env_name(prefix, str(key))
        if isinstance(value, str) and name not in env and name != prefix.rstrip("_"):
            env[name] = value
