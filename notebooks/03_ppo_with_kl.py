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
# **Learning objectives.** After this notebook you can
# - name the pieces of one PPO step (rollout, a KL penalty on every token, advantages from a
#   critic, the clipped update) and check each one against `minirlhf.ppo`;
# - read the logs of a PPO run: score, KL to the reference, attainment, step size (approxkl)
#   and the critic's explained variance;
# - tell the article's story in numbers: for France, the reference's "Berlin", the hedge, a
#   wrong city and "Paris", each scored by `r - beta * log(pi_theta / pi_ref)`;
# - say what beta trades, and check it against the exact optimum `pi*`;
# - explain over-optimisation: why a policy that chases a learned reward model too far loses
#   true reward.
#
# **The story.** This notebook follows Anish Dubey, *LLM Alignment: Reward-Based vs Reward-Free
# Methods* (2024). Asked "What is the capital of France?", the reference model (our SFT model from
# notebook 01) most often says *"The capital of France is Berlin."*; it also says Paris, and it
# hedges. PPO turns a reward into a better policy by *sampling* answers, scoring them, and nudging
# the policy towards the answers that scored above expectation. On its own that would chase the
# reward anywhere; the **KL penalty** (a small cost on every token for moving away from the
# reference) keeps it close to what it knew. With a penalty `beta > 0` PPO heads for the best
# policy of the KL-regularised objective, `pi*(y|x) ~ pi_ref(y|x) exp(r(x,y) / beta)`, which we
# can compute exactly in this world.
#
# We will (section numbers in brackets):
# - draw the loop (1),
# - build each piece by hand and check it against `minirlhf.ppo`: rollout, reward, advantages,
#   the clipped update, the adaptive KL controller (2-6),
# - run PPO on the true reward ("PPO-GT") and watch P("Paris") overtake P("Berlin") (7),
# - score the article's four answers before and after PPO (8),
# - sweep beta against the exact optimum (9),
# - see a learned reward model over-optimised (10),
# - look at the KL of one answer, token by token (11).
#
# How close a policy gets is measured by its **attainment**: 0 for the SFT model, 1 for the exact
# optimum `pi*` (section 7 defines it).
#
# The runs are short (about a minute in all on a 2-core laptop CPU); `benchmarks/ppo.py` runs the long
# ones.

# %%
# Outside a checkout of minirlhf (on Colab, or a copy of this notebook on its own), install the
# package first; where it is installed already, as in a checkout, this does nothing.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("minirlhf") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "minirlhf @ git+https://github.com/minirlhf/minirlhf"], check=True)

# %% [markdown]
# The tools, then the **settings**: `SEED` seeds every sampled run below, `THREADS` is how many
# CPU threads torch uses. The same seed, thread count and CPU give the same numbers; other seeds
# give other numbers, and the lessons asserted below hold for them too.

# %%
import copy

import torch

from minirlhf import world
from minirlhf.evaluation import answer_tracker, exact_metrics
from minirlhf.logprobs import response_logprobs, token_log_ratios
from minirlhf.saved_models import load_base_model
from minirlhf.optimum import (ExactEvaluator, best_of_n_probs, kl_divergence,
                              optimal_policy, renormalise, with_outside)
from minirlhf.pipeline import train_default_reward_model
from minirlhf.plots import (plot_beta_sweep, plot_clipped_objective, plot_history,
                            plot_over_optimisation, plot_ppo_loop, plot_probability_curves,
                            plot_token_kl)
from minirlhf.ppo import (AdaptiveKLController, Critic, PPOConfig, gae,
                          per_token_rewards, ppo_policy_loss, ppo_value_loss, train_ppo, whiten)
from minirlhf.reward import RewardConfig
from minirlhf.rl import rollout, score_rollouts
from minirlhf.training import seed_everything
from myst_nb import glue  # stores a number for the docs pages that quote it

# %%
SEED = 0
THREADS = 2
torch.set_num_threads(THREADS)

# %%
# the SFT model: the start of the policy AND the frozen reference
ref_model, tokenizer = load_base_model()
train_prompts, held_out_prompts = world.prompts("train"), world.prompts("held_out")
# exact figures on the training prompts
evaluator = ExactEvaluator(ref_model, tokenizer, train_prompts)
france = world.make_prompt("France")

# %% [markdown]
# ## 1. The loop
#
# One PPO step: sample answers from the policy, score them, turn score and KL into a reward for
# every token, estimate how much better than expected each token was (the *advantage*, with a
# critic), and take a few small, clipped gradient steps. Then sample again from the updated
# policy.

# %%
fig = plot_ppo_loop()

# %% [markdown]
# ## 2. Rollout
#
# We sample one answer per prompt. Prompts are left-padded, positions come from the attention
# mask (GPT-2 has absolute positions), generation stops at EOS or at `max_new_tokens`. Then, by
# teacher forcing with the shared helper, we record on one `(B, T)` grid the log-probs of the
# sampled tokens under the policy and the frozen reference, and the critic's values. Column `t`
# is always *about token t given the tokens before it*.
#
# The **critic** is a separate network: a copy of the SFT model's transformer with a scalar head
# that starts at zero (with a learned reward model, a copy of the reward model). A value head on
# the policy's own trunk would be cheaper, but on a 64-wide model the value loss would bend the
# features the policy answers with.

# %%
policy = copy.deepcopy(ref_model)
critic = Critic.from_model(ref_model)
config = PPOConfig()  # defaults: beta = 0.1, temperature 1, 64 rollouts per step ...
prompts = train_prompts[:6]
generator = seed_everything(SEED)
batch = rollout(policy, ref_model, critic, tokenizer, prompts, config, generator)
for prompt, response in zip(prompts, batch["responses"]):
    reward = world.true_reward(prompt, response)
    country = world.country_of_prompt(prompt)
    print(f"{country:9s} -> {response!r:64s} true reward {reward:+.1f}")
print("grid:", tuple(batch["input_ids"].shape),
      " response tokens per row:", batch["response_mask"].sum(-1).tolist())

# %% [markdown]
# The log-probs recorded for the rollout must be exactly the log-probs of the same text scored on
# its own, without padding (else PPO's ratios would compare different things):

# %%
mask = batch["response_mask"]
rollout_logp = (batch["logprobs"] * mask).sum(-1)
# re-encoded, EOS appended
alone = response_logprobs(policy, tokenizer, prompts, batch["responses"])
print("rollout:", [round(v, 4) for v in rollout_logp.tolist()])
print("alone:  ", [round(v, 4) for v in alone.tolist()])
assert batch["finished"].all()  # every answer ended with EOS, so the two must agree
torch.testing.assert_close(rollout_logp, alone, atol=1e-4, rtol=1e-4)

# %% [markdown]
# ## 3. Reward: a KL penalty on every token, the score at the end
#
# The RLHF objective is `E[r(x, y)] - beta * KL(pi || pi_ref)`. The KL of a sampled answer is
# estimated by `sum_t log pi(y_t|..) - log pi_ref(y_t|..)` ("k1"), so each token pays
# `-beta * (log pi - log pi_ref)` and the score `r(x, y)` is added at the last token (the EOS).
# Here the score is the true reward (PPO-GT); with a learned reward model it is `r_phi(x, y)`, read
# at the EOS, and an answer cut at `max_new_tokens` is scored with an EOS appended: the reward model
# learned from complete answers, and its number at a mid-sentence token is arbitrary (a policy
# would learn never to finish, and collect it). At
# the very first step the policy *is* the reference, so the KL part is 0; we nudge the policy's
# log-probs to see it at work.

# %%
scores = score_rollouts(batch)  # the true reward of each decoded answer
logp = batch["logprobs"] + 0.3 * mask  # pretend the policy grew more confident
beta = 0.1
# by hand
by_hand = -beta * (logp - batch["ref_logprobs"]) * mask
last = (mask * torch.arange(mask.shape[1])).argmax(-1)  # index of each row's EOS
by_hand[torch.arange(len(prompts)), last] += scores
# the library
rewards = per_token_rewards(logp, batch["ref_logprobs"], scores, mask, beta)
torch.testing.assert_close(rewards, by_hand)
row = 0
real = mask[row].bool()
tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][row][real].tolist())
print(list(zip(tokens, [round(v, 3) for v in rewards[row][real].tolist()])))

# %% [markdown]
# ## 4. Advantages: critic and GAE
#
# The advantage of a token says how much better the rest of the answer went than the critic
# expected. Generalised advantage estimation mixes one-step and long-horizon estimates with
# `lambda`:
#
#     delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lambda A_{t+1},   R_t = A_t + V_t
#
# With `gamma = 1` (the only task reward comes at the end of a short answer), the value after the
# EOS is 0.
#
# **Whitening, an option.** TRL (Hugging Face's RLHF library) rescales each batch's advantages to mean 0 and variance 1
# ("whitening"); here `PPOConfig(whiten_advantages=True)` does the same. It is off by default:
# once nearly every answer is right, the advantages that remain are mostly noise, and whitening
# blows that noise up to full-size steps.

# %%
values = torch.rand(mask.shape) * mask  # pretend the critic said something
gamma, lam = config.gamma, config.lam
# by hand, one row, walking backwards over its response tokens
positions = mask[row].nonzero().flatten().tolist()
advantage, next_value, hand = 0.0, 0.0, {}
for t in reversed(positions):
    delta = rewards[row, t].item() + gamma * next_value - values[row, t].item()
    advantage = delta + gamma * lam * advantage
    hand[t], next_value = advantage, values[row, t].item()
advantages, returns = gae(rewards, values, mask, gamma, lam)
by_hand = torch.tensor([hand[t] for t in positions])
torch.testing.assert_close(advantages[row, positions], by_hand)
torch.testing.assert_close(returns, (advantages + values) * mask)
white = whiten(advantages, mask)  # the option: mean 0, variance 1 over real tokens
real = mask.bool()
print(f"whitened advantages: mean {white[real].mean():.2e}, "
      f"std {white[real].std(correction=0):.3f}")

# %% [markdown]
# ## 5. The clipped update
#
# The policy loss is PPO's clipped surrogate: the ratio `pi / pi_old` of a token multiplies its
# advantage, but once the ratio leaves `[1 - eps, 1 + eps]` in the direction the advantage wants,
# the gain stops growing (and so does the gradient). The critic's loss is clipped the same way.
# Both are averaged over real tokens only.

# %%
fig = plot_clipped_objective(config.clip_range)

# %% tags=["nbval-check-output"]
old = torch.zeros(1, 3)
new = torch.log(torch.tensor([[1.0, 1.5, 0.5]]))  # ratios 1, 1.5, 0.5
ones = torch.ones(1, 3)
for a in (+1.0, -1.0):
    loss, stats = ppo_policy_loss(new, old, torch.full((1, 3), a), ones, clip_range=0.2)
    print(f"A = {a:+.0f}: loss {loss.item():+.4f}, "
          f"clipped tokens {stats['policy/clipfrac'].item():.2f}")
one = torch.ones(1, 1)
value_loss, _ = ppo_value_loss(0.5 * one, 0 * one, one, one, clip_range_value=0.2)
print(f"value 0.5 -> target 1 from old value 0: loss {value_loss.item():.2f} "
      "(counted as if it had stopped at 0.2)")

# %% [markdown]
# ## 6. Fixed or adaptive beta
#
# Ziegler et al. (2019) adapt beta so that the KL stays near a target: above the target, beta
# grows; below, it shrinks (by at most 20% of `n_rollouts / horizon` per step). The default keeps
# beta fixed (`adaptive_kl=False`).

# %% tags=["nbval-check-output"]
controller = AdaptiveKLController(init_beta=0.1, target_kl=0.5, horizon=1000)
for kl in (1.0, 1.0, 0.1):
    print(f"KL {kl:.1f} -> beta {controller.update(kl, n_steps=32):.5f}")

# %% [markdown]
# ## 7. Run it: PPO-GT at beta = 0.1, and Paris overtakes Berlin
#
# Now the whole loop with the library, with its defaults (beta = 0.1, 64 answers per step) for
# 60 steps. Every 10 steps we measure the policy exactly on the training prompts. Besides
# `answer_tracker`'s France answers, a small callback follows the exact hedge and one wrong city,
# Rome, for section 8.

# %%
HEDGE = world.make_response("France", "hedge")
ROME = world.make_response("France", "wrong", "Rome")
# P(Paris), P(Berlin), P(hedge), P(wrong), P(outside)
france_answers = answer_tracker(tokenizer)


def track(step, policy):
    """answer_tracker's numbers, plus the exact hedge and Rome (section 8)."""
    probs = response_logprobs(policy, tokenizer, [france] * 2, [HEDGE, ROME]).exp()
    return {**france_answers(step, policy),
            "P(the hedge)": probs[0].item(), "P(Rome)": probs[1].item()}


config = PPOConfig(steps=60, eval_every=10, progress=False, seed=SEED)
evaluate = exact_metrics(evaluator, config.beta, track=track)
policy, history = train_ppo(copy.deepcopy(ref_model), ref_model, tokenizer,
                            train_prompts, config, evaluate=evaluate)
panels = ["objective/scores", "objective/kl", "exact/true_reward", "exact/attainment",
          "policy/approxkl", "val/explained_variance"]
fig = plot_history(history, panels, title="PPO-GT, beta = 0.1")

# %% [markdown]
# What the panels show:
#
# * **score** (`objective/scores`): the mean reward of the answers sampled at each step, here the
#   true reward; **KL to the reference** (`objective/kl`): their summed k1 estimate.
# * **true reward** and **attainment** (`exact/...`): exact, over every candidate answer.
#   Attainment is `(J - J_ref) / (J* - J_ref)` with `J = E[r] - beta * KL`: 0 is the SFT model, 1
#   the best any policy can do at this beta.
# * **step size** (`policy/approxkl`): how far one PPO step moved the policy, the mean of
#   `0.5 * (log pi_new - log pi_old)^2` over the step's tokens. It is *not* the KL to the
#   reference: it stays small while the KL to the reference adds up, step after step.
# * **explained variance** (`val/explained_variance`): `1 - Var(R - V) / Var(R)`, how much of the
#   returns the critic predicts: 1 = all, 0 = no better than their mean, below 0 = worse.
#
# And France's answers, by kind. *hedge*: "There are several capitals, but X is the official
# capital." with any city X; *wrong*: "The capital of France is X." with a city other than Paris
# (Berlin included); *outside*: any text that is neither (the model's leftover probability).

# %%
kinds = ["P(Paris)", "P(Berlin)", "P(hedge)", "P(wrong)", "P(outside)"]
fig = plot_probability_curves(history, {k: k for k in kinds},
                              title="France: the policy's exact answer probabilities")

# %%
start, end = history[0], history[-1]
tracked = [h for h in history if "P(Paris)" in h]
overtake = next(h["step"] for h in tracked if h["P(Paris)"] > h["P(Berlin)"])
print(f"true reward {start['exact/true_reward']:.3f} -> "
      f"{end['exact/true_reward']:.3f},  "
      f"KL {start['exact/kl']:.3f} -> {end['exact/kl']:.3f},  "
      f"attainment {end['exact/attainment']:.3f}")
print(f"P(Paris) {start['P(Paris)']:.3f} -> {end['P(Paris)']:.3f},  "
      f"P(Berlin) {start['P(Berlin)']:.3f} -> {end['P(Berlin)']:.4f},  "
      f"Paris ahead from step {overtake}")
for moment, h in (("start", start), ("end", end)):
    for key in ("true_reward", "kl", "attainment"):
        glue(f"ppo_gt_{key}_{moment}", float(h[f"exact/{key}"]), display=False)
# the lesson: Berlin led, Paris overtook it by far; the true reward rose at a modest KL
assert start["P(Berlin)"] > start["P(Paris)"]
assert end["P(Paris)"] > end["P(Berlin)"] + 0.5
assert end["exact/true_reward"] > start["exact/true_reward"] + 0.5
assert end["exact/attainment"] > 0.5 and end["exact/kl"] < 2.0

# %% [markdown]
# ## 8. The article's iterations
#
# The article scores four answers to the France prompt by the objective
# `r - beta * log(pi_theta / pi_ref)`: its reward, minus the KL price of saying it more often than
# the reference does:
#
# | in the article | here |
# |---|---|
# | the reference's "Berlin" | The capital of France is Berlin. |
# | the long hedge | There are several capitals, but Paris is the official capital. |
# | a wrong city, right format ("Delhi") | The capital of France is Rome. |
# | "Paris" | The capital of France is Paris. |
#
# For each: the true reward `r` (`world.true_reward`), a learned reward `r_phi` (a small reward
# model, trained here on 16 preference pairs per prompt in 100 steps; notebook 02 trains the full
# one), and `log pi_theta / pi_ref` with the objective (with the true reward, which PPO-GT
# optimised) before PPO (`pi_theta = pi_ref`, so the log-ratio is 0) and after section 7's run.

# %%
reward_model, _, rm_data, rm_history = train_default_reward_model(
    seed=SEED, progress=False, pairs_per_prompt=16,
    config=RewardConfig(steps=100, progress=False, seed=SEED))
ARTICLE = {"Berlin (pi_ref's answer)": world.make_response("France", "wrong", "Berlin"),
           "the hedge": HEDGE, "Rome (the article's Delhi)": ROME,
           "Paris": world.make_response("France", "correct")}
answers = list(ARTICLE.values())
ref_logp = response_logprobs(ref_model, tokenizer, [france] * 4, answers)
log_ratio = response_logprobs(policy, tokenizer, [france] * 4, answers) - ref_logp
learned = reward_model.score_texts(tokenizer, [france] * 4, answers)
beta = config.beta
table = {}
print(f"beta = {beta}{'':22s}|   before PPO    |       after PPO")
print(f"{'answer':27s}{'r':>5s}{'r_phi':>7s}{'pi_ref':>8s} | log-ratio    obj "
      f"| pi_theta log-ratio    obj")
for i, (name, answer) in enumerate(ARTICLE.items()):
    r = world.true_reward(france, answer)
    table[name] = {"r": r, "after": r - beta * log_ratio[i].item()}
    p_ref, p_theta = ref_logp[i].exp().item(), (ref_logp[i] + log_ratio[i]).exp().item()
    print(f"{name:27s}{r:+5.1f}{learned[i].item():+7.2f}{p_ref:8.3f} |"
          f"{0.0:+10.2f}{r:+7.2f} |{p_theta:9.3f}"
          f"{log_ratio[i].item():+10.2f}{table[name]['after']:+7.2f}")

# %% [markdown]
# Before PPO the policy *is* the reference: every log-ratio is 0 and the objective is the reward
# alone, yet the reference says Berlin, an answer with the lowest objective, most often. The
# hedge earns 0: better than a wrong city, worse than Paris. Rome keeps the reference's format
# (it differs from Berlin in one token, so a policy that drifts to it pays little KL) and still
# earns -1. PPO moves probability to Paris, whose objective stays highest even after paying
# `beta * log(pi_theta / pi_ref)` for being said more often. Berlin's objective *rose*: saying
# it less often than the reference earns a KL bonus. At the exact optimum `pi*` the objective
# is the same for every answer (`beta * log Z`); PPO is on its way there.
#
# Compare the `r_phi` column with `r`: where the small reward model disagrees with the truth, a
# policy that optimised `r_phi` instead would be led there (section 10).
#
# In the article the hedge and the wrong city are stages that a policy passes through. PPO-GT
# here goes more directly: the probabilities of the four answers across the run (log scale).

# %%
four = {"Berlin": "P(Berlin)", "the hedge": "P(the hedge)", "Rome": "P(Rome)",
        "Paris": "P(Paris)"}
fig = plot_probability_curves(history, four, logy=True,
                              title="France: the article's four answers during PPO")

# %%
after = {name: row["after"] for name, row in table.items()}
print({name: round(value, 2) for name, value in after.items()})
# the lesson: after PPO, Paris has the highest objective and the highest probability
assert max(after, key=after.get) == "Paris"
assert after["Paris"] > max(v for k, v in after.items() if k != "Paris") + 0.3
assert history[-1]["P(Paris)"] > max(history[-1][k] for k in
                                     ["P(Berlin)", "P(the hedge)", "P(Rome)"]) + 0.5

# %% [markdown]
# ## 9. A beta sweep
#
# Small beta: the policy may move far from the SFT model to collect reward. Large beta: it stays
# close. Dashed: the exact optimum `pi*` at each beta (its true reward and its KL to `pi_ref`),
# which PPO approaches (these runs are short, 25 steps of 16 answers; `benchmarks/ppo.py` runs
# 1000 steps of 64). In a short run the KL penalty has little time to act: at the two smaller
# betas the KL is set by how far 25 steps can go, below the optimum's (here the two even end in
# reverse order). At beta = 3 the optimum
# barely leaves `pi_ref`, and neither does PPO: at a large beta, moving is itself the cost.

# %%
betas = [0.03, 0.3, 3.0]
keys = {"true reward": "exact/true_reward", "KL": "exact/kl",
        "attainment": "exact/attainment"}
measured = {name: [] for name in keys}
for b in betas:
    config = PPOConfig(beta=b, steps=25, rollouts_per_step=16, eval_every=25,
                       progress=False, seed=SEED)
    _, h = train_ppo(copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts,
                     config, evaluate=exact_metrics(evaluator, config.beta))
    for name, key in keys.items():
        measured[name].append(h[-1][key])
ref_probs = with_outside(evaluator.ref_set_probs)
optimum = {"true reward": [], "KL": []}
for b in betas:
    star = optimal_policy(ref_probs, evaluator.rewards, b)
    optimum["true reward"].append((star * evaluator.rewards).sum(-1).mean().item())
    optimum["KL"].append(kl_divergence(star, ref_probs).mean().item())
fig = plot_beta_sweep(betas, measured, optimum)

# %%
print({name: [round(v, 3) for v in values] for name, values in measured.items()})
for i, b in enumerate(betas):
    glue(f"sweep_true_reward_beta_{b:g}", float(measured["true reward"][i]), display=False)
    glue(f"sweep_kl_beta_{b:g}", float(measured["KL"][i]), display=False)
kl, true_reward = measured["KL"], measured["true reward"]
# the lesson: a larger beta keeps the policy closer to the SFT model, for less reward
assert kl[0] > kl[-1] and true_reward[0] > true_reward[-1]
assert min(measured["attainment"]) > 0.1  # every run moved towards its own optimum
assert kl[-1] < 0.25 * kl[0]  # beta = 3: it hardly left the SFT model

# %% [markdown]
# ## 10. A learned reward model: over-optimisation
#
# Classic RLHF scores answers with a *learned* reward model `r_phi`, fitted to preference pairs
# (notebook 02). It is right on average, but not everywhere, and the small one of section 8 has
# plenty of mistakes. What happens to a policy that optimises it?
#
# We can answer exactly, without sampling. The best policy for `r_phi` at a given beta is
# `pi*_phi ~ pi_ref exp(r_phi / beta)` (on the candidate answers). As beta shrinks it moves
# further from `pi_ref` (a larger KL) and its expected `r_phi`, the score PPO would see, can
# only rise. Its *true* reward first rises (`r_phi` is right on average) and then falls, once
# the policy concentrates on the answers that `r_phi` over-rates: that is over-optimisation
# (Gao et al. 2022). The squares are PPO at beta = 0 against this reward model (40 steps of 16
# answers), measured exactly every 10 steps. The triangles are Gao et al.'s other optimiser,
# **best-of-n**: draw n answers from `pi_ref` and keep the one `r_phi` scores highest, computed
# exactly for n = 1 ... 256 (notebook 06 derives it).

# %%
candidates = evaluator.candidates
r_phi = torch.stack([reward_model.score_texts(tokenizer, [p] * len(ys), ys)
                     for p, ys in zip(train_prompts, candidates)])
ref_set = renormalise(evaluator.ref_set_probs)  # on the candidate answers
r_true = evaluator.rewards[:, :-1]
curve = {"KL": [], "r_phi": [], "true reward": []}
sweep = [10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01]
for b in sweep:
    star = optimal_policy(ref_set, r_phi, b)
    curve["KL"].append(kl_divergence(star, ref_set).mean().item())
    curve["r_phi"].append((star * r_phi).sum(-1).mean().item())
    curve["true reward"].append((star * r_true).sum(-1).mean().item())


# best-of-n on r_phi (Gao et al. 2022's other optimiser): n answers from pi_ref, keep r_phi's best
bon = {"KL": [], "r_phi": [], "true reward": []}
ns = [1, 2, 4, 8, 16, 32, 64, 128, 256]
for n in ns:
    chosen = best_of_n_probs(ref_set, r_phi, n)
    bon["KL"].append(kl_divergence(chosen, ref_set).mean().item())
    bon["r_phi"].append((chosen * r_phi).sum(-1).mean().item())
    bon["true reward"].append((chosen * r_true).sum(-1).mean().item())


def on_candidates(step, policy):
    """KL, r_phi and true reward of the policy on the candidate answers, exact."""
    probs = renormalise(evaluator.set_probs(policy))
    return {"KL": kl_divergence(probs, ref_set).mean().item(),
            "r_phi": (probs * r_phi).sum(-1).mean().item(),
            "true reward": (probs * r_true).sum(-1).mean().item()}


config = PPOConfig(beta=0.0, steps=40, rollouts_per_step=16, eval_every=10,
                   progress=False, seed=SEED)
_, free = train_ppo(copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts,
                    config, reward_model=reward_model, evaluate=on_candidates)

# %%
points = [h for h in free if "r_phi" in h]
fig = plot_over_optimisation(curve, sweep, best_of_n=bon, ppo=points)

# %%
peak = max(curve["true reward"])
ref_true = (ref_set * r_true).sum(-1).mean().item()
ref_phi = (ref_set * r_phi).sum(-1).mean().item()
# how much of the r_phi that pi*_phi gains the PPO run gained
progress = (points[-1]["r_phi"] - ref_phi) / (curve["r_phi"][-1] - ref_phi)
print(f"pi*_phi: true reward {ref_true:.2f} (pi_ref) -> {peak:.2f} (peak) -> "
      f"{curve['true reward'][-1]:.2f} (beta = {sweep[-1]}), "
      f"KL up to {curve['KL'][-1]:.1f}")
print(f"PPO at beta = 0: r_phi {ref_phi:.2f} -> {points[-1]['r_phi']:.2f} "
      f"({progress:.0%} of the way to pi*_phi's), KL {points[-1]['KL']:.2f}")
glue("overopt_true_reward_ref", ref_true, display=False)
glue("overopt_true_reward_peak", peak, display=False)
glue("overopt_true_reward_last", curve["true reward"][-1], display=False)
glue("overopt_kl_last", curve["KL"][-1], display=False)
glue("overopt_ppo_r_phi_start", ref_phi, display=False)
glue("overopt_ppo_r_phi_end", points[-1]["r_phi"], display=False)
glue("overopt_ppo_progress", progress, display=False)
glue("overopt_ppo_kl", points[-1]["KL"], display=False)
# the lesson: the harder r_phi is optimised, the higher the score it gives ...
assert all(b >= a - 1e-4 for a, b in zip(curve["r_phi"], curve["r_phi"][1:]))
# ... while the true reward, past its peak, falls: below the peak and below pi_ref's
assert curve["true reward"][-1] < peak - 0.3
assert curve["true reward"][-1] < ref_true
# PPO without a penalty climbs r_phi
assert progress > 0.1
# best-of-n over-optimises too: its true reward peaks, then falls as n (and the KL) grows
print(f"best-of-n: true reward {bon['true reward'][0]:.2f} (n = 1) -> {max(bon['true reward']):.2f} "
      f"(peak) -> {bon['true reward'][-1]:.2f} (n = {ns[-1]}), KL up to {bon['KL'][-1]:.1f}")
assert bon["true reward"][-1] < max(bon["true reward"]) - 0.3
glue("overopt_bon_true_reward_peak", max(bon["true reward"]), display=False)
glue("overopt_bon_true_reward_last", bon["true reward"][-1], display=False)

# %% [markdown]
# Both of Gao et al.'s optimisers tell the same story: the harder `r_phi` is optimised (a smaller
# beta, a larger n), the higher the score and, past a peak, the lower the true reward.
#
# PPO sees only `r_phi`, and without a penalty the best it can do is the right end of the curve
# (beta -> 0), where the true reward is lowest. A run as short as this one covers only the first
# part of the way (a KL of 0.8, of the curve's 4); the exact curve shows what lies further on. A KL penalty stops the policy earlier on the curve
# (beta is the number beside each point), but it cannot tell `r_phi`'s errors from its truths.
#
# **The cure is to ask the rater again.** Given a rater, `train_ppo(...,
# rater=world.SimulatedRater(), reward_data=rm_data["train"])` has it compare the policy's
# *current* answers with the reference's every `reward_refresh_every` steps (25 by default), and
# `r_phi` learns from them (iterated RLHF, as in Anthropic's 2022 assistant): wherever the policy
# goes, `r_phi` is corrected there. (Pairs against the reference, not two of the policy's own
# answers: a policy that says one thing every time would leave the rater nothing to compare.) It shows over long runs, which `benchmarks/ppo.py` compares (1000 steps of 64
# answers, the fixed and the refreshed reward model).

# %% [markdown]
# ## 11. The KL of one answer, token by token
#
# Where does the policy differ from the SFT model? Not everywhere: the KL concentrates on the few
# tokens where the SFT model hesitated and PPO made up its mind: the first word (a plain answer,
# not a hedge) and the city.

# %%
answers = [world.make_response("France", "correct"),
           world.make_response("France", "wrong", "Berlin")]
rows = [token_log_ratios(policy, ref_model, tokenizer, france, a) for a in answers]
# the two rows differ only at the city
columns = ["Paris | Berlin" if token == "Paris" else token for token in rows[0][0]]
fig = plot_token_kl(columns, [kl for _, kl in rows], labels=["...Paris.", "...Berlin."])

# %%
tokens, kl = rows[0]
top = sorted(range(len(kl)), key=lambda i: -abs(kl[i]))[:2]
print("largest |log pi - log pi_ref| at:", [tokens[i] for i in top])
assert set(tokens[i] for i in top) <= {"The", "Paris"}
# Berlin became far less likely than under pi_ref
assert rows[1][1][tokens.index("Paris")] < -2

# %% [markdown]
# ## What we saw
#
# * PPO with a KL penalty is four pieces: **rollout** (sample, record log-probs of policy and
#   reference), **reward** (`-beta * KL` on every token, the score at the end), **advantages**
#   (critic + GAE) and a **clipped update**. Each one is a few lines, checked here against the
#   library.
# * On the true reward it moves France's answer from Berlin to Paris, at a modest KL, and gets
#   much of the way to the exact optimum `pi*` in a few dozen steps.
# * The article's four answers, scored by `r - beta * log(pi_theta / pi_ref)`: Paris comes out
#   on top once PPO has paid the KL price of saying it more often.
# * beta trades reward for closeness to the SFT model, as the exact optimum predicts.
# * Optimised too hard, a learned reward model leads the policy to the answers it over-rates:
#   the score rises while the true reward, past a peak, falls (over-optimisation). A KL penalty
#   stops the policy earlier; refreshing the reward model on the policy's own answers corrects
#   it where the policy goes.
