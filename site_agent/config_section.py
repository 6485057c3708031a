"""Reading one table of ``config.toml`` strictly: types checked, unknown keys refused, DN
pairs and paths as the whole configuration reads them (:mod:`site_agent.config`,
:mod:`site_agent.serve_settings`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from keys.dn import DistinguishedName
from keys.errors import ConfigError, outside_bytes
from keys.xmlsig import SignerPin


class Section:
    """One table of the configuration, read with types checked and unknown keys refused."""

    def __init__(self, data: dict[str, Any], name: str, path: Path, known: set[str]) -> None:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        unknown = set(value) - known
        if unknown:
            raise ConfigError(f"{path}: [{name}] has unknown keys: {', '.join(sorted(unknown))}")
        self.values: dict[str, Any] = value
        self.where = f"{path}: [{name}]"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.values.get(key, default)
        if value is None:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self.where} {key}: expected {names}, not {value!r}")
        return value

    def positive(self, key: str, default: float) -> float:
        """A finite number above zero."""
        value = self.get(key, (int, float), default)
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{self.where} {key}: must be a finite number above 0, not {value}")
        return float(value)

    def count(self, key: str, default: int) -> int:
        """A whole number of at least 1 (a concurrency, a number of attempts, a byte count)."""
        value = self.get(key, int, default)
        if value < 1:
            raise ConfigError(f"{self.where} {key}: must be a whole number of at least 1")
        return int(value)


def parse_pins(items: list[Any], where: str) -> tuple[SignerPin, ...]:
    """``[[subject DN, issuer DN], ...]`` from the configuration; ConfigError naming ``where``
    for anything else (a bad DN included)."""
    pins = []
    for pair in items:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise ConfigError(f"{where}: each entry is [subject DN, issuer DN]")
        pins.append(SignerPin(subject=_dn(pair[0], where), issuer=_dn(pair[1], where)))
    return tuple(pins)


def _dn(text: str, where: str) -> DistinguishedName:
    with outside_bytes(f"{where}: DN {text!r}", ConfigError):
        try:
            return DistinguishedName.parse(text)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from exc


def config_path(text: str, config: Path) -> Path:
    """A path from the configuration; a relative one is taken from the config's folder."""
    return config.parent.absolute() / Path(text)  # an absolute ``text`` replaces the base
