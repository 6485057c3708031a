"""`vmic endorse ...`: the endorser's manifest, rendering and signing."""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from pathlib import Path

from federation.cli.commands import HELP
from federation.cli.common import (
    ExitCode,
    Progress,
    human_size,
    iso,
    parse_time_arg,
    print_json,
    utcnow,
)
from federation.cli.policy_cmd import print_report, run_check
from feeds import endorse
from feeds.manifest import Manifest
from feeds.model import ImageEntry
from feeds.policy.model import Severity
from feeds.verify import ListFormat
from keys.certs import load_certificate, load_certificates, load_private_key
from keys.errors import ConfigError
from keys.trust import CrlPolicy, TrustStore

DEFAULT_VALIDITY = "28d"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "endorse",
        help=HELP["endorse"],
        description=(
            "The endorser's workflow. A TOML manifest is the source of truth for one image "
            "list; these commands edit it, render it as an Atom document and sign it."
        ),
    )
    sub = parser.add_subparsers(dest="endorse_command", metavar="COMMAND", required=True)

    init = sub.add_parser(
        "init",
        help="start a new image list (new list UUID)",
        description="Create a manifest for a new image list with a new list UUID.",
    )
    init.add_argument("manifest", type=Path, metavar="MANIFEST", help="manifest file to create")
    init.add_argument("--title", required=True, help="list title")
    init.add_argument("--self-url", required=True, help="URL where the signed list is published")
    init.add_argument("--author", help="endorser name (default: your account name)")
    init.add_argument("--email", help="endorser e-mail")
    init.add_argument(
        "--author-uri",
        help="the endorser's web page, or mailto:ADDRESS (HEPiX ad:user:uri; default: "
        "mailto: the e-mail, else the list's URL)",
    )
    init.add_argument(
        "--vo",
        help="virtual organisation the list is for (HEPiX list-level ad:vo, which "
        "cloudkeeper requires; default: the images' VO when they all name one)",
    )
    init.add_argument("--subtitle", help="one-line description of the list")
    init.set_defaults(func=_init)

    add = sub.add_parser(
        "add",
        help="add an image (hashes it, new image UUID)",
        description=(
            "Add an image file to the list: computes its SHA-512 and size while reading it "
            "(with a progress bar on a terminal), guesses its format unless --format is "
            "given, and gives it a new image UUID. First the image is checked against the "
            "trusted-image policy (as `vmic policy check`); an image with errors is refused "
            "unless --policy-override gives the reason, which is published in the signed list. "
            "In the same read it writes the image's block index beside it as FILE.blocks "
            "(raw images, and qcow2 images without compressed clusters, unless --no-blocks): "
            "sites updating to a new version of the image use it to fetch only the blocks "
            "they do not hold. The list names the index (URL, size, SHA-512); publish "
            "FILE.blocks at that URL with the image."
        ),
    )
    add.add_argument("manifest", type=Path, metavar="MANIFEST", help="the list's manifest")
    add.add_argument("image", type=Path, metavar="IMAGE_FILE", help="the image file to endorse")
    add.add_argument("--url", required=True, help="download location of the image")
    add.add_argument("--title", help="image title (default: the file name)")
    add.add_argument("--summary", help="one-paragraph description")
    add.add_argument("--format", help="raw, qcow2, vmdk, ova, tar.gz, ... (default: guessed)")
    add.add_argument("--hypervisor", help="e.g. KVM, Xen, VirtualBox")
    add.add_argument("--arch", help="e.g. x86_64, aarch64")
    add.add_argument("--os", help="operating system family, e.g. Linux")
    add.add_argument("--osname", help="distribution, e.g. AlmaLinux")
    add.add_argument("--osversion", help="e.g. 9.4")
    add.add_argument("--version", help="the image's own version")
    add.add_argument("--produced", type=parse_time_arg, help="production date (RFC 3339)")
    add.add_argument("--expires", type=parse_time_arg, help="image expiry date (RFC 3339)")
    add.add_argument("--vo", help="virtual organisation the image is for")
    add.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    add.add_argument("--info-url", help="web page describing the image")
    add.add_argument(
        "--policy-override",
        metavar="REASON",
        help="endorse although the policy check found errors, for this published reason",
    )
    add.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="RULE",
        help="a policy rule whose findings do not count (repeatable; see `vmic policy rules`)",
    )
    index = add.add_mutually_exclusive_group()
    index.add_argument(
        "--blocks",
        dest="blocks",
        action="store_const",
        const=True,
        default=None,
        help="write a block index whatever the format",
    )
    index.add_argument(
        "--no-blocks",
        dest="blocks",
        action="store_const",
        const=False,
        help="write no block index",
    )
    add.add_argument(
        "--blocks-url",
        metavar="URL",
        help="where FILE.blocks will be published (default: the --url with .blocks added)",
    )
    add.add_argument("--json", action="store_true", help="print the new entry as JSON")
    add.set_defaults(func=_add)

    show = sub.add_parser(
        "show",
        help="show the manifest: list, version, images, revocations",
        description="Show what the manifest holds and the last version issued.",
    )
    show.add_argument("manifest", type=Path, metavar="MANIFEST", help="the list's manifest")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)

    revoke = sub.add_parser(
        "revoke",
        help="take an image back (listed as revoked)",
        description=(
            "Remove an image from the list and list it as revoked (an RFC 6721 "
            "at:deleted-entry with the reason), so that sites withdraw it at once."
        ),
    )
    revoke.add_argument("manifest", type=Path, metavar="MANIFEST", help="the list's manifest")
    revoke.add_argument("image_id", metavar="IMAGE_ID", help="UUID of the image to revoke")
    revoke.add_argument("--reason", required=True, help="why the image is taken back")
    revoke.set_defaults(func=_revoke)

    render = sub.add_parser(
        "render",
        help="write the unsigned list (for review or external signing)",
        description=(
            "Write the next version of the list, unsigned: for review, or for signing with "
            "an external tool (xmlsec1, a hardware token). --template adds an empty "
            "signature of the vmic profile for such a tool to fill in, and issues the "
            "version (the manifest records it: the result is meant to be signed and "
            "published). Without --template the output is a preview of the next version: "
            "nothing is recorded, so render for review as often as you like."
        ),
    )
    render.add_argument("manifest", type=Path, metavar="MANIFEST", help="the list's manifest")
    render.add_argument(
        "--out", required=True, type=Path, metavar="LIST.atom", help="file to write"
    )
    render.add_argument("--cert", type=Path, help="certificate that will sign (names the DNs)")
    render.add_argument(
        "--valid-for", default=DEFAULT_VALIDITY, help=f"list validity (default {DEFAULT_VALIDITY})"
    )
    render.add_argument(
        "--template", choices=("rsa", "ec"), help="add an empty signature for this key type"
    )
    render.add_argument(
        "--digest", choices=("sha256", "sha512"), default="sha256", help="template digest"
    )
    render.set_defaults(func=_render)

    sign = sub.add_parser(
        "sign",
        help="render and sign the next version of the list",
        description=(
            "Render the next version of the list and sign it: an Atom list with an "
            "enveloped XML signature, or with --format hepix a HEPiX list (JSON signed "
            "as S/MIME) that vmcatcher and other HEPiX subscribers accept; --hepix-out "
            "writes the same version in both. HEPiX cannot carry revocations: a revoked "
            "image is simply left out, which HEPiX subscribers treat as withdrawn. "
            "The version goes up by one at every signing. Refuses a "
            "certificate with which sites could not verify the list (expired, expiring "
            "before the list, no digitalSignature, key not matching); with --trust, also "
            "checks the chain and CRLs and verifies the result as a site would."
        ),
    )
    sign.add_argument("manifest", type=Path, metavar="MANIFEST", help="the list's manifest")
    sign.add_argument("--cert", required=True, type=Path, help="signer certificate (PEM)")
    sign.add_argument(
        "--key",
        required=True,
        type=Path,
        help="private key (PEM; passphrase in $VMIC_KEY_PASSPHRASE)",
    )
    sign.add_argument("--chain", type=Path, help="intermediate CA certificates (PEM)")
    sign.add_argument(
        "--valid-for", default=DEFAULT_VALIDITY, help=f"list validity (default {DEFAULT_VALIDITY})"
    )
    sign.add_argument(
        "--digest",
        choices=("sha256", "sha512"),
        default="sha256",
        help="digest of the XML signature (default sha256; S/MIME uses SHA-256)",
    )
    sign.add_argument("--trust", type=Path, help="trust directory to check the result against")
    sign.add_argument(
        "--crl",
        choices=[p.value for p in CrlPolicy],
        default="require",
        help="with --trust: require current CRLs (default) or use them if present",
    )
    sign.add_argument(
        "--out", required=True, type=Path, metavar="LIST", help="signed list to write"
    )
    sign.add_argument(
        "--format",
        choices=[f.value for f in ListFormat],
        default="atom",
        help="how --out is written: atom (default) or hepix (JSON signed as S/MIME)",
    )
    sign.add_argument(
        "--hepix-out",
        type=Path,
        metavar="LIST.smime",
        help="also write this version as a HEPiX list (with --format atom)",
    )
    sign.set_defaults(func=_sign)


def _account_name() -> str:
    """Who runs the command, for the default author: the account of the process's user.

    Taken from the password database, not from $USER, which cron and containers often do
    not set; $LOGNAME and $USER are the fallback for a uid with no entry there (containers
    run under arbitrary uids). No certificate is known at init (it is first given at
    signing), so its CN cannot serve.
    """
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        pass
    name = os.environ.get("LOGNAME") or os.environ.get("USER")
    if name:
        return name
    raise ConfigError(
        f"no account name for uid {os.getuid()} to use as the list's author",
        hint="give the endorser's name with --author",
    )


def _init(args: argparse.Namespace) -> int:
    author = _account_name() if args.author is None else args.author
    manifest = endorse.init_manifest(
        args.manifest,
        title=args.title,
        self_url=args.self_url,
        author=author,
        email=args.email,
        subtitle=args.subtitle,
        author_uri=args.author_uri,
        vo=args.vo,
    )
    print(f"created {args.manifest} for list {manifest.info.id}")
    if args.author is None:
        print(f"author: {author} (your account name; edit [list] author in the manifest to change)")
    return ExitCode.OK


def _policy_gate(args: argparse.Namespace, image: Path) -> str | None:
    """The policy check of `endorse add`: findings on stderr, refusal or what to record."""
    report = run_check(image, args.allow)
    if any(f.severity is not Severity.INFO for f in report.findings):
        print_report(report, stream=sys.stderr)
    override = endorse.policy_override(report, args.policy_override)
    if report.clean and args.policy_override:
        print("the image passed the policy check; --policy-override is not recorded")
    return override


def _add(args: argparse.Namespace) -> int:
    size = args.image.stat().st_size if args.image.is_file() else 0
    progress = Progress(size, f"hashing {args.image.name}")
    try:
        entry = endorse.add_image(
            args.manifest,
            args.image,
            endorse.ImageMeta(
                url=args.url,
                title=args.title,
                summary=args.summary,
                format=args.format,
                hypervisor=args.hypervisor,
                arch=args.arch,
                os=args.os,
                osname=args.osname,
                osversion=args.osversion,
                version=args.version,
                produced=args.produced,
                expires=args.expires,
                vo=args.vo,
                tags=tuple(args.tag),
                info_url=args.info_url,
                blocks=args.blocks,
                blocks_url=args.blocks_url,
            ),
            now=utcnow(),
            progress=progress.callback,
            policy=lambda image: _policy_gate(args, image),
        )
    finally:
        progress.close()
    if args.json:
        print_json(_entry_json(entry))
    else:
        print(f"added image {entry.id}: {entry.title}")
        print(f"  {entry.format}, {human_size(entry.size)}, sha512 {entry.sha512[:16]}...")
        if entry.blocks is not None:
            print(
                f"wrote block index {endorse.blocks_path(args.image)} "
                f"({human_size(entry.blocks.size)}); publish it at {entry.blocks.url}"
            )
        else:
            print("  no block index (see --blocks)")
    return ExitCode.OK


def _entry_json(entry: ImageEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "title": entry.title,
        "url": entry.url,
        "size": entry.size,
        "sha512": entry.sha512,
        "format": entry.format,
        "endorsed": iso(entry.endorsed),
        "expires": iso(entry.expires),
        "blocks": None
        if entry.blocks is None
        else {"url": entry.blocks.url, "size": entry.blocks.size, "sha512": entry.blocks.sha512},
    }


def _show(args: argparse.Namespace) -> int:
    manifest = Manifest.load(args.manifest)
    info, state = manifest.info, manifest.state
    if args.json:
        print_json(
            {
                "list_id": info.id,
                "title": info.title,
                "self_url": info.self_url,
                "author": info.author,
                "email": info.email,
                "author_uri": info.author_uri,
                "vo": info.vo,
                "last_version": state.version,
                "content_updated": iso(state.updated),
                "images": [_entry_json(e) for e in manifest.images],
                "revoked": [
                    {"id": t.id, "when": iso(t.when), "reason": t.reason} for t in manifest.revoked
                ],
            }
        )
        return ExitCode.OK
    print(f"list:     {info.id}  {info.title}")
    print(f"self URL: {info.self_url}")
    print(f"author:   {info.author}{f' <{info.email}>' if info.email else ''}")
    if info.author_uri:
        print(f"          {info.author_uri}")
    print(f"VO:       {info.vo or 'not set (the images name theirs)'}")
    print(f"version:  {state.version or 'none issued yet'}")
    print(f"images:   {len(manifest.images)}")
    for e in manifest.images:
        indexed = "  [block index]" if e.blocks is not None else ""
        print(f"  {e.id}  {e.format:<7} {human_size(e.size):>10}  {e.title}{indexed}")
    if manifest.revoked:
        print(f"revoked:  {len(manifest.revoked)}")
        for t in manifest.revoked:
            print(f"  {t.id}  {iso(t.when)}  {t.reason}")
    return ExitCode.OK


def _revoke(args: argparse.Namespace) -> int:
    entry = endorse.revoke_image(args.manifest, args.image_id, reason=args.reason, now=utcnow())
    print(f"revoked image {entry.id} ({entry.title}); sign the list to publish the revocation")
    return ExitCode.OK


def _render(args: argparse.Namespace) -> int:
    image_list = endorse.render(
        args.manifest,
        args.out,
        now=utcnow(),
        valid_for=endorse.parse_duration(args.valid_for),
        cert=load_certificate(args.cert) if args.cert else None,
        template=args.template,
        digest=args.digest,
    )
    if args.template:
        print(
            f"wrote template for signing {args.out}: version {image_list.version} (issued), "
            f"{len(image_list.entries)} images"
        )
    else:
        print(
            f"wrote preview {args.out}: version {image_list.version} (not issued; "
            f"`vmic endorse sign` issues it), {len(image_list.entries)} images"
        )
    return ExitCode.OK


def _sign(args: argparse.Namespace) -> int:
    passphrase = os.environ.get("VMIC_KEY_PASSPHRASE")
    cert = load_certificate(args.cert)
    image_list = endorse.sign(
        args.manifest,
        args.out,
        now=utcnow(),
        valid_for=endorse.parse_duration(args.valid_for),
        cert=cert,
        key=load_private_key(args.key, password=passphrase.encode() if passphrase else None),
        intermediates=load_certificates(args.chain) if args.chain else (),
        digest=args.digest,
        trust=TrustStore.from_directory(args.trust) if args.trust else None,
        crl=CrlPolicy(args.crl),
        list_format=ListFormat(args.format),
        hepix_out=args.hepix_out,
    )
    checked = " and verified against " + str(args.trust) if args.trust else ""
    written = f"{args.out} and {args.hepix_out}" if args.hepix_out else str(args.out)
    print(
        f"signed {written}{checked}: version {image_list.version}, "
        f"{len(image_list.entries)} images, {len(image_list.tombstones)} revoked, "
        f"expires {iso(image_list.expires)}"
    )
    return ExitCode.OK
