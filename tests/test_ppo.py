"""PPO with a KL penalty: pure functions against hand-computed numbers, the rollout, a short run."""

import copy

import pytest
import torch

from minirlhf import world
from minirlhf.logprobs import encode_prompt_response, token_logprobs
from minirlhf.ppo import (
    AdaptiveKLController,
    Critic,
    PPOConfig,
    gae,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    train_ppo,
    whiten,
)
from minirlhf.rl import rollout, score_rollouts
from minirlhf.evaluation import exact_metrics
from minirlhf.training import seed_everything

# ------------------------------------------------------------------------------------------------
# GAE
# ------------------------------------------------------------------------------------------------


def test_gae_matches_a_hand_computed_trajectory():
    # columns: 2 prompt tokens, 3 response tokens (the last is the EOS), 1 pad
    mask = torch.tensor([[0, 0, 1, 1, 1, 0]])
    rewards = torch.tensor([[0.0, 0.0, 0.1, -0.2, 1.0, 0.0]])
    # values on prompt and padding are junk on purpose: they must not leak in
    values = torch.tensor([[3.0, 3.0, 0.5, 0.4, 0.8, 9.0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # by hand: delta_4 = 1.0 - 0.8 = 0.2                    A_4 = 0.2
    #          delta_3 = -0.2 + 0.9 * 0.8 - 0.4 = 0.12      A_3 = 0.12 + 0.72 * 0.2 = 0.264
    #          delta_2 = 0.1 + 0.9 * 0.4 - 0.5 = -0.04      A_2 = -0.04 + 0.72 * 0.264 = 0.15008
    expected = torch.tensor([[0.0, 0.0, 0.15008, 0.264, 0.2, 0.0]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + torch.tensor([[0.0, 0.0, 0.5, 0.4, 0.8, 0.0]]))


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value():
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    rewards = torch.tensor([[0.1, 0.2, 0.3, 0.4], [-1.0, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.1, -0.2, 0.3], [0.7, 0.2, 5.0, 5.0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    to_go = torch.tensor([[1.0, 0.9, 0.7, 0.4], [1.0, 2.0, 0.0, 0.0]])
    torch.testing.assert_close(returns, to_go)
    torch.testing.assert_close(advantages, (to_go - values) * mask)


# ------------------------------------------------------------------------------------------------
# Whitening
# ------------------------------------------------------------------------------------------------


def test_whiten_uses_real_tokens_only():
    values = torch.tensor([[100.0, 1.0, 2.0, 3.0], [-50.0, 4.0, 5.0, 7.0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]])
    real = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])  # the five masked-in values: mean 3, var 2
    out = whiten(values, mask)
    expected = (real - 3.0) / (2.0 + 1e-8) ** 0.5
    torch.testing.assert_close(out[mask.bool()], expected)
    assert (out[~mask.bool()] == 0).all()
    # what sits under the mask cannot change the result
    other = values.clone()
    other[~mask.bool()] = torch.tensor([7.0, 1e6, -3.0])
    torch.testing.assert_close(whiten(other, mask), out)
    # shift_mean=False keeps the mean, changes only the scale
    kept = whiten(values, mask, shift_mean=False)
    torch.testing.assert_close(kept[mask.bool()], expected + 3.0)


def test_whiten_refuses_a_batch_without_tokens():
    with pytest.raises(ValueError, match="at least 2 real tokens"):
        whiten(torch.ones(2, 3), torch.zeros(2, 3))


# ------------------------------------------------------------------------------------------------
# Per-token rewards
# ------------------------------------------------------------------------------------------------


def test_per_token_rewards_kl_on_every_token_and_score_at_the_last():
    logprobs = torch.tensor([[0.0, -1.0, -0.5, -0.2, -0.1, 0.0],    # padded: EOS at column 4
                             [0.0, -1.0, -0.5, -0.2, -0.1, -0.3]])  # unpadded: last token at 5
    ref_logprobs = torch.tensor([[0.0, -2.0, -1.0, -0.4, -0.1, -9.0],
                                 [0.0, -2.0, -1.0, -0.4, -0.1, -0.6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]])
    scores = torch.tensor([1.0, -2.0])
    rewards = per_token_rewards(logprobs, ref_logprobs, scores, mask, beta=0.1)
    # -0.1 * (logp - logp_ref) on response tokens; the prompt and the pad get nothing
    expected = torch.tensor([[0.0, 0.0, -0.05, -0.02, 0.0 + 1.0, 0.0],
                             [0.0, 0.0, -0.05, -0.02, 0.0, -0.03 - 2.0]])
    torch.testing.assert_close(rewards, expected)
    # summed over tokens: score - beta * sequence KL (k1)
    kl = ((logprobs - ref_logprobs) * mask).sum(-1)
    torch.testing.assert_close(rewards.sum(-1), scores - 0.1 * kl)


def test_per_token_rewards_with_beta_zero_is_the_score_alone():
    logprobs, ref = torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]])
    rewards = per_token_rewards(logprobs, ref, torch.tensor([1.0, 2.0, 3.0]), mask, beta=0.0)
    assert rewards[0, 1] == 1.0 and rewards[1, 4] == 2.0 and rewards[2, 1] == 3.0
    assert rewards.abs().sum() == 6.0


def test_per_token_rewards_refuses_negative_beta_and_empty_responses():
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="beta"):
        per_token_rewards(x, x, torch.zeros(1), torch.ones(1, 3), beta=-0.1)
    with pytest.raises(ValueError, match="no response token"):
        per_token_rewards(x, x, torch.zeros(1), torch.zeros(1, 3), beta=0.1)


# ------------------------------------------------------------------------------------------------
# Clipped losses
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio, advantage, loss, clipped", [
    (1.0, 2.0, -2.0, 0.0),     # at ratio 1: loss = -A
    (1.2, 2.0, -2.4, 0.0),     # exactly at the edge: not clipped
    (1.5, 2.0, -2.4, 1.0),     # above the range, A > 0: the gain is capped at (1 + eps) A
    (1.5, -2.0, 3.0, 0.0),     # above the range, A < 0: the loss keeps growing (pessimistic)
    (0.5, 2.0, -1.0, 0.0),     # below the range, A > 0: unclipped (pessimistic)
    (0.5, -2.0, 1.6, 1.0),     # below the range, A < 0: capped at (1 - eps) |A|
])
def test_policy_loss_at_below_and_above_the_clip_range(ratio, advantage, loss, clipped):
    old = torch.tensor([[-1.0, -1.0]])
    new = (old + torch.log(torch.tensor(ratio))).requires_grad_(True)
    mask = torch.tensor([[1.0, 0.0]])  # the second token is padding: its huge advantage is ignored
    advantages = torch.tensor([[advantage, 1e6]])
    value, stats = ppo_policy_loss(new, old, advantages, mask, clip_range=0.2)
    torch.testing.assert_close(value, torch.tensor(loss))
    assert stats["policy/clipfrac"].item() == clipped
    value.backward()
    # a clipped token gives no gradient; an unclipped one gives -A * ratio
    expected_grad = 0.0 if clipped else -advantage * ratio
    torch.testing.assert_close(new.grad[0, 0], torch.tensor(expected_grad))
    assert new.grad[0, 1] == 0


def test_policy_loss_approxkl_is_half_mean_squared_log_ratio():
    old = torch.zeros(1, 3)
    new = torch.tensor([[0.1, -0.2, 0.3]])
    _, stats = ppo_policy_loss(new, old, torch.ones(1, 3), torch.tensor([[1, 1, 0]]), 0.2)
    torch.testing.assert_close(stats["policy/approxkl"], torch.tensor(0.5 * (0.01 + 0.04) / 2))


@pytest.mark.parametrize("value, loss, clipped", [
    (0.1, 0.5 * 0.81, 0.0),    # inside the range: plain squared error
    (0.5, 0.5 * 0.64, 1.0),    # moved too far towards the target: the clipped error (0.2 - 1)^2 counts
    (1.0, 0.5 * 0.64, 1.0),    # perfect but 1.0 from the old value: still the clipped error
    (-0.5, 0.5 * 2.25, 0.0),   # moved away from the target: the larger unclipped error counts
])
def test_value_loss_at_below_and_above_the_clip_range(value, loss, clipped):
    old, returns = torch.zeros(1, 2), torch.tensor([[1.0, 50.0]])
    values = torch.tensor([[value, 3.0]])
    mask = torch.tensor([[1, 0]])
    out, stats = ppo_value_loss(values, old, returns, mask, clip_range_value=0.2)
    torch.testing.assert_close(out, torch.tensor(loss))
    assert stats["val/clipfrac"].item() == clipped


# ------------------------------------------------------------------------------------------------
# Adaptive KL controller
# ------------------------------------------------------------------------------------------------


def test_adaptive_kl_controller_update():
    controller = AdaptiveKLController(init_beta=0.1, target_kl=6.0, horizon=10_000)
    # KL 10% above target: beta *= 1 + 0.1 * 256 / 10000
    assert controller.update(6.6, 256) == pytest.approx(0.1 * (1 + 0.1 * 0.0256))
    # far above target: the error is clipped at +0.2
    before = controller.value
    assert controller.update(60.0, 256) == pytest.approx(before * (1 + 0.2 * 0.0256))
    # far below: clipped at -0.2; on target: unchanged
    before = controller.value
    assert controller.update(0.0, 256) == pytest.approx(before * (1 - 0.2 * 0.0256))
    before = controller.value
    assert controller.update(6.0, 256) == pytest.approx(before)
    with pytest.raises(ValueError, match="target_kl"):
        AdaptiveKLController(0.1, 0.0, 10)


# ------------------------------------------------------------------------------------------------
# Rollout
# ------------------------------------------------------------------------------------------------


def test_rollout_log_probs_equal_teacher_forced_log_probs(base):
    model, tokenizer = base
    critic = Critic.from_model(model)
    prompts = world.prompts("all")
    config = PPOConfig(temperature=1.3, max_new_tokens=9)  # short cap: hedges end without EOS
    batch = rollout(model, model, critic, tokenizer, prompts, config, seed_everything(0))
    mask = batch["response_mask"]
    assert batch["logprobs"].shape == batch["ref_logprobs"].shape == batch["values"].shape == mask.shape
    assert (~batch["finished"]).any() and batch["finished"].any()
    torch.testing.assert_close(batch["logprobs"] * mask, batch["ref_logprobs"] * mask)
    # each row alone, without any padding, teacher-forced at the same temperature
    for i, (prompt, response) in enumerate(zip(prompts, batch["responses"])):
        alone = encode_prompt_response(tokenizer, [prompt], [response],
                                       add_eos=bool(batch["finished"][i]))
        expected = token_logprobs(model, alone["input_ids"], alone["attention_mask"], 1.3)
        expected = expected[alone["response_mask"].bool()]
        got = batch["logprobs"][i][mask[i].bool()]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # a fresh critic says 0 everywhere (zero-initialised head)
    assert (batch["values"] == 0).all()


def test_scores_from_the_truth_and_from_a_reward_model(base):
    model, tokenizer = base
    from minirlhf.reward import RewardModel

    prompts = world.prompts("train")[:4]
    batch = rollout(model, model, Critic.from_model(model), tokenizer, prompts,
                    PPOConfig(max_new_tokens=16), seed_everything(1))
    truth = score_rollouts(batch)
    assert truth.tolist() == [world.true_reward(p, y) for p, y in zip(prompts, batch["responses"])]
    reward_model = RewardModel.from_base(model).eval()
    with torch.no_grad():
        reward_model.head.bias.fill_(0.25)
    learned = score_rollouts(batch, reward_model)
    torch.testing.assert_close(learned, torch.full((4,), 0.25))
    batch["finished"][0] = False
    penalised = score_rollouts(batch, reward_model, missing_eos_penalty=1.0)
    torch.testing.assert_close(penalised, torch.tensor([-0.75, 0.25, 0.25, 0.25]))


def test_a_cut_answer_is_scored_closed_with_eos_as_the_rater_sees_it(base):
    model, tokenizer = base
    from minirlhf.reward import RewardModel

    torch.manual_seed(0)
    reward_model = RewardModel.from_base(model).eval()
    with torch.no_grad():
        reward_model.head.weight.normal_()  # a head that reads the last token's features
    prompts = world.prompts("train")[:8]
    batch = rollout(model, model, Critic.from_model(model), tokenizer, prompts,
                    PPOConfig(max_new_tokens=3), seed_everything(0))
    assert not batch["finished"].any()  # 3 tokens: every answer is cut
    scores = score_rollouts(batch, reward_model)
    texts = reward_model.score_texts(tokenizer, prompts, batch["responses"])  # text + EOS
    torch.testing.assert_close(scores, texts, rtol=1e-4, atol=1e-4)
    unclosed = reward_model(batch["input_ids"], batch["attention_mask"])
    assert (unclosed - texts).abs().max() > 1e-2  # without the EOS the score is another number


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def test_a_short_ppo_gt_run_raises_the_true_reward(base):
    model, tokenizer = base
    from minirlhf.optimum import ExactEvaluator

    prompts = world.prompts("train")[:6]
    evaluator = ExactEvaluator(model, tokenizer, prompts)
    config = PPOConfig(steps=12, rollouts_per_step=16, learning_rate=5e-4, eval_every=12,
                       progress=False, seed=0)
    reference = copy.deepcopy(model.state_dict())
    policy, history = train_ppo(copy.deepcopy(model), model, tokenizer, prompts, config,
                                evaluate=exact_metrics(evaluator, config.beta))
    first, last = history[0], history[-1]
    assert first["step"] == 0 and last["step"] == 12 and len(history) == 13
    assert last["exact/true_reward"] > first["exact/true_reward"] + 0.1
    assert last["exact/attainment"] > 0.2
    for key in ("objective/scores", "objective/kl", "objective/non_score_reward", "objective/rlhf_reward",
                "objective/entropy", "policy/approxkl", "policy/clipfrac", "loss/policy", "loss/value",
                "val/explained_variance", "beta", "objective/true_reward"):
        assert key in history[1], key
    # the reference was not trained, the policy was
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in reference.items())
    assert not all(torch.equal(v, policy.state_dict()[k]) for k, v in reference.items())


def test_adaptive_beta_moves_and_is_logged(base):
    model, tokenizer = base
    config = PPOConfig(steps=3, rollouts_per_step=8, adaptive_kl=True, target_kl=100.0, horizon=100,
                       eval_every=0, progress=False)
    _, history = train_ppo(copy.deepcopy(model), model, tokenizer, world.prompts("train")[:3], config)
    betas = [h["beta"] for h in history]
    assert betas[0] == 0.1 and betas[1] < betas[0] and betas[2] < betas[1]  # KL far below target


def test_learned_reward_model_run(base):
    model, tokenizer = base
    from minirlhf.reward import RewardModel

    reward_model = RewardModel.from_base(model)
    config = PPOConfig(steps=2, rollouts_per_step=8, eval_every=0, progress=False)
    _, history = train_ppo(copy.deepcopy(model), model, tokenizer, world.prompts("train")[:3], config,
                           reward_model=reward_model)
    assert history[-1]["objective/scores"] == 0.0  # zero-initialised head: every score is 0


def test_refresh_teaches_a_copy_of_the_reward_model_from_the_policys_answers(base):
    model, tokenizer = base
    from minirlhf.reward import RewardModel

    reward_model = RewardModel.from_base(model, attention_only=True)
    before = {k: v.clone() for k, v in reward_model.state_dict().items()}
    config = PPOConfig(steps=3, rollouts_per_step=8, eval_every=0, reward_refresh_every=1,
                       refresh_pairs_per_prompt=4, progress=False)
    _, history = train_ppo(copy.deepcopy(model), model, tokenizer, world.prompts("train")[:3], config,
                           reward_model=reward_model, rater=world.SimulatedRater(seed=0))
    for record in history[:-1]:  # a refresh after every step, with pairs the rater judged ...
        assert record["reward_model/refresh_pairs"] > 0
    assert "reward_model/refresh_pairs" not in history[-1]  # ... but the last: no step would use it
    # before the first refresh the zero head scores every answer 0: each pair a tie (half right);
    # after it, PPO scores with the refreshed copy, and the caller's reward model is untouched
    assert history[0]["reward_model/refresh_accuracy"] == 0.5
    assert history[0]["objective/scores"] == 0.0 and history[1]["objective/scores"] != 0.0
    assert all(torch.equal(before[k], v) for k, v in reward_model.state_dict().items())


def test_embedding_lr_scale_zero_freezes_the_token_embeddings_only(base):
    model, tokenizer = base
    config = PPOConfig(steps=2, rollouts_per_step=8, eval_every=0, embedding_lr_scale=0.0, progress=False)
    policy, _ = train_ppo(copy.deepcopy(model), model, tokenizer, world.prompts("train")[:3], config)
    # GPT-2's output layer is the same matrix, so it stays put too; the transformer blocks move
    assert torch.equal(policy.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert torch.equal(policy.get_output_embeddings().weight, model.get_output_embeddings().weight)
    assert not torch.equal(policy.transformer.h[1].mlp.c_fc.weight, model.transformer.h[1].mlp.c_fc.weight)
    with pytest.raises(ValueError, match="embedding_lr_scale must be"):
        PPOConfig(embedding_lr_scale=-1.0)


def test_frozen_blocks_keep_the_first_block_and_are_given_back(base):
    model, tokenizer = base
    config = PPOConfig(steps=2, rollouts_per_step=8, eval_every=0, frozen_blocks=1, progress=False)
    policy, _ = train_ppo(copy.deepcopy(model), model, tokenizer, world.prompts("train")[:3], config)
    frozen, trained = policy.transformer.h[0], policy.transformer.h[1]
    for name, weight in frozen.state_dict().items():
        assert torch.equal(weight, model.transformer.h[0].state_dict()[name]), name
    assert not torch.equal(trained.mlp.c_fc.weight, model.transformer.h[1].mlp.c_fc.weight)
    assert all(p.requires_grad for p in policy.parameters())  # the policy leaves trainable, as it came
    config.frozen_blocks = 0  # 0 trains every block, the first one too
    policy, _ = train_ppo(copy.deepcopy(model), model, tokenizer, world.prompts("train")[:3], config)
    assert not torch.equal(policy.transformer.h[0].mlp.c_fc.weight, model.transformer.h[0].mlp.c_fc.weight)
    with pytest.raises(ValueError, match="frozen_blocks must be an integer"):
        PPOConfig(frozen_blocks=-1)
    with pytest.raises(ValueError, match="between 0 and the model's 2 blocks"):
        train_ppo(copy.deepcopy(model), model, tokenizer, world.prompts("train")[:3],
                  PPOConfig(steps=1, rollouts_per_step=8, eval_every=0, frozen_blocks=3, progress=False))


def test_default_learning_rate_shrinks_as_beta_grows():
    # min(3e-4, 1e-4 / beta): the full rate up to beta = 1/3, then inversely proportional to beta
    assert PPOConfig(beta=0.0).policy_learning_rate() == pytest.approx(3e-4)
    assert PPOConfig(beta=0.1).policy_learning_rate() == pytest.approx(3e-4)
    assert PPOConfig(beta=0.5).policy_learning_rate() == pytest.approx(2e-4)
    assert PPOConfig(beta=1.0).policy_learning_rate() == pytest.approx(1e-4)
    assert PPOConfig(beta=1.0, learning_rate=2e-4).policy_learning_rate() == pytest.approx(2e-4)
    with pytest.raises(ValueError, match="learning_rate must be"):
        PPOConfig(learning_rate=0.0)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def test_bad_input_is_refused(base):
    model, tokenizer = base
    from minirlhf.reward import RewardModel
    from minirlhf.tokenizer import build_tokenizer

    with pytest.raises(ValueError, match="beta must be"):
        PPOConfig(beta=-0.1)
    with pytest.raises(ValueError, match="multiple of"):
        PPOConfig(rollouts_per_step=30, minibatches=4)
    with pytest.raises(ValueError, match="No prompts"):
        train_ppo(model, model, tokenizer, [], PPOConfig(progress=False))
    with pytest.raises(ValueError, match="PPO-GT"):  # a rater with nothing to refresh
        train_ppo(model, model, tokenizer, world.prompts("train"), PPOConfig(progress=False),
                  rater=world.SimulatedRater())
    with pytest.raises(ValueError, match="reward_refresh_every must be"):
        PPOConfig(reward_refresh_every=-1)
    # a reward model that reads the ids with another vocabulary
    reward_model = RewardModel.from_base(model)
    reward_model.tokenizer = build_tokenizer(words=list(reversed(world.all_words())))
    with pytest.raises(ValueError, match="tokenizer differs"):
        train_ppo(model, model, tokenizer, world.prompts("train"), PPOConfig(progress=False),
                  reward_model=reward_model)
    # ... or with a vocabulary of another size
    reward_model = RewardModel.from_base(model)
    reward_model.backbone.resize_token_embeddings(len(tokenizer) + 5)
    with pytest.raises(ValueError, match="do not belong together"):
        train_ppo(model, model, tokenizer, world.prompts("train"), PPOConfig(progress=False),
                  reward_model=reward_model)


def test_critic_from_a_reward_model_starts_at_its_scores(base):
    model, tokenizer = base
    from minirlhf.reward import RewardModel

    reward_model = RewardModel.from_base(model, attention_only=True)
    with torch.no_grad():
        reward_model.head.weight.normal_()
        reward_model.head.bias.fill_(0.3)
        reward_model.score_mean.fill_(0.5)
        reward_model.score_std.fill_(2.0)
    critic = Critic.from_reward_model(reward_model)
    assert all(p.requires_grad for p in critic.parameters())  # the critic trains all of its trunk
    batch = encode_prompt_response(tokenizer, [world.make_prompt("France")],
                                   [world.make_response("France", "correct")])
    values = critic(batch["input_ids"], batch["attention_mask"])
    # V at column k reads the state after tokens < k: the reward model's score of that prefix
    for k in (5, 12, batch["input_ids"].shape[1] - 1):
        prefix = reward_model(batch["input_ids"][:, :k], batch["attention_mask"][:, :k])
        torch.testing.assert_close(values[:, k], prefix, atol=1e-5, rtol=1e-5)


def test_fused_gelu_is_the_same_function_and_is_undone(base):
    model, tokenizer = base
    from minirlhf.training import fused_gelu

    batch = encode_prompt_response(tokenizer, world.prompts("train")[:3],
                                   ["The capital of France is Paris."] * 3)
    before = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    original = [type(m).__name__ for m in model.modules()]
    with fused_gelu(model, None):
        assert "NewGELUActivation" not in [type(m).__name__ for m in model.modules()]
        during = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(during, before, atol=1e-5, rtol=1e-5)
    assert [type(m).__name__ for m in model.modules()] == original
