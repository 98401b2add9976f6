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
# # 01 · From characters to a tiny GPT that knows (most of) the capitals
#
# **The lesson.** Supervised fine-tuning (SFT) turns a random network into a model that imitates its
# training text, *mistakes included*. Our corpus answers "What is the capital of France?" correctly
# 60% of the time, names a wrong city 25% of the time and hedges 15% of the time. After SFT the tiny GPT
# reproduces that mix: it *knows* Paris, but it is not aware of what a person would prefer. That is the
# "base model" that the rest of the tutorial aligns.
#
# We will:
# 1. meet the toy world and its ground-truth reward,
# 2. turn text into tokens,
# 3. build a 2-layer GPT-2 (about 100k parameters),
# 4. fine-tune it on the corpus, with the loss on the *response* tokens only,
# 5. measure its answers exactly, and
# 6. take a first look at the best policy RLHF could reach, `pi*`.
#
# Runs in well under a minute on a 2-core laptop CPU.

# %%
import torch
from collections import Counter

from minirlhf import world
from minirlhf.tokenizer import build_tokenizer, decode
from minirlhf.models import build_tiny_gpt
from minirlhf.data import sft_corpus
from minirlhf.sft import SFTConfig, train_sft, sft_loss
from minirlhf.logprobs import encode_prompt_response, generate, response_logprobs, token_logprobs
from minirlhf.optimum import ExactEvaluator, answer_kind_probs, optimal_policy, with_outside
from minirlhf.plots import plot_history, plot_answer_kinds, plot_distributions
from minirlhf.widgets import beta_explorer

torch.manual_seed(0)
torch.set_num_threads(2)

# %% [markdown]
# ## 1. The toy world
#
# A fixed table of countries and capitals, one prompt format and three answer styles. Because the world
# is this small, we can compute every number exactly, including the best possible aligned model.

# %% tags=["nbval-check-output"]
france = world.make_prompt("France")
print(france)
print(len(world.COUNTRIES), "countries;", len(world.TRAIN_COUNTRIES), "for training,",
      len(world.HELD_OUT_COUNTRIES), "held out:", ", ".join(world.HELD_OUT_COUNTRIES))
for style in ("correct", "wrong", "hedge"):
    answer = world.make_response("France", style, city="Berlin" if style == "wrong" else None)
    print(f"{style:8s} {world.STYLE_MIX[style]:.0%}  r = {world.true_reward(france, answer):+.1f}  {answer}")
print("malformed      r =", world.true_reward(france, "Paris Paris the"))

# %% [markdown]
# The **ground-truth reward** `r(x, y)` stands in for a person: +1 for the correct capital said plainly,
# 0 for a hedge, -1 for a wrong city, -2 for anything malformed. It is defined on *any* string, so it can
# also judge whatever a model generates.
#
# ## 2. From characters to tokens
#
# A language model reads integers, not characters. Our tokenizer is *word-level*: every word and every
# punctuation mark of the world is one token, so you can read the ids as words. Real tokenizers (BPE) split
# words into pieces, but the idea is the same. Two special tokens matter: `<eos>` ends every answer (the
# model must learn to stop) and `<pad>` fills the gaps in a batch. They are different tokens, so masking the
# padding never masks the end of an answer.

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
# A GPT-2 with 2 layers, 4 attention heads and 64-dimensional embeddings, built from a local config
# (nothing is downloaded). Untrained, it babbles: every token is about equally likely.

# %%
model, tokenizer = build_tiny_gpt(tokenizer, seed=0)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
model.eval()
sample = generate(model, tokenizer, [france] * 3, max_new_tokens=8, generator=torch.Generator().manual_seed(0))
for text in sample["responses"]:
    print(repr(text))

# %% [markdown]
# ## 4. Supervised fine-tuning
#
# The corpus has 152 answers per training country (184 per held-out one) in the exact 60 / 25 / 15 mix; the
# wrong answers name every other capital equally often (for a training country, every other *training*
# capital: the held-out capitals stay out of everything alignment will see). SFT minimises the negative
# log-likelihood of the **response** tokens (and the `<eos>`), given the prompt:
#
# $$\mathcal{L}_{\text{SFT}} = -\frac{1}{N}\sum_{b,t} m_{b,t}\,\log \pi_\theta(y_{b,t} \mid x_b, y_{b,<t})$$
#
# where the mask $m$ is 1 on response tokens and 0 on prompt and padding. Here is that mask for one example:

# %%
corpus = sft_corpus()
print(corpus)
print(Counter(corpus.filter(lambda row: row["country"] == "France")["style"]))
batch = encode_prompt_response(tokenizer, [france], [answer])
for token, m in zip(tokenizer.convert_ids_to_tokens(batch["input_ids"][0]), batch["response_mask"][0]):
    print(f"{token:>8s} {'<- loss' if m else ''}")

# %%
history = train_sft(model, tokenizer, corpus, SFTConfig(steps=1200, seed=0))
fig = plot_history(history, ["loss", "learning_rate"], title="SFT on the capitals corpus")
assert history[-1]["loss"] < 0.25 * history[0]["loss"]  # the loss fell by more than 4x

# %% [markdown]
# ## 5. What does the base model say?
#
# Sampling shows the behaviour, but 20 samples are noisy. Because every answer is one of a finite
# *candidate set* (every template × every city), we can also compute the model's probability of each
# answer **exactly**, with teacher-forced log-probabilities: $\pi(y\mid x) = \prod_t \pi(y_t \mid x, y_{<t})$.

# %%
samples = generate(model, tokenizer, [france] * 20, generator=torch.Generator().manual_seed(1))
print(Counter(world.classify_response(france, y) for y in samples["responses"]))
for text in samples["responses"][:6]:
    print(" ", text)

# %%
countries = [c for c, _ in world.COUNTRIES]
kinds = answer_kind_probs(model, tokenizer, [world.make_prompt(c) for c in countries])
fig = plot_answer_kinds(kinds, countries, "Exact answer distribution of the SFT model")
i = countries.index("France")
print({kind: round(float(p[i]), 3) for kind, p in kinds.items()})

# %% [markdown]
# **The lesson, checked.** For France the model says Paris most of the time, but it also names wrong cities
# and hedges, within 10 points of the corpus mix, and almost all of its probability lies on well-formed
# answers (the candidate set).

# %%
france_mix = {kind: float(p[i]) for kind, p in kinds.items()}
for style in ("correct", "wrong", "hedge"):
    assert abs(france_mix[style] - world.STYLE_MIX[style]) < 0.10, (style, france_mix[style])
assert france_mix["correct"] > 0.5 and france_mix["wrong"] > 0.1 and france_mix["hedge"] > 0.05
assert kinds["outside"].mean() < 0.03

# %% [markdown]
# ### Padding must not change a log-prob
#
# Batches mix prompts of different lengths, so prompts are padded on the left. GPT-2 has *absolute*
# position embeddings: we compute positions from the attention mask so that the first real token is always
# at position 0. Then padding changes nothing:

# %%
alone = response_logprobs(model, tokenizer, [france], [answer])
padded = response_logprobs(model, tokenizer, ["Q: A:", france], ["Paris.", answer])
print(f"log pi(answer | prompt) alone: {alone[0]:.5f}   in a padded batch: {padded[1]:.5f}")
assert torch.allclose(alone[0], padded[1], atol=1e-5)

# %% [markdown]
# ## 6. A first look at the best aligned model, `pi*`
#
# RLHF maximises the expected reward while staying close to the base model $\pi_{\text{ref}}$:
#
# $$J(\pi) = \mathbb{E}_{y\sim\pi}[r(x,y)] - \beta\,\mathrm{KL}(\pi\,\|\,\pi_{\text{ref}}).$$
#
# Its maximiser has a closed form, $\pi^*(y\mid x) = \pi_{\text{ref}}(y\mid x)\,e^{r(x,y)/\beta}/Z(x)$, with value
# $J^* = \beta\log Z(x)$. On our candidate set (plus one "outside" outcome for malformed text) we can compute
# it exactly: it is the yardstick for PPO and DPO later. Small $\beta$ lets the policy move far from the base
# model; large $\beta$ keeps it close.

# %%
evaluator = ExactEvaluator(model, tokenizer, [france])
ref = with_outside(evaluator.ref_set_probs[0])
dists = {"pi_ref": ref}
for beta in (2.0, 0.5, 0.1):
    dists[f"pi*, beta={beta}"] = optimal_policy(ref, evaluator.rewards[0], beta)
fig = plot_distributions(dists, evaluator.candidates[0], title="pi* for France")
for name, d in dists.items():
    print(f"{name:16s} P(Paris) = {d[0]:.3f}")

# %%
# Lower beta -> more mass on the best answer; very large beta -> pi* is the reference itself.
p_paris = [float(optimal_policy(ref, evaluator.rewards[0], b)[0]) for b in (100.0, 2.0, 0.5, 0.1)]
assert all(a < b for a, b in zip(p_paris, p_paris[1:])), p_paris
assert abs(p_paris[0] - float(ref[0])) < 0.01 and p_paris[-1] > 0.99

# %% [markdown]
# Move the slider to see `pi*` change with beta (in a live notebook; here it shows beta = 0.5).

# %%
beta_explorer(evaluator)

# %% [markdown]
# ## Summary
#
# * SFT with the loss on response tokens turned a random GPT into a base model that mirrors its corpus:
#   right most of the time, wrong or hedging the rest of the time.
# * Teacher-forced log-probs give exact answer probabilities on the candidate set, padding-proof.
# * The KL-regularised optimum `pi*` is known in closed form here; next, a reward model learns `r` from
#   preferences (notebook 02), and PPO (03) and DPO (04) try to reach `pi*`.
