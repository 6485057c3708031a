"""What a site admin does besides `vmic sync`: init, subscribe, approve, inspect, repair.

Each function does one command's work on a site home and returns values for
the CLI to print. Commands that change trusted state take the site lock
(so they never interleave with a running sync) and write through
:class:`site_agent.site.Site`; read-only commands only open the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from feeds.verify import ListFormat, PreviousState, VerifiedList, verify_list
from keys.errors import ConfigError
from keys.trust import TrustStore
from keys.xmlsig import SignerPin
from site_agent import config as site_config
from site_agent.home import SiteHome
from site_agent.lock import SiteLock
from site_agent.names import check_name, slug
from site_agent.records import AVAILABLE, Change, ImageRecord, Subscription
from site_agent.site import Site
from site_agent.store import Store

if TYPE_CHECKING:
    from site_agent.fetch import ListFetch


@dataclass(frozen=True, slots=True, kw_only=True)
class InitResult:
    home: Path
    created: tuple[Path, ...]
    config_written: bool
    database_created: bool


def init_site(home: SiteHome, *, trust: Path | None) -> InitResult:
    """Create what is missing; never overwrite a config or a database."""
    no_database = not home.database.exists() or home.database.stat().st_size == 0
    if no_database and home.lists.is_dir() and any(home.lists.iterdir()):
        raise ConfigError(
            f"{home.root} has accepted lists but no database",
            hint="restore vmic.db from a backup; a new empty one would forget the versions seen",
        )
    created = tuple(home.create_directories())
    config_written = False
    if not home.config.exists():
        site_config.write_default(home.config, trust=trust)
        config_written = True
    elif trust is not None:
        raise ConfigError(
            f"{home.config} exists; --trust was not applied",
            hint="edit [trust] directory in config.toml",
        )
    database_created = not home.database.exists()
    Store.open(home.database, create=True).close()
    return InitResult(
        home=home.root,
        created=created,
        config_written=config_written,
        database_created=database_created,
    )


@contextmanager
def locked_site(home: SiteHome, *, now: datetime, purpose: str) -> Iterator[Site]:
    home.require_initialised()
    config = site_config.load(home.config)
    with SiteLock(home.lock, purpose=purpose), Store.open(home.database) as store:
        yield Site(home, config, store, now=now)


@contextmanager
def read_store(home: SiteHome) -> Iterator[Store]:
    home.require_initialised()
    with Store.open(home.database) as store:
        yield store


def default_name(title: str, taken: set[str]) -> str:
    base = slug(title, fallback="list")
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


async def _fetch_once(url: str, site: Site) -> ListFetch:
    from site_agent.fetch import Fetcher  # noqa: PLC0415 - the network client, for subscribe only

    async with Fetcher(
        limits=site.config.limits,
        ca_bundle=site.config.ca_bundle,
        identity=site.config.identity,
    ) as fetcher:
        return await fetcher.fetch_list(url)


def subscribe(
    home: SiteHome,
    url: str,
    *,
    pins: Sequence[SignerPin],
    name: str | None,
    auto_approve: bool,
    now: datetime,
    list_format: ListFormat | None = None,
) -> tuple[Subscription, VerifiedList, list[Change]]:
    """Fetch and verify the list once; only a list that verifies is subscribed to."""
    if not pins:
        raise ConfigError("pin at least one endorser: --endorser-dn DN --ca-dn DN")
    if name is not None:
        check_name(name, "subscription name")
    with locked_site(home, now=now, purpose="vmic subscribe") as site:
        taken = site.store.subscription_names()
        if name is not None and name in taken:
            raise ConfigError(f"a subscription named {name} exists already")
        fetched = asyncio.run(_fetch_once(url, site))
        raw = fetched.body
        trust = TrustStore.from_directory(site.config.trust_dir)

        def verify(previous: PreviousState | None) -> VerifiedList:
            return verify_list(
                raw,
                trust=trust,
                pins=list(pins),
                now=now,
                crl=site.config.crl,
                previous=previous,
                limits=site.config.limits,
                list_format=list_format,
            )

        verified = verify(None)
        lst = verified.image_list
        existing = site.store.subscription_for_list(lst.id)
        if existing is not None:
            raise ConfigError(
                f"list {lst.id} is already subscribed to as {existing.name} ({existing.url})"
            )
        previous = site.previous_state(lst.id)
        if previous is not None:  # subscribed before: the old rollback state still holds
            verified = verify(previous)
        sub = Subscription(
            name=name or default_name(lst.title, taken),
            url=url,
            list_id=lst.id,
            self_url=lst.self_url,
            pins=tuple(pins),
            auto_approve=auto_approve,
            created=now,
        )
        with site.store.atomic():
            site.store.add_subscription(sub)
        _accepted, changes = site.accept_list(sub, verified)
        # Keep the validators: the first sync then asks with a conditional GET.
        site.store.record_attempt(
            sub.name,
            at=now,
            ok=True,
            etag=fetched.validators.etag,
            last_modified=fetched.validators.last_modified,
            validators=True,
            endorser_version=lst.version,
        )
        return sub, verified, changes


def unsubscribe(home: SiteHome, name: str, *, now: datetime) -> list[Change]:
    with locked_site(home, now=now, purpose="vmic unsubscribe") as site:
        sub = site.store.subscription(name)
        if sub is None:
            raise ConfigError(f"no subscription named {name}", hint="see `vmic subscriptions`")
        return site.withdraw_subscription(sub)


def approve(
    home: SiteHome, image_ids: Sequence[str], *, shareable: bool, now: datetime
) -> list[Change]:
    with locked_site(home, now=now, purpose="vmic approve") as site:
        return [site.approve(i, shareable=shareable) for i in image_ids]


def refuse(home: SiteHome, image_ids: Sequence[str], *, reason: str, now: datetime) -> list[Change]:
    if not reason.strip():
        raise ConfigError("--reason must say why the image is refused")
    with locked_site(home, now=now, purpose="vmic refuse") as site:
        return [site.refuse(i, reason=reason) for i in image_ids]


def purge(home: SiteHome, image_ids: Sequence[str], *, now: datetime) -> tuple[list[Change], int]:
    """Delete the bytes of images that no longer run; the changes and the bytes freed."""
    with locked_site(home, now=now, purpose="vmic image purge") as site:
        for image_id in image_ids:  # refuse before deleting anything
            site.purgeable(image_id)
        done = [site.purge(i) for i in image_ids]
    return [change for change, _ in done], sum(freed for _, freed in done)


def withdraw(home: SiteHome, image_ids: Sequence[str], *, now: datetime) -> list[Change]:
    with locked_site(home, now=now, purpose="vmic withdraw") as site:
        return [site.withdraw(i) for i in image_ids]


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheCheck:
    image: ImageRecord | None
    sha512: str
    ok: bool
    action: str


def verify_cache(home: SiteHome, *, repair: bool, now: datetime) -> list[CacheCheck]:
    """Re-hash every cached file; with ``repair``, quarantine bad ones for download again."""
    with locked_site(home, now=now, purpose="vmic cache verify") as site:
        results = []
        available: dict[str, list[ImageRecord]] = {}
        for image in site.store.images(state=AVAILABLE):
            available.setdefault(image.sha512, []).append(image)
        for cached in list(site.cache.files()):
            users = available.get(cached.sha512, [])
            good = site.cache.rehash(cached.sha512)
            action = "ok"
            if not good:
                action = "found damaged"
                if repair:
                    site.cache.quarantine(cached.sha512, now=now)
                    for image in users:
                        site.mark_missing(image, reason="failed a re-hash; quarantined")
                    action = "quarantined; will be downloaded again"
            results.append(
                CacheCheck(
                    image=users[0] if users else None,
                    sha512=cached.sha512,
                    ok=good,
                    action=action,
                )
            )
        return results
