"""PPO vs DPO: the reward-KL frontier against the exact optimum, and off-policy preference data.

The frontier: every policy is a point (KL(pi || pi_ref), E_pi[r]). For each beta, pi*_beta is the
best policy at its own KL (it maximises reward subject to that KL budget), so the points of pi*_beta
for all betas trace the *optimal curve*: no method can lie above it. A method's **efficiency** at its
KL is the fraction of the achievable reward gain it gets there:

    efficiency = (r(pi) - r(pi_ref)) / (r*(KL(pi)) - r(pi_ref))

where r*(k) is the optimal curve's reward at KL k (linear interpolation between sweep points).

Off-policy data (after Xu et al. 2024, "Is DPO superior to PPO for LLM alignment?"): DPO only sees
the responses in its preference pairs. Probability mass can flow to responses that no pair covers
(an unseen city, malformed text) without any term of the loss noticing; PPO samples its own
responses and pays KL on each, so it does not. :func:`unseen_mass` puts that effect in numbers.
"""

from __future__ import annotations

import random

import torch
from datasets import Dataset

from minirlhf import world
from minirlhf.optimum import kl_divergence, optimal_policy, with_outside


def optimal_curve(ref_probs: torch.Tensor, rewards: torch.Tensor,
                  betas) -> list[dict[str, float]]:
    """The exact reward-KL curve of pi*_beta for each beta, averaged over prompts.

    ``ref_probs`` and ``rewards``: (N prompts, K outcomes), each row of ``ref_probs`` summing to 1.
    Returns ``[{"beta", "kl", "reward"}]`` sorted by KL, starting with the reference itself
    (beta = inf, KL = 0).
    """
    points = [{"beta": float("inf"), "kl": 0.0, "reward": (ref_probs * rewards).sum(-1).mean().item()}]
    for beta in betas:
        star = optimal_policy(ref_probs, rewards, beta)
        points.append({"beta": float(beta), "kl": kl_divergence(star, ref_probs).mean().item(),
                       "reward": (star * rewards).sum(-1).mean().item()})
    return sorted(points, key=lambda p: p["kl"])


def optimal_reward_at_kl(curve: list[dict[str, float]], kl: float) -> float:
    """r*(kl): the optimal curve's reward at ``kl``, interpolated linearly between its points.

    Beyond the last point the last reward is returned (the curve is flat there once all the mass
    sits on the best answers; sweep small enough betas to reach that regime).
    """
    for left, right in zip(curve, curve[1:]):
        if left["kl"] <= kl <= right["kl"]:
            weight = (kl - left["kl"]) / max(right["kl"] - left["kl"], 1e-12)
            return left["reward"] + weight * (right["reward"] - left["reward"])
    return curve[-1]["reward"] if kl > curve[-1]["kl"] else curve[0]["reward"]


def frontier_curve(evaluator, betas=None) -> list[dict[str, float]]:
    """The optimal curve for the prompts of an :class:`~minirlhf.optimum.ExactEvaluator`.

    Uses the candidate set plus the "outside" outcome, like every exact figure in minirlhf.
    ``betas`` defaults to 80 values from 0.003 to 30: the curve is exact and cheap, and a dense
    sweep keeps the linear interpolation of :func:`optimal_reward_at_kl` close to the true curve.
    """
    betas = torch.logspace(-2.5, 1.5, 80).tolist() if betas is None else betas
    return optimal_curve(with_outside(evaluator.ref_set_probs), evaluator.rewards, betas)


def frontier_efficiency(curve: list[dict[str, float]], kl: float, reward: float) -> float:
    """(reward - r_ref) / (r*(kl) - r_ref): 1 on the optimal curve, 0 no better than the reference."""
    reference = curve[0]["reward"]
    return (reward - reference) / max(optimal_reward_at_kl(curve, kl) - reference, 1e-12)


# --- Off-policy ("out-of-distribution") preference data ------------------------------------------

def offpolicy_preferences(prompts: list[str], pairs_per_prompt: int = 8, n_cities: int = 3,
                          seed: int = 0) -> Dataset:
    """Hand-written pairs that the SFT model rarely produces, labelled by the true reward.

    For each prompt: chosen = the hedge with the correct capital, rejected = a hedge naming one of
    only ``n_cities`` wrong cities (the base model almost never hedges with a wrong city). Every
    concise answer, and every other city, is *absent* from the data.
    Columns: ``prompt``, ``chosen``, ``rejected``, ``chosen_reward``, ``rejected_reward``.
    """
    rng = random.Random(seed)
    rows = []
    for prompt in prompts:
        country = world.country_of_prompt(prompt)
        capital = world.CAPITAL_OF[country]
        wrong_cities = rng.sample([c for c in world.CITIES if c != capital], n_cities)
        chosen = world.make_response(country, "hedge")
        for i in range(pairs_per_prompt):
            rejected = world.make_response(country, "hedge", wrong_cities[i % n_cities])
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                         "chosen_reward": world.true_reward(prompt, chosen),
                         "rejected_reward": world.true_reward(prompt, rejected)})
    return Dataset.from_list(rows)


def seen_mask(evaluator, data: Dataset) -> torch.Tensor:
    """(N prompts, K candidates) bool: True where the candidate appears in some pair of ``data``."""
    seen: dict[str, set[str]] = {}
    for prompt, chosen, rejected in zip(data["prompt"], data["chosen"], data["rejected"]):
        seen.setdefault(prompt, set()).update({world.normalise_text(chosen),
                                               world.normalise_text(rejected)})
    return torch.tensor([[y in seen.get(p, set()) for y in ys]
                         for p, ys in zip(evaluator.prompts, evaluator.candidates)])


def unseen_mass(evaluator, set_probs: torch.Tensor, data: Dataset) -> dict[str, float]:
    """How much probability lies on responses that no preference pair covers, averaged over prompts.

    ``set_probs``: (N, K) candidate probabilities of a policy (from ``evaluator.set_probs(model)``).
    Returns ``unseen_candidates`` (mass on candidates absent from ``data``), ``unseen_wrong`` (the
    part of it on candidates with a negative true reward: wrong cities, hedges with a wrong city),
    ``outside`` (mass off the candidate set altogether: malformed text) and ``unseen_total``
    (``unseen_candidates + outside``). ``unseen_wrong + outside`` is the mass on bad answers that
    the preference data never showed: what an off-policy method cannot see to push down.
    """
    unseen = ~seen_mask(evaluator, data)
    wrong = torch.tensor([[world.true_reward(p, y) < 0 for y in ys]
                          for p, ys in zip(evaluator.prompts, evaluator.candidates)])
    on_unseen = (set_probs * unseen).sum(-1).mean().item()
    on_unseen_wrong = (set_probs * (unseen & wrong)).sum(-1).mean().item()
    outside = (1 - set_probs.sum(-1)).clamp(min=0).mean().item()
    return {"unseen_candidates": on_unseen, "unseen_wrong": on_unseen_wrong, "outside": outside,
            "unseen_total": on_unseen + outside}


PLAIN_DPO = {"epochs": 4, "batch_size": 64, "learning_rate": 3e-4, "frozen_blocks": 0,
             "embedding_lr_scale": 1.0, "rpo_alpha": 0.0}
"""Plain offline DPO as TRL's ``DPOTrainer`` trains (a few passes over fixed pairs, every parameter
trained, no NLL term), at a learning rate this tiny model feels (TRL's default, 1e-6, barely moves it;
``benchmarks/dpo_vs_trl.py``), for the off-policy experiment: ``DPOConfig(beta=..., **PLAIN_DPO)``."""


# --- The comparison stage of `minirlhf demo` --------------------------------------------------


