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
# **Learning objectives.** After this notebook you can
# * derive the DPO loss from the optimum of the KL-regularised objective, and check it numerically;
# * say what DPO's implicit reward $\beta \log \pi/\pi_{ref}$ is, and read it in a training log;
# * explain why offline DPO can lower the probability of the answers it prefers while its loss
#   improves, where that probability goes, and what guards against it;
# * compare offline DPO (pairs rated once) with online DPO (fresh pairs rated as it trains) in
#   attainment and in *rater labels*, the cost practitioners pay.
#
# **The lesson.** This is the article's reward-free method. Triplets $(x, y_w, y_l)$ are sampled once
# from the SFT model and rated once; DPO then trains on them and on nothing else. Its loss is a
# classification loss on the policy's own log-probs, derived from the optimum of the RLHF objective: no
# reward model, no sampling during training. But it only sees the answers in its pairs, and, as Xu et
# al. (2024, "Is DPO Superior to PPO for LLM Alignment?") found, that is where it fails: probability
# drifts to answers no pair shows. Online DPO, which rates fresh pairs from the current policy, sees
# them, at the price of many more labels.
#
# Runs in about a minute on a 2-core laptop CPU; `benchmarks/dpo.py` runs the long, multi-seed version.

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
from minirlhf.logprobs import response_logprobs, token_log_ratios
from minirlhf.saved_models import load_base_model
from minirlhf.online_dpo import OnlineDPOConfig, train_online_dpo
from minirlhf.optimum import ExactEvaluator, optimal_value, with_outside
from minirlhf.plots import plot_distributions, plot_history, plot_runs, plot_token_log_ratios
from minirlhf.preferences import default_preferences
from myst_nb import glue  # stores a number for the docs pages that quote it

SEED, THREADS = 0, 2      # change them to see another run; the lessons hold for any
torch.set_num_threads(THREADS)
ref_model, tokenizer = load_base_model()  # the SFT model: the start AND the frozen reference
train_prompts, held_out_prompts = world.prompts("train"), world.prompts("held_out")
evaluator = ExactEvaluator(ref_model, tokenizer, train_prompts)    # exact figures, training prompts
held_out = ExactEvaluator(ref_model, tokenizer, held_out_prompts)  # ... and countries never trained on
BETA = 0.1

# %% [markdown]
# ## 1. From the RLHF objective to the DPO loss
#
# **In plain words.**
#
# 1. *What RLHF wants.* For every prompt, a policy that earns as much reward as possible without
#    straying far from the SFT model: reward minus $\beta$ times the KL divergence to the reference.
# 2. *The best policy has a formula.* Take the reference's probabilities, multiply each answer's by
#    $e^{r/\beta}$ (good answers gain, bad answers lose, $\beta$ says how much) and renormalise.
# 3. *Turn the formula around.* If $\pi^*$ is the best policy for reward $r$, then $r$ can be read off
#    $\pi^*$: the reward of an answer is $\beta$ times the log of how much more likely $\pi^*$ makes it
#    than the reference, plus a constant that depends only on the prompt. Every policy is the optimum of
#    *some* reward: its **implicit reward** $\beta \log \pi/\pi_{ref}$.
# 4. *Preferences only see differences.* The Bradley-Terry model says a rater prefers $y_w$ to $y_l$
#    with probability $\sigma(r(y_w) - r(y_l))$. Write the reward through the policy: the unknown
#    constant is the same for both answers (same prompt) and cancels.
# 5. *So fit the policy to the preferences directly*, by maximum likelihood. That is DPO's loss: a
#    logistic regression on the policy's log-ratios. No reward model, no sampling, no $Z(x)$.
#
# **In symbols.**
#
# $$\max_\pi \; \mathbb{E}_{y \sim \pi(\cdot|x)}\big[r(x,y)\big] - \beta\, \mathrm{KL}\big(\pi(\cdot|x)\,\|\,\pi_{ref}(\cdot|x)\big)$$
#
# $$\pi^*(y|x) = \frac{\pi_{ref}(y|x)\, e^{r(x,y)/\beta}}{Z(x)}, \qquad Z(x) = \sum_y \pi_{ref}(y|x)\, e^{r(x,y)/\beta}$$
#
# $$r(x,y) = \beta \log \frac{\pi^*(y|x)}{\pi_{ref}(y|x)} + \beta \log Z(x)$$
#
# $$P(y_w \succ y_l \mid x) = \sigma\big(r(x,y_w) - r(x,y_l)\big)
#  = \sigma\Big(\beta \log \frac{\pi^*(y_w|x)}{\pi_{ref}(y_w|x)} - \beta \log \frac{\pi^*(y_l|x)}{\pi_{ref}(y_l|x)}\Big)$$
#
# $$\mathcal{L}_{DPO}(\pi_\theta) = -\,\mathbb{E}_{(x, y_w, y_l)}\Big[\log \sigma\Big(\beta \log \frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}
#  - \beta \log \frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}\Big)\Big] \qquad \text{(Rafailov et al. 2023, eq. 7)}$$
#
# **A word on the article's wording.** The article describes DPO's two terms as a KL divergence
# between the outputs of the policy and of the reference. They are not a KL: each term is the
# difference of two *log-probabilities of one given answer*, $\log \pi_\theta(y_w|x) - \log
# \pi_{ref}(y_w|x)$, under the two models. A KL would average such differences over all the answers a
# model can give; DPO only ever looks at the two answers of its pair.
#
# **Checked numerically.** On the candidate set of every training prompt (plus "outside" for
# malformed text) we compute $\pi^*$ exactly, then its implicit reward $\beta \log \pi^*/\pi_{ref}$. It must
# equal the true reward up to a per-prompt constant, and that constant must be $-\beta \log Z(x)$.

# %%
ref_probs = with_outside(evaluator.ref_set_probs)      # (20 prompts, 48 candidates + outside)
pi_star = evaluator.optimum(BETA)                       # the exact optimum, same shape
rewards = evaluator.rewards                             # true rewards, same shape
r_hat = implicit_reward(pi_star.log(), ref_probs.log(), BETA)
offset = r_hat - rewards                                # should not depend on the answer y
log_z = optimal_value(ref_probs, rewards, BETA) / BETA  # log Z(x), one per prompt
print("spread of the offset within a prompt:", f"{offset.std(-1).max().item():.1e}")
print("offset + beta log Z(x), largest:     ", f"{(offset + BETA * log_z[:, None]).abs().max().item():.1e}")
glue("implicit_reward_largest_error", (offset + BETA * log_z[:, None]).abs().max().item(),
     display=False)
assert offset.std(-1).max() < 1e-4                      # a per-prompt constant ...
assert torch.allclose(offset, -BETA * log_z[:, None].expand_as(offset), atol=1e-4)  # ... equal to -beta log Z

# %% [markdown]
# And the Bradley-Terry probabilities written with $\pi^*$ are the rater's: for France, the rater prefers
# "Paris" to "Berlin" with probability $\sigma(1 - (-1)) = 0.881$, and so does $\pi^*$'s implicit reward.

# %%
france_set = world.candidate_responses(world.make_prompt("France"))
paris_i, berlin_i = 0, france_set.index(world.make_response("France", "wrong", "Berlin"))
margin = r_hat[0, paris_i] - r_hat[0, berlin_i]
print(f"P(Paris > Berlin) from pi*'s implicit reward: {torch.sigmoid(margin).item():.3f}")
assert abs(torch.sigmoid(margin).item() - 1 / (1 + math.exp(-2))) < 1e-4

# %% [markdown]
# ## 2. One triplet: Paris chosen, Berlin rejected
#
# At the start the policy *is* the reference, so both log-ratios are 0 and the loss is $\log 2$ for any
# $\beta$. The gradient of the loss with respect to the chosen log-prob is $-\beta\,\sigma(-\beta h)$
# ($= -\beta/2$ at the start): gradient *descent* raises the chosen answer's log-ratio and lowers the
# rejected one's, with equal force. Nothing else.

# %%
france = world.make_prompt("France")
paris = world.make_response("France", "correct")
berlin = world.make_response("France", "wrong", "Berlin")
logps = response_logprobs(ref_model, tokenizer, [france, france], [paris, berlin])
chosen, rejected = logps[:1].clone().requires_grad_(), logps[1:].clone().requires_grad_()
loss, _, _ = preference_loss(chosen, rejected, logps[:1], logps[1:], BETA)
loss.sum().backward()
print(f"P(Paris answer) = {logps[0].exp():.3f}   P(Berlin answer) = {logps[1].exp():.3f}")
print(f"loss = {loss.item():.4f}   (log 2 = {math.log(2):.4f})")
print(f"d loss / d log pi(chosen) = {chosen.grad.item():+.3f}   "
      f"d loss / d log pi(rejected) = {rejected.grad.item():+.3f}")
assert abs(loss.item() - math.log(2)) < 1e-6
assert chosen.grad.item() < 0 < rejected.grad.item()

# %% [markdown]
# Now 40 steps of *plain* DPO on this one pair (the same pair again and again, every parameter
# trained, no guard: `rpo_alpha=0`, `frozen_blocks=0`, `embedding_lr_scale=1`, as TRL's
# `DPOTrainer` runs it). With one pair, `logps/chosen` and `logps/rejected` in the history are exactly
# log P(Paris answer) and log P(Berlin answer).

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
# First what we asked for: P(Paris) rises, P(Berlin) falls. Then P(Berlin) is nearly zero and the loss
# still wants a larger margin, and the cheapest way the model finds to widen it lowers Paris *too*
# (Berlin falls faster). The loss keeps falling until the learning rate has decayed to zero.

# %%
p_paris = [h["P(Paris)"] for h in history]
p_berlin = [h["P(Berlin)"] for h in history]
peak = p_paris.index(max(p_paris))
print(f"P(Paris):  start {p_paris[0]:.3f}, peak {max(p_paris):.3f} (step {peak + 1}), "
      f"end {p_paris[-1]:.3f}")
print(f"P(Berlin): start {p_berlin[0]:.3f}, end {p_berlin[-1]:.1e}")
print(f"loss: {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}")
glue("one_pair_p_paris_start", p_paris[0], display=False)
glue("one_pair_p_paris_peak", max(p_paris), display=False)
glue("one_pair_p_paris_peak_step", peak + 1, display=False)
glue("one_pair_p_paris_end", p_paris[-1], display=False)
glue("one_pair_p_berlin_end", p_berlin[-1], display=False)
glue("one_pair_loss_start", history[0]["loss"], display=False)
glue("one_pair_loss_end", history[-1]["loss"], display=False)
assert max(p_paris) > p_paris[0] + 0.1             # Paris up first ...
assert p_berlin[-1] < p_berlin[0] / 100            # Berlin down, and down
assert p_paris[-1] < max(p_paris) / 2              # ... then Paris falls too
assert history[-1]["loss"] < history[len(history) // 2]["loss"]   # while the loss keeps falling

# %% [markdown]
# The other 46 answers to France were never mentioned, and neither was malformed text. Where did the
# probability go? The bars show the most likely answers; "outside" is all the text that is not one of
# the 48 well-formed candidates (malformed answers).

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
# The tutorial's preference data: 128 pairs per training prompt sampled from the SFT model and
# labelled by the simulated Bradley-Terry rater (tau = 1, so the reward it implies *is* the true
# reward, and DPO's target is exactly the $\pi^*$ above). 80% of them train; each pair cost one rater
# label, paid once, before training. The same pairs train the reward model of notebook 02.
#
# **Plain DPO first**, at two learning rates. We watch what a DPO user watches (loss, margins,
# accuracy of the implicit reward) and what only this world can show: the exact true reward and the
# *coverage*, the probability the policy gives to any well-formed answer. *Attainment* (notebook 03)
# is exact too: 0 for the SFT model, 1 for $\pi^*$.

# %%
preferences = default_preferences(seed=SEED, progress=False)
labels_paid = len(preferences["train"])
print(preferences, f"\nrater labels paid before training: {labels_paid}")
plain = {}
for lr in (1e-4, 1e-3):
    config = DPOConfig(beta=BETA, epochs=2, batch_size=64, learning_rate=lr, eval_every=8,
                       seed=SEED, progress=False, **PLAIN)
    _, plain[f"plain, lr {lr:g}"] = train_dpo(copy.deepcopy(ref_model), ref_model, tokenizer,
                                             preferences["train"], config,
                                             evaluate=exact_metrics(evaluator, config.beta))
run = plain["plain, lr 0.001"]
fig = plot_history(run, ["loss", "rewards/margins", "rewards/accuracies", "logps/chosen",
                         "exact/true_reward", "exact/coverage"], title="Plain offline DPO, lr 1e-3")

# %% [markdown]
# Every curve a DPO user watches looks healthy: the loss falls, the margins grow, the implicit reward
# orders most pairs as the rater did. And the true reward collapses, because the coverage falls: the
# probability goes to malformed text, which is in no pair. The log-prob of the *chosen* answers fell
# too (`logps/chosen`): the loss only sees the **difference** of log-ratios
# $h = \log\frac{\pi(y_w)}{\pi_{ref}(y_w)} - \log\frac{\pi(y_l)}{\pi_{ref}(y_l)}$, and lowering both
# answers lowers the loss as long as the rejected one falls faster. Razin et al. (2024) call this
# *likelihood displacement*; it is the out-of-distribution failure of Xu et al. (2024).

# %%
first = next(h for h in run if "logps/chosen" in h)  # run[0] is the evaluation before step 1
last = run[-1]
slow = plain["plain, lr 0.0001"][-1]
print(f"lr 1e-3: logps/chosen {first['logps/chosen']:.2f} -> {last['logps/chosen']:.2f}, "
      f"margins {first['rewards/margins']:.3f} -> {last['rewards/margins']:.3f}, "
      f"coverage {run[0]['exact/coverage']:.3f} -> {last['exact/coverage']:.3f}")
print(f"lr 1e-4: coverage -> {slow['exact/coverage']:.3f}, attainment {slow['exact/attainment']:.3f}")
glue("plain_logps_chosen_start", first["logps/chosen"], display=False)
glue("plain_logps_chosen_end", last["logps/chosen"], display=False)
glue("plain_margins_start", first["rewards/margins"], display=False)
glue("plain_margins_end", last["rewards/margins"], display=False)
glue("plain_coverage_start", run[0]["exact/coverage"], display=False)
glue("plain_coverage_end", last["exact/coverage"], display=False)
assert last["logps/chosen"] < first["logps/chosen"] - 1      # the chosen answers lost probability
assert last["rewards/margins"] > first["rewards/margins"]     # ... while the margin grew
assert last["exact/coverage"] < 0.5                           # the mass went outside the set
assert last["exact/true_reward"] < run[0]["exact/true_reward"]  # and the true reward fell

# %% [markdown]
# ## 4. The guard: keep the chosen answers likely
#
# minirlhf's `DPOConfig` defaults add the chosen answers' negative log-likelihood per token to the
# DPO loss (`rpo_alpha=1.0`, the name TRL uses for "RPO", Pang et al. 2024), keep the first
# transformer block and the token embeddings (which GPT-2 ties to its output layer) as SFT left them,
# and train 4 epochs at a learning rate of 3e-4. The NLL term forbids the cheap way to widen the
# margin: the chosen answer must stay likely. The test of a guard: train five times longer.

# %%
guarded = {}
for epochs in (4, 20):
    config = DPOConfig(beta=BETA, epochs=epochs, eval_every=64, seed=SEED, progress=False)
    policy_offline, guarded[f"defaults, {epochs} epochs"] = train_dpo(
        copy.deepcopy(ref_model), ref_model, tokenizer, preferences["train"], config,
        evaluate=exact_metrics(evaluator, config.beta, held_out=held_out))
print(DPOConfig())
for name, h in guarded.items():
    print(f"{name:20s} attainment {h[-1]['exact/attainment']:.3f}   "
          f"held-out {h[-1]['exact_held_out/attainment']:.3f}   coverage {h[-1]['exact/coverage']:.3f}")
for epochs in (4, 20):
    glue(f"offline_attainment_{epochs}_epochs", guarded[f"defaults, {epochs} epochs"][-1]["exact/attainment"],
         display=False)
fig = plot_runs({**guarded, "plain, lr 1e-3": run}, ["exact/attainment", "exact/coverage"],
                title="Offline DPO: the defaults against plain DPO")

# %%
short, long = guarded["defaults, 4 epochs"][-1], guarded["defaults, 20 epochs"][-1]
assert short["exact/attainment"] > 0.1 and short["exact/coverage"] > 0.95
assert long["exact/attainment"] > short["exact/attainment"] - 0.05   # 5x longer: no collapse
assert long["exact/coverage"] > 0.95

# %% [markdown]
# Offline DPO with the guard is safe, but it gets only part of the way to $\pi^*$: with pairs from the
# SFT model, which names each country's common confusion (France: Berlin) in about 40% of its answers,
# and a noisy rater, the pairs show little of what $\pi^*$ wants.
#
# ## 5. Online DPO: fresh pairs, rated as it trains
#
# `train_online_dpo` samples 16 pairs of answers per prompt from the *current* policy each round (at
# temperature 1.3, so rare and malformed answers are sampled too; pairs of one answer twice are
# dropped), asks the rater, and takes a DPO step on those pairs. It needs a rater on call, and every
# pair costs a label: `rater_labels` counts them.

# %%
config = OnlineDPOConfig(beta=BETA, rounds=40, seed=SEED, progress=False)
policy, online = train_online_dpo(copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts,
                                  world.SimulatedRater(seed=SEED), config,
                                  evaluate=exact_metrics(evaluator, config.beta, held_out=held_out))
fig = plot_history(online, ["loss", "rewards/accuracies", "exact/true_reward", "exact/attainment",
                            "exact/coverage", "rater_labels"], x="round",
                   title="Online DPO (40 rounds), beta 0.1")
final = online[-1]
print(f"online DPO: attainment {final['exact/attainment']:.3f} "
      f"(held-out {final['exact_held_out/attainment']:.3f}), {final['rater_labels']} rater labels")
print(f"offline DPO: attainment {short['exact/attainment']:.3f} "
      f"(held-out {short['exact_held_out/attainment']:.3f}), {labels_paid} rater labels")
glue("online_attainment", final["exact/attainment"], display=False)
glue("online_rater_labels", final["rater_labels"], display=False)
glue("offline_rater_labels", labels_paid, display=False)

# %%
assert final["exact/attainment"] > short["exact/attainment"] + 0.1   # online gets further ...
assert final["rater_labels"] > labels_paid                           # ... and pays more labels
assert final["exact/coverage"] > 0.95                                # the malformed text was seen

# %% [markdown]
# ## 6. Inside one pair: the log-ratio of every token
#
# $\log \pi(y_t|\ldots) - \log \pi_{ref}(y_t|\ldots)$ for each token of the chosen Paris answer, the
# rejected Berlin answer and the hedge, under the online DPO policy. The sequence's log-ratio (what
# DPO's loss sees) is the sum of its row. The shared words "The capital of France is" barely move; the
# city carries the preference.

# %%
hedge = world.make_response("France", "hedge")
rows = [(label, *token_log_ratios(policy, ref_model, tokenizer, france, text))
        for label, text in (("chosen: Paris", paris), ("rejected: Berlin", berlin), ("hedge", hedge))]
fig = plot_token_log_ratios(rows)

# %%
(_, tok_p, lr_p), (_, tok_b, lr_b), (_, tok_h, lr_h) = rows
assert lr_p[tok_p.index("Paris")] > 0 > lr_b[tok_b.index("Berlin")]  # the city carries the preference
assert lr_b[tok_b.index("Berlin")] < -1                               # Berlin: less likely
assert abs(sum(lr_p[:5])) < abs(lr_b[tok_b.index("Berlin")])          # the shared prefix barely moves

# %% [markdown]
# ## What to remember
#
# * DPO is the RLHF objective solved in closed form and turned around: the policy's log-ratio to the
#   reference *is* a reward, and DPO fits it to the preferences with a logistic loss. Its terms are
#   log-probabilities of the given answers, not a KL between outputs.
# * Offline, DPO's loss only sees the answers in its pairs, and only their differences: the chosen
#   answers can lose probability while the margin grows, and the mass goes to text no pair contains.
#   Watch the coverage, not only the loss. A guard (the chosen answers' NLL, fewer trained weights)
#   keeps it safe, but not much closer to the optimum.
# * Online DPO rates fresh pairs from the current policy and gets much further, for many more rater
#   labels. Notebook 05 puts PPO and both DPOs side by side, in attainment and in labels.
