"""`vmic cloud add/remove/sync/adopt` and `vmic clouds`: images into OpenStack Glance."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from federation.cli.commands import HELP
from federation.cli.common import ExitCode, print_json, shown, utcnow
from federation.cli.sitehome import home_parent, site_home
from federation.cli.sitelog import site_log
from keys.errors import ConfigError
from site_agent import config as site_config
from site_agent import config_edit
from site_agent.admin import locked_site, read_store
from site_agent.cloud.adopt import adopt
from site_agent.cloud.registry import Registry
from site_agent.cloud.run import sync_cloud
from site_agent.cloud.settings import VISIBILITIES, WITHDRAWN, CloudSettings, parse_cloud


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    home = home_parent()
    cloud = commands.add_parser(
        "cloud",
        help=HELP["cloud"],
        description=(
            "Keep OpenStack Glance in step with the images this site holds: each available "
            "image registered (uploaded from the verified cache and checked against Glance's "
            "own SHA-512), shared as configured, deactivated and later deleted when it is "
            "withdrawn. openstacksdk finds the cloud from clouds.yaml (OS_CLIENT_CONFIG_FILE "
            "or its standard places) and the OS_* variables."
        ),
    )
    sub = cloud.add_subparsers(dest="cloud_command", metavar="COMMAND", required=True)

    add = sub.add_parser(
        "add",
        parents=[home],
        help="add a cloud to the site's configuration",
        description="Add a [[clouds]] table to config.toml (checked; comments kept).",
    )
    add.add_argument("name", metavar="NAME", help="a name for this cloud (letters, digits, .-_)")
    add.add_argument("--os-cloud", required=True, metavar="ENTRY", help="the clouds.yaml entry")
    add.add_argument(
        "--vo",
        action="append",
        default=[],
        metavar="VO=PROJECT",
        help="share the VO's images with this project (repeatable; visibility shared)",
    )
    add.add_argument(
        "--visibility",
        choices=VISIBILITIES,
        help="private, shared with the VOs' projects (default when --vo is given), "
        "community or public",
    )
    add.add_argument(
        "--lists", nargs="+", default=[], metavar="NAME", help="only these subscriptions"
    )
    add.add_argument("--vos", nargs="+", default=[], metavar="VO", help="only these VOs")
    add.add_argument(
        "--name-template",
        default="{title}",
        help="Glance image name: {title} {version} {vo} {os} {osname} {osversion} {arch} "
        "{image_id} (default {title})",
    )
    add.add_argument(
        "--withdrawn",
        choices=WITHDRAWN,
        default="deactivate",
        help="what happens to a withdrawn, expired or revoked image (default deactivate, "
        "then delete after --delete-after-days)",
    )
    add.add_argument(
        "--delete-after-days",
        type=float,
        default=7,
        help="days a deactivated image stays before it is deleted (default 7)",
    )
    add.set_defaults(func=_add)

    remove = sub.add_parser(
        "remove",
        parents=[home],
        help="remove a cloud from the configuration",
        description=(
            "Remove a [[clouds]] table. Glance is not touched: the images stay there, "
            "and vmic no longer changes them."
        ),
    )
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(func=_remove)

    sync = sub.add_parser(
        "sync",
        parents=[home],
        help="bring the clouds in step with the site (vmic sync does it too)",
        description=(
            "Register available images, repair what was changed outside vmic, deactivate "
            "withdrawn images and delete them after the grace period. Only images vmic "
            f"registered or adopted are ever changed. Exit {int(ExitCode.PROBLEMS)} on problems."
        ),
    )
    sync.add_argument("name", nargs="?", metavar="NAME", help="one cloud only")
    sync.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sync.add_argument("--json", action="store_true", help="machine-readable output")
    sync.set_defaults(func=_sync)

    adopt_cmd = sub.add_parser(
        "adopt",
        parents=[home],
        help="take over images cloudkeeper-os, atrope or vmcatcher registered",
        description=(
            "For each available image, adopt in place the one active Glance image that "
            "cloudkeeper-os (APPLIANCE_ID and its checksum), atrope (appdb_id, sha512) or "
            "vmcatcher's handlers registered for the same image and bytes: users' image ids "
            "and running VMs are kept. Several matches, or other bytes, are reported."
        ),
    )
    adopt_cmd.add_argument("name", metavar="NAME")
    adopt_cmd.add_argument("--dry-run", action="store_true", help="say what would be adopted")
    adopt_cmd.set_defaults(func=_adopt)

    clouds = commands.add_parser(
        "clouds",
        parents=[home],
        help=HELP["clouds"],
        description="Each configured cloud, its settings, and the images vmic registered there.",
    )
    clouds.add_argument("--json", action="store_true", help="machine-readable output")
    clouds.set_defaults(func=_clouds)


def _add(args: argparse.Namespace) -> int:
    home = site_home(args)
    home.require_initialised()
    projects: dict[str, list[str]] = {}
    for pair in args.vo:
        vo, sep, project = pair.partition("=")
        if not sep or not vo or not project:
            raise ConfigError(f"--vo {pair!r}: write VO=PROJECT")
        projects.setdefault(vo, []).append(project)
    visibility = args.visibility or ("shared" if projects else "private")
    cloud = parse_cloud(
        {
            "name": args.name,
            "os_cloud": args.os_cloud,
            "lists": args.lists,
            "vos": args.vos,
            "visibility": visibility,
            "projects": projects,
            "name_template": args.name_template,
            "withdrawn": args.withdrawn,
            "delete_after_days": args.delete_after_days,
        },
        "--",
    )
    config_edit.add_cloud(home.config, cloud)
    print(f"cloud {cloud.name} added: clouds.yaml entry {cloud.os_cloud}, {visibility}")
    print("register the site's images with `vmic cloud sync` (vmic sync does it too)")
    return ExitCode.OK


def _remove(args: argparse.Namespace) -> int:
    home = site_home(args)
    home.require_initialised()
    config_edit.remove_cloud(home.config, args.name)
    print(f"cloud {args.name} removed; its images stay in Glance, untouched")
    return ExitCode.OK


def _chosen(clouds: tuple[CloudSettings, ...], name: str | None) -> tuple[CloudSettings, ...]:
    if name is None:
        if not clouds:
            raise ConfigError("no cloud is configured", hint="add one with `vmic cloud add`")
        return clouds
    found = tuple(c for c in clouds if c.name == name)
    if not found:
        raise ConfigError(f"no cloud named {name}", hint="see `vmic clouds`")
    return found


def _sync(args: argparse.Namespace) -> int:
    home = site_home(args)
    home.require_initialised()
    config = site_config.load(home.config)
    ok = True
    results = []
    with site_log(home), locked_site(home, now=utcnow(), purpose="vmic cloud sync") as site:
        for cloud in _chosen(config.clouds, args.name):
            report = sync_cloud(site, cloud, dry_run=args.dry_run)
            ok = ok and report.ok
            results.append(report)
    if args.json:
        print_json(
            [
                {
                    "cloud": r.cloud,
                    "dry_run": r.dry_run,
                    "ok": r.ok,
                    "steps": [
                        {
                            "what": s.what,
                            "image_id": s.image_id,
                            "glance_id": s.glance_id,
                            "detail": line,
                        }
                        for s, line in r.done
                    ],
                    "problems": r.problems,
                }
                for r in results
            ]
        )
    else:
        for report in results:
            verb = "would" if report.dry_run else "did"
            if not report.done:
                print(f"cloud {report.cloud}: nothing to do")
            for _step, line in report.done:
                print(f"cloud {report.cloud}: {verb}: {shown(line)}")
    for report in results:
        for problem in report.problems:
            print(f"vmic cloud sync: {report.cloud}: {shown(problem)}", file=sys.stderr)
    return ExitCode.OK if ok else ExitCode.PROBLEMS


def _adopt(args: argparse.Namespace) -> int:
    home = site_home(args)
    home.require_initialised()
    config = site_config.load(home.config)
    (cloud,) = _chosen(config.clouds, args.name)
    with site_log(home), locked_site(home, now=utcnow(), purpose="vmic cloud adopt") as site:
        report = adopt(site, cloud, dry_run=args.dry_run)
    for line in report.adopted:
        print(shown(line))
    if not report.adopted:
        print(f"cloud {cloud.name}: nothing to adopt")
    for problem in report.problems:
        print(f"vmic cloud adopt: {cloud.name}: {shown(problem)}", file=sys.stderr)
    return ExitCode.OK if not report.problems else ExitCode.PROBLEMS


def _clouds(args: argparse.Namespace) -> int:
    home = site_home(args)
    home.require_initialised()
    config = site_config.load(home.config)
    with read_store(home) as store:
        held = Registry(store).all()
    rows: list[dict[str, Any]] = []
    for cloud in config.clouds:
        mine = [r for r in held if r.cloud == cloud.name]
        rows.append(
            {
                "name": cloud.name,
                "os_cloud": cloud.os_cloud,
                "visibility": cloud.visibility,
                "projects": {vo: list(ids) for vo, ids in cloud.projects},
                "lists": list(cloud.lists),
                "vos": list(cloud.vos),
                "withdrawn": cloud.withdrawn,
                "delete_after_days": cloud.delete_after / timedelta(days=1),
                "images": [
                    {
                        "image_id": r.image_id,
                        "glance_id": r.glance_id,
                        "state": r.state,
                        "adopted": r.adopted,
                    }
                    for r in mine
                ],
            }
        )
    if args.json:
        print_json(rows)
        return ExitCode.OK
    if not rows:
        print("no clouds; add one with `vmic cloud add NAME --os-cloud ENTRY`")
    for row in rows:
        states = [i["state"] for i in row["images"]]
        counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))) or "no images"
        print(f"{row['name']}  clouds.yaml {row['os_cloud']}  {row['visibility']}  ({counts})")
        for vo, ids in row["projects"].items():
            print(f"  {vo} -> {', '.join(ids)}")
    return ExitCode.OK
