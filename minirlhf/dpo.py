"""Direct Preference Optimization (DPO), offline, as the article describes it: RLHF without a
reward model and without sampling.

The KL-regularised RLHF objective has a closed-form maximiser (see :mod:`minirlhf.optimum`)::

    pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x)

Solved for the reward, it says that *every policy is the optimum of some reward*::

    r(x, y) = beta * log( pi*(y|x) / pi_ref(y|x) ) + beta * log Z(x)

Put this reward into the Bradley-Terry likelihood of the preference data and ``log Z(x)`` cancels
(both answers share the prompt): what is left is a classification loss on the policy's own
log-probs (Rafailov et al. 2023, eq. 7). Training is:

    1. data     triplets (x, y_w, y_l), sampled once from pi_ref and rated once (the labels are paid
                for before training starts; nothing is sampled or rated during training)
    2. once     tokenise each pair into one packed row and compute log pi_ref of both answers
    3. epochs   shuffled minibatches: summed log-probs of y_w and y_l under pi, the loss, a step
    4. guard    (optional) the DPO loss on held-out pairs after each epoch; the best epoch is kept

The policy's *implicit reward* ``beta * log(pi / pi_ref)`` is what DPO trains and what it reports
(``rewards/chosen`` ...). Everything here takes **summed** response log-probs of shape (B,).
Online DPO, which samples and rates fresh pairs as it trains, is :mod:`minirlhf.online_dpo`.
Why each default: docs/defaults.md#dpo.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minirlhf.checks import check_config, check_positive
from minirlhf.logprobs import to_device
from minirlhf.models import check_tokenizer_matches
from minirlhf.pairs import CHOSEN, REJECTED, encode_pairs, pair_logps, reference_logps
from minirlhf.preferences import check_preference_data
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
# The losses: pure functions of summed log-probs, shape (B,)
# ----------------------------------------------------------------------------------------------

def preference_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                    reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
                    beta: float, label_smoothing: float = 0.0, ipo: bool = False,
                    simpo_gamma: float | None = None, chosen_tokens: torch.Tensor | None = None,
                    rejected_tokens: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO family's loss of each pair, from summed response log-probs, all of shape (B,).

    With the log-ratio margin ::

        h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))

    the loss is, by the arguments:

    * DPO (Rafailov et al. 2023, eq. 7), the default: ``L = -log sigmoid(beta * h)``, the
      Bradley-Terry negative log-likelihood of "y_w beats y_l" with the implicit reward
      ``beta * log(pi / pi_ref)`` in place of a reward model. At ``pi = pi_ref`` it equals log 2.
    * conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"), ``label_smoothing``
      = eps > 0: each label is assumed flipped with probability eps, and the loss is the expected
      DPO loss, ``L = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)``. It has a
      finite minimum, at ``beta * h = log((1 - eps) / eps)``. TRL 1.16's ``"sigmoid"`` loss ignores
      ``label_smoothing``, and its ``"robust"`` loss (Chowdhury et al. 2024) is another estimator,
      ``((1 - eps) L(h) - eps L(-h)) / (1 - 2 eps)``: unbiased for the clean loss, with no finite
      minimum (tested against both).
    * IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
      Preferences", eq. 17), ``ipo=True``: regress the margin onto a finite target instead of pushing
      it to infinity, ``L = (h - 1 / (2 * beta))^2`` (``beta`` is the paper's tau, as in TRL). The
      paper's equation on sequence log-probs; TRL's ``loss_type="ipo"`` first divides each answer's
      log-ratio by its token count, which equals this loss on log-probs divided by the answer
      lengths (tested).
    * SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
      eq. 6), ``simpo_gamma`` = gamma: no reference model, each answer's *mean* token log-prob as its
      reward, and a target margin gamma, ``L = -log sigmoid(beta * (log pi(y_w)/|y_w| - log pi(y_l)/|y_l|)
      - gamma)`` (with ``label_smoothing`` as conservative DPO's). The reference log-probs are ignored
      (may be None); ``chosen_tokens``, ``rejected_tokens`` (B,) are ``|y_w|``, ``|y_l|``. It is TRL 1.16's
      ``CPOTrainer(loss_type="simpo", cpo_alpha=0)`` (tested); its DPOTrainer has no SimPO.

    Returns ``(losses, chosen_rewards, rejected_rewards)``, each (B,): the loss of each pair (the
    trainer averages), and the implicit rewards ``beta * (log pi(y) - log pi_ref(y))`` of both
    answers (:func:`implicit_reward`; SimPO's ``beta * log pi(y) / |y|``), detached, for the metrics.
    """
    check_positive("beta", beta)
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}.")
    if ipo and label_smoothing > 0:
        raise ValueError("label_smoothing (conservative DPO) does not apply to IPO: give one of them.")
    if simpo_gamma is not None:
        if ipo or chosen_tokens is None or rejected_tokens is None:
            raise ValueError("SimPO (simpo_gamma) needs chosen_tokens and rejected_tokens, and not ipo.")
        chosen_rewards = beta * policy_chosen_logps / chosen_tokens  # reference-free, per token
        rejected_rewards = beta * policy_rejected_logps / rejected_tokens
        logits = chosen_rewards - rejected_rewards - simpo_gamma  # Meng et al. 2024, eq. 6
        losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
        return losses, chosen_rewards.detach(), rejected_rewards.detach()
    chosen_log_ratios = policy_chosen_logps - reference_chosen_logps
    rejected_log_ratios = policy_rejected_logps - reference_rejected_logps
    h = chosen_log_ratios - rejected_log_ratios
    if ipo:
        losses = (h - 1 / (2 * beta)) ** 2  # Azar et al. 2023, eq. 17
    elif label_smoothing > 0:  # Mitchell 2023: the expected DPO loss under flipped labels
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    else:
        losses = -F.logsigmoid(beta * h)  # Rafailov et al. 2023, eq. 7
    chosen_rewards = implicit_reward(policy_chosen_logps, reference_chosen_logps, beta).detach()
    rejected_rewards = implicit_reward(policy_rejected_logps, reference_rejected_logps, beta).detach()
    return losses, chosen_rewards, rejected_rewards


def nll_per_token(logps: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """The SFT loss of the chosen answers that RPO adds (Pang et al. 2024; TRL's ``rpo_alpha``):
    ``-sum_b log pi(y_w[b]) / sum_b |y_w[b]|``, a scalar, from summed log-probs (B,) and lengths (B,)."""
    return -logps.sum() / n_tokens.sum()


def implicit_reward(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """The reward DPO's policy is optimal for, up to a per-prompt constant (Rafailov et al. 2023,
    eq. 5): ``r_hat(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))``. Any shape, kept."""
    check_positive("beta", beta)
    return beta * (policy_logps - ref_logps)


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------

LOSS_TYPES = ("sigmoid", "ipo", "simpo")


@dataclass
class DPOConfig:
    """Hyperparameters of :func:`train_dpo`, named as in TRL's ``DPOConfig`` where it has one."""

    beta: float = 0.1
    """KL strength: the policy aims at pi* = pi_ref exp(r / beta) / Z. Small beta = far from pi_ref."""
    loss_type: str = "sigmoid"
    """``"sigmoid"``: DPO (conservative DPO when ``label_smoothing > 0``); ``"ipo"``: IPO; ``"simpo"``:
    SimPO, reference-free. All are :func:`preference_loss` (TRL's names)."""
    simpo_gamma: float = 0.5
    """SimPO's target margin gamma (TRL's ``CPOConfig.simpo_gamma``); only with ``loss_type="simpo"``."""
    label_smoothing: float = 0.0
    """Assumed label-flip rate of conservative DPO; 0 is plain DPO."""
    rpo_alpha: float = 1.0
    """Weight of the chosen answers' NLL added to the loss (RPO; TRL's name; 0 = plain DPO): it keeps
    log pi(y_w) from falling with log pi(y_l), the way offline DPO loses mass to answers no pair shows."""
    learning_rate: float = 3e-4
    """Peak AdamW learning rate (warm-up, then cosine decay to 0). Far above TRL's 1e-6: the model is tiny."""
    epochs: int = 4
    """Passes over the pairs."""
    batch_size: int = 32
    """Pairs per step (one packed row each, see :func:`minirlhf.pairs.encode_pairs`)."""
    warmup_steps: int = 5
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay. Zero: decay pulls the weights towards 0, not towards pi_ref."""
    adam_beta2: float = 0.999
    """AdamW's second-moment decay."""
    adam_epsilon: float = 1e-8
    """AdamW's epsilon."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this value."""
    embedding_lr_scale: float = 0.0
    """Token embeddings (tied to GPT-2's output layer) learn at this fraction of the rate; 0 freezes
    them: a moving output layer lowers every word that no pair shows, and the mass leaks there."""
    frozen_blocks: int = 1
    """Keep the policy's first transformer blocks as SFT left them (0 trains every block)."""
    seed: int = 0
    """Seed of the order of the pairs."""
    log_every: int = 1
    """Record the training metrics (averaged since the last record) every this many steps."""
    eval_every: int = 10
    """Call ``evaluate`` every this many steps (and at the first and last step)."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        check_config(self, positive=("beta", "learning_rate", "epochs", "batch_size", "log_every",
                                     "eval_every", "max_grad_norm", "adam_epsilon"),
                     non_negative=("warmup_steps", "weight_decay", "embedding_lr_scale", "frozen_blocks",
                                   "rpo_alpha"),
                     unit_interval=("adam_beta2",))
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}.")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}.")
        if self.label_smoothing > 0 and self.loss_type == "ipo":
            raise ValueError("label_smoothing (conservative DPO) does not apply to loss_type='ipo'.")
        check_positive("simpo_gamma", self.simpo_gamma, allow_zero=True)

    def loss_arguments(self, segment: torch.Tensor) -> dict:
        """The keyword arguments of :func:`preference_loss` for this config and a batch's ``segment``
        (:func:`~minirlhf.pairs.encode_pairs`), whose token counts SimPO needs."""
        if self.loss_type != "simpo":
            return {"label_smoothing": self.label_smoothing, "ipo": self.loss_type == "ipo"}
        return {"label_smoothing": self.label_smoothing, "simpo_gamma": self.simpo_gamma,
                "chosen_tokens": (segment == CHOSEN).sum(-1),
                "rejected_tokens": (segment == REJECTED).sum(-1)}


# ----------------------------------------------------------------------------------------------
# One step, and the loop
# ----------------------------------------------------------------------------------------------

def dpo_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor) -> dict[str, float]:
    """The batch metrics, named as TRL names them. Inputs (B,), outputs floats (batch means).

    ``rewards/chosen`` and ``rewards/rejected`` are the implicit rewards beta * log(pi / pi_ref) (as
    :func:`preference_loss` returns them), ``rewards/margins`` their difference,
    ``rewards/accuracies`` the fraction of pairs where the chosen answer has the larger implicit
    reward, ``logps/*`` the policy's summed log-probs.
    """
    chosen, rejected = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
        "rewards/accuracies": (chosen > rejected).float().mean().item(),
        "logps/chosen": policy_chosen_logps.detach().mean().item(),
        "logps/rejected": policy_rejected_logps.detach().mean().item(),
    }


def dpo_step(policy, optimizer, encoded: dict[str, torch.Tensor], idx: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, config: DPOConfig, lr: float,
             step: int = 0) -> dict[str, float]:
    """One optimiser step on the pairs ``idx`` (shape (B,)) of ``encoded`` (made by
    :func:`~minirlhf.pairs.encode_pairs`: one row per pair, chosen and rejected in one forward pass).
    ``ref_chosen``, ``ref_rejected``: their reference log-probs, shape (B,). Returns the loss and
    the metrics of :func:`dpo_metrics`."""
    batch = {k: v[idx] for k, v in encoded.items()}
    chosen, rejected = pair_logps(policy, batch)
    losses, chosen_rewards, rejected_rewards = preference_loss(
        chosen, rejected, ref_chosen, ref_rejected, config.beta, **config.loss_arguments(batch["segment"]))
    loss = losses.mean()
    if config.rpo_alpha > 0:  # RPO: + alpha * the NLL per token of the chosen answers
        loss = loss + config.rpo_alpha * nll_per_token(chosen, (batch["segment"] == CHOSEN).sum(-1))
    check_finite_loss(loss, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_grad_norm(optimizer, config.max_grad_norm)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # the embeddings' group has its own multiplier
    optimizer.step()
    return {"loss": loss.item(), **dpo_metrics(chosen_rewards, rejected_rewards, chosen, rejected)}


def make_optimizer(policy, config: DPOConfig) -> torch.optim.Optimizer:
    """AdamW over the policy, its token embeddings at ``embedding_lr_scale`` x the rate."""
    device = next(policy.parameters()).device
    groups = embedding_param_groups(policy, config.learning_rate, config.embedding_lr_scale)
    return torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay,
                             eps=config.adam_epsilon, betas=(0.9, config.adam_beta2),
                             fused=device.type in ("cpu", "cuda"))  # one kernel for all parameters


@torch.no_grad()
def pair_loss(policy, encoded: dict, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
              config: DPOConfig) -> float:
    """The mean loss of ``config`` over every pair of ``encoded`` (held-out pairs), no gradients."""
    chosen, rejected = pair_logps(policy, encoded)
    losses, _, _ = preference_loss(chosen, rejected, ref_chosen, ref_rejected, config.beta,
                                   **config.loss_arguments(encoded["segment"]))
    return losses.mean().item()


def train_dpo(policy, ref_model, tokenizer, train_data, config: DPOConfig | None = None, eval_data=None,
              evaluate=None):
    """Train ``policy`` (in place) with offline DPO against the frozen ``ref_model`` on ``train_data``,
    a Dataset with string columns ``prompt``, ``chosen``, ``rejected``: the pairs it is given and
    nothing else (as TRL's ``DPOTrainer``).

    ``eval_data``: held-out pairs. After each epoch their DPO loss is measured (``eval/loss``), and at
    the end the policy goes back to the epoch where it was lowest (early stopping).
    ``evaluate(step, policy) -> dict`` (e.g. :func:`minirlhf.evaluation.exact_metrics`): called at
    step 0, every ``eval_every`` steps and at the end; what it returns joins that step's record.

    Returns ``(policy, history)``: dicts with ``step``, ``epoch``, ``loss``, the metrics of
    :func:`dpo_metrics` (TRL's names), ``learning_rate``, ``time``, ``eval/loss`` and ``evaluate``'s.
    """
    config = config or DPOConfig()
    check_tokenizer_matches(policy, tokenizer)
    check_tokenizer_matches(ref_model, tokenizer)
    check_preference_data(train_data, tokenizer=tokenizer, allow_empty_answers=True)
    if eval_data is not None:
        check_preference_data(eval_data, "evaluation pairs", tokenizer, allow_empty_answers=True)
    device = next(policy.parameters()).device
    ref_model.eval()
    policy.eval()  # no dropout: the log-probs must match the reference's at step 0
    optimizer = make_optimizer(policy, config)
    generator = seed_everything(config.seed)
    # 2. what never changes is computed once: the packed tokens and log pi_ref
    encoded = to_device(encode_pairs(tokenizer, train_data), device)
    ref_chosen, ref_rejected = reference_logps(ref_model, encoded)
    if eval_data is not None:
        held_out = to_device(encode_pairs(tokenizer, eval_data), device)
        held_out_ref = reference_logps(ref_model, held_out)
    n_batches = -(-len(train_data) // config.batch_size)
    total = config.epochs * n_batches
    history, start, step, pending = [], time.perf_counter(), 0, []
    best_loss, best_weights, best_epoch = float("inf"), None, 0  # 4. the guard's best epoch so far
    if evaluate is not None:
        history.append({"step": 0, "epoch": 0, **evaluate(0, policy)})
    # GPT-2's activation as one kernel while we train (the same function); the first
    # config.frozen_blocks blocks of the policy get no gradient (both undone at the end)
    with fused_gelu(policy, ref_model), frozen_blocks(policy, config.frozen_blocks):
        for epoch in tqdm(range(config.epochs), desc=f"DPO (beta={config.beta})",
                          disable=not config.progress):
            batches = torch.randperm(len(train_data), generator=generator).to(device).split(config.batch_size)
            for i, idx in enumerate(batches):  # 3. one step per minibatch
                lr = config.learning_rate * lr_factor(step, total, config.warmup_steps)
                pending.append(dpo_step(policy, optimizer, encoded, idx, ref_chosen[idx], ref_rejected[idx],
                                        config, lr, step))
                step += 1
                last_batch = i == len(batches) - 1
                if step % config.log_every and step % config.eval_every and not last_batch:
                    continue
                record = {"step": step, "epoch": epoch + (i + 1) / len(batches),
                          **{k: sum(p[k] for p in pending) / len(pending) for k in pending[0]},
                          "learning_rate": lr, "time": time.perf_counter() - start}
                pending = []
                if evaluate is not None and (step % config.eval_every == 0 or step == total):
                    record.update(evaluate(step, policy))
                if eval_data is not None and last_batch:  # 4. the guard: keep the best epoch
                    record["eval/loss"] = pair_loss(policy, held_out, *held_out_ref, config)
                    if record["eval/loss"] < best_loss:
                        best_loss, best_epoch = record["eval/loss"], epoch + 1
                        best_weights = copy.deepcopy(policy.state_dict())
                history.append(record)
    if best_weights is not None and best_epoch < config.epochs:  # an earlier epoch was better: go back
        policy.load_state_dict(best_weights)
        history.append({"step": step, "epoch": config.epochs, "best_epoch": best_epoch,
                        **(evaluate(step, policy) if evaluate is not None else {})})
    return policy, history
