"""A local emulator of the Amazon Personalize batch API, with S3 and KMS (moto) beside it.

The client package never imports this one: tests and the demo reach it over HTTP exactly as they
would reach AWS. Install it with the `emulator` extra (moto, numpy, regex).
"""

from __future__ import annotations

from ._emulator import Emulator, EmulatorInfo
from ._settings import EmulatorSettings

__all__ = ["Emulator", "EmulatorInfo", "EmulatorSettings"]
