"""The Personalize control plane: seeded resources, batch jobs, their lifecycle, tags.

`PersonalizeService.call(operation, params)` is the whole API: it validates the request against
botocore's service model, runs the operation and returns the response body, or raises
`ServiceError` carrying the exception name and message the service would send. Jobs run in
threads: each waits `job_seconds` in CREATE PENDING, then computes in CREATE IN_PROGRESS (at most
`workers` at once) and ends ACTIVE or CREATE FAILED.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from .._shapes import RequestInvalid, ServiceModel
from ._jobs import JobFailure, JobSpec, check_paths, run_job, split_s3
from ._model import Model
from ._recipes import RECIPES, Recipe
from ._settings import EmulatorSettings

TERMINAL = frozenset({"ACTIVE", "FAILED"})
_STATUS_TEXT = {
    "observed": {
        "PENDING": "CREATE PENDING",
        "IN_PROGRESS": "CREATE IN_PROGRESS",
        "ACTIVE": "ACTIVE",
        "FAILED": "CREATE FAILED",
    },
    "documented": {
        "PENDING": "PENDING",
        "IN_PROGRESS": "IN PROGRESS",
        "ACTIVE": "ACTIVE",
        "FAILED": "CREATE FAILED",
    },
}
_EXPLORATION_KEYS = frozenset({"explorationWeight", "explorationItemAgeCutOff"})

JobKind = Literal["inference", "segment"]


class ServiceError(Exception):
    """An error response: HTTP status, the exception's name (`__type`) and its message."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class SolutionVersion:
    recipe: Recipe
    dataset_group_arn: str
    solution_arn: str
    arn: str
    created: float


@dataclass(frozen=True, slots=True)
class FilterResource:
    name: str
    arn: str
    expression: str
    dataset_group_arn: str
    created: float


@dataclass(slots=True)
class Job:
    """One batch inference or batch segment job; mutated only under the service's lock."""

    kind: JobKind
    name: str
    arn: str
    request: dict[str, Any]
    spec: JobSpec
    created: float
    updated: float
    status: str = "PENDING"  # PENDING, IN_PROGRESS, ACTIVE, FAILED (spelled per settings on output)
    failure_reason: str | None = None
    records: int = 0
    history: list[tuple[float, str]] = field(default_factory=list)


class PersonalizeService:
    """The emulated control plane of one account and region."""

    def __init__(
        self,
        settings: EmulatorSettings,
        model: Model,
        s3: Callable[[], Any],
        account_id: str,
        role_exists: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.model = model
        self._s3 = s3
        self._role_exists = role_exists
        self._clock = clock
        self.account_id = account_id
        self._lock = threading.RLock()
        self._rng = random.Random(settings.seed)
        self._stop = threading.Event()
        self._compute = threading.BoundedSemaphore(settings.workers)
        self._threads: list[threading.Thread] = []
        self.shapes = ServiceModel("personalize")
        self.jobs: dict[str, Job] = {}  # by ARN
        self.tags: dict[str, list[dict[str, str]]] = {}
        self.max_in_flight = {"inference": 0, "segment": 0}
        self._seed()

    # -- resources ---------------------------------------------------------------------------------

    def _arn(self, resource: str) -> str:
        return f"arn:aws:personalize:{self.settings.region}:{self.account_id}:{resource}"

    def _seed(self) -> None:
        now = self._clock()
        self.dataset_group_arn = self._arn("dataset-group/fanout-emulator")
        self.solution_versions: dict[str, SolutionVersion] = {}
        self.recipes = {f"arn:aws:personalize:::recipe/{r.name}": r for r in RECIPES}
        for recipe in RECIPES:
            solution_arn = self._arn(f"solution/fanout-{recipe.key}")
            version = hashlib.sha256(recipe.key.encode()).hexdigest()[:8]
            arn = f"{solution_arn}/{version}"
            self.solution_versions[arn] = SolutionVersion(
                recipe, self.dataset_group_arn, solution_arn, arn, now
            )
        genre = FilterResource(
            "fanout-genre-filter",
            self._arn("filter/fanout-genre-filter"),
            "INCLUDE ItemID WHERE Items.GENRES IN ($GENRE)",
            self.dataset_group_arn,
            now,
        )
        self.filters = {genre.arn: genre}

    def solution_version_for(self, recipe_key: str) -> str:
        for arn, version in self.solution_versions.items():
            if version.recipe.key == recipe_key:
                return arn
        raise KeyError(recipe_key)

    # -- dispatch ---------------------------------------------------------------------------------

    def _known(self, operation: str) -> None:
        """Refuse an operation the service does not have."""
        if not self.shapes.has_operation(operation):
            raise ServiceError(
                "UnknownOperationException", f"Operation {operation} is not supported."
            )

    def _valid(self, operation: str, params: object) -> dict[str, Any]:
        """`params`, if the service would take them for `operation` (else its error)."""
        try:
            self.shapes.validate_input(operation, params)
        except RequestInvalid as exc:
            raise ServiceError(exc.code, exc.message) from None
        assert isinstance(params, dict)
        return params

    def call(self, operation: str, params: object) -> dict[str, Any]:
        self._known(operation)
        handler = getattr(self, f"_op_{operation}", None)
        if handler is None:
            raise ServiceError(
                "UnknownOperationException",
                f"Operation {operation} is not implemented by the fanout emulator.",
            )
        with self._lock:
            if self.settings.throttle_rate and self._rng.random() < self.settings.throttle_rate:
                raise ServiceError(
                    "LimitExceededException",
                    "The limit on the number of requests per second has been exceeded.",
                )
        result: dict[str, Any] = handler(self._valid(operation, params))
        return result

    def call_elsewhere(self, region: str, operation: str, params: object) -> dict[str, Any]:
        """A request signed for a region other than the emulator's: a region where nothing
        exists. Lists are empty; anything else names a resource that is not there."""
        self._known(operation)
        params = self._valid(operation, params)
        if operation.startswith("List"):
            return {name: [] for name in self.shapes.list_members(operation)}
        arns = [str(value) for key, value in params.items() if key.endswith("Arn")]
        named = arns[0] if arns else "the resource"
        raise ServiceError(
            "ResourceNotFoundException",
            f"Could not find {named} in {region}: this emulator serves {self.settings.region}.",
        )

    # -- batch jobs -------------------------------------------------------------------------------

    def _op_CreateBatchInferenceJob(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"batchInferenceJobArn": self._create_job("inference", params)}

    def _op_CreateBatchSegmentJob(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"batchSegmentJobArn": self._create_job("segment", params)}

    def _solution_version(self, arn: str) -> SolutionVersion:
        version = self.solution_versions.get(arn)
        if version is None:
            raise ServiceError(
                "ResourceNotFoundException", f"Could not find solution version with arn {arn}"
            )
        return version

    def _filter(self, arn: str) -> FilterResource:
        found = self.filters.get(arn)
        if found is None:
            raise ServiceError("ResourceNotFoundException", f"Could not find filter with arn {arn}")
        return found

    def _create_job(self, kind: JobKind, params: dict[str, Any]) -> str:
        settings = self.settings
        name = params["jobName"]
        resource = "batch-inference-job" if kind == "inference" else "batch-segment-job"
        arn = self._arn(f"{resource}/{name}")
        version = self._solution_version(params["solutionVersionArn"])
        recipe = version.recipe
        if kind == "inference" and not recipe.batch_inference:
            raise ServiceError(
                "InvalidInputException",
                f"Batch inference jobs are not supported for recipe {recipe.name}. Use a "
                "solution version of a recipe that supports batch recommendations.",
            )
        if kind == "segment" and not recipe.segment:
            raise ServiceError(
                "InvalidInputException",
                f"Batch segment jobs require a USER_SEGMENTATION recipe; {recipe.name} is "
                f"{recipe.recipe_type}.",
            )
        expression = None
        if "filterArn" in params:
            expression = self._filter(params["filterArn"]).expression

        default_n = settings.default_num_results
        num_results = params.get("numResults", default_n)
        if kind == "inference":
            low, high = settings.num_results_min, settings.num_results_max
        else:
            low, high = 1, 5_000_000
        if not low <= num_results <= high:
            raise ServiceError(
                "InvalidInputException",
                f"numResults must be between {low} and {high}; got {num_results}.",
            )

        theme_field = None
        if params.get("batchInferenceJobMode") == "THEME_GENERATION":
            if settings.region not in settings.theme_regions:
                raise ServiceError(
                    "InvalidInputException",
                    f"THEME_GENERATION is not available in {settings.region}; it is in "
                    f"{', '.join(settings.theme_regions)}.",
                )
            if not recipe.themes:
                raise ServiceError(
                    "InvalidInputException",
                    f"THEME_GENERATION mode requires a solution version of the Similar-Items "
                    f"recipe; {recipe.name} does not support themes.",
                )
            config = params.get("themeGenerationConfig")
            if config is None:
                raise ServiceError(
                    "InvalidInputException",
                    "themeGenerationConfig with fieldsForThemeGeneration.itemName is required "
                    "in THEME_GENERATION mode.",
                )
            theme_field = config["fieldsForThemeGeneration"]["itemName"]
            if theme_field.upper() not in self.model.catalog.item_attributes:
                raise ServiceError(
                    "InvalidInputException",
                    f"The item name field {theme_field} is not in the items dataset. Use one "
                    f"of {', '.join(sorted(self.model.catalog.item_attributes))}.",
                )
            theme_field = theme_field.upper()
        elif "themeGenerationConfig" in params:
            raise ServiceError(
                "InvalidInputException",
                "themeGenerationConfig is only valid with batchInferenceJobMode THEME_GENERATION.",
            )
        self._check_job_config(params.get("batchInferenceJobConfig"))

        tags = params.get("tags", [])
        if len(tags) > settings.max_tags:
            raise ServiceError(
                "TooManyTagsException",
                f"You have exceeded the maximum number of tags ({settings.max_tags}) for this "
                "resource.",
            )
        keys = [tag["tagKey"] for tag in tags]
        if len(set(keys)) < len(keys):
            raise ServiceError("InvalidInputException", "Duplicate tag keys are not allowed.")
        role = params["roleArn"]
        if role.split(":")[4] != self.account_id:
            raise ServiceError(
                "InvalidInputException",
                f"Amazon Personalize cannot assume the role {role}: it is not in this account "
                f"({self.account_id}).",
            )
        if not self._role_exists(role):
            raise ServiceError(
                "InvalidInputException",
                f"Amazon Personalize cannot assume the role {role}: it does not exist. Create it "
                "with a trust policy for personalize.amazonaws.com.",
            )

        source = params["jobInput"]["s3DataSource"]
        destination = params["jobOutput"]["s3DataDestination"]
        spec = JobSpec(
            name=name,
            recipe=recipe,
            input_path=source["path"],
            input_kms_key=source.get("kmsKeyArn"),
            output_path=destination["path"],
            output_kms_key=destination.get("kmsKeyArn"),
            num_results=num_results,
            filter_expression=expression,
            theme_name_field=theme_field,
        )
        if settings.s3_errors_at_create:
            try:
                check_paths(spec.input_path, spec.output_path)
                split_s3(spec.input_path, "input")
            except JobFailure as exc:
                raise ServiceError("InvalidInputException", exc.reason) from None

        with self._lock:
            if arn in self.jobs:
                noun = "Batch inference job" if kind == "inference" else "Batch segment job"
                raise ServiceError(
                    "ResourceAlreadyExistsException", f"{noun} with name {name} already exists."
                )
            quota = settings.quota if kind == "inference" else settings.segment_quota
            if self._in_flight(kind) >= quota:
                raise ServiceError(
                    "LimitExceededException",
                    f"More than {quota} resources with PENDING or IN_PROGRESS status.",
                )
            now = self._clock()
            request = {k: v for k, v in params.items() if k != "tags"}
            request["numResults"] = num_results
            job = Job(kind, name, arn, request, spec, now, now, history=[(now, "PENDING")])
            self.jobs[arn] = job
            self.tags[arn] = list(tags)
            self.max_in_flight[kind] = max(self.max_in_flight[kind], self._in_flight(kind))
            fail = settings.fail_rate > 0 and self._rng.random() < settings.fail_rate
            thread = threading.Thread(
                target=self._run, args=(job, fail), name=f"fanout-job-{name}", daemon=True
            )
            self._threads.append(thread)
        thread.start()
        return arn

    @staticmethod
    def _check_job_config(config: Mapping[str, Any] | None) -> None:
        if not config:
            return
        exploration = config.get("itemExplorationConfig") or {}
        unknown = set(exploration) - _EXPLORATION_KEYS
        if unknown:
            raise ServiceError(
                "InvalidInputException",
                f"Unknown itemExplorationConfig keys {sorted(unknown)}; allowed: "
                f"{sorted(_EXPLORATION_KEYS)}.",
            )
        for key, low, high in (
            ("explorationWeight", 0.0, 1.0),
            ("explorationItemAgeCutOff", 0.0, float("inf")),
        ):
            if key in exploration:
                try:
                    value = float(exploration[key])
                except ValueError:
                    value = float("nan")
                if not low <= value <= high:
                    raise ServiceError(
                        "InvalidInputException",
                        f"itemExplorationConfig.{key} must be a number in [{low}, {high}]; got "
                        f"{exploration[key]!r}.",
                    )

    def _in_flight(self, kind: JobKind) -> int:
        return sum(1 for j in self.jobs.values() if j.kind == kind and j.status not in TERMINAL)

    def _set_status(self, job: Job, status: str, reason: str | None = None) -> None:
        with self._lock:
            now = self._clock()
            job.status = status
            job.failure_reason = reason
            job.updated = now
            job.history.append((now, status))

    def _run(self, job: Job, fail: bool) -> None:
        settings = self.settings
        if self._stop.wait(settings.job_seconds):
            return
        self._set_status(job, "IN_PROGRESS")
        started = time.monotonic()
        try:
            if fail:
                raise JobFailure(
                    "Internal server error. Please try again. (Injected by the fanout "
                    "emulator's --fail-rate.)"
                )
            with self._compute:
                if self._stop.is_set():
                    return
                job.records = run_job(job.spec, self._s3(), self.model, settings)
        except JobFailure as exc:
            self._set_status(job, "FAILED", exc.reason)
            return
        except Exception as exc:  # an emulator bug must not leave a job running forever
            self._set_status(job, "FAILED", f"Internal error in the fanout emulator: {exc!r}")
            return
        cost = settings.job_seconds + job.records / 1e6 * settings.seconds_per_million_records
        remaining = cost - (time.monotonic() - started)
        if remaining > 0 and self._stop.wait(remaining):
            return
        self._set_status(job, "ACTIVE")

    def stop(self) -> None:
        """Stop the job threads (jobs in flight stay in their current status)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    # -- describing and listing -------------------------------------------------------------------

    def status_text(self, status: str) -> str:
        return _STATUS_TEXT[self.settings.status_spelling][status]

    def _job(self, kind: JobKind, arn: str) -> Job:
        with self._lock:
            job = self.jobs.get(arn)
        if job is None or job.kind != kind:
            noun = "batch inference job" if kind == "inference" else "batch segment job"
            raise ServiceError("ResourceNotFoundException", f"Could not find {noun} with arn {arn}")
        return job

    def _describe(self, job: Job) -> dict[str, Any]:
        with self._lock:
            body: dict[str, Any] = {
                "jobName": job.name,
                ("batchInferenceJobArn" if job.kind == "inference" else "batchSegmentJobArn"): (
                    job.arn
                ),
                **job.request,
                "status": self.status_text(job.status),
                "creationDateTime": job.created,
                "lastUpdatedDateTime": job.updated,
            }
            if job.kind == "inference":
                body.setdefault("batchInferenceJobMode", "BATCH_INFERENCE")
            if job.failure_reason:
                body["failureReason"] = job.failure_reason
        return body

    def _summary(self, job: Job) -> dict[str, Any]:
        body: dict[str, Any] = {
            ("batchInferenceJobArn" if job.kind == "inference" else "batchSegmentJobArn"): job.arn,
            "jobName": job.name,
            "status": self.status_text(job.status),
            "creationDateTime": job.created,
            "lastUpdatedDateTime": job.updated,
            "solutionVersionArn": job.request["solutionVersionArn"],
        }
        if job.kind == "inference":
            body["batchInferenceJobMode"] = job.request.get(
                "batchInferenceJobMode", "BATCH_INFERENCE"
            )
        if job.failure_reason:
            body["failureReason"] = job.failure_reason
        return body

    def _op_DescribeBatchInferenceJob(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "batchInferenceJob": self._describe(
                self._job("inference", params["batchInferenceJobArn"])
            )
        }

    def _op_DescribeBatchSegmentJob(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "batchSegmentJob": self._describe(self._job("segment", params["batchSegmentJobArn"]))
        }

    def _list_jobs(self, kind: JobKind, params: dict[str, Any], key: str) -> dict[str, Any]:
        version = params.get("solutionVersionArn")
        with self._lock:
            jobs = [
                j
                for j in self.jobs.values()
                if j.kind == kind
                and (version is None or j.request["solutionVersionArn"] == version)
            ]
            newest_first = self.settings.list_order == "newest-first"
            jobs.sort(key=lambda j: (j.created, j.name), reverse=newest_first)
            summaries = [self._summary(j) for j in jobs]
        return self._page(summaries, params, key, f"{kind}:{version}")

    def _page(
        self, items: list[dict[str, Any]], params: dict[str, Any], key: str, scope: str
    ) -> dict[str, Any]:
        """One page of a list operation, with an opaque nextToken bound to the query."""
        start = 0
        token = params.get("nextToken")
        if token is not None:
            try:
                decoded = orjson.loads(base64.urlsafe_b64decode(token.encode()))
                if decoded["s"] != scope:
                    raise ValueError("token for another query")
                start = int(decoded["o"])
                if start < 0:
                    raise ValueError("a negative offset")
            except Exception:
                raise ServiceError("InvalidNextTokenException", "The token is not valid.") from None
        limit = params.get("maxResults", 100)
        page = items[start : start + limit]
        body: dict[str, Any] = {key: page}
        if start + limit < len(items):
            raw = orjson.dumps({"s": scope, "o": start + limit})
            body["nextToken"] = base64.urlsafe_b64encode(raw).decode()
        return body

    def _op_ListBatchInferenceJobs(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._list_jobs("inference", params, "batchInferenceJobs")

    def _op_ListBatchSegmentJobs(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._list_jobs("segment", params, "batchSegmentJobs")

    # -- solutions, recipes, filters --------------------------------------------------------------

    def _op_DescribeSolutionVersion(self, params: dict[str, Any]) -> dict[str, Any]:
        version = self._solution_version(params["solutionVersionArn"])
        return {
            "solutionVersion": {
                "name": version.solution_arn.rsplit("/", 1)[-1],
                "solutionVersionArn": version.arn,
                "solutionArn": version.solution_arn,
                "performHPO": False,
                "recipeArn": f"arn:aws:personalize:::recipe/{version.recipe.name}",
                "datasetGroupArn": version.dataset_group_arn,
                "trainingMode": "FULL",
                "trainingType": "MANUAL",
                "trainingHours": 0.5,
                "status": "ACTIVE",
                "creationDateTime": version.created,
                "lastUpdatedDateTime": version.created,
            }
        }

    def _op_DescribeSolution(self, params: dict[str, Any]) -> dict[str, Any]:
        arn = params["solutionArn"]
        for version in self.solution_versions.values():
            if version.solution_arn == arn:
                return {
                    "solution": {
                        "name": arn.rsplit("/", 1)[-1],
                        "solutionArn": arn,
                        "performHPO": False,
                        "performAutoML": False,
                        "performAutoTraining": False,
                        "recipeArn": f"arn:aws:personalize:::recipe/{version.recipe.name}",
                        "datasetGroupArn": version.dataset_group_arn,
                        "status": "ACTIVE",
                        "creationDateTime": version.created,
                        "lastUpdatedDateTime": version.created,
                        "latestSolutionVersion": {
                            "solutionVersionArn": version.arn,
                            "status": "ACTIVE",
                            "trainingMode": "FULL",
                            "trainingType": "MANUAL",
                            "creationDateTime": version.created,
                            "lastUpdatedDateTime": version.created,
                        },
                    }
                }
        raise ServiceError("ResourceNotFoundException", f"Could not find solution with arn {arn}")

    def _op_ListSolutionVersions(self, params: dict[str, Any]) -> dict[str, Any]:
        solution = params.get("solutionArn")
        if solution is not None and not any(
            v.solution_arn == solution for v in self.solution_versions.values()
        ):
            raise ServiceError(
                "ResourceNotFoundException", f"Could not find solution with arn {solution}"
            )
        summaries = [
            {
                "solutionVersionArn": v.arn,
                "status": "ACTIVE",
                "trainingMode": "FULL",
                "trainingType": "MANUAL",
                "creationDateTime": v.created,
                "lastUpdatedDateTime": v.created,
            }
            for v in self.solution_versions.values()
            if solution is None or v.solution_arn == solution
        ]
        return self._page(summaries, params, "solutionVersions", f"versions:{solution}")

    def _op_DescribeRecipe(self, params: dict[str, Any]) -> dict[str, Any]:
        arn = params["recipeArn"]
        recipe = self.recipes.get(arn)
        if recipe is None:
            raise ServiceError("ResourceNotFoundException", f"Could not find recipe with arn {arn}")
        created = min(v.created for v in self.solution_versions.values())
        return {
            "recipe": {
                "name": recipe.name,
                "recipeArn": arn,
                "algorithmArn": f"arn:aws:personalize:::algorithm/{recipe.name}",
                "status": "ACTIVE",
                "description": recipe.description,
                "creationDateTime": created,
                "recipeType": recipe.recipe_type,
                "lastUpdatedDateTime": created,
            }
        }

    def _op_DescribeFilter(self, params: dict[str, Any]) -> dict[str, Any]:
        found = self._filter(params["filterArn"])
        return {
            "filter": {
                "name": found.name,
                "filterArn": found.arn,
                "creationDateTime": found.created,
                "lastUpdatedDateTime": found.created,
                "datasetGroupArn": found.dataset_group_arn,
                "filterExpression": found.expression,
                "status": "ACTIVE",
            }
        }

    # -- tags -------------------------------------------------------------------------------------

    def _tagged(self, arn: str) -> list[dict[str, str]]:
        with self._lock:
            if arn in self.tags:
                return self.tags[arn]
            if (
                arn in self.solution_versions
                or arn in self.filters
                or any(v.solution_arn == arn for v in self.solution_versions.values())
            ):
                return self.tags.setdefault(arn, [])
        raise ServiceError("ResourceNotFoundException", f"Could not find resource with arn {arn}")

    def _op_ListTagsForResource(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"tags": list(self._tagged(params["resourceArn"]))}

    def _op_TagResource(self, params: dict[str, Any]) -> dict[str, Any]:
        tags = self._tagged(params["resourceArn"])
        with self._lock:
            merged = {t["tagKey"]: t for t in tags}
            merged.update({t["tagKey"]: t for t in params["tags"]})
            if len(merged) > self.settings.max_tags:
                raise ServiceError(
                    "TooManyTagsException",
                    f"You have exceeded the maximum number of tags ({self.settings.max_tags}) "
                    "for this resource.",
                )
            tags[:] = list(merged.values())
        return {}

    def _op_UntagResource(self, params: dict[str, Any]) -> dict[str, Any]:
        tags = self._tagged(params["resourceArn"])
        with self._lock:
            drop = set(params["tagKeys"])
            tags[:] = [t for t in tags if t["tagKey"] not in drop]
        return {}

    # -- test and benchmark support ---------------------------------------------------------------

    def job_history(self) -> list[tuple[str, list[tuple[float, str]]]]:
        """(ARN, [(time, status), …]) for every job, oldest first: server-side checks."""
        with self._lock:
            return [
                (j.arn, list(j.history))
                for j in sorted(self.jobs.values(), key=lambda j: j.created)
            ]
