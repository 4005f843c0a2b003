"""Facility emulator: an EMR that registers at the mediator, sends defaulter lists and receives
the mediator's notifications (see ``app.py``; driven over HTTP with ``client.py``)."""

from .app import Facility, create_app
from .client import AsyncFacilityClient, FacilityClient, FacilityError
from .config import FacilityEmulatorConfig
from .ledger import Ledger
from .server import main, run

__all__ = [
    "AsyncFacilityClient",
    "Facility",
    "FacilityClient",
    "FacilityEmulatorConfig",
    "FacilityError",
    "Ledger",
    "create_app",
    "main",
    "run",
]
