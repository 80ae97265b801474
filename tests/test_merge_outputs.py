"""Parsing the service's output lines, and cutting streamed objects into lines."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout import _mergekernels as K
from fanout._outputs import (
    BadLine,
    Block,
    LineBlocks,
    OutputRecord,
    ParsedBlock,
    blocks,
    parse_block,
    parse_output_line,
)
from fanout._writers import flat_record
from fanout.records import InputKind

USER, ITEM, RANKING, ATTRS = (
    InputKind.USER,
    InputKind.ITEM,
    InputKind.RANKING,
    InputKind.ITEM_ATTRIBUTES,
)

GOOD: list[tuple[str, bytes, InputKind, dict[str, object]]] = [
    (
        "compact user-personalization",
        b'{"input":{"userId":"4638"},"output":{"recommendedItems":["63992","115149"],'
        b'"scores":[0.0152238,0.0069081]},"error":null}',
        USER,
        {"key": "4638", "items": ("63992", "115149"), "scores": (0.0152238, 0.0069081)},
    ),
    (
        "spaced, no error key, no scores (popularity-count)",
        b'{"input": {"userId": "12"}, "output": {"recommendedItems": ["105", "106", "441"]}}',
        USER,
        {"key": "12", "items": ("105", "106", "441"), "scores": None, "error": None},
    ),
    (
        "Java-style exponents",
        b'{"input":{"userId":"1"},"output":{"recommendedItems":["a","b","c"],'
        b'"scores":[3.773E-4,7.17E-5,1E-7]},"error":null}',
        USER,
        {"scores": (3.773e-4, 7.17e-5, 1e-7)},
    ),
    (
        "tabs, newlines-free odd whitespace and unknown keys everywhere",
        b'\t{ "extra" : 1 ,"input":{"userId":"u","zz":[1]},\t"output":{"recommendedItems":'
        b'["x"],"scores":[1],"reasons":[["Popular item"]]},"error":null, "more":{} } ',
        USER,
        {"key": "u", "items": ("x",), "scores": (1.0,)},
    ),
    (
        "ranking echoes itemList; key is userId",
        b'{"input":{"userId":"891","itemList":["27","886","101"]},"output":{"recommendedItems":'
        b'["27","101","886"],"scores":[0.48421,0.28133,0.23446]}}',
        RANKING,
        {"key": "891", "items": ("27", "101", "886")},
    ),
    (
        "related items keyed by itemId",
        b'{"input": {"itemId": "105"}, "output": {"recommendedItems": ["106", "107", "49"]}}',
        ITEM,
        {"key": "105", "items": ("106", "107", "49"), "scores": None},
    ),
    (
        "themes",
        b'{"input":{"itemId":"40"},"output":{"recommendedItems":["36","50"],"theme":'
        b'"Movies with a strong female lead","itemsThemeRelevanceScores":[0.19994527,-0.188913]}}',
        ITEM,
        {"theme": "Movies with a strong female lead", "theme_scores": (0.19994527, -0.188913)},
    ),
    (
        "segment, observed usersList",
        b'{"input": {"itemId": "1"}, "output": {"usersList": ["61","22"]}, "error": null}',
        ITEM,
        {"key": "1", "users": ("61", "22")},
    ),
    (
        "segment, documented recommendedUsers",
        b'{"input": {"itemId": "105"}, "output": {"recommendedUsers": ["106", "107", "49"]}}',
        ITEM,
        {"users": ("106", "107", "49")},
    ),
    (
        "item attributes echoed at the top level",
        b'{"itemAttributes": "ITEMS.genres = \\"Comedy\\"", "output": {"recommendedUsers": ["9"]}}',
        ATTRS,
        {"key": 'ITEMS.genres = "Comedy"', "users": ("9",)},
    ),
    (
        "error line, observed shape",
        b'{"input":{"userId":"7"},"output":{"recommendedItems":[]},'
        b'"error":"User error: Required fields for the provided recipe are userId"}',
        USER,
        {"key": "7", "error": "User error: Required fields for the provided recipe are userId"},
    ),
    (
        "error line whose input was echoed as text",
        b'{"input":"{\\"itemId\\": \\"5\\", \\"x\\": 1}","output":{"recommendedItems":[]},'
        b'"error":"User error: x is not allowed."}',
        ITEM,
        {"key": "5", "error": "User error: x is not allowed."},
    ),
    (
        "non-ASCII and escaped IDs",
        '{"input":{"userId":"Zoë \\"q\\" \\u00e9\\ud83d\\ude00"},"output":{"recommendedItems":'
        '["ü"]}}'.encode(),
        USER,
        {"key": 'Zoë "q" é😀', "items": ("ü",)},
    ),
    (
        "a CR line end left in",
        b'{"input":{"userId":"cr"},"output":{"recommendedItems":[]}}\r',
        USER,
        {"key": "cr", "items": ()},
    ),
]


@pytest.mark.parametrize(("line", "kind", "want"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_lines_parse(line: bytes, kind: InputKind, want: dict[str, object]) -> None:
    """Every documented and observed shape parses, whatever the whitespace and extra keys."""
    record = parse_output_line(line, kind)
    assert isinstance(record, OutputRecord), record
    for name, value in want.items():
        assert getattr(record, name) == value, name
    assert record.raw == line


def test_error_line_not_a_string_is_still_an_error() -> None:
    """A non-null error of another type still marks the line failed, with its JSON as message."""
    record = parse_output_line(b'{"input":{"userId":"1"},"error":{"code":5}}', USER)
    assert isinstance(record, OutputRecord)
    assert record.error == '{"code":5}'


BAD = [
    ("truncated", b'{"input":{"userId":"1"},"output":{"recommendedItems":["a","b'),
    ("not JSON", b"garbage"),
    (
        "error line whose input text is not JSON",
        b'{"input":"{\\"userId\\": ","output":{"recommendedItems":[]},"error":"User error"}',
    ),
    ("not an object", b'["input"]'),
    ("no input", b'{"output":{"recommendedItems":[]}}'),
    ("wrong key for the kind", b'{"input":{"itemId":"1"},"output":{"recommendedItems":[]}}'),
    ("numeric ID", b'{"input":{"userId":5},"output":{"recommendedItems":[]}}'),
    ("empty ID", b'{"input":{"userId":""},"output":{"recommendedItems":[]}}'),
    ("no output, no error", b'{"input":{"userId":"1"},"error":null}'),
    ("items not strings", b'{"input":{"userId":"1"},"output":{"recommendedItems":[1,2]}}'),
    ("items missing", b'{"input":{"userId":"1"},"output":{"scores":[1]}}'),
    (
        "scores misaligned",
        b'{"input":{"userId":"1"},"output":{"recommendedItems":["a"],"scores":[0.1,0.2]}}',
    ),
    (
        "scores not numbers",
        b'{"input":{"userId":"1"},"output":{"recommendedItems":["a"],"scores":["0.1"]}}',
    ),
    (
        "boolean score",
        b'{"input":{"userId":"1"},"output":{"recommendedItems":["a"],"scores":[true]}}',
    ),
    ("users not strings", b'{"input":{"userId":"1"},"output":{"usersList":[null]}}'),
    ("invalid UTF-8", b'{"input":{"userId":"\xff"},"output":{"recommendedItems":[]}}'),
    ("NaN", b'{"input":{"userId":"1"},"output":{"recommendedItems":["a"],"scores":[NaN]}}'),
]


@pytest.mark.parametrize("line", [b[1] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_lines_are_reported_not_raised(line: bytes) -> None:
    """A line the merge cannot use becomes a BadLine with a short reason."""
    result = parse_output_line(line, USER)
    assert isinstance(result, BadLine), result
    assert result.reason and len(result.reason) <= 120


def test_truncated_line_says_so() -> None:
    """A line cut off mid-object is called truncated."""
    result = parse_output_line(b'{"input":{"userId":"1"},"output":{"recom', USER)
    assert isinstance(result, BadLine)
    assert "truncated" in result.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(list(InputKind)))
def test_arbitrary_bytes_never_raise(data: bytes, kind: InputKind) -> None:
    """Whatever the bytes, the parser returns a record or a BadLine."""
    assert isinstance(parse_output_line(data, kind), OutputRecord | BadLine)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["input", "output", "error", "itemAttributes", "x"]), json_values
    ),
    st.dictionaries(
        st.sampled_from(
            ["recommendedItems", "scores", "theme", "itemsThemeRelevanceScores", "usersList"]
        ),
        json_values,
    ),
    st.sampled_from(list(InputKind)),
)
def test_arbitrary_json_never_raises(
    top: dict[str, object], output: dict[str, object], kind: InputKind
) -> None:
    """Any JSON object with any mix of the known keys parses to a record or a BadLine."""
    for obj in (top, {**top, "input": {kind.id_field: "k"}, "output": output}):
        assert isinstance(parse_output_line(orjson.dumps(obj), kind), OutputRecord | BadLine)


def _split(chunks: list[bytes], limit: int = 1000) -> list[tuple[int, bytes | None]]:
    """The lines of a chunked stream as the merge sees them: cut into blocks by `LineBlocks`,
    then into lines by the kernel (None: over the limit), numbered from 1."""
    splitter = LineBlocks(limit)
    out: list[tuple[int, bytes | None]] = []
    for block in [*(b for chunk in chunks for b in splitter.feed(chunk)), splitter.finish()]:
        if block is None:
            continue
        if block.overlong:
            out.append((len(out) + 1, None))
        data = block.data()
        kinds, spans = K.scan(data, K.NOTHING, limit)
        for kind, (lo, hi) in zip(kinds.tolist(), spans[:, :2].tolist(), strict=True):
            out.append((len(out) + 1, None if kind == K.OVERLONG else data[lo:hi].tobytes()))
    return out


def test_splitter_joins_lines_across_chunks_and_numbers_them() -> None:
    """Lines split across chunk borders come out whole, numbered from 1, CR dropped."""
    assert _split([b"ab", b"c\nd", b"e\r\n\nf"]) == [(1, b"abc"), (2, b"de"), (3, b""), (4, b"f")]


def test_splitter_skips_overlong_lines() -> None:
    """A line over the limit comes out as None and the next line is intact."""
    assert _split([b"12", b"345678", b"9\nok\n"], limit=4) == [(1, None), (2, b"ok")]
    assert _split([b"123456\nok"], limit=4) == [(1, None), (2, b"ok")]
    assert _split([b"ok\n123", b"456"], limit=4) == [(1, b"ok"), (2, None)]
    assert _split([b"12345", b"\nok"], limit=4) == [(1, None), (2, b"ok")]


@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=20), st.data())
def test_splitter_round_trips(lines: list[bytes], data: st.DataObject) -> None:
    """However the stream is chunked, the lines come back as they were."""
    blob = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=6)))
    chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]
    got = _split(chunks, limit=10_000)
    assert [d for _, d in got] == [line.removesuffix(b"\r") for line in lines]
    assert [n for n, _ in got] == list(range(1, len(lines) + 1))


# -- whole batches: the common shape's shortcut agrees with parse_output_line ---------------------

COMMON = [
    b'{"input":{"userId":"u1"},"output":{"recommendedItems":["a","b"],"scores":[0.5,3.773E-4]},'
    b'"error":null}',
    b'{"input":{"userId":"u2"},"output":{"recommendedItems":["x"],"scores":[1]}}',
    b'{"input":{"userId":"u3"},"output":{"recommendedItems":["a,b","c]"]},"error":null}',
    b'{"input":{"userId":"Zo\xc3\xab"},"output":{"recommendedItems":["","\xc3\xbc"],'
    b'"scores":[-0.0,1e5]},"error":null}',
    b'{"input":{"userId":"u5"},"output":{"recommendedItems":["a"]}}',
]
ODD = [
    *(g[1] for g in GOOD),
    *(b[1] for b in BAD),
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"scores":[1,2]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a","b"],"scores":[1]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"scores":[01]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"scores":[1.]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"scores":[1e999]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"scores":[]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"scores":[1,]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"scores":[1]},"error":"no"}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"scores":[1]},"error":null,"x":1}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"scores":[1],"reasons":[]}}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"]},"x":{"y":["z"]}}',
    b'{"input":{"userId":"u","b":"c"},"output":{"recommendedItems":["a"]}}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"recommendedItems":["b"]}}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"],"scores":[true]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a\tb"]},"error":null}',
    b'{"input":{"userId":"u\xff"},"output":{"recommendedItems":["a"]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a\\"b"]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a""b"]},"error":null}',
    b'{"input":{"userId":"u"},"output":{"recommendedItems":["a"]},"error":null}}',
]


def _same_as_one_by_one(lines: list[bytes | None], kind: InputKind = USER) -> ParsedBlock:
    """Parse `lines` (None: a line over the limit) as one block after line 9, and check that
    it says what `parse_output_line` says of each line."""
    limit = 1000
    data = b"".join((b"x" * (limit + 1) if line is None else line) + b"\n" for line in lines)
    parsed = parse_block(9, Block(data), kind, limit)
    expected = [  # (a line's final \r is part of its line end)
        (number, parse_output_line(line.removesuffix(b"\r"), kind) if line is not None else None)
        for number, line in enumerate(lines, start=10)
        if line is None or line.strip()
    ]
    assert parsed.count == len(lines)
    assert parsed.lines == len(expected)
    assert [n for n, _ in parsed.bad] == [n for n, r in expected if not isinstance(r, OutputRecord)]
    usable = [r for _, r in expected if isinstance(r, OutputRecord)]
    common = parsed.common
    mine = common.records(kind)
    at = [*parsed.common_at.tolist(), *parsed.record_at.tolist()]
    together = [*mine, *parsed.records]
    assert [together[i] for i in sorted(range(len(at)), key=at.__getitem__)] == usable
    assert common.keys() == [r.key.encode() for r in mine]
    if len(common):  # the byte ranges say what the records say
        flat = [orjson.loads(line) for line in bytes(common.flat()).splitlines()]
        assert flat == [orjson.loads(orjson.dumps(flat_record(r, kind))) for r in mine]
        assert common.spans[:, K.COUNT].tolist() == [len(r.items) for r in mine]
        assert bytes(common.lines()).splitlines() == [r.raw for r in mine]
        picked = common.take([len(common) - 1, 0])
        assert picked.records(kind) == [mine[-1], mine[0]]
    return parsed


def test_common_shape_is_taken_whole_and_agrees() -> None:
    """Lines as the service writes them are kept as byte ranges, with the parser's values."""
    parsed = _same_as_one_by_one([*COMMON, b"", None, *COMMON])
    assert len(parsed.common) == 10
    assert parsed.records == []


@pytest.mark.parametrize("line", ODD, ids=range(len(ODD)))
def test_odd_lines_in_a_batch_agree_with_the_parser(line: bytes) -> None:
    """Any other line in a batch of common ones is parsed, reported or kept as the parser says."""
    _same_as_one_by_one([COMMON[0], line, COMMON[1]])
    _same_as_one_by_one([line], ITEM)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(COMMON + ODD), max_size=8), st.binary(max_size=60))
def test_mixed_batches_agree_with_the_parser(lines: list[bytes], noise: bytes) -> None:
    """However common, odd and random lines mix, a batch parses as its lines one by one."""
    _same_as_one_by_one([*lines, noise.replace(b"\n", b"")])


async def test_blocks_closes_its_chunks_when_it_is_closed() -> None:
    """A reader stopped after its first block (a failure downstream) closes the stream of
    chunks under it at once (an S3 body, a file), not when the garbage collector runs."""
    import contextlib
    from collections.abc import AsyncGenerator

    closed: list[bool] = []

    async def chunks() -> AsyncGenerator[bytes, None]:
        try:
            for _ in range(3):
                yield b"a\nb\n"
        finally:
            closed.append(True)

    async with contextlib.aclosing(blocks(chunks(), 1024)) as read:
        async for _ in read:
            break
    assert closed == [True]
