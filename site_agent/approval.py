"""Approval policies: what happens to an image that is new to the site.

A policy only ever decides *whether an image may run here*; integrity is
never its business (every byte is still checked against the endorser's
signed SHA-512). Policies are small objects behind one Protocol and compose
with :class:`AnyOf`, as sigstore's verification policies do; the federation
will add peer-based ones (approve what K trusted peers approved).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from feeds.model import ImageEntry
from site_agent.config import SiteConfig
from site_agent.records import Subscription


class ApprovalPolicy(Protocol):
    def approves(self, entry: ImageEntry, *, subscription: Subscription) -> bool:
        """True to approve ``entry`` at once; False holds it for the admin."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class HoldForAdmin:
    def approves(self, entry: ImageEntry, *, subscription: Subscription) -> bool:
        return False

    def describe(self) -> str:
        return "hold for the admin"


@dataclass(frozen=True, slots=True)
class ApproveAll:
    def approves(self, entry: ImageEntry, *, subscription: Subscription) -> bool:
        return True

    def describe(self) -> str:
        return "approve automatically"


@dataclass(frozen=True, slots=True)
class SubscriptionSaysAuto:
    """Approve the images of subscriptions made with ``--auto-approve``."""

    def approves(self, entry: ImageEntry, *, subscription: Subscription) -> bool:
        return subscription.auto_approve

    def describe(self) -> str:
        return "approve for --auto-approve subscriptions"


@dataclass(frozen=True, slots=True)
class AnyOf:
    policies: Sequence[ApprovalPolicy]

    def approves(self, entry: ImageEntry, *, subscription: Subscription) -> bool:
        return any(p.approves(entry, subscription=subscription) for p in self.policies)

    def describe(self) -> str:
        return " or ".join(p.describe() for p in self.policies)


@dataclass(frozen=True, slots=True)
class PeersApproved:
    """Approve what at least ``needed`` trusted peers approved and share (their verified
    exports list it). Only *whether* it runs here; the bytes are still checked against the
    endorser's signature."""

    needed: int
    count: Callable[[str], int]

    def approves(self, entry: ImageEntry, *, subscription: Subscription) -> bool:
        return self.needed > 0 and self.count(entry.id) >= self.needed

    def describe(self) -> str:
        return f"approve what {self.needed} peer(s) approved"


def site_policy(config: SiteConfig) -> ApprovalPolicy:
    default: ApprovalPolicy = ApproveAll() if config.approval == "auto" else HoldForAdmin()
    return AnyOf([SubscriptionSaysAuto(), default])
