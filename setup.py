"""Extension list and the one switchboard for Cython compiler directives.

Environment switches:
- ``OFI_FAST_DEBUG=1``: bounds, wraparound and initialisation checks on (used by one CI step).
- ``OFI_FAST_ANNOTATE=1``: write ``cython -a`` HTML next to each .pyx (check inner loops are white).
"""
import os
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("OFI_FAST_DEBUG", "") not in ("", "0")
ANNOTATE = os.environ.get("OFI_FAST_ANNOTATE", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    "infer_types": False,
}

# _simulate draws from numpy's bit generators through numpy's own distribution functions,
# the static library numpy ships for this (numpy/random/lib/libnpyrandom.a, "Extending via
# Cython" in numpy's docs); it needs libm only (part of the C runtime on Windows). On Linux
# its symbols stay private to _simulate (--exclude-libs: GNU ld), so the module exports only
# its PyInit and cannot clash with another extension's copy of numpy's random functions.
LINK = {
    "_simulate": dict(
        library_dirs=[str(Path(np.get_include()).parent.parent / "random" / "lib")],
        libraries=["npyrandom"] + (["m"] if os.name == "posix" else []),
        extra_link_args=(["-Wl,--exclude-libs,libnpyrandom.a"]
                         if sys.platform.startswith("linux") else []),
    ),
}

# Every ofi_fast/_*.pyx is one extension module of its own (one module per concern).
extensions = [
    Extension(
        f"ofi_fast.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"] if not DEBUG else ["-O0", "-g"],
        **LINK.get(pyx.stem, {}),
    )
    for pyx in sorted(Path("ofi_fast").glob("_*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=ANNOTATE,
        force=DEBUG,
    ),
)
