"""`vmic alarms` and `vmic alarm show|resolve`: what watching the peers found (split views).

An equivocation alarm freezes its list until an admin resolves it; a freeze
alarm closes by itself once the endorser's URL catches up
(:mod:`site_agent.alarms`). Resolving takes the site lock, like every command
that changes the site.
"""

from __future__ import annotations

import argparse

from federation.cli.commands import HELP
from federation.cli.common import ExitCode, iso, print_json, shown, utcnow
from federation.cli.sitehome import home_parent, site_home
from keys.errors import ConfigError
from site_agent import admin
from site_agent.alarms import FREEZE_GRACE, Alarm, AlarmStore, resolve_alarm
from site_agent.records import NEW

ALARM_DESCRIPTION = (
    "Sites compare the lists they hold (each export names every list's version and the "
    "SHA-256 of its signed content). An equivocation alarm means two copies of one list "
    "with the same version and other content, both validly signed by the same endorser: "
    "its key signed two different lists, so sites see different images. Both copies are "
    "kept in the site home under evidence/ALARM/, and the list is frozen (nothing from it "
    "is approved, not even with `vmic approve`) until the alarm is resolved. A freeze "
    "alarm means the endorser's URL still serves an older version "
    f"{int(FREEZE_GRACE.total_seconds() // 3600)} hour(s) after a newer one was signed "
    "and reached this site from peers; it closes by itself when the URL catches up. "
    f"`vmic sync` exits {int(ExitCode.ALARM)} while any alarm is open."
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alarms = commands.add_parser(
        "alarms",
        parents=[home_parent()],
        help=HELP["alarms"],
        description=f"The open alarms, oldest first. {ALARM_DESCRIPTION}",
    )
    alarms.add_argument("--all", action="store_true", help="resolved alarms too")
    alarms.add_argument("--json", action="store_true", help="machine-readable output")
    alarms.set_defaults(func=_alarms)

    alarm = commands.add_parser("alarm", help=HELP["alarm"], description=ALARM_DESCRIPTION)
    sub = alarm.add_subparsers(dest="alarm_command", metavar="ACTION", required=True)
    show = sub.add_parser(
        "show",
        parents=[home_parent()],
        help="one alarm: what was found, the evidence, the images of its list",
    )
    show.add_argument("alarm_id", type=int, metavar="ALARM")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)
    resolve = sub.add_parser(
        "resolve",
        parents=[home_parent()],
        help="close an alarm with what was decided (unfreezes its list)",
        description=(
            "Close an open alarm and record what was decided. Decide first which copy of "
            "the list is the endorser's real one (ask the endorser; compare the two files "
            "in the evidence folder, e.g. with `vmic verify FILE --json`), and refuse or "
            "withdraw any image of the other. Resolving an equivocation alarm unfreezes "
            "its list: the images it held wait for approval as usual. The evidence stays."
        ),
    )
    resolve.add_argument("alarm_id", type=int, metavar="ALARM")
    resolve.add_argument(
        "--note",
        required=True,
        help="what was decided and by whom (kept with the alarm), e.g. 'copy B confirmed "
        "by the endorser; image X refused -- jdoe'",
    )
    resolve.set_defaults(func=_resolve)


def _alarms(args: argparse.Namespace) -> int:
    with admin.read_store(site_home(args)) as store:
        found = AlarmStore(store).alarms(everything=args.all)
    if args.json:
        print_json([a.to_json() for a in found])
        return ExitCode.OK
    if not found:
        print("no alarms" if args.all else "no open alarms")
    for alarm in found:
        print(_line(alarm))
    return ExitCode.OK


def _line(alarm: Alarm) -> str:
    state = "open" if alarm.open else f"resolved {iso(alarm.resolved_at)}"
    frozen = ", list frozen" if alarm.open and alarm.freezes else ""
    return (
        f"{alarm.id}  {alarm.kind:<12} {iso(alarm.raised_at)}  {shown(alarm.subscription)} "
        f"version {alarm.version}  ({state}{frozen})"
    )


def _show(args: argparse.Namespace) -> int:
    home = site_home(args)
    with admin.read_store(home) as store:
        alarm = AlarmStore(store).alarm(args.alarm_id)
        if alarm is None:
            raise ConfigError(f"no alarm {args.alarm_id} at this site", hint="see `vmic alarms`")
        held = [i for i in store.images(state=NEW) if i.list_id == alarm.list_id]
    evidence = None if alarm.evidence is None else home.root / alarm.evidence
    if args.json:
        data = alarm.to_json()
        data["evidence_path"] = None if evidence is None else str(evidence)
        data["waiting"] = [i.image_id for i in held]
        print_json(data)
        return ExitCode.OK
    print(_line(alarm))
    print(f"  list:       {alarm.list_id}")
    print(f"  found:      {shown(alarm.detail)}")
    if alarm.peer:
        print(f"  peer:       {shown(alarm.peer)}")
    if alarm.ours:
        print(f"  this site:  signed content SHA-256 {alarm.ours}")
    if alarm.theirs:
        print(f"  the other:  signed content SHA-256 {alarm.theirs}")
    if evidence is not None:
        files = sorted(p.name for p in evidence.iterdir()) if evidence.is_dir() else []
        print(f"  evidence:   {evidence} ({', '.join(files) or 'missing'})")
    if alarm.resolution:
        print(f"  resolution: {shown(alarm.resolution)}")
    for image in held:
        print(f"  waiting:    {image.image_id}  {shown(image.title)}")
    return ExitCode.OK


def _resolve(args: argparse.Namespace) -> int:
    home = site_home(args)
    now = utcnow()
    with admin.locked_site(home, now=now, purpose="vmic alarm resolve") as site:
        alarm = resolve_alarm(site.store, args.alarm_id, at=now, resolution=args.note)
        still = AlarmStore(site.store).frozen().get(alarm.list_id)
        held = [i for i in site.store.images(state=NEW) if i.list_id == alarm.list_id]
    print(f"alarm {alarm.id} resolved")
    if still:
        print(f"list {shown(alarm.subscription)} stays frozen by alarm {still}")
    elif alarm.freezes:
        print(f"list {shown(alarm.subscription)} is no longer frozen")
        for image in held:
            print(
                f"  {image.image_id} ({shown(image.title)}) waits for approval: "
                "`vmic approve` or `vmic refuse`"
            )
    return ExitCode.OK
