"""Every `vmic` command: its name, the module that implements it, its one-line help.

This module imports nothing: `vmic --help` and `vmic --version` list the
commands from this table alone, and `vmic COMMAND` imports only the module
of that command (:func:`federation.cli.build_parser`), so a cron run of
`vmic sync` or an endorser's `vmic endorse sign` does not pay for the
network client, the store or the cloud code of every other command. The
modules take their one-line help from :data:`HELP`, so it is written once.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    name: str
    module: str
    """The module under ``federation.cli`` whose ``register`` adds the command."""
    help: str


COMMANDS = (
    Command("keys", "keys_cmd", "development CA and certificates"),
    Command("endorse", "endorse_cmd", "build, sign and publish an image list"),
    Command("policy", "policy_cmd", "check an image against the trusted-image policy"),
    Command("verify", "verify_cmd", "verify a signed image list"),
    Command("site", "site_cmd", "set up a site home"),
    Command("subscribe", "site_cmd", "subscribe to an endorser's image list"),
    Command("unsubscribe", "site_cmd", "end a subscription and withdraw its images"),
    Command("subscriptions", "site_cmd", "list subscriptions and their state"),
    Command("sync", "site_cmd", "fetch, verify, approve, download, withdraw (the cron job)"),
    Command("history", "site_cmd", "every list version accepted or rejected (the audit trail)"),
    Command(
        "status",
        "status_cmd",
        "the site's health: lists, images waiting, downloads, peers, trust, cache",
    ),
    Command("images", "images_cmd", "list the site's images and their state"),
    Command("image", "images_cmd", "one image"),
    Command("approve", "images_cmd", "approve images to run here (and be shared)"),
    Command("refuse", "images_cmd", "refuse images (withdrawn if they were running)"),
    Command("withdraw", "images_cmd", "withdraw images now (files to cache/expired)"),
    Command("cache", "images_cmd", "the image cache"),
    Command("hooks", "images_cmd", "commands run for events"),
    Command(
        "serve", "serve_cmd", "serve lists, the export, images and the catalogue page (read-only)"
    ),
    Command("peer", "peer_cmd", "follow or stop following another site"),
    Command("peers", "peer_cmd", "the peers this site follows (and what they carry)"),
    Command("export", "peer_cmd", "sign and write this site's export now"),
    Command("alarms", "alarm_cmd", "what comparing lists with peers found (split views)"),
    Command("alarm", "alarm_cmd", "one alarm: show it, or resolve it once decided"),
    Command("cloud", "cloud_cmd", "register the site's images in OpenStack Glance"),
    Command("clouds", "cloud_cmd", "list the configured clouds and the images vmic holds there"),
    Command("context", "context_cmd", "the site's contextualisation CD"),
)

HELP = {command.name: command.help for command in COMMANDS}
MODULES = tuple(dict.fromkeys(command.module for command in COMMANDS))
"""The command modules, in the order their commands are listed."""
