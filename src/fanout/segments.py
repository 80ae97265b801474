"""Item-attribute queries of batch segment jobs (Item-Attribute-Affinity), checked locally.

The service takes only `=` and `AND`: `ITEMS.GENRES = "Comedy" AND ITEMS.PRICE = "10"`, values in
double quotes, `"` and `\\` inside a value escaped with `\\` (reference §1.7). A query that breaks
these rules would fail inside the job, 20 minutes later; here it is a reject with its reason.
"""

from __future__ import annotations

import re

_FIELD = r"ITEMS\.[A-Za-z_][A-Za-z0-9_]*"
_VALUE = r'"(?:[^"\\]|\\.)*"'
_CLAUSE = re.compile(rf"\s*({_FIELD})\s*=\s*({_VALUE})\s*", re.IGNORECASE)
_AND = re.compile(r"AND\b", re.IGNORECASE)


def query_problem(query: str) -> str | None:
    """Why `query` is not a valid item-attribute query, or None if it is."""
    if not query.strip():
        return "empty query"
    at = 0
    clauses = 0
    while True:
        match = _CLAUSE.match(query, at)
        if match is None:
            rest = query[at:].strip()
            if re.match(r"(?i)ITEMS\.\w+\s*(!=|<>|<|>|\bIN\b|\bNOT\b)", rest):
                return f"only = is supported, not {rest.split()[1]!r} (at character {at + 1})"
            if clauses and re.match(r"(?i)OR\b", rest):
                return f"only AND joins conditions, not OR (at character {at + 1})"
            return (
                f'expected ITEMS.FIELD = "value" at character {at + 1}; quote values with " '
                'and escape " and \\ inside them with \\'
            )
        clauses += 1
        at = match.end()
        if at == len(query):
            return None
        joiner = _AND.match(query, at)
        if joiner is None:
            word = query[at:].split()[0] if query[at:].split() else query[at:]
            if word.upper() == "OR":
                return f"only AND joins conditions, not OR (at character {at + 1})"
            return f"expected AND or the end of the query at character {at + 1}, found {word!r}"
        at = joiner.end()
