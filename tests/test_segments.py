"""Item-attribute queries are checked before anything is sent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.segments import query_problem


@pytest.mark.parametrize(
    "query",
    [
        'ITEMS.GENRES = "Comedy"',
        'ITEMS.GENRES = "Comedy" AND ITEMS.GENRES = "Action"',
        'items.genres="Comedy" and ITEMS.PRICE = "10"',
        'ITEMS.TITLE = "The \\"Best\\" \\\\ film"',
        '  ITEMS.GENRES   =   "Drama"  ',
    ],
)
def test_valid_queries(query: str) -> None:
    assert query_problem(query) is None


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "empty"),
        ('ITEMS.GENRES = "Comedy" OR ITEMS.GENRES = "Action"', "not OR"),
        ('ITEMS.PRICE > "10"', "only = is supported"),
        ('ITEMS.GENRES != "Comedy"', "only = is supported"),
        ("ITEMS.GENRES = Comedy", "quote values"),
        ('ITEMS.GENRES = "Com"edy"', "expected AND"),
        ('GENRES = "Comedy"', 'expected ITEMS.FIELD = "value"'),
        ('ITEMS.GENRES = "Comedy" AND', 'expected ITEMS.FIELD = "value"'),
        ('ITEMS.GENRES IN ("Comedy")', "only = is supported"),
    ],
)
def test_invalid_queries_say_why(query: str, reason: str) -> None:
    problem = query_problem(query)
    assert problem is not None and reason in problem


@given(st.text(max_size=80))
def test_any_text_gets_an_answer_never_an_exception(text: str) -> None:
    assert query_problem(text) is None or isinstance(query_problem(text), str)
