"""Fixtures for site-agent tests: a loopback endorser server and a fresh site per test."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.sim.server import Simulator
from tests.support.ca import TestCA
from tests.support.site import CA_DN, ENDORSER_DN, World, make_world


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as server:
        yield server


@pytest.fixture
def world(tmp_path: Path, now: datetime, sim: Simulator) -> World:
    ca = TestCA(CA_DN, now=now)
    return make_world(tmp_path, now, ca, ca.issue(ENDORSER_DN), sim)
