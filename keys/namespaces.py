"""IGTF namespace constraints: which subjects a CA may sign (THREATS 16).

Grid trust directories carry, next to a CA's ``<hash>.0``, a
``<hash>.namespaces`` file (the EACL-style format of the IGTF) and/or a
``<hash>.signing_policy`` file (the Globus format). Both name the CA by its
DN and list the subject DNs it may issue::

    # <hash>.namespaces
    TO Issuer "/DC=org/DC=example/CN=Example CA" \\
      PERMIT Subject "/DC=org/DC=example/.*"

    # <hash>.signing_policy
    access_id_CA   X509   '/DC=org/DC=example/CN=Example CA'
    pos_rights     globus CA:sign
    cond_subjects  globus '"/DC=org/DC=example/*"'

Namespaces patterns are regular expressions matched against the whole
subject in slash form, ``DENY`` before ``PERMIT``; signing-policy patterns
are globs where ``*`` matches anything. When a CA has a ``.namespaces``
file it decides; otherwise its ``.signing_policy`` does; a CA with neither
is not constrained. A file that cannot be read is reported as a problem of
the trust store and constrains nothing it does not name.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from keys.certs import read_outside
from keys.dn import DistinguishedName
from keys.errors import ConfigError, describe
from keys.fileio import list_directory, read_regular

_TO_ISSUER = re.compile(r'^TO\s+Issuer\s+"((?:[^"\\]|\\.)*)"\s*(.*)$', re.IGNORECASE | re.DOTALL)
_RULE = re.compile(
    r'^(PERMIT|DENY)\s+Subject\s+"((?:[^"\\]|\\.)*)"\s*(.*)$', re.IGNORECASE | re.DOTALL
)


@dataclass(slots=True)
class Namespace:
    """What one CA may sign: regexes (namespaces) or globs (signing policy)."""

    source: str
    permit: list[re.Pattern[str]] = field(default_factory=list)
    deny: list[re.Pattern[str]] = field(default_factory=list)

    def allows(self, subject: DistinguishedName) -> bool:
        text = subject.slash()
        if any(p.fullmatch(text) for p in self.deny):
            return False
        return any(p.fullmatch(text) for p in self.permit)


@dataclass(slots=True)
class Namespaces:
    """The constraints of every CA in a trust directory, by CA DN."""

    by_namespaces: dict[DistinguishedName, Namespace] = field(default_factory=dict)
    by_signing_policy: dict[DistinguishedName, Namespace] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def for_issuer(self, issuer: DistinguishedName) -> Namespace | None:
        return self.by_namespaces.get(issuer) or self.by_signing_policy.get(issuer)


def _logical_lines(text: str) -> list[str]:
    """Lines without comments, with backslash continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0] if not raw.lstrip().startswith("#") else ""
        line = line.rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse_namespaces(text: str, source: str) -> dict[DistinguishedName, Namespace]:
    found: dict[DistinguishedName, Namespace] = {}
    for line in _logical_lines(text):
        match = _TO_ISSUER.match(line)
        if not match:
            raise ConfigError(f"{source}: not a namespaces rule: {line[:80]!r}")
        issuer = DistinguishedName.parse_slash(match.group(1).replace('\\"', '"'))
        space = found.setdefault(issuer, Namespace(source=source))
        rest = match.group(2).strip()
        if not rest:
            raise ConfigError(f"{source}: a rule for {issuer} permits or denies nothing")
        while rest:
            rule = _RULE.match(rest)
            if not rule:
                raise ConfigError(f"{source}: cannot read {rest[:80]!r}")
            text = rule.group(2).replace('\\"', '"')
            try:
                # `re` warns about sets that a future Python reads otherwise ("[[");
                # the pattern means today what the CA's file has always meant to OpenSSL
                pattern, _said = read_outside(partial(re.compile, text))
            except ValueError as exc:
                raise ConfigError(f"{source}: bad pattern {rule.group(2)!r}: {exc}") from exc
            (space.permit if rule.group(1).upper() == "PERMIT" else space.deny).append(pattern)
            rest = rule.group(3).strip()
    return found


def _glob(pattern: str) -> re.Pattern[str]:
    """A signing-policy glob: ``*`` matches anything, every other character itself."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def parse_signing_policy(text: str, source: str) -> dict[DistinguishedName, Namespace]:
    found: dict[DistinguishedName, Namespace] = {}
    issuer: DistinguishedName | None = None
    for line in _logical_lines(text):
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f"{source}: cannot read {line[:80]!r}: {exc}") from exc
        if not words:
            continue
        key = words[0].lower()
        if key == "access_id_ca" and len(words) >= 3:
            issuer = DistinguishedName.parse_slash(words[2])
            found.setdefault(issuer, Namespace(source=source))
        elif key == "cond_subjects" and len(words) >= 3:
            if issuer is None:
                raise ConfigError(f"{source}: cond_subjects before access_id_CA")
            for pattern in shlex.split(words[2]):
                found[issuer].permit.append(_glob(pattern))
    return found


def load(directory: Path) -> Namespaces:
    """Every ``*.namespaces`` and ``*.signing_policy`` file of a trust directory."""
    result = Namespaces()
    for path in list_directory(directory, what="the trust directory"):
        suffix = path.suffix
        if suffix not in {".namespaces", ".signing_policy"}:
            continue
        try:
            text = read_regular(path).decode("utf-8", errors="replace")
            if suffix == ".namespaces":
                result.by_namespaces.update(parse_namespaces(text, path.name))
            else:
                result.by_signing_policy.update(parse_signing_policy(text, path.name))
        except ConfigError as exc:
            result.problems.append(exc.message)  # names the file already
        except OSError as exc:
            result.problems.append(f"{path.name}: unreadable ({exc.strerror})")
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop the trust store
            result.problems.append(f"{path.name}: cannot be read ({describe(exc)})")
    return result
