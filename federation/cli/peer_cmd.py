"""`vmic peer add/remove`, `vmic peers [suggest]`, `vmic export`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from federation import peer_admin
from federation.cli.commands import HELP
from federation.cli.common import ExitCode, human_size, iso, print_json, shown, utcnow
from federation.cli.sitehome import home_parent, site_home
from keys.dn import DistinguishedName
from keys.errors import ConfigError
from keys.xmlsig import SignerPin


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    home = home_parent()
    peer = commands.add_parser(
        "peer",
        help=HELP["peer"],
        description="Follow another site's signed export, or stop following it.",
    )
    peer_sub = peer.add_subparsers(dest="peer_command", metavar="COMMAND", required=True)
    add = peer_sub.add_parser(
        "add",
        parents=[home],
        help="follow another site's export",
        description=(
            "Follow another site's signed export: it is fetched and verified first (the "
            "site's certificate must chain to the trust directory and carry the pinned "
            "subject and issuer DNs). A peer is trusted for which images it approved and "
            "where it serves them, never for their content."
        ),
    )
    add.add_argument(
        "url",
        metavar="URL",
        help="the peer's export, or its address (the export is found from its page), "
        "e.g. https://site-b/export.atom or https://site-b/",
    )
    add.add_argument(
        "--site-dn",
        action="append",
        default=[],
        required=True,
        help="pinned subject DN of the peer site's certificate (repeatable)",
    )
    add.add_argument(
        "--ca-dn",
        action="append",
        default=[],
        required=True,
        help="pinned issuer DN (one per --site-dn)",
    )
    add.add_argument(
        "--name", help="peer name: letters, digits, . _ - (default: from the certificate's CN)"
    )
    add.set_defaults(func=_add)
    remove = peer_sub.add_parser(
        "remove",
        parents=[home],
        help="stop following a peer",
        description="Stop following a peer; what it offered is forgotten.",
    )
    remove.add_argument("name", metavar="NAME", help="peer name")
    remove.set_defaults(func=_remove)

    peers = commands.add_parser(
        "peers",
        parents=[home],
        help=HELP["peers"],
        description=(
            "The peers this site follows: URL, last success and error, how many images they "
            "offer, bytes received from them, throughput, failures (a peer that served "
            "bytes or lists that failed verification is counted here). `vmic peers "
            "suggest` shows lists peers carry that this site does not subscribe to."
        ),
    )
    peers.add_argument("--json", action="store_true", help="machine-readable output")
    peers_sub = peers.add_subparsers(dest="peers_command", metavar="COMMAND")
    suggest = peers_sub.add_parser(
        "suggest",
        parents=[home],
        help="lists peers carry that this site does not subscribe to",
        description=(
            "Lists that peers carry and this site does not subscribe to, each fetched from "
            "a peer's copy and verified, with its endorser's DNs and how many peers carry "
            "it. Subscribe with the usual `vmic subscribe URL --endorser-dn --ca-dn`."
        ),
    )
    suggest.add_argument("--json", action="store_true", help="machine-readable output")
    suggest.set_defaults(func=_suggest)
    peers.set_defaults(func=_peers)

    export = commands.add_parser(
        "export",
        parents=[home],
        help=HELP["export"],
        description=(
            "Sign and write the site's export (exports/export.atom, served by `vmic serve` "
            "at /export.atom) when its content changed or half its validity passed; "
            "--force signs a new version anyway. `vmic sync` does this after every run."
        ),
    )
    export.add_argument("--force", action="store_true", help="sign a new version anyway")
    export.set_defaults(func=_export)


def _add(args: argparse.Namespace) -> int:
    if len(args.site_dn) != len(args.ca_dn):
        raise ConfigError("give --site-dn and --ca-dn in pairs")
    pins = [
        SignerPin(subject=DistinguishedName.parse(s), issuer=DistinguishedName.parse(i))
        for s, i in zip(args.site_dn, args.ca_dn, strict=True)
    ]
    peer, offers = peer_admin.add_peer(
        site_home(args), args.url, pins=pins, name=args.name, now=utcnow()
    )
    print(f"following peer {shown(peer.name)}: {shown(peer.url)} ({offers} image(s) offered)")
    return ExitCode.OK


def _remove(args: argparse.Namespace) -> int:
    peer_admin.remove_peer(site_home(args), args.name, now=utcnow())
    print(f"peer {shown(args.name)} removed")
    return ExitCode.OK


def _peers(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for status in peer_admin.peer_status(site_home(args)):
        p = status.peer
        rows.append(
            {
                "name": p.name,
                "url": p.url,
                "site": [[pin.subject.slash(), pin.issuer.slash()] for pin in p.pins],
                "offers": status.offers,
                "last_success": iso(p.last_success),
                "last_error": p.last_error,
                "bytes_received": p.bytes_received,
                "throughput": round(p.throughput),
                "failures": p.failures,
                "last_failure": p.last_failure,
            }
        )
    if args.json:
        print_json(rows)
        return ExitCode.OK
    if not rows:
        print("no peers; follow one with `vmic peer add URL --site-dn DN --ca-dn DN`")
    for r in rows:
        print(f"{shown(r['name'])}  {shown(r['url'])}")
        print(f"  offers {r['offers']} image(s); last success {r['last_success'] or 'never'}")
        print(
            f"  received {human_size(r['bytes_received'])} at {human_size(r['throughput'])}/s;"
            f" failures {r['failures']}"
        )
        if r["last_error"]:
            print(f"  last error:   {shown(r['last_error'])}")
        if r["last_failure"]:
            print(f"  last failure: {shown(r['last_failure'])}")
    return ExitCode.OK


def _suggest(args: argparse.Namespace) -> int:
    suggestions, problems = peer_admin.suggest(site_home(args), now=utcnow())
    if args.json:
        print_json(
            [
                {
                    "list_id": s.list_id,
                    "title": s.title,
                    "endorser": s.endorser,
                    "issuer": s.issuer,
                    "version": s.version,
                    "images": s.images,
                    "peers": list(s.peers),
                    "url": s.url,
                }
                for s in suggestions
            ]
        )
    else:
        if not suggestions:
            print("peers carry no list this site does not subscribe to")
        for s in suggestions:
            print(f"{shown(s.title)}  (list {s.list_id}, version {s.version}, {s.images} image(s))")
            print(f"  endorser: {shown(s.endorser)}  (CA {shown(s.issuer)})")
            print(f"  carried by {len(s.peers)} peer(s): {shown(', '.join(s.peers))}")
            print(
                f"  vmic subscribe {shown(s.url)} --endorser-dn '{shown(s.endorser)}' "
                f"--ca-dn '{shown(s.issuer)}'"
            )
    for problem in problems:
        print(f"vmic peers suggest: {shown(problem)}", file=sys.stderr)
    return ExitCode.OK if not problems else ExitCode.PROBLEMS


def _export(args: argparse.Namespace) -> int:
    result = peer_admin.export_now(site_home(args), force=args.force, now=utcnow())
    state = "written" if result.written else "unchanged"
    print(f"export {state}: {result.path} version {result.version}, {result.images} image(s)")
    return ExitCode.OK
