"""GRPO, Dr. GRPO and RLOO: pure functions against hand-computed numbers, the config, a short run."""

import copy

import pytest
import torch

from minirlhf import world
from minirlhf.evaluation import exact_metrics
from minirlhf import grpo
from minirlhf.grpo import (GRPOConfig, group_advantages, grpo_loss, grpo_update, rollout_groups,
                           sequence_rewards, token_weights, train_grpo)
from minirlhf.optimum import ExactEvaluator
from minirlhf.rl import kl_estimators
from minirlhf.training import seed_everything

# ------------------------------------------------------------------------------------------------
# Group-relative advantages
# ------------------------------------------------------------------------------------------------

# two groups of G = 4: [1, -1, -1, 1] (mean 0, unbiased std 2/sqrt(3)) and [0, 0, 0, 3] (mean 0.75)
REWARDS = torch.tensor([1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 3.0])


def test_grpo_advantages_standardise_within_each_group():
    out = group_advantages(REWARDS, group_size=4, advantage="grpo", eps=0.0)
    s1 = (4 / 3) ** 0.5  # sqrt(sum (r - mean)^2 / (G - 1)) = sqrt(4 / 3)
    s2 = ((3 * 0.75 ** 2 + 2.25 ** 2) / 3) ** 0.5  # = 1.5
    expected = torch.tensor([1 / s1, -1 / s1, -1 / s1, 1 / s1, -0.75 / s2, -0.75 / s2, -0.75 / s2, 2.25 / s2])
    torch.testing.assert_close(out, expected)
    assert abs(s2 - 1.5) < 1e-12


def test_grpo_std_is_over_the_group_not_the_batch():
    # scaling one group's rewards must not change the other group's advantages, nor its own
    scaled = REWARDS.clone()
    scaled[4:] *= 10
    a, b = group_advantages(REWARDS, 4, "grpo", eps=0.0), group_advantages(scaled, 4, "grpo", eps=0.0)
    torch.testing.assert_close(a, b)
    # the batch-wide standardisation (the usual slip) gives different numbers
    batch_wide = (REWARDS - REWARDS.view(2, 4).mean(-1).repeat_interleave(4)) / REWARDS.std()
    assert not torch.allclose(a, batch_wide)


def test_a_group_whose_answers_all_score_the_same_gets_zero_advantage():
    out = group_advantages(torch.tensor([2.0, 2.0, 2.0, -1.0, 1.0, 0.0]), group_size=3, advantage="grpo")
    assert (out[:3] == 0).all()  # eps keeps 0 / 0 away


def test_dr_grpo_advantages_subtract_the_group_mean_only():
    out = group_advantages(REWARDS, 4, "dr_grpo")
    torch.testing.assert_close(out, torch.tensor([1.0, -1.0, -1.0, 1.0, -0.75, -0.75, -0.75, 2.25]))


def test_rloo_leaves_each_answer_out_of_its_own_baseline():
    out = group_advantages(REWARDS, 4, "rloo")
    # answer 0: 1 - mean(-1, -1, 1) = 1 + 1/3;  answer 7: 3 - mean(0, 0, 0) = 3
    expected = torch.tensor([4 / 3, -4 / 3, -4 / 3, 4 / 3, -1.0, -1.0, -1.0, 3.0])
    torch.testing.assert_close(out, expected)
    # = G / (G - 1) times Dr. GRPO's
    torch.testing.assert_close(out, 4 / 3 * group_advantages(REWARDS, 4, "dr_grpo"))


def test_rloo_baseline_does_not_depend_on_the_answer_itself():
    # raise answer 0's reward: its own advantage moves 1:1, the others' baseline moves by 1/(G-1)
    bumped = REWARDS.clone()
    bumped[0] += 3.0
    diff = group_advantages(bumped, 4, "rloo") - group_advantages(REWARDS, 4, "rloo")
    torch.testing.assert_close(diff, torch.tensor([3.0, -1.0, -1.0, -1.0, 0, 0, 0, 0]))


def test_group_advantages_refuse_wrong_shapes_and_advantages():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(7), 4)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="advantage"):
        group_advantages(torch.zeros(4), 2, "ppo")


# ------------------------------------------------------------------------------------------------
# KL estimators, token weights, the loss
# ------------------------------------------------------------------------------------------------


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([-1.0, -0.5, -2.0]), torch.tensor([-2.0, -0.5, -1.0])
    out = kl_estimators(logp, ref)  # d = ref - logp = [-1, 0, 1]
    torch.testing.assert_close(out["k1"], torch.tensor([1.0, 0.0, -1.0]))
    torch.testing.assert_close(out["k2"], torch.tensor([0.5, 0.0, 0.5]))
    e = torch.e
    torch.testing.assert_close(out["k3"], torch.tensor([1 / e - 1 + 1, 0.0, e - 1 - 1]))
    # k3 stays exact (and >= 0) for tiny log ratios, where exp(d) - 1 would round to 0
    tiny = kl_estimators(torch.tensor([0.0], dtype=torch.float32), torch.tensor([1e-5]))["k3"]
    torch.testing.assert_close(tiny, torch.tensor([0.5e-10]), rtol=1e-3, atol=0)


def test_token_weights_normalise_length_or_not():
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])
    torch.testing.assert_close(token_weights(mask, True),
                               torch.tensor([[0, 0.5, 0.5, 0], [0, 1 / 3, 1 / 3, 1 / 3]]))
    torch.testing.assert_close(token_weights(mask, False), mask.float())


def test_grpo_loss_broadcasts_advantages_over_tokens_and_masks_padding():
    # ratio 1 (old = new): the surrogate is -A on each token
    logp = torch.tensor([[9.0, -1.0, -1.0, 9.0], [9.0, -1.0, -1.0, -1.0]], requires_grad=True)
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])
    adv = torch.tensor([2.0, -1.0])
    # GRPO: mean over each answer's tokens, then over answers: (-2 + 1) / 2
    loss, stats = grpo_loss(logp, logp.detach(), logp.detach(), adv, mask, 0.2, beta=0.0)
    torch.testing.assert_close(loss, torch.tensor(-0.5))
    loss.backward()
    # d loss / d logp_t = -A_i / (|y_i| B): each answer's tokens share its advantage, padding gets nothing
    torch.testing.assert_close(logp.grad, torch.tensor([[0, -0.5, -0.5, 0], [0, 1 / 6, 1 / 6, 1 / 6]]))
    # Dr. GRPO: summed over tokens, divided by B * max_tokens = 2 * 4: (-2 * 2 + 1 * 3) / 8
    loss, _ = grpo_loss(logp, logp.detach(), logp.detach(), adv, mask, 0.2, length_normalise=False,
                        max_tokens=4)
    torch.testing.assert_close(loss, torch.tensor(-1 / 8))
    # without max_tokens: the mean over the batch's 5 tokens
    loss, _ = grpo_loss(logp, logp.detach(), logp.detach(), adv, mask, 0.2, length_normalise=False)
    torch.testing.assert_close(loss, torch.tensor(-1 / 5))
    assert stats["policy/clipfrac"] == 0 and stats["kl"] == 0


def test_grpo_loss_adds_beta_times_k3_and_its_gradient():
    logp = torch.tensor([[0.0, -1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[0.0, -2.0, -1.0]])
    mask = torch.tensor([[0, 1, 1]])
    loss, stats = grpo_loss(logp, logp.detach(), ref, torch.zeros(1), mask, 0.2, beta=0.5)
    k3 = torch.tensor([torch.e ** -1 - 1 + 1, torch.e - 1 - 1])  # d = -1, +1
    torch.testing.assert_close(loss, 0.5 * k3.mean())
    torch.testing.assert_close(stats["kl"], k3.mean())
    loss.backward()
    # d k3 / d logp = 1 - exp(d) = 1 - pi_ref / pi
    expected = 0.5 * 0.5 * (1 - torch.exp(torch.tensor([-1.0, 1.0])))
    torch.testing.assert_close(logp.grad[0, 1:], expected)


def test_grpo_loss_clips_like_ppo():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.0, 1.5]]))
    loss, stats = grpo_loss(new, old, old, torch.tensor([2.0]), torch.tensor([[0, 1]]), 0.2)
    torch.testing.assert_close(loss, torch.tensor(-2.4))
    assert stats["policy/clipfrac"] == 1


def test_sequence_rewards_put_k1_in_the_reward_or_not():
    batch = {"logprobs": torch.tensor([[0.0, -1.0, -0.5], [0.0, -2.0, 0.0]]),
             "ref_logprobs": torch.tensor([[0.0, -2.0, -1.5], [0.0, -1.0, 0.0]]),
             "response_mask": torch.tensor([[0, 1, 1], [0, 1, 0]])}
    scores = torch.tensor([1.0, -1.0])
    in_reward = sequence_rewards(batch, scores, GRPOConfig(kl="reward"), beta=0.1)
    torch.testing.assert_close(in_reward, torch.tensor([1.0 - 0.1 * 2.0, -1.0 - 0.1 * -1.0]))
    torch.testing.assert_close(sequence_rewards(batch, scores, GRPOConfig(kl="loss"), 0.1), scores)


# ------------------------------------------------------------------------------------------------
# Config, rollout, a short run
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, match", [
    ("kl", "both", "kl must be"), ("advantage", "ppo", "advantage"), ("group_size", 1, "group_size"),
    ("beta", -0.1, "beta"), ("minibatches", 3, "multiple of minibatches"), ("steps", 0, "steps"),
])
def test_config_refuses_wrong_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        GRPOConfig(**{field: value})


def test_update_minibatches_hold_whole_groups(monkeypatch):
    # 3 prompts x G = 4 answers, 3 minibatches: each must be one whole group, in a shuffled order
    config = GRPOConfig(prompts_per_step=3, group_size=4, minibatches=3, epochs=2)
    ids = torch.arange(12)[:, None].repeat(1, 3)  # row i is made of the token i: we can see it
    weight = torch.nn.Parameter(torch.zeros(()))
    seen = []

    def fake_logprobs(policy, input_ids, attention_mask, temperature):
        seen.append(sorted(input_ids[:, 0].tolist()))
        return weight + torch.zeros(input_ids.shape)

    monkeypatch.setattr(grpo, "token_logprobs", fake_logprobs)
    batch = {"input_ids": ids, "attention_mask": torch.ones(12, 3), "logprobs": torch.zeros(12, 3),
             "ref_logprobs": torch.zeros(12, 3), "response_mask": torch.ones(12, 3)}
    stats = grpo_update(None, torch.optim.SGD([weight], lr=0.0), batch, torch.randn(12), config,
                        seed_everything(0))
    groups = [list(range(g * 4, g * 4 + 4)) for g in range(3)]
    assert len(seen) == 6 and all(rows in groups for rows in seen)
    assert sorted(map(tuple, seen[:3])) == sorted(map(tuple, groups))  # each epoch sees every group once
    assert "policy/clipfrac" in stats and "kl" in stats


def test_config_defaults():
    assert GRPOConfig().normalises_length() and not GRPOConfig(advantage="rloo").normalises_length()
    assert GRPOConfig(advantage="dr_grpo", length_normalise=True).normalises_length()
    assert GRPOConfig(beta=0.5).policy_learning_rate() == pytest.approx(2e-4)
    assert GRPOConfig(beta=0.0).policy_learning_rate() == 3e-4
    assert GRPOConfig().prompts_per_step * GRPOConfig().group_size == 64


def test_rollout_groups_repeats_each_prompt_g_times(base):
    model, tokenizer = base
    prompts = world.prompts("train")[:2]
    config = GRPOConfig(group_size=3)
    batch = rollout_groups(model, model, tokenizer, prompts, config, seed_everything(0))
    assert batch["prompts"] == [prompts[0]] * 3 + [prompts[1]] * 3
    assert batch["logprobs"].shape == batch["input_ids"].shape == batch["ref_logprobs"].shape
    torch.testing.assert_close(batch["logprobs"], batch["ref_logprobs"])  # the same model


@pytest.mark.parametrize("kl, advantage", [("reward", "grpo"), ("loss", "rloo")])
def test_a_short_run_improves_the_policy(base, kl, advantage):
    ref, tokenizer = base
    evaluator = ExactEvaluator(ref, tokenizer, world.prompts("train"))
    config = GRPOConfig(steps=15, kl=kl, advantage=advantage, eval_every=15, progress=False)
    _, history = train_grpo(copy.deepcopy(ref), ref, tokenizer, world.prompts("train"), config,
                            evaluate=exact_metrics(evaluator, 0.1))
    assert history[0]["exact/attainment"] == pytest.approx(0.0, abs=1e-5)
    assert history[-1]["exact/attainment"] > 0.15
    assert history[-1]["rater_labels"] == 0 and len(history) == 16
    for key in ("objective/kl", "reward_std", "frac_reward_zero_std", "policy/clipfrac", "kl"):
        assert key in history[-1]


def test_train_grpo_refuses_a_rater_without_reward_model(base):
    ref, tokenizer = base
    with pytest.raises(ValueError, match="rater"):
        train_grpo(copy.deepcopy(ref), ref, tokenizer, world.prompts("train"), GRPOConfig(steps=1),
                   rater=world.SimulatedRater())
