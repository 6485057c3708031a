"""The rules of the trusted-image policy: their ids, and what each one matches.

Each rule has an id (what ``--allow`` and ``docs/policy-rules.md`` name), a
severity and a one-line reason per finding. This module holds the names,
paths and patterns the rules look for and :func:`wanted`, which says how
much of a file the scan reads; :mod:`feeds.policy.scan` applies them.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath

from feeds.policy.model import Rule, Severity
from feeds.policy.trees import ARCHIVE_BOMB, ARCHIVE_MEMBER, NOT_INSPECTED, Entry, Kind

E, W = Severity.ERROR, Severity.WARNING
RULES = {
    rule.id: rule
    for rule in (
        Rule(
            id="private-key",
            severity=E,
            title="private keys",
            why="a private key (PEM, OpenSSH, PuTTY, PKCS#12, GnuPG) shipped in an image is "
            "known to everyone who can download the image",
        ),
        Rule(
            id="ssh-host-key",
            severity=E,
            title="SSH host keys",
            why="every machine started from the image would share one host identity",
        ),
        Rule(
            id="authorized-keys",
            severity=E,
            title="non-empty authorized_keys",
            why="someone outside the site could log in to every machine",
        ),
        Rule(
            id="password",
            severity=E,
            title="usable password hashes",
            why="an account with a password set by the image builder (or none at all) can be "
            "logged in to, and its hash can be cracked offline",
        ),
        Rule(
            id="human-account",
            severity=E,
            title="human accounts",
            why="accounts of people (UID 1000-59999 with a login shell or a home with content) "
            "do not belong in an image others run",
        ),
        Rule(
            id="host-credential",
            severity=E,
            title="host and service certificates and keys",
            why="a host or service credential (/etc/grid-security/host*.pem, /etc/ssl/private, "
            "/etc/pki/tls/private) identifies one machine, not an image",
        ),
        Rule(
            id="grid-proxy",
            severity=E,
            title="grid proxies",
            why="a proxy certificate (x509up_u*) lets anyone act as the user who made it",
        ),
        Rule(
            id="credentials-file",
            severity=E,
            title="credentials files",
            why=".netrc, .pgpass, .git-credentials, cloud CLI credentials, docker registry "
            "auths and the like hold secrets",
        ),
        Rule(
            id="shell-history",
            severity=E,
            title="shell and tool histories",
            why="histories of the build record commands, often with passwords or tokens in them",
        ),
        Rule(
            id="machine-id",
            severity=W,
            title="a fixed machine id",
            why="every machine started from the image would have the same /etc/machine-id",
        ),
        Rule(
            id="cloud-init-state",
            severity=W,
            title="leftover cloud-init instance state",
            why="cloud-init would think the first boot already happened and skip per-instance "
            "setup (SSH keys, host names)",
        ),
        Rule(
            id=ARCHIVE_MEMBER,
            severity=E,
            title="unsafe archive members",
            why="a member path with '..' unpacks outside the target folder",
        ),
        Rule(
            id=ARCHIVE_BOMB,
            severity=E,
            title="archives that inflate without bound",
            why="an archive far larger unpacked than packed is an attack on whoever unpacks it",
        ),
        Rule(
            id=NOT_INSPECTED,
            severity=E,
            title="parts that could not be inspected",
            why="what was not read cannot be vouched for (a missing tool, an unknown file system, "
            "a damaged archive)",
        ),
    )
}

# Folders whose files come from packages: only files named like keys are read there.
_BULK = (
    "/usr/",
    "/lib/",
    "/lib32/",
    "/lib64/",
    "/libx32/",
    "/bin/",
    "/sbin/",
    "/boot/",
    "/var/lib/dpkg/",
    "/var/lib/rpm/",
    "/var/lib/apt/",
    "/var/lib/dnf/",
    "/var/lib/yum/",
    "/var/cache/",
    "/usr/lib/sysimage/",
    "/proc/",
    "/sys/",
    "/dev/",
)
_KEYISH = re.compile(
    r"(\.(pem|key|p12|pfx|ppk|gpg|asc|jks|keystore)$)|(^id_[a-z0-9_]+$)|(_key$)|(^secring)"
)
SPECIAL = {
    "/etc/passwd",
    "/etc/shadow",
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/machine-id",
    "/var/lib/dbus/machine-id",
    "/etc/redhat-release",
}
_PEM_PRIVATE = re.compile(
    rb"-----BEGIN (?:(?:RSA|DSA|EC|ENCRYPTED|OPENSSH|ANY) )?PRIVATE KEY-----"
    rb"|-----BEGIN PGP PRIVATE KEY BLOCK-----"
)
_PUTTY = b"PuTTY-User-Key-File-"
_PKCS12_OID = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01"
LOCKED_PREFIXES = ("!", "*")
SHADOWED = "x"  # the password field of /etc/passwd when the hash is in /etc/shadow
NO_LOGIN = {"nologin", "false", "true", "sync", "shutdown", "halt"}
HISTORY = {
    ".bash_history",
    ".zsh_history",
    ".sh_history",
    ".ash_history",
    ".history",
    ".ksh_history",
    ".tcsh_history",
}
TOOL_HISTORY = {
    ".python_history",
    ".mysql_history",
    ".psql_history",
    ".sqlite_history",
    ".node_repl_history",
    ".lesshst",
    ".viminfo",
    ".rediscli_history",
}
CREDENTIAL_NAMES = {
    ".netrc",
    ".pgpass",
    ".git-credentials",
    ".my.cnf",
    ".s3cfg",
    ".boto",
    ".dockercfg",
    ".npmrc",
    ".pypirc",
}
CREDENTIAL_TAILS = (
    ".aws/credentials",
    ".config/gcloud/credentials.db",
    ".config/gcloud/application_default_credentials.json",
    ".config/gcloud/access_tokens.db",
    ".azure/accessTokens.json",
    ".azure/msal_token_cache.json",
    ".kube/config",
    ".config/openstack/clouds.yaml",
    ".config/rclone/rclone.conf",
    ".gnupg/secring.gpg",
)
HOST_CREDENTIAL_DIRS = ("/etc/ssl/private/", "/etc/pki/tls/private/")
GRID = "/etc/grid-security/"
GRID_PUBLIC = ("/etc/grid-security/certificates/", "/etc/grid-security/vomsdir/")


SPECIAL_MAX = 16 * 1024 * 1024
"""Account and release files are read whole up to this size; above it they are not read."""
SCAN_MAX = 16 * 1024 * 1024
"""Other files are searched (their first ``scan_bytes``) up to this size."""


def wanted(entry: Entry, scan_bytes: int) -> int:
    """How many bytes of this file the scan reads (0: none)."""
    if entry.kind is not Kind.FILE:
        return 0
    path = entry.path
    if path in SPECIAL:
        return SPECIAL_MAX
    if entry.size > SCAN_MAX:
        return 0
    if _KEYISH.search(PurePosixPath(path).name):
        return scan_bytes
    if "/.ssh/" in path or "/.gnupg/" in path or "/.docker/" in path:
        return scan_bytes
    return 0 if path.startswith(_BULK) and not path.startswith("/usr/local/") else scan_bytes


def key_kind(content: bytes) -> str | None:
    """What kind of private key the content holds, if any."""
    if _PEM_PRIVATE.search(content):
        return "a PEM private key"
    if _PUTTY in content[:64]:
        return "a PuTTY private key"
    if content.startswith(b"\xfe\xed\xfe\xed"):
        return "a Java keystore (holds private keys)"
    if _is_pkcs12(content):
        return "a PKCS#12 file (holds a private key)"
    return None


def keyish(name: str) -> bool:
    return _KEYISH.search(name) is not None


def account_lines(content: bytes | None) -> list[list[str]]:
    """The colon-separated fields of ``/etc/passwd`` or ``/etc/shadow``, at least seven."""
    if not content:
        return []
    text = content.decode("utf-8", "replace")
    rows = [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]
    return [row + [""] * (7 - len(row)) for row in rows]  # glibc reads short lines too


def has_keys(content: bytes | None, size: int) -> bool:
    if content is None:
        return size > 0  # too large to read: assume the worst
    return any(line.strip() and not line.strip().startswith(b"#") for line in content.splitlines())


def docker_auths(content: bytes | None) -> bool:
    if not content:
        return False
    try:
        data = json.loads(content)
    except ValueError:
        return False
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return False
    return any(
        isinstance(v, dict) and (v.get("auth") or v.get("identitytoken") or v.get("password"))
        for v in auths.values()
    )


def _is_pkcs12(content: bytes) -> bool:
    """A DER PFX: SEQUENCE { INTEGER 3, SEQUENCE { OID pkcs7-data, ... } }."""
    if len(content) < 24 or content[0] != 0x30:
        return False
    head = content[:32]
    return b"\x02\x01\x03\x30" in head[:12] and _PKCS12_OID in head


def os_name(release: bytes) -> str:
    values = {}
    for line in release.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("\"'")
    return values.get("PRETTY_NAME") or " ".join(
        v for v in (values.get("NAME"), values.get("VERSION_ID")) if v
    )
