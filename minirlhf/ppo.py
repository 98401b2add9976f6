"""PPO with a KL penalty: classic RLHF (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022).

Read this file top to bottom, with :mod:`minirlhf.rl` (what PPO and GRPO share: the config, sampling,
scoring, the refreshes); it is the whole algorithm. One PPO *step* is::

    1. rollout     sample y ~ pi(.|x) for a batch of prompts; record log pi(y_t|..), log pi_ref(y_t|..)
                   and the critic's values V(x, y_<t), all on the same (B, T) grid
    2. reward      r_t = -beta * (log pi(y_t|..) - log pi_ref(y_t|..))        on every response token
                         + score(x, y)                                         added at the last token
    3. advantages  GAE over the response tokens, returns = advantages + values (whitening optional)
    4. update      a few epochs over shuffled minibatches of the clipped surrogate and value losses
    5. log, beta   log the step (TRL's names); beta fixed, or adapted towards a target KL (Ziegler et
                   al. 2019)
    6. refresh     (optional, with a learned reward model and a rater) every few steps the rater
                   compares the policy's answers with pi_ref's and the reward model learns from them

The score comes from a learned reward model (classic RLHF) or, with ``reward_model=None``, from
the toy world's true reward ("PPO-GT": PPO with a perfect reward model).

Why this reward? The objective is ``J(pi) = E_{y~pi}[r(x,y)] - beta * KL(pi || pi_ref)``. Summed over
a sampled answer, ``-beta * k1`` plus the score is an unbiased estimate of J, whose maximiser is
``pi*(y|x) ~ pi_ref(y|x) exp(r(x,y) / beta)`` (computed exactly in :mod:`minirlhf.optimum`).

The critic has its own trunk (a copy of the reward model, or of the SFT model with a zero head). Why,
and how each default was chosen: the docs page "How the defaults were found" (docs/defaults.md).

Conventions: prompts left-padded with ``position_ids`` from the attention mask; every per-token
tensor is (B, T), column ``t`` about token ``t`` given ``< t`` (as
:func:`~minirlhf.logprobs.token_logprobs`). Dropout is off (``eval()`` mode; gradients still flow).
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
from minirlhf.checks import check_config, check_positive
from minirlhf.logprobs import last_token_index, position_ids_from_mask, token_logprobs
from minirlhf.models import check_tokenizer_matches
from minirlhf.rl import RaterRefreshes, RLConfig, check_world_prompts, rollout, score_rollouts, weighted_mean
from minirlhf.training import (
    check_finite_loss,
    clip_grad_norm,
    embedding_param_groups,
    frozen_blocks,
    fused_gelu,
    lr_factor,
    seed_everything,
)

# ----------------------------------------------------------------------------------------------
# Pure functions of tensors (unit-tested against hand-computed numbers)
# ----------------------------------------------------------------------------------------------

def per_token_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor,
                      response_mask: torch.Tensor, beta: float) -> torch.Tensor:
    """The PPO reward of every token, (B, T) tensors and ``scores`` (B,) -> (B, T), 0 off the response::

        r_t  = -beta * (log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t))     (k1 KL penalty)
        r_T += score(x, y)                      at the last response token T (EOS or last sampled)

    Summed over an answer: ``score - beta * k1``, an unbiased sample of ``r(x, y) - beta * KL``.
    """
    check_positive("beta", beta, allow_zero=True)
    mask = response_mask.to(logprobs.dtype)
    rewards = -beta * (logprobs - ref_logprobs) * mask
    last = last_token_index(response_mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016). (B, T) -> ``(advantages, returns)``::

        delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last response token is 0:
        A_t     = delta_t + gamma * lam * A_{t+1}       the episode ends at the EOS)
        R_t     = A_t + V_t                             (the critic's regression target)

    ``values[:, t]`` is V(x, y_<t), the value of the state in which token t is chosen.
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


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Variance (biased, 1/N) of ``values`` over positions where ``mask`` is 1 (a scalar)."""
    mean = weighted_mean(values, mask)
    return weighted_mean((values - mean) ** 2, mask)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``(x - mean) / sqrt(var + 1e-8)`` with mean and variance over the real tokens (``mask`` = 1)
    only; padding is set to 0. ``shift_mean=False`` adds the mean back. Shapes (B, T) -> (B, T)."""
    n = mask.sum()
    if n < 2:
        raise ValueError(f"Whitening needs at least 2 real tokens, got {int(n)}.")
    mean, var = weighted_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask.to(values.dtype)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over real tokens: 1 = the critic predicts the returns, 0 = no better
    than their mean, < 0 = worse."""
    var_returns = masked_var(returns, mask)
    return (1 - masked_var(returns - values, mask) / var_returns.clamp(min=1e-8)).item()


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    weights: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) as a loss, mean over real tokens::

        ratio_t = exp(log pi(y_t) - log pi_old(y_t))
        L       = mean_t max( -A_t * ratio_t,  -A_t * clip(ratio_t, 1 - eps, 1 + eps) )

    Shapes (B, T). ``weights``: how much each token counts in the mean, the response mask for PPO
    (1 on response tokens, 0 on prompt and padding) or GRPO's :func:`~minirlhf.grpo.token_weights`.
    Returns ``(loss, stats)``: ``policy/approxkl`` = 0.5 mean (log ratio)^2 is the
    old-to-new KL of this step (*not* the KL to the reference); ``policy/clipfrac`` the clipped share.
    """
    check_positive("clip_range", clip_range)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = weighted_mean(torch.maximum(unclipped, clipped), weights)
    with torch.no_grad():
        stats = {"loss/policy": loss.detach(),
                 "policy/approxkl": 0.5 * weighted_mean(log_ratio ** 2, weights),
                 "policy/clipfrac": weighted_mean((clipped > unclipped).float(), weights)}
    return loss, stats


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   mask: torch.Tensor, clip_range_value: float) -> tuple[torch.Tensor, dict]:
    """Clipped value loss (OpenAI baselines, TRL), mean over real tokens; shapes (B, T)::

        V_clip = V_old + clip(V - V_old, -eps_v, eps_v)
        L_V    = 0.5 * mean_t max( (V_t - R_t)^2, (V_clip_t - R_t)^2 )

    Returns ``(loss, stats)`` with ``loss/value`` and ``val/clipfrac``.
    """
    check_positive("clip_range_value", clip_range_value)
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * weighted_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"loss/value": loss.detach(),
                 "val/clipfrac": weighted_mean((clipped > unclipped).float(), mask)}
    return loss, stats


class AdaptiveKLController:
    """Adapt beta so that the sequence KL stays near ``target_kl`` (Ziegler et al. 2019, sec. 2.2)::

        e_t   = clip( KL_t / KL_target - 1, -0.2, 0.2 )
        beta <- beta * (1 + e_t * n_steps / horizon)

    ``n_steps`` is the number of rollouts behind ``KL_t``: a KL above target raises beta. One update
    changes beta by at most the fraction ``0.2 * n_steps / horizon``; from ``n_steps / horizon = 5``
    on, the factor could reach 0 or turn negative, so a horizon under ``0.4 * n_steps`` (where one
    update could halve beta) is refused.
    """

    def __init__(self, init_beta: float, target_kl: float, horizon: float):
        self.value = check_positive("init_beta", init_beta)
        self.target_kl = check_positive("target_kl", target_kl)
        self.horizon = check_positive("horizon", horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move beta after a batch of ``n_steps`` rollouts whose mean sequence KL is ``current_kl``."""
        check_adaptive_horizon(self.horizon, n_steps)
        error = min(max(current_kl / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


def check_adaptive_horizon(horizon: float, rollouts_per_step: int) -> None:
    """Refuse a horizon so short that one update of :class:`AdaptiveKLController` could change beta by
    more than half (``rollouts_per_step / horizon > 2.5``; from 5 on, beta could turn 0 or negative)."""
    if rollouts_per_step / horizon > 2.5:
        raise ValueError(f"The adaptive KL controller's horizon ({horizon:g}) is too short for "
                         f"{rollouts_per_step} rollouts per step: one update moves beta by up to "
                         f"{20 * rollouts_per_step / horizon:.0f}% (at 100% or more it turns 0 or negative). "
                         f"Give horizon >= {rollouts_per_step / 2.5:g} (0.4 x rollouts_per_step); the "
                         "usual 10,000 moves beta slowly.")


# ----------------------------------------------------------------------------------------------
# The critic
# ----------------------------------------------------------------------------------------------

class Critic(nn.Module):
    """PPO's critic V(x, y_<t): a transformer trunk and a scalar head. ``forward(input_ids, attention_mask)``
    gives (B, T): ``out[:, t]`` is the value of the state in which token t is chosen, ``out[:, 0] = 0``."""

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
        """A copy of a :class:`minirlhf.reward.RewardModel` (trunk, and head with the score normalisation
        folded in) read at every position: its first values are already on the score's scale, as in TRL."""
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
# Configuration (why each default: docs/defaults.md#ppo)
# ----------------------------------------------------------------------------------------------

@dataclass
class PPOConfig(RLConfig):
    """Hyperparameters of :func:`train_ppo`, tuned on the toy world (``benchmarks/ppo.py``): those of
    :class:`~minirlhf.rl.RLConfig` (beta, sampling, optimiser, refreshes) and PPO's own below."""

    adaptive_kl: bool = False
    """Adapt beta towards ``target_kl`` with :class:`AdaptiveKLController` instead of keeping it fixed."""
    target_kl: float = 0.5
    """Target sequence KL (nats) of the adaptive controller."""
    horizon: float = 10_000
    """Horizon (in rollouts) of the adaptive controller: how slowly beta moves."""
    gamma: float = 1.0
    """Discount: 1, since the only task reward comes at the end of a short answer."""
    lam: float = 0.95
    """GAE lambda: 1 = Monte-Carlo returns (unbiased, noisy), 0 = one-step TD (biased by the critic)."""
    clip_range_value: float = 0.2
    """How far a value may move from its rollout-time value before the value loss is clipped."""
    whiten_advantages: bool = False
    """Normalise each batch's advantages to mean 0, variance 1 (TRL always does; why off here:
    docs/defaults.md)."""
    vf_coef: float = 0.1
    """Weight of the value loss in ``L = L_policy + vf_coef * L_value``."""
    rollouts_per_step: int = 64
    """Answers sampled per PPO step (prompts drawn uniformly with replacement). More rollouts sample
    the rare answers pi* keeps, and make each step less noisy."""
    critic_lr_scale: float = 5.0
    """The critic learns at ``learning_rate * critic_lr_scale``: it starts further from its target."""

    def __post_init__(self):
        super().__post_init__()
        check_config(self, positive=("target_kl", "horizon", "clip_range_value", "critic_lr_scale",
                                     "rollouts_per_step"),
                     non_negative=("vf_coef",), unit_interval=("gamma", "lam"))
        if self.rollouts_per_step % self.minibatches:
            raise ValueError(f"rollouts_per_step ({self.rollouts_per_step}) must be a multiple of "
                             f"minibatches ({self.minibatches}).")
        if self.adaptive_kl and self.beta == 0:
            raise ValueError("The adaptive KL controller starts from beta and scales it: give beta > 0.")
        if self.adaptive_kl:
            check_adaptive_horizon(self.horizon, self.rollouts_per_step)


# ----------------------------------------------------------------------------------------------
# The PPO step, piece by piece
# ----------------------------------------------------------------------------------------------

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


@torch.no_grad()
def ppo_metrics(batch: dict, scores: torch.Tensor, returns: torch.Tensor, beta: float) -> dict[str, float]:
    """5. What a PPO step logs, named as in TRL: ``objective/kl`` is the sequence KL to the reference
    (k1, summed over tokens, mean over the batch), not the step's ``policy/approxkl``."""
    mask = batch["response_mask"]
    kl = ((batch["logprobs"] - batch["ref_logprobs"]) * mask).sum(-1)  # sequence KL (k1), (B,)
    true_reward = sum(map(world.true_reward, batch["prompts"], batch["responses"])) / len(scores)
    return {"objective/scores": scores.mean().item(),
            "objective/kl": kl.mean().item(),
            "objective/non_score_reward": (-beta * kl).mean().item(),
            "objective/rlhf_reward": (scores - beta * kl).mean().item(),
            "objective/entropy": (batch["entropy"] * mask).sum(-1).mean().item(),
            "objective/true_reward": true_reward,
            "val/explained_variance": explained_variance(batch["values"], returns, mask),
            "eos_fraction": batch["finished"].float().mean().item()}


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------

def train_ppo(policy, ref_model, tokenizer, prompts: list[str], config: PPOConfig | None = None,
              reward_model=None, rater=None, reward_data=None, evaluate: Callable | None = None):
    """Train ``policy`` (a causal LM, in place) with PPO and a KL penalty to ``ref_model``.

    Each step draws ``rollouts_per_step`` of the training ``prompts``. ``reward_model``: None for
    PPO-GT (the true reward), or a :class:`~minirlhf.reward.RewardModel` on the policy's tokenizer.
    ``rater`` (e.g. :class:`~minirlhf.world.SimulatedRater`): refresh a copy of the reward model every
    ``reward_refresh_every`` steps, on its new labels and on ``reward_data`` (the pairs it learned from).
    ``evaluate(step, policy) -> dict`` (e.g. :func:`minirlhf.evaluation.exact_metrics`): called at
    step 0, every ``eval_every`` steps and at the end; its numbers join that step's record.

    Returns ``(policy, history)``: one dict per step, named as in TRL (``objective/kl``, ...; see
    :func:`ppo_metrics`), with ``rater_labels`` (so far) and what ``evaluate`` gave.
    """
    config = config or PPOConfig()
    check_world_prompts(prompts)
    check_tokenizer_matches(policy, tokenizer)
    check_tokenizer_matches(ref_model, tokenizer)
    refreshes = RaterRefreshes(reward_model, rater, reward_data, ref_model, tokenizer, prompts, config)
    reward_model = refreshes.reward_model  # a copy, when the rater refreshes it
    generator = seed_everything(config.seed)
    device = next(policy.parameters()).device
    policy.eval()  # dropout off everywhere; gradients still flow through the policy and critic
    ref_model.eval()
    critic = (Critic.from_reward_model(reward_model) if hasattr(reward_model, "backbone")
              else Critic.from_model(ref_model)).to(device).eval()
    learning_rate = config.policy_learning_rate()
    optimizer = torch.optim.Adam(
        embedding_param_groups(policy, learning_rate, config.embedding_lr_scale)
        + [{"params": list(critic.parameters()), "lr": learning_rate * config.critic_lr_scale}],
        lr=learning_rate, eps=config.adam_eps, fused=device.type in ("cpu", "cuda"))  # one kernel
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.steps, config.warmup_steps, decay="linear"))
    kl_controller = (AdaptiveKLController(config.beta, config.target_kl, config.horizon)
                     if config.adaptive_kl else None)
    beta = config.beta
    # GPT-2's activation as one kernel while we train (the same function); the first
    # config.frozen_blocks blocks of the policy get no gradient (both undone at the end)
    with fused_gelu(policy, ref_model, critic, reward_model), frozen_blocks(policy, config.frozen_blocks):
        start = time.perf_counter()
        evaluating = evaluate is not None and config.eval_every > 0
        history = [{"step": 0, "beta": beta, **evaluate(0, policy), "time": 0.0}] if evaluating else []
        for step in tqdm(range(1, config.steps + 1), desc="PPO", disable=not config.progress):
            step_start = time.perf_counter()
            rows = torch.randint(len(prompts), (config.rollouts_per_step,), generator=generator).tolist()
            # 1. rollout, 2. reward (k1 KL penalty on every token, the score at the last one)
            batch = rollout(policy, ref_model, critic, tokenizer, [prompts[i] for i in rows], config,
                            generator)
            mask = batch["response_mask"]
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
            record = {"step": step, "beta": beta, **stats, **ppo_metrics(batch, scores, returns, beta),
                      "learning_rate": scheduler.get_last_lr()[0],
                      "time/update": update_time, "time/step": time.perf_counter() - step_start}
            if kl_controller is not None:
                beta = kl_controller.update(record["objective/kl"], config.rollouts_per_step)
            # 6. the rater judges the policy's answers, the reward model learns (not after the last step)
            record.update(refreshes.after_step(step, policy))
            if evaluating and (step % config.eval_every == 0 or step == config.steps):
                record.update(evaluate(step, policy))
            record.update(rater_labels=refreshes.labels, time=time.perf_counter() - start)
            history.append(record)
    return policy, history
