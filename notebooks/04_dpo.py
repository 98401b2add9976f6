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
# # 04 · DPO: RLHF without a reward model, and the answers it cannot see
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minirlhf/minirlhf/blob/main/notebooks/04_dpo.ipynb)
#
# **Learning objectives.** Derive the DPO loss; explain why offline DPO can lower the probability of the
# answers it prefers while its loss improves, and what prevents it; compare offline and online DPO.
#
# **The lesson.** The article's reward-free method trains on pairs of answers rated once, with a
# classification loss on the policy's own log-probabilities: no reward model, no sampling. But it sees only
# the answers in its pairs, and probability drifts to answers no pair shows (Xu et al. 2024, "Is DPO
# Superior to PPO for LLM Alignment?"). Online DPO rates fresh pairs and sees them, for many more labels.

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
import math

import torch
from datasets import Dataset

from minirlhf import world
from minirlhf.dpo import DPOConfig, implicit_reward, preference_loss, train_dpo
from minirlhf.evaluation import exact_metrics
from minirlhf.logprobs import response_logprobs
from minirlhf.saved_models import load_base_model
from minirlhf.online_dpo import OnlineDPOConfig, train_online_dpo
from minirlhf.optimum import ExactEvaluator, optimal_value, with_outside
from minirlhf.plots import plot_distributions, plot_history, plot_runs
from minirlhf.preferences import default_preferences
from myst_nb import glue  # stores a number for the docs pages that quote it

SEED, THREADS = 0, 1      # change them to see another run; the lessons hold for any
torch.set_num_threads(THREADS)
ref_model, tokenizer = load_base_model()  # the SFT model: the start AND the frozen reference
train_prompts, held_out_prompts = world.prompts("train"), world.prompts("held_out")
evaluator = ExactEvaluator(ref_model, tokenizer, train_prompts)    # exact figures, training prompts
held_out = ExactEvaluator(ref_model, tokenizer, held_out_prompts)  # ... and countries never trained on
BETA = 0.1

# %% [markdown]
# ## 1. From the RLHF objective to the DPO loss
#
# RLHF wants, for every prompt, the policy with the most reward minus $\beta$ times its KL divergence to
# the reference (the SFT model):
#
# $$\max_\pi \; \mathbb{E}_{y \sim \pi(\cdot|x)}\big[r(x,y)\big] - \beta\, \mathrm{KL}\big(\pi(\cdot|x)\,\|\,\pi_{ref}(\cdot|x)\big)$$
#
# Its best policy has a formula: multiply each answer's reference probability by $e^{r/\beta}$ and
# renormalise ($Z(x)$ is the normalising sum):
#
# $$\pi^*(y|x) = \frac{\pi_{ref}(y|x)\, e^{r(x,y)/\beta}}{Z(x)}, \qquad Z(x) = \sum_y \pi_{ref}(y|x)\, e^{r(x,y)/\beta}$$
#
# Turned around, the reward can be read off the policy, up to a constant per prompt: every policy is the
# optimum of its **implicit reward** $\beta \log \pi/\pi_{ref}$:
#
# $$r(x,y) = \beta \log \frac{\pi^*(y|x)}{\pi_{ref}(y|x)} + \beta \log Z(x)$$
#
# The Bradley-Terry model (notebook 02) says a rater prefers $y_w$ to $y_l$ with probability
# $\sigma(r(y_w) - r(y_l))$: only differences count, so $\beta \log Z(x)$ cancels. Fitting the policy to the
# preferences by maximum likelihood is DPO's loss (Rafailov et al. 2023, eq. 7), a logistic regression on
# log-ratios:
#
# $$\mathcal{L}_{DPO}(\pi_\theta) = -\,\mathbb{E}_{(x, y_w, y_l)}\Big[\log \sigma\Big(\beta \log \frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}
#  - \beta \log \frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}\Big)\Big]$$
#
# (The article calls these terms a KL between the two models' outputs. They are not: each compares the
# log-probabilities of *one given answer*; a KL would average over all answers.)
#
# **Checked numerically** on every training prompt: $\pi^*$'s implicit reward is the true reward minus
# $\beta \log Z(x)$.

# %%
ref_probs = with_outside(evaluator.ref_set_probs)      # (20 prompts, 48 candidates + outside)
pi_star = evaluator.optimum(BETA)                       # the exact optimum, same shape
rewards = evaluator.rewards                             # true rewards, same shape
r_hat = implicit_reward(pi_star.log(), ref_probs.log(), BETA)
offset = r_hat - rewards                                # should not depend on the answer y
log_z = optimal_value(ref_probs, rewards, BETA) / BETA  # log Z(x), one per prompt
error = (offset + BETA * log_z[:, None]).abs().max().item()
print(f"spread of the offset within a prompt: {offset.std(-1).max().item():.1e};  "
      f"offset + beta log Z(x), largest: {error:.1e}")
glue("implicit_reward_largest_error", error, display=False)
assert offset.std(-1).max() < 1e-4                      # a per-prompt constant ...
assert torch.allclose(offset, -BETA * log_z[:, None].expand_as(offset), atol=1e-4)  # ... equal to -beta log Z

# %% [markdown]
# ## 2. One triplet: Paris chosen, Berlin rejected
#
# A *triplet* is a prompt with its chosen and rejected answer. At the start the policy *is* the reference:
# both log-ratios are 0, the loss is $\log 2$. With $h$ the chosen answer's log-ratio minus the rejected
# one's, the loss's gradient with respect to the chosen log-prob is $-\beta\,\sigma(-\beta h)$, $-\beta/2$ at
# the start: descent raises the chosen answer and lowers the rejected one equally.

# %%
france = world.make_prompt("France")
paris = world.make_response("France", "correct")
berlin = world.make_response("France", "wrong", "Berlin")
logps = response_logprobs(ref_model, tokenizer, [france, france], [paris, berlin])
chosen, rejected = logps[:1].clone().requires_grad_(), logps[1:].clone().requires_grad_()
loss, _, _ = preference_loss(chosen, rejected, logps[:1], logps[1:], BETA)
loss.sum().backward()
print(f"P(Paris) {logps[0].exp():.3f}, P(Berlin) {logps[1].exp():.3f}, loss {loss.item():.4f}, gradients: "
      f"chosen {chosen.grad.item():+.3f}, rejected {rejected.grad.item():+.3f}")
assert abs(loss.item() - math.log(2)) < 1e-6
assert chosen.grad.item() < 0 < rejected.grad.item()

# %% [markdown]
# Now 40 steps of *plain* DPO on this one pair: every parameter trained and nothing added to the loss
# (`rpo_alpha=0`, `frozen_blocks=0`, `embedding_lr_scale=1`), as TRL's `DPOTrainer` runs it.

# %%
PLAIN = {"rpo_alpha": 0.0, "frozen_blocks": 0, "embedding_lr_scale": 1.0}   # plain DPO, as TRL
triplet = Dataset.from_list([{"prompt": france, "chosen": paris, "rejected": berlin}])
config = DPOConfig(beta=BETA, epochs=40, batch_size=1, learning_rate=2e-4, warmup_steps=1,
                   seed=SEED, progress=False, **PLAIN)
policy, history = train_dpo(copy.deepcopy(ref_model), ref_model, tokenizer, triplet, config)
for h in history:
    h["P(Paris)"], h["P(Berlin)"] = math.exp(h["logps/chosen"]), math.exp(h["logps/rejected"])
fig = plot_history(history, ["loss", "rewards/margins", "P(Paris)", "P(Berlin)"], ncols=4,
                   title="Plain DPO on one triplet (beta = 0.1, lr 2e-4)")

# %% [markdown]
# First as asked: P(Paris) rises, P(Berlin) falls. Then, with Berlin nearly gone, the loss still
# wants a larger margin, and the cheapest way to widen it lowers Paris *too* (Berlin falls faster). The
# loss keeps falling.

# %%
p_paris = [h["P(Paris)"] for h in history]
p_berlin = [h["P(Berlin)"] for h in history]
peak = p_paris.index(max(p_paris))
print(f"P(Paris):  start {p_paris[0]:.3f}, peak {max(p_paris):.3f} (step {peak + 1}), "
      f"end {p_paris[-1]:.3f}")
print(f"P(Berlin): start {p_berlin[0]:.3f}, end {p_berlin[-1]:.1e}")
print(f"loss: {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}")
for key, value in {"p_paris_start": p_paris[0], "p_paris_peak": max(p_paris), "p_paris_peak_step": peak + 1,
                   "p_paris_end": p_paris[-1], "p_berlin_end": p_berlin[-1],
                   "loss_start": history[0]["loss"], "loss_end": history[-1]["loss"]}.items():
    glue(f"one_pair_{key}", value, display=False)   # for the docs pages
assert max(p_paris) > p_paris[0] + 0.1             # Paris up first ...
assert p_berlin[-1] < p_berlin[0] / 100            # Berlin down, and down
assert p_paris[-1] < max(p_paris) / 2              # ... then Paris falls too
assert history[-1]["loss"] < history[len(history) // 2]["loss"]   # while the loss keeps falling

# %% [markdown]
# Where did the probability go? Compare each group's middle bar (after 40 steps) with its left one: to
# "outside", malformed text, in no pair.

# %%
one = ExactEvaluator(ref_model, tokenizer, [france])
dists = {"pi_ref": with_outside(one.ref_set_probs[0]),
         "after 40 steps": with_outside(one.set_probs(policy)[0]),
         "pi* (beta = 0.1)": one.optimum(BETA)[0]}
fig = plot_distributions(dists, one.candidates[0], top_k=6, title="France: where the probability is")
print(f"outside the candidate set: {float(dists['after 40 steps'][-1]):.3f} "
      f"(reference {float(dists['pi_ref'][-1]):.3f})")
glue("one_pair_outside", float(dists["after 40 steps"][-1]), display=False)
assert dists["after 40 steps"][-1] > 0.5           # most of it left the candidate set

# %% [markdown]
# ## 3. Offline DPO on the rated pairs, as the article runs it
#
# Notebook 02's pairs: 128 per training prompt, sampled from the SFT model and labelled by the simulated
# rater, who prefers $y_w$ with probability $\sigma((r(y_w) - r(y_l))/\tau)$. Its temperature $\tau$ is 1,
# so DPO's target is exactly the $\pi^*$ above. 80% of the pairs train; each cost one rater label.
#
# **Plain DPO first.** We watch what a DPO user watches (loss, margins, accuracy of the implicit reward)
# and what only this world shows: the true reward, the *coverage* (the probability of any well-formed
# answer) and the *attainment* (notebook 03: 0 for the SFT model, 1 for $\pi^*$).

# %%
preferences = default_preferences(seed=SEED, progress=False)
labels_paid = len(preferences["train"])
print(f"rater labels paid before training: {labels_paid}")
config = DPOConfig(beta=BETA, epochs=2, batch_size=64, learning_rate=1e-3, eval_every=8, seed=SEED,
                   progress=False, **PLAIN)
_, run = train_dpo(copy.deepcopy(ref_model), ref_model, tokenizer, preferences["train"], config,
                   evaluate=exact_metrics(evaluator, config.beta))
fig = plot_history(run, ["loss", "rewards/margins", "rewards/accuracies", "logps/chosen",
                         "exact/true_reward", "exact/coverage"], title="Plain offline DPO, lr 1e-3")

# %% [markdown]
# The top row, what a DPO user watches, looks healthy: the loss falls, the margins grow, the implicit
# reward orders most pairs as the rater did. The bottom row: the true reward collapses as the coverage
# falls, to malformed text in no pair. The chosen answers' log-prob fell too: the loss only
# sees the **difference** of their log-ratios, and lowering both answers lowers it as long as the rejected
# one falls faster. Razin et al. (2024) call this *likelihood displacement*.

# %%
first = next(h for h in run if "logps/chosen" in h)  # run[0] is the evaluation before step 1
last = run[-1]
print(f"logps/chosen {first['logps/chosen']:.2f} -> {last['logps/chosen']:.2f}, "
      f"margins {first['rewards/margins']:.3f} -> {last['rewards/margins']:.3f}, "
      f"coverage {run[0]['exact/coverage']:.3f} -> {last['exact/coverage']:.3f}")
for key, value in {"logps_chosen_start": first["logps/chosen"], "logps_chosen_end": last["logps/chosen"],
                   "margins_start": first["rewards/margins"], "margins_end": last["rewards/margins"],
                   "coverage_start": run[0]["exact/coverage"], "coverage_end": last["exact/coverage"]}.items():
    glue(f"plain_{key}", value, display=False)   # for the docs pages
assert last["logps/chosen"] < first["logps/chosen"] - 1      # the chosen answers lost probability
assert last["rewards/margins"] > first["rewards/margins"]     # ... while the margin grew
assert last["exact/coverage"] < 0.5                           # the mass went outside the set
assert last["exact/true_reward"] < run[0]["exact/true_reward"]  # and the true reward fell

# %% [markdown]
# ## 4. The guard: keep the chosen answers likely
#
# `DPOConfig`'s defaults, the *guard*, differ from plain DPO in four ways: the chosen answers' negative
# log-likelihood (NLL) per token is added to the loss (`rpo_alpha=1.0`, "RPO", Pang et al. 2024), the
# first transformer block and the token embeddings stay as SFT left them, and training is 4 epochs at 3e-4.
# The NLL term forbids the cheap way to widen the margin. We also train five times longer, and without it.

# %%
guarded = {}
for name, fields in {"defaults, 4 epochs": {}, "defaults, 20 epochs": {"epochs": 20},
                     "defaults without the NLL term": {"rpo_alpha": 0.0}}.items():
    config = DPOConfig(beta=BETA, eval_every=64, seed=SEED, progress=False, **fields)
    _, guarded[name] = train_dpo(copy.deepcopy(ref_model), ref_model, tokenizer, preferences["train"],
                                 config, evaluate=exact_metrics(evaluator, config.beta, held_out=held_out))
for name, h in guarded.items():
    print(f"{name:30s} attainment {h[-1]['exact/attainment']:+.3f}   "
          f"held-out {h[-1]['exact_held_out/attainment']:+.3f}   coverage {h[-1]['exact/coverage']:.3f}")
for epochs in (4, 20):
    glue(f"offline_attainment_{epochs}_epochs", guarded[f"defaults, {epochs} epochs"][-1]["exact/attainment"],
         display=False)
fig = plot_runs({**guarded, "plain, lr 1e-3": run}, ["exact/attainment", "exact/coverage"],
                title="Offline DPO: the defaults, without the NLL term, and plain")

# %% [markdown]
# In the figure, both runs with the defaults keep coverage near 1 and attainment above 0, even five times
# longer; without the NLL term, both fall as plain DPO's did. Taking each change away alone (ablation in
# `docs/defaults.md`, DPO): the NLL term keeps the training prompts safe, the frozen embeddings the held-out
# countries; the frozen first block and the schedule matter little.

# %%
short, long = guarded["defaults, 4 epochs"][-1], guarded["defaults, 20 epochs"][-1]
no_nll = guarded["defaults without the NLL term"][-1]
assert short["exact/attainment"] > 0.1 and short["exact/coverage"] > 0.95
assert long["exact/attainment"] > short["exact/attainment"] - 0.05   # 5x longer: no collapse
assert long["exact/coverage"] > 0.95
assert no_nll["exact/coverage"] < short["exact/coverage"] - 0.2        # without the NLL term it leaks ...
assert no_nll["exact/attainment"] < short["exact/attainment"] - 0.3    # ... and falls back

# %% [markdown]
# Guarded, offline DPO is safe but gets only part of the way: pairs from the SFT model show little of what
# $\pi^*$ wants.

# %% [markdown]
# ## 5. Online DPO: fresh pairs, rated as it trains
#
# Each round, `train_online_dpo` samples 16 pairs per prompt from the *current* policy (at temperature 1.3,
# so rare and malformed answers appear too), has the rater label them (`rater_labels` counts), and takes a
# DPO step on them.

# %%
config = OnlineDPOConfig(beta=BETA, rounds=40, seed=SEED, progress=False)
policy, online = train_online_dpo(copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts,
                                  world.SimulatedRater(seed=SEED), config,
                                  evaluate=exact_metrics(evaluator, config.beta, held_out=held_out))
fig = plot_history(online, ["loss", "rewards/accuracies", "exact/true_reward", "exact/attainment",
                            "exact/coverage", "rater_labels"], x="round",
                   title="Online DPO (40 rounds), beta 0.1")
final = online[-1]
for name, r, labels in (("online", final, final["rater_labels"]), ("offline", short, labels_paid)):
    print(f"{name:7s} DPO: attainment {r['exact/attainment']:.3f} "
          f"(held-out {r['exact_held_out/attainment']:.3f}), {labels} rater labels")
glue("online_attainment", final["exact/attainment"], display=False)
glue("online_rater_labels", final["rater_labels"], display=False)
glue("offline_rater_labels", labels_paid, display=False)

# %% [markdown]
# In the figure, true reward and attainment climb while coverage stays near 1: malformed answers get
# sampled, rated and pushed down; the labels grow every round. After 40 rounds the held-out countries can
# be level with the training ones, as here; notebook 05's full run ends with them behind.

# %%
assert final["exact/attainment"] > short["exact/attainment"] + 0.1   # online gets further ...
assert final["rater_labels"] > labels_paid                           # ... and pays more labels
assert final["exact/coverage"] > 0.95                                # the malformed text was seen

# %% [markdown]
# ## What to remember
#
# * DPO turns the RLHF optimum around: the policy's log-ratio to the reference *is* a reward, fitted to the
#   preferences with a logistic loss.
# * Offline, the chosen answers can lose probability while the margin grows, to text no pair contains:
#   watch the coverage. The chosen answers' NLL prevents it; online DPO gets much further, for more labels.
