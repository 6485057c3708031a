"""Shared fixtures: one clock reading per session and a small test PKI built on it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support.ca import Identity, TestCA

ENDORSER = "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser"


@pytest.fixture(scope="session")
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="session")
def root_ca(now: datetime) -> TestCA:
    return TestCA("/DC=org/DC=vmic-test/CN=vmic Test Root CA", now=now)


@pytest.fixture(scope="session")
def endorser(root_ca: TestCA) -> Identity:
    return root_ca.issue(ENDORSER)
