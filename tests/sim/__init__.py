"""A loopback HTTP simulator for the site agent's network tests (see :mod:`tests.sim.server`)."""

from tests.sim.resources import Faults
from tests.sim.server import RequestRecord, Simulator

__all__ = ["Faults", "RequestRecord", "Simulator"]
