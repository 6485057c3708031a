"""What every site command shares: the ``--home`` option, the site home it names, the
endorser pins given on the command line, and how changes to images are printed.

Light on purpose (no store, no network client): every site command imports it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from federation.cli.common import shown
from keys.dn import DistinguishedName
from keys.errors import ConfigError
from keys.xmlsig import SignerPin
from site_agent.home import SiteHome, default_home
from site_agent.records import Change

HOME_HELP = "site home (default: $VMIC_HOME, else /var/lib/vmic for root, ~/.local/share/vmic)"


def home_parent() -> argparse.ArgumentParser:
    """The --home option every site command takes."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--home", type=Path, metavar="DIR", help=HOME_HELP)
    return parent


def site_home(args: argparse.Namespace) -> SiteHome:
    return SiteHome(args.home or default_home())


def pins_from(args: argparse.Namespace) -> list[SignerPin]:
    if len(args.endorser_dn) != len(args.ca_dn):
        raise ConfigError("give --endorser-dn and --ca-dn in pairs (one --ca-dn per endorser)")
    return [
        SignerPin(subject=DistinguishedName.parse(s), issuer=DistinguishedName.parse(i))
        for s, i in zip(args.endorser_dn, args.ca_dn, strict=True)
    ]


def print_changes(changes: list[Change]) -> None:
    """One line per change; titles and details come from lists, so they are :func:`shown`."""
    for c in changes:
        detail = f" ({shown(c.detail)})" if c.detail else ""
        print(f"  {shown(c.image_id)}  {c.what:<12} {shown(c.title)}{detail}")
