"""Naming a hook's environment variables, for vmic's own and vmcatcher's."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

_NOT_NAME = re.compile(r"[^A-Z0-9]+")

EXTRA_PREFIX = "VMIC_X_"
"""Where the keys of a HEPiX list that vmic does not read go: ``VMIC_X_AD_MPURI``, ..."""


def env_name(prefix: str, key: str) -> str:
    """``VMIC_`` + ``image_id`` -> ``VMIC_IMAGE_ID``; ``ad:mpuri`` -> ``AD_MPURI``."""
    return prefix + _NOT_NAME.sub("_", key.upper()).strip("_")


def extra_variables(
    data: dict[str, Any], prefix: str, *, reserved: Collection[str] = (), namespaced: bool = False
) -> dict[str, str]:
    """The keys of a HEPiX image vmic does not read (``ad:mpuri``, ...), as variables.

    Only text values; never a name in ``reserved``; with ``namespaced``, only
    keys of the ``ns:name`` form every HEPiX key has. The caller adds them
    without replacing a variable that is already set, so list data never
    stands in for a variable vmic, vmcatcher or the agent's environment sets.
    """
    extra = data.get("extra")
    out: dict[str, str] = {}
    if not isinstance(extra, dict):
        return out
    for key, value in sorted(extra.items()):
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        if namespaced and ":" not in key:
            continue
        name = env_name(prefix, key)
        if name != prefix and name not in reserved:
            out[name] = value
    return out
