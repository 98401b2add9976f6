# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · PPO with a KL penalty: classic RLHF, piece by piece
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minirlhf/minirlhf/blob/main/notebooks/03_ppo_with_kl.ipynb)
#
# In the article (Anish Dubey, *LLM Alignment: Reward-Based vs Reward-Free Methods*, 2024), PPO
# turns a reference model that says *"The capital of France is Berlin."* into one that says
# Paris. PPO *samples* answers, scores them, and makes the ones that scored above expectation
# more likely. A **KL penalty**, a small cost on every token for moving away from the reference
# `pi_ref` (our SFT model), keeps it close to what it knew: PPO heads for `pi*` of notebook 01.
#
# **Learning objectives.** Name and check the pieces of one PPO step, read the logs of a run,
# and say what beta trades and why chasing a learned reward too far loses true reward.

# %%
# Outside a checkout of minirlhf (on Colab, or a copy of this notebook on its own), install the
# package first; where it is installed already, as in a checkout, this does nothing.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("minirlhf") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "minirlhf @ git+https://github.com/minirlhf/minirlhf"], check=True)

# %%
import copy

import torch

from minirlhf import plots, world
from minirlhf.evaluation import (answer_tracker, candidate_rewards, candidate_tracker,
                                 exact_metrics, optimum_curve)
from minirlhf.logprobs import response_logprobs
from minirlhf.saved_models import load_base_model
from minirlhf.optimum import ExactEvaluator
from minirlhf.pipeline import train_default_reward_model
from minirlhf.ppo import (Critic, PPOConfig, gae, per_token_rewards, ppo_policy_loss,
                          train_ppo)
from minirlhf.reward import RewardConfig, bradley_terry_loss
from minirlhf.rl import rollout, score_rollouts
from minirlhf.training import seed_everything
from myst_nb import glue  # stores a number for the docs pages that quote it

# %%
# Settings: the seed of every sampled run, and the number of CPU threads.
SEED, THREADS = 0, 1
torch.set_num_threads(THREADS)

ref_model, tokenizer = load_base_model()  # the start of the policy AND the frozen reference
train_prompts = world.prompts("train")
evaluator = ExactEvaluator(ref_model, tokenizer, train_prompts)  # exact figures
france = world.make_prompt("France")

# %% [markdown]
# ## 1. The loop
#
# Sample answers, score them, turn score and KL into a reward for every token, estimate how much
# better than expected each token was (the *advantage*), take a few clipped gradient steps.

# %%
fig = plots.plot_ppo_loop()

# %% [markdown]
# Why sample, rather than backpropagate the reward into the policy? Not because the reward is
# not differentiable, as the article says: a reward model is a differentiable network. What
# stops backpropagation is *sampling* discrete tokens: no gradient flows through a random draw.

# %% [markdown]
# ## 2. Rollout
#
# We sample one answer per prompt and record, on one `(B, T)` grid, the log-probs of its tokens
# under the policy and the frozen reference, and the **critic**'s values: its prediction of the
# reward still to come (a separate network,
# [why](https://github.com/minirlhf/minirlhf/blob/main/docs/defaults.md#ppo)).

# %%
policy = copy.deepcopy(ref_model)
critic = Critic.from_model(ref_model)
config = PPOConfig()  # defaults: beta = 0.1, 64 rollouts per step ...
prompts = train_prompts[:6]
batch = rollout(policy, ref_model, critic, tokenizer, prompts, config, seed_everything(SEED))
for prompt, response in zip(prompts, batch["responses"]):
    print(f"{response!r:40s} true reward {world.true_reward(prompt, response):+.1f}")

# %% [markdown]
# ## 3. Reward: a KL penalty on every token, the score at the end
#
# The objective is `E[r(x, y)] - beta * KL(pi || pi_ref)`. The KL of an answer is estimated by
# `sum_t log pi(y_t|..) - log pi_ref(y_t|..)` ("k1"), so each token pays
# `-beta * (log pi - log pi_ref)`, and the score `r(x, y)` comes at the last token (the EOS).
# Here the score is the true reward (**PPO-GT**). We nudge the log-probs to see the penalty.

# %%
mask = batch["response_mask"]
scores = score_rollouts(batch)  # the true reward of each decoded answer
logp = batch["logprobs"] + 0.3 * mask  # pretend the policy grew more confident
beta = 0.1
by_hand = -beta * (logp - batch["ref_logprobs"]) * mask
last = (mask * torch.arange(mask.shape[1])).argmax(-1)  # index of each row's EOS
by_hand[torch.arange(len(prompts)), last] += scores
rewards = per_token_rewards(logp, batch["ref_logprobs"], scores, mask, beta)
torch.testing.assert_close(rewards, by_hand)
row = 0
tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][row][mask[row].bool()])
print(list(zip(tokens, [round(v, 3) for v in rewards[row][mask[row].bool()].tolist()])))

# %% [markdown]
# ## 4. Advantages: critic and GAE
#
# The advantage of a token says how much better the rest of the answer went than the critic
# expected. Generalised advantage estimation (GAE) mixes short and long views with `lambda`:
#
#     delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lambda A_{t+1},   R_t = A_t + V_t
#
# with `gamma = 1` and no value after the EOS. The critic learns to predict the returns `R_t`.
# (The advantages are not rescaled per batch:
# [why](https://github.com/minirlhf/minirlhf/blob/main/docs/defaults.md#ppo).)

# %%
values = torch.rand(mask.shape) * mask  # pretend the critic said something
gamma, lam = config.gamma, config.lam
positions = mask[row].nonzero().flatten().tolist()
advantage, next_value, hand = 0.0, 0.0, {}
for t in reversed(positions):  # walk backwards over one row's response tokens
    delta = rewards[row, t].item() + gamma * next_value - values[row, t].item()
    advantage = delta + gamma * lam * advantage
    hand[t], next_value = advantage, values[row, t].item()
advantages, returns = gae(rewards, values, mask, gamma, lam)
torch.testing.assert_close(advantages[row, positions], torch.tensor([hand[t] for t in positions]))
torch.testing.assert_close(returns, (advantages + values) * mask)

# %% [markdown]
# ## 5. The clipped update
#
# The ratio `pi / pi_old` of a token multiplies its advantage, but once the ratio leaves
# `[1 - eps, 1 + eps]` in the direction the advantage wants, the gain stops growing. That lets
# PPO take several gradient steps on one batch without moving too far.

# %%
fig = plots.plot_clipped_objective(config.clip_range)

# %% [markdown]
# The solid lines are flat right of `1 + eps` for a positive advantage, left of `1 - eps` for
# a negative one. Three tokens, ratios 1, 1.5 and 0.5:

# %% tags=["nbval-check-output"]
old = torch.zeros(1, 3)
new = torch.log(torch.tensor([[1.0, 1.5, 0.5]]))  # ratios 1, 1.5, 0.5
for a in (+1.0, -1.0):
    loss, stats = ppo_policy_loss(new, old, torch.full((1, 3), a), torch.ones(1, 3),
                                  clip_range=0.2)
    print(f"A = {a:+.0f}: loss {loss.item():+.4f}, "
          f"clipped tokens {stats['policy/clipfrac'].item():.2f}")

# %% [markdown]
# ## 6. Run it: PPO-GT at beta = 0.1, and Paris overtakes Berlin
#
# The library's loop with its defaults (beta = 0.1, 64 answers per step), 60 steps. Panels:
# `objective/scores` (mean true reward of the samples) and `objective/kl` (their k1 KL); the
# exact true reward and **attainment** `(J - J_ref) / (J* - J_ref)`, `J = E[r] - beta * KL`
# (0 = SFT model, 1 = `pi*`); `policy/approxkl`, the mean `0.5 * (log pi_new - log pi_old)^2`
# of one step; `val/explained_variance` (1: the critic predicts the returns).

# %%
config = PPOConfig(steps=60, eval_every=10, progress=False, seed=SEED)
policy, history = train_ppo(copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts,
                            config, evaluate=exact_metrics(evaluator, config.beta,
                                                            track=answer_tracker(tokenizer)))
panels = ["objective/scores", "objective/kl", "exact/true_reward", "exact/attainment",
          "policy/approxkl", "val/explained_variance"]
fig = plots.plot_history(history, panels, title="PPO-GT, beta = 0.1")

# %% [markdown]
# Score, KL, true reward and attainment climb; the step size stays small. France's answers (*hedge*: "There are
# several capitals, but X is the official capital."; *wrong*: any city but Paris; *outside*:
# any other text):

# %%
kinds = ["P(Paris)", "P(Berlin)", "P(hedge)", "P(wrong)", "P(outside)"]
fig = plots.plot_probability_curves(history, {k: k for k in kinds},
                              title="France: the policy's exact answer probabilities")

# %% [markdown]
# Watch Paris and Berlin cross early; the other kinds shrink.

# %%
start, end = history[0], history[-1]
print({key: (round(start[key], 3), round(end[key], 3)) for key in
       ["exact/true_reward", "exact/kl", "exact/attainment", "P(Paris)", "P(Berlin)"]})
glue("ppo_gt_true_reward_start", start["exact/true_reward"], display=False)
glue("ppo_gt_kl_end", end["exact/kl"], display=False)
# the lesson: Berlin led, Paris overtook it by far; the true reward rose at a modest KL
assert start["P(Berlin)"] > start["P(Paris)"]
assert end["P(Paris)"] > end["P(Berlin)"] + 0.5
assert end["exact/true_reward"] > start["exact/true_reward"] + 0.5
assert end["exact/attainment"] > 0.5 and end["exact/kl"] < 2.0

# %% [markdown]
# ## 7. The article's four answers
#
# The article scores four answers by `r - beta * log(pi_theta / pi_ref)`: the reward minus the
# KL price of saying the answer more often than the reference. Its "Delhi" (a wrong city in the
# right format) is our "Rome".

# %%
ARTICLE = {"Berlin": world.make_response("France", "wrong", "Berlin"),
           "the hedge": world.make_response("France", "hedge"),
           "Rome": world.make_response("France", "wrong", "Rome"),
           "Paris": world.make_response("France", "correct")}
ref_logp = response_logprobs(ref_model, tokenizer, [france] * 4, list(ARTICLE.values()))
logp = response_logprobs(policy, tokenizer, [france] * 4, list(ARTICLE.values()))
after = {}
print(f"{'answer':10s}    r  pi_ref  pi_theta  log-ratio  objective after PPO")
for i, (name, answer) in enumerate(ARTICLE.items()):
    r, log_ratio = world.true_reward(france, answer), (logp[i] - ref_logp[i]).item()
    after[name] = r - config.beta * log_ratio
    print(f"{name:10s} {r:+4.1f} {ref_logp[i].exp():7.3f} {logp[i].exp():9.3f} "
          f"{log_ratio:+10.2f} {after[name]:+10.2f}")
# the lesson: after PPO, Paris has the highest objective and the highest probability
assert after["Paris"] > max(v for k, v in after.items() if k != "Paris") + 0.3
assert logp[3].exp() > max(logp[:3].exp()) + 0.5

# %% [markdown]
# Before PPO the objective is the reward alone, yet the reference says Berlin, the lowest, most
# often. After PPO, Paris has the highest objective even after paying for being said more
# often, and Berlin's *rose*: saying it less often than the reference earns a KL bonus.

# %% [markdown]
# ## 8. A beta sweep
#
# Three short runs (25 steps of 16 answers) at beta = 0.1, 1 and 10, and the exact `pi*` at
# each beta (dashed).

# %%
betas = [0.1, 1.0, 10.0]
keys = {"true reward": "exact/true_reward", "KL": "exact/kl", "attainment": "exact/attainment"}
measured = {name: [] for name in keys}
for b in betas:
    config = PPOConfig(beta=b, steps=25, rollouts_per_step=16, eval_every=25, progress=False,
                       seed=SEED)
    _, h = train_ppo(copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts, config,
                     evaluate=exact_metrics(evaluator, b))
    for name, key in keys.items():
        measured[name].append(h[-1][key])
fig = plots.plot_beta_sweep(betas, measured, optimum_curve(evaluator, betas))

# %% [markdown]
# Left to right: the larger beta, the lower the KL and the true reward, for PPO as for `pi*`.
# The short runs stop below the optimum's KL, but each gets part of the way there.

# %%
print({name: [round(v, 3) for v in values] for name, values in measured.items()})
for i, b in enumerate(betas):
    glue(f"sweep_true_reward_beta_{b:g}", float(measured["true reward"][i]), display=False)
    glue(f"sweep_kl_beta_{b:g}", float(measured["KL"][i]), display=False)
kl, true_reward = measured["KL"], measured["true reward"]
# the lesson: the larger beta, the closer to the SFT model, for less true reward
assert kl[0] > kl[1] > kl[2] and true_reward[0] > true_reward[1] > true_reward[2]
assert min(measured["attainment"]) > 0.1  # every run moved towards its own optimum

# %% [markdown]
# ## 9. A learned reward model: over-optimisation
#
# Classic RLHF scores answers with a *learned* reward model `r_phi` (notebook 02), here a
# deliberately small one: 16 pairs per prompt, 100 steps.

# %%
reward_model, _, rm_data, rm_history = train_default_reward_model(
    seed=SEED, progress=False, pairs_per_prompt=16,
    config=RewardConfig(steps=100, progress=False, seed=SEED))
paris, berlin = reward_model.score_texts(tokenizer, [france] * 2, [ARTICLE["Paris"],
                                                                  ARTICLE["Berlin"]])
true_loss = bradley_terry_loss(torch.tensor(rm_data["train"]["chosen_reward"]),
                               torch.tensor(rm_data["train"]["rejected_reward"])).item()
print(f"r_phi(Paris) - r_phi(Berlin) = {paris - berlin:.2f} (true: 2); training loss "
      f"{rm_history[-1]['loss']:.3f}, the true reward's on the same pairs {true_loss:.3f}")
# the lesson: France's gap is far from the true 2, and the model fits its labels' noise
assert abs(paris - berlin - 2) > 1 and rm_history[-1]["loss"] < true_loss

# %% [markdown]
# Its Paris-Berlin gap is far from the true 2, although notebook 02's fit recovered the true
# scale. The cause: too few labels, fitted too long. It saw each pair 100 times and fits its
# labels better than the true reward does (a lower loss): it has learned their noise, and with
# a dozen pairs per answer, a score can land far from the truth either way.
#
# The best policy for this `r_phi` at a given beta is `pi*_phi ~ pi_ref exp(r_phi / beta)`,
# exact on the candidate answers. The squares: PPO at beta = 0 against `r_phi`, 40 steps.

# %%
r_phi = candidate_rewards(reward_model, tokenizer, evaluator)
sweep = [10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01]
curve = optimum_curve(evaluator, sweep, learned=r_phi)
config = PPOConfig(beta=0.0, steps=40, rollouts_per_step=16, eval_every=10, progress=False,
                   seed=SEED)
_, free = train_ppo(copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts, config,
                    reward_model=reward_model, evaluate=candidate_tracker(evaluator, r_phi))
points = [h for h in free if "r_phi" in h]
fig = plots.plot_over_optimisation(curve, sweep, ppo=points)

# %% [markdown]
# Left: the further `pi*_phi` moves from `pi_ref` (smaller beta, larger KL), the higher its
# score `r_phi`. Right: its *true* reward rises, then falls below `pi_ref`'s, once the policy
# concentrates on the answers `r_phi` over-rates: **over-optimisation** (Gao, Schulman and
# Hilton, 2022). The PPO squares climb `r_phi`; in 40 steps they are still where the true
# reward rises too.

# %%
ref_true, peak, ref_phi = points[0]["true reward"], max(curve["true reward"]), points[0]["r_phi"]
progress = (points[-1]["r_phi"] - ref_phi) / (curve["r_phi"][-1] - ref_phi)
print(f"pi*_phi: true reward {ref_true:.2f} (pi_ref) -> {peak:.2f} (peak) -> "
      f"{curve['true reward'][-1]:.2f} (beta = {sweep[-1]}), KL up to {curve['KL'][-1]:.1f}")
print(f"PPO at beta = 0: r_phi {ref_phi:.2f} -> {points[-1]['r_phi']:.2f} "
      f"({progress:.0%} of the way to pi*_phi's), true reward {ref_true:.2f} -> "
      f"{points[-1]['true reward']:.2f}, KL {points[-1]['KL']:.2f}")
for name, value in [("true_reward_ref", ref_true), ("true_reward_peak", peak),
                    ("true_reward_last", curve["true reward"][-1]), ("kl_last", curve["KL"][-1]),
                    ("ppo_r_phi_start", ref_phi), ("ppo_r_phi_end", points[-1]["r_phi"]),
                    ("ppo_progress", progress)]:
    glue(f"overopt_{name}", value, display=False)
# the lesson: the harder r_phi is optimised, the higher the score it gives ...
assert all(b > a - 1e-4 for a, b in zip(curve["r_phi"], curve["r_phi"][1:]))
# ... while the true reward, past its peak, falls: below the peak and below pi_ref's
assert curve["true reward"][-1] < peak - 0.3 and curve["true reward"][-1] < ref_true
# PPO without a penalty climbs r_phi, with its true reward still rising
assert progress > 0.1 and points[-1]["true reward"] > ref_true

# %% [markdown]
# Without a penalty, PPO heads for the curve's right end; a KL penalty stops earlier. The cure is to ask the rater again about the policy's
# current answers (iterated RLHF, notebook 05).

# %% [markdown]
# ## What we saw
#
# * PPO: rollout, per-token reward, advantages, clipped update; it samples because no
#   gradient flows through a sampled token.
# * beta trades true reward for closeness to the SFT model; a learned reward optimised too
#   hard leads the policy to what it over-rates.
