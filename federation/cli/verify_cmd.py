"""`vmic verify`: check a signed image list as a site would, and say why not."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from federation.cli.commands import HELP
from federation.cli.common import (
    ExitCode,
    add_format_option,
    classify,
    error_json,
    format_from,
    human_size,
    iso,
    parse_time_arg,
    print_json,
    shown,
    utcnow,
)
from feeds.model import list_id
from feeds.verify import Expectation, VerifiedList, verify_list
from keys.dn import DistinguishedName
from keys.errors import ConfigError, ListFormatError, VmicError
from keys.fileio import read_file
from keys.trust import CrlPolicy, TrustStore
from keys.xmlsig import SignerPin


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "verify",
        help=HELP["verify"],
        description=(
            "Verify a signed image list as a site would: the signature profile, the "
            "signer's chain and CRLs against the trust directory, the pinned endorser "
            "(full subject and issuer DN; repeat --endorser-dn/--ca-dn for several), the "
            "list's own DNs, freshness and expiry. Exit 0 and a summary when the list is "
            "trusted; otherwise one line naming the reason and a distinct exit code."
        ),
    )
    parser.add_argument(
        "list",
        metavar="LIST",
        help="signed list (Atom, or HEPiX S/MIME): a file, or an http(s):// URL to fetch it from",
    )
    parser.add_argument("--trust", required=True, type=Path, help="trust directory (CApath)")
    parser.add_argument(
        "--endorser-dn", action="append", default=[], help="pinned signer subject DN"
    )
    parser.add_argument("--ca-dn", action="append", default=[], help="pinned signer issuer DN")
    parser.add_argument("--list-id", help="expected list UUID")
    parser.add_argument("--self-url", help="expected self link")
    parser.add_argument("--at", type=parse_time_arg, help="verify at this time (default: now)")
    parser.add_argument(
        "--crl",
        choices=[p.value for p in CrlPolicy],
        default="require",
        help="require a current CRL for every CA (default), or use CRLs only if present",
    )
    add_format_option(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_verify)


def _pins(args: argparse.Namespace) -> list[SignerPin] | None:
    if not args.endorser_dn and not args.ca_dn:
        return None
    if len(args.endorser_dn) != len(args.ca_dn):
        raise ConfigError("give --endorser-dn and --ca-dn in pairs (one --ca-dn per endorser)")
    return [
        SignerPin(subject=DistinguishedName.parse(s), issuer=DistinguishedName.parse(i))
        for s, i in zip(args.endorser_dn, args.ca_dn, strict=True)
    ]


def _read(where: str) -> bytes:
    """The list's bytes from a file, or fetched (as `vmic subscribe` would) from a URL."""
    if not where.startswith(("http://", "https://")):
        return read_file(Path(where), what="list")
    import asyncio  # noqa: PLC0415 - the network client, only when a URL is given

    from site_agent.fetch import Fetcher  # noqa: PLC0415

    async def fetch() -> bytes:
        async with Fetcher() as fetcher:
            return (await fetcher.fetch_list(where)).body

    return asyncio.run(fetch())


def _verify(args: argparse.Namespace) -> int:
    now: datetime = args.at or utcnow()
    try:
        expected_id = list_id(args.list_id.removeprefix("urn:uuid:")) if args.list_id else None
    except ListFormatError as exc:
        raise ConfigError(f"--list-id: {exc.message}") from exc
    try:
        verified = verify_list(
            _read(args.list),
            trust=TrustStore.from_directory(args.trust),
            pins=_pins(args),
            now=now,
            crl=CrlPolicy(args.crl),
            expect=Expectation(list_id=expected_id, self_url=args.self_url),
            list_format=format_from(args),
        )
    except VmicError as error:
        if not args.json:
            raise
        print_json(error_json(error))
        return classify(error)[0]
    if args.json:
        print_json(verified_json(verified, now))
    else:
        _print_summary(verified, now)
    return ExitCode.OK


def verified_json(verified: VerifiedList, now: datetime) -> dict[str, Any]:
    lst = verified.image_list
    signer = verified.signer
    return {
        "ok": True,
        "verified_at": iso(now),
        "format": verified.list_format.value,
        "list_id": lst.id,
        "title": lst.title,
        "self_url": lst.self_url,
        "version": lst.version,
        "updated": iso(lst.updated),
        "expires": iso(lst.expires),
        "sha256": verified.sha256,
        "endorser": {
            "subject": signer.subject.slash(),
            "issuer": signer.issuer.slash(),
            "fingerprint": signer.fingerprint,
            "certificate_expires": iso(signer.not_after),
            "signature": signer.signature_method,
            "digest": signer.digest_method,
        },
        "entries": [
            {
                "id": e.id,
                "title": e.title,
                "url": e.url,
                "size": e.size,
                "sha512": e.sha512,
                "format": e.format,
                "hypervisor": e.hypervisor,
                "arch": e.arch,
                "os": e.os,
                "osname": e.osname,
                "osversion": e.osversion,
                "version": e.version,
                "vo": e.vo,
                "policy_override": e.policy_override,
                "blocks": None
                if e.blocks is None
                else {"url": e.blocks.url, "size": e.blocks.size, "sha512": e.blocks.sha512},
                "tags": list(e.tags),
                "endorsed": iso(e.endorsed),
                "produced": iso(e.produced),
                "expires": iso(e.expires),
                "expired": e.expired_at(now),
                "extra": dict(e.extra),
            }
            for e in lst.entries
        ],
        "tombstones": [
            {"id": t.id, "when": iso(t.when), "reason": t.reason} for t in lst.tombstones
        ],
    }


def _print_summary(verified: VerifiedList, now: datetime) -> None:
    lst = verified.image_list
    signer = verified.signer
    days = (lst.expires - now).days
    print(f"OK: list {lst.id} version {lst.version} is trusted ({verified.list_format.value})")
    print(f"  title:    {shown(lst.title)}")
    print(f"  endorser: {shown(signer.subject)}")
    print(f"  issuer:   {shown(signer.issuer)}")
    print(
        f"  signed:   {signer.signature_method}, digest {signer.digest_method}; "
        f"certificate valid until {iso(signer.not_after)}"
    )
    print(f"  updated:  {iso(lst.updated)}; expires {iso(lst.expires)} (in {days} days)")
    print(f"  images:   {len(lst.entries)}")
    for e in lst.entries:
        expired = "  [image expired]" if e.expired_at(now) else ""
        print(f"    {e.id}  {e.format:<7} {human_size(e.size):>10}  {shown(e.title)}{expired}")
        print(f"      {shown(e.url)}")
        if e.policy_override:
            print(f"      policy override: {shown(e.policy_override)}")
    if lst.tombstones:
        print(f"  revoked:  {len(lst.tombstones)}")
        for t in lst.tombstones:
            print(f"    {t.id}  {iso(t.when)}  {shown(t.reason)}")
