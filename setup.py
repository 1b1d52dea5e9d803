"""Builds the compiled engine modules (``blis.engine.COMPILED``: the KV cache and the fast path),
each ``blis/engine/<name>.py`` with the typed declarations of its ``.pxd`` (Cython pure-Python
mode). The extensions are optional: without a working C compiler the install still succeeds and
the interpreted modules are used (README, "Speed")."""

from Cython.Build import cythonize
from setuptools import Extension, setup

COMPILED = ("request", "engine.kv_cache", "engine.fast_path")  # = blis.COMPILED (not imported: a
# build runs before the package is installed)

extensions = cythonize([Extension(f"blis.{name}", [f"blis/{name.replace('.', '/')}.py"]) for name in COMPILED],
                       compiler_directives={"language_level": 3, "annotation_typing": False})
for ext in extensions:
    ext.optional = True  # set after cythonize, which does not carry it over

setup(ext_modules=extensions)
