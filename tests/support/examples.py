"""The example packages' servers (examples/packages/*/server.py), loaded as modules: they
are scripts to copy, not part of an installed package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGES = Path(__file__).parents[2] / "examples" / "packages"


def example_server(package: str) -> ModuleType:
    """examples/packages/<package>/server.py, loaded once."""
    name = f"example_{package.replace('-', '_')}_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PACKAGES / package / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
