"""The C extension; everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fanout._native",
            ["src/fanout/_native.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall"],
        )
    ]
)
