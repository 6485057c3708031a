"""`vmic serve`'s settings: the ``[serve]`` table of ``config.toml``.

Where it listens, TLS, connection limits, re-hashing, nginx in front
(``accel_redirect``) and who may fetch (``access``, ``allowed_peers``,
``public_catalogue``; :mod:`federation.peer_tls`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from keys.errors import ConfigError
from keys.xmlsig import SignerPin
from site_agent.config_section import Section, config_path, parse_pins


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


def parse_serve(section: Section, path: Path) -> ServeSettings:
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
        tls_cert=config_path(tls_cert, path) if tls_cert else None,
        tls_key=config_path(tls_key, path) if tls_key else None,
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
