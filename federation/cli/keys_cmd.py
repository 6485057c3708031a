"""`vmic keys ...`: the development CA and certificate inspection."""

from __future__ import annotations

import argparse
from pathlib import Path

from federation.cli.commands import HELP
from federation.cli.common import ExitCode, iso, print_json, utcnow
from keys import pki
from keys.certs import load_certificates, summarize
from keys.dn import DistinguishedName


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help=HELP["keys"],
        description=(
            "A development certificate authority for demos, tests and small federations, "
            "and a certificate viewer. Real endorsers use certificates from their grid CA."
        ),
    )
    sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)

    ca = sub.add_parser(
        "ca",
        help="create a CA (certificate, key, empty CRL)",
        description=(
            "Create a CA folder: ca.pem, ca.crl.pem (an empty CRL) and private/ca.key "
            "(mode 0600). With --parent, an intermediate CA signed by that CA. The folder "
            "can serve as a trust directory (--trust) for tests; private/ is ignored there."
        ),
    )
    ca.add_argument("--subject", required=True, help="CA subject DN in slash form")
    ca.add_argument("--out", required=True, type=Path, help="new CA folder")
    ca.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    ca.add_argument("--parent", type=Path, help="folder of the CA that signs this one")
    ca.add_argument("--key-type", choices=pki.KEY_TYPES, default="rsa", help="default rsa")
    ca.add_argument("--crl-days", type=int, default=30, help="CRL validity (default 30)")
    ca.set_defaults(func=_ca)

    issue = sub.add_parser(
        "issue",
        help="issue an endorser or site certificate",
        description=(
            "Issue a certificate (keyUsage digitalSignature, extendedKeyUsage "
            "emailProtection) from a CA folder. Writes cert.pem, key.pem (mode 0600) and "
            "chain.pem (the certificate and any intermediate CAs) into --out. With --host, "
            "a host certificate for a site: also serverAuth and clientAuth, the hosts as "
            "subjectAltName, so that it serves `vmic serve`'s TLS and is presented to peers "
            'that serve peers only ([serve] access = "peers").'
        ),
    )
    issue.add_argument("--ca", required=True, type=Path, help="CA folder")
    issue.add_argument("--subject", required=True, help="subject DN in slash form")
    issue.add_argument("--email", help="e-mail address (subjectAltName)")
    issue.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a site's DNS name or IP address (subjectAltName; repeat for several): a host "
        "certificate for TLS server and client use",
    )
    issue.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    issue.add_argument("--key-type", choices=pki.KEY_TYPES, default="rsa", help="default rsa")
    issue.add_argument("--out", required=True, type=Path, help="folder for cert.pem, key.pem")
    issue.set_defaults(func=_issue)

    revoke = sub.add_parser(
        "revoke",
        help="revoke a certificate (adds it to the CA's CRL)",
        description="Add a certificate issued by the CA to the CA's CRL and re-sign the CRL.",
    )
    revoke.add_argument("--ca", required=True, type=Path, help="CA folder")
    revoke.add_argument("cert", type=Path, metavar="CERT.pem", help="certificate to revoke")
    revoke.add_argument("--crl-days", type=int, default=30, help="CRL validity (default 30)")
    revoke.set_defaults(func=_revoke)

    crl = sub.add_parser(
        "crl",
        help="re-sign the CA's CRL with a new validity",
        description=(
            "Re-sign the CA's CRL with the same revocations and a fresh validity window. "
            "Sites reject chains whose CRL is stale, so run this before the CRL expires."
        ),
    )
    crl.add_argument("--ca", required=True, type=Path, help="CA folder")
    crl.add_argument("--days", type=int, default=30, help="CRL validity (default 30)")
    crl.set_defaults(func=_crl)

    show = sub.add_parser(
        "show",
        help="show a certificate: DNs, validity, key, fingerprint",
        description=(
            "Show each certificate in a PEM file: subject and issuer in slash form and "
            "RFC 4514, validity, key type and size, SHA-256 fingerprint, usages."
        ),
    )
    show.add_argument("cert", type=Path, metavar="CERT.pem", help="PEM (or DER) certificate")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)


def _ca(args: argparse.Namespace) -> int:
    parent = pki.CertificateAuthority.load(args.parent) if args.parent else None
    ca = pki.create_ca(
        DistinguishedName.parse_slash(args.subject),
        args.out,
        now=utcnow(),
        days=args.days,
        key_type=args.key_type,
        parent=parent,
        crl_days=args.crl_days,
    )
    kind = "intermediate CA" if parent else "root CA"
    print(f"created {kind} {DistinguishedName.from_x509(ca.cert.subject)}")
    print(f"  certificate: {args.out / pki.CA_CERT}")
    print(f"  CRL:         {args.out / pki.CA_CRL}")
    print(f"  key:         {args.out / pki.CA_KEY} (keep it private)")
    return ExitCode.OK


def _issue(args: argparse.Namespace) -> int:
    ca = pki.CertificateAuthority.load(args.ca)
    cert = pki.issue(
        ca,
        DistinguishedName.parse_slash(args.subject),
        args.out,
        now=utcnow(),
        email=args.email,
        days=args.days,
        key_type=args.key_type,
        hosts=args.host,
    )
    print(f"issued {DistinguishedName.from_x509(cert.subject)}")
    issuer = DistinguishedName.from_x509(cert.issuer)
    print(f"  by {issuer}, valid until {iso(cert.not_valid_after_utc)}")
    print(f"  certificate: {args.out / 'cert.pem'}")
    print(f"  key:         {args.out / 'key.pem'} (mode 0600)")
    print(f"  chain:       {args.out / 'chain.pem'}")
    return ExitCode.OK


def _revoke(args: argparse.Namespace) -> int:
    ca = pki.CertificateAuthority.load(args.ca)
    serial = pki.revoke(ca, args.cert, now=utcnow(), crl_days=args.crl_days)
    print(f"revoked serial {serial:X}; CRL updated: {args.ca / pki.CA_CRL}")
    return ExitCode.OK


def _crl(args: argparse.Namespace) -> int:
    ca = pki.CertificateAuthority.load(args.ca)
    pki.refresh_crl(ca, now=utcnow(), days=args.days)
    print(f"CRL re-signed, valid for {args.days} days: {args.ca / pki.CA_CRL}")
    return ExitCode.OK


def _show(args: argparse.Namespace) -> int:
    summaries = [summarize(cert) for cert in load_certificates(args.cert)]
    if args.json:
        print_json(
            [
                {
                    "subject": s.subject.slash(),
                    "subject_rfc4514": s.subject.rfc4514(),
                    "issuer": s.issuer.slash(),
                    "issuer_rfc4514": s.issuer.rfc4514(),
                    "serial": f"{s.serial:X}",
                    "not_before": iso(s.not_before),
                    "not_after": iso(s.not_after),
                    "key": s.key,
                    "sha256_fingerprint": s.sha256_fingerprint,
                    "ca": s.is_ca,
                    "key_usage": list(s.key_usage),
                    "extended_key_usage": list(s.extended_key_usage),
                    "email": list(s.email),
                }
                for s in summaries
            ]
        )
        return ExitCode.OK
    for index, s in enumerate(summaries):
        if index:
            print()
        print(f"subject:             {s.subject.slash()}")
        print(f"subject (RFC 4514):  {s.subject.rfc4514()}")
        print(f"issuer:              {s.issuer.slash()}")
        print(f"issuer (RFC 4514):   {s.issuer.rfc4514()}")
        print(f"serial:              {s.serial:X}")
        print(f"valid:               {iso(s.not_before)} to {iso(s.not_after)}")
        print(f"key:                 {s.key}")
        print(f"SHA-256 fingerprint: {s.sha256_fingerprint}")
        print(f"CA:                  {'yes' if s.is_ca else 'no'}")
        print(f"key usage:           {', '.join(s.key_usage) or '-'}")
        print(f"extended key usage:  {', '.join(s.extended_key_usage) or '-'}")
        if s.email:
            print(f"e-mail:              {', '.join(s.email)}")
    return ExitCode.OK
