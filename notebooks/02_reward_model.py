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
# # 02 · Preferences and the Bradley-Terry reward model
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minirlhf/minirlhf/blob/main/notebooks/02_reward_model.ipynb)
#
# The base model of notebook 01 says Berlin more often than Paris: it was never told which
# answers people *prefer*. In the article (Anish Dubey, "LLM Alignment: Reward-Based vs
# Reward-Free Methods", 2024), reward-based alignment first teaches a second model to predict
# that. A rater compares two answers $y_w$ (chosen) and $y_l$ (rejected) to a prompt $x$, and a
# **reward model** $r_\phi(x, y)$ (the SFT transformer with a linear head on the last token)
# learns to make the observed choices likely under the **Bradley-Terry** model:
#
# $$P(y_w \succ y_l \mid x) = \sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l)\big), \qquad
# \mathcal{L}(\phi) = -\,\mathbb{E}\,\log \sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l)\big).$$
#
# **Learning objectives.** Describe preference data and a noisy rater; compute the loss of one
# pair by hand; judge a reward model against the best accuracy possible and against the true
# reward; explain why it can be trusted only on the answers its pairs show.

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
import pandas as pd
import torch
from IPython.display import display

from minirlhf import plots, world
from minirlhf.evaluation import (candidate_ranking_agreement, candidate_scores,
                                 margin_calibration, reward_model_report)
from minirlhf.logprobs import response_logprobs
from minirlhf.saved_models import load_base_model
from minirlhf.optimum import ExactEvaluator
from minirlhf.pipeline import train_default_reward_model
from minirlhf.preferences import bayes_optimal_accuracy, default_preferences
from minirlhf.reward import (RewardConfig, RewardModel, bradley_terry_loss,
                             evaluate_reward_model, train_reward_model)
from minirlhf.widgets import labeling_panel
from myst_nb import glue  # stores a number for the docs pages that quote it

# %%
# Settings: the seed of every random step, and the number of CPU threads.
SEED = 0
torch.set_num_threads(1)

sft_model, tokenizer = load_base_model()
FRANCE = world.make_prompt("France")
ANSWERS = {"Paris": world.make_response("France", "correct"),
           "hedge": world.make_response("France", "hedge"),
           "Berlin": world.make_response("France", "wrong", "Berlin")}

# %% [markdown]
# ## 1. Collecting preferences with a simulated rater
#
# Two answers to each prompt are sampled from the SFT model, and `world.SimulatedRater` prefers
# $y_1$ with probability $\sigma\big(r(x, y_1) - r(x, y_2)\big)$, where $r$ is the true reward of
# notebook 01. So it makes mistakes: it picks a wrong city over Paris with probability
# $\sigma(-2) = 0.12$. The default data have 128 pairs per training prompt, 80% for training and
# 20% for testing, with the true rewards kept as extra columns for teaching. (Your own data: any
# `datasets.Dataset` or `.json`/`.jsonl`/`.csv` file with columns `prompt`, `chosen`, `rejected`,
# read by `minirlhf.preferences.load_preferences`.)

# %%
data = default_preferences(seed=SEED, progress=False)
print(data)
pd.DataFrame(data["train"][:6])

# %% [markdown]
# The heat map counts the training pairs by the kind of answer that won (rows) and lost
# (columns); the kinds are notebook 01's, with *malformed* for any other text.

# %%
train = data["train"]
mistakes = sum(c < r for c, r in zip(train["chosen_reward"], train["rejected_reward"]))
print(f"the rater preferred the truly worse answer in {mistakes} of {len(train)} pairs")
bayes = bayes_optimal_accuracy(data["test"])
print(f"best possible accuracy on the test pairs against these noisy labels: {bayes:.3f}")
glue("rater_mistakes", int(mistakes), display=False)
glue("train_pairs", len(train), display=False)
fig = plots.plot_preference_pairs(train)

# %% [markdown]
# Look at the column *wrong*: most pairs pit a wrong city against something better, because
# that is what the SFT model says. The cells below the diagonal are the rater's mistakes. No
# model can predict them, so the **Bayes-optimal accuracy** (the mean of $\max(p, 1-p)$ over
# the pairs, $p$ the rater's probability) is the ceiling for any reward model.

# %% [markdown]
# ## 2. Be the rater yourself
#
# In Jupyter, click through a few pairs; the next cell turns your labels into a `Dataset`.
# Without a browser nothing is clicked, and it falls back to the simulated rater's labels.
# `save_to="my_labels.json"` keeps your labels across restarts.

# %%
panel = labeling_panel(sft_model, tokenizer, n_pairs=10, seed=SEED)
display(panel)

# %%
print(panel.session.summary())
mine = panel.session.labels_or_simulated()
display(mine)

# %% [markdown]
# ## 3. The loss, by hand: Paris against Berlin
#
# Only the *difference* of the two scores matters. With Paris chosen and Berlin rejected, a
# reward model that scores them equally pays $\log 2 = 0.693$ (a coin flip); one that scores
# them like the true reward (+1 and -1) pays $\log(1 + e^{-2}) = 0.127$; one that prefers
# Berlin by as much pays 2.127.

# %%
r_paris = torch.tensor([0.0, 1.0, -1.0])   # three reward models' scores for Paris ...
r_berlin = torch.tensor([0.0, -1.0, 1.0])  # ... and for Berlin
by_hand = -torch.log(torch.sigmoid(r_paris - r_berlin))
library = torch.stack([bradley_terry_loss(p[None], b[None])
                       for p, b in zip(r_paris, r_berlin)])
print("by hand:", [round(x, 3) for x in by_hand.tolist()])
print("library:", [round(x, 3) for x in library.tolist()])
assert torch.allclose(by_hand, library)

# %% [markdown]
# ## 4. Training the reward model
#
# `train_default_reward_model` copies the SFT transformer, puts a zero-initialised linear head
# on the hidden state of the last token (the EOS), and minimises the loss on the training pairs
# (300 steps of 256 pairs). Only the head and the attention layers learn (section 7 says why).

# %%
reward_model, tokenizer, data, history = train_default_reward_model(seed=SEED,
                                                                    progress=False)
keys = ["loss", "accuracy", "margin", "eval/accuracy", "eval/margin", "reward/mean"]
fig = plots.plot_history(history, keys,
                         title="Reward model training (eval/ = held-out pairs)")

# %% [markdown]
# Top row, on the training batches: the loss falls from $\log 2$, the pair accuracy rises from
# 0.5, the mean margin $r_w - r_l$ grows. Bottom row: the held-out accuracy, the number to
# watch, flattens just under the ceiling above. `reward/mean`, the mean score of a batch's
# answers, drifts down, which means nothing: only differences enter the loss.

# %% [markdown]
# ## 5. Does it prefer what the rater prefers?

# %%
scores = dict(zip(ANSWERS, reward_model.score_texts(tokenizer, [FRANCE] * 3,
                                                    list(ANSWERS.values())).tolist()))
for name, answer in ANSWERS.items():
    print(f"{scores[name]:+.2f}  true {world.true_reward(FRANCE, answer):+.1f}  {answer}")
    glue(f"rm_score_{name.lower()}", scores[name], display=False)
assert scores["Paris"] - scores["Berlin"] > 0.5  # Paris clearly above Berlin
countries = world.TRAIN_COUNTRIES
kinds = {"correct": [world.make_response(c, "correct") for c in countries],
         "hedge": [world.make_response(c, "hedge") for c in countries],
         "confusion": [world.make_response(c, "wrong", world.CONFUSION[c])
                       for c in countries]}
prompts = [world.make_prompt(c) for c in countries]
mean = {kind: reward_model.score_texts(tokenizer, prompts, answers).mean().item()
        for kind, answers in kinds.items()}
print("mean over the training countries:", {k: round(v, 2) for k, v in mean.items()})
assert mean["correct"] > mean["hedge"] > mean["confusion"]

# %% [markdown]
# Paris scores clearly above Berlin. For France the hedge even lands above Paris: few France
# pairs compare those two, and the rater picks the hedge in 27% of them ($\sigma(-1)$). Averaged
# over the 20 training countries, the order is the truth's: correct, hedge, then the country's
# common confusion. On the held-out pairs:

# %%
report = reward_model_report(reward_model, tokenizer, data)
print(f"held-out pair accuracy {report['test_accuracy']:.3f}, "
      f"Bayes-optimal {report['bayes_optimal_accuracy']:.3f}, "
      f"ratio {report['accuracy_ratio']:.3f}")
for key in ("test_accuracy", "bayes_optimal_accuracy", "accuracy_ratio"):
    glue(f"rm_{key}", float(report[key]), display=False)
assert report["accuracy_ratio"] > 0.9

# %% [markdown]
# ## 6. Learned versus true reward
#
# Our rater picks with probability $\sigma(r_1 - r_2)$, the very formula the loss fits. So,
# given enough pairs, the fit estimates the true reward itself up to a constant per prompt: on
# held-out pairs the learned margin $r_\phi(x, y_1) - r_\phi(x, y_2)$ should match the true
# margin, not just its sign. (A rater with temperature $\tau$, $\sigma((r_1 - r_2)/\tau)$,
# would divide every margin by $\tau$.)

# %%
calibration = margin_calibration(reward_model, tokenizer, data["test"])
fig = plots.plot_margin_calibration(calibration)
common = [m for m, row in calibration.items() if row["pairs"] >= 20]
print({m: (round(calibration[m]["learned_margin"], 2), calibration[m]["pairs"])
       for m in common})
assert common
assert all(0.35 * m - abs(calibration[m]["learned_margin"] - m) > 0 for m in common)

# %% [markdown]
# The two big dots, where the pairs are, sit on the dashed line (learned margin = true margin);
# the small dots, a few pairs each, are noise. That lets PPO use the learned reward on the scale
# of the true one. But the pairs only show what the SFT model says. Next, all 48 candidate
# answers to France, true reward (x) against learned reward (y): filled points are answers the
# training pairs showed (*seen*), hollow ones answers they never showed. The **ranking
# agreement** is the share of answer pairs with different true reward that the learned reward
# orders the same way (1: all, 0.5: a coin flip).

# %%
france = candidate_scores(reward_model, tokenizer, FRANCE, data["train"])
fig = plots.plot_learned_vs_true_reward(france, title="France: learned vs true reward")
print(f"ranking agreement, France: {report['ranking_agreement_seen']:.2f} among the seen "
      f"answers, {report['ranking_agreement']:.2f} over all 48; all 20 training prompts: "
      f"{report['ranking_agreement_train']:.2f}")
# the same pairs, each weighted by how often two samples of the SFT model are that pair
sft_probs = ExactEvaluator(sft_model, tokenizer, world.prompts("train")).ref_set_probs
weighted = candidate_ranking_agreement(reward_model, tokenizer, world.prompts("train"),
                                       set_probs=sft_probs)
print(f"... each pair weighted by how often SFT samples make it: {weighted:.2f}")
glue("rm_agreement_france_seen", float(report["ranking_agreement_seen"]), display=False)
glue("rm_agreement_france_all", float(report["ranking_agreement"]), display=False)
assert weighted > report["ranking_agreement_train"] + 0.2

# %% [markdown]
# The filled points are ranked almost as the truth ranks them; the hollow purple ones (a hedge
# naming a wrong city, never seen) score on average above the red wrong answers, though their
# true reward is lower. Why:

# %%
# How likely the SFT model is to say each kind of France answer, and how often pairs showed it.
probs = response_logprobs(sft_model, tokenizer, [FRANCE] * 48,
                          france["responses"]).exp()
table = pd.DataFrame({"kind": france["kinds"], "P_sft": probs.numpy(),
                      "seen": france["seen"], "learned": france["learned"]})
table.groupby("kind").agg(answers=("P_sft", "size"), P_sft=("P_sft", "sum"),
                          times_seen=("seen", "sum"))

# %%
# The numbers of this table and the figure above that the docs pages quote (stored, not shown).
by_kind = table.groupby("kind")
glue("france_hedge_wrong_answers", int(by_kind.size()["hedge_wrong"]), display=False)
glue("france_p_sft_hedge_wrong", float(by_kind["P_sft"].sum()["hedge_wrong"]), display=False)
for kind in ("correct", "hedge"):
    glue(f"france_times_seen_{kind}", int(by_kind["seen"].sum()[kind]), display=False)
for kind in ("hedge_wrong", "wrong"):
    glue(f"france_mean_learned_{kind}", float(by_kind["learned"].mean()[kind]), display=False)
moscow = france["responses"].index(world.make_response("France", "wrong", "Moscow"))
glue("rm_score_moscow", float(france["learned"][moscow]), display=False)

# %% [markdown]
# **Lesson: a reward model can be trusted only on the answers its pairs show.** The SFT model
# almost never hedges with a wrong city (`P_sft`), so the rater hardly ever judged such answers,
# and the reward model scores them above plain wrong answers, the reverse of the truth. Weighted
# by how often the SFT model's own samples make each pair, the agreement is high: the reward
# model is right where the policy starts, and guesses where it has never looked. A policy
# optimised against it (notebook 03) is rewarded for drifting into such holes, one face of
# *reward hacking*; the KL penalty keeps the policy where the reward model can be trusted.

# %% [markdown]
# ## 7. What if the backbone stays frozen?
#
# The article notes that the reward model's backbone often stays *mostly frozen* while the
# linear head learns. Here only the head would learn (64 weights and a bias, so 60 steps of 64
# pairs are enough).

# %%
torch.manual_seed(SEED)
frozen = RewardModel.from_base(sft_model, freeze_backbone=True)
config = RewardConfig(steps=60, batch_size=64, seed=SEED, progress=False)
train_reward_model(frozen, tokenizer, data["train"], config)
rows = {}
for name, model in {"attention + head (default)": reward_model,
                    "frozen backbone, head only": frozen}.items():
    accuracy = evaluate_reward_model(model, tokenizer, data["test"])["accuracy"]
    paris, berlin = model.score_texts(tokenizer, [FRANCE] * 2,
                                      [ANSWERS["Paris"], ANSWERS["Berlin"]]).tolist()
    rows[name] = {"held-out accuracy / Bayes": accuracy / bayes,
                  "r(Paris) - r(Berlin)": paris - berlin}
comparison = pd.DataFrame(rows).T
display(comparison.round(3))
accuracy, gap = comparison["held-out accuracy / Bayes"], comparison["r(Paris) - r(Berlin)"]
default, head_only = "attention + head (default)", "frozen backbone, head only"
assert accuracy[head_only] < 0.85
assert accuracy[default] > accuracy[head_only] + 0.1
assert abs(gap[head_only]) < 0.25 < gap[default]

# %% [markdown]
# With a frozen backbone, the last token's hidden state does not say whether the city fits the
# country: the head scores Paris and Berlin alike, and accuracy stays far below the ceiling. The
# attention layers can learn to *match* the city against the country. The default trains them
# and not the whole backbone, because that ranks unseen combinations right more often
# ([defaults](https://github.com/minirlhf/minirlhf/blob/main/docs/defaults.md#reward-model)).

# %% [markdown]
# ## Summary
#
# * Preference data are (prompt, chosen, rejected) triplets, from a simulated rater, from you,
#   or from any data set `load_preferences` accepts.
# * The reward model, the SFT transformer plus a linear head trained with
#   $-\log\sigma(r_w - r_l)$, comes close to the rater's accuracy ceiling and recovers the true
#   reward's margins on the seen answers; elsewhere it guesses. Next: PPO uses it (notebook 03),
#   DPO skips it (notebook 04).
