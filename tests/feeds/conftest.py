"""Fixtures shared by the verifier tests of both list formats."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from feeds.verify import PreviousState
from keys.trust import TrustStore
from keys.xmlsig import SignerPin
from tests.support.ca import Identity, TestCA, store


@pytest.fixture(scope="module")
def trust(root_ca: TestCA) -> TrustStore:
    return store([root_ca])


@pytest.fixture(scope="module")
def pin(endorser: Identity) -> SignerPin:
    return SignerPin(subject=endorser.subject, issuer=endorser.issuer)


@pytest.fixture
def previous(now: datetime) -> PreviousState:
    """Rollback state of an earlier, lower version; harmless to the default list (version 5)."""
    return PreviousState(version=4, sha256="ab" * 32, updated=now - timedelta(days=7))
