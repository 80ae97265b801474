"""Request and response validation driven by botocore's own service model.

The emulator validates every request with it, and fanout checks the job requests it will send
with it before anything is uploaded (`preflight.check_request`). The model is the installed
botocore's plus the members AWS added since that fanout knows of
(``fanout.awsargs.use_newer_model``: ``batchInferenceJobConfig.rankingInfluence``), so the
emulator validates and echoes them as the service does; any other unknown member is ignored.

botocore checks only ``required``, types and ``min`` on the client side; the service rejects the
rest (``max``, ``pattern``, ``enum``, numeric ranges, list and map sizes). This module does that
rejection generically for every operation and shape of a botocore service model, with the error
codes and the Coral message style AWS JSON 1.1 services use:

* A body that does not deserialise into the input shape (not a JSON object, a string where a
  structure or an integer is expected, a boolean where an integer is expected, ...) raises
  ``SerializationException`` at the first mismatch. Deserialisation happens before constraint
  validation, so a type mismatch wins over any constraint violation.
* Otherwise every constraint violation is collected, in member order, recursing into structures,
  lists and maps, and reported as one ``InvalidInputException``::

      2 validation errors detected: Value 'x' at 'a' failed to satisfy constraint: ...; Value ...

Message scheme (paths and values):

* Paths join member names with dots: ``jobInput.s3DataSource.path``.
* An element of a list of structures, lists or maps is ``<list>.<N>.member`` with a 1-based ``N``
  (``tags.1.member.tagKey``).
* A value of a map of structures, lists or maps is ``<map>.<key>``.
* Elements of a list of scalars, and keys and scalar values of a map, are reported the way Coral
  does, once per container at the container's path, listing every constraint of the element
  shape: ``Member must satisfy constraint: [...]`` (lists), ``Map keys must satisfy constraint:
  [...]`` and ``Map value must satisfy constraint: [...]`` (maps). A null element adds
  ``Member must not be null`` at the head of that list.
* Values: strings ``'like this'``; numbers and booleans bare; a missing (or JSON null) member
  ``null``; lists, maps and structures quoted, in Java ``toString`` style (``'[a, b]'``,
  ``'{k=v}'``). A value of a ``sensitive`` shape or member is ``'***'``, also inside containers.
  Rendered values longer than ``MAX_RENDERED_CHARS`` (256) are cut and end in ``...``.
* String length counts Unicode code points; blob length counts decoded bytes; list and map length
  count elements.

Patterns are Java regular expressions with ``matches()`` semantics: the whole value must match,
even when the model's pattern has no ``$``. They are translated once (``\\d``, ``\\w``, ``\\s``
and ``.`` keep their ASCII/Java meaning, Java's POSIX ``\\p{ASCII}``-style classes become ASCII
ranges, ``\\Q...\\E`` is quoted) and compiled with the ``regex`` module, which knows ``\\p{L}``,
``\\p{Z}``, ``\\p{N}`` and nested/intersected character classes like Java.

Not modelled: ``union`` shapes are validated as plain structures (no "exactly one member" check);
``document`` shapes accept any JSON value.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Final

import regex

__all__ = ["RequestInvalid", "ServiceModel"]

INVALID_INPUT: Final = "InvalidInputException"
SERIALIZATION: Final = "SerializationException"

# Rendered values longer than this many characters are cut and end with "...". Coral documents
# no limit; we bound the message size so a 2,500-character string or a 10,000-element list does
# not produce a megabyte-long error body.
MAX_RENDERED_CHARS: Final = 256

_MASK: Final = "***"

_STRUCTURED: Final = frozenset({"structure", "list", "map"})
_INT_BITS: Final = {"byte": 8, "short": 16, "integer": 32, "long": 64}
_INT_TYPES: Final = frozenset({*_INT_BITS, "biginteger"})
_FLOAT_TYPES: Final = frozenset({"double", "float", "bigdecimal"})
_TYPE_NOUNS: Final = {
    "string": "a String",
    "integer": "an Integer",
    "long": "a Long",
    "short": "a Short",
    "byte": "a Byte",
    "biginteger": "a BigInteger",
    "double": "a Double",
    "float": "a Float",
    "bigdecimal": "a BigDecimal",
    "boolean": "a Boolean",
    "timestamp": "a Timestamp",
    "blob": "a Blob",
    "structure": "a Structure",
    "map": "a Map",
    "list": "a List",
}


class RequestInvalid(Exception):
    """Carries the AWS error code and message the server must return."""

    code: str
    message: str

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# -- Java regular expressions ----------------------------------------------------------------------

# Java's predefined classes are ASCII-only unless UNICODE_CHARACTER_CLASS is set; the regex module
# makes them Unicode-aware, so they are spelled out as ranges (class contents, without brackets).
_JAVA_SHORTHANDS: Final = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\x0B\\f\\r"}
_JAVA_POSIX: Final = {
    "Lower": "a-z",
    "Upper": "A-Z",
    "ASCII": "\\x00-\\x7F",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "Punct": "\\x21-\\x2F\\x3A-\\x40\\x5B-\\x60\\x7B-\\x7E",
    "Graph": "\\x21-\\x7E",
    "Print": "\\x20-\\x7E",
    "Blank": " \\t",
    "Cntrl": "\\x00-\\x1F\\x7F",
    "XDigit": "0-9a-fA-F",
    "Space": " \\t\\n\\x0B\\f\\r",
}
# Java's "." excludes every line terminator, not only "\n".
_JAVA_DOT: Final = "[^\\n\\r\\x85\\u2028\\u2029]"


def _class_text(content: str, *, negated: bool, in_class: bool) -> str:
    if negated:
        return f"[^{content}]"  # a nested set inside a class: regex.V1 supports it, like Java
    return content if in_class else f"[{content}]"


def java_to_python_pattern(pattern: str) -> str:
    """Translate a Java regular expression to the ``regex`` module's V1 syntax (same meaning)."""
    out: list[str] = []
    depth = 0  # character-class nesting
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                stop = n if end < 0 else end
                out.append(regex.escape(pattern[i + 2 : stop]))
                i = n if end < 0 else end + 2
                continue
            if nxt.lower() in _JAVA_SHORTHANDS:
                content = _JAVA_SHORTHANDS[nxt.lower()]
                out.append(_class_text(content, negated=nxt.isupper(), in_class=depth > 0))
                i += 2
                continue
            if nxt in "pP" and i + 2 < n and pattern[i + 2] == "{":
                close = pattern.find("}", i + 3)
                if close > 0:
                    name = pattern[i + 3 : close]
                    posix = _JAVA_POSIX.get(name)
                    if posix is None:
                        out.append(pattern[i : close + 1])
                    else:
                        out.append(_class_text(posix, negated=nxt == "P", in_class=depth > 0))
                    i = close + 1
                    continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[":
            depth += 1
        elif c == "]" and depth > 0:
            depth -= 1
        elif c == "." and depth == 0:
            out.append(_JAVA_DOT)
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


@cache
def compile_java_pattern(pattern: str) -> regex.Pattern[str]:
    """Compile a model pattern once; use ``fullmatch`` (Java ``matches()``) with the result."""
    return regex.compile(java_to_python_pattern(pattern), regex.V1)


# -- model helpers ---------------------------------------------------------------------------------


@cache
def _load_model(service: str) -> Any:
    import botocore.session

    from .awsargs import use_newer_model

    # The service knows members newer than this botocore (rankingInfluence): fanout's model has
    # them, and the emulator validates and echoes them as AWS does.
    return use_newer_model(botocore.session.get_session()).get_service_model(service)


def _meta(shape: Any) -> Mapping[str, Any]:
    metadata: Mapping[str, Any] = shape.metadata
    return metadata


def _is_sensitive(shape: Any) -> bool:
    return bool(_meta(shape).get("sensitive", False))


def _is_document(shape: Any) -> bool:
    return bool(_meta(shape).get("document", False))


def _is_container(shape: Any) -> bool:
    return shape.type_name in _STRUCTURED and not _is_document(shape)


def _fmt_number(value: float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _fmt_bound(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _token(value: object) -> str:
    """The JSON token name Coral uses in its deserialisation messages."""
    if isinstance(value, bool):
        return "BOOLEAN_VALUE"
    if isinstance(value, int):
        return "NUMBER_VALUE"
    if isinstance(value, float):
        return "DECIMAL_VALUE"
    if isinstance(value, str):
        return "STRING_VALUE"
    return "NULL_VALUE" if value is None else "VALUE"


def _convert_error(value: object, type_name: str) -> str:
    return f"{_token(value)} can not be converted to {_TYPE_NOUNS.get(type_name, 'a ' + type_name)}"


def _parse_timestamp_string(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        pass
    else:
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _type_error(shape: Any, value: object, *, timestamp_strings: bool) -> str | None:
    """Why ``value`` (not None) cannot be read as ``shape``, or None when it can."""
    if _is_document(shape):
        return None
    kind: str = shape.type_name
    if kind in ("structure", "map"):
        if isinstance(value, dict):
            return None
        if isinstance(value, list):
            return "Start of list found where not expected."
        return _convert_error(value, kind)
    if isinstance(value, dict):
        return "Start of structure or map found where not expected."
    if kind == "list":
        return None if isinstance(value, list) else _convert_error(value, kind)
    if isinstance(value, list):
        return "Start of list found where not expected."
    if kind == "string":
        return None if isinstance(value, str) else _convert_error(value, kind)
    if kind == "boolean":
        return None if isinstance(value, bool) else _convert_error(value, kind)
    if kind in _INT_TYPES:
        if not isinstance(value, int) or isinstance(value, bool):
            return _convert_error(value, kind)
        bits = _INT_BITS.get(kind)
        if bits is not None and not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            return f"{_convert_error(value, kind)}: value out of range"
        return None
    if kind in _FLOAT_TYPES:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return _convert_error(value, kind)
        if isinstance(value, float) and not math.isfinite(value):
            return _convert_error(value, kind)
        return None
    if kind == "timestamp":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return None
        if timestamp_strings and isinstance(value, str) and _parse_timestamp_string(value):
            return None
        return _convert_error(value, kind)
    if kind == "blob":
        if not isinstance(value, str):
            return _convert_error(value, kind)
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return f"{_convert_error(value, kind)}: invalid base64"
        return None
    return None  # a type this module does not know: accept anything


# -- constraints -----------------------------------------------------------------------------------


def _length(shape: Any, value: object) -> int | None:
    kind = shape.type_name
    if kind == "blob" and isinstance(value, str):
        return len(base64.b64decode(value))
    if isinstance(value, str | list | dict) and kind in ("string", "list", "map"):
        return len(value)
    return None


def constraint_texts(shape: Any) -> list[str]:
    """Every constraint of a scalar shape, in Coral's order (used for element constraint lists)."""
    meta = _meta(shape)
    kind = shape.type_name
    texts: list[str] = []
    if kind in ("string", "blob", "list", "map"):
        if "max" in meta:
            texts.append(f"Member must have length less than or equal to {_fmt_bound(meta['max'])}")
        if "min" in meta:
            texts.append(
                f"Member must have length greater than or equal to {_fmt_bound(meta['min'])}"
            )
    if kind == "string":
        if "pattern" in meta:
            texts.append(f"Member must satisfy regular expression pattern: {meta['pattern']}")
        if meta.get("enum"):
            texts.append(f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]")
    if kind in _INT_TYPES or kind in _FLOAT_TYPES:
        if "max" in meta:
            texts.append(f"Member must have value less than or equal to {_fmt_bound(meta['max'])}")
        if "min" in meta:
            texts.append(
                f"Member must have value greater than or equal to {_fmt_bound(meta['min'])}"
            )
    return texts


def constraint_failures(shape: Any, value: object) -> list[str]:
    """The constraints a type-correct, non-null ``value`` violates (Coral texts, Coral order)."""
    meta = _meta(shape)
    kind = shape.type_name
    failed: list[str] = []
    length = _length(shape, value)
    if length is not None:
        if "max" in meta and length > meta["max"]:
            failed.append(
                f"Member must have length less than or equal to {_fmt_bound(meta['max'])}"
            )
        if "min" in meta and length < meta["min"]:
            failed.append(
                f"Member must have length greater than or equal to {_fmt_bound(meta['min'])}"
            )
    if kind == "string" and isinstance(value, str):
        pattern = meta.get("pattern")
        if pattern is not None and compile_java_pattern(pattern).fullmatch(value) is None:
            failed.append(f"Member must satisfy regular expression pattern: {pattern}")
        enum = meta.get("enum")
        if enum and value not in enum:
            failed.append(f"Member must satisfy enum value set: [{', '.join(enum)}]")
    if (
        (kind in _INT_TYPES or kind in _FLOAT_TYPES)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        if "max" in meta and value > meta["max"]:
            failed.append(f"Member must have value less than or equal to {_fmt_bound(meta['max'])}")
        if "min" in meta and value < meta["min"]:
            failed.append(
                f"Member must have value greater than or equal to {_fmt_bound(meta['min'])}"
            )
    return failed


# -- rendering values ------------------------------------------------------------------------------


def _java_string(shape: Any, value: object, sensitive: bool) -> str:
    """Java ``toString``-like text of a value, masking sensitive parts (no outer quotes)."""
    if value is None:
        return "null"
    if sensitive or _is_sensitive(shape):
        return _MASK
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return _fmt_number(value)
    kind = shape.type_name
    if _is_document(shape):
        return str(value)
    if kind == "list" and isinstance(value, list):
        return "[" + ", ".join(_java_string(shape.member, v, False) for v in value) + "]"
    if kind == "map" and isinstance(value, dict):
        items = (
            f"{_java_string(shape.key, k, False)}={_java_string(shape.value, v, False)}"
            for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    if kind == "structure" and isinstance(value, dict):
        members: Mapping[str, Any] = shape.members
        parts = (
            f"{name}={_java_string(member, value[name], False)}"
            for name, member in members.items()
            if value.get(name) is not None
        )
        return "{" + ", ".join(parts) + "}"
    return str(value)


def render_value(shape: Any, value: object, sensitive: bool = False) -> str:
    """A value as Coral shows it after ``Value``: quoted text, bare number, or ``null``."""
    if value is None:
        return "null"
    if not (sensitive or _is_sensitive(shape)) and isinstance(value, bool | int | float):
        return _fmt_number(value)
    text = _java_string(shape, value, sensitive)
    if len(text) > MAX_RENDERED_CHARS:
        text = text[:MAX_RENDERED_CHARS] + "..."
    return f"'{text}'"


# -- input validation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Violation:
    path: str
    value: str  # already rendered
    constraint: str

    def text(self) -> str:
        return (
            f"Value {self.value} at '{self.path}' failed to satisfy constraint: {self.constraint}"
        )


def _format_violations(violations: list[_Violation]) -> str:
    count = len(violations)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(v.text() for v in violations)


class _InputWalker:
    """Walks a request: raises on the first type mismatch, collects constraint violations."""

    def __init__(self) -> None:
        self.violations: list[_Violation] = []

    def _typecheck(self, shape: Any, value: object) -> None:
        error = _type_error(shape, value, timestamp_strings=True)
        if error is not None:
            raise RequestInvalid(SERIALIZATION, error)

    def _add(self, path: str, shape: Any, value: object, sensitive: bool, constraint: str) -> None:
        self.violations.append(_Violation(path, render_value(shape, value, sensitive), constraint))

    def value(self, shape: Any, value: object, path: str, sensitive: bool) -> None:
        """Check a non-null value of ``shape`` found at ``path``."""
        self._typecheck(shape, value)
        if _is_document(shape):
            return
        sensitive = sensitive or _is_sensitive(shape)
        for failed in constraint_failures(shape, value):
            self._add(path, shape, value, sensitive, failed)
        kind = shape.type_name
        if kind == "structure" and isinstance(value, dict):
            self._structure(shape, value, path, sensitive)
        elif kind == "list" and isinstance(value, list):
            self._list(shape, value, path, sensitive)
        elif kind == "map" and isinstance(value, dict):
            self._map(shape, value, path, sensitive)

    def _structure(self, shape: Any, value: dict[str, object], path: str, sensitive: bool) -> None:
        required = frozenset(shape.required_members)
        members: Mapping[str, Any] = shape.members
        for name, member in members.items():
            child = value.get(name)  # JSON null is the same as absent; unknown members ignored
            member_path = _join(path, name)
            if child is None:
                if name in required:
                    self._add(member_path, member, None, sensitive, "Member must not be null")
                continue
            self.value(member, child, member_path, sensitive)

    def _scalar_elements(self, element: Any, values: Iterable[object]) -> tuple[bool, bool]:
        """Type-check scalar elements; return (some element is null, some element fails)."""
        has_null = fails = False
        for v in values:
            if v is None:
                has_null = True
                continue
            self._typecheck(element, v)
            if not fails and constraint_failures(element, v):
                fails = True
        return has_null, fails

    def _element_constraint(self, element: Any, has_null: bool) -> str:
        texts = constraint_texts(element)
        if has_null:
            texts.insert(0, "Member must not be null")
        return "[" + ", ".join(texts) + "]"

    def _list(self, shape: Any, value: list[object], path: str, sensitive: bool) -> None:
        element = shape.member
        if not _is_container(element):
            has_null, fails = self._scalar_elements(element, value)
            if has_null or fails:
                constraint = self._element_constraint(element, has_null)
                self._add(
                    path, shape, value, sensitive, f"Member must satisfy constraint: {constraint}"
                )
            return
        for index, child in enumerate(value, start=1):
            child_path = f"{path}.{index}.member"
            if child is None:
                self._add(child_path, element, None, sensitive, "Member must not be null")
            else:
                self.value(element, child, child_path, sensitive)

    def _map(self, shape: Any, value: dict[str, object], path: str, sensitive: bool) -> None:
        key_shape, value_shape = shape.key, shape.value
        _, keys_fail = self._scalar_elements(key_shape, value.keys())
        if keys_fail:
            constraint = self._element_constraint(key_shape, False)
            self._add(
                path, shape, value, sensitive, f"Map keys must satisfy constraint: {constraint}"
            )
        if not _is_container(value_shape):
            has_null, fails = self._scalar_elements(value_shape, value.values())
            if has_null or fails:
                constraint = self._element_constraint(value_shape, has_null)
                self._add(
                    path,
                    shape,
                    value,
                    sensitive,
                    f"Map value must satisfy constraint: {constraint}",
                )
            return
        for key, child in value.items():
            child_path = _join(path, key)
            if child is None:
                self._add(child_path, value_shape, None, sensitive, "Member must not be null")
            else:
                self.value(value_shape, child, child_path, sensitive)


# -- output validation -----------------------------------------------------------------------------


class _OutputWalker:
    """Walks a response body and lists every way it departs from the output shape."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def _at(self, path: str) -> str:
        return f"'{path or '<body>'}'"

    def value(self, shape: Any, value: object, path: str) -> None:
        if value is None:
            self.problems.append(f"{self._at(path)}: null value (omit absent members instead)")
            return
        if shape.type_name == "timestamp" and isinstance(value, str):
            self.problems.append(
                f"{self._at(path)}: timestamp must be a JSON number (epoch seconds), got {value!r}"
            )
            return
        error = _type_error(shape, value, timestamp_strings=False)
        if error is not None:
            self.problems.append(f"{self._at(path)}: {error} (got {value!r:.80})")
            return
        if _is_document(shape):
            return
        for failed in constraint_failures(shape, value):
            rendered = render_value(shape, value)
            self.problems.append(f"{self._at(path)}: value {rendered} fails: {failed}")
        kind = shape.type_name
        if kind == "structure" and isinstance(value, dict):
            members: Mapping[str, Any] = shape.members
            self.problems.extend(
                f"{self._at(_join(path, name))}: member not in shape {shape.name}"
                for name in value
                if name not in members
            )
            required = frozenset(shape.required_members)
            for name, member in members.items():
                if name in value:
                    self.value(member, value[name], _join(path, name))
                elif name in required:
                    self.problems.append(f"{self._at(_join(path, name))}: required member missing")
        elif kind == "list" and isinstance(value, list):
            for index, child in enumerate(value, start=1):
                self.value(shape.member, child, f"{path}.{index}.member")
        elif kind == "map" and isinstance(value, dict):
            for key, child in value.items():
                for failed in constraint_failures(shape.key, key):
                    self.problems.append(f"{self._at(path)}: map key {key!r} fails: {failed}")
                self.value(shape.value, child, _join(path, key))


# -- public model ----------------------------------------------------------------------------------


class ServiceModel:
    """botocore's model of one AWS service, as the emulator's request and response validator."""

    def __init__(self, service: str = "personalize") -> None:
        self._model: Any = _load_model(service)  # loaded and parsed once per process
        self._operations = frozenset(str(name) for name in self._model.operation_names)

    @property
    def target_prefix(self) -> str:
        """The ``X-Amz-Target`` prefix, e.g. ``AmazonPersonalize``."""
        return str(self._model.metadata["targetPrefix"])

    def has_operation(self, name: str) -> bool:
        """Whether the service models an operation of that exact name."""
        return name in self._operations

    def operation_names(self) -> frozenset[str]:
        """Names of every modelled operation."""
        return self._operations

    def _operation(self, operation: str) -> Any:
        if operation not in self._operations:
            raise ValueError(f"unknown operation {operation!r}")
        return self._model.operation_model(operation)

    def validate_input(self, operation: str, params: object) -> None:
        """Raise ``RequestInvalid`` as AWS would for a request body of ``operation``.

        ``params`` is the decoded JSON body. Raises ``ValueError`` for an operation the model
        does not have (the server answers those with UnknownOperationException itself).
        """
        shape = self._operation(operation).input_shape
        if not isinstance(params, dict):
            if isinstance(params, list):
                raise RequestInvalid(SERIALIZATION, "Start of list found where not expected.")
            raise RequestInvalid(SERIALIZATION, _convert_error(params, "structure"))
        if shape is None:
            return
        walker = _InputWalker()
        walker.value(shape, params, "", False)
        if walker.violations:
            raise RequestInvalid(INVALID_INPUT, _format_violations(walker.violations))

    def validate_output(self, operation: str, body: object) -> list[str]:
        """Problems of a response ``body`` against the output shape; empty when it is valid."""
        shape = self._operation(operation).output_shape
        if not isinstance(body, dict):
            return [f"response body must be a JSON object, got {type(body).__name__}"]
        if shape is None:
            return [f"'{name}': member not in shape (operation has no output)" for name in body]
        walker = _OutputWalker()
        walker.value(shape, body, "")
        return walker.problems

    def list_members(self, operation: str) -> list[str]:
        """The names of the list members of `operation`'s output (`batchInferenceJobs`)."""
        shape = self._operation(operation).output_shape
        members = shape.members if shape is not None else {}
        return [name for name, member in members.items() if member.type_name == "list"]

    def error_codes(self, operation: str) -> frozenset[str]:
        """Names of the error shapes the model lists for ``operation``."""
        return frozenset(str(shape.name) for shape in self._operation(operation).error_shapes)
