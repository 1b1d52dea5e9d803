"""Builds the compiled KV cache: ``blis/engine/kv_cache.py`` with the typed declarations of
``kv_cache.pxd`` (Cython pure-Python mode). The extension is optional: without a working C
compiler the install still succeeds and the interpreted module is used (README, "Speed")."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = cythonize([Extension("blis.engine.kv_cache", ["blis/engine/kv_cache.py"])],
                       compiler_directives={"language_level": 3, "annotation_typing": False})
for ext in extensions:
    ext.optional = True  # set after cythonize, which does not carry it over

setup(ext_modules=extensions)
