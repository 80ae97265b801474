"""The C extensions; everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

ARGS = ["-O3", "-std=c11", "-Wall"]
SHARED = ["src/fanout/_cbuffers.h"]  # included by both: a change to it rebuilds them

setup(
    ext_modules=[
        Extension(
            "fanout._native", ["src/fanout/_native.c"], depends=SHARED, extra_compile_args=ARGS
        ),
        Extension(
            "fanout._mergenative",
            ["src/fanout/_mergenative.c"],
            depends=SHARED,
            extra_compile_args=ARGS,
        ),
    ]
)
