"""Shared fixtures: one clock reading per session and a small test PKI built on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.sim.server import Simulator
from tests.support.ca import Identity, TestCA
from tests.support.glance import GlanceMissingError, GlanceServer, glance_bin_dir
from tests.support.site import CA_DN, World, make_world
from tests.support.site import ENDORSER_DN as SITE_ENDORSER_DN

ENDORSER = "/DC=org/DC=vmic-test/OU=Users/CN=Jane Endorser"

# Generated hostile inputs: a few fixed examples in `make test` (the same on every run, so
# CI never flakes), many random ones in `make fuzz` (VMIC_HYPOTHESIS_PROFILE=fuzz).
_SLOW = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]
settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_SLOW,
)
settings.register_profile(
    "fuzz", max_examples=1500, deadline=None, database=None, suppress_health_check=_SLOW
)
settings.load_profile(os.environ.get("VMIC_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="session")
def root_ca(now: datetime) -> TestCA:
    return TestCA("/DC=org/DC=vmic-test/CN=vmic Test Root CA", now=now)


@pytest.fixture(scope="session")
def endorser(root_ca: TestCA) -> Identity:
    return root_ca.issue(ENDORSER)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A loopback HTTP server standing in for an endorser's web site."""
    with Simulator() as server:
        yield server


@pytest.fixture
def world(tmp_path: Path, now: datetime, sim: Simulator) -> World:
    """A fresh CA, endorser and initialised site home for one test."""
    ca = TestCA(CA_DN, now=now)
    return make_world(tmp_path, now, ca, ca.issue(SITE_ENDORSER_DN), sim)


@pytest.fixture(scope="session")
def glance_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    """One real Glance for the session (started by the first test that asks for it)."""
    try:
        bin_dir = glance_bin_dir()
    except GlanceMissingError as exc:
        # skipped outside `make test`; under it (VMIC_REQUIRE_INTEROP=1) a failure
        if os.environ.get("VMIC_REQUIRE_INTEROP") == "1":
            pytest.fail(f"{exc}; `make test` installs it")
        pytest.skip(f"{exc}; `make test` installs it")
    with GlanceServer(bin_dir, tmp_path_factory.mktemp("glance")) as server:
        yield server


@pytest.fixture
def glance(glance_server: GlanceServer) -> GlanceServer:
    """The session's Glance, running and with no image in it."""
    glance_server.start()  # again, if a test stopped it
    glance_server.reset()
    return glance_server
