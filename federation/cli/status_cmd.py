"""`vmic status`: the site's health on one screen; its exit code is a Nagios/Icinga check."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from federation.cli.commands import HELP
from federation.cli.common import human_size, iso, parse_time_arg, print_json, shown, utcnow
from federation.cli.sitehome import home_parent, site_home
from site_agent.status import LIST_EXPIRY_WARNING, STALE_AFTER, SiteStatus, site_status, span

STATE_ORDER = ("available", "approved", "new", "refused", "expired", "withdrawn", "revoked")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        parents=[home_parent()],
        help=HELP["status"],
        description=(
            "One screen with the site's health: each list's version, age and expiry, images "
            "waiting for approval, downloads in progress and the run holding the site, "
            "followed peers and their last success, every problem `vmic site check` finds "
            "(trust directory, CRLs, identity), and the cache's disk use. Reads only; works "
            f"while a sync runs. A list expiring within {LIST_EXPIRY_WARNING.days} days, "
            f"no successful sync for {STALE_AFTER.days} day(s), images waiting and a failing "
            "peer are warnings; an expired list, a trust or configuration problem and a "
            "nearly full disk are critical. The first line and the exit code follow the "
            "Nagios plugin convention (0 OK, 1 WARNING, 2 CRITICAL, 3 cannot tell), so "
            "Nagios or Icinga can run it as a check."
        ),
    )
    status.add_argument(
        "--at",
        type=parse_time_arg,
        help="judge as at this time (default: now), e.g. to see what expires within a week",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    status = site_status(site_home(args), now=args.at or utcnow())
    if args.json:
        print_json(_json(status))
    else:
        _print(status)
    return int(status.level)


def _summary(status: SiteStatus) -> str:
    counts = status.counts
    healthy = (
        f"{len(status.lists)} list(s), {counts.get('available', 0)} image(s) available, "
        f"{len(status.waiting)} waiting, {len(status.downloads)} downloading"
    )
    worst = [f for f in status.findings if f.level == status.level]
    head = worst[0].message if worst else healthy
    more = f" (+{len(status.findings) - 1} more)" if len(status.findings) > 1 else ""
    perf = (
        f"lists={len(status.lists)} available={counts.get('available', 0)} "
        f"waiting={len(status.waiting)} downloading={len(status.downloads)} "
        f"cache={status.cache_bytes}B free={status.free_bytes}B"
    )
    return f"{status.level.label}: {shown(head)}{more} | {perf}"


def _print(status: SiteStatus) -> None:
    now = status.now
    print(_summary(status))
    print("lists:" if status.lists else "lists: none (`vmic subscribe`)")
    for lst in status.lists:
        version = f"version {lst.version}" if lst.version is not None else "no version"
        accepted = f", accepted {_when(lst.accepted_at, now)}" if lst.accepted_at else ""
        expires = f", expires {_until(lst.expires, now)}" if lst.expires else ""
        success = _when(lst.last_success, now) if lst.last_success else "never"
        print(f"  {shown(lst.subscription):<20} {version}{accepted}{expires}")
        print(f"  {'':<20} last success {success}")
        if lst.last_error:
            print(f"  {'':<20} last error: {shown(lst.last_error)}")
    states = ", ".join(f"{status.counts[s]} {s}" for s in STATE_ORDER if status.counts.get(s))
    print(f"images: {states or 'none'}")
    for image in status.waiting:
        print(f"  waiting  {image.image_id}  {shown(image.title)} ({shown(image.subscription)})")
    for down in status.downloads:
        share = f" ({down.have / down.size:.0%})" if down.size else ""
        print(
            f"  download {down.image_id}  {shown(down.title)}: "
            f"{human_size(down.have)} of {human_size(down.size)}{share}"
        )
    if status.running is not None:
        print(f"running: {shown(status.running.describe(now))}")
    if status.peers:
        print("peers:")
    for peer in status.peers:
        success = _when(peer.last_success, now) if peer.last_success else "never"
        error = f"; last error: {shown(peer.last_error)}" if peer.last_error else ""
        print(f"  {shown(peer.name):<20} last success {success}{error}")
    print(
        f"cache: {human_size(status.cache_bytes)} held; {human_size(status.free_bytes)} free "
        f"of {human_size(status.total_bytes)}"
    )
    for finding in status.findings:
        print(f"{finding.level.label:<8} {finding.area}: {shown(finding.message)}")


def _json(status: SiteStatus) -> dict[str, Any]:
    return {
        "status": status.level.label,
        "exit_code": int(status.level),
        "at": iso(status.now),
        "lists": [
            {
                "subscription": lst.subscription,
                "list_id": lst.list_id,
                "version": lst.version,
                "accepted_at": iso(lst.accepted_at),
                "expires": iso(lst.expires),
                "last_success": iso(lst.last_success),
                "last_error": lst.last_error,
            }
            for lst in status.lists
        ],
        "images": dict(sorted(status.counts.items())),
        "waiting": [
            {"image_id": i.image_id, "title": i.title, "subscription": i.subscription}
            for i in status.waiting
        ],
        "downloads": [
            {"image_id": d.image_id, "title": d.title, "bytes": d.have, "size": d.size}
            for d in status.downloads
        ],
        "running": None
        if status.running is None
        else {
            "pid": status.running.pid,
            "since": iso(status.running.since),
            "command": status.running.purpose,
        },
        "peers": [
            {"name": p.name, "last_success": iso(p.last_success), "last_error": p.last_error}
            for p in status.peers
        ],
        "cache": {
            "bytes": status.cache_bytes,
            "free_bytes": status.free_bytes,
            "total_bytes": status.total_bytes,
        },
        "findings": [
            {"level": f.level.label, "area": f.area, "message": f.message} for f in status.findings
        ],
    }


def _when(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "-"
    return f"{iso(at)} ({span(now - at)} ago)"


def _until(at: datetime, now: datetime) -> str:
    if at <= now:
        return f"{iso(at)} (expired {span(now - at)} ago)"
    return f"{iso(at)} (in {span(at - now)})"
