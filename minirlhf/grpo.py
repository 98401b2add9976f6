"""Critic-free RL: GRPO (Shao et al. 2024), Dr. GRPO (Liu et al. 2025) and RLOO (Ahmadian et al. 2024).

Read this file top to bottom, with :mod:`minirlhf.rl` (what PPO and GRPO share: the config, sampling,
scoring, the KL estimators, the refreshes); it is the whole algorithm. PPO learns a critic to say what
an answer was worth *on average*; these methods sample a *group* of G answers to the same prompt and
let the group be the baseline. One step is::

    1. rollout     each of ``prompts_per_step`` prompts G times; sample y ~ pi(.|x); record
                   log pi(y_t|..) and log pi_ref(y_t|..) on one (B, T) grid, B = prompts x G
    2. reward      R(x, y) = score(x, y)                                 (kl="loss")
                   R(x, y) = score(x, y) - beta * sum_t k1_t             (kl="reward", as PPO's reward)
    3. advantages  one number per answer, from its group of G, the same on every one of its tokens:
                     GRPO      A = (R - mean_group R) / (std_group R + eps)
                     Dr. GRPO  A =  R - mean_group R
                     RLOO      A =  R - mean of the *other* G - 1 answers' R  = G/(G-1) (R - mean)
    4. update      ``epochs`` passes of minibatches of PPO's clipped surrogate (imported from ppo.py),
                   + beta * k3 on every token when kl="loss" (as TRL's GRPOTrainer), averaged over
                   each answer's tokens then over answers (GRPO's length normalisation), or summed
                   over tokens and divided by a constant (Dr. GRPO, RLOO: no length bias)
    5. log         the step's metrics, named as in TRL
    6. refresh     (optional, with a learned reward model and a rater) as in PPO

The 2025 variants (TRL 1.16's ``loss_type``, DAPO, GSPO, CISPO) are options of the same loop, fields
of :class:`GRPOConfig`; their losses and steps, each beside its equation: :mod:`minirlhf.grpo_variants`.

The three KL estimators (:func:`~minirlhf.rl.kl_estimators`), per token, with
d = log pi_ref(y_t|..) - log pi(y_t|..) and y ~ pi::

    k1 = -d                    unbiased value;  in the *reward* its score-function gradient is exact
    k2 = d^2 / 2               biased value;    in the *loss* its gradient is the exact one
    k3 = exp(d) - 1 - d  >= 0  unbiased value;  in the *loss* its gradient is that of KL(pi_ref || pi)

(Schulman 2020; on a whole answer, exactly: notebook 06.) The objective is PPO's, ``J(pi) = E[r]
- beta KL(pi || pi_ref)``, maximised by ``pi*`` (:mod:`minirlhf.optimum`); which variant reaches
it is measured in ``benchmarks/grpo.py``.

Conventions as in :mod:`minirlhf.ppo`: left-padded prompts, per-token tensors (B, T) with column
``t`` about token ``t`` given ``< t``, dropout off. The G answers of a prompt are consecutive rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from minirlhf import world
from minirlhf.checks import check_config, check_positive
from minirlhf.grpo_variants import (
    IMPORTANCE_SAMPLING_LEVELS,
    LOSS_TYPES,
    keep_groups,
    soft_overlong_punishment,
    variant_loss,
    varied_groups,
)
from minirlhf.logprobs import last_token_index, token_logprobs
from minirlhf.models import check_tokenizer_matches
from minirlhf.ppo import ppo_policy_loss  # PPO's clipped surrogate, the one piece GRPO keeps
from minirlhf.rl import (
    RaterRefreshes,
    RLConfig,
    check_world_prompts,
    kl_estimators,
    rollout,
    score_rollouts,
    weighted_mean,
)
from minirlhf.training import (
    check_finite_loss,
    clip_grad_norm,
    embedding_param_groups,
    frozen_blocks,
    fused_gelu,
    lr_factor,
    seed_everything,
)

ADVANTAGES = ("grpo", "dr_grpo", "rloo")
KL_PLACES = ("reward", "loss")

# ----------------------------------------------------------------------------------------------
# Pure functions of tensors (unit-tested against hand-computed numbers)
# ----------------------------------------------------------------------------------------------

def group_advantages(rewards: torch.Tensor, group_size: int, advantage: str = "grpo",
                     eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages, one per answer: ``rewards`` (B,) with the G = ``group_size`` answers
    of each prompt in consecutive rows -> (B,). Mean and std are over each group, never the batch::

        grpo     A_i = (R_i - mean_g R) / (std_g R + eps)    std unbiased (1/(G-1)), as TRL
        dr_grpo  A_i =  R_i - mean_g R
        rloo     A_i =  R_i - sum_{j != i} R_j / (G - 1)     (the answer left out of its own baseline)
    """
    if advantage not in ADVANTAGES:
        raise ValueError(f"advantage must be one of {ADVANTAGES}, got {advantage!r}.")
    if group_size < 2 or rewards.dim() != 1 or rewards.shape[0] % group_size:
        raise ValueError(f"Need a (B,) tensor of rewards, B a multiple of group_size >= 2; got shape "
                         f"{tuple(rewards.shape)} and group_size {group_size}.")
    groups = rewards.view(-1, group_size)
    mean = groups.mean(-1, keepdim=True)
    if advantage == "grpo":
        return ((groups - mean) / (groups.std(-1, keepdim=True) + eps)).view(-1)
    if advantage == "dr_grpo":
        return (groups - mean).view(-1)
    baseline = (groups.sum(-1, keepdim=True) - groups) / (group_size - 1)
    return (groups - baseline).view(-1)


def token_weights(response_mask: torch.Tensor, length_normalise: bool) -> torch.Tensor:
    """How much each token counts in the loss, (B, T): 1/len(y) on an answer's tokens with
    ``length_normalise`` (GRPO: every answer weighs the same), else 1 (Dr. GRPO, RLOO: every token)."""
    mask = response_mask.float()
    if not length_normalise:
        return mask
    return mask / mask.sum(-1, keepdim=True).clamp(min=1)


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
              advantages: torch.Tensor, response_mask: torch.Tensor, clip_range: float, beta: float = 0.0,
              length_normalise: bool = True, max_tokens: int | None = None) -> tuple[torch.Tensor, dict]:
    """The update's loss, shapes (B, T) (``advantages`` (B,), broadcast over each answer's tokens)::

        L = sum_{i,t} w_it [ clipped surrogate_it + beta * k3_it ] / N

    with PPO's surrogate (:func:`~minirlhf.ppo.ppo_policy_loss`), k3 from :func:`~minirlhf.rl.kl_estimators`
    (``beta=0`` when the KL is in the reward). GRPO (``length_normalise``): w = 1/len(y_i), N = B. Dr. GRPO:
    w = 1, N = B * ``max_tokens`` (a constant; without it, the tokens in the batch). Returns ``(loss,
    stats)``: ppo's ``policy/*`` and ``loss/policy``, and ``kl`` (mean k3 per token, TRL's name)."""
    check_positive("beta", beta, allow_zero=True)
    weights = token_weights(response_mask, length_normalise)
    token_advantages = advantages[:, None].to(logprobs.dtype).expand_as(logprobs)
    loss, stats = ppo_policy_loss(logprobs, old_logprobs, token_advantages, weights, clip_range)
    k3 = kl_estimators(logprobs, ref_logprobs)["k3"]
    if beta > 0:
        loss = loss + beta * weighted_mean(k3, weights)
    if not length_normalise and max_tokens is not None:  # mean over tokens -> sum / constant
        loss = loss * weights.sum() / (weights.shape[0] * max_tokens)
    stats["kl"] = weighted_mean(k3.detach(), response_mask)
    return loss, stats


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------

@dataclass
class GRPOConfig(RLConfig):
    """Hyperparameters of :func:`train_grpo`, tuned on the toy world (``benchmarks/grpo.py``): those of
    :class:`~minirlhf.rl.RLConfig` (beta, sampling, optimiser, refreshes; ``max_new_tokens`` is also
    Dr. GRPO's constant normaliser of the summed token losses) and GRPO's own below."""

    kl: str = "reward"
    """Where the KL goes: ``"reward"`` (k1 in the answer's reward, as PPO) or ``"loss"`` (k3, as TRL)."""
    advantage: str = "grpo"
    """``"grpo"`` (group mean and std), ``"dr_grpo"`` (group mean only) or ``"rloo"`` (leave-one-out)."""
    length_normalise: bool | None = None
    """Average the loss over each answer's tokens (GRPO). None: on for ``grpo``, off for the others."""
    group_size: int = 4
    """G, answers sampled per prompt: the group that is each answer's baseline."""
    prompts_per_step: int = 16
    """Prompts per step, drawn with replacement; the batch is ``prompts_per_step * group_size`` answers."""
    distinct_prompts: bool = False
    """Draw each step's prompts without replacement, the first ``prompts_per_step`` of a fresh shuffle
    of the prompts (as TRL's ``RepeatSampler`` does when the prompts are fewer than twice a step's)."""
    loss_type: str | None = None
    """TRL 1.16's ``loss_type``: ``"grpo"``, ``"bnpo"``, ``"dr_grpo"``, ``"dapo"`` or ``"cispo"``
    (:func:`~minirlhf.grpo_variants.aggregate_loss`, :func:`~minirlhf.grpo_variants.cispo_surrogate`).
    None: ``"grpo"`` if :meth:`normalises_length`, else ``"dr_grpo"``."""
    epsilon_high: float | None = None
    """Upper clip range, ``1 + epsilon_high`` (DAPO's clip-higher; None: ``clip_range``); CISPO's cap on
    the importance weight (needed with ``loss_type="cispo"``)."""
    importance_sampling_level: str = "token"
    """``"token"``, or ``"sequence"``: one length-normalised ratio per answer (GSPO)."""
    dynamic_sampling: bool = False
    """Drop the groups whose rewards are all equal before the update (DAPO; no refill)."""
    mask_truncated_completions: bool = False
    """Leave answers cut at ``max_new_tokens`` out of the loss (DAPO's overlong filter; TRL's name)."""
    soft_punish_cache: int = 0
    """L_cache > 0 adds DAPO's soft overlong punishment to each reward
    (:func:`~minirlhf.grpo_variants.soft_overlong_punishment`)."""
    use_bias_correction_kl: bool = False
    """With kl="loss": multiply k3 by the ratio pi/pi_old (TRL's name; its default is True): the
    gradient becomes that of KL(pi || pi_ref) (unbiased), not of KL(pi_ref || pi)."""

    def __post_init__(self):
        super().__post_init__()
        check_config(self, positive=("group_size", "prompts_per_step", "epsilon_high"),
                     non_negative=("soft_punish_cache",))
        if self.kl not in KL_PLACES or self.advantage not in ADVANTAGES or self.group_size < 2:
            raise ValueError(f"kl must be one of {KL_PLACES}, advantage one of {ADVANTAGES} and group_size "
                             f">= 2, got {self.kl!r}, {self.advantage!r} and {self.group_size}.")
        if self.prompts_per_step % self.minibatches:
            raise ValueError("prompts_per_step must be a multiple of minibatches (whole groups in each).")
        if self.loss_type is not None and self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be None or one of {LOSS_TYPES}, got {self.loss_type!r}.")
        if self.loss_type == "cispo" and self.epsilon_high is None:
            raise ValueError('loss_type="cispo" caps the importance weight at epsilon_high: give it (the '
                             "ScaleRL paper uses 5.0; clip_range would cap every weight below 1).")
        if self.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, got "
                             f"{self.importance_sampling_level!r}.")
        if self.soft_punish_cache > self.max_new_tokens:
            raise ValueError(f"soft_punish_cache ({self.soft_punish_cache}) must be at most max_new_tokens "
                             f"({self.max_new_tokens}).")

    def normalises_length(self) -> bool:
        """``length_normalise``, or when None: True for GRPO, False for Dr. GRPO and RLOO."""
        return self.advantage == "grpo" if self.length_normalise is None else self.length_normalise

    def aggregation(self) -> str:
        """``loss_type``, or when None the one :meth:`normalises_length` implies."""
        return self.loss_type or ("grpo" if self.normalises_length() else "dr_grpo")

    def uses_variant_loss(self) -> bool:
        """Whether an option of :func:`~minirlhf.grpo_variants.variant_loss` is set (otherwise
        :func:`grpo_loss`, as always)."""
        return (self.loss_type is not None or self.epsilon_high is not None or self.use_bias_correction_kl
                or self.importance_sampling_level != "token" or self.mask_truncated_completions)


# ----------------------------------------------------------------------------------------------
# The step, piece by piece
# ----------------------------------------------------------------------------------------------

def rollout_groups(policy, ref_model, tokenizer, prompts: list[str], config: GRPOConfig,
                   generator: torch.Generator | None = None) -> dict:
    """1. Sample ``group_size`` answers to each of ``prompts`` (consecutive rows):
    :func:`~minirlhf.rl.rollout` without a critic, on the prompts repeated."""
    repeated = [p for p in prompts for _ in range(config.group_size)]
    return rollout(policy, ref_model, None, tokenizer, repeated, config, generator)


def sequence_rewards(batch: dict, scores: torch.Tensor, config: GRPOConfig, beta: float) -> torch.Tensor:
    """2. R(x, y) of each answer (B,): the score, minus ``beta`` times the summed k1 if kl="reward"::

        R(x, y) = score(x, y) - beta * sum_t (log pi(y_t|..) - log pi_ref(y_t|..))

    (PPO's per-token reward summed over the answer, :func:`minirlhf.ppo.per_token_rewards`)."""
    if config.kl == "loss":
        return scores
    check_positive("beta", beta, allow_zero=True)
    mask = batch["response_mask"]
    rewards = -beta * (batch["logprobs"] - batch["ref_logprobs"]) * mask.to(batch["logprobs"].dtype)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)  # the score at the last token
    return rewards.sum(-1)


def grpo_update(policy, optimizer, batch: dict, advantages: torch.Tensor, config: GRPOConfig,
                generator: torch.Generator | None = None) -> dict[str, float]:
    """4. ``epochs`` passes over shuffled minibatches of whole groups (a group's advantages sum to 0, so
    the gradients of the tokens its answers share cancel) of :func:`grpo_loss` (or
    :func:`~minirlhf.grpo_variants.variant_loss` when an option of it is set); returns mean statistics.
    ``batch`` may hold fewer groups than ``prompts_per_step`` (dynamic sampling): then at most
    ``minibatches`` minibatches."""
    B, G = batch["input_ids"].shape[0], config.group_size
    n_minibatches = min(config.minibatches, B // G)
    beta_in_loss = config.beta if config.kl == "loss" else 0.0
    mask = batch["response_mask"]
    if config.mask_truncated_completions:  # DAPO's overlong filter: cut answers leave the loss
        mask = mask * batch["finished"].to(mask.device, mask.dtype)[:, None]
    tokens_per_minibatch = mask.sum().item() / n_minibatches  # "dapo", "cispo": TRL's num_items_in_batch
    stats = []
    for _ in range(config.epochs):
        groups = torch.randperm(B // G, generator=generator)
        for chunk in torch.tensor_split(groups, n_minibatches):
            rows = (chunk[:, None] * G + torch.arange(G)).view(-1).to(batch["input_ids"].device)
            logprobs = token_logprobs(policy, batch["input_ids"][rows], batch["attention_mask"][rows],
                                      config.temperature)
            if config.uses_variant_loss():
                loss, step_stats = variant_loss(
                    logprobs, batch["logprobs"][rows], batch["ref_logprobs"][rows], advantages[rows],
                    mask[rows],
                    config.aggregation(), config.clip_range, config.epsilon_high, beta_in_loss,
                    config.importance_sampling_level, config.max_new_tokens, tokens_per_minibatch,
                    config.use_bias_correction_kl)
            else:
                loss, step_stats = grpo_loss(logprobs, batch["logprobs"][rows], batch["ref_logprobs"][rows],
                                             advantages[rows], mask[rows], config.clip_range,
                                             beta_in_loss, config.normalises_length(), config.max_new_tokens)
            check_finite_loss(loss, len(stats))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(optimizer, config.max_grad_norm)
            optimizer.step()
            stats.append(step_stats)
    return {key: torch.stack([s[key] for s in stats]).mean().item() for key in stats[0]}


@torch.no_grad()
def grpo_metrics(batch: dict, scores: torch.Tensor, rewards: torch.Tensor, group_size: int,
                 beta: float) -> dict[str, float]:
    """5. What a step logs, as TRL names it: ``objective/kl`` is the sequence KL to pi_ref (k1)."""
    kl = ((batch["logprobs"] - batch["ref_logprobs"]) * batch["response_mask"]).sum(-1)
    group_std = rewards.view(-1, group_size).std(-1)
    true_reward = sum(map(world.true_reward, batch["prompts"], batch["responses"])) / len(scores)
    return {"objective/scores": scores.mean().item(), "objective/kl": kl.mean().item(),
            "objective/rlhf_reward": (scores - beta * kl).mean().item(),
            "objective/true_reward": true_reward, "reward_std": group_std.mean().item(),
            "frac_reward_zero_std": (group_std < 1e-6).float().mean().item(),
            "eos_fraction": batch["finished"].float().mean().item()}


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------

def train_grpo(policy, ref_model, tokenizer, prompts: list[str], config: GRPOConfig | None = None,
               reward_model=None, rater=None, reward_data=None, evaluate: Callable | None = None):
    """Train ``policy`` (a causal LM, in place) with GRPO, Dr. GRPO or RLOO (``config.advantage``).

    Each step draws ``prompts_per_step`` of the training ``prompts`` and samples ``group_size``
    answers to each. ``reward_model``: None for the true reward, or a
    :class:`~minirlhf.reward.RewardModel`; with a ``rater`` a copy of it is refreshed every
    ``reward_refresh_every`` steps on the rater's labels and ``reward_data``, as in
    :func:`~minirlhf.ppo.train_ppo`. ``evaluate(step, policy) -> dict`` (e.g.
    :func:`minirlhf.evaluation.exact_metrics`): at step 0, every ``eval_every`` steps, at the end.
    Returns ``(policy, history)``: one dict per step (:func:`grpo_metrics`, the update's statistics,
    ``rater_labels`` so far, and what ``evaluate`` gave)."""
    config = config or GRPOConfig()
    check_world_prompts(prompts)
    if config.distinct_prompts and config.prompts_per_step > len(prompts):
        raise ValueError(f"distinct_prompts needs prompts_per_step ({config.prompts_per_step}) <= the number "
                         f"of prompts ({len(prompts)}).")
    check_tokenizer_matches(policy, tokenizer)
    check_tokenizer_matches(ref_model, tokenizer)
    refreshes = RaterRefreshes(reward_model, rater, reward_data, ref_model, tokenizer, prompts, config)
    reward_model = refreshes.reward_model  # a copy, when the rater refreshes it
    generator = seed_everything(config.seed)
    device = next(policy.parameters()).device
    policy.eval()  # dropout off; gradients still flow
    ref_model.eval()
    learning_rate = config.policy_learning_rate()
    optimizer = torch.optim.Adam(embedding_param_groups(policy, learning_rate, config.embedding_lr_scale),
                                 lr=learning_rate, eps=config.adam_eps, fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.steps, config.warmup_steps, decay="linear"))
    with fused_gelu(policy, ref_model, reward_model), frozen_blocks(policy, config.frozen_blocks):
        start = time.perf_counter()
        evaluating = evaluate is not None and config.eval_every > 0
        history = [{"step": 0, **evaluate(0, policy), "time": 0.0}] if evaluating else []
        for step in tqdm(range(1, config.steps + 1), desc=config.advantage, disable=not config.progress):
            step_start = time.perf_counter()
            if config.distinct_prompts:
                rows = torch.randperm(len(prompts), generator=generator)[:config.prompts_per_step].tolist()
            else:
                rows = torch.randint(len(prompts), (config.prompts_per_step,), generator=generator).tolist()
            # 1. rollout G answers per prompt, 2. reward (k1 inside it if kl="reward")
            batch = rollout_groups(policy, ref_model, tokenizer, [prompts[i] for i in rows], config,
                                   generator)
            scores = score_rollouts(batch, reward_model, config.missing_eos_penalty)
            if config.soft_punish_cache:  # DAPO: a penalty that grows over the last L_cache tokens
                lengths = batch["response_mask"].sum(-1)
                scores = scores + soft_overlong_punishment(lengths, config.max_new_tokens,
                                                           config.soft_punish_cache).to(scores.device)
            rewards = sequence_rewards(batch, scores, config, config.beta)
            # 3. group-relative advantages, 4. update (k3 in the loss if kl="loss")
            advantages = group_advantages(rewards, config.group_size, config.advantage)
            kept = {}
            if config.dynamic_sampling:  # DAPO: groups whose answers all score the same teach nothing
                keep = varied_groups(rewards, config.group_size)
                kept = {"groups_kept": keep.float().mean().item()}
                update_batch = keep_groups(batch, keep, config.group_size)
                kept_rows = keep.repeat_interleave(config.group_size).to(advantages.device)
                update_advantages = advantages[kept_rows]
            else:
                update_batch, update_advantages = batch, advantages
            if update_batch["input_ids"].shape[0]:
                stats = grpo_update(policy, optimizer, update_batch, update_advantages, config, generator)
            else:
                stats = {}
            scheduler.step()
            # 5. log
            record = {"step": step, **stats, **kept,
                      **grpo_metrics(batch, scores, rewards, config.group_size, config.beta),
                      "learning_rate": scheduler.get_last_lr()[0],
                      "time/step": time.perf_counter() - step_start}
            # 6. (learned reward model and rater) the rater judges the policy's answers, the model learns
            record.update(refreshes.after_step(step, policy))
            if evaluating and (step % config.eval_every == 0 or step == config.steps):
                record.update(evaluate(step, policy))
            record.update(rater_labels=refreshes.labels, time=time.perf_counter() - start)
            history.append(record)
    return policy, history
