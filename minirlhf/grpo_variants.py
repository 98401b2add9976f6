"""The 2025 variants of GRPO's update: TRL's loss types, DAPO, GSPO and CISPO, each beside its equation.

:mod:`minirlhf.grpo` is the algorithm; these are options of its loop, each a few lines below, named
as TRL 1.16's ``GRPOConfig`` names them (``loss_type``, ``epsilon_high``, ``importance_sampling_level``,
``mask_truncated_completions``), and set in :class:`~minirlhf.grpo.GRPOConfig`::

    loss_type  "grpo"     L = mean_i  mean_{t in y_i} l_it      (the answer's mean, then the batch's)
               "bnpo"     L = sum_{i,t} l_it / (tokens in the minibatch)
               "dr_grpo"  L = sum_{i,t} l_it / (B * max_new_tokens)         (Liu et al. 2025)
               "dapo"     L = sum_{i,t} l_it / (tokens in the step's batch / minibatches)   (Yu et al. 2025)
               "cispo"    l_it = -sg[min(ratio_it, eps_high)] A_i log pi(y_t)  (MiniMax 2025), as "dapo"
    epsilon_high        clip(ratio, 1 - eps, 1 + eps_high): "clip-higher" (DAPO)
    importance_sampling_level="sequence"
                        one ratio per answer, exp(mean_t log ratio_it)  (GSPO, Zheng et al. 2025)
    dynamic_sampling    drop the groups whose G rewards are all equal (their advantages are 0)  (DAPO)
    mask_truncated_completions   answers cut at max_new_tokens leave the loss: the overlong filter (DAPO)
    soft_punish_cache   L_cache > 0: DAPO's soft overlong punishment added to the reward (its eq. 13)

:func:`variant_loss` is the update's loss when one of these is set (otherwise
:func:`~minirlhf.grpo.grpo_loss`); :func:`soft_overlong_punishment`, :func:`varied_groups` and
:func:`keep_groups` are the steps of :func:`~minirlhf.grpo.train_grpo` that DAPO adds. Shapes and
conventions as in :mod:`minirlhf.grpo`. Notebook 07 shows each at work; ``docs/variants.md`` scores them.
"""

from __future__ import annotations

import torch

from minirlhf.checks import check_positive
from minirlhf.rl import kl_estimators, weighted_mean

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")

# ----------------------------------------------------------------------------------------------
# The update's loss: the ratio (token or sequence), the surrogate (clipped or CISPO), the aggregation
# ----------------------------------------------------------------------------------------------

def importance_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, response_mask: torch.Tensor,
                     level: str = "token") -> torch.Tensor:
    """pi / pi_old, per token (B, T), or with ``level="sequence"`` one per answer (B, 1), GSPO's
    length-normalised sequence ratio (Zheng et al. 2025, "Group Sequence Policy Optimization", eq. 7)::

        token     r_it = pi(y_t|..) / pi_old(y_t|..)
        sequence  s_i  = (pi(y_i|x) / pi_old(y_i|x))^(1/|y_i|) = exp(mean_t log r_it)
    """
    if level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
                         f"got {level!r}.")
    log_ratio = logprobs - old_logprobs
    if level == "sequence":
        mask = response_mask.to(log_ratio.dtype)
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1))[:, None]
    return torch.exp(log_ratio)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, epsilon_low: float,
                      epsilon_high: float) -> torch.Tensor:
    """PPO's clipped surrogate per token with an asymmetric range, DAPO's "clip-higher" (Yu et al. 2025,
    eq. 10): ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))``. A wider upper range lets an unlikely
    token with A > 0 grow further in one step, against the collapse of the policy's entropy."""
    return torch.maximum(-advantages * ratio,
                         -advantages * torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high))


def cispo_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, logprobs: torch.Tensor,
                    epsilon_high: float) -> torch.Tensor:
    """CISPO (MiniMax 2025, "MiniMax-M1", eq. 4): clip the importance weight, not the update, and stop
    its gradient: ``-sg[min(r, eps_high)] * A * log pi(y_t)``. Every token keeps a gradient (PPO's clip
    zeroes those outside the range); the weight only bounds how much."""
    return -torch.clamp(ratio, max=epsilon_high).detach() * advantages * logprobs


def aggregate_loss(per_token: torch.Tensor, response_mask: torch.Tensor, loss_type: str,
                   max_tokens: int | None = None, tokens_per_minibatch: float | None = None) -> torch.Tensor:
    """The per-token losses ``l`` (B, T), or (B, 1) broadcast, to one number, as TRL 1.16's
    ``loss_type`` does (``m`` the response mask)::

        grpo     mean_i [ sum_t m_it l_it / |y_i| ]           every answer weighs the same (length bias)
        bnpo     sum_it m_it l_it / sum_it m_it               every token of the minibatch the same
        dr_grpo  sum_it m_it l_it / (B * max_tokens)          a constant (Liu et al. 2025)
        dapo, cispo  sum_it m_it l_it / tokens_per_minibatch  the step's tokens / minibatches (Yu et al. 2025)
    """
    mask = response_mask.to(per_token.dtype)
    total = per_token * mask
    if loss_type == "grpo":
        return (total.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return total.sum() / mask.sum().clamp(min=1)
    if loss_type == "dr_grpo":
        if max_tokens is None:
            raise ValueError('loss_type="dr_grpo" divides by B * max_tokens: give max_tokens.')
        return total.sum() / (per_token.shape[0] * max_tokens)
    if loss_type in ("dapo", "cispo"):
        if tokens_per_minibatch is None:
            raise ValueError(f'loss_type="{loss_type}" divides by the tokens of the step\'s batch per '
                             'minibatch: give tokens_per_minibatch.')
        return total.sum() / max(tokens_per_minibatch, 1.0)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")


def variant_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                 advantages: torch.Tensor, response_mask: torch.Tensor, loss_type: str, epsilon_low: float,
                 epsilon_high: float | None = None, beta: float = 0.0,
                 importance_sampling_level: str = "token",
                 max_tokens: int | None = None, tokens_per_minibatch: float | None = None,
                 kl_bias_correction: bool = False) -> tuple[torch.Tensor, dict]:
    """The update's loss of the 2025 variants, shapes (B, T) (``advantages`` (B,)), TRL 1.16's
    ``GRPOTrainer._compute_loss`` term by term::

        r_it   = importance_ratio(level)                       token or sequence (GSPO)
        l_it   = clipped_surrogate(r, A, eps, eps_high)        grpo, bnpo, dr_grpo, dapo
               = cispo_surrogate(r, A, log pi, eps_high)       cispo
        l_it  += beta * k3_it  (* r_it with kl_bias_correction: the unbiased KL(pi || pi_ref) gradient)
        L      = aggregate_loss(l, loss_type)

    ``epsilon_high`` None: ``epsilon_low`` (symmetric). Returns ``(loss, stats)`` as
    :func:`~minirlhf.grpo.grpo_loss`."""
    check_positive("beta", beta, allow_zero=True)
    check_positive("epsilon_low", epsilon_low)
    epsilon_high = epsilon_low if epsilon_high is None else check_positive("epsilon_high", epsilon_high)
    mask = response_mask.to(logprobs.dtype)
    ratio = importance_ratio(logprobs, old_logprobs, mask, importance_sampling_level)
    adv = advantages[:, None].to(logprobs.dtype)
    if loss_type == "cispo":
        per_token = cispo_surrogate(ratio, adv, logprobs, epsilon_high)
    else:
        per_token = clipped_surrogate(ratio, adv, epsilon_low, epsilon_high)
    k3 = kl_estimators(logprobs, ref_logprobs)["k3"]
    if beta > 0:
        per_token = per_token + beta * (k3 * ratio if kl_bias_correction else k3)
    loss = aggregate_loss(per_token, mask, loss_type, max_tokens, tokens_per_minibatch)
    with torch.no_grad():
        log_ratio = logprobs - old_logprobs
        if loss_type == "cispo":
            clipped = (ratio > epsilon_high) & (adv > 0)
        else:
            clipped = ((ratio < 1 - epsilon_low) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
        stats = {"loss/policy": loss.detach(), "policy/approxkl": 0.5 * weighted_mean(log_ratio ** 2, mask),
                 "policy/clipfrac": weighted_mean(clipped.expand_as(mask).float(), mask),
                 "kl": weighted_mean(k3.detach(), mask)}
    return loss, stats


# ----------------------------------------------------------------------------------------------
# DAPO's steps around the update: the overlong penalty on the reward, dynamic sampling
# ----------------------------------------------------------------------------------------------

def soft_overlong_punishment(lengths: torch.Tensor, max_tokens: int, cache: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the reward, from the answers'
    token counts (B,)::

        R_length = 0                                  |y| <= L_max - L_cache
                 = ((L_max - L_cache) - |y|) / L_cache   L_max - L_cache < |y| <= L_max
                 = -1                                 L_max < |y|
    """
    if not 0 < cache <= max_tokens:
        raise ValueError(f"The cache must be in (0, max_tokens={max_tokens}], got {cache}.")
    lengths = lengths.float()
    start = max_tokens - cache
    ramp = (start - lengths) / cache
    return torch.where(lengths <= start, torch.zeros_like(lengths), torch.where(lengths <= max_tokens, ramp,
                                                                                -torch.ones_like(lengths)))


def varied_groups(rewards: torch.Tensor, group_size: int, tol: float = 1e-6) -> torch.Tensor:
    """DAPO's dynamic sampling (Yu et al. 2025, eq. 11, ``0 < |{correct}| < G``): which groups of
    ``group_size`` consecutive rewards (B,) are *not* all equal, (B / G,) bool. A group whose rewards are
    all equal has advantages 0: it adds nothing but noise (its KL term) and dilutes the batch.

    DAPO has no KL penalty, so its rewards are the scores. Here the rewards are the ones the advantages
    are computed from: with ``kl="reward"`` they include each answer's KL penalty, so a group whose
    answers score the same but differ in KL is kept (the KL still pulls it towards the reference); with
    ``kl="loss"`` they are the scores, as in DAPO."""
    groups = rewards.view(-1, group_size)
    return (groups.max(-1).values - groups.min(-1).values) > tol


def keep_groups(batch: dict, keep: torch.Tensor, group_size: int) -> dict:
    """The rollout ``batch`` restricted to the groups where ``keep`` (B / G,) is True (dynamic
    sampling): every per-answer tensor and list, in order."""
    rows = keep.repeat_interleave(group_size)
    index = rows.nonzero().view(-1)
    out = {}
    for key, value in batch.items():
        if torch.is_tensor(value) and value.shape[:1] == rows.shape:
            out[key] = value[rows.to(value.device)]
        elif isinstance(value, list) and len(value) == len(rows):
            out[key] = [value[i] for i in index.tolist()]
        else:
            out[key] = value
    return out
