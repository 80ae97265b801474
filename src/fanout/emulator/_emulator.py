"""The emulator as one object: S3/KMS and Personalize endpoints, seeded, started and stopped."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from ._http import PersonalizeServer
from ._model import Model, load_catalog, synthetic_catalog
from ._personalize import PersonalizeService
from ._recipes import RECIPES
from ._s3 import CREDENTIALS, S3Server
from ._settings import DEFAULT_ACCOUNT_ID, EmulatorSettings


@dataclass(frozen=True, slots=True)
class EmulatorInfo:
    """Where the running emulator is and what it seeded (the `--info-file` JSON)."""

    region: str
    account_id: str
    s3_endpoint: str
    personalize_endpoint: str
    bucket: str
    kms_key_arn: str
    role_arn: str
    solution_versions: dict[str, str]
    filters: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def environment(self) -> dict[str, str]:
        """The variables that point any AWS SDK or the AWS CLI at the emulator."""
        return {
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            "AWS_ENDPOINT_URL_KMS": self.s3_endpoint,
            "AWS_ENDPOINT_URL_IAM": self.s3_endpoint,
            "AWS_ENDPOINT_URL_STS": self.s3_endpoint,
            "AWS_ENDPOINT_URL_PERSONALIZE": self.personalize_endpoint,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def seed_variables(self) -> dict[str, str]:
        """Shell variables naming the seeded resources, e.g. FANOUT_EMULATOR_SIMS_ARN."""
        names = {
            "FANOUT_EMULATOR_BUCKET": self.bucket,
            "FANOUT_EMULATOR_KMS_KEY_ARN": self.kms_key_arn,
            "FANOUT_EMULATOR_ROLE_ARN": self.role_arn,
        }
        for key, arn in {**self.solution_versions, **self.filters}.items():
            name = key.removeprefix("fanout-").upper().replace("-", "_")
            names[f"FANOUT_EMULATOR_{name}_ARN"] = arn
        return names


class Emulator:
    """A running local Personalize batch API with S3 and KMS. Use as a context manager.

    >>> with Emulator(EmulatorSettings(job_seconds=0.1)) as emulator:
    ...     emulator.info.personalize_endpoint  # doctest: +SKIP
    """

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self._s3: S3Server | None = None
        self._personalize: PersonalizeServer | None = None
        self._service: PersonalizeService | None = None
        self._info: EmulatorInfo | None = None
        self.training_seconds = 0.0

    @property
    def info(self) -> EmulatorInfo:
        if self._info is None:
            raise RuntimeError("the emulator is not running: call start() first")
        return self._info

    @property
    def service(self) -> PersonalizeService:
        """The Personalize state, for checks from the server side in tests and benchmarks."""
        if self._service is None:
            raise RuntimeError("the emulator is not running: call start() first")
        return self._service

    def start(self) -> EmulatorInfo:
        if self._info is not None:
            raise RuntimeError("the emulator is already running")
        settings = self.settings
        started = time.perf_counter()
        if settings.interactions is not None:
            catalog = load_catalog(settings.interactions, settings.items)
        else:
            catalog = synthetic_catalog(
                seed=settings.seed, users=settings.synthetic_users, items=settings.synthetic_items
            )
        model = Model(catalog, seed=settings.seed)
        self.training_seconds = time.perf_counter() - started

        s3 = S3Server(settings)
        s3.start()
        self._s3 = s3
        try:
            key_arn, role_arn = s3.seed()
            service = PersonalizeService(
                settings,
                model,
                lambda: s3.client("s3"),
                DEFAULT_ACCOUNT_ID,
                role_exists=s3.role_exists,
            )
            personalize = PersonalizeServer(service, settings.host, settings.personalize_port)
            personalize.start()
        except BaseException:
            s3.stop()
            self._s3 = None
            raise
        self._service = service
        self._personalize = personalize
        self._info = EmulatorInfo(
            region=settings.region,
            account_id=DEFAULT_ACCOUNT_ID,
            s3_endpoint=s3.endpoint,
            personalize_endpoint=personalize.endpoint,
            bucket=settings.bucket,
            kms_key_arn=key_arn,
            role_arn=role_arn,
            solution_versions={r.key: service.solution_version_for(r.key) for r in RECIPES},
            filters={f.name: f.arn for f in service.filters.values()},
        )
        return self._info

    def stop(self) -> None:
        """Stop both endpoints and the job threads. Idempotent."""
        if self._personalize is not None:
            self._personalize.stop()
            self._personalize = None
        if self._service is not None:
            self._service.stop()
        if self._s3 is not None:
            self._s3.stop()
            self._s3 = None
        self._info = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
