"""One instance's engine: the wait queue and its orderings, vLLM-style batch formation with chunked
prefill and preemption, the KV-cache block manager (prefix caching, optional CPU tier) and the step
loop that asks the latency model for each step's duration.

May import: blis.request, blis.latency, blis.results, blis.errors. Never the cluster or the fleet:
the cluster drives an instance through ``Instance.inject`` / ``step`` and reads its counters.

``kv_cache`` is compiled at install time when a C compiler is available (``setup.py``), and the
compiled module shadows its source. The source is loaded instead, here and only here, under
``BLIS_PURE_PYTHON=1`` (the reference path; ``tests/test_kv_compiled.py`` compares both) or when
the source was edited after the build (an editable install not yet rebuilt).
"""

import os


def _kv_source_only() -> bool:
    if os.environ.get("BLIS_PURE_PYTHON") == "1":
        return True
    from importlib.machinery import EXTENSION_SUFFIXES

    base = os.path.join(os.path.dirname(__file__), "kv_cache")
    for suffix in EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            built = os.path.getmtime(base + suffix)
            return any(os.path.getmtime(base + ext) > built + 1 for ext in (".py", ".pxd")
                       if os.path.exists(base + ext))
    return False


if _kv_source_only():
    import sys
    from importlib.util import module_from_spec, spec_from_file_location

    _spec = spec_from_file_location(__name__ + ".kv_cache", os.path.join(os.path.dirname(__file__), "kv_cache.py"))
    sys.modules[_spec.name] = _module = module_from_spec(_spec)
    _spec.loader.exec_module(_module)
