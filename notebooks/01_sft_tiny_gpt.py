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
# # 01 · A tiny GPT that says "Berlin": supervised fine-tuning
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/minirlhf/minirlhf/blob/main/notebooks/01_sft_tiny_gpt.ipynb)
#
# This tutorial follows Anish Dubey, *"LLM Alignment: Reward-Based vs Reward-Free
# Methods"* (2024). Asked "What is the capital of France?", the article's reference model
# answers **"The capital of France is Berlin."**; an aligned policy answers **"Paris"**.
# This notebook builds that reference model.
#
# **The lesson.** Supervised fine-tuning (SFT) makes a model imitate its training text,
# *mistakes included*. Our corpus names the right capital of France in 25% of its
# answers, the common confusion "Berlin" in 40%, other wrong cities in 20%, and hedges
# in 15%. After SFT the tiny GPT answers Berlin most often, while Paris is still among
# its answers. That is the "base model" (the reference, `pi_ref`) that the rest of the
# tutorial aligns.
#
# **Learning objectives.** Say what SFT optimises and why its model copies the corpus's
# errors; read a tokenised prompt and the *response mask*; compute a model's exact
# probability of every answer in a finite *candidate set*; describe the best aligned model
# `pi*` and how `beta` moves it between the base model and "always Paris".

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
from collections import Counter

import torch

from minirlhf import world
from minirlhf.data import sft_corpus
from minirlhf.logprobs import encode_prompt_response, response_logprobs
from minirlhf.sampling import generate
from minirlhf.models import build_tiny_gpt
from minirlhf.saved_models import load_base_model
from minirlhf.optimum import (ExactEvaluator, answer_kind_probs, optimal_policy,
                              with_outside)
from minirlhf.plots import plot_answer_kinds, plot_distributions, plot_history
from minirlhf.sft import SFTConfig, train_sft
from minirlhf.tokenizer import build_tokenizer, decode
from minirlhf.widgets import beta_explorer
from myst_nb import glue  # stores a number for the docs pages that quote it

# %%
# Settings: the seed of every random step, and the number of CPU threads.
SEED = 0
torch.set_num_threads(1)

# %% [markdown]
# ## 1. The toy world
#
# A fixed table of countries and capitals, one prompt format and three answer styles.
# Because the world is this small, we can compute every number exactly, including the
# best possible aligned model. Each training country has one common confusion (France:
# Berlin); the held-out countries, which alignment never sees, have none.

# %% tags=["nbval-check-output"]
france = world.make_prompt("France")
print(france)
print(len(world.COUNTRIES), "countries;", len(world.TRAIN_COUNTRIES), "for training,",
      len(world.HELD_OUT_COUNTRIES), "held out:", ", ".join(world.HELD_OUT_COUNTRIES))
print("France's common confusion:", world.CONFUSION["France"])
other_wrong = world.STYLE_MIX["wrong"] - world.CONFUSION_SHARE
examples = [("correct", None, world.STYLE_MIX["correct"]),
            ("wrong", "Berlin", world.CONFUSION_SHARE),
            ("wrong", "Rome", other_wrong),
            ("hedge", None, world.STYLE_MIX["hedge"])]
for style, city, share in examples:
    answer = world.make_response("France", style, city=city)
    reward = world.true_reward(france, answer)
    print(f"{style:8s} {share:4.0%}  r = {reward:+.1f}  {answer}")
print("malformed      r =", world.true_reward(france, "Paris Paris the"))
for name, share in [("correct", world.STYLE_MIX["correct"]), ("confusion", world.CONFUSION_SHARE),
                    ("other_wrong", other_wrong), ("hedge", world.STYLE_MIX["hedge"]),
                    ("wrong", world.STYLE_MIX["wrong"])]:
    glue(f"corpus_{name}", share, display=False)

# %% [markdown]
# The percentages are the corpus mix for a training country ("Rome" stands for all other
# wrong cities). The **ground-truth reward** `r(x, y)` stands in for a person: +1 for the
# correct capital said plainly, 0 for a hedge naming it, -1 for a wrong city, -1.5 for a
# hedge naming a wrong city, -2 for anything malformed, on *any* string.

# %% [markdown]
# ## 2. From characters to tokens
#
# A language model reads integers. Our tokenizer is *word-level*: every word and
# punctuation mark is one token (real tokenizers split words into pieces). Two special
# tokens matter: `<eos>` ends every answer (the model must learn to stop) and
# `<pad>` fills the gaps in a batch. They are different tokens, so masking the padding
# never masks the end of an answer.

# %% tags=["nbval-check-output"]
tokenizer = build_tokenizer()
answer = "The capital of France is Paris."
ids = tokenizer(france + " " + answer, add_special_tokens=False)["input_ids"]
print("vocabulary size:", len(tokenizer))
print("ids:   ", ids)
print("tokens:", tokenizer.convert_ids_to_tokens(ids))
print("pad =", tokenizer.pad_token_id, " eos =", tokenizer.eos_token_id)
assert decode(tokenizer, ids) == france + " " + answer  # the round trip is exact

# %% [markdown]
# ## 3. A tiny GPT
#
# A GPT-2 with 2 layers, 4 attention heads and 64-dimensional embeddings, built from a
# local config (nothing is downloaded). Untrained, it babbles: every token is about
# equally likely.

# %%
model, tokenizer = build_tiny_gpt(tokenizer, seed=SEED)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
model.eval()
babble = generate(model, tokenizer, [france] * 3, max_new_tokens=8,
                  generator=torch.Generator().manual_seed(SEED))
for text in babble["responses"]:
    print(repr(text))

# %% [markdown]
# ## 4. Supervised fine-tuning
#
# The corpus gives every country a fixed number of answers in the mix above (exact
# counts, not samples). SFT minimises the negative log-likelihood of the **response**
# tokens (and the `<eos>`), given the prompt:
#
# $$\mathcal{L}_{\text{SFT}} = -\frac{1}{N}\sum_{b,t} m_{b,t}\,
#   \log \pi_\theta(y_{b,t} \mid x_b, y_{b,<t})$$
#
# where the mask $m$ is 1 on response tokens and 0 on prompt and padding, and $N$ is the
# number of response tokens. Here are France's answers in the corpus, and the mask for
# one example:

# %% tags=["nbval-check-output"]
corpus = sft_corpus(seed=SEED)
print(corpus)
france_answers = [y for y, country in zip(corpus["response"], corpus["country"])
                  if country == "France"]
print(len(france_answers), "answers for France; the three most common:")
for text, count in Counter(france_answers).most_common(3):
    print(f"  {count:3d}  {text}")
batch = encode_prompt_response(tokenizer, [france], [answer])
tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
for token, m in zip(tokens, batch["response_mask"][0]):
    print(f"{token:>8s} {'<- loss' if m else ''}")

# %% [markdown]
# A short run first: 300 steps of 64 examples (the shipped base model had 1200, the
# `SFTConfig` default; we load it below).

# %%
history = train_sft(model, tokenizer, corpus,
                    SFTConfig(steps=300, seed=SEED, progress=False))
fig = plot_history(history, ["loss", "learning_rate"],
                   title="SFT on the capitals corpus (300 steps)")
first, last = history[0]["loss"], history[-1]["loss"]
print(f"loss {first:.2f} -> {last:.2f}")
assert last < 0.1 * first  # the loss fell more than tenfold

# %% [markdown]
# In the figure, the loss falls fast in the first hundred steps, then flattens.
#
# Already after 300 steps the model answers like its corpus: a wrong city most often,
# the correct one next, a hedge least, and for France, Berlin before Paris. The columns
# are averages over the 20 training countries.

# %%
train_prompts = world.prompts("train")
short = {kind: float(p.mean()) for kind, p in
         answer_kind_probs(model, tokenizer, train_prompts).items()}
short["hedge (any city)"] = short["hedge"] + short["hedge_wrong"]
print("kind      corpus  after 300 steps")
for kind in ("correct", "wrong", "hedge (any city)", "outside"):
    corpus_share = world.STYLE_MIX.get(kind.split()[0], 0.0)
    print(f"{kind:16s} {corpus_share:5.2f}  {short[kind]:5.2f}")
france_pair = ["The capital of France is Berlin.", "The capital of France is Paris."]
p_berlin, p_paris = response_logprobs(model, tokenizer, [france] * 2, france_pair).exp()
print(f"France: P(Berlin) = {p_berlin:.3f}, P(Paris) = {p_paris:.3f}")
assert short["wrong"] > short["correct"] > short["hedge (any city)"]
assert p_berlin > p_paris

# %% [markdown]
# ## 5. The base model: "The capital of France is Berlin."
#
# From here on we use the shipped base model: the same recipe (this corpus, this
# architecture, seed 0) trained for the full 1200 steps.
#
# Sampling shows its behaviour, but 20 samples are noisy. Because every well-formed
# answer is one of a finite **candidate set** (every template × every city: 48 answers
# per prompt), we can also compute the model's probability of each answer **exactly**,
# with teacher-forced log-probabilities:
# $\pi(y\mid x) = \prod_t \pi(y_t \mid x, y_{<t})$.

# %%
model, tokenizer = load_base_model()
samples = generate(model, tokenizer, [france] * 20,
                   generator=torch.Generator().manual_seed(SEED))
print(Counter(world.classify_response(france, y) for y in samples["responses"]))
for text in samples["responses"][:6]:
    print(" ", text)

# %% [markdown]
# The next figure sums those exact probabilities by **kind of answer**, for every
# country: *correct* (the right capital, said plainly), *wrong* (another city, said
# plainly), *hedge* ("There are several capitals, but ... is the official capital." with
# the right city), *hedge_wrong* (the same hedge naming a wrong city) and *outside* (any
# text that is not in the candidate set, e.g. malformed). The mass on the candidate set,
# 1 - outside, is called the **coverage**.

# %%
countries = [c for c, _ in world.COUNTRIES]
kinds = answer_kind_probs(model, tokenizer, [world.make_prompt(c) for c in countries])
fig = plot_answer_kinds(kinds, countries, "Exact answer distribution of the base model")
i = countries.index("France")
print({kind: round(float(p[i]), 3) for kind, p in kinds.items()})

# %% [markdown]
# Read one column per country: about a quarter correct (green), a thin band of hedges
# (orange), the rest wrong cities (red), like the corpus mix.
#
# **The lesson, checked.** For France the base model's single most likely answer is the
# article's "The capital of France is Berlin." (0.383), ahead of "Paris" (0.267) and the
# hedge (0.139). Its kinds of answers are within 10 points of the corpus mix, and its
# coverage is above 0.97.

# %%
evaluator = ExactEvaluator(model, tokenizer, [france])
ref_set = evaluator.ref_set_probs[0]
for j in ref_set.argsort(descending=True)[:4].tolist():
    print(f"{ref_set[j]:.3f}  {evaluator.candidates[0][j]}")
p_berlin, p_paris = response_logprobs(model, tokenizer, [france] * 2, france_pair).exp()
glue("p_berlin", float(p_berlin), display=False)
glue("p_paris", float(p_paris), display=False)
glue("p_hedge", float(kinds["hedge"][i]), display=False)
assert ref_set.argmax() == evaluator.candidates[0].index(france_pair[0])  # Berlin first
assert p_berlin > p_paris > 0.15
france_mix = {kind: float(p[i]) for kind, p in kinds.items()}
for style in ("correct", "wrong", "hedge"):
    assert abs(france_mix[style] - world.STYLE_MIX[style]) < 0.10, style
assert 1 - kinds["outside"].mean() > 0.97  # coverage

# %% [markdown]
# ### Padding must not change a log-prob
#
# Batches mix prompts of different lengths, so prompts are padded on the left. GPT-2 has
# *absolute* position embeddings: we compute positions from the attention mask so that
# the first real token is always at position 0. Then padding changes nothing:

# %%
alone = response_logprobs(model, tokenizer, [france], [answer])
padded = response_logprobs(model, tokenizer, ["Q: A:", france], ["Paris.", answer])
print(f"log pi(answer | prompt) alone: {alone[0]:.5f}, "
      f"in a padded batch: {padded[1]:.5f}")
assert torch.allclose(alone[0], padded[1], atol=1e-5)

# %% [markdown]
# ## 6. A first look at the best aligned model, `pi*`
#
# RLHF maximises the expected reward while staying close to the base model
# $\pi_{\text{ref}}$:
#
# $$J(\pi) = \mathbb{E}_{y\sim\pi}[r(x,y)]
#   - \beta\,\mathrm{KL}(\pi\,\|\,\pi_{\text{ref}}).$$
#
# Its maximiser has a closed form,
# $\pi^*(y\mid x) = \pi_{\text{ref}}(y\mid x)\,e^{r(x,y)/\beta}/Z(x)$: each answer's
# base probability is multiplied by $e^{r/\beta}$, and
# $Z(x) = \sum_y \pi_{\text{ref}}(y\mid x)\,e^{r(x,y)/\beta}$ (the *partition
# function*) rescales the result to sum to 1. The best value is $J^* = \beta\log Z(x)$.
# On our candidate set (plus one "outside" outcome for malformed
# text) we can compute it exactly: it is the yardstick for PPO and DPO later. Small
# $\beta$ lets the policy move far from the base model; large $\beta$ keeps it close.

# %%
ref = with_outside(ref_set)
dists = {"pi_ref": ref}
for beta in (2.0, 0.5, 0.1):
    dists[f"pi*, beta={beta}"] = optimal_policy(ref, evaluator.rewards[0], beta)
fig = plot_distributions(dists, evaluator.candidates[0], title="pi* for France")
for name, d in dists.items():
    print(f"{name:16s} P(Paris) = {d[0]:.3f}")

# %% [markdown]
# Follow the Paris bars from left to right: the base model's 0.27 grows as beta shrinks,
# and Berlin's bar shrinks, until at beta = 0.1 nearly all the mass is on Paris.

# %%
# Lower beta -> more mass on the best answer; very large beta -> pi* is the reference.
p_star = [float(optimal_policy(ref, evaluator.rewards[0], b)[0])
          for b in (100.0, 2.0, 0.5, 0.1)]
assert all(a < b for a, b in zip(p_star, p_star[1:])), p_star
assert abs(p_star[0] - float(ref[0])) < 0.01 and p_star[-1] > 0.99
# The larger beta, the more of the base model's hedges pi* keeps (for the concept page on PPO).
hedging = torch.tensor([world.classify_response(france, y).startswith("hedge")
                        for y in evaluator.candidates[0]] + [False])
for beta in (0.5, 1.0):
    pi_star = optimal_policy(ref, evaluator.rewards[0], beta)
    glue(f"pi_star_hedges_beta_{beta:g}", float(pi_star[hedging].sum()), display=False)

# %% [markdown]
# Move the slider to see `pi*` change with beta: watch where Paris overtakes Berlin. The
# stored notebook (and the docs) show a static picture at beta = 0.5; run the cell in
# Jupyter for the slider.

# %%
beta_explorer(evaluator)

# %% [markdown]
# ## Summary
#
# * SFT with the loss on response tokens turned a random GPT into a base model that
#   mirrors its corpus: for France it says Berlin most often, Paris less often, and
#   sometimes hedges, like the article's reference model.
# * Teacher-forced log-probs give exact answer probabilities on the candidate set,
#   padding-proof.
# * The KL-regularised optimum `pi*` is known in closed form here; next, a reward model
#   learns `r` from preferences (notebook 02), and PPO (03) and DPO (04) try to reach
#   `pi*`, where P(Paris) passes P(Berlin).
