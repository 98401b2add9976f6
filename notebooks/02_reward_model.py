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
# The base model of notebook 01 answers "What is the capital of France?" with Berlin
# more often than with Paris: it imitates its corpus and was never told which answers
# people *prefer*. In the article this tutorial follows (Anish Dubey, "LLM Alignment:
# Reward-Based vs Reward-Free Methods", 2024), reward-based alignment first teaches a
# second model to predict exactly that:
#
# 1. **Collect preferences.** For each prompt, sample two answers from the SFT model and
#    let a rater pick the better one. Store the triplet $(x, y_w, y_l)$: prompt, winner
#    (*chosen*), loser (*rejected*).
# 2. **Fit a reward model** $r_\phi(x, y)$: the SFT transformer with a linear head on
#    the last token, trained so that the Bradley-Terry probability of the observed
#    choice is high:
#
# $$P(y_w \succ y_l \mid x) = \sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l)\big), \qquad
# \mathcal{L}(\phi) = -\,\mathbb{E}\,
#   \log \sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l)\big).$$
#
# **Learning objectives.** After this notebook you can:
# * describe preference data (prompt, chosen, rejected) and a noisy rater;
# * compute the Bradley-Terry loss of one pair, "Paris" against "Berlin", by hand;
# * train a reward model and judge it: its accuracy against the best any model can
#   reach, and its margins against the true reward;
# * explain why a reward model can only be trusted on answers its preference data show
#   (their *coverage*), and why its backbone must learn.

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
import tempfile

import pandas as pd
import torch
from IPython.display import display

from minirlhf import plots, world
from minirlhf.evaluation import (candidate_ranking_agreement, candidate_scores,
                                 label_scores, margin_calibration, reward_model_report)
from minirlhf.logprobs import response_logprobs
from minirlhf.sampling import generate
from minirlhf.saved_models import load_base_model
from minirlhf.optimum import ExactEvaluator
from minirlhf.pipeline import train_default_reward_model
from minirlhf.preferences import (bayes_optimal_accuracy, default_preferences,
                                  load_preferences)
from minirlhf.reward import (RewardConfig, RewardModel, bradley_terry_loss,
                             evaluate_reward_model, load_reward_model,
                             train_reward_model)
from minirlhf.widgets import labeling_panel
from myst_nb import glue  # stores a number for the docs pages that quote it

# %%
# Settings: the seed of every random step, and the number of CPU threads.
SEED = 0
torch.set_num_threads(2)

sft_model, tokenizer = load_base_model()
FRANCE = world.make_prompt("France")
ANSWERS = {"Paris": world.make_response("France", "correct"),
           "hedge": world.make_response("France", "hedge"),
           "Berlin": world.make_response("France", "wrong", "Berlin")}

# %% [markdown]
# ## 1. Collecting preferences with a simulated rater
#
# A person is slow, so the tutorial's default rater is simulated: `world.SimulatedRater`
# prefers $y_1$ over $y_2$ with probability $\sigma\big(r(x, y_1) - r(x, y_2)\big)$,
# where $r$ is the toy world's ground-truth reward (+1 correct, 0 hedging, -1 wrong
# city, -1.5 hedging with a wrong city, -2 anything else). It is a *Bradley-Terry* rater
# with temperature 1, so it makes mistakes: it picks a wrong city over Paris with
# probability $\sigma(-2) = 0.12$. The default data have 128 pairs per training prompt,
# split 80% / 20% into training and test pairs. We keep the true rewards as extra
# columns, for teaching only.

# %%
data = default_preferences(seed=SEED, progress=False)
print(data)
pd.DataFrame(data["train"][:6])

# %% [markdown]
# The heat map below counts the training pairs by the **kind** of answer that won (rows)
# and lost (columns), with the kinds of notebook 01: *correct* (the right capital, said
# plainly), *wrong* (another city), *hedge* ("There are several capitals, but ... is the
# official capital." with the right city), *hedge_wrong* (the hedge with a wrong city)
# and *malformed* (anything else).

# %%
train = data["train"]
mistakes = sum(c < r for c, r in zip(train["chosen_reward"], train["rejected_reward"]))
print(f"the rater preferred the truly worse answer in {mistakes} of {len(train)} "
      "training pairs")
bayes = bayes_optimal_accuracy(data["test"])
print(f"best possible accuracy on the test pairs against these noisy labels: "
      f"{bayes:.3f}")
glue("rater_mistakes", int(mistakes), display=False)
glue("train_pairs", len(train), display=False)
fig = plots.plot_preference_pairs(train)

# %% [markdown]
# Most pairs pit a wrong city against the correct answer or a hedge, because that is
# what the SFT model says. Below the diagonal are the rater's "mistakes". No model can
# predict those: the **Bayes-optimal accuracy** (mean of $\max(p, 1-p)$ over the pairs,
# with $p$ the rater's probability) is the ceiling for any reward model.
#
# ## 2. Be the rater yourself
#
# Run the next cell in Jupyter and click through a few pairs; then run the cell after it
# to get your labels as a `Dataset` of the same format. The stored notebook (and the
# docs) show a static picture of the first pair; run top to bottom without a browser,
# nothing is clicked, and the cell after the panel says so and falls back to the
# simulated rater's labels of the same pairs. To keep your labels when the kernel
# restarts, give the panel a file, `labeling_panel(..., save_to="my_labels.json")`:
# every click is saved at once, and running the cell again resumes where you stopped.

# %%
panel = labeling_panel(sft_model, tokenizer, n_pairs=10, seed=SEED)
display(panel)

# %%
print(panel.session.summary())
mine = panel.session.labels_or_simulated()
display(mine)

# %% [markdown]
# ## 3. Bringing other preference data
#
# Any `datasets.Dataset` or local `.json` / `.jsonl` / `.csv` file with string columns
# `prompt`, `chosen`, `rejected` works; `load_preferences` checks it and names the first
# problem it finds.

# %%
rows = [{"question": FRANCE, "good": ANSWERS["Paris"],
         "bad": "The capital of France is Rome."}]
names = {"question": "prompt", "good": "chosen", "bad": "rejected"}
print(load_preferences(rows, columns=names)[0])
for bad in ([{"prompt": FRANCE, "chosen": ANSWERS["Paris"]}],
            [{"prompt": FRANCE, "chosen": "Paris.", "rejected": "Paris."}]):
    try:
        load_preferences(bad)
    except ValueError as error:
        print("ValueError:", error)

# %% [markdown]
# ## 4. The loss, by hand: Paris against Berlin
#
# Only the *difference* of the two scores matters. Take the article's pair: "Paris"
# chosen, "Berlin" rejected. A reward model that scores them equally pays
# $\log 2 = 0.693$ (a coin flip); one that scores them like the true reward (+1 and -1,
# a margin of 2) pays $\log(1 + e^{-2}) = 0.127$; one that prefers Berlin by the same
# margin pays 2.127.

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
# ## 5. Training the reward model
#
# `train_default_reward_model` does the whole stage: it copies the SFT transformer, puts
# a zero-initialised linear head on the hidden state of the last token (the EOS), and
# minimises the loss above on the training pairs: 300 steps of 256 pairs (the
# `RewardConfig` defaults). Only the head and the backbone's attention layers learn;
# section 8 shows what happens when the backbone stays frozen.

# %%
reward_model, tokenizer, data, history = train_default_reward_model(seed=SEED,
                                                                    progress=False)
print(f"trained on {len(data['train'])} pairs, {len(history)} log records")
keys = ["loss", "accuracy", "margin", "eval/accuracy", "eval/margin", "reward/mean"]
fig = plots.plot_history(history, keys,
                         title="Reward model training (eval/ = held-out pairs)")

# %% [markdown]
# ## 6. Does it prefer what the rater prefers?
#
# The article's three answers to the France prompt, and the Bradley-Terry loss of the
# Paris-versus-Berlin pair under the trained reward model, by hand and with the library:

# %%
scores = dict(zip(ANSWERS, reward_model.score_texts(tokenizer, [FRANCE] * 3,
                                                    list(ANSWERS.values())).tolist()))
for name, answer in ANSWERS.items():
    true = world.true_reward(FRANCE, answer)
    print(f"{scores[name]:+.2f}  true {true:+.1f}  {answer}")
margin = scores["Paris"] - scores["Berlin"]
by_hand = -torch.log(torch.sigmoid(torch.tensor(margin)))
library = bradley_terry_loss(torch.tensor([scores["Paris"]]),
                             torch.tensor([scores["Berlin"]]))
print(f"Paris vs Berlin: margin {margin:+.2f}, loss by hand {by_hand:.3f}, "
      f"library {library:.3f} (a coin flip: 0.693)")
assert torch.allclose(by_hand, library)
assert margin > 0.5  # Paris clearly above Berlin
for name, score in scores.items():
    glue(f"rm_score_{name.lower()}", float(score), display=False)

# %% [markdown]
# Paris scores clearly above Berlin. Where the hedge lands is less certain (for France,
# at this seed, the learned reward even puts it above Paris): only a few pairs of the
# data compare the hedge with Paris directly for France (counted below), and the rater
# picks the hedge in 27% of such pairs ($\sigma(-1)$). Is the mistake the model's or the
# data's? `label_scores` fits one free score per answer to France's own rated pairs, with
# no network at all: what the labels alone say. Over all 20 training countries the
# reward model has much more evidence, and there it orders the three kinds as the truth
# does: the correct capital above the hedge above the country's common confusion.

# %%
direct = sum(p == FRANCE and {c, r} == {ANSWERS["Paris"], ANSWERS["hedge"]}
             for p, c, r in zip(train["prompt"], train["chosen"], train["rejected"]))
print(f"France pairs comparing Paris with the hedge: {direct} of {len(train)}")
alone = dict(zip(ANSWERS, label_scores(train, FRANCE, list(ANSWERS.values()))))
print("France's labels alone:", {name: round(value, 2) for name, value in alone.items()})
assert alone["Paris"] > alone["Berlin"]
countries = world.TRAIN_COUNTRIES
kinds = {"correct": [world.make_response(c, "correct") for c in countries],
         "hedge": [world.make_response(c, "hedge") for c in countries],
         "confusion": [world.make_response(c, "wrong", world.CONFUSION[c])
                       for c in countries]}
prompts = [world.make_prompt(c) for c in countries]
mean = {kind: reward_model.score_texts(tokenizer, prompts, answers).mean().item()
        for kind, answers in kinds.items()}
print("mean learned reward over the training countries:",
      {kind: round(value, 2) for kind, value in mean.items()})
assert mean["correct"] > mean["hedge"] > mean["confusion"]

# %% [markdown]
# At seed 0, France's labels alone put the hedge above Paris too: the hedge beat Berlin
# in every pair that compared them, while Paris lost some. The reward model is faithful
# to its data, and with about a hundred noisy labels a prompt's data can be wrong. Over
# five seeds (`benchmarks/reward_model.py`) the reward model orders France's three
# answers as its labels' fit does at every seed; with twice the pairs, both are right at
# all five (`docs/defaults.md`).

# %%
report = reward_model_report(reward_model, tokenizer, data)
print(f"held-out pair accuracy {report['test_accuracy']:.3f}, "
      f"Bayes-optimal {report['bayes_optimal_accuracy']:.3f}, "
      f"ratio {report['accuracy_ratio']:.3f}")
print("without label noise (expected agreement with the rater): "
      f"ratio {report['expected_accuracy_ratio']:.3f}")
for key in ("test_accuracy", "bayes_optimal_accuracy", "accuracy_ratio"):
    glue(f"rm_{key}", float(report[key]), display=False)
assert report["accuracy_ratio"] > 0.9

# %% [markdown]
# ## 7. Learned versus true reward
#
# With a temperature-1 rater, a Bradley-Terry fit estimates the true reward itself, up
# to a constant per prompt (only differences enter the loss). So on held-out pairs the
# learned margin $r_\phi(x, y_1) - r_\phi(x, y_2)$ should match the true margin
# $r(x, y_1) - r(x, y_2)$, not just its sign, wherever there are enough pairs to average
# over:

# %%
calibration = margin_calibration(reward_model, tokenizer, data["test"])
fig = plots.plot_margin_calibration(calibration)
for true_margin, row in calibration.items():
    print(f"true margin {true_margin:.1f}: mean learned margin "
          f"{row['learned_margin']:.2f} ({row['pairs']} pairs)")
common = [m for m, row in calibration.items() if row["pairs"] >= 20]
assert common
assert all(0.35 * m - abs(calibration[m]["learned_margin"] - m) > 0 for m in common)

# %% [markdown]
# That is what lets PPO use the learned reward on the scale of the true one. But the
# pairs come from the SFT model, so they only cover what the SFT model says. The next
# figure shows all 48 candidate answers to the France prompt, with their true reward (x)
# and learned reward (y), colored by kind: filled points are answers that the training
# pairs showed (*seen*), hollow points answers they never showed. The **ranking
# agreement** is the share of answer pairs with different true reward that the learned
# reward orders the same way (1 = every pair in the right order, 0.5 = a coin flip).

# %%
france = candidate_scores(reward_model, tokenizer, FRANCE, data["train"])
fig = plots.plot_learned_vs_true_reward(france, title="France: learned vs true reward")
seen = sum(n > 0 for n in france["seen"])
print(f"{seen} of 48 candidates appear in the training pairs for France")
print("ranking agreement, France: "
      f"{report['ranking_agreement_seen']:.2f} among the seen answers, "
      f"{report['ranking_agreement']:.2f} over all 48")
print("ranking agreement over all candidates of the 20 training prompts: "
      f"{report['ranking_agreement_train']:.2f}")
# the same pairs, each weighted by how often two samples of the SFT model are that pair
sft_probs = ExactEvaluator(sft_model, tokenizer, world.prompts("train")).ref_set_probs
weighted = candidate_ranking_agreement(reward_model, tokenizer, world.prompts("train"),
                                       set_probs=sft_probs)
print(f"... each pair weighted by how often SFT samples make it: {weighted:.2f}")
glue("rm_agreement_france_seen", float(report["ranking_agreement_seen"]), display=False)
glue("rm_agreement_france_all", float(report["ranking_agreement"]), display=False)
assert weighted > report["ranking_agreement_train"] + 0.2

# %%
# Why the hollow points are guesses: how likely the SFT model is to say each kind of
# France answer, and how often the training pairs showed it.
probs = response_logprobs(sft_model, tokenizer, [FRANCE] * 48,
                          france["responses"]).exp()
table = pd.DataFrame({"kind": france["kinds"], "P_sft": probs.numpy(),
                      "seen": france["seen"]})
table.groupby("kind").agg(answers=("P_sft", "size"), P_sft=("P_sft", "sum"),
                          times_seen=("seen", "sum"))

# %%
# The numbers of this table and the figure above that the docs pages quote (stored, not shown).
by_kind = table.assign(learned=france["learned"]).groupby("kind")
glue("france_hedge_wrong_answers", int(by_kind.size()["hedge_wrong"]), display=False)
for kind in ("correct", "hedge", "hedge_wrong", "wrong"):
    glue(f"france_p_sft_{kind}", float(by_kind["P_sft"].sum()[kind]), display=False)
    glue(f"france_times_seen_{kind}", int(by_kind["seen"].sum()[kind]), display=False)
    glue(f"france_mean_learned_{kind}", float(by_kind["learned"].mean()[kind]), display=False)
moscow = france["responses"].index(world.make_response("France", "wrong", "Moscow"))
glue("rm_score_moscow", float(france["learned"][moscow]), display=False)
glue("france_times_seen_moscow", int(france["seen"][moscow]), display=False)

# %% [markdown]
# **Lesson: a reward model is only as good as the coverage of its preference data.** The
# reward model orders the answers it has seen well, but over all candidate answers its
# ranking agreement is far from 1. The SFT model hedges with a *wrong* city almost never
# (see `P_sft` above), so the rater hardly ever judged such answers and the reward model
# did not learn how bad they are: it scores hedges naming a wrong city above plain wrong
# answers, the reverse of the truth (-1.5 against -1). The same goes for wrong cities
# that the SFT model rarely names: their scores are guesses. Weighted by how often the
# SFT model's own samples make each pair, the agreement is high: the reward model is
# right where the policy starts, and guesses where it has never looked. A policy
# optimised against this reward model (notebook 03, PPO) would be rewarded for drifting
# into such holes, which is one face of *reward hacking*; the KL penalty that keeps the
# policy near the SFT model is what keeps it inside the region where the reward model
# can be trusted.
#
# ## 8. What if the backbone stays frozen?
#
# The article notes that the reward model's backbone often stays *mostly frozen* and the
# linear head does most of the learning. Here only the head would learn (65 parameters:
# 64 weights and a bias). The head has so few parameters that a short run is enough to
# train it: 60 steps of 64 pairs.

# %%
torch.manual_seed(SEED)
frozen = RewardModel.from_base(sft_model, freeze_backbone=True)
config = RewardConfig(steps=60, batch_size=64, seed=SEED, progress=False)
frozen_history = train_reward_model(frozen, tokenizer, data["train"], config)
rows = {}
for name, model in {"attention + head (default)": reward_model,
                    "frozen backbone, head only": frozen}.items():
    accuracy = evaluate_reward_model(model, tokenizer, data["test"])["accuracy"]
    paris, berlin = model.score_texts(tokenizer, [FRANCE] * 2,
                                      [ANSWERS["Paris"], ANSWERS["Berlin"]]).tolist()
    rows[name] = {"trained parameters": sum(p.numel() for p in model.parameters()
                                            if p.requires_grad),
                  "held-out accuracy / Bayes": accuracy / bayes,
                  "r(Paris) - r(Berlin)": paris - berlin}
comparison = pd.DataFrame(rows).T.astype({"trained parameters": int})
comparison.round(3)

# %%
accuracy = comparison["held-out accuracy / Bayes"]
gap = comparison["r(Paris) - r(Berlin)"]
default, head_only = "attention + head (default)", "frozen backbone, head only"
assert accuracy[head_only] < 0.85
assert accuracy[default] > accuracy[head_only] + 0.1
assert abs(gap[head_only]) < 0.25 < gap[default]

# %% [markdown]
# With a frozen backbone, the hidden state of the last token of this small SFT model
# does not say whether the city fits the country: the head gives Paris and Berlin almost
# the same score for France, and held-out accuracy stays far below the ceiling. Letting
# the backbone's attention layers learn (they can *match* the city against the country)
# fixes that, while the SFT model's MLPs and embeddings keep their weights. Why the
# default trains the attention layers rather than the whole backbone is explained in the
# docs page "How the defaults were found".
#
# ## 9. Scale, normalisation, saving
#
# PPO (notebook 03) uses the learned reward in place of the true one, so the default
# keeps its scale: with a temperature-1 rater the learned reward differences estimate
# the true ones. Scores can be normalised to mean 0 and standard deviation 1 on
# reference samples if a method wants that; the shift and scale are buffers of the model,
# so saving writes them too (safetensors, no pickle). Below, a saved and reloaded copy
# is normalised.

# %%
prompts = world.prompts("train") * 10
samples = generate(sft_model, tokenizer, prompts,
                   generator=torch.Generator().manual_seed(SEED))
raw = reward_model.score_texts(tokenizer, prompts, samples["responses"])
with tempfile.TemporaryDirectory() as folder:
    reward_model.save(f"{folder}/rm", tokenizer)
    copy, copy_tokenizer = load_reward_model(f"{folder}/rm")
copy.normalize(raw)
scaled = copy.score_texts(copy_tokenizer, prompts, samples["responses"])
print(f"raw scores: mean {raw.mean():+.2f}, std {raw.std():.2f}")
print(f"normalised: mean {scaled.mean():+.2f}, std {scaled.std():.2f}")
assert torch.allclose(scaled, (raw - raw.mean()) / raw.std(), atol=1e-4)

# %% [markdown]
# ## Summary
#
# * Preference data are triplets (prompt, chosen, rejected) in a `datasets.Dataset`; the
#   rater can be simulated (Bradley-Terry, noisy), a person (the labeling panel), or any
#   data set that `load_preferences` accepts.
# * The reward model is the SFT transformer plus a linear head on the last token,
#   trained with $-\log\sigma(r_w - r_l)$. It comes close to the noisy rater's accuracy
#   ceiling on held-out pairs and scores Paris well above Berlin.
# * It recovers the true reward up to a constant where the data cover the answers, and
#   only guesses elsewhere. Next: use it as the reward of PPO (notebook 03), or skip it
#   altogether with DPO (notebook 04).
