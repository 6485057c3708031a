"""Applying the rules to one tree: fed entry by entry, finished once the tree is known.

Path rules look at names and sizes; content rules read what
:func:`feeds.policy.rules.wanted` selects; account rules read
``/etc/passwd`` and ``/etc/shadow`` at the end. One path gets one finding:
of the rules that matched it, the most severe (then the first). A link
where an account file or ``authorized_keys`` should be is a finding of its
own: links are never followed, so what they lead to is not vouched for.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from feeds.policy.model import Fact, Finding, Severity
from feeds.policy.rules import (
    CREDENTIAL_NAMES,
    CREDENTIAL_TAILS,
    GRID,
    GRID_PUBLIC,
    HISTORY,
    HOST_CREDENTIAL_DIRS,
    LOCKED_PREFIXES,
    NO_LOGIN,
    RULES,
    SHADOWED,
    SPECIAL,
    SPECIAL_MAX,
    TOOL_HISTORY,
    account_lines,
    docker_auths,
    has_keys,
    key_kind,
    keyish,
    os_name,
)
from feeds.policy.trees import NOT_INSPECTED, Entry, Kind

_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
_ACCOUNT_FILES = ("/etc/passwd", "/etc/shadow")
_PACKAGE_MARKS = (
    ("dpkg", ("/var/lib/dpkg/status",)),
    ("rpm", ("/var/lib/rpm", "/usr/lib/sysimage/rpm")),
    ("apk", ("/lib/apk/db/installed",)),
    ("pacman", ("/var/lib/pacman/local",)),
)
_MARKS = {mark for _, marks in _PACKAGE_MARKS for mark in marks}
_PACKAGED = re.compile(r"^/usr/(?!local/)")
"""Files under /usr come from packages (test vectors, templates, docs), not from the builder."""


@dataclass
class Scan:
    """Findings and facts for one tree."""

    label: str = ""
    """Put before every path (``partition 2:``) when an image has several file systems."""
    findings: dict[str, Finding] = field(default_factory=dict)
    kept: dict[str, bytes] = field(default_factory=dict)
    children: Counter[str] = field(default_factory=Counter)
    marks: set[str] = field(default_factory=set)
    kernels: set[str] = field(default_factory=set)
    entries: int = 0
    file_bytes: int = 0

    def add(self, rule: str, path: str, reason: str, severity: Severity | None = None) -> None:
        level = severity or RULES[rule].severity
        known = self.findings.get(path)
        if known is not None and _RANK[known.severity] <= _RANK[level]:
            return
        self.findings[path] = Finding(
            rule=rule, severity=level, path=self.label + path, reason=reason
        )

    def feed(self, entry: Entry, content: bytes | None) -> None:
        self.entries += 1
        path = entry.path
        self.children[str(PurePosixPath(path).parent)] += 1
        if path in _MARKS:
            self.marks.add(path)
        self._kernel(entry)
        if entry.kind is Kind.FILE:
            self.file_bytes += entry.size
            if path in SPECIAL:
                self._special(entry, content)
            self._by_path(entry, content)
            if content is not None:
                self._by_content(entry, content)
        elif entry.kind is Kind.LINK:
            self._link(entry)

    # -- path rules ---------------------------------------------------------------------
    def _special(self, entry: Entry, content: bytes | None) -> None:
        if content is None or entry.size > SPECIAL_MAX:
            self.add(NOT_INSPECTED, entry.path, "too large to read; not checked")
        else:
            self.kept[entry.path] = content

    def _link(self, entry: Entry) -> None:
        path, name = entry.path, PurePosixPath(entry.path).name
        if path in _ACCOUNT_FILES:
            self.add(
                NOT_INSPECTED, path, f"a link to {entry.target or '?'}; links are not followed"
            )
        elif name in ("authorized_keys", "authorized_keys2"):
            self.add("authorized-keys", path, "a link: the keys it leads to are not read")
        elif path == "/var/lib/cloud/instance":
            self.add("cloud-init-state", path, "cloud-init's state of a previous boot is kept")

    def _by_path(self, entry: Entry, content: bytes | None) -> None:
        path, name, size = entry.path, PurePosixPath(entry.path).name, entry.size
        if path.startswith("/etc/ssh/") and re.fullmatch(r"ssh_host_\w*key", name):
            self.add("ssh-host-key", path, "an SSH host private key")
        elif path.startswith(GRID) and not path.startswith(GRID_PUBLIC):
            if name.endswith((".pem", ".key")):
                self.add("host-credential", path, "a host or service certificate or key")
        elif path.startswith(HOST_CREDENTIAL_DIRS) and size > 0:
            self.add("host-credential", path, "a file in a folder for private host keys")
        if name.startswith("x509up_u"):
            self.add("grid-proxy", path, "a grid proxy certificate")
        elif name in ("authorized_keys", "authorized_keys2"):
            if has_keys(content, size):
                self.add("authorized-keys", path, "lets the holders of these keys log in")
        elif name in CREDENTIAL_NAMES or path.endswith(CREDENTIAL_TAILS):
            if size > 0:
                self.add("credentials-file", path, f"a credentials file ({name})")
        elif name == "config.json" and "/.docker/" in path and docker_auths(content):
            self.add("credentials-file", path, "docker registry credentials (auths)")
        elif "/.gnupg/private-keys-v1.d/" in path and size > 0:
            self.add("private-key", path, "a GnuPG private key")
        elif name in HISTORY and size > 0:
            self.add("shell-history", path, "a shell history")
        elif name in TOOL_HISTORY and size > 0:
            self.add("shell-history", path, f"a tool history ({name})", Severity.WARNING)
        elif path.startswith("/var/lib/cloud/instances/"):
            self.add(
                "cloud-init-state",
                "/var/lib/cloud/instances",
                "cloud-init's state of a previous boot is kept",
            )
        if name.lower().endswith((".p12", ".pfx")) and size > 0:
            self._key(path, "a PKCS#12 file (holds a private key)")
        if content is None and size > 0 and keyish(name):
            self.add(
                "private-key", path, "named like a key but too large to read", Severity.WARNING
            )

    # -- content rules ------------------------------------------------------------------
    def _by_content(self, entry: Entry, content: bytes) -> None:
        kind = key_kind(content)
        if kind is not None:
            self._key(entry.path, kind)

    def _key(self, path: str, kind: str) -> None:
        if _PACKAGED.match(path):
            self.add(
                "private-key",
                path,
                f"{kind} under /usr, where packages put their files (test keys, templates); "
                "make sure it is not yours",
                Severity.WARNING,
            )
        else:
            self.add("private-key", path, kind)

    def _kernel(self, entry: Entry) -> None:
        path = entry.path
        match = re.fullmatch(r"/boot/vmlinu[xz]-(.+)", path) or re.fullmatch(
            r"/(?:usr/)?lib/modules/([^/]+)", path
        )
        if match and entry.kind in (Kind.FILE, Kind.DIR):
            self.kernels.add(match[1])

    # -- at the end ---------------------------------------------------------------------
    def finish(self) -> tuple[list[Finding], list[Fact]]:
        self._accounts()
        self._machine_id()
        return list(self.findings.values()), self._facts()

    def _accounts(self) -> None:
        shadowed = set()
        for fields in account_lines(self.kept.get("/etc/shadow")):
            shadowed.add(fields[0])
            self._secret("/etc/shadow", fields[0], fields[1])
        for name, secret, uid_text, _, _, home, shell in (
            row[:7] for row in account_lines(self.kept.get("/etc/passwd"))
        ):
            if name not in shadowed and secret != SHADOWED:
                self._secret("/etc/passwd", name, secret)
            where = f"/etc/passwd:{name}"
            if uid_text == "0" and name != "root":
                self.add("human-account", where, f"account {name} has UID 0, as root")
            if not uid_text.isdigit() or not 1000 <= int(uid_text) < 60000:
                continue
            login = PurePosixPath(shell).name not in NO_LOGIN  # empty means /bin/sh
            if login or self.children.get(home.rstrip("/") or "/", 0) > 0:
                how = f"login shell {shell or '/bin/sh'}" if login else f"files in {home}"
                self.add("human-account", where, f"account {name} (UID {uid_text}) with {how}")

    def _secret(self, source: str, name: str, secret: str) -> None:
        where = f"{source}:{name}"
        if secret == "":
            self.add("password", where, f"account {name} has no password at all")
        elif secret == SHADOWED or secret in ("*", "!", "!!", "!*", "*LK*"):
            return
        elif secret.startswith(LOCKED_PREFIXES):
            self.add(
                "password",
                where,
                f"account {name} is locked but keeps a password hash (it can be cracked offline)",
                Severity.WARNING,
            )
        else:
            self.add("password", where, f"account {name} has a password hash")

    def _machine_id(self) -> None:
        for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            value = self.kept.get(path, b"").strip()
            if value and value != b"uninitialized":
                self.add("machine-id", path, "a machine id is set; empty the file instead")

    def _facts(self) -> list[Fact]:
        facts = []
        release = self.kept.get("/etc/os-release") or self.kept.get("/usr/lib/os-release")
        if release:
            facts.append(Fact(name="os", value=os_name(release)))
        elif "/etc/redhat-release" in self.kept:
            text = self.kept["/etc/redhat-release"].decode("utf-8", "replace").strip()
            facts.append(Fact(name="os", value=text))
        managers = [name for name, marks in _PACKAGE_MARKS if self.marks.intersection(marks)]
        if managers:
            facts.append(Fact(name="package manager", value=", ".join(managers)))
        if self.kernels:
            facts.append(Fact(name="kernels", value=", ".join(sorted(self.kernels))))
        facts.append(Fact(name="files", value=f"{self.entries} entries, {self.file_bytes} bytes"))
        return [Fact(name=self.label + f.name, value=f.value) for f in facts]
