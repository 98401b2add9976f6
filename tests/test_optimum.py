"""pi*, J*, KL, the objective and the attainment against hand computations."""

import math

import pytest
import torch

from minirlhf import world
from minirlhf.optimum import (ExactEvaluator, answer_kind_probs, kl_divergence, objective,
                              optimal_policy, optimal_value, with_outside)

# A 3-response example: pi_ref = (0.5, 0.3, 0.2), r = (1, 0, -1), beta = 0.5.
REF = torch.tensor([0.5, 0.3, 0.2])
R = torch.tensor([1.0, 0.0, -1.0])
BETA = 0.5
# by hand: weights pi_ref * exp(r / beta) = (0.5 e^2, 0.3, 0.2 e^-2)
W = [0.5 * math.exp(2), 0.3, 0.2 * math.exp(-2)]
Z = sum(W)


def test_optimal_policy_by_hand():
    assert optimal_policy(REF, R, BETA).tolist() == pytest.approx([w / Z for w in W], rel=1e-6)


def test_optimal_value_is_beta_log_z_and_equals_the_objective_of_pi_star():
    assert optimal_value(REF, R, BETA).item() == pytest.approx(BETA * math.log(Z), rel=1e-6)
    star = optimal_policy(REF, R, BETA)
    assert objective(star, REF, R, BETA).item() == pytest.approx(BETA * math.log(Z), rel=1e-5)


def test_objective_by_hand_and_pi_star_beats_other_policies():
    pi = torch.tensor([0.8, 0.1, 0.1])
    kl = 0.8 * math.log(0.8 / 0.5) + 0.1 * math.log(0.1 / 0.3) + 0.1 * math.log(0.1 / 0.2)
    assert kl_divergence(pi, REF).item() == pytest.approx(kl, rel=1e-6)
    assert objective(pi, REF, R, BETA).item() == pytest.approx(0.8 - 0.1 - BETA * kl, rel=1e-6)
    star_value = optimal_value(REF, R, BETA).item()
    for other in (pi, REF, torch.tensor([1.0, 0.0, 0.0])):
        assert objective(other, REF, R, BETA).item() <= star_value + 1e-6


def test_large_beta_gives_reference_small_beta_gives_argmax():
    assert optimal_policy(REF, R, 1e4).tolist() == pytest.approx(REF.tolist(), abs=1e-3)
    assert optimal_policy(REF, R, 1e-3).tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)
    assert optimal_value(REF, R, 1e-3).item() == pytest.approx(1.0, abs=1e-2)  # -> max r


def test_kl_handles_zero_probabilities():
    assert kl_divergence(torch.tensor([1.0, 0.0, 0.0]), REF).item() == pytest.approx(math.log(2))


def test_non_positive_beta_is_refused():
    for beta in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="beta must be a finite number > 0"):
            optimal_policy(REF, R, beta)


def test_outside_outcome_takes_the_missing_mass():
    assert with_outside(torch.tensor([0.5, 0.3])).tolist() == pytest.approx([0.5, 0.3, 0.2])


def test_evaluator_on_the_base_model(base):
    model, tokenizer = base
    evaluator = ExactEvaluator(model, tokenizer, world.prompts("train"))
    report = evaluator.evaluate(model, beta=0.1)
    assert report["attainment"] == pytest.approx(0.0, abs=1e-6)
    assert report["kl"] == pytest.approx(0.0, abs=1e-6)
    assert report["coverage"] > 0.97  # SFT puts nearly all its mass on the candidate set
    star = evaluator.optimum(0.1)
    star_report = evaluator.evaluate_probs(star[:, :-1], beta=0.1)
    assert star_report["attainment"] == pytest.approx(1.0, abs=1e-4)
    assert star_report["p_correct"] > 0.99


def test_leaked_mass_is_charged_the_malformed_reward(base):
    model, tokenizer = base
    evaluator = ExactEvaluator(model, tokenizer, world.prompts("train"))
    leaky = evaluator.ref_set_probs * 0.5  # half the mass goes outside the set
    report = evaluator.evaluate_probs(leaky, beta=0.5)
    assert report["coverage"] == pytest.approx(evaluator.ref_set_probs.sum(-1).mean().item() / 2)
    assert report["attainment"] < 0  # worse than the reference
    assert report["attainment_set_only"] == pytest.approx(0.0, abs=1e-5)  # same shape on the set


def test_answer_kinds_sum_to_one(base):
    model, tokenizer = base
    kinds = answer_kind_probs(model, tokenizer, world.prompts("held_out"))
    total = sum(kinds.values())
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)


def test_optimum_curve_and_candidate_tracker(base):
    """The exact optimum's KL and true reward across beta, for the true and for a learned reward,
    and the tracker that measures a policy the same way."""
    from minirlhf.evaluation import candidate_tracker, optimum_curve
    from minirlhf.optimum import optimal_policy, with_outside

    model, tokenizer = base
    evaluator = ExactEvaluator(model, tokenizer, world.prompts("train")[:2])
    curve = optimum_curve(evaluator, [100.0, 1.0, 0.1])
    assert curve["KL"][0] < 1e-3 < curve["KL"][1] < curve["KL"][2]
    assert curve["true reward"][0] < curve["true reward"][1] < curve["true reward"][2]
    star = optimal_policy(with_outside(evaluator.ref_set_probs), evaluator.rewards, 1.0)
    exact = evaluator.evaluate_probs(star[:, :-1], 1.0)["true_reward"]
    assert curve["true reward"][1] == pytest.approx(exact, abs=1e-5)
    # a "learned" reward that is the true one: r_phi and the true reward agree at every beta
    learned = optimum_curve(evaluator, [1.0, 0.1], learned=evaluator.rewards[:, :-1])
    assert learned["r_phi"] == pytest.approx(learned["true reward"])
    # the reference measured by the tracker sits at the curve's start: no KL, pi_ref's reward
    record = candidate_tracker(evaluator, evaluator.rewards[:, :-1])(0, model)
    assert record["KL"] == pytest.approx(0.0, abs=1e-5)
    assert record["r_phi"] == pytest.approx(record["true reward"])
    assert record["outside"] == pytest.approx(1 - evaluator.ref_set_probs.sum(-1).mean().item(), abs=1e-5)
    with pytest.raises(ValueError, match="betas > 0"):
        optimum_curve(evaluator, [0.0])
