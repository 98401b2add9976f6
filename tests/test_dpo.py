"""DPO: the pure losses against hand-computed numbers, the metrics, the data checks, the trainer."""

import copy
import math

import pytest
import torch
from datasets import Dataset

from minirlhf import world
from minirlhf.dpo import (
    DPOConfig,
    check_preference_data,
    conservative_dpo_loss,
    dpo_loss,
    dpo_metrics,
    encode_pairs,
    implicit_reward,
    ipo_loss,
    pair_logps,
    reference_logps,
    train_dpo,
)
from minirlhf.logprobs import encode_prompt_response, response_logprobs, sequence_logprobs

# One pair, chosen first: policy log-probs -1 and -2, reference log-probs -1.5 and -1.5.
# The log-ratio margin is h = (-1 - -1.5) - (-2 - -1.5) = 0.5 + 0.5 = 1.
PAIR = [torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5])]


def test_dpo_loss_is_log2_when_policy_equals_reference():
    logps = torch.tensor([-3.0, -0.5, -12.0])
    other = torch.tensor([-1.0, -7.0, -2.0])
    for beta in (0.01, 0.1, 1.0, 10.0):
        loss = dpo_loss(logps, other, logps, other, beta)
        assert torch.allclose(loss, torch.full((3,), math.log(2)))


def test_dpo_loss_hand_computed():
    # beta * h = 0.5 * 1 = 0.5, and -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077
    assert dpo_loss(*PAIR, beta=0.5).item() == pytest.approx(math.log(1 + math.exp(-0.5)))
    assert dpo_loss(*PAIR, beta=0.5).item() == pytest.approx(0.474077, abs=1e-6)
    # swapping chosen and rejected flips the sign of the margin: log(1 + e^0.5) = 0.974077
    swapped = [PAIR[1], PAIR[0], PAIR[3], PAIR[2]]
    assert dpo_loss(*swapped, beta=0.5).item() == pytest.approx(0.974077, abs=1e-6)


def test_ipo_loss_hand_computed():
    # (h - 1 / (2 beta))^2: beta = 0.25 -> (1 - 2)^2 = 1; beta = 0.5 -> (1 - 1)^2 = 0; beta = 1 -> 0.25
    assert ipo_loss(*PAIR, beta=0.25).item() == pytest.approx(1.0)
    assert ipo_loss(*PAIR, beta=0.5).item() == pytest.approx(0.0)
    assert ipo_loss(*PAIR, beta=1.0).item() == pytest.approx(0.25)


def test_conservative_dpo_loss_hand_computed():
    # 0.9 * log(1 + e^-0.5) + 0.1 * log(1 + e^0.5) = 0.9 * 0.474077 + 0.1 * 0.974077 = 0.524077
    assert conservative_dpo_loss(*PAIR, beta=0.5, label_smoothing=0.1).item() == pytest.approx(0.524077, abs=1e-6)
    # eps = 0 is plain DPO
    assert conservative_dpo_loss(*PAIR, beta=0.5, label_smoothing=0.0).item() == pytest.approx(
        dpo_loss(*PAIR, beta=0.5).item())


def test_implicit_reward_hand_computed():
    assert implicit_reward(torch.tensor([-1.0, -4.0]), torch.tensor([-1.5, -2.0]), 0.1).tolist() == pytest.approx(
        [0.05, -0.2])


def test_gradient_raises_chosen_and_lowers_rejected_log_ratio():
    chosen = torch.tensor([-2.0, -1.0], requires_grad=True)
    rejected = torch.tensor([-3.0, -0.5], requires_grad=True)
    ref_chosen, ref_rejected = torch.tensor([-2.5, -1.0]), torch.tensor([-2.0, -0.7])
    for loss_fn in (lambda *a: dpo_loss(*a, beta=0.1), lambda *a: ipo_loss(*a, beta=0.1),
                    lambda *a: conservative_dpo_loss(*a, beta=0.1, label_smoothing=0.2)):
        chosen.grad = rejected.grad = None
        loss_fn(chosen, rejected, ref_chosen, ref_rejected).sum().backward()
        # gradient descent moves against the gradient: chosen up, rejected down
        assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
        assert torch.allclose(chosen.grad, -rejected.grad)  # only the margin matters


def test_dpo_gradient_is_beta_times_sigmoid_of_minus_margin():
    # d/dh [-log sigmoid(beta h)] = -beta * sigmoid(-beta h); at h = 1, beta = 0.5: -0.5 * sigmoid(-0.5)
    chosen = PAIR[0].clone().requires_grad_()
    dpo_loss(chosen, PAIR[1], PAIR[2], PAIR[3], beta=0.5).sum().backward()
    assert chosen.grad.item() == pytest.approx(-0.5 / (1 + math.exp(0.5)))


def test_losses_refuse_bad_beta_and_label_smoothing():
    for bad in (0, -0.1, float("nan"), float("inf")):
        for fn in (dpo_loss, ipo_loss):
            with pytest.raises(ValueError, match="beta"):
                fn(*PAIR, beta=bad)
        with pytest.raises(ValueError, match="beta"):
            implicit_reward(PAIR[0], PAIR[2], bad)
    with pytest.raises(ValueError, match="label_smoothing"):
        conservative_dpo_loss(*PAIR, beta=0.1, label_smoothing=0.5)


def test_metrics_on_a_known_batch():
    # beta = 0.5; implicit rewards: chosen 0.5 * [1, -1] = [0.5, -0.5], rejected 0.5 * [-1, 0] = [-0.5, 0]
    metrics = dpo_metrics(torch.tensor([-1.0, -3.0]), torch.tensor([-4.0, -2.0]),
                          torch.tensor([-2.0, -2.0]), torch.tensor([-3.0, -2.0]), beta=0.5)
    assert metrics["rewards/chosen"] == pytest.approx(0.0)
    assert metrics["rewards/rejected"] == pytest.approx(-0.25)
    assert metrics["rewards/margins"] == pytest.approx(0.25)  # margins [1.0, -0.5]
    assert metrics["rewards/accuracies"] == pytest.approx(0.5)
    assert metrics["logps/chosen"] == pytest.approx(-2.0)
    assert metrics["logps/rejected"] == pytest.approx(-3.0)
