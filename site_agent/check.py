"""`vmic site check`: is this site home fit to sync? What an admin runs after a change.

It reads and changes nothing (opening the database after an upgrade brings
its schema up to date, as every command does). It checks the configuration
(strictly, as a sync would), the database (its integrity check and schema),
the trust directory (every CA certificate and CRL file that cannot be used, by name and reason;
notes about files the certificate library warned about; every CA without a
usable, current CRL, which under ``crl = "require"`` means no list signed
under it can be taken), and the site's identity for its export (the
certificate and key load, belong together, and are not about to expire).
Each finding is a problem or a note; any problem makes the command exit
non-zero, so a package update of the trust directory can be followed by
`vmic site check` in the same script.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from feeds.endorse import check_signer
from keys.certs import cert_label, load_certificate, load_certificates, load_private_key
from keys.errors import VmicError
from keys.trust import CrlPolicy, TrustStore
from site_agent import config as site_config
from site_agent.home import SiteHome
from site_agent.store import SCHEMA_VERSION, Store

EXPIRY_WARNING = timedelta(days=30)
"""A site certificate expiring sooner than this is a problem: peers will stop trusting it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    area: str
    """``config``, ``database``, ``trust``, ``crl`` or ``identity``."""
    message: str
    problem: bool


@dataclass(slots=True)
class SiteCheck:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.problem for f in self.findings)

    def add(self, area: str, message: str, *, problem: bool = False) -> None:
        self.findings.append(Finding(area=area, message=message, problem=problem))


def check_site(home: SiteHome, *, now: datetime) -> SiteCheck:
    """Every finding about ``home``; raises only when it is not a site home at all."""
    home.require_initialised()
    result = SiteCheck()
    try:
        config = site_config.load(home.config)
    except VmicError as error:
        result.add("config", error.message, problem=True)
        return result
    result.add("config", f"{home.config}: read")
    _check_database(home, result)
    _check_trust(config, result, now=now)
    if config.identity is not None:
        _check_identity(config.identity, result, now=now)
    return result


def _check_database(home: SiteHome, result: SiteCheck) -> None:
    try:
        with Store.open(home.database) as store:
            subscriptions = len(store.subscriptions())
    except VmicError as error:
        result.add("database", error.message, problem=True)
        return
    result.add(
        "database",
        f"{home.database}: intact, schema {SCHEMA_VERSION}, {subscriptions} subscription(s)",
    )


def _check_trust(config: site_config.SiteConfig, result: SiteCheck, *, now: datetime) -> None:
    try:
        trust = TrustStore.from_directory(config.trust_dir)
    except VmicError as error:
        result.add("trust", error.message, problem=True)
        return
    result.add(
        "trust",
        f"{trust.source}: {len(trust.anchors)} root and {len(trust.intermediates)} "
        f"intermediate CA certificate(s), {trust.crl_count} CRL(s)",
    )
    for problem in trust.problems:
        result.add("trust", problem, problem=True)
    for note in trust.notes:
        result.add("trust", f"{note} (loaded; the certificate library warned)")
    required = config.crl is CrlPolicy.REQUIRE
    for ca, why in trust.crl_states(at=now):
        if why is not None:
            consequence = (
                "no list signed under it is accepted (crl = require)"
                if required
                else "revocation is not checked for it (crl = if-present)"
            )
            result.add("crl", f"{cert_label(ca)}: {why}; {consequence}", problem=required)


def _check_identity(identity: site_config.Identity, result: SiteCheck, *, now: datetime) -> None:
    try:
        cert = load_certificate(identity.cert)
        chain = load_certificates(identity.chain) if identity.chain else []
        check_signer(cert, load_private_key(identity.key), chain, now=now, until=now)
    except VmicError as error:
        result.add("identity", error.message, problem=True)
        return
    left = cert.not_valid_after_utc - now
    message = f"{cert_label(cert)}: expires {cert.not_valid_after_utc:%Y-%m-%d}"
    if left < EXPIRY_WARNING:
        result.add("identity", f"{message}, in {left.days} day(s): renew it", problem=True)
    else:
        result.add("identity", message)
