"""A hook's event variables: their names (vmic's own and vmcatcher's) and their size.

List data reaches a hook's environment, and the kernel refuses to start a
program whose environment is too large (``E2BIG``: one ``NAME=value`` past
``MAX_ARG_STRLEN``, 128 KiB on Linux, or all of them with the arguments past
``ARG_MAX``). So an event's variables are bounded (:func:`capped`): each
value at :data:`MAX_VALUE_BYTES`, all of them together at
:data:`MAX_EVENT_BYTES`, and :data:`TRUNCATED` names what was cut short or
left out. The whole event stays on the hook's standard input as JSON.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

_NOT_NAME = re.compile(r"[^A-Z0-9]+")
KiB = 1024

EXTRA_PREFIX = "VMIC_X_"
"""Where the keys of a HEPiX list that vmic does not read go: ``VMIC_X_AD_MPURI``, ..."""

MAX_VALUE_BYTES = 4 * KiB
"""Longest value (UTF-8 bytes) of a variable holding event data: ``VMIC_TITLE``,
``VMIC_X_AD_MPURI``, ``VMCATCHER_EVENT_DC_TITLE``, ...; a longer one is cut there, at a
character boundary. (vmic's own ``VMIC_EVENT``, ``VMIC_EVENT_ID``, ``VMIC_EVENT_TIME``
and ``VMIC_HOME`` are never cut.)"""

MAX_EVENT_BYTES = 64 * KiB
"""Most bytes an event's variables take together, each counted as the kernel stores it
(``NAME=value`` and a NUL): far below ``ARG_MAX`` (2 MiB with the usual 8 MiB stack),
which the agent's own environment and the command line share with them. Past it, the
unread-key variables (``VMIC_X_*`` and vmcatcher's for unread keys) are left out first,
then the longest ``VMIC_*`` values are cut further; vmcatcher's own variables are cut
only when they alone do not fit."""

TRUNCATED = "VMIC_TRUNCATED"
"""Set only when something was cut: the names of the variables cut short, then of those
left out, space-separated (ending in ``...`` when even that list passes
:data:`MAX_VALUE_BYTES`)."""

_TRUNCATED_COST = len(TRUNCATED) + 1 + MAX_VALUE_BYTES + 1


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


def capped(
    *,
    fixed: Mapping[str, str],
    values: Mapping[str, str],
    kept: Mapping[str, str],
    extras: Mapping[str, str],
) -> dict[str, str]:
    """An event's variables within :data:`MAX_VALUE_BYTES` and :data:`MAX_EVENT_BYTES`.

    ``fixed`` (vmic's own: the event's type, id and time, the site home) is
    never cut. Every value of ``values`` (``VMIC_<KEY>`` per value of the
    event), ``kept`` (vmcatcher's variables, for a vmcatcher hook) and
    ``extras`` (the list's unread keys) is cut at :data:`MAX_VALUE_BYTES`.
    When they all pass :data:`MAX_EVENT_BYTES`, ``extras`` are left out first
    (kept in name order while they fit), then ``values`` are cut to one common
    length, so the longest lose most and short ones (checksums, paths, ids)
    stay whole; ``kept`` are cut only when they alone do not fit, and then
    together with ``values``, the same way. :data:`TRUNCATED` names what was
    cut or left out; it is absent when nothing was.
    """
    plan = _Plan()
    values, kept, extras = plan.cap(values), plan.cap(kept), plan.cap(extras)
    if not plan.cut and _cost(fixed, values, kept, extras) <= MAX_EVENT_BYTES:
        return {**fixed, **values, **kept, **extras}
    room = MAX_EVENT_BYTES - _TRUNCATED_COST - _cost(fixed)
    if _cost(kept, dict.fromkeys(values, "")) > room:  # vmcatcher's alone do not fit
        both = plan.fit({**values, **kept}, room)
        values = {name: both[name] for name in values}
        kept = {name: both[name] for name in kept}
    elif _cost(values, kept) > room:
        values = plan.fit(values, room - _cost(kept))
    extras = plan.keep(extras, room - _cost(values, kept))
    return {**fixed, **values, **kept, **extras, TRUNCATED: plan.truncated()}


class _Plan:
    """What is cut short and what is left out, in the order it happens."""

    def __init__(self) -> None:
        self.cut: dict[str, None] = {}  # an ordered set
        self.dropped: list[str] = []

    def cap(self, variables: Mapping[str, str]) -> dict[str, str]:
        return {name: self._cut(name, value, MAX_VALUE_BYTES) for name, value in variables.items()}

    def _cut(self, name: str, value: str, limit: int) -> str:
        raw = _utf8(value)
        if len(raw) <= limit:
            return value
        self.cut[name] = None
        while limit and raw[limit] & 0xC0 == 0x80:  # not inside a character
            limit -= 1
        return raw[:limit].decode("utf-8", "surrogatepass")

    def fit(self, variables: Mapping[str, str], room: int) -> dict[str, str]:
        """Cut the longest values to one length, the longest that fits ``room``."""
        sizes = {name: len(_utf8(value)) for name, value in variables.items()}
        names = sum(len(_utf8(name)) + 2 for name in variables)
        low, high = 0, max(sizes.values(), default=0)
        while low < high:  # the longest common limit whose total fits
            middle = (low + high + 1) // 2
            if names + sum(min(size, middle) for size in sizes.values()) <= room:
                low = middle
            else:
                high = middle - 1
        return {name: self._cut(name, value, low) for name, value in variables.items()}

    def keep(self, variables: Mapping[str, str], room: int) -> dict[str, str]:
        """Those that fit ``room``, in order; the others are left out."""
        kept: dict[str, str] = {}
        for name, value in variables.items():
            size = _cost({name: value})
            if size <= room:
                kept[name] = value
                room -= size
            else:
                self.dropped.append(name)
        return kept

    def truncated(self) -> str:
        """The names cut short (and still there), then those left out."""
        dropped = set(self.dropped)
        text = " ".join([*(n for n in self.cut if n not in dropped), *self.dropped])
        if len(_utf8(text)) <= MAX_VALUE_BYTES:
            return text
        head = _utf8(text)[: MAX_VALUE_BYTES - 4].decode("utf-8", "ignore")
        return head.rsplit(" ", 1)[0] + " ..."


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _cost(*groups: Mapping[str, str]) -> int:
    """Bytes the kernel copies for these variables: ``NAME=value`` and a NUL each."""
    return sum(len(_utf8(n)) + len(_utf8(v)) + 2 for group in groups for n, v in group.items())
