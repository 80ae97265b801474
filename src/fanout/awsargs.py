"""AWS CLI option values for Personalize operations, driven by botocore's service model.

`fanout run`, `fanout prepare` and `fanout segment` accept every option of
``aws personalize create-batch-inference-job`` (and ``create-batch-segment-job``) under the same
names and with the same value syntaxes, so a user can paste an AWS CLI command or a
``--generate-cli-skeleton`` file. This module turns those option values into API parameters the
way AWS CLI v1 does, generically from botocore's model (no per-field code), without importing
awscli:

* scalars: strings as given, integers with ``int()``, doubles with ``float()``;
* structures, maps and lists: JSON when the (first) value starts with ``{`` or ``[`` after
  whitespace, otherwise the AWS CLI shorthand syntax (``a=b,c={d=e},f=[g,h]``, quoting, ``\\,``,
  ``key@=file://...``), whose strings are then converted to the model's number types;
* ``file://PATH`` (UTF-8 text) and ``fileb://PATH`` (bytes, blob members only) as the whole value;
* then the client-side validation botocore applies before any call (unknown and missing keys,
  types, ``min``), so everything the AWS CLI rejects before calling AWS is rejected here, as a
  :class:`~fanout.errors.ConfigError` naming the option.

It also reads ``--cli-input-json`` / ``--cli-input-yaml`` and prints the three
``--generate-cli-skeleton`` outputs (``input``, ``yaml-input``, ``output``).

Where this differs from AWS CLI v1, and why:

* ``http://`` / ``https://`` values are taken literally; CLI v1 downloads them by default
  (``cli_follow_urlparam``), CLI v2 does not. fanout does not fetch URLs given as option values.
* ``fileb://`` for a non-blob member is an error (CLI v1 passes bytes on and fails later, or
  crashes).
* ``--cli-input-yaml`` and ``--generate-cli-skeleton yaml-input`` exist only in CLI v2; they
  follow CLI v2 (YAML 1.2 scalars, duplicate keys rejected, ruamel's comment layout).
* The skeletons use the first value of an enum where the CLI picks one at random.
* A boolean member given a value takes ``true`` / ``false`` only (the CLI has ``--flag`` /
  ``--no-flag`` and no value; Personalize batch jobs have no boolean members).
* The CLI's back-compat special case for single-member list structures of a few named
  firehose / workspaces / elb commands does not apply to Personalize and is not implemented.
* Errors say which option, where (character position in shorthand, key path everywhere) and what
  to do, instead of the CLI's messages; the conditions are the CLI's.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import string
import xml.dom.minidom
import xml.parsers.expat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any, Final, Literal

import botocore.session
import yaml
from botocore import xform_name
from botocore.utils import parse_to_aware_datetime

from fanout.errors import ConfigError

__all__ = ["OperationArgs", "OptionSpec", "add_newer_members", "cli_name", "use_newer_model"]

SERVICE: Final = "personalize"

Path = tuple[str | int, ...]

_SCALAR_TYPES: Final = frozenset(
    {"string", "float", "integer", "long", "boolean", "double", "blob", "timestamp"}
)
_COMPLEX_TYPES: Final = frozenset({"structure", "list", "map"})


# -- model access ----------------------------------------------------------------------------------


# Members AWS documents for Personalize that the botocore fanout runs on may predate, copied from
# a newer botocore's model (the one the AWS CLI 1.46 bundles, botocore 1.43): a skeleton from that
# CLI, filled in, must pass fanout's validation and reach the service. Each is added only where the
# loaded model lacks it, so a botocore that has it keeps its own definition. Shared by
# CreateBatchInferenceJob's input and DescribeBatchInferenceJob's output.
_NEWER_MEMBERS: Final[dict[str, dict[str, dict[str, str]]]] = {
    "BatchInferenceJobConfig": {
        "rankingInfluence": {
            "shape": "RankingInfluence",
            "documentation": (
                "<p>How much POPULARITY and FRESHNESS weigh in the ranking: a weight from 0.0 "
                "(none) to 1.0 (most) for each.</p>"
            ),
        },
    },
}
_NEWER_SHAPES: Final[dict[str, dict[str, Any]]] = {
    "RankingInfluence": {
        "type": "map",
        "key": {"shape": "RankingInfluenceType"},
        "value": {"shape": "RankingInfluenceWeight"},
    },
    "RankingInfluenceType": {"type": "string", "enum": ["POPULARITY", "FRESHNESS"]},
    "RankingInfluenceWeight": {"type": "double", "max": 1, "min": 0},
}


def add_newer_members(model: dict[str, Any]) -> dict[str, Any]:
    """Add `_NEWER_MEMBERS` (and their shapes) to a Personalize service model (botocore's JSON)
    where it lacks them, in place; return it. Adding twice changes nothing."""
    shapes = model["shapes"]
    for owner, members in _NEWER_MEMBERS.items():
        if owner not in shapes:
            continue
        for name, member in members.items():
            if name in shapes[owner]["members"]:
                continue
            for shape_name, shape in _NEWER_SHAPES.items():
                shapes.setdefault(shape_name, copy.deepcopy(shape))
            shapes[owner]["members"][name] = dict(member)
    return model


class _NewerModelLoader:
    """botocore's data loader, but Personalize's model comes with `_NEWER_MEMBERS` added."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def load_service_model(
        self, service_name: str, type_name: str, api_version: str | None = None
    ) -> Any:
        model = self._loader.load_service_model(service_name, type_name, api_version=api_version)
        if service_name == SERVICE and type_name == "service-2":
            add_newer_members(model)  # in place: the loader caches it, so once per session
        return model


def use_newer_model(session: Any) -> Any:
    """Make a botocore (or aiobotocore) session load Personalize's model with the members AWS
    added after its botocore was released, so its clients validate, send and parse them; return
    the session. Call it before the session loads any model (it replaces the data loader, the
    way botocore makes it: from the session's `data_path`, i.e. `AWS_DATA_PATH`)."""
    import botocore.loaders

    def loader() -> _NewerModelLoader:
        data_path = session.get_config_variable("data_path")
        return _NewerModelLoader(botocore.loaders.create_loader(data_path))

    session.lazy_register_component("data_loader", loader)
    return session


@cache
def _service_model() -> Any:
    return use_newer_model(botocore.session.get_session()).get_service_model(SERVICE)


def cli_name(member: str) -> str:
    """The AWS CLI option for an input member: ``jobName`` -> ``--job-name``."""
    return "--" + str(xform_name(member, "-"))


def _is_document(shape: Any) -> bool:
    return bool(getattr(shape, "is_document_type", False))


def _is_json_value_header(shape: Any) -> bool:
    serialization = getattr(shape, "serialization", {})
    return bool(serialization.get("jsonvalue") and serialization.get("location") == "header")


def _is_document_container(shape: Any) -> bool:
    """A document, or lists/maps whose innermost values are documents (JSON only in the CLI)."""
    while shape.type_name in ("list", "map") and not _is_document(shape):
        shape = shape.member if shape.type_name == "list" else shape.value
    return _is_document(shape)


def _supports_shorthand(shape: Any) -> bool:
    """Complex shapes take shorthand, except lists of scalars and document containers."""
    if _is_document_container(shape) or shape.type_name not in _COMPLEX_TYPES:
        return False
    return shape.type_name != "list" or shape.member.type_name in _COMPLEX_TYPES


_SENTENCE_END: Final = re.compile(r"[.:]+")


def _doc_overview(shape: Any) -> str:
    """First sentence of a shape's documentation, markup removed (CLI v2's YAML comments)."""
    content = str(shape.documentation or "")
    try:
        dom = xml.dom.minidom.parseString(f"<doc>{content}</doc>")
    except xml.parsers.expat.ExpatError:
        pass
    else:
        content = "".join(_text_nodes(dom))
    content = _SENTENCE_END.split(content, maxsplit=1)[0]
    if content:
        content += "."
    return content.replace("\n", " ").replace("\u2028", " ")


def _text_nodes(node: Any) -> Iterable[str]:
    for child in node.childNodes:
        if child.nodeType == child.TEXT_NODE:
            yield str(child.data)
        else:
            yield from _text_nodes(child)


# -- file:// and fileb:// --------------------------------------------------------------------------


class _FileError(Exception):
    def __init__(self, given: str, reason: str) -> None:
        super().__init__(given, reason)
        self.given = given
        self.reason = reason


def _read_param_file(value: str) -> str | bytes | None:
    """The contents named by a ``file://`` / ``fileb://`` value, or None for any other value."""
    for prefix, binary in (("file://", False), ("fileb://", True)):
        if not value.startswith(prefix):
            continue
        path = os.path.expandvars(os.path.expanduser(value[len(prefix) :]))
        try:
            if binary:
                with open(path, "rb") as raw:
                    return raw.read()
            with open(path, encoding="utf-8") as text:
                return text.read()
        except UnicodeDecodeError:
            raise _FileError(
                value, "its contents are not UTF-8 text (use fileb:// for binary data)"
            ) from None
        except OSError as exc:
            raise _FileError(value, exc.strerror or str(exc)) from None
    return None


def _file_error(where: str, exc: _FileError) -> ConfigError:
    return ConfigError(
        f"{where}: cannot read {exc.given}: {exc.reason}. "
        "Check the path after the prefix (a relative path is relative to the current directory)."
    )


# -- shorthand syntax ------------------------------------------------------------------------------

_KEY_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-_.#/:")
# Only ASCII whitespace separates tokens (values themselves may hold any whitespace).
_SEPARATOR_SPACE: Final = frozenset(string.whitespace)
_SINGLE_QUOTED: Final = re.compile(r"'(?:\\'|[^'])*'")
_DOUBLE_QUOTED: Final = re.compile(r'"(?:\\"|[^"])*"')


def _word_start(char: str) -> bool:
    return 0x21 <= ord(char) <= 0xFFFF and char not in "\"',=[{"


def _first_word_char(char: str) -> bool:
    return char.isspace() or (0x21 <= ord(char) <= 0xFFFF and char not in "\"',]}")


def _later_word_char(char: str) -> bool:
    return char.isspace() or (0x21 <= ord(char) <= 0xFFFF and char not in "\"',=")


_EXPECTED: Final = {
    "=": "'=' after the key (a key holds letters, digits and - _ . # / :)",
    ",": "',' between two Key=Value pairs",
    "<value>": "a value after ','",
    "<single quote>": "a closing single quote (')",
    "<double quote>": 'a closing double quote (")',
}

_SHORTHAND_HINT: Final = (
    "Shorthand is Key=Value pairs separated by commas, with {...} for a structure and [...] for "
    "a list; quote a value holding commas, quotes or brackets (\"a,b\" or 'a,b') or escape a "
    "comma as \\, -- or give the whole value as JSON."
)


class _SyntaxError(Exception):
    def __init__(self, index: int, expected: str, found: str) -> None:
        super().__init__(index, expected, found)
        self.index = index
        self.expected = expected
        self.found = found


class _DuplicateKey(Exception):
    def __init__(self, key: str, index: int) -> None:
        super().__init__(key, index)
        self.key = key
        self.index = index


class _ShorthandParser:
    """The AWS CLI shorthand grammar, recording where each key and value starts."""

    def __init__(self, text: str, read_file: Callable[[str], str | bytes | None]) -> None:
        self.text = text
        self.index = 0
        self.value_at: dict[Path, int] = {}
        self.key_at: dict[Path, int] = {}
        self._read_file = read_file
        self._from_file = False

    def parse(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        key, value = self._key_value()
        params[key] = value
        last = self.index
        while self.index < len(self.text):
            self._expect(",", spaces=True)
            key, value = self._key_value()
            if key in params:
                raise _DuplicateKey(key, last + 1)
            params[key] = value
            last = self.index
        return params

    # grammar ---------------------------------------------------------------------------------

    def _key_value(self) -> tuple[str, Any]:
        key = self._key(())
        self._assignment()
        return key, self._values((key,))

    def _key(self, path: Path) -> str:
        start = self.index
        while not self._at_end() and self.text[self.index] in _KEY_CHARS:
            self.index += 1
        key = self.text[start : self.index]
        self.key_at[(*path, key)] = start
        return key

    def _assignment(self) -> None:
        """``=`` or ``@=`` (the value may then be ``file://`` / ``fileb://``)."""
        self._from_file = False
        self._skip_spaces()
        if self._current() == "@":
            self.index += 1
            self._skip_spaces()
            self._from_file = True
        self._expect("=", spaces=True)

    def _values(self, path: Path) -> Any:
        if self._at_end():
            self.value_at[path] = self.index
            return ""
        if self._current() == "[":
            return self._explicit_list(path)
        if self._current() == "{":
            return self._hash_literal(path)
        return self._csv_value(path)

    def _csv_value(self, path: Path) -> Any:
        start = self.index
        self.value_at[path] = start
        first = self._first_value()
        self._skip_spaces()
        if self._at_end() or self._current() != ",":
            return first
        self._expect(",", spaces=True)
        items: list[Any] = [first]
        starts = [start]
        while True:
            item_start = self.index
            try:
                item = self._later_value()
                self._skip_spaces()
                if self._at_end():
                    items.append(item)
                    starts.append(item_start)
                    break
                self._expect(",", spaces=True)
                items.append(item)
                starts.append(item_start)
            except _SyntaxError:
                if self._at_end():
                    raise
                # `a=b,c=d`: "c" was the next key, not a list item; go back to its comma.
                while self.index >= 0 and self.text[self.index] != ",":
                    self.index -= 1
                break
        if len(items) == 1:
            return first
        for position, item_start in enumerate(starts):
            self.value_at[(*path, position)] = item_start
        return items

    def _explicit_list(self, path: Path) -> list[Any]:
        self.value_at[path] = self.index
        self._expect("[", spaces=True)
        values: list[Any] = []
        while self._current() != "]":
            values.append(self._explicit_value((*path, len(values))))
            self._skip_spaces()
            if self._current() != "]":
                self._expect(",")
                self._skip_spaces()
        self._expect("]")
        return values

    def _explicit_value(self, path: Path) -> Any:
        if self._current() == "[":
            return self._explicit_list(path)
        if self._current() == "{":
            return self._hash_literal(path)
        self.value_at[path] = self.index
        return self._first_value()

    def _hash_literal(self, path: Path) -> dict[str, Any]:
        self.value_at[path] = self.index
        self._expect("{", spaces=True)
        result: dict[str, Any] = {}
        while self._current() != "}":
            key = self._key(path)
            self._assignment()
            value = self._explicit_value((*path, key))
            self._skip_spaces()
            if self._current() != "}":
                self._expect(",")
                self._skip_spaces()
            result[key] = value
        self._expect("}")
        return result

    # values ----------------------------------------------------------------------------------

    def _first_value(self) -> Any:
        if self._current() == "'":
            return self._quoted(_SINGLE_QUOTED, "'", "<single quote>")
        if self._current() == '"':
            return self._quoted(_DOUBLE_QUOTED, '"', "<double quote>")
        end = self._word_end(_first_word_char)
        if end is None:
            return ""
        return self._word(end)

    def _later_value(self) -> Any:
        if self._current() == "'":
            return self._quoted(_SINGLE_QUOTED, "'", "<single quote>")
        if self._current() == '"':
            return self._quoted(_DOUBLE_QUOTED, '"', "<double quote>")
        end = self._word_end(_later_word_char)
        if end is None:
            raise _SyntaxError(self.index, "<value>", self._found())
        return self._word(end)

    def _word_end(self, follows: Callable[[str], bool]) -> int | None:
        """End of the unquoted word at the cursor (``\\,`` is part of it), or None if none."""
        text, at = self.text, self.index
        accept: Callable[[str], bool] = _word_start
        while at < len(text):
            if text.startswith("\\,", at):
                at += 2
            elif accept(text[at]):
                at += 1
            else:
                break
            accept = follows
        return None if at == self.index else at

    def _word(self, end: int) -> Any:
        word = self.text[self.index : end].replace("\\,", ",").rstrip()
        self.index = end
        return self._maybe_file(word)

    def _quoted(self, pattern: re.Pattern[str], quote: str, name: str) -> Any:
        match = pattern.match(self.text, self.index)
        if match is None:
            raise _SyntaxError(self.index, name, self._found())
        self.index = match.end()
        inner = match.group()[1:-1].replace("\\" + quote, quote).replace("\\\\", "\\")
        return self._maybe_file(inner)

    def _maybe_file(self, value: str) -> Any:
        if self._from_file:
            contents = self._read_file(value)
            if contents is not None:
                return contents
        return value

    # cursor ----------------------------------------------------------------------------------

    def _at_end(self) -> bool:
        return self.index >= len(self.text)

    def _current(self) -> str:
        return "" if self._at_end() else self.text[self.index]

    def _found(self) -> str:
        return "EOF" if self._at_end() else self.text[self.index]

    def _skip_spaces(self) -> None:
        while not self._at_end() and self.text[self.index] in _SEPARATOR_SPACE:
            self.index += 1

    def _expect(self, char: str, *, spaces: bool = False) -> None:
        if spaces:
            self._skip_spaces()
        if self._at_end():
            raise _SyntaxError(self.index, char, "EOF")
        if self.text[self.index] != char:
            raise _SyntaxError(self.index, char, self.text[self.index])
        self.index += 1
        if spaces:
            self._skip_spaces()


def _pointer(text: str, index: int) -> str:
    """The line of ``text`` holding ``index``, with a caret under that character."""
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    line = text[start : len(text) if end == -1 else end]
    return f"    {line}\n    {' ' * (index - start)}^"


# -- shorthand type conversion ---------------------------------------------------------------------


class _ConversionError(Exception):
    def __init__(self, path: Path, message: str) -> None:
        super().__init__(path, message)
        self.path = path
        self.message = message


class _ShorthandConverter:
    """Convert shorthand strings to the model's types in place, as the AWS CLI does.

    Only members the model knows are visited; a single value where a list belongs becomes a
    one-element list (unconverted); other mismatches are left for validation to report.
    """

    def visit(self, value: Any, shape: Any) -> None:
        self._visit({}, "", shape, value, ())

    def _visit(self, parent: Any, name: str | int, shape: Any, value: Any, path: Path) -> None:
        kind = shape.type_name
        if kind == "structure":
            self._structure(shape, value, path)
        elif kind == "list":
            self._list(parent, name, shape, value, path)
        elif kind == "map":
            if isinstance(value, dict):
                for key, item in value.items():
                    self._visit(value, key, shape.value, item, (*path, key))
        else:
            self._scalar(parent, name, shape, value, path)

    def _structure(self, shape: Any, value: Any, path: Path) -> None:
        if value is not None and _is_document(shape):
            raise _ConversionError(
                path,
                "shorthand syntax cannot express a document value; give the whole option as JSON",
            )
        if not isinstance(value, dict):
            return
        for member, member_shape in shape.members.items():
            self._visit(value, member, member_shape, value.get(member), (*path, member))

    def _list(self, parent: Any, name: str | int, shape: Any, value: Any, path: Path) -> None:
        if not isinstance(value, list):
            if value is not None:
                parent[name] = [value]
            return
        for position, item in enumerate(value):
            self._visit(value, position, shape.member, item, (*path, position))

    def _scalar(self, parent: Any, name: str | int, shape: Any, value: Any, path: Path) -> None:
        if value is None:
            return
        kind = shape.type_name
        try:
            if kind in ("integer", "long"):
                parent[name] = int(value)
            elif kind in ("double", "float"):
                parent[name] = float(value)
            elif kind == "boolean":
                if value.lower() == "true":
                    parent[name] = True
                elif value.lower() == "false":
                    parent[name] = False
        except (ValueError, TypeError, AttributeError):
            noun = {"integer": "an integer", "long": "an integer", "boolean": "true or false"}
            raise _ConversionError(
                path, f"must be {noun.get(kind, 'a number')}, got {_show(value)}"
            ) from None


def _show(value: Any) -> str:
    if isinstance(value, list):
        return f"the list {value!r} (a value followed by ',' makes a list; quote it or use \\,)"
    if isinstance(value, dict):
        return f"the structure {value!r}"
    return repr(value)


# -- validation (what botocore checks before sending a request) ------------------------------------


@dataclass(frozen=True, slots=True)
class _Problem:
    path: Path
    message: str
    at_key: bool = False  # the problem is a key (unknown key), not the value at `path`


_TYPE_NAMES: Final = {
    "structure": (dict,),
    "map": (dict,),
    "list": (list, tuple),
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "boolean": (bool,),
    "double": (float, Decimal, int),
    "float": (float, Decimal, int),
}


class _Validator:
    """botocore's client-side parameter validation, reporting key paths like botocore."""

    def __init__(self) -> None:
        self.problems: list[_Problem] = []

    def validate(self, value: Any, shape: Any, name: str, path: Path) -> None:
        if _is_json_value_header(shape):
            try:
                json.dumps(value)
            except (ValueError, TypeError) as exc:
                self._report(path, f"Invalid parameter {name} must be json serializable: {exc}")
        elif shape.type_name == "structure" and _is_document(shape):
            self._document(value, name, path)
        elif shape.type_name == "blob":
            if not isinstance(value, bytes | bytearray | str) and not hasattr(value, "read"):
                self._invalid_type(value, name, path, "bytes, bytearray, file-like object")
        elif shape.type_name == "timestamp":
            try:
                parse_to_aware_datetime(value)
            except (TypeError, ValueError, AttributeError):
                self._invalid_type(value, name, path, "datetime, timestamp-string")
        else:
            valid = _TYPE_NAMES[shape.type_name]
            if not isinstance(value, valid):
                self._invalid_type(value, name, path, ", ".join(t.__name__ for t in valid))
                return
            getattr(self, f"_{shape.type_name}", self._number)(value, shape, name, path)

    def _report(self, path: Path, message: str, *, at_key: bool = False) -> None:
        self.problems.append(_Problem(path, message, at_key))

    def _invalid_type(self, value: Any, name: str, path: Path, valid: str) -> None:
        hint = ""
        if isinstance(value, list) and valid == "str":
            hint = (
                " -- in shorthand a value followed by ',' makes a list: quote it (\"b,c\") "
                "or escape the comma (b\\,c)"
            )
        self._report(
            path,
            f"Invalid type for parameter {name}, value: {value}, "
            f"type: {type(value).__name__}, valid types: {valid}{hint}",
        )

    def _minimum(self, value: float, shape: Any, name: str, path: Path, what: str) -> None:
        minimum: float | None = shape.metadata.get("min")
        if minimum is None and getattr(shape, "serialization", {}).get("hostLabel"):
            minimum = 1
        if minimum is not None and value < minimum:
            self._report(
                path,
                f"Invalid {what} for parameter {name}, value: {value}, "
                f"valid min {'length' if what == 'length' else 'value'}: {minimum}",
            )

    def _structure(self, value: dict[Any, Any], shape: Any, name: str, path: Path) -> None:
        label = name or "input"
        if getattr(shape, "is_tagged_union", False):
            members = ", ".join(shape.members)
            if not value:
                self._report(
                    path, f"Must set one of the following keys for tagged union {label}: {members}."
                )
            elif len(value) > 1:
                self._report(
                    path,
                    f"Invalid number of parameters set for tagged union structure {label}. "
                    f"Can only set one of the following keys: {members}.",
                )
        for required in shape.metadata.get("required", []):
            if required not in value:
                self._report(path, f'Missing required parameter in {label}: "{required}"')
        members = shape.members
        valid = ", ".join(members)
        for key in value:
            if key not in members:
                self._report(
                    (*path, key),
                    f'Unknown parameter in {label}: "{key}", must be one of: {valid}',
                    at_key=True,
                )
        for key, item in value.items():
            if key in members:
                child = f"{name}.{key}" if name else str(key)
                self.validate(item, members[key], child, (*path, key))

    def _string(self, value: str, shape: Any, name: str, path: Path) -> None:
        self._minimum(len(value), shape, name, path, "length")

    def _list(self, value: Sequence[Any], shape: Any, name: str, path: Path) -> None:
        self._minimum(len(value), shape, name, path, "length")
        for position, item in enumerate(value):
            self.validate(item, shape.member, f"{name}[{position}]", (*path, position))

    def _map(self, value: dict[Any, Any], shape: Any, name: str, path: Path) -> None:
        for key, item in value.items():
            self.validate(key, shape.key, f"{name} (key: {key})", (*path, key))
            self.validate(item, shape.value, f"{name}.{key}", (*path, key))

    def _boolean(self, value: bool, shape: Any, name: str, path: Path) -> None:
        pass

    def _number(self, value: Any, shape: Any, name: str, path: Path) -> None:
        self._minimum(value, shape, name, path, "value")

    def _document(self, value: Any, name: str, path: Path) -> None:
        if value is None:
            return
        if isinstance(value, dict):
            for key, item in value.items():
                self._document(item, str(key), (*path, key))
        elif isinstance(value, list):
            for position, item in enumerate(value):
                self._document(item, f"{name}[{position}]", (*path, position))
        elif not isinstance(value, str | int | bool | float):
            self._report(
                path,
                f"Invalid type for document parameter {name}, value: {value}, "
                f"type: {type(value).__name__}, valid types: str, int, bool, float, list, dict",
            )


_VALIDATION_HINT: Final = {
    "Unknown": "keys are case-sensitive; the valid ones are listed",
    "Missing": "add the missing key",
    "Invalid type": "give a value of a valid type (in JSON, quote a number meant as a string)",
    "Invalid length": "give a longer value",
    "Invalid value": "give a larger number",
}


def _validation_error(
    where: str, problems: Sequence[_Problem], locate: Callable[[_Problem], str] | None = None
) -> ConfigError:
    lines = []
    hints: list[str] = []
    for problem in problems:
        location = locate(problem) if locate is not None else ""
        lines.append(f"  {problem.message}{location}")
        for prefix, hint in _VALIDATION_HINT.items():
            if problem.message.startswith(prefix) and hint not in hints:
                hints.append(hint)
    return ConfigError(
        f"{where}: parameter validation failed:\n" + "\n".join(lines) + "\nTo fix: "
        f"{'; '.join(hints) or 'correct the value'}."
    )


# -- skeletons -------------------------------------------------------------------------------------


class _Blob:
    """A blob in a YAML skeleton (``!!binary ''``)."""


@dataclass(slots=True)
class _Commented:
    """A structure in a YAML skeleton: members in model order, each with its comment."""

    items: list[tuple[str, Any, str | None]]


def _skeleton(
    shape: Any, stack: list[str], name: str = "", *, member_names: bool, for_yaml: bool
) -> Any:
    """botocore's ArgumentGenerator (and CLI v2's YAML variant), enum values fixed to the first."""
    if for_yaml and shape.type_name == "blob":
        return _Blob()
    stack.append(shape.name)
    try:
        kind = shape.type_name
        if kind == "structure":
            if stack.count(shape.name) > 1:
                return _Commented([]) if for_yaml else {}
            return _skeleton_structure(shape, stack, member_names=member_names, for_yaml=for_yaml)
        if kind == "list":
            item_name = shape.member.name if member_names else ""
            return [
                _skeleton(
                    shape.member, stack, item_name, member_names=member_names, for_yaml=for_yaml
                )
            ]
        if kind == "map":
            value = _skeleton(shape.value, stack, member_names=member_names, for_yaml=for_yaml)
            return {"KeyName": value}
        if kind == "string":
            if member_names:
                return name
            return shape.enum[0] if shape.enum else ""
        if kind in ("integer", "long"):
            return 0
        if kind in ("float", "double"):
            return 0.0
        if kind == "boolean":
            return True
        if kind == "timestamp":
            return dt.datetime(1970, 1, 1, 0, 0, 0)
        return None
    finally:
        stack.pop()


def _skeleton_structure(shape: Any, stack: list[str], *, member_names: bool, for_yaml: bool) -> Any:
    if not for_yaml:
        return {
            member: _skeleton(
                member_shape, stack, member, member_names=member_names, for_yaml=False
            )
            for member, member_shape in shape.members.items()
        }
    items: list[tuple[str, Any, str | None]] = []
    required = set(shape.required_members)
    for member, member_shape in shape.members.items():
        value = _skeleton(member_shape, stack, member, member_names=member_names, for_yaml=True)
        parts = ["[REQUIRED]"] if member in required else []
        parts.append(_doc_overview(member_shape))
        if getattr(member_shape, "enum", None):
            parts.append(f"Valid values are: {', '.join(member_shape.enum)}.")
        comment = " ".join(parts)
        items.append((member, value, comment if comment and not comment.isspace() else None))
    return _Commented(items)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode("utf-8")
    raise TypeError(f"cannot render {type(value).__name__} in a skeleton")


# YAML 1.2 plain scalars that would read back as something other than a string.
_YAML_NOT_STRING: Final = re.compile(
    r"""(?x)^(?:
        ~|null|Null|NULL|true|True|TRUE|false|False|FALSE|<<|=
        |[-+]?(?:0b[0-1_]+|0o?[0-7_]+|[0-9_]+|0x[0-9a-fA-F_]+)
        |[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)
        |[0-9]{4}-[0-9]{2}-[0-9]{2}
        |[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?
            (?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?
    )$"""
)


def _yaml_plain_ok(text: str) -> bool:
    """Whether ruamel's emitter writes this string as a plain (unquoted) block scalar."""
    if not text or text != text.strip() or _YAML_NOT_STRING.match(text):
        return False
    if text[0] in "#,[]{}&*!|>'\"%@`" or (text[0] in "-?:" and (len(text) == 1 or text[1] == " ")):
        return False
    if ": " in text or " #" in text or text.endswith(":"):
        return False
    return all(char.isprintable() and char not in "\t\n\r" for char in text)


_YAML_WIDTH: Final = 80  # ruamel's best_width: longer lines wrap at spaces / before long words


def _yaml_scalar(value: Any) -> tuple[str, str]:
    """(style, text) of a scalar: style "plain", "single" (quoted) or "raw" (never wrapped)."""
    if isinstance(value, _Blob):
        return "raw", "!!binary ''"
    if value is None:
        return "raw", ""
    if isinstance(value, bool):
        return "plain", "true" if value else "false"
    if isinstance(value, int | float):
        return "plain", repr(value)
    if isinstance(value, dt.datetime):
        return "plain", value.isoformat(sep=" ")
    text = str(value)
    return ("plain", text) if _yaml_plain_ok(text) else ("single", text.replace("'", "''"))


def _yaml_value(value: Any, column: int, indent: int) -> str:
    """The text after ``key:`` or ``-`` (at ``column``), wrapped as ruamel's emitter wraps it.

    ``indent`` is where a continuation line starts (the node's indentation plus two).
    """
    if isinstance(value, _Commented | dict):
        return " {}"
    if isinstance(value, list):
        return " []"
    style, text = _yaml_scalar(value)
    if style == "raw":
        return " " + text
    out = [" '"] if style == "single" else [" "]
    column += len(out[0])
    start = 0
    spaces = False
    for end in range(len(text) + 1):
        char = text[end] if end < len(text) else None
        if spaces:
            if char != " ":
                single_space = start + 1 == end
                if style == "plain":
                    wrap = single_space and column >= _YAML_WIDTH
                else:
                    wrap = single_space and column > _YAML_WIDTH and start != 0 and char is not None
                if wrap:
                    out.append("\n" + " " * indent)
                    column = indent
                else:
                    out.append(text[start:end])
                    column += end - start
                start = end
        elif char is None or char == " ":
            word = text[start:end]
            if style == "plain" and len(word) + column > _YAML_WIDTH and column > indent:
                out.append("\n" + " " * indent)  # a word too long for the line gets its own
                column = indent
            out.append(word)
            column += len(word)
            start = end
        spaces = char == " "
    if style == "single":
        out.append("'")
    return "".join(out)


def _yaml_lines(node: Any, indent: int, lines: list[str], first_prefix: str | None) -> None:
    """Render a non-empty block mapping or sequence the way ruamel's round-trip dumper does.

    ``first_prefix`` replaces the indentation of the first line (``"- "`` for an item of a
    sequence); later lines are indented by ``indent``.
    """
    pad = " " * indent
    if isinstance(node, list):
        for item in node:
            prefix = (first_prefix if first_prefix is not None else pad) + "-"
            first_prefix = None
            if _yaml_is_block(item):
                _yaml_lines(item, indent + 2, lines, prefix + " ")
            else:
                lines.append(prefix + _yaml_value(item, len(prefix), indent + 2))
        return
    items = (
        node.items
        if isinstance(node, _Commented)
        else [(key, value, None) for key, value in node.items()]
    )
    commented: list[str] = []
    keys = [key for key, _, _ in items]
    for position, (key, value, comment) in enumerate(items):
        prefix = (first_prefix if first_prefix is not None else pad) + _yaml_key(key) + ":"
        first_prefix = None
        suffix = ""
        if comment is not None:
            suffix = _yaml_comment_gap(keys[: position + 1], commented) + "# " + comment
            commented.append(key)
        if _yaml_is_block(value):
            lines.append(prefix + suffix)
            _yaml_lines(value, indent if isinstance(value, list) else indent + 2, lines, None)
        else:
            lines.append(prefix + _yaml_value(value, len(prefix), indent + 2) + suffix)


def _yaml_key(key: str) -> str:
    style, text = _yaml_scalar(key)
    return f"'{text}'" if style == "single" else text


def _yaml_comment_gap(keys: list[str], commented: list[str]) -> str:
    """Spaces before an end-of-line comment: ruamel gives two unless it finds an earlier comment.

    (It looks at the previous key, then at keys before the first one sorting at or after this
    key; an earlier comment fixes the column and the emitter then writes one space.)
    """
    key = keys[-1]
    if len(keys) > 1 and keys[-2] in commented:
        return " "
    for earlier in keys:
        if earlier >= key:
            break
        if earlier in commented:
            return " "
    return "  "


def _yaml_is_block(value: Any) -> bool:
    if isinstance(value, _Commented):
        return bool(value.items)
    return isinstance(value, list | dict) and bool(value)


def _yaml_document(node: Any) -> str:
    if not _yaml_is_block(node):
        return _yaml_value(node, 0, 0).lstrip(" ") + "\n"
    lines: list[str] = []
    _yaml_lines(node, 0, lines, None)
    return "\n".join(lines) + "\n"


# -- --cli-input-yaml: YAML 1.2 scalars, as CLI v2's loader ----------------------------------------


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 implicit types and duplicate keys rejected."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        sign = -1 if text[:1] == "-" else 1
        text = text.lstrip("+-")
        for prefix, base in (("0b", 2), ("0x", 16), ("0o", 8)):
            if text.startswith(prefix):
                return sign * int(text[2:], base)
        return sign * int(text)

    def construct_yaml_float(self, node: Any) -> float:
        text = str(self.construct_scalar(node)).replace("_", "").lower()
        sign = -1 if text[:1] == "-" else 1
        text = text.lstrip("+-")
        if text == ".inf":
            return sign * float("inf")
        if text == ".nan":
            return float("nan")
        return sign * float(text)


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (
        "float",
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        "-+0123456789.",
    ),
    (
        "int",
        r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$",
        "-+0123456789",
    ),
    ("merge", r"^(?:<<)$", "<"),
    ("null", r"^(?:~|null|Null|NULL|)$", "~nN\0"),
    (
        "timestamp",
        r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
        |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
        (?:[Tt]|[ \t]+)[0-9][0-9]?
        :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
        (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""",
        "0123456789",
    ),
):
    _Yaml12Loader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}",
        re.compile(_pattern, re.X),
        [char if char != "\0" else "" for char in _first],
    )
_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _Yaml12Loader.construct_yaml_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _Yaml12Loader.construct_yaml_float)


# -- the public API --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One CLI option of an operation: an input member of its botocore model."""

    cli_name: str  # --job-name
    member: str  # jobName
    type_name: str  # botocore shape type: string, integer, structure, list, map, ...
    required: bool  # required by the model (idempotency tokens never are, as in the CLI)
    documentation: str  # first sentence of the member's documentation, markup removed
    nargs: Literal["*"] | None  # "*" for list members (the CLI takes several values), else None


@dataclass(frozen=True, slots=True)
class OperationArgs:
    """The CLI options of one Personalize operation, derived from botocore's model."""

    operation: str  # e.g. "CreateBatchInferenceJob"

    def __post_init__(self) -> None:
        names = _service_model().operation_names
        if self.operation not in names:
            raise ValueError(
                f"{SERVICE} has no operation {self.operation!r}; valid ones: {', '.join(names)}"
            )

    @classmethod
    def for_operation(cls, operation: str) -> OperationArgs:
        """The options of ``operation``: ``CreateBatchInferenceJob`` or
        ``create-batch-inference-job``."""
        for name in _service_model().operation_names:
            if operation == str(xform_name(name, "-")):
                return cls(name)
        return cls(operation)

    # model -----------------------------------------------------------------------------------

    @property
    def _model(self) -> Any:
        return _service_model().operation_model(self.operation)

    @property
    def _command(self) -> str:
        return f"aws {SERVICE} {xform_name(self.operation, '-')}"

    def _members(self) -> Mapping[str, Any]:
        shape = self._model.input_shape
        return {} if shape is None else dict(shape.members)

    def _member(self, member: str) -> tuple[str, Any]:
        """(member name, shape) for a member name or a CLI option name."""
        members = self._members()
        if member in members:
            return member, members[member]
        for name, shape in members.items():
            if cli_name(name) in (member, "--" + member):
                return name, shape
        options = ", ".join(cli_name(name) for name in members)
        raise ConfigError(
            f"{self._command} has no option {member!r}; valid options: {options}. "
            "Check the spelling against `--generate-cli-skeleton`."
        )

    def options(self) -> list[OptionSpec]:
        """One spec per input member, in model order."""
        shape = self._model.input_shape
        if shape is None:
            return []
        required = set(shape.required_members)
        return [
            OptionSpec(
                cli_name=cli_name(name),
                member=name,
                type_name=str(member_shape.type_name),
                required=name in required
                and not member_shape.metadata.get("idempotencyToken", False),
                documentation=_doc_overview(member_shape),
                nargs="*" if member_shape.type_name == "list" else None,
            )
            for name, member_shape in shape.members.items()
        ]

    # option values ---------------------------------------------------------------------------

    def parse_value(self, member: str, text: str) -> Any:
        """The value given on the command line for ``member`` (name or ``--cli-name``)."""
        name, shape = self._member(member)
        if shape.type_name == "list":
            return self._parse(name, shape, [text])
        return self._parse(name, shape, text)

    def parse_list_value(self, member: str, texts: Sequence[str]) -> Any:
        """The values given after a list option (``--tags a b``), like the CLI's ``nargs``."""
        name, shape = self._member(member)
        if isinstance(texts, str):
            raise TypeError("parse_list_value takes a sequence of strings, not one string")
        if shape.type_name != "list":
            if len(texts) != 1:
                raise ConfigError(
                    f"{cli_name(name)} takes exactly one value, got {len(texts)}: "
                    f"{list(texts)!r}. Quote a value that contains spaces."
                )
            return self._parse(name, shape, texts[0])
        return self._parse(name, shape, list(texts))

    def _parse(self, name: str, shape: Any, given: str | list[str]) -> Any:
        option = cli_name(name)
        value: str | bytes | list[str] = given
        single = given[0] if isinstance(given, list) and len(given) == 1 else given
        if isinstance(single, str):
            try:
                contents = _read_param_file(single)
            except _FileError as exc:
                raise _file_error(option, exc) from None
            if isinstance(contents, bytes) and shape.type_name != "blob":
                raise ConfigError(
                    f"{option}: fileb:// gives raw bytes, which only a blob parameter takes; "
                    f"{option} is a {shape.type_name}. Use file:// to read the file as text."
                )
            if contents is not None:
                value = contents
        shorthand = self._shorthand(option, shape, value)
        if shorthand is not None:
            parsed, positions = shorthand
        else:
            parsed, positions = _unpack(option, shape, value), None
        checker = _Validator()
        checker.validate(parsed, shape, name, (name,))
        if checker.problems:
            texts = value if isinstance(value, list) else [value]
            raise _validation_error(
                option, checker.problems, _locator(texts, positions, isinstance(value, list))
            )
        return parsed

    def _shorthand(
        self, option: str, shape: Any, value: str | bytes | list[str]
    ) -> tuple[Any, _Positions] | None:
        """Parse as shorthand if the AWS CLI would: a complex shape and not JSON-looking."""
        first = value[0] if isinstance(value, list) and value else value
        if isinstance(first, str) and first.strip().startswith(("[", "{")):
            return None
        if not _supports_shorthand(shape):
            return None
        if isinstance(value, bytes):  # unreachable: fileb:// is refused above for non-blobs
            return None
        if (
            isinstance(value, str)
            and shape.type_name == "structure"
            and list(shape.members) == ["Value"]
            and shape.members["Value"].type_name == "string"
            and "=" not in value
        ):
            return {"Value": value}, _Positions({}, {})
        texts = value if isinstance(value, list) else [value]
        parsed: list[dict[str, Any]] = []
        positions = _Positions({}, {})
        for number, text in enumerate(texts):
            where = option if len(texts) == 1 else f"{option} (value {number + 1}: {text!r})"
            parser = _ShorthandParser(text, _read_param_file)
            try:
                parsed.append(parser.parse())
            except _SyntaxError as exc:
                expected = _EXPECTED.get(exc.expected, repr(exc.expected))
                found = "the end of the value" if exc.found == "EOF" else repr(exc.found)
                raise ConfigError(
                    f"{where}: invalid shorthand syntax at character {exc.index + 1}: "
                    f"expected {expected}, found {found}.\n{_pointer(text, exc.index)}\n"
                    f"{_SHORTHAND_HINT}"
                ) from None
            except _DuplicateKey as exc:
                raise ConfigError(
                    f"{where}: key {exc.key!r} is given twice (second time at character "
                    f"{exc.index + 1}).\n{_pointer(text, exc.index)}\n"
                    "This is often a ',' where a space belongs: give each list item as its own "
                    "value, e.g. --tags tagKey=a,tagValue=b tagKey=c,tagValue=d."
                ) from None
            except _FileError as exc:
                raise _file_error(where, exc) from None
            prefix: Path = (number,) if isinstance(value, list) else ()
            for path, at in parser.value_at.items():
                positions.values[(*prefix, *path)] = (number, at)
            for path, at in parser.key_at.items():
                positions.keys[(*prefix, *path)] = (number, at)
        result: Any = parsed if isinstance(value, list) else parsed[0]
        try:
            _ShorthandConverter().visit(result, shape)
        except _ConversionError as exc:
            located = positions.values.get(exc.path)
            where_text = ""
            if located is not None:
                number, at = located
                where_text = f" (character {at + 1}"
                where_text += f" of value {number + 1})" if isinstance(value, list) else ")"
                where_text += f"\n{_pointer(texts[number], at)}"
            dotted = _dotted(exc.path)
            raise ConfigError(
                f"{option}: {dotted or 'the value'} {exc.message}{where_text}\n"
                "Fix that value (shorthand values are text, converted to the parameter's type)."
            ) from None
        return result, positions

    # --cli-input-json / --cli-input-yaml --------------------------------------------------------

    def load_cli_input(self, text: str, *, yaml: bool = False) -> dict[str, Any]:
        """The parameters of ``--cli-input-json`` (or ``--cli-input-yaml``): inline or file://."""
        option = "--cli-input-yaml" if yaml else "--cli-input-json"
        try:
            contents = _read_param_file(text)
        except _FileError as exc:
            raise _file_error(option, exc) from None
        source: str | bytes = text if contents is None else contents
        data = _load_yaml(option, source) if yaml else _load_json(option, source)
        if not isinstance(data, dict):
            kind = "YAML mapping" if yaml else "JSON object"
            raise ConfigError(
                f"{option}: expected a {kind} of parameter names to values, got "
                f"{type(data).__name__}. Start from `{self._command} --generate-cli-skeleton "
                f"{'yaml-input' if yaml else 'input'}`."
            )
        members = self._members()
        unknown = [key for key in data if key not in members]
        if unknown:
            valid = ", ".join(members)
            lines = "\n".join(
                f'  Unknown parameter in input: "{key}", must be one of: {valid}' for key in unknown
            )
            raise ConfigError(
                f"{option}: parameter validation failed:\n{lines}\n"
                "To fix: keys are case-sensitive member names (jobName, not --job-name); "
                "remove or rename the unknown ones."
            )
        return dict(data)

    def merge(self, cli_input: Mapping[str, Any], explicit: Mapping[str, Any]) -> dict[str, Any]:
        """Explicit options override ``--cli-input-*`` keys (top level only), as the AWS CLI does.

        ``None`` in ``explicit`` means "option not given". The result is validated like the
        CLI validates a request, except that required top-level members are not demanded.
        """
        merged = {key: value for key, value in explicit.items() if value is not None}
        for key, value in cli_input.items():
            merged.setdefault(key, value)
        shape = self._model.input_shape
        if shape is None:
            if merged:
                raise ConfigError(f"{self._command} takes no parameters, got {', '.join(merged)}")
            return merged
        checker = _Validator()
        checker.validate(merged, shape, "", ())
        problems = [
            problem
            for problem in checker.problems
            if not problem.message.startswith("Missing required parameter in input:")
        ]
        if problems:
            given = set(merged) - set(cli_input) | {key for key in explicit if key in merged}

            def source(problem: _Problem) -> str:
                key = str(problem.path[0]) if problem.path else ""
                if key in given:
                    return f" (from {cli_name(key)})"
                return " (from --cli-input-json/--cli-input-yaml)"

            raise _validation_error("parameters", problems, source)
        return merged

    # skeletons ---------------------------------------------------------------------------------

    def skeleton(self, kind: Literal["input", "yaml-input", "output"] = "input") -> str:
        """What ``aws personalize ... --generate-cli-skeleton KIND`` prints (enums: the first)."""
        model = self._model
        if kind == "input":
            shape = model.input_shape
            data = {} if shape is None else _skeleton(shape, [], member_names=False, for_yaml=False)
            return json.dumps(data, indent=4, default=_json_default) + "\n"
        if kind == "yaml-input":
            shape = model.input_shape
            node = (
                _Commented([])
                if shape is None
                else _skeleton(shape, [], member_names=False, for_yaml=True)
            )
            return _yaml_document(node)
        if kind == "output":
            shape = model.output_shape
            data = {} if shape is None else _skeleton(shape, [], member_names=True, for_yaml=False)
            if data == {}:
                return ""
            return json.dumps(data, indent=4, default=_json_default, ensure_ascii=False) + "\n"
        raise ValueError(f"unknown skeleton kind {kind!r}; use input, yaml-input or output")


# -- helpers of the API ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Positions:
    """Where shorthand keys and values start: path -> (number of the value, character index)."""

    values: dict[Path, tuple[int, int]]
    keys: dict[Path, tuple[int, int]]


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _locator(
    texts: Sequence[Any], positions: _Positions | None, several: bool
) -> Callable[[_Problem], str] | None:
    if positions is None:
        return None

    def locate(problem: _Problem) -> str:
        # Paths of validation problems start with the member name; shorthand paths do not.
        path = problem.path[1:]
        table = positions.keys if problem.at_key else positions.values
        found = table.get(path)
        if found is None:
            return ""
        number, at = found
        text = texts[number]
        if not isinstance(text, str):
            return ""
        of = f" of value {number + 1}" if several else ""
        return f" (character {at + 1}{of})\n{_pointer(text, at)}"

    return locate


def _load_json(option: str, source: str | bytes) -> Any:
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{option}: invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} "
            f"(character {exc.pos + 1}).\n{_pointer(exc.doc, exc.pos)}\n"
            "Fix the JSON (strings and keys in double quotes, no trailing commas)."
        ) from None
    except ValueError as exc:  # bytes that are not UTF-8/16/32
        raise ConfigError(f"{option}: invalid JSON: {exc}. Save the file as UTF-8.") from None


def _load_yaml(option: str, source: str | bytes) -> Any:
    try:
        return yaml.load(source, Loader=_Yaml12Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{option}: invalid YAML{where}: {problem}. Fix the YAML (indent with spaces; each "
            "key once per mapping)."
        ) from None


def _unpack(option: str, shape: Any, value: Any) -> Any:
    """The AWS CLI's non-shorthand unpacking: JSON for complex shapes, scalars by type."""
    if _is_json_value_header(shape) or _is_document(shape):
        return _json_value(option, value)
    kind = shape.type_name
    if kind in _SCALAR_TYPES:
        return _unpack_scalar(option, shape, value)
    if kind in ("structure", "map"):
        if isinstance(value, str) and value.lstrip()[:1] == "{":
            return _json_value(option, value)
        raise ConfigError(
            f"{option}: expected a JSON object (starting with '{{') or shorthand Key=Value "
            f"pairs, got {value!r}. Write e.g. {option} key=value or {option} '{{\"key\": ...}}'."
        )
    if kind == "list":
        if isinstance(value, str):
            if value.lstrip()[:1] == "[":
                return _json_value(option, value)
            if not value:
                raise ConfigError(f"{option}: the value is empty. Give at least one item.")
        elif len(value) == 1 and value[0].strip()[:1] == "[":
            return _json_value(option, value[0])
        return [
            _unpack(f"{option} (item {number + 1})", shape.member, item)
            for number, item in enumerate(value)
        ]
    return str(value)


def _json_value(option: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{option}: invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} "
            f"(character {exc.pos + 1}).\n{_pointer(text, exc.pos)}\n"
            "Fix the JSON (keys and strings in double quotes), or use shorthand Key=Value syntax."
        ) from None


def _unpack_scalar(option: str, shape: Any, value: Any) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(value)
        if kind in ("float", "double"):
            return float(value)
    except (ValueError, TypeError):
        noun = "an integer" if kind in ("integer", "long") else "a number"
        raise ConfigError(
            f"{option}: expected {noun}, got {value!r}. Give e.g. {option} "
            f"{'25' if noun == 'an integer' else '0.5'}."
        ) from None
    if kind == "blob" and shape.serialization.get("streaming"):
        path = os.path.expandvars(os.path.expanduser(value))
        if not os.path.isfile(path):
            raise ConfigError(f"{option}: {value!r} is not a file. Give the path of a file.")
        with open(path, "rb") as raw:
            return raw.read()
    if kind == "boolean":
        # The AWS CLI takes booleans as --flag / --no-flag; a value here must say which.
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        flag = option.split(" ")[0]
        raise ConfigError(
            f"{option}: expected true or false, got {value!r}. Give {flag} true or {flag} false "
            f"(the AWS CLI spells these {flag} and --no-{flag[2:]})."
        )
    return value
