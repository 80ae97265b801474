"""fanout: Amazon Personalize batch recommendations for millions of users in one command."""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """`fanout.__version__`, looked up only when asked for (it costs ~60 ms at start-up)."""
    if name != "__version__":
        raise AttributeError(f"module 'fanout' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("fanout")
    except PackageNotFoundError:  # pragma: no cover - a source tree without install
        found = "0.0.0"
    globals()["__version__"] = found
    return found
