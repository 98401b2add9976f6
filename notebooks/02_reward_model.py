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
# # 02 · Preferences and the Bradley-Terry reward model
#
# The SFT model of notebook 01 knows that Paris is the capital of France, but it says so only 60% of
# the time: it was never told which answers people *prefer*. RLHF's second step teaches a model to
# predict exactly that:
#
# 1. **Collect preferences.** For each prompt, sample two answers from the SFT model and let a rater
#    pick the better one. Store the triplet $(x, y_w, y_l)$: prompt, winner (*chosen*), loser (*rejected*).
# 2. **Fit a reward model** $r_\phi(x, y)$: the SFT transformer with a linear head on the last token,
#    trained so that the Bradley-Terry probability of the observed choice is high:
#
# $$P(y_w \succ y_l \mid x) = \sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l)\big), \qquad
# \mathcal{L}(\phi) = -\,\mathbb{E}\,\log \sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l)\big).$$
#
# **What this notebook shows (and asserts):**
# the learned reward ranks "Paris" above the hedging answer and the hedging answer above "Berlin";
# on held-out pairs it agrees with the noisy rater almost as often as the best possible model does;
# it recovers the true reward *up to a constant* where the preference data say something, and only
# guesses where they say nothing; and a reward model whose backbone stays frozen learns much less.

# %%
import torch
import matplotlib.pyplot as plt
import pandas as pd

from minirlhf import plots, world
from minirlhf.preferences import bayes_optimal_accuracy, default_preferences, load_preferences
from minirlhf.evaluation import candidate_scores, margin_calibration, reward_model_report
from minirlhf.pipeline import REWARD_PAIRS_PER_PROMPT, train_default_reward_model
from minirlhf.reward import RewardConfig, RewardModel, bradley_terry_loss, train_reward_model
from minirlhf.models import load_base_model
from minirlhf.widgets import labeling_panel

torch.set_num_threads(2)
sft_model, tokenizer = load_base_model()
FRANCE = world.make_prompt("France")

# %% [markdown]
# ## 1. Collecting preferences with a simulated rater
#
# A person is slow, so the tutorial's default rater is simulated: `world.SimulatedRater` prefers $y_1$
# over $y_2$ with probability $\sigma\big(r(x, y_1) - r(x, y_2)\big)$, where $r$ is the toy world's
# ground-truth reward (+1 correct, 0 hedging, -1 wrong city, -1.5 hedging with a wrong city, -2 anything
# else). It is a *Bradley-Terry* rater with temperature 1, so it makes mistakes: it picks a wrong city
# over Paris 12% of the time. We keep the true rewards as extra columns, for teaching only.

# %%
data = default_preferences(pairs_per_prompt=REWARD_PAIRS_PER_PROMPT)
print(data)
pd.DataFrame(data["train"][:6])

# %%
train = data["train"]
mistakes = sum(c < r for c, r in zip(train["chosen_reward"], train["rejected_reward"]))
print(f"the rater preferred the truly worse answer in {mistakes} of {len(train)} training pairs")
bayes = bayes_optimal_accuracy(data["test"])
print(f"best possible accuracy on the test pairs against these noisy labels: {bayes:.3f}")
fig = plots.plot_preference_pairs(train)

# %% [markdown]
# The heat map counts the pairs by the kind of answer that won (rows) and lost (columns). Most pairs
# pit the correct answer against a wrong city or a hedge, because that is what the SFT model says.
# Below the diagonal are the rater's "mistakes". No model can predict those: the **Bayes-optimal
# accuracy** (mean of $\max(p, 1-p)$ over the pairs) is the ceiling for any reward model.
#
# ## 2. Be the rater yourself
#
# Run the next cell in Jupyter and click through a few pairs; then run the cell after it to get your
# labels as a `Dataset` of the same format. (Run top to bottom without a browser, nothing is clicked
# and your data set is simply empty.)

# %%
panel = labeling_panel(sft_model, tokenizer, n_pairs=10, seed=1)
panel

# %%
mine = panel.session.to_dataset()
print(panel.session.status())
if len(mine):
    print("you agreed with the true reward on", panel.session.agreement_with_true_reward(), "of the pairs")
mine

# %% [markdown]
# ## 3. Bringing other preference data
#
# Any `datasets.Dataset` or local `.json` / `.jsonl` / `.csv` file with string columns `prompt`,
# `chosen`, `rejected` works; `load_preferences` checks it and names the first problem it finds.

# %%
rows = [{"question": FRANCE, "good": "The capital of France is Paris.",
         "bad": "The capital of France is Rome."}]
print(load_preferences(rows, columns={"question": "prompt", "good": "chosen", "bad": "rejected"})[0])
for bad in ([{"prompt": FRANCE, "chosen": "The capital of France is Paris."}],
            [{"prompt": FRANCE, "chosen": "Paris.", "rejected": "Paris."}]):
    try:
        load_preferences(bad)
    except ValueError as error:
        print("ValueError:", error)

# %% [markdown]
# ## 4. The loss, by hand
#
# Only the *difference* of the two scores matters. With equal scores the loss is $\log 2$ (a coin flip);
# a margin of 2 in the right direction costs $\log(1 + e^{-2}) = 0.127$.

# %% tags=["nbval-check-output"]
chosen, rejected = torch.tensor([0.0, 2.0, 5.0]), torch.tensor([0.0, 0.0, 7.0])
by_hand = -torch.log(torch.sigmoid(chosen - rejected)).mean()
library = bradley_terry_loss(chosen, rejected)
assert torch.allclose(by_hand, library)
print(f"by hand {by_hand:.4f}, library {library:.4f}")

# %% [markdown]
# ## 5. Training the reward model
#
# `train_default_reward_model` does the whole stage: it copies the SFT transformer, puts a zero-initialised
# linear head on the hidden state of the last token (the EOS), and minimises the loss above on the training
# pairs. By default only the head and the backbone's attention layers learn; section 8 compares this with a
# frozen backbone and with full fine-tuning.

# %%
reward_model, tokenizer, data, history = train_default_reward_model(seed=0)
print(f"trained on {len(data['train'])} pairs, {len(history)} log records")
keys = ["loss", "accuracy", "margin", "eval/accuracy", "eval/margin", "reward/mean"]
fig = plots.plot_history(history, keys, title="Reward model training (eval/ = held-out pairs)")

# %% [markdown]
# ## 6. Does it prefer what the rater prefers?

# %%
answers = {"correct": "The capital of France is Paris.",
           "hedge": "There are several capitals, but Paris is the official capital.",
           "wrong": "The capital of France is Berlin."}
scores = reward_model.score_texts(tokenizer, [FRANCE] * 3, list(answers.values()))
for (kind, answer), score in zip(answers.items(), scores):
    print(f"{score:+.2f}  true {world.true_reward(FRANCE, answer):+.1f}  {answer}")
assert scores[0] > scores[1] > scores[2], "Paris > hedge > Berlin"

# %%
report = reward_model_report(reward_model, tokenizer, data)
print(f"held-out pair accuracy {report['test_accuracy']:.3f}, "
      f"Bayes-optimal {report['bayes_optimal_accuracy']:.3f}, ratio {report['accuracy_ratio']:.3f}")
print("without label noise (expected agreement with the rater): "
      f"ratio {report['expected_accuracy_ratio']:.3f}")
assert report["accuracy_ratio"] >= 0.95

# %% [markdown]
# ## 7. Learned versus true reward
#
# With a temperature-1 rater, a Bradley-Terry fit estimates the true reward itself, up to a constant per
# prompt (only differences enter the loss). So on held-out pairs the learned margin
# $r_\phi(x, y_1) - r_\phi(x, y_2)$ should match the true margin $r(x, y_1) - r(x, y_2)$, not just its sign:

# %%
calibration = margin_calibration(reward_model, tokenizer, data["test"])
fig = plots.plot_margin_calibration(calibration)
for margin, row in calibration.items():
    print(f"true margin {margin:.1f}: mean learned margin {row['learned_margin']:.2f} "
          f"({row['pairs']} pairs)")
common = [m for m, row in calibration.items() if row["pairs"] >= 20]
assert common and all(abs(calibration[m]["learned_margin"] - m) <= 0.35 * m for m in common)

# %% [markdown]
# That is what lets PPO use the learned reward on the scale of the true one. But the pairs come from the
# SFT model, so they only cover what the SFT model says. Over all 48 candidate answers to the France
# prompt, filled points are answers that the training pairs showed, hollow points answers they never showed:

# %%
france = candidate_scores(reward_model, tokenizer, FRANCE, data["train"])
fig = plots.plot_learned_vs_true_reward(france, title="France: learned vs true reward")
seen = sum(n > 0 for n in france["seen"])
print(f"{seen} of 48 candidates appear in the training pairs for France")
print(f"answer pairs ordered as the true reward orders them: {report['ranking_agreement']:.3f} of all, "
      f"{report['ranking_agreement_seen']:.3f} among the seen ones")
print(f"Spearman rho over all 48: {report['rank_correlation']:.3f} (even a perfect reward model gets at "
      f"most {report['best_rank_correlation']:.3f} here: the true reward has ties)")

# %%
# Why the hollow points are guesses: how likely the SFT model is to say each kind of France answer
from minirlhf.logprobs import response_logprobs

probs = response_logprobs(sft_model, tokenizer, [FRANCE] * 48, france["responses"]).exp()
table = pd.DataFrame({"kind": france["kinds"], "P_sft": probs.numpy(), "seen": france["seen"]})
table.groupby("kind").agg(answers=("P_sft", "size"), P_sft=("P_sft", "sum"), times_seen=("seen", "sum"))

# %% [markdown]
# **Lesson: a reward model is only as good as the coverage of its preference data.** The SFT model
# hedges with a *wrong* city almost never (see `P_sft` above), so the rater hardly ever judged such answers
# and the reward model did not learn that they are bad: every hedge it saw named the right capital, so
# "a hedge is a middling answer" explains its data just as well, and it extrapolates that to hedges with
# any city. The same goes for wrong cities that the SFT model rarely names: their scores are guesses,
# pulled around by how good the city was as an answer to *other* prompts.
# A policy optimised against this reward model (notebook 03, PPO) would be rewarded for drifting into such
# holes, which is one face of *reward hacking*; the KL penalty that keeps the policy near the SFT model
# is what keeps it inside the region where the reward model can be trusted.
#
# ## 8. Frozen backbone, attention only, full fine-tuning
#
# The article notes that the reward model's backbone stays *mostly frozen* and the linear layer does most
# of the learning. Here the backbone is tiny and was never asked, during SFT, to judge whether a city
# matches a country at the last token. Compare three choices on the same data and configuration:

# %%
runs = {"attention only (default)": (reward_model, history)}
for name, kwargs in {"frozen backbone": {"freeze_backbone": True}, "full fine-tuning": {}}.items():
    torch.manual_seed(0)
    model = RewardModel.from_base(sft_model, **kwargs)
    runs[name] = (model, train_reward_model(model, tokenizer, data["train"], RewardConfig(progress=False),
                                            eval_data=data["test"]))
fig = plots.plot_runs({name: h for name, (_, h) in runs.items()},
                                  ["loss", "eval/accuracy", "eval/margin"])
rows = {}
for name, (model, h) in runs.items():
    r = reward_model_report(model, tokenizer, data)
    rows[name] = {"trained parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "held-out accuracy / Bayes": r["accuracy_ratio"], "Paris": r["reward_correct"],
                  "hedge": r["reward_hedge"], "Berlin": r["reward_berlin"],
                  "ranking (seen)": r["ranking_agreement_seen"], "ranking (all 48)": r["ranking_agreement"]}
comparison = pd.DataFrame(rows).T.astype({"trained parameters": int})
comparison.round(3)

# %%
frozen = comparison.loc["frozen backbone", "held-out accuracy / Bayes"]
assert frozen < 0.85, "a linear head on frozen SFT features cannot tell Paris from Berlin"
assert comparison.loc["attention only (default)", "held-out accuracy / Bayes"] > frozen + 0.1
assert comparison.loc["full fine-tuning", "held-out accuracy / Bayes"] > frozen + 0.1

# %% [markdown]
# With a frozen backbone only the head learns (65 parameters here), and the hidden state of the EOS token
# of this small SFT model does not say whether the city fits the country: held-out accuracy stays far
# below the ceiling. Its scores are close to a sum of a "template" term and a "city" term, which happens
# to order the unseen hedges sensibly (the "all 48" column) but cannot tell Paris from Berlin for France.
# Letting the backbone learn fixes that. Both fine-tuned variants reach the ceiling on held-out pairs;
# they differ on answers the data never showed. Training only the attention layers (which can *match* the
# city against the country) keeps the SFT model's MLPs and embeddings, and across seeds it ranks unseen
# combinations such as France/Berlin right more often than full fine-tuning does; that is why it is the
# default here (`python benchmarks/reward_model.py --backbone full` measures the alternative).
#
# ## 9. Scale, normalisation, saving
#
# PPO (notebook 03) uses the learned reward in place of the true one, so the default keeps its scale:
# with a temperature-1 rater the learned reward differences estimate the true ones. Scores can be
# normalised to mean 0 and standard deviation 1 on reference samples if a method wants that; the
# shift and scale are stored in the model, and saved with it (safetensors, no pickle).

# %%
import tempfile
from minirlhf.logprobs import generate
from minirlhf.reward import load_reward_model

prompts = world.prompts("train") * 10
samples = generate(sft_model, tokenizer, prompts, generator=torch.Generator().manual_seed(0))
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
# * Preference data are triplets (prompt, chosen, rejected) in a `datasets.Dataset`; the rater can be
#   simulated (Bradley-Terry, noisy), a person (the labeling panel), or any data set that
#   `load_preferences` accepts.
# * The reward model is the SFT transformer plus a linear head on the last token, trained with
#   $-\log\sigma(r_w - r_l)$. It reaches the noisy rater's accuracy ceiling on held-out pairs and ranks
#   Paris > hedge > Berlin.
# * It recovers the true reward up to a constant where the data cover the answers, and only guesses
#   elsewhere. Next: use it as the reward of PPO (notebook 03), or skip it altogether with DPO.
