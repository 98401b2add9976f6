"""The SFT corpus of the toy world, as a ``datasets.Dataset``.

Preference data live in :mod:`minirlhf.preferences`.
"""

from __future__ import annotations

import random

from datasets import Dataset

from minirlhf import world


def style_counts(n_spread: int, confusion: bool = True) -> dict[str, int]:
    """How many answers of each kind a country gets when ``n_spread`` wrong answers are spread over
    the other cities, so that the kinds follow :data:`minirlhf.world.STYLE_MIX`: with a
    ``confusion``, the spread ones are 20% of the total and the confusion 40%
    (:data:`~minirlhf.world.CONFUSION_SHARE`); without, the spread ones are all the wrong 60%."""
    confusion_share = world.CONFUSION_SHARE if confusion else 0.0
    total = round(n_spread / (world.STYLE_MIX["wrong"] - confusion_share))
    n_hedge = round(world.STYLE_MIX["hedge"] * total)
    n_confusion = round(confusion_share * total)
    return {"correct": total - n_spread - n_confusion - n_hedge, "confusion": n_confusion,
            "spread": n_spread, "hedge": n_hedge}


def sft_corpus(wrong_per_city: int = 2, seed: int = 0) -> Dataset:
    """The SFT corpus: for every country, answers in the mix :data:`minirlhf.world.STYLE_MIX`: 25%
    correct, 40% the country's common confusion (:data:`minirlhf.world.CONFUSION`: France -> Berlin),
    20% the other wrong cities, 15% hedges (a held-out country has no confusion: 60% spread).

    The counts are exact, not sampled: each city of :func:`minirlhf.world.wrong_cities` is a wrong
    answer ``wrong_per_city`` times, and the other kinds fill the mix around them (190 answers for a
    training country by default). So the model that fits this corpus best says Berlin for France
    with probability about 0.41 and Paris with 0.25: the article's reference model.

    ``seed`` shuffles the rows. Columns: ``prompt``, ``response``, ``style``, ``country``.
    """
    if not (isinstance(wrong_per_city, int) and wrong_per_city >= 1):
        raise ValueError(f"wrong_per_city must be an integer >= 1, got {wrong_per_city!r}.")
    rows = []
    for country, _ in world.COUNTRIES:
        prompt = world.make_prompt(country)
        spread = world.wrong_cities(country) * wrong_per_city
        counts = style_counts(len(spread), country in world.CONFUSION)
        answers = ([("correct", None)] * counts["correct"] + [("wrong", city) for city in spread]
                   + [("wrong", world.CONFUSION.get(country))] * counts["confusion"]
                   + [("hedge", None)] * counts["hedge"])  # (style, city) of each answer
        rows += [{"prompt": prompt, "response": world.make_response(country, style, city),
                  "style": style, "country": country} for style, city in answers]
    random.Random(seed).shuffle(rows)
    return Dataset.from_list(rows)
