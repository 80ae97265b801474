"""The IAM policy generator: exact scoping, confused-deputy conditions, validation, rendering."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fanout import iam
from fanout.errors import ConfigError
from fanout.iam import PolicySet, policies, render

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/personalize-batch"
KEY_1 = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1111aaaa-22bb-33cc-44dd-555555eeeeee"
KEY_2 = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/mrk-0123456789abcdef0123456789abcdef"
OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload")


# -- a tiny IAM evaluator: Allow statements, wildcards, the condition operators used here ---------


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM matching: `*` any run of characters (`/` included), `?` one character."""
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, value, flags) is not None


def _condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            found = context.get(key)
            if operator == "Null":
                if (found is None) != (wanted == "true"):
                    return False
            elif found is None:
                return False
            elif operator == "StringEquals":
                if found not in _listed(wanted):
                    return False
            elif operator in {"StringLike", "ArnLike"}:
                if not any(wildcard(w, found) for w in _listed(wanted)):
                    return False
            else:
                raise AssertionError(f"evaluator does not know {operator}")
    return True


def allows(
    document: dict[str, Any], action: str, resource: str, context: dict[str, str] | None = None
) -> bool:
    """Whether any Allow statement of `document` grants `action` on `resource` in `context`."""
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        if not any(wildcard(a, action, ignore_case=True) for a in _listed(statement["Action"])):
            continue
        if not any(wildcard(r, resource) for r in _listed(statement["Resource"])):
            continue
        if _condition_holds(statement.get("Condition", {}), context or {}):
            return True
    return False


def test_evaluator_matches_iam_wildcards() -> None:
    """The test's matcher: `*` spans `/`, `?` is one character, everything else is literal."""
    assert wildcard("arn:aws:s3:::b/in/*", "arn:aws:s3:::b/in/x/y.json")
    assert wildcard("arn:aws:s3:::b/in/*", "arn:aws:s3:::b/in/")
    assert not wildcard("arn:aws:s3:::b/in/*", "arn:aws:s3:::b/input-other/x")
    assert wildcard("a?c", "abc") and not wildcard("a?c", "ac")
    assert not wildcard("a.c", "abc")
    assert wildcard("s3:getobject", "s3:GetObject", ignore_case=True)


# -- exact scoping over a table of setups ---------------------------------------------------------


@dataclass
class Case:
    name: str
    job_input: str
    job_output: str
    input_objects: str
    output_objects: str
    lists: dict[str, tuple[str, list[str]]]  # Sid -> (bucket ARN, s3:prefix values)
    buckets: dict[str, str]  # bucket name -> bucket ARN, input's first
    keys: list[str] = field(default_factory=list)
    partition: str = "aws"
    region: str | None = "us-east-1"
    role: str = ROLE

    @property
    def personalize(self) -> str:
        return f"arn:{self.partition}:personalize:{self.region or '*'}:{ACCOUNT}:"


CASES = [
    Case(
        "same bucket",
        "s3://bkt/in/",
        "s3://bkt/out/",
        "arn:aws:s3:::bkt/in/*",
        "arn:aws:s3:::bkt/out/*",
        {"S3ListInputAndOutputPrefixes": ("arn:aws:s3:::bkt", ["in/*", "out/*"])},
        {"bkt": "arn:aws:s3:::bkt"},
    ),
    Case(
        "two buckets, two keys",
        "s3://in-bkt/a/",
        "s3://out.bkt/b",
        "arn:aws:s3:::in-bkt/a/*",
        "arn:aws:s3:::out.bkt/b/*",
        {
            "S3ListInputPrefix": ("arn:aws:s3:::in-bkt", ["a/*"]),
            "S3ListOutputPrefix": ("arn:aws:s3:::out.bkt", ["b/*"]),
        },
        {"in-bkt": "arn:aws:s3:::in-bkt", "out.bkt": "arn:aws:s3:::out.bkt"},
        keys=[KEY_1, KEY_2],
    ),
    Case(
        "nested prefixes without trailing slash, one key",
        "s3://bkt/team/x/in",
        "s3://bkt/team/x/out/",
        "arn:aws:s3:::bkt/team/x/in/*",
        "arn:aws:s3:::bkt/team/x/out/*",
        {"S3ListInputAndOutputPrefixes": ("arn:aws:s3:::bkt", ["team/x/in/*", "team/x/out/*"])},
        {"bkt": "arn:aws:s3:::bkt"},
        keys=[KEY_1],
    ),
    Case(
        "input at a bucket's root, no region",
        "s3://in-bkt",
        "s3://out-bkt/res/",
        "arn:aws:s3:::in-bkt/*",
        "arn:aws:s3:::out-bkt/res/*",
        {
            "S3ListInputPrefix": ("arn:aws:s3:::in-bkt", ["*"]),
            "S3ListOutputPrefix": ("arn:aws:s3:::out-bkt", ["res/*"]),
        },
        {"in-bkt": "arn:aws:s3:::in-bkt", "out-bkt": "arn:aws:s3:::out-bkt"},
        region=None,
    ),
    Case(
        "China",
        "s3://cn-bkt/in/",
        "s3://cn-bkt/out/",
        "arn:aws-cn:s3:::cn-bkt/in/*",
        "arn:aws-cn:s3:::cn-bkt/out/*",
        {"S3ListInputAndOutputPrefixes": ("arn:aws-cn:s3:::cn-bkt", ["in/*", "out/*"])},
        {"cn-bkt": "arn:aws-cn:s3:::cn-bkt"},
        keys=[f"arn:aws-cn:kms:cn-north-1:{ACCOUNT}:key/abcd-1234"],
        partition="aws-cn",
        region="cn-north-1",
        role=f"arn:aws-cn:iam::{ACCOUNT}:role/svc/personalize",
    ),
    Case(
        "GovCloud",
        "s3://gov-in/data/",
        "s3://gov-out/data/",
        "arn:aws-us-gov:s3:::gov-in/data/*",
        "arn:aws-us-gov:s3:::gov-out/data/*",
        {
            "S3ListInputPrefix": ("arn:aws-us-gov:s3:::gov-in", ["data/*"]),
            "S3ListOutputPrefix": ("arn:aws-us-gov:s3:::gov-out", ["data/*"]),
        },
        {"gov-in": "arn:aws-us-gov:s3:::gov-in", "gov-out": "arn:aws-us-gov:s3:::gov-out"},
        partition="aws-us-gov",
        region="us-gov-west-1",
        role=f"arn:aws-us-gov:iam::{ACCOUNT}:role/personalize",
    ),
]


def _build(case: Case, **options: Any) -> PolicySet:
    return policies(
        job_input=case.job_input,
        job_output=case.job_output,
        role_arn=case.role,
        kms_key_arns=case.keys,
        region=case.region,
        partition=case.partition,
        **options,
    )


def _by_sid(document: dict[str, Any]) -> dict[str, list[str]]:
    return {s["Sid"]: _listed(s["Resource"]) for s in document["Statement"]}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_caller_resources_are_exactly_the_expected_arns(case: Case) -> None:
    """Every statement of the caller policy names exactly the ARNs of this setup, no more."""
    found = _build(case).caller_policy
    buckets = list(case.buckets.values())
    expected = {
        "PassServiceRoleToPersonalizeOnly": [case.role],
        "S3UploadAndCheckInputShards": [case.input_objects],
        "S3ReadOutputsAndMirrorJournal": [case.output_objects],
        **{sid: [bucket] for sid, (bucket, _) in case.lists.items()},
        "S3HeadBucketForPreflightIsListBucketWithoutPrefix": buckets,
        "S3ListUnfinishedUploadsBucketWideNoPrefixKey": [buckets[0]],
        "PersonalizeCreateAndTrackBatchJobs": [case.personalize + "batch-inference-job/*"],
        "PersonalizeUseSolutionVersions": [case.personalize + "solution/*"],
        "PersonalizeDescribeRecipes": [f"arn:{case.partition}:personalize:::recipe/*"],
        "PersonalizeListJobsHasNoResourceLevelPermissionsSoStar": ["*"],
    }
    if case.keys:
        expected["KmsEncryptShardsAndDecryptOutputs"] = case.keys
    assert _by_sid(found) == expected
    for statement in found["Statement"]:
        if statement["Sid"] in case.lists:
            prefixes = case.lists[statement["Sid"]][1]
            assert statement["Condition"] == {"StringLike": {"s3:prefix": prefixes}}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_service_role_resources_are_exactly_the_expected_arns(case: Case) -> None:
    """The role reads the input prefix, writes the output prefix, lists the job buckets."""
    expected = {
        "PersonalizeReadsInputPrefix": [case.input_objects],
        "PersonalizeWritesOutputPrefix": [case.output_objects],
        "PersonalizeListsJobBuckets": list(case.buckets.values()),
    }
    if case.keys:
        expected["PersonalizeUsesJobKeys"] = case.keys
    role_policy = _build(case).role_policy
    assert _by_sid(role_policy) == expected
    actions = {s["Sid"]: s["Action"] for s in role_policy["Statement"]}
    assert actions["PersonalizeReadsInputPrefix"] == ["s3:GetObject"]
    assert actions["PersonalizeWritesOutputPrefix"] == ["s3:PutObject"]
    if case.keys:
        assert set(actions["PersonalizeUsesJobKeys"]) == {
            "kms:Decrypt",
            "kms:GenerateDataKey",
            "kms:DescribeKey",
            "kms:ListGrants",
        }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bucket_policies_one_per_bucket_with_exact_resources(case: Case) -> None:
    """Each bucket gets its own policy naming only itself and the job prefix it holds."""
    found = _build(case).bucket_policies
    assert list(found) == list(case.buckets)
    names = list(case.buckets)
    input_bucket, output_bucket = names[0], names[-1]
    for bucket, document in found.items():
        expected = {"PersonalizeListsBucket": [case.buckets[bucket]]}
        if bucket == input_bucket:
            expected["PersonalizeReadsInputPrefix"] = [case.input_objects]
        if bucket == output_bucket:
            expected["PersonalizeWritesOutputPrefix"] = [case.output_objects]
        assert _by_sid(document) == expected
        for statement in document["Statement"]:
            assert statement["Principal"] == {"Service": "personalize.amazonaws.com"}
            assert statement["Condition"] == {
                "StringEquals": {"aws:SourceAccount": ACCOUNT},
                "ArnLike": {"aws:SourceArn": case.personalize + "*"},
            }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_key_policies_one_per_key_for_role_and_service(case: Case) -> None:
    """Each key's policy lets the role and Personalize (this account only) use it, CreateGrant
    included; no key, no key policy."""
    found = _build(case).key_policies
    assert list(found) == case.keys
    wanted = {
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "kms:DescribeKey",
        "kms:ListGrants",
        "kms:CreateGrant",
    }
    for document in found.values():
        role, service = document["Statement"]
        assert role["Principal"] == {"AWS": case.role}
        assert service["Principal"] == {"Service": "personalize.amazonaws.com"}
        assert service["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
        for statement in (role, service):
            assert set(statement["Action"]) == wanted
            assert statement["Resource"] == "*"  # in a key policy: this key


def _all_documents(policy_set: PolicySet) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("caller", policy_set.caller_policy),
        ("trust", policy_set.trust_policy),
        ("role", policy_set.role_policy),
        *((f"bucket {b}", d) for b, d in policy_set.bucket_policies.items()),
        *((f"key {k}", d) for k, d in policy_set.key_policies.items()),
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_star_only_for_list_calls(case: Case) -> None:
    """`"Resource": "*"` appears only on the List calls (no resource-level permissions), and in
    key policies, where it means the key itself."""
    policy_set = _build(case, tags=True, segments=True)
    for name, document in _all_documents(policy_set):
        for statement in document["Statement"]:
            resources = _listed(statement.get("Resource", []))
            if "*" not in resources:
                continue
            if name.startswith("key "):
                assert resources == ["*"]
                continue
            assert name == "caller"
            assert resources == ["*"]
            assert "NoResourceLevelPermissions" in statement["Sid"]
            assert all(a.startswith("personalize:List") for a in statement["Action"])


def test_every_document_is_an_iam_document_with_plain_unique_sids() -> None:
    """Version 2012-10-17; Sids are letters and digits only (IAM's rule) and unique."""
    policy_set = _build(CASES[1], tags=True, segments=True, id_sources=["s3://ids-bkt/a.txt"])
    for _, document in _all_documents(policy_set):
        assert document["Version"] == "2012-10-17"
        sids = [s["Sid"] for s in document["Statement"]]
        assert all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids), sids
        assert len(sids) == len(set(sids))


# -- conditions -----------------------------------------------------------------------------------


def test_pass_role_only_to_personalize() -> None:
    """iam:PassRole is on the one role, and only when passed to personalize.amazonaws.com."""
    caller = _build(CASES[0]).caller_policy
    (statement,) = [s for s in caller["Statement"] if "iam:PassRole" in s["Action"]]
    assert statement["Action"] == ["iam:PassRole"]
    assert statement["Resource"] == [ROLE]
    assert statement["Condition"] == {
        "StringEquals": {"iam:PassedToService": "personalize.amazonaws.com"}
    }


@pytest.mark.parametrize(
    ("region", "source_arn"),
    [
        ("eu-west-1", f"arn:aws:personalize:eu-west-1:{ACCOUNT}:*"),
        (None, f"arn:aws:personalize:*:{ACCOUNT}:*"),
    ],
)
def test_trust_policy_has_confused_deputy_conditions(region: str | None, source_arn: str) -> None:
    """Personalize may assume the role only for this account (and region, when known)."""
    trust = policies(
        job_input="s3://bkt/in/", job_output="s3://bkt/out/", role_arn=ROLE, region=region
    ).trust_policy
    assert trust["Statement"] == [
        {
            "Sid": "PersonalizeAssumesRoleForThisAccountOnly",
            "Effect": "Allow",
            "Principal": {"Service": "personalize.amazonaws.com"},
            "Action": ["sts:AssumeRole"],
            "Condition": {
                "StringEquals": {"aws:SourceAccount": ACCOUNT},
                "ArnLike": {"aws:SourceArn": source_arn},
            },
        }
    ]


def test_trust_conditions_are_met_by_this_account_only() -> None:
    """Evaluated: the trust policy admits Personalize acting for this account, not another."""
    trust = _build(CASES[0]).trust_policy
    own = {
        "aws:SourceAccount": ACCOUNT,
        "aws:SourceArn": f"arn:aws:personalize:us-east-1:{ACCOUNT}:batch-inference-job/j",
    }
    other = {
        "aws:SourceAccount": "210987654321",
        "aws:SourceArn": "arn:aws:personalize:us-east-1:210987654321:batch-inference-job/j",
    }
    assert allows(trust | {"Statement": _resourced(trust)}, "sts:AssumeRole", "role", own)
    assert not allows(trust | {"Statement": _resourced(trust)}, "sts:AssumeRole", "role", other)
    assert not allows(trust | {"Statement": _resourced(trust)}, "sts:AssumeRole", "role", {})


def _resourced(trust: dict[str, Any]) -> list[dict[str, Any]]:
    """Trust statements have no Resource: the role is implied; give the evaluator one."""
    return [s | {"Resource": "role"} for s in trust["Statement"]]


# -- prefixes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("job_input", ["s3://bkt/in/", "s3://bkt/in"])
def test_input_prefix_does_not_reach_siblings(job_input: str) -> None:
    """`in/` (with or without the slash given) grants nothing on `input-other/` or `in`."""
    policy_set = policies(job_input=job_input, job_output="s3://bkt/out/", role_arn=ROLE)
    documents = [policy_set.caller_policy, policy_set.role_policy, *_bucket_docs(policy_set)]
    for document in documents:
        for action in OBJECT_ACTIONS:
            for key in ["input-other/x", "in", "inx/y", "out-other/z", "ou/t"]:
                assert not allows(document, action, f"arn:aws:s3:::bkt/{key}", SERVICE), key
    caller = policy_set.caller_policy
    assert allows(caller, "s3:PutObject", "arn:aws:s3:::bkt/in/run/shard-00000/part.json")
    assert allows(caller, "s3:ListBucket", "arn:aws:s3:::bkt", {"s3:prefix": "in/run/"})
    assert not allows(caller, "s3:ListBucket", "arn:aws:s3:::bkt", {"s3:prefix": "input-other/"})
    assert not allows(caller, "s3:ListBucket", "arn:aws:s3:::bkt", {"s3:prefix": "in"})


SERVICE = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": f"arn:aws:personalize:*:{ACCOUNT}:x"}


def _bucket_docs(policy_set: PolicySet) -> list[dict[str, Any]]:
    return list(policy_set.bucket_policies.values())


def test_head_bucket_is_allowed_without_a_prefix_only() -> None:
    """HeadBucket (ListBucket with no s3:prefix) works on the job buckets; an empty or foreign
    prefix does not, and other buckets get nothing."""
    caller = _build(CASES[1]).caller_policy
    assert allows(caller, "s3:ListBucket", "arn:aws:s3:::in-bkt", {})
    assert allows(caller, "s3:ListBucket", "arn:aws:s3:::out.bkt", {})
    assert not allows(caller, "s3:ListBucket", "arn:aws:s3:::in-bkt", {"s3:prefix": ""})
    assert not allows(caller, "s3:ListBucket", "arn:aws:s3:::other-bkt", {})


def test_id_sources_are_read_only_and_exact() -> None:
    """`--ids s3://…` grants GetObject on exactly that object (or folder), and listing of it."""
    caller = policies(
        job_input="s3://bkt/in/",
        job_output="s3://bkt/out/",
        role_arn=ROLE,
        id_sources=["s3://ids-bkt/users.txt", "s3://bkt/lists/"],
    ).caller_policy
    assert allows(caller, "s3:GetObject", "arn:aws:s3:::ids-bkt/users.txt")
    assert not allows(caller, "s3:GetObject", "arn:aws:s3:::ids-bkt/users.txt.bak")
    assert not allows(caller, "s3:PutObject", "arn:aws:s3:::ids-bkt/users.txt")
    assert allows(caller, "s3:GetObject", "arn:aws:s3:::bkt/lists/a.csv")
    assert not allows(caller, "s3:PutObject", "arn:aws:s3:::bkt/lists/a.csv")
    bucket = "arn:aws:s3:::ids-bkt"
    assert allows(caller, "s3:ListBucket", bucket, {"s3:prefix": "users.txt"})
    assert not allows(caller, "s3:ListBucket", bucket, {"s3:prefix": "users"})


def test_result_datasets_are_written_listed_and_cleared_within_their_folder() -> None:
    """`--out s3://…/` grants what a merge to a dataset does (put, delete, abort, list and
    HeadBucket) on exactly that folder; without it, nothing of the kind."""
    datasets = ["s3://lake/recs/daily/", "s3://bkt/results/"]
    caller = policies(**GOOD, datasets=datasets).caller_policy  # in s3://bkt/in/, out …/out/
    for key in ("lake/recs/daily/part-r-00000.parquet", "lake/recs/daily/_SUCCESS"):
        for action in ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
            assert allows(caller, action, f"arn:aws:s3:::{key}"), (action, key)
    assert allows(caller, "s3:DeleteObject", "arn:aws:s3:::bkt/results/_SUCCESS")
    assert not allows(caller, "s3:DeleteObject", "arn:aws:s3:::lake/recs/other/x.parquet")
    assert not allows(caller, "s3:DeleteObject", "arn:aws:s3:::bkt/in/r/shard-00000/part.jsonl")
    assert allows(caller, "s3:ListBucket", "arn:aws:s3:::lake", {"s3:prefix": "recs/daily/"})
    assert not allows(caller, "s3:ListBucket", "arn:aws:s3:::lake", {"s3:prefix": "recs/"})
    assert allows(caller, "s3:ListBucket", "arn:aws:s3:::lake", {})  # HeadBucket
    plain = _build(CASES[0]).caller_policy
    assert "s3:DeleteObject" not in _actions(plain)


# -- optional grants ------------------------------------------------------------------------------


def _actions(document: dict[str, Any]) -> set[str]:
    return {a for s in document["Statement"] for a in s["Action"]}


def test_tags_and_segments_add_only_their_calls() -> None:
    """TagResource only with tags; the segment job calls and ARNs only with segments."""
    plain = _build(CASES[0]).caller_policy
    assert "personalize:TagResource" not in _actions(plain)
    assert not any("Segment" in a for a in _actions(plain))
    full = _build(CASES[0], tags=True, segments=True).caller_policy
    assert {
        "personalize:TagResource",
        "personalize:CreateBatchSegmentJob",
        "personalize:DescribeBatchSegmentJob",
        "personalize:ListBatchSegmentJobs",
    } <= _actions(full)
    jobs = _by_sid(full)["PersonalizeCreateAndTrackBatchJobs"]
    prefix = f"arn:aws:personalize:us-east-1:{ACCOUNT}:"
    assert jobs == [prefix + "batch-inference-job/*", prefix + "batch-segment-job/*"]
    # A segment job names a solution version as an inference job does: allowed on it too.
    solution = prefix + "solution/movies/8f2b1c3d"
    assert allows(full, "personalize:CreateBatchSegmentJob", solution)
    assert not allows(plain, "personalize:CreateBatchSegmentJob", solution)


def test_solution_versions_and_filters_are_named_exactly() -> None:
    """Given ARNs replace `solution/*`; filters get DescribeFilter on exactly themselves."""
    version = f"arn:aws:personalize:us-east-1:{ACCOUNT}:solution/movies/8f2b1c3d"
    filter_arn = f"arn:aws:personalize:us-east-1:{ACCOUNT}:filter/not-watched"
    caller = _build(
        CASES[0], solution_version_arns=[version, version], filter_arns=[filter_arn]
    ).caller_policy
    found = _by_sid(caller)
    solution = f"arn:aws:personalize:us-east-1:{ACCOUNT}:solution/movies"
    assert found["PersonalizeUseSolutionVersions"] == [version, solution]
    assert found["PersonalizeDescribeFilters"] == [filter_arn]
    assert "PersonalizeDescribeFilters" not in _by_sid(_build(CASES[0]).caller_policy)


# -- validation -----------------------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "job_input": "s3://bkt/in/",
    "job_output": "s3://bkt/out/",
    "role_arn": ROLE,
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"job_input": "bkt/in/"}, "must start with s3://"),
        ({"job_output": "s3:///out/"}, "no bucket name"),
        ({"job_input": "s3://Bad_Bucket/in/"}, "not a valid S3 bucket name"),
        ({"job_input": "s3://bkt/in*/"}, "wildcard"),
        ({"job_output": "s3://bkt/out-${aws:username}/"}, "policy variable"),
        ({"role_arn": f"arn:aws:iam::{ACCOUNT}:user/bob"}, "not an IAM role ARN"),
        ({"role_arn": "personalize-batch"}, "not an IAM role ARN"),
        ({"kms_key_arns": [f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/jobs"]}, "describe-key"),
        ({"kms_key_arns": ["alias/jobs"]}, "is an alias"),
        ({"kms_key_arns": ["1111aaaa-22bb-33cc-44dd-555555eeeeee"]}, "not a key ARN"),
        ({"job_output": "s3://bkt/in/"}, "at or under --job-input"),
        ({"job_output": "s3://bkt/in/out/"}, "at or under --job-input"),
        ({"job_input": "s3://bkt", "job_output": "s3://bkt/out/"}, "at or under --job-input"),
        ({"account_id": "210987654321"}, "is in account 123456789012"),
        ({"account_id": "12345"}, "12 digits"),
        ({"partition": "aws-cn"}, "pass partition 'aws'"),
        ({"partition": "azure"}, "not an AWS partition"),
        ({"region": "US East"}, "not an AWS region"),
        ({"solution_version_arns": ["arn:aws:personalize:::recipe/x"]}, "solution version ARN"),
        (
            {
                "region": "eu-west-1",
                "filter_arns": [f"arn:aws:personalize:us-east-1:{ACCOUNT}:filter/f"],
            },
            "not eu-west-1",
        ),
        ({"id_sources": ["s3://ids/a*.txt"]}, "wildcard"),
        ({"datasets": ["s3://bkt/results"]}, "end it with '/'"),
        ({"datasets": ["s3://bkt/out/results/"]}, "overlaps --job-output s3://bkt/out/"),
        ({"datasets": ["s3://bkt/"]}, "overlaps --job-input s3://bkt/in/"),
        ({"datasets": ["s3://Lake/recs/"]}, "not a valid S3 bucket name"),
    ],
)
def test_validation_says_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    """Inputs that would make a wrong or useless policy are ConfigErrors that say what to do."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        policies(**(GOOD | changes))


def test_sibling_output_is_not_under_input() -> None:
    """`in/` and `input-other/` are separate folders, so that output is accepted."""
    policies(job_input="s3://bkt/in", job_output="s3://bkt/input-other/", role_arn=ROLE)


# -- rendering ------------------------------------------------------------------------------------


def test_render_json_round_trips() -> None:
    """The JSON form is one object with the five documents under their names."""
    policy_set = _build(CASES[1], tags=True)
    loaded = json.loads(render(policy_set))
    assert loaded == policy_set.as_dict()
    assert list(loaded) == [
        "caller_policy",
        "service_role_trust_policy",
        "service_role_policy",
        "bucket_policies",
        "key_policies",
    ]


def test_render_text_has_a_heading_and_the_json_of_each_document() -> None:
    """The text form heads each document with what it is and where it goes."""
    policy_set = _build(CASES[1])
    text = render(policy_set, "text")
    for heading in [
        "Caller identity policy",
        "Service role trust policy",
        "Service role permissions policy",
        "Bucket policy of s3://in-bkt",
        "Bucket policy of s3://out.bkt",
        f"Key policy of {KEY_1}",
        f"Key policy of {KEY_2}",
    ]:
        assert f"{heading}\n{'=' * len(heading)}\n" in text
    for _, document in _all_documents(policy_set):
        assert json.dumps(document, indent=2) in text
    with pytest.raises(ValueError, match="json"):
        render(policy_set, "yaml")  # type: ignore[arg-type]


def test_exports() -> None:
    """`__all__` names what the module defines for callers."""
    assert sorted(iam.__all__) == ["PERSONALIZE_PRINCIPAL", "PolicySet", "policies", "render"]
    assert all(hasattr(iam, name) for name in iam.__all__)


# -- property: the caller never reaches S3 outside its two prefixes ------------------------------

_BUCKETS = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,10}[a-z0-9]", fullmatch=True).filter(
    lambda b: ".." not in b
)
_KEY_CHARS = st.sampled_from([*"abi-n_.0 /é", "input", "in", "out", "ü"])
_SEGMENT = st.text(st.sampled_from(list("abin-_.0é ")), min_size=1, max_size=6)
_PREFIXES = st.lists(_SEGMENT, max_size=3).map(lambda parts: "".join(p + "/" for p in parts))


@settings(max_examples=200, deadline=None)
@given(
    in_bucket=_BUCKETS,
    out_bucket=st.one_of(_BUCKETS, st.just("")),
    in_key=_PREFIXES,
    out_key=_PREFIXES,
    slash=st.booleans(),
    tails=st.lists(st.lists(_KEY_CHARS, max_size=5).map("".join), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 30), min_size=1, max_size=8),
)
def test_caller_never_reaches_s3_outside_its_prefixes(
    in_bucket: str,
    out_bucket: str,
    in_key: str,
    out_key: str,
    slash: bool,
    tails: list[str],
    cuts: list[int],
) -> None:
    """For random buckets and prefixes, no object action or listing of the caller policy
    reaches a key outside `in/` or `out/` of their buckets, while keys inside are reached."""
    out_bucket = out_bucket or in_bucket
    assume(not (in_bucket == out_bucket and out_key.startswith(in_key)))
    given_input = f"s3://{in_bucket}/{in_key if slash else in_key.rstrip('/')}"
    caller = policies(
        job_input=given_input, job_output=f"s3://{out_bucket}/{out_key}", role_arn=ROLE
    ).caller_policy
    inside = {(in_bucket, in_key), (out_bucket, out_key)}

    def within(bucket: str, key: str) -> bool:
        return any(bucket == b and key.startswith(p) for b, p in inside)

    # Probes: random keys, and near misses made of a cut prefix plus a tail (`in` + `put/x`).
    probes = [(b, tail) for b in {in_bucket, out_bucket} for tail in tails]
    probes += [
        (b, p[:cut] + tail) for b, p in inside for cut in cuts for tail in tails if cut < len(p)
    ]
    for bucket, key in probes:
        arn = f"arn:aws:s3:::{bucket}/{key}"
        if not within(bucket, key):
            for action in OBJECT_ACTIONS:
                assert not allows(caller, action, arn), (action, arn)
        listing = allows(caller, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": key})
        assert listing == within(bucket, key), (bucket, key)
    for bucket, prefix in inside:
        for tail in tails:
            assert allows(caller, "s3:GetObject", f"arn:aws:s3:::{bucket}/{prefix}{tail}")
            assert allows(caller, "s3:PutObject", f"arn:aws:s3:::{bucket}/{prefix}{tail}")


def test_the_cli_prints_the_policies_for_aws_cli_style_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fanout.cli import main

    key = "arn:aws:kms:us-east-1:111122223333:key/abc"
    code = main([
        "iam-policy", "--job-input", f"s3DataSource={{path=s3://my-bucket/in/,kmsKeyArn={key}}}",
        "--job-output", "s3://my-bucket/out/", "--role-arn", "arn:aws:iam::111122223333:role/P",
        "--region", "us-east-1",
    ])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert key in json.dumps(printed["key_policies"])
    assert set(printed) >= {"caller_policy", "service_role_trust_policy", "bucket_policies"}
    assert "s3:DeleteObject" not in json.dumps(printed["caller_policy"])


def test_the_cli_grants_an_s3_result_dataset_and_nothing_for_a_local_result(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fanout.cli import main

    base = ["iam-policy", "--job-input", "s3://my-bucket/in/", "--job-output",
            "s3://my-bucket/out/", "--role-arn", "arn:aws:iam::111122223333:role/P"]  # fmt: skip
    assert main([*base, "--out", "s3://lake/recs/", "--out", "recs.parquet"]) == 0
    caller = json.loads(capsys.readouterr().out)["caller_policy"]
    assert allows(caller, "s3:PutObject", "arn:aws:s3:::lake/recs/part-1-00000.parquet")
    assert not allows(caller, "s3:PutObject", "arn:aws:s3:::recs.parquet")
