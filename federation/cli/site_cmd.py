"""`vmic site init/identity/check`, `subscribe`, `unsubscribe`, `subscriptions`, `sync`,
`history`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from federation.cli.commands import HELP
from federation.cli.common import (
    ExitCode,
    Progress,
    add_format_option,
    format_from,
    human_size,
    iso,
    print_json,
    shown,
    utcnow,
)
from federation.cli.sitehome import home_parent, pins_from, print_changes, site_home
from federation.cli.sitelog import site_log
from federation.peers import SiteFederation
from feeds.endorse import check_signer
from keys.certs import load_certificate, load_certificates, load_private_key
from keys.errors import ConfigError, LockedError, VmicError
from site_agent import admin, config_edit
from site_agent.check import check_site
from site_agent.home import SiteHome
from site_agent.report import SyncReport
from site_agent.sync import run_sync


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    home = home_parent()
    site = commands.add_parser(
        "site",
        help=HELP["site"],
        description="Set up and inspect the site home where vmic keeps its state.",
    )
    site_sub = site.add_subparsers(dest="site_command", metavar="COMMAND", required=True)
    init = site_sub.add_parser(
        "init",
        parents=[home],
        help="create the site home (config, database, cache folders)",
        description=(
            "Create the site home: a commented config.toml, the SQLite database and the "
            "cache folders. Idempotent: what exists is kept, nothing is overwritten."
        ),
    )
    init.add_argument(
        "--trust", type=Path, help="trust directory (default /etc/grid-security/certificates)"
    )
    _identity_options(init, required=False)
    init.set_defaults(func=_init)

    identity = site_sub.add_parser(
        "identity",
        parents=[home],
        help="set the site's certificate and public URL (for its export)",
        description=(
            "Set the certificate and key with which the site signs its export for peers "
            "(the key file must be mode 0600), the chain to send with it, and the base URL "
            "where peers reach `vmic serve`. Written to [identity] in config.toml."
        ),
    )
    _identity_options(identity, required=True)
    identity.set_defaults(func=_identity)

    check = site_sub.add_parser(
        "check",
        parents=[home],
        help="check the config, database, trust directory (CAs, CRLs) and identity",
        description=(
            "Check, changing nothing, what a sync needs: the configuration, the database, "
            "every CA certificate and CRL file of the trust directory (each unusable file by "
            "name and reason; each CA without a usable, current CRL) and the site's identity. "
            f"Exit {int(ExitCode.PROBLEMS)} when anything needs the admin; run it after "
            "updating the trust directory."
        ),
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=_check)

    subscribe = commands.add_parser(
        "subscribe",
        parents=[home],
        help=HELP["subscribe"],
        description=(
            "Fetch and verify an image list once, then subscribe to it: a list that would "
            "fail verification is refused with the reason. Pin the endorser's full subject "
            "DN and issuer DN; repeat the pair to accept several signers (e.g. a renewed DN). "
            "Atom lists and HEPiX lists (JSON signed as S/MIME, as vmcaster and the EGI "
            "AppDB publish) are both accepted, told apart by their content on every fetch."
        ),
    )
    subscribe.add_argument("url", metavar="URL", help="where the signed list is published")
    subscribe.add_argument(
        "--endorser-dn",
        action="append",
        default=[],
        required=True,
        help="pinned signer subject DN (repeatable)",
    )
    subscribe.add_argument(
        "--ca-dn",
        action="append",
        default=[],
        required=True,
        help="pinned signer issuer DN (one per --endorser-dn)",
    )
    subscribe.add_argument(
        "--name", help="subscription name: letters, digits, . _ - (default: from the list title)"
    )
    subscribe.add_argument(
        "--auto-approve",
        action="store_true",
        help="approve this list's new images without an admin",
    )
    add_format_option(subscribe)
    subscribe.set_defaults(func=_subscribe)

    unsubscribe = commands.add_parser(
        "unsubscribe",
        parents=[home],
        help=HELP["unsubscribe"],
        description=(
            "End a subscription: its images are withdrawn and their files moved to "
            "cache/expired. The list's version history is kept (rollback protection "
            "still holds if you subscribe again)."
        ),
    )
    unsubscribe.add_argument("name", metavar="NAME", help="subscription name")
    unsubscribe.set_defaults(func=_unsubscribe)

    subs = commands.add_parser(
        "subscriptions",
        parents=[home],
        help=HELP["subscriptions"],
        description=(
            "Each subscription: name, URL, pinned endorser, list id, version in force, "
            "its expiry, the last success and the last error."
        ),
    )
    subs.add_argument("--json", action="store_true", help="machine-readable output")
    subs.set_defaults(func=_subscriptions)

    sync = commands.add_parser(
        "sync",
        parents=[home],
        help=HELP["sync"],
        description=(
            "The cron job: fetch every subscribed list, verify it, apply the approval "
            "policy, download approved images (resumable, SHA-512 checked), withdraw "
            "revoked, removed and expired images, run hooks, and bring the configured "
            "clouds in step (as `vmic cloud sync` does; not with --only or --no-download). "
            "Silent when all is well; "
            f"one line per problem on stderr and exit {int(ExitCode.PROBLEMS)} otherwise; "
            f"exit {int(ExitCode.ALARM)} while an alarm is open (`vmic alarms`: two signed "
            "versions of a list disagree, or an endorser's URL lags behind peers), with a "
            "line for each; "
            f"exit {int(ExitCode.LOCKED)} at once when another run holds the site."
        ),
    )
    sync.add_argument("--only", metavar="NAME", help="sync this subscription only")
    sync.add_argument("--no-download", action="store_true", help="lists only, no image bytes")
    sync.add_argument("--json", action="store_true", help="print a summary as JSON")
    sync.add_argument("-v", "--verbose", action="store_true", help="say what changed")
    sync.set_defaults(func=_sync)

    history = commands.add_parser(
        "history",
        parents=[home],
        help=HELP["history"],
        description=(
            "Every list version the site accepted or rejected, when, why, and the SHA-256 of "
            "the bytes (accepted bytes are kept under lists/ in the site home)."
        ),
    )
    history.add_argument("name", nargs="?", metavar="NAME", help="one subscription only")
    history.add_argument("--json", action="store_true", help="machine-readable output")
    history.set_defaults(func=_history)


def _identity_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--cert", type=Path, required=required, help="site certificate (PEM)")
    parser.add_argument("--key", type=Path, required=required, help="its private key (PEM, 0600)")
    parser.add_argument("--chain", type=Path, help="intermediate CA certificates (PEM)")
    parser.add_argument(
        "--base-url", required=required, help="where peers reach `vmic serve` (https://...)"
    )


def _set_identity(args: argparse.Namespace) -> None:
    if not (args.cert and args.key and args.base_url):
        raise ConfigError("give --cert, --key and --base-url together")
    cert, key = args.cert.resolve(), args.key.resolve()
    load_private_key(key)  # refuses a key others can read, or one that does not load
    check_signer(
        load_certificate(cert),
        load_private_key(key),
        load_certificates(args.chain) if args.chain else [],
        now=utcnow(),
        until=utcnow(),
    )
    config_edit.set_identity(
        site_home(args).config,
        cert=cert,
        key=key,
        chain=args.chain.resolve() if args.chain else None,
        base_url=args.base_url.rstrip("/"),
    )
    _first_export(site_home(args))


def _first_export(home: SiteHome) -> None:
    """Sign the export at once, so /export.atom answers as soon as `vmic serve` runs."""
    from federation import peer_admin  # noqa: PLC0415 - signing code, only with an identity

    try:
        result = peer_admin.export_now(home, force=False, now=utcnow())
    except LockedError as error:
        print(f"export not written now ({shown(error.message)}); the next `vmic sync` writes it")
        return
    except VmicError as error:  # the identity is set; `vmic site check` and sync say more
        print(f"vmic: the export cannot be signed yet: {shown(error.message)}", file=sys.stderr)
        return
    state = "written" if result.written else "unchanged"
    print(f"export {state}: {result.path} version {result.version}, {result.images} image(s)")


def _identity(args: argparse.Namespace) -> int:
    site_home(args).require_initialised()
    _set_identity(args)
    print(f"site identity set; peers reach this site at {args.base_url.rstrip('/')}")
    return ExitCode.OK


def _init(args: argparse.Namespace) -> int:
    result = admin.init_site(site_home(args), trust=args.trust)
    if args.cert or args.key or args.base_url:
        _set_identity(args)
    print(f"site home {result.home}:")
    print(f"  config.toml: {'written (edit it)' if result.config_written else 'kept'}")
    print(f"  vmic.db:     {'created' if result.database_created else 'kept (checked)'}")
    if result.created:
        print(f"  folders made: {len(result.created)}")
    return ExitCode.OK


def _check(args: argparse.Namespace) -> int:
    result = check_site(site_home(args), now=utcnow())
    if args.json:
        print_json(
            {
                "ok": result.ok,
                "findings": [
                    {"area": f.area, "problem": f.problem, "message": f.message}
                    for f in result.findings
                ],
            }
        )
    else:
        for finding in result.findings:
            mark = "PROBLEM " if finding.problem else ""
            print(f"{finding.area:<9} {mark}{shown(finding.message)}")
        problems = sum(1 for f in result.findings if f.problem)
        print("site check: ok" if result.ok else f"site check: {problems} problem(s)")
    return ExitCode.OK if result.ok else ExitCode.PROBLEMS


def _subscribe(args: argparse.Namespace) -> int:
    sub, verified, changes = admin.subscribe(
        site_home(args),
        args.url,
        pins=pins_from(args),
        name=args.name,
        auto_approve=args.auto_approve,
        now=utcnow(),
        list_format=format_from(args),
    )
    lst = verified.image_list
    print(
        f"subscribed {shown(sub.name)}: {verified.list_format.value} list {lst.id} "
        f"version {lst.version} ({shown(lst.title)})"
    )
    print(f"  endorser {shown(verified.signer.subject)}; expires {iso(lst.expires)}")
    print_changes(changes)
    held = sum(1 for c in changes if c.what == "new")
    if held:
        print(f"{held} image(s) wait for approval: `vmic approve ID...`")
    return ExitCode.OK


def _unsubscribe(args: argparse.Namespace) -> int:
    changes = admin.unsubscribe(site_home(args), args.name, now=utcnow())
    print(f"unsubscribed {shown(args.name)}; {len(changes)} image(s) withdrawn")
    print_changes(changes)
    return ExitCode.OK


def _subscriptions(args: argparse.Namespace) -> int:
    with admin.read_store(site_home(args)) as store:
        rows: list[dict[str, Any]] = []
        for sub in store.subscriptions():
            current = store.current_list(sub.list_id)
            rows.append(
                {
                    "name": sub.name,
                    "url": sub.url,
                    "endorsers": [[p.subject.slash(), p.issuer.slash()] for p in sub.pins],
                    "list_id": sub.list_id,
                    "version": current.version if current else None,
                    "expires": iso(current.expires) if current else None,
                    "auto_approve": sub.auto_approve,
                    "last_success": iso(sub.last_success),
                    "last_attempt": iso(sub.last_attempt),
                    "last_error": sub.last_error,
                }
            )
    if args.json:
        print_json(rows)
        return ExitCode.OK
    if not rows:
        print("no subscriptions; add one with `vmic subscribe URL --endorser-dn DN --ca-dn DN`")
    for row in rows:
        print(f"{shown(row['name'])}  {shown(row['url'])}")
        for subject, issuer in row["endorsers"]:
            print(f"  endorser:     {shown(subject)}  (CA {shown(issuer)})")
        print(
            f"  list:         {row['list_id']} version {row['version']}, expires {row['expires']}"
        )
        print(f"  last success: {row['last_success'] or 'never'}")
        if row["last_error"]:
            print(f"  last error:   {shown(row['last_error'])}")
    return ExitCode.OK


def _progress(title: str, size: int) -> Callable[[int], None]:
    return Progress(size, f"downloading {shown(title[:30])}").callback


def _sync(args: argparse.Namespace) -> int:
    home = site_home(args)
    with site_log(home):
        report: SyncReport = run_sync(
            home,
            now=utcnow(),
            only=args.only,
            download=not args.no_download,
            progress=_progress if sys.stderr.isatty() else None,  # bars on a terminal only
            peering=SiteFederation(),
        )
    if args.json:
        print_json(report.to_json())
    elif args.verbose:
        for result in report.lists:
            version = f" version {result.version}" if result.version else ""
            print(f"{shown(result.subscription)}: {result.outcome}{version}")
        print_changes(report.changes)
        for line in report.clouds:  # "site1: registered image ... as GLANCE_ID (name)"
            print(f"cloud {shown(line)}")
        print(f"downloaded {len(report.downloaded)}, hooks run {report.hooks_delivered}")
        if report.bytes_reused or report.bytes_fetched:
            print(
                f"updates by blocks: {human_size(report.bytes_reused)} reused, "
                f"{human_size(report.bytes_fetched)} fetched"
            )
    for problem in report.problems:
        where = f"{shown(problem.subscription)}: " if problem.subscription else ""
        print(f"vmic sync: {where}{problem.kind}: {shown(problem.message)}", file=sys.stderr)
    if not args.json:  # a notice for cron's mail: a person has to decide, once per arrival
        for change in report.waiting:
            held = f" ({shown(change.detail)})" if change.detail else ""
            print(
                f"vmic sync: image {change.image_id} ({shown(change.title)}) waits for "
                f"approval{held}: `vmic image show {change.image_id}`, then `vmic approve` or "
                "`vmic refuse`",
                file=sys.stderr,
            )
    for alarm in report.alarms:  # every run while open: a person has to decide
        print(f"vmic sync: ALARM {shown(alarm.headline())}", file=sys.stderr)
    if report.alarms:
        print("vmic sync: see `vmic alarms` and `vmic alarm show ID`", file=sys.stderr)
        return ExitCode.ALARM
    return ExitCode.OK if report.ok else ExitCode.PROBLEMS


def _history(args: argparse.Namespace) -> int:
    with admin.read_store(site_home(args)) as store:
        records = store.history(args.name)
    if args.json:
        print_json(
            [
                {
                    "subscription": r.subscription,
                    "list_id": r.list_id,
                    "at": iso(r.at),
                    "outcome": r.outcome,
                    "version": r.version,
                    "sha256": r.sha256,
                    "reason": r.reason,
                    "kind": r.kind,
                }
                for r in records
            ]
        )
        return ExitCode.OK
    for r in records:
        version = f"v{r.version}" if r.version is not None else "-"
        print(
            f"{iso(r.at)}  {shown(r.subscription):<20} {r.outcome:<9} {version:<6} "
            f"{r.sha256 or '-'}"
        )
        if r.reason:
            print(f"    {r.kind + ': ' if r.kind else ''}{shown(r.reason)}")
    return ExitCode.OK
