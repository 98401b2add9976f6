"""Direct Preference Optimization (DPO): RLHF without a reward model and without sampling.

The KL-regularised RLHF objective has a closed-form maximiser (see :mod:`minirlhf.optimum`)::

    pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x)

Solved for the reward, it says that *every policy is the optimum of some reward*::

    r(x, y) = beta * log( pi*(y|x) / pi_ref(y|x) ) + beta * log Z(x)

Put this reward into the Bradley-Terry likelihood of the preference data and the intractable
``log Z(x)`` cancels (both answers share the prompt): what is left is a classification loss on
the policy's own log-probs (Rafailov et al. 2023, eq. 7). No reward model, no rollouts, one
forward pass of chosen and rejected answers per step. The policy's *implicit reward*
``beta * log(pi / pi_ref)`` is what DPO trains, and what it reports (``rewards/chosen`` ...).

Everything here takes **summed** response log-probs of shape (B,) (see
:func:`minirlhf.logprobs.sequence_logprobs`): the four numbers of a pair are the policy's and the
reference's log-probs of the chosen answer ``y_w`` and of the rejected answer ``y_l``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minirlhf.logprobs import check_fits, encode_texts, gather_logprobs, to_device
from minirlhf.models import embedding_param_groups, frozen_blocks, fused_gelu
from minirlhf.preferences import check_preference_data, on_policy_pairs
from minirlhf.utils import (check_config, check_finite_loss, check_positive, clip_grad_norm, lr_factor,
                            seed_everything)


def _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    """h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)). Shape (B,)."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float) -> torch.Tensor:
    """The DPO loss of each pair (Rafailov et al. 2023, eq. 7). Shapes (B,) -> (B,)::

        L = -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x))
                                   - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

    It is the Bradley-Terry negative log-likelihood of "y_w beats y_l" with the implicit reward
    ``beta * log(pi / pi_ref)`` in place of a reward model. At ``pi = pi_ref`` it equals log 2.
    """
    check_positive("beta", beta)
    h = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -F.logsigmoid(beta * h)


def ipo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", eq. 17): regress the log-ratio margin onto a finite target instead of pushing
    it to infinity. Shapes (B,) -> (B,)::

        L = ( h - 1 / (2 * beta) )^2,   h = the log-ratio margin of :func:`dpo_loss`

    (``beta`` plays the role of the paper's tau, as in TRL).
    """
    check_positive("beta", beta)
    h = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (h - 1 / (2 * beta)) ** 2


def conservative_dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                          ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
                          beta: float, label_smoothing: float) -> torch.Tensor:
    """Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): assume each label
    is flipped with probability ``label_smoothing`` = eps, and minimise the expected loss. Shapes
    (B,) -> (B,)::

        L = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

    With eps > 0 the loss has a finite minimum, at ``beta * h = log((1 - eps) / eps)``.
    """
    check_positive("beta", beta)
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}.")
    h = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def implicit_reward(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """The reward DPO's policy is optimal for, up to a per-prompt constant (Rafailov et al. 2023,
    eq. 5): ``r_hat(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))``. Any shape, kept."""
    check_positive("beta", beta)
    return beta * (policy_logps - ref_logps)


# --------------------------------------------------------------------------------------------
# Data checks
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------

LOSS_TYPES = ("sigmoid", "ipo")


@dataclass
class DPOConfig:
    """Hyperparameters of :func:`train_dpo`, named as TRL's ``DPOConfig`` (and ``OnlineDPOConfig``)
    where it has one. Why each default: docs/defaults.md#dpo.

    The defaults run one step on the given pairs, then ``on_policy_rounds`` rounds of *fresh* pairs
    sampled from the current policy and labelled by a rater (online DPO); ``on_policy_rounds=0`` is
    offline DPO over ``epochs`` passes of the given pairs.
    """

    beta: float = 0.1
    """KL strength: the policy aims at pi* = pi_ref exp(r / beta) / Z. Small beta = far from pi_ref."""
    loss_type: str = "sigmoid"
    """``"sigmoid"``: :func:`dpo_loss` (:func:`conservative_dpo_loss` when ``label_smoothing > 0``);
    ``"ipo"``: :func:`ipo_loss`."""
    label_smoothing: float = 0.0
    """Assumed label-flip rate of conservative DPO; 0 is plain DPO."""
    learning_rate: float = 2e-3
    """Peak AdamW learning rate. Far above TRL's 1e-6: a tiny model needs it, and fresh on-policy pairs
    keep it safe (offline, much lower rates already collapse)."""
    on_policy_rounds: int = 100
    """Rounds of fresh pairs sampled from the current policy after the first step (0: offline only)."""
    pairs_per_prompt: int = 16
    """Pairs drawn per prompt in each on-policy round (pairs of identical answers are dropped)."""
    temperature: float = 1.3
    """Sampling temperature of the on-policy pairs: above 1 keeps rare (bad) answers in the pairs."""
    epochs: int = 1
    """Passes over the pairs of each round."""
    batch_size: int = 512
    """Pairs per step (one packed row each, see :func:`encode_pairs`)."""
    warmup_steps: int = 5
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay. Zero: decay pulls the weights towards 0, not towards pi_ref."""
    adam_beta2: float = 0.99
    """AdamW's second-moment decay: 0.99 follows the changing on-policy gradients faster than 0.999."""
    adam_epsilon: float = 1e-8
    """AdamW's epsilon."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this value."""
    embedding_lr_scale: float = 0.2
    """Token embeddings (tied to GPT-2's output layer) learn at this fraction of the rate (0 freezes
    them): a fast output layer lowers every name no pair shows, held-out countries' included."""
    frozen_blocks: int = 1
    """Keep the policy's first transformer blocks as SFT left them (0 trains every block)."""
    seed: int = 0
    """Seed of the order of the pairs and of the on-policy samples."""
    log_every: int = 1
    """Record the training metrics (averaged since the last record) every this many steps."""
    eval_every: int = 10
    """Call ``evaluate`` every this many steps (and at the first and last step)."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        check_config(self, positive=("beta", "learning_rate", "epochs", "batch_size", "log_every",
                                     "eval_every", "pairs_per_prompt", "temperature", "max_grad_norm",
                                     "adam_epsilon"),
                     non_negative=("on_policy_rounds", "warmup_steps", "weight_decay", "embedding_lr_scale",
                                   "frozen_blocks"), unit_interval=("adam_beta2",))
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}.")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}.")
        if self.label_smoothing > 0 and self.loss_type != "sigmoid":
            raise ValueError("label_smoothing (conservative DPO) only applies to loss_type='sigmoid'.")

    def loss(self, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
        """The per-pair loss this config selects. Shapes (B,) -> (B,)."""
        logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
        if self.loss_type == "ipo":
            return ipo_loss(*logps, self.beta)
        if self.label_smoothing > 0:
            return conservative_dpo_loss(*logps, self.beta, self.label_smoothing)
        return dpo_loss(*logps, self.beta)


# --------------------------------------------------------------------------------------------
# Packed pairs: the prompt once, then both answers, in one row
# --------------------------------------------------------------------------------------------

PROMPT, CHOSEN, REJECTED, PADDING = 0, 1, 2, -1
"""The ``segment`` of each token of a packed pair (see :func:`encode_pairs`)."""


def encode_pairs(tokenizer, data) -> dict[str, torch.Tensor]:
    """Tokenise every pair once, as ONE row: the prompt, the chosen answer, the rejected answer.

    Both answers of a pair share their prompt, so the prompt goes through the model once::

        tokens    Q : What ... ? A : | The capital ... Paris . <eos> | The ... Berlin . <eos> | <pad>
        segment   PROMPT             | CHOSEN                        | REJECTED               | PADDING
        position  0 ... P-1          | P ... P+C-1                   | P ... P+R-1            | 0

    Returns four tensors of shape (N, T), one row per pair, padded on the right:

    * ``input_ids``; ``segment``: which part each token belongs to (the constants above);
    * ``position_ids``: the rejected answer's positions restart after the prompt, as if the chosen
      answer were not there; :func:`pair_attention_mask` hides the chosen answer from it too. So each
      answer's log-probs are exactly those of its own (prompt, answer) sequence (the tests check it);
    * ``predicted_from``: the column whose logits predict each token. That is ``t - 1``, except for
      the first rejected token, which follows the last prompt token.

    On the toy world a batch of pairs is 32 tokens wide this way, against two padded rows of 24
    tokens per pair before: a third fewer tokens go through the forward and backward passes.
    """
    prompts = encode_texts(tokenizer, list(data["prompt"]), "prompt")
    eos = [tokenizer.eos_token_id]  # each answer ends with EOS, as in every other stage
    chosen = [ids + eos for ids in encode_texts(tokenizer, list(data["chosen"]), "response")]
    rejected = [ids + eos for ids in encode_texts(tokenizer, list(data["rejected"]), "response")]
    width = max(len(p) + len(c) + len(r) for p, c, r in zip(prompts, chosen, rejected))
    rows = {"input_ids": [], "position_ids": [], "segment": [], "predicted_from": []}
    for p, c, r in zip(prompts, chosen, rejected):
        pad = width - len(p) - len(c) - len(r)
        first_rejected = len(p) + len(c)
        predicted_from = [0] + list(range(width - 1))  # token t is predicted by the logits at t - 1 ...
        predicted_from[first_rejected] = len(p) - 1    # ... but the rejected answer follows the prompt
        rows["input_ids"].append(p + c + r + [tokenizer.pad_token_id] * pad)
        rejected_positions = list(range(len(p), len(p) + len(r)))  # restart after the prompt
        rows["position_ids"].append(list(range(first_rejected)) + rejected_positions + [0] * pad)
        rows["segment"].append([PROMPT] * len(p) + [CHOSEN] * len(c) + [REJECTED] * len(r) + [PADDING] * pad)
        rows["predicted_from"].append(predicted_from)
    return {name: torch.tensor(values) for name, values in rows.items()}


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the columns on the right that are padding in every row: same log-probs, less work."""
    width = int((batch["segment"] != PADDING).sum(-1).max())
    return {name: values[:, :width] for name, values in batch.items()}


def pair_attention_mask(segment: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Who attends to whom in packed pairs: ``segment`` (B, T) -> additive mask (B, 1, T, T).

    Query ``t`` sees key ``s`` when ``s <= t`` (causal) and ``s`` is in the prompt or in ``t``'s own
    segment: the rejected answer never sees the chosen one. (Padding sees the prompt and padding;
    its outputs are never used.) The mask is 0 where visible and the most negative number of
    ``dtype`` elsewhere: the form that both eager and SDPA attention add to their scores.
    """
    query, key = segment.unsqueeze(-1), segment.unsqueeze(-2)  # (B, T, 1) and (B, 1, T)
    width = segment.shape[-1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment.device).tril()
    visible = causal & ((key == PROMPT) | (key == query))  # (B, T, T)
    mask = torch.zeros(visible.shape, dtype=dtype, device=segment.device)
    return mask.masked_fill(~visible, torch.finfo(dtype).min).unsqueeze(1)


def _check_custom_masks(model) -> None:
    """Packed pairs need an attention that takes a custom 4D mask (flash-attention kernels do not)."""
    attention = getattr(model.config, "_attn_implementation", None) or "eager"
    if attention not in ("eager", "sdpa"):
        raise ValueError(f"DPO packs each pair into one row with its own attention mask, which the "
                         f"{attention!r} attention cannot take. Load the model with "
                         "attn_implementation='sdpa' (or 'eager').")


def pair_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the chosen and of the rejected answers, from ONE forward pass.

    ``batch``: B rows of :func:`encode_pairs`. Returns ``(chosen_logps, rejected_logps)``, each of
    shape (B,): ``log pi(y | x) = sum_t log pi(y_t | x, y_<t)`` over the answer's tokens and EOS.
    """
    _check_custom_masks(model)
    batch = trim_padding(batch)
    check_fits(model, int(batch["position_ids"].max()) + 1)
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   attention_mask=pair_attention_mask(batch["segment"], model.dtype),
                   use_cache=False).logits.float()  # (B, T, V)
    # for each token, the logits that predict it: those of the token before it in its own answer
    logits = logits.gather(1, batch["predicted_from"].unsqueeze(-1).expand_as(logits))
    logp = gather_logprobs(logits, batch["input_ids"])  # log pi(token_t | its context), (B, T)
    segment = batch["segment"]
    return (logp * (segment == CHOSEN)).sum(-1), (logp * (segment == REJECTED)).sum(-1)


@torch.no_grad()
def reference_logps(ref_model, encoded: dict[str, torch.Tensor],
                    batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi_ref of the chosen and of the rejected answer of every pair of ``encoded``, once,
    without gradients. Returns ``(ref_chosen, ref_rejected)``, each of shape (N,).

    The reference never changes, so there is no reason to run it at every step."""
    device = next(ref_model.parameters()).device
    n = encoded["input_ids"].shape[0]
    chunks = [pair_logps(ref_model, to_device({k: v[i:i + batch_size] for k, v in encoded.items()}, device))
              for i in range(0, n, batch_size)]
    return torch.cat([chosen for chosen, _ in chunks]), torch.cat([rejected for _, rejected in chunks])


def dpo_metrics(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                beta: float) -> dict[str, float]:
    """The batch metrics, named as TRL names them. Inputs (B,), outputs floats (batch means).

    ``rewards/chosen`` and ``rewards/rejected`` are the implicit rewards beta * log(pi / pi_ref),
    ``rewards/margins`` their difference, ``rewards/accuracies`` the fraction of pairs where the
    chosen answer has the larger implicit reward, ``logps/*`` the policy's summed log-probs.
    """
    chosen = implicit_reward(policy_chosen_logps, ref_chosen_logps, beta).detach()
    rejected = implicit_reward(policy_rejected_logps, ref_rejected_logps, beta).detach()
    return {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
        "rewards/accuracies": (chosen > rejected).float().mean().item(),
        "logps/chosen": policy_chosen_logps.detach().mean().item(),
        "logps/rejected": policy_rejected_logps.detach().mean().item(),
    }


def unique_prompts(data) -> list[str]:
    """The distinct prompts of ``data``, in order of first appearance."""
    return list(dict.fromkeys(data["prompt"]))


def dpo_step(policy, optimizer, encoded: dict[str, torch.Tensor], idx: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, config: DPOConfig, lr: float,
             step: int = 0) -> dict[str, float]:
    """One optimiser step on the pairs ``idx`` (shape (B,)) of ``encoded`` (made by
    :func:`encode_pairs`: one row per pair, chosen and rejected in one forward pass).
    ``ref_chosen``, ``ref_rejected``: their reference log-probs, shape (B,). Returns the loss and
    the metrics of :func:`dpo_metrics`."""
    chosen, rejected = pair_logps(policy, {k: v[idx] for k, v in encoded.items()})
    loss = config.loss(chosen, rejected, ref_chosen, ref_rejected).mean()
    check_finite_loss(loss, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_grad_norm(optimizer, config.max_grad_norm)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # the embeddings' group has its own multiplier
    optimizer.step()
    return {"loss": loss.item(), **dpo_metrics(chosen, rejected, ref_chosen, ref_rejected, config.beta)}


def learning_rate(config: DPOConfig, step: int, round_: int) -> float:
    """Linear warm-up over the first ``warmup_steps`` steps, then a cosine decay *round by round*:
    an on-policy round has as many steps as it has distinct pairs, unknown in advance."""
    warmup = lr_factor(step, 0, config.warmup_steps, decay="constant")
    return config.learning_rate * warmup * lr_factor(round_, config.on_policy_rounds + 1)


def train_dpo(policy, ref_model, tokenizer, train_data, config: DPOConfig | None = None, rater=None,
              evaluate=None):
    """Train ``policy`` (in place) with DPO against the frozen ``ref_model``.

    Round 0 is offline DPO on ``train_data`` (a Dataset with string columns ``prompt``, ``chosen``,
    ``rejected``), as TRL's ``DPOTrainer`` runs it. Then, for each of ``config.on_policy_rounds``
    rounds, fresh pairs are sampled from the current policy on the same prompts, labelled by
    ``rater`` (required then, e.g. :class:`minirlhf.world.SimulatedRater`) and trained on.
    ``evaluate(step, policy) -> dict``: called at step 0, every ``eval_every`` steps and at the end
    (e.g. :func:`minirlhf.evaluation.exact_metrics`); what it returns joins that step's record.

    Returns ``(policy, history)``: dicts with ``step``, ``round``, ``epoch``, ``loss``, the metrics of
    :func:`dpo_metrics`, ``learning_rate``, ``rater_labels`` (so far), ``time`` and what ``evaluate`` gave.
    """
    config = config or DPOConfig()
    check_preference_data(train_data, tokenizer=tokenizer)
    if config.on_policy_rounds and rater is None:
        raise ValueError("On-policy rounds ask a rater to label fresh pairs: pass rater=... (e.g. "
                         "minirlhf.world.SimulatedRater(seed=0)), or set on_policy_rounds=0 for offline DPO.")
    prompts = unique_prompts(train_data)
    device = next(policy.parameters()).device
    ref_model.eval()
    policy.eval()  # no dropout: the log-probs must match the reference's at step 0
    n_rounds = config.on_policy_rounds + 1
    groups = embedding_param_groups(policy, config.learning_rate, config.embedding_lr_scale)
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  eps=config.adam_epsilon, betas=(0.9, config.adam_beta2),
                                  fused=device.type in ("cpu", "cuda"))  # one kernel for all parameters
    generator = seed_everything(config.seed)
    history, start, step, labels = [], time.perf_counter(), 0, 0
    if evaluate is not None:
        history.append({"step": 0, "round": 0, **evaluate(0, policy)})
    bar = tqdm(total=n_rounds, desc=f"DPO (beta={config.beta}), rounds", disable=not config.progress)
    # GPT-2's GELU as one kernel while training (same function, faster); the first
    # config.frozen_blocks blocks of the policy get no gradient (both undone at the end)
    with fused_gelu(policy, ref_model), frozen_blocks(policy, config.frozen_blocks):
        for round_ in range(n_rounds):
            bar.update()
            data = train_data if round_ == 0 else on_policy_pairs(
                policy, tokenizer, prompts, config.pairs_per_prompt, rater, config.seed * 1000 + round_,
                config.temperature)
            labels += len(data) if round_ > 0 else 0
            if len(data) == 0:
                continue  # every pair of answers was identical: nothing to learn from this round
            # what does not change during a round is computed once: the tokens and log pi_ref
            encoded = to_device(encode_pairs(tokenizer, data), device)
            ref_chosen_all, ref_rejected_all = reference_logps(ref_model, encoded)
            pending = []
            for epoch in range(config.epochs):
                batches = torch.randperm(len(data), generator=generator).to(device).split(config.batch_size)
                for i, idx in enumerate(batches):
                    lr = learning_rate(config, step, round_)
                    pending.append(dpo_step(policy, optimizer, encoded, idx, ref_chosen_all[idx],
                                            ref_rejected_all[idx], config, lr, step))
                    step += 1
                    last = round_ == n_rounds - 1 and epoch == config.epochs - 1 and i == len(batches) - 1
                    if step % config.log_every and step % config.eval_every and not last:
                        continue
                    record = {"step": step, "round": round_, "epoch": epoch + (i + 1) / len(batches),
                              **{k: sum(p[k] for p in pending) / len(pending) for k in pending[0]},
                              "learning_rate": lr, "rater_labels": labels,
                              "time": time.perf_counter() - start}
                    pending = []
                    if evaluate is not None and (step % config.eval_every == 0 or last):
                        record.update(evaluate(step, policy))
                    history.append(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['rewards/accuracies']:.2f}")
    bar.close()
    return policy, history
