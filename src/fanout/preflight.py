"""Checks before anything is uploaded or any job is created (`fanout run`, `--dry-run`).

Each failure is a `ConfigError` that says what is wrong and what to do. The checks: the solution
version exists, is ACTIVE and its recipe can serve batch jobs of this input kind; THEME_GENERATION
only with Similar-Items and an itemName field; the filter exists and is ACTIVE; the role exists
(when IAM lets the caller look); the buckets are
reachable in the region; the KMS keys can make data keys; the output is not under the input;
numResults in 1..500. And, without asking the account (`check_request`), the form of the job
requests that will be sent, as the service validates it (its model's enums, patterns, lengths
and sizes), with the longest job name and shard paths the run can make.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import S3DataConfig
from .errors import ConfigError
from .records import InputKind, JobType, input_kind_for_recipe
from .storage import S3Uri

if TYPE_CHECKING:
    from .aws import Aws, SolutionVersionInfo

MAX_NUM_RESULTS = 500  # not published for batch jobs (reference §7): the real-time maximum
THEME_RECIPE = "aws-similar-items"


MAX_SEGMENT_USERS = 5_000_000  # users per segment (reference §3)
THEME_REGIONS = ("us-east-1", "us-west-2", "ap-northeast-1")  # reference §3
MAX_TAGS = 50  # per resource (reference §3): TooManyTagsException past it
LAST_SHARD = 99_999  # the longest shard folder name, shard-99999/, for the request check
# itemExplorationConfig's keys (User-Personalization, reference §4) and their values' bounds
EXPLORATION = {"explorationWeight": (0.0, 1.0), "explorationItemAgeCutOff": (0.0, float("inf"))}


def check_request(request: dict[str, Any], run_id: str, name: str, job_type: JobType) -> None:
    """Refuse, before anything is uploaded, job requests the service would refuse for their
    form: `request` as every job of run `run_id` will send it, with the longest job name
    (`name`) and the longest shard paths, checked against the service's model (enums such as
    batchInferenceJobMode, patterns, lengths), and what the model cannot say: at most 50 tags,
    themeGenerationConfig only with THEME_GENERATION, each tag key once."""
    from ._shapes import RequestInvalid, ServiceModel
    from .shard import shard_dir

    operation = "CreateBatchSegmentJob" if job_type == "segment" else "CreateBatchInferenceJob"
    probe = dict(request, jobName=name)
    for option, outer, inner in [
        ("--job-input", "jobInput", "s3DataSource"),
        ("--job-output", "jobOutput", "s3DataDestination"),
    ]:
        config = dict(request[outer][inner])
        where = S3Uri.parse(str(config.get("path", "")), what=f"{option} path").as_prefix()
        config["path"] = str(where.child(f"{run_id}/{shard_dir(LAST_SHARD)}"))
        probe[outer] = {inner: config}
    try:
        ServiceModel("personalize").validate_input(operation, probe)
    except RequestInvalid as exc:
        derived = ""
        if ".path'" in exc.message or "'jobName'" in exc.message:
            derived = (
                f" (each job's paths are the given ones plus {run_id}/{shard_dir(LAST_SHARD)}, "
                f"its name like {name})"
            )
        raise ConfigError(
            f"the service would refuse these jobs: {exc.message}{derived}: fix that option"
        ) from None
    _check_exploration(request)
    if request.get("themeGenerationConfig") and (
        request.get("batchInferenceJobMode") != "THEME_GENERATION"
    ):
        raise ConfigError(
            "--theme-generation-config is only for --batch-inference-job-mode THEME_GENERATION: "
            "give that mode too, or leave the config out"
        )
    tags = request.get("tags") or []
    if len(tags) > MAX_TAGS:
        raise ConfigError(f"--tags gives {len(tags)} tags; a job takes at most {MAX_TAGS}")
    keys = [tag.get("tagKey") for tag in tags if isinstance(tag, dict)]
    repeated = sorted({key for key in keys if keys.count(key) > 1}, key=str)
    if repeated:
        raise ConfigError(f"--tags gives the key {repeated[0]!r} twice: give each key once")


def _check_exploration(request: dict[str, Any]) -> None:
    """itemExplorationConfig's keys and values, which the model leaves a free map of strings:
    a misspelt key is refused by name, with the one meant (the emulator refuses it as the
    service is taken to; a service that ignored it would run without the exploration asked)."""
    config = request.get("batchInferenceJobConfig") or {}
    exploration = config.get("itemExplorationConfig") or {} if isinstance(config, dict) else {}
    for key, value in exploration.items():
        bounds = EXPLORATION.get(key)
        if bounds is None:
            import difflib

            close = difflib.get_close_matches(str(key), list(EXPLORATION), n=1)
            meant = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"--batch-inference-job-config: itemExplorationConfig has no key {key!r}{meant}; "
                f"its keys are {' and '.join(EXPLORATION)}"
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        low, high = bounds
        if not low <= number <= high:
            span = f"from {low:g} to {high:g}" if high < float("inf") else f"of at least {low:g}"
            raise ConfigError(
                f"--batch-inference-job-config: itemExplorationConfig {key}={value!r} must be a "
                f"number {span}"
            )


def check_recipe(
    info: SolutionVersionInfo,
    kind: InputKind | None,
    mode: str | None = None,
    job_type: JobType = "inference",
) -> InputKind:
    """The input kind the solution version's recipe takes, checked against the job type,
    `--input-kind` (`kind`, if given) and `--batch-inference-job-mode` (`mode`)."""
    arn = info.arn
    recipe_kind = input_kind_for_recipe(info.recipe_arn, info.recipe_type)
    if recipe_kind is None:
        raise ConfigError(
            f"recipe {info.recipe_arn} of {arn} cannot serve batch jobs (Trending-Now and "
            "Next-Best-Action are not supported): use another solution version"
        )
    segmentation = info.recipe_type == "USER_SEGMENTATION"
    if job_type == "segment" and not segmentation:
        raise ConfigError(
            f"batch segment jobs need an Item-Affinity or Item-Attribute-Affinity solution "
            f"version; {arn} uses {info.recipe_arn}: use `fanout run` for it"
        )
    if job_type == "inference" and segmentation:
        raise ConfigError(
            f"{arn} uses {info.recipe_arn}, a user-segmentation recipe: batch inference jobs "
            "cannot use it; `fanout segment` runs batch segment jobs"
        )
    if kind is not None and kind is not recipe_kind and job_type == "segment":
        given, needed = (
            ("--items", "--item-attributes (queries)")
            if kind is InputKind.ITEM
            else ("--item-attributes", "--items (item IDs)")
        )
        raise ConfigError(
            f"{given} does not fit recipe {info.recipe_arn}: it takes {needed}; give that, or "
            "use another solution version"
        )
    if kind is not None and kind is not recipe_kind:
        raise ConfigError(
            f"--input-kind {kind.value} does not fit recipe {info.recipe_arn}, which takes "
            f"{recipe_kind.value} lines: leave --input-kind out, or use another solution version"
        )
    if mode == "THEME_GENERATION" and not info.recipe_arn.endswith("/" + THEME_RECIPE):
        raise ConfigError(
            "THEME_GENERATION needs a Similar-Items solution version "
            f"(recipe {THEME_RECIPE}); {arn} uses {info.recipe_arn}"
        )
    region = arn.split(":")[3] if arn.count(":") >= 5 else ""
    if mode == "THEME_GENERATION" and region and region not in THEME_REGIONS:
        raise ConfigError(
            f"THEME_GENERATION runs only in {', '.join(THEME_REGIONS)}; solution version {arn} "
            f"is in {region}"
        )
    return recipe_kind


def placeholders_of(expression: str) -> tuple[str, ...]:
    """The placeholder names (without `$`) of a filter expression, sorted, each once."""
    return tuple(sorted(set(re.findall(r"\$([A-Za-z0-9_]+)", expression))))


@dataclass(frozen=True, slots=True)
class Checked:
    """What preflight found that the run goes on with."""

    kind: InputKind  # the input kind the recipe takes
    placeholders: tuple[str, ...]  # the filter's placeholder names; () without a filter


def check_filter_values(
    arn: str | None, expression: str, values: Collection[str], per_line: bool
) -> None:
    """The run's `--filter-values` names (`values`) against the filter's placeholders: each
    must be one of them (case-sensitive), there must be a filter to take them, and every
    placeholder of an INCLUDE clause needs a value, unless the input's lines may carry their
    own (`per_line`: JSON lines). Otherwise the jobs run and answer every line with an error,
    or the values are silently ignored."""
    if arn is None:
        if values:
            raise ConfigError(
                f"--filter-values {sorted(values)[0]}=…: there is no --filter-arn, so the jobs "
                "would ignore the values: give the filter's ARN, or leave the values out"
            )
        return
    clauses = [clause.strip() for clause in expression.split("|")]
    found = [set(placeholders_of(clause)) for clause in clauses]
    placeholders = set().union(*found)
    for name in sorted(values):
        if name not in placeholders:
            have = ", ".join(f"${p}" for p in sorted(placeholders)) or "no placeholder"
            raise ConfigError(
                f"--filter-values {name}=…: filter {arn} has no ${name} placeholder (it has "
                f"{have}; names are case-sensitive)"
            )
    if per_line:
        return
    for clause, names in zip(clauses, found, strict=True):
        needed = sorted(names - set(values)) if clause.upper().startswith("INCLUDE") else []
        if needed:
            raise ConfigError(
                f"filter {arn} includes by ${needed[0]}, which needs a value on every line: "
                f"give --filter-values {needed[0]}=V1,V2 (an INCLUDE clause's placeholders "
                "cannot be left out)"
            )


async def preflight(
    aws: Aws,
    request: dict[str, Any],
    kind: InputKind | None,
    job_type: JobType = "inference",
    *,
    filter_values: Collection[str] = (),
    per_line: bool = True,
) -> Checked:
    """Check the job request against the account; return the input kind the recipe takes and
    the filter's placeholders.
    `filter_values`: the names of the run's --filter-values; `per_line`: whether the input's
    lines may carry their own (see `check_filter_values`)."""
    from .aws import describe_solution_version
    from .pipeline import check_output_outside_input

    arn = request["solutionVersionArn"]
    parts = arn.split(":")
    if len(parts) > 3 and parts[3] and aws.region and parts[3] != aws.region:
        raise ConfigError(
            f"solution version {arn} is in {parts[3]}, but the region is {aws.region}: jobs "
            f"run in their solution version's region; give --region {parts[3]} (or fix "
            "AWS_DEFAULT_REGION or the profile's region)"
        )
    info = await describe_solution_version(aws.personalize, arn)
    if info.status != "ACTIVE":
        raise ConfigError(
            f"solution version {arn} is {info.status}: batch jobs need an ACTIVE one; wait for "
            "training to finish or pick another"
        )
    mode = request.get("batchInferenceJobMode")
    recipe_kind = check_recipe(info, kind, mode, job_type)
    if mode == "THEME_GENERATION":
        fields = (request.get("themeGenerationConfig") or {}).get("fieldsForThemeGeneration")
        if not fields or not fields.get("itemName"):
            raise ConfigError(
                "THEME_GENERATION needs --theme-generation-config "
                "'fieldsForThemeGeneration={itemName=TITLE}' naming the items' name column"
            )
    number = request.get("numResults")
    most = MAX_SEGMENT_USERS if job_type == "segment" else MAX_NUM_RESULTS
    if number is not None and not 1 <= int(number) <= most:
        raise ConfigError(f"--num-results {number}: use 1 to {most}")
    expression = ""
    if request.get("filterArn"):
        expression = await aws.check_filter(request["filterArn"])
    check_filter_values(request.get("filterArn"), expression, filter_values, per_line)
    if request.get("roleArn"):
        await aws.check_role(request["roleArn"])
    source = S3DataConfig.model_validate(request["jobInput"]["s3DataSource"])
    destination = S3DataConfig.model_validate(request["jobOutput"]["s3DataDestination"])
    check_output_outside_input(source.path, destination.path)
    for path in (source.path, destination.path):
        where = S3Uri.parse(path).as_prefix()
        await aws.s3.check_bucket(where.bucket, where.key)
    keys = {key for key in (source.kms_key_arn, destination.kms_key_arn) if key}
    for key in sorted(keys):
        await aws.check_kms_key(key)
    return Checked(recipe_kind, placeholders_of(expression))
