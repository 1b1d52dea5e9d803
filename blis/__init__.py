"""BLIS: a deterministic discrete-event simulator of LLM inference serving clusters.

``COMPILED`` modules are built by Cython at install time when a C compiler is available
(``setup.py``; typed state in each module's ``.pxd``), and a built module shadows its source. The
sources are imported instead, all together (the compiled modules' typed fields hold each other's
types), under ``BLIS_PURE_PYTHON=1`` (the reference path; ``tests/test_kv_compiled.py`` compares
both) or when any source was edited after the build (an editable install not yet rebuilt).
"""

import os
import sys

__version__ = "0.1.0"

COMPILED = ("request", "engine.kv_cache", "engine.fast_path")  # setup.py builds the same list


def _stale(name: str) -> bool:
    """No build of ``name``, or its .py / .pxd newer than the build."""
    from importlib.machinery import EXTENSION_SUFFIXES

    base = os.path.join(os.path.dirname(__file__), *name.split("."))
    for suffix in EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            built = os.path.getmtime(base + suffix)
            return any(os.path.getmtime(base + ext) > built + 1 for ext in (".py", ".pxd")
                       if os.path.exists(base + ext))
    return True


class _SourceFinder:
    """Finds the ``COMPILED`` modules' .py sources ahead of their builds (a meta path finder)."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        name = fullname[len(__name__) + 1:]
        if fullname.startswith(__name__ + ".") and name in COMPILED:
            from importlib.util import spec_from_file_location

            return spec_from_file_location(
                fullname, os.path.join(os.path.dirname(__file__), *name.split(".")) + ".py")
        return None


if os.environ.get("BLIS_PURE_PYTHON") == "1" or any(_stale(name) for name in COMPILED):
    sys.meta_path.insert(0, _SourceFinder)
