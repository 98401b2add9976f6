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
# # 03 · PPO with a KL penalty: classic RLHF, piece by piece
#
# **The lesson.** PPO turns a reward into a better policy by *sampling* answers, scoring them, and
# nudging the policy towards the answers that scored above expectation. On its own that would chase the
# reward anywhere; the **KL penalty** (a small cost on every token for moving away from the SFT model)
# keeps it close to what it knew. With a penalty `beta > 0` PPO heads for the best policy of the
# KL-regularised objective, `pi*(y|x) ~ pi_ref(y|x) exp(r(x,y) / beta)`, which we can compute exactly in
# this world. Against an imperfect learned reward model and with `beta = 0`, it *over-optimises*: the
# reward model's score climbs while the true reward does not follow, and the KL runs away.
#
# We will:
# 1. draw the loop,
# 2. build each piece by hand and check it against `minirlhf.ppo`: rollout, reward, advantages, the
#    clipped update, the adaptive KL controller,
# 3. run PPO with the library, on the true reward ("PPO-GT"), and watch P("Paris") vs P("Berlin"),
# 4. knock the policy off course and watch PPO pull it back,
# 5. sweep beta against the exact optimum,
# 6. set beta = 0 against a learned reward model (over-optimisation), and refresh the reward model,
# 7. look at the KL of one answer, token by token.
#
# Runs in under a minute on a 2-core laptop CPU (short runs: the benchmark `benchmarks/ppo.py` runs
# the long ones).

# %%
import copy

import torch

from minirlhf import world
from minirlhf.logprobs import encode_prompt_response, response_logprobs, token_log_ratios, token_logprobs
from minirlhf.optimum import ExactEvaluator, kl_divergence, optimal_policy, with_outside
from minirlhf.plots import (plot_beta_sweep, plot_clipped_objective, plot_history, plot_ppo_loop,
                            plot_probability_curves, plot_runs, plot_token_kl)
from minirlhf.evaluation import answer_tracker, exact_metrics
from minirlhf.ppo import (AdaptiveKLController, Critic, PPOConfig, gae,
                          per_token_rewards, ppo_policy_loss, ppo_value_loss, rollout, score_rollouts,
                          train_ppo, whiten)
from minirlhf.models import load_base_model
from minirlhf.utils import seed_everything

torch.set_num_threads(2)
ref_model, tokenizer = load_base_model()   # the SFT model: the start of the policy AND the frozen reference
train_prompts, held_out_prompts = world.prompts("train"), world.prompts("held_out")
evaluator = ExactEvaluator(ref_model, tokenizer, train_prompts)      # exact figures on the training prompts
france = world.make_prompt("France")

# %% [markdown]
# ## 1. The loop
#
# One PPO step: sample answers from the policy, score them, turn score and KL into a reward for every
# token, estimate how much better than expected each token was (the *advantage*, with a critic), and
# take a few small, clipped gradient steps. Then sample again from the updated policy.

# %%
plot_ppo_loop();

# %% [markdown]
# ## 2. Rollout
#
# We sample one answer per prompt. Prompts are left-padded, positions come from the attention mask
# (GPT-2 has absolute positions), generation stops at EOS or at `max_new_tokens`. Then, by teacher
# forcing with the shared helper, we record on one `(B, T)` grid the log-probs of the sampled tokens
# under the policy and the frozen reference, and the critic's values. Column `t` is always *about token
# t given the tokens before it*.
#
# The **critic** is a separate network: a copy of the SFT model's transformer with a scalar head
# that starts at zero (with a learned reward model, a copy of the reward model). A value head on the
# policy's own trunk would be cheaper, but on a 64-wide model the value loss would bend the features
# the policy answers with.

# %%
policy = copy.deepcopy(ref_model)
critic = Critic.from_model(ref_model)
config = PPOConfig()                     # defaults: beta = 0.1, temperature 1, 64 rollouts per step ...
prompts = train_prompts[:6]
batch = rollout(policy, ref_model, critic, tokenizer, prompts, config, seed_everything(0))
for prompt, response in zip(prompts, batch["responses"]):
    print(f"{world.country_of_prompt(prompt):9s} -> {response!r:70s} true reward {world.true_reward(prompt, response):+.1f}")
print("grid:", tuple(batch["input_ids"].shape), " response tokens per row:", batch["response_mask"].sum(-1).tolist())

# %% [markdown]
# The log-probs recorded for the rollout must be exactly the log-probs of the same text scored on its
# own, without padding (else PPO's ratios would compare different things):

# %%
mask = batch["response_mask"]
rollout_logp = (batch["logprobs"] * mask).sum(-1)
alone = response_logprobs(policy, tokenizer, prompts, batch["responses"])   # re-encoded, EOS appended
print("rollout:", [round(v, 4) for v in rollout_logp.tolist()])
print("alone:  ", [round(v, 4) for v in alone.tolist()])
assert batch["finished"].all()   # every answer ended with EOS, so the two must agree
torch.testing.assert_close(rollout_logp, alone, atol=1e-4, rtol=1e-4)

# %% [markdown]
# ## 3. Reward: a KL penalty on every token, the score at the end
#
# The RLHF objective is `E[r(x, y)] - beta * KL(pi || pi_ref)`. The KL of a sampled answer is estimated
# by `sum_t log pi(y_t|..) - log pi_ref(y_t|..)` ("k1"), so each token pays `-beta * (log pi - log pi_ref)`
# and the score `r(x, y)` is added at the last token (the EOS). Here the score is the true reward
# (PPO-GT); with a learned reward model it is `r_phi(x, y)`. At the very first step the policy *is* the
# reference, so the KL part is 0; we nudge the policy's log-probs to see it at work.

# %%
scores = score_rollouts(batch)                       # the true reward of each decoded answer
logp = batch["logprobs"] + 0.3 * mask                # pretend the policy grew more confident
beta = 0.1
# by hand
by_hand = -beta * (logp - batch["ref_logprobs"]) * mask
last = (mask * torch.arange(mask.shape[1])).argmax(-1)          # index of each row's EOS
by_hand[torch.arange(len(prompts)), last] += scores
# the library
rewards = per_token_rewards(logp, batch["ref_logprobs"], scores, mask, beta)
torch.testing.assert_close(rewards, by_hand)
row = 0
tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][row][mask[row].bool()].tolist())
print(list(zip(tokens, [round(v, 3) for v in rewards[row][mask[row].bool()].tolist()])))

# %% [markdown]
# ## 4. Advantages: critic and GAE
#
# The advantage of a token says how much better the rest of the answer went than the critic expected.
# Generalised advantage estimation mixes one-step and long-horizon estimates with `lambda`:
#
#     delta_t = r_t + gamma V_{t+1} - V_t,     A_t = delta_t + gamma lambda A_{t+1},     R_t = A_t + V_t
#
# With `gamma = 1` (the only task reward comes at the end of a short answer), the value after the EOS is 0.

# %%
values = torch.rand(mask.shape) * mask        # pretend the critic said something
gamma, lam = config.gamma, config.lam
# by hand, one row, walking backwards over its response tokens
positions = mask[row].nonzero().flatten().tolist()
advantage, next_value, hand = 0.0, 0.0, {}
for t in reversed(positions):
    delta = rewards[row, t].item() + gamma * next_value - values[row, t].item()
    advantage = delta + gamma * lam * advantage
    hand[t], next_value = advantage, values[row, t].item()
advantages, returns = gae(rewards, values, mask, gamma, lam)
torch.testing.assert_close(advantages[row, positions], torch.tensor([hand[t] for t in positions]))
torch.testing.assert_close(returns, (advantages + values) * mask)
white = whiten(advantages, mask)              # mean 0, variance 1 over the real tokens only
print(f"whitened advantages: mean {white[mask.bool()].mean():.2e}, std {white[mask.bool()].std(correction=0):.3f}")

# %% [markdown]
# ## 5. The clipped update
#
# The policy loss is PPO's clipped surrogate: the ratio `pi / pi_old` of a token multiplies its
# advantage, but once the ratio leaves `[1 - eps, 1 + eps]` in the direction the advantage wants, the
# gain stops growing (and so does the gradient). The critic's loss is clipped the same way. Both are
# averaged over real tokens only.

# %%
plot_clipped_objective(config.clip_range);

# %% tags=["nbval-check-output"]
old = torch.zeros(1, 3)
new = torch.log(torch.tensor([[1.0, 1.5, 0.5]]))            # ratios 1, 1.5, 0.5
for a in (+1.0, -1.0):
    loss, stats = ppo_policy_loss(new, old, torch.full((1, 3), a), torch.ones(1, 3), clip_range=0.2)
    print(f"A = {a:+.0f}: loss {loss.item():+.4f}, clipped tokens {stats['policy/clipfrac'].item():.2f}")
value_loss, _ = ppo_value_loss(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.2)
print(f"value 0.5 -> target 1 from old value 0: loss {value_loss.item():.2f} (counted as if it had stopped at 0.2)")

# %% [markdown]
# ## 6. Fixed or adaptive beta
#
# Ziegler et al. (2019) adapt beta so that the KL stays near a target: above the target, beta grows;
# below, it shrinks (by at most 20% of `n_rollouts / horizon` per step).

# %% tags=["nbval-check-output"]
controller = AdaptiveKLController(init_beta=0.1, target_kl=0.5, horizon=1000)
for kl in (1.0, 1.0, 0.1):
    print(f"KL {kl:.1f} -> beta {controller.update(kl, n_steps=32):.5f}")

# %% [markdown]
# ## 7. Run it: PPO-GT at beta = 0.1
#
# Now the whole loop with the library. Every few steps we measure the policy exactly: its true reward,
# its KL to the reference, and the **attainment** `(J - J_ref) / (J* - J_ref)`: 0 is the SFT model,
# 1 the best any policy can do at this beta. We also follow France's answers.

# %%
config = PPOConfig(steps=60, eval_every=10, progress=False)
policy, history = train_ppo(copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts, config,
                            evaluate=exact_metrics(evaluator, config.beta, track=answer_tracker(tokenizer)))
plot_history(history, ["objective/scores", "objective/kl", "exact/true_reward", "exact/attainment",
                       "policy/approxkl", "val/explained_variance"], title="PPO-GT, beta = 0.1");

# %%
plot_probability_curves(history, {k: k for k in ["P(Paris)", "P(Berlin)", "P(hedge)", "P(wrong)", "P(outside)"]},
                        title="France: the policy's exact answer probabilities", logy=True);

# %%
start, end = history[0], history[-1]
print(f"true reward {start['exact/true_reward']:.3f} -> {end['exact/true_reward']:.3f},  "
      f"KL {start['exact/kl']:.3f} -> {end['exact/kl']:.3f},  attainment {end['exact/attainment']:.3f}")
print(f"P(Paris) {start['P(Paris)']:.3f} -> {end['P(Paris)']:.3f},  P(Berlin) {start['P(Berlin)']:.4f} -> {end['P(Berlin)']:.5f}")
# the lesson, asserted: the true reward and P(Paris) rose, P(Berlin) fell, at a modest KL
assert end["exact/true_reward"] > start["exact/true_reward"] + 0.3
assert end["P(Paris)"] > 0.9 > start["P(Paris)"] and end["P(Berlin)"] < start["P(Berlin)"]
assert end["exact/attainment"] > 0.7 and end["exact/kl"] < 1.0

# %% [markdown]
# ## 8. Off course, and pulled back
#
# The article this tutorial follows describes a policy that drifts, say towards hedging or towards a
# wrong city, and is pulled back. We stage it: a few supervised steps push the policy towards
# *"The capital of France is Berlin."* and towards hedging. Then PPO runs from there, on all the training
# prompts (what it learns about answering the other countries helps France too). Both forces pull it
# back: Berlin earns -1 and the hedge 0 while Paris earns +1, and every token that the drifted policy
# says more often than the SFT model costs KL.

# %%
from minirlhf.sft import sft_loss

drifted = copy.deepcopy(ref_model)
bad = ["The capital of France is Berlin.", "There are several capitals, but Paris is the official capital."]
push = encode_prompt_response(tokenizer, [france] * 2, bad)
optimizer = torch.optim.Adam(drifted.parameters(), lr=3e-3)
for _ in range(15):
    loss = sft_loss(token_logprobs(drifted, push["input_ids"], push["attention_mask"]), push["response_mask"])
    optimizer.zero_grad(); loss.backward(); optimizer.step()
config = PPOConfig(steps=40, eval_every=10, progress=False)
_, back = train_ppo(drifted, ref_model, tokenizer, train_prompts, config,
                    evaluate=exact_metrics(evaluator, config.beta, track=answer_tracker(tokenizer)))
plot_probability_curves(back, {k: k for k in ["P(Paris)", "P(Berlin)", "P(hedge)"]},
                        title="France: pushed off course, then PPO");

# %%
first, final = back[0], back[-1]
print({k: f"{first[k]:.3f} -> {final[k]:.3f}" for k in ["P(Paris)", "P(Berlin)", "P(hedge)", "exact/kl"]})
assert first["P(Berlin)"] > 0.2 and final["P(Berlin)"] < first["P(Berlin)"] / 4    # pulled back ...
assert final["P(Paris)"] > first["P(Paris)"] + 0.3                                  # ... towards Paris
assert final["exact/kl"] < first["exact/kl"]                                        # and towards pi_ref

# %% [markdown]
# ## 9. A beta sweep
#
# Small beta: the policy may move far from the SFT model to collect reward. Large beta: it stays close.
# Dashed: the exact optimum `pi*` at each beta (its true reward and its KL to `pi_ref`), which PPO
# approaches (these runs are short, 25 steps of 16 answers; `benchmarks/ppo.py` runs 1000 steps of 64).
# In a short run the KL penalty has little time to act: at the two smaller betas the KL is set by how far
# 25 steps can go, so the two end at similar KLs (which one is larger is down to chance in runs this
# short), below the optimum's. At beta = 3 the optimum barely leaves `pi_ref`, and neither does PPO: at a large beta,
# moving is itself the cost.

# %%
betas = [0.03, 0.3, 3.0]
measured = {"true reward": [], "KL": [], "attainment": []}
for b in betas:
    config = PPOConfig(beta=b, steps=25, rollouts_per_step=16, eval_every=25, progress=False)
    _, h = train_ppo(copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts, config,
                     evaluate=exact_metrics(evaluator, config.beta))
    for name, key in [("true reward", "exact/true_reward"), ("KL", "exact/kl"), ("attainment", "exact/attainment")]:
        measured[name].append(h[-1][key])
ref_probs = with_outside(evaluator.ref_set_probs)
optimum = {"true reward": [], "KL": []}
for b in betas:
    star = optimal_policy(ref_probs, evaluator.rewards, b)
    optimum["true reward"].append((star * evaluator.rewards).sum(-1).mean().item())
    optimum["KL"].append(kl_divergence(star, ref_probs).mean().item())
plot_beta_sweep(betas, measured, optimum);

# %%
print({name: [round(v, 3) for v in values] for name, values in measured.items()})
# the lesson: a larger beta keeps the policy closer to the SFT model, at the price of less reward
assert measured["KL"][0] > measured["KL"][-1] and measured["true reward"][0] > measured["true reward"][-1]
assert all(a > 0.2 for a in measured["attainment"])   # every run moved towards its own optimum
assert measured["KL"][-1] < 0.25 * measured["KL"][0]   # beta = 3: it hardly left the SFT model

# %% [markdown]
# ## 10. A learned reward model: over-optimisation
#
# Classic RLHF scores answers with a *learned* reward model `r_phi`, fitted to preference pairs
# (notebook 02). It is right on average, but not everywhere, and it has never seen most of the
# strings a drifting policy can write. To keep this notebook fast we train a small one (16 pairs per
# prompt, 100 steps; notebook 02 trains the full one); its mistakes are easy to find. Two runs against
# it, the reward model kept fixed:
#
# * **beta = 0**: PPO chases `r_phi` wherever it leads;
# * **beta = 0.1**: every step away from the SFT model costs.

# %%
from minirlhf.pipeline import train_default_reward_model
from minirlhf.reward import RewardConfig

reward_model, _, rm_data, rm_history = train_default_reward_model(
    seed=0, progress=False, pairs_per_prompt=16, config=RewardConfig(steps=100, progress=False))
print(f"reward model: held-out pair accuracy {rm_history[-1]['eval/accuracy']:.2f}")
runs = {}
for name, b in {"beta = 0": 0.0, "beta = 0.1": 0.1}.items():
    config = PPOConfig(beta=b, steps=40, rollouts_per_step=16, eval_every=10, progress=False)
    _, runs[name] = train_ppo(copy.deepcopy(ref_model), ref_model, tokenizer, train_prompts, config,
                              reward_model=reward_model, evaluate=exact_metrics(evaluator, config.beta))
plot_runs(runs, ["objective/scores", "exact/true_reward", "exact/kl"],
          title="learned reward model: score (what PPO sees) vs true reward vs KL");

# %% [markdown]
# PPO sees only the left panel: by the reward model's lights both runs improve. Without the penalty the
# policy lurches: within a few dozen steps it is far from the SFT model (right) and its true reward (middle)
# has fallen *below the SFT model's*: it found answers that `r_phi` over-rates. The penalty slows the drift
# (a smaller KL), but it cannot tell `r_phi`'s errors from its truths: given time, the policy still finds
# them.
#
# **The cure is to ask the rater again.** Given a rater, `train_ppo(..., rater=world.SimulatedRater(),
# reward_data=rm_data["train"])` has it judge pairs of the policy's *current* answers every
# `reward_refresh_every` steps, and `r_phi` learns from them (iterated RLHF, as in Anthropic's 2022
# assistant): wherever the policy goes, `r_phi` is corrected there. It shows over long runs: in
# `benchmarks/ppo.py` (1000 steps of 64 answers, beta = 0.1, the full reward model) the policy trained
# against the fixed reward model ends *no better than the SFT model* (attainment -0.01, median of 3 seeds),
# the one whose reward model is refreshed every 25 steps at 0.974 (README, "Measured"). Runs as short and
# small as these cannot show it reliably: we tried, and over 40 steps of 16 answers the differences
# between seeds were as large as the effect. Nor does refreshing replace the penalty: at beta = 0 the
# policy can run away within ten steps, faster than the rater is asked.

# %%
exact = {name: [x for x in h if "exact/true_reward" in x] for name, h in runs.items()}
for name, points in exact.items():
    print(f"{name:12s} true reward " + " ".join(f"{x['exact/true_reward']:+.2f}" for x in points)
          + "  |  KL " + " ".join(f"{x['exact/kl']:.2f}" for x in points))
free, kept = exact["beta = 0"], exact["beta = 0.1"]
scores = [x["objective/scores"] for x in runs["beta = 0"] if "objective/scores" in x]
start = free[0]["exact/true_reward"]   # the SFT model's
# the lesson, asserted: with a fixed reward model and no penalty, the score PPO sees rose while the
# true reward fell far below the SFT model's, and the policy strayed far from it ...
assert sum(scores[-5:]) / 5 > sum(scores[:5]) / 5 + 0.3
assert min(x["exact/true_reward"] for x in free) < start - 0.3
assert max(x["exact/kl"] for x in free) > 3
# ... and the penalty slowed the drift
assert max(x["exact/kl"] for x in kept) < max(x["exact/kl"] for x in free)

# %% [markdown]
# ## 11. The KL of one answer, token by token
#
# Where does the policy differ from the SFT model? Not everywhere: the KL concentrates on the few tokens
# where the SFT model hesitated and PPO made up its mind: the first word (a plain answer, not a hedge)
# and the city.

# %%
answers = [world.make_response("France", "correct"), world.make_response("France", "wrong", "Berlin")]
rows = [token_log_ratios(policy, ref_model, tokenizer, france, answer) for answer in answers]
columns = ["Paris | Berlin" if token == "Paris" else token for token in rows[0][0]]   # the rows differ only there
plot_token_kl(columns, [kl for _, kl in rows], labels=["...Paris.", "...Berlin."]);

# %%
tokens, kl = rows[0]
top = sorted(range(len(kl)), key=lambda i: -abs(kl[i]))[:2]
print("largest |log pi - log pi_ref| at:", [tokens[i] for i in top])
assert set(tokens[i] for i in top) <= {"The", "Paris"}
assert rows[1][1][tokens.index("Paris")] < -2      # Berlin became far less likely than under pi_ref

# %% [markdown]
# ## What we saw
#
# * PPO with a KL penalty is four pieces: **rollout** (sample, record log-probs of policy and reference),
#   **reward** (`-beta * KL` on every token, the score at the end), **advantages** (critic + GAE) and a
#   **clipped update**. Each one is a few lines, checked here against the library.
# * On the true reward it raises P("Paris") and suppresses "Berlin" and the hedge, at a modest KL, and
#   gets most of the way to the exact optimum `pi*` in a few dozen steps.
# * Pushed off course, it is pulled back by the reward and by the KL.
# * beta trades reward for closeness to the SFT model, as the exact optimum predicts.
# * Against a fixed learned reward model with no KL penalty, the policy chases the reward model's score:
#   the true reward first rises, then falls while the KL keeps growing (over-optimisation). The penalty
#   slows this down; what stops it is refreshing the reward model on the policy's own answers, which
#   long runs show (`benchmarks/ppo.py`).
