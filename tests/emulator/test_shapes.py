"""The model-driven validator: AWS JSON 1.1 input rejection and response-shape checks."""

from __future__ import annotations

from typing import Any

import pytest

from fanout._shapes import (
    RequestInvalid,
    ServiceModel,
    compile_java_pattern,
    java_to_python_pattern,
)

ACCOUNT = "123456789012"
SOLUTION_VERSION_ARN = f"arn:aws:personalize:us-east-1:{ACCOUNT}:solution/sol/abcdef12"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/PersonalizeRole"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ALIAS_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/my-key"
NULL_MESSAGE = "Member must not be null"


@pytest.fixture(scope="module")
def model() -> ServiceModel:
    return ServiceModel()


def job(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobName": "fanout-shard-0001",
        "solutionVersionArn": SOLUTION_VERSION_ARN,
        "numResults": 25,
        "jobInput": {"s3DataSource": {"path": "s3://bucket/in/part-0001.json"}},
        "jobOutput": {"s3DataDestination": {"path": "s3://bucket/out/", "kmsKeyArn": KEY_ARN}},
        "roleArn": ROLE_ARN,
        "batchInferenceJobMode": "BATCH_INFERENCE",
        "tags": [{"tagKey": "project", "tagValue": "fanout"}],
    }
    body.update(overrides)
    return body


def rejection(model: ServiceModel, operation: str, params: object) -> RequestInvalid:
    with pytest.raises(RequestInvalid) as caught:
        model.validate_input(operation, params)
    return caught.value


def invalid(model: ServiceModel, operation: str, params: object) -> str:
    error = rejection(model, operation, params)
    assert error.code == "InvalidInputException", error.message
    return error.message


# -- service metadata ------------------------------------------------------------------------------


def test_metadata(model: ServiceModel) -> None:
    """The target prefix, operation names and modelled errors come from botocore's model."""
    assert model.target_prefix == "AmazonPersonalize"
    assert model.has_operation("CreateBatchInferenceJob")
    assert not model.has_operation("createBatchInferenceJob")
    assert "ListBatchInferenceJobs" in model.operation_names()
    codes = model.error_codes("CreateBatchInferenceJob")
    assert {"InvalidInputException", "LimitExceededException", "TooManyTagsException"} <= codes


def test_unknown_operation_is_a_programming_error(model: ServiceModel) -> None:
    """Validating an operation the model lacks raises ValueError, not RequestInvalid."""
    with pytest.raises(ValueError, match="NoSuchOperation"):
        model.validate_input("NoSuchOperation", {})


def test_every_operation_validates_an_empty_body(model: ServiceModel) -> None:
    """Each modelled operation accepts `{}` or rejects it with RequestInvalid, never crashes."""
    for operation in sorted(model.operation_names()):
        try:
            model.validate_input(operation, {})
        except RequestInvalid as error:
            assert error.code == "InvalidInputException"
            assert NULL_MESSAGE in error.message


# -- valid input -----------------------------------------------------------------------------------


def test_valid_create_batch_inference_job_passes(model: ServiceModel) -> None:
    """A well-formed CreateBatchInferenceJob request raises nothing."""
    model.validate_input("CreateBatchInferenceJob", job())


def test_unknown_members_and_nulls_are_ignored(model: ServiceModel) -> None:
    """Members not in the shape are ignored and a JSON null optional member counts as absent."""
    model.validate_input("CreateBatchInferenceJob", job(surprise={"x": [1]}, filterArn=None))


# -- lengths, patterns, enums, ranges --------------------------------------------------------------


def test_job_name_longer_than_63_fails(model: ServiceModel) -> None:
    """A 64-character jobName violates the max length 63 with the Coral message."""
    name = "a" * 64
    message = invalid(model, "CreateBatchInferenceJob", job(jobName=name))
    assert message == (
        f"1 validation error detected: Value '{name}' at 'jobName' failed to satisfy constraint: "
        "Member must have length less than or equal to 63"
    )


@pytest.mark.parametrize("name", ["-bad", "good name!", "ok\n"])
def test_job_name_pattern_must_match_whole_value(model: ServiceModel, name: str) -> None:
    """jobName must match its unanchored pattern in full, not just a matching prefix."""
    message = invalid(model, "CreateBatchInferenceJob", job(jobName=name))
    assert "at 'jobName' failed to satisfy constraint" in message
    assert "Member must satisfy regular expression pattern: ^[a-zA-Z0-9][a-zA-Z0-9\\-_]*" in message


def test_empty_job_name_reports_length_then_pattern(model: ServiceModel) -> None:
    """An empty jobName fails both min length and pattern, reported in that order."""
    message = invalid(model, "CreateBatchInferenceJob", job(jobName=""))
    assert message.startswith("2 validation errors detected: Value '' at 'jobName'")
    assert message.index("greater than or equal to 1") < message.index("regular expression")


def test_missing_required_member_is_null(model: ServiceModel) -> None:
    """A missing required member is reported as `Value null ... Member must not be null`."""
    body = job()
    del body["roleArn"]
    message = invalid(model, "CreateBatchInferenceJob", body)
    assert message == (
        "1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: "
        "Member must not be null"
    )
    assert NULL_MESSAGE in invalid(model, "CreateBatchInferenceJob", job(jobName=None))


def test_missing_nested_required_member_uses_dotted_path(model: ServiceModel) -> None:
    """A required member missing inside a structure is named by its dotted path."""
    message = invalid(model, "CreateBatchInferenceJob", job(jobInput={"s3DataSource": {}}))
    assert "Value null at 'jobInput.s3DataSource.path'" in message


def test_kms_alias_arn_fails_key_arn_pattern(model: ServiceModel) -> None:
    """kmsKeyArn must be a key ARN: an alias ARN fails `arn:aws.*:kms:.*:[0-9]{12}:key/.*`."""
    output = {"s3DataDestination": {"path": "s3://bucket/out/", "kmsKeyArn": ALIAS_ARN}}
    message = invalid(model, "CreateBatchInferenceJob", job(jobOutput=output))
    assert f"Value '{ALIAS_ARN}' at 'jobOutput.s3DataDestination.kmsKeyArn'" in message
    assert "pattern: arn:aws.*:kms:.*:[0-9]{12}:key/.*" in message


def test_nested_path_in_message(model: ServiceModel) -> None:
    """A pattern failure deep in the input names jobInput.s3DataSource.path."""
    source = {"s3DataSource": {"path": "ftp://bucket/in.json"}}
    message = invalid(model, "CreateBatchInferenceJob", job(jobInput=source))
    assert message == (
        "1 validation error detected: Value 'ftp://bucket/in.json' at "
        "'jobInput.s3DataSource.path' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: (s3|http|https)://.+"
    )


def test_job_mode_enum(model: ServiceModel) -> None:
    """batchInferenceJobMode outside its enum fails with the enum value set listed."""
    model.validate_input("CreateBatchInferenceJob", job(batchInferenceJobMode="THEME_GENERATION"))
    message = invalid(model, "CreateBatchInferenceJob", job(batchInferenceJobMode="BATCH"))
    assert (
        "Value 'BATCH' at 'batchInferenceJobMode' failed to satisfy constraint: "
        "Member must satisfy enum value set: [BATCH_INFERENCE, THEME_GENERATION]"
    ) in message


@pytest.mark.parametrize(
    ("value", "constraint"),
    [
        (0, "Member must have value greater than or equal to 1"),
        (101, "Member must have value less than or equal to 100"),
    ],
)
def test_max_results_range(model: ServiceModel, value: int, constraint: str) -> None:
    """ListBatchInferenceJobs maxResults must be in 1..100; the number is rendered bare."""
    message = invalid(model, "ListBatchInferenceJobs", {"maxResults": value})
    assert message == (
        f"1 validation error detected: Value {value} at 'maxResults' failed to satisfy "
        f"constraint: {constraint}"
    )
    model.validate_input("ListBatchInferenceJobs", {"maxResults": 100})


def test_tag_value_with_unicode_letter_passes(model: ServiceModel) -> None:
    """A tag value with non-ASCII letters, digits and spaces satisfies \\p{L}\\p{Z}\\p{N}."""
    tags = [{"tagKey": "équipe", "tagValue": "Zürich ٣ 東京"}]
    model.validate_input("CreateBatchInferenceJob", job(tags=tags))


def test_tag_value_with_hash_fails_and_is_masked(model: ServiceModel) -> None:
    """A '#' in a tag value fails at tags.N.member.tagValue and the sensitive value is masked."""
    tags = [{"tagKey": "a", "tagValue": "b"}, {"tagKey": "team", "tagValue": "secret#1"}]
    message = invalid(model, "CreateBatchInferenceJob", job(tags=tags))
    assert message.startswith(
        "1 validation error detected: Value '***' at 'tags.2.member.tagValue' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
    )
    assert "secret" not in message


def test_sensitive_long_value_is_masked(model: ServiceModel) -> None:
    """A too-long sensitive filterExpression is reported as '***', never echoed."""
    params = {
        "name": "f",
        "datasetGroupArn": f"arn:aws:personalize:us-east-1:{ACCOUNT}:dataset-group/g",
        "filterExpression": 'EXCLUDE ItemID WHERE Items.SECRET IN ("x")' + "y" * 2500,
    }
    message = invalid(model, "CreateFilter", params)
    assert "Value '***' at 'filterExpression'" in message
    assert "SECRET" not in message


def test_more_than_200_tags_fails_list_max(model: ServiceModel) -> None:
    """201 tags violate the Tags list max of 200, reported at 'tags' with a truncated value."""
    tags = [{"tagKey": f"k{i}", "tagValue": "v"} for i in range(201)]
    message = invalid(model, "CreateBatchInferenceJob", job(tags=tags))
    assert message.startswith("1 validation error detected: Value '[{tagKey=***, tagValue=***}")
    assert message.endswith(
        "...' at 'tags' failed to satisfy constraint: "
        "Member must have length less than or equal to 200"
    )
    assert len(message) < 600


def test_two_violations_in_member_order(model: ServiceModel) -> None:
    """Two violations are joined as `2 validation errors detected`, in the shape's member order."""
    message = invalid(model, "CreateBatchInferenceJob", job(roleArn="not-an-arn", jobName="x" * 64))
    assert message.startswith("2 validation errors detected: Value '")
    assert message.index("at 'jobName'") < message.index("; Value 'not-an-arn' at 'roleArn'")


def test_scalar_list_elements_reported_once_with_all_constraints(model: ServiceModel) -> None:
    """Bad elements of a list of strings give one Coral `Member must satisfy constraint` entry."""
    params = {"resourceArn": SOLUTION_VERSION_ARN, "tagKeys": ["ok", None, "bad#"]}
    message = invalid(model, "UntagResource", params)
    assert message == (
        "1 validation error detected: Value '[***, null, ***]' at 'tagKeys' failed to satisfy "
        "constraint: Member must satisfy constraint: [Member must not be null, "
        "Member must have length less than or equal to 128, "
        "Member must have length greater than or equal to 1, "
        "Member must satisfy regular expression pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$]"
    )


def test_map_keys_and_values_reported_coral_style(model: ServiceModel) -> None:
    """Bad map keys and values give `Map keys/Map value must satisfy constraint` at the map."""
    config = {"itemExplorationConfig": {"k" * 257: "v" * 1001}}
    message = invalid(model, "CreateBatchInferenceJob", job(batchInferenceJobConfig=config))
    path = "at 'batchInferenceJobConfig.itemExplorationConfig' failed to satisfy constraint: "
    assert message.startswith("2 validation errors detected: ")
    assert (
        path + "Map keys must satisfy constraint: [Member must have length less than or equal "
        "to 256]"
    ) in message
    assert (
        path + "Map value must satisfy constraint: [Member must have length less than or equal "
        "to 1000]"
    ) in message


def test_map_of_lists_path_uses_key(model: ServiceModel) -> None:
    """A list inside a map is named `<map>.<key>`."""
    params = {
        "name": "s",
        "datasetGroupArn": f"arn:aws:personalize:us-east-1:{ACCOUNT}:dataset-group/g",
        "solutionConfig": {
            "trainingDataConfig": {"excludedDatasetColumns": {"ITEMS": ["GENRE", "1bad"]}}
        },
    }
    message = invalid(model, "CreateSolution", params)
    assert (
        "Value '[GENRE, 1bad]' at 'solutionConfig.trainingDataConfig.excludedDatasetColumns.ITEMS'"
    ) in message


def test_java_digit_class_is_ascii_only(model: ServiceModel) -> None:
    """`\\d` in a model pattern matches only ASCII digits, as in Java."""
    arabic = "١٢٣٤٥٦٧٨٩٠١٢"
    message = invalid(
        model, "CreateBatchInferenceJob", job(roleArn=f"arn:aws:iam::{arabic}:role/r")
    )
    assert "at 'roleArn'" in message


def test_java_pattern_translation() -> None:
    """Java-only constructs keep their Java meaning after translation."""
    assert java_to_python_pattern(r"[a-z\d]\w") == r"[a-z0-9][a-zA-Z0-9_]"
    assert compile_java_pattern(r"\p{ASCII}{0,3}").fullmatch("abc")
    assert not compile_java_pattern(r"\p{ASCII}{0,3}").fullmatch("é")
    assert not compile_java_pattern(r"a.c").fullmatch("a\rc")
    assert compile_java_pattern(r"\Q1+1\E").fullmatch("1+1")
    assert compile_java_pattern(r"[a-z&&[^aeiou]]+").fullmatch("xyz")
    assert not compile_java_pattern(r"[a-z&&[^aeiou]]+").fullmatch("xay")
    assert compile_java_pattern(r"\p{L}") is compile_java_pattern(r"\p{L}")


def test_every_model_pattern_compiles(model: ServiceModel) -> None:
    """Every pattern in the personalize model translates and compiles."""
    import botocore.session

    shapes = botocore.session.get_session().get_service_data("personalize")["shapes"]
    patterns = {shape["pattern"] for shape in shapes.values() if "pattern" in shape}
    assert patterns
    for pattern in patterns:
        compile_java_pattern(pattern)


# -- deserialisation errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"jobName": 123}, "NUMBER_VALUE can not be converted to a String"),
        ({"jobName": {"a": 1}}, "Start of structure or map found where not expected."),
        ({"jobInput": "s3://bucket/in.json"}, "STRING_VALUE can not be converted to a Structure"),
        ({"numResults": "25"}, "STRING_VALUE can not be converted to an Integer"),
        ({"numResults": True}, "BOOLEAN_VALUE can not be converted to an Integer"),
        ({"numResults": 2.5}, "DECIMAL_VALUE can not be converted to an Integer"),
        ({"numResults": 2**40}, "NUMBER_VALUE can not be converted to an Integer"),
        ({"tags": {"tagKey": "a"}}, "Start of structure or map found where not expected."),
        ({"tags": "a=b"}, "STRING_VALUE can not be converted to a List"),
        ({"roleArn": [ROLE_ARN]}, "Start of list found where not expected."),
        ({"tags": [["a"]]}, "Start of list found where not expected."),
    ],
)
def test_wrong_types_are_serialization_errors(
    model: ServiceModel, overrides: dict[str, Any], expected: str
) -> None:
    """A JSON type the shape cannot hold raises SerializationException, before any constraint."""
    body = job(jobName="x" * 99)  # a constraint violation too: the type mismatch still wins
    body.update(overrides)
    error = rejection(model, "CreateBatchInferenceJob", body)
    assert error.code == "SerializationException"
    assert error.message.startswith(expected)


@pytest.mark.parametrize("params", [[], "body", 1, None])
def test_body_must_be_an_object(model: ServiceModel, params: object) -> None:
    """A request body that is not a JSON object is a SerializationException."""
    assert rejection(model, "ListBatchInferenceJobs", params).code == "SerializationException"


def test_doubles_accept_ints_and_floats(model: ServiceModel) -> None:
    """Double members take JSON ints and floats but not booleans or strings."""
    bounds: dict[str, Any] = {"name": "p", "minValue": 0, "maxValue": 0.5}
    ranges = {"continuousHyperParameterRanges": [bounds]}
    solution = {
        "name": "s",
        "datasetGroupArn": f"arn:aws:personalize:us-east-1:{ACCOUNT}:dataset-group/g",
        "solutionConfig": {"hpoConfig": {"algorithmHyperParameterRanges": ranges}},
    }
    model.validate_input("CreateSolution", solution)
    bounds["minValue"] = -2_000_000.5
    message = invalid(model, "CreateSolution", solution)
    assert (
        "Value -2000000.5 at 'solutionConfig.hpoConfig.algorithmHyperParameterRanges."
        "continuousHyperParameterRanges.1.member.minValue' failed to satisfy constraint: "
        "Member must have value greater than or equal to -1000000"
    ) in message
    for wrong in (False, "1"):
        bounds["minValue"] = wrong
        assert rejection(model, "CreateSolution", solution).code == "SerializationException"


# -- responses -------------------------------------------------------------------------------------


def described_job(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobName": "fanout-shard-0001",
        "batchInferenceJobArn": (
            f"arn:aws:personalize:us-east-1:{ACCOUNT}:batch-inference-job/fanout-shard-0001"
        ),
        "solutionVersionArn": SOLUTION_VERSION_ARN,
        "numResults": 25,
        "jobInput": {"s3DataSource": {"path": "s3://bucket/in/part-0001.json"}},
        "jobOutput": {"s3DataDestination": {"path": "s3://bucket/out/"}},
        "roleArn": ROLE_ARN,
        "batchInferenceJobMode": "BATCH_INFERENCE",
        "status": "ACTIVE",
        "creationDateTime": 1_700_000_000.123,
        "lastUpdatedDateTime": 1_700_000_600,
    }
    body.update(overrides)
    return {"batchInferenceJob": body}


def test_well_formed_describe_response_is_valid(model: ServiceModel) -> None:
    """A well-formed DescribeBatchInferenceJob response has no problems."""
    assert model.validate_output("DescribeBatchInferenceJob", described_job()) == []


def test_output_flags_unknown_member(model: ServiceModel) -> None:
    """A response member the output shape does not have is flagged with its path."""
    problems = model.validate_output("DescribeBatchInferenceJob", described_job(jobStatus="X"))
    assert len(problems) == 1
    assert "'batchInferenceJob.jobStatus'" in problems[0]
    assert "not in shape" in problems[0]


def test_output_flags_string_timestamp(model: ServiceModel) -> None:
    """A timestamp sent as an ISO string instead of epoch seconds is flagged."""
    body = described_job(creationDateTime="2024-01-01T00:00:00Z")
    problems = model.validate_output("DescribeBatchInferenceJob", body)
    assert len(problems) == 1
    assert "'batchInferenceJob.creationDateTime'" in problems[0]
    assert "epoch seconds" in problems[0]


def test_output_flags_types_constraints_and_nulls(model: ServiceModel) -> None:
    """Wrong types, enum and length violations, nulls and missing required members are flagged."""
    body = described_job(
        numResults="25", batchInferenceJobMode="BATCH", jobName="j" * 64, filterArn=None
    )
    body["batchInferenceJob"]["jobInput"] = {}
    problems = model.validate_output("DescribeBatchInferenceJob", body)
    text = "\n".join(problems)
    assert len(problems) == 5, text
    assert "'batchInferenceJob.numResults': STRING_VALUE can not be converted" in text
    assert "enum value set" in text
    assert "less than or equal to 63" in text
    assert "'batchInferenceJob.filterArn': null value" in text
    assert "'batchInferenceJob.jobInput.s3DataSource': required member missing" in text
    assert model.validate_output("DescribeBatchInferenceJob", []) != []
