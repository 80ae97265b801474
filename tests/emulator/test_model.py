"""Tests for the emulator's recommendation model (fanout.emulator._model)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fanout.emulator._model import (
    Catalog,
    Model,
    load_catalog,
    parse_filter_values,
    synthetic_catalog,
)

GENRE_NAMES = {
    "Action", "Animation", "Comedy", "Crime", "Documentary", "Drama",
    "Family", "Fantasy", "Horror", "Romance", "Sci-Fi", "Thriller",
}  # fmt: skip


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return synthetic_catalog(seed=7, users=3_000, items=300)


@pytest.fixture(scope="module")
def model(catalog: Catalog) -> Model:
    return Model(catalog, seed=7)


def genres_of(catalog: Catalog, item_id: str) -> set[str]:
    return set(catalog.item_attributes["GENRES"][catalog.item_index[item_id]].split("|"))


def genre_share(catalog: Catalog, item_ids: list[str], genre: str) -> float:
    return sum(genre in genres_of(catalog, item) for item in item_ids) / len(item_ids)


def with_user(catalog: Catalog, user_id: str, item_ids: list[str]) -> Catalog:
    """The catalog plus one user with the given history."""
    extra = np.array([catalog.item_index[item] for item in item_ids], dtype=np.int32)
    return Catalog(
        user_ids=(*catalog.user_ids, user_id),
        item_ids=catalog.item_ids,
        user_indptr=np.append(catalog.user_indptr, catalog.user_indptr[-1] + len(extra)),
        user_items=np.concatenate([catalog.user_items, extra]),
        item_attributes=catalog.item_attributes,
    )


def horror_items(catalog: Catalog) -> list[str]:
    return [item for item in catalog.item_ids if "Horror" in genres_of(catalog, item)]


# -- synthetic_catalog --------------------------------------------------------------------------


def test_synthetic_catalog_is_deterministic_for_a_seed() -> None:
    """The same seed gives the same catalog; another seed gives a different one."""
    first = synthetic_catalog(seed=3, users=500, items=80)
    second = synthetic_catalog(seed=3, users=500, items=80)
    other = synthetic_catalog(seed=4, users=500, items=80)
    assert np.array_equal(first.user_indptr, second.user_indptr)
    assert np.array_equal(first.user_items, second.user_items)
    assert first.item_attributes == second.item_attributes
    assert not np.array_equal(first.user_items[:100], other.user_items[:100])


def test_synthetic_catalog_has_decimal_ids_genres_and_unique_titles(catalog: Catalog) -> None:
    """IDs are "1".."n"; items carry 1-3 known GENRES joined by "|" and a unique TITLE."""
    assert catalog.user_ids[:3] == ("1", "2", "3") and catalog.user_ids[-1] == "3000"
    assert catalog.item_ids[-1] == "300" and len(catalog.item_ids) == 300
    for value in catalog.item_attributes["GENRES"]:
        genres = value.split("|")
        assert 1 <= len(genres) <= 3 and set(genres) <= GENRE_NAMES
    titles = catalog.item_attributes["TITLE"]
    assert len(set(titles)) == len(titles) and all(title.strip() for title in titles)


def test_synthetic_catalog_popularity_is_long_tailed(catalog: Catalog) -> None:
    """The most popular tenth of the items gets far more than a tenth of the interactions."""
    counts = np.sort(np.bincount(catalog.user_items, minlength=len(catalog.item_ids)))[::-1]
    assert counts[:30].sum() > 0.3 * counts.sum()
    assert len(catalog.user_items) == pytest.approx(3_000 * 25, rel=0.1)


def test_catalog_rejects_inconsistent_interactions() -> None:
    """A Catalog whose CSR arrays disagree with its IDs raises ValueError."""
    with pytest.raises(ValueError, match="user_items"):
        Catalog(("u",), ("i",), np.array([0, 1]), np.array([5]), {})
    with pytest.raises(ValueError, match="user_indptr"):
        Catalog(("u",), ("i",), np.array([0, 2]), np.array([0]), {})
    with pytest.raises(ValueError, match="attribute GENRES"):
        Catalog(("u",), ("i",), np.array([0, 1]), np.array([0]), {"genres": ("a", "b")})


# -- load_catalog -------------------------------------------------------------------------------


def test_load_catalog_reads_personalize_csvs(tmp_path: Path) -> None:
    """Columns are case-insensitive in any order; items only in the items CSV are included."""
    interactions = tmp_path / "interactions.csv"
    interactions.write_text(
        "Timestamp,EVENT_TYPE,item_id,User_Id\n"
        "1700000000,click,i1,u1\n"
        "1700000001,click,i2,u2\n"
        "\n"
        "1700000002,watch,i2,u1\n"
    )
    items = tmp_path / "items.csv"
    items.write_text('ITEM_ID,genres,Title\ni3,Horror|Comedy,"Night, Again"\ni1,Drama,First\n')
    catalog = load_catalog(interactions, items)
    assert catalog.user_ids == ("u1", "u2")
    assert catalog.item_ids == ("i3", "i1", "i2")
    assert catalog.history("u1") == ["i1", "i2"] and catalog.history("u2") == ["i2"]
    assert catalog.item_attributes == {
        "GENRES": ("Horror|Comedy", "Drama", ""),
        "TITLE": ("Night, Again", "First", ""),
    }
    assert Model(catalog).knows_item("i3")


@pytest.mark.parametrize(
    ("interactions", "items", "message"),
    [
        ("", None, r"interactions\.csv: empty file"),
        ("USER_ID,ITEM_ID\nu,i\n", None, r"interactions\.csv, line 1: missing column TIMESTAMP"),
        ("USER_ID,ITEM_ID,TIMESTAMP\n", None, "no interactions"),
        ("USER_ID,ITEM_ID,TIMESTAMP\nu,i,1\nu,i\n", None, "line 3: expected 3 fields, found 2"),
        ("USER_ID,ITEM_ID,TIMESTAMP\nu,i,yesterday\n", None, "line 2: TIMESTAMP 'yesterday'"),
        ("USER_ID,ITEM_ID,TIMESTAMP\n ,i,1\n", None, "line 2: empty USER_ID"),
        ("USER_ID,ITEM_ID,TIMESTAMP\nu,i,1\n", "TITLE\nx\n", r"items\.csv, line 1: missing column"),
        ("USER_ID,ITEM_ID,TIMESTAMP\nu,i,1\n", "ITEM_ID\ni\ni\n", "line 3: duplicate ITEM_ID 'i'"),
    ],
)
def test_load_catalog_reports_file_line_and_problem(
    tmp_path: Path, interactions: str, items: str | None, message: str
) -> None:
    """A malformed CSV raises ValueError naming the file, the line and what is wrong."""
    interactions_csv = tmp_path / "interactions.csv"
    interactions_csv.write_text(interactions)
    items_csv = None
    if items is not None:
        items_csv = tmp_path / "items.csv"
        items_csv.write_text(items)
    with pytest.raises(ValueError, match=message):
        load_catalog(interactions_csv, items_csv)


# -- popularity, recommendations ----------------------------------------------------------------


def test_popular_is_in_descending_interaction_count_order(model: Model, catalog: Catalog) -> None:
    """popular() lists items by interaction count, ties by catalog order, within the mask."""
    counts = np.bincount(catalog.user_items, minlength=len(catalog.item_ids))
    ranked = [catalog.item_index[item] for item in model.popular(300)]
    assert sorted(ranked, key=lambda i: (-counts[i], i)) == ranked
    allowed = np.arange(300) % 3 == 0
    assert all(allowed[catalog.item_index[item]] for item in model.popular(10, allowed))
    assert model.popular(0) == []


def test_recommend_gives_a_horror_fan_mostly_horror(catalog: Catalog) -> None:
    """A user whose history is all Horror gets far more Horror than chance."""
    horror = horror_items(catalog)
    fan_catalog = with_user(catalog, "fan", horror[::3][:20])
    [(items, _)] = Model(fan_catalog).recommend(["fan"], 20)
    chance = len(horror) / len(catalog.item_ids)
    assert genre_share(catalog, items, "Horror") > max(0.6, 2 * chance)


def test_recommend_follows_users_favourite_genres(model: Model, catalog: Catalog) -> None:
    """Recommendations share each user's top history genre far more often than popular items."""
    users = list(catalog.user_ids[:300])
    personal, popular = [], []
    for user, (items, _) in zip(users, model.recommend(users, 10), strict=True):
        history = catalog.history(user)
        top = Counter(g for item in history for g in genres_of(catalog, item)).most_common(1)
        personal.append(genre_share(catalog, items, top[0][0]))
        popular.append(genre_share(catalog, model.popular(10), top[0][0]))
    assert np.mean(personal) > np.mean(popular) + 0.3


def test_recommend_scores_are_a_descending_softmax(model: Model) -> None:
    """Scores are small, descending and sum to below one, or to one over every item."""
    [(items, scores)] = model.recommend(["1"], 25)
    assert len(items) == len(set(items)) == 25
    assert scores == sorted(scores, reverse=True)
    assert scores[-1] > 0 and scores[0] < 0.5 and sum(scores) < 1
    [(_, all_scores)] = model.recommend(["1"], 1_000)
    assert len(all_scores) == 300 and sum(all_scores) == pytest.approx(1, abs=1e-3)


def test_recommend_gives_unknown_users_popular_items_in_input_order(model: Model) -> None:
    """Cold users get popular() with popularity-softmax scores; results keep the input order."""
    results = model.recommend(["nobody", "1", "nobody-else"], 5)
    assert len(results) == 3
    assert results[0][0] == results[2][0] == model.popular(5)
    assert results[0][1] == sorted(results[0][1], reverse=True) and sum(results[0][1]) < 1
    assert results[1] == model.recommend(["1"], 5)[0]
    assert not model.knows_user("nobody") and model.knows_user("1")


def test_recommend_respects_the_allowed_mask(model: Model, catalog: Catalog) -> None:
    """Only allowed items come back, fewer than n when fewer are allowed."""
    allowed = np.zeros(len(catalog.item_ids), dtype=bool)
    allowed[[4, 8, 15]] = True
    for items, scores in model.recommend(["1", "nobody"], 10, allowed):
        assert sorted(items) == sorted(catalog.item_ids[i] for i in (4, 8, 15))
        assert len(scores) == 3 and sum(scores) == pytest.approx(1, abs=1e-4)
    assert model.recommend(["1"], 10, np.zeros(300, dtype=bool)) == [([], [])]
    with pytest.raises(ValueError, match="bool mask"):
        model.recommend(["1"], 10, np.ones(5, dtype=bool))


def test_recommend_in_bulk_matches_one_user_at_a_time(model: Model, catalog: Catalog) -> None:
    """A batch spanning several chunks returns what single-user calls return, in order."""
    users = [*catalog.user_ids, "stranger"]
    results = model.recommend(users, 7)
    assert len(results) == len(users)
    for position in (0, 1, 2047, 2048, 2999, 3000):
        items, scores = model.recommend([users[position]], 7)[0]
        assert results[position][0] == items
        assert results[position][1] == pytest.approx(scores, rel=1e-5)  # BLAS blocking varies


def test_models_are_deterministic_for_a_seed(catalog: Catalog, model: Model) -> None:
    """Two models trained with the same seed answer identically."""
    again = Model(catalog, seed=7)
    users = list(catalog.user_ids[:50])
    assert again.recommend(users, 10) == model.recommend(users, 10)
    assert again.related("1", 10) == model.related("1", 10)


# -- rank, related, themes, segments ------------------------------------------------------------


def test_rank_scores_sum_to_one_and_unknown_items_trail(model: Model) -> None:
    """rank() keeps first occurrences, scores known items by softmax and appends unknown ones."""
    items, scores = model.rank("1", ["5", "missing", "3", "5", "9", "also-missing"])
    assert sorted(items[:3]) == ["3", "5", "9"] and items[3:] == ["missing", "also-missing"]
    assert scores[3:] == [0.0, 0.0] and scores[:3] == sorted(scores[:3], reverse=True)
    assert sum(scores) == pytest.approx(1, abs=1e-5)
    assert model.rank("1", []) == ([], [])


def test_rank_for_an_unknown_user_follows_popularity(model: Model) -> None:
    """An unknown user's ranking is the items' popularity order."""
    popular = model.popular(6)
    items, scores = model.rank("nobody", popular[::-1])
    assert items == popular and sum(scores) == pytest.approx(1, abs=1e-5)


def test_related_items_share_genres_more_than_chance(model: Model, catalog: Catalog) -> None:
    """Related items share a genre with the item far more often than random items do."""
    shared, chance = [], []
    for item in catalog.item_ids[::10]:
        related = model.related(item, 10)
        assert related is not None and item not in related and len(related) == 10
        shared.append(
            np.mean([bool(genres_of(catalog, r) & genres_of(catalog, item)) for r in related])
        )
        chance.append(
            np.mean(
                [bool(genres_of(catalog, r) & genres_of(catalog, item)) for r in catalog.item_ids]
            )
        )
    assert np.mean(shared) > np.mean(chance) + 0.3
    assert model.related("no-such-item", 10) is None


def test_related_respects_the_allowed_mask(model: Model, catalog: Catalog) -> None:
    """related() returns only allowed items."""
    allowed = np.arange(len(catalog.item_ids)) < 50
    related = model.related("200", 80, allowed)
    assert related is not None and len(related) == 50
    assert all(catalog.item_index[item] < 50 for item in related)


def test_related_to_an_item_without_interactions_is_the_popular_items(catalog: Catalog) -> None:
    """An item nobody interacted with is related to the most popular items."""
    attributes = {name: (*values, "") for name, values in catalog.item_attributes.items()}
    extended = Catalog(
        catalog.user_ids,
        (*catalog.item_ids, "new"),
        catalog.user_indptr,
        catalog.user_items,
        attributes,
    )
    model = Model(extended)
    assert model.related("new", 5) == model.popular(5)


def test_themed_groups_related_items_under_a_named_theme(model: Model, catalog: Catalog) -> None:
    """themed() names the item and a genre and scores items by relevance in -0.1..0.6."""
    result = model.themed("1", 10, "title")
    assert result is not None
    items, theme, scores = result
    assert sorted(items) == sorted(model.related("1", 10) or [])
    assert theme.endswith(f"for fans of {catalog.item_attributes['TITLE'][0]}")
    assert scores == sorted(scores, reverse=True) and all(-0.1 <= s <= 0.6 for s in scores)
    assert model.themed("no-such-item", 10, "TITLE") is None
    with pytest.raises(ValueError, match="not an item attribute"):
        model.themed("1", 10, "DESCRIPTION")


def test_item_affinity_finds_users_who_like_the_items_genre(model: Model, catalog: Catalog) -> None:
    """The users most drawn to a Horror item have much more Horror in their history."""
    item = next(i for i in horror_items(catalog) if genres_of(catalog, i) == {"Horror"})
    users = model.item_affinity(item, 30)
    assert users is not None and len(users) == len(set(users)) == 30
    fans = np.mean([genre_share(catalog, catalog.history(u), "Horror") for u in users])
    everyone = np.mean(
        [genre_share(catalog, catalog.history(u), "Horror") for u in catalog.user_ids]
    )
    assert fans > everyone + 0.3
    assert model.item_affinity("no-such-item", 5) is None


def test_attribute_affinity_ranks_fans_of_the_matching_items(
    model: Model, catalog: Catalog
) -> None:
    """Users ranked for ITEMS.GENRES = "Horror" have much more Horror in their history."""
    users = model.attribute_affinity('items.genres = "Horror"', 30)
    fans = np.mean([genre_share(catalog, catalog.history(u), "Horror") for u in users])
    everyone = np.mean(
        [genre_share(catalog, catalog.history(u), "Horror") for u in catalog.user_ids]
    )
    assert len(users) == 30 and fans > everyone + 0.3
    both = model.attribute_affinity('ITEMS.GENRES = "Horror" AND ITEMS.GENRES = "Comedy"', 5)
    assert len(both) == 5
    assert model.attribute_affinity('ITEMS.GENRES = "Opera"', 5) == []
    assert model.attribute_affinity('ITEMS.TITLE = "Say \\"Hi\\" \\\\ Bye"', 5) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('ITEMS.GENRES != "Comedy"', "unsupported operator '!='"),
        ('ITEMS.GENRES = "Comedy" OR ITEMS.GENRES = "Drama"', "unsupported operator 'OR'"),
        ('ITEMS.GENRES IN ("Comedy")', "unsupported operator 'IN'"),
        ('ITEMS.MOOD = "calm"', "unknown item attribute MOOD"),
        ('USERS.AGE = "30"', r"only Items\.<field> conditions"),
        ("ITEMS.GENRES = Comedy", "expected a double-quoted value, found 'Comedy' at position 15"),
        ('ITEMS.GENRES = "Comedy', "unterminated string"),
        ('ITEMS.GENRES = "Comedy" AND', r"expected Items\.<field>, found end of input"),
        ('ITEMS.GENRES = "a\\n"', r"unsupported escape \\n"),
        ("  ", "empty"),
    ],
)
def test_attribute_affinity_rejects_bad_queries(model: Model, query: str, message: str) -> None:
    """Bad syntax, unknown attributes and operators other than = and AND raise ValueError."""
    with pytest.raises(ValueError, match=message):
        model.attribute_affinity(query, 5)


# -- filters ------------------------------------------------------------------------------------


def genre_mask(catalog: Catalog, *genres: str) -> np.ndarray:
    return np.array([bool(genres_of(catalog, item) & set(genres)) for item in catalog.item_ids])


def test_filter_include_with_placeholder_values(model: Model, catalog: Catalog) -> None:
    """INCLUDE ... IN ($PARAM) allows exactly the items having any of the given values."""
    mask = model.filter_mask(
        "INCLUDE ItemID WHERE Items.GENRES IN ($GENRES)", {"GENRES": ["Horror", "Comedy"]}
    )
    assert mask.dtype == bool and np.array_equal(mask, genre_mask(catalog, "Horror", "Comedy"))


def test_filter_exclude_with_constants_and_equals(model: Model, catalog: Catalog) -> None:
    """EXCLUDE ... IN ("x") and = "x" remove the matching items."""
    mask = model.filter_mask('EXCLUDE ItemID WHERE Items.GENRES IN ("Drama", "Crime")', {})
    assert np.array_equal(mask, ~genre_mask(catalog, "Drama", "Crime"))
    equals = model.filter_mask('EXCLUDE ItemID WHERE Items.GENRES = "Drama"', {})
    assert np.array_equal(equals, ~genre_mask(catalog, "Drama"))


def test_filter_not_in_and_item_ids(model: Model, catalog: Catalog) -> None:
    """NOT IN negates a condition; Items.ITEM_ID matches item IDs."""
    mask = model.filter_mask('INCLUDE ItemID WHERE Items.GENRES NOT IN ("Drama")', {})
    assert np.array_equal(mask, ~genre_mask(catalog, "Drama"))
    ids = model.filter_mask("EXCLUDE ItemID WHERE Items.ITEM_ID IN ($SEEN)", {"SEEN": ["1", "9"]})
    assert np.flatnonzero(~ids).tolist() == [0, 8]


def test_filter_parts_apply_in_turn_and_and_binds_tighter(model: Model, catalog: Catalog) -> None:
    """Expressions joined by | all apply; AND binds tighter than OR."""
    mask = model.filter_mask(
        'INCLUDE ItemID WHERE Items.GENRES IN ("Horror") AND Items.GENRES IN ("Comedy") '
        'OR Items.GENRES = "Family" | EXCLUDE ItemID WHERE Items.TITLE IN ($TITLE)',
        {"TITLE": [catalog.item_attributes["TITLE"][0]]},
    )
    horror, comedy, family = (genre_mask(catalog, g) for g in ("Horror", "Comedy", "Family"))
    expected = (horror & comedy) | family
    expected[0] = False
    assert np.array_equal(mask, expected)


def test_filter_include_without_a_placeholder_value_raises(model: Model) -> None:
    """An INCLUDE placeholder with no value raises ValueError("missing value for $NAME")."""
    with pytest.raises(ValueError, match=r"missing value for \$GENRES"):
        model.filter_mask("INCLUDE ItemID WHERE Items.GENRES IN ($GENRES)", {"genres": ["x"]})


def test_filter_exclude_without_a_placeholder_value_is_skipped(
    model: Model, catalog: Catalog
) -> None:
    """An EXCLUDE condition whose placeholder has no value is ignored, as in Personalize."""
    expression = "EXCLUDE ItemID WHERE Items.GENRES IN ($G) OR Items.GENRES IN ($H)"
    assert model.filter_mask(expression, {}).all()
    assert np.array_equal(
        model.filter_mask(expression, {"H": ["Drama"]}), ~genre_mask(catalog, "Drama")
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "INCLUDE ItemID WHERE Items.GENRES NOT IN ($G)",
            r"placeholder \$G cannot be used with NOT IN",
        ),
        ('INCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("click")', r"only Items\.<field>"),
        ('INCLUDE UserID WHERE Items.GENRES IN ("Drama")', "only ItemID filters"),
        ("INCLUDE ItemID WHERE Items.YEAR < 2000", "unsupported operator '<'"),
        ('INCLUDE ItemID WHERE Items.GENRES IN ("Drama"', r"expected '\)', found end of input"),
        (
            'INCLUDE ItemID WHERE Items.GENRES IN ("Drama") LIMIT 3',
            "expected AND, OR, | or the end",
        ),
        ('KEEP ItemID WHERE Items.GENRES IN ("Drama")', "expected INCLUDE or EXCLUDE"),
        ('INCLUDE ItemID WHERE Items.MOOD IN ("calm")', "unknown item attribute MOOD"),
        ("", "empty"),
    ],
)
def test_filter_rejects_unsupported_syntax(model: Model, expression: str, message: str) -> None:
    """Unsupported or malformed filter expressions raise ValueError with a clear message."""
    with pytest.raises(ValueError, match=message):
        model.filter_mask(expression, {})


# -- parse_filter_values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "values"),
    [
        ('"horror","comedy"', ["horror", "comedy"]),
        ('  "horror" ,\t"comedy"  ', ["horror", "comedy"]),
        ('"say \\"hi\\"","caf\\u00e9"', ['say "hi"', "café"]),
        ('"a,b"', ["a,b"]),
    ],
)
def test_parse_filter_values_splits_quoted_values(raw: str, values: list[str]) -> None:
    """Comma-separated double-quoted values with JSON escapes parse to a list."""
    assert parse_filter_values(raw) == values


@pytest.mark.parametrize(
    "raw", ["", "   ", "horror", '"horror",', '"a" "b"', '"a",,"b"', '"bad\\x"']
)
def test_parse_filter_values_rejects_anything_else(raw: str) -> None:
    """Empty, unquoted, trailing-comma or badly escaped values raise ValueError."""
    with pytest.raises(ValueError, match="filter value"):
        parse_filter_values(raw)
