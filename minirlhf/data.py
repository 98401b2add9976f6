"""The SFT corpus of the toy world, as a ``datasets.Dataset``.

Preference data live in :mod:`minirlhf.preferences`.
"""

from __future__ import annotations

import random

from datasets import Dataset

from minirlhf import world


def sft_corpus(examples_per_country: int = 40, seed: int = 0) -> Dataset:
    """The SFT corpus: for every country, ``examples_per_country`` answers in the exact mix
    :data:`minirlhf.world.STYLE_MIX` (60% correct, 25% wrong city, 15% hedge by default).

    The counts per country are exact (not sampled), so the model that fits this corpus best says
    Paris for France with probability 0.60; the wrong cities are drawn with ``seed``.
    Columns: ``prompt``, ``response``, ``style``, ``country`` (all strings).
    """
    if examples_per_country < 1:
        raise ValueError(f"examples_per_country must be >= 1, got {examples_per_country}.")
    rng = random.Random(seed)
    n_correct = round(world.STYLE_MIX["correct"] * examples_per_country)
    n_hedge = round(world.STYLE_MIX["hedge"] * examples_per_country)
    n_wrong = examples_per_country - n_correct - n_hedge
    rows = []
    for country, capital in world.COUNTRIES:
        prompt = world.make_prompt(country)
        others = [c for c in world.CITIES if c != capital]
        styles = ["correct"] * n_correct + ["wrong"] * n_wrong + ["hedge"] * n_hedge
        for style in styles:
            city = rng.choice(others) if style == "wrong" else None
            rows.append({"prompt": prompt, "response": world.make_response(country, style, city),
                         "style": style, "country": country})
    rng.shuffle(rows)
    return Dataset.from_list(rows)
