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
# # 06 · Beyond PPO: GRPO, RLOO, best-of-n, and which KL estimator optimises what
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minirlhf/minirlhf/blob/main/notebooks/06_beyond_ppo.ipynb)
#
# **The lesson.** PPO needs a critic to tell how good an answer was *on average*. GRPO and RLOO drop the
# critic: they sample a **group** of answers to the same prompt and let the group be the baseline. Where the
# KL penalty goes matters: subtracted from the reward (as PPO does), training follows the gradient of
# `KL(pi || pi_ref)`; added to the loss the way TRL's GRPO does, it follows the gradient of the *other* KL,
# `KL(pi_ref || pi)`, and aims at a different optimum. And the simplest method of all, **best-of-n** (sample n
# answers, keep the best), needs no training: we compute its answer distribution and its KL exactly.

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

from minirlhf import cached_runs, world
from minirlhf.compare import frontier_curve, optimal_reward_at_kl
from minirlhf.evaluation import answer_tracker, exact_metrics
from minirlhf.grpo import GRPOConfig, group_advantages, rollout_groups, train_grpo
from minirlhf.saved_models import load_base_model
from minirlhf.optimum import (ExactEvaluator, best_of_n_kl_formula, best_of_n_probs, kl_divergence,
                              kl_estimator_gradients, kl_estimator_moments, optimal_policy,
                              reverse_kl_optimum, with_outside)
from minirlhf.plots import plot_frontier, plot_runs
from minirlhf.rl import score_rollouts
from minirlhf.training import seed_everything
from myst_nb import glue  # stores a number for the docs pages that quote it

torch.set_num_threads(1)
ref_model, tokenizer = load_base_model()   # the SFT model: start of every policy and the frozen reference
train_prompts, held_out_prompts = world.prompts("train"), world.prompts("held_out")
evaluator = ExactEvaluator(ref_model, tokenizer, train_prompts)
france = world.make_prompt("France")
BETA = 0.1

# %% [markdown]
# ## 1. Group-relative advantages, by hand
#
# We sample a group of G = 8 answers to the France prompt from the SFT model and score them with the true
# reward (+1 correct, 0 correct hedge, -1 wrong city, -1.5 wrong hedge, -2 anything else). Each answer's
# advantage is its
# reward compared with *its own group*:
#
# * **GRPO**: `A = (R - mean) / std`, mean and std over the group;
# * **Dr. GRPO**: `A = R - mean` (no std: a group where every answer scores nearly the same is not blown up);
# * **RLOO**: `A = R - mean of the other G - 1 answers` (an answer must not be in its own baseline, or its
#   advantage would shrink by (G-1)/G and correlate with itself).
#
# The advantage is one number per answer; every token of the answer gets the same one.

# %%
G = 8
config = GRPOConfig(group_size=G)
batch = rollout_groups(ref_model, ref_model, tokenizer, [france], config, seed_everything(0))
scores = score_rollouts(batch)
for answer, r in zip(batch["responses"], scores.tolist()):
    print(f"{r:+.1f}  {answer}")

mean, std = scores.mean(), scores.std()                 # over the group (unbiased std, as TRL)
by_hand = {"grpo": (scores - mean) / (std + 1e-4),
           "dr_grpo": scores - mean,
           "rloo": scores - (scores.sum() - scores) / (G - 1)}
for kind, expected in by_hand.items():
    torch.testing.assert_close(group_advantages(scores, G, kind), expected)
    assert abs(expected.sum()) < 1e-5          # every kind of advantage sums to 0 over the group
torch.testing.assert_close(by_hand["rloo"], G / (G - 1) * by_hand["dr_grpo"])
print({kind: [round(a, 2) for a in adv.tolist()] for kind, adv in by_hand.items()})
best = int(scores.argmax())   # the first answer with the best reward (here: Paris)
for kind, adv in by_hand.items():
    glue(f"advantage_{kind}_best", float(adv[best]), display=False)

# %% [markdown]
# ## 2. The KL estimators, exactly
#
# RL on text never sees the whole distribution: the KL to the reference is estimated from the sampled
# answers. John Schulman's note *Approximating KL Divergence* (2020) names three estimators of
# `KL(pi || pi_ref)` from one answer `y ~ pi`, with `d = log pi_ref(y) - log pi(y)`:
#
# | estimator | formula | value | used by |
# |---|---|---|---|
# | k1 | `-d` | unbiased, noisy, can be negative | PPO (in the reward) |
# | k2 | `d^2 / 2` | biased | |
# | k3 | `exp(d) - 1 - d` | unbiased, never negative | GRPO in TRL (in the loss) |
#
# On France's candidate set we know `pi` and `pi_ref` exactly, so we can compute the mean and the spread of
# each estimator *without sampling*, as a policy moves from `pi_ref` to `pi*` (beta = 0.1):
# `pi_t ~ pi_ref^(1-t) pi*^t`.

# %%
ref_probs = with_outside(evaluator.ref_set_probs[train_prompts.index(france)]).double()
ref_probs = ref_probs / ref_probs.sum()
rewards = evaluator.rewards[train_prompts.index(france)].double()
star = optimal_policy(ref_probs, rewards, BETA)


def between(t):
    return torch.softmax((1 - t) * ref_probs.log() + t * star.log(), -1)


print(" t     KL    | bias k1  k2      k3    | std k1   k2      k3")
table = {}
for t in (0.02, 0.1, 0.3, 0.6, 1.0):
    m = table[t] = kl_estimator_moments(between(t), ref_probs)
    print(f"{t:4.2f} {m['k1']['exact']:6.3f} | " + " ".join(f"{m[k]['bias']:+7.3f}" for k in ("k1", "k2", "k3"))
          + " | " + " ".join(f"{m[k]['std']:8.3g}" for k in ("k1", "k2", "k3")))

for t, m in table.items():
    glue(f"k3_std_t_{t:g}", float(m["k3"]["std"]), display=False)
for m in table.values():   # k1 and k3 are unbiased wherever pi is; k2 is not
    assert abs(m["k1"]["bias"]) < 1e-9 and abs(m["k3"]["bias"]) < 1e-6
assert table[0.02]["k3"]["std"] < 0.2 * table[0.02]["k1"]["std"]   # near pi_ref, k3 is far less noisy
assert table[1.0]["k3"]["std"] > 100 * table[1.0]["k1"]["std"]     # near pi*, its spread explodes
assert abs(table[1.0]["k2"]["bias"]) > 0.1

# %% [markdown]
# Near the reference, k3 is the quiet one. Near `pi*` its spread explodes: `pi*` has nearly dropped answers
# that `pi_ref` keeps (Berlin), and on the rare draw of one `exp(d) = pi_ref / pi` is enormous.
#
# **Which gradient?** Training follows the estimate's *expected gradient*. A sampled token carries no
# gradient: a Gaussian sample can be written `mu + sigma * noise` and differentiated through (the
# *reparametrisation trick*), a token drawn from a softmax cannot. That, not the reward, is what blocks
# backpropagation through sampled text, and why RL needs the score-function gradient
# `E_y[R(y) grad log pi(y)]`. So an estimate added to the loss contributes `E_y[grad k(y)]`, one subtracted
# from the reward `E_y[k(y) grad log pi(y)]`. With `pi = softmax(logits)` over the candidates, autograd
# gives each exactly:

# %%
grads = kl_estimator_gradients(between(0.5).log(), ref_probs)
exact = grads["exact"]


for name in ("k1_reward", "k1_loss", "k2_loss", "k3_loss", "reverse"):
    g = grads[name]
    cosine = f"{(g @ exact / (g.norm() * exact.norm())).item():+.3f}" if g.norm() > 1e-12 else "  -   "
    print(f"{name:10s} |g| = {g.norm():.4f}   cos(g, grad KL(pi||pi_ref)) = {cosine}   "
          f"|g - grad KL| = {(g - exact).norm():.4f}")
glue("k3_loss_cosine", (grads["k3_loss"] @ exact / (grads["k3_loss"].norm() * exact.norm())).item(),
     display=False)
torch.testing.assert_close(grads["k1_reward"], exact)                    # PPO's k1 in the reward: exact
torch.testing.assert_close(grads["k2_loss"], exact)                      # k2 in the loss: exact too
assert grads["k1_loss"].norm() < 1e-9                                    # k1 in the loss: no gradient at all
torch.testing.assert_close(grads["k3_loss"], grads["reverse"])           # k3 in the loss: KL(pi_ref || pi)
assert (grads["k3_loss"] - exact).norm() > 0.1 * exact.norm()

# %% [markdown]
# So k3 in the loss is an unbiased *value* with the gradient of a *different* objective, the reverse KL
# `KL(pi_ref || pi)`, which punishes dropping an answer the reference likes far more. (GRPO applies k3 per
# token, a per-token version of the same thing; k2 in the loss would give the exact gradient.)
#
# Its maximiser is exact too: `pi(y) = beta pi_ref(y) / (lambda - r(y))`, with `lambda` set so that it sums
# to 1. Its probabilities fall like one over the reward gap, not exponentially like `pi*`'s, so it keeps some
# of every wrong answer. Measured by *attainment* (0 for the SFT model, 1 for `pi*`; notebook 03):

# %%
all_ref = with_outside(evaluator.ref_set_probs).double()
all_ref = all_ref / all_ref.sum(-1, keepdim=True)
all_rewards = evaluator.rewards.double()
ceilings = {}
for beta in (0.1, 0.5):
    reverse_best = reverse_kl_optimum(all_ref, all_rewards, beta)
    ceilings[beta] = evaluator.evaluate_probs(reverse_best[:, :-1].float(), beta)
    print(f"beta {beta}: the reverse-KL optimum reaches attainment {ceilings[beta]['attainment']:.3f} "
          f"(P(correct) {ceilings[beta]['p_correct']:.3f}; pi* has "
          f"{optimal_policy(all_ref, all_rewards, beta)[:, 0].mean():.3f})")
for beta, ceiling in ceilings.items():
    glue(f"reverse_kl_attainment_beta_{beta:g}", float(ceiling["attainment"]), display=False)
assert 0.9 < ceilings[0.1]["attainment"] < 0.97 and 0.9 < ceilings[0.5]["attainment"] < 0.95

# %% [markdown]
# Even trained perfectly, GRPO with k3 in the loss would stop at about 0.96 of the way to `pi*` at beta = 0.1.

# %% [markdown]
# ## 3. GRPO and RLOO, briefly
#
# 50 steps (16 prompts x G = 4 answers each; a default run is 1000) with the true reward at beta = 0.1:
# GRPO with k1 in the reward, GRPO with k3 in the loss (TRL's recipe), and RLOO. 50 steps show the start
# of training, not where each method ends.

# %%
STEPS = 50
variants = {"GRPO, k1 in reward": dict(advantage="grpo", kl="reward"),
            "GRPO, k3 in loss": dict(advantage="grpo", kl="loss"),
            "RLOO, k1 in reward": dict(advantage="rloo", kl="reward")}
histories, policies = {}, {}
for name, fields in variants.items():
    run_config = GRPOConfig(beta=BETA, steps=STEPS, eval_every=10, progress=False, **fields)
    policies[name], histories[name] = train_grpo(
        copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts, run_config,
        evaluate=exact_metrics(evaluator, BETA, track=answer_tracker(tokenizer)))
    last = histories[name][-1]
    print(f"{name:20s} attainment {last['exact/attainment']:.3f}  KL {last['exact/kl']:.3f}  "
          f"P(Paris) {last['P(Paris)']:.3f}  ({last['time']:.0f} s)")

p_paris_before = histories["RLOO, k1 in reward"][0]["P(Paris)"]
for name, history in histories.items():
    assert history[-1]["exact/attainment"] > 0.5, name     # more than half way to pi* already
    assert history[-1]["P(Paris)"] > p_paris_before + 0.3, name
plot_runs({name: [h for h in hist if "exact/attainment" in h] for name, hist in histories.items()},
          ["exact/attainment", "P(Paris)"], title="Short runs, beta = 0.1");

# %% [markdown]
# Look at the left panel: all three climb from 0 at about the same pace; k3 in the loss moves the policy
# less far from the reference (its KL, printed above, is lower), which early on can put it level with or
# ahead of k1. The right panel is the France answer moving to Paris. Where each method *ends* is the long
# runs' question: `benchmarks/grpo.py` trains 1000 steps (medians over the seeds run; on the held-out
# countries, which training never samples):

# %%
long_runs = {}
print("variant / beta        seeds  attainment: train  held-out     KL   P(correct)")
for results in cached_runs.load("grpo_long_runs").values():   # benchmarks/results/grpo*.json
    for key, row in results["runs"].items():
        if "median_train_attainment" in row:
            long_runs[key] = row
            print(f"{key:22s} {len(row['runs']):4d} {row['median_train_attainment']:14.3f} "
                  f"{row['median_held_out_attainment']:9.3f} {row['median_train_kl']:8.3f} "
                  f"{row['median_train_p_correct']:8.3f}")
for beta in ("0.1", "0.5"):   # trained to the end, k3 in the loss stops short of k1 in the reward
    k1, k3 = long_runs[f"grpo_k1/beta={beta}"], long_runs[f"grpo_k3/beta={beta}"]
    assert k3["median_train_attainment"] < k1["median_train_attainment"] - 0.05, beta

# %% [markdown]
# After 1000 steps, k1 in the reward (GRPO, Dr. GRPO, RLOO) gets close to `pi*` on the training prompts;
# GRPO with k3 in the loss stops short, as its reverse-KL ceiling predicts. Held out, the variants differ
# more, and from seed to seed; GRPO's division of each answer's loss by its length is much of why it falls
# there (the runs and the ablation: `docs/defaults.md`, GRPO).

# %% [markdown]
# ## 4. Best-of-n, exactly
#
# Best-of-n draws n answers from `pi_ref` and keeps the one with the highest reward. Its answer distribution
# is exact: with `F(y)` the probability under `pi_ref` of a reward at most `r(y)` and `F-(y)` of a reward
# strictly below it, the best reward drawn is `r(y)` with probability `F(y)^n - F-(y)^n`, shared among the
# answers of that reward in proportion to `pi_ref`. The often quoted KL `log n - (n-1)/n` assumes no ties;
# our reward takes five values, so the real KL is smaller.

# %%
bon_points = []
print("  n   KL (exact)  log n - (n-1)/n   E[r]    P(correct)")
for n in (1, 2, 4, 8, 16, 64):
    bon = best_of_n_probs(all_ref, all_rewards, n)
    kl, reward = kl_divergence(bon, all_ref).mean().item(), (bon * all_rewards).sum(-1).mean().item()
    bon_points.append((kl, reward))
    print(f"{n:3d}   {kl:8.3f}   {best_of_n_kl_formula(n):12.3f}   {reward:+.3f}   {bon[:, 0].mean():.3f}")
    assert kl <= best_of_n_kl_formula(n) + 1e-9
for n, (kl, _) in zip((1, 2, 4, 8, 16, 64), bon_points):
    glue(f"bon_kl_n{n}", kl, display=False)
    glue(f"bon_kl_formula_n{n}", float(best_of_n_kl_formula(n)), display=False)

# %% [markdown]
# ## 5. Everyone on the reward-KL frontier
#
# The black curve is exact: the reward and KL of `pi*_beta` for every beta, the best any policy can do at its
# KL. No point can lie above it. Best-of-n lies on it or just below (here n = 16 is on it: with five reward
# levels, keeping the best of 16 is nearly what `pi*` does); its price is not reward but n samples per answer
# at inference. The trained policies of section 3, after 50 steps, are on their way towards their beta's point.

# %%
curve = frontier_curve(evaluator)
points = {"best-of-n (n = 1 ... 64)": bon_points}
for name, policy in policies.items():
    report = evaluator.evaluate(policy, BETA)
    points[f"{name}, {STEPS} steps"] = [(report["kl"], report["true_reward"])]
plot_frontier(curve, points, title="Exact reward-KL frontier, training prompts");
gaps = [optimal_reward_at_kl(curve, kl) - reward for kl, reward in bon_points]
print("best-of-n, reward below the curve at its KL:", [f"{g:.3f}" for g in gaps])
assert all(-0.01 < g < 0.03 for g in gaps)   # never above the curve, never far below it ...
assert gaps[4] < 0.005                        # ... and n = 16 on it

# %% [markdown]
# Read the figure from left to right: the best-of-n points (n = 1 is the SFT model, at KL 0) climb along the
# curve and stop where best-of-n picks the correct answer nearly always; the three 50-step policies lie
# below the curve, still on their way.

# %% [markdown]
# ## What to take away
#
# * **No critic needed**: a group of answers to the same prompt is its own baseline. GRPO divides by the
#   group's std, Dr. GRPO does not, RLOO leaves each answer out of its own baseline.
# * **Where the KL goes decides what is optimised.** k1 in the reward follows the gradient of
#   `KL(pi || pi_ref)` and aims at `pi*`; k3 in the loss is unbiased as a number, but follows the gradient of
#   `KL(pi_ref || pi)` and stops short of `pi*`.
# * **Best-of-n** needs no training and lies on or just below the frontier; it costs n samples per answer,
#   and its KL is smaller than `log n - (n-1)/n` whenever rewards tie.
