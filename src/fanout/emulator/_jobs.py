"""Running one batch job: read its input from S3, compute, write `.out` files like the service.

A job reads every object under its input path with S3 prefix semantics (a path without a trailing
`/` also matches sibling prefixes), checks the service limits, turns each input line into one output
line (or an error line), and writes `<input file name>.out` per input file under the output path,
lines in shuffled order, plus a `_CHECK` object. Problems that make the whole job fail raise
`JobFailure` with the failureReason the job should carry.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ._model import Model, parse_filter_values
from ._recipes import Algorithm, Recipe
from ._s3 import kms_key_state
from ._settings import EmulatorSettings

_BATCH = 16_384  # input lines computed together
_PART_BYTES = 16 * 1024 * 1024  # multipart part size for outputs
_SHUFFLE_WINDOW = 65_536  # lines shuffled together (bounds the emulator's memory per file)


class JobFailure(Exception):
    """The job ends CREATE FAILED with this failureReason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a running job needs to know, taken from its create request."""

    name: str
    recipe: Recipe
    input_path: str
    input_kms_key: str | None
    output_path: str
    output_kms_key: str | None
    num_results: int
    filter_expression: str | None = None
    theme_name_field: str | None = None  # set in THEME_GENERATION mode


def split_s3(path: str, what: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); anything else fails the job."""
    if not path.startswith("s3://"):
        raise JobFailure(f"Invalid S3 {what} path {path}: only s3:// locations are supported.")
    bucket, _, key = path[5:].partition("/")
    if not bucket:
        raise JobFailure(f"Invalid S3 {what} path {path}: no bucket name.")
    return bucket, key


def check_paths(input_path: str, output_path: str) -> None:
    """The checks on the two locations that need no S3 access."""
    in_bucket, in_prefix = split_s3(input_path, "input")
    out_bucket, out_prefix = split_s3(output_path, "output")
    if in_bucket == out_bucket and out_prefix.startswith(in_prefix):
        raise JobFailure(
            f"Invalid S3 output path {output_path}: it is inside the input location "
            f"{input_path}, which the job reads by prefix. Use an output location outside it."
        )


class _Counter:
    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records = 0


def run_job(
    spec: JobSpec,
    s3: Any,
    model: Model,
    settings: EmulatorSettings,
    *,
    on_records: Callable[[int], None] | None = None,
) -> int:
    """Run the job to completion; return the number of input records. Raises JobFailure."""
    check_paths(spec.input_path, spec.output_path)
    in_bucket, in_prefix = split_s3(spec.input_path, "input")
    out_bucket, out_prefix = split_s3(spec.output_path, "output")
    if out_prefix and not out_prefix.endswith("/"):
        out_prefix += "/"
    for key in (spec.input_kms_key, spec.output_kms_key):
        if key and kms_key_state(settings.region, key) != "Enabled":
            raise JobFailure(
                f"Insufficient privileges for the KMS key {key}: it does not exist or is not "
                "enabled. Grant the role kms:Decrypt and kms:GenerateDataKey on an enabled key."
            )

    objects = _list_inputs(s3, in_bucket, in_prefix, spec.input_path)
    _check_output(s3, out_bucket, spec.output_path)
    for bucket in dict.fromkeys((in_bucket, out_bucket)):
        _check_region(s3, bucket, settings.region)
    if len(objects) > settings.max_input_files:
        raise JobFailure(
            f"Input data at {spec.input_path} has {len(objects)} files; the limit for a batch job "
            f"is {settings.max_input_files}."
        )
    total = sum(size for _, size in objects)
    if total > settings.max_input_bytes:
        raise JobFailure(
            f"Input data at {spec.input_path} is {total} bytes; the limit for a batch job is "
            f"{settings.max_input_bytes} bytes."
        )

    names = _output_names([key for key, _ in objects], in_prefix, settings.output_naming)
    shape = _LineShaper(spec, model, settings)
    counter = _Counter()
    for key, name in names.items():
        rng = random.Random(f"{settings.seed}/{spec.name}/{key}")
        writer = _OutputWriter(
            s3, out_bucket, f"{out_prefix}{name}.out", spec.output_kms_key, settings, rng
        )
        try:
            body = _open_input(s3, in_bucket, key, settings.region)
            _process_file(body, key, shape, writer, settings, counter, on_records)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    if settings.write_check_object:
        _put(s3, out_bucket, f"{out_prefix}_CHECK", settings.check_object_body.encode(), spec)
    return counter.records


def _output_names(keys: list[str], in_prefix: str, naming: str) -> dict[str, str]:
    """Each input key's output name (before `.out`): its base name, or with `relative` naming
    its path under the input prefix. Two inputs that would write the same output fail the job
    rather than one output overwriting the other (what the service does then is unknown)."""
    names: dict[str, str] = {}
    for key in keys:
        if naming == "basename":
            names[key] = key.rsplit("/", 1)[-1]
        else:
            names[key] = key[len(in_prefix) :].lstrip("/") if key.startswith(in_prefix) else key
    seen: dict[str, str] = {}
    for key, name in names.items():
        if name in seen:
            raise JobFailure(
                f"Input files {seen[name]} and {key} would both write {name}.out: give input "
                "files distinct names (the emulator's output_naming=relative keeps their paths)."
            )
        seen[name] = key
    return names


def _list_inputs(s3: Any, bucket: str, prefix: str, path: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.extend(
                (obj["Key"], int(obj["Size"]))
                for obj in page.get("Contents", [])
                if not obj["Key"].endswith("/")
            )
    except Exception as exc:
        raise JobFailure(
            f"Failed to read the input location {path} ({_code(exc)}). Check the bucket exists "
            "in this region and the role has s3:ListBucket and s3:GetObject on it."
        ) from exc
    if not found:
        raise JobFailure(
            f"Input data not found: no files under {path}. Upload the input JSON lines there."
        )
    return found


def _check_region(s3: Any, bucket: str, region: str) -> None:
    """A job reads and writes buckets of its own region only (reference §1)."""
    where = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    if where != region:
        raise JobFailure(
            f"S3 bucket {bucket} is in {where}, not in {region}: the bucket must be in the "
            "same region as the batch inference job."
        )


def _check_output(s3: Any, bucket: str, path: str) -> None:
    """The output bucket is there to write to (a job fails, with a reason, if not)."""
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as exc:
        raise JobFailure(
            f"Failed to write to the output location {path} ({_code(exc)}). Check the bucket "
            "exists in this region and the role has s3:PutObject on it."
        ) from exc


def _code(exc: Exception) -> str:
    """An S3 error's code (a ClientError's), else the exception's type."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__))


def _open_input(s3: Any, bucket: str, key: str, region: str) -> Any:
    response = s3.get_object(Bucket=bucket, Key=key)
    if response.get("ServerSideEncryption") == "aws:kms":
        key_id = response.get("SSEKMSKeyId")
        if key_id and kms_key_state(region, key_id) != "Enabled":
            response["Body"].close()
            raise JobFailure(
                f"Insufficient privileges to decrypt s3://{bucket}/{key}: its KMS key {key_id} "
                "is not enabled or does not exist. Grant the role kms:Decrypt on the key."
            )
    return response["Body"]


def _lines(body: Any, chunk_size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
    """Split a streaming body on b"\\n" (CR before it dropped), without reading it whole."""
    rest = b""
    while True:
        chunk = body.read(chunk_size)
        if not chunk:
            break
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part[:-1] if part.endswith(b"\r") else part
    if rest:
        yield rest[:-1] if rest.endswith(b"\r") else rest


def _process_file(
    body: Any,
    key: str,
    shape: _LineShaper,
    writer: _OutputWriter,
    settings: EmulatorSettings,
    counter: _Counter,
    on_records: Callable[[int], None] | None,
) -> None:
    limit = shape.records_per_file_limit
    records = 0
    batch: list[bytes] = []
    try:
        for raw in _lines(body):
            if not raw.strip() and settings.blank_lines == "skip":
                continue
            records += 1
            if records > limit:
                raise JobFailure(
                    f"Input file {key} has more than {limit} records, the limit per file for "
                    f"{shape.limit_label}. Split it into more files."
                )
            batch.append(raw)
            if len(batch) >= _BATCH:
                writer.write_many(shape.shape(batch))
                counter.records += len(batch)
                if on_records:
                    on_records(len(batch))
                batch = []
        if batch:
            writer.write_many(shape.shape(batch))
            counter.records += len(batch)
            if on_records:
                on_records(len(batch))
    finally:
        body.close()


class _OutputWriter:
    """Buffers output lines, shuffles them in windows, uploads as single or multipart object."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        kms_key: str | None,
        settings: EmulatorSettings,
        rng: random.Random,
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._sse = _sse_args(kms_key)
        self._settings = settings
        self._rng = rng
        self._window: list[bytes] = []
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write_many(self, lines: list[bytes]) -> None:
        self._window.extend(lines)
        if len(self._window) >= _SHUFFLE_WINDOW:
            self._flush_window()

    def _flush_window(self) -> None:
        if self._settings.shuffle_output:
            self._rng.shuffle(self._window)
        for line in self._window:
            self._buffer += line
            self._buffer += b"\n"
        self._window = []
        if len(self._buffer) >= _PART_BYTES:
            self._upload_part()

    def _upload_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, **self._sse
            )["UploadId"]
        number = len(self._parts) + 1
        etag = self._s3.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=bytes(self._buffer),
        )["ETag"]
        self._parts.append({"PartNumber": number, "ETag": etag})
        self._buffer = bytearray()

    def close(self) -> None:
        self._flush_window()
        if self._upload_id is None:
            self._s3.put_object(
                Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), **self._sse
            )
            return
        if self._buffer:
            self._upload_part()
        self._s3.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        if self._upload_id is not None:
            with contextlib.suppress(Exception):  # best effort: the job is failing anyway
                self._s3.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )


def _sse_args(kms_key: str | None) -> dict[str, Any]:
    if not kms_key:
        return {}
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key, "BucketKeyEnabled": True}


def _put(s3: Any, bucket: str, key: str, body: bytes, spec: JobSpec) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, **_sse_args(spec.output_kms_key))


# -- turning input lines into output lines ---------------------------------------------------------

_SMALL_DECIMAL = re.compile(rb"(?<=[\[,])(-?)0\.(000+)(\d+)")
_EXPONENT = re.compile(rb"(?<=[\d])e(-?\d+)")


def _java_numbers(segment: bytes) -> bytes:
    """Render numbers below 1e-3 the way Java's Float.toString does: 3.773E-4, 5.0E-4."""

    def small(match: re.Match[bytes]) -> bytes:
        sign, zeros, digits = match.groups()
        exponent = -(len(zeros) + 1)
        mantissa = digits[:1] + b"." + (digits[1:] or b"0")
        return sign + mantissa + b"E" + str(exponent).encode()

    return _EXPONENT.sub(rb"E\1", _SMALL_DECIMAL.sub(small, segment))


class _LineShaper:
    """Turns a batch of raw input lines into output lines for one job."""

    def __init__(self, spec: JobSpec, model: Model, settings: EmulatorSettings) -> None:
        self.spec = spec
        self.recipe = spec.recipe
        self.model = model
        self.settings = settings
        self._masks: dict[tuple[tuple[str, tuple[str, ...]], ...], np.ndarray | None] = {}
        self._cold: dict[int, bytes] = {}  # output of cold users, by id() of the filter mask
        self._id_field = self.recipe.id_field
        self._required = self.recipe.required_fields
        algorithm = self.recipe.algorithm
        self._segment_key = settings.segment_output_key if self.recipe.segment else None
        if spec.theme_name_field:
            self.records_per_file_limit = settings.theme_max_records_per_file
            self.limit_label = "THEME_GENERATION mode"
        elif algorithm is Algorithm.ITEM_AFFINITY:
            self.records_per_file_limit = settings.item_affinity_max_queries_per_file
            self.limit_label = "Item-Affinity segment jobs"
        elif algorithm is Algorithm.ATTRIBUTE_AFFINITY:
            self.records_per_file_limit = settings.attribute_affinity_max_queries_per_file
            self.limit_label = "Item-Attribute-Affinity segment jobs"
        else:
            self.records_per_file_limit = settings.max_records_per_file
            self.limit_label = "batch inference jobs"

    # - parsing -

    def _error(self, echo: object, message: str) -> bytes:
        key = self._segment_key or "recommendedItems"
        return orjson.dumps({"input": echo, "output": {key: []}, "error": message})

    def _parse(self, raw: bytes) -> tuple[dict[str, Any] | None, bytes | None]:
        """(record, None) for a usable line, (None, error line) otherwise."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if self.settings.malformed_lines == "fail-job":
                raise JobFailure("Input contains a line that is not valid JSON.") from None
            text = raw.decode("utf-8", "replace")
            return None, self._error(text, "User error: Input record is not valid JSON.")
        if not isinstance(obj, dict):
            return None, self._error(obj, "User error: Input record must be a JSON object.")
        if "context" in obj and self.settings.context_field == "error-line":
            return None, self._error(obj, "User error: context is not supported in batch jobs.")
        for field in self._required:
            if field not in obj:
                fields = ", ".join(self._required)
                return None, self._error(
                    obj, f"User error: Required fields for the provided recipe are {fields}"
                )
        id_field = self._id_field
        value = obj[id_field]
        if not isinstance(value, str):
            if self.settings.non_string_ids == "accept" and isinstance(value, int | float):
                obj[id_field] = value = str(value)
            else:
                return None, self._error(obj, f"User error: {id_field} must be a string.")
        limit = self.settings.max_id_length
        if not value or len(value) > limit:
            return None, self._error(
                obj, f"User error: {id_field} must have length between 1 and {limit}."
            )
        if self.recipe.algorithm is Algorithm.RANK:
            items = obj["itemList"]
            if (
                not isinstance(items, list)
                or not items
                or not all(isinstance(i, str) and i for i in items)
            ):
                return None, self._error(
                    obj, "User error: itemList must be a non-empty list of item ID strings."
                )
            if len(items) > self.settings.max_item_list:
                return None, self._error(
                    obj,
                    f"User error: itemList has {len(items)} items; the maximum is "
                    f"{self.settings.max_item_list}.",
                )
        return obj, None

    def _mask(self, record: dict[str, Any]) -> np.ndarray | None:
        """The item mask of the job's filter for this record's filterValues; ValueError if bad."""
        expression = self.spec.filter_expression
        raw = record.get("filterValues")
        if raw is not None and not isinstance(raw, dict):
            raise ValueError("filterValues must be a JSON object of strings.")
        if expression is None:
            return None
        parsed: dict[str, tuple[str, ...]] = {}
        for name, value in (raw or {}).items():
            if not isinstance(value, str):
                raise ValueError(f"filterValues.{name} must be a string of quoted values.")
            parsed[name] = tuple(parse_filter_values(value))
        cache_key = tuple(sorted(parsed.items()))
        if cache_key not in self._masks:
            self._masks[cache_key] = self.model.filter_mask(expression, parsed)
        return self._masks[cache_key]

    # - computing -

    def shape(self, raws: Sequence[bytes]) -> list[bytes]:
        out: list[bytes] = []
        groups: dict[int, tuple[np.ndarray | None, list[dict[str, Any]]]] = {}
        for raw in raws:
            record, error = self._parse(raw)
            if record is None:
                assert error is not None
                out.append(error)
                continue
            try:
                mask = self._mask(record)
            except ValueError as exc:
                out.append(self._error(record, f"User error: {exc}"))
                continue
            group = groups.setdefault(id(mask), (mask, []))
            group[1].append(record)
        for mask, records in groups.values():
            out.extend(self._compute(records, mask))
        return out

    def _compute(self, records: list[dict[str, Any]], mask: np.ndarray | None) -> list[bytes]:
        algorithm = self.recipe.algorithm
        n = self.spec.num_results
        if algorithm is Algorithm.PERSONALIZE:
            return self._personalize(records, mask, n)
        if algorithm is Algorithm.POPULAR:
            items = self.model.popular(n, mask)
            output = orjson.dumps({"recommendedItems": items})
            return [self._line(r, output) for r in records]
        if algorithm is Algorithm.RANK:
            lines = []
            for record in records:
                ranked, scores = self.model.rank(record["userId"], record["itemList"])
                if mask is not None:
                    keep = [
                        (i, s)
                        for i, s in zip(ranked, scores, strict=True)
                        if not self.model.knows_item(i) or mask[self._item_index(i)]
                    ]
                    ranked, scores = [i for i, _ in keep], [s for _, s in keep]
                lines.append(self._line(record, self._scored(ranked, scores)))
            return lines
        if algorithm is Algorithm.RELATED:
            return [self._related(r, mask, n) for r in records]
        if algorithm is Algorithm.ITEM_AFFINITY:
            return [self._item_affinity(r, n) for r in records]
        if algorithm is Algorithm.ATTRIBUTE_AFFINITY:
            return [self._attribute_affinity(r, n) for r in records]
        raise JobFailure(f"Recipe {self.recipe.name} does not support batch jobs.")

    def _item_index(self, item_id: str) -> int:
        return self.model.catalog.item_index[item_id]

    def _line(self, record: dict[str, Any], output: bytes) -> bytes:
        return b'{"input":' + orjson.dumps(record) + b',"output":' + output + b',"error":null}'

    def _numbers(self, output: bytes) -> bytes:
        """Scores as the service writes them (the model already rounds them like float32s)."""
        if self.settings.java_number_format and (b"0.000" in output or b"e-" in output):
            return _java_numbers(output)
        return output

    def _scored(self, items: list[str], scores: Sequence[float]) -> bytes:
        return self._numbers(orjson.dumps({"recommendedItems": items, "scores": scores}))

    def _personalize(
        self, records: list[dict[str, Any]], mask: np.ndarray | None, n: int
    ) -> list[bytes]:
        reasons = self.recipe.reasons and self.settings.v2_reasons
        is_known = [self.model.knows_user(r["userId"]) for r in records]
        known = [r["userId"] for r, k in zip(records, is_known, strict=True) if k]
        personal = iter(self.model.recommend(known, n, mask))
        lines = []
        for record, k in zip(records, is_known, strict=True):
            if k:
                items, scores = next(personal)
                output = self._personal_output(items, scores, reasons)
            else:
                output = self._cold_output(mask, n, reasons)
            lines.append(self._line(record, output))
        return lines

    def _personal_output(self, items: list[str], scores: list[float], reasons: bool) -> bytes:
        body: dict[str, Any] = {"recommendedItems": items, "scores": scores}
        if reasons:
            body["reasons"] = [[] for _ in items]
        return self._numbers(orjson.dumps(body))

    def _cold_output(self, mask: np.ndarray | None, n: int, reasons: bool) -> bytes:
        """Cold users all get the same popular items: serialise that output once per filter."""
        key = id(mask)
        if key not in self._cold:
            ((items, scores),) = self.model.recommend([""], n, mask)
            body: dict[str, Any] = {"recommendedItems": items, "scores": scores}
            if reasons:
                body["reasons"] = [["Popular item"] for _ in items]
            self._cold[key] = self._numbers(orjson.dumps(body))
        return self._cold[key]

    def _related(self, record: dict[str, Any], mask: np.ndarray | None, n: int) -> bytes:
        item = record["itemId"]
        if self.spec.theme_name_field:
            themed = self.model.themed(item, n, self.spec.theme_name_field, mask)
            if themed is None:
                return self._unknown_item(record, item)
            items, theme, relevance = themed
            output = orjson.dumps(
                {"recommendedItems": items, "theme": theme, "itemsThemeRelevanceScores": relevance}
            )
            return self._line(record, self._numbers(output))
        related = self.model.related(item, n, mask)
        if related is None:
            return self._unknown_item(record, item)
        return self._line(record, orjson.dumps({"recommendedItems": related}))

    def _unknown_item(self, record: dict[str, Any], item: str) -> bytes:
        key = self._segment_key or "recommendedItems"
        if self.settings.unknown_item == "empty":
            return self._line(record, orjson.dumps({key: []}))
        return self._error(record, f"User error: Item {item} is not in the training data.")

    def _users(self, record: dict[str, Any], users: list[str]) -> bytes:
        key = self._segment_key or "usersList"
        output = orjson.dumps({key: users})
        if "itemAttributes" in record and self.settings.segment_attribute_echo == "top-level":
            return (
                b'{"itemAttributes":'
                + orjson.dumps(record["itemAttributes"])
                + b',"output":'
                + output
                + b',"error":null}'
            )
        return self._line(record, output)

    def _item_affinity(self, record: dict[str, Any], n: int) -> bytes:
        users = self.model.item_affinity(record["itemId"], n)
        if users is None:
            return self._unknown_item(record, record["itemId"])
        return self._users(record, users)

    def _attribute_affinity(self, record: dict[str, Any], n: int) -> bytes:
        try:
            users = self.model.attribute_affinity(record["itemAttributes"], n)
        except ValueError as exc:
            return self._error(record, f"User error: {exc}")
        return self._users(record, users)
