"""The recipes the emulator serves and the input/output line shapes each one implies."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Algorithm(enum.Enum):
    """What a job computes for each input line."""

    PERSONALIZE = "personalize"  # userId -> recommendedItems + scores
    POPULAR = "popular"  # userId -> the same popular items for everyone, no scores
    RANK = "rank"  # userId + itemList -> re-ranked itemList + scores
    RELATED = "related"  # itemId -> similar items, no scores (themes in THEME_GENERATION mode)
    ITEM_AFFINITY = "item-affinity"  # segment: itemId -> users
    ATTRIBUTE_AFFINITY = "attribute-affinity"  # segment: itemAttributes query -> users
    UNSUPPORTED = "unsupported"  # recipes that batch jobs refuse


_ID_FIELDS = {
    Algorithm.RELATED: "itemId",
    Algorithm.ITEM_AFFINITY: "itemId",
    Algorithm.ATTRIBUTE_AFFINITY: "itemAttributes",
}


@dataclass(frozen=True, slots=True)
class Recipe:
    """One Amazon Personalize recipe as the emulator models it."""

    key: str  # the seed name used in the emulator's info file, e.g. "user-personalization"
    name: str  # the recipe's own name, e.g. "aws-user-personalization"
    recipe_type: str  # DescribeRecipe.recipeType
    algorithm: Algorithm
    description: str
    themes: bool = False  # supports batchInferenceJobMode=THEME_GENERATION
    reasons: bool = False  # v2 recipes can explain each item

    @property
    def segment(self) -> bool:
        return self.algorithm in {Algorithm.ITEM_AFFINITY, Algorithm.ATTRIBUTE_AFFINITY}

    @property
    def batch_inference(self) -> bool:
        return not self.segment and self.algorithm is not Algorithm.UNSUPPORTED

    @property
    def id_field(self) -> str:
        """The key every input line must carry."""
        return _ID_FIELDS.get(self.algorithm, "userId")

    @property
    def required_fields(self) -> tuple[str, ...]:
        if self.algorithm is Algorithm.RANK:
            return ("userId", "itemList")
        return (self.id_field,)

    @property
    def has_scores(self) -> bool:
        return self.algorithm in {Algorithm.PERSONALIZE, Algorithm.RANK}


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "user-personalization",
        "aws-user-personalization",
        "USER_PERSONALIZATION",
        Algorithm.PERSONALIZE,
        "Predicts the items a user will interact with, with exploration of new items.",
    ),
    Recipe(
        "user-personalization-v2",
        "aws-user-personalization-v2",
        "USER_PERSONALIZATION",
        Algorithm.PERSONALIZE,
        "Transformer-based user personalization for catalogs of up to 5 million items.",
        reasons=True,
    ),
    Recipe(
        "popularity-count",
        "aws-popularity-count",
        "USER_PERSONALIZATION",
        Algorithm.POPULAR,
        "Recommends the most popular items, the same for every user.",
    ),
    Recipe(
        "personalized-ranking",
        "aws-personalized-ranking",
        "PERSONALIZED_RANKING",
        Algorithm.RANK,
        "Re-ranks a list of items for a user.",
    ),
    Recipe(
        "personalized-ranking-v2",
        "aws-personalized-ranking-v2",
        "PERSONALIZED_RANKING",
        Algorithm.RANK,
        "Transformer-based personalized ranking.",
        reasons=True,
    ),
    Recipe(
        "similar-items",
        "aws-similar-items",
        "RELATED_ITEMS",
        Algorithm.RELATED,
        "Items similar to a given item, from co-interactions and item metadata.",
        themes=True,
    ),
    Recipe(
        "sims",
        "aws-sims",
        "RELATED_ITEMS",
        Algorithm.RELATED,
        "Item-to-item similarities from co-occurrence.",
    ),
    Recipe(
        "item-affinity",
        "aws-item-affinity",
        "USER_SEGMENTATION",
        Algorithm.ITEM_AFFINITY,
        "Segments of users most likely to interact with each item.",
    ),
    Recipe(
        "item-attribute-affinity",
        "aws-item-attribute-affinity",
        "USER_SEGMENTATION",
        Algorithm.ATTRIBUTE_AFFINITY,
        "Segments of users most likely to interact with items having given attributes.",
    ),
    Recipe(
        "trending-now",
        "aws-trending-now",
        "USER_PERSONALIZATION",
        Algorithm.UNSUPPORTED,
        "Items gaining popularity fastest. Not supported for batch recommendations.",
    ),
    Recipe(
        "next-best-action",
        "aws-next-best-action",
        "PERSONALIZED_ACTIONS",
        Algorithm.UNSUPPORTED,
        "The next best action for a user. Not supported for batch recommendations.",
    ),
)

RECIPES_BY_KEY = {recipe.key: recipe for recipe in RECIPES}
