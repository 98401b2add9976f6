"""The reward-KL frontier on a synthetic case with a known optimum, and the off-policy data builder."""

import math

import pytest
import torch

from minirlhf import world
from minirlhf.compare import (frontier_efficiency, offpolicy_preferences, optimal_curve,
                              optimal_reward_at_kl, seen_mask, unseen_mass)

# two outcomes, pi_ref = (1/2, 1/2), r = (1, 0): pi*_beta(first) = sigmoid(1 / beta)
REF = torch.tensor([[0.5, 0.5]])
R = torch.tensor([[1.0, 0.0]])


def _point(p):
    """(KL(pi || ref), E[r]) of the policy (p, 1 - p), by hand."""
    kl = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    return kl, p


def test_optimal_curve_matches_the_closed_form():
    curve = optimal_curve(REF, R, betas=[2.0, 1.0, 0.25])
    assert curve[0] == {"beta": float("inf"), "kl": 0.0, "reward": 0.5}
    for point in curve[1:]:
        p = 1 / (1 + math.exp(-1 / point["beta"]))
        kl, reward = _point(p)
        assert point["kl"] == pytest.approx(kl, rel=1e-5)
        assert point["reward"] == pytest.approx(reward, rel=1e-5)
    assert [p["kl"] for p in curve] == sorted(p["kl"] for p in curve)


def test_efficiency_is_one_on_the_curve_and_lower_below_it():
    betas = torch.logspace(-2, 1, 60).tolist()  # the exact curve is cheap: sweep it densely
    curve = optimal_curve(REF, R, betas)
    on_curve = curve[20]
    assert frontier_efficiency(curve, on_curve["kl"], on_curve["reward"]) == pytest.approx(1.0)
    # any other policy with the same KL has a lower reward: p on the curve vs a "wasteful" policy
    kl, _ = _point(0.8)
    assert optimal_reward_at_kl(curve, kl) == pytest.approx(0.8, abs=0.002)  # the only better policy
    assert frontier_efficiency(curve, kl, 0.65) < 1
    assert frontier_efficiency(curve, 0.0, 0.5) == pytest.approx(0.0)


def test_offpolicy_data_covers_few_responses():
    prompts = world.prompts("train")[:3]
    data = offpolicy_preferences(prompts, pairs_per_prompt=6, n_cities=2)
    assert data.num_rows == 18
    assert set(data["chosen_reward"]) == {world.REWARD_HEDGE_CORRECT}
    assert set(data["rejected_reward"]) == {world.REWARD_HEDGE_WRONG}

    class Fake:  # the two attributes of ExactEvaluator that the functions read
        pass

    fake = Fake()
    fake.prompts = prompts
    fake.candidates = [world.candidate_responses(p) for p in prompts]
    mask = seen_mask(fake, data)
    assert mask.sum(-1).tolist() == [3, 3, 3]  # one chosen hedge + two rejected hedges each
    probs = torch.full((3, 48), 1 / 50)  # 48/50 on the set, 2/50 outside
    mass = unseen_mass(fake, probs, data)
    assert mass["unseen_candidates"] == pytest.approx(45 / 50)
    assert mass["unseen_wrong"] == pytest.approx(44 / 50)  # all unseen but the correct concise answer
    assert mass["outside"] == pytest.approx(2 / 50)
    assert mass["unseen_total"] == pytest.approx(47 / 50)
