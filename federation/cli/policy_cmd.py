"""`vmic policy check` and `vmic policy rules`: the trusted-image policy, before endorsing."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from federation.cli.commands import HELP
from federation.cli.common import ExitCode, human_size, print_json
from feeds.policy.check import check_image
from feeds.policy.model import Report, Severity
from feeds.policy.rules import RULES


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = commands.add_parser(
        "policy",
        help=HELP["policy"],
        description=(
            "The HEPiX trusted-image policy: no accounts with passwords, no SSH or host keys, "
            "no credentials of any form inside an image others will run."
        ),
    )
    sub = policy.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)
    check = sub.add_parser(
        "check",
        help="inspect an image and list what breaks the policy",
        description=(
            "Inspect an image without running or unpacking it: a folder, a tar archive (plain, "
            "gzip, bzip2, xz), a raw disk with ext2/3/4 file systems (read with e2fsprogs' "
            "debugfs), or a qcow2/vmdk/vdi/vhd disk (through qemu-img). Each finding has a "
            "rule id, a severity, the path inside the image and a reason. Exit 0 when no "
            "error remains, 17 when errors do."
        ),
    )
    check.add_argument("image", type=Path, metavar="IMAGE", help="image file or folder")
    check.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="RULE",
        help="show findings of this rule but do not count them (repeatable)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=_check)
    rules = sub.add_parser(
        "rules",
        help="list the rules with their ids",
        description="List the policy's rules: id, severity and why each matters.",
    )
    rules.add_argument("--json", action="store_true", help="machine-readable output")
    rules.set_defaults(func=_rules)


class _Ticker:
    """``checking IMAGE: N entries`` on a terminal's stderr while a large image is read."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, entries: int) -> None:
        moment = time.monotonic()
        if self.enabled and moment - self._last >= 0.2:
            self._last = moment
            sys.stderr.write(f"\r{self.label}: {entries} entries")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._last:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run_check(image: Path, allow: list[str]) -> Report:
    ticker = _Ticker(f"checking {image.name}")
    try:
        return check_image(image, allow=allow, progress=ticker)
    finally:
        ticker.close()


def _check(args: argparse.Namespace) -> int:
    report = run_check(args.image, args.allow)
    if args.json:
        print_json(report_json(report))
    else:
        print_report(report)
    return ExitCode.OK if report.clean else ExitCode.POLICY


def report_json(report: Report) -> dict[str, Any]:
    return {
        "image": report.image,
        "kind": report.kind,
        "clean": report.clean,
        "entries": report.files,
        "findings": [
            {
                "rule": f.rule,
                "severity": f.severity.value,
                "path": f.path,
                "reason": f.reason,
                "allowed": f.allowed,
            }
            for f in report.findings
        ],
        "facts": {f.name: f.value for f in report.facts},
    }


def print_report(report: Report, *, stream: Any = None) -> None:
    out = stream or sys.stdout
    counts = {
        s: sum(1 for f in report.findings if f.severity is s and not f.allowed) for s in Severity
    }
    verdict = "clean" if report.clean else f"{counts[Severity.ERROR]} error(s)"
    print(
        f"{report.image} ({report.kind}, {report.files} entries): {verdict}, "
        f"{counts[Severity.WARNING]} warning(s)",
        file=out,
    )
    for f in report.findings:
        label = "allowed" if f.allowed else f.severity.value
        print(f"  {label:<8} {f.rule:<17} {f.path}  {f.reason}", file=out)
    for fact in report.facts:
        value = fact.value
        if fact.name.endswith("image size"):
            value = human_size(int(value.split()[0]))
        print(f"  {fact.name}: {value}", file=out)


def _rules(args: argparse.Namespace) -> int:
    if args.json:
        print_json(
            [
                {"id": r.id, "severity": r.severity.value, "title": r.title, "why": r.why}
                for r in RULES.values()
            ]
        )
        return ExitCode.OK
    for rule in RULES.values():
        print(f"{rule.id:<17} {rule.severity.value:<8} {rule.title}: {rule.why}")
    return ExitCode.OK
