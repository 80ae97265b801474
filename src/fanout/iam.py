"""Least-privilege IAM documents for fanout: `policies(...)` builds them, `render` prints them.

Pure functions, no AWS calls. Five kinds of document (docs/iam.md explains each statement and the
facts behind it, reference §5):

    caller_policy      identity policy of whoever runs fanout (Personalize, PassRole, S3, KMS)
    trust_policy       trust policy of the service role: personalize.amazonaws.com, confused-deputy
                       conditions
    role_policy        permissions policy of the service role: read input, write output, keys
    bucket_policies    per bucket: what personalize.amazonaws.com may do there
    key_policies       per KMS key: the role and personalize.amazonaws.com may use the key

S3 locations are folders, as fanout treats them: `s3://b/in` is the prefix `in/`, so that
`in*` never reaches `input-other/`. Object grants are `arn:…:s3:::b/in/*`; listings are limited
with `s3:prefix` where S3 supports that key (ListBucket, not ListBucketMultipartUploads).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError
from .storage import S3Uri, empty_segment

__all__ = ["PERSONALIZE_PRINCIPAL", "PolicySet", "policies", "render"]

PERSONALIZE_PRINCIPAL = "personalize.amazonaws.com"
VERSION = "2012-10-17"

Document = dict[str, Any]
Statement = dict[str, Any]

_PARTITION = re.compile(r"aws(-[a-z]+)*")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
_ACCOUNT = re.compile(r"\d{12}")
# Bucket names as S3 allows them today (no IAM wildcard or variable characters can occur).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# The roleArn pattern of the Personalize model (reference §4.2), anchored.
_ROLE = re.compile(
    r"arn:(?P<partition>[a-z\d-]+):iam::(?P<account>\d{12}):role/[A-Za-z0-9+=,.@_/-]+"
)
_KMS_KEY = re.compile(
    r"arn:(?P<partition>[a-z\d-]+):kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):key/[A-Za-z0-9-]+"
)
_SOLUTION_VERSION = re.compile(
    r"arn:(?P<partition>[a-z\d-]+):personalize:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?P<solution>solution/[A-Za-z0-9][A-Za-z0-9_-]*)/[A-Za-z0-9]+"
)
_FILTER = re.compile(
    r"arn:(?P<partition>[a-z\d-]+):personalize:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"filter/[A-Za-z0-9][A-Za-z0-9_-]*"
)
# In an IAM Resource or a StringLike value these are wildcards or policy variables.
_IAM_SPECIAL = set("*?$")

_KMS_ROLE_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey", "kms:ListGrants"]
_KMS_KEY_POLICY_ACTIONS = [*_KMS_ROLE_ACTIONS, "kms:CreateGrant"]


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The five documents of one setup, each a JSON-ready IAM policy document.

    `bucket_policies` has one document per bucket (S3 rejects statements about another bucket),
    `key_policies` one per key ARN (empty without KMS). In a key policy `"Resource": "*"` means
    "this key", as KMS requires.
    """

    role_arn: str
    caller_policy: Document
    trust_policy: Document
    role_policy: Document
    bucket_policies: dict[str, Document]
    key_policies: dict[str, Document]

    def as_dict(self) -> dict[str, Any]:
        """All five under the names `render(fmt="json")` prints."""
        return {
            "caller_policy": self.caller_policy,
            "service_role_trust_policy": self.trust_policy,
            "service_role_policy": self.role_policy,
            "bucket_policies": self.bucket_policies,
            "key_policies": self.key_policies,
        }


@dataclass(frozen=True, slots=True)
class _Arns:
    """ARN builders for one partition, account and region (`*` when the region is unknown)."""

    partition: str
    account: str
    region: str

    def personalize(self, resource: str) -> str:
        return f"arn:{self.partition}:personalize:{self.region}:{self.account}:{resource}"

    def recipes(self) -> str:
        # Recipes are global and owned by AWS: no region, no account (authorization reference).
        return f"arn:{self.partition}:personalize:::recipe/*"

    def bucket(self, bucket: str) -> str:
        return f"arn:{self.partition}:s3:::{bucket}"

    def objects(self, uri: S3Uri) -> str:
        return f"arn:{self.partition}:s3:::{uri.bucket}/{uri.key}*"

    def source_conditions(self) -> dict[str, Any]:
        """Confused-deputy protection: only Personalize acting for this account (and region)."""
        return {
            "StringEquals": {"aws:SourceAccount": self.account},
            "ArnLike": {"aws:SourceArn": self.personalize("*")},
        }


def policies(
    *,
    job_input: str,
    job_output: str,
    role_arn: str,
    kms_key_arns: Sequence[str] = (),
    account_id: str | None = None,
    region: str | None = None,
    partition: str = "aws",
    tags: bool = False,
    segments: bool = False,
    solution_version_arns: Sequence[str] = (),
    filter_arns: Sequence[str] = (),
    id_sources: Sequence[str] = (),
    datasets: Sequence[str] = (),
) -> PolicySet:
    """The IAM documents fanout needs for this input, output, role and keys; nothing broader.

    `job_input` and `job_output` are the `--job-input`/`--job-output` paths (folders);
    `role_arn` the service role passed to Personalize; the account defaults to the role's.
    Without a region the Personalize ARNs use `*` for it. `tags` adds TagResource, `segments`
    the batch segment job calls. Without `solution_version_arns` the caller may use every
    solution of the account; without `filter_arns` it gets no DescribeFilter. `id_sources` are
    `--ids s3://…` locations (an object, or a folder when they end in `/`), granted read-only;
    `datasets` are `--out s3://…/` result folders, which the caller lists, writes and clears.
    Raises ConfigError, saying what to do, for anything that would make a wrong policy.
    """
    if not _PARTITION.fullmatch(partition):
        raise ConfigError(
            f"partition {partition!r} is not an AWS partition: use aws, aws-cn or aws-us-gov"
        )
    if region is not None and not _REGION.fullmatch(region):
        raise ConfigError(f"region {region!r} is not an AWS region name such as us-east-1")
    account = _check_role(role_arn, partition, account_id)
    source = _folder(job_input, "--job-input")
    destination = _folder(job_output, "--job-output")
    if source.holds(destination):
        raise ConfigError(
            f"--job-output {job_output} is at or under --job-input {job_input}; jobs read their "
            "input by prefix and would read their own output. Use separate prefixes, e.g. "
            "s3://bucket/in/ and s3://bucket/out/."
        )
    ids = [_id_source(path) for path in dict.fromkeys(id_sources)]
    results = [_dataset(path, source, destination) for path in dict.fromkeys(datasets)]
    keys = _unique(_check_key(arn, partition) for arn in kms_key_arns)
    versions = _unique(
        _check_personalize(arn, _SOLUTION_VERSION, "solution version", partition, region)
        for arn in solution_version_arns
    )
    filters = _unique(
        _check_personalize(arn, _FILTER, "filter", partition, region) for arn in filter_arns
    )
    arns = _Arns(partition, account, region or "*")
    return PolicySet(
        role_arn=role_arn,
        caller_policy=_document(
            _caller_statements(arns, source, destination, role_arn, keys, ids, results)
            + _personalize_statements(arns, tags, segments, versions, filters)
        ),
        trust_policy=_document(
            [
                {
                    "Sid": "PersonalizeAssumesRoleForThisAccountOnly",
                    "Effect": "Allow",
                    "Principal": {"Service": PERSONALIZE_PRINCIPAL},
                    "Action": ["sts:AssumeRole"],
                    "Condition": arns.source_conditions(),
                }
            ]
        ),
        role_policy=_document(_role_statements(arns, source, destination, keys)),
        bucket_policies=_bucket_policies(arns, source, destination),
        key_policies={key: _key_policy(arns, role_arn) for key in keys},
    )


def render(policy_set: PolicySet, fmt: Literal["json", "text"] = "json") -> str:
    """`json`: one object holding the five documents; `text`: each under a heading saying where
    it goes."""
    if fmt == "json":
        return json.dumps(policy_set.as_dict(), indent=2) + "\n"
    if fmt != "text":
        raise ValueError(f"fmt must be 'json' or 'text', not {fmt!r}")
    sections: list[tuple[str, str, Document]] = [
        (
            "Caller identity policy",
            "Attach to the IAM user or role that runs fanout.",
            policy_set.caller_policy,
        ),
        (
            "Service role trust policy",
            f"The trust relationship of {policy_set.role_arn}.",
            policy_set.trust_policy,
        ),
        (
            "Service role permissions policy",
            f"Attach to {policy_set.role_arn}; Personalize uses it to read and write S3.",
            policy_set.role_policy,
        ),
    ]
    for bucket, document in policy_set.bucket_policies.items():
        sections.append(
            (
                f"Bucket policy of s3://{bucket}",
                "Add these statements to the bucket's policy (keep its other statements).",
                document,
            )
        )
    for key, document in policy_set.key_policies.items():
        sections.append(
            (
                f"Key policy of {key}",
                "Add these statements to the key's policy. Keep the statement that lets IAM "
                "policies grant use of the key (the caller needs it).",
                document,
            )
        )
    parts = []
    for title, where, document in sections:
        parts.append(f"{title}\n{'=' * len(title)}\n{where}\n\n{json.dumps(document, indent=2)}\n")
    return "\n".join(parts)


# -- validation -----------------------------------------------------------------------------------


def _check_role(role_arn: str, partition: str, account_id: str | None) -> str:
    match = _ROLE.fullmatch(role_arn)
    if match is None:
        raise ConfigError(
            f"role {role_arn!r} is not an IAM role ARN: give the service role Personalize "
            "assumes, as arn:aws:iam::ACCOUNT:role/NAME"
        )
    _same_partition(match["partition"], partition, f"role {role_arn}")
    account = match["account"]
    if account_id is not None:
        if not _ACCOUNT.fullmatch(account_id):
            raise ConfigError(f"account ID {account_id!r} must be 12 digits")
        if account_id != account:
            raise ConfigError(
                f"role {role_arn} is in account {account}, not {account_id}: Personalize can "
                "only be passed a role of the account that runs the jobs; fix the role or the "
                "account ID (or leave the account ID out: it defaults to the role's)"
            )
    return account


def _folder(path: str, what: str) -> S3Uri:
    if (why := empty_segment(path)) is not None:
        raise ConfigError(f"{what} path {why}")
    return _s3_location(path, what).as_prefix()


def _id_source(path: str) -> S3Uri:
    """`--ids s3://bucket/key` (one object) or `s3://bucket/prefix/` (every object under it)."""
    return _s3_location(path, "--ids")


def _dataset(path: str, source: S3Uri, destination: S3Uri) -> S3Uri:
    """`--out s3://bucket/prefix/`: a result dataset, outside the jobs' prefixes (as `fanout
    run` requires)."""
    if not path.endswith("/"):
        raise ConfigError(
            f"--out {path}: an S3 result is a Parquet dataset, a folder: end it with '/'"
        )
    dataset = _folder(path, "--out")
    for option, place in (("--job-input", source), ("--job-output", destination)):
        if place.holds(dataset) or dataset.holds(place):
            raise ConfigError(
                f"--out {path} overlaps {option} s3://{place.bucket}/{place.key}: the run "
                "refuses a result dataset there (jobs read and write by prefix); use a prefix "
                "of its own"
            )
    return dataset


def _s3_location(path: str, what: str) -> S3Uri:
    uri = S3Uri.parse(path, what=f"{what} path")
    if not _BUCKET.fullmatch(uri.bucket) or ".." in uri.bucket:
        raise ConfigError(
            f"{what} path {path!r}: {uri.bucket!r} is not a valid S3 bucket name (3-63 "
            "lowercase letters, digits, '.' and '-')"
        )
    special = sorted(_IAM_SPECIAL & set(uri.key))
    if special:
        raise ConfigError(
            f"{what} path {path!r} contains {' '.join(special)}, which IAM reads as a wildcard "
            "or a policy variable: use a prefix without *, ? and $"
        )
    return uri


def _check_key(arn: str, partition: str) -> str:
    match = _KMS_KEY.fullmatch(arn)
    if match is None:
        if ":alias/" in arn or arn.startswith("alias/"):
            raise ConfigError(
                f"KMS key {arn!r} is an alias; Personalize needs the key ARN "
                "(arn:aws:kms:REGION:ACCOUNT:key/ID): find it with aws kms describe-key "
                "--key-id ALIAS --query KeyMetadata.Arn"
            )
        raise ConfigError(
            f"KMS key {arn!r} is not a key ARN: use arn:aws:kms:REGION:ACCOUNT:key/ID "
            "(Personalize accepts no aliases or bare key IDs)"
        )
    _same_partition(match["partition"], partition, f"KMS key {arn}")
    return arn


def _check_personalize(
    arn: str, pattern: re.Pattern[str], what: str, partition: str, region: str | None
) -> str:
    match = pattern.fullmatch(arn)
    if match is None:
        example = "solution/NAME/ID" if what == "solution version" else "filter/NAME"
        raise ConfigError(
            f"{what} {arn!r} is not a {what} ARN: use arn:aws:personalize:REGION:ACCOUNT:{example}"
        )
    _same_partition(match["partition"], partition, f"{what} {arn}")
    if region is not None and match["region"] != region:
        raise ConfigError(
            f"{what} {arn} is in {match['region']}, not {region}: batch jobs run in the region "
            "of their solution version and filter; fix the ARN or the region"
        )
    return arn


def _same_partition(found: str, partition: str, what: str) -> None:
    if found != partition:
        raise ConfigError(
            f"{what} is in partition {found}, but the policies are for {partition}: "
            f"pass partition {found!r} (or fix the ARN)"
        )


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


# -- documents ------------------------------------------------------------------------------------


def _document(statements: list[Statement]) -> Document:
    return {"Version": VERSION, "Statement": statements}


def _allow(
    sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None
) -> Statement:
    statement: Statement = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _caller_statements(
    arns: _Arns,
    source: S3Uri,
    destination: S3Uri,
    role_arn: str,
    keys: list[str],
    id_sources: list[S3Uri],
    datasets: list[S3Uri],
) -> list[Statement]:
    statements = [
        _allow(
            "PassServiceRoleToPersonalizeOnly",
            ["iam:PassRole"],
            [role_arn],
            {"StringEquals": {"iam:PassedToService": PERSONALIZE_PRINCIPAL}},
        ),
        # Shards are uploaded (multipart for large ones), re-checked on resume (HeadObject);
        # outputs and the journal mirror are read and written under the output prefix.
        _allow(
            "S3UploadAndCheckInputShards",
            ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
            [arns.objects(source)],
        ),
        _allow(
            "S3ReadOutputsAndMirrorJournal",
            ["s3:GetObject", "s3:PutObject"],
            [arns.objects(destination)],
        ),
    ]
    if id_sources:
        statements.append(
            _allow(
                "S3ReadIdList", ["s3:GetObject"], _unique(_read_arn(arns, u) for u in id_sources)
            )
        )
    if datasets:
        # A merge to `--out s3://…/` uploads one Parquet file per shard (multipart when large)
        # and `_SUCCESS`, and first deletes what an earlier merge of the run (or, with
        # --overwrite, another run) left there.
        statements.append(
            _allow(
                "S3WriteResultDataset",
                ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                _unique(arns.objects(uri) for uri in datasets),
            )
        )
    statements += _list_statements(arns, source, destination, id_sources, datasets)
    buckets = [source.bucket, destination.bucket, *(uri.bucket for uri in datasets)]
    statements += [
        # HeadBucket (preflight) is authorized as s3:ListBucket with no s3:prefix in the request,
        # which a prefix condition never matches; Null limits this grant to such requests.
        _allow(
            "S3HeadBucketForPreflightIsListBucketWithoutPrefix",
            ["s3:ListBucket"],
            _unique(arns.bucket(bucket) for bucket in buckets),
            {"Null": {"s3:prefix": "true"}},
        ),
        # S3 has no s3:prefix condition key for ListBucketMultipartUploads: bucket-wide.
        _allow(
            "S3ListUnfinishedUploadsBucketWideNoPrefixKey",
            ["s3:ListBucketMultipartUploads"],
            [arns.bucket(source.bucket)],
        ),
    ]
    if keys:
        statements.append(
            _allow(
                "KmsEncryptShardsAndDecryptOutputs",
                ["kms:GenerateDataKey", "kms:Decrypt"],
                list(keys),
            )
        )
    return statements


def _read_arn(arns: _Arns, uri: S3Uri) -> str:
    """A folder's objects, or exactly one object when the ID list is a single key."""
    return arns.objects(uri) if _is_folder(uri) else f"{arns.bucket(uri.bucket)}/{uri.key}"


def _is_folder(uri: S3Uri) -> bool:
    return not uri.key or uri.key.endswith("/")


def _list_statements(
    arns: _Arns,
    source: S3Uri,
    destination: S3Uri,
    id_sources: list[S3Uri],
    datasets: list[S3Uri],
) -> list[Statement]:
    """One ListBucket per bucket, limited to fanout's own prefixes with `s3:prefix`.

    A single-key ID list is listed with the key itself as the prefix (that is how fanout finds
    its size), so its value has no `*`.
    """
    uses: dict[str, dict[str, list[str]]] = {}
    for use, uri in [
        ("Input", source),
        ("Output", destination),
        *(("IdSource", uri) for uri in id_sources),
        *(("Result", uri) for uri in datasets),
    ]:
        value = uri.key + "*" if _is_folder(uri) else uri.key
        uses.setdefault(uri.bucket, {}).setdefault(use, []).append(value)
    statements = []
    seen: set[str] = set()
    for bucket, by_use in uses.items():
        sid = "S3List" + "And".join(by_use) + ("Prefixes" if len(by_use) > 1 else "Prefix")
        number = 1
        while sid + (str(number) if number > 1 else "") in seen:
            number += 1
        sid += str(number) if number > 1 else ""
        seen.add(sid)
        values = _unique(value for found in by_use.values() for value in found)
        statements.append(
            _allow(
                sid, ["s3:ListBucket"], [arns.bucket(bucket)], {"StringLike": {"s3:prefix": values}}
            )
        )
    return statements


def _personalize_statements(
    arns: _Arns, tags: bool, segments: bool, versions: list[str], filters: list[str]
) -> list[Statement]:
    jobs = ["personalize:CreateBatchInferenceJob", "personalize:DescribeBatchInferenceJob"]
    lists = ["personalize:ListBatchInferenceJobs"]
    if tags:
        jobs.append("personalize:TagResource")
    job_arns = [arns.personalize("batch-inference-job/*")]
    if segments:
        job_arns.append(arns.personalize("batch-segment-job/*"))
        jobs += ["personalize:CreateBatchSegmentJob", "personalize:DescribeBatchSegmentJob"]
        lists.append("personalize:ListBatchSegmentJobs")
    if versions:
        # CreateBatchInferenceJob and DescribeSolutionVersion authorize on the `solution`
        # resource type; whether IAM sees the version ARN or its solution's is not documented,
        # so both are granted.
        solutions = _unique(
            item
            for arn in versions
            for item in (arn, arn.rsplit("/", 1)[0])  # the version, then its solution
        )
    else:
        solutions = [arns.personalize("solution/*")]
    uses = ["personalize:CreateBatchInferenceJob", "personalize:DescribeSolutionVersion"]
    if segments:  # a segment job uses its solution version as an inference job does [U]
        uses.append("personalize:CreateBatchSegmentJob")
    statements = [
        _allow("PersonalizeCreateAndTrackBatchJobs", jobs, job_arns),
        _allow("PersonalizeUseSolutionVersions", uses, solutions),
        _allow("PersonalizeDescribeRecipes", ["personalize:DescribeRecipe"], [arns.recipes()]),
    ]
    if filters:
        statements.append(
            _allow("PersonalizeDescribeFilters", ["personalize:DescribeFilter"], list(filters))
        )
    statements.append(
        _allow("PersonalizeListJobsHasNoResourceLevelPermissionsSoStar", lists, ["*"])
    )
    return statements


def _role_statements(
    arns: _Arns, source: S3Uri, destination: S3Uri, keys: list[str]
) -> list[Statement]:
    statements = [
        _allow("PersonalizeReadsInputPrefix", ["s3:GetObject"], [arns.objects(source)]),
        _allow("PersonalizeWritesOutputPrefix", ["s3:PutObject"], [arns.objects(destination)]),
        _allow(
            "PersonalizeListsJobBuckets",
            ["s3:ListBucket"],
            _unique([arns.bucket(source.bucket), arns.bucket(destination.bucket)]),
        ),
    ]
    if keys:
        statements.append(_allow("PersonalizeUsesJobKeys", list(_KMS_ROLE_ACTIONS), list(keys)))
    return statements


def _bucket_policies(arns: _Arns, source: S3Uri, destination: S3Uri) -> dict[str, Document]:
    documents: dict[str, Document] = {}
    for bucket in _unique([source.bucket, destination.bucket]):
        statements = [
            _service_statement(
                "PersonalizeListsBucket", ["s3:ListBucket"], [arns.bucket(bucket)], arns
            )
        ]
        if bucket == source.bucket:
            statements.append(
                _service_statement(
                    "PersonalizeReadsInputPrefix", ["s3:GetObject"], [arns.objects(source)], arns
                )
            )
        if bucket == destination.bucket:
            statements.append(
                _service_statement(
                    "PersonalizeWritesOutputPrefix",
                    ["s3:PutObject"],
                    [arns.objects(destination)],
                    arns,
                )
            )
        documents[bucket] = _document(statements)
    return documents


def _service_statement(
    sid: str, actions: list[str], resources: list[str], arns: _Arns
) -> Statement:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": PERSONALIZE_PRINCIPAL},
        "Action": actions,
        "Resource": resources,
        "Condition": arns.source_conditions(),
    }


def _key_policy(arns: _Arns, role_arn: str) -> Document:
    # Inside a key policy "*" is the key the policy belongs to (KMS requires this form).
    return _document(
        [
            {
                "Sid": "PersonalizeServiceRoleUsesKey",
                "Effect": "Allow",
                "Principal": {"AWS": role_arn},
                "Action": list(_KMS_KEY_POLICY_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "PersonalizeUsesKeyForThisAccountOnly",
                "Effect": "Allow",
                "Principal": {"Service": PERSONALIZE_PRINCIPAL},
                "Action": list(_KMS_KEY_POLICY_ACTIONS),
                "Resource": "*",
                "Condition": arns.source_conditions(),
            },
        ]
    )
