"""Small frozen values handed between the pipeline's stages, and the enums they use."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._dedupe import I64

JobType = Literal["inference", "segment"]  # batch inference jobs, or batch segment jobs

# The longest personalized-ranking itemList sent unless --max-item-list says otherwise: batch's
# limit is undocumented; real-time ranking takes 500 (reference §1.3), as the emulator does.
MAX_ITEM_LIST = 500


class InputKind(enum.Enum):
    """The shape of one input line, which the recipe decides (reference §1)."""

    USER = "userId"  # {"userId": "…"}: user-personalization, popularity-count
    ITEM = "itemId"  # {"itemId": "…"}: related items, themes, item-affinity segments
    RANKING = "itemList"  # {"userId": "…", "itemList": […]}: personalized ranking
    ITEM_ATTRIBUTES = "itemAttributes"  # {"itemAttributes": "…"}: item-attribute-affinity

    @property
    def id_field(self) -> str:
        """The key that identifies a line in the service's output."""
        return {
            InputKind.USER: "userId",
            InputKind.ITEM: "itemId",
            InputKind.RANKING: "userId",
            InputKind.ITEM_ATTRIBUTES: "itemAttributes",
        }[self]


class RejectReason(enum.Enum):
    """Why an input line was not sent (each one counted in the summary)."""

    INVALID_UTF8 = "invalid-utf8"
    TOO_LONG = "too-long"
    CONTROL_CHARACTER = "control-character"
    MALFORMED_JSON = "malformed-json"
    WRONG_SHAPE = "wrong-shape"
    MISSING_COLUMN = "missing-column"
    INVALID_QUERY = "invalid-query"  # an item-attribute query the service would refuse


class JobStatus(enum.Enum):
    """A batch job's status as fanout reasons about it; any unknown string counts as running."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"

    @classmethod
    def parse(cls, text: str) -> JobStatus:
        """Map the service's spellings (`CREATE PENDING`, `IN PROGRESS`, …) to a status."""
        normal = text.upper().replace("_", " ").removeprefix("CREATE ").strip()
        if normal == "ACTIVE":
            return cls.ACTIVE
        if normal == "FAILED":
            return cls.FAILED
        if normal == "PENDING":
            return cls.PENDING
        return cls.IN_PROGRESS

    @property
    def terminal(self) -> bool:
        return self in {JobStatus.ACTIVE, JobStatus.FAILED}


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One batch job as a listing shows it (ours or anyone else's in the account)."""

    arn: str
    name: str
    status_text: str  # as the service spelled it, e.g. "CREATE IN_PROGRESS"
    failure_reason: str | None = None
    created: float | None = None  # epoch seconds
    updated: float | None = None
    # What it was created with (`job_options`), when described (a listing does not say)
    options: Mapping[str, Any] | None = None

    @property
    def status(self) -> JobStatus:
        return JobStatus.parse(self.status_text)


def job_options(request: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a batch job request (or of a described job) that decide its results:
    solution version, numResults, role, filter, mode, and where it reads and writes."""
    found = {
        key: request[key]
        for key in (
            "solutionVersionArn",
            "numResults",
            "roleArn",
            "filterArn",
            "batchInferenceJobMode",
        )
        if request.get(key) is not None
    }
    for key, inner in (("jobInput", "s3DataSource"), ("jobOutput", "s3DataDestination")):
        path = ((request.get(key) or {}).get(inner) or {}).get("path")
        if path:
            found[key] = path
    return found


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """A run of encoded input records: JSON lines, ready to be cut into part files.

    `data` holds the lines, each ending in `\\n`; `ends[i]` is the offset just past line `i`, so
    line `i` is `data[ends[i-1]:ends[i]]` and a byte budget is cut with `bisect`. `ends` is a
    memoryview of 8-byte integers (format q) or a numpy int64 array. `data` is `bytes`, or a
    read-only `memoryview` of bytes where the encoder built the records in a buffer of its own:
    consumers use the buffer protocol (`memoryview`, slicing, `len`, `bytes()`),
    not `bytes` methods.
    """

    data: bytes | memoryview
    ends: I64

    def __post_init__(self) -> None:
        if len(self.ends) and int(self.ends[-1]) != len(self.data):
            raise ValueError("RecordBatch.ends must end at len(data)")

    @property
    def records(self) -> int:
        return len(self.ends)

    @property
    def nbytes(self) -> int:
        return len(self.data)


def input_kind_for_recipe(recipe_arn: str, recipe_type: str) -> InputKind | None:
    """The input line shape a recipe takes, or None if batch jobs cannot use it."""
    name = recipe_arn.rsplit("/", 1)[-1]
    if name in {"aws-trending-now", "aws-next-best-action"}:
        return None
    if recipe_type == "USER_PERSONALIZATION":
        return InputKind.USER
    if recipe_type == "PERSONALIZED_RANKING":
        return InputKind.RANKING
    if recipe_type == "RELATED_ITEMS":
        return InputKind.ITEM
    if recipe_type == "USER_SEGMENTATION":
        return InputKind.ITEM_ATTRIBUTES if "attribute" in name else InputKind.ITEM
    return None
