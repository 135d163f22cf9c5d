"""Shared fixtures for tests that drive real Blender through the ``bpy`` module."""

import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"


def load_addon():
    """Imports ``addon/`` as the package ``splatdiff`` (as Blender would import the extension)."""
    if "splatdiff" in sys.modules:
        return sys.modules["splatdiff"]
    spec = importlib.util.spec_from_file_location(
        "splatdiff", ROOT / "addon" / "__init__.py", submodule_search_locations=[str(ROOT / "addon")]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["splatdiff"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def addon():
    """The add-on, registered in this Blender session."""
    module = load_addon()
    module.register()
    yield module
    module.unregister()
