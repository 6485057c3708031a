"""`vmic images`, `image show`, `approve`, `refuse`, `withdraw`, `cache verify`, `hooks`."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from federation.api_schema import image_object, image_objects
from federation.cli.commands import HELP
from federation.cli.common import ExitCode, human_size, print_json, shown, utcnow
from federation.cli.sitehome import home_parent, print_changes, site_home
from keys.errors import ConfigError
from site_agent import admin, config_edit
from site_agent import config as site_config
from site_agent.cloud.registry import DEACTIVATED, Registration, Registry
from site_agent.home import SiteHome
from site_agent.records import RUNNABLE_STATES, STATES, ImageRecord


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    home = home_parent()
    images = commands.add_parser(
        "images",
        parents=[home],
        help=HELP["images"],
        description=(
            "Every image the site knows: id, state (new, approved, refused, available, "
            "expired, revoked, withdrawn), whether it may be shared, size, VO (cut to 16 "
            "characters; --json and `vmic image show` give it whole), the clouds it is "
            "registered in (when the site has any; `vmic image show` gives the Glance ids) "
            "and title."
        ),
    )
    images.add_argument("--state", choices=STATES, help="only images in this state")
    images.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output: a JSON array of the image objects that `vmic serve` "
        "gives at /api/v1/images (docs/api.md)",
    )
    images.set_defaults(func=_images)

    image = commands.add_parser(
        "image", help=HELP["image"], description="Commands about one image."
    )
    image_sub = image.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    show = image_sub.add_parser(
        "show",
        parents=[home],
        help="everything the site knows about one image",
        description=(
            "Show an image's endorsed metadata, its state, where its bytes are and where "
            "it is registered (each cloud, Glance id and state)."
        ),
    )
    show.add_argument("image_id", metavar="ID", help="image UUID")
    show.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output: the image object of /api/v1/images/ID (docs/api.md), "
        "with cache_file",
    )
    show.set_defaults(func=_image_show)

    purge = image_sub.add_parser(
        "purge",
        parents=[home],
        help="delete the bytes of images that no longer run here, for good",
        description=(
            "Delete every copy of the bytes of images that no longer run here (withdrawn, "
            "revoked, expired or refused): the file kept in cache/expired for the retention "
            "period, a quarantined copy, a partial download. The image's record and the "
            "history stay, with a line saying what was deleted. Bytes another runnable image "
            "uses stay in the cache. An approved or available image is refused: withdraw "
            "it first."
        ),
    )
    purge.add_argument("image_ids", nargs="+", metavar="ID", help="image UUIDs")
    purge.set_defaults(func=_image_purge)

    approve = commands.add_parser(
        "approve",
        parents=[home],
        help=HELP["approve"],
        description=(
            "Approve images to run at this site; the next sync downloads them. They may be "
            "shared with peer sites unless --local-only is given. An image whose endorser "
            "overrode the trusted-image policy check (the signed list says which rules and "
            "why) is shown first and approved only on confirmation, or with --yes."
        ),
    )
    approve.add_argument("image_ids", nargs="+", metavar="ID", help="image UUIDs")
    approve.add_argument("--local-only", action="store_true", help="approve, but do not share")
    approve.add_argument(
        "--yes",
        action="store_true",
        help="approve images that carry a policy override without asking (the endorser "
        "published them despite an error of the trusted-image policy check)",
    )
    approve.set_defaults(func=_approve)

    refuse = commands.add_parser(
        "refuse",
        parents=[home],
        help=HELP["refuse"],
        description="Refuse images at this site, with the reason recorded.",
    )
    refuse.add_argument("image_ids", nargs="+", metavar="ID", help="image UUIDs")
    refuse.add_argument("--reason", required=True, help="why the site refuses them")
    refuse.set_defaults(func=_refuse)

    withdraw = commands.add_parser(
        "withdraw",
        parents=[home],
        help=HELP["withdraw"],
        description=(
            "Withdraw images at once: hooks are told, files move to cache/expired. They "
            "come back only if their list names them anew."
        ),
    )
    withdraw.add_argument("image_ids", nargs="+", metavar="ID", help="image UUIDs")
    withdraw.set_defaults(func=_withdraw)

    cache = commands.add_parser("cache", help=HELP["cache"], description="The image cache.")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="COMMAND", required=True)
    verify = cache_sub.add_parser(
        "verify",
        parents=[home],
        help="re-hash every cached image",
        description=(
            "Re-hash every cached image against its SHA-512. With --repair, damaged files "
            "move to cache/quarantine and their images are downloaded again on the next sync."
        ),
    )
    verify.add_argument("--repair", action="store_true", help="quarantine damaged files")
    verify.set_defaults(func=_cache_verify)

    hooks = commands.add_parser(
        "hooks",
        help=HELP["hooks"],
        description=(
            "Hooks run a command for events (no shell; the event in VMIC_* environment "
            "variables and as JSON on stdin). They live in config.toml."
        ),
    )
    hooks_sub = hooks.add_subparsers(dest="hooks_command", metavar="COMMAND", required=True)
    add = hooks_sub.add_parser(
        "add",
        parents=[home],
        usage="vmic hooks add [-h] [--home DIR] --on EVENT [--on EVENT ...] [--timeout S] "
        "[--vmcatcher-env] NAME -- COMMAND [ARGS ...]",
        help="add a hook",
        description=(
            "Add a hook: `vmic hooks add NAME --on EVENT [--on EVENT] [--timeout S] -- "
            f"COMMAND [ARGS...]`. Events: {', '.join(site_config.EVENT_TYPES)}, or '*'. "
            "The command must be an absolute path."
        ),
    )
    add.add_argument("name", metavar="NAME", help="hook name")
    add.add_argument("--on", action="append", required=True, metavar="EVENT", help="event type")
    add.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    add.add_argument(
        "--vmcatcher-env",
        action="store_true",
        help="also set the VMCATCHER_* variables vmcatcher's handlers read (image.new, "
        "image.available, image.withdrawn only)",
    )
    add.set_defaults(func=_hooks_add, takes_command=True)
    listing = hooks_sub.add_parser(
        "list", parents=[home], help="list hooks", description="List the configured hooks."
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_hooks_list)
    remove = hooks_sub.add_parser(
        "remove", parents=[home], help="remove a hook", description="Remove a hook by name."
    )
    remove.add_argument("name", metavar="NAME", help="hook name")
    remove.set_defaults(func=_hooks_remove)


def _base_url(home: SiteHome) -> str:
    """The site's base URL from its identity (this site's URLs in --json are absolute with
    it), or empty: also when config.toml cannot be read (said on stderr), so that the
    images can still be listed while the configuration is being mended."""
    home.require_initialised()
    try:
        identity = site_config.load(home.config).identity
    except ConfigError as error:
        print(f"vmic: {shown(error.message)}; this site's URLs are relative", file=sys.stderr)
        return ""
    return identity.base_url if identity is not None else ""


_VO_WIDTH = 16
"""Widest VO in the `vmic images` table ("vo.access.egi.eu"); a longer one is cut."""


def _vo_cell(vo: object) -> str:
    """The image's VO for the table, escaped and cut to :data:`_VO_WIDTH` ("-" if none)."""
    if not vo:
        return "-"
    text = str(vo)
    if len(text) > _VO_WIDTH:
        text = text[: _VO_WIDTH - 3] + "..."
    return shown(text)


_CLOUDS_WIDTH = 16
"""Widest cloud cell in the `vmic images` table; more names than fit show as a count."""


def _clouds_cell(clouds: Sequence[Registration]) -> str:
    """The clouds an image is registered in, for the table ("-" if none): their names,
    or "N clouds" when they do not fit (the image's state says whether it is in use)."""
    names = sorted({r.cloud for r in clouds})
    text = ",".join(names) or "-"
    if len(text) > _CLOUDS_WIDTH:
        text = f"{len(names)} clouds"
    return shown(text)


def _images(args: argparse.Namespace) -> int:
    home = site_home(args)
    if args.json:
        base_url = _base_url(home)
        with admin.read_store(home) as store:
            found = image_objects(store, base_url=base_url, state=args.state)
        print_json(found)
        return ExitCode.OK
    with admin.read_store(home) as store:
        images = store.images(state=args.state)
        registered: dict[str, list[Registration]] = defaultdict(list)
        for reg in Registry(store).all():
            registered[reg.image_id].append(reg)
    vos = [_vo_cell(i.entry.get("vo")) for i in images]
    width = max((len(vo) for vo in vos), default=0)
    clouds = [_clouds_cell(registered.get(i.image_id, ())) for i in images]
    clouds_width = max((len(c) for c in clouds), default=0) if registered else 0
    for i, vo, where in zip(images, vos, clouds, strict=True):
        share = ("shared" if i.shareable else "local") if i.state in RUNNABLE_STATES else "-"
        cloud_cell = f"{where:<{clouds_width}}  " if clouds_width else ""
        override = "  [policy override]" if i.entry.get("policy_override") else ""
        print(
            f"{i.image_id}  {i.state:<9} {share:<6} {human_size(i.size):>10}  "
            f"{vo:<{width}}  {cloud_cell}{shown(i.title)}{override}"
        )
    return ExitCode.OK


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}Z" if moment else "?"


def _registration_line(reg: Registration) -> str:
    """One registration for `vmic image show`: cloud, Glance id, state and since when."""
    how = "adopted" if reg.adopted else "registered by vmic"
    line = f"{shown(reg.cloud)}: {shown(reg.glance_id)} {reg.state}"
    if reg.state == DEACTIVATED:
        line += f" since {_when(reg.withdrawn_at or reg.changed_at)}"
    line += f", {how} {_when(reg.registered_at)}"
    if reg.last_error:
        line += f" (last error: {shown(reg.last_error)})"
    return line


def _image_show(args: argparse.Namespace) -> int:
    home = site_home(args)
    base_url = _base_url(home) if args.json else ""
    with admin.read_store(home) as store:
        image = store.image(args.image_id.removeprefix("urn:uuid:").lower())
        clouds = Registry(store).of_image(image.image_id) if image else []
        listed = store.current_list(image.list_id) if image else None
    if image is None:
        raise ConfigError(f"no image {args.image_id} at this site", hint="see `vmic images`")
    cached = home.images / image.sha512
    cache_file = str(cached) if cached.exists() else None
    if args.json:
        data = image_object(image, listed=listed, clouds=clouds, base_url=base_url)
        print_json({**data, "cache_file": cache_file})
        return ExitCode.OK
    entry = image.entry
    print(f"{shown(image.title)}  ({image.image_id})")
    if entry.get("policy_override"):
        print(f"  POLICY OVERRIDE: {_override(image)}")
    print(f"  state:        {image.state}{f' ({shown(image.reason)})' if image.reason else ''}")
    print(f"  shareable:    {'yes' if image.shareable else 'no'}")
    print(
        f"  list:         {image.list_id} version {image.list_version} "
        f"({shown(image.subscription)})"
    )
    for label, key in (
        ("format", "format"),
        ("hypervisor", "hypervisor"),
        ("OS", "os"),
        ("OS name", "osname"),
        ("OS version", "osversion"),
        ("arch", "arch"),
        ("version", "version"),
        ("VO", "vo"),
        ("image page", "info_url"),
        ("AppDB app id", "appliance_id"),
        ("base image", "base_marketplace_url"),
        ("produced", "produced"),
        ("endorsed", "endorsed"),
        ("expires", "expires"),
    ):
        if entry.get(key):
            print(f"  {label + ':':<13} {shown(entry[key])}")
    print(f"  size:         {image.size} bytes ({human_size(image.size)})")
    print(f"  sha512:       {image.sha512}")
    print(f"  download:     {shown(image.url)}")
    print(f"  cache file:   {shown(cache_file or '-')}")
    lines = [_registration_line(reg) for reg in clouds] or ["-"]
    for label, line in zip(["clouds:", *[""] * (len(lines) - 1)], lines, strict=True):
        print(f"  {label:<13} {line}")
    return ExitCode.OK


def _override(image: ImageRecord) -> str:
    """What the endorser said when publishing an image that fails the policy check."""
    return (
        f"{shown(image.entry['policy_override'])} (the endorser published it although the "
        "trusted-image policy check found errors; see docs/policy-rules.md)"
    )


def _confirm_overrides(args: argparse.Namespace) -> None:
    """Show each policy override among the images to approve; go on only if the admin says
    so (--yes, or 'y' at a terminal)."""
    with admin.read_store(site_home(args)) as store:
        images = [store.image(i.removeprefix("urn:uuid:").lower()) for i in args.image_ids]
    overridden = [i for i in images if i is not None and i.entry.get("policy_override")]
    if not overridden or args.yes:
        return
    for image in overridden:
        print(f"{image.image_id} ({shown(image.title)}): policy override: {_override(image)}")
    if not sys.stdin.isatty():
        raise ConfigError(
            f"{len(overridden)} image(s) carry a policy override; nothing was approved",
            hint="read the override above, then approve with --yes",
        )
    answer = input("approve anyway? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise ConfigError("not approved", hint="nothing was changed")


def _image_purge(args: argparse.Namespace) -> int:
    changes, freed = admin.purge(site_home(args), args.image_ids, now=utcnow())
    print_changes(changes)
    print(f"{human_size(freed)} freed")
    return ExitCode.OK


def _approve(args: argparse.Namespace) -> int:
    _confirm_overrides(args)
    changes = admin.approve(
        site_home(args), args.image_ids, shareable=not args.local_only, now=utcnow()
    )
    print_changes(changes)
    return ExitCode.OK


def _refuse(args: argparse.Namespace) -> int:
    print_changes(admin.refuse(site_home(args), args.image_ids, reason=args.reason, now=utcnow()))
    return ExitCode.OK


def _withdraw(args: argparse.Namespace) -> int:
    print_changes(admin.withdraw(site_home(args), args.image_ids, now=utcnow()))
    return ExitCode.OK


def _cache_verify(args: argparse.Namespace) -> int:
    results = admin.verify_cache(site_home(args), repair=args.repair, now=utcnow())
    bad = [r for r in results if not r.ok]
    for r in bad:
        title = shown(r.image.title) if r.image else "no image uses it"
        print(f"  {r.sha512[:16]}...  {r.action}  ({title})")
    print(f"{len(results)} cached file(s) checked, {len(bad)} damaged")
    return ExitCode.OK if not bad or args.repair else ExitCode.INTEGRITY


def _hooks_add(args: argparse.Namespace) -> int:
    hook = site_config.make_hook(
        name=args.name,
        events=args.on,
        command=args.command_argv,
        timeout=args.timeout,
        vmcatcher_env=args.vmcatcher_env,
    )
    home = site_home(args)
    home.require_initialised()
    config_edit.add_hook(home.config, hook)
    print(f"hook {hook.name} added: on {', '.join(hook.events)} run {' '.join(hook.command)}")
    return ExitCode.OK


def _hooks_list(args: argparse.Namespace) -> int:
    home = site_home(args)
    home.require_initialised()
    hooks = site_config.load(home.config).hooks
    if args.json:
        print_json(
            [
                {
                    "name": h.name,
                    "on": list(h.events),
                    "command": list(h.command),
                    "timeout": h.timeout,
                    "vmcatcher_env": h.vmcatcher_env,
                }
                for h in hooks
            ]
        )
        return ExitCode.OK
    if not hooks:
        print("no hooks")
    for h in hooks:
        print(f"{h.name}: on {', '.join(h.events)} (timeout {h.timeout:g} s)")
        print(f"  {' '.join(h.command)}")
    return ExitCode.OK


def _hooks_remove(args: argparse.Namespace) -> int:
    home = site_home(args)
    home.require_initialised()
    config_edit.remove_hook(home.config, args.name)
    print(f"hook {args.name} removed")
    return ExitCode.OK
