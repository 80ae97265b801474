"""Fixtures shared by the whole suite: no real AWS, and one emulator per session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fanout.emulator import Emulator, EmulatorInfo, EmulatorSettings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow cases run only with FANOUT_SLOW=1 (they are not part of CI)."""
    if os.environ.get("FANOUT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set FANOUT_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test can reach a real account: AWS variables are cleared, config files point nowhere."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path_factory.getbasetemp() / "no-aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """One in-process emulator for the session, with short job states."""
    with Emulator(EmulatorSettings(job_seconds=0.05, seed=7)) as running:
        yield running


class Clients:
    """aioboto3 clients for one emulator: `async with Clients(info) as (s3, personalize): ...`."""

    def __init__(self, info: EmulatorInfo, **config: Any) -> None:
        import aioboto3
        from botocore.config import Config

        self._info = info
        self._session = aioboto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info.region
        )
        self._config = Config(**config) if config else None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> tuple[Any, Any]:
        s3 = await self._stack.enter_async_context(
            self._session.client("s3", endpoint_url=self._info.s3_endpoint, config=self._config)
        )
        personalize = await self._stack.enter_async_context(
            self._session.client(
                "personalize", endpoint_url=self._info.personalize_endpoint, config=self._config
            )
        )
        return s3, personalize

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


@pytest.fixture
def clients(emulator: Emulator) -> Callable[..., Clients]:
    """aioboto3 clients: `clients()` for the session emulator, `clients(info)` for another."""

    def make(info: EmulatorInfo | None = None, **config: Any) -> Clients:
        return Clients(info or emulator.info, **config)

    return make
