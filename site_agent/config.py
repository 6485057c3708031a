"""The site's `config.toml`: writing the commented default, reading it strictly, editing hooks.

Everything a site may tune lives here: the trust directory and CRL policy,
the approval policy for new images, cache retention, network limits (merged
into :class:`keys.limits.Limits`), and the hook commands. Unknown keys are
errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions

from feeds.model import check_url
from keys.dn import DistinguishedName
from keys.errors import ConfigError, ListFormatError, outside_bytes
from keys.fileio import read_file, write_atomic
from keys.limits import DEFAULT_LIMITS, Limits
from keys.trust import CrlPolicy
from keys.xmlsig import SignerPin
from site_agent import vmcatcher
from site_agent.cloud.settings import CloudSettings, parse_clouds
from site_agent.names import check_name

EVENT_TYPES = (
    "image.new",
    "image.approved",
    "image.refused",
    "image.available",
    "image.withdrawn",
    "list.accepted",
    "list.rejected",
    "list.expired",
    "list.equivocation",
    "list.freeze",
)
APPROVAL_POLICIES = ("hold", "auto")

DEFAULT_TRUST = "/etc/grid-security/certificates"

_TEMPLATE = """\
# vmic site configuration. `vmic site init` wrote this file; edit it freely
# (`vmic hooks add/remove` edit the [[hooks]] tables and keep your comments).

[trust]
# OpenSSL CApath-style folder of CA certificates and CRLs (fetch-crl keeps the
# CRLs fresh). Every list must chain to a CA in it. A relative path in this
# file is taken from the folder this file is in (the site home), never from
# the folder a command happens to run in.
directory = {trust}
# "require": every CA in a chain needs a current CRL here (missing or stale
# CRL: the list is rejected). "if-present": use the CRLs that are here.
crl = "require"

[approval]
# Images new to this site: "hold" them until an admin runs `vmic approve`
# (as the HEPiX policy asks), or approve them "auto"matically. A subscription
# made with --auto-approve approves its own images whatever this says.
default = "hold"

[cache]
# Days a withdrawn image stays in cache/expired before it is deleted.
expired_retention_days = 7

[network]
# HTTPS is verified against the system's CAs, or this bundle:
# ca_bundle = "/etc/pki/tls/certs/ca-bundle.crt"
fetch_concurrency = 8
download_concurrency = 2
list_deadline_seconds = 60
read_timeout_seconds = 30
# A transfer slower than this on average (after rate_grace_seconds) is
# abandoned and resumed on the next run.
min_rate_bytes_per_second = 16384
rate_grace_seconds = 20
download_deadline_hours = 6
# Extra attempts after a failed transfer, the first after backoff_seconds
# (doubling each time).
retries = 2
backoff_seconds = 2
# A list over this size, or naming more images, is refused (real lists name a
# few hundred). Verifying a list takes about 13 times its size in memory, and
# verify_concurrency lists are verified at once.
max_list_bytes = 16777216
max_list_entries = 10000
verify_concurrency = 2

[events]
# Attempts to deliver an event to a hook before it is given up and reported.
max_attempts = 5

[identity]
# The site's own certificate signs its export for peer sites (`vmic site
# identity` fills this in); base_url is where peers reach `vmic serve`.
# cert = "/etc/grid-security/vmic/sitecert.pem"
# key = "/etc/grid-security/vmic/sitekey.pem"
# chain = "/etc/grid-security/vmic/chain.pem"
# base_url = "https://vmic.site.example.org:8443"
export_valid_days = 7

[federation]
# Fetch image bytes (and, when the endorser is down, lists) from peers that
# offer them, fastest first, before the endorser's URL (false: the endorser first).
prefer_peers = true
# When peers and the endorser both offer an image, race them: the preferred
# sources start; the others join after race_after_seconds if the first have sent
# nothing or still need more than 30 s; the first download whose SHA-512 matches
# wins and the other is cancelled (a clearly slower one stands down early).
# false: one after the other.
race = true
race_after_seconds = 2
# Approve an image at once when this many peers approved and share it (0: off).
approve_if_peers = 0
# Subscribe automatically to lists that peers carry when their endorser is one
# of these [subject DN, issuer DN] pairs:
# follow = [["/DC=org/DC=example/OU=Users/CN=Jane Endorser", "/DC=org/DC=example/CN=Example CA"]]

[serve]
# `vmic serve`: where to listen, TLS (optional; without it, put a TLS proxy in
# front), and how often served images are re-hashed.
bind = "127.0.0.1:8080"
# tls_cert = "/etc/grid-security/hostcert.pem"
# tls_key = "/etc/grid-security/hostkey.pem"
rehash_hours = 24
# Connections: at most max_connections open at once (the site's peers, pilot
# factories, people), at most max_connections_per_address of them from one
# client address (an IPv6 /64 counts as one address); one more gets 503 with
# Retry-After and is closed. A client has header_timeout_seconds to send a
# request's headers (counted from connecting, or from the first byte of its next
# request), else it gets 408 and is closed, so idle or slow clients cannot hold
# connections others need. listen_backlog connections may wait to be accepted.
# Behind a reverse proxy every request comes from the proxy's address: set
# max_connections_per_address = max_connections there (docs/serving.md).
max_connections = 1024
max_connections_per_address = 128
header_timeout_seconds = 10
listen_backlog = 1024
# Only behind nginx: let nginx send the bytes of the lists in force too.
# `vmic serve` then answers /lists/<id>.atom with an empty body and
# X-Accel-Redirect: <accel_redirect><id>/<version>-<sha256>.atom, nginx's
# internal location for the site home's lists/ folder (docs/serving.md).
# accel_redirect = "/_vmic_lists/"
# Who may fetch the export, the lists and the image bytes: "anyone" who reaches
# this server, or only "peers": clients whose TLS certificate chains to the trust
# directory (CRLs as [trust] crl says) and is that of a peer this site follows
# (`vmic peer add`) or one of allowed_peers; any other client gets 403. "peers"
# needs tls_cert and tls_key (vmic serve's own TLS, not a proxy's). /healthz and
# /metrics stay open to anyone (docs/serving.md, "Serving to peers only").
access = "anyone"
# More certificates served with access = "peers", as [subject DN, issuer DN]:
# allowed_peers = [
#   ["/DC=org/DC=example/CN=host/vmic.site-b.example.org", "/DC=org/DC=example/CN=Example CA"],
# ]
# With access = "peers": the catalogue (/, /image/<uuid>) and the API (/api/v1/)
# stay open to anyone (true), or are for those peers only (false).
public_catalogue = true

# Hooks: commands run for events, without a shell, with the event in VMIC_*
# environment variables and as JSON on stdin. Edit with `vmic hooks add` and
# `vmic hooks remove`, or by hand:
#
# [[hooks]]
# name = "glance"
# on = ["image.available", "image.withdrawn"]
# command = ["/usr/local/bin/vmic-glance", "--cloud", "site1"]
# timeout_seconds = 300

# Clouds: OpenStack Glance, where available images are registered for users
# (`vmic cloud add` writes one; `vmic cloud sync`, and every `vmic sync`, keeps it
# in step). os_cloud is the clouds.yaml entry openstacksdk reads.
#
# [[clouds]]
# name = "site1"
# os_cloud = "openstack"
# lists = []                  # subscriptions whose images go there (empty: all)
# vos = []                    # VOs whose images go there (empty: all)
# visibility = "shared"       # private, shared (with the VO's projects), community, public
# projects = {{ dteam = ["0c4e...PROJECT_ID"] }}
# name_template = "{{title}}"
# withdrawn = "deactivate"    # or "delete"; deactivated images are deleted after
# delete_after_days = 7
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hook:
    name: str
    events: tuple[str, ...]
    command: tuple[str, ...]
    timeout: float = 300.0
    vmcatcher_env: bool = False
    """Also give the hook the VMCATCHER_* variables vmcatcher's event handlers read."""

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """The site's certificate for signing its export, and where peers reach it."""

    cert: Path
    key: Path
    chain: Path | None
    base_url: str
    export_validity: timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationSettings:
    prefer_peers: bool = True
    approve_if_peers: int = 0
    follow: tuple[SignerPin, ...] = ()
    race: bool = True
    """Race the endorser's URL against peers that hold an image (:mod:`site_agent.sources`)."""
    race_after: timedelta = timedelta(seconds=2)
    """The head start of the preferred sources before the others join the race."""


class Access(StrEnum):
    """Who may fetch a site's export, lists and image bytes from `vmic serve`."""

    ANYONE = "anyone"
    PEERS = "peers"
    """Only clients presenting the certificate of an allowed peer (mutual TLS)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeSettings:
    """`vmic serve`'s listener and its limits (the [serve] table)."""

    bind: str = "127.0.0.1:8080"
    max_connections: int = 1024
    """Connections open at once; one more gets 503."""
    max_connections_per_address: int = 128
    """Connections open at once from one client address (an IPv6 /64); one more gets 503."""
    header_timeout: float = 10.0
    """Seconds a client has to send a request's headers; then 408 and the connection closes."""
    listen_backlog: int = 1024
    """Connections the kernel queues before they are accepted."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    rehash_interval: timedelta = timedelta(hours=24)
    accel_redirect: str | None = None
    """nginx's internal location prefix for lists/ (``/_vmic_lists/``): the lists in force are
    answered with an empty body and ``X-Accel-Redirect`` naming their file; None: off."""
    access: Access = Access.ANYONE
    """Who may fetch the export, lists and image bytes (:mod:`federation.peer_tls`)."""
    allowed_peers: tuple[SignerPin, ...] = ()
    """With ``access = "peers"``: certificates served besides those of the followed peers."""
    public_catalogue: bool = True
    """With ``access = "peers"``: whether the catalogue page and the API stay open to anyone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteConfig:
    trust_dir: Path
    crl: CrlPolicy
    approval: str
    expired_retention: timedelta
    ca_bundle: Path | None
    limits: Limits
    event_max_attempts: int
    hooks: tuple[Hook, ...]
    identity: Identity | None = None
    federation: FederationSettings = FederationSettings()
    serve: ServeSettings = ServeSettings()
    clouds: tuple[CloudSettings, ...] = ()


def write_default(path: Path, *, trust: Path | None) -> None:
    # A TOML string literal, whatever quotes or backslashes the path holds.
    # Absolute, so that cron and systemd (another working folder) find the same folder.
    where = str(trust.absolute()) if trust is not None else DEFAULT_TRUST
    text = _TEMPLATE.format(trust=tomlkit.string(where).as_string())
    write_atomic(path, text.encode("utf-8"), mode=0o640)


def document(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(read_file(path, what="configuration").decode("utf-8"))
    except (tomlkit.exceptions.ParseError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


class _Section:
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


def _data(path: Path) -> dict[str, Any]:
    """The configuration as plain data: read with the standard library's TOML reader (about
    twenty times faster than tomlkit, which edits keep for its comments)."""
    try:
        return tomllib.loads(read_file(path, what="configuration").decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def load(path: Path) -> SiteConfig:
    data = _data(path)
    unknown = set(data) - {
        "trust",
        "approval",
        "cache",
        "network",
        "events",
        "hooks",
        "identity",
        "federation",
        "serve",
        "clouds",
    }
    if unknown:
        raise ConfigError(f"{path}: unknown tables: {', '.join(sorted(unknown))}")
    trust = _Section(data, "trust", path, {"directory", "crl"})
    approval = _Section(data, "approval", path, {"default"})
    cache = _Section(data, "cache", path, {"expired_retention_days"})
    net = _Section(
        data,
        "network",
        path,
        {
            "ca_bundle",
            "fetch_concurrency",
            "download_concurrency",
            "list_deadline_seconds",
            "read_timeout_seconds",
            "min_rate_bytes_per_second",
            "rate_grace_seconds",
            "download_deadline_hours",
            "retries",
            "backoff_seconds",
            "max_list_bytes",
            "max_list_entries",
            "verify_concurrency",
        },
    )
    events = _Section(data, "events", path, {"max_attempts"})
    crl = trust.get("crl", str, "require")
    if crl not in {p.value for p in CrlPolicy}:
        raise ConfigError(f'{path}: [trust] crl must be "require" or "if-present", not {crl!r}')
    policy = approval.get("default", str, "hold")
    if policy not in APPROVAL_POLICIES:
        raise ConfigError(f'{path}: [approval] default must be "hold" or "auto", not {policy!r}')
    ca_bundle = net.get("ca_bundle", str, None)
    limits = replace(
        DEFAULT_LIMITS,
        fetch_concurrency=net.count("fetch_concurrency", DEFAULT_LIMITS.fetch_concurrency),
        download_concurrency=net.count("download_concurrency", DEFAULT_LIMITS.download_concurrency),
        list_deadline=timedelta(
            seconds=net.positive(
                "list_deadline_seconds", DEFAULT_LIMITS.list_deadline.total_seconds()
            )
        ),
        read_timeout=timedelta(
            seconds=net.positive(
                "read_timeout_seconds", DEFAULT_LIMITS.read_timeout.total_seconds()
            )
        ),
        min_rate=net.count("min_rate_bytes_per_second", DEFAULT_LIMITS.min_rate),
        rate_grace=timedelta(
            seconds=net.positive("rate_grace_seconds", DEFAULT_LIMITS.rate_grace.total_seconds())
        ),
        backoff=timedelta(
            seconds=net.positive("backoff_seconds", DEFAULT_LIMITS.backoff.total_seconds())
        ),
        download_deadline=timedelta(
            hours=net.positive(
                "download_deadline_hours", DEFAULT_LIMITS.download_deadline.total_seconds() / 3600
            )
        ),
        retries=_non_negative(net.get("retries", int, DEFAULT_LIMITS.retries), path),
        max_list_bytes=net.count("max_list_bytes", DEFAULT_LIMITS.max_list_bytes),
        max_entries=net.count("max_list_entries", DEFAULT_LIMITS.max_entries),
        verify_concurrency=net.count("verify_concurrency", DEFAULT_LIMITS.verify_concurrency),
    )
    return SiteConfig(
        trust_dir=_path(trust.get("directory", str, DEFAULT_TRUST), path),
        crl=CrlPolicy(crl),
        approval=policy,
        expired_retention=timedelta(days=cache.positive("expired_retention_days", 7)),
        ca_bundle=_path(ca_bundle, path) if ca_bundle else None,
        limits=limits,
        event_max_attempts=events.count("max_attempts", 5),
        hooks=_hooks(data.get("hooks", []), path),
        identity=_identity(_Section(data, "identity", path, _IDENTITY_KEYS), path),
        federation=_federation(
            _Section(
                data,
                "federation",
                path,
                {"prefer_peers", "approve_if_peers", "follow", "race", "race_after_seconds"},
            )
        ),
        serve=_serve(
            _Section(
                data,
                "serve",
                path,
                {
                    "bind",
                    "max_connections",
                    "max_connections_per_address",
                    "header_timeout_seconds",
                    "listen_backlog",
                    "tls_cert",
                    "tls_key",
                    "rehash_hours",
                    "accel_redirect",
                    "access",
                    "allowed_peers",
                    "public_catalogue",
                },
            ),
            path,
        ),
        clouds=parse_clouds(data.get("clouds", []), path),
    )


_IDENTITY_KEYS = {"cert", "key", "chain", "base_url", "export_valid_days"}


def _identity(section: _Section, path: Path) -> Identity | None:
    cert, key = section.get("cert", str, None), section.get("key", str, None)
    base_url = section.get("base_url", str, None)
    if not (cert or key or base_url):
        return None
    if not (cert and key and base_url):
        raise ConfigError(
            f"{path}: [identity] needs cert, key and base_url together",
            hint="set them with `vmic site identity --cert ... --key ... --base-url ...`",
        )
    try:
        check_url(base_url.rstrip("/"), what="base_url")
    except ListFormatError as exc:
        raise ConfigError(f"{path}: [identity] {exc.message}") from exc
    chain = section.get("chain", str, None)
    return Identity(
        cert=_path(cert, path),
        key=_path(key, path),
        chain=_path(chain, path) if chain else None,
        base_url=base_url.rstrip("/"),
        export_validity=timedelta(days=section.positive("export_valid_days", 7)),
    )


def _federation(section: _Section) -> FederationSettings:
    approve_if = section.get("approve_if_peers", int, 0)
    if approve_if < 0:
        raise ConfigError(f"{section.where} approve_if_peers: must not be negative")
    pins = parse_pins(section.get("follow", list, []), f"{section.where} follow")
    race_after = section.get("race_after_seconds", (int, float), 2)
    if not math.isfinite(race_after) or race_after < 0:
        raise ConfigError(
            f"{section.where} race_after_seconds: must be a finite number of at least 0, "
            f"not {race_after}"
        )
    return FederationSettings(
        prefer_peers=section.get("prefer_peers", bool, True),
        approve_if_peers=approve_if,
        follow=pins,
        race=section.get("race", bool, True),
        race_after=timedelta(seconds=race_after),
    )


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


def _path(text: str, config: Path) -> Path:
    """A path from the configuration; a relative one is taken from the config's folder."""
    return config.parent.absolute() / Path(text)  # an absolute ``text`` replaces the base


def _serve(section: _Section, path: Path) -> ServeSettings:
    tls_cert, tls_key = section.get("tls_cert", str, None), section.get("tls_key", str, None)
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError(f"{section.where}: tls_cert and tls_key go together")
    access = section.get("access", str, Access.ANYONE.value)
    if access not in {a.value for a in Access}:
        raise ConfigError(f'{section.where} access: "anyone" or "peers", not {access!r}')
    allowed = parse_pins(section.get("allowed_peers", list, []), f"{section.where} allowed_peers")
    public = section.get("public_catalogue", bool, True)
    if access == Access.PEERS and not tls_cert:
        raise ConfigError(
            f'{section.where}: access = "peers" needs tls_cert and tls_key',
            hint="vmic serve asks clients for certificates in its own TLS; give it the host's "
            "certificate and key (a TLS proxy in front cannot pass client certificates on)",
        )
    if access == Access.PEERS and section.get("accel_redirect", str, None):
        raise ConfigError(
            f'{section.where}: access = "peers" cannot go with accel_redirect',
            hint="nginx in front ends TLS and serves the site home's files to anyone; "
            "peers-only serving needs vmic serve's own TLS (docs/serving.md)",
        )
    if access == Access.ANYONE and (allowed or not public):
        raise ConfigError(
            f'{section.where}: allowed_peers and public_catalogue = false need access = "peers"',
            hint='set access = "peers", or remove them: with "anyone" everything is public',
        )
    defaults = ServeSettings()
    return ServeSettings(
        bind=section.get("bind", str, defaults.bind),
        max_connections=section.count("max_connections", defaults.max_connections),
        max_connections_per_address=section.count(
            "max_connections_per_address", defaults.max_connections_per_address
        ),
        header_timeout=section.positive("header_timeout_seconds", defaults.header_timeout),
        listen_backlog=section.count("listen_backlog", defaults.listen_backlog),
        tls_cert=_path(tls_cert, path) if tls_cert else None,
        tls_key=_path(tls_key, path) if tls_key else None,
        rehash_interval=timedelta(hours=section.positive("rehash_hours", 24)),
        accel_redirect=_accel_prefix(section.get("accel_redirect", str, None), section.where),
        access=Access(access),
        allowed_peers=allowed,
        public_catalogue=public,
    )


_ACCEL_PREFIX = re.compile(r"/(?:[A-Za-z0-9_-]+/)+")


def _accel_prefix(text: str | None, where: str) -> str | None:
    """An internal location prefix: ``/`` + plain names + ``/``; no dots, escapes or ``@``."""
    if text is None:
        return None
    if not _ACCEL_PREFIX.fullmatch(text) or len(text) > 200:
        raise ConfigError(
            f'{where} accel_redirect: {text!r} is not a location prefix like "/_vmic_lists/"',
            hint="letters, digits, '_' and '-' between slashes, starting and ending with '/'",
        )
    return text


def _non_negative(value: int, path: Path) -> int:
    if value < 0:
        raise ConfigError(f"{path}: [network] retries must not be negative")
    return value


def _hooks(items: object, path: Path) -> tuple[Hook, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{path}: hooks must be an array of [[hooks]] tables")
    hooks = [_hook(item, path) for item in items]
    names = [h.name for h in hooks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two hooks share a name")
    return tuple(hooks)


def _hook(item: object, path: Path) -> Hook:
    if not isinstance(item, dict):
        raise ConfigError(f"{path}: each [[hooks]] entry must be a table")
    section = _Section(
        {"hook": item}, "hook", path, {"name", "on", "command", "timeout_seconds", "vmcatcher_env"}
    )
    name = section.get("name", str, "")
    on = section.get("on", list, [])
    command = section.get("command", list, [])
    return make_hook(
        name=name,
        events=on,
        command=command,
        timeout=section.positive("timeout_seconds", 300),
        vmcatcher_env=section.get("vmcatcher_env", bool, False),
    )


VMCATCHER_EVENTS = tuple(vmcatcher.TYPES)
"""The events a vmcatcher handler understands (ImageNew, AvailablePostfix, ExpirePosfix)."""


def make_hook(
    *,
    name: str,
    events: list[Any],
    command: list[Any],
    timeout: float,
    vmcatcher_env: bool = False,
) -> Hook:
    """A checked hook (from config.toml or from `vmic hooks add`)."""
    check_name(name, "hook name")
    if not events or not all(isinstance(e, str) and (e in EVENT_TYPES or e == "*") for e in events):
        raise ConfigError(f"hook {name}: events must be among {', '.join(EVENT_TYPES)} (or '*')")
    if not command or not all(isinstance(c, str) and c for c in command):
        raise ConfigError(f"hook {name}: command must be a non-empty list of strings")
    if not Path(command[0]).is_absolute():
        raise ConfigError(
            f"hook {name}: the command must be an absolute path, not {command[0]!r}",
            hint="hooks run without a shell and without searching PATH",
        )
    if timeout <= 0:
        raise ConfigError(f"hook {name}: timeout must be positive")
    if vmcatcher_env and not all(e in VMCATCHER_EVENTS for e in events):
        raise ConfigError(
            f"hook {name}: a vmcatcher handler only knows {', '.join(VMCATCHER_EVENTS)}",
            hint="give those events explicitly with --on",
        )
    return Hook(
        name=name,
        events=tuple(events),
        command=tuple(command),
        timeout=timeout,
        vmcatcher_env=vmcatcher_env,
    )
