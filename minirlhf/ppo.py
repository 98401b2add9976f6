"""PPO with a KL penalty: classic RLHF (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022).

Read this file top to bottom; it is the whole algorithm. One PPO *step* is::

    1. rollout     sample y ~ pi(.|x) for a batch of prompts; record log pi(y_t|..), log pi_ref(y_t|..)
                   and the critic's values V(x, y_<t), all on the same (B, T) grid
    2. reward      r_t = -beta * (log pi(y_t|..) - log pi_ref(y_t|..))        on every response token
                         + score(x, y)                                         added at the last token
    3. advantages  GAE over the response tokens, returns = advantages + values (whitening optional)
    4. update      a few epochs over shuffled minibatches of the clipped surrogate and value losses
    5. beta        fixed, or adapted towards a target KL (Ziegler et al. 2019)
    6. refresh     (optional, with a learned reward model and a rater) every few steps the rater
                   judges pairs of the policy's own answers and the reward model learns from them

The score comes from the learned reward model r_phi (classic RLHF) or, with ``reward_model=None``,
from the toy world's ground-truth :func:`minirlhf.world.true_reward` ("PPO-GT"): the same
algorithm with a perfect reward model, which separates what PPO can do from what the reward
model gets wrong.

Why this reward? The RLHF objective is ``J(pi) = E_{y~pi}[r(x,y)] - beta * KL(pi || pi_ref)``.
The sequence KL is the expectation of ``sum_t log pi(y_t|..) - log pi_ref(y_t|..)`` over sampled
tokens (the "k1" estimator), so spreading ``-beta * k1`` over the tokens and adding the score at the
end makes the return of a sampled response an unbiased estimate of J; PPO then maximises J, whose
maximiser is ``pi*(y|x) ~ pi_ref(y|x) exp(r(x,y) / beta)`` (see :mod:`minirlhf.optimum`).

**The critic.** We use a *separate* critic: a transformer trunk with a scalar head read at every
position, trained by the value loss only. Why not a value head on the policy's own trunk? On a
model this small (64 wide) the value loss, whose gradients are larger and noisier than the
policy's, would bend the features the policy answers with; with its own trunk the critic can learn
freely while the policy moves only as far as the clipped surrogate lets it. It costs one more
forward/backward per minibatch, a few milliseconds on the tiny model. With a learned reward model
the critic starts as a copy of it (as in TRL): its first values are already on the score's scale.
For PPO-GT it starts from the SFT model's trunk with a zero head.

Conventions (see DESIGN.md): left-padded prompts with ``position_ids`` from the attention mask,
responses right-padded, EOS included in the response; every per-token tensor is (B, T) and aligned
like :func:`minirlhf.logprobs.token_logprobs`: column ``t`` is about token ``t`` given ``< t``.
Dropout is off (models stay in ``eval()`` mode; PyTorch still computes gradients).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from minirlhf import world
from minirlhf.logprobs import generate, position_ids_from_mask, token_log_ratios, token_logprobs
from minirlhf.models import embedding_param_groups, frozen_blocks, fused_gelu
from minirlhf.utils import (check_count, check_finite_loss, check_positive, clip_grad_norm, json_safe,
                            seed_everything)

# ----------------------------------------------------------------------------------------------
# Pure functions of tensors (unit-tested against hand-computed numbers)
# ----------------------------------------------------------------------------------------------

def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (a scalar). Shapes (B, T)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Variance (biased, 1/N) of ``values`` over positions where ``mask`` is 1 (a scalar)."""
    mean = masked_mean(values, mask)
    return masked_mean((values - mean) ** 2, mask)


def last_token_index(response_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last response token (the EOS, or the last token sampled). Shape (B,).

    Raises ValueError if a row has no response token at all.
    """
    if not (response_mask.sum(-1) > 0).all():
        raise ValueError("A row of response_mask has no response token: every response needs at "
                         "least one token (its EOS).")
    positions = torch.arange(response_mask.shape[-1], device=response_mask.device)
    return (response_mask.long() * positions).argmax(-1)


def per_token_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor,
                      response_mask: torch.Tensor, beta: float) -> torch.Tensor:
    """The PPO reward of every token, shape (B, T)::

        r_t = -beta * (log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t))     (k1 KL penalty)
        r_T += score(x, y)                     at the last response token T (EOS or last sampled)

    ``logprobs``, ``ref_logprobs``, ``response_mask``: (B, T); ``scores``: (B,). Zero on prompt and
    padding. Summed over tokens, the reward is ``score - beta * k1``: an unbiased sample of the
    RLHF objective ``r(x, y) - beta * KL``.
    """
    check_positive("beta", beta, allow_zero=True)
    mask = response_mask.to(logprobs.dtype)
    rewards = -beta * (logprobs - ref_logprobs) * mask
    last = last_token_index(response_mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``values`` to mean 0 and variance 1 over the real tokens (``mask`` = 1) only.

    ``(x - mean) / sqrt(var + 1e-8)``, with mean and (biased) variance taken over masked positions,
    so padding never shifts the statistics. With ``shift_mean=False`` the mean is added back
    (only the scale changes). Masked-out positions are set to 0. Shapes (B, T) -> (B, T).
    """
    n = mask.sum()
    if n < 2:
        raise ValueError(f"Whitening needs at least 2 real tokens, got {int(n)}.")
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask.to(values.dtype)


def gae(rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over the response tokens.

    Shapes (B, T) -> ``(advantages, returns)``, both (B, T) and zero outside the response::

        delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last response token is 0:
        A_t     = delta_t + gamma * lam * A_{t+1}       the episode ends at the EOS)
        R_t     = A_t + V_t                             (the critic's regression target)

    ``values[:, t]`` is the critic's V(x, y_<t), the value of the state in which token t is chosen.
    """
    mask = response_mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        # outside the response (padding after the EOS, the prompt) nothing flows back
        advantages[:, t] = advantage * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        next_advantage = advantages[:, t]
    returns = advantages + values * mask
    return advantages, returns


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise::

        ratio_t = exp(log pi(y_t) - log pi_old(y_t))
        L       = mean_t max( -A_t * ratio_t,  -A_t * clip(ratio_t, 1 - eps, 1 + eps) )

    Mean over real tokens (``mask`` = 1). Shapes (B, T). Returns ``(loss, stats)`` with
    ``loss/policy``, ``policy/approxkl`` (0.5 * mean (log ratio)^2, the old-to-new KL of this
    PPO step, *not* the KL to the reference) and ``policy/clipfrac`` (share of clipped tokens).
    """
    check_positive("clip_range", clip_range)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"loss/policy": loss.detach(),
                 "policy/approxkl": 0.5 * masked_mean(log_ratio ** 2, mask),
                 "policy/clipfrac": masked_mean((clipped > unclipped).float(), mask)}
    return loss, stats


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   mask: torch.Tensor, clip_range_value: float) -> tuple[torch.Tensor, dict]:
    """Clipped value loss (as in OpenAI baselines and TRL)::

        V_clip = V_old + clip(V - V_old, -eps_v, eps_v)
        L_V    = 0.5 * mean_t max( (V_t - R_t)^2, (V_clip_t - R_t)^2 )

    Mean over real tokens. Shapes (B, T). Returns ``(loss, stats)`` with ``loss/value`` and
    ``val/clipfrac``.
    """
    check_positive("clip_range_value", clip_range_value)
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"loss/value": loss.detach(),
                 "val/clipfrac": masked_mean((clipped > unclipped).float(), mask)}
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over real tokens: 1 = the critic predicts the returns, 0 = no better
    than their mean, < 0 = worse."""
    var_returns = masked_var(returns, mask)
    return (1 - masked_var(returns - values, mask) / var_returns.clamp(min=1e-8)).item()


class AdaptiveKLController:
    """Adapt beta so that the sequence KL stays near ``target_kl`` (Ziegler et al. 2019, sec. 2.2)::

        e_t     = clip( KL_t / KL_target - 1, -0.2, 0.2 )
        beta   <- beta * (1 + e_t * n_steps / horizon)

    ``n_steps`` is the number of rollouts behind ``KL_t``: with a horizon of 10,000 samples beta
    changes by at most 20% per 10,000 rollouts. A KL above target raises beta, below lowers it.
    """

    def __init__(self, init_beta: float, target_kl: float, horizon: float):
        self.value = check_positive("init_beta", init_beta)
        self.target_kl = check_positive("target_kl", target_kl)
        self.horizon = check_positive("horizon", horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move beta after a batch of ``n_steps`` rollouts whose mean sequence KL is ``current_kl``."""
        error = min(max(current_kl / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


# ----------------------------------------------------------------------------------------------
# The critic
# ----------------------------------------------------------------------------------------------

class Critic(nn.Module):
    """V(x, y_<t): a transformer trunk and a scalar head, aligned like :func:`token_logprobs`.

    ``forward(input_ids, attention_mask)`` returns (B, T) with ``out[:, t]`` = the value of the
    state in which token t is chosen (read from the hidden state of token t - 1); ``out[:, 0] = 0``.
    """

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)  # V = 0 at the start: no made-up values
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_model(cls, model) -> Critic:
        """A critic whose trunk is a copy of ``model``'s transformer (e.g. the SFT model's)."""
        return cls(copy.deepcopy(model.base_model)).requires_grad_(True)

    @classmethod
    def from_reward_model(cls, reward_model) -> Critic:
        """A critic that starts as a copy of a :class:`minirlhf.reward.RewardModel`: its trunk and its
        head (with the score normalisation folded in), read at every position. Its first values are
        "the score if the answer ended here", already on the reward's scale (TRL does the same)."""
        critic = cls(copy.deepcopy(reward_model.backbone))
        with torch.no_grad():  # (raw - mean) / std  ==  head'(h) with w' = w / std, b' = (b - mean) / std
            std = reward_model.score_std
            critic.head.weight.copy_(reward_model.head.weight / std)
            critic.head.bias.copy_((reward_model.head.bias - reward_model.score_mean) / std)
        return critic.requires_grad_(True)  # the reward model may have frozen parts of its trunk

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Values V(x, y_<t) of shape (B, T) for ids and mask of shape (B, T); ``out[:, 0] = 0``."""
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids_from_mask(attention_mask),
                            use_cache=False).last_hidden_state  # one pass, no KV cache needed
        values = self.head(hidden[:, :-1]).squeeze(-1).float()
        return nn.functional.pad(values, (1, 0))


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------

@dataclass
class PPOConfig:
    """Hyperparameters of :func:`train_ppo`. Defaults are tuned on the toy world
    (``benchmarks/ppo.py``)."""

    beta: float = 0.1
    """KL coefficient: weight of -log(pi/pi_ref) in every token's reward (>= 0; 0 = no penalty)."""
    adaptive_kl: bool = False
    """Adapt beta towards ``target_kl`` with :class:`AdaptiveKLController` instead of keeping it fixed."""
    target_kl: float = 0.5
    """Target sequence KL (nats) of the adaptive controller."""
    horizon: float = 10_000
    """Horizon (in rollouts) of the adaptive controller: how slowly beta moves."""
    gamma: float = 1.0
    """Discount: 1 since the only task reward comes at the end of a short response."""
    lam: float = 0.95
    """GAE lambda: 1 = Monte-Carlo returns (unbiased, noisy), 0 = one-step TD (biased by the critic)."""
    clip_range: float = 0.2
    """PPO's epsilon: how far the probability ratio pi/pi_old may move before the gain is cut."""
    clip_range_value: float = 0.2
    """How far a value may move from its rollout-time value before the value loss is clipped."""
    whiten_advantages: bool = False
    """Normalise each batch's advantages to mean 0, variance 1 over its real tokens (TRL always
    does). Off by default: once nearly every answer is right, a batch's advantages are mostly noise,
    and whitening blows that noise up to full-size steps. On the toy world (beta 0.1, 1000 steps,
    seed 0) it ended at attainment 0.949 against 0.983 without."""
    vf_coef: float = 0.1
    """Weight of the value loss in ``L = L_policy + vf_coef * L_value``. The critic has its own
    parameters and Adam normalises each parameter's step, so this mostly sets the scale of the
    critic's gradient before clipping; it is kept so the loss reads like the paper's."""
    epochs: int = 4
    """Passes over each batch of rollouts."""
    minibatches: int = 2
    """Minibatches per pass (each of ``rollouts_per_step / minibatches`` rollouts)."""
    rollouts_per_step: int = 64
    """Responses sampled per PPO step (prompts drawn uniformly with replacement). More rollouts
    sample the rare answers that pi* keeps more often, so they are kept, and each step is less
    noisy, which lets the learning rate be larger. 64 rather than 32, at twice the time per step:
    with the other defaults, PPO-GT at beta 0.1 (seed 0) reached attainment 0.980 on the training
    prompts and 0.964 on the held-out ones with 64, against 0.969 and 0.888 with 32. The gain
    needs the extra samples: with the earlier defaults, 64 rollouts for 500 steps (as many samples
    as 32 for 1000) did no better than 32 (``benchmarks/ppo.py --rollouts``; the README's "How
    PPO's defaults were found")."""
    temperature: float = 1.0
    """Sampling temperature; the log-probs of policy and reference use the same one."""
    max_new_tokens: int = 16
    """Length cap of a response (the longest valid answer is 13 tokens with its EOS)."""
    missing_eos_penalty: float | None = None
    """If set, subtract this from the score of a response cut at ``max_new_tokens`` without EOS."""
    reward_refresh_every: int = 25
    """Only with a learned reward model *and* a ``rater`` given to :func:`train_ppo`: every this
    many steps the rater judges fresh pairs of the policy's own answers and the reward model trains
    further on them ("iterated" or online RLHF, Bai et al. 2022). A fixed reward model is right
    only near the answers its pairs showed; the policy soon finds answers it overrates, and with
    nobody to correct it, heads there. Every 25 steps rather than 50: PPO-RM at beta 0.1, median
    attainment of 3 seeds 0.976 against 0.968 (``benchmarks/ppo.py``, with the earlier defaults:
    every parameter trained, 32 rollouts per step). 0 never refreshes."""
    refresh_pairs_per_prompt: int = 8
    """Pairs sampled per training prompt at each refresh (pairs of identical answers are dropped)."""
    learning_rate: float | None = None
    """Peak Adam learning rate of the policy (linear warm-up, then linear decay to 0 at the last
    step). None picks ``min(3e-4, 1e-4 / beta)`` (:meth:`policy_learning_rate`): the larger beta,
    the more of pi_ref's rarer answers pi* keeps (at beta 0.5, 3% hedges; at beta 1, 8%), and large
    noisy steps wipe such an answer out within a few dozen steps. Once an answer is that rare it
    is hardly ever sampled, so nothing brings it back. With every parameter trained and 32 rollouts
    per step (the earlier defaults) the bound had to be ``5e-5 / beta``: a fixed 3e-4 ended at
    attainment 0.951 at beta 0.5 (no hedge left) and 0.713 at beta 1 (PPO-GT, seed 0). With 64
    rollouts, the first block frozen and slow embeddings, the policy moves more slowly, and at
    beta 0.5 (seed 0) 2e-4 reached 0.982 where 1e-4 reached 0.970 (``benchmarks/ppo.py
    --learning-rate``). Above 3e-4 some runs collapsed (one bad batch pushed the policy into
    gibberish)."""
    embedding_lr_scale: float = 0.1
    """The policy's token embeddings learn at ``learning_rate * embedding_lr_scale`` (0 freezes
    them). GPT-2 ties them to its output layer, and there every step lowers, through the softmax,
    the words the policy was not sampling, among them words the training prompts never show: on the
    toy world, the held-out countries' names after "The capital of". Those prompts then get answers
    about a training country ("... of Cuba? A: The capital of Poland is Warsaw."). With every
    block trained and 32 rollouts, PPO-GT at beta 0.1 (medians of 3 seeds, training / held-out)
    reached 0.980 / 0.746 at scale 1 and 0.963 / 0.891 at 0.1: the slow output layer keeps the
    held-out names, and the policy climbs more slowly on the training prompts, which 64 rollouts
    per step make up for. More settings in the README's "How PPO's defaults were found"
    (``benchmarks/ppo.py --embedding-lr-scale``)."""
    critic_lr_scale: float = 5.0
    """The critic learns at ``learning_rate * critic_lr_scale``: it starts from a zero head and
    has further to go than the policy, which should move little."""
    adam_eps: float = 1e-8
    """Adam's epsilon."""
    frozen_blocks: int = 1
    """Keep the policy's first ``frozen_blocks`` transformer blocks as the SFT model has them (no
    gradient) during PPO; 0 trains every block. The idea: PPO should change *how* the policy
    answers (concisely, with the capital it knows), not what it knows about each country. Measured:
    with the first of the tiny GPT's 2 blocks kept as SFT left it, what is learned on the 20
    training countries carries over to the 4 held-out ones much better. PPO-GT at beta 0.1 (3
    seeds, with the other defaults): held-out attainment 0.948 (median) against 0.895 with every
    block trained, and 0.980 against 0.976 on the training prompts (``benchmarks/ppo.py
    --frozen-blocks``)."""
    warmup_steps: int = 5
    """Linear warm-up steps of the learning rate."""
    max_grad_norm: float = 1.0
    """Clip the norm of the gradient (policy and critic together, as in TRL) to this. Together,
    a fresh critic's large early gradients shrink the policy's steps: a brake that keeps PPO from
    racing to the blind spots of a learned reward model (clipped separately, the policy finds
    answers like "," that the reward model overrates within 100 steps)."""
    steps: int = 1000
    """PPO steps (each: one rollout batch, then ``epochs x minibatches`` optimiser steps). The last
    percent of attainment is slow: the rare bad answers must be *sampled* to be suppressed."""
    seed: int = 0
    """Seed of sampling and shuffling."""
    eval_every: int = 100
    """Exact evaluation (attainment, true reward, KL) every this many steps, and at the end;
    0 turns it off."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        check_positive("beta", self.beta, allow_zero=True)
        for name in ("target_kl", "horizon", "clip_range", "clip_range_value", "temperature",
                     "max_grad_norm"):
            check_positive(name, getattr(self, name))
        if self.learning_rate is not None:
            check_positive("learning_rate", self.learning_rate)
        check_positive("vf_coef", self.vf_coef, allow_zero=True)
        check_positive("critic_lr_scale", self.critic_lr_scale)
        check_positive("embedding_lr_scale", self.embedding_lr_scale, allow_zero=True)
        check_count("frozen_blocks", self.frozen_blocks)
        check_positive("adam_eps", self.adam_eps)
        check_positive("reward_refresh_every", self.reward_refresh_every, allow_zero=True)
        for name in ("epochs", "minibatches", "rollouts_per_step", "max_new_tokens", "steps",
                     "refresh_pairs_per_prompt"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"gamma and lam must lie in [0, 1], got {self.gamma} and {self.lam}.")
        if self.rollouts_per_step % self.minibatches:
            raise ValueError(f"rollouts_per_step ({self.rollouts_per_step}) must be a multiple of "
                             f"minibatches ({self.minibatches}).")
        if self.adaptive_kl and self.beta == 0:
            raise ValueError("The adaptive KL controller starts from beta and scales it: give beta > 0.")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}.")

    def policy_learning_rate(self) -> float:
        """``learning_rate``, or when it is None the default for this beta: min(3e-4, 5e-5 / beta)
        (with the adaptive controller, for the starting beta)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 3e-4 if self.beta == 0 else min(3e-4, 1e-4 / self.beta)


# ----------------------------------------------------------------------------------------------
# The PPO step, piece by piece
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def rollout(policy, ref_model, critic, tokenizer, prompts: list[str], config: PPOConfig,
            generator: torch.Generator | None = None) -> dict:
    """1. Sample one response per prompt and record what the update needs, on one (B, T) grid.

    Returns the batch layout of :func:`minirlhf.logprobs.generate` (``input_ids``,
    ``attention_mask``, ``response_mask``, ``responses``, ``finished``) plus ``prompts`` and
    ``logprobs``, ``ref_logprobs``, ``entropy`` and ``values``, each (B, T), computed by
    teacher forcing with the shared helper at the sampling temperature.
    """
    batch = generate(policy, tokenizer, prompts, config.max_new_tokens, config.temperature, generator)
    ids, attention = batch["input_ids"], batch["attention_mask"]
    batch["response_mask"] = batch["response_mask"].float()
    batch["logprobs"], batch["entropy"] = token_logprobs(policy, ids, attention, config.temperature,
                                                         return_entropy=True)
    batch["ref_logprobs"] = token_logprobs(ref_model, ids, attention, config.temperature)
    batch["values"] = critic(ids, attention)
    batch["prompts"] = list(prompts)
    return batch


@torch.no_grad()
def score_rollouts(batch: dict, reward_model=None, missing_eos_penalty: float | None = None
                   ) -> torch.Tensor:
    """2. The score r(x, y) of each response, shape (B,).

    From the learned ``reward_model`` (its ``forward(input_ids, attention_mask)`` reads the score
    at the last real token), or, when it is None, the toy world's :func:`world.true_reward` of the
    decoded text (PPO-GT). A response without EOS loses ``missing_eos_penalty`` if set.
    """
    device = batch["input_ids"].device
    if reward_model is None:
        scores = torch.tensor([world.true_reward(p, y) for p, y in zip(batch["prompts"],
                                                                       batch["responses"])])
    else:
        scores = reward_model(batch["input_ids"], batch["attention_mask"]).float()
    scores = scores.to(device)
    if missing_eos_penalty is not None:
        scores = scores - missing_eos_penalty * (~batch["finished"]).to(device).float()
    return scores


def ppo_update(policy, critic, optimizer, batch: dict, advantages: torch.Tensor,
               returns: torch.Tensor, config: PPOConfig, generator: torch.Generator | None = None
               ) -> dict[str, float]:
    """4. ``epochs`` passes over shuffled minibatches of the rollouts; returns mean loss statistics."""
    B = batch["input_ids"].shape[0]
    size = B // config.minibatches
    stats = []
    for _ in range(config.epochs):
        order = torch.randperm(B, generator=generator).to(batch["input_ids"].device)
        for start in range(0, B, size):
            rows = order[start:start + size]
            ids, attention = batch["input_ids"][rows], batch["attention_mask"][rows]
            mask = batch["response_mask"][rows]
            logprobs = token_logprobs(policy, ids, attention, config.temperature)
            policy_loss, policy_stats = ppo_policy_loss(logprobs, batch["logprobs"][rows],
                                                        advantages[rows], mask, config.clip_range)
            value_loss, value_stats = ppo_value_loss(critic(ids, attention), batch["values"][rows],
                                                     returns[rows], mask, config.clip_range_value)
            loss = policy_loss + config.vf_coef * value_loss
            check_finite_loss(loss, len(stats))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(optimizer, config.max_grad_norm)  # the policy's and the critic's
            optimizer.step()
            stats.append({**policy_stats, **value_stats})
    return {key: torch.stack([s[key] for s in stats]).mean().item() for key in stats[0]}


# How the reward model trains at a refresh: briefly and gently, so that its scores (and with them
# the critic's targets) move a little at each refresh instead of jumping; on the sampled pairs at a
# temperature above 1, as DPO's on-policy rounds do, so that rare answers are judged too.
REFRESH_REWARD_CONFIG = {"steps": 30, "learning_rate": 1e-3, "head_learning_rate": 3e-3, "warmup_steps": 5}
REFRESH_TEMPERATURE = 1.3


def refresh_reward_model(reward_model, policy, tokenizer, prompts: list[str], rater, seen,
                         config: PPOConfig, step: int):
    """6. Iterated RLHF: ``rater`` judges pairs of the policy's current answers to ``prompts``,
    and ``reward_model`` trains further (in place) on every pair so far (``seen``, a Dataset or
    None, plus the fresh ones).

    Returns ``(seen, metrics)``: the grown data, and ``reward_model/refresh_pairs`` and
    ``reward_model/refresh_accuracy``: how often the reward model agreed with the rater on the
    fresh pairs *before* learning from them. Low agreement means the policy had found answers
    that the reward model scores wrongly.
    """
    from datasets import concatenate_datasets

    from minirlhf.preferences import on_policy_pairs
    from minirlhf.reward import RewardConfig, evaluate_reward_model, train_reward_model

    fresh = on_policy_pairs(policy, tokenizer, prompts, config.refresh_pairs_per_prompt, rater,
                            seed=config.seed + step, temperature=REFRESH_TEMPERATURE)
    if len(fresh) == 0:  # the policy gives one answer per prompt: nothing to compare
        return seen, {"reward_model/refresh_pairs": 0}
    agreement = evaluate_reward_model(reward_model, tokenizer, fresh)["accuracy"]
    seen = fresh if seen is None else concatenate_datasets([seen, fresh])
    train_reward_model(reward_model, tokenizer, seen,
                       RewardConfig(seed=config.seed + step, progress=False, **REFRESH_REWARD_CONFIG))
    return seen, {"reward_model/refresh_pairs": len(fresh), "reward_model/refresh_accuracy": agreement}


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------

def check_reward_model(reward_model, tokenizer) -> None:
    """Refuse a reward model that reads token ids differently from the policy's ``tokenizer``.

    PPO hands the policy's token ids straight to the reward model, so both must share one
    vocabulary (same words at the same ids, same PAD and EOS).
    """
    if not callable(reward_model):
        raise TypeError("reward_model must be a module whose forward(input_ids, attention_mask) "
                        "returns one score per row (a minirlhf.reward.RewardModel), or None.")
    own = getattr(reward_model, "tokenizer", None)
    if own is not None:
        same = (own.get_vocab() == tokenizer.get_vocab() and own.pad_token_id == tokenizer.pad_token_id
                and own.eos_token_id == tokenizer.eos_token_id)
        if not same:
            raise ValueError("The reward model's tokenizer differs from the policy's (vocabulary or "
                             "PAD/EOS ids): its scores would read other words. Train the reward model "
                             "with the policy's tokenizer (minirlhf.tokenizer.build_tokenizer()).")
        return
    backbone = getattr(reward_model, "backbone", reward_model)
    embeddings = backbone.get_input_embeddings() if hasattr(backbone, "get_input_embeddings") else None
    if embeddings is not None and embeddings.num_embeddings != len(tokenizer):
        raise ValueError(f"The reward model's embedding has {embeddings.num_embeddings} tokens but the "
                         f"tokenizer has {len(tokenizer)}: they do not belong together. Train the "
                         "reward model with the policy's tokenizer.")


def _exact_metrics(evaluator, policy, beta: float, prefix: str) -> dict[str, float]:
    """Exact figures of the policy on the evaluator's prompts (attainment only when beta > 0)."""
    report = evaluator.evaluate(policy, beta if beta > 0 else 1.0)
    keys = ["true_reward", "kl", "p_correct", "coverage"] + (["attainment"] if beta > 0 else [])
    return {f"{prefix}/{key}": report[key] for key in keys}


def train_ppo(policy, ref_model, tokenizer, prompts: list[str], config: PPOConfig | None = None,
              reward_model=None, evaluator=None, eval_prompts=None,
              callback: Callable | None = None, rater=None, reward_data=None):
    """Train ``policy`` (a causal LM, in place) with PPO and a KL penalty to ``ref_model``.

    * ``prompts``: the training prompts; each step draws ``rollouts_per_step`` of them at random.
    * ``reward_model``: None for PPO-GT (score = :func:`world.true_reward` of the decoded text), or
      a reward model (e.g. :class:`minirlhf.reward.RewardModel`) with ``forward(input_ids,
      attention_mask) -> (B,)`` that shares the policy's tokenizer.
    * ``evaluator``: an :class:`~minirlhf.optimum.ExactEvaluator` on the training prompts (built
      when None and ``eval_every`` > 0); ``eval_prompts``: held-out prompts (or their evaluator).
      Every ``eval_every`` steps the exact attainment etc. are logged under ``exact/`` and
      ``exact_held_out/``, at ``config.beta``.
    * ``callback(step, policy) -> dict | None``: called at evaluation steps; what it returns is
      added to that step's metrics (e.g. P("Paris") for a plot).
    * ``rater`` (e.g. :class:`minirlhf.world.SimulatedRater`): with a learned reward model, refresh
      it every ``config.reward_refresh_every`` steps, but not after the last one
      (:func:`refresh_reward_model`). A copy is
      refreshed; the caller's reward model stays as it was. ``reward_data``: the pairs it was
      trained on, which each refresh trains on again beside the new ones, so that it keeps what
      they taught.

    Returns ``(policy, history)``: ``history`` is a list of one metrics dict per PPO step
    (``step`` = 1, 2, ...; names as in TRL: ``objective/kl``, ``objective/scores``,
    ``policy/approxkl``, ...), preceded, when evaluating, by a ``step`` 0 record with the exact
    figures of the starting policy. The critic is
    not returned; it is discarded after training.
    """
    config = config or PPOConfig()
    if not prompts:
        raise ValueError("No prompts to train on: pass e.g. minirlhf.world.prompts('train').")
    if reward_model is not None:
        check_reward_model(reward_model, tokenizer)
    if rater is not None and reward_model is None:
        raise ValueError("A rater refreshes a learned reward model, and PPO-GT (reward_model=None) "
                         "has none: pass a reward model, or no rater.")
    refreshing = rater is not None and config.reward_refresh_every > 0
    seen = None
    if refreshing:
        reward_model = copy.deepcopy(reward_model)  # refresh a copy: the caller's stays as it was
        if reward_data is not None:
            seen = reward_data.select_columns(["prompt", "chosen", "rejected"])
    from minirlhf.models import check_tokenizer_matches
    from minirlhf.optimum import ExactEvaluator

    check_tokenizer_matches(policy, tokenizer)
    generator = seed_everything(config.seed)
    device = next(policy.parameters()).device
    evaluators = {}
    if config.eval_every:
        evaluators["exact"] = evaluator or ExactEvaluator(ref_model, tokenizer, list(prompts))
        if eval_prompts is not None:
            evaluators["exact_held_out"] = (eval_prompts if isinstance(eval_prompts, ExactEvaluator)
                                            else ExactEvaluator(ref_model, tokenizer, list(eval_prompts)))
    # dropout off everywhere: eval() mode; gradients still flow through the policy and critic
    policy.eval()
    ref_model.eval()  # never trained: rollout() runs it without gradients
    if reward_model is not None:
        reward_model.eval()
    if reward_model is not None and hasattr(reward_model, "backbone"):
        critic = Critic.from_reward_model(reward_model).to(device).eval()
    else:
        critic = Critic.from_model(ref_model).to(device).eval()
    learning_rate = config.policy_learning_rate()
    optimizer = torch.optim.Adam(
        embedding_param_groups(policy, learning_rate, config.embedding_lr_scale)
        + [{"params": list(critic.parameters()), "lr": learning_rate * config.critic_lr_scale}],
        lr=learning_rate, eps=config.adam_eps,
        fused=device.type in ("cpu", "cuda"))  # one kernel for all parameters: 3x faster steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    kl_controller = (AdaptiveKLController(config.beta, config.target_kl, config.horizon)
                     if config.adaptive_kl else None)
    beta = config.beta

    def evaluate(step: int) -> dict:
        """Exact figures (and the callback's) of the policy as it is now."""
        record = {}
        for prefix, ev in evaluators.items():
            record.update(_exact_metrics(ev, policy, config.beta, prefix))
        if callback is not None:
            record.update(callback(step, policy) or {})
        return record

    # GPT-2's activation as one kernel while we train (same function): a ~15% faster step;
    # the first config.frozen_blocks blocks of the policy get no gradient (given back at the end)
    with fused_gelu(policy, ref_model, critic, reward_model), frozen_blocks(policy, config.frozen_blocks):
        start = time.perf_counter()
        # step 0 is the starting policy (the SFT model): its exact figures start every curve
        history = [{"step": 0, "beta": beta, **evaluate(0), "time": 0.0}] if config.eval_every else []
        for step in tqdm(range(1, config.steps + 1), desc="PPO", disable=not config.progress):
            step_start = time.perf_counter()
            rows = torch.randint(len(prompts), (config.rollouts_per_step,), generator=generator).tolist()
            # 1. rollout
            batch = rollout(policy, ref_model, critic, tokenizer, [prompts[i] for i in rows], config,
                            generator)
            mask = batch["response_mask"]
            # 2. reward: k1 KL penalty on every token, score at the last one
            scores = score_rollouts(batch, reward_model, config.missing_eos_penalty)
            rewards = per_token_rewards(batch["logprobs"], batch["ref_logprobs"], scores, mask, beta)
            # 3. advantages and returns
            advantages, returns = gae(rewards, batch["values"], mask, config.gamma, config.lam)
            if config.whiten_advantages:
                advantages = whiten(advantages, mask)
            # 4. update
            update_start = time.perf_counter()
            stats = ppo_update(policy, critic, optimizer, batch, advantages, returns, config, generator)
            scheduler.step()
            update_time = time.perf_counter() - update_start
            # 5. log, then adapt beta to the KL of this batch
            kl = ((batch["logprobs"] - batch["ref_logprobs"]) * mask).sum(-1)  # sequence KL (k1)
            record = {"step": step, "beta": beta, **stats,
                      "objective/scores": scores.mean().item(),
                      "objective/kl": kl.mean().item(),
                      "objective/non_score_reward": (-beta * kl).mean().item(),
                      "objective/rlhf_reward": (scores - beta * kl).mean().item(),
                      "objective/entropy": (batch["entropy"] * mask).sum(-1).mean().item(),
                      "objective/true_reward": _true_reward(batch),
                      "val/explained_variance": explained_variance(batch["values"], returns, mask),
                      "eos_fraction": batch["finished"].float().mean().item(),
                      "learning_rate": scheduler.get_last_lr()[0],
                      "time/update": update_time,
                      "time/step": time.perf_counter() - step_start}
            if kl_controller is not None:
                beta = kl_controller.update(record["objective/kl"], config.rollouts_per_step)
            # 6. (optional) the rater judges the policy's current answers; the reward model learns
            #    (not after the last step: no PPO step would use what it learned)
            if refreshing and step % config.reward_refresh_every == 0 and step < config.steps:
                seen, refresh_metrics = refresh_reward_model(
                    reward_model, policy, tokenizer, list(dict.fromkeys(prompts)), rater, seen, config, step)
                record.update(refresh_metrics)
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                record.update(evaluate(step))
            record["time"] = time.perf_counter() - start
            history.append(record)
    return policy, history


def _lr_factor(step: int, config: PPOConfig) -> float:
    """Learning-rate multiplier: linear warm-up, then linear decay to 0 at the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    return max(0.0, 1 - (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))


def _true_reward(batch: dict) -> float:
    """Mean ground-truth reward of the sampled responses (the toy world's truth, for the logs)."""
    return sum(world.true_reward(p, y) for p, y in zip(batch["prompts"], batch["responses"])) / len(
        batch["prompts"])


__all__ = [
    "AdaptiveKLController", "Critic", "PPOConfig", "explained_variance", "gae", "last_token_index",
    "masked_mean", "masked_var", "per_token_rewards", "ppo_policy_loss", "ppo_update",
    "ppo_value_loss", "rollout", "score_rollouts", "train_ppo", "whiten",
]


# ----------------------------------------------------------------------------------------------
# Watching a run, and the demo stage
# ----------------------------------------------------------------------------------------------

def answer_tracker(tokenizer, country: str = "France", wrong_city: str = "Berlin") -> Callable:
    """A ``callback`` for :func:`train_ppo` that records, for ``country``'s prompt, the exact
    probability of the correct answer, of one wrong city, of any hedge, of any wrong city and of
    text outside the candidate set: keys ``P(Paris)``, ``P(Berlin)``, ``P(hedge)``, ``P(wrong)``,
    ``P(outside)`` (with the names of ``country``'s capital and ``wrong_city``)."""
    from minirlhf.logprobs import response_logprobs
    from minirlhf.optimum import answer_kind_probs

    prompt = world.make_prompt(country)
    capital = world.CAPITAL_OF[country]
    answers = {f"P({capital})": world.make_response(country, "correct"),
               f"P({wrong_city})": world.make_response(country, "wrong", wrong_city)}

    def track(step: int, policy) -> dict[str, float]:
        probs = response_logprobs(policy, tokenizer, [prompt] * len(answers), list(answers.values())).exp()
        kinds = answer_kind_probs(policy, tokenizer, [prompt])
        return {**{label: p.item() for label, p in zip(answers, probs)},
                "P(hedge)": (kinds["hedge"] + kinds["hedge_wrong"]).item(),
                "P(wrong)": kinds["wrong"].item(), "P(outside)": kinds["outside"].item()}

    return track


def demo_stage(outdir, reward_model=None, quick: bool = False, reward_data=None) -> dict:
    """The PPO stage of ``minirlhf demo``: PPO scored by ``reward_model`` (classic RLHF), or by the
    true reward when it is None (PPO-GT). With ``reward_data`` (the reward model's training pairs)
    the simulated rater refreshes the reward model as PPO goes (:func:`refresh_reward_model`).
    From the shipped SFT model at the default config
    (beta = 0.1) but 300 steps (about a minute on 2 cores; ``benchmarks/ppo.py`` runs the full
    1000, and both scores). Writes PNG figures into ``outdir`` and returns JSON-able metrics, plus
    the trained policy under ``policy``.

    ``quick``: a smoke run of a few seconds (few steps); its numbers mean little.
    """
    from pathlib import Path

    from minirlhf import plots
    from minirlhf.optimum import ExactEvaluator
    from minirlhf.sft import load_base_model

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ref, tokenizer = load_base_model()
    evaluator = ExactEvaluator(ref, tokenizer, world.prompts("train"))
    held_out = ExactEvaluator(ref, tokenizer, world.prompts("held_out"))
    runs = {"gt": None} if reward_model is None else {"rm": reward_model}
    metrics, figures, policy = {}, {}, None
    for name, scorer in runs.items():
        config = PPOConfig(steps=4, eval_every=2, progress=False) if quick else PPOConfig(
            steps=300, eval_every=25)  # with a progress bar
        start = time.perf_counter()
        refresh = ({"rater": world.SimulatedRater(seed=config.seed), "reward_data": reward_data}
                   if scorer is not None and reward_data is not None else {})
        policy, history = train_ppo(copy.deepcopy(ref), ref, tokenizer, world.prompts("train"), config,
                                    reward_model=scorer, evaluator=evaluator, eval_prompts=held_out,
                                    callback=answer_tracker(tokenizer), **refresh)
        last = history[-1]
        label = "PPO-GT (true reward)" if name == "gt" else "PPO (learned reward model)"
        metrics.update({f"ppo_{name}/{key}": last[f"exact/{key}"]
                        for key in ("attainment", "true_reward", "kl", "p_correct", "coverage")})
        metrics[f"ppo_{name}/attainment_held_out"] = last["exact_held_out/attainment"]
        metrics[f"ppo_{name}/seconds"] = time.perf_counter() - start
        metrics[f"ppo_{name}/seconds_per_step"] = sorted(h["time/step"] for h in history[1:])[
            (len(history) - 1) // 2]
        figures[f"ppo_{name}_training.png"] = plots.plot_history(
            history, ["objective/scores", "objective/kl", "objective/true_reward", "exact/attainment",
                      "policy/approxkl", "val/explained_variance"], title=label)
        figures[f"ppo_{name}_france.png"] = plots.plot_probability_curves(
            history, {k: k for k in ("P(Paris)", "P(Berlin)", "P(hedge)", "P(wrong)", "P(outside)")},
            title=f"{label}: answers to France", logy=True)
        tokens, kl = token_log_ratios(policy, ref, tokenizer, world.make_prompt("France"),
                              world.make_response("France", "correct"))
        figures[f"ppo_{name}_token_kl.png"] = plots.plot_token_kl(tokens, [kl])
    metrics["beta"] = PPOConfig().beta
    metrics["ppo/figures"] = plots.save_figures(figures, outdir)
    metrics = json_safe(metrics)
    metrics["policy"] = policy
    return metrics
