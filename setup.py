"""Builds the Cython engine from _ext/*.pyx (cythonized here, at build time; no
generated C is committed). TORPOR_PUREPYTHON=1 at build time skips the extension."""

import os
import sys

from setuptools import Extension, setup

ext_modules = []
if not os.environ.get("TORPOR_PUREPYTHON"):
    from Cython.Build import cythonize

    if sys.platform == "win32":
        args = ["/O2"]
    else:
        args = ["-O3"]
    ext_modules = cythonize(
        [
            Extension("torpor._walker", ["_ext/_walker.pyx"], extra_compile_args=args),
            Extension("torpor._filters", ["_ext/_filters.pyx"], extra_compile_args=args),
        ],
        compiler_directives={"language_level": "3"},
        annotate=bool(os.environ.get("TORPOR_ANNOTATE")),
    )

setup(ext_modules=ext_modules)
