# The Extension list only; everything else is in pyproject.toml.
import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sluicegate._core",
            sources=["src/sluicegate/_core.pyx", *sorted(glob.glob("csrc/*.c"))],
            include_dirs=["csrc"],
            depends=sorted(glob.glob("csrc/*.h")),  # a header change rebuilds everything
            extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-unused-function"],
        )
    ],
)
