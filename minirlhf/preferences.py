"""Preference data: triplets (prompt, chosen, rejected) collected from the SFT model.

As in the article: for each prompt, sample two responses from the SFT model, let a rater pick
the winner, and store the triplet ``(x, y_w, y_l)``. Data are ``datasets.Dataset`` objects with
string columns ``prompt``, ``chosen``, ``rejected`` (TRL's "standard" preference format), plus,
for teaching, the true rewards ``chosen_reward`` and ``rejected_reward``.
"""

from __future__ import annotations

import torch
from datasets import Dataset, DatasetDict
from tqdm.auto import tqdm

from minirlhf import world
from minirlhf.logprobs import generate
from minirlhf.utils import seed_everything


def collect_preferences(model, tokenizer, prompts: list[str], pairs_per_prompt: int = 16,
                        rater: world.SimulatedRater | None = None, seed: int = 0,
                        temperature: float = 1.0, max_new_tokens: int = 16,
                        max_tries: int = 20, progress: bool = True) -> Dataset:
    """Sample response pairs from ``model`` and let ``rater`` label them.

    For each prompt we draw pairs of responses until ``pairs_per_prompt`` pairs with two
    *different* responses are found (identical pairs carry no preference), giving up after
    ``max_tries`` rounds. The rater (default: :class:`~minirlhf.world.SimulatedRater` with
    ``seed``) picks the winner. Returns a Dataset with columns ``prompt``, ``chosen``,
    ``rejected``, ``chosen_reward``, ``rejected_reward``.
    """
    if pairs_per_prompt < 1:
        raise ValueError(f"pairs_per_prompt must be >= 1, got {pairs_per_prompt}.")
    if not prompts:
        raise ValueError("No prompts given: pass e.g. minirlhf.world.prompts('train').")
    rater = rater or world.SimulatedRater(seed=seed)
    generator = seed_everything(seed)
    rows = []
    for prompt in tqdm(prompts, desc="Collecting preferences", disable=not progress):
        found = 0
        for _ in range(max_tries):
            need = pairs_per_prompt - found
            if need == 0:
                break
            # ask for more pairs than needed: many draws repeat the most likely answer
            batch = [prompt] * (4 * need)
            first = generate(model, tokenizer, batch, max_new_tokens, temperature, generator)["responses"]
            second = generate(model, tokenizer, batch, max_new_tokens, temperature, generator)["responses"]
            for y1, y2 in zip(first, second):
                if y1 == y2 or found == pairs_per_prompt:
                    continue
                chosen, rejected = (y1, y2) if rater.prefers_first(prompt, y1, y2) else (y2, y1)
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                             "chosen_reward": world.true_reward(prompt, chosen),
                             "rejected_reward": world.true_reward(prompt, rejected)})
                found += 1
    return Dataset.from_list(rows)


def default_preferences(model=None, tokenizer=None, pairs_per_prompt: int = 16, seed: int = 0,
                        test_fraction: float = 0.2, progress: bool = True) -> DatasetDict:
    """The tutorial's preference data: pairs from the (shipped) SFT model on the training prompts,
    labelled by the simulated rater, split into ``train`` and ``test``.

    Split by pair, seeded; held-out *countries* never appear here (they measure generalisation).
    """
    if model is None:
        from minirlhf.sft import load_base_model

        model, tokenizer = load_base_model()
    data = collect_preferences(model, tokenizer, world.prompts("train"), pairs_per_prompt,
                               seed=seed, progress=progress)
    return data.train_test_split(test_size=test_fraction, seed=seed)


def bayes_optimal_accuracy(data: Dataset, rater: world.SimulatedRater | None = None) -> float:
    """The best pair accuracy any model can reach on ``data`` against the rater's noisy labels.

    Mean over pairs of max(p, 1 - p), p = the rater's probability of preferring the first answer.
    """
    rater = rater or world.SimulatedRater()
    accuracies = [rater.bayes_accuracy(p, c, r)
                  for p, c, r in zip(data["prompt"], data["chosen"], data["rejected"])]
    return float(torch.tensor(accuracies).mean())
