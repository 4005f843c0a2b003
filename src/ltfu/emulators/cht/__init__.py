"""CHT emulator: a faithful stand-in for the cht-core API surfaces ltfu uses (see ``server.py``)."""

from .app import Emulator, create_app
from .config import ChtEmulatorConfig, ChwSimConfig, default_cht_config_dir
from .server import main, run

__all__ = ["ChtEmulatorConfig", "ChwSimConfig", "Emulator", "create_app", "default_cht_config_dir", "main", "run"]
