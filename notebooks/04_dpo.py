# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · DPO: RLHF without a reward model, and the reward it hides
#
# **The lesson.** The KL-regularised RLHF objective has a closed-form optimum, and that formula can be
# turned around: *a policy is its own reward model*, with reward $\beta \log \pi/\pi_{ref}$. Put that
# reward into the Bradley-Terry likelihood of the preference pairs and you get DPO: a classification
# loss on the policy's log-probs, no reward model, no sampling. DPO only ever looks at the answers in
# its pairs, though. Trained offline on pairs from the SFT model, its loss keeps falling while the
# probability of *every* answer falls, the chosen ones included, and the mass goes to text no pair
# contains. Fresh pairs sampled from the current policy (on-policy DPO, this library's default) show
# DPO that text and keep it on course, to the exact optimum.
#
# We will:
# 1. derive DPO from the optimum, in words and in symbols, and check it numerically,
# 2. take DPO steps on one triplet: Paris chosen, Berlin rejected,
# 3. run DPO on the collected preference data: offline, then with on-policy rounds,
# 4. explain the surprise: the chosen answer's log-prob falls while the margin grows,
# 5. make it collapse on purpose (learning rate too high, beta too small),
# 6. sweep beta against the exact optimum,
# 7. look inside: the log-ratio of every token of a chosen and a rejected answer.
#
# Runs in about a minute on a 2-core laptop CPU; `benchmarks/dpo.py` runs the long, multi-seed version.

# %%
import copy
import math

import torch
from datasets import Dataset

from minirlhf import world
from minirlhf.dpo import DPOConfig, dpo_loss, implicit_reward, train_dpo
from minirlhf.evaluation import exact_metrics
from minirlhf.logprobs import response_logprobs, token_log_ratios
from minirlhf.optimum import ExactEvaluator, answer_kind_probs, optimal_value, with_outside
from minirlhf.plots import (plot_beta_sweep, plot_history, plot_runs, plot_distributions,
                            plot_token_log_ratios)
from minirlhf.preferences import default_preferences
from minirlhf.models import load_base_model

torch.set_num_threads(2)
ref_model, tokenizer = load_base_model()  # the SFT model: DPO's starting point AND its frozen reference
train_prompts, held_out_prompts = world.prompts("train"), world.prompts("held_out")
evaluator = ExactEvaluator(ref_model, tokenizer, train_prompts)       # exact figures, training prompts
held_out = ExactEvaluator(ref_model, tokenizer, held_out_prompts)     # ... and countries DPO never sees
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
paris, berlin = world.make_response("France", "correct"), world.make_response("France", "wrong", "Berlin")
logps = response_logprobs(ref_model, tokenizer, [france, france], [paris, berlin])
chosen, rejected = logps[:1].clone().requires_grad_(), logps[1:].clone().requires_grad_()
loss = dpo_loss(chosen, rejected, logps[:1], logps[1:], BETA)
loss.sum().backward()
print(f"P(Paris answer) = {logps[0].exp():.3f}   P(Berlin answer) = {logps[1].exp():.4f}")
print(f"loss = {loss.item():.4f}   (log 2 = {math.log(2):.4f})")
print(f"d loss / d log pi(chosen) = {chosen.grad.item():+.3f}   d loss / d log pi(rejected) = {rejected.grad.item():+.3f}")
assert abs(loss.item() - math.log(2)) < 1e-6
assert chosen.grad.item() < 0 < rejected.grad.item()

# %% [markdown]
# Now 40 DPO steps on this one pair (offline: the same pair again and again), with every parameter
# trained, as TRL's `DPOTrainer` trains them (`frozen_blocks=0`; section 3 says why minirlhf's default
# keeps the first block). With one pair, `logps/chosen` and `logps/rejected` in the history are exactly
# log P(Paris answer) and log P(Berlin answer).

# %%
triplet = Dataset.from_list([{"prompt": france, "chosen": paris, "rejected": berlin}])
config = DPOConfig(beta=BETA, on_policy_rounds=0, epochs=40, batch_size=1, learning_rate=2e-4,
                   warmup_steps=1, frozen_blocks=0, progress=False)
policy, history = train_dpo(copy.deepcopy(ref_model), ref_model, tokenizer, triplet, config)
for h in history:
    h["P(Paris)"], h["P(Berlin)"] = math.exp(h["logps/chosen"]), math.exp(h["logps/rejected"])
fig = plot_history(history, ["loss", "rewards/margins", "P(Paris)", "P(Berlin)"], ncols=4,
                   title="DPO on one triplet (beta = 0.1, lr 2e-4)")

# %% [markdown]
# First what we asked for: P(Paris) rises, P(Berlin) falls. Then P(Berlin) is nearly zero and the loss
# still wants a larger margin, and the cheapest way the model finds to widen it lowers Paris *too*
# (Berlin falls faster). The loss never stops falling; P(Paris) ends below where it started.

# %%
p_paris = [h["P(Paris)"] for h in history]
p_berlin = [h["P(Berlin)"] for h in history]
print(f"P(Paris):  start {p_paris[0]:.3f}, peak {max(p_paris):.3f} (step {p_paris.index(max(p_paris)) + 1}), "
      f"end {p_paris[-1]:.3f}")
print(f"P(Berlin): start {p_berlin[0]:.5f}, end {p_berlin[-1]:.1e}")
print(f"loss: {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}")
assert max(p_paris) > p_paris[0] + 0.1             # Paris up first ...
assert p_berlin[-1] < p_berlin[0] / 100            # Berlin down, and down
assert p_paris[-1] < max(p_paris) / 2              # ... then Paris falls too
assert history[-1]["loss"] < history[len(history) // 2]["loss"]   # while the loss keeps falling

# %% [markdown]
# The other 46 answers to France were never mentioned, and neither was malformed text. Where did the
# probability go?

# %%
one = ExactEvaluator(ref_model, tokenizer, [france])
dists = {"pi_ref": with_outside(one.ref_set_probs[0]), "after 40 steps": with_outside(one.set_probs(policy)[0]),
         "pi* (beta = 0.1)": one.optimum(BETA)[0]}
fig = plot_distributions(dists, one.candidates[0], top_k=6, title="France: where the probability is")
print(f"outside the candidate set: {float(dists['after 40 steps'][-1]):.3f} "
      f"(reference {float(dists['pi_ref'][-1]):.3f})")
assert dists["after 40 steps"][-1] > 0.5           # most of it left the candidate set

# %% [markdown]
# ## 3. DPO on the collected preference data
#
# The tutorial's preference data: pairs sampled from the SFT model on the 20 training prompts and
# labelled by the simulated Bradley-Terry rater (tau = 1, so the reward it implies *is* the true reward,
# and DPO's target is exactly the $\pi^*$ above).
#
# **Offline first**, as TRL's `DPOTrainer` runs it: several passes over the fixed pairs, every
# parameter trained.

# %%
preferences = default_preferences(progress=False)
print(preferences)
offline = {}
for lr in (1e-4, 1e-3, 1e-2):
    config = DPOConfig(beta=BETA, on_policy_rounds=0, epochs=8, batch_size=64, learning_rate=lr,
                       frozen_blocks=0, eval_every=4, progress=False)
    _, offline[f"offline, lr {lr:g}"] = train_dpo(copy.deepcopy(ref_model), ref_model, tokenizer,
                                                 preferences["train"], config,
                                                 evaluate=exact_metrics(evaluator, config.beta))
run = offline["offline, lr 0.01"]
fig = plot_history(run, ["loss", "rewards/margins", "rewards/accuracies", "logps/chosen",
                         "exact/true_reward", "exact/coverage"], title="Offline DPO, lr 1e-2, beta 0.1")

# %% [markdown]
# Every curve a DPO user watches looks healthy: the loss falls, the margins grow, the accuracy is near
# the best the rater's noise allows. And the true reward collapses, because the *coverage*, the
# probability the policy gives to any well-formed answer, falls towards zero.
#
# **Now the defaults**: one step on the same collected pairs, then 100 rounds in which fresh pairs are
# sampled from the current policy (at temperature 1.3), labelled by the same rater, and used for one
# step each. Same loss, same beta; only the data change. (Two more defaults, for the held-out countries
# below: the token embeddings, which GPT-2 ties to its output layer, learn at a fifth of the rate,
# `embedding_lr_scale=0.2`, and the first of the two transformer blocks stays as SFT left it,
# `frozen_blocks=1`.)

# %%
config = DPOConfig(beta=BETA, progress=False)
print(config)
policy, history = train_dpo(copy.deepcopy(ref_model), ref_model, tokenizer, preferences["train"], config,
                            rater=world.SimulatedRater(seed=config.seed),
                            evaluate=exact_metrics(evaluator, config.beta, held_out=held_out))
fig = plot_history(history, ["loss", "rewards/margins", "rewards/accuracies", "exact/true_reward",
                             "exact/attainment", "exact/coverage"], title="On-policy DPO (defaults), beta 0.1")
final = history[-1]
print({k: round(v, 3) for k, v in final.items() if k.startswith("exact")})

# %% [markdown]
# **Checked:** on-policy DPO gets close to the exact optimum on the training prompts and keeps almost
# all the probability on well-formed answers (less than the SFT model leaked). On the four held-out
# countries, which it never saw, it helps too, but less: it learnt to drop the hedge everywhere, and
# to name fewer wrong cities, but it can only partly transfer the second lesson to countries it never saw.
# Why the slow output layer matters: every step raises a training country's city after "The capital
# of ... is" and, through the softmax of the output layer, lowers every other word there, the held-out
# countries' names included. Trained at the full rate (`embedding_lr_scale=1`, with every block trained
# and 60 rounds), the policy starts to answer a held-out question about a training country, and its
# held-out attainment drops to 0.72 (0.59 at beta 0.5). The kept first block helps as well: DPO has to
# change *how* the policy answers, not what it knows about each country. With every block trained the
# held-out attainment is 0.86 at beta 0.1 and 0.5, with seeds as low as 0.82; with the block kept, 0.91
# and 0.89, every seed above 0.88 (`benchmarks/dpo.py`, medians of 3 seeds).

# %%
assert final["exact/attainment"] > 0.9, final["exact/attainment"]
assert final["exact/coverage"] > 0.98
assert run[-1]["exact/coverage"] < 0.5                    # offline at the same beta: collapsed
assert final["exact_held_out/attainment"] < final["exact/attainment"]

# %% [markdown]
# ## 4. The surprise: the chosen answer's log-prob falls while the margin grows
#
# Look again at the offline run: `logps/chosen`, the log-prob of the *preferred* answers, fell by
# several nats while `rewards/margins` grew. The loss only sees the **difference** of log-ratios,
# $h = \log\frac{\pi(y_w)}{\pi_{ref}(y_w)} - \log\frac{\pi(y_l)}{\pi_{ref}(y_l)}$. Lowering both answers
# lowers the loss as long as the rejected one falls faster, and lowering is easy: a tiny model shares
# almost everything between "The capital of France is Paris." and "... is Berlin.", and the cheapest way
# to make the rejected answer unlikely makes the chosen one unlikely too. Where does the probability go?
# To answers that are in **no pair**: malformed text, which the loss never sees and never penalises.
# (Razin et al. 2024 call this *likelihood displacement*.) On-policy pairs close the loop: as soon as the
# policy starts to write malformed text, it is sampled, the rater rejects it, and DPO pushes it down.

# %%
first = next(h for h in run if "logps/chosen" in h)  # run[0] is the exact evaluation before step 1
last = run[-1]
print(f"offline: logps/chosen {first['logps/chosen']:.2f} -> {last['logps/chosen']:.2f}, "
      f"rewards/margins {first['rewards/margins']:.3f} -> {last['rewards/margins']:.3f}, "
      f"coverage {run[0]['exact/coverage']:.3f} -> {last['exact/coverage']:.3f}")
kinds = {name: answer_kind_probs(p, tokenizer, [france]) for name, p in
         (("pi_ref", ref_model), ("on-policy DPO", policy))}
print({name: {k: round(float(v), 3) for k, v in d.items()} for name, d in kinds.items()})
assert last["logps/chosen"] < first["logps/chosen"] - 1     # the chosen answers lost probability ...
assert last["rewards/margins"] > first["rewards/margins"] + 0.3   # ... while the margin grew
assert last["exact/coverage"] < 0.5                          # the mass went outside the candidate set

# %% [markdown]
# ## 5. Collapse on purpose: learning rate too high, beta too small
#
# Offline DPO at three learning rates, and at a smaller beta. In every run the loss keeps falling, which
# is what a training dashboard shows; the coverage tells the real story. The higher the rate, the sooner
# every valid answer loses its probability. A smaller beta asks for larger log-ratios (the optimum
# itself moves further from the reference) and, at the same rate, collapses further.

# %%
config = DPOConfig(beta=0.01, on_policy_rounds=0, epochs=8, batch_size=64, learning_rate=1e-3,
                   frozen_blocks=0, eval_every=4, progress=False)
_, offline["offline, lr 0.001, beta 0.01"] = train_dpo(copy.deepcopy(ref_model), ref_model, tokenizer,
                                                       preferences["train"], config,
                                                 evaluate=exact_metrics(evaluator, config.beta))
fig = plot_runs(offline, ["loss", "exact/coverage", "exact/p_correct"],
                title="Offline DPO: the loss falls, the coverage collapses")
for name, h in offline.items():
    losses = [x["loss"] for x in h if "loss" in x]
    print(f"{name:30s} loss {losses[0]:.3f} -> {losses[-1]:.3f}   coverage -> {h[-1]['exact/coverage']:.3f}")


# %%
def steps_to_collapse(history, below=0.5):
    return next((h["step"] for h in history if h.get("exact/coverage", 1) < below), math.inf)

for name in ("offline, lr 0.01", "offline, lr 0.001", "offline, lr 0.001, beta 0.01"):
    losses = [x["loss"] for x in offline[name] if "loss" in x]
    assert losses[-1] < losses[0], name                           # the loss improved in each collapsing run
high, mid = offline["offline, lr 0.01"], offline["offline, lr 0.001"]
assert high[-1]["exact/coverage"] < 0.05                        # lr 1e-2: every valid answer lost its mass
assert steps_to_collapse(high) < steps_to_collapse(mid)         # higher rate, sooner collapse
small_beta = offline["offline, lr 0.001, beta 0.01"]
assert small_beta[-1]["exact/coverage"] < min(0.1, mid[-1]["exact/coverage"] / 3)  # smaller beta: collapses further

# %% [markdown]
# On-policy rounds widen the safe range a lot: the default rate (2e-3) is twice the rate at which offline
# DPO lost half of its coverage above. They do not make every rate safe: rerun the default cell with
# `learning_rate=1e-2` and watch the coverage.

# %% [markdown]
# ## 6. A beta sweep against the exact optimum
#
# Each beta has its own optimum $\pi^*_\beta$: small beta, far from the reference (more reward, more
# KL); large beta, close to it. Shorter on-policy runs (25 rounds instead of 100) keep the notebook
# quick, so each beta gets most of the way, not all of it.

# %%
betas = [0.05, 0.3, 1.0]
measured = {"true reward": [], "KL": [], "attainment": []}
optimum = {"true reward": [], "KL": [], "attainment": []}
for beta in betas:
    config = DPOConfig(beta=beta, on_policy_rounds=25, progress=False)
    p, _ = train_dpo(copy.deepcopy(ref_model), ref_model, tokenizer, preferences["train"], config,
                     rater=world.SimulatedRater(seed=config.seed))
    report = evaluator.evaluate(p, beta)
    star = evaluator.evaluate_probs(evaluator.optimum(beta)[:, :-1], beta)
    for name, key in (("true reward", "true_reward"), ("KL", "kl"), ("attainment", "attainment")):
        measured[name].append(report[key])
        optimum[name].append(star[key])
fig = plot_beta_sweep(betas, measured, optimum, method="DPO", title="On-policy DPO (25 rounds) across beta")
print({k: [round(v, 3) for v in vals] for k, vals in measured.items()})

# %%
assert all(a > 0.7 for a in measured["attainment"])              # most of the way at every beta
assert measured["KL"][0] > measured["KL"][-1]                    # smaller beta, further from pi_ref
assert measured["true reward"][0] > measured["true reward"][-1]  # ... and more reward, like pi*

# %% [markdown]
# ## 7. Inside one pair: the log-ratio of every token
#
# $\log \pi(y_t|\ldots) - \log \pi_{ref}(y_t|\ldots)$ for each token of the chosen Paris answer, the
# rejected Berlin answer and the hedge, under the policy trained with the defaults. The sequence's
# log-ratio (what DPO's loss sees) is the sum of its row. The shared words "The capital of France is"
# barely move; the city carries the preference; the hedge's first word carries the vote against hedging.

# %%
hedge = world.make_response("France", "hedge")
rows = [(label, *token_log_ratios(policy, ref_model, tokenizer, france, text))
        for label, text in (("chosen: Paris", paris), ("rejected: Berlin", berlin), ("hedge", hedge))]
fig = plot_token_log_ratios(rows)

# %%
(_, tok_p, lr_p), (_, tok_b, lr_b), (_, tok_h, lr_h) = rows
assert lr_p[tok_p.index("Paris")] > 0 > lr_b[tok_b.index("Berlin")]  # the city carries the preference
assert lr_b[tok_b.index("Berlin")] < -3                               # Berlin: many nats less likely
assert abs(sum(lr_p[:5])) < abs(lr_b[tok_b.index("Berlin")])          # the shared prefix barely moves
assert lr_h[0] < 0                                                    # "There": the vote against hedging

# %% [markdown]
# ## What to remember
#
# * DPO is the RLHF objective solved in closed form and turned around: the policy's log-ratio to the
#   reference *is* a reward, and DPO fits it to the preferences with a logistic loss.
# * DPO's loss only sees the answers in its pairs, and only their differences. Offline, the chosen
#   answers can lose probability while the margin grows; the mass goes to text no pair contains, and at
#   a learning rate a little too high (or a beta too small) every valid answer loses its mass while the
#   loss keeps falling. Watch the coverage, not only the loss.
# * The same loss on fresh, on-policy pairs sees that text and keeps the policy on the candidates; with
#   it DPO reaches the exact optimum of this world closely. Generalising to countries it never saw is
#   another matter: its pairs only ever named their capitals as wrong answers.
