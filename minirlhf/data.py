"""The SFT corpus of the toy world, as a ``datasets.Dataset``.

Preference data live in :mod:`minirlhf.preferences`.
"""

from __future__ import annotations

import random

from datasets import Dataset

from minirlhf import world


def style_counts(n_wrong: int) -> dict[str, int]:
    """How many answers of each style a country gets when it has ``n_wrong`` wrong ones, so that
    the three styles follow :data:`minirlhf.world.STYLE_MIX` (``n_wrong`` = 25% of the total)."""
    total = round(n_wrong / world.STYLE_MIX["wrong"])
    n_hedge = round(world.STYLE_MIX["hedge"] * total)
    return {"correct": total - n_wrong - n_hedge, "wrong": n_wrong, "hedge": n_hedge}


def sft_corpus(wrong_per_city: int = 2, seed: int = 0) -> Dataset:
    """The SFT corpus: for every country, answers in the mix :data:`minirlhf.world.STYLE_MIX`
    (60% correct, 25% wrong city, 15% hedge).

    The counts are exact, not sampled: each city of :func:`minirlhf.world.wrong_cities` is the
    wrong answer ``wrong_per_city`` times, and the correct and hedging answers fill the mix
    around them (152 answers for a training country, 184 for a held-out one, by default). So the
    model that fits this corpus best says Paris for France with probability 0.60, and when it is
    wrong, any wrong city equally often. Why balanced: when each country had only 10 wrong
    answers drawn at random, the model learnt *which* wrong cities each country had, errors that
    alignment on the training countries could unlearn only country by country; errors that are
    the same for every country are unlearnt once, for all countries, held-out ones included.

    ``seed`` shuffles the rows. Columns: ``prompt``, ``response``, ``style``, ``country``.
    """
    if not (isinstance(wrong_per_city, int) and wrong_per_city >= 1):
        raise ValueError(f"wrong_per_city must be an integer >= 1, got {wrong_per_city!r}.")
    rows = []
    for country, _ in world.COUNTRIES:
        prompt = world.make_prompt(country)
        wrong = world.wrong_cities(country) * wrong_per_city
        counts = style_counts(len(wrong))
        answers = ([("correct", None)] * counts["correct"] + [("wrong", city) for city in wrong]
                   + [("hedge", None)] * counts["hedge"])  # (style, city) of each answer
        rows += [{"prompt": prompt, "response": world.make_response(country, style, city),
                  "style": style, "country": country} for style, city in answers]
    random.Random(seed).shuffle(rows)
    return Dataset.from_list(rows)
