"""fanout.awsargs against the AWS CLI v1 it mirrors, with awscli's own parser as the oracle."""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore
import botocore.session
import pytest
import yaml
from botocore import xform_name
from botocore.model import ServiceModel
from botocore.validate import ParamValidator
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fanout.awsargs import (
    OperationArgs,
    _skeleton,
    _yaml_document,
    add_newer_members,
    cli_name,
    use_newer_model,
)
from fanout.errors import ConfigError

BIN = Path(sys.executable).parent
OPERATIONS = ("CreateBatchInferenceJob", "CreateBatchSegmentJob")
# Personalize operations with nested numbers and booleans, for the type conversions.
EXTRA_OPERATIONS = ("CreateSolution", "CreateCampaign")
HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def _model() -> Any:
    """The model fanout validates against: botocore's, with the members AWS added since."""
    return use_newer_model(botocore.session.get_session()).get_service_model("personalize")


# -- the oracle: awscli's own argument pipeline ---------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What `aws` does with one option value before it would call AWS."""

    ok: bool
    value: Any = None
    error: str = ""  # awscli refused to parse the value
    problems: tuple[str, ...] = ()  # botocore's validation refused the parsed value


class AwsCli:
    """awscli v1 in process: file:// loading, shorthand/JSON unpacking, botocore validation."""

    def __init__(self) -> None:
        # The runtime botocore and s3transfer must be the imported ones: awscli otherwise aliases
        # its vendored copies (with a newer Personalize model) under those names.
        importlib.import_module("s3transfer")
        assert "awscli" not in (botocore.__file__ or "")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_DEFAULT_REGION", "us-east-1")
            env.setenv("AWS_CONFIG_FILE", os.devnull)
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
            env.setenv("AWS_DATA_PATH", "")
            awscli = importlib.import_module("awscli")
            env.setenv("AWS_DATA_PATH", str(Path(str(awscli.__file__)).parent / "data"))
            clidriver = importlib.import_module("awscli.clidriver")
            self._unpack = importlib.import_module("awscli.argprocess").unpack_argument
            self.driver = clidriver.create_clidriver()
            use_newer_model(self.driver.session)  # the CLI's own botocore has them too
            importlib.import_module("awscli.paramfile").register_uri_param_handler(
                self.driver.session
            )
            service = self.driver._get_command_table()["personalize"]
            self.commands = {
                op: service._get_command_table()[xform_name(op, "-")]
                for op in OPERATIONS + EXTRA_OPERATIONS
            }
            self.args = {op: dict(command.arg_table) for op, command in self.commands.items()}

    def run(self, operation: str, member: str, value: str | list[str]) -> Outcome:
        argument = self.args[operation][xform_name(member, "-")]
        if argument.argument_model.type_name == "list" and isinstance(value, str):
            value = [value]  # argparse gives a list option its values as a list
        try:
            unpacked = self._unpack(
                self.driver.session,
                "personalize",
                xform_name(operation, "-"),
                argument,
                value,
                None,
            )
            params: dict[str, Any] = {}
            argument.add_to_params(params, unpacked)
        except Exception as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}")
        shape = _model().operation_model(operation).input_shape
        report = ParamValidator().validate(params, shape).generate_report()
        problems = tuple(
            re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", line)
            for line in report.splitlines()
            if line and not line.startswith("Missing required parameter in input:")
        )
        if problems:
            return Outcome(False, problems=problems)
        return Outcome(True, value=params[member])


@pytest.fixture(scope="module")
def aws() -> AwsCli:
    return AwsCli()


def parse(operation: str, member: str, value: str | Sequence[str]) -> Any:
    args = OperationArgs.for_operation(operation)
    if isinstance(value, str):
        return args.parse_value(member, value)
    return args.parse_list_value(member, value)


def assert_same(aws: AwsCli, operation: str, member: str, value: str | list[str]) -> None:
    """fanout accepts exactly what the AWS CLI accepts, with the same result, else says why."""
    expected = aws.run(operation, member, value)
    try:
        got = parse(operation, member, value)
    except ConfigError as exc:
        message = str(exc)
        assert not expected.ok, f"fanout refused {value!r}, the AWS CLI gives {expected.value!r}"
        assert message.startswith(cli_name(member)) or cli_name(member) in message
        for line in expected.problems:
            assert line in message, f"{line!r} not in {message!r}"
        return
    assert expected.ok, (
        f"fanout accepted {value!r} as {got!r}; the AWS CLI refuses it: "
        f"{expected.error or expected.problems}"
    )
    assert got == expected.value
    # Equal and of the same types all the way down (1 != "1", True is not 1).
    assert _typed(got) == _typed(expected.value)


def _typed(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


# -- option names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS + EXTRA_OPERATIONS)
def test_options_match_the_awscli_argument_table(aws: AwsCli, operation: str) -> None:
    """Every input member has the CLI's option name, requiredness, type and list-ness."""
    cli = {
        argument.cli_name: (
            argument._serialized_name,
            argument.required,
            argument.argument_model.type_name,
            type(argument).__name__ == "ListArgument",
        )
        for name, argument in aws.args[operation].items()
        if name not in ("cli-input-json", "generate-cli-skeleton")
        and not name.startswith("no-")  # the --no-flag twin of a boolean
    }
    ours = {
        spec.cli_name: (spec.member, spec.required, spec.type_name, spec.nargs == "*")
        for spec in OperationArgs(operation).options()
    }
    assert ours == cli
    for spec in OperationArgs(operation).options():
        assert cli_name(spec.member) == spec.cli_name


def test_options_document_each_member_in_one_sentence() -> None:
    """OptionSpec carries the member, its type and the first sentence of its documentation."""
    specs = {spec.member: spec for spec in OperationArgs("CreateBatchInferenceJob").options()}
    assert specs["jobName"].cli_name == "--job-name"
    assert specs["jobName"].required
    assert specs["jobName"].documentation == "The name of the batch inference job to create."
    assert specs["numResults"].type_name == "integer"
    assert not specs["numResults"].required
    assert specs["tags"].nargs == "*"
    assert specs["jobInput"].nargs is None
    assert cli_name("batchInferenceJobConfig") == "--batch-inference-job-config"


def test_for_operation_takes_the_api_or_the_cli_name() -> None:
    """`create-batch-segment-job` and `CreateBatchSegmentJob` name the same operation."""
    assert OperationArgs.for_operation("create-batch-segment-job") == OperationArgs(
        "CreateBatchSegmentJob"
    )
    with pytest.raises(ValueError, match="no operation"):
        OperationArgs.for_operation("CreateNothing")


def test_an_unknown_option_is_refused_with_the_valid_ones() -> None:
    """Asking for a member the operation lacks is a ConfigError listing its options."""
    with pytest.raises(ConfigError, match=r"no option 'nope'.*--job-name"):
        OperationArgs("CreateBatchSegmentJob").parse_value("nope", "x")
    assert OperationArgs("CreateBatchSegmentJob").parse_value("--job-name", "j") == "j"


# -- differential: fixed values for every member --------------------------------------------------

STRINGS = [
    "my-job",
    "arn:aws:personalize:us-east-1:111122223333:solution/s/1",
    "",
    "  spaced  ",
    "a,b",
    "x=y",
    "'quoted'",
    '{"json": "stays a string"}',
    "[a,b]",
    "é ü",
    "file-ish://no",
]
INTEGERS = ["25", " 7 ", "-3", "0", "1_000", "x", "", "2.5", "1e3", "[1]"]

STRUCTURES: dict[str, list[str]] = {
    "jobInput": [
        "s3DataSource={path=s3://b/in/,kmsKeyArn=arn:aws:kms:us-east-1:111122223333:key/abc}",
        "s3DataSource={path=s3://b/in/}",
        " s3DataSource = { path = s3://b/in/ , kmsKeyArn = k } ",
        's3DataSource={path="s3://b/a,b/"}',
        "s3DataSource={path='s3://b/x y/'}",
        "s3DataSource={path=s3://b/a\\,b/}",
        "s3DataSource={path=s3://b/k=v/}",
        "s3DataSource={path=}",
        's3DataSource={path=""}',
        's3DataSource={path="say \\"hi\\""}',
        "s3DataSource={path='it\\'s'}",
        "s3DataSource={path=[a,b]}",
        "s3DataSource={path=s3://b/,}",
        "s3DataSource={path=a,path=b}",
        '{"s3DataSource": {"path": "s3://b/in/", "kmsKeyArn": "k"}}',
        '  {"s3DataSource": {"path": "s3://b/in/"}}',
        '{"s3DataSource": {"path": 5}}',
        '{"s3DataSource": {}}',
        '{"s3DataSource": {"path": "a"}',
        "s3DataSource={path=s3://b/,foo=1}",
        "s3DataSource={path=s3://b/",
        "s3DataSource={path=s3://b/}}",
        '[{"s3DataSource": {}}]',
        "s3DataSource=s3://b/",
        "path=s3://b/",
        "",
        "s3DataSource={path=a},s3DataSource={path=b}",
        "s3DataSource={path=a} ,",
        "s3DataSource @= {path=a}",
    ],
    "jobOutput": [
        "s3DataDestination={path=s3://b/out/}",
        "s3DataDestination={path=s3://b/out/,kmsKeyArn=k}",
        '{"s3DataDestination": {"path": "s3://b/out/"}}',
        "s3DataDestination={kmsKeyArn=k}",
    ],
    "batchInferenceJobConfig": [
        "itemExplorationConfig={explorationWeight=0.3,explorationItemAgeCutOff=30}",
        "itemExplorationConfig={}",
        'itemExplorationConfig={explorationWeight="0.3"}',
        "itemExplorationConfig={a=[1,2]}",
        "itemExplorationConfig={a={b=c}}",
        "itemExplorationConfig=x",
        "itemExplorationConfig={=v,#k/.:-=w}",
        '{"itemExplorationConfig": {"explorationWeight": "0.3"}}',
        '{"itemExplorationConfig": {"explorationWeight": 0.3}}',
        "rankingInfluence={POPULARITY=0.5}",
        "rankingInfluence={FRESHNESS=1,POPULARITY=0}",
        "rankingInfluence={POPULARITY=-1}",
        "rankingInfluence={POPULARITY=x}",
        "rankingInfluence=[0.5]",
        '{"rankingInfluence": {"FRESHNESS": 0.25}}',
        "itemExplorationConfig={explorationWeight=0.3},rankingInfluence={POPULARITY=1.0}",
    ],
    "themeGenerationConfig": [
        "fieldsForThemeGeneration={itemName=title}",
        '{"fieldsForThemeGeneration": {"itemName": "title"}}',
        "fieldsForThemeGeneration={}",
        "fieldsForThemeGeneration={itemName=[a]}",
    ],
}
LISTS: dict[str, list[list[str]]] = {
    "tags": [
        ["tagKey=a,tagValue=b", "tagKey=c,tagValue=d"],
        ["tagKey=a,tagValue=b"],
        ["tagKey=\"a,b\",tagValue='x y'"],
        ["tagKey=a,tagValue="],
        ["tagKey=,tagValue=b"],
        ["tagKey=a tagValue=b"],
        ["tagKey=a,tagValue=b,c"],
        ["tagKey=a,tagKey=b"],
        ['[{"tagKey": "a", "tagValue": "b"}]'],
        ['  [{"tagKey": "a"}]'],
        ['{"tagKey": "a", "tagValue": "b"}', '{"tagKey": "c"}'],
        ['{"tagKey": "a"}', "tagKey=c"],
        ["tagKey=a", "[x]"],
        ["tagKey=a", '[{"tagKey": "b"}]'],
        ['[{"tagKey": "a"}]', '[{"tagKey": "b"}]'],
        ["[{tagKey=a}]"],
        ["{tagKey=a}"],
        ["tagKey=a,tagValue=b", "oops"],
        [],
    ],
}
ENUMS = ["BATCH_INFERENCE", "THEME_GENERATION", "not-a-mode"]


def _cases() -> Iterator[tuple[str, str, str | list[str]]]:
    for operation in OPERATIONS:
        for spec in OperationArgs(operation).options():
            values: Sequence[str | list[str]]
            if spec.member in STRUCTURES:
                values = STRUCTURES[spec.member]
            elif spec.member in LISTS:
                values = LISTS[spec.member]
            elif spec.member == "batchInferenceJobMode":
                values = ENUMS
            elif spec.type_name == "integer":
                values = INTEGERS
            else:
                assert spec.type_name == "string", spec
                values = STRINGS
            for value in values:
                yield operation, spec.member, value


CASES = list(_cases())


def test_the_cases_cover_every_member_of_both_operations() -> None:
    """Each input member of both operations has differential cases."""
    covered = {(operation, member) for operation, member, _ in CASES}
    assert covered == {
        (operation, spec.member)
        for operation in OPERATIONS
        for spec in OperationArgs(operation).options()
    }


@pytest.mark.parametrize(("operation", "member", "value"), CASES, ids=repr)
def test_values_parse_as_the_awscli_parses_them(
    aws: AwsCli, operation: str, member: str, value: str | list[str]
) -> None:
    """Shorthand, JSON and scalar values give the CLI's parameters, or an error where it fails."""
    assert_same(aws, operation, member, value)


def test_a_list_option_takes_one_text_like_one_value(aws: AwsCli) -> None:
    """parse_value on a list member is the single-value form of parse_list_value."""
    args = OperationArgs("CreateBatchInferenceJob")
    one = "tagKey=a,tagValue=b"
    assert args.parse_value("tags", one) == args.parse_list_value("tags", [one])
    assert args.parse_value("tags", one) == aws.run("CreateBatchInferenceJob", "tags", [one]).value
    assert args.parse_list_value("tags", []) == []


@pytest.mark.parametrize(
    ("operation", "member", "value"),
    [
        (
            "CreateSolution",
            "solutionConfig",
            "hpoConfig={algorithmHyperParameterRanges={integerHyperParameterRanges="
            "[{name=a,minValue=1,maxValue=20}],continuousHyperParameterRanges="
            "[{name=b,minValue=0.5,maxValue=1e2}]}}",
        ),
        (
            "CreateSolution",
            "solutionConfig",
            "hpoConfig={algorithmHyperParameterRanges={integerHyperParameterRanges="
            "[{name=a,minValue=x}]}}",
        ),
        (
            "CreateSolution",
            "solutionConfig",
            "hpoConfig={algorithmHyperParameterRanges={integerHyperParameterRanges="
            "[{name=a,minValue=[1,2]}]}}",
        ),
        ("CreateSolution", "solutionConfig", "eventsConfig={eventParametersList=[{weight=.5}]}"),
        ("CreateSolution", "solutionConfig", 'eventsConfig={eventParametersList=[{weight=""}]}'),
        ("CreateCampaign", "campaignConfig", "enableMetadataWithRecommendations=TRUE"),
        ("CreateCampaign", "campaignConfig", "enableMetadataWithRecommendations=false"),
        ("CreateCampaign", "campaignConfig", "enableMetadataWithRecommendations=maybe"),
        ("CreateCampaign", "minProvisionedTPS", "0"),
        ("CreateCampaign", "minProvisionedTPS", "2"),
    ],
    ids=repr,
)
def test_shorthand_numbers_and_booleans_convert_as_the_awscli_converts(
    aws: AwsCli, operation: str, member: str, value: str
) -> None:
    """Shorthand strings become ints, floats and booleans per the model, as in the CLI."""
    assert_same(aws, operation, member, value)


def test_a_boolean_option_value_must_be_true_or_false() -> None:
    """A boolean member given a value takes true/false only (the CLI spells them as flags)."""
    args = OperationArgs("CreateSolution")
    assert args.parse_value("performHPO", "TRUE") is True
    assert args.parse_value("performHPO", "false") is False
    with pytest.raises(
        ConfigError, match=r"--perform-hpo: expected true or false.*--no-perform-hpo"
    ):
        args.parse_value("performHPO", "no")


# -- differential: random values -------------------------------------------------------------------

MAP_KEYS = st.from_regex(r"[A-Za-z0-9_.#/:-]{1,10}", fullmatch=True)
BARE = re.compile(r"[A-Za-z0-9/_.:@+-]+")


def values_for(shape: Any) -> st.SearchStrategy[Any]:
    """Valid values of a botocore shape (what botocore's validation accepts)."""
    kind = shape.type_name
    if kind == "structure":
        members = {name: values_for(member) for name, member in shape.members.items()}
        required = set(shape.required_members)
        return st.fixed_dictionaries(
            {name: s for name, s in members.items() if name in required},
            optional={name: s for name, s in members.items() if name not in required},
        )
    if kind == "list":
        return st.lists(values_for(shape.member), max_size=3)
    if kind == "map":
        return st.dictionaries(MAP_KEYS, values_for(shape.value), max_size=3)
    minimum = shape.metadata.get("min")
    if kind in ("integer", "long"):
        return st.integers(-(2**31) if minimum is None else minimum, 2**31 - 1)
    if kind in ("double", "float"):
        return st.floats(min_value=minimum, allow_nan=False, allow_infinity=False)
    assert kind == "string", kind
    if shape.enum:
        return st.sampled_from(shape.enum)
    # A quoted value ending in a backslash swallows the next quote: the syntax cannot say it.
    return st.text(min_size=shape.metadata.get("min", 0), max_size=12).filter(
        lambda text: not text.endswith("\\")
    )


def shorthand(value: Any, *, top: bool = False) -> str:
    """Render a value in AWS CLI shorthand syntax."""
    if isinstance(value, dict):
        inner = ",".join(f"{key}={shorthand(item)}" for key, item in value.items())
        return inner if top else "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ",".join(shorthand(item) for item in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


STRUCTURE_MEMBERS = [
    ("CreateBatchInferenceJob", "jobInput"),
    ("CreateBatchInferenceJob", "jobOutput"),
    ("CreateBatchInferenceJob", "batchInferenceJobConfig"),
    ("CreateBatchInferenceJob", "themeGenerationConfig"),
    ("CreateBatchSegmentJob", "jobInput"),
    ("CreateSolution", "solutionConfig"),
]


@pytest.mark.parametrize(("operation", "member"), STRUCTURE_MEMBERS)
@HYPOTHESIS
@given(data=st.data())
def test_structures_round_trip_through_shorthand_and_json(
    aws: AwsCli, operation: str, member: str, data: st.DataObject
) -> None:
    """A valid structure rendered as shorthand or as JSON parses back to itself, as in the CLI."""
    shape = _model().operation_model(operation).input_shape.members[member]
    value = data.draw(values_for(shape))
    assert parse(operation, member, json.dumps(value)) == value
    assume(value)
    text = shorthand(value, top=True)
    assert parse(operation, member, text) == value
    assert aws.run(operation, member, text) == Outcome(True, value=value)


@HYPOTHESIS
@given(data=st.data())
def test_tags_round_trip_through_shorthand_and_json(aws: AwsCli, data: st.DataObject) -> None:
    """Tags as several shorthand values, or as one JSON list, parse back to themselves."""
    shape = _model().operation_model("CreateBatchInferenceJob").input_shape.members["tags"]
    tags = data.draw(values_for(shape))
    texts = [shorthand(tag, top=True) for tag in tags]
    assert parse("CreateBatchInferenceJob", "tags", texts) == tags
    assert aws.run("CreateBatchInferenceJob", "tags", texts) == Outcome(True, value=tags)
    assert parse("CreateBatchInferenceJob", "tags", [json.dumps(tags)]) == tags
    assert parse("CreateBatchInferenceJob", "tags", json.dumps(tags)) == tags


KEYS = st.sampled_from(
    ["s3DataSource", "path", "kmsKeyArn", "itemExplorationConfig", "tagKey", "tagValue", "x", ""]
)
ATOMS = st.sampled_from(
    ["s3://b/in/", "a", "", "0.3", "x y", "a=b", "é", "\U0001f600", "\\,", "\\", "@", " ", "\t"]
)
SCALARS = st.one_of(
    ATOMS,
    ATOMS.map(lambda atom: f"'{atom}'"),
    ATOMS.map(lambda atom: f'"{atom}"'),
    st.lists(ATOMS, min_size=2, max_size=3).map(",".join),
)
SPACE = st.sampled_from(["", "", " ", "\n"])


def _containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(KEYS, st.sampled_from(["=", " = ", "@="]), children).map("".join)
    return st.one_of(
        st.lists(children, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(pair, max_size=3).map(lambda pairs: "{" + ",".join(pairs) + "}"),
        st.tuples(SPACE, st.lists(pair, max_size=2).map(",".join), SPACE).map("".join),
    )


SHORTHAND_ISH = st.lists(
    st.tuples(KEYS, SPACE, st.sampled_from(["=", "@=", ""]), st.recursive(SCALARS, _containers)),
    min_size=1,
    max_size=3,
).map(lambda pairs: ",".join("".join(pair) for pair in pairs))


@HYPOTHESIS
@given(
    member=st.sampled_from(["jobInput", "batchInferenceJobConfig", "themeGenerationConfig"]),
    text=SHORTHAND_ISH,
    cut=st.integers(0, 200),
    insert=st.sampled_from(["", "", "{", "}", "[", "]", ",", "=", "'", '"', "\\"]),
)
def test_random_shorthand_text_is_taken_or_refused_as_the_awscli_does(
    aws: AwsCli, member: str, text: str, cut: int, insert: str
) -> None:
    """Any shorthand-like text: same parameters as the CLI, or a ConfigError where it fails."""
    cut = min(cut, len(text))
    assert_same(aws, "CreateBatchInferenceJob", member, text[:cut] + insert + text[cut:])


@HYPOTHESIS
@given(texts=st.lists(SHORTHAND_ISH, min_size=1, max_size=3))
def test_random_tag_values_are_taken_or_refused_as_the_awscli_does(
    aws: AwsCli, texts: list[str]
) -> None:
    """Several shorthand-like values for --tags: same list as the CLI, or a ConfigError."""
    assert_same(aws, "CreateBatchSegmentJob", "tags", texts)


# -- errors ----------------------------------------------------------------------------------------


def _error(operation: str, member: str, value: str | list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(operation, member, value)
    return str(caught.value)


def test_unbalanced_braces_name_the_option_and_point_at_the_end() -> None:
    """A missing '}' is reported at the character where the value ends, with a caret."""
    message = _error("CreateBatchInferenceJob", "jobInput", "s3DataSource={path=s3://b/i")
    assert message.startswith("--job-input: invalid shorthand syntax at character 28: ")
    assert "expected ',' between two Key=Value pairs, found the end of the value" in message
    assert "    s3DataSource={path=s3://b/i\n" + " " * 31 + "^" in message


def test_a_stray_closing_brace_is_pointed_at() -> None:
    """An extra '}' is reported at its own position."""
    message = _error("CreateBatchInferenceJob", "jobInput", "s3DataSource={path=a}}")
    assert "character 22" in message
    assert "found '}'" in message


def test_an_unknown_key_lists_the_valid_keys_and_where_it_is() -> None:
    """A key the structure lacks is refused, with the valid keys and its character position."""
    message = _error("CreateBatchSegmentJob", "jobInput", "s3DataSource={path=s3://b/,foo=1}")
    assert message.startswith("--job-input: parameter validation failed:")
    assert 'Unknown parameter in jobInput.s3DataSource: "foo", must be one of: path, kmsKeyArn' in (
        message
    )
    assert "(character 28)" in message
    assert "keys are case-sensitive" in message


def test_an_unknown_key_in_json_names_its_path() -> None:
    """In JSON the unknown key is named by its path (no positions there)."""
    message = _error("CreateBatchSegmentJob", "jobInput", '{"s3DataSource": {"Path": "x"}}')
    assert 'Unknown parameter in jobInput.s3DataSource: "Path"' in message
    assert 'Missing required parameter in jobInput.s3DataSource: "path"' in message


def test_a_wrong_integer_names_the_option_and_the_value() -> None:
    """A non-integer --num-results is refused with the value and an example."""
    message = _error("CreateBatchInferenceJob", "numResults", "ten")
    assert message == "--num-results: expected an integer, got 'ten'. Give e.g. --num-results 25."


def test_a_wrong_nested_integer_points_at_its_character() -> None:
    """A shorthand value that must be an integer is refused with its path and position."""
    text = "hpoConfig={algorithmHyperParameterRanges={integerHyperParameterRanges=[{minValue=x}]}}"
    message = _error("CreateSolution", "solutionConfig", text)
    assert message.startswith(
        "--solution-config: hpoConfig.algorithmHyperParameterRanges."
        "integerHyperParameterRanges[0].minValue must be an integer, got 'x' (character 82)"
    )


def test_bad_json_names_the_option_and_the_position() -> None:
    """Invalid JSON is reported with its line, column and a caret."""
    message = _error("CreateBatchInferenceJob", "jobInput", '{"s3DataSource": {"path": "a"}')
    assert message.startswith("--job-input: invalid JSON: Expecting ',' delimiter at line 1,")
    assert "(character 31)" in message


def test_bad_json_in_one_of_several_values_names_the_item() -> None:
    """A bad JSON element among several --tags values says which one."""
    message = _error("CreateBatchInferenceJob", "tags", ['{"tagKey": "a"}', '{"tagKey": }'])
    assert message.startswith("--tags (item 2): invalid JSON")


def test_a_duplicate_key_suggests_separate_values() -> None:
    """Repeating a top-level key hints that list items are separated by spaces."""
    message = _error("CreateBatchInferenceJob", "tags", ["tagKey=a,tagValue=b,tagKey=c"])
    assert "--tags: key 'tagKey' is given twice" in message
    assert "--tags tagKey=a,tagValue=b tagKey=c,tagValue=d" in message


def test_a_value_list_where_a_string_belongs_explains_the_comma() -> None:
    """`tagValue=b,c` makes a list; the error says so and how to keep the comma."""
    message = _error("CreateBatchInferenceJob", "tags", ["tagKey=a,tagValue=b,c"])
    assert "Invalid type for parameter tags[0].tagValue, value: ['b', 'c'], type: list" in message
    assert 'makes a list: quote it ("b,c") or escape the comma (b\\,c)' in message
    assert "(character 19 of value 1)" in message


def test_several_values_for_a_single_option_are_refused() -> None:
    """A non-list option given two values is a ConfigError."""
    with pytest.raises(ConfigError, match="--job-name takes exactly one value, got 2"):
        OperationArgs("CreateBatchInferenceJob").parse_list_value("jobName", ["a", "b"])


# -- file:// and fileb:// --------------------------------------------------------------------------


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "in.json").write_text('{"s3DataSource": {"path": "s3://b/in/"}}\n')
    (tmp_path / "in.txt").write_text("s3DataSource={path=s3://b/in/}")
    (tmp_path / "name.txt").write_text("my-job\n")
    (tmp_path / "tags.json").write_text('[{"tagKey": "a", "tagValue": "b"}]')
    (tmp_path / "tags.txt").write_text("tagKey=a,tagValue=b")
    (tmp_path / "path.txt").write_text("s3://b/from-file/")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    return tmp_path


def test_file_values_are_read_and_parsed_as_the_awscli_does(aws: AwsCli, files: Path) -> None:
    """file:// reads the whole value (JSON, shorthand or a string) from a UTF-8 file."""
    cases: list[tuple[str, str | list[str]]] = [
        ("jobInput", f"file://{files}/in.json"),
        ("jobInput", f"file://{files}/in.txt"),
        ("jobName", f"file://{files}/name.txt"),
        ("tags", [f"file://{files}/tags.json"]),
        ("tags", [f"file://{files}/tags.txt"]),
        ("tags", [f"file://{files}/tags.json", "tagKey=c"]),
        ("jobInput", f"s3DataSource={{path@=file://{files}/path.txt}}"),
        ("jobInput", f"s3DataSource={{path=file://{files}/path.txt}}"),
        ("jobInput", f"s3DataSource={{path@=file://{files}/missing.txt}}"),
        ("jobInput", f"file://{files}/missing.json"),
        ("jobName", f"file://{files}/latin1.txt"),
    ]
    for member, value in cases:
        assert_same(aws, "CreateBatchInferenceJob", member, value)
    assert parse("CreateBatchInferenceJob", "jobInput", f"file://{files}/in.json") == {
        "s3DataSource": {"path": "s3://b/in/"}
    }


def test_a_missing_file_names_the_option_and_the_path(files: Path) -> None:
    """A file:// value whose file is missing is a ConfigError with option and path."""
    message = _error("CreateBatchInferenceJob", "jobInput", f"file://{files}/missing.json")
    assert message.startswith(f"--job-input: cannot read file://{files}/missing.json: ")
    assert "No such file or directory" in message


def test_a_file_that_is_not_utf8_suggests_fileb(files: Path) -> None:
    """A file:// value that is not UTF-8 text is refused with a hint."""
    message = _error("CreateBatchInferenceJob", "jobName", f"file://{files}/latin1.txt")
    assert "not UTF-8 text (use fileb:// for binary data)" in message


def test_fileb_is_only_for_blobs(files: Path) -> None:
    """fileb:// on a non-blob member is refused (Personalize batch jobs have no blobs)."""
    message = _error("CreateBatchInferenceJob", "jobName", f"fileb://{files}/name.txt")
    assert message.startswith("--job-name: fileb:// gives raw bytes, which only a blob")


def test_file_paths_expand_the_home_directory(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`file://~/x` and `$VARS` expand like in the AWS CLI."""
    monkeypatch.setenv("HOME", str(files))
    monkeypatch.setenv("FANOUT_TEST_DIR", str(files))
    assert parse("CreateBatchInferenceJob", "jobName", "file://~/name.txt") == "my-job\n"
    assert parse("CreateBatchInferenceJob", "jobName", "file://$FANOUT_TEST_DIR/name.txt") == (
        "my-job\n"
    )


# -- --cli-input-json / --cli-input-yaml and merging -----------------------------------------------


def test_cli_input_json_inline_and_from_a_file(tmp_path: Path) -> None:
    """--cli-input-json takes inline JSON or file://, giving the parameters as they are."""
    args = OperationArgs("CreateBatchInferenceJob")
    document = {"jobName": "j", "numResults": 5, "jobInput": {"s3DataSource": {"path": "s3://b/"}}}
    assert args.load_cli_input(json.dumps(document)) == document
    (tmp_path / "input.json").write_text(json.dumps(document))
    assert args.load_cli_input(f"file://{tmp_path}/input.json") == document
    assert args.load_cli_input(args.skeleton()) == json.loads(args.skeleton())


def test_cli_input_yaml_inline_and_from_a_file(tmp_path: Path) -> None:
    """--cli-input-yaml reads YAML; the yaml-input skeleton reads back as the input one."""
    args = OperationArgs("CreateBatchSegmentJob")
    text = "jobName: j\nnumResults: 5\njobInput:\n  s3DataSource:\n    path: s3://b/\n"
    expected = {"jobName": "j", "numResults": 5, "jobInput": {"s3DataSource": {"path": "s3://b/"}}}
    assert args.load_cli_input(text, yaml=True) == expected
    (tmp_path / "input.yaml").write_text(text)
    assert args.load_cli_input(f"file://{tmp_path}/input.yaml", yaml=True) == expected
    assert args.load_cli_input(args.skeleton("yaml-input"), yaml=True) == json.loads(
        args.skeleton()
    )


def test_cli_input_yaml_reads_yaml_1_2_scalars() -> None:
    """As CLI v2 (YAML 1.2): no/yes/on stay strings, 0o10 is octal, 1_000 is an int."""
    args = OperationArgs("CreateBatchSegmentJob")
    loaded = args.load_cli_input(
        "jobName: no\nroleArn: on\nfilterArn: 'yes'\nnumResults: 0o10\nsolutionVersionArn: ~\n",
        yaml=True,
    )
    assert loaded == {
        "jobName": "no",
        "roleArn": "on",
        "filterArn": "yes",
        "numResults": 8,
        "solutionVersionArn": None,
    }
    assert args.load_cli_input("numResults: 1_000", yaml=True) == {"numResults": 1000}
    assert args.load_cli_input("numResults: 012", yaml=True) == {"numResults": 12}
    assert args.load_cli_input("jobName: 1.5e3", yaml=True) == {"jobName": 1500.0}


def test_cli_input_yaml_refuses_a_duplicate_key() -> None:
    """A key given twice in one mapping is invalid YAML for the CLI's loader, and here."""
    with pytest.raises(ConfigError, match=r"--cli-input-yaml: invalid YAML at line 2.*duplicate"):
        OperationArgs("CreateBatchSegmentJob").load_cli_input("jobName: a\njobName: b\n", yaml=True)


def test_cli_input_must_be_an_object() -> None:
    """A JSON list (or a YAML scalar) is refused: the input maps parameter names to values."""
    args = OperationArgs("CreateBatchSegmentJob")
    with pytest.raises(ConfigError, match=r"--cli-input-json: expected a JSON object.*got list"):
        args.load_cli_input("[1, 2]")
    with pytest.raises(ConfigError, match=r"--cli-input-yaml: expected a YAML mapping.*NoneType"):
        args.load_cli_input("", yaml=True)


def test_cli_input_unknown_keys_list_the_valid_ones() -> None:
    """Top-level keys that are not members are refused, as botocore's validation does."""
    with pytest.raises(ConfigError) as caught:
        OperationArgs("CreateBatchSegmentJob").load_cli_input('{"jobName": "j", "job-name": "x"}')
    message = str(caught.value)
    assert message.startswith("--cli-input-json: parameter validation failed:")
    assert 'Unknown parameter in input: "job-name", must be one of: jobName, ' in message
    assert (
        "solutionVersionArn, filterArn, numResults, jobInput, jobOutput, roleArn, tags" in message
    )


def test_cli_input_bad_json_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    """Invalid JSON and a missing file:// are ConfigErrors naming --cli-input-json."""
    args = OperationArgs("CreateBatchSegmentJob")
    with pytest.raises(ConfigError, match=r"--cli-input-json: invalid JSON: .* at line 1"):
        args.load_cli_input('{"jobName": }')
    with pytest.raises(ConfigError, match="--cli-input-json: cannot read file://"):
        args.load_cli_input(f"file://{tmp_path}/nope.json")
    with pytest.raises(ConfigError, match="--cli-input-yaml: invalid YAML at line 1"):
        args.load_cli_input("jobName: [", yaml=True)


def test_explicit_options_override_cli_input_keys_whole() -> None:
    """An explicit option replaces the whole top-level key from --cli-input-json (no deep merge)."""
    args = OperationArgs("CreateBatchInferenceJob")
    cli_input = args.load_cli_input(
        '{"jobName": "from-json", "jobInput": {"s3DataSource": {"path": "a", "kmsKeyArn": "k"}},'
        ' "numResults": 5}'
    )
    explicit = {
        "jobName": args.parse_value("jobName", "explicit"),
        "jobInput": args.parse_value("jobInput", "s3DataSource={path=b}"),
        "filterArn": None,  # not given
    }
    assert args.merge(cli_input, explicit) == {
        "jobName": "explicit",
        "jobInput": {"s3DataSource": {"path": "b"}},
        "numResults": 5,
    }


def test_merge_validates_what_the_cli_input_left() -> None:
    """Values kept from --cli-input-json are validated like the request the CLI would send."""
    args = OperationArgs("CreateBatchInferenceJob")
    skeleton = args.load_cli_input(args.skeleton())
    with pytest.raises(ConfigError) as caught:
        args.merge(skeleton, {"jobName": "j"})
    message = str(caught.value)
    assert "Invalid length for parameter tags[0].tagKey, value: 0, valid min length: 1" in message
    assert "(from --cli-input-json/--cli-input-yaml)" in message
    assert "jobName" not in message  # the empty skeleton jobName was overridden
    skeleton.pop("tags")
    merged = args.merge(skeleton, {"jobName": "j"})
    assert merged["jobName"] == "j"


# -- members AWS added after the runtime botocore -------------------------------------------------


@pytest.mark.awscli
def test_the_bundled_aws_cli_skeleton_with_ranking_influence_is_taken(tmp_path: Path) -> None:
    """A skeleton from the AWS CLI (its newer botocore has rankingInfluence), filled in, loads
    from file:// and merges into a request that carries rankingInfluence with float weights."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    skeleton = json.loads(_aws(env, "create-batch-inference-job", "--generate-cli-skeleton").stdout)
    assert "rankingInfluence" in skeleton["batchInferenceJobConfig"]
    for unused in ("filterArn", "tags", "themeGenerationConfig", "batchInferenceJobMode"):
        del skeleton[unused]
    skeleton["batchInferenceJobConfig"] = {"rankingInfluence": {"POPULARITY": 0.5, "FRESHNESS": 1}}
    skeleton["numResults"] = 10
    (tmp_path / "job.json").write_text(json.dumps(skeleton))
    args = OperationArgs("CreateBatchInferenceJob")
    loaded = args.load_cli_input(f"file://{tmp_path}/job.json")
    merged = args.merge(loaded, {"jobName": "nightly"})
    assert merged["batchInferenceJobConfig"] == {
        "rankingInfluence": {"POPULARITY": 0.5, "FRESHNESS": 1}
    }
    assert "rankingInfluence" in args.skeleton()  # fanout's own skeleton shows it too


def test_ranking_influence_is_parsed_and_validated_like_the_cli() -> None:
    """Shorthand weights become floats; a negative one is refused as botocore refuses it."""
    args = OperationArgs("CreateBatchInferenceJob")
    value = args.parse_value("batchInferenceJobConfig", "rankingInfluence={POPULARITY=0.5}")
    assert value == {"rankingInfluence": {"POPULARITY": 0.5}}
    assert type(value["rankingInfluence"]["POPULARITY"]) is float
    with pytest.raises(ConfigError, match=re.escape("rankingInfluence.POPULARITY, value: -1.0")):
        args.parse_value("batchInferenceJobConfig", "rankingInfluence={POPULARITY=-1}")


def test_newer_members_are_added_once_and_never_replace_botocores() -> None:
    """add_newer_members fills in what the model lacks; a model that has it keeps its own."""
    lacking: dict[str, Any] = {
        "shapes": {"BatchInferenceJobConfig": {"type": "structure", "members": {}}}
    }
    add_newer_members(lacking)
    once = json.dumps(lacking, sort_keys=True)
    assert add_newer_members(lacking) is lacking and json.dumps(lacking, sort_keys=True) == once
    config = lacking["shapes"]["BatchInferenceJobConfig"]["members"]
    assert config["rankingInfluence"]["shape"] == "RankingInfluence"
    assert lacking["shapes"]["RankingInfluenceType"]["enum"] == ["POPULARITY", "FRESHNESS"]
    newer: dict[str, Any] = {
        "shapes": {
            "BatchInferenceJobConfig": {
                "type": "structure",
                "members": {"rankingInfluence": {"shape": "RankingInfluence2"}},
            },
        }
    }
    add_newer_members(newer)
    assert newer["shapes"]["BatchInferenceJobConfig"]["members"] == {
        "rankingInfluence": {"shape": "RankingInfluence2"}
    }
    assert "RankingInfluence" not in newer["shapes"]


def test_merge_does_not_demand_required_members() -> None:
    """Required top-level members may come later (fanout fills job names and S3 paths)."""
    assert OperationArgs("CreateBatchSegmentJob").merge({}, {"numResults": 3}) == {"numResults": 3}


# -- skeletons -------------------------------------------------------------------------------------


def _enum_members(shape: Any, seen: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Member names whose shape is an enum string, anywhere under ``shape``."""
    found: dict[str, list[str]] = {}
    if shape.name in seen:
        return found
    children: list[tuple[str, Any]] = []
    if shape.type_name == "structure":
        children = list(shape.members.items())
    elif shape.type_name == "list":
        children = [("", shape.member)]
    elif shape.type_name == "map":
        children = [("", shape.value)]
    for name, child in children:
        if getattr(child, "enum", None) and name:
            found[name] = list(child.enum)
        found.update(_enum_members(child, seen | {shape.name}))
    return found


@pytest.fixture(scope="module")
def aws_cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The AWS CLI's environment, with the Personalize model fanout runs on.

    awscli 1.4x bundles its own, newer botocore; pointing AWS_DATA_PATH at fanout's model (the
    runtime botocore's, plus the members AWS added since) makes the comparison about the skeleton
    rules, not about model versions.
    """
    tmp = tmp_path_factory.mktemp("aws-cli")
    model_dir = tmp / "models" / "personalize"
    loader = use_newer_model(botocore.session.get_session()).get_component("data_loader")
    version = loader.determine_latest_version("personalize", "service-2")
    (model_dir / version).mkdir(parents=True)
    model = loader.load_service_model("personalize", "service-2")
    (model_dir / version / "service-2.json").write_text(json.dumps(model))
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_DATA_PATH": str(tmp / "models"),
        "AWS_CONFIG_FILE": str(tmp / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-credentials"),
        "AWS_PAGER": "",
    }


def _aws(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "aws"), "personalize", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


REQUIRED_ARGS = [
    "--job-name", "j",
    "--solution-version-arn", "arn:aws:personalize:us-east-1:111122223333:solution/s/1",
    "--job-input", "s3DataSource={path=s3://b/in/}",
    "--job-output", "s3DataDestination={path=s3://b/out/}",
    "--role-arn", "arn:aws:iam::111122223333:role/r",
]  # fmt: skip


@pytest.mark.awscli
@pytest.mark.parametrize("operation", OPERATIONS)
def test_input_skeleton_is_what_the_aws_cli_prints(
    aws_cli_env: dict[str, str], operation: str
) -> None:
    """`--generate-cli-skeleton [input]` text is the real CLI's, enums fixed to the first."""
    args = OperationArgs(operation)
    for extra in ([], ["input"]):
        result = _aws(aws_cli_env, xform_name(operation, "-"), "--generate-cli-skeleton", *extra)
        assert result.returncode == 0, result.stderr
        ours, theirs = args.skeleton("input"), result.stdout
        for member, values in _enum_members(
            _model().operation_model(operation).input_shape
        ).items():
            choice = "|".join(map(re.escape, values))
            assert re.search(rf'"{member}": "{values[0]}"', ours)
            ours = re.sub(rf'"{member}": "(?:{choice})"', f'"{member}": "<enum>"', ours)
            theirs = re.sub(rf'"{member}": "(?:{choice})"', f'"{member}": "<enum>"', theirs)
        assert ours == theirs


@pytest.mark.awscli
@pytest.mark.parametrize("operation", OPERATIONS)
def test_output_skeleton_is_what_the_aws_cli_prints(
    aws_cli_env: dict[str, str], operation: str
) -> None:
    """`--generate-cli-skeleton output` text is the real CLI's."""
    result = _aws(
        aws_cli_env, xform_name(operation, "-"), *REQUIRED_ARGS, "--generate-cli-skeleton", "output"
    )
    assert result.returncode == 0, result.stderr
    assert OperationArgs(operation).skeleton("output") == result.stdout


@pytest.mark.awscli
def test_aws_cli_v1_has_no_yaml_skeleton(aws_cli_env: dict[str, str]) -> None:
    """CLI v1 refuses `yaml-input` (a CLI v2 feature): that kind follows CLI v2 instead."""
    result = _aws(aws_cli_env, "create-batch-segment-job", "--generate-cli-skeleton", "yaml-input")
    assert result.returncode == 2
    assert "Invalid choice" in result.stderr


@pytest.mark.parametrize("operation", OPERATIONS)
def test_yaml_skeleton_holds_the_input_skeleton_with_comments(operation: str) -> None:
    """yaml-input reads back as the input skeleton; each member's comment is CLI v2's."""
    args = OperationArgs(operation)
    text = args.skeleton("yaml-input")
    assert yaml.safe_load(text) == json.loads(args.skeleton("input"))
    comments = {
        line.split(":", 1)[0]: line.split("# ", 1)[1]
        for line in text.splitlines()
        if not line.startswith(" ") and "# " in line
    }
    for spec in args.options():
        shape = _model().operation_model(operation).input_shape.members[spec.member]
        expected = " ".join(
            (["[REQUIRED]"] if spec.required else [])
            + [spec.documentation]
            + (
                [f"Valid values are: {', '.join(shape.enum)}."]
                if getattr(shape, "enum", None)
                else []
            )
        )
        assert comments[spec.member] == expected


def test_yaml_skeleton_lays_out_comments_as_ruamel_does() -> None:
    """The first commented key of a mapping gets two spaces before '#', later ones one."""
    lines = OperationArgs("CreateBatchInferenceJob").skeleton("yaml-input").splitlines()
    assert lines[0].startswith("jobName: ''  # [REQUIRED] ")
    assert lines[1].startswith("solutionVersionArn: '' # [REQUIRED] ")
    assert "  s3DataSource:  # [REQUIRED] " in "\n".join(lines)
    assert "- tagKey: ''  # [REQUIRED] One part of a key-value pair that makes up a tag." in lines
    assert (
        "  tagValue: '' # [REQUIRED] The optional part of a key-value pair that makes up a tag."
        in (lines)
    )
    assert any(line.startswith("batchInferenceJobMode: BATCH_INFERENCE # ") for line in lines)


SYNTHETIC = {
    "metadata": {
        "apiVersion": "2020-01-01",
        "endpointPrefix": "synth",
        "jsonVersion": "1.1",
        "protocol": "json",
        "serviceId": "Synth",
        "signatureVersion": "v4",
        "targetPrefix": "Synth",
    },
    "operations": {
        "Make": {
            "name": "Make",
            "http": {"method": "POST", "requestUri": "/"},
            "input": {"shape": "MakeRequest"},
        }
    },
    "shapes": {
        "MakeRequest": {
            "type": "structure",
            "required": ["a"],
            "members": {
                "b": {"shape": "Str", "documentation": "<p>Bee: the second.</p>"},
                "c": {"shape": "Str"},
                "a": {"shape": "Str", "documentation": "<p>Ay.</p>"},
                "mode": {"shape": "Mode"},
                "veryLongMemberNameForWrappingPurposes": {
                    "shape": "LongEnum",
                    "documentation": "<p>Long.</p>",
                },
                "node": {"shape": "Node", "documentation": "<p>A recursive node &amp; more.</p>"},
                "names": {"shape": "Names", "documentation": "<p>Names.</p>"},
                "grid": {"shape": "Grid"},
                "byName": {"shape": "NodeMap", "documentation": "<p>Nodes by name.</p>"},
                "data": {"shape": "Data", "documentation": "<p>Bytes.</p>"},
                "when": {"shape": "When", "documentation": "<p>When.</p>"},
                "flag": {"shape": "Flag", "documentation": "<p>Flag.</p>"},
                "NULL": {"shape": "Flag", "documentation": "<p>Null-named.</p>"},
                "size": {"shape": "Size", "documentation": "<p>Size.</p>"},
                "ratio": {"shape": "Ratio", "documentation": "<p>Ratio.</p>"},
            },
        },
        "Str": {"type": "string"},
        "Mode": {"type": "string", "enum": ["ON", "yes", "a b", "it's"]},
        "LongEnum": {
            "type": "string",
            "enum": ["AWS/Rekognition/DetectModerationLabels/Image/V3/And/Some/More/Path"],
        },
        "Node": {
            "type": "structure",
            "required": ["child"],
            "members": {
                "child": {"shape": "Node", "documentation": "<p>The child.</p>"},
                "label": {"shape": "Str", "documentation": "<p>Label.</p>"},
            },
        },
        "Names": {"type": "list", "member": {"shape": "Str"}},
        "Grid": {"type": "list", "member": {"shape": "Names"}},
        "NodeMap": {"type": "map", "key": {"shape": "Str"}, "value": {"shape": "Node"}},
        "Data": {"type": "blob"},
        "When": {"type": "timestamp"},
        "Flag": {"type": "boolean"},
        "Size": {"type": "long"},
        "Ratio": {"type": "double"},
    },
}

# What CLI v2's YAMLArgumentGenerator prints through ruamel.yaml 0.18.16 (the version its
# installers pin) for SYNTHETIC, with the enum choice fixed to the first value.
SYNTHETIC_YAML = """\
b: ''  # Bee.
c: ''
a: ''  # [REQUIRED] Ay.
mode: ON #  Valid values are: ON, yes, a b, it's.
veryLongMemberNameForWrappingPurposes: \n\
  AWS/Rekognition/DetectModerationLabels/Image/V3/And/Some/More/Path # Long. Valid values are: \
AWS/Rekognition/DetectModerationLabels/Image/V3/And/Some/More/Path.
node: # A recursive node & more.
  child: {}  # [REQUIRED] The child.
  label: '' # Label.
names: # Names.
- ''
grid:
- - ''
byName: # Nodes by name.
  KeyName:
    child: {}  # [REQUIRED] The child.
    label: '' # Label.
data: !!binary '' # Bytes.
when: 1970-01-01 00:00:00 # When.
flag: true # Flag.
'NULL': true # Null-named.
size: 0 # Size.
ratio: 0.0 # Ratio.
"""


def test_yaml_skeleton_edge_cases_match_cli_v2() -> None:
    """Recursion, wrapping, quoting, nested lists, maps, blobs and timestamps as CLI v2 prints."""
    shape = ServiceModel(SYNTHETIC, "synth").operation_model("Make").input_shape
    assert _yaml_document(_skeleton(shape, [], member_names=False, for_yaml=True)) == (
        SYNTHETIC_YAML
    )


def test_skeletons_of_an_operation_without_output() -> None:
    """An operation without an output prints nothing for `output`, like the CLI."""
    assert OperationArgs("DeleteCampaign").skeleton("output") == ""
    assert OperationArgs("DeleteCampaign").skeleton("input") == '{\n    "campaignArn": ""\n}\n'
