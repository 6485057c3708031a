"""The site's `config.toml`: writing the commented default, reading it strictly, editing hooks.

Everything a site may tune lives here: the trust directory and CRL policy,
the approval policy for new images, cache retention, network limits (merged
into :class:`keys.limits.Limits`), and the hook commands. Unknown keys are
errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions

from feeds.model import check_url
from keys.errors import ConfigError, ListFormatError
from keys.fileio import read_file, write_atomic
from keys.limits import DEFAULT_LIMITS, Limits
from keys.trust import CrlPolicy
from keys.xmlsig import SignerPin
from site_agent import vmcatcher
from site_agent.cloud.settings import CloudSettings, parse_clouds
from site_agent.config_section import Section, config_path, parse_pins
from site_agent.config_template import TEMPLATE
from site_agent.names import check_name
from site_agent.serve_settings import ServeSettings, parse_serve

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
    serve: ServeSettings = field(default_factory=ServeSettings)
    clouds: tuple[CloudSettings, ...] = ()


def write_default(path: Path, *, trust: Path | None) -> None:
    # A TOML string literal, whatever quotes or backslashes the path holds.
    # Absolute, so that cron and systemd (another working folder) find the same folder.
    where = str(trust.absolute()) if trust is not None else DEFAULT_TRUST
    text = TEMPLATE.format(trust=tomlkit.string(where).as_string())
    write_atomic(path, text.encode("utf-8"), mode=0o640)


def document(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(read_file(path, what="configuration").decode("utf-8"))
    except (tomlkit.exceptions.ParseError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


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
    trust = Section(data, "trust", path, {"directory", "crl"})
    approval = Section(data, "approval", path, {"default"})
    cache = Section(data, "cache", path, {"expired_retention_days"})
    net = Section(
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
    events = Section(data, "events", path, {"max_attempts"})
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
        trust_dir=config_path(trust.get("directory", str, DEFAULT_TRUST), path),
        crl=CrlPolicy(crl),
        approval=policy,
        expired_retention=timedelta(days=cache.positive("expired_retention_days", 7)),
        ca_bundle=config_path(ca_bundle, path) if ca_bundle else None,
        limits=limits,
        event_max_attempts=events.count("max_attempts", 5),
        hooks=_hooks(data.get("hooks", []), path),
        identity=_identity(Section(data, "identity", path, _IDENTITY_KEYS), path),
        federation=_federation(
            Section(
                data,
                "federation",
                path,
                {"prefer_peers", "approve_if_peers", "follow", "race", "race_after_seconds"},
            )
        ),
        serve=parse_serve(
            Section(
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


def _identity(section: Section, path: Path) -> Identity | None:
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
        cert=config_path(cert, path),
        key=config_path(key, path),
        chain=config_path(chain, path) if chain else None,
        base_url=base_url.rstrip("/"),
        export_validity=timedelta(days=section.positive("export_valid_days", 7)),
    )


def _federation(section: Section) -> FederationSettings:
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
    section = Section(
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
