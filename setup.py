"""The C extensions; everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

ARGS = ["-O3", "-std=c11", "-Wall"]

setup(
    ext_modules=[
        Extension("fanout._native", ["src/fanout/_native.c"], extra_compile_args=ARGS),
        Extension("fanout._mergenative", ["src/fanout/_mergenative.c"], extra_compile_args=ARGS),
    ]
)
