"""`vmic context build`, `context show` and `context install`: the site contextualisation CD."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

from federation.cli.commands import HELP
from federation.cli.common import ExitCode, print_json
from site_agent.context import build as context_build
from site_agent.context import install as context_install
from site_agent.context.settings import shell_quote


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    context = commands.add_parser(
        "context",
        help=HELP["context"],
        description=(
            "A site configures an image it may not change through a CD: prolog.sh (run before "
            "the network is set up), epilog.sh (run once it is online) and the site's settings. "
            "See docs/contextualisation.md."
        ),
    )
    sub = context.add_subparsers(dest="context_command", metavar="COMMAND", required=True)

    build = sub.add_parser(
        "build",
        help="build the CD image (and a cloud-init seed)",
        description=(
            "Build an ISO 9660 image labelled CONTEXT (Rock Ridge and Joliet) holding prolog.sh "
            "and epilog.sh (mode 755), context.sh with the settings as KEY='value' lines, and "
            "the extra files. The same inputs give the same bytes (file dates are "
            "SOURCE_DATE_EPOCH, else 1970-01-01), so the printed SHA-256 can be checked."
        ),
    )
    build.add_argument("--prolog", type=Path, required=True, metavar="FILE", help="prolog.sh")
    build.add_argument("--epilog", type=Path, required=True, metavar="FILE", help="epilog.sh")
    build.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for context.sh (KEY: A-Z, 0-9, _); repeat for more",
    )
    build.add_argument(
        "--file",
        dest="files",
        action="append",
        default=[],
        metavar="SRC:DEST",
        help="also put file SRC on the CD at relative path DEST; repeat for more",
    )
    build.add_argument(
        "--cloud-init",
        action="store_true",
        help="also write a NoCloud seed (label cidata: the same files plus user-data and "
        "meta-data that run prolog.sh from bootcmd and epilog.sh from runcmd)",
    )
    build.add_argument(
        "--seed-out",
        type=Path,
        metavar="FILE",
        help="where the seed goes (default: OUT with -cidata before the suffix)",
    )
    build.add_argument("--out", type=Path, required=True, metavar="FILE", help="the CD image")
    build.set_defaults(func=_build)

    show = sub.add_parser(
        "show",
        help="the files and settings on a CD",
        description=(
            "List the files on a CD built by `vmic context build` (size, mode, path) and the "
            "settings in its context.sh, read without running it."
        ),
    )
    show.add_argument("image", type=Path, metavar="ISO", help="the CD image (or seed)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)

    install = sub.add_parser(
        "install",
        help="put the boot script and units into an image tree",
        description=(
            "Write into an image tree the script /usr/libexec/vmic-context and the units "
            "vmic-context-prolog.service (before network-pre.target) and "
            "vmic-context-epilog.service (after network-online.target), enabled for "
            "multi-user.target. At boot they mount the CD labelled CONTEXT read-only and run "
            "its scripts; with no CD they do nothing. Running it again changes nothing."
        ),
    )
    install.add_argument(
        "--root", type=Path, required=True, metavar="DIR", help="the image's root folder"
    )
    install.set_defaults(func=_install)


def _build(args: argparse.Namespace) -> int:
    written = context_build.build_context(
        context_build.ContextRequest(
            prolog=args.prolog,
            epilog=args.epilog,
            settings=args.settings,
            files=args.files,
            out=args.out,
            cloud_init=args.cloud_init,
            seed_out=args.seed_out,
            epoch=context_build.source_date_epoch(os.environ),
        )
    )
    for image in written:
        print(f"{image.path}: label {image.label}, {image.files} files, {image.size} bytes")
        print(f"  sha256 {image.sha256}")
    return ExitCode.OK


def _show(args: argparse.Namespace) -> int:
    info = context_build.show_context(args.image)
    if args.json:
        print_json(
            {
                "label": info.label,
                "files": [
                    {"path": e.path, "size": e.size, "mode": f"{e.mode:04o}"} for e in info.entries
                ],
                "settings": {s.key: s.value for s in info.settings},
                "instance_id": info.instance_id,
            }
        )
        return ExitCode.OK
    print(f"label {info.label}")
    if info.instance_id:
        print(f"cloud-init instance-id {info.instance_id}")
    print("files:")
    for entry in info.entries:
        print(f"  {stat.filemode(stat.S_IFREG | entry.mode)} {entry.size:>10}  {entry.path}")
    print("settings:" if info.settings else "settings: none")
    for setting in info.settings:
        print(f"  {setting.key}={shell_quote(setting.value)}")
    return ExitCode.OK


def _install(args: argparse.Namespace) -> int:
    for done in context_install.install(args.root):
        print(f"{done.action:<9} {args.root / done.path}")
    return ExitCode.OK
