# The Extension list only; everything else is in pyproject.toml.
import glob
import os
import sys

from setuptools import Extension, setup

# Released binaries carry no debug information and (Linux) no symbol table beyond the
# dynamic one: 0.5 MB instead of 2.8.  SLUICEGATE_DEBUG=1 keeps them (profiling, gdb).
debug = os.environ.get("SLUICEGATE_DEBUG") == "1"
strip_compile = [] if debug else ["-g0"]
strip_link = [] if debug or not sys.platform.startswith("linux") else ["-Wl,--strip-all"]

setup(
    ext_modules=[
        Extension(
            "sluicegate._core",
            sources=["src/sluicegate/_core.pyx", *sorted(glob.glob("csrc/*.c"))],
            include_dirs=["csrc"],
            depends=sorted(glob.glob("csrc/*.h")),  # a header change rebuilds everything
            extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-function", *strip_compile],
            extra_link_args=strip_link,
        )
    ],
)
