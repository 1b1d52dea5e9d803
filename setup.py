"""Builds the compiled KV cache: ``blis/engine/kv_cache.py`` with the typed declarations of
``kv_cache.pxd`` (Cython pure-Python mode). The extension is optional: without a C compiler the
install still succeeds and the interpreted module is used (README, "Speed")."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize(
    [Extension("blis.engine.kv_cache", ["blis/engine/kv_cache.py"], optional=True)],
    compiler_directives={"language_level": 3, "annotation_typing": False}))
