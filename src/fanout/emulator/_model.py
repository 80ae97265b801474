"""The recommendation model behind the emulator's batch inference jobs.

The emulator's jobs really run: every answer comes from a small collaborative-filtering model
trained on an interactions dataset, so recommendations have the shape and feel of the real
service (personal, long-tailed, filterable) without any AWS account.

Data
    A `Catalog` holds users, items, the interactions as a CSR matrix (one row of item indices
    per user) and item metadata. `synthetic_catalog` makes a deterministic, realistic one (Zipf
    item popularity, users with one to three favourite genres); `load_catalog` reads CSV files in
    the Amazon Personalize dataset schema.

Training (`Model.__init__`, vectorised numpy, no scipy)
    Let A be the user x item interaction matrix, normalised as A[u, i] / sqrt(n_u * c_i) where
    n_u is the user's interaction count and c_i the item's, so that neither heavy users nor
    blockbuster items dominate. A randomized SVD (Halko et al.: Gaussian range finder plus two
    power iterations, all sparse products done with `np.add.reduceat` over CSR rows) gives item
    factors U * S whose inner products approximate the normalised item co-occurrence A^T A.
    Item factors are L2-normalised; a user's factor is the normalised sum of the factors of the
    items in their history.

Scoring
    logit(u, i) = TEMPERATURE * cos(user u, item i) + POPULARITY_WEIGHT * log(1 + c_i), and a
    recommendation score is the softmax of the logits over every allowed item, as in the real
    service (small numbers, the top-n summing to less than one). Users the model has never seen
    get the most popular items, scored by a softmax over log(1 + c_i). Related items are nearest
    neighbours by cosine; user segments rank users by cosine to an item (or to the mean of the
    items matching an attribute query).

Filters
    `Model.filter_mask` evaluates the items subset of Personalize filter expressions
    (INCLUDE/EXCLUDE ItemID WHERE Items.FIELD IN/NOT IN/= ..., AND/OR, `|`, $PARAM placeholders)
    into a boolean mask over items that every query method accepts as `allowed`.

A `Model` never changes after `__init__`, so one instance may serve many threads at once.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
_In = TypeVar("_In")
_Out = TypeVar("_Out")

MULTI_VALUE_SEPARATOR: Final = "|"
"""Personalize's separator between the values of a multi-valued categorical attribute."""

TEMPERATURE: Final = 5.0
"""Scale of the cosine similarity in a recommendation logit."""

POPULARITY_WEIGHT: Final = 0.25
"""Weight of log(1 + interaction count) in a recommendation logit."""

_CHUNK_USERS: Final = 2048
"""Users scored per matrix product in `Model.recommend`."""

_WORKERS: Final = max(1, min(4, os.cpu_count() or 1))
"""Threads scoring chunks of users in `Model.recommend`."""

_BLOCK_NNZ: Final = 1 << 17
"""Interactions gathered at once in a sparse-dense product (bounds its temporary memory)."""

_OVERSAMPLING: Final = 8
_POWER_ITERATIONS: Final = 2
_SIGNIFICANT_DIGITS: Final = 6

_GENRE_ATTRIBUTES: Final = ("GENRES", "GENRE")
_ITEM_ID_FIELD: Final = "ITEM_ID"

_GENRE_PREVALENCE: Final = {
    "Drama": 1.6,
    "Comedy": 1.5,
    "Action": 1.3,
    "Thriller": 1.1,
    "Romance": 1.0,
    "Crime": 0.9,
    "Horror": 0.8,
    "Sci-Fi": 0.8,
    "Fantasy": 0.7,
    "Family": 0.7,
    "Animation": 0.6,
    "Documentary": 0.5,
}

_THEME_PHRASES: Final = {
    "Action": "High-octane action",
    "Animation": "Vibrant animated adventures",
    "Comedy": "Laugh-out-loud comedies",
    "Crime": "Hard-boiled crime stories",
    "Documentary": "Eye-opening documentaries",
    "Drama": "Gripping dramas",
    "Family": "Feel-good family favorites",
    "Fantasy": "Enchanting fantasy worlds",
    "Horror": "Spine-chilling horror",
    "Romance": "Swoon-worthy romances",
    "Sci-Fi": "Mind-bending sci-fi",
    "Thriller": "Tense thrillers",
}

_TITLE_ADJECTIVES: Final = (
    "Silent", "Crimson", "Hidden", "Broken", "Golden", "Last", "Midnight", "Forgotten",
    "Electric", "Burning", "Frozen", "Restless", "Hollow", "Wild", "Distant", "Velvet",
    "Shattered", "Secret", "Endless", "Quiet", "Iron", "Paper", "Lonely", "Savage", "Bright",
    "Lucky", "Little", "Final", "Second", "Scarlet",
)  # fmt: skip
_TITLE_NOUNS: Final = (
    "Harbor", "Garden", "Signal", "Kingdom", "Highway", "Promise", "Mirror", "Orchard", "Empire",
    "River", "Station", "Lantern", "Frontier", "Island", "Circus", "Winter", "Summer", "Machine",
    "Letter", "Shadow", "Horizon", "Reckoning", "Voyage", "Carnival", "Heist", "Detective",
    "Dragon", "Planet", "Symphony", "Witness",
)  # fmt: skip
_TITLE_PLACES: Final = (
    "Avalon", "Brooklyn", "Marrakesh", "the North", "Saturn", "Tomorrow", "Eden", "Paris",
    "the Deep", "Oz", "Lisbon", "the Valley", "Mars", "Kyoto", "the Moon", "Atlantis",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Catalog


@dataclass(frozen=True, slots=True, eq=False)
class Catalog:
    """Users, items, interactions (CSR by user) and item metadata.

    `user_items[user_indptr[u]:user_indptr[u + 1]]` are the item indices user `u` interacted
    with (repeats allowed). `item_attributes` maps an UPPERCASE attribute name to one string per
    item; a multi-valued attribute joins its values with "|". The arrays are copied and made
    read-only; `user_index` and `item_index` (ID -> index) are derived.
    """

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    user_indptr: npt.NDArray[np.int64]
    user_items: npt.NDArray[np.int32]
    item_attributes: Mapping[str, tuple[str, ...]]
    user_index: Mapping[str, int] = field(init=False)
    item_index: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        user_ids, item_ids = tuple(self.user_ids), tuple(self.item_ids)
        indptr = np.array(self.user_indptr, dtype=np.int64)
        items = np.array(self.user_items, dtype=np.int32)
        if indptr.shape != (len(user_ids) + 1,):
            raise ValueError(f"user_indptr must have {len(user_ids) + 1} entries")
        if indptr[0] != 0 or indptr[-1] != len(items) or np.any(np.diff(indptr) < 0):
            raise ValueError("user_indptr must rise from 0 to len(user_items)")
        if items.ndim != 1 or (len(items) and (items.min() < 0 or items.max() >= len(item_ids))):
            raise ValueError("user_items must hold item indices below len(item_ids)")
        attributes = {name.upper(): tuple(values) for name, values in self.item_attributes.items()}
        for name, values in attributes.items():
            if len(values) != len(item_ids):
                raise ValueError(f"attribute {name} has {len(values)} values for {len(item_ids)}")
        user_index = {user: index for index, user in enumerate(user_ids)}
        item_index = {item: index for index, item in enumerate(item_ids)}
        if len(user_index) != len(user_ids) or len(item_index) != len(item_ids):
            raise ValueError("user and item IDs must be unique")
        indptr.setflags(write=False)
        items.setflags(write=False)
        for name, value in (
            ("user_ids", user_ids),
            ("item_ids", item_ids),
            ("user_indptr", indptr),
            ("user_items", items),
            ("item_attributes", attributes),
            ("user_index", user_index),
            ("item_index", item_index),
        ):
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (
            f"Catalog(users={len(self.user_ids)}, items={len(self.item_ids)}, "
            f"interactions={len(self.user_items)}, attributes={sorted(self.item_attributes)})"
        )

    def history(self, user_id: str) -> list[str]:
        """The item IDs the user interacted with, in stored order (KeyError if unknown)."""
        user = self.user_index[user_id]
        rows = self.user_items[self.user_indptr[user] : self.user_indptr[user + 1]]
        return [self.item_ids[item] for item in rows.tolist()]


def synthetic_catalog(
    *, seed: int = 0, users: int = 20_000, items: int = 1_000, interactions_per_user: float = 25.0
) -> Catalog:
    """A deterministic movie-like catalog with a long tail and genre tastes.

    Items get one to three of twelve genres (GENRES) and a made-up TITLE; their popularity
    follows a Zipf law. Each user favours one to three genres: 85% of their interactions are
    items of a favourite genre (drawn by popularity), the rest any item by popularity. Interaction
    counts per user are geometric with the given mean. IDs are "1".."users" and "1".."items".
    """
    if users < 1 or items < 1:
        raise ValueError("a synthetic catalog needs at least one user and one item")
    if interactions_per_user < 1:
        raise ValueError("interactions_per_user must be at least 1")
    rng = np.random.default_rng(seed)
    genre_names = tuple(_GENRE_PREVALENCE)
    prevalence = np.array(list(_GENRE_PREVALENCE.values()))

    item_genres = _weighted_orderings(rng, prevalence, items)
    genres_per_item = rng.choice([1, 2, 3], size=items, p=[0.5, 0.35, 0.15])
    membership = np.arange(len(genre_names)) < genres_per_item[:, None]  # in ordering space
    member = np.zeros((items, len(genre_names)), dtype=bool)
    np.put_along_axis(member, item_genres, membership, axis=1)
    popularity = 1.0 / (rng.permutation(items) + 5.0)

    favourites = _weighted_orderings(rng, prevalence, users)
    favourite_count = rng.choice([1, 2, 3], size=users, p=[0.45, 0.35, 0.2])
    counts = rng.geometric(1.0 / interactions_per_user, size=users)
    owner = np.repeat(np.arange(users), counts)
    slot = (rng.random(len(owner)) * favourite_count[owner]).astype(np.int64)
    genre = favourites[owner, slot]
    genre[rng.random(len(owner)) < 0.15] = -1  # explore: any item by popularity
    chosen = np.empty(len(owner), dtype=np.int32)
    for g in range(-1, len(genre_names)):
        draws = np.flatnonzero(genre == g)
        pool = np.flatnonzero(member[:, g]) if g >= 0 else np.arange(items)
        if not len(pool):
            pool = np.arange(items)
        cumulative = np.cumsum(popularity[pool])
        picks = np.searchsorted(cumulative, rng.random(len(draws)) * cumulative[-1], side="right")
        chosen[draws] = pool[np.minimum(picks, len(pool) - 1)]

    genres_text = tuple(
        MULTI_VALUE_SEPARATOR.join(genre_names[g] for g in row[:k])
        for row, k in zip(item_genres.tolist(), genres_per_item.tolist(), strict=True)
    )
    return Catalog(
        user_ids=tuple(str(u) for u in range(1, users + 1)),
        item_ids=tuple(str(i) for i in range(1, items + 1)),
        user_indptr=np.concatenate(([0], np.cumsum(counts))),
        user_items=chosen,
        item_attributes={"GENRES": genres_text, "TITLE": _titles(rng, items)},
    )


def _weighted_orderings(
    rng: np.random.Generator, weights: npt.NDArray[np.float64], rows: int
) -> IntArray:
    """Per row, all column indices in a random order biased towards heavy weights (Gumbel)."""
    keys = np.log(weights) - np.log(-np.log(rng.random((rows, len(weights)))))
    return np.argsort(-keys, axis=1)


def _titles(rng: np.random.Generator, count: int) -> tuple[str, ...]:
    """Made-up, unique, human readable titles ("The Silent Harbor", "Return to Avalon 2")."""
    pattern = rng.integers(0, 4, size=count).tolist()
    adjective = rng.integers(0, len(_TITLE_ADJECTIVES), size=count).tolist()
    noun = rng.integers(0, len(_TITLE_NOUNS), size=count).tolist()
    place = rng.integers(0, len(_TITLE_PLACES), size=count).tolist()
    seen: dict[str, int] = {}
    titles = []
    for p, a, n, w in zip(pattern, adjective, noun, place, strict=True):
        adj, noun_, where = _TITLE_ADJECTIVES[a], _TITLE_NOUNS[n], _TITLE_PLACES[w]
        title = (
            f"The {adj} {noun_}",
            f"{adj} {noun_}",
            f"The {noun_} of {where}",
            f"Return to {where}",
        )[p]
        seen[title] = seen.get(title, 0) + 1
        titles.append(title if seen[title] == 1 else f"{title} {seen[title]}")
    return tuple(titles)


def load_catalog(interactions_csv: Path, items_csv: Path | None = None) -> Catalog:
    """Read a Personalize interactions CSV (USER_ID, ITEM_ID, TIMESTAMP) and an items CSV.

    Column names are case-insensitive and may come in any order; extra interaction columns are
    ignored. Every non-ITEM_ID column of the items CSV becomes an item attribute (name
    uppercased). Items listed only in the items CSV are part of the catalog. A malformed file
    raises ValueError naming the file, the line and the problem.
    """
    item_index: dict[str, int] = {}
    attributes: dict[str, list[str]] = {}
    if items_csv is not None:
        attributes = _read_items(items_csv, item_index)
    user_index: dict[str, int] = {}
    users: list[int] = []
    items: list[int] = []
    header, rows = _read_header(interactions_csv, ("USER_ID", "ITEM_ID", "TIMESTAMP"))
    user_col, item_col, time_col = header["USER_ID"], header["ITEM_ID"], header["TIMESTAMP"]
    for line, row in rows:
        user = _required_value(interactions_csv, line, row, "USER_ID", user_col)
        item = _required_value(interactions_csv, line, row, "ITEM_ID", item_col)
        timestamp = row[time_col].strip()
        if not re.fullmatch(r"[+-]?\d+", timestamp):
            raise ValueError(
                f"{interactions_csv}, line {line}: TIMESTAMP {timestamp!r} is not an integer "
                "(Unix epoch seconds)"
            )
        users.append(user_index.setdefault(user, len(user_index)))
        items.append(item_index.setdefault(item, len(item_index)))
    if not users:
        raise ValueError(f"{interactions_csv}: no interactions after the header")
    for values in attributes.values():
        values.extend([""] * (len(item_index) - len(values)))

    owner = np.array(users, dtype=np.int64)
    order = np.argsort(owner, kind="stable")
    return Catalog(
        user_ids=tuple(user_index),
        item_ids=tuple(item_index),
        user_indptr=np.concatenate(([0], np.cumsum(np.bincount(owner)))),
        user_items=np.array(items, dtype=np.int32)[order],
        item_attributes={name: tuple(values) for name, values in attributes.items()},
    )


def _read_items(path: Path, item_index: dict[str, int]) -> dict[str, list[str]]:
    """Fill `item_index` from an items CSV and return its attribute columns."""
    header, rows = _read_header(path, ("ITEM_ID",))
    columns = {name: col for name, col in header.items() if name != _ITEM_ID_FIELD}
    attributes: dict[str, list[str]] = {name: [] for name in columns}
    for line, row in rows:
        item = _required_value(path, line, row, _ITEM_ID_FIELD, header[_ITEM_ID_FIELD])
        if item in item_index:
            raise ValueError(f"{path}, line {line}: duplicate ITEM_ID {item!r}")
        item_index[item] = len(item_index)
        for name, col in columns.items():
            attributes[name].append(row[col].strip())
    return attributes


def _read_header(
    path: Path, required: Sequence[str]
) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """Column positions by UPPERCASE name, and the data rows (line number, fields) after it."""
    rows = _csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise ValueError(f"{path}: empty file, expected a header with {', '.join(required)}")
    line, names = first
    header: dict[str, int] = {}
    for col, name in enumerate(names):
        key = name.strip().upper()
        if key in header:
            raise ValueError(f"{path}, line {line}: duplicate column {key}")
        header[key] = col
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(
            f"{path}, line {line}: missing column {', '.join(missing)} "
            f"(header is {', '.join(names)!r})"
        )
    return header, _checked_rows(path, rows, len(names))


def _checked_rows(
    path: Path, rows: Iterator[tuple[int, list[str]]], width: int
) -> Iterator[tuple[int, list[str]]]:
    """Data rows with exactly `width` fields, skipping blank lines."""
    for line, row in rows:
        if not row:
            continue
        if len(row) != width:
            raise ValueError(f"{path}, line {line}: expected {width} fields, found {len(row)}")
        yield line, row


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each CSV record of a UTF-8 file."""
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.reader(stream, strict=True)
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as error:
            raise ValueError(f"{path}, line {reader.line_num}: {error}") from error
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}, after line {reader.line_num}: not UTF-8") from error


def _required_value(path: Path, line: int, row: list[str], name: str, col: int) -> str:
    value = row[col].strip()
    if not value:
        raise ValueError(f"{path}, line {line}: empty {name}")
    return value


# --------------------------------------------------------------------------------------------
# Model


class Model:
    """Trained once from a Catalog; thread-safe for concurrent reads (never mutated after init)."""

    catalog: Catalog

    def __init__(self, catalog: Catalog, *, seed: int = 0, factors: int = 32) -> None:
        if factors < 1:
            raise ValueError("factors must be at least 1")
        if not len(catalog.user_items):
            raise ValueError("cannot train on a catalog without interactions")
        self.catalog = catalog
        n_items = len(catalog.item_ids)
        counts = np.bincount(catalog.user_items, minlength=n_items)
        self._counts: IntArray = counts.astype(np.int64)
        self._popular_order: IntArray = np.lexsort((np.arange(n_items), -counts))
        self._popularity_logits = np.log1p(counts)
        self._item_vectors = _item_factors(catalog, counts, factors=factors, seed=seed)
        self._user_vectors = _normalised(
            _sparse_dense_product(catalog.user_indptr, catalog.user_items, None, self._item_vectors)
        )
        self._scaled_item_vectors = self._item_vectors * np.float32(TEMPERATURE)
        self._bias = (POPULARITY_WEIGHT * self._popularity_logits).astype(np.float32)
        self._item_id_array = np.array(catalog.item_ids, dtype=object)
        self._value_index = {
            name: _inverted_index(values) for name, values in catalog.item_attributes.items()
        }
        self._genre_attribute = next((g for g in _GENRE_ATTRIBUTES if g in self._value_index), "")
        for array in (
            self._counts,
            self._popular_order,
            self._popularity_logits,
            self._item_vectors,
            self._user_vectors,
            self._scaled_item_vectors,
            self._bias,
        ):
            array.setflags(write=False)

    def __repr__(self) -> str:
        return f"Model({self.catalog!r}, factors={self._item_vectors.shape[1]})"

    def knows_user(self, user_id: str) -> bool:
        """Whether the user is in the training catalog (otherwise it is a cold user)."""
        return user_id in self.catalog.user_index

    def knows_item(self, item_id: str) -> bool:
        """Whether the item is in the catalog."""
        return item_id in self.catalog.item_index

    def popular(self, n: int, allowed: BoolArray | None = None) -> list[str]:
        """The n most interacted-with allowed items (ties: catalog order)."""
        return [self.catalog.item_ids[i] for i in self._popular_allowed(allowed)[: max(n, 0)]]

    def recommend(
        self, user_ids: Sequence[str], n: int, allowed: BoolArray | None = None
    ) -> list[tuple[list[str], list[float]]]:
        """(items, scores) for each user, in order: personal for known users, popular otherwise.

        Scores are a softmax over all allowed items, descending; fewer than n items come back
        when fewer are allowed.
        """
        columns = self._allowed_columns(allowed)
        vectors, bias, ids = self._scaled_item_vectors, self._bias, self._item_id_array
        if columns is not None:
            vectors, bias, ids = vectors[columns], bias[columns], ids[columns]
        k = min(max(n, 0), len(ids))
        if k == 0:
            return [([], []) for _ in user_ids]
        index = self.catalog.user_index
        positions = np.fromiter((index.get(u, -1) for u in user_ids), np.int64, len(user_ids))
        users = positions[positions >= 0]

        def score(chunk: IntArray) -> tuple[IntArray, npt.NDArray[np.float64]]:
            logits = self._user_vectors[chunk] @ vectors.T
            logits += bias
            return _top_softmax(logits, k)

        chunks = [users[i : i + _CHUNK_USERS] for i in range(0, len(users), _CHUNK_USERS)]
        personal: list[tuple[list[str], list[float]]] = []
        for top, scores in _parallel_map(score, chunks):
            personal.extend(zip(ids[top].tolist(), scores.tolist(), strict=True))
        if len(users) == len(positions):
            return personal
        popular_items, popular_scores = self._popular_scored(k, allowed)
        found = iter(personal)
        return [
            next(found) if p >= 0 else (popular_items.copy(), popular_scores.copy())
            for p in positions.tolist()
        ]

    def rank(self, user_id: str, item_ids: Sequence[str]) -> tuple[list[str], list[float]]:
        """Re-rank items for a user; unknown items trail in input order with score 0.0.

        Scores are a softmax over the known given items (they sum to one). Duplicates keep
        their first occurrence. An unknown user gets the items ranked by popularity.
        """
        unique = list(dict.fromkeys(item_ids))
        known = [item for item in unique if item in self.catalog.item_index]
        unknown = [item for item in unique if item not in self.catalog.item_index]
        index = np.array([self.catalog.item_index[item] for item in known], dtype=np.int64)
        user = self.catalog.user_index.get(user_id)
        if user is None:
            logits = self._popularity_logits[index]
        else:
            logits = self._scaled_item_vectors[index] @ self._user_vectors[user]
            logits = logits.astype(np.float64) + self._bias[index]
        order = np.argsort(-logits, kind="stable")
        ranked = [known[i] for i in order.tolist()] + unknown
        return ranked, _softmax(logits[order]).tolist() + [0.0] * len(unknown)

    def related(self, item_id: str, n: int, allowed: BoolArray | None = None) -> list[str] | None:
        """The n allowed items most similar to the item (cosine of factors); None if unknown."""
        found = self._related_indices(item_id, n, allowed)
        return None if found is None else [self.catalog.item_ids[i] for i in found.tolist()]

    def themed(
        self, item_id: str, n: int, name_field: str, allowed: BoolArray | None = None
    ) -> tuple[list[str], str, list[float]] | None:
        """Related items under a generated theme: (items by relevance, theme, relevance scores).

        The theme combines the dominant genre of the item and its neighbours with the item's
        `name_field` attribute ("Tense thrillers for fans of The Silent Harbor"). Relevance is
        the cosine to a theme vector mapped into roughly -0.1..0.6, like the real service's.
        None for an unknown item; ValueError if `name_field` is not an item attribute.
        """
        attribute = name_field.upper()
        if attribute not in self.catalog.item_attributes:
            raise ValueError(
                f"name field {name_field!r} is not an item attribute "
                f"(attributes: {', '.join(sorted(self.catalog.item_attributes)) or 'none'})"
            )
        found = self._related_indices(item_id, n, allowed)
        if found is None:
            return None
        item = self.catalog.item_index[item_id]
        genre = self._dominant_genre(item, found)
        theme_vector = self._item_vectors[item].astype(np.float64)
        in_genre = np.zeros(len(found), dtype=bool)
        if genre:
            members = self._value_index[self._genre_attribute][genre]
            theme_vector = theme_vector + self._item_vectors[members].mean(axis=0)
            in_genre = np.isin(found, members)
        theme_vector /= max(float(np.linalg.norm(theme_vector)), 1e-12)
        cosine = self._item_vectors[found] @ theme_vector
        relevance = np.clip(0.8 * cosine + 0.1 * in_genre - 0.3, -0.1, 0.6)
        order = np.argsort(-relevance, kind="stable")
        name = self.catalog.item_attributes[attribute][item] or item_id
        phrase = _THEME_PHRASES.get(genre, f"{genre} picks") if genre else "Hand-picked favorites"
        return (
            [self.catalog.item_ids[i] for i in found[order].tolist()],
            f"{phrase} for fans of {name}",
            _round_significant(relevance[order]).tolist(),
        )

    def item_affinity(self, item_id: str, n: int) -> list[str] | None:
        """The n known users most likely to interact with the item, best first; None if unknown."""
        item = self.catalog.item_index.get(item_id)
        if item is None:
            return None
        return self._best_users(self._item_vectors[item], n)

    def attribute_affinity(self, query: str, n: int) -> list[str]:
        """The n users with most affinity to the items matching `ITEMS.A = "v" AND ...`.

        Users are ranked by cosine to the mean factor of the matching items. No matching item
        (or none with interactions) gives [].
        """
        mask = np.ones(len(self.catalog.item_ids), dtype=bool)
        for attribute, value in _parse_affinity_query(query):
            mask &= self._matching(attribute, [value])
        if not mask.any():
            return []
        direction = self._item_vectors[mask].mean(axis=0)
        return self._best_users(direction, n) if direction.any() else []

    def filter_mask(self, expression: str, values: Mapping[str, Sequence[str]]) -> BoolArray:
        """Evaluate a Personalize item filter expression into a mask over items (True = allowed).

        Supports `INCLUDE|EXCLUDE ItemID WHERE Items.FIELD IN (...)`, `NOT IN (...)` and
        `= ...` with "quoted" constants or $PARAM placeholders, conditions joined by AND/OR (AND
        binds tighter), and expressions joined by `|`, each applied in turn. Placeholder values
        come from `values` (name without "$"). An INCLUDE needs every placeholder's value; in an
        EXCLUDE a condition whose placeholder has no value is skipped, as in Personalize.
        Multi-valued attributes match if any of their values matches.
        """
        mask = np.ones(len(self.catalog.item_ids), dtype=bool)
        for part in _parse_filter(expression):
            matched = self._part_mask(part, values)
            if matched is not None:
                mask &= matched if part.include else ~matched
        return mask

    # -- helpers -----------------------------------------------------------------------------

    def _allowed_columns(self, allowed: BoolArray | None) -> IntArray | None:
        if allowed is None:
            return None
        return np.flatnonzero(self._check_mask(allowed))

    def _check_mask(self, allowed: BoolArray) -> BoolArray:
        mask = np.asarray(allowed)
        if mask.dtype != np.bool_ or mask.shape != (len(self.catalog.item_ids),):
            raise ValueError(
                f"allowed must be a bool mask of shape ({len(self.catalog.item_ids)},), "
                f"not {mask.dtype} {mask.shape}"
            )
        return mask

    def _popular_allowed(self, allowed: BoolArray | None) -> IntArray:
        """All allowed item indices, most popular first."""
        order = self._popular_order
        return order if allowed is None else order[self._check_mask(allowed)[order]]

    def _popular_scored(self, k: int, allowed: BoolArray | None) -> tuple[list[str], list[float]]:
        """The k most popular allowed items with softmax(log(1 + count)) scores."""
        order = self._popular_allowed(allowed)
        weights = self._counts[order] + 1.0
        scores = _round_significant(weights[:k] / weights.sum())
        return [self.catalog.item_ids[i] for i in order[:k].tolist()], scores.tolist()

    def _related_indices(self, item_id: str, n: int, allowed: BoolArray | None) -> IntArray | None:
        """Indices of the n allowed items nearest the item, best first (ties: popularity)."""
        item = self.catalog.item_index.get(item_id)
        if item is None:
            return None
        candidates = self._popular_allowed(allowed)
        candidates = candidates[candidates != item]
        similarity = self._item_vectors[candidates] @ self._item_vectors[item]
        found: IntArray = candidates[_best(similarity, n)]
        return found

    def _best_users(self, direction: npt.NDArray[np.floating], n: int) -> list[str]:
        scores = self._user_vectors @ direction.astype(np.float32)
        return [self.catalog.user_ids[u] for u in _best(scores, n).tolist()]

    def _dominant_genre(self, item: int, neighbours: IntArray) -> str:
        """The item's genre shared by most of its neighbours ("" if the catalog has none)."""
        if not self._genre_attribute:
            return ""
        genres = _split(self.catalog.item_attributes[self._genre_attribute][item])
        index = self._value_index[self._genre_attribute]
        shared = [int(np.isin(neighbours, index[genre]).sum()) for genre in genres]
        return genres[int(np.argmax(shared))] if genres else ""

    def _matching(self, attribute: str, values: Sequence[str]) -> BoolArray:
        """Items whose attribute (or ITEM_ID) has any of the values."""
        mask = np.zeros(len(self.catalog.item_ids), dtype=bool)
        if attribute == _ITEM_ID_FIELD:
            found = [self.catalog.item_index[v] for v in values if v in self.catalog.item_index]
            mask[found] = True
            return mask
        index = self._value_index.get(attribute)
        if index is None:
            known = ", ".join(sorted([*self._value_index, _ITEM_ID_FIELD]))
            raise ValueError(f"unknown item attribute {attribute} (known: {known})")
        for value in values:
            members = index.get(value)
            if members is not None:
                mask[members] = True
        return mask

    def _part_mask(
        self, part: _FilterPart, values: Mapping[str, Sequence[str]]
    ) -> BoolArray | None:
        """Items matching one filter expression's condition; None if every condition is skipped."""
        disjuncts = []
        for conjunction in part.conditions:
            terms = [self._condition_mask(c, values, part.include) for c in conjunction]
            present = [term for term in terms if term is not None]
            if present:
                disjuncts.append(np.logical_and.reduce(present))
        return np.logical_or.reduce(disjuncts) if disjuncts else None

    def _condition_mask(
        self, condition: _Condition, values: Mapping[str, Sequence[str]], include: bool
    ) -> BoolArray | None:
        resolved: list[str] = []
        for operand in condition.operands:
            if not operand.placeholder:
                resolved.append(operand.text)
                continue
            given = values.get(operand.text)
            if isinstance(given, str):
                raise TypeError(
                    f"value for ${operand.text} must be a sequence of strings, not a str "
                    "(see parse_filter_values)"
                )
            if not given:
                if include:
                    raise ValueError(f"missing value for ${operand.text}")
                return None
            resolved.extend(given)
        matched = self._matching(condition.attribute, resolved)
        return ~matched if condition.negated else matched


def _parallel_map(
    function: Callable[[_In], _Out], arguments: Sequence[_In], depth: int = 2 * _WORKERS
) -> Iterator[_Out]:
    """`map` on worker threads (numpy releases the GIL), at most `depth` results ahead."""
    if len(arguments) <= 1:
        yield from map(function, arguments)
        return
    with ThreadPoolExecutor(_WORKERS, thread_name_prefix="fanout-model") as pool:
        pending: deque[Future[_Out]] = deque()
        for argument in arguments:
            pending.append(pool.submit(function, argument))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _item_factors(catalog: Catalog, counts: IntArray, *, factors: int, seed: int) -> FloatArray:
    """L2-normalised item factors from a randomized SVD of the normalised interactions."""
    n_users, n_items = len(catalog.user_ids), len(catalog.item_ids)
    user_counts = np.diff(catalog.user_indptr)
    owner = np.repeat(np.arange(n_users, dtype=np.int32), user_counts)
    item_scale = 1.0 / np.sqrt(np.maximum(counts, 1))
    weights = (item_scale[catalog.user_items] / np.sqrt(user_counts)[owner]).astype(np.float32)
    by_item = np.argsort(catalog.user_items, kind="stable")
    item_indptr = np.concatenate(([0], np.cumsum(counts)))
    item_users, item_weights = owner[by_item], weights[by_item]

    def times(dense: FloatArray) -> FloatArray:  # A @ dense
        return _sparse_dense_product(catalog.user_indptr, catalog.user_items, weights, dense)

    def transposed_times(dense: FloatArray) -> FloatArray:  # A.T @ dense
        return _sparse_dense_product(item_indptr, item_users, item_weights, dense)

    width = min(factors + _OVERSAMPLING, n_items, n_users)
    rng = np.random.default_rng(seed)
    basis = _orthonormal(times(rng.standard_normal((n_items, width), dtype=np.float32)))
    for _ in range(_POWER_ITERATIONS):
        basis = _orthonormal(times(_orthonormal(transposed_times(basis))))
    left, singular, _ = np.linalg.svd(transposed_times(basis), full_matrices=False)
    rank = min(factors, width)
    return _normalised((left[:, :rank] * singular[:rank]).astype(np.float32))


def _sparse_dense_product(
    indptr: IntArray,
    indices: npt.NDArray[np.integer],
    weights: FloatArray | None,
    dense: FloatArray,
) -> FloatArray:
    """CSR matrix (indptr, indices, weights or ones) times a dense matrix, in bounded blocks.

    Works on the transposed dense matrix: `reduceat` along contiguous rows is several times
    faster than along axis 0.
    """
    columns = np.ascontiguousarray(dense.T)
    out = np.zeros((len(indptr) - 1, dense.shape[1]), dtype=np.float32)
    rows = np.flatnonzero(np.diff(indptr))
    starts = indptr[rows]
    position = 0
    while position < len(rows):
        end = int(np.searchsorted(starts, starts[position] + _BLOCK_NNZ))
        end = max(end, position + 1)
        low, high = int(starts[position]), int(indptr[rows[end - 1] + 1])
        block = np.take(columns, indices[low:high], axis=1)
        if weights is not None:
            block *= weights[low:high]
        out[rows[position:end]] = np.add.reduceat(block, starts[position:end] - low, axis=1).T
        position = end
    return out


def _orthonormal(matrix: FloatArray) -> FloatArray:
    basis: FloatArray = np.linalg.qr(matrix)[0]
    return basis


def _normalised(matrix: FloatArray) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    result: FloatArray = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


def _top_softmax(logits: FloatArray, k: int) -> tuple[IntArray, npt.NDArray[np.float64]]:
    """Per row: the k largest logits' columns, descending, and their softmax over the row.

    Overwrites `logits`.
    """
    top = _top_columns(logits, k)
    top_logits = np.take_along_axis(logits, top, axis=1)
    order = np.argsort(-top_logits, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top_logits = np.take_along_axis(top_logits, order, axis=1)
    peak = top_logits[:, :1]
    np.subtract(logits, peak, out=logits)
    np.exp(logits, out=logits)
    total = logits.sum(axis=1, keepdims=True)
    return top, _round_significant(np.exp(top_logits - peak) / total)


def _top_columns(logits: FloatArray, k: int) -> IntArray:
    """Per row, the columns of the k largest values in ascending column order.

    Partitioning values to find each row's k-th largest and then comparing is about twice as
    fast as `argpartition`; rows with ties at that threshold fall back to `argpartition`.
    """
    rows, width = logits.shape
    if k >= width:
        return np.tile(np.arange(width), (rows, 1))
    threshold = np.partition(logits, width - k, axis=1)[:, width - k, None]
    selected = np.flatnonzero(logits >= threshold)
    if len(selected) == rows * k:  # every row has at least k, so exactly k each
        columns: IntArray = (selected % width).reshape(rows, k)
        return columns
    return np.sort(np.argpartition(logits, width - k, axis=1)[:, width - k :], axis=1)


def _softmax(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    if not len(logits):
        return np.zeros(0)
    shifted = np.exp(logits.astype(np.float64) - logits.max())
    return _round_significant(shifted / shifted.sum())


def _round_significant(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Round each row to a few significant digits of its largest value (0.0152000002 -> 0.0152)."""
    exact = values.astype(np.float64)
    if not exact.size:
        return exact
    largest = np.abs(exact).max(axis=-1, keepdims=True)
    scale = 10.0 ** (_SIGNIFICANT_DIGITS - 1 - np.floor(np.log10(np.maximum(largest, 1e-300))))
    result: npt.NDArray[np.float64] = np.round(exact * scale) / scale
    return result


def _best(scores: npt.NDArray[np.floating], n: int) -> IntArray:
    """Positions of the n largest scores, best first (ties: lower position first)."""
    n = min(max(n, 0), len(scores))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.arange(len(scores))
    if n < len(scores):  # keep everything tied with the n-th best, then order exactly
        cutoff = np.partition(scores, len(scores) - n)[len(scores) - n]
        candidates = np.flatnonzero(scores >= cutoff)
    best: IntArray = candidates[np.lexsort((candidates, -scores[candidates]))[:n]]
    return best


def _split(value: str) -> list[str]:
    """The values of a possibly multi-valued attribute ("" has none)."""
    return [part for part in value.split(MULTI_VALUE_SEPARATOR) if part] if value else []


def _inverted_index(values: Sequence[str]) -> dict[str, IntArray]:
    """Attribute value -> indices of the items having it (multi-values split)."""
    postings: dict[str, list[int]] = {}
    for item, value in enumerate(values):
        for part in _split(value):
            postings.setdefault(part, []).append(item)
    return {value: np.array(items, dtype=np.int64) for value, items in postings.items()}


# --------------------------------------------------------------------------------------------
# Expressions: filter expressions, Item-Attribute-Affinity queries, batch filter values

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<param>\$[A-Za-z_][A-Za-z0-9_]*)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<operator><=|>=|!=|<>|=|<|>)
      | (?P<punctuation>[(),|])
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # a _TOKEN group name, or "end"
    text: str
    position: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words

    def describe(self) -> str:
        return (
            "end of input" if self.kind == "end" else f"{self.text!r} at position {self.position}"
        )


@dataclass(frozen=True, slots=True)
class _Operand:
    text: str  # a constant, or a placeholder name without "$"
    placeholder: bool


@dataclass(frozen=True, slots=True)
class _Condition:
    attribute: str
    negated: bool
    operands: tuple[_Operand, ...]


@dataclass(frozen=True, slots=True)
class _FilterPart:
    include: bool
    conditions: tuple[tuple[_Condition, ...], ...]  # OR of ANDs


class _Parser:
    """A cursor over the tokens of an expression, with error reporting."""

    def __init__(self, text: str, what: str) -> None:
        self._what = what
        self._tokens = self._tokenize(text)
        self._index = 0

    def _tokenize(self, text: str) -> list[_Token]:
        tokens = []
        position = 0
        while text[position:].strip():
            match = _TOKEN.match(text, position)
            if match is None or match.lastgroup is None:
                start = len(text) - len(text[position:].lstrip())
                if text[start] == '"':
                    raise self.error(f"unterminated string starting at position {start}")
                raise self.error(f"unexpected character {text[start]!r} at position {start}")
            kind = match.lastgroup
            tokens.append(_Token(kind, match.group(kind), match.start(kind)))
            position = match.end()
        tokens.append(_Token("end", "", len(text)))
        return tokens

    def unquote(self, token: _Token) -> str:
        """The value of a double-quoted string token (escapes: \\" and \\\\)."""

        def unescape(match: re.Match[str]) -> str:
            if match.group(1) not in '"\\':
                raise self.error(f"unsupported escape \\{match.group(1)} in {token.describe()}")
            return match.group(1)

        return _ESCAPE.sub(unescape, token.text[1:-1])

    def peek(self) -> _Token:
        return self._tokens[self._index]

    def take(self) -> _Token:
        token = self._tokens[self._index]
        self._index = min(self._index + 1, len(self._tokens) - 1)
        return token

    def error(self, message: str) -> ValueError:
        return ValueError(f"bad {self._what}: {message}")

    def expect_word(self, *words: str) -> _Token:
        token = self.take()
        if not token.is_word(*words):
            raise self.error(f"expected {' or '.join(words)}, found {token.describe()}")
        return token

    def item_field(self) -> str:
        """`Items.FIELD` -> "FIELD" (uppercased)."""
        token = self.take()
        dataset, _, name = token.text.partition(".")
        if token.kind != "word" or not name:
            raise self.error(f"expected Items.<field>, found {token.describe()}")
        if dataset.upper() != "ITEMS":
            raise self.error(
                f"only Items.<field> conditions are supported, found {token.describe()}"
            )
        return name.upper()


@functools.lru_cache(maxsize=256)
def _parse_filter(expression: str) -> tuple[_FilterPart, ...]:
    if not expression.strip():
        raise ValueError("bad filter expression: empty")
    parser = _Parser(expression, "filter expression")
    parts = [_parse_filter_part(parser)]
    while parser.peek().kind == "punctuation" and parser.peek().text == "|":
        parser.take()
        parts.append(_parse_filter_part(parser))
    if parser.peek().kind != "end":
        raise parser.error(f"expected AND, OR, | or the end, found {parser.peek().describe()}")
    return tuple(parts)


def _parse_filter_part(parser: _Parser) -> _FilterPart:
    action = parser.expect_word("INCLUDE", "EXCLUDE")
    target = parser.take()
    if not target.is_word("ITEMID"):
        raise parser.error(f"only ItemID filters are supported, found {target.describe()}")
    parser.expect_word("WHERE")
    disjunction = []
    while True:
        conjunction = [_parse_condition(parser)]
        while parser.peek().is_word("AND"):
            parser.take()
            conjunction.append(_parse_condition(parser))
        disjunction.append(tuple(conjunction))
        if not parser.peek().is_word("OR"):
            break
        parser.take()
    return _FilterPart(action.text.upper() == "INCLUDE", tuple(disjunction))


def _parse_condition(parser: _Parser) -> _Condition:
    attribute = parser.item_field()
    token = parser.take()
    if token.kind == "operator" and token.text == "=":
        return _Condition(attribute, False, (_parse_operand(parser),))
    negated = token.is_word("NOT")
    if negated:
        token = parser.take()
    if not token.is_word("IN"):
        raise parser.error(f"unsupported operator {token.describe()}; supported: IN, NOT IN, =")
    _expect_punctuation(parser, "(")
    operands = [_parse_operand(parser)]
    while parser.peek().text == "," and parser.peek().kind == "punctuation":
        parser.take()
        operands.append(_parse_operand(parser))
    _expect_punctuation(parser, ")")
    placeholders = [f"${o.text}" for o in operands if o.placeholder]
    if negated and placeholders:
        raise parser.error(f"placeholder {placeholders[0]} cannot be used with NOT IN")
    return _Condition(attribute, negated, tuple(operands))


def _parse_operand(parser: _Parser) -> _Operand:
    token = parser.take()
    if token.kind == "string":
        return _Operand(parser.unquote(token), placeholder=False)
    if token.kind == "param":
        return _Operand(token.text[1:], placeholder=True)
    raise parser.error(f'expected a "quoted" value or $PARAM, found {token.describe()}')


def _expect_punctuation(parser: _Parser, mark: str) -> None:
    token = parser.take()
    if token.kind != "punctuation" or token.text != mark:
        raise parser.error(f"expected {mark!r}, found {token.describe()}")


@functools.lru_cache(maxsize=256)
def _parse_affinity_query(query: str) -> tuple[tuple[str, str], ...]:
    """`ITEMS.A = "v" AND ITEMS.B = "w"` -> (("A", "v"), ("B", "w"))."""
    if not query.strip():
        raise ValueError("bad item attribute query: empty")
    parser = _Parser(query, "item attribute query")
    conditions = []
    while True:
        attribute = parser.item_field()
        operator = parser.take()
        if operator.kind != "operator" or operator.text != "=":
            raise parser.error(f"unsupported operator {operator.describe()}; only = is supported")
        value = parser.take()
        if value.kind != "string":
            raise parser.error(f"expected a double-quoted value, found {value.describe()}")
        conditions.append((attribute, parser.unquote(value)))
        token = parser.take()
        if token.kind == "end":
            return tuple(conditions)
        if token.is_word("OR", "NOT") or token.kind == "operator":
            raise parser.error(
                f"unsupported operator {token.describe()}; only AND joins conditions"
            )
        if not token.is_word("AND"):
            raise parser.error(f"expected AND or the end, found {token.describe()}")


_FILTER_VALUE = re.compile(r'\s*("(?:[^"\\]|\\.)*")\s*(,|\Z)', re.DOTALL)


def parse_filter_values(raw: str) -> list[str]:
    """Split a batch filterValues string: '"horror", "comedy"' -> ["horror", "comedy"].

    Each value is double-quoted with JSON string escapes; values are separated by commas with
    optional whitespace. Anything else (unquoted values, an empty string, a trailing comma)
    raises ValueError.
    """
    if not raw.strip():
        raise ValueError("empty filter value: expected one or more double-quoted strings")
    values = []
    position = 0
    while True:
        match = _FILTER_VALUE.match(raw, position)
        if match is None:
            raise ValueError(
                f"bad filter value {raw!r} at position {position}: expected a double-quoted "
                "string, then a comma or the end"
            )
        try:
            values.append(json.loads(match.group(1)))
        except json.JSONDecodeError as error:
            raise ValueError(f"bad filter value {match.group(1)}: {error.msg}") from error
        if not match.group(2):
            return values
        position = match.end()


__all__ = [
    "POPULARITY_WEIGHT",
    "TEMPERATURE",
    "Catalog",
    "Model",
    "load_catalog",
    "parse_filter_values",
    "synthetic_catalog",
]
